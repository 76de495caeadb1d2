"""The metrics contract of issue 7: names, label sets, units, and harmless label values.

:func:`label_value_problems` is the check for "no ids, file names or values in
labels"; the Prometheus scrape test in tests/deploy reuses it on what a real
gateway exported after carrying traffic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.classify.labels import BUILTIN_LABELS
from gateway.obs.metrics import (
    FAIL_CLOSED_REASONS,
    LEDGER_THRESHOLDS,
    METRIC_LABELS,
    POLICY_RELOAD_RESULTS,
    TRANSFER_STAGES,
    Metrics,
)

#: Suffixes prometheus-client appends to a family's samples.
_SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total")
#: Labels the client library adds itself (histogram bucket bound).
_LIBRARY_LABELS = frozenset({"le"})
#: Names of non-base units that must not appear as a metric-name suffix
#: (Prometheus naming guide: seconds, bytes, ratios; never ms, kb, percent).
_NON_BASE_UNITS = re.compile(
    r"_(milliseconds|microseconds|nanoseconds|minutes|hours|days|ms|us|ns|"
    r"kilobytes|megabytes|gigabytes|kb|mb|gb|kib|mib|gib|percent|bits)(_|$)"
)
#: Longest label value we accept: rule ids, route and organisation names are
#: short identifiers chosen by a compliance officer; anything longer smells of
#: a free-text reason, a path or a value.
MAX_LABEL_VALUE_LENGTH = 64
#: The shape every label value must have: a short slug such as ``sz-to-hk``,
#: ``sz->hk`` or ``pii.cn_resident_id``; ``/``, ``\\``, ``@`` and spaces are refused
#: (paths, addresses, free text).
_SLUG = re.compile(r"[A-Za-z][A-Za-z0-9_.:>-]*\Z")
#: Six or more consecutive digits: a phone, ID card, card number or timestamp.
_DIGIT_RUN = re.compile(r"\d{6,}")
#: Sixteen or more consecutive hex digits: a transfer id, digest or token.
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
#: A trailing file extension (``data.csv``, ``x.tar.gz``); label ids such as
#: ``pii.email`` have longer, lower-case words after the dot and are allowed by
#: :data:`_KNOWN_DOTTED`.
_FILE_EXTENSION = re.compile(
    r"\.(csv|tsv|json|txt|gz|zip|tar|zst|bz2|xz|fa|fasta|fq|fastq|vcf|sam|bam|pdf|xlsx?|docx?)\Z",
    re.IGNORECASE,
)
_KNOWN_DOTTED = frozenset(BUILTIN_LABELS)
#: The one label whose value is a digest by design: the info metric of the
#: policy in force (a single series, replaced on reload).
_DIGEST_LABELS = frozenset({("gateway_policy_info", "version")})
_SHA256_HEX = re.compile(r"(sha256:)?[0-9a-f]{64}\Z")
#: HTTP status codes, as every exporter writes them (``code="201"``).
_STATUS_LABELS = frozenset({("gateway_http_requests_total", "code")})
_STATUS_CODE = re.compile(r"[1-5]\d\d\Z")


def _family_of(sample_name: str) -> str:
    """The METRIC_LABELS key a sample belongs to (histogram and counter suffixes mapped back)."""
    if sample_name in METRIC_LABELS:
        return sample_name
    for suffix in _SAMPLE_SUFFIXES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name:
            if base in METRIC_LABELS:
                return base
            if base + "_total" in METRIC_LABELS:
                return base + "_total"
    return sample_name


def label_value_problems(samples: Iterable[Sample]) -> list[str]:
    """Every label value in ``samples`` that looks like an id, a path or a matched value.

    Args:
        samples: parsed exposition samples.

    Returns:
        One message per offending (metric, label) pair naming the label, never
        quoting the whole value (it may be exactly what must not leak).
    """
    problems: list[str] = []
    for sample in samples:
        family = _family_of(sample.name)
        for label, value in sample.labels.items():
            if label in _LIBRARY_LABELS:
                continue
            where = f"{sample.name}{{{label}}}"
            if (family, label) in _STATUS_LABELS:
                if not _STATUS_CODE.match(value):
                    problems.append(f"{where}: not an HTTP status code")
                continue
            if (family, label) in _DIGEST_LABELS:
                if not _SHA256_HEX.match(value):
                    problems.append(f"{where}: not a SHA-256 policy version")
                continue
            if len(value) > MAX_LABEL_VALUE_LENGTH:
                problems.append(f"{where}: {len(value)} characters long")
            elif not _SLUG.match(value):
                problems.append(f"{where}: not a short slug (path, address, spaces?)")
            elif _UUID.search(value) or _HEX_RUN.search(value):
                problems.append(f"{where}: looks like an id or digest")
            elif _DIGIT_RUN.search(value):
                problems.append(f"{where}: holds a long digit run (a number or value)")
            elif value not in _KNOWN_DOTTED and _FILE_EXTENSION.search(value):
                problems.append(f"{where}: looks like a file name")
    return problems


def _touch_every_child(metrics: Metrics) -> None:
    """Create one labelled child of every metric, with realistic values."""
    metrics.transfers.labels("sz-to-hk-genomics", "sz->hk", "block", "hgr-block").inc()
    for stage in TRANSFER_STAGES:
        metrics.transfer_bytes.labels("sz-to-hk-genomics", stage).inc(1024)
    metrics.transfer_duration.labels("sz-to-hk-genomics", "allow").observe(0.02)
    metrics.inflight.inc()
    metrics.classifier_bytes.inc(1 << 20)
    metrics.classifier_seconds.inc(0.001)
    for label in BUILTIN_LABELS:
        metrics.detections.labels(label).inc()
    metrics.shadow_matches.labels("new-rule.trial", "block").inc()
    metrics.reviews_pending.set(2)
    metrics.review_oldest_age.set(7200)
    metrics.policy_reloads.labels("success").inc()
    metrics.policy_rejected.set(1)
    metrics.policy_info.labels("a" * 64, "hetao-default").set(1)
    metrics.policy_last_reload_success.set(1_795_000_000)
    metrics.audit_records.inc()
    metrics.audit_write_failures.inc()
    metrics.audit_fsync.observe(0.002)
    metrics.audit_tree_size.set(10)
    metrics.audit_last_checkpoint.set(1_795_000_000)
    metrics.fail_closed.labels("audit").inc()
    metrics.upstream_errors.labels("sz-to-hk-genomics", "timeout").inc()
    metrics.ledger_subjects.labels("sz-genomics-institute", "personal").set(12)
    metrics.tls_cert_expiry.labels("server").set(86_400)
    metrics.transfer_outcomes.labels("sz-to-hk-genomics", "delivered").inc()
    metrics.volume_free.labels("audit").set(1e9)
    metrics.volume_size.labels("audit").set(1e10)
    metrics.http_requests.labels("egress", "transfer", "201").inc()
    metrics.http_duration.labels("egress", "transfer").observe(0.01)


def _parsed(metrics: Metrics) -> dict[str, list[Sample]]:
    families = text_string_to_metric_families(metrics.render().decode())
    return {family.name: list(family.samples) for family in families}


def _exported_samples(metrics: Metrics) -> list[Sample]:
    return [s for samples in _parsed(metrics).values() for s in samples]


def _documented_family(name: str) -> str:
    """The parser's family name for a METRIC_LABELS key (counters lose ``_total``)."""
    return name.removesuffix("_total")


@pytest.fixture
def touched() -> Metrics:
    metrics = Metrics()
    _touch_every_child(metrics)
    return metrics


@pytest.mark.parametrize("name", sorted(METRIC_LABELS))
def test_every_documented_metric_is_exported_with_exactly_its_labels(
    touched: Metrics, name: str
) -> None:
    families = _parsed(touched)
    family = _documented_family(name)
    assert family in families, f"{name} is documented but not exported"
    main_samples = [s for s in families[family] if not s.name.endswith("_created")]
    assert main_samples, f"{name} exported no samples after being touched"
    for sample in main_samples:
        assert set(sample.labels) - _LIBRARY_LABELS == set(METRIC_LABELS[name]), sample


def test_nothing_gateway_is_exported_that_is_not_documented(touched: Metrics) -> None:
    undocumented = {
        s.name
        for s in _exported_samples(touched)
        if s.name.startswith("gateway_") and _family_of(s.name) not in METRIC_LABELS
    }
    assert undocumented == set()


def test_counters_end_in_total_and_others_do_not(touched: Metrics) -> None:
    types = {
        family.name: family.type
        for family in text_string_to_metric_families(touched.render().decode())
        if family.name.startswith("gateway_")
    }
    for name in METRIC_LABELS:
        family = _documented_family(name)
        if types[family] == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{types[family]} {name} must not end in _total"


@pytest.mark.parametrize("name", sorted(METRIC_LABELS))
def test_names_use_base_units(name: str) -> None:
    assert not _NON_BASE_UNITS.search(name), name
    if "duration" in name or "fsync" in name or "expiry" in name or "timestamp" in name:
        assert name.endswith(("_seconds", "_seconds_total")), name


def test_process_metrics_are_exported_by_default() -> None:
    assert "process_cpu_seconds" in _parsed(Metrics())


def test_closed_label_sets_exist_at_zero_before_any_event() -> None:
    samples = _exported_samples(Metrics())
    reloads = {
        s.labels["result"]: s.value for s in samples if s.name == "gateway_policy_reloads_total"
    }
    assert reloads == dict.fromkeys(POLICY_RELOAD_RESULTS, 0.0)
    closed = {s.labels["reason"]: s.value for s in samples if s.name == "gateway_fail_closed_total"}
    assert closed == dict.fromkeys(FAIL_CLOSED_REASONS, 0.0)
    thresholds = {
        (s.labels["category"], s.labels["mechanism"]): s.value
        for s in samples
        if s.name == "gateway_ledger_threshold_subjects"
    }
    assert thresholds == {(c, m): float(n) for c, m, n in LEDGER_THRESHOLDS}


def test_ledger_thresholds_are_those_of_the_2024_provisions() -> None:
    # REGULATIONS.md: PI of 100,000 / 1,000,000 people, sensitive PI of 10,000.
    assert sorted(n for _, _, n in LEDGER_THRESHOLDS) == [10_000, 100_000, 1_000_000]


def test_two_instances_do_not_share_counters() -> None:
    first, second = Metrics(), Metrics()
    first.audit_records.inc()
    values = {s.value for s in _exported_samples(second) if s.name == "gateway_audit_records_total"}
    assert values == {0.0}


def test_realistic_label_values_pass_the_check(touched: Metrics) -> None:
    assert label_value_problems(_exported_samples(touched)) == []


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("rule", "3f2b1c9e-8a7d-4e6f-9b0a-1c2d3e4f5a6b"),  # a transfer id
        ("rule", "9f86d081884c7d659a2feaa0c55ad015"),  # a digest
        ("route", "/srv/data/cohort.csv"),  # a path
        ("route", "cohort.csv"),  # a file name
        ("route", "C:\\data\\x"),  # a Windows path
        ("rule", "11010519491231002X"),  # a resident id
        ("organisation", "13812345678"),  # a phone number
        ("organisation", "alice@example.org"),  # an e-mail address
        ("rule", "blocked because of a marking"),  # free text
        ("rule", "x" * (MAX_LABEL_VALUE_LENGTH + 1)),
    ],
)
def test_the_label_check_catches_ids_paths_and_values(label: str, value: str) -> None:
    bad = Sample("gateway_transfers_total", {label: value}, 1.0, None, None)
    problems = label_value_problems([bad])
    assert len(problems) == 1
    assert value not in problems[0]


def test_the_label_check_insists_on_a_digest_for_the_policy_version() -> None:
    bad = Sample("gateway_policy_info", {"version": "/etc/policies", "name": "x"}, 1.0, None, None)
    assert label_value_problems([bad]) == [
        "gateway_policy_info{version}: not a SHA-256 policy version"
    ]


def test_volume_gauges_read_the_file_system_at_each_scrape(tmp_path: Path) -> None:
    from gateway.obs.metrics import track_volume

    metrics = Metrics()
    track_volume(metrics, "audit", tmp_path / "not" / "made" / "yet")
    info = os.statvfs(tmp_path)
    samples = {s.name: s.value for s in _exported_samples(metrics) if s.labels.get("volume")}
    assert samples["gateway_volume_size_bytes"] == info.f_blocks * info.f_frsize
    assert 0 < samples["gateway_volume_free_bytes"] <= samples["gateway_volume_size_bytes"]
