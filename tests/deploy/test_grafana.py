"""deploy/grafana/gateway.json: importable, complete, and querying only what the gateway exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.obs.metrics import METRIC_LABELS
from tests.deploy.promql import (
    DASHBOARD,
    dashboard_panels,
    dashboard_queries,
    metric_names,
    substitute_variables,
    unknown_matcher_labels,
    unknown_metrics,
)
from tests.deploy.tools import require_tool

#: Grafana's import dialog offers a data-source choice for each ``__inputs`` entry.
DATASOURCE_INPUT = "DS_PROMETHEUS"
#: promtool parses a few dozen expressions; a hang is a bug.
PROMTOOL_TIMEOUT_SECONDS = 120
#: issue 7's panel list, each as a pattern an expression of some panel must match.
REQUIRED_QUERIES = {
    "transfers by decision and route": r"gateway_transfers_total.*by \(route, decision\)|"
    r"by \(route, decision\).*gateway_transfers_total",
    "block reasons by rule": r'by \(rule\).*decision="block"',
    "throughput by stage": r"by \(stage\).*gateway_transfer_bytes_total",
    "latency percentiles": r"histogram_quantile\(0\.99, .*gateway_transfer_duration_seconds_bucket",
    "in-flight": r"gateway_inflight_transfers",
    "classifier MB/s": r"gateway_classifier_bytes_total.*/ 1e6",
    "audit fsync latency": r"histogram_quantile\(.*gateway_audit_fsync_seconds_bucket",
    "checkpoint age": r"time\(\) - .*gateway_audit_last_checkpoint_timestamp_seconds",
    "policy version": r"gateway_policy_info",
    "reload failures": r"gateway_policy_reloads_total",
    "ledger subjects per organisation": r"by \(organisation\).*gateway_ledger_subjects",
    "ledger thresholds": r"gateway_ledger_threshold_subjects",
    "certificate expiry": r"gateway_tls_cert_expiry_seconds",
}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def test_dashboard_is_valid_json_with_a_title_and_uid() -> None:
    dashboard = _dashboard()
    assert dashboard["title"]
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["id"] is None  # exported for sharing: Grafana assigns the id on import


def test_dashboard_declares_the_prometheus_input() -> None:
    inputs = _dashboard()["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [
        (DATASOURCE_INPUT, "datasource", "prometheus")
    ]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    # Provisioned from a file (no import dialog), the `datasource` variable picks
    # a Prometheus; imported, the dialog's choice becomes its default.
    variables = _dashboard()["templating"]["list"]
    chooser = variables[0]
    assert (chooser["name"], chooser["type"], chooser["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    assert chooser["current"]["value"] == "${" + DATASOURCE_INPUT + "}"
    reference = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard_panels(_dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == reference, panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == reference, panel["title"]
    for variable in variables[1:]:
        assert variable["datasource"] == reference, variable["name"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = list(dashboard_panels(_dashboard()["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"panel {panel['title']} overlaps another"
        cells |= mine


@pytest.mark.parametrize(("need", "pattern"), sorted(REQUIRED_QUERIES.items()))
def test_every_panel_issue_7_asks_for_is_there(need: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for _, expr in dashboard_queries()), need


@pytest.mark.parametrize(
    ("where", "expr"), dashboard_queries(), ids=[w for w, _ in dashboard_queries()]
)
def test_every_query_names_only_exported_metrics(where: str, expr: str) -> None:
    assert metric_names(expr), f"{where}: names no metric"
    assert unknown_metrics(expr) == set(), where
    assert unknown_matcher_labels(expr) == set(), where


def test_the_metric_check_can_fail() -> None:
    assert unknown_metrics("rate(gateway_transfer_total[5m])") == {"gateway_transfer_total"}
    assert unknown_metrics("gateway_audit_fsync_seconds_bucket") == set()
    assert unknown_metrics("gateway_inflight_transfers_bucket") == {
        "gateway_inflight_transfers_bucket"
    }
    assert unknown_metrics('process_rss{job="gateway_x"}') == {"process_rss"}
    assert unknown_matcher_labels('gateway_transfers_total{sender="x"}') == {
        "gateway_transfers_total:sender"
    }


def test_every_exported_gateway_metric_is_on_the_dashboard() -> None:
    used = {name for _, expr in dashboard_queries() for name in metric_names(expr)}
    used_documented = {n.removesuffix("_bucket") for n in used}
    # gateway_audit_write_failures_total and friends: nothing documented is left unwatched.
    assert set(METRIC_LABELS) - used_documented == set()


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rule files: one recording rule per query.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_variables(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
