"""The audit log heals by itself after a failed write (issue 11, finding 6).

Every failure here is real: a tmpfs filled until the kernel answers ENOSPC
(:mod:`tests.audit.fulldisk`), under the whole log, under its index only (the
records are written and synced, then the index write fails: complete records
that were never acknowledged), or under its checkpoint file only. After the
space returns the same :class:`AuditLog` object must be writable again, hold
exactly the acknowledged records on disk and verify.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from gateway.audit.errors import AuditUnavailable
from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import Checkpoint, NoteSigner, sign_checkpoint
from gateway.audit.receipt import Receipt, verify_receipt
from gateway.audit.records import canonical_json
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    INDEX_DIR,
    SEGMENTS_DIR,
    TORN_DIR,
    LogReader,
    SegmentStore,
    latest_checkpoint,
    list_segments,
)
from gateway.audit.verify import verify_log
from gateway.obs.metrics import Metrics
from tests.audit.conftest import ORIGIN, record
from tests.audit.fulldisk import fill_up, small_filesystem

#: Room for the log and a few MiB of records; the filler takes the rest.
DISK_BYTES = 8 * 1024 * 1024
#: Probes every 50-200 ms instead of 5-60 s, so a test waits fractions of a second.
PROBE_DELAY, PROBE_MAX_DELAY = 0.05, 0.2
#: Far above the few probe intervals healing takes; a hang fails instead of blocking.
HEAL_TIMEOUT = 15.0
#: Records of ~600 bytes: a page's slack is used up within a handful of them.
PAD = "x" * 500


async def open_log(directory: Path, signer: NoteSigner, metrics: Metrics) -> AuditLog:
    return await AuditLog.open(
        directory,
        signer,
        origin=ORIGIN,
        metrics=metrics,
        recovery_delay=PROBE_DELAY,
        recovery_max_delay=PROBE_MAX_DELAY,
    )


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def eventually(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HEAL_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def append_until_refused(log: AuditLog, start: int, limit: int = 5000) -> list[Receipt]:
    """Append padded records in waves of 32 until one wave is refused; the acknowledged ones."""
    acked: list[Receipt] = []
    for wave in range(start, start + limit, 32):
        results = await asyncio.gather(
            *(log.append(record(i, pad=PAD)) for i in range(wave, wave + 32)),
            return_exceptions=True,
        )
        acked += [r for r in results if isinstance(r, Receipt)]
        refused = [r for r in results if not isinstance(r, Receipt)]
        if refused:
            assert all(isinstance(r, AuditUnavailable) for r in refused), refused
            return acked
    raise AssertionError(f"no write failed in {limit} records")


async def sign_until_refused(log: AuditLog, limit: int = 200) -> None:
    """Append one record and sign a checkpoint over it until signing is refused."""
    for i in range(limit):
        await log.append(record(i))
        try:
            await log.sync_checkpoint()
        except AuditUnavailable:
            return
    raise AssertionError(f"no checkpoint write failed in {limit} tries")


def on_disk(directory: Path) -> list[bytes]:
    """Every line of every segment, in order (a torn line included)."""
    return [line.data for _, line in LogReader(directory).iter_lines()]


def assert_verifies(directory: Path, signer: NoteSigner, records: int) -> None:
    result = verify_log(directory, [signer.verifier])
    assert result.problems == [], result.problems
    assert result.records == records
    assert not [w for w in result.warnings if "incomplete" in w or "torn" in w], result.warnings
    assert result.latest is not None
    assert result.latest.size == records


async def test_a_full_disk_heals_by_itself_and_the_log_verifies(
    tmp_path: Path, signer: NoteSigner
) -> None:
    metrics = Metrics(CollectorRegistry())
    with small_filesystem(tmp_path / "disk", DISK_BYTES) as disk:
        directory = disk / "log"
        log = await open_log(directory, signer, metrics)
        try:
            acked = [await log.append(record(i)) for i in range(20)]
            assert sample(metrics, "gateway_audit_writable") == 1
            filler = fill_up(disk)
            acked += await append_until_refused(log, 20)
            assert not log.healthy
            assert sample(metrics, "gateway_audit_writable") == 0
            assert sample(metrics, "gateway_audit_write_failures_total") == 1
            # Several probes meet the full disk: it stays closed, refusing at once.
            await asyncio.sleep(0.6)
            assert not log.healthy
            assert sample(metrics, "gateway_audit_recoveries_total") == 0
            with pytest.raises(AuditUnavailable):
                await log.append(record(9999))
            # A lookup still answers from the acknowledged records meanwhile.
            assert [r.index for r in await log.find("t-3")] == [3]

            filler.unlink()  # the operator frees space; nobody restarts anything
            await eventually(lambda: log.healthy)
            assert sample(metrics, "gateway_audit_writable") == 1
            assert sample(metrics, "gateway_audit_recoveries_total") == 1
            assert log.recoveries == 1
            assert log.size == len(acked) == acked[-1].index + 1
            checkpoint = log.checkpoint
            assert checkpoint is not None
            assert checkpoint[0].size == len(acked)
            more = [await log.append(record(i)) for i in range(6000, 6010)]
            assert [r.index for r in more] == list(range(len(acked), len(acked) + 10))
            await log.sync_checkpoint()
            receipt = await log.receipt(len(acked) - 1)
            assert verify_receipt(receipt, [signer.verifier])
        finally:
            await log.close()
        # On disk: exactly the acknowledged records, nothing half-written, and
        # whatever the failed write left was cut off and kept in torn/.
        assert on_disk(directory) == [r.record for r in acked + more]
        assert_verifies(directory, signer, len(acked) + 10)


async def test_records_synced_but_never_acknowledged_are_cut_when_healing(
    tmp_path: Path, signer: NoteSigner
) -> None:
    # The index lives on its own small file system: a batch's records are
    # written and synced, then its index write fails, so the batch is refused
    # although its records are complete in the segment.
    metrics = Metrics(CollectorRegistry())
    directory = tmp_path / "log"
    (directory / SEGMENTS_DIR).mkdir(parents=True)
    with small_filesystem(tmp_path / "index-disk", 1024 * 1024) as index_disk:
        (directory / INDEX_DIR).symlink_to(index_disk)
        log = await open_log(directory, signer, metrics)
        try:
            acked = [await log.append(record(i)) for i in range(5)]
            filler = fill_up(index_disk)
            acked += await append_until_refused(log, 5)
            assert not log.healthy
            lines = on_disk(directory)
            unacknowledged = lines[len(acked) :]
            assert unacknowledged, "the refused batch's records are on disk, complete"
            assert lines[: len(acked)] == [r.record for r in acked]
            filler.unlink()
            await eventually(lambda: log.healthy)
            assert log.size == len(acked)
            after = await log.append(record(7000))
            assert after.index == len(acked)
            # The transfer index failed on the full disk too; it was rebuilt.
            assert [r.index for r in await log.find("t-2")] == [2]
            assert [r.index for r in await log.find("t-7000")] == [len(acked)]
        finally:
            await log.close()
        assert on_disk(directory) == [r.record for r in acked] + [after.record]
        kept = b"".join(p.read_bytes() for p in sorted((directory / TORN_DIR).iterdir()))
        assert kept.splitlines() == unacknowledged
        assert_verifies(directory, signer, len(acked) + 1)


async def test_a_failed_checkpoint_write_heals_and_its_line_is_cut(
    tmp_path: Path, signer: NoteSigner
) -> None:
    metrics = Metrics(CollectorRegistry())
    directory = tmp_path / "log"
    directory.mkdir()
    with small_filesystem(tmp_path / "cp-disk", 1024 * 1024) as cp_disk:
        (directory / CHECKPOINTS_FILE).symlink_to(cp_disk / CHECKPOINTS_FILE)
        log = await open_log(directory, signer, metrics)
        try:
            filler = fill_up(cp_disk)
            await sign_until_refused(log)  # the signing path meets the full disk
            assert not log.healthy
            assert sample(metrics, "gateway_audit_writable") == 0
            size = log.size
            torn = (cp_disk / CHECKPOINTS_FILE).read_bytes()
            assert not torn.endswith(b"\n"), "the failed checkpoint line is half-written"
            filler.unlink()
            await eventually(lambda: log.healthy)
            assert sample(metrics, "gateway_audit_recoveries_total") == 1
            checkpoint = log.checkpoint
            assert checkpoint is not None
            assert checkpoint[0].size == size
            await log.append(record(500))
        finally:
            await log.close()
        text = (cp_disk / CHECKPOINTS_FILE).read_bytes()
        assert text.endswith(b"\n")
        assert latest_checkpoint(directory)[1] is None  # no torn line left behind
        assert_verifies(directory, signer, size + 1)


async def test_acknowledged_records_missing_on_disk_stop_the_healing(
    tmp_path: Path, signer: NoteSigner
) -> None:
    metrics = Metrics(CollectorRegistry())
    with small_filesystem(tmp_path / "disk", DISK_BYTES) as disk:
        directory = disk / "log"
        log = await open_log(directory, signer, metrics)
        try:
            receipts = [await log.append(record(i)) for i in range(10)]
            filler = fill_up(disk)
            receipts += await append_until_refused(log, 10)
            # The disk lost the last acknowledged record while the log was down
            # (what a failed fsync can do): healing must not paper over it.
            [(_, segment)] = list_segments(directory)
            segment.write_bytes(b"".join(r.record + b"\n" for r in receipts[:-1]))
            filler.unlink()
            with capture_logs() as logs:
                await eventually(
                    lambda: any(e["event"] == "audit_recovery_impossible" for e in logs)
                )
                await asyncio.sleep(0.5)  # no further attempts
            assert not log.healthy
            assert log.size == len(receipts)
            assert sample(metrics, "gateway_audit_writable") == 0
            assert sample(metrics, "gateway_audit_recoveries_total") == 0
            assert [e["event"] for e in logs].count("audit_recovery_impossible") == 1
            with pytest.raises(AuditUnavailable):
                await log.append(record(9999))
        finally:
            await log.close()


def test_reopening_with_a_durable_mark_cuts_what_lies_beyond_it(
    tmp_path: Path, signer: NoteSigner
) -> None:
    # What a refused batch can leave when it had just opened a new segment:
    # complete records and a torn one there, and a checkpoint line after the
    # last synced one. All of it is cut (kept in torn/); the tree continues.
    store, _ = SegmentStore.open(tmp_path / "log")
    records = [canonical_json(record(i)) for i in range(6)]
    store.append(records, [leaf_hash(r) for r in records])
    store.write_checkpoint(sign_checkpoint(Checkpoint(ORIGIN, 6, store.tree.root()), signer))
    mark = store.durable
    assert (mark.records, mark.root) == (6, store.tree.root())
    store.close()
    directory = tmp_path / "log"
    beyond = b"".join(canonical_json(record(i)) + b"\n" for i in (6, 7)) + b'{"kind":"tr'
    new_segment = directory / SEGMENTS_DIR / "segment-00000000000000000006.jsonl"
    new_segment.write_bytes(beyond)
    with (directory / CHECKPOINTS_FILE).open("ab") as file:
        file.write(b'{"note":"half a line')

    store, recovery = SegmentStore.open(directory, durable=mark)
    try:
        assert store.size == 6
        assert store.tree.root() == mark.root
        assert recovery.torn_bytes == len(beyond)
        assert recovery.checkpoint_bytes_cut == len(b'{"note":"half a line')
        assert new_segment.stat().st_size == 0
        assert latest_checkpoint(directory)[1] is None
        following = canonical_json(record(8))
        store.append([following], [leaf_hash(following)])
        store.write_checkpoint(sign_checkpoint(Checkpoint(ORIGIN, 7, store.tree.root()), signer))
    finally:
        store.close()
    assert [json.loads(r)["transfer_id"] for r in on_disk(directory)] == [
        f"t-{i}" for i in (0, 1, 2, 3, 4, 5, 8)
    ]
    assert_verifies(directory, signer, 7)
    kept = sorted(p.read_bytes() for p in (directory / TORN_DIR).iterdir())
    assert kept == sorted([beyond, b'{"note":"half a line'])


async def test_a_cancelled_read_holds_the_files_until_its_thread_ends(
    tmp_path: Path, signer: NoteSigner
) -> None:
    """A receipt whose caller is cancelled mid-read keeps its reader slot until the
    worker thread is done, so a recovery cannot close files under that read."""
    log = await AuditLog.open(tmp_path / "audit", signer, origin=ORIGIN)
    try:
        await log.append(record(0))
        store = log._store
        read = store.record
        started, release = threading.Event(), threading.Event()

        def slow_record(index: int) -> bytes:
            started.set()
            release.wait(5)
            return read(index)

        store.record = slow_record  # type: ignore[method-assign]
        task = asyncio.create_task(log.receipt(0))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.1)
        # Cancelled, but the thread still reads: the reader is still counted.
        assert not task.done()
        assert log._readers == 1
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log._readers == 0
    finally:
        await log.close()
