"""Streaming decode layers: containers, compressions, limits, sniffing, chunking."""

from __future__ import annotations

import base64
import bz2
import contextlib
import gzip
import io
import lzma
import pathlib
import random
import sqlite3
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyrage
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify.charset import fold_fullwidth
from gateway.classify.decode import (
    BLOCK_BYTES,
    DECODER_FORMATS,
    NAME_MAX_BYTES,
    NAME_TYPE,
    RATIO_GRACE_BYTES,
    SNIFF_BYTES,
    STEP_BYTES,
    Decoder,
    ScanLimits,
    sniff_text_type,
)
from gateway.classify.decode.core import name_text
from gateway.classify.formats.testing import only_formats
from gateway.classify.summary import ContentInfo

# Every expectation holds for the compiled core and the Python reference.
pytestmark = pytest.mark.usefixtures("matcher_core")


@pytest.fixture(autouse=True)
def decoder_formats_only() -> Iterator[None]:
    """The decoder's own formats only: these tests hold whatever family readers exist.

    The raw fallbacks for PDF, OLE and SQLite tested here give way to the
    family readers registered in ``gateway.classify.formats`` (tested there
    and in tests/classify/test_integration_formats.py).
    """
    with only_formats(*(fmt.name for fmt in DECODER_FORMATS)):
        yield


Event = tuple[str, str, bytes] | tuple[str, str]


@dataclass
class Recorder:
    """A TextSink that records members (texts joined) and unscannable reasons.

    Archive member names (:data:`NAME_TYPE` members) go to ``names``, so that
    ``events`` shows the members' contents in order.
    """

    events: list[Event] = field(default_factory=list)
    names: list[bytes] = field(default_factory=list)
    _type: str | None = None
    _text: bytearray = field(default_factory=bytearray)

    def begin_member(self, content_type: str) -> None:
        assert self._type is None, "begin_member inside a member"
        self._type = content_type
        self._text = bytearray()

    def text(self, data: bytes) -> None:
        assert self._type is not None, "text outside a member"
        assert isinstance(data, bytes)
        self._text += data

    def end_member(self) -> None:
        assert self._type is not None, "end_member without begin_member"
        if self._type == NAME_TYPE:
            self.names.append(bytes(self._text))
        else:
            self.events.append(("member", self._type, bytes(self._text)))
        self._type = None

    def unscannable(self, reason: str) -> None:
        self.events.append(("unscannable", reason))

    def finding(self, label: str, value: bytes) -> None:
        self.events.append(("finding", label))

    @property
    def members(self) -> list[tuple[str, bytes]]:
        return [(e[1], e[2]) for e in self.events if e[0] == "member" and len(e) == 3]

    @property
    def unscannables(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "unscannable"]


class Counter:
    """A TextSink that keeps only byte counts (for bombs)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.reasons: list[str] = []
        self._name = False

    def begin_member(self, content_type: str) -> None:
        self._name = content_type == NAME_TYPE

    def text(self, data: bytes) -> None:
        if not self._name:  # member names are not expanded content
            self.bytes += len(data)

    def end_member(self) -> None:
        pass

    def unscannable(self, reason: str) -> None:
        self.reasons.append(reason)

    def finding(self, label: str, value: bytes) -> None:
        pass


def chunks_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out, start = [], 0
    for point in points:
        out.append(data[start:point])
        start = point
    out.append(data[start:])
    return out


def decode(
    data: bytes, chunks: list[bytes] | None = None, limits: ScanLimits | None = None
) -> tuple[ContentInfo, Recorder]:
    sink = Recorder()
    decoder = Decoder(sink, limits) if limits else Decoder(sink)
    for chunk in chunks if chunks is not None else [data]:
        decoder.feed(chunk)
    info = decoder.finish()
    assert sink._type is None, "member left open"
    return info, sink


def scanned(*names: bytes) -> list[bytes]:
    """Names as the matcher reads them (``_`` and ``/`` as spaces, core.name_text)."""
    return [name_text(name).encode() for name in names]


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --------------------------------------------------------------------------- builders

CSV = b"name,id,phone\nalice,110101199003077777,13812345678\nbob,440301199912310014,13900001111\n"
TEXT = "客户张三，电话１３８１２３４５６７８，邮箱 zhang@example.com\n".encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data)


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors (flag bit 3)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def make_zip(
    members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED, stream: bool = False
) -> bytes:
    out: io.BytesIO | _Unseekable = _Unseekable() if stream else io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return bytes(out.data) if isinstance(out, _Unseekable) else out.getvalue()


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def cut_before_central_directory(data: bytes, back: int) -> bytes:
    return data[: data.index(b"PK\x01\x02") - back]


def patch_first_local_header(data: bytes, offset: int, value: int) -> bytes:
    """Overwrite a 2-byte field of the first zip local header (APPNOTE 4.3.7)."""
    patched = bytearray(data)
    struct.pack_into("<H", patched, offset, value)
    return bytes(patched)


# --------------------------------------------------------------------------- formats


def test_plain_text_is_one_member() -> None:
    info, sink = decode(CSV)
    assert sink.events == [("member", "text/csv", CSV)]
    assert info == ContentInfo("text/csv", "utf-8", ())


def test_empty_input_is_one_empty_member() -> None:
    info, sink = decode(b"")
    assert sink.events == [("member", "text/plain", b"")]
    assert info == ContentInfo("text/plain", "utf-8", ())


@pytest.mark.parametrize(
    ("compress", "layer"), [(gz, "gzip"), (zst, "zstd"), (bz, "bz2"), (xz, "xz")]
)
def test_compressions_round_trip(compress: Callable[[bytes], bytes], layer: str) -> None:
    data = compress(CSV)
    for chunks in (None, one_byte_chunks(data)):
        info, sink = decode(data, chunks)
        assert sink.events == [("member", "text/csv", CSV)]
        assert info == ContentInfo("text/csv", "utf-8", (layer,))


@pytest.mark.parametrize("compress", [gz, zst, bz, xz])
def test_concatenated_streams_decode_as_one(compress: Callable[[bytes], bytes]) -> None:
    # gzip(1), zstd, bzip2 and xz all decode concatenated streams as one (bgzip,
    # pbzip2, zstd multi-frame).
    _, sink = decode(compress(CSV[:20]) + compress(CSV[20:]))
    assert sink.members == [("text/csv", CSV)]


def test_zstd_skippable_frame_is_ignored() -> None:
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"hello"
    _, sink = decode(skippable[:0] + zst(CSV) + skippable)
    assert sink.events == [("member", "text/csv", CSV)]


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_zip_members_are_separate(method: int) -> None:
    data = make_zip([("a.csv", CSV), ("b.txt", TEXT), ("dir/", b"")], method=method)
    info, sink = decode(data)
    folded = fold_fullwidth(TEXT)
    assert sink.members == [("text/csv", CSV), ("text/plain", folded), ("text/plain", b"")]
    assert sink.unscannables == []
    assert info == ContentInfo("text/csv", "utf-8", ("zip",))


def test_zip_with_data_descriptors() -> None:
    data = make_zip([("a.csv", CSV), ("b.csv", CSV * 3)], stream=True)
    assert struct.unpack_from("<H", data, 6)[0] & 0x08  # the generator used descriptors
    for chunks in (None, one_byte_chunks(data)):
        info, sink = decode(data, chunks)
        assert sink.members == [("text/csv", CSV), ("text/csv", CSV * 3)]
        assert sink.unscannables == []
        assert info.layers == ("zip",)


def test_zip64_member() -> None:
    _, sink = decode(zip64())
    assert sink.members == [("text/csv", CSV)]
    assert sink.unscannables == []


def test_empty_zip_reports_the_archive() -> None:
    info, sink = decode(make_zip([]))
    assert sink.events == []
    assert info == ContentInfo("application/zip", None, ())


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_members_with_long_names(fmt: int) -> None:
    long_name = "deep/" * 30 + "file.csv"  # > 100 chars: GNU 'L' or pax 'x' header
    members = [("a.txt", TEXT), (long_name if fmt != tarfile.USTAR_FORMAT else "b.csv", CSV)]
    data = make_tar(members, fmt)
    for chunks in (None, one_byte_chunks(data)):
        info, sink = decode(data, chunks)
        assert [m[0] for m in sink.members] == ["text/plain", "text/csv"]
        assert sink.members[1][1] == CSV
        assert sink.unscannables == []
        assert info == ContentInfo("text/csv", "utf-8", ("tar",))


def test_tar_pax_size_overrides_header_size() -> None:
    data = bytearray(make_tar([("a.csv", CSV)], tarfile.PAX_FORMAT))
    # Give the member a pax header with its real size and zero the ustar size,
    # as writers do for members over 8 GiB.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("a.csv")
        info.size = len(CSV)
        info.pax_headers = {"size": str(len(CSV))}
        archive.addfile(info, io.BytesIO(CSV))
    data = bytearray(out.getvalue())
    ustar = data.index(b"a.csv", 512)  # the member's own header follows the pax one
    header = ustar - ustar % 512
    data[header + 124 : header + 136] = b"00000000000\x00"
    checksum = sum(data[header : header + 148]) + 8 * 32 + sum(data[header + 156 : header + 512])
    data[header + 148 : header + 156] = b"%06o\x00 " % checksum
    _, sink = decode(bytes(data))
    assert sink.members == [("text/csv", CSV)]
    assert sink.unscannables == []


def test_tar_directories_links_and_empty_files() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        directory = tarfile.TarInfo("d")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        link = tarfile.TarInfo("l")
        link.type = tarfile.SYMTYPE
        link.linkname = "d"
        archive.addfile(link)
        archive.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
        info = tarfile.TarInfo("x.csv")
        info.size = len(CSV)
        archive.addfile(info, io.BytesIO(CSV))
    _, sink = decode(out.getvalue())
    assert sink.members == [("text/plain", b""), ("text/csv", CSV)]


def test_tar_gz_layers_and_dominant_member() -> None:
    big = CSV * 50
    data = gz(make_tar([("readme.txt", b"see data.csv\n"), ("data.csv", big)]))
    info, sink = decode(data)
    assert sink.members == [("text/plain", b"see data.csv\n"), ("text/csv", big)]
    assert info == ContentInfo("text/csv", "utf-8", ("gzip", "tar"))


def test_first_member_wins_a_tie() -> None:
    info, _ = decode(make_zip([("a.json", b'{"a": 1}'), ("b.txt", b"abcdefgh")]))
    assert info.type == "application/json"


def nest(data: bytes, levels: int) -> bytes:
    wrappers: list[Callable[[bytes], bytes]] = [
        gz,
        lambda d: make_tar([("inner", d)]),
        zst,
        lambda d: make_zip([("inner", d)]),
        xz,
        bz,
    ]
    for level in range(levels):
        data = wrappers[level % len(wrappers)](data)
    return data


def test_nesting_to_depth_four() -> None:
    info, sink = decode(nest(CSV, 4))
    assert sink.members == [("text/csv", CSV)]
    assert sink.unscannables == []
    assert info.layers == ("zip", "zstd", "tar", "gzip")


def test_fifth_level_is_refused() -> None:
    info, sink = decode(nest(CSV, 5))
    assert sink.unscannables == ["gzip: nested deeper than 4 layers"]
    assert sink.members == []
    assert info == ContentInfo("application/gzip", None, ("xz", "zip", "zstd", "tar"))


def test_depth_limit_is_configurable() -> None:
    _, sink = decode(gz(gz(CSV)), limits=ScanLimits(max_depth=1))
    assert sink.unscannables == ["gzip: nested deeper than 1 layers"]


# --------------------------------------------------------------------------- limits


#: A bomb expands to this much text: far past the grace, ~1000:1 compressed.
BOMB_SIZE = 64 << 20
_MIB_OF_A = b"a" * (1 << 20)


def bomb(compressor: zstandard.ZstdCompressionObj | Compressor, size: int = BOMB_SIZE) -> bytes:
    """``size`` bytes of one repeated letter (text, not binary), compressed in 1 MiB steps."""
    parts = [compressor.compress(_MIB_OF_A) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.csv", CSV)
        with archive.open("bomb.txt", "w") as member:
            for _ in range(BOMB_SIZE >> 20):
                member.write(_MIB_OF_A)
    return out.getvalue()


def bounded_decode(data: bytes, chunk: int = 1 << 16) -> tuple[Counter, int]:
    """Decode ``data`` counting bytes; the peak of Python allocations during it."""
    sink = Counter()
    tracemalloc.start()
    try:
        decoder = Decoder(sink)
        view = memoryview(data)
        for start in range(0, len(data), chunk):
            decoder.feed(bytes(view[start : start + chunk]))
        decoder.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return sink, peak


#: What a bomb may make the decoder allocate: a few 64 KiB buffers per layer,
#: plus the format's own window (xz preset 1: a 1 MiB dictionary).
BOMB_MEMORY_BOUND = 2 << 20
XZ_DICTIONARY = 1 << 20


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: bomb(zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)),
            "gzip: expansion ratio over 100:1",
        ),
        (
            lambda: bomb(zstandard.ZstdCompressor().compressobj()),
            "zstd: expansion ratio over 100:1",
        ),
        # bzip2 and xz compress slowly: smaller bombs, still 4x the grace.
        (lambda: bomb(bz2.BZ2Compressor(), 16 << 20), "bz2: expansion ratio over 100:1"),
        (
            lambda: bomb(lzma.LZMACompressor(preset=1), 16 << 20),
            "xz: expansion ratio over 100:1",
        ),
        (zip_bomb, "zip: expansion ratio over 100:1"),
    ],
    ids=["gzip", "zstd", "bz2", "xz", "zip"],
)
def test_bombs_are_refused_in_constant_memory(make: Callable[[], bytes], reason: str) -> None:
    sink, peak = bounded_decode(make())
    assert sink.reasons == [reason]
    # Stopped once past the grace and 100x the first input block, never at
    # the full expansion.
    assert sink.bytes <= max(RATIO_GRACE_BYTES, 100 * BLOCK_BYTES) + STEP_BYTES
    allowance = XZ_DICTIONARY if reason.startswith("xz") else 0
    assert peak < BOMB_MEMORY_BOUND + allowance, peak


def test_small_very_compressible_file_is_not_a_bomb() -> None:
    # 2 MiB of zeros compress ~1000:1 but stay under the grace: not "sustained".
    data = gz(b"0," * (1 << 20))
    info, sink = decode(data)
    assert sink.unscannables == []
    assert sink.members == [("text/plain", b"0," * (1 << 20))]
    assert info.layers == ("gzip",)


_DIGITS = bytes(b"0123456789,\n"[b % 12] for b in range(256))


def random_numbers(size: int, seed: int) -> bytes:
    """Text of random digits and separators: gzip gets it to about 1.9:1."""
    return random.Random(seed).randbytes(size).translate(_DIGITS)


def test_ratio_limit_is_configurable() -> None:
    text = random_numbers(5 << 20, seed=3)
    assert len(text) > RATIO_GRACE_BYTES
    _, sink = decode(gz(text), limits=ScanLimits(max_ratio=1.5))
    assert sink.unscannables == ["gzip: expansion ratio over 1.5:1"]
    _, sink = decode(gz(text))
    assert sink.unscannables == []


def test_total_expanded_size_cap() -> None:
    text = random_numbers(1_200_000, seed=7)
    limits = ScanLimits(max_expanded_bytes=1 << 20)
    _, sink = decode(gz(text), limits=limits)
    assert sink.unscannables == ["gzip: expanded size over 1 MiB"]
    # The cap counts every layer: two streams of 600 KB each exceed it together.
    half = text[:600_000]
    _, sink = decode(make_zip([("a", half), ("b", half)]), limits=limits)
    assert sink.unscannables == ["zip: expanded size over 1 MiB"]


# --------------------------------------------------------------------------- corrupt


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (gz(CSV * 20)[:-4], "gzip: truncated stream"),
        (gz(CSV * 20)[:40], "gzip: truncated stream"),
        (zst(CSV * 20)[:-3], "zstd: truncated stream"),
        (zst(CSV * 20)[:10], "zstd: truncated stream"),
        (bz(CSV * 20)[:-10], "bz2: truncated stream"),
        (xz(CSV * 20)[:-10], "xz: truncated stream"),
        (make_zip([("a.csv", CSV * 20)])[:100], "zip: truncated archive"),
        (
            cut_before_central_directory(make_zip([("a.csv", CSV)], stream=True), 5),
            "zip: truncated archive",
        ),
        (make_zip([("a.csv", CSV)])[:-10], "zip: truncated archive"),
        (make_tar([("a.csv", CSV * 20)])[:1000], "tar: truncated archive"),
        (make_tar([("a.csv", CSV * 20)])[:700], "tar: truncated archive"),
    ],
    ids=[
        "gzip-trailer",
        "gzip-body",
        "zstd",
        "zstd-header",
        "bz2",
        "xz",
        "zip",
        "zip-dd",
        "zip-eocd",
        "tar",
        "tar-header",
    ],
)
def test_truncated_containers(data: bytes, reason: str) -> None:
    for chunks in (None, one_byte_chunks(data)):
        _, sink = decode(data, chunks)
        assert sink.unscannables == [reason]


def corrupt_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (corrupt_middle(gz(CSV * 20)), "gzip: corrupt stream"),
        (
            corrupt_middle(zstandard.ZstdCompressor(write_checksum=True).compress(CSV * 20)),
            "zstd: corrupt stream",
        ),
        (corrupt_middle(bz(CSV * 20)), "bz2: corrupt stream"),
        (corrupt_middle(xz(CSV * 20)), "xz: corrupt stream"),
        (gz(CSV) + b"garbage", "gzip: trailing data after end of stream"),
        (gz(CSV) + b"\x00" * 100 + b"\x1f\x8b", "gzip: trailing data after end of stream"),
        (zst(CSV) + b"garbage!", "zstd: corrupt stream"),
        (make_zip([("a.csv", CSV)]).replace(b"PK\x01\x02", b"XX\x01\x02"), "zip: bad local header"),
        (
            make_tar([("a.csv", CSV), ("b.csv", CSV)]).replace(b"b.csv", b"c.csv", 1),
            "tar: bad header checksum",
        ),
        (make_tar([("a.csv", CSV)]) + b"hidden", "tar: data after end of archive"),
        (make_zip([("a.csv", CSV)]) + b"hidden", "zip: data after end of archive"),
        (make_zip([("a.csv", CSV)])[:-22] + b"PK\x09\x09", "zip: bad central directory"),
    ],
    ids=[
        "gzip",
        "zstd",
        "bz2",
        "xz",
        "gzip-garbage",
        "gzip-zeros-then-data",
        "zstd-garbage",
        "zip",
        "tar",
        "tar-trailing",
        "zip-trailing",
        "zip-central",
    ],
)
def test_corrupt_containers(data: bytes, reason: str) -> None:
    for chunks in (None, one_byte_chunks(data)):
        _, sink = decode(data, chunks)
        assert sink.unscannables == [reason]


def test_zero_padding_after_streams_is_fine() -> None:
    _, sink = decode(gz(CSV) + bytes(10240))
    assert sink.events == [("member", "text/csv", CSV)]
    _, sink = decode(xz(CSV) + bytes(8))
    assert sink.events == [("member", "text/csv", CSV)]


def test_truncated_gzip_still_scans_what_it_got() -> None:
    data = gz(CSV * 1000)
    _, sink = decode(data[: len(data) // 2])
    assert sink.unscannables == ["gzip: truncated stream"]
    assert sink.members[0][1].startswith(CSV)


def test_encrypted_zip_member_is_unscannable_and_others_are_scanned() -> None:
    data = make_zip([("secret.csv", CSV), ("open.csv", CSV)])
    flags = struct.unpack_from("<H", data, 6)[0]
    data = patch_first_local_header(data, 6, flags | 0x01)  # general purpose bit 0
    for chunks in (None, one_byte_chunks(data)):
        _, sink = decode(data, chunks)
        assert sink.unscannables == ["zip: encrypted member"]
        assert sink.members == [("text/csv", CSV)]


def test_encrypted_zip_is_reported_once_per_layer() -> None:
    data = bytearray(make_zip([(name, b"ciphertext") for name in "abc"], method=zipfile.ZIP_STORED))
    start = 0
    while (start := data.find(b"PK\x03\x04", start)) >= 0:
        data[start + 6] |= 0x01  # zipfile clears flag bits on write; set them after
        start += 4
    _, sink = decode(bytes(data))
    assert sink.unscannables == ["zip: encrypted member"]
    assert sink.members == []


def test_encrypted_member_with_data_descriptor_stops_the_layer() -> None:
    data = make_zip([("a.csv", CSV)], stream=True)
    data = patch_first_local_header(data, 6, struct.unpack_from("<H", data, 6)[0] | 0x01)
    _, sink = decode(data)
    assert sink.unscannables == ["zip: encrypted member"]
    assert sink.members == []


def test_unsupported_zip_method_is_skipped() -> None:
    data = patch_first_local_header(make_zip([("a", CSV), ("b", TEXT)]), 8, 14)  # LZMA
    _, sink = decode(data)
    assert sink.unscannables == ["zip: unsupported method 14"]
    assert [m[0] for m in sink.members] == ["text/plain"]


def test_stored_member_with_data_descriptor_is_refused() -> None:
    data = make_zip([("a.csv", CSV)], method=zipfile.ZIP_STORED, stream=True)
    _, sink = decode(data)
    assert sink.unscannables == ["zip: stored member with data descriptor"]


# --------------------------------------------------------------------------- binaries


def test_unknown_binary_is_unscannable_from_its_first_byte() -> None:
    # Raw bytes of a binary format hide binary-encoded numbers: a small
    # binary file of phone numbers is refused, never fed raw.
    phones = b"".join(struct.pack("<Q", 13812345678 + i) for i in range(1000))
    for blob in (b"\x00\x01\x02" + phones, random.Random(1).randbytes((1 << 20) + 10)):
        info, sink = decode(blob)
        assert sink.events == [("unscannable", "binary: unknown format")]
        assert info == ContentInfo("application/octet-stream", None, ())
        _, chunked = decode(blob, chunks_at(blob, range(0, len(blob), 77_777)))
        assert chunked.events == sink.events
        _, bytewise = decode(blob[:5000], one_byte_chunks(blob[:5000]))
        assert bytewise.events == sink.events


@pytest.mark.parametrize(
    ("magic", "looks_like"),
    [
        (b"\x7fELF\x02\x01\x01", "ELF executable"),
        (b"MZ\x90\x00", "Windows executable"),
        (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
        (b"\x00asm\x01\x00\x00\x00", "WebAssembly module"),
        (b"\x93NUMPY\x01\x00", "NumPy array"),
    ],
)
def test_unknown_binary_reason_names_what_it_looked_like(magic: bytes, looks_like: str) -> None:
    _, sink = decode(magic + bytes(range(256)) * 4)
    assert sink.events == [("unscannable", f"binary: unknown format (starts like {looks_like})")]


_LOCAL = "<4sHHHHHIIIHH"
_CENTRAL = "<4sHHHHHHIIIHHHHHII"


def _hand_zip(members: list[tuple[bytes, bytes]]) -> bytes:
    """A stored zip of ``(name, data)`` members, written by hand (the tests below
    then make its headers lie)."""
    body, central = b"", b""
    for name, data in members:
        at = len(body)
        crc = zlib.crc32(data)
        body += struct.pack(
            _LOCAL, b"PK\x03\x04", 10, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0
        )
        body += name + data
        central += (
            struct.pack(
                _CENTRAL,
                b"PK\x01\x02",
                10,
                10,
                0,
                0,
                0,
                0,
                crc,
                len(data),
                len(data),
                len(name),
                0,
                0,
                0,
                0,
                0,
                at,
            )
            + name
        )
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(body), 0
    )
    return body + central + end


def test_a_local_header_that_swallows_the_next_member_is_caught() -> None:
    """Extractors go by the central directory: a first local header whose size
    covers the next member's header and data hid that member from the walk."""
    cover = b"nothing to see here\n" * 50
    hidden_at = 30 + len(b"notes.txt") + len(cover)
    honest = _hand_zip([(b"notes.txt", cover), (b"secret.csv", CSV)])
    directory = honest.index(b"PK\x01\x02")
    assert honest[hidden_at : hidden_at + 4] == b"PK\x03\x04"
    # The first local header now claims both members' bytes as its own data.
    claimed = directory - 30 - len(b"notes.txt")
    local = struct.pack(
        _LOCAL,
        b"PK\x03\x04",
        10,
        0,
        0,
        0,
        0,
        zlib.crc32(honest[39:directory]),
        claimed,
        claimed,
        9,
        0,
    )
    attack = local + honest[30:]
    assert zipfile.ZipFile(io.BytesIO(attack)).read("secret.csv") == CSV
    _, sink = decode(attack)
    assert "zip: the central directory disagrees with the local headers" in sink.unscannables
    assert decode(honest)[1].unscannables == []


def test_a_member_the_directory_names_inside_the_comment_is_caught() -> None:
    hidden = struct.pack(
        _LOCAL, b"PK\x03\x04", 10, 0, 0, 0, 0, zlib.crc32(CSV), len(CSV), len(CSV), 10, 0
    )
    hidden += b"secret.csv" + CSV
    plain = _hand_zip([(b"a.txt", b"hello\n")])
    body_end = plain.index(b"PK\x01\x02")
    central_a = plain[body_end : plain.index(b"PK\x05\x06")]
    central_b = (
        struct.pack(
            _CENTRAL,
            b"PK\x01\x02",
            10,
            10,
            0,
            0,
            0,
            0,
            zlib.crc32(CSV),
            len(CSV),
            len(CSV),
            10,
            0,
            0,
            0,
            0,
            0,
            0,
        )
        + b"secret.csv"
    )
    central = central_a + central_b
    hidden_at = body_end + len(central) + 22
    central = central[: -10 - 4] + struct.pack("<I", hidden_at) + b"secret.csv"
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 2, 2, len(central), body_end, len(hidden))
    attack = plain[:body_end] + central + end + hidden
    assert zipfile.ZipFile(io.BytesIO(attack)).read("secret.csv") == CSV
    _, sink = decode(attack)
    assert sink.unscannables == ["zip: the central directory disagrees with the local headers"]


def test_zip_comments_are_scanned() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = b"archive of patient 110101199003077777"
        archive.writestr("a.txt", "hello\n")
        archive.getinfo("a.txt").comment = b"call 13812345678"
    data = buffer.getvalue()
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("a.txt").comment == b"call 13812345678"
    _, sink = decode(data)
    assert sink.unscannables == []
    assert sink.names == [b"a.txt", b"call 13812345678", b"archive of patient 110101199003077777"]


#: Letters and spaces in no order: ~120 KB deflated, so a member's data crosses
#: the zip layer's 64 KiB blocks (and its data descriptor must count them all).
_LONG_TEXT = "".join(random.Random(5).choices("bdefhijklmnopqrsuvwxyz  ", k=200_000))


@pytest.mark.parametrize(
    ("method", "stream"),
    [
        (zipfile.ZIP_STORED, False),  # stored with a data descriptor is refused (no length)
        (zipfile.ZIP_DEFLATED, False),
        (zipfile.ZIP_DEFLATED, True),
        (zipfile.ZIP_BZIP2, False),
        (zipfile.ZIP_BZIP2, True),
    ],
)
def test_honest_zips_agree_with_their_directory(method: int, stream: bool) -> None:
    data = make_zip(
        [("x.csv", CSV), ("y/", b""), ("z.txt", TEXT * 500), ("long.txt", _LONG_TEXT.encode())],
        method=method,
        stream=stream,
    )
    _, sink = decode(data, chunks_at(data, range(0, len(data), 997)))
    assert sink.unscannables == []
    assert sink.names == scanned(b"x.csv", b"y/", b"z.txt", b"long.txt")


def test_unknown_binary_inside_zip_is_unscannable_and_the_rest_is_scanned() -> None:
    blob = random.Random(2).randbytes(2 << 20)
    _, sink = decode(make_zip([("x.bin", blob), ("y.csv", CSV)], method=zipfile.ZIP_STORED))
    assert sink.events == [
        ("unscannable", "binary: unknown format"),
        ("member", "text/csv", CSV),
    ]
    assert sink.names == [b"x.bin", b"y.csv"]


@pytest.mark.parametrize(
    ("magic", "media_type"),
    [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"GIF89a", "image/gif"),
        (b"II*\x00", "image/tiff"),
        (b"RIFF\x00\x00\x00\x00WEBP", "image/webp"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
    ],
)
def test_pixels_and_samples_pass_with_nothing_scanned(magic: bytes, media_type: str) -> None:
    # Pixels and samples hold no text; metadata readers (formats.media) come
    # before these entries when registered.
    blob = magic + b"\x00\xff" * (1 << 19) + b"Author: 13812345678"
    info, sink = decode(blob)
    assert sink.events == []
    assert info == ContentInfo(media_type, None, ())
    _, in_zip = decode(make_zip([("photo", blob), ("y.csv", CSV)]))
    assert in_zip.events == [("member", "text/csv", CSV)]


def test_pdf_is_fed_raw_whatever_its_size() -> None:
    blob = b"%PDF-1.7\n" + b"\x00\x7f" * (1 << 20) + b"Author: 13812345678"
    info, sink = decode(blob)
    assert sink.events == [("member", "application/pdf", blob)]
    assert info == ContentInfo("application/pdf", None, ())


@pytest.mark.parametrize(
    ("magic", "reason"),
    [
        (b"7z\xbc\xaf\x27\x1c", "7z: cannot be opened"),
        (b"Rar!\x1a\x07\x01\x00", "rar: cannot be opened"),
        (b"BAM\x01", "bam: cannot be opened"),
        (b"\x04\x22\x4d\x18", "lz4: cannot be opened"),
    ],
)
def test_opaque_containers_are_unscannable(magic: bytes, reason: str) -> None:
    _, sink = decode(magic + b"\x00" * 100)
    assert sink.events == [("unscannable", reason)]


def test_bam_inside_bgzf_is_unscannable() -> None:
    # BAM is BGZF: concatenated gzip members around a "BAM\1" binary stream.
    _, sink = decode(gz(b"BAM\x01" + bytes(100)) + gz(bytes(50)))
    assert sink.unscannables == ["bam: cannot be opened"]


# --------------------------------------------------------------------------- sniffing

VCF = b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n1\t100\t.\tA\tG\n"
SAM = b"@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:1000\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tFFFF\n"
SAM_NO_HEADER = (
    b"r1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tFFFF\nr2\t16\tchr1\t9\t60\t4M\t*\t0\t0\tACGT\tFFFF\n"
)
FASTA = b">seq1 human\nACGTACGTNNACGT\nACGT\n>seq2\nACGT\n"
FASTQ = b"@read1\nACGTACGT\n+\nFFFFFFFF\n@read2\nACGT\n+\nFFFF\n"


@pytest.mark.parametrize(
    ("text", "media_type"),
    [
        (CSV, "text/csv"),
        (b'id;name\n1;"a;b"\n2;c\n', "text/csv"),
        (b'id,note\n1,"x, y"\n2,z\n', "text/csv"),
        (b"id\tname\n1\tA\n", "text/tab-separated-values"),
        (b'{"id": "110101199003077777"}\n', "application/json"),
        (b'  [{"a": 1}, {"a": 2}]', "application/json"),
        (VCF, "text/x-vcf"),
        (SAM, "text/x-sam"),
        (SAM_NO_HEADER, "text/x-sam"),
        (FASTA, "text/x-fasta"),
        (FASTQ, "text/x-fastq"),
        (b"Dear team,\nplease find the data attached.\n", "text/plain"),
        (b"one line, with a comma", "text/plain"),
        (b"", "text/plain"),
    ],
)
def test_sniffing(text: bytes, media_type: str) -> None:
    assert sniff_text_type(text, complete=True) == media_type
    _, sink = decode(make_zip([("member", text)]))
    assert sink.members == [(media_type, text)]


def test_sniffing_ignores_a_cut_last_line() -> None:
    assert sniff_text_type(b"a,b\n1,2\n3,4,5,6", complete=False) == "text/csv"
    assert sniff_text_type(b"a,b\n1,2\n3,4,5,6", complete=True) == "text/plain"


def test_type_is_decided_by_content_not_name() -> None:
    _, sink = decode(make_zip([("data.csv", FASTA), ("notes.txt.gz", gz(CSV))]))
    assert sink.members == [("text/x-fasta", FASTA), ("text/csv", CSV)]


@pytest.mark.parametrize(
    ("codec", "bom", "charset"),
    [
        ("utf-16-le", b"\xff\xfe", "utf-16le"),
        ("utf-16-be", b"\xfe\xff", "utf-16be"),
        ("utf-16-le", b"", "utf-16le"),
        ("utf-16-be", b"", "utf-16be"),
        ("gbk", b"", "gb18030"),
    ],
)
def test_charsets_are_transcoded_before_sniffing(codec: str, bom: bytes, charset: str) -> None:
    text = "姓名,电话\n张三,１３８１２３４５６７８\n李四,13900001111\n"
    info, sink = decode(bom + text.encode(codec))
    expected = fold_fullwidth(text.encode())
    assert sink.events == [("member", "text/csv", expected)]
    assert info == ContentInfo("text/csv", charset, ())


def test_big5_member() -> None:
    text = "姓名,電話,身份證\n陳大文,98765432,A123456(3)\n"
    info, sink = decode(gz(text.encode("big5")))
    assert sink.members == [("text/csv", text.encode())]
    assert info == ContentInfo("text/csv", "big5", ("gzip",))


def test_utf8_bom_is_stripped() -> None:
    _, sink = decode(b"\xef\xbb\xbf" + CSV)
    assert sink.members == [("text/csv", CSV)]


def test_decision_waits_for_the_sniff_prefix() -> None:
    # Start ASCII, turn GBK only after the prefix: decided on the prefix alone,
    # whatever the chunking, so the later bytes pass through as they are.
    tail = "身份证号码".encode("gbk")
    data = b"a" * SNIFF_BYTES + tail
    _, whole = decode(data)
    _, split = decode(data, [*one_byte_chunks(data[: SNIFF_BYTES - 2]), data[SNIFF_BYTES - 2 :]])
    assert whole.events == split.events == [("member", "text/plain", data)]


def test_feed_after_finish_and_double_finish_raise() -> None:
    decoder = Decoder(Recorder())
    decoder.feed(b"abc")
    decoder.finish()
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")
    with pytest.raises(RuntimeError):
        decoder.finish()


def test_decoder_accepts_any_bytes_like_chunk() -> None:
    sink = Recorder()
    decoder = Decoder(sink)
    decoder.feed(bytearray(CSV[:10]))
    decoder.feed(memoryview(CSV)[10:])
    decoder.finish()
    assert sink.members == [("text/csv", CSV)]


# --------------------------------------------------------------------------- chunking

PAYLOAD_TEXT = st.text(
    alphabet=st.sampled_from(list("ab,\n 019@.") + list("张三電話：，") + list("１２ＡＢｃ")),
    max_size=300,
)

CONTAINERS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda d: d,
    "gzip-multi": lambda d: gz(d[: len(d) // 2]) + gz(d[len(d) // 2 :]),
    "zstd": zst,
    "bz2": bz,
    "xz": xz,
    "zip": lambda d: make_zip([("a", d), ("b", d[::-1])]),
    "zip-descriptors": lambda d: make_zip([("a", d), ("b", d)], stream=True),
    "tar.gz": lambda d: gz(make_tar([("a", d), ("b" * 120, d)])),
    "zip-in-tar": lambda d: make_tar([("x.zip", make_zip([("a", d)])), ("y", d)]),
}
CHARSETS: dict[str, Callable[[str], bytes]] = {
    "utf-8": lambda t: t.encode(),
    "utf-16-bom": lambda t: t.encode("utf-16"),
    "utf-16le": lambda t: t.encode("utf-16-le"),
    "gbk": lambda t: t.replace("電話", "电话").encode("gb18030"),
}


@given(
    text=PAYLOAD_TEXT,
    container=st.sampled_from(sorted(CONTAINERS)),
    encoding=st.sampled_from(sorted(CHARSETS)),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
    data=st.data(),
)
def test_sink_calls_do_not_depend_on_chunking(
    text: str, container: str, encoding: str, cuts: list[int], data: st.DataObject
) -> None:
    payload = CONTAINERS[container](CHARSETS[encoding](text))
    info, whole = decode(payload)
    chunked_info, chunked = decode(payload, chunks_at(payload, cuts))
    assert chunked.events == whole.events
    assert chunked_info == info
    if data.draw(st.booleans()):
        bytewise_info, bytewise = decode(payload, one_byte_chunks(payload))
        assert bytewise.events == whole.events
        assert bytewise_info == info


def big_corpus() -> bytes:
    rng = random.Random(42)
    names = ["张三", "李四", "ＡＢＣ"]
    rows = [
        f"{i},{rng.randint(10**17, 10**18 - 1)},{rng.choice(names)},１３８{i:08d}\n"
        for i in range(1500)
    ]
    csv_text = "id,number,name,phone\n" + "".join(rows)
    members = [
        ("a.csv", csv_text.encode()),
        ("b.txt", csv_text.encode("utf-16")),
        ("c.txt", csv_text.replace("ＡＢＣ", "王五").encode("gbk")),
        ("d.bin", rng.randbytes(3000)),
    ]
    return gz(make_tar(members))


BIG = big_corpus()


@given(cuts=st.lists(st.integers(min_value=1, max_value=len(BIG) - 1), max_size=40))
def test_large_archive_is_chunk_invariant(cuts: list[int]) -> None:
    info, whole = decode(BIG)
    chunked_info, chunked = decode(BIG, chunks_at(BIG, cuts))
    assert chunked.events == whole.events
    assert chunked_info == info


def test_large_archive_in_one_byte_chunks() -> None:
    info, whole = decode(BIG)
    assert [m[0] for m in whole.members] == ["text/csv"] * 3
    assert whole.unscannables == ["binary: unknown format"]  # d.bin
    assert whole.members[0][1] == whole.members[1][1]  # UTF-16 transcoded exactly
    bytewise_info, bytewise = decode(BIG, one_byte_chunks(BIG))
    assert bytewise.events == whole.events
    # The GBK member decodes to the most UTF-8 bytes (王五 is 6 bytes, ＡＢＣ
    # folds to 3), so it is the dominant member.
    assert bytewise_info == info == ContentInfo("text/csv", "gb18030", ("gzip", "tar"))


def test_zip_archive_comment_is_part_of_the_archive() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.csv", CSV)
        archive.comment = b"exported by the HK park"
    _, sink = decode(out.getvalue())
    assert sink.events == [("member", "text/csv", CSV)]


def test_zstd_window_over_the_limit_is_refused() -> None:
    # zstd --long=28: the frame asks for a 256 MiB window before any output.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = compressor.compress(CSV) + compressor.flush()
    _, sink = decode(data)
    assert sink.unscannables == ["zstd: window over 128 MiB"]


def test_xz_dictionary_over_the_limit_is_refused() -> None:
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 128 << 20}]
    _, sink = decode(lzma.compress(CSV, format=lzma.FORMAT_XZ, filters=filters))
    assert sink.unscannables == ["xz: decoder memory over 72 MiB"]


def zip64() -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("big.csv", "w", force_zip64=True) as member,
    ):
        member.write(CSV)
    return out.getvalue()


def test_zip64_extra_field_too_short() -> None:
    data = bytearray(zip64())
    (name_len,) = struct.unpack_from("<H", data, 26)
    extra = 30 + name_len
    assert struct.unpack_from("<H", data, extra)[0] == 0x0001
    struct.pack_into("<H", data, extra + 2, 4)  # claims 4 bytes: too short for a size
    _, sink = decode(bytes(data))
    assert sink.unscannables[0] == "zip: bad zip64 extra field"


FUZZ_SEEDS: dict[str, bytes] = {
    "gzip": gz(CSV * 3),
    "zstd": zstandard.ZstdCompressor(write_checksum=True).compress(CSV * 3),
    "bz2": bz(CSV * 3),
    "xz": xz(CSV * 3),
    "zip": make_zip([("a.csv", CSV), ("b.txt", TEXT)]),
    "zip-descriptors": make_zip([("a.csv", CSV), ("b.txt", TEXT)], stream=True),
    "zip64": zip64(),
    "tar-pax": make_tar([("a" * 120, CSV), ("b", TEXT)]),
    "tar-gnu": make_tar([("a" * 120, CSV)], tarfile.GNU_FORMAT),
}


@given(
    seed=st.sampled_from(sorted(FUZZ_SEEDS)),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.integers(min_value=0),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=6),
)
def test_damaged_input_never_raises(
    seed: str, flips: list[tuple[int, int]], cut: int | None, cuts: list[int]
) -> None:
    data = bytearray(FUZZ_SEEDS[seed])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    damaged = bytes(data if cut is None else data[: cut % (len(data) + 1)])
    info, whole = decode(damaged)  # Recorder asserts the member calls are well formed
    _, chunked = decode(damaged, chunks_at(damaged, cuts))
    assert chunked.events == whole.events
    assert isinstance(info, ContentInfo)


# --------------------------------------------------------------------------- encrypted content

RESIDENT_IDS = b"".join(b"BT (1101011990%08d) Tj ET\n" % i for i in range(200))


def pgp_skesk_message(body: bytes) -> bytes:
    """gpg --symmetric: a v4 SKESK (legacy header) then a SEIPD packet (RFC 9580)."""
    skesk = bytes([0x8C, 13, 4, 9, 3, 8]) + b"saltsalt" + bytes([0x60])
    seipd = b"\x01" + body
    return skesk + bytes([0xD2, 0xFF]) + struct.pack(">I", len(seipd)) + seipd


def pgp_pkesk_message(body: bytes, recipients: int = 2) -> bytes:
    """gpg --encrypt: v3 PKESK packets (new and legacy headers) then a SEIPD packet."""
    mpi = struct.pack(">H", 2048) + random.Random(3).randbytes(256)
    pkesk_body = b"\x03" + b"KEYIDKEY" + b"\x01" + mpi
    packets = b""
    for i in range(recipients):
        if i % 2:
            packets += bytes([0x85]) + struct.pack(">H", len(pkesk_body)) + pkesk_body
        else:  # new format, two-octet length
            length = len(pkesk_body) - 192
            packets += bytes([0xC1, (length >> 8) + 192, length & 0xFF]) + pkesk_body
    return packets + bytes([0xD2, 0xFF]) + struct.pack(">I", len(body) + 1) + b"\x01" + body


def armor(kind: str, data: bytes) -> bytes:
    lines = base64.encodebytes(data).decode()
    return f"-----BEGIN {kind}-----\n\n{lines}-----END {kind}-----\n".encode()


def age_encrypt(data: bytes, armored: bool = False) -> bytes:
    identity = pyrage.x25519.Identity.generate()
    out: bytes = pyrage.encrypt(data, [identity.to_public()], armored=armored)
    return out


SMALL = 100
LARGE = (1 << 20) + 100


@pytest.mark.parametrize("size", [SMALL, LARGE])
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda body: b"Salted__" + b"12345678" + body, "openssl: encrypted content"),
        (age_encrypt, "age: encrypted content"),
        (pgp_skesk_message, "pgp: encrypted content"),
        (pgp_pkesk_message, "pgp: encrypted content"),
        (lambda body: pgp_pkesk_message(body, recipients=1), "pgp: encrypted content"),
    ],
)
def test_binary_encrypted_content_is_unscannable_whatever_its_size(
    make: Callable[[bytes], bytes], reason: str, size: int
) -> None:
    data = make(random.Random(size).randbytes(size))
    _, sink = decode(data)
    assert sink.events == [("unscannable", reason)]
    _, inside = decode(gz(make_tar([("secret.bin", data), ("a.csv", CSV)])))
    assert inside.events == [("unscannable", reason), ("member", "text/csv", CSV)]


@pytest.mark.parametrize(
    "data",
    [
        armor("PGP MESSAGE", pgp_skesk_message(b"x" * 300)),
        age_encrypt(b"110101199003077777\n" * 100, armored=True),
        b"Hi,\nthe file:\n\n" + armor("PGP MESSAGE", b"\x85" * 90),
    ],
)
def test_armored_encrypted_text_is_text_for_the_matcher(data: bytes) -> None:
    # The armor is reported by the matcher wherever it starts (tests/classify/
    # test_matcher.py); the decoder passes the member on as text.
    _, sink = decode(data)
    assert sink.events == [("member", "text/plain", data)]
    _, bytewise = decode(data, one_byte_chunks(data))
    assert bytewise.events == sink.events


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x8C, 13, 4]) + bytes(200),  # an SKESK-like start without a data packet
        bytes([0x85, 0x01, 0x0C, 0x03]) + random.Random(5).randbytes(300),
        b"\xc3\x0d\x04" + random.Random(6).randbytes(300),
    ],
)
def test_pgp_lookalikes_are_unknown_binaries(data: bytes) -> None:
    _, sink = decode(data)
    assert sink.events == [("unscannable", "binary: unknown format")]


def test_random_binaries_are_not_taken_for_encrypted_messages() -> None:
    rng = random.Random(11)
    for _ in range(500):
        blob = rng.randbytes(rng.randint(1, 2000))
        _, sink = decode(blob)
        assert not any("encrypted" in reason for reason in sink.unscannables)


# --------------------------------------------------------------------------- known binaries


def make_pdf(
    content: bytes, *, flate: bool = False, encrypt: bool = False, escaped: bool = False
) -> bytes:
    """A small PDF with one page whose content stream is ``content``."""
    stream = zlib.compress(content) if flate else content
    if escaped:
        filter_entry = b"/F#69lter /Fl#61teDecode "
    else:
        filter_entry = b"/Filter /FlateDecode " if flate else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< " + filter_entry + b"/Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    if encrypt:
        objects.append(b"<< /Filter /Standard /V 2 /R 3 /Length 128 /P -4 /O <00> /U <00> >>")
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    encrypt_entry = b" /Encrypt 5 0 R /ID [<01> <01>]" if encrypt else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, encrypt_entry)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


@pytest.mark.parametrize(
    ("pdf", "reason"),
    [
        (make_pdf(RESIDENT_IDS, flate=True), "pdf: compressed streams not inspected"),
        (
            make_pdf(zlib.compress(RESIDENT_IDS), escaped=True),
            "pdf: compressed streams not inspected",
        ),
        (make_pdf(RESIDENT_IDS, encrypt=True), "pdf: encrypted content"),
        (make_pdf(RESIDENT_IDS, flate=True, encrypt=True), "pdf: encrypted content"),
    ],
)
def test_pdf_with_compressed_or_encrypted_streams_is_unscannable(pdf: bytes, reason: str) -> None:
    info, sink = decode(pdf)
    assert sink.events == [("member", "application/pdf", pdf), ("unscannable", reason)]
    assert info == ContentInfo("application/pdf", None, ())
    # The markers are found wherever a chunk boundary cuts them.
    marker = b"/Encrypt" if "encrypted" in reason else b"/F"
    at = pdf.rindex(marker)
    for cut in range(at - 1, at + 12):
        _, chunked = decode(pdf, chunks_at(pdf, [cut, cut + 3]))
        assert chunked.events == sink.events, cut
    _, bytewise = decode(pdf, one_byte_chunks(pdf))
    assert bytewise.events == sink.events


def test_pdf_markers_past_the_sniff_prefix_are_found() -> None:
    pdf = make_pdf(b"BT (" + b"x" * (SNIFF_BYTES * 2) + b") Tj ET\n", encrypt=True)
    _, sink = decode(pdf, chunks_at(pdf, range(0, len(pdf), 4093)))
    assert sink.unscannables == ["pdf: encrypted content"]


def test_pdf_of_plain_streams_is_scanned_raw() -> None:
    pdf = make_pdf(RESIDENT_IDS)
    _, sink = decode(pdf)
    assert sink.events == [("member", "application/pdf", pdf)]


OLE_SECTOR = 512
FREESECT, ENDOFCHAIN, FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def ole_entry(name: str, kind: int, start: int, size: int, child: int = FREESECT) -> bytes:
    encoded = name.encode("utf-16-le") + b"\x00\x00"
    return (
        encoded.ljust(64, b"\x00")
        + struct.pack("<HBB", len(encoded), kind, 1)
        + struct.pack("<III", FREESECT, FREESECT, child)
        + bytes(16 + 4 + 16)
        + struct.pack("<IQ", start, size)
    )


def make_ole(stream_name: str, body: bytes) -> bytes:
    """A compound file (MS-CFB v3): header, FAT, ``body`` as one stream, directory last."""
    data_sectors = -(-len(body) // OLE_SECTOR)
    directory = 1 + data_sectors
    fat = [FATSECT, *range(2, 1 + data_sectors), ENDOFCHAIN, ENDOFCHAIN]
    assert len(fat) <= OLE_SECTOR // 4, "one FAT sector in this builder"
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + bytes(16)
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + bytes(6)
        + struct.pack("<IIIIIIIII", 0, 1, directory, 0, 0, ENDOFCHAIN, 0, ENDOFCHAIN, 0)
        + struct.pack("<109I", 0, *([FREESECT] * 108))
    )
    fat_sector = struct.pack(f"<{len(fat)}I", *fat).ljust(OLE_SECTOR, b"\xff")
    entries = ole_entry("Root Entry", 5, ENDOFCHAIN, 0, child=1) + ole_entry(
        stream_name, 2, 1, len(body)
    )
    return (
        header
        + fat_sector
        + body.ljust(data_sectors * OLE_SECTOR, b"\x00")
        + entries.ljust(OLE_SECTOR, b"\x00")
    )


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        ("EncryptedPackage", "ole: encrypted content"),
        ("WordDocument", "ole: document streams not inspected"),
    ],
)
def test_ole_documents_are_unscannable(stream: str, reason: str) -> None:
    # The directory sits after 60 KiB of stream data: past nothing but the
    # marker search, and cut by chunk boundaries at every offset around it.
    text = "身份證號碼：A123456(3)\n".encode("utf-16-le") * 2000
    ole = make_ole(stream, text[: 60 << 10])
    _, sink = decode(ole)
    assert sink.events == [("member", "application/x-ole-storage", ole), ("unscannable", reason)]
    at = ole.index(stream.encode("utf-16-le"))
    for cut in range(at - 2, at + 34):
        _, chunked = decode(ole, chunks_at(ole, [cut]))
        assert chunked.events == sink.events, cut


def sqlite_file(tmp_path: pathlib.Path, encoding: str) -> bytes:
    path = tmp_path / f"{encoding}.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA encoding = '{encoding}'")
        db.execute("CREATE TABLE people (name TEXT, hkid TEXT)")
        db.execute("INSERT INTO people VALUES ('陳大文', 'A123456(3)')")
        db.commit()
    return path.read_bytes()


def test_sqlite_utf8_is_scanned_raw(tmp_path: pathlib.Path) -> None:
    data = sqlite_file(tmp_path, "UTF-8")
    _, sink = decode(data)
    assert sink.events == [("member", "application/vnd.sqlite3", data)]
    assert "陳大文".encode() in data


@pytest.mark.parametrize("encoding", ["UTF-16le", "UTF-16be"])
def test_sqlite_utf16_is_unscannable(tmp_path: pathlib.Path, encoding: str) -> None:
    # Refused whole: its raw bytes are no longer fed after the refusal.
    data = sqlite_file(tmp_path, encoding)
    info, sink = decode(data)
    assert sink.events == [("unscannable", "sqlite: UTF-16 text not inspected")]
    assert info == ContentInfo("application/vnd.sqlite3", None, ())


@pytest.mark.parametrize(
    ("magic", "reason"),
    [
        (b"PAR1", "parquet: compressed columns not inspected"),
        (b"\x89HDF\r\n\x1a\n", "hdf5: datasets not inspected"),
    ],
)
def test_compressed_binary_formats_are_unscannable(magic: bytes, reason: str) -> None:
    _, sink = decode(magic + zlib.compress(RESIDENT_IDS))
    assert sink.events == [("unscannable", reason)]


# --------------------------------------------------------------------------- sniffing and charsets


@pytest.mark.parametrize(
    ("text", "media_type"),
    [
        (
            b">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF\n"
            b"LSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHV*\n",
            "text/x-fasta-protein",
        ),
        (b"> Hi team\nThanks\n> see below\n", "text/plain"),
        (b">chr1 soft-masked\nACGTacgtNNNNRYACGTACGT\nacgtacgt--ACGT\n", "text/x-fasta"),
        (b">r1\nACGU\n;comment\n>r2\nUUGACC\n", "text/x-fasta"),
        (b"@alice\nThanks\n+1 agreed\n", "text/plain"),
    ],
)
def test_fasta_requires_nucleotide_sequence_lines(text: bytes, media_type: str) -> None:
    assert sniff_text_type(text, complete=True) == media_type
    _, sink = decode(text)
    assert sink.members == [(media_type, text)]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_cjk_without_bom_is_transcoded(codec: str) -> None:
    text = "身份證號碼：Ａ１２３４５６（３），電話：９８７６５４３２\n" * 50
    data = text.encode(codec)
    info, sink = decode(data)
    expected = fold_fullwidth(text.encode())
    assert b"A123456(3)" in expected
    assert sink.events == [("member", "text/csv", expected)]  # "，" folds to ","
    assert info == ContentInfo("text/csv", codec[:6] + codec[7:], ())
    _, bytewise = decode(data, one_byte_chunks(data))
    assert bytewise.events == sink.events


def test_big5_marking_is_read_as_big5() -> None:
    data = "限閱文件\n附件\n".encode("big5")
    info, sink = decode(data)
    assert sink.members == [("text/plain", "限閱文件\n附件\n".encode())]
    assert info.charset == "big5"


ENCRYPTED_SEEDS: dict[str, bytes] = {
    "pgp-pkesk": pgp_pkesk_message(b"x" * 64),
    "pgp-skesk": pgp_skesk_message(b"x" * 64),
    "pgp-armor": armor("PGP MESSAGE", pgp_skesk_message(b"x" * 64)),
    "pdf": make_pdf(RESIDENT_IDS[:300], flate=True, encrypt=True),
    "ole": make_ole("EncryptedPackage", b"x" * 600),
    "utf16-cjk": "身份證號碼：Ａ１２３４５６（３）\n".encode("utf-16-le") * 4,
    "big5": "限閱文件\n附件\n".encode("big5"),
}


@given(
    seed=st.sampled_from(sorted(ENCRYPTED_SEEDS)),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.integers(min_value=0),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=6),
)
def test_damaged_encrypted_and_cjk_inputs_never_raise_and_are_chunk_invariant(
    seed: str, flips: list[tuple[int, int]], cut: int | None, cuts: list[int]
) -> None:
    data = bytearray(ENCRYPTED_SEEDS[seed])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    damaged = bytes(data if cut is None else data[: cut % (len(data) + 1)])
    info, whole = decode(damaged)
    _, chunked = decode(damaged, chunks_at(damaged, cuts))
    assert chunked.events == whole.events
    assert isinstance(info, ContentInfo)


# --------------------------------------------------------------------------- member names


LONG_DIR = "patients/" + "d" * 120 + "/"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_member_names_are_scanned_whatever_the_header_format(fmt: int) -> None:
    # ustar splits a long path into prefix + name, GNU writes an 'L' member
    # before it, pax a "path" record: each way the whole path is the name.
    long_path = LONG_DIR + "110101199003077777.csv"
    data = make_tar([("a.csv", CSV), (long_path, b"x,y\n")], fmt)
    info, sink = decode(data)
    assert sink.names == scanned(b"a.csv", long_path.encode())
    assert sink.members == [("text/csv", CSV), ("text/plain", b"x,y\n")]
    assert info.layers == ("tar",)
    _, bytewise = decode(data, one_byte_chunks(data))
    assert (bytewise.names, bytewise.events) == (sink.names, sink.events)


def test_tar_directories_and_links_names_are_scanned() -> None:
    """An extraction creates them: a directory's name, a link's name and its target
    (the header's 100 bytes of it) are scanned as member names, once each."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        folder = tarfile.TarInfo(LONG_DIR)  # a long directory name: an 'L' member first
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        archive.addfile(tarfile.TarInfo(LONG_DIR + "empty.txt"), io.BytesIO(b""))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "x" * 200
        archive.addfile(link)
        info = tarfile.TarInfo("b.csv")
        info.size = len(CSV)
        archive.addfile(info, io.BytesIO(CSV))
    _, sink = decode(out.getvalue())
    assert sink.names == scanned(
        LONG_DIR.encode(), (LONG_DIR + "empty.txt").encode(), b"link", b"x" * 100, b"b.csv"
    )


def test_pax_comments_and_global_records_are_scanned() -> None:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out,
        mode="w",
        format=tarfile.PAX_FORMAT,
        pax_headers={"comment": "batch 13812345678"},
    ) as archive:
        info = tarfile.TarInfo("b.csv")
        info.size = len(CSV)
        info.pax_headers = {"comment": "owner 110101199003077777"}
        archive.addfile(info, io.BytesIO(CSV))
    _, sink = decode(out.getvalue())
    assert sink.names == [b"batch 13812345678", b"owner 110101199003077777", b"b.csv"]
    assert sink.members == [("text/csv", CSV)]


def test_a_pax_link_target_is_scanned_once_and_whole() -> None:
    """A pax ``linkpath`` is the target an extraction creates: it is scanned in place
    of the header's 100-byte field (scanning both found one identifier twice, the
    second time cut)."""
    target = "患者/" + "x" * 120 + "/110101199003077777.csv"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        link = tarfile.TarInfo("latest")
        link.type, link.linkname = tarfile.SYMTYPE, target
        archive.addfile(link)
    _, sink = decode(out.getvalue())
    assert sink.names == scanned(b"latest", target.encode())


def test_gzip_file_name_and_comment_are_scanned() -> None:
    body = gzip.compress(CSV)
    flags = 8 | 16  # FNAME, FCOMMENT
    named = (
        body[:3]
        + bytes([flags])
        + body[4:10]
        + b"13812345678.csv\0note 110101199003077777\0"
        + body[10:]
    )
    assert gzip.decompress(named) == CSV
    info, sink = decode(named)
    assert info.type == "text/csv"
    assert sink.names == [b"13812345678.csv", b"note 110101199003077777"]
    assert sink.members == [("text/csv", CSV)]
    # Cut inside the name: the header never ends, and no part of it is scanned.
    _, cut = decode(named[:20])
    assert (cut.unscannables, cut.names) == (["gzip: truncated stream"], [])
    # A name no gzip tool writes (over 64 KiB) ends the stream: unscannable.
    flooded = body[:3] + bytes([8]) + body[4:10] + b"n" * (70 << 10) + b"\0" + body[10:]
    _, long = decode(flooded)
    assert (long.unscannables, long.names) == (["gzip: header over 64 KiB"], [])


def test_zip_member_names_are_scanned_in_utf8_gbk_and_when_encrypted() -> None:
    name = "病历/张三_13812345678.csv"
    data = make_zip([(name, CSV), ("plain.txt", b"hello\n")])
    _, sink = decode(data)
    assert sink.names == scanned(name.encode(), b"plain.txt")
    # Written by a Chinese archiver: GBK bytes, no UTF-8 flag (bit 11).
    gbk = data.replace(name.encode(), name.encode("gbk") + b"\0" * 7)
    gbk = gbk.replace(b"\x00\x08", b"\x00\x00")  # clear the UTF-8 flag
    _, legacy = decode(gbk)
    assert legacy.names[0].startswith(scanned(name.encode())[0])
    # An encrypted member's content is unreadable, its name is not.
    locked = patch_first_local_header(make_zip([("13812345678.txt", b"secret")]), 6, 0x01)
    _, sink = decode(locked)
    assert sink.names == [b"13812345678.txt"]
    assert sink.unscannables == ["zip: encrypted member"]


def test_nested_archive_names_are_scanned_at_every_depth() -> None:
    inner = make_zip([("inner_id_110101199003077777.txt", b"x\n")])
    _, sink = decode(gz(make_tar([("outer.zip", inner)])))
    assert sink.names == scanned(b"outer.zip", b"inner_id_110101199003077777.txt")


def test_a_member_name_is_bounded() -> None:
    long_name = "n" * 10_000 + ".csv"
    _, sink = decode(make_tar([(long_name, b"x\n")]))
    assert sink.names == [long_name.encode()[:NAME_MAX_BYTES]]
