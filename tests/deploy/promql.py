"""Metric names and label matchers in PromQL expressions, checked against what the gateway exports.

Used by the dashboard and alert-rule tests: a query that names a metric the
gateway does not export draws an empty panel or an alert that can never fire,
and nothing else would notice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.obs.metrics import METRIC_LABELS, Metrics
from tests.deploy.tools import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "gateway.json"
#: Grafana dashboard variables, replaced by something PromQL parses (promtool, Prometheus).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$route": ".*",
}

#: Series names the expressions may use: the gateway's own, the process
#: collector's, and Prometheus's synthetic ``up`` for the scrape target.
_METRIC_NAME = re.compile(r"\b(?:gateway|process)_[a-z_]+\b|\bup\b(?=\s*[{=!<>)])")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
#: A selector with matchers: name{label="value", label=~"value"}.
_SELECTOR = re.compile(r"\b((?:gateway|process)_[a-z_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
#: Labels Prometheus attaches to every scraped series, and the histogram bound.
TARGET_LABELS = frozenset({"job", "instance"})
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@cache
def _series_families() -> dict[str, str]:
    """Every series name a fresh :class:`Metrics` can export -> its METRIC_LABELS key or family.

    Built from the exposition's TYPE lines, so labelled metrics with no child
    yet count too, and histogram suffixes are accepted only on histograms.
    """
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(Metrics().render().decode()):
        if family.type == "counter":
            names[family.name + "_total"] = family.name + "_total"
        elif family.type == "histogram":
            for suffix in _HISTOGRAM_SUFFIXES:
                names[family.name + suffix] = family.name
        else:
            names[family.name] = family.name
    return names


def documented_metric(name: str) -> str | None:
    """The METRIC_LABELS key a series name belongs to, or None when it is not documented."""
    family = _series_families().get(name)
    return family if family in METRIC_LABELS else None


def metric_names(expr: str) -> set[str]:
    """Every series name an expression selects (string literals ignored)."""
    return set(_METRIC_NAME.findall(_STRING.sub('""', expr)))


def unknown_metrics(expr: str) -> set[str]:
    """Series names in ``expr`` the gateway does not export."""
    unknown = set()
    for name in metric_names(expr) - {"up"}:
        if name.startswith("gateway_"):
            if documented_metric(name) is None:
                unknown.add(name)
        elif name not in _series_families():
            unknown.add(name)
    return unknown


def unknown_matcher_labels(expr: str) -> set[str]:
    """``metric{label...}`` matchers on labels the metric does not carry."""
    unknown = set()
    for name, body in _SELECTOR.findall(_STRING.sub('""', expr)):
        documented = documented_metric(name)
        allowed = set(TARGET_LABELS)
        if documented is not None:
            allowed |= set(METRIC_LABELS[documented])
        if name.endswith("_bucket"):
            allowed.add("le")
        unknown |= {f"{name}:{label}" for label in _MATCHER_LABEL.findall(body)} - {
            f"{name}:{label}" for label in allowed
        }
    return unknown


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, rows' nested panels included."""
    if panels is None:
        panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """``(panel title / refId, expr)`` of every query of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def substitute_variables(expr: str) -> str:
    """``expr`` with Grafana's variables replaced, as Prometheus would receive it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr
