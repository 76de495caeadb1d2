"""``gateway bench classify``: generated data, measurement and report."""

from __future__ import annotations

import json

import pytest

from gateway.bench import classify as bench
from gateway.classify import labels as L
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.cli import main


@pytest.mark.parametrize("kind", ["prose", "numeric", "pii"])
def test_generators_are_deterministic_and_sized(kind: str) -> None:
    data = bench.generate(kind, 50_000)
    assert len(data) == 50_000
    assert data == bench.generate(kind, 50_000)
    assert data != bench.generate(kind, 50_000, seed=3)


def _summary(data: bytes):  # type: ignore[no-untyped-def]
    scanner = Scanner(DetectorSet.build(), b"b" * 32)
    scanner.feed(data)
    return scanner.finish()


def test_clean_data_has_no_findings_and_pii_data_one_per_row() -> None:
    assert _summary(bench.generate("prose", 200_000)).labels == {}
    assert _summary(bench.generate("numeric", 200_000)).labels == {}
    pii = bench.generate("pii", 200_000)
    summary = _summary(pii)
    rows = pii.count(b"\n") - 1
    findings = sum(s.count for s in summary.labels.values())
    assert rows - 2 <= findings <= rows + 1  # one identifier per ~200-byte row
    assert {
        L.CN_RESIDENT_ID,
        L.CN_PHONE,
        L.EMAIL,
        L.HK_ID,
        L.BANK_CARD,
        L.CN_USCC,
        L.HK_PHONE,
    } <= set(summary.labels)


def test_bench_classify_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "classify", "--json", "--size", "0.2", "--repeat", "2"])
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["benchmark"] == "classify"
    kinds = {r["kind"]: r for r in report["results"]}
    assert list(kinds) == list(bench.TEXT_KINDS)  # every text kind (tests/bench pins the list)
    for r in kinds.values():
        assert r["classifier_mbps"] > 0
        assert r["scan_mbps"] > 0
        assert r["sha256_mbps"] > 0
        assert len(r["classifier_runs"]) == 2
        assert r["classifier_mbps"] == max(r["classifier_runs"])
        assert (r["target_classifier_mbps"], r["target_scan_mbps"]) == bench.TARGETS[r["kind"]]
    assert kinds["pii"]["findings"] > 500
    assert kinds["prose"]["findings"] == 0


def test_bench_classify_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "classify", "--size", "0.05", "--repeat", "1"]) == 0
    out, _ = capsys.readouterr()
    for kind in ("prose", "numeric", "pii"):
        assert kind in out
    assert "target" in out


def test_bench_rejects_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "classify", "--size", "0"]) == 2
