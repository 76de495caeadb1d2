"""Files for ``gateway bench classify``: Parquet, PDF, DICOM (issue 12), form uploads
(issue 13), archives of many small files (issue 17).

Five kinds of file, generated deterministically from a seed by the field's
own writers (pyarrow, pydicom) or, for PDF, by a small writer of the file
format here (fpdf2 is a development dependency only):

``parquet``
    a table of lab results, snappy-compressed, as pyarrow writes it: two
    string columns (a sample id, a site), a timestamp, two integer columns
    and three float columns (target: >= 150 MB/s of file bytes, SPEC §9).
``pdf``
    a multi-page assay report: each page ~45 lines of text (a results table
    and notes; the reviewer's mobile number in the footer) and a small
    figure, content streams Flate-compressed.
``dicom``
    one CT series as a tar of instances (512 x 512 16-bit pixels each), every
    instance naming its patient (name, Resident ID, birth date, phone).
``multipart``
    a ``multipart/form-data`` upload body as ``curl -F`` writes it: a few form
    fields, then CSV files of lab readings (one reading in
    :data:`MULTIPART_PHONE_EVERY` names its reviewer's mobile number) and a
    JSON manifest, each a part with its own headers, read part by part.
``archive``
    a zip of many small files as an image annotation set ships (deflated):
    per image a JSON label file and a caption, a few hundred bytes each (one
    label file in :data:`ARCHIVE_PHONE_EVERY` names its annotator's mobile
    number). Every member is sniffed and classified on its own, with its
    name: here what a member costs to start and end, not its bytes, sets the
    speed.

Each file goes the way the egress reads it: fed to the
:class:`~gateway.classify.engine.Scanner` in chunks (SHA-256, sniffing), then
``finish(view)`` with a :class:`~gateway.server.spool_view.SpoolView` over the
file sealed into a payload file as a spool is (decrypted 64 KiB at a time; a
reader process reads it itself). A small file of each kind is scanned first
and not timed: it starts the reader zygote, once, as a gateway's first such
member does. MB/s are of **file bytes**, not of rendered text. "Decode" is the
same path with a sink that only counts the text (no matcher): what reading and
rendering cost alone.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import statistics
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from gateway.bench.classify import FILE_KINDS
from gateway.classify.decode import Decoder
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.formats.isolation import reader_cpu_seconds
from gateway.classify.testing import cn_mobile, resident_id
from gateway.server.spool import SpoolInfo, SpoolWriter
from gateway.server.spool_view import SpoolView

#: MB/s of file bytes through the whole scan path (SPEC §9; None: no target).
TARGETS: Final[dict[str, float | None]] = {
    "parquet": 150.0,
    "pdf": None,
    "dicom": None,
    "multipart": None,
    "archive": None,
}

#: Rows per Parquet row group and per generation step: pyarrow's default
#: row group (1 Mi rows), which is what data tools write.
PARQUET_GROUP_ROWS: Final = 1 << 20
#: Size of the untimed file of each kind scanned before the timed runs
#: (:func:`run`): it starts the reader zygote, as a gateway's first such member does.
WARM_UP_BYTES: Final = 1 << 20

#: File bytes per row of the generated table (snappy), measured: sets the row
#: count for a requested size (the report gives the real size).
_PARQUET_ROW_BYTES: Final = 48.5

#: PDF: text lines per page and the figure on each page (RGB pixels).
PDF_LINES_PER_PAGE: Final = 45
PDF_FIGURE: Final = (96, 72)

#: DICOM: pixels per instance (a CT slice, 16 bits).
DICOM_PIXELS: Final = (512, 512)

#: Multipart: bytes per CSV file part, and one reading in this many names a
#: reviewer's mobile number.
MULTIPART_FILE_BYTES: Final = 256 * 1024
MULTIPART_PHONE_EVERY: Final = 500

#: Archive: one label file in this many names its annotator's mobile number.
ARCHIVE_PHONE_EVERY: Final = 200
#: Archive: bytes of a central directory entry before its name (PKWARE APPNOTE 4.3.12).
_ZIP_CENTRAL_ENTRY: Final = 46
#: Archive: what the label files' objects are.
_OBJECTS: Final = ("cell", "nucleus", "mitochondrion", "vesicle", "debris", "artefact")

_MB: Final = 1_000_000

_SITES: Final = ("Futian", "Nanshan", "Lok Ma Chau", "Sha Tin", "Kowloon Tong", "Qianhai")
_NOTES: Final = (
    "Controls within range; plate accepted after duplicate review.",
    "Absorbance read at 450 nm with reference at 620 nm, 25 C incubation.",
    "Two wells re-run after a pipetting check; results below replace the first read.",
    "Calibration curve fitted with four parameters, r squared above 0.995.",
    "Samples shipped on dry ice from the partner laboratory and logged on arrival.",
    "No deviation from the agreed protocol was recorded for this batch.",
)


# -- Parquet -------------------------------------------------------------------


def parquet_table(rows: int, seed: int = 2, first: int = 0) -> pa.Table:
    """``rows`` rows of the lab-results table (rows ``first`` onwards of the seed's data)."""
    rng = np.random.default_rng([seed, first])
    numbers = pc.cast(pa.array(rng.integers(0, 10_000_000, rows)), pa.string())
    sample = pc.binary_join_element_wise("SMP-", pc.utf8_lpad(numbers, 7, "0"), "")
    sites = pa.array(_SITES).take(pa.array(rng.integers(0, len(_SITES), rows)))
    start = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
    stamps = start + rng.integers(0, 365 * 86_400 * 10**6, rows)
    return pa.table(
        {
            "sample_id": sample,
            "site": sites,
            "collected_at": pa.array(stamps, pa.timestamp("us")),
            "read_count": pa.array(rng.integers(1, 1_000_000_000, rows), pa.int64()),
            "depth": pa.array(rng.integers(0, 5000, rows), pa.int32()),
            "temperature_c": pa.array(rng.normal(22.0, 4.0, rows)),
            "absorbance": pa.array(rng.random(rows)),
            "concentration": pa.array(rng.random(rows) * 1e-3),
        }
    )


def write_parquet(sink: str | Path | io.IOBase, size: int, seed: int = 2) -> None:
    """About ``size`` bytes of the lab-results table, written a row group at a time.

    Memory stays one row group's worth however large the file (the proxy
    benchmark writes gigabytes to disk this way).
    """
    rows = max(1, int(size / _PARQUET_ROW_BYTES))
    schema = parquet_table(1, seed).schema
    with pq.ParquetWriter(sink, schema, compression="snappy") as writer:
        for first in range(0, rows, PARQUET_GROUP_ROWS):
            count = min(PARQUET_GROUP_ROWS, rows - first)
            writer.write_table(parquet_table(count, seed, first), row_group_size=PARQUET_GROUP_ROWS)


def parquet_file(size: int, seed: int = 2) -> bytes:
    """About ``size`` bytes of the lab-results table as a Parquet file."""
    sink = io.BytesIO()
    write_parquet(sink, size, seed)
    return sink.getvalue()


# -- PDF -----------------------------------------------------------------------


def _pdf_text(text: str) -> bytes:
    """A PDF literal string (WinAnsi text: ASCII here), escaped (ISO 32000-1 §7.3.4.2)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def _pdf_page_lines(rng: random.Random, page: int, pages: int, reviewer: str) -> list[str]:
    lines = [f"Hetao Joint Laboratory - assay report R{rng.randint(0, 99999):05d}"]
    lines.append(f"Page {page} of {pages}. Plate results, absorbance and concentration.")
    for row in range(PDF_LINES_PER_PAGE - 4):
        if row % 10 == 9:
            lines.append(rng.choice(_NOTES))
            continue
        lines.append(
            f"SMP-{rng.randint(0, 9_999_999):07d}  2025-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d}  plate {rng.randint(1, 400):03d}  "
            f"well {'ABCDEFGH'[row % 8]}{row % 12 + 1:02d}  abs {rng.random():.4f}  "
            f"conc {rng.uniform(0, 1e-3):.3e}  reads {rng.randint(1, 999_999)}  "
            f"{'pass' if rng.random() < 0.97 else 'repeat'}"
        )
    lines.append(rng.choice(_NOTES))
    lines.append(f"Reviewed by {reviewer}")
    return lines


def _pdf_figure(rng: random.Random) -> bytes:
    """A small RGB figure: a gradient with noise (about 20 KB, Flate gains little on noise)."""
    width, height = PDF_FIGURE
    noise = np.random.default_rng(rng.getrandbits(32)).integers(0, 48, (height, width, 3))
    ramp = np.linspace(0, 200, width, dtype=np.int64)[None, :, None]
    return zlib.compress((noise + ramp).astype(np.uint8).tobytes(), 6)


def pdf_file(size: int, seed: int = 2) -> bytes:
    """About ``size`` bytes of a multi-page report PDF (PDF 1.7, one xref table)."""
    rng = random.Random(f"{seed}:pdf")
    reviewers = [f"Dr Li {n}, tel. {cn_mobile(rng)}" for n in range(8)]
    figure = _pdf_figure(rng)
    page_bytes = len(figure) + 2000  # measured: text content compresses to ~1.5-2 KB
    pages = max(1, size // page_bytes)
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []

    def obj(body: bytes) -> None:
        offsets.append(len(out))
        out.extend(b"%d 0 obj\n" % len(offsets) + body + b"\nendobj\n")

    def stream(dictionary: bytes, data: bytes) -> bytes:
        return b"<< %s /Length %d >>\nstream\n" % (dictionary, len(data)) + data + b"\nendstream"

    kids = b" ".join(b"%d 0 R" % (5 + 3 * p) for p in range(pages))
    obj(b"<< /Type /Catalog /Pages 2 0 R >>")
    obj(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages))
    obj(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    obj(b"<< /Title (Assay report) /Producer (gateway bench) >>")
    width, height = PDF_FIGURE
    for page in range(pages):
        number = 5 + 3 * page
        lines = _pdf_page_lines(rng, page + 1, pages, rng.choice(reviewers))
        text = b" T*\n".join(_pdf_text(line) + b" Tj" for line in lines)
        content = b"BT /F1 9 Tf 11 TL 40 800 Td\n%s\nET\nq 240 0 0 180 320 40 cm /Fig Do Q\n" % text
        obj(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> /XObject << /Fig %d 0 R >> >> >>"
            % (number + 1, number + 2)
        )
        obj(stream(b"/Filter /FlateDecode", zlib.compress(content, 6)))
        obj(
            stream(
                b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                b"/BitsPerComponent 8 /Filter /FlateDecode" % (width, height),
                figure,
            )
        )
    xref = len(out)
    out.extend(b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1))
    out.extend(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.extend(
        b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(offsets) + 1, xref)
    )
    return bytes(out)


# -- DICOM ---------------------------------------------------------------------


def _dicom_instance(
    patient: dict[str, str], series: dict[str, str], n: int, pixels: bytes
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(f"{series['SeriesInstanceUID']}.{n + 1}")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyDescription = "CT chest with contrast"
    ds.SeriesDescription = "Axial 1.0 mm"
    ds.InstitutionName = "Futian Hospital"
    ds.ReferringPhysicianName = "Lee^Ka Ho"
    ds.InstanceNumber = n + 1
    ds.SliceLocation = f"{-200 + n:.1f}"
    for key, value in {**patient, **series}.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = DICOM_PIXELS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_file(size: int, seed: int = 2) -> bytes:
    """About ``size`` bytes of one patient's CT series: a tar of DICOM instances."""
    rng = random.Random(f"{seed}:dicom")
    patient = {
        "PatientName": "Chan^Tai Man",
        "PatientID": resident_id(rng),
        "PatientBirthDate": "19800101",
        "PatientSex": "M",
        "PatientTelephoneNumbers": cn_mobile(rng),
        "PatientAddress": "1 Shennan Road, Futian, Shenzhen",
        "AccessionNumber": f"ACC{rng.randint(0, 99999):05d}",
    }
    root = f"1.2.826.0.1.3680043.8.498.{rng.randint(10**9, 10**10)}"
    series = {
        "StudyInstanceUID": f"{root}.1",
        "SeriesInstanceUID": f"{root}.2",
        "StudyDate": "20251125",
    }
    rows, columns = DICOM_PIXELS
    pixel_rng = np.random.default_rng(seed)
    count = max(1, size // (rows * columns * 2 + 2048))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(count):
            pixels = pixel_rng.integers(0, 4096, rows * columns, dtype=np.uint16).tobytes()
            data = _dicom_instance(patient, series, n, pixels)
            info = tarfile.TarInfo(f"series/IM{n + 1:05d}.dcm")
            info.size = len(data)
            info.mtime = 1_764_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- multipart -----------------------------------------------------------------


def _form_part(boundary: bytes, headers: list[str], body: bytes) -> bytes:
    head = "".join(f"{header}\r\n" for header in headers).encode()
    return b"--" + boundary + b"\r\n" + head + b"\r\n" + body + b"\r\n"


def _readings(rng: random.Random, size: int, reviewers: list[str]) -> bytes:
    lines = ["sample_id,collected,plate,well,absorbance,concentration,reads,reviewer\n"]
    total = len(lines[0])
    n = 0
    while total < size:
        n += 1
        reviewer = rng.choice(reviewers) if n % MULTIPART_PHONE_EVERY == 0 else ""
        line = (
            f"SMP-{rng.randint(0, 9_999_999):07d},2025-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d},{rng.randint(1, 400):03d},"
            f"{'ABCDEFGH'[n % 8]}{n % 12 + 1:02d},{rng.random():.4f},"
            f"{rng.uniform(0, 1e-3):.3e},{rng.randint(1, 999_999)},{reviewer}\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def multipart_file(size: int, seed: int = 2) -> bytes:
    """About ``size`` bytes of a ``multipart/form-data`` upload (RFC 7578) as ``curl -F``
    writes it: form fields, CSV file parts and a JSON manifest."""
    rng = random.Random(f"{seed}:multipart")
    boundary = b"------------------------%016x" % rng.getrandbits(64)
    reviewers = [f"Dr Li {n} {cn_mobile(rng)}" for n in range(8)]
    out = bytearray()
    for name, value in (("project", "HT-2025-017"), ("site", "Lok Ma Chau"), ("batch", "B07")):
        out += _form_part(
            boundary, [f'Content-Disposition: form-data; name="{name}"'], value.encode()
        )
    files: list[str] = []
    while len(out) < size:
        name = f"plate-{len(files) + 1:03d}.csv"
        files.append(name)
        body = _readings(rng, min(MULTIPART_FILE_BYTES, max(1, size - len(out))), reviewers)
        headers = [
            f'Content-Disposition: form-data; name="files"; filename="{name}"',
            "Content-Type: text/csv",
        ]
        out += _form_part(boundary, headers, body)
    manifest = json.dumps({"files": files, "instrument": "plate reader 450/620 nm"}).encode()
    headers = [
        'Content-Disposition: form-data; name="manifest"; filename="manifest.json"',
        "Content-Type: application/json",
    ]
    out += _form_part(boundary, headers, manifest)
    return bytes(out + b"--" + boundary + b"--\r\n")


def archive_file(size: int, seed: int = 2) -> bytes:
    """About ``size`` bytes of a zip of small files, as an image annotation set ships:
    ``labels/img_NNNNNNN.json`` (image size, a few labelled boxes, the annotator) and
    ``captions/img_NNNNNNN.txt`` per image; one label file in
    :data:`ARCHIVE_PHONE_EVERY` names the annotator with a mobile number."""
    rng = random.Random(f"{seed}:archive")
    annotators = [f"Dr Chan {n} {cn_mobile(rng)}" for n in range(8)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        image = directory = 0
        # The central directory (an entry per member) is written at the end.
        while out.tell() + directory < size:
            image += 1
            width, height = rng.choice(((1024, 1024), (2048, 1536), (512, 512)))
            boxes = [
                {
                    "label": rng.choice(_OBJECTS),
                    "bbox": [rng.randint(0, width - 64), rng.randint(0, height - 64), 64, 48],
                    "score": round(rng.random(), 3),
                }
                for _ in range(rng.randint(1, 4))
            ]
            named = image % ARCHIVE_PHONE_EVERY == 0
            label = {
                "image": f"img_{image:07d}.png",
                "width": width,
                "height": height,
                "objects": boxes,
                "annotator": (
                    annotators[image // ARCHIVE_PHONE_EVERY % len(annotators)]
                    if named
                    else f"team {image % 5}"
                ),
            }
            archive.writestr(f"labels/img_{image:07d}.json", json.dumps(label))
            caption = f"{len(boxes)} objects, mostly {boxes[0]['label']}; {rng.choice(_NOTES)}"
            archive.writestr(f"captions/img_{image:07d}.txt", caption)
            directory += 2 * (_ZIP_CENTRAL_ENTRY + len("labels/img_0000000.json"))
    return out.getvalue()


#: File generators by kind: ``(size in bytes, seed) -> file bytes``.
GENERATORS: Final[dict[str, Callable[[int, int], bytes]]] = {
    "parquet": parquet_file,
    "pdf": pdf_file,
    "dicom": dicom_file,
    "multipart": multipart_file,
    "archive": archive_file,
}


def generate(kind: str, size: int, seed: int = 2) -> bytes:
    """About ``size`` bytes of a generated file of ``kind`` (one of ``FILE_KINDS``)."""
    return GENERATORS[kind](size, seed)


# -- measurement ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileResult:
    """Best-of-N throughput for one kind of file (MB = 10^6 bytes of the file).

    Attributes:
        kind: one of ``FILE_KINDS``.
        size: bytes of the file.
        content_type: what the scan reported the file to be.
        scan_mbps: best whole-path MB/s (Scanner fed the file, then finished
            from a decrypting spool view).
        scan_runs: every whole-path run's MB/s.
        decode_mbps: best MB/s of the same path without the matcher (the
            rendered text only counted).
        text_bytes: bytes of text the readers rendered for the matcher.
        sha256_mbps: baseline, plain SHA-256 MB/s in the same run.
        findings: total findings in one scan.
        subjects: ``subjects`` of one scan.
        numeric_values: numbers counted and not rendered (float columns).
        unscannable: whether the scan reported the file (or a part) unscannable.
        target: the whole-path target (None: no target).
        gateway_cpu: CPU seconds per GB of file in this process in a whole-path
            run (the median run): hashing, decrypting the spool, the matcher.
        reader_cpu: CPU seconds per GB in reader processes (the median run;
            0 for formats read in this process).
        cores: CPUs this process may run on.
    """

    kind: str
    size: int
    content_type: str
    scan_mbps: float
    scan_runs: tuple[float, ...]
    decode_mbps: float
    text_bytes: int
    sha256_mbps: float
    findings: int
    subjects: int
    numeric_values: int
    unscannable: bool
    target: float | None
    gateway_cpu: float = 0.0
    reader_cpu: float = 0.0
    cores: int = 1

    @property
    def ceiling_mbps(self) -> float:
        """The most MB/s these CPU-seconds allow on :attr:`cores` busy all the time."""
        total = self.gateway_cpu + self.reader_cpu
        return self.cores * 1000 / total if total else 0.0

    @property
    def passed(self) -> bool:
        """The file was read (not unscannable) and the target, if any, met."""
        return not self.unscannable and (self.target is None or self.scan_mbps >= self.target)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (MB/s rounded to 0.1)."""
        return {
            "kind": self.kind,
            "bytes": self.size,
            "content_type": self.content_type,
            "scan_mbps": round(self.scan_mbps, 1),
            "scan_runs": [round(x, 1) for x in self.scan_runs],
            "decode_mbps": round(self.decode_mbps, 1),
            "text_bytes": self.text_bytes,
            "sha256_mbps": round(self.sha256_mbps, 1),
            "findings": self.findings,
            "subjects": self.subjects,
            "numeric_values": self.numeric_values,
            "unscannable": self.unscannable,
            "target_scan_mbps": self.target,
            "cpu_s_per_gb": {
                "gateway": round(self.gateway_cpu, 2),
                "readers": round(self.reader_cpu, 2),
            },
            "cores": self.cores,
            "ceiling_mbps": round(self.ceiling_mbps, 1),
            "passed": self.passed,
        }


class _CountingSink:
    """A :class:`~gateway.classify.decode.core.TextSink` that only counts the text."""

    def __init__(self) -> None:
        self.text_bytes = 0

    def begin_member(self, content_type: str) -> None:
        """A member starts (nothing to do)."""

    def text(self, data: bytes) -> None:
        """Count the member's text."""
        self.text_bytes += len(data)

    def end_member(self) -> None:
        """A member ends (nothing to do)."""

    def unscannable(self, reason: str) -> None:
        """Not counted here (the whole-path run reports it)."""

    def finding(self, label: str, value: bytes) -> None:
        """Not counted here (the whole-path run reports it)."""


def seal(data: bytes, path: Path) -> SpoolInfo:
    """``data`` sealed as the egress spools an upload larger than a few kilobytes: in the
    payload file ``path`` (written before the timing; read back from the page cache, as
    the egress's view and its reader processes read a spool just written)."""
    writer = SpoolWriter(path)
    view = memoryview(data)
    for i in range(0, len(data), 1 << 20):
        writer.write(bytes(view[i : i + (1 << 20)]))
    return writer.finish()


def _cpu_now() -> tuple[float, float]:
    """CPU seconds so far: this process's, and its finished reader processes'."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, reader_cpu_seconds()


class _ScanRun(NamedTuple):
    """One whole-path run: its time, what it found, and the CPU it cost."""

    seconds: float
    findings: int
    subjects: int
    numeric_values: int
    content_type: str
    unscannable: bool
    own_cpu: float  # seconds in this process
    reader_cpu: float  # seconds in reader processes


def _scan_once(
    detectors: DetectorSet, secret: bytes, data: bytes, info: SpoolInfo, chunk: int
) -> _ScanRun:
    scanner = Scanner(detectors, secret)
    view = memoryview(data)
    with SpoolView(info) as spool:
        own, readers = _cpu_now()
        started = time.perf_counter()
        for i in range(0, len(data), chunk):
            scanner.feed(bytes(view[i : i + chunk]))
        summary = scanner.finish(spool)
        elapsed = time.perf_counter() - started
        own_after, readers_after = _cpu_now()
    return _ScanRun(
        elapsed,
        sum(s.count for s in summary.labels.values()),
        summary.subjects,
        summary.numeric_values,
        summary.content.type,
        bool(summary.unscannable),
        own_after - own,
        readers_after - readers,
    )


def _decode_once(data: bytes, info: SpoolInfo, chunk: int) -> tuple[float, int]:
    sink = _CountingSink()
    decoder = Decoder(sink)
    view = memoryview(data)
    with SpoolView(info) as spool:
        started = time.perf_counter()
        try:
            for i in range(0, len(data), chunk):
                decoder.feed(bytes(view[i : i + chunk]))
            decoder.finish(spool)
        finally:
            decoder.close()
        elapsed = time.perf_counter() - started
    return elapsed, sink.text_bytes


def run(
    size_mb: float,
    repeat: int,
    kinds: tuple[str, ...] = FILE_KINDS,
    detectors: DetectorSet | None = None,
    chunk: int = 1 << 20,
    sha256: Callable[[bytes], float] | None = None,
) -> list[FileResult]:
    """Generate each kind of file (about ``size_mb`` MB) and measure it ``repeat`` times.

    Args:
        size_mb: file size per kind (MB).
        repeat: runs per measurement (best and spread reported).
        kinds: which of :data:`FILE_KINDS`.
        detectors: the detector set (built when None).
        chunk: bytes per ``feed``.
        sha256: seconds of plain SHA-256 over the data (the baseline), given
            by the caller so both tables use the same measurement.
    """
    detectors = detectors or DetectorSet.build()
    secret = os.urandom(32)
    size = max(1, int(size_mb * _MB))
    results: list[FileResult] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        for kind in kinds:
            # A gateway starts its reader zygote, and imports a reader's library in
            # it, once: at its first member of such a format (about a second). A
            # small file of the kind, scanned first and not timed, does that here,
            # so every timed run is one a gateway makes after its first.
            small = generate(kind, min(size, WARM_UP_BYTES))
            _scan_once(detectors, secret, small, seal(small, Path(tmp) / "warm.payload"), chunk)
            (Path(tmp) / "warm.payload").unlink()
            data = generate(kind, size)
            info = seal(data, Path(tmp) / f"{kind}.payload")
            scans = [_scan_once(detectors, secret, data, info, chunk) for _ in range(repeat)]
            decodes = [_decode_once(data, info, chunk) for _ in range(repeat)]
            mb = len(data) / _MB
            sha = max(mb / sha256(data) for _ in range(repeat)) if sha256 else 0.0
            runs = tuple(mb / s.seconds for s in scans)
            first = scans[0]
            per_gb = 1000 / mb
            results.append(
                FileResult(
                    kind=kind,
                    size=len(data),
                    content_type=first.content_type,
                    scan_mbps=max(runs),
                    scan_runs=runs,
                    decode_mbps=max(mb / d[0] for d in decodes),
                    text_bytes=decodes[0][1],
                    sha256_mbps=sha,
                    findings=first.findings,
                    subjects=first.subjects,
                    numeric_values=first.numeric_values,
                    unscannable=first.unscannable,
                    target=TARGETS[kind],
                    gateway_cpu=statistics.median(s.own_cpu for s in scans) * per_gb,
                    reader_cpu=statistics.median(s.reader_cpu for s in scans) * per_gb,
                    cores=len(os.sched_getaffinity(0)),
                )
            )
    return results


def render_lines(results: list[FileResult]) -> list[str]:
    """The table of file kinds (MB/s of file bytes), one line per kind."""
    lines = [
        f"{'file':<8} {'MB':>7} {'scan MB/s':>10} {'target':>7} {'decode MB/s':>12} "
        f"{'text MB':>8} {'sha256':>8} {'findings':>9} {'subjects':>9} "
        f"{'CPU-s/GB':>15} {'ceiling':>8}  runs (scan)  type"
    ]
    for r in results:
        target = "-" if r.target is None else f"{r.target:.0f}"
        runs = " ".join(f"{x:.0f}" for x in r.scan_runs)
        flag = " UNSCANNABLE" if r.unscannable else ""
        lines.append(
            f"{r.kind:<8} {r.size / _MB:>7.1f} {r.scan_mbps:>10.1f} {target:>7} "
            f"{r.decode_mbps:>12.1f} {r.text_bytes / _MB:>8.1f} {r.sha256_mbps:>8.0f} "
            f"{r.findings:>9} {r.subjects:>9} "
            f"{f'{r.gateway_cpu:.1f}+{r.reader_cpu:.1f}':>15} {r.ceiling_mbps:>8.0f}  "
            f"{runs}  {r.content_type}{flag}"
        )
    lines.append(
        "CPU-s/GB: this process + reader processes, per GB of file (median run); "
        f"ceiling: MB/s if those ran on all {results[0].cores if results else 1} cores at once"
    )
    return lines
