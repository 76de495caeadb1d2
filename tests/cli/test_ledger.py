"""``gateway ledger show``: totals against the thresholds, as a table and as JSON."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger import SqliteLedger, ledger_year
from tests.ledger.pg import PG_URL, drop_schema, new_schema, require_pg


def _digests(n: int, tag: str) -> list[bytes]:
    return [hashlib.sha256(f"{tag}-{i}".encode()).digest()[:16] for i in range(n)]


async def _fill(url_or_path: str | Path, rows: dict[tuple[str, int, str], int]) -> None:
    from gateway.ledger import open_ledger

    ledger = await open_ledger(str(url_or_path))
    try:
        for (org, year, category), n in rows.items():
            async with ledger.transaction(org, year) as tx:
                await tx.add(category, _digests(n, f"{org}{year}{category}"))
    finally:
        await ledger.close()


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"
    this_year = ledger_year()
    asyncio.run(
        _fill(
            path,
            {
                ("hku", this_year, "personal"): 9_500,
                ("hku", this_year, "sensitive"): 9_001,
                ("szu", this_year, "personal"): 12,
                ("szu", 2020, "personal"): 77,
            },
        )
    )
    return path


def test_table_shows_each_threshold_and_how_close(
    ledger_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", "show", "--ledger", str(ledger_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"calendar year {ledger_year()}" in out[0]
    header, *rows = out[1:]
    assert header.split()[:4] == ["ORGANISATION", "CATEGORY", "IDENTIFIERS", "THRESHOLD"]
    cells = [row.split() for row in rows]
    assert [c[:7] for c in cells] == [
        ["hku", "personal", "9,500", "100,000", "9.5%", "90,500", "ok"],
        ["hku", "personal", "9,500", "1,000,000", "0.9%", "990,500", "ok"],
        ["hku", "sensitive", "9,001", "10,000", "90.0%", "999", "near"],
        ["szu", "personal", "12", "100,000", "0.0%", "99,988", "ok"],
        ["szu", "personal", "12", "1,000,000", "0.0%", "999,988", "ok"],
    ]
    assert rows[2].endswith("CAC security assessment")
    assert rows[0].endswith("standard contract or certification")


def test_org_and_year_filters(ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ledger", "show", "--ledger", str(ledger_file), "--org", "szu", "--year", "2020"]
    assert main(args) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[:3] for r in rows] == [["szu", "personal", "77"]] * 2
    assert main(["ledger", "show", "--ledger", str(ledger_file), "--org", "nobody"]) == 0
    assert "no subjects recorded for nobody" in capsys.readouterr().out


def test_json(ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "show", "--ledger", str(ledger_file), "--org", "hku", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["year"] == ledger_year()
    sensitive = doc["totals"][1]
    assert sensitive == {
        "organisation": "hku",
        "category": "sensitive",
        "subjects": 9_001,
        "thresholds": [
            {
                "mechanism": "security-assessment",
                "threshold": 10_000,
                "reached": False,
                "remaining": 999,
                "fraction": 0.9001,
            }
        ],
    }


def test_reached_threshold_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "l.sqlite3"
    asyncio.run(_fill(path, {("cu", 2026, "sensitive"): 10_000}))
    assert main(["ledger", "show", "--ledger", str(path), "--year", "2026"]) == 0
    (row,) = capsys.readouterr().out.splitlines()[2:]
    assert row.split()[:7] == ["cu", "sensitive", "10,000", "10,000", "100.0%", "0", "REACHED"]


def test_default_ledger_comes_from_the_environment(
    ledger_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_LEDGER_URL", f"sqlite:///{ledger_file}")
    assert main(["ledger", "show", "--org", "szu"]) == 0
    assert "szu" in capsys.readouterr().out


def test_missing_file_is_one_line_naming_it_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "ledger", "show", "--ledger", str(missing)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"gateway: ledger {missing}: no such file"
    assert not missing.exists()


def test_corrupt_file_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"\x00garbage" * 512)
    assert main(["ledger", "show", "--ledger", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gateway: ledger {junk}:")
    assert "Traceback" not in err


def test_unreachable_postgres_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://gw:hunter2@127.0.0.1:1/test"
    assert main(["ledger", "show", "--ledger", url]) == 2
    captured = capsys.readouterr()
    assert "hunter2" not in captured.err + captured.out
    assert captured.err.startswith("gateway: ledger")


@pytest.mark.postgres
def test_postgres_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    require_pg()
    schema = new_schema()
    url = f"{PG_URL}?schema={schema}"
    try:
        asyncio.run(_fill(url, {("hku", 2026, "personal"): 3}))
        assert main(["ledger", "show", "--ledger", url, "--year", "2026", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert [(t["organisation"], t["subjects"]) for t in doc["totals"]] == [("hku", 3)]
    finally:
        asyncio.run(drop_schema(schema))


def test_sqlite_ledger_class_is_what_show_reads(ledger_file: Path) -> None:
    async def read() -> int:
        ledger = await SqliteLedger(ledger_file, create=False).open()
        try:
            return len(await ledger.totals())
        finally:
            await ledger.close()

    assert asyncio.run(read()) == 4


def test_the_policys_own_lines_are_shown_beside_the_statutory_ones(
    ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An organisation's own lower cap: review from 50,000 people, and the shipped
    # 100,000 line named by its rule.
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "p.yaml").write_text(
        "categories: {personal: ['pii.*']}\n"
        "senders: {s: {team: t, organisation: hku}}\n"
        "routes: {r: {direction: sz->hk, destination: 'https://hk.example/r', encrypt: tls}}\n"
        "rules:\n"
        "  - id: own-cap\n"
        "    action: review\n"
        "    reason: our own cap\n"
        "    when: {ledger: {personal: {projected: '> 49999'}}}\n"
        "  - id: statutory\n"
        "    action: block\n"
        "    reason: PIPL Art. 38\n"
        "    when: {ledger: {personal: {projected: '>= 100000'}}}\n"
    )
    args = ["ledger", "show", "--ledger", str(ledger_file), "--org", "hku", "--policy", str(policy)]
    assert main(args) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.split()[:2] == ["hku", "personal"]]
    assert [r.split()[3] for r in rows] == ["50,000", "100,000", "1,000,000"]
    assert rows[0].endswith("rule own-cap (review)")
    assert rows[1].endswith("standard contract or certification: rule statutory (block)")
    assert rows[2].endswith("CAC security assessment")
    (policy / "p.yaml").write_text("rules: [{id: x}]\n")
    assert main(args) == 2
    assert "p.yaml:1:" in capsys.readouterr().err
