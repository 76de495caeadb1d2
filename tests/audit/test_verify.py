"""Tamper detection: every kind of change is found, with the right first bad index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import Checkpoint, NoteSigner, sign_checkpoint
from gateway.audit.storage import CHECKPOINTS_FILE, INDEX_DIR, level_name, list_segments
from gateway.audit.verify import VerifyResult, verify_log
from tests.audit.conftest import ORIGIN, record

RECORDS = 60


@pytest.fixture
async def log_dir(tmp_path: Path, signer: NoteSigner) -> Path:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN, checkpoint_every=10)
    for i in range(RECORDS):
        await log.append(record(i))
    await log.close()
    return tmp_path


def segment(directory: Path) -> Path:
    (only,) = list_segments(directory)
    return only[1]


def rewrite_lines(directory: Path, change: object) -> None:
    path = segment(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(lines)))  # type: ignore[operator]


def check(directory: Path, signer: NoteSigner) -> VerifyResult:
    return verify_log(directory, [signer.verifier])


def test_untouched_log_verifies(log_dir: Path, signer: NoteSigner) -> None:
    result = check(log_dir, signer)
    assert result.ok, result.problems
    assert result.records == RECORDS
    assert result.checkpoints >= RECORDS // 10
    assert result.latest is not None
    assert result.latest.size == RECORDS
    assert result.warnings == []


def edit_value(lines: list[bytes]) -> list[bytes]:
    lines[23] = lines[23].replace(b'"lab-2"', b'"lab-9"')
    return lines


def edit_bytes(lines: list[bytes]) -> list[bytes]:
    lines[23] = lines[23].replace(b'"allow"', b'"allow" ')
    return lines


def delete_one(lines: list[bytes]) -> list[bytes]:
    del lines[23]
    return lines


def swap_two(lines: list[bytes]) -> list[bytes]:
    lines[23], lines[24] = lines[24], lines[23]
    return lines


def insert_one(lines: list[bytes]) -> list[bytes]:
    lines.insert(23, lines[40])
    return lines


@pytest.mark.parametrize("tamper", [edit_value, edit_bytes, delete_one, swap_two, insert_one])
def test_edits_deletions_reorderings_insertions_name_the_first_bad_index(
    log_dir: Path, signer: NoteSigner, tamper: object
) -> None:
    rewrite_lines(log_dir, tamper)
    result = check(log_dir, signer)
    assert not result.ok
    assert result.first_bad_index == 23, [p.message for p in result.problems]


@pytest.mark.parametrize("keep", [55, 30, 0])
def test_truncation_names_the_first_missing_index(
    log_dir: Path, signer: NoteSigner, keep: int
) -> None:
    rewrite_lines(log_dir, lambda lines: lines[:keep])
    result = check(log_dir, signer)
    assert not result.ok
    assert result.first_bad_index == keep
    assert any("deleted or truncated" in p.message for p in result.problems)


def test_truncating_the_index_too_does_not_hide_a_truncation(
    log_dir: Path, signer: NoteSigner
) -> None:
    rewrite_lines(log_dir, lambda lines: lines[:42])
    leaves = log_dir / INDEX_DIR / level_name(0)
    leaves.write_bytes(leaves.read_bytes()[: 42 * 32])
    assert check(log_dir, signer).first_bad_index == 42


def test_rewriting_the_index_too_bounds_the_damage_by_checkpoints(
    log_dir: Path, signer: NoteSigner
) -> None:
    rewrite_lines(log_dir, edit_value)
    # A careful forger also fixes the stored leaf hash; only the signature stops them.
    new_leaf = leaf_hash(segment(log_dir).read_bytes().splitlines()[23])
    leaves = log_dir / INDEX_DIR / level_name(0)
    data = bytearray(leaves.read_bytes())
    data[23 * 32 : 24 * 32] = new_leaf
    leaves.write_bytes(bytes(data))
    result = check(log_dir, signer)
    assert result.first_bad_index == 20  # the last checkpoint that still matches
    assert any("at or after 20" in p.message for p in result.problems)


def test_forged_checkpoints_are_rejected(log_dir: Path, signer: NoteSigner) -> None:
    path = log_dir / CHECKPOINTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    forger = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    forged = sign_checkpoint(Checkpoint(ORIGIN, RECORDS, b"\x00" * 32), forger)
    path.write_text("".join(lines) + json.dumps({"note": forged}) + "\n")
    result = check(log_dir, signer)
    assert not result.ok
    assert any(f"{CHECKPOINTS_FILE}:{len(lines) + 1}: forged" in p.message for p in result.problems)
    # An altered genuine checkpoint (size changed, signature kept).
    obj = json.loads(lines[-1])
    obj["note"] = obj["note"].replace(f"\n{RECORDS}\n", f"\n{RECORDS - 1}\n")
    path.write_text("".join(lines[:-1]) + json.dumps(obj) + "\n")
    result = check(log_dir, signer)
    assert any("does not verify" in p.message for p in result.problems)


def test_wrong_key_verifies_nothing(log_dir: Path) -> None:
    stranger = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    result = verify_log(log_dir, [stranger.verifier])
    assert not result.ok
    assert any("no checkpoint verifies" in p.message for p in result.problems)


async def test_a_missing_segment_is_reported_at_its_first_index(
    tmp_path: Path, signer: NoteSigner
) -> None:
    log = await AuditLog.open(
        tmp_path, signer, origin=ORIGIN, checkpoint_every=10, segment_max_bytes=1500
    )
    for i in range(RECORDS):
        await log.append(record(i))
    await log.close()
    segments = list_segments(tmp_path)
    assert len(segments) >= 4
    first, path = segments[2]
    path.unlink()
    result = verify_log(tmp_path, [signer.verifier])
    assert result.first_bad_index == first


def test_a_torn_tail_beyond_the_last_checkpoint_is_only_a_warning(
    log_dir: Path, signer: NoteSigner
) -> None:
    with segment(log_dir).open("ab") as f:
        f.write(b'{"kind":"trans')
    result = check(log_dir, signer)
    assert result.ok
    assert any("incomplete final record 60" in w for w in result.warnings)


def test_a_mangled_checkpoint_line_in_the_middle_fails(log_dir: Path, signer: NoteSigner) -> None:
    path = log_dir / CHECKPOINTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "{mangled\n"
    path.write_text("".join(lines))
    result = check(log_dir, signer)
    assert not result.ok
    assert any("forged or damaged" in p.message for p in result.problems)
