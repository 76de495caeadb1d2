"""On-disk layout, crash recovery (torn tails, SIGKILL), rotation, index rebuild."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.audit.errors import AuditIntegrityError, AuditUnavailable
from gateway.audit.log import AuditLog
from gateway.audit.note import Checkpoint, NoteSigner, sign_checkpoint
from gateway.audit.receipt import verify_receipt
from gateway.audit.records import canonical_json
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    INDEX_DIR,
    TORN_DIR,
    LogReader,
    SegmentStore,
    latest_checkpoint,
    level_name,
    list_segments,
)
from gateway.audit.verify import verify_log
from tests.audit.conftest import ORIGIN, record

REPO = Path(__file__).resolve().parents[2]


async def fill(directory: Path, signer: NoteSigner, n: int, **options: object) -> None:
    log = await AuditLog.open(directory, signer, origin=ORIGIN, **options)  # type: ignore[arg-type]
    for i in range(n):
        await log.append(record(i))
    await log.close()


def last_segment(directory: Path) -> Path:
    return list_segments(directory)[-1][1]


def assert_verifies(directory: Path, signer: NoteSigner) -> None:
    result = verify_log(directory, [signer.verifier])
    assert result.ok, [p.message for p in result.problems]


@pytest.mark.parametrize(
    ("tail", "survivors"),
    [
        (b'{"kind":"transfer","time":"2026', 0),  # a write cut mid-record
        (b"\x00" * 700, 0),  # pages the filesystem never wrote
        (b'{"a":1}\n\x00\x00\x00\n{"b":2}\n', 1),  # garbage inside the last batch
    ],
)
async def test_torn_tail_is_cut_kept_and_the_tree_continues(
    tmp_path: Path, signer: NoteSigner, tail: bytes, survivors: int
) -> None:
    await fill(tmp_path, signer, 20, checkpoint_every=5)
    segment = last_segment(tmp_path)
    good_size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(tail)
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        assert log.size == 20 + survivors
        receipt = await log.append(record(100))
        await log.sync_checkpoint()
        verify_receipt(await log.receipt(receipt.index), [signer.verifier])
    finally:
        await log.close()
    kept = [p.read_bytes() for p in (tmp_path / TORN_DIR).iterdir()]
    assert len(kept) == 1
    assert (
        segment.read_bytes()[good_size:]
        == tail[: len(tail) - len(kept[0])] + canonical_json(record(100)) + b"\n"
    )
    assert tail.endswith(kept[0])
    assert_verifies(tmp_path, signer)


async def test_damage_under_a_signed_checkpoint_refuses_to_open(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await fill(tmp_path, signer, 10)
    segment = last_segment(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[:-30] + b"\x00" * 30)  # the last, checkpointed record
    with pytest.raises(AuditIntegrityError, match="record 9"):
        await AuditLog.open(tmp_path, signer, origin=ORIGIN)


async def test_truncated_checkpointed_records_refuse_to_open(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await fill(tmp_path, signer, 10)
    segment = last_segment(tmp_path)
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:7]))
    shutil.rmtree(tmp_path / INDEX_DIR)
    with pytest.raises(AuditIntegrityError, match="missing"):
        await AuditLog.open(tmp_path, signer, origin=ORIGIN)


async def test_index_is_rebuilt_when_lost_or_garbled(tmp_path: Path, signer: NoteSigner) -> None:
    await fill(tmp_path, signer, 37)
    shutil.rmtree(tmp_path / INDEX_DIR)
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    assert log.size == 37
    await log.close()
    assert_verifies(tmp_path, signer)
    # Garbage past the durable point (a crash before the index was synced).
    with (tmp_path / INDEX_DIR / level_name(0)).open("ab") as f:
        f.write(b"\xff" * 32 * 5)
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        for index in (0, 17, 36):
            verify_receipt(await log.receipt(index), [signer.verifier])
    finally:
        await log.close()


async def test_segments_rotate_by_size_and_age_and_stay_verifiable(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await fill(tmp_path, signer, 120, segment_max_bytes=2048, checkpoint_every=7)
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    reader = LogReader(tmp_path)
    assert [first for first, _ in segments] == sorted({first for first, _ in segments})
    for first, path in segments:
        assert path.stat().st_size <= 2048 + 300
        assert json.loads(path.read_bytes().splitlines()[0])["transfer_id"] == f"t-{first}"
    assert reader.record(119) == canonical_json(record(119))
    assert_verifies(tmp_path, signer)
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, segment_max_age=0.0)
    try:
        await log.append(record(120))
        await log.append(record(121))
        await log.sync_checkpoint()
        for index in (0, 60, 121):
            verify_receipt(await log.receipt(index), [signer.verifier])
    finally:
        await log.close()
    assert len(list_segments(tmp_path)) == len(segments) + 2  # age 0: a new one per batch
    assert_verifies(tmp_path, signer)


async def test_one_writer_per_directory(tmp_path: Path, signer: NoteSigner) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        with pytest.raises(AuditUnavailable, match="in use"):
            await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    finally:
        await log.close()
    again = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    await again.close()


async def test_a_log_keeps_its_origin(tmp_path: Path, signer: NoteSigner) -> None:
    await fill(tmp_path, signer, 1)
    with pytest.raises(AuditIntegrityError, match="origin"):
        await AuditLog.open(tmp_path, signer, origin="gw.test/other")


def test_reader_refuses_a_directory_that_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable, match="not an audit log"):
        LogReader(tmp_path)


def run_and_kill(directory: Path, key_file: Path, acked: dict[int, str], target: int) -> None:
    """Run the crash writer until ``target`` records are acknowledged, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.crash_writer", str(directory), str(key_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    buffer = b""
    try:
        while len(acked) < target and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line and line != b"ready":
                    index, tid = line.decode().split()
                    acked[int(index)] = tid
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    # Everything printed before the kill was acknowledged too.
    for line in (buffer + rest).split(b"\n"):
        parts = line.decode().split()
        if len(parts) == 2:
            acked[int(parts[0])] = parts[1]
    assert len(acked) >= target, "the writer was too slow to test anything"


async def reopen_and_check(directory: Path, signer: NoteSigner, acked: dict[int, str]) -> None:
    log = await AuditLog.open(directory, signer, origin=ORIGIN)
    try:
        assert log.size >= max(acked) + 1
        reader = LogReader(directory)
        for index, tid in acked.items():
            assert json.loads(reader.record(index))["transfer_id"] == tid
    finally:
        await log.close()


def test_sigkill_under_heavy_writing_loses_no_acknowledged_record(
    tmp_path: Path, signer: NoteSigner, key_file: Path
) -> None:
    directory = tmp_path / "log"
    acked: dict[int, str] = {}
    for round_ in range(2):  # kill it twice: recovery must also survive a second crash
        run_and_kill(directory, key_file, acked, len(acked) + 1500 + 500 * round_)
        asyncio.run(reopen_and_check(directory, signer, acked))
        result = verify_log(directory, [signer.verifier])
        assert result.ok, [p.message for p in result.problems]
        assert result.records >= len(acked)


def test_latest_checkpoint_reads_the_tail_of_a_long_file(
    tmp_path: Path, signer: NoteSigner
) -> None:
    path = tmp_path / CHECKPOINTS_FILE
    lines = [
        json.dumps({"note": sign_checkpoint(Checkpoint(ORIGIN, n, bytes(32)), signer)}) + "\n"
        for n in range(3)
    ]
    filler = lines[0] * 20_000  # > 2 * MAX_CHECKPOINT_LINE: the chunk starts mid-line
    path.write_text(filler + lines[1] + lines[2])
    latest, torn = latest_checkpoint(tmp_path)
    assert latest is not None
    assert latest.checkpoint().size == 2
    assert torn is None
    with path.open("a") as f:
        f.write('{"note": "half a li')
    latest, torn = latest_checkpoint(tmp_path)
    assert latest is not None
    assert latest.checkpoint().size == 2
    assert torn == len(filler) + len(lines[1]) + len(lines[2])
    path.write_text(lines[1] + "garbage\n" + "more garbage\n")
    with pytest.raises(AuditIntegrityError, match="before the last one"):
        latest_checkpoint(tmp_path)


async def test_a_torn_checkpoint_line_is_kept_and_signed_again(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await fill(tmp_path, signer, 5)
    with (tmp_path / CHECKPOINTS_FILE).open("a") as f:
        f.write('{"note": "gw.test')
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    await log.close()
    assert any(p.name.startswith(CHECKPOINTS_FILE) for p in (tmp_path / TORN_DIR).iterdir())
    assert_verifies(tmp_path, signer)


async def test_index_not_yet_synced_at_a_crash_is_rebuilt(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await fill(tmp_path, signer, 30)
    # As if the machine died before the index was synced: the last checkpoint
    # line vouches for no index entries, and the page cache never reached disk.
    path = tmp_path / CHECKPOINTS_FILE
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["indexed"] == 30  # a clean close syncs the index
    last["indexed"] = 0
    path.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    leaves = tmp_path / INDEX_DIR / level_name(0)
    leaves.write_bytes(bytes(len(leaves.read_bytes())))
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        assert log.size == 30
        for index in (0, 15, 29):
            verify_receipt(await log.receipt(index), [signer.verifier])
    finally:
        await log.close()
    assert_verifies(tmp_path, signer)


async def test_records_from_any_position_in_writer_and_reader(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await fill(tmp_path, signer, 40, segment_max_bytes=1024)
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    reader = LogReader(tmp_path)
    store, _ = SegmentStore.open(
        tmp_path, segment_max_bytes=1024, segment_max_age=3600.0, fsync=False
    )
    try:
        firsts = [first for first, _ in segments]
        for start in (0, 1, firsts[1], firsts[1] + 1, firsts[-1], 39, 40):
            for source in (reader.records_from, store.records_from):
                got = list(source(start))
                assert [i for i, _ in got] == list(range(start, 40))
                assert all(json.loads(data)["transfer_id"] == f"t-{i}" for i, data in got)
    finally:
        store.close()
