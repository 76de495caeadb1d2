"""The embedded ledger: one SQLite file, safe for several processes.

This is the default backend (``make run``): no server to run, and still
correct when two gateway processes share the file. Correctness rests on two
locks, and the reasons for each:

- ``BEGIN IMMEDIATE`` takes SQLite's single write lock before a transaction's
  first read (in the same worker call as that read: one thread round trip
  less per transfer). A deferred transaction would read the total, then try to
  upgrade to a writer and fail with ``SQLITE_BUSY`` if another process wrote
  meanwhile; taking the write lock first makes count-then-add atomic across
  processes.
- One :class:`asyncio.Lock` per ledger serialises transactions inside the
  process. SQLite has exactly one writer per database file, so transactions of
  different organisation-years could not overlap anyway; a per-organisation
  lock would only move the waiting from the event loop into a blocked thread.

Every SQLite call runs on a dedicated worker thread (one per connection), so a
slow ``fsync`` or a lock held by another process never blocks the event loop.
The journal is WAL with ``synchronous=FULL``: in WAL mode ``NORMAL`` may lose
the last committed transactions on power loss, and a lost ``add`` would let an
organisation export more people than the ledger shows (an undercount is the
unsafe direction for a compliance ledger); FULL costs one fsync per commit.

Totals are kept in their own table, updated in the same transaction as the
digests, so ``count`` reads the current total in O(1) instead of counting an
organisation's (up to millions of) rows on every transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.errors import ConfigError
from gateway.ledger.base import LedgerCount, LedgerTotal, LedgerTransaction, LedgerUnavailable

T = TypeVar("T")

#: How long ``BEGIN IMMEDIATE`` waits for another process's write lock before the
#: transfer fails closed (503). A ledger transaction lasts milliseconds (count,
#: a pure policy evaluation, one insert batch); 10 s only runs out when the
#: other holder is stuck, and then a clear 503 beats a hung upload.
BUSY_TIMEOUT_MS = 10_000

#: Digests per ``IN (…)`` lookup. SQLite's bound-parameter limit is 32,766 since
#: 3.32 (999 before); 500 stays far below either while keeping a 100k-digest
#: transfer to 200 cached statements.
LOOKUP_BATCH = 500

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ledger_subjects (
        organisation TEXT NOT NULL,
        year INTEGER NOT NULL,
        category TEXT NOT NULL,
        digest BLOB NOT NULL,
        PRIMARY KEY (organisation, year, category, digest)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS ledger_totals (
        organisation TEXT NOT NULL,
        year INTEGER NOT NULL,
        category TEXT NOT NULL,
        subjects INTEGER NOT NULL,
        PRIMARY KEY (organisation, year, category)
    ) WITHOUT ROWID
    """,
)


#: Polling step while another process holds the set-up lock.
_SETUP_POLL_S = 0.005


@contextlib.contextmanager
def _setup_lock(db_path: Path) -> Iterator[None]:
    """Serialise connection set-up across processes with ``flock`` on a side file.

    Two processes that open a fresh file at once both switch it to WAL, and
    SQLite does not arbitrate that switch: one of them fails with
    ``database is locked`` or even ``disk I/O error`` (seen in 1 of 3 races),
    and the busy timeout does not apply. Holding this lock for the few
    milliseconds of connect-and-pragmas makes the switch happen once. A side
    file, because opening and closing a descriptor of the database itself
    would drop SQLite's own POSIX locks in this process.
    """
    lock_path = db_path.with_name(db_path.name + "-setup.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LedgerUnavailable(f"ledger {db_path}: set-up lock {lock_path}: {exc}") from exc
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LedgerUnavailable(
                        f"ledger {db_path}: another process holds the set-up lock"
                        f" {lock_path} (database is locked)"
                    ) from None
                time.sleep(_SETUP_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _lookup_sql(n: int) -> str:
    # Only ``n`` placeholders are formatted in; the digests are bound parameters.
    placeholders = ",".join("?" * n)
    return (
        "SELECT COUNT(*) FROM ledger_subjects"  # noqa: S608
        " WHERE organisation = ? AND year = ? AND category = ?"
        f" AND digest IN ({placeholders})"
    )


def _batches(items: list[bytes], size: int) -> Iterable[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Worker:
    """One SQLite connection and the one thread that is allowed to use it."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False
        self.conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread; SQLite errors fail closed."""
        return await self.submit(fn)

    def check_open(self) -> None:
        """Fail closed on a closed ledger (raises :class:`LedgerUnavailable`)."""
        if self._closed:
            raise LedgerUnavailable(f"ledger {self._path}: closed")

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` behind every call already queued (the executor is FIFO)."""
        self.check_open()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self.conn is None:
                self.conn = self._connect()
            return fn(self.conn)
        except sqlite3.Error as exc:
            # The message may quote SQL but never data: values are bound parameters.
            raise LedgerUnavailable(f"ledger {self._path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        with _setup_lock(self._path):
            # isolation_level=None: no implicit transactions; we issue BEGIN ourselves.
            conn = sqlite3.connect(
                self._path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
            except BaseException:
                conn.close()  # the next call connects afresh
                raise
            return conn

    async def close(self) -> None:
        def _close(_: sqlite3.Connection) -> None:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

        if self._closed:
            return
        if self.conn is not None:
            await self.run(_close)
        self._closed = True
        self._executor.shutdown(wait=True)


class _SqliteTransaction(LedgerTransaction):
    """Reads and writes of one organisation-year inside ``BEGIN IMMEDIATE``."""

    def __init__(self, worker: _Worker, organisation: str, year: int) -> None:
        self._worker = worker
        self._key = (organisation, year)
        #: Whether a statement was sent (and so may have begun the transaction):
        #: one that sent none has nothing to commit and skips the worker trip.
        self.used = False

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        """Take the write lock before the transaction's first statement."""
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")

    def _current(self, conn: sqlite3.Connection, category: str) -> int:
        row = conn.execute(
            "SELECT subjects FROM ledger_totals"
            " WHERE organisation = ? AND year = ? AND category = ?",
            (*self._key, category),
        ).fetchone()
        return int(row[0]) if row else 0

    def _count(self, conn: sqlite3.Connection, category: str, unique: list[bytes]) -> LedgerCount:
        current = self._current(conn, category)
        known = 0
        for batch in _batches(unique, LOOKUP_BATCH):
            row = conn.execute(_lookup_sql(len(batch)), (*self._key, category, *batch))
            known += int(row.fetchone()[0])
        return LedgerCount(current=current, projected=current + len(unique) - known)

    async def count(self, category: str, digests: Collection[bytes]) -> LedgerCount:
        return (await self.counts({category: digests}))[category]

    async def counts(self, digests: Mapping[str, Collection[bytes]]) -> dict[str, LedgerCount]:
        """Every category's count in one call on the worker thread.

        A transfer with no subjects (every set empty, the common clean
        transfer) reads the committed totals without taking the write lock:
        it adds nothing, so nothing needs to be atomic with those reads, and
        the transaction then has nothing to commit (no second worker trip).
        Judging it on the totals as they stood a moment before another
        process's commit is the same as judging it before that commit.
        """
        wanted = {category: list(set(d)) for category, d in digests.items()}
        writes = any(wanted.values())
        if writes:
            self.used = True

        def _counts(conn: sqlite3.Connection) -> dict[str, LedgerCount]:
            if writes:
                self._begin(conn)
            return {category: self._count(conn, category, u) for category, u in wanted.items()}

        return await self._worker.run(_counts)

    async def add(self, category: str, digests: Collection[bytes]) -> int:
        self.used = True
        unique = set(digests)
        organisation, year = self._key

        def _add(conn: sqlite3.Connection) -> int:
            self._begin(conn)
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO ledger_subjects (organisation, year, category, digest)"
                " VALUES (?, ?, ?, ?)",
                ((organisation, year, category, d) for d in unique),
            )
            inserted = conn.total_changes - before
            row = conn.execute(
                "INSERT INTO ledger_totals (organisation, year, category, subjects)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (organisation, year, category)"
                " DO UPDATE SET subjects = subjects + excluded.subjects"
                " RETURNING subjects",
                (organisation, year, category, inserted),
            ).fetchone()
            return int(row[0])

        return await self._worker.run(_add)


def _commit(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # a transaction that read nothing never began
        conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SqliteLedger:
    """The ledger in one SQLite file (created with its schema when missing).

    Args:
        path: the database file.
        create: create the file and schema when missing; with ``False`` (the
            read-only ``gateway ledger show``) a missing file is a
            :class:`~gateway.errors.ConfigError`.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ConfigError(f"ledger {self.path}: no such file")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create = create
        self._writer = _Worker(self.path, "ledger-sqlite-w")
        # WAL readers never wait for the writer: totals() and ping() use their own
        # connection, so they neither block nor see an uncommitted transaction.
        self._reader = _Worker(self.path, "ledger-sqlite-r")
        self._lock = asyncio.Lock()
        self._ready = False

    async def _ensure_schema(self) -> None:
        if self._ready:
            return

        def _create(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        if self._create:
            await self._writer.run(_create)
        self._ready = True

    async def open(self) -> SqliteLedger:
        """Connect and create the schema now, so that a bad path fails at start-up."""
        async with self._lock:
            await self._ensure_schema()
        await self.ping()
        return self

    @contextlib.asynccontextmanager
    async def transaction(self, organisation: str, year: int) -> AsyncIterator[LedgerTransaction]:
        """Lock the ledger file for writing; commit on clean exit, roll back on error.

        The file's write lock is taken with the first ``count`` or ``add``.
        """
        async with self._lock:
            await self._ensure_schema()
            self._writer.check_open()  # also for a transaction that will read nothing
            try:
                tx = _SqliteTransaction(self._writer, organisation, year)
                yield tx
                if tx.used:  # a clean transfer's transaction read nothing: no trip
                    await self._writer.run(_commit)
            except BaseException:
                # Queued behind whatever the worker is still running (the executor
                # is FIFO), so even a cancelled BEGIN or COMMIT is followed by a
                # rollback before the next transaction's BEGIN. Shielded so that a
                # second cancellation cannot skip it.
                with contextlib.suppress(LedgerUnavailable):
                    await asyncio.shield(self._writer.submit(_rollback))
                raise

    async def totals(
        self, year: int | None = None, organisation: str | None = None
    ) -> list[LedgerTotal]:
        """Committed totals per organisation, category and year."""

        def _totals(conn: sqlite3.Connection) -> list[LedgerTotal]:
            try:
                rows = conn.execute(
                    "SELECT organisation, category, year, subjects FROM ledger_totals"
                    " WHERE (?1 IS NULL OR year = ?1) AND (?2 IS NULL OR organisation = ?2)"
                    " ORDER BY organisation, category, year",
                    (year, organisation),
                ).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []  # an empty ledger opened read-only
                raise
            return [LedgerTotal(str(o), str(c), int(y), int(s)) for o, c, y, s in rows]

        return await self._reader.run(_totals)

    async def ping(self) -> None:
        """Raise :class:`~gateway.ledger.base.LedgerUnavailable` if the file cannot be read."""

        def _ping(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

        await self._reader.run(_ping)

    async def close(self) -> None:
        """Close both connections and their threads."""
        async with self._lock:
            await self._writer.close()
            await self._reader.close()
