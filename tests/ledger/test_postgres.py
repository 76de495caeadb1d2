"""PostgreSQL specifics: replicas in separate processes, schema handling, failing closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.errors import ConfigError
from gateway.ledger import LedgerUnavailable, PostgresLedger, open_ledger
from gateway.ledger.base import TransferEntry
from gateway.ledger.postgres import lock_key
from tests.ledger.hammer import ORG, YEAR, expected_union, hammer
from tests.ledger.pg import PG_URL, drop_schema, new_schema, require_pg

pytestmark = pytest.mark.postgres

ROUNDS, BATCH, UNIVERSE = 40, 200, 5000


@pytest.fixture
def schema() -> str:
    require_pg()
    return new_schema()


@pytest.fixture
async def cleanup(schema: str) -> AsyncIterator[None]:
    yield
    await drop_schema(schema)


@pytest.mark.usefixtures("cleanup")
async def test_two_processes_neither_double_count_nor_race(schema: str, tmp_path: Path) -> None:
    url = f"{PG_URL}?schema={schema}"
    results = hammer(url, tmp_path, rounds=ROUNDS, batch=BATCH, universe=UNIVERSE, schema=schema)
    # They really ran at the same time ...
    (s0, e0), (s1, e1) = ((r["start"], r["end"]) for r in results)
    assert s0 < e1
    assert s1 < e0
    # ... no transaction saw a total that another changed under it ...
    assert [r["mismatches"] for r in results] == [0, 0]
    # ... and the total is exactly the union: no double count, no lost update.
    ledger = await open_ledger(url)
    try:
        totals = await ledger.totals(year=YEAR, organisation=ORG)
    finally:
        await ledger.close()
    union = expected_union(2, ROUNDS, BATCH, UNIVERSE)
    assert [t.subjects for t in totals] == [union]
    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetchval(f"SELECT count(*) FROM {schema}.ledger_subjects")
    finally:
        await conn.close()
    assert rows == union


@pytest.mark.usefixtures("cleanup")
async def test_harness_detects_the_race_without_the_advisory_lock(
    schema: str, tmp_path: Path
) -> None:
    # The same run with the cross-process lock removed and the window between
    # count and add widened: the check above must catch stale totals.
    results = hammer(
        PG_URL,
        tmp_path,
        rounds=15,
        batch=BATCH,
        universe=UNIVERSE,
        schema=schema,
        pause=0.01,
        unlocked=True,
    )
    assert sum(r["mismatches"] for r in results) > 0


@pytest.mark.usefixtures("cleanup")
async def test_schema_creation_is_idempotent_and_concurrent(schema: str) -> None:
    ledgers = await asyncio.gather(
        *(PostgresLedger(PG_URL, schema=schema).open() for _ in range(4))
    )
    try:
        async with ledgers[0].transaction("o", 2026) as tx:
            await tx.add("personal", [b"\x01" * 16])
        assert [t.subjects for t in await ledgers[3].totals()] == [1]
    finally:
        for ledger in ledgers:
            await ledger.close()


@pytest.mark.usefixtures("cleanup")
async def test_read_only_open_of_a_missing_schema_reads_empty(schema: str) -> None:
    ledger = await open_ledger(f"{PG_URL}?schema={schema}", create=False)
    try:
        assert await ledger.totals() == []
    finally:
        await ledger.close()


def test_schema_names_are_validated() -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresLedger(PG_URL, schema='x"; DROP TABLE y; --')


def test_lock_keys_are_stable_signed_64_bit() -> None:
    key = lock_key("gateway_ledger", "hku", 2026)
    assert key == lock_key("gateway_ledger", "hku", 2026)
    assert -(2**63) <= key < 2**63
    assert (
        len({lock_key("s", "hku", 2026), lock_key("s", "hku", 2027), lock_key("s", "cu", 2026)})
        == 3
    )


async def test_unreachable_server_fails_closed_without_the_password() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    with pytest.raises(LedgerUnavailable) as info:
        await open_ledger("postgresql://gw:hunter2@127.0.0.1:1/test")
    assert "hunter2" not in str(info.value)


@pytest.mark.usefixtures("cleanup")
async def test_a_closed_ledger_fails_closed(schema: str) -> None:
    ledger = await PostgresLedger(PG_URL, schema=schema).open()
    await ledger.close()
    with pytest.raises(LedgerUnavailable, match="closed"):
        await ledger.ping()
    with pytest.raises(LedgerUnavailable, match="closed"):
        async with ledger.transaction(ORG, YEAR):
            pass


def _held(transfer_id: str, instance: str) -> TransferEntry:
    history = [{"state": "review", "at": 1.0}]
    status = {"transfer_id": transfer_id, "state": "review", "history": history}
    return TransferEntry(transfer_id, instance, "hk-research", status)


@pytest.mark.usefixtures("cleanup")
async def test_one_replica_at_a_time_claims_an_open_review(schema: str) -> None:
    """Claims are atomic across replicas (two pools, as two processes would be),
    end with their lease or their release, carry the approvals, and only open
    reviews are claimed."""
    a = await PostgresLedger(PG_URL, schema=schema).open()
    b = await PostgresLedger(PG_URL, schema=schema).open()
    try:
        await a.publish_transfer(_held("t_1", "hk-0"), 1)
        results = await asyncio.gather(
            *(ledger.claim_review("t_1", name, 60) for ledger, name in ((a, "hk-0"), (b, "hk-1")))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        winner = "hk-0" if results[0] is not None else "hk-1"
        loser_ledger, loser = (b, "hk-1") if winner == "hk-0" else (a, "hk-0")
        assert winners[0].claimed_by == winner
        assert await loser_ledger.claim_review("t_1", loser, 60) is None
        assert [e.transfer_id for e in await a.claims_of(winner, ("review",))] == ["t_1"]
        # Released with a first approval: the other replica claims it and sees it.
        approval = {"officer": "chan.tai-man", "comment": "fine", "reference": None}
        await loser_ledger.release_review("t_1", loser, [approval])  # not its claim: no effect
        assert await loser_ledger.claim_review("t_1", loser, 60) is None
        await a.release_review("t_1", winner, [approval])
        assert await a.claims_of(winner, ("review",)) == []  # released: no claim of its own left
        taken = await loser_ledger.claim_review("t_1", loser, 0.2)
        assert taken is not None
        assert taken.approvals == (approval,)
        # A lease that ran out (its replica died deciding) is claimed by another.
        await asyncio.sleep(0.5)
        again = await a.claim_review("t_1", "hk-2", 60)
        assert again is not None
        assert again.claimed_by == "hk-2"
        # Decided: nobody claims it any more.
        decided = _held("t_1", "hk-2")
        decided.status["state"] = "rejected"
        await a.publish_transfer(decided, 2)
        assert await b.claim_review("t_1", "hk-3", 60) is None
        assert await a.claims_of("hk-2", ("review",)) == []
        assert await a.claim_review("t_unknown", "hk-0", 60) is None
    finally:
        await a.close()
        await b.close()


@pytest.mark.usefixtures("cleanup")
async def test_a_verdict_landing_after_its_delivery_still_leaves_its_receipt(schema: str) -> None:
    """The verdict's write (with the receipt) and the delivery's run side by side: when
    the delivery's lands first, the state stays delivered and the receipt is kept."""
    ledger = await PostgresLedger(PG_URL, schema=schema).open()
    try:
        delivered = _held("t_2", "hk-0")
        delivered.status["state"] = "delivered"
        await ledger.publish_transfer(delivered, 7)
        allowed = _held("t_2", "hk-0")
        allowed.status["state"] = "allowed"
        receipt = {"index": 6, "leaf_hash": "abc"}
        await ledger.publish_transfer(
            TransferEntry("t_2", "hk-0", "hk-research", allowed.status, receipt), 6
        )
        found = await ledger.find_transfer("t_2")
        assert found is not None
        assert found.status["state"] == "delivered"
        assert found.receipt == receipt
    finally:
        await ledger.close()
