"""``gateway bench classify --chunk-size``: the proxy's 64 KiB feeds measure the same scan."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gateway.bench import classify as bench
from gateway.bench import formats
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
    assert [r["kind"] for r in report["results"]] == ["prose", "numeric", "pii", "json"]
    assert [r["kind"] for r in report["files"]] == ["parquet", "pdf", "dicom"]


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


def test_research_files_are_read_as_the_egress_reads_them() -> None:
    # Each file is read, not refused, and what it holds is found: the report's
    # MB/s are of files the readers understood.
    results = {r.kind: r for r in formats.run(0.6, 1)}
    assert list(results) == ["parquet", "pdf", "dicom"]
    for result in results.values():
        assert not result.unscannable
        assert result.passed or result.target is not None
        assert result.scan_mbps > 0
        assert result.decode_mbps > 0
        assert result.text_bytes > 0
    parquet, pdf, dicom = results["parquet"], results["pdf"], results["dicom"]
    assert parquet.content_type == "application/vnd.apache.parquet"
    assert parquet.findings == 0  # a clean lab table
    rows = pq.ParquetFile(io.BytesIO(formats.generate("parquet", 600_000))).metadata.num_rows
    assert parquet.numeric_values == 3 * rows  # three float columns, counted
    assert pdf.content_type == "application/pdf"
    assert pdf.findings > 0  # the reviewer's phone on every page
    assert pdf.subjects <= 8
    assert dicom.content_type == "application/dicom"
    with tarfile.open(fileobj=io.BytesIO(formats.generate("dicom", 600_000))) as series:
        instances = len(series.getnames())
    assert dicom.findings == 3 * instances  # health, Resident ID and phone per instance
    assert dicom.subjects == 1


def test_file_report_lines_and_json() -> None:
    (parquet,) = formats.run(0.2, 2, ("parquet",))
    assert len(parquet.scan_runs) == 2
    assert parquet.target == 150.0
    text = bench.render([], as_json=False, files=[parquet])
    assert text.splitlines()[0].startswith("file")
    assert text.splitlines()[1].startswith("parquet")
    report = json.loads(bench.render([], as_json=True, files=[parquet]))
    assert report["files"][0]["kind"] == "parquet"
    assert report["files"][0]["target_scan_mbps"] == 150.0
    assert report["passed"] == parquet.passed


def test_kinds_are_chosen_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "classify", "--json", "--size", "0.05", "--repeat", "1"]
    assert main([*argv, "--kinds", "pii,dicom"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in report["results"]] == ["pii"]
    assert [r["kind"] for r in report["files"]] == ["dicom"]
    assert main([*argv, "--kinds", "parquet,excel"]) == 2
    assert "excel" in capsys.readouterr().err


def test_parquet_is_written_a_row_group_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    formats.write_parquet(path, 3 * formats.PARQUET_GROUP_ROWS * 48)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups >= 2
    assert meta.row_group(0).num_rows == formats.PARQUET_GROUP_ROWS
    schema = pq.ParquetFile(path).schema_arrow
    assert {str(t) for t in schema.types} >= {"string", "int64", "timestamp[us]", "double"}
    assert formats.generate("parquet", 100_000) == formats.generate("parquet", 100_000)
