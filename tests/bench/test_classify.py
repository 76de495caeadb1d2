"""``gateway bench classify --chunk-size``: the proxy's 64 KiB feeds measure the same scan."""

from __future__ import annotations

import json

import pytest

from gateway.bench import classify as bench
from gateway.cli import main


def test_chunk_size_does_not_change_what_is_found() -> None:
    # Same data, fed as the proxy does (64 KiB) and as `gateway scan` does
    # (1 MiB) and at an odd size: the findings the report shows must agree.
    findings = {
        chunk: [(r.findings, r.subjects) for r in bench.run(0.15, 1, ("pii",), chunk=chunk)]
        for chunk in (65536, bench.CHUNK_BYTES, 4099)
    }
    assert findings[65536] == findings[bench.CHUNK_BYTES] == findings[4099]
    assert findings[65536][0][0] > 0


def test_bench_accepts_a_chunk_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "classify", "--json", "--size", "0.05", "--repeat", "1"]
    assert main([*argv, "--chunk-size", "65536"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in report["results"]] == ["prose", "numeric", "pii"]


@pytest.mark.parametrize("size", ["0", str(bench.MAX_CHUNK_BYTES + 1)])
def test_bench_rejects_a_bad_chunk_size(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "classify", "--size", "0.05", "--chunk-size", size]) == 2
    _, err = capsys.readouterr()
    assert "--chunk-size" in err
    assert "Traceback" not in err


def test_engine_ceiling_is_reported_and_counts_the_hits() -> None:
    # The engine column is Hyperscan alone over the same data: on PII-dense
    # data it reports at least one hit per identifier found, on prose none.
    # (How fast it runs is the benchmark's to show, not a unit test's.)
    (pii,) = bench.run(0.2, 1, ("pii",))
    (prose,) = bench.run(0.2, 1, ("prose",))
    assert pii.engine_hits >= pii.findings > 0
    assert prose.engine_hits == 0
    assert pii.engine_mbps > 0
    report = json.loads(bench.render([pii], as_json=True))["results"][0]
    assert report["engine_hits"] == pii.engine_hits
    assert "engine" in bench.render([pii], as_json=False).splitlines()[0]


def test_report_names_the_matcher_core_it_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    (pii,) = bench.run(0.05, 1, ("pii",))
    assert json.loads(bench.render([pii], as_json=True))["matcher_core"].startswith("native")
    assert "matcher core: native" in bench.render([pii], as_json=False)
    monkeypatch.setattr(bench, "NATIVE_AVAILABLE", False)
    assert "matcher core: python" in bench.render([pii], as_json=False)
