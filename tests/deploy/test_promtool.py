"""deploy/prometheus: the rules parse, their promtool unit tests pass, every alert is complete.

issue 7 asks for alerts on audit write failures, a stale checkpoint, a failed
policy reload, the fail-closed rate, upstream errors, the ledger above 90 % of
a threshold and a certificate expiring within 14 days, each with a severity, a
summary, a description and a runbook link into docs/operations.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, REPO, require_tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
OPERATIONS = REPO / "docs" / "operations.md"
#: promtool evaluates a handful of short synthetic series; a hang is a bug.
PROMTOOL_TIMEOUT_SECONDS = 120
#: What issue 7 requires an alert for, and the alert that covers it.
REQUIRED_ALERTS = {
    "audit write failures": "GatewayAuditWriteFailures",
    "audit log still unwritable (issue 11)": "GatewayAuditUnwritable",
    "accept(2) failing: out of descriptors (issue 11)": "GatewayAcceptErrors",
    "no checkpoint for 5 minutes": "GatewayAuditCheckpointStale",
    "policy reload failed": "GatewayPolicyReloadFailed",
    "fail-closed rate": "GatewayFailingClosed",
    "upstream errors": "GatewayUpstreamErrors",
    "ledger above 90 % of a threshold": "GatewayLedgerNearThreshold",
    "certificate expiring in 14 days": "GatewayCertificateExpiringSoon",
    "ledger or PostgreSQL down (issue 16)": "GatewayLedgerDown",
    "no gateway scraped at all (issue 16)": "GatewayTargetsAbsent",
    "spool or audit disk filling (issue 16)": "GatewayDiskLow",
    "availability SLO burn rate (issue 16)": "GatewayAvailabilityBurn",
    "latency SLO burn rate (issue 16)": "GatewayLatencyBurn",
}
SEVERITIES = frozenset({"critical", "warning"})


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )


def _alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub renders them: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            text = heading.group(1).strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text)))
    return anchors


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES), cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS), cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_when_an_alert_is_weakened(tmp_path: Path) -> None:
    # The unit tests must be able to fail: raise the upstream-error threshold to
    # 50 % and the 10 % case in alerts_test.yml must no longer fire.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    weakened = RULES.read_text(encoding="utf-8").replace(
        "> 0.05\n        for: 5m", "> 0.5\n        for: 5m"
    )
    assert weakened != RULES.read_text(encoding="utf-8")
    (tmp_path / RULES.name).write_text(weakened, encoding="utf-8")
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "GatewayUpstreamErrors" in result.stdout + result.stderr


@pytest.mark.parametrize(("need", "alert"), sorted(REQUIRED_ALERTS.items()))
def test_every_required_alert_exists(need: str, alert: str) -> None:
    assert alert in {rule["alert"] for rule in _alerts()}, need


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip()
    assert len(annotations["description"].strip()) > len(annotations["summary"].strip()) // 2
    # Absolute: under the runbook_base external label (scrape.yml sets it).
    assert annotations["runbook_url"] == (
        "{{ $externalLabels.runbook_base }}/docs/operations.md#" + rule["alert"].lower()
    )


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: str(rule["alert"]))
def test_every_runbook_link_lands_on_a_section(rule: dict[str, Any]) -> None:
    anchor = rule["annotations"]["runbook_url"].partition("#")[2]
    assert anchor in _github_anchors(OPERATIONS.read_text(encoding="utf-8")), (
        f"docs/operations.md has no section for {rule['alert']}"
    )


def test_every_alert_is_unit_tested_firing() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert document["rule_files"] == [RULES.name]
    fired = {
        case["alertname"]
        for test in document["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in _alerts()}


def test_alerts_name_only_exported_metrics() -> None:
    from tests.deploy.promql import unknown_metrics

    for rule in _alerts():
        assert unknown_metrics(rule["expr"]) == set(), rule["alert"]


def test_a_missing_tool_fails_with_install_instructions_rather_than_skipping() -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        require_tool("promtool-that-does-not-exist")
    message = str(failure.value)
    assert "not found on PATH or in /usr/bin" in message
    assert "apt-get install -y prometheus" in message
