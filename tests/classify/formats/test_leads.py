"""A format's ``leads`` (the first bytes its sniffer can accept) hide nothing it recognises.

:func:`~gateway.classify.formats.identify` asks a format with leads only about
prefixes that start with one of them. A wrong declaration would let a file
of that format pass as text. Each shipped format with leads is checked
here on a file from the format's own writer: recognised as it is, and with
its first byte replaced by any other, identified exactly as asking every
sniffer in order identifies it.
"""

from __future__ import annotations

import io
import os
import pickle
import sqlite3
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import fastavro
import gguf
import numpy as np
import onnx
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pyrage
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from gateway.classify.formats import SNIFF_PREFIX_BYTES, Format, Magic, formats, identify
from gateway.classify.formats.documents import ole


def _every_sniffer(prefix: bytes) -> Format | None:
    """What identify answered before leads: every sniffer asked, in order."""
    for fmt in formats():
        try:
            if fmt.sniff(prefix):
                return fmt
        except Exception:  # as identify: a sniffer that raises does not recognise
            continue
    return None


def _table() -> pa.Table:
    return pa.table({"sample": ["S-1", "S-2"], "value": [1.5, 2.5]})


def _parquet(tmp: Path) -> bytes:
    out = io.BytesIO()
    pq.write_table(_table(), out)
    return out.getvalue()


def _arrow_file(tmp: Path) -> bytes:
    out = io.BytesIO()
    with pa.ipc.new_file(out, _table().schema) as writer:
        writer.write_table(_table())
    return out.getvalue()


def _arrow_stream(tmp: Path) -> bytes:
    out = io.BytesIO()
    with pa.ipc.new_stream(out, _table().schema) as writer:
        writer.write_table(_table())
    return out.getvalue()


def _feather_v1(tmp: Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # version 1: still read, and sent
        feather.write_feather(_table(), tmp / "t.feather", version=1)
    return (tmp / "t.feather").read_bytes()


def _orc(tmp: Path) -> bytes:
    orc.write_table(_table(), tmp / "t.orc")
    return (tmp / "t.orc").read_bytes()


def _avro(tmp: Path) -> bytes:
    out = io.BytesIO()
    schema = {"type": "record", "name": "r", "fields": [{"name": "s", "type": "string"}]}
    fastavro.writer(out, fastavro.parse_schema(schema), [{"s": "S-1"}])
    return out.getvalue()


def _sqlite(tmp: Path) -> bytes:
    with sqlite3.connect(tmp / "t.db") as db:
        db.execute("create table t (s text)")
    return (tmp / "t.db").read_bytes()


def _npy(tmp: Path) -> bytes:
    out = io.BytesIO()
    np.save(out, np.arange(6))
    return out.getvalue()


def _pickle(tmp: Path) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)


def _onnx(tmp: Path) -> bytes:
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    result = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([node], "g", [value], [result])
    return onnx.helper.make_model(graph).SerializeToString()


def _gguf(tmp: Path) -> bytes:
    writer = gguf.GGUFWriter(tmp / "m.gguf", "llama")
    writer.add_tensor("w", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return (tmp / "m.gguf").read_bytes()


def _pytorch(tmp: Path) -> bytes:
    # What torch.save writes since 1.6: a zip whose first member is <name>/data.pkl.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("model/data.pkl", _pickle(tmp))
        archive.writestr("model/version", "3\n")
    return out.getvalue()


def _image(kind: str) -> Callable[[Path], bytes]:
    def write(tmp: Path) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(out, kind)
        return out.getvalue()

    return write


def _bgzf(payload: bytes) -> bytes:
    """One BGZF block (SAMv1 §4.1) holding ``payload``."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = deflater.compress(payload) + deflater.flush()
    head = b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x06\0BC\x02\0" + struct.pack("<H", 25 + len(data))
    return head + data + struct.pack("<II", zlib.crc32(payload), len(payload))


def _bam_header() -> bytes:
    text = b"@HD\tVN:1.6\n"
    return b"BAM\x01" + struct.pack("<i", len(text)) + text + struct.pack("<i", 0)


def _age(tmp: Path) -> bytes:
    identity = pyrage.x25519.Identity.generate()
    return bytes(pyrage.encrypt(b"lab notes", [identity.to_public()]))


#: A file of each shipped format that declares its leads (by format name).
SAMPLES: dict[str, Callable[[Path], bytes]] = {
    "parquet": _parquet,
    "arrow": _arrow_file,
    "arrow-stream": _arrow_stream,
    "feather": _feather_v1,
    "orc": _orc,
    "avro": _avro,
    "sqlite": _sqlite,
    "npy": _npy,
    "pickle": _pickle,
    "onnx": _onnx,
    "gguf": _gguf,
    "pytorch": _pytorch,
    "jpeg": _image("JPEG"),
    "png": _image("PNG"),
    "tiff": _image("TIFF"),
    "webp": _image("WEBP"),
    "bam": lambda tmp: _bam_header(),
    "bcf": lambda tmp: b"BCF\x02\x02" + struct.pack("<I", 11) + b"##fileformat=VCFv4.3\n",
    "cram": lambda tmp: b"CRAM\x03\x01" + b"lab-run-0001".ljust(20, b"\0"),
    "xls": lambda tmp: ole.compound_file({"Workbook": b"\x09\x08\x10\0" + bytes(16)}),
    "doc": lambda tmp: ole.compound_file({"WordDocument": bytes(64)}),
    "ppt": lambda tmp: ole.compound_file({"PowerPoint Document": bytes(64)}),
    "ole": lambda tmp: ole.compound_file({"Contents": b"lab notes"}),
    "openssl": lambda tmp: b"Salted__" + os.urandom(8) + os.urandom(32),
    "age": _age,
}
#: The other magics of formats that have more than one (a sample above covers the
#: first): BAM and BCF in BGZF, as they are on disk; big-endian TIFF and BigTIFF
#: (headers as TIFF 6.0 §2 and the BigTIFF design lay them out: the sniffer reads
#: four bytes); Parquet with an encrypted footer ("PARE", Parquet's encryption spec).
VARIANTS: dict[str, Callable[[Path], bytes]] = {
    "bam (bgzf)": lambda tmp: _bgzf(_bam_header()),
    "bcf (bgzf)": lambda tmp: _bgzf(SAMPLES["bcf"](tmp)),
    "tiff (big-endian)": lambda tmp: b"MM\0*" + struct.pack(">IH", 8, 0) + bytes(4),
    "tiff (BigTIFF)": lambda tmp: b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + bytes(8),
    "tiff (big-endian BigTIFF)": lambda tmp: b"MM\0+" + struct.pack(">HHQ", 8, 0, 16) + bytes(8),
    "parquet (encrypted footer)": lambda tmp: b"PARE" + bytes(64) + b"PARE",
}


def test_every_format_that_declares_leads_has_a_sample() -> None:
    # A Magic sniffer's leads come from its magics; the others are declared by
    # hand, and each needs a file here (the magic formats have some too).
    declared = {f.name for f in formats() if f.leads is not None and not isinstance(f.sniff, Magic)}
    assert declared <= set(SAMPLES)


@pytest.mark.parametrize(("name", "write"), [*SAMPLES.items(), *VARIANTS.items()])
def test_no_first_byte_outside_the_leads_is_recognised(
    name: str, write: Callable[[Path], bytes], tmp_path: Path
) -> None:
    fmt = {f.name: f for f in formats()}[name.split(" (")[0]]
    assert fmt.leads is not None
    prefix = write(tmp_path)[:SNIFF_PREFIX_BYTES]
    assert fmt.sniff(prefix), f"{name}: the sample is not recognised"
    assert prefix[0] in fmt.leads
    assert identify(prefix) is _every_sniffer(prefix)
    for first in range(256):
        changed = bytes([first]) + prefix[1:]
        if first not in fmt.leads:
            assert not fmt.sniff(changed), f"{name} recognises a prefix starting {first:#04x}"
        assert identify(changed) is _every_sniffer(changed)


#: How files with leads start (their magics, a few bytes of header after some).
_HEADS: tuple[bytes, ...] = (
    *(m for f in formats() if isinstance(f.sniff, Magic) for m in f.sniff.magics),
    b"PAR1", b"PARE", b"ARROW1\0\0", b"\xff\xff\xff\xff", b"FEA1", b"ORC", b"Obj\x01",
    b"SQLite format 3\0", b"\x93NUMPY\x01\x00", b"\x80\x04\x95", b"\x08\x07\x12",
    b"GGUF\x03\0\0\0", b"PK\x03\x04", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n",
    b"RIFF\0\0\0\0WEBP", b"II*\0", b"MM\0*", b"BAM\x01", b"BCF\x02", b"CRAM\x03",
    b"\x1f\x8b\x08\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"Salted__",
    b"age-encryption.org/v1\n",
)  # fmt: skip


@given(st.sampled_from(_HEADS), st.binary(max_size=64), st.integers(0, 255))
def test_identify_answers_as_asking_every_sniffer(head: bytes, tail: bytes, first: int) -> None:
    # A magic, then anything; and the same with its first byte replaced.
    prefix = head + tail
    for candidate in (prefix, bytes([first]) + prefix[1:], tail):
        assert identify(candidate) is _every_sniffer(candidate)
