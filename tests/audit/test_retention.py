"""Retention: nothing is deleted early; pruned logs stay verifiable and provable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit.errors import AuditIntegrityError
from gateway.audit.log import AuditLog
from gateway.audit.note import NoteSigner
from gateway.audit.receipt import verify_receipt
from gateway.audit.retention import MIN_RETENTION, prune
from gateway.audit.storage import INDEX_DIR, PRUNED_FILE, LogReader, level_name, list_segments
from gateway.audit.transfers import TRANSFERS_FILE
from gateway.audit.verify import verify_log
from gateway.errors import ConfigError, NotFound
from tests.audit.conftest import ORIGIN, record

# Records stamped 2026-01-01 (conftest.record); "now" is chosen relative to that.
STAMPED = datetime(2026, 1, 1, tzinfo=UTC)


async def make_log(directory: Path, signer: NoteSigner) -> int:
    log = await AuditLog.open(directory, signer, origin=ORIGIN, segment_max_bytes=1500)
    for i in range(40):
        await log.append(record(i))
    await log.close()
    return len(list_segments(directory))


async def test_nothing_is_deleted_before_the_retention(tmp_path: Path, signer: NoteSigner) -> None:
    segments = await make_log(tmp_path, signer)
    assert prune(tmp_path, now=STAMPED + MIN_RETENTION - timedelta(seconds=1)) == []
    assert len(list_segments(tmp_path)) == segments
    with pytest.raises(ConfigError, match=r"PIPL Art\. 56"):
        prune(tmp_path, timedelta(days=365), now=STAMPED + timedelta(days=3650))


async def test_pruned_log_stays_verifiable_and_provable(tmp_path: Path, signer: NoteSigner) -> None:
    segments = await make_log(tmp_path, signer)
    pruned = prune(tmp_path, now=STAMPED + MIN_RETENTION + timedelta(days=1))
    assert len(pruned) == segments - 1  # the open segment is never pruned
    kept_from = pruned[-1].first + pruned[-1].count
    assert list_segments(tmp_path)[0][0] == kept_from
    manifest = [json.loads(line) for line in (tmp_path / PRUNED_FILE).read_text().splitlines()]
    assert [m["first"] for m in manifest] == [p.first for p in pruned]

    result = verify_log(tmp_path, [signer.verifier])
    assert result.ok, [p.message for p in result.problems]
    assert result.records == 40
    assert any("pruned after their retention" in w for w in result.warnings)

    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        await log.append(record(40))
        await log.sync_checkpoint()
        for index in (kept_from, 39, 40):
            verify_receipt(await log.receipt(index), [signer.verifier])
        with pytest.raises(NotFound, match="pruned"):
            await log.receipt(0)
    finally:
        await log.close()
    assert verify_log(tmp_path, [signer.verifier]).ok


async def test_a_segment_deleted_without_pruning_is_reported(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await make_log(tmp_path, signer)
    list_segments(tmp_path)[0][1].unlink()
    result = verify_log(tmp_path, [signer.verifier])
    assert result.first_bad_index == 0
    assert any("not recorded as pruned" in p.message for p in result.problems)


async def test_pruning_refuses_a_segment_the_index_does_not_match(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await make_log(tmp_path, signer)
    leaves = tmp_path / INDEX_DIR / level_name(0)
    data = bytearray(leaves.read_bytes())
    data[0] ^= 1
    leaves.write_bytes(bytes(data))
    with pytest.raises(AuditIntegrityError, match="not pruning"):
        prune(tmp_path, now=STAMPED + timedelta(days=5000))
    assert LogReader(tmp_path).segments[0][0] == 0


@pytest.mark.parametrize("lookup", ["indexed", "scanning"])
async def test_pruning_under_a_running_gateway_leaves_lookups_answering(
    tmp_path: Path, signer: NoteSigner, lookup: str
) -> None:
    # The running gateway listed its segments at start-up; `gateway audit
    # prune` deletes some of them under it. Lookups of the pruned records
    # answer "not found", the rest are found, and the log goes on appending.
    await make_log(tmp_path, signer)
    if lookup == "scanning":  # no usable transfer index: lookups scan the segments
        index_file = tmp_path / INDEX_DIR / TRANSFERS_FILE
        for stale in index_file.parent.glob(TRANSFERS_FILE + "*"):
            stale.unlink()
        index_file.mkdir()  # SQLite cannot open a directory
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        await log.append(record(40))
        await log.sync_checkpoint()
        pruned = prune(tmp_path, now=STAMPED + MIN_RETENTION + timedelta(days=1))
        kept_from = pruned[-1].first + pruned[-1].count
        assert [r.index for r in await log.find("t-0")] == []
        assert [r.index for r in await log.find(f"t-{kept_from}")] == [kept_from]
        assert [r.index for r in await log.find("t-40")] == [40]
        with pytest.raises(NotFound, match="pruned"):
            await log.receipt(0)
        verify_receipt(await log.receipt(kept_from), [signer.verifier])
        await log.append(record(41))
        assert log.healthy
    finally:
        await log.close()


async def test_a_segment_deleted_under_a_running_gateway_without_pruning_fails_closed(
    tmp_path: Path, signer: NoteSigner
) -> None:
    await make_log(tmp_path, signer)
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        list_segments(tmp_path)[0][1].unlink()  # no pruned.jsonl line: not a prune
        with pytest.raises(AuditIntegrityError, match="segment missing, and not pruned"):
            await log.receipt(0)
        with pytest.raises(AuditIntegrityError, match="not pruned"):
            await log.find("t-0")
    finally:
        await log.close()
