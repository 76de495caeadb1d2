"""``gateway audit``: keygen, verify, prove, check-receipt, query, export."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.keys import load_signing_key
from gateway.audit.log import AuditLog
from gateway.audit.note import NoteSigner
from gateway.audit.storage import INDEX_DIR, LogReader, list_segments
from gateway.audit.transfers import TRANSFERS_FILE
from gateway.cli import main
from tests.audit.conftest import record

ORIGIN = "gw.test/cli"
REPO = Path(__file__).resolve().parents[2]


async def _fill(directory: Path, signer: NoteSigner) -> None:
    log = await AuditLog.open(directory, signer, origin=ORIGIN, checkpoint_every=8)
    for i in range(40):
        decision = "block" if i % 5 == 0 else "allow"
        await log.append(record(i, decision=decision, event=f"{decision}ed".replace("ee", "e")))
    await log.append(record(3, event="delivered"))
    await log.close()


@pytest.fixture
def setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A log of 41 records and the verifier key string, made through the CLI's keygen."""
    key = tmp_path / "audit.key"
    assert main(["audit", "keygen", "-o", str(key), "--name", ORIGIN]) == 0
    vkey = capsys.readouterr().out.strip()
    signer = NoteSigner(ORIGIN, load_signing_key(key))
    assert str(signer.verifier) == vkey
    asyncio.run(_fill(tmp_path / "log", signer))
    return tmp_path / "log", vkey


def test_keygen_makes_a_private_key_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k.pem"
    assert main(["audit", "keygen", "-o", str(key)]) == 0
    vkey = capsys.readouterr().out.strip()
    assert vkey.startswith("hksz-gateway.local/audit+")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["audit", "pubkey", str(key)]) == 0
    assert capsys.readouterr().out.strip() == vkey
    assert main(["audit", "keygen", "-o", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "k.pem: already exists; refusing to overwrite" in err


def test_verify_ok_then_tampered(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, vkey = setup
    assert main(["audit", "verify", str(directory), "--key", vkey]) == 0
    assert "ok: 41 records" in capsys.readouterr().out
    ((_, segment),) = list_segments(directory)
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[17] = lines[17].replace(b'"allow"', b'"block"')
    segment.write_bytes(b"".join(lines))
    assert main(["audit", "verify", str(directory), "--key", vkey]) == 1
    out = capsys.readouterr().out
    assert "verification FAILED: first bad index 17" in out


def test_verify_reads_the_key_from_a_file(
    setup: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, vkey = setup
    pub = tmp_path / "audit.pub"
    pub.write_text(vkey + "\n")
    assert main(["audit", "verify", str(directory), "--key", str(pub)]) == 0


def test_verify_usage_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: tuple[Path, str]
) -> None:
    _, vkey = setup
    assert main(["audit", "verify", str(tmp_path / "nowhere"), "--key", vkey]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "nowhere: not an audit log directory" in err
    assert main(["audit", "verify", str(tmp_path), "--key", "junk"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_prove_and_check_receipt(
    setup: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, vkey = setup
    assert main(["audit", "prove", "t-3", "--dir", str(directory)]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["index"] == 40  # the latest record of the transfer: delivered
    assert receipt["record"]["event"] == "delivered"
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    assert main(["audit", "check-receipt", str(path), "--key", vkey]) == 0
    assert f"record 40 is in {ORIGIN}" in capsys.readouterr().out

    assert main(["audit", "prove", "t-3", "--all", "--dir", str(directory)]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in both] == [3, 40]
    path.write_text(json.dumps(both))
    assert main(["audit", "check-receipt", str(path), "--key", vkey]) == 0

    receipt["record"]["sender"] = "someone-else"
    path.write_text(json.dumps(receipt))
    assert main(["audit", "check-receipt", str(path), "--key", vkey]) == 1
    assert "verification FAILED" in capsys.readouterr().out

    assert main(["audit", "prove", "t-nope", "--dir", str(directory)]) == 1
    assert "no record of transfer 't-nope'" in capsys.readouterr().err


def test_check_receipt_of_garbage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: tuple[Path, str]
) -> None:
    _, vkey = setup
    path = tmp_path / "r.json"
    path.write_text("{not json")
    assert main(["audit", "check-receipt", str(path), "--key", vkey]) == 2
    assert "r.json: not a JSON receipt or bundle" in capsys.readouterr().err


def test_query_filters(setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = setup
    base = ["audit", "query", "--dir", str(directory), "--json"]
    assert main([*base, "--decision", "block"]) == 0
    blocked = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in blocked] == list(range(0, 40, 5))
    assert main([*base, "--sender", "lab-1", "--decision", "allow"]) == 0
    rows = [json.loads(line)["record"] for line in capsys.readouterr().out.splitlines()]
    assert rows
    assert all(r["sender"] == "lab-1" and r["decision"] == "allow" for r in rows)
    # record(i) is stamped 2026-01-01T00:00:ii UTC; --since/--until are UTC+8 without an offset.
    assert main([*base, "--since", "2026-01-01T08:00:10", "--until", "2026-01-01T00:00:20Z"]) == 0
    window = [json.loads(line)["index"] for line in capsys.readouterr().out.splitlines()]
    assert window == list(range(10, 20))
    assert main(["audit", "query", "--dir", str(directory), "--event", "delivered"]) == 0
    captured = capsys.readouterr()
    header, *table = captured.out.splitlines()
    assert header.split("\t") == [
        "index",
        "time",
        "event",
        "decision",
        "route",
        "sender",
        "transfer_id",
        "rule",
        "policy_version",
    ]
    assert len(table) == 1
    assert table[0].startswith("40\t")
    assert "records listed unverified; --key checks them" in captured.err
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "query", "--dir", str(directory), "--since", "yesterday"])
    assert exit_.value.code == 2
    assert "'yesterday' is not an ISO 8601 date" in capsys.readouterr().err


def test_export_bundle_verifies_with_only_the_public_key(
    setup: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, vkey = setup
    bundle = tmp_path / "bundle.json"
    args = ["audit", "export", "--dir", str(directory), "-o", str(bundle)]
    assert main([*args, "--since", "2026-01-01T00:00:05Z", "--until", "2026-01-01T00:00:25Z"]) == 0
    capsys.readouterr()
    document = json.loads(bundle.read_text())
    assert document["start"] == 5
    assert len(document["records"]) == 20
    assert main(["audit", "check-receipt", str(bundle), "--key", vkey]) == 0
    assert "records 5..24 (20)" in capsys.readouterr().out
    del document["records"][7]  # a record withheld from the regulator
    bundle.write_text(json.dumps(document))
    assert main(["audit", "check-receipt", str(bundle), "--key", vkey]) == 1
    assert main([*args, "--since", "2026-01-02", "--until", "2026-01-01"]) == 2


def test_the_installed_entry_point_runs_verify(setup: tuple[Path, str]) -> None:
    directory, vkey = setup
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", str(directory), "--key", vkey],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ok: 41 records" in done.stdout


def test_prune_keeps_young_records_and_refuses_short_retention(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, vkey = setup
    assert main(["audit", "prune", str(directory)]) == 0
    assert "nothing is past the 1096-day retention" in capsys.readouterr().out
    assert main(["audit", "prune", str(directory), "--retention-days", "365"]) == 2
    assert "PIPL Art. 56" in capsys.readouterr().err
    assert main(["audit", "verify", str(directory), "--key", vkey]) == 0


def test_bench_reports_records_per_second(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["audit", "bench", "--writers", "8", "--records", "64", "--dir", str(tmp_path), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == 64
    assert result["records_per_second"] > 0
    assert result["batches"] < 64  # group commit shared fsyncs
    assert list(tmp_path.iterdir()) == []  # its temp log is gone


def _no_scan(*_: object) -> object:
    raise AssertionError("scanned every segment")


def _edit_index(directory: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with contextlib.closing(sqlite3.connect(directory / INDEX_DIR / TRANSFERS_FILE)) as conn:
        for statement, params in statements:
            conn.execute(statement, params)
        conn.commit()


def test_prove_and_query_by_transfer_id_use_the_index(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = setup
    monkeypatch.setattr(LogReader, "iter_lines", _no_scan)
    assert main(["audit", "prove", "t-3", "--all", "--dir", str(directory)]) == 0
    assert [r["index"] for r in json.loads(capsys.readouterr().out)] == [3, 40]
    assert main(["audit", "query", "--transfer-id", "t-3", "--json", "--dir", str(directory)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["index"], r["record"]["event"]) for r in lines] == [
        (3, "allowed"),
        (40, "delivered"),
    ]
    assert (
        main(
            [
                "audit",
                "query",
                "--transfer-id",
                "t-3",
                "--event",
                "delivered",
                "--dir",
                str(directory),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[1].startswith("40\t")
    # An index that lags the log (the gateway was killed): the newer records are read.
    _edit_index(
        directory,
        ("DELETE FROM entries WHERE record >= 20", ()),
        ("UPDATE meta SET value = 20 WHERE key = 'size'", ()),
        (
            "UPDATE meta SET value = ? WHERE key = 'leaf'",
            (LogReader(directory).stored_hash(0, 19),),
        ),
    )
    assert main(["audit", "prove", "t-3", "--all", "--dir", str(directory)]) == 0
    assert [r["index"] for r in json.loads(capsys.readouterr().out)] == [3, 40]


def test_prove_does_not_trust_an_index_entry_naming_another_record(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = setup
    _edit_index(directory, ("UPDATE entries SET record = 5 WHERE record = 3", ()))
    assert main(["audit", "prove", "t-3", "--all", "--dir", str(directory)]) == 0
    assert [r["index"] for r in json.loads(capsys.readouterr().out)] == [3, 40]
    (directory / INDEX_DIR / TRANSFERS_FILE).write_bytes(b"garbage" * 1000)
    assert main(["audit", "prove", "t-3", "--dir", str(directory)]) == 0
    assert json.loads(capsys.readouterr().out)["index"] == 40


def test_every_audit_command_names_its_directory_with_dir(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, vkey = setup
    assert main(["audit", "verify", "--dir", str(directory), "--key", vkey]) == 0
    assert "ok: 41 records" in capsys.readouterr().out
    monkeypatch.setenv("GATEWAY_AUDIT_DIR", str(directory))
    assert main(["audit", "verify", "--key", vkey]) == 0
    assert f"{directory}: ok: 41 records" in capsys.readouterr().out
    assert main(["audit", "query", "--dir", str(directory), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 41


def test_keygen_and_pubkey_name_the_key_after_the_configured_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        '[audit]\nsigning_key = "keys/audit.key"\norigin = "hetao.example/sz-egress-1"\n'
    )
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "audit.key"
    assert main(["audit", "keygen", "-o", str(key), "--config", str(config)]) == 0
    made = capsys.readouterr().out.strip()
    assert made.startswith("hetao.example/sz-egress-1+")
    # The key file and the name both come from the configuration.
    assert main(["audit", "pubkey", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == made
    # An explicit name still wins; the key is the same.
    assert main(["audit", "pubkey", str(key), "--name", "other.example/log"]) == 0
    other = capsys.readouterr().out.strip()
    assert other.startswith("other.example/log+")
    assert other.rsplit("+", 1)[1] == made.rsplit("+", 1)[1]
    # A name no verifier line can carry is refused before a key file is written.
    assert main(["audit", "keygen", "-o", str(tmp_path / "k2"), "--name", "two words"]) == 2
    assert not (tmp_path / "k2").exists()
    assert "--name:" in capsys.readouterr().err


def test_query_with_the_key_warns_when_the_log_does_not_verify(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, vkey = setup
    query = ["audit", "query", "--dir", str(directory), "--decision", "block", "--key", vkey]
    assert main(query) == 0
    captured = capsys.readouterr()
    assert "does NOT verify" not in captured.err
    assert "unverified" not in captured.err
    assert len(captured.out.splitlines()) == 1 + 8
    (segment,) = (directory / "segments").iterdir()
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b'"block"', b'"allow"')  # hide one blocked transfer
    segment.write_bytes(b"".join(lines))
    assert main(query) == 0
    captured = capsys.readouterr()
    assert f"warning: {directory}: the log does NOT verify (from record 5)" in captured.err
    assert len(captured.out.splitlines()) == 1 + 7  # the records are still listed, as they are
