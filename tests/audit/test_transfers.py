"""The persistent transfer-id index: lookups without scans, crash safety, distrust."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import gateway.audit.log as log_module
import gateway.audit.storage as storage_module
from gateway.audit.log import AuditLog
from gateway.audit.note import NoteSigner
from gateway.audit.receipt import verify_receipt
from gateway.audit.records import canonical_json
from gateway.audit.retention import prune
from gateway.audit.storage import INDEX_DIR, Line, list_segments
from gateway.audit.transfers import TRANSFERS_FILE, id_hash, read_index, transfer_ids
from tests.audit.conftest import ORIGIN, record
from tests.audit.test_storage import run_and_kill


class SegmentReads:
    """Counts segment files opened for reading (the scan path and catch-up)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = storage_module.iter_lines

        def counting(path: Path, offset: int = 0) -> Iterator[Line]:
            self.count += 1
            return original(path, offset)

        monkeypatch.setattr(storage_module, "iter_lines", counting)
        monkeypatch.setattr(log_module, "iter_lines", counting)


def index_file(directory: Path) -> Path:
    return directory / INDEX_DIR / TRANSFERS_FILE


def edit_index(directory: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Change a closed log's index behind its back (committed and closed: no WAL left)."""
    with contextlib.closing(sqlite3.connect(index_file(directory))) as conn:
        for statement, params in statements:
            conn.execute(statement, params)
        conn.commit()


async def fill(directory: Path, signer: NoteSigner, count: int, **options: object) -> None:
    """``count`` transfers t-0.., then a ``delivered`` record for every 10th one."""
    log = await AuditLog.open(directory, signer, origin=ORIGIN, **options)  # type: ignore[arg-type]
    try:
        for i in range(count):
            await log.append(record(i))
        for i in range(0, count, 10):
            await log.append(record(i, event="delivered"))
    finally:
        await log.close()


async def found(log: AuditLog, transfer_id: str) -> list[int]:
    return [receipt.index for receipt in await log.find(transfer_id)]


def test_transfer_ids_reads_escaped_ids_from_canonical_bytes() -> None:
    tricky = 'a"b\\c\u00e9\n'
    assert transfer_ids(canonical_json(record(1, transfer_id=tricky))) == [tricky]
    assert transfer_ids(canonical_json({"kind": "policy", "v": 1})) == []
    assert transfer_ids(canonical_json({"transfer_id": 5})) == []  # not a string: not a transfer
    assert id_hash("t-1") != id_hash("t-2")


async def test_lookups_after_reopen_read_no_segment(
    tmp_path: Path, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(tmp_path, signer, 300, segment_max_bytes=4096)
    assert len(list_segments(tmp_path)) > 5  # rotated: the index spans every segment
    reads = SegmentReads(monkeypatch)
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        opened = reads.count
        assert await found(log, "t-0") == [0, 300]  # allowed + delivered, in log order
        assert await found(log, "t-290") == [290, 329]
        assert await found(log, "t-7") == [7]
        assert await found(log, "t-nope") == []
        assert reads.count == opened  # no segment was read to answer
        receipts = await log.find("t-290")
        assert [json.loads(r.record)["event"] for r in receipts] == ["allowed", "delivered"]
        assert all(verify_receipt(r, [signer.verifier]) for r in receipts)
    finally:
        await log.close()


async def test_records_appended_in_this_process_are_found_via_the_index(
    tmp_path: Path, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        for i in range(20):
            await log.append(record(i))
        await log.append(record(4, event="delivered"))

        def no_scan(*_: object) -> list[int]:
            raise AssertionError("scanned the segments")

        monkeypatch.setattr(log_module, "_scan_for", no_scan)
        assert await found(log, "t-4") == [4, 20]
    finally:
        await log.close()


def test_sigkill_mid_write_then_every_acknowledged_id_is_found(
    tmp_path: Path, signer: NoteSigner, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "log"
    acked: dict[int, str] = {}
    run_and_kill(directory, key_file, acked, 1500)

    def no_scan(*_: object) -> list[int]:
        raise AssertionError("scanned the segments")

    monkeypatch.setattr(log_module, "_scan_for", no_scan)

    async def check() -> None:
        log = await AuditLog.open(directory, signer, origin=ORIGIN, fsync=False)
        try:
            for index, tid in acked.items():
                assert await found(log, tid) == [index]
        finally:
            await log.close()

    asyncio.run(check())


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.unlink(), id="deleted"),
        pytest.param(lambda path: path.write_bytes(b"not a database" * 500), id="garbage"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:1024]), id="truncated"),
        pytest.param(
            lambda path: edit_index(
                path.parents[1], ("UPDATE meta SET value = -5 WHERE key = 'size'", ())
            ),
            id="bad-mark",
        ),
    ],
)
async def test_a_deleted_or_corrupt_index_is_rebuilt(
    tmp_path: Path,
    signer: NoteSigner,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
) -> None:
    await fill(tmp_path, signer, 120, segment_max_bytes=4096)
    damage(index_file(tmp_path))
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        reads = SegmentReads(monkeypatch)
        assert await found(log, "t-110") == [110, 131]
        assert await found(log, "t-3") == [3]
        assert reads.count == 0  # answered by the rebuilt index
    finally:
        await log.close()
    with contextlib.closing(sqlite3.connect(index_file(tmp_path))) as conn:
        assert dict(conn.execute("SELECT key, value FROM meta"))["size"] == 132


@pytest.mark.parametrize("other_size", [55, 60], ids=["same-size", "longer"])
async def test_an_index_of_another_log_is_not_trusted(
    tmp_path: Path, signer: NoteSigner, other_size: int
) -> None:
    await fill(tmp_path / "a", signer, 50)  # 55 records
    other = await AuditLog.open(tmp_path / "b", signer, origin=ORIGIN)
    for i in range(other_size):
        await other.append(record(i, route="elsewhere"))
    await other.close()
    edit_index(tmp_path / "b", ("DELETE FROM entries", ()))  # if trusted: finds nothing
    index_file(tmp_path / "a").unlink()
    index_file(tmp_path / "b").rename(index_file(tmp_path / "a"))
    log = await AuditLog.open(tmp_path / "a", signer, origin=ORIGIN)
    try:
        assert await found(log, "t-20") == [20, 52]
        assert await found(log, "t-49") == [49]
    finally:
        await log.close()


def test_the_cli_reader_refuses_an_index_of_another_log(tmp_path: Path) -> None:
    index_dir = tmp_path / INDEX_DIR
    index_dir.mkdir()
    with contextlib.closing(sqlite3.connect(index_dir / TRANSFERS_FILE)) as conn:
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value);"
            "CREATE TABLE entries (id_hash INTEGER, record INTEGER);"
        )
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)", [("format", 1), ("size", 3), ("leaf", b"x" * 32)]
        )
        conn.execute("INSERT INTO entries VALUES (?, 2)", (id_hash("t-1"),))
        conn.commit()
    assert read_index(index_dir, "t-1", lambda i: b"x" * 32) == ([2], 3)
    assert read_index(index_dir, "t-1", lambda i: b"y" * 32) is None
    assert read_index(index_dir, "t-1", lambda i: None) is None
    assert read_index(tmp_path, "t-1", lambda i: b"x" * 32) is None  # no index there


async def test_an_entry_pointing_at_the_wrong_record_is_not_trusted(
    tmp_path: Path, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(tmp_path, signer, 60)
    edit_index(
        tmp_path,
        ("UPDATE entries SET record = 5 WHERE id_hash = ?", (id_hash("t-7"),)),
        ("DELETE FROM entries WHERE id_hash = ?", (id_hash("t-30"),)),
    )
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        receipts = await log.find("t-7")
        assert [r.index for r in receipts] == [7]  # found by scanning, never record 5
        assert all(json.loads(r.record)["transfer_id"] == "t-7" for r in receipts)
        reads = SegmentReads(monkeypatch)
        # Once caught lying, the index is used no more in this process: the
        # entry it lost is found by scanning too.
        assert await found(log, "t-30") == [30, 63]
        assert reads.count > 0
    finally:
        await log.close()
    assert not index_file(tmp_path).exists()  # discarded on close ...
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:  # ... and rebuilt from the segments on open
        reads = SegmentReads(monkeypatch)
        assert await found(log, "t-30") == [30, 63]
        assert await found(log, "t-7") == [7]
        assert reads.count == 0
    finally:
        await log.close()


async def test_a_failing_index_never_fails_the_log(
    tmp_path: Path, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        await log.append(record(1))
        # An append returns before its batch is indexed: wait for the writer
        # (a checkpoint queues behind it) before closing the index under it.
        await log.sync_checkpoint()
        index = log._transfers
        assert index is not None
        index._writer.close()  # every later write to it raises sqlite3.ProgrammingError
        await log.append(record(2))
        await log.append(record(1, event="delivered"))
        assert log.healthy
        assert await found(log, "t-1") == [0, 2]  # by scanning
    finally:
        await log.close()
    assert not index_file(tmp_path).exists()
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        reads = SegmentReads(monkeypatch)
        assert await found(log, "t-1") == [0, 2]
        assert reads.count == 0
    finally:
        await log.close()


async def test_pruned_segments_are_skipped_and_the_rest_still_found(
    tmp_path: Path, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    recent = "2029-06-01T00:00:00.000000Z"  # inside the retention on 2030-01-01
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, segment_max_bytes=1500)
    for i in range(60):
        await log.append(record(i) if i < 30 else record(i, time=recent))
    await log.append(record(0, time=recent, event="delivered"))  # 60
    await log.append(record(50, time=recent, event="delivered"))  # 61
    await log.close()
    assert prune(tmp_path, now=datetime(2030, 1, 1, tzinfo=UTC))
    kept_from = list_segments(tmp_path)[0][0]
    assert 10 < kept_from <= 30
    for rebuild in (False, True):
        if rebuild:  # catching up from record 0 skips what was pruned
            index_file(tmp_path).unlink()
        log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
        try:
            reads = SegmentReads(monkeypatch)
            assert await found(log, "t-5") == []  # pruned after its retention
            assert await found(log, "t-0") == [60]  # its first record was pruned
            assert await found(log, "t-50") == [50, 61]
            assert await found(log, f"t-{kept_from}") == [kept_from]
            assert reads.count == 0
        finally:
            await log.close()
