"""Ledger totals against the yearly thresholds of the 2024 Provisions.

One place that says how close each organisation is to the next mechanism it
would need, used by ``gateway ledger show`` and by the
``gateway_ledger_subjects`` gauge the dashboard draws against the threshold
lines (the alert fires at 90 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.ledger.base import Ledger, LedgerTotal, ledger_year
from gateway.obs.metrics import LEDGER_THRESHOLDS, Metrics

#: Human wording of each mechanism (REGULATIONS.md, "CAC Provisions … 2024").
MECHANISM_TEXT: dict[str, str] = {
    "standard-contract": "standard contract or certification",
    "security-assessment": "CAC security assessment",
}


@dataclass(frozen=True, slots=True)
class ThresholdStatus:
    """Where one organisation-category total stands against one threshold.

    Attributes:
        category: ``personal`` or ``sensitive``.
        mechanism: what the Provisions require at or above the threshold.
        threshold: the number of people at which the mechanism is required.
        subjects: distinct subjects exported this year.
    """

    category: str
    mechanism: str
    threshold: int
    subjects: int

    @property
    def reached(self) -> bool:
        """True once the total is at or above the threshold (the Provisions say "≥")."""
        return self.subjects >= self.threshold

    @property
    def remaining(self) -> int:
        """People that may still be exported before the threshold is reached."""
        return max(0, self.threshold - self.subjects)

    @property
    def fraction(self) -> float:
        """``subjects / threshold``: 0.9 is where the ledger alert fires."""
        return self.subjects / self.threshold


def assess(total: LedgerTotal) -> list[ThresholdStatus]:
    """The thresholds that apply to ``total``'s category, lowest first.

    A category without yearly thresholds (anything but ``personal`` and
    ``sensitive``) yields an empty list.
    """
    return [
        ThresholdStatus(category, mechanism, threshold, total.subjects)
        for category, mechanism, threshold in sorted(LEDGER_THRESHOLDS, key=lambda t: t[2])
        if category == total.category
    ]


async def refresh_ledger_metrics(
    ledger: Ledger, metrics: Metrics, *, now: datetime | None = None
) -> list[LedgerTotal]:
    """Set ``gateway_ledger_subjects{organisation,category}`` to this year's totals.

    The server calls this periodically. Series of organisations no longer in
    the current year's totals (after 1 January) are removed rather than left at
    last year's value, which would keep a threshold alert firing.

    Args:
        ledger: the backend to read.
        metrics: the app's metrics.
        now: the moment whose calendar year (UTC+8) to report; default now.

    Returns:
        The totals that were published.
    """
    totals = await ledger.totals(year=ledger_year(now))
    gauge = metrics.ledger_subjects
    fresh = {(t.organisation, t.category): t.subjects for t in totals}
    for family in gauge.collect():
        for sample in family.samples:
            key = (sample.labels["organisation"], sample.labels["category"])
            if key not in fresh:
                gauge.remove(*key)
    for (organisation, category), subjects in fresh.items():
        gauge.labels(organisation, category).set(subjects)
    return totals
