"""``gateway policy check|test`` and ``gateway explain``: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gateway.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
SAMPLES = SHIPPED / "samples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_shipped_prints_version_and_warns_about_missing_demo_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "policy", "check", str(SHIPPED))
    assert code == 0
    assert "ok, policy hksz-gateway-shipped version " in out
    assert "5 routes, 3 senders" in out
    # Without `make run` the demo's recipient file may not exist: a warning, never an error.
    assert "error" not in err


def test_check_invalid_exits_1_with_located_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text("rules:\n  - id: r\n    action: allow\n    reson: typo\n")
    code, out, err = run(capsys, "policy", "check", str(tmp_path))
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == f"{tmp_path}/p.yaml:2:5: rules[0].reason: missing required key 'reason'"
    assert lines[1].startswith(f"{tmp_path}/p.yaml:4:5: rules[0].reson: unknown key 'reson'")
    assert lines[-1] == f"{tmp_path}: invalid policy (2 errors)"
    assert out == ""


def test_check_missing_directory_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "policy", "check", str(tmp_path / "absent"))
    assert code == 2
    assert "no such policy file or directory" in err


def test_policy_test_shipped_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", str(SHIPPED))
    assert code == 0
    assert "FAIL" not in out
    assert "PASS: " in out


def test_policy_test_failure_prints_diff_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(
        "routes:\n  r: {direction: hk->sz, destination: 'https://h/', encrypt: tls}\n"
        "senders:\n  s: {team: t, organisation: o}\n"
    )
    (tmp_path / "p_test.yaml").write_text(
        "cases:\n  - {name: hopes, route: r, sender: s, text: hi, "
        "expect: {action: allow, rule: default}}\n"
    )
    code, out, _ = run(capsys, "policy", "test", str(tmp_path))
    assert code == 1
    assert f"FAIL: {tmp_path}/p_test.yaml:2:5: hopes" in out
    assert "  - action: allow\n  + action: block\n    rule: default" in out
    assert "FAIL: 1/1" in out


def test_policy_test_without_cases_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text("rules: []\n")
    code, _, err = run(capsys, "policy", "test", str(tmp_path))
    assert code == 1
    assert "no test cases found" in err


def test_explain_prints_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        str(SAMPLES / "contacts.csv"),
        "--route",
        "sz-lab",
        "--sender",
        "demo-hk-research",
        "--policy",
        str(SHIPPED),
    )
    assert code == 0
    assert "label:   pii.cn_phone count 3 distinct 3" in out
    assert "base-credentials [block] no match" in out
    assert "demo-sz-lab-research-only [block] MATCH -> decides" in out
    assert "+ categories.any: personal: pii.cn_phone (3), pii.email (3)" in out
    assert "decision: BLOCK by demo-sz-lab-research-only" in out
    assert "13723960779" not in out  # never a matched value
    assert "chen.wei" not in out


def test_explain_shows_content_attributes_and_their_conditions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bacterial VCF: the attributes, and the HGR rules' organism condition not holding."""
    vcf = tmp_path / "ecoli.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n"
        "##contig=<ID=NC_000913.3,length=4641652,assembly=ASM584v2>\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "NC_000913.3\t336\t.\tC\tT\t50\tPASS\t.\n"
    )
    argv = ["explain", str(vcf), "--route", "sz-lab", "--sender", "demo-sz-genomics"]
    code, out, _ = run(capsys, *argv, "--policy", str(SHIPPED))
    assert code == 0
    assert "content: text/x-vcf charset utf-8 layers none\n" in out
    assert "attrs:   assembly=ASM584v2  organism=Escherichia coli\n" in out
    assert (
        "- attributes.organism.any: organism 'Escherichia coli': matches none of "
        "[Homo sapiens, unknown, other]"
    ) in out
    code, out, _ = run(capsys, *argv, "--policy", str(SHIPPED), "--json")
    result = json.loads(out)
    assert result["summary"]["content"]["attributes"] == {
        "assembly": "ASM584v2",
        "organism": "Escherichia coli",
    }
    hgr = next(t for t in result["decision"]["trace"] if t["rule"] == "hgr-export-block")
    assert hgr["conditions"][-1] == {
        "condition": "attributes.organism.any",
        "ok": False,
        "detail": "organism 'Escherichia coli': matches none of [Homo sapiens, unknown, other]",
    }


def test_explain_without_attributes_prints_no_attrs_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["explain", str(SAMPLES / "clean.csv"), "--route", "sz-lab"]
    code, out, _ = run(capsys, *argv, "--sender", "demo-hk-research", "--policy", str(SHIPPED))
    assert code == 0
    assert "attrs:" not in out
    # A CSV states no organism: to the HGR rules it is 'unknown' (their labels condition fails).
    assert "+ attributes.organism.any: organism not stated (unknown): matches unknown" in out


def test_explain_json_and_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "p"
    policy.mkdir()
    (policy / "p.yaml").write_text(
        "categories: {personal: 'pii.*'}\n"
        "routes:\n  r: {direction: sz->hk, destination: 'https://h/', encrypt: tls}\n"
        "senders:\n  s: {team: t, organisation: o}\n"
        "rules:\n  - id: lots\n    action: block\n    reason: too many\n"
        "    when: {ledger: {personal: {projected: '>= 100'}}}\n"
    )
    argv = ["explain", str(SAMPLES / "contacts.csv"), "--route", "r", "--sender", "s"]
    argv += ["--policy", str(policy), "--json"]
    code, out, _ = run(capsys, *argv, "--ledger", "personal=94")
    assert code == 0
    result = json.loads(out)
    assert result["decision"]["rule"] == "lots"
    assert result["summary"]["subjects"] == 3
    assert result["decision"]["trace"][0]["conditions"][0]["detail"].startswith(
        "personal subjects this year including this transfer 100 >= 100"
    )
    code, out, _ = run(capsys, *argv, "--ledger", "personal=93")
    assert json.loads(out)["decision"]["rule"] == "default"
    # The numbers mean one thing: 3 subjects (the largest label), 6 identifiers
    # added to the ledger (3 phone numbers and 3 addresses of the same people).
    assert json.loads(out)["ledger_adds"] == {"personal": 6}
    code, out, _ = run(capsys, *argv[:-1], "--ledger", "personal=93")
    assert "subjects: 3 (the largest distinct count of one person label)" in out
    assert "ledger:  this transfer adds 6 personal (distinct identifiers" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--route", "nowhere", "--sender", "demo-hk-research"], "unknown route 'nowhere'"),
        (["--route", "sz-lab", "--sender", "mallory"], "sender identity is not declared"),
        (
            ["--route", "sz-lab", "--sender", "demo-hk-research", "--ledger", "personal=lots"],
            "--ledger expects CATEGORY=N",
        ),
        (
            ["--route", "sz-lab", "--sender", "demo-hk-research", "--ledger", "important=3"],
            "'important' is not tracked",
        ),
    ],
)
def test_explain_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(
        capsys, "explain", str(SAMPLES / "clean.csv"), "--policy", str(SHIPPED), *extra
    )
    assert code == 2
    assert message in err


def test_explain_unreadable_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["explain", str(tmp_path / "nope.csv"), "--route", "sz-lab"]
    code, _, err = run(capsys, *argv, "--sender", "demo-hk-research", "--policy", str(SHIPPED))
    assert code == 2
    assert "No such file or directory" in err


def test_real_entry_point_never_prints_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("rules: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{tmp_path}/p.yaml:2:1: YAML syntax error" in proc.stderr


def test_explain_does_not_count_an_import_against_the_export_ledger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p"
    policy.mkdir()
    (policy / "p.yaml").write_text(
        "categories: {personal: 'pii.*'}\n"
        "routes:\n  in: {direction: hk->sz, destination: 'https://h/', encrypt: tls}\n"
        "senders:\n  s: {team: t, organisation: o}\n"
        "rules:\n  - id: lots\n    action: block\n    reason: too many\n"
        "    when: {ledger: {personal: {projected: '>= 100'}}}\n"
    )
    argv = ["explain", str(SAMPLES / "contacts.csv"), "--route", "in", "--sender", "s"]
    code, out, _ = run(capsys, *argv, "--policy", str(policy), "--ledger", "personal=99")
    assert code == 0
    assert "personal subjects this year including this transfer 99 " in out
    assert "(hk->sz transfers are not counted)" in out
    assert "decision: BLOCK by default" in out


def test_policy_test_runs_a_selection_and_reports_for_ci(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "policy", "test", str(SHIPPED), "--run", "1,000,000")
    assert code == 0
    assert "PASS: 3/3" in out
    code, out, _ = run(capsys, "policy", "test", str(SHIPPED), "--format", "json")
    result = json.loads(out)
    assert result["failed"] == 0
    assert result["passed"] == len(result["cases"]) > 50
    assert result["uncovered"] == []
    code, out, _ = run(capsys, "policy", "test", str(SHIPPED), "--format", "junit", "--run", "HGR")
    suite = ElementTree.fromstring(out)
    assert suite.tag == "testsuite"
    assert int(suite.get("tests", "0")) == len(suite.findall("testcase")) > 0
    assert run(capsys, "policy", "test", str(SHIPPED), "--run", "(")[0] == 2


def test_policy_test_names_rules_no_case_exercises(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p"
    policy.mkdir()
    (policy / "p.yaml").write_text(
        "routes:\n  r: {direction: hk->sz, destination: 'https://h/', encrypt: tls}\n"
        "senders:\n  s: {team: t, organisation: o}\n"
        "rules:\n"
        "  - {id: big, action: block, reason: too big, when: {size: '> 1 MB'}}\n"
        "  - {id: ok, action: allow, reason: fine}\n"
    )
    (policy / "p_test.yaml").write_text(
        "cases:\n  - {name: small, route: r, sender: s, text: hi,\n"
        "     expect: {action: allow, rule: ok}}\n"
    )
    code, out, _ = run(capsys, "policy", "test", str(policy))
    assert code == 0
    assert "not exercised: big, default" in out
    code, out, _ = run(capsys, "policy", "test", str(policy), "--format", "junit")
    (case,) = ElementTree.fromstring(out).findall("testcase")
    assert case.get("name") == "small"
    assert case.find("failure") is None
