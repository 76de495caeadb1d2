"""The ledger contract, run against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from datetime import UTC, datetime

import pytest

from gateway.ledger import Ledger, LedgerCount, LedgerTotal, MemoryLedger, ledger_year

ORG = "hku-genomics"
YEAR = 2026


def digests(*ids: int) -> list[bytes]:
    """Stand-ins for the scanner's 16-byte keyed hashes of subjects."""
    return [hashlib.sha256(b"subject-%d" % i).digest()[:16] for i in ids]


async def subjects(ledger: Ledger, org: str = ORG, year: int = YEAR) -> dict[str, int]:
    return {t.category: t.subjects for t in await ledger.totals(year=year, organisation=org)}


async def test_empty_ledger_counts_zero(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        assert await tx.count("personal", digests(1, 2)) == LedgerCount(current=0, projected=2)
    assert await ledger.totals() == []
    await ledger.ping()


async def test_same_person_twice_counts_once(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        assert await tx.add("personal", digests(1, 2, 1)) == 2
    async with ledger.transaction(ORG, YEAR) as tx:
        assert await tx.count("personal", digests(1)) == LedgerCount(current=2, projected=2)
        assert await tx.add("personal", digests(2, 1)) == 2
    assert await subjects(ledger) == {"personal": 2}


async def test_projected_is_the_union_not_the_sum(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", digests(1, 2, 3))
    async with ledger.transaction(ORG, YEAR) as tx:
        # 2 and 3 are known, 4 is new (and listed twice): 3 + 1, not 3 + 4.
        count = await tx.count("personal", digests(2, 3, 4, 4))
        assert count == LedgerCount(current=3, projected=4)
        assert await tx.add("personal", digests(2, 3, 4, 4)) == count.projected


async def test_count_sees_this_transactions_own_adds(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", digests(1, 2))
        assert await tx.count("personal", digests(2, 3)) == LedgerCount(current=2, projected=3)


async def test_counts_reads_every_category_as_count_does(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", digests(1, 2, 3))
        await tx.add("sensitive", digests(1))
    async with ledger.transaction(ORG, YEAR) as tx:
        counts = await tx.counts(
            {"personal": digests(3, 4, 4), "sensitive": [], "important": digests(9)}
        )
        assert counts == {
            "personal": LedgerCount(current=3, projected=4),
            "sensitive": LedgerCount(current=1, projected=1),
            "important": LedgerCount(current=0, projected=1),
        }
        assert counts["personal"] == await tx.count("personal", digests(3, 4))


async def test_a_transfer_without_subjects_reads_the_committed_totals(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", digests(1, 2))
    async with ledger.transaction(ORG, YEAR) as tx:
        counts = await tx.counts({"personal": [], "sensitive": []})
        assert counts == {
            "personal": LedgerCount(current=2, projected=2),
            "sensitive": LedgerCount(current=0, projected=0),
        }
        # The same transaction may still add (it then takes the write lock).
        assert await tx.add("personal", digests(3)) == 3
    assert await subjects(ledger) == {"personal": 3}


async def test_rollback_on_exception_adds_nothing(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", digests(1))
    seen: list[int] = []

    async def decide_then_fail() -> None:
        async with ledger.transaction(ORG, YEAR) as tx:
            seen.append(await tx.add("personal", digests(2, 3)))
            raise RuntimeError("blocked after add")

    with pytest.raises(RuntimeError, match="blocked"):
        await decide_then_fail()
    assert seen == [3]
    assert await subjects(ledger) == {"personal": 1}
    async with ledger.transaction(ORG, YEAR) as tx:
        assert await tx.count("personal", digests(2, 3)) == LedgerCount(current=1, projected=3)


async def test_cancelled_transaction_rolls_back_and_releases_the_lock(ledger: Ledger) -> None:
    added = asyncio.Event()

    async def stuck() -> None:
        async with ledger.transaction(ORG, YEAR) as tx:
            await tx.add("personal", digests(1, 2))
            added.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await added.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        async with ledger.transaction(ORG, YEAR) as tx:
            assert await tx.count("personal", digests(1)) == LedgerCount(current=0, projected=1)
    assert await ledger.totals() == []


async def test_categories_years_and_organisations_are_separate(ledger: Ledger) -> None:
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", digests(1, 2))
        await tx.add("sensitive", digests(1))
    async with ledger.transaction(ORG, YEAR + 1) as tx:
        assert await tx.count("personal", digests(1)) == LedgerCount(current=0, projected=1)
        await tx.add("personal", digests(1, 2, 3))
    async with ledger.transaction("cuhk-sz", YEAR) as tx:
        assert await tx.count("personal", digests(1)) == LedgerCount(current=0, projected=1)
        await tx.add("personal", digests(9))
    assert await ledger.totals() == [
        LedgerTotal("cuhk-sz", "personal", YEAR, 1),
        LedgerTotal(ORG, "personal", YEAR, 2),
        LedgerTotal(ORG, "personal", YEAR + 1, 3),
        LedgerTotal(ORG, "sensitive", YEAR, 1),
    ]
    assert await ledger.totals(year=YEAR + 1) == [LedgerTotal(ORG, "personal", YEAR + 1, 3)]
    assert await ledger.totals(organisation="cuhk-sz") == [
        LedgerTotal("cuhk-sz", "personal", YEAR, 1)
    ]
    assert await ledger.totals(year=YEAR, organisation=ORG) == [
        LedgerTotal(ORG, "personal", YEAR, 2),
        LedgerTotal(ORG, "sensitive", YEAR, 1),
    ]


async def test_utc_plus_8_year_boundary(ledger: Ledger) -> None:
    # 16:30 UTC on 31 December is 00:30 on 1 January in Shenzhen and Hong Kong.
    before = datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC)
    after = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)
    assert ledger_year(before) == 2026
    assert ledger_year(after) == 2027
    async with ledger.transaction(ORG, ledger_year(before)) as tx:
        await tx.add("personal", digests(1, 2))
    async with ledger.transaction(ORG, ledger_year(after)) as tx:
        # A new year starts from zero: the Provisions count from 1 January.
        assert await tx.count("personal", digests(1)) == LedgerCount(current=0, projected=1)
        await tx.add("personal", digests(1))
    assert await subjects(ledger, year=2026) == {"personal": 2}
    assert await subjects(ledger, year=2027) == {"personal": 1}


def test_ledger_year_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        ledger_year(datetime(2026, 12, 31, 23, 0))  # naive on purpose


async def test_concurrent_transactions_of_one_organisation_serialise(ledger: Ledger) -> None:
    spans: list[tuple[float, float]] = []
    stale: list[tuple[int, int]] = []

    async def transfer(ids: range) -> None:
        async with ledger.transaction(ORG, YEAR) as tx:
            start = time.monotonic()
            count = await tx.count("personal", digests(*ids))
            await asyncio.sleep(0.02)  # a policy decision's worth of time, widened
            total = await tx.add("personal", digests(*ids))
            if total != count.projected:
                stale.append((count.projected, total))
            spans.append((start, time.monotonic()))

    # Overlapping subjects: each transfer shares half its people with the next.
    await asyncio.gather(*(transfer(range(i * 5, i * 5 + 10)) for i in range(6)))
    assert stale == []
    spans.sort()
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    assert await subjects(ledger) == {"personal": 35}


async def test_large_transfer_counts_and_adds_100k_digests(ledger: Ledger) -> None:
    big = digests(*range(100_000))
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", big[:50_000])
    async with ledger.transaction(ORG, YEAR) as tx:
        assert await tx.count("personal", big) == LedgerCount(current=50_000, projected=100_000)
        assert await tx.add("personal", big) == 100_000
    assert await subjects(ledger) == {"personal": 100_000}


async def test_memory_ledger_initial_totals() -> None:
    ledger = MemoryLedger({(ORG, YEAR, "personal"): 99_999})
    async with ledger.transaction(ORG, YEAR) as tx:
        assert await tx.count("personal", digests(1, 2)) == LedgerCount(99_999, 100_001)
