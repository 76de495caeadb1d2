"""Totals against the 2024 Provisions thresholds, and the ledger gauge."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from gateway.ledger import LedgerTotal, MemoryLedger
from gateway.ledger.report import assess, refresh_ledger_metrics
from gateway.obs.metrics import Metrics


def test_personal_has_two_thresholds_and_sensitive_one() -> None:
    personal = assess(LedgerTotal("hku", "personal", 2026, 95_000))
    assert [(s.mechanism, s.threshold) for s in personal] == [
        ("standard-contract", 100_000),
        ("security-assessment", 1_000_000),
    ]
    assert [(s.reached, s.remaining) for s in personal] == [(False, 5_000), (False, 905_000)]
    assert personal[0].fraction == 0.95
    (sensitive,) = assess(LedgerTotal("hku", "sensitive", 2026, 10_000))
    assert (sensitive.threshold, sensitive.reached, sensitive.remaining) == (10_000, True, 0)
    assert assess(LedgerTotal("hku", "important", 2026, 3)) == []


def _gauge(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["organisation"], s.labels["category"]): s.value
        for family in metrics.ledger_subjects.collect()
        for s in family.samples
    }


async def test_refresh_publishes_this_years_totals_and_drops_stale_series() -> None:
    ledger = MemoryLedger(
        {("hku", 2026, "personal"): 120, ("hku", 2026, "sensitive"): 7, ("cu", 2025, "personal"): 9}
    )
    metrics = Metrics(CollectorRegistry())
    metrics.ledger_subjects.labels("gone", "personal").set(99_999)  # last year's organisation
    june = datetime(2026, 6, 1, tzinfo=UTC)
    totals = await refresh_ledger_metrics(ledger, metrics, now=june)
    assert {t.organisation for t in totals} == {"hku"}
    assert _gauge(metrics) == {("hku", "personal"): 120, ("hku", "sensitive"): 7}
    # 1 January 00:30 in the parks: a new year, nothing exported yet.
    new_year = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)
    await refresh_ledger_metrics(ledger, metrics, now=new_year)
    assert _gauge(metrics) == {}
    assert (
        b'gateway_ledger_subjects{category="personal",organisation="hku"}' not in metrics.render()
    )
