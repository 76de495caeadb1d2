"""The async AuditLog: group commit, receipts, checkpoints, fail-closed."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry

from gateway.audit.errors import AuditUnavailable
from gateway.audit.log import AuditLog
from gateway.audit.merkle import verify_consistency
from gateway.audit.note import NoteSigner, open_checkpoint
from gateway.audit.receipt import Receipt, verify_receipt
from gateway.audit.records import RecordError, canonical_json, transfer_record
from gateway.audit.storage import CHECKPOINTS_FILE, INDEX_DIR, LogReader
from gateway.audit.transfers import TRANSFERS_FILE
from gateway.classify.summary import ContentInfo, LabelStats, ScanSummary
from gateway.errors import NotFound
from gateway.obs.metrics import Metrics
from tests.audit.conftest import ORIGIN, record

REPO = Path(__file__).resolve().parents[2]


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def checkpoint_lines(directory: Path) -> list[str]:
    return (directory / CHECKPOINTS_FILE).read_text().splitlines()


async def test_group_commit_256_concurrent_appenders(tmp_path: Path, signer: NoteSigner) -> None:
    metrics = Metrics(CollectorRegistry())
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, metrics=metrics)
    writers, per_writer = 256, 16

    async def writer(w: int) -> list[Receipt]:
        return [await log.append(record(w * 1000 + n)) for n in range(per_writer)]

    try:
        results = await asyncio.gather(*(writer(w) for w in range(256)))
    finally:
        await log.close()
    total = writers * per_writer
    receipts = [r for batch in results for r in batch]
    assert sorted(r.index for r in receipts) == list(range(total))
    # Shared fsyncs: far fewer batches than records (one per record without group commit).
    assert log.fsyncs <= total // 16, log.fsyncs
    assert sample(metrics, "gateway_audit_records_total") == total
    assert sample(metrics, "gateway_audit_fsync_seconds_count") == log.fsyncs
    assert sample(metrics, "gateway_audit_tree_size") == total
    assert sample(metrics, "gateway_audit_last_checkpoint_timestamp_seconds") > 0
    # Nothing lost or mixed up: each receipt's index holds that exact record.
    reader = LogReader(tmp_path)
    for r in receipts[::37]:
        assert reader.record(r.index) == r.record
    assert {json.loads(reader.record(i))["transfer_id"] for i in range(total)} == {
        f"t-{w * 1000 + n}" for w in range(writers) for n in range(per_writer)
    }


async def test_receipts_get_proofs_once_checkpointed_and_verify_offline(
    tmp_path: Path,
    signer: NoteSigner,
) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, checkpoint_every=1000)
    try:
        first = await log.append(record(0))
        assert not first.checkpointed
        for i in range(1, 50):
            await log.append(record(i))
        early = await log.receipt(7)
        assert early.inclusion_proof is None
        checkpoint, _note = await log.sync_checkpoint()
        assert checkpoint.size == 50
        for index in range(50):
            receipt = await log.receipt(index)
            assert receipt.record == canonical_json(record(index))
            assert verify_receipt(receipt, [signer.verifier]) == checkpoint
            again = Receipt.from_json(json.loads(json.dumps(receipt.to_json())))
            assert again == receipt
        with pytest.raises(NotFound):
            await log.receipt(50)
    finally:
        await log.close()


async def test_checkpoint_every_n_records(tmp_path: Path, signer: NoteSigner) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, checkpoint_every=10)
    try:
        for i in range(25):
            await log.append(record(i))
        await asyncio.sleep(0.05)
        state = log.checkpoint
        assert state is not None
        assert state[0].size >= 20
    finally:
        await log.close()
    sizes = [
        open_checkpoint(json.loads(line)["note"], [signer.verifier])[0].size
        for line in checkpoint_lines(tmp_path)
    ]
    assert sizes[0] == 0  # signed on creation
    assert sizes[-1] == 25  # and on close
    assert sizes == sorted(sizes)
    assert all(b - a <= 10 for a, b in itertools.pairwise(sizes))


async def test_checkpoint_interval_with_records_and_when_idle(
    tmp_path: Path,
    signer: NoteSigner,
) -> None:
    log = await AuditLog.open(
        tmp_path, signer, origin=ORIGIN, checkpoint_interval=0.2, idle_interval=0.5
    )
    try:
        await asyncio.sleep(0.25)
        await log.append(record(0))
        await asyncio.sleep(0.15)
        state = log.checkpoint
        assert state is not None
        assert state[0].size == 1  # within the interval, not after 1000 records
        before = len(checkpoint_lines(tmp_path))
        await asyncio.sleep(1.2)
        assert len(checkpoint_lines(tmp_path)) >= before + 2  # idle re-signing
    finally:
        await log.close()


async def test_close_then_reopen_continues_the_same_tree(
    tmp_path: Path, signer: NoteSigner
) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    for i in range(13):
        await log.append(record(i))
    await log.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        await log.append(record(99))
    assert not log.healthy
    old = log.checkpoint
    assert old is not None
    assert old[0].size == 13
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        assert log.size == 13
        for i in range(13, 40):
            await log.append(record(i))
        new, _ = await log.sync_checkpoint()
        proof = await log.consistency_proof(13, 40)
        verify_consistency(13, 40, old[0].root_hash, new.root_hash, proof)
        with pytest.raises(NotFound):
            await log.consistency_proof(13, 41)
    finally:
        await log.close()


async def test_find_by_transfer_id_in_this_process_and_after_reopen(
    tmp_path: Path,
    signer: NoteSigner,
) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, segment_max_bytes=1024)
    try:
        for i in range(30):
            await log.append(record(i))
        await log.append(record(7, event="delivered"))
        found = await log.find("t-7")
        assert [r.index for r in found] == [7, 30]
        assert await log.find("t-nope") == []
    finally:
        await log.close()
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:  # a fresh process finds them in the persistent index (tests/audit/test_transfers.py)
        found = await log.find("t-7")
        assert [r.index for r in found] == [7, 30]
        assert all(verify_receipt(r, [signer.verifier]) for r in found)
        assert [r.index for r in await log.find("t-29")] == [29]
    finally:
        await log.close()


async def test_bad_records_are_refused_at_the_call_site(tmp_path: Path, signer: NoteSigner) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        with pytest.raises(RecordError):
            await log.append({"seconds": 0.5})
        assert log.healthy
        assert (await log.append(record(1))).index == 0
    finally:
        await log.close()


async def test_failing_fsync_fails_closed(
    tmp_path: Path,
    signer: NoteSigner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics(CollectorRegistry())
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, metrics=metrics)
    try:
        await log.append(record(0))

        def broken_disk(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", broken_disk)
        results = await asyncio.gather(
            *(log.append(record(i)) for i in range(1, 20)), return_exceptions=True
        )
        assert all(isinstance(r, AuditUnavailable) for r in results)
        assert not log.healthy
        # Even with a working disk again the failed write is not retried: the
        # log stays closed until its first probe (RECOVERY_FIRST_DELAY, 5 s).
        monkeypatch.undo()
        started = time.perf_counter()
        with pytest.raises(AuditUnavailable, match="Input/output error"):
            await log.append(record(99))
        assert time.perf_counter() - started < 0.05
        assert sample(metrics, "gateway_audit_write_failures_total") == 1
    finally:
        await log.close()
    # Reopening recovers what is on disk; the acknowledged record is there.
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        assert log.healthy
        assert json.loads((await log.receipt(0)).record)["transfer_id"] == "t-0"
    finally:
        await log.close()


@pytest.mark.parametrize("where", ["/sys/kernel/hksz-audit", "file/below"])
async def test_unwritable_directory_refuses_to_open(
    tmp_path: Path,
    signer: NoteSigner,
    where: str,
) -> None:
    (tmp_path / "file").write_text("not a directory")
    target = where if where.startswith("/") else str(tmp_path / where)
    with pytest.raises(AuditUnavailable, match="cannot be opened for writing"):
        await AuditLog.open(target, signer, origin=ORIGIN)


def test_disk_full_mid_run_fails_closed(tmp_path: Path, key_file: Path) -> None:
    """A real failing write: the file-size limit (EFBIG) in a child process."""
    script = textwrap.dedent(
        f"""
        import asyncio, json, resource, signal
        from gateway.audit.keys import load_signing_key
        from gateway.audit.log import AuditLog
        from gateway.audit.note import NoteSigner
        from tests.audit.conftest import ORIGIN, record

        async def main():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            signer = NoteSigner(ORIGIN, load_signing_key({str(key_file)!r}))
            log = await AuditLog.open({str(tmp_path / "log")!r}, signer, origin=ORIGIN)
            for i in range(5):
                await log.append(record(i))
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (3000, hard))
            acked, errors = 5, []
            for i in range(5, 200):
                try:
                    await log.append(record(i, pad="x" * 100))
                    acked += 1
                except Exception as exc:
                    errors.append(type(exc).__name__)
                    break
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
            try:
                await log.append(record(500))
            except Exception as exc:
                errors.append(type(exc).__name__)
            print(json.dumps({{"healthy": log.healthy, "acked": acked, "errors": errors}}))
            await log.close()

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["healthy"] is False
    assert result["errors"] == ["AuditUnavailable", "AuditUnavailable"]
    assert 5 <= result["acked"] < 200


async def test_no_matched_value_reaches_the_log(tmp_path: Path, signer: NoteSigner) -> None:
    planted = "11010519491231002X"
    summary = ScanSummary(
        size=99,
        sha256="0" * 64,
        content=ContentInfo("text/csv", "utf-8"),
        labels=MappingProxyType({"pii.cn_resident_id": LabelStats(1, 1)}),
        subjects=1,
        digests=MappingProxyType({"pii.cn_resident_id": frozenset({planted.encode()[:16]})}),
    )
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        await log.append(
            transfer_record(
                event="blocked",
                transfer_id="t-x",
                sender="lab",
                organisation="org",
                route="r",
                direction="sz->hk",
                decision="block",
                rule="no-ids",
                reason="resident ids may not leave",
                policy_version="v1",
                summary=summary,
            )
        )
    finally:
        await log.close()
    assert files_containing(tmp_path, planted.encode()) == []
    assert files_containing(tmp_path, planted.encode()[:16]) == []


def files_containing(directory: Path, needle: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_an_append_never_waits_for_the_transfer_index(
    tmp_path: Path, signer: NoteSigner
) -> None:
    # The transfer index is derived data: the record is durable, and its
    # appender answered, before the index commits. Another connection holds
    # the index's SQLite write lock, so the index update stalls (for up to its
    # busy timeout, 5 s) while the append must not.
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        await log.append(record(0))
        await log.sync_checkpoint()  # waits for the writer, so record 0 is indexed
        blocker = sqlite3.connect(tmp_path / INDEX_DIR / TRANSFERS_FILE, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            receipt = await log.append(record(1))
            assert time.monotonic() - started < 2.0
            assert receipt.index == 1
            assert log.size == 2
            # Found while the index lags (the tail is scanned), with its receipt.
            assert [r.index for r in await log.find("t-1")] == [1]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await log.append(record(2))  # after the stalled index update finished
        assert [r.index for r in await log.find("t-2")] == [2]
    finally:
        await log.close()
    reopened = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        assert [r.index for r in await reopened.find("t-1")] == [1]
    finally:
        await reopened.close()
