"""Format libraries load when a file of their format arrives, not with the registry (SPEC §9).

The registry imports every family module at the first scan; a family that
imported its library at module level would make every gateway carry it
(numpy, pydicom and Pillow alone are ~30 MB of RSS). Each check runs in a fresh
interpreter that imports the gateway's app module first, so what the test
process itself has imported does not count.
"""

from __future__ import annotations

import io
import json
import pathlib
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import xlwt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ImplicitVRLittleEndian, generate_uid

#: Libraries no family may import before a file of its format arrives.
HEAVY = (
    "numpy",
    "pypdfium2",
    "pydicom",
    "olefile",
    "python_calamine",
    "PIL",
    "pyarrow",
    "h5py",
    "fastavro",
    "pysam",
    "netCDF4",
)

#: First bytes of several formats: the first identify loads every family, and
#: each of these runs its family's sniffers on a match.
PREFIXES = (
    b"PAR1" + bytes(100),
    b"\x93NUMPY\x01\x00" + bytes(100),
    b"\x89HDF\r\n\x1a\n" + bytes(100),
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
    bytes(128) + b"DICM" + bytes(200),
    b"%PDF-1.7\n" + bytes(100),
    b"\x89PNG\r\n\x1a\n" + bytes(100),
    b"\x1f\x8b\x08\x04" + bytes(100),
    b"GGUF\x03\x00\x00\x00" + bytes(100),
    b"Obj\x01" + bytes(100),
)

FAMILIES = ("tables", "arrays", "documents", "medical", "genomics", "media", "models")

_CHILD = """
import json, sys

import gateway.server.app  # noqa: F401  (the gateway process as it starts)
from gateway.classify.formats import SNIFF_PREFIX_BYTES, identify

heavy, prefixes, families, path = json.loads(sys.argv[1])


def loaded():
    return sorted(m for m in heavy if m in sys.modules)


for prefix in prefixes:
    identify(bytes.fromhex(prefix))
report = {
    "families": [f for f in families if f"gateway.classify.formats.{f}" in sys.modules],
    "registry": loaded(),
    "rss_kib": next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")
    ),
}
if path:
    from gateway.classify.formats.base import Unscannable
    from gateway.classify.formats.testing import read_random, read_stream

    data = open(path, "rb").read()
    fmt = identify(data[:SNIFF_PREFIX_BYTES])
    report["format"] = fmt.name
    report["sniffed"] = loaded()
    try:
        if fmt.stream is not None:
            out = read_stream(fmt.stream, data)
        else:
            out = read_random(fmt.random, data)
        report["text"] = out.text
    except Unscannable as exc:
        report["unscannable"] = str(exc)
    report["read"] = loaded()
    if "pydicom" in sys.modules:
        import pydicom.config

        report["dicom_ignores_invalid"] = (
            pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE
        )
print(json.dumps(report))
"""


def _child(path: pathlib.Path | None = None) -> dict[str, Any]:
    """What a fresh gateway process has loaded after the registry (and after reading ``path``)."""
    argument = json.dumps([HEAVY, [p.hex() for p in PREFIXES], FAMILIES, str(path or "")])
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, argument],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_registry_loads_every_family_and_no_format_library() -> None:
    report = _child()
    assert report["families"] == list(FAMILIES)
    assert report["registry"] == [], f"RSS {report['rss_kib']} KiB"


# -- one small file per lazily loaded library --------------------------------------------


def _dicom() -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the walker asks pydicom's dictionary
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Chan^Tai Man"
    ds.PatientID = "P0042"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _npy() -> bytes:
    out = io.BytesIO()
    np.save(out, np.array([13800138000, 7], dtype=np.int64))
    return out.getvalue()


def _xls() -> bytes:
    book = xlwt.Workbook()
    book.add_sheet("visits").write(0, 0, "P0042")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _safetensors() -> bytes:
    header = json.dumps({"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2q", 13800138000, 7)


@pytest.mark.parametrize(
    ("make", "fmt", "libraries", "text"),
    [
        (_dicom, "dicom", {"pydicom"}, "Patient ID: P0042"),
        (_npy, "npy", {"numpy"}, "13800138000"),
        (_xls, "xls", {"olefile", "python_calamine"}, "P0042"),
        (_safetensors, "safetensors", {"numpy"}, "13800138000"),
    ],
    ids=["dicom", "npy", "xls", "safetensors"],
)
def test_reading_a_file_loads_its_library(
    tmp_path: pathlib.Path, make: Any, fmt: str, libraries: set[str], text: str
) -> None:
    path = tmp_path / fmt
    path.write_bytes(make())
    report = _child(path)
    assert report["registry"] == []
    assert report["format"] == fmt
    assert report["sniffed"] == []  # sniffing the file needs no library either
    assert "unscannable" not in report
    assert text in report["text"]
    assert libraries <= set(report["read"])
    if fmt == "dicom":  # the settings made when pydicom loads (medical.py's on_load hook)
        assert report["dicom_ignores_invalid"] is True
