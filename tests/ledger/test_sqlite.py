"""SQLite specifics: two processes on one file, pragmas, bad files fail clearly."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.ledger import LedgerUnavailable, SqliteLedger, open_ledger
from tests.ledger.hammer import ORG, YEAR, expected_union, hammer

ROUNDS, BATCH, UNIVERSE = 30, 200, 4000


async def test_two_processes_on_one_file_neither_double_count_nor_race(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    # No file yet: both processes create it (and the schema) at once, then hammer.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    results = hammer(str(path), barrier, rounds=ROUNDS, batch=BATCH, universe=UNIVERSE)
    (s0, e0), (s1, e1) = ((r["start"], r["end"]) for r in results)
    assert s0 < e1
    assert s1 < e0
    assert [r["mismatches"] for r in results] == [0, 0]
    union = expected_union(2, ROUNDS, BATCH, UNIVERSE)
    ledger = await open_ledger(f"sqlite:///{path}")
    try:
        assert [t.subjects for t in await ledger.totals(YEAR, ORG)] == [union]
    finally:
        await ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_subjects").fetchone() == (union,)


async def test_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    ledger = await SqliteLedger(tmp_path / "l.sqlite3").open()
    await ledger.close()
    with sqlite3.connect(tmp_path / "l.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    ledger = await open_ledger(str(tmp_path / "var" / "ledger.sqlite3"))
    await ledger.close()
    assert (tmp_path / "var" / "ledger.sqlite3").is_file()


async def test_read_only_open_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.sqlite3: no such file"):
        await open_ledger(str(tmp_path / "missing.sqlite3"), create=False)
    assert not (tmp_path / "missing.sqlite3").exists()


async def test_not_a_database_fails_closed_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(LedgerUnavailable, match=r"junk\.sqlite3"):
        await open_ledger(str(path))


async def test_a_writer_in_another_connection_blocks_then_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.ledger.sqlite as backend

    monkeypatch.setattr(backend, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "l.sqlite3"
    ledger = await SqliteLedger(path).open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(LedgerUnavailable, match="locked"):
            async with ledger.transaction(ORG, YEAR) as tx:
                await tx.add("personal", [b"\x00" * 16])
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with ledger.transaction(ORG, YEAR) as tx:  # and recovers once it is released
        assert await tx.add("personal", [b"\x00" * 16]) == 1
    await ledger.close()


async def test_reads_without_subjects_do_not_wait_for_another_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean transfer adds nothing: it reads the committed totals, and only a
    transfer with subjects waits for (and then fails on) another process's lock."""
    import gateway.ledger.sqlite as backend

    monkeypatch.setattr(backend, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "l.sqlite3"
    ledger = await SqliteLedger(path).open()
    async with ledger.transaction(ORG, YEAR) as tx:
        await tx.add("personal", [b"\x01" * 16])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute(
        "UPDATE ledger_totals SET subjects = 99 WHERE organisation = ? AND year = ?", (ORG, YEAR)
    )
    try:
        async with ledger.transaction(ORG, YEAR) as tx:
            counts = await tx.counts({"personal": [], "sensitive": []})
        assert counts["personal"].current == 1  # committed, not the other's pending 99
        with pytest.raises(LedgerUnavailable, match="locked"):
            async with ledger.transaction(ORG, YEAR) as tx:
                await tx.counts({"personal": [b"\x02" * 16], "sensitive": []})
    finally:
        other.execute("ROLLBACK")
        other.close()
    await ledger.close()


async def test_a_closed_ledger_fails_closed(tmp_path: Path) -> None:
    ledger = await SqliteLedger(tmp_path / "l.sqlite3").open()
    await ledger.close()
    await ledger.close()  # idempotent
    with pytest.raises(LedgerUnavailable, match="closed"):
        await ledger.ping()
    with pytest.raises(LedgerUnavailable, match="closed"):
        async with ledger.transaction(ORG, YEAR):
            pass


def _connect_at(path: str, start_at: float, errors: Any) -> None:
    """Child process: wait for the shared start time, then connect as the gateway does."""
    from gateway.ledger.sqlite import _Worker

    while time.time() < start_at:
        pass
    try:
        _Worker(Path(path), "race")._connect().close()
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"{type(exc).__name__}: {exc}")
        errors.close()
        errors.join_thread()
        raise SystemExit(1) from exc


def test_processes_opening_a_fresh_file_at_once_all_connect(tmp_path: Path) -> None:
    # Without the set-up lock a third of these races ended in "database is
    # locked" or "disk I/O error" from the concurrent switch to WAL.
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"fresh-{round_}.sqlite3")
        start_at = time.time() + 0.05
        children = [
            ctx.Process(target=_connect_at, args=(path, start_at, errors)) for _ in range(3)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=30)
        reported = [errors.get(timeout=5) for child in children if child.exitcode == 1]
        assert reported == []
        assert [child.exitcode for child in children] == [0, 0, 0]
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_transaction_that_reads_nothing_makes_no_worker_trip(tmp_path: Path) -> None:
    # A clean transfer's ledger transaction counts nothing: it must not wait
    # behind the worker thread (here held by a job that ends only after it).
    ledger = await SqliteLedger(tmp_path / "l.sqlite3").open()
    release = threading.Event()
    blocked = ledger._writer.submit(lambda _conn: release.wait(30))
    try:
        async with asyncio.timeout(10):
            async with ledger.transaction(ORG, YEAR):
                pass
    finally:
        release.set()
        await blocked
    async with ledger.transaction(ORG, YEAR) as tx:  # one that reads still commits
        await tx.add("personal", {b"d" * 16})
    assert [(t.category, t.subjects) for t in await ledger.totals(YEAR)] == [("personal", 1)]
    await ledger.close()
