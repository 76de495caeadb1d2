"""``gateway bench classify --chunk-size``: the proxy's 64 KiB feeds measure the same scan."""

from __future__ import annotations

import base64
import email
import email.policy
import html
import io
import json
import re
import tarfile
import urllib.parse
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gateway.bench import classify as bench
from gateway.bench import formats
from gateway.classify import DetectorSet
from gateway.classify.decode.transforms import BASE64, CHAR_REFS, MARKUP, PERCENT
from gateway.classify.formats.testing import label_counts, scan_bytes
from gateway.cli import main

DETECTORS = DetectorSet.build()


def _plain_html(data: bytes) -> bytes:
    return html.unescape(data.decode()).encode()


def _plain_rich_text(data: bytes) -> bytes:
    # As a browser shows it: every tag dropped (each paragraph is on a line of its own).
    return re.sub(rb"<[^>]*>", b"", data)


def _plain_form(data: bytes) -> bytes:
    return b"".join(
        urllib.parse.unquote_plus(line).encode() + b"\n" for line in data.decode().splitlines()
    )


def _plain_base64(data: bytes) -> bytes:
    # Each attachment as the stdlib decodes it; the thumbnails are PNGs (no text).
    texts = []
    for record in json.loads(data):
        raw = base64.b64decode(record["data"])
        if record["type"] == "text/csv":
            texts.append(raw)
        else:
            assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    return b"\n".join(texts)


@pytest.mark.parametrize(
    ("kind", "layer", "plain"),
    [
        ("html", CHAR_REFS, _plain_html),
        ("richtext", MARKUP, _plain_rich_text),
        ("form", PERCENT, _plain_form),
        ("base64", BASE64, _plain_base64),
    ],
)
def test_encoded_text_kinds_are_decoded_before_they_are_matched(
    kind: str, layer: str, plain: object
) -> None:
    # Each encoded kind exercises its transform (the layer is recorded) and the
    # scan finds exactly what the same data holds once the standard library has
    # decoded it: the MB/s reported are of a decode that did its work.
    data = _whole(kind, 300_000)
    summary = scan_bytes(DETECTORS, data, 65536)
    if layer == BASE64:
        # A run is a member of its own (the document keeps no layer); its records
        # hold identifiers only inside their attachments.
        assert b'"contact"' not in data
    else:
        assert layer in summary.content.layers
    found = label_counts(summary)
    assert found
    assert found == label_counts(scan_bytes(DETECTORS, plain(data)))  # type: ignore[operator]


def _whole(kind: str, size: int) -> bytes:
    """The kind's data cut at the end of a record, so that the stdlib can parse it."""
    data = bench.generate(kind, size * 2)
    if kind == "form":
        return data[: data.rfind(b"\n", 0, size) + 1]
    if kind == "html":
        end = data.rfind(b"</tr>\n", 0, size) + 6
        return data[:end] + b"</table></body></html>\n"
    if kind == "richtext":
        end = data.rfind(b"</p>\n", 0, size) + 5
        return data[:end] + b"</div></body></html>\n"
    end = data.rfind(b"},{", 0, size) + 1
    return data[:end] + b"]"


def test_science_is_clean_prose_full_of_numbers() -> None:
    # Lab notes as people write them (issue 17): a number every few words, in
    # English and Chinese, with units and statistics, and nothing the default
    # policy would stop (the kind measures the classifier on clean text).
    data = bench.generate("science", 400_000)
    assert data == bench.generate("science", 400_000)  # deterministic
    text = data.decode(errors="ignore")
    numbers = re.findall(r"[0-9]+(?:\.[0-9]+)?", text)
    assert len(numbers) > len(text.split()) / 6  # a number every few words
    for sample in ("mg/L", "°C", "n = ", "p < 0.", "95% CI ", "–", "±", "年", "例"):
        assert sample in text
    assert not label_counts(scan_bytes(DETECTORS, data))


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
    assert [r["kind"] for r in report["results"]] == list(bench.TEXT_KINDS)
    assert [r["kind"] for r in report["files"]] == list(bench.FILE_KINDS)
    assert bench.TEXT_KINDS == (
        "prose",
        "science",
        "numeric",
        "pii",
        "json",
        "html",
        "richtext",
        "form",
        "base64",
    )
    assert bench.FILE_KINDS == ("parquet", "pdf", "dicom", "multipart", "archive")


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
    assert list(results) == ["parquet", "pdf", "dicom", "multipart", "archive"]
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
    multipart = results["multipart"]
    assert multipart.content_type == "multipart/form-data"
    body = formats.generate("multipart", 600_000)
    boundary = body[2 : body.index(b"\r\n")].decode()
    message = email.message_from_bytes(
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode() + body,
        policy=email.policy.HTTP,
    )
    files = [p.get_content() for p in message.iter_parts() if p.get_filename()]
    reviewed = sum(1 for f in files[:-1] for row in f.splitlines()[1:] if row.split(",")[-1])
    assert reviewed > 0
    assert multipart.findings == reviewed  # the reviewer's mobile number on those rows
    assert multipart.subjects <= 8
    assert multipart.reader_cpu == 0  # read in this process: no reader process ran
    # Every member of the annotation set is read: each named annotator is found.
    archive = results["archive"]
    with zipfile.ZipFile(io.BytesIO(formats.generate("archive", 600_000))) as annotations:
        labels = [json.loads(annotations.read(n)) for n in annotations.namelist() if "labels/" in n]
    named = [label["annotator"] for label in labels if label["annotator"].startswith("Dr ")]
    assert len(labels) > formats.ARCHIVE_PHONE_EVERY
    assert archive.findings == len(named) > 0
    assert archive.subjects == len(set(named)) > 1  # each annotator's number counted once


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
    # Parquet is read in a reader process: its CPU counts, and bounds the MB/s.
    assert parquet.reader_cpu > 0
    assert parquet.gateway_cpu > 0
    assert parquet.cores >= 1
    total = parquet.gateway_cpu + parquet.reader_cpu
    assert parquet.ceiling_mbps == pytest.approx(parquet.cores * 1000 / total)
    assert report["files"][0]["cpu_s_per_gb"]["readers"] == round(parquet.reader_cpu, 2)
    assert "CPU-s/GB" in text.splitlines()[0]


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
