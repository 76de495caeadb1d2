"""The shared ledger: PostgreSQL, for several gateway replicas.

Replicas behind a load balancer must not judge two transfers of one
organisation against the same old total, nor lose one of two concurrent
updates. Each :meth:`PostgresLedger.transaction` therefore runs in one database
transaction that first takes ``pg_advisory_xact_lock`` on the
organisation-year: a second replica's transaction for the same key waits until
the first commits or rolls back, and the lock is released by the server even
if the replica dies mid-transaction. Inside one process an :class:`asyncio.Lock`
per organisation-year queues transactions before they take a pooled
connection, so waiters do not pin the pool while the database lock is held.

Digests travel as one ``bytea[]`` parameter (``= ANY($n)`` to count,
``unnest`` to insert with ``ON CONFLICT DO NOTHING``): one round trip each,
whatever the transfer's size. Totals live in their own table, updated in the
same transaction, so reading the current total does not count rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.errors import ConfigError
from gateway.ledger.base import (
    LedgerCount,
    LedgerTotal,
    LedgerTransaction,
    LedgerUnavailable,
    TransferEntry,
)

T = TypeVar("T")

#: Connections kept open per replica: one is enough for an idle gateway.
POOL_MIN_SIZE = 1
#: Upper bound per replica. Transactions of one organisation-year queue in
#: process (asyncio lock) before taking a connection, so the pool only needs one
#: connection per organisation being decided at once; ten replicas x 10 stays
#: well under PostgreSQL's default ``max_connections`` of 100 minus reserved.
POOL_MAX_SIZE = 10
#: The most a ledger URL may ask for (``?pool_size=``): PostgreSQL's default
#: max_connections is 100, shared by every replica of the park.
MAX_POOL_SIZE = 100
#: Seconds to connect, to get a pooled connection or to run one statement before
#: the transfer fails closed (503). Statements here take milliseconds.
COMMAND_TIMEOUT_S = 10.0
#: How long a transaction waits for another replica's lock on the same
#: organisation-year (PostgreSQL ``lock_timeout``); see ``BUSY_TIMEOUT_MS`` in
#: the SQLite backend for why 10 s.
LOCK_TIMEOUT = "10s"
#: Default schema; tests pass their own and drop it afterwards.
DEFAULT_SCHEMA = "gateway_ledger"

#: A plain, unquoted PostgreSQL identifier (NAMEDATALEN is 64, so 63 characters).
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Key of the advisory lock that serialises schema creation across replicas
#: (``CREATE … IF NOT EXISTS`` is not safe against a concurrent creator).
_SCHEMA_LOCK_KEY = 0x6C6564676572  # "ledger"

#: Errors that mean the database, not the caller, failed: the gateway fails closed.
_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def lock_key(schema: str, organisation: str, year: int) -> int:
    """The advisory-lock key of one organisation-year, the same on every replica.

    A 64-bit BLAKE2b of the schema, organisation and year, as a signed bigint.
    A collision only makes two organisation-years share a lock (slower, never
    wrong).
    """
    material = f"{schema}\x00{organisation}\x00{year}".encode()
    digest = hashlib.blake2b(material, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Statements:
    """Every statement of one ledger schema, formatted once.

    The schema name is the only thing formatted into SQL, and only after it
    matched :data:`_IDENTIFIER` (hence the ``S608`` exemptions); every value is
    a bound parameter.
    """

    create: tuple[str, ...]
    current: str
    known: str
    insert: str
    bump: str
    publish: str
    find: str
    pending: str
    pending_count: str
    claim: str
    release: str
    claims_of: str
    totals: str


#: Whether an upsert into ``transfers`` carries a newer state than the row holds.
_NEWER = "(t.instance <> excluded.instance OR t.seq < excluded.seq)"


def _statements(s: str) -> _Statements:
    return _Statements(
        create=(
            f"CREATE SCHEMA IF NOT EXISTS {s}",
            f"CREATE TABLE IF NOT EXISTS {s}.ledger_subjects ("
            " organisation text NOT NULL, year integer NOT NULL,"
            " category text NOT NULL, digest bytea NOT NULL,"
            " PRIMARY KEY (digest, organisation, year, category))",
            f"CREATE TABLE IF NOT EXISTS {s}.ledger_totals ("
            " organisation text NOT NULL, year integer NOT NULL,"
            " category text NOT NULL, subjects bigint NOT NULL,"
            " PRIMARY KEY (organisation, year, category))",
            # The park's transfers as the status API shows them (issue 16): any
            # replica answers for a transfer another one handled.
            f"CREATE TABLE IF NOT EXISTS {s}.transfers ("
            " transfer_id text PRIMARY KEY, instance text NOT NULL, sender text NOT NULL,"
            " seq bigint NOT NULL, status jsonb NOT NULL, receipt jsonb,"
            " updated timestamptz NOT NULL DEFAULT now())",
            # The park's review queue: the transfers whose state is `review`.
            f"CREATE INDEX IF NOT EXISTS transfers_pending ON {s}.transfers"
            " (((status->'history'->0->>'at')::double precision), transfer_id)"
            " WHERE status->>'state' = 'review'",
            # Who is deciding an open review right now, until when, and the
            # approvals it has so far (four eyes): any replica may decide any
            # review, one at a time (issue 16). Added to tables of before.
            f"ALTER TABLE {s}.transfers ADD COLUMN IF NOT EXISTS claimed_by text",
            f"ALTER TABLE {s}.transfers ADD COLUMN IF NOT EXISTS claim_until timestamptz",
            f"ALTER TABLE {s}.transfers"
            " ADD COLUMN IF NOT EXISTS approvals jsonb NOT NULL DEFAULT '[]'::jsonb",
        ),
        current=(
            f"SELECT subjects FROM {s}.ledger_totals"  # noqa: S608
            " WHERE organisation = $1 AND year = $2 AND category = $3"
        ),
        known=(
            f"SELECT count(*) FROM {s}.ledger_subjects"  # noqa: S608
            " WHERE organisation = $1 AND year = $2 AND category = $3"
            " AND digest = ANY($4::bytea[])"
        ),
        insert=(
            f"INSERT INTO {s}.ledger_subjects (organisation, year, category, digest)"  # noqa: S608
            " SELECT $1, $2, $3, d FROM unnest($4::bytea[]) AS d"
            " ON CONFLICT DO NOTHING"
        ),
        bump=(
            f"INSERT INTO {s}.ledger_totals AS t (organisation, year, category, subjects)"  # noqa: S608
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (organisation, year, category)"
            " DO UPDATE SET subjects = t.subjects + excluded.subjects"
            " RETURNING subjects"
        ),
        # Records of one instance reach the table in log order (seq = audit
        # index): a late write of an older state does not undo a newer one, but
        # the receipt it carries (the verdict's, written first and maybe landing
        # after the delivery's) is kept all the same.
        publish=(
            f"INSERT INTO {s}.transfers AS t"  # noqa: S608
            " (transfer_id, instance, sender, seq, status, receipt)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)"
            " ON CONFLICT (transfer_id) DO UPDATE SET"
            f" instance = CASE WHEN {_NEWER} THEN excluded.instance ELSE t.instance END,"
            f" sender = CASE WHEN {_NEWER} THEN excluded.sender ELSE t.sender END,"
            f" seq = CASE WHEN {_NEWER} THEN excluded.seq ELSE t.seq END,"
            f" status = CASE WHEN {_NEWER} THEN excluded.status ELSE t.status END,"
            " receipt = coalesce(t.receipt, excluded.receipt), updated = now()"
            f" WHERE {_NEWER} OR (t.receipt IS NULL AND excluded.receipt IS NOT NULL)"
        ),
        find=(
            "SELECT instance, sender, status::text, receipt::text,"  # noqa: S608
            " claimed_by, approvals::text"
            f" FROM {s}.transfers WHERE transfer_id = $1"
        ),
        pending=(
            "SELECT transfer_id, instance, sender, status::text, receipt::text,"  # noqa: S608
            " claimed_by, approvals::text"
            f" FROM {s}.transfers WHERE status->>'state' = 'review'"
            " ORDER BY (status->'history'->0->>'at')::double precision, transfer_id"
            " LIMIT $1 OFFSET $2"
        ),
        pending_count=(
            f"SELECT count(*) FROM {s}.transfers WHERE status->>'state' = 'review'"  # noqa: S608
        ),
        # One statement, so two replicas can never both hold the claim: an open
        # review, unclaimed, claimed by the caller already, or whose claimer's
        # lease ran out (it died deciding).
        claim=(
            f"UPDATE {s}.transfers SET claimed_by = $2,"  # noqa: S608
            " claim_until = now() + make_interval(secs => $3)"
            " WHERE transfer_id = $1 AND status->>'state' = 'review'"
            " AND (claimed_by IS NULL OR claimed_by = $2 OR claim_until < now())"
            " RETURNING instance, sender, status::text, receipt::text, claimed_by, approvals::text"
        ),
        release=(
            f"UPDATE {s}.transfers SET claimed_by = NULL, claim_until = NULL,"  # noqa: S608
            " approvals = coalesce($3::jsonb, approvals)"
            " WHERE transfer_id = $1 AND claimed_by = $2"
        ),
        claims_of=(
            "SELECT transfer_id, instance, sender, status::text, receipt::text,"  # noqa: S608
            f" claimed_by, approvals::text FROM {s}.transfers WHERE claimed_by = $1"
            " AND status->>'state' = ANY($2::text[])"
        ),
        totals=(
            "SELECT organisation, category, year, subjects"  # noqa: S608
            f" FROM {s}.ledger_totals"
            " WHERE ($1::integer IS NULL OR year = $1)"
            " AND ($2::text IS NULL OR organisation = $2)"
            " ORDER BY organisation, category, year"
        ),
    )


def _entry(
    transfer_id: str,
    instance: object,
    sender: object,
    status: str,
    receipt: str | None,
    claimed_by: object,
    approvals: str | None,
) -> TransferEntry:
    """A row of the transfers table."""
    return TransferEntry(
        transfer_id,
        str(instance),
        str(sender),
        json.loads(status),
        json.loads(receipt) if receipt is not None else None,
        claimed_by=str(claimed_by) if claimed_by is not None else None,
        approvals=tuple(json.loads(approvals)) if approvals is not None else (),
    )


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _fail_closed(exc: BaseException, where: str) -> LedgerUnavailable:
    # The class name, SQLSTATE or OS error text only: a server message's DETAIL
    # can quote row values.
    detail = type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    if state:
        detail += f" (SQLSTATE {state})"
    elif isinstance(exc, OSError) and exc.strerror:
        detail += f" ({exc.strerror})"
    return LedgerUnavailable(f"ledger {where}: {detail}")


class _PostgresTransaction(LedgerTransaction):
    """Reads and writes of one organisation-year under its advisory lock."""

    def __init__(self, ledger: PostgresLedger, conn: Any, organisation: str, year: int) -> None:
        self._ledger = ledger
        self._sql = ledger.sql
        self._conn = conn
        self._key = (organisation, year)

    async def count(self, category: str, digests: Collection[bytes]) -> LedgerCount:
        unique = list(set(digests))
        guard = self._ledger.guard
        current = await guard(self._conn.fetchval(self._sql.current, *self._key, category))
        known = 0
        if unique:
            known = await guard(self._conn.fetchval(self._sql.known, *self._key, category, unique))
        current = int(current or 0)
        return LedgerCount(current=current, projected=current + len(unique) - int(known))

    async def add(self, category: str, digests: Collection[bytes]) -> int:
        unique = list(set(digests))
        guard = self._ledger.guard
        status: str = await guard(
            self._conn.execute(self._sql.insert, *self._key, category, unique)
        )
        inserted = int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
        total = await guard(self._conn.fetchval(self._sql.bump, *self._key, category, inserted))
        return int(total)


class PostgresLedger:
    """The ledger in PostgreSQL, shared by every replica that points at it.

    Args:
        dsn: a ``postgresql://`` URL (asyncpg syntax).
        schema: the schema holding the tables; created when missing.
        create: create the schema and tables; with ``False`` (the read-only
            ``gateway ledger show``) missing tables read as an empty ledger.
        pool_max_size: upper bound on pooled connections.
        password: the database password, when it is kept in a file rather
            than in the URL (``ledger_password_file``); the URL's wins if both.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        create: bool = True,
        pool_max_size: int = POOL_MAX_SIZE,
        password: str | None = None,
    ) -> None:
        if not _IDENTIFIER.fullmatch(schema):
            raise ConfigError(
                f"ledger schema {schema!r}: expected lower-case letters, digits and _"
                " (at most 63, not starting with a digit)"
            )
        self.schema = schema
        self.sql = _statements(schema)
        self._dsn = dsn
        self._where = f"{redact_url(dsn)} (schema {schema})"
        self._create = create
        self._pool_max_size = pool_max_size
        self._password = password
        self._pool: Any = None
        self._closed = False
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._open_lock = asyncio.Lock()

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await a database call, turning database failures into a 503."""
        try:
            return await awaitable
        except _DB_ERRORS as exc:
            raise _fail_closed(exc, self._where) from exc

    async def open(self) -> PostgresLedger:
        """Create the pool and the schema now, so that a bad URL fails at start-up."""
        async with self._open_lock:
            if self._pool is not None:
                return self
            pool = await self.guard(
                asyncpg.create_pool(
                    self._dsn,
                    password=self._password,
                    min_size=POOL_MIN_SIZE,
                    max_size=self._pool_max_size,
                    command_timeout=COMMAND_TIMEOUT_S,
                    timeout=COMMAND_TIMEOUT_S,
                )
            )
            try:
                if self._create:
                    await self.guard(self._create_schema(pool))
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self

    async def _create_schema(self, pool: Any) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
            for statement in self.sql.create:
                await conn.execute(statement)

    async def _ready_pool(self) -> Any:
        if self._closed:
            raise LedgerUnavailable(f"ledger {self._where}: closed")
        if self._pool is None:
            await self.open()
        return self._pool

    async def _take_lock(self, conn: Any, organisation: str, year: int) -> None:
        """Serialise with every replica on this organisation-year until commit."""
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", lock_key(self.schema, organisation, year)
        )

    @contextlib.asynccontextmanager
    async def transaction(self, organisation: str, year: int) -> AsyncIterator[LedgerTransaction]:
        """Lock ``(organisation, year)`` across replicas; commit on clean exit."""
        pool = await self._ready_pool()
        lock = self._locks.setdefault((organisation, year), asyncio.Lock())
        async with lock:
            conn = await self.guard(pool.acquire(timeout=COMMAND_TIMEOUT_S))
            try:
                tx = conn.transaction()
                await self.guard(tx.start())
                try:
                    await self.guard(self._take_lock(conn, organisation, year))
                    yield _PostgresTransaction(self, conn, organisation, year)
                except BaseException:
                    with contextlib.suppress(*_DB_ERRORS):
                        await asyncio.shield(tx.rollback())
                    raise
                await self.guard(tx.commit())
            finally:
                await pool.release(conn)

    async def publish_transfer(self, entry: TransferEntry, seq: int) -> None:
        """Record what ``GET /v1/transfers/{id}`` shows of a transfer, for every replica."""
        pool = await self._ready_pool()
        receipt = json.dumps(entry.receipt) if entry.receipt is not None else None
        await self.guard(
            pool.execute(
                self.sql.publish,
                entry.transfer_id,
                entry.instance,
                entry.sender,
                seq,
                json.dumps(entry.status),
                receipt,
                timeout=COMMAND_TIMEOUT_S,
            )
        )

    async def find_transfer(self, transfer_id: str) -> TransferEntry | None:
        """What a replica of this park published about ``transfer_id``, if any."""
        pool = await self._ready_pool()
        row = await self.guard(pool.fetchrow(self.sql.find, transfer_id, timeout=COMMAND_TIMEOUT_S))
        return None if row is None else _entry(transfer_id, *row)

    async def claim_review(
        self, transfer_id: str, instance: str, lease_seconds: float
    ) -> TransferEntry | None:
        """Claim an open review for ``instance`` to decide, for ``lease_seconds`` at most.

        None when it is not open (decided, or never held) or another replica's
        claim on it is still running.
        """
        pool = await self._ready_pool()
        row = await self.guard(
            pool.fetchrow(
                self.sql.claim, transfer_id, instance, lease_seconds, timeout=COMMAND_TIMEOUT_S
            )
        )
        return None if row is None else _entry(transfer_id, *row)

    async def release_review(
        self,
        transfer_id: str,
        instance: str,
        approvals: list[dict[str, Any]] | None = None,
    ) -> None:
        """Give up ``instance``'s claim, recording the approvals so far if given."""
        pool = await self._ready_pool()
        given = json.dumps(approvals) if approvals is not None else None
        await self.guard(
            pool.execute(self.sql.release, transfer_id, instance, given, timeout=COMMAND_TIMEOUT_S)
        )

    async def claims_of(self, instance: str, states: Collection[str]) -> list[TransferEntry]:
        """The transfers in one of ``states`` that ``instance`` claimed (perhaps unfinished)."""
        pool = await self._ready_pool()
        rows = await self.guard(
            pool.fetch(self.sql.claims_of, instance, list(states), timeout=COMMAND_TIMEOUT_S)
        )
        return [_entry(str(row[0]), *row[1:]) for row in rows]

    async def pending_reviews(self, limit: int, offset: int) -> tuple[int, list[TransferEntry]]:
        """The park's transfers held for review (any replica's), oldest first."""
        pool = await self._ready_pool()
        total = await self.guard(pool.fetchval(self.sql.pending_count, timeout=COMMAND_TIMEOUT_S))
        rows = await self.guard(
            pool.fetch(self.sql.pending, limit, offset, timeout=COMMAND_TIMEOUT_S)
        )
        return int(total), [_entry(str(row[0]), *row[1:]) for row in rows]

    async def totals(
        self, year: int | None = None, organisation: str | None = None
    ) -> list[LedgerTotal]:
        """Committed totals per organisation, category and year."""
        pool = await self._ready_pool()
        try:
            rows = await self.guard(pool.fetch(self.sql.totals, year, organisation))
        except LedgerUnavailable as exc:
            if isinstance(exc.__cause__, asyncpg.UndefinedTableError) and not self._create:
                return []  # read-only view of a ledger nobody has written yet
            raise
        return [
            LedgerTotal(r["organisation"], r["category"], int(r["year"]), int(r["subjects"]))
            for r in rows
        ]

    async def ping(self) -> None:
        """Raise :class:`~gateway.ledger.base.LedgerUnavailable` if the server does not answer."""
        pool = await self._ready_pool()
        await self.guard(pool.fetchval("SELECT 1"))

    async def close(self) -> None:
        """Close the pool (waits for connections in use to be released)."""
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
