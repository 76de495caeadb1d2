"""The ledger interface and its in-memory implementation.

The 2024 Provisions count exported personal information cumulatively from
1 January, per data processor (REGULATIONS.md). The gateway keeps, per sender
organisation, category (``personal``, ``sensitive``) and calendar year, the set
of keyed hashes of the subjects exported, so the same person sent twice counts
once. The calendar year is taken in UTC+8: Asia/Shanghai and Asia/Hong_Kong
share that offset and neither observes daylight saving time.

Deciding and recording happen in one :meth:`Ledger.transaction`, which holds a
per-(organisation, year) lock for its duration: two concurrent transfers of the
same organisation (in one process or, with PostgreSQL, across replicas) cannot
both be judged against the same old total.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

from gateway.errors import Unavailable

#: The parks' civil time zone (Asia/Shanghai == Asia/Hong_Kong == UTC+8, no DST).
PARK_TZ = timezone(timedelta(hours=8), "UTC+08:00")


def ledger_year(now: datetime | None = None) -> int:
    """The calendar year, in the parks' time zone, that ``now`` (default: now) falls in."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("ledger_year needs an aware datetime")
    return moment.astimezone(PARK_TZ).year


class LedgerUnavailable(Unavailable):
    """The ledger backend failed (unreachable, locked too long, corrupt).

    A 503: the gateway cannot decide against yearly totals it cannot read, so
    it fails closed. The message names the backend (file path, or URL without
    password) and the error class, never a digest or row value.
    """


@dataclass(frozen=True, slots=True)
class LedgerCount:
    """An organisation's subjects in one category and year.

    Attributes:
        current: distinct subjects recorded so far this year.
        projected: distinct subjects after adding this transfer's (the union,
            not the sum: people already counted are not counted again).
    """

    current: int
    projected: int


@dataclass(frozen=True, slots=True, order=True)
class LedgerTotal:
    """One row of ``gateway ledger show``."""

    organisation: str
    category: str
    year: int
    subjects: int


@dataclass(frozen=True, slots=True)
class TransferEntry:
    """What the park's replicas share about one transfer (issue 16).

    Attributes:
        transfer_id: the transfer.
        instance: the replica whose audit log holds its records.
        sender: its sender identity (only they, or an officer, may read it).
        status: the body of ``GET /v1/transfers/{id}``.
        receipt: the receipt of its decision record (index and leaf hash;
            its inclusion proof comes from that instance's log).
        claimed_by: the replica deciding it, while it is an open review.
        approvals: an open review's approvals so far (four eyes), each
            ``{"officer", "comment", "reference"}``.
    """

    transfer_id: str
    instance: str
    sender: str
    status: dict[str, Any]
    receipt: dict[str, Any] | None = None
    claimed_by: str | None = None
    approvals: tuple[dict[str, Any], ...] = ()


class TransferDirectory(Protocol):
    """Where the replicas of a park publish their transfers' states."""

    async def publish_transfer(self, entry: TransferEntry, seq: int) -> None:
        """Publish (or update) a transfer; ``seq`` orders one instance's updates."""
        ...

    async def find_transfer(self, transfer_id: str) -> TransferEntry | None:
        """What was published about ``transfer_id``."""
        ...

    async def pending_reviews(self, limit: int, offset: int) -> tuple[int, list[TransferEntry]]:
        """The park's transfers held for review, oldest first: the total and one page."""
        ...

    async def claim_review(
        self, transfer_id: str, instance: str, lease_seconds: float
    ) -> TransferEntry | None:
        """Take the open review for ``instance`` to decide (None: not open, or claimed)."""
        ...

    async def release_review(
        self, transfer_id: str, instance: str, approvals: list[dict[str, Any]] | None = None
    ) -> None:
        """Give up a claim, recording the approvals so far if given."""
        ...

    async def claims_of(self, instance: str, states: Collection[str]) -> list[TransferEntry]:
        """The transfers in one of ``states`` that ``instance`` claimed."""
        ...


class LocalOnly:
    """The directory of a single gateway (memory or SQLite ledger): its own audit
    log answers every lookup, so there is nothing to share."""

    async def publish_transfer(self, entry: TransferEntry, seq: int) -> None:
        """Nothing to publish to."""

    async def find_transfer(self, transfer_id: str) -> TransferEntry | None:
        """Never anything: the caller's audit log is the whole park's."""
        return None

    async def pending_reviews(self, limit: int, offset: int) -> tuple[int, list[TransferEntry]]:
        """Nothing: the caller's own held reviews are the whole park's."""
        return 0, []

    async def claim_review(
        self, transfer_id: str, instance: str, lease_seconds: float
    ) -> TransferEntry | None:
        """Never anything: the caller holds every review of its park in memory."""
        return None

    async def release_review(
        self, transfer_id: str, instance: str, approvals: list[dict[str, Any]] | None = None
    ) -> None:
        """Nothing was claimed."""

    async def claims_of(self, instance: str, states: Collection[str]) -> list[TransferEntry]:
        """Nothing: there are no claims."""
        return []


class LedgerTransaction(Protocol):
    """Reads and writes of one organisation-year, under its lock."""

    async def count(self, category: str, digests: Collection[bytes]) -> LedgerCount:
        """Current and projected distinct subjects of ``category``."""
        ...

    async def counts(self, digests: Mapping[str, Collection[bytes]]) -> dict[str, LedgerCount]:
        """:meth:`count` of every category of ``digests`` at once (a decision's reads).

        Here one after another; a backend that can read them in one trip (SQLite,
        on its worker thread) overrides it.
        """
        return {category: await self.count(category, d) for category, d in digests.items()}

    async def add(self, category: str, digests: Collection[bytes]) -> int:
        """Record ``digests`` (idempotent per digest); return the new total."""
        ...


class Ledger(Protocol):
    """A ledger backend (memory, SQLite, PostgreSQL)."""

    def transaction(
        self, organisation: str, year: int
    ) -> contextlib.AbstractAsyncContextManager[LedgerTransaction]:
        """Lock ``(organisation, year)``; commit on clean exit, roll back on error."""
        ...

    async def totals(
        self, year: int | None = None, organisation: str | None = None
    ) -> list[LedgerTotal]:
        """Totals per organisation and category, optionally filtered."""
        ...

    async def ping(self) -> None:
        """Raise if the backend is unreachable (for ``/readyz``)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class _MemoryTransaction(LedgerTransaction):
    def __init__(self, store: dict[str, set[bytes]]) -> None:
        self._store = store
        self._pending: dict[str, set[bytes]] = {}

    def _seen(self, category: str) -> set[bytes]:
        return self._store.get(category, set()) | self._pending.get(category, set())

    async def count(self, category: str, digests: Collection[bytes]) -> LedgerCount:
        seen = self._seen(category)
        new = sum(1 for d in set(digests) if d not in seen)
        return LedgerCount(current=len(seen), projected=len(seen) + new)

    async def add(self, category: str, digests: Collection[bytes]) -> int:
        self._pending.setdefault(category, set()).update(digests)
        return len(self._seen(category))

    def commit(self) -> None:
        for category, digests in self._pending.items():
            self._store.setdefault(category, set()).update(digests)


class MemoryLedger:
    """A process-local ledger, for tests, ``policy test`` and ``explain``.

    Args:
        initial: optional starting totals ``{(organisation, year, category): n}``;
            they are represented by ``n`` synthetic digests that no real
            subject hashes to.
    """

    def __init__(self, initial: Mapping[tuple[str, int, str], int] | None = None) -> None:
        self._data: dict[tuple[str, int], dict[str, set[bytes]]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        for (organisation, year, category), n in (initial or {}).items():
            store = self._data.setdefault((organisation, year), {})
            store[category] = {b"\xff" * 8 + i.to_bytes(8, "big") for i in range(n)}

    @contextlib.asynccontextmanager
    async def transaction(self, organisation: str, year: int) -> AsyncIterator[LedgerTransaction]:
        key = (organisation, year)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            tx = _MemoryTransaction(self._data.setdefault(key, {}))
            yield tx
            tx.commit()

    async def totals(
        self, year: int | None = None, organisation: str | None = None
    ) -> list[LedgerTotal]:
        return sorted(
            LedgerTotal(org, category, yr, len(digests))
            for (org, yr), store in self._data.items()
            for category, digests in store.items()
            if (year is None or yr == year) and (organisation is None or org == organisation)
        )

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
