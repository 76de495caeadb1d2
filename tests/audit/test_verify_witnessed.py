"""A log rolled back or forked behind a checkpoint the other park co-signed fails
``verify`` with the witness's store, even when its own checkpoints were re-signed
to match (who holds the log's key can do that; nobody holds both parks' keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.log import AuditLog
from gateway.audit.note import Checkpoint, NoteSigner, cosign_note, sign_checkpoint, sign_note
from gateway.audit.storage import CHECKPOINTS_FILE
from gateway.audit.verify import VerifyResult, verify_log
from gateway.cli import main
from gateway.server.witness import append_note
from tests.audit.conftest import ORIGIN, record

RECORDS = 60
#: The witness saw the log up to here (checkpoints every 10 records).
WITNESSED = 40
TWIN = NoteSigner("gw.test/hk-ingress", Ed25519PrivateKey.generate())


async def write_log(
    directory: Path, signer: NoteSigner, count: int, change: dict[int, dict[str, Any]] | None = None
) -> Path:
    log = await AuditLog.open(directory, signer, origin=ORIGIN, checkpoint_every=10)
    for i in range(count):
        await log.append(record(i, **(change or {}).get(i, {})))
    await log.close()
    return directory


def checkpoint_notes(directory: Path) -> list[str]:
    lines = (directory / CHECKPOINTS_FILE).read_text().splitlines()
    return [json.loads(line)["note"] for line in lines]


def witnessed_sizes(log_dir: Path, up_to: int = WITNESSED) -> list[int]:
    sizes = [int(note.split("\n")[1]) for note in checkpoint_notes(log_dir)]
    return [size for size in sizes if size <= up_to]


def log_dir(store: Path) -> Path:
    """The honest log beside a store made by the fixture."""
    return store.parent.parent / "log"


def witness_store(log_dir: Path, store_dir: Path, *, up_to: int = WITNESSED) -> Path:
    """The twin's store: every checkpoint up to ``up_to`` co-signed, as the ingress keeps it."""
    for note in checkpoint_notes(log_dir):
        if int(note.split("\n")[1]) <= up_to:
            append_note(store_dir, ORIGIN, cosign_note(note, TWIN))
    assert witnessed_sizes(log_dir, up_to)[-1] == up_to
    (store,) = store_dir.iterdir()
    return store


@pytest.fixture
async def honest(tmp_path: Path, signer: NoteSigner) -> tuple[Path, Path]:
    """The log as it was written, and the twin's store of what it witnessed."""
    log_dir = await write_log(tmp_path / "log", signer, RECORDS)
    return log_dir, witness_store(log_dir, tmp_path / "witness")


def check(
    directory: Path, signer: NoteSigner, store: Path, twin: NoteSigner = TWIN
) -> VerifyResult:
    return verify_log(directory, [signer.verifier], witness_keys=[twin.verifier], witnessed=[store])


def test_the_honest_log_reproduces_every_witnessed_checkpoint(
    honest: tuple[Path, Path], signer: NoteSigner
) -> None:
    log_dir, store = honest
    result = check(log_dir, signer, store)
    assert result.ok, result.problems
    assert result.witnessed == len(witnessed_sizes(log_dir))
    assert result.witnessed_latest is not None
    assert result.witnessed_latest.size == WITNESSED


async def test_a_log_rolled_back_and_re_signed_fails_at_the_first_removed_record(
    honest: tuple[Path, Path], signer: NoteSigner, tmp_path: Path
) -> None:
    _, store = honest
    # Whoever holds the log's key writes the first 30 records again and signs them.
    rolled = await write_log(tmp_path / "rolled", signer, 30)
    assert verify_log(rolled, [signer.verifier]).ok  # its own checkpoints cannot tell
    result = check(rolled, signer, store)
    assert not result.ok
    assert result.first_bad_index == 30
    (problem,) = result.problems
    assert problem.message.startswith("rolled back:")
    assert f"co-signed {WITNESSED} records" in problem.message
    assert f"{store}:{len(witnessed_sizes(log_dir(store)))}" in problem.message


async def test_a_log_forked_and_re_signed_fails_after_the_last_agreeing_checkpoint(
    honest: tuple[Path, Path], signer: NoteSigner, tmp_path: Path
) -> None:
    _, store = honest
    forked = await write_log(tmp_path / "forked", signer, RECORDS, {23: {"decision": "block"}})
    assert verify_log(forked, [signer.verifier]).ok
    result = check(forked, signer, store)
    assert not result.ok
    (problem,) = result.problems
    assert problem.message.startswith("forked: records 20..29")
    assert result.first_bad_index == 20
    # the checkpoints up to 20 still agree
    assert result.witnessed == len(witnessed_sizes(forked, 20))


async def test_a_fork_after_the_witnessed_part_is_not_the_witness_s_to_find(
    honest: tuple[Path, Path], signer: NoteSigner, tmp_path: Path
) -> None:
    _, store = honest
    forked = await write_log(tmp_path / "forked", signer, RECORDS, {50: {"decision": "block"}})
    result = check(forked, signer, store)
    assert result.ok, result.problems
    assert result.witnessed == len(witnessed_sizes(forked))


async def test_removed_checkpoints_behind_a_witnessed_one_fail(
    honest: tuple[Path, Path], signer: NoteSigner
) -> None:
    log_dir, store = honest
    path = log_dir / CHECKPOINTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    kept = len(witnessed_sizes(log_dir, 20))
    path.write_text("".join(lines[:kept]))
    result = check(log_dir, signer, store)
    assert [p.message for p in result.problems] == [
        f"rolled back: {path} ends at size 20 but the witness co-signed size {WITNESSED}: "
        "signed checkpoints were removed"
    ]


def test_notes_the_witness_did_not_sign_or_the_log_did_not_sign_are_problems(
    honest: tuple[Path, Path], signer: NoteSigner, tmp_path: Path
) -> None:
    log_dir, store = honest
    stranger = NoteSigner("gw.test/hk-ingress", Ed25519PrivateKey.generate())
    result = check(log_dir, signer, store, twin=stranger)
    assert len(result.problems) == len(witnessed_sizes(log_dir))
    assert all("not co-signed by the witness key" in p.message for p in result.problems)
    assert result.witnessed == 0

    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    other = tmp_path / "other"
    append_note(other, ORIGIN, cosign_note(checkpoint_notes(log_dir)[0], TWIN))
    note = checkpoint_notes(log_dir)[0]
    body = note.split("\n\n")[0] + "\n"
    append_note(other, ORIGIN, cosign_note(sign_note(body, [impostor]), TWIN))
    (second_store,) = other.iterdir()
    result = check(log_dir, signer, second_store)
    assert [p.message.split(": ", 1)[1] for p in result.problems] == [
        "not a checkpoint signed by the log: note is not signed by any trusted key"
    ]
    assert result.witnessed == 1


def test_an_altered_store_and_torn_lines(honest: tuple[Path, Path], signer: NoteSigner) -> None:
    log_dir, store = honest
    lines = store.read_text().splitlines(keepends=True)
    # Sizes going backwards: the witness never co-signs that.
    at = {size: line for size, line in zip(witnessed_sizes(log_dir), lines, strict=True)}
    store.write_text(at[30] + at[10] + at[40])
    result = check(log_dir, signer, store)
    assert [p.message for p in result.problems] == [
        f"{store}:2: co-signed size 10 is below {store}:1's 30: the witness store was altered"
    ]
    # A torn last line is a crash while appending: a warning.
    store.write_text("".join(lines) + lines[0][:25])
    result = check(log_dir, signer, store)
    assert result.ok, result.problems
    torn = len(lines) + 1
    assert result.warnings == [
        f"{store}:{torn}: torn final line ignored (a crash while writing it)"
    ]
    # A mangled line before the last is not.
    store.write_text(lines[0] + "{not json\n" + lines[1])
    result = check(log_dir, signer, store)
    assert [p.message for p in result.problems] == [f"{store}:2: malformed co-signed note line"]


def test_a_single_note_file_and_another_log_s_store(
    honest: tuple[Path, Path], signer: NoteSigner, tmp_path: Path
) -> None:
    log_dir, _ = honest
    note = tmp_path / "checkpoint.note"
    (last,) = [n for n in checkpoint_notes(log_dir) if n.split("\n")[1] == str(WITNESSED)]
    note.write_text(cosign_note(last, TWIN))
    result = check(log_dir, signer, note)
    assert result.ok, result.problems
    assert result.witnessed_latest is not None
    assert result.witnessed_latest.size == WITNESSED

    other_origin = NoteSigner("gw.test/other-log", Ed25519PrivateKey.generate())
    foreign = sign_checkpoint(Checkpoint("gw.test/other-log", 10, b"\0" * 32), other_origin)
    note.write_text(cosign_note(foreign, TWIN))
    result = verify_log(
        log_dir,
        [signer.verifier, other_origin.verifier],
        witness_keys=[TWIN.verifier],
        witnessed=[note],
    )
    assert [p.message for p in result.problems] == [
        f"{note}:1: co-signed checkpoint of another log ('gw.test/other-log')"
    ]


async def test_the_cli_reports_what_the_witness_saw(
    honest: tuple[Path, Path],
    signer: NoteSigner,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_dir, store = honest
    args = ["audit", "verify", str(log_dir), "--key", str(signer.verifier)]
    witness = ["--witness-key", str(TWIN.verifier), "--witnessed", str(store)]
    assert main([*args, *witness]) == 0
    out = capsys.readouterr().out
    assert f"witnessed: {len(witnessed_sizes(log_dir))} co-signed checkpoints reproduced" in out
    assert f"covers {WITNESSED} of the {RECORDS} records" in out

    rolled = await write_log(tmp_path / "rolled", signer, 30)
    assert main(["audit", "verify", str(rolled), "--key", str(signer.verifier)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(rolled), "--key", str(signer.verifier), *witness]) == 1
    out = capsys.readouterr().out
    assert "verification FAILED: first bad index 30" in out
    assert "rolled back:" in out

    assert main([*args, "--witness-key", str(TWIN.verifier)]) == 2
    assert "--witness-key and --witnessed go together" in capsys.readouterr().err
