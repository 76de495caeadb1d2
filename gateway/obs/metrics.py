"""Every metric the gateway exports, in one place (SPEC §8, STYLE.md §8).

Metrics live in an app-owned :class:`prometheus_client.CollectorRegistry`, so
two gateways in one process (the tests, ``make run``) never share counters.
Label sets are fixed and low-cardinality: route, direction, decision, rule
id, label id, stage, result, reason, kind, organisation, category, cert name.
Never a transfer id, a file name, a sender token or a matched value.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

#: Transfer durations span 1 KB pushes (milliseconds) to multi-GB datasets (minutes).
TRANSFER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: fsync of a batched audit write: sub-millisecond on NVMe, tens of ms on network disks.
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

#: The documented label names of every metric; a test checks the export against it.
METRIC_LABELS: dict[str, tuple[str, ...]] = {
    "gateway_transfers_total": ("route", "direction", "decision", "rule"),
    "gateway_transfer_outcomes_total": ("route", "outcome"),
    "gateway_http_requests_total": ("listener", "handler", "code"),
    "gateway_http_request_duration_seconds": ("listener", "handler"),
    "gateway_transfer_bytes_total": ("route", "stage"),
    "gateway_transfer_duration_seconds": ("route", "decision"),
    "gateway_inflight_transfers": (),
    "gateway_classifier_bytes_total": (),
    "gateway_classifier_seconds_total": (),
    "gateway_decoder_memory_reserved_bytes": (),
    "gateway_detections_total": ("label",),
    "gateway_shadow_matches_total": ("rule", "action"),
    "gateway_reviews_pending": (),
    "gateway_review_oldest_age_seconds": (),
    "gateway_policy_reloads_total": ("result",),
    "gateway_policy_info": ("version", "name"),
    "gateway_policy_last_reload_success_timestamp_seconds": (),
    "gateway_policy_rejected": (),
    "gateway_audit_records_total": (),
    "gateway_audit_write_failures_total": (),
    "gateway_audit_fsync_seconds": (),
    "gateway_audit_tree_size": (),
    "gateway_audit_last_checkpoint_timestamp_seconds": (),
    "gateway_audit_writable": (),
    "gateway_audit_recoveries_total": (),
    "gateway_fail_closed_total": ("reason",),
    "gateway_upstream_errors_total": ("route", "kind"),
    "gateway_ledger_subjects": ("organisation", "category"),
    "gateway_ledger_up": (),
    "gateway_ledger_threshold_subjects": ("category", "mechanism"),
    "gateway_tls_cert_expiry_seconds": ("cert",),
    "gateway_connections": ("listener",),
    "gateway_connections_refused_total": ("listener", "reason"),
    "gateway_request_head_timeouts_total": ("listener",),
    "gateway_accept_errors_total": (),
    "gateway_volume_free_bytes": ("volume",),
    "gateway_volume_size_bytes": ("volume",),
    "gateway_spool_view_chunks_total": ("result",),
}

#: Closed label-value sets, created at zero when the registry is built. A
#: counter child that first appears already at 1 is invisible to ``increase()``
#: and ``rate()`` (Prometheus has no earlier sample to subtract), so the alert
#: rules in deploy/prometheus/alerts.yml would miss the first failure.
POLICY_RELOAD_RESULTS: tuple[str, ...] = ("success", "failure")
#: Why a transfer was refused with 503 (SPEC §5: audit log or ledger unavailable,
#: and no policy loaded yet, which /readyz also reports; decoder memory held by
#: other transfers, issue 11).
FAIL_CLOSED_REASONS: tuple[str, ...] = ("audit", "ledger", "policy", "decoder_memory")
#: The ``outcome`` values of ``gateway_transfer_outcomes_total`` (issue 16): the
#: audit record event that ends a transfer, or ``held`` for a review.
TRANSFER_OUTCOMES: tuple[str, ...] = (
    "delivered",
    "blocked",
    "held",
    "rejected",
    "failed",
    "aborted",
)
#: The ``stage`` values of ``gateway_transfer_bytes_total`` (issue 7).
TRANSFER_STAGES: tuple[str, ...] = ("received", "forwarded", "blocked", "delivered")
#: The listeners of a gateway process, the ``listener`` label of the connection metrics.
LISTENERS: tuple[str, ...] = ("egress", "ingress")
#: Why a connection was closed at once: the listener's cap, or its client address's.
CONNECTION_REFUSALS: tuple[str, ...] = ("total", "per_client")
#: How a random-access reader's chunk of the spool was served (issue 12):
#: read from disk and authenticated, or from the view's decrypted-chunk cache.
SPOOL_VIEW_RESULTS: tuple[str, ...] = ("decrypted", "cached")

#: The yearly export thresholds of the 2024 Provisions (REGULATIONS.md), as
#: ``(category, mechanism required at or above it, subjects)``; the dashboard
#: draws them as lines and the ledger alert compares against them.
LEDGER_THRESHOLDS: tuple[tuple[str, str, int], ...] = (
    ("personal", "standard-contract", 100_000),
    ("personal", "security-assessment", 1_000_000),
    ("sensitive", "security-assessment", 10_000),
)


class Metrics:
    """The gateway's metrics, registered in their own registry.

    Args:
        registry: where to register; a fresh registry (with process metrics)
            when omitted.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        r = registry
        self.transfers = Counter(
            "gateway_transfers",
            "Transfers by route, direction, final decision and deciding rule.",
            METRIC_LABELS["gateway_transfers_total"],
            registry=r,
        )
        self.transfer_outcomes = Counter(
            "gateway_transfer_outcomes",
            "How transfers ended (delivered, blocked, rejected, failed, aborted) or "
            "were held for review (held), by route.",
            METRIC_LABELS["gateway_transfer_outcomes_total"],
            registry=r,
        )
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests by listener, route template and status code.",
            METRIC_LABELS["gateway_http_requests_total"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from request head to the handler's answer, by route template.",
            METRIC_LABELS["gateway_http_request_duration_seconds"],
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self.transfer_bytes = Counter(
            "gateway_transfer_bytes",
            "Payload bytes by route and stage (received, forwarded, blocked).",
            METRIC_LABELS["gateway_transfer_bytes_total"],
            registry=r,
        )
        self.transfer_duration = Histogram(
            "gateway_transfer_duration_seconds",
            "Time from first byte received to verdict returned.",
            METRIC_LABELS["gateway_transfer_duration_seconds"],
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_transfers", "Transfers currently in progress.", registry=r
        )
        self.classifier_bytes = Counter(
            "gateway_classifier_bytes", "Bytes fed to the classifier.", registry=r
        )
        self.classifier_seconds = Counter(
            "gateway_classifier_seconds", "Seconds spent in the classifier.", registry=r
        )
        self.decoder_memory = Gauge(
            "gateway_decoder_memory_reserved_bytes",
            "Decoder memory (decompression windows) reserved by transfers in progress.",
            registry=r,
        )
        self.detections = Counter(
            "gateway_detections",
            "Findings by label.",
            METRIC_LABELS["gateway_detections_total"],
            registry=r,
        )
        self.shadow_matches = Counter(
            "gateway_shadow_matches",
            "Shadow-mode rules that matched a transfer, by rule and the action it would take.",
            METRIC_LABELS["gateway_shadow_matches_total"],
            registry=r,
        )
        self.reviews_pending = Gauge(
            "gateway_reviews_pending",
            "Held transfers waiting for a compliance officer.",
            registry=r,
        )
        self.review_oldest_age = Gauge(
            "gateway_review_oldest_age_seconds",
            "How long the oldest held transfer has waited for an officer (0: none waits).",
            registry=r,
        )
        self.policy_reloads = Counter(
            "gateway_policy_reloads",
            "Policy loads by result (success, failure).",
            METRIC_LABELS["gateway_policy_reloads_total"],
            registry=r,
        )
        self.policy_info = Gauge(
            "gateway_policy_info",
            "The policy set in force (value 1).",
            METRIC_LABELS["gateway_policy_info"],
            registry=r,
        )
        self.policy_rejected = Gauge(
            "gateway_policy_rejected",
            "1 while the policy files on disk do not load (the previous version is in force).",
            registry=r,
        )
        self.policy_last_reload_success = Gauge(
            "gateway_policy_last_reload_success_timestamp_seconds",
            "Unix time of the last successful policy load.",
            registry=r,
        )
        self.audit_records = Counter(
            "gateway_audit_records", "Audit records durably written.", registry=r
        )
        self.audit_write_failures = Counter(
            "gateway_audit_write_failures", "Audit writes or fsyncs that failed.", registry=r
        )
        self.audit_fsync = Histogram(
            "gateway_audit_fsync_seconds",
            "Duration of one batched audit fsync.",
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self.audit_tree_size = Gauge(
            "gateway_audit_tree_size", "Records in the audit Merkle tree.", registry=r
        )
        self.audit_last_checkpoint = Gauge(
            "gateway_audit_last_checkpoint_timestamp_seconds",
            "Unix time of the last signed checkpoint.",
            registry=r,
        )
        self.audit_writable = Gauge(
            "gateway_audit_writable",
            "1 while the audit log takes records, 0 from a failed write until it healed.",
            registry=r,
        )
        self.audit_recoveries = Counter(
            "gateway_audit_recoveries", "Times the audit log healed by itself.", registry=r
        )
        self.fail_closed = Counter(
            "gateway_fail_closed",
            "Transfers refused because the gateway could not decide safely, by reason.",
            METRIC_LABELS["gateway_fail_closed_total"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Failures talking to the destination or twin, by kind.",
            METRIC_LABELS["gateway_upstream_errors_total"],
            registry=r,
        )
        self.ledger_subjects = Gauge(
            "gateway_ledger_subjects",
            "Distinct subjects exported this calendar year (UTC+8).",
            METRIC_LABELS["gateway_ledger_subjects"],
            registry=r,
        )
        self.ledger_up = Gauge(
            "gateway_ledger_up",
            "1 when the last read of the ledger (every 30 s) succeeded, 0 when it failed.",
            registry=r,
        )
        self.ledger_threshold = Gauge(
            "gateway_ledger_threshold_subjects",
            "Thresholds of the 2024 Provisions the ledger is compared against.",
            METRIC_LABELS["gateway_ledger_threshold_subjects"],
            registry=r,
        )
        self.tls_cert_expiry = Gauge(
            "gateway_tls_cert_expiry_seconds",
            "Seconds until a configured certificate expires.",
            METRIC_LABELS["gateway_tls_cert_expiry_seconds"],
            registry=r,
        )
        self.connections = Gauge(
            "gateway_connections",
            "Open client connections per listener.",
            METRIC_LABELS["gateway_connections"],
            registry=r,
        )
        self.connections_refused = Counter(
            "gateway_connections_refused",
            "Connections closed at once: the listener's or the client address's cap was reached.",
            METRIC_LABELS["gateway_connections_refused_total"],
            registry=r,
        )
        self.head_timeouts = Counter(
            "gateway_request_head_timeouts",
            "Connections closed (408) for not completing a request head in time.",
            METRIC_LABELS["gateway_request_head_timeouts_total"],
            registry=r,
        )
        self.accept_errors = Counter(
            "gateway_accept_errors",
            "Failed accept(2) calls (out of file descriptors or memory).",
            METRIC_LABELS["gateway_accept_errors_total"],
            registry=r,
        )
        self.volume_free = Gauge(
            "gateway_volume_free_bytes",
            "Bytes an unprivileged writer may still use on the file system of a "
            "directory the gateway writes (audit, egress_spool, ingress_spool).",
            METRIC_LABELS["gateway_volume_free_bytes"],
            registry=r,
        )
        self.volume_size = Gauge(
            "gateway_volume_size_bytes",
            "Size of that file system.",
            METRIC_LABELS["gateway_volume_size_bytes"],
            registry=r,
        )
        self.spool_view_chunks = Counter(
            "gateway_spool_view_chunks",
            "64 KiB spool chunks read by footer-indexed readers: decrypted, or from the cache.",
            METRIC_LABELS["gateway_spool_view_chunks_total"],
            registry=r,
        )
        for result in SPOOL_VIEW_RESULTS:
            self.spool_view_chunks.labels(result)
        for listener in LISTENERS:
            self.connections.labels(listener)
            self.head_timeouts.labels(listener)
            for refusal in CONNECTION_REFUSALS:
                self.connections_refused.labels(listener, refusal)
        for category, mechanism, subjects in LEDGER_THRESHOLDS:
            self.ledger_threshold.labels(category, mechanism).set(subjects)
        for result in POLICY_RELOAD_RESULTS:
            self.policy_reloads.labels(result)
        for reason in FAIL_CLOSED_REASONS:
            self.fail_closed.labels(reason)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)


def _statvfs(directory: Path) -> os.statvfs_result | None:
    """statvfs(2) of ``directory``, or of its nearest existing ancestor (not made yet)."""
    for candidate in (directory, *directory.parents):
        try:
            return os.statvfs(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def track_volume(metrics: Metrics, volume: str, directory: Path) -> None:
    """Read ``directory``'s file-system space at every scrape (``volume`` names it).

    The audit log and the spools fail closed when their disk fills (SPEC §5);
    these gauges let an alert say so hours before (docs/operations.md).
    """

    def free() -> float:
        info = _statvfs(directory)
        return float(info.f_bavail * info.f_frsize) if info else float("nan")

    def size() -> float:
        info = _statvfs(directory)
        return float(info.f_blocks * info.f_frsize) if info else float("nan")

    metrics.volume_free.labels(volume).set_function(free)
    metrics.volume_size.labels(volume).set_function(size)
