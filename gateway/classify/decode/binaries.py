"""Known binary formats the decoder itself handles, registered in the format registry.

The decoder never feeds the raw bytes of an unknown binary to the matcher:
binary-encoded numbers hide there ("fed raw up to 1 MiB" let a small file of
thousands of phone numbers through). What it knows, it registers here as
formats (:mod:`gateway.classify.formats`), so the sniffer has one place to
ask instead of an if-chain:

====================  ======================================================
format                handling
====================  ======================================================
PNG JPEG GIF WebP     pixels or samples only: pass, nothing scanned (their
TIFF MP4              metadata readers come from ``formats.media``)
PDF                   fed raw, and the whole file searched: ``/Encrypt``
                      -> "pdf: encrypted content"; any ``/Filter`` or
                      #-escaped name -> "pdf: compressed streams not
                      inspected" (a PDF of plain streams passes raw)
OLE (.doc .xls .ppt)  fed raw, always unscannable: UTF-16LE text, binary
                      numbers; "ole: encrypted content" when it holds an
                      ``EncryptedPackage`` stream (encrypted OOXML)
SQLite                fed raw (its text is stored as is); a UTF-16
                      database is "sqlite: UTF-16 text not inspected"
Parquet, HDF5         refused: compressed pages, binary datasets
7z RAR LZ4 compress   refused: "<name>: cannot be opened" (compressed or
BAM CRAM BCF          bit-packed; BAM, CRAM and BCF hold genetic data)
====================  ======================================================

Every one of them is registered at :data:`FALLBACK_PRIORITY`, under a name of
its own (``pdf-raw``, ``png-pixels`` …): when a family module registers a
reader of the same format (``formats.documents`` a PDF reader), the family's
reader wins the sniff and these are never used. Encrypted formats are in
:mod:`gateway.classify.decode.encrypted`.

A binary that nothing here or in the registry recognises is unscannable from
its first byte, with a reason naming what it looked like
(:func:`unknown_binary_reason`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract, StreamReader, TextOut, Unscannable

#: Priority of the formats registered here: below any family reader (the
#: default priority is 0), so a family's reader of the same bytes wins.
FALLBACK_PRIORITY: Final = -100

PDF: Final = "application/pdf"
OLE: Final = "application/x-ole-storage"
SQLITE: Final = "application/vnd.sqlite3"

#: SQLite header offset 56: the database text encoding, big-endian 1 (UTF-8),
#: 2 (UTF-16le) or 3 (UTF-16be) (sqlite.org/fileformat.html §1.3.13).
_SQLITE_ENCODING_OFFSET: Final = 56
_SQLITE_HEADER_BYTES: Final = _SQLITE_ENCODING_OFFSET + 4
_SQLITE_UTF8: Final = 1
_SQLITE_UTF16: Final = frozenset((2, 3))
#: Markers searched through a whole PDF (with a tail carried across chunks):
#: the trailer's /Encrypt entry (ISO 32000-1 §7.5.5, also in cross-reference
#: stream dictionaries), any stream /Filter (FlateDecode, LZW, ASCII85 …: the
#: stream's text is not the raw bytes), and any name written with a #xx
#: escape (§7.3.5), which could spell either of those without their bytes.
#: PDF names are at most 127 bytes (ISO 32000-1 Annex C); the names that
#: matter here are under 25 bytes even with every character escaped.
_PDF_ENCRYPT: Final = b"/Encrypt"
_PDF_FILTER: Final = b"/Filter"
_PDF_NAME_MAX: Final = 127
_PDF_ESCAPED_NAME: Final = re.compile(
    rb"/[^\x00\t\n\x0c\r ()<>\[\]{}/%%]{0,%d}#[0-9A-Fa-f]{2}" % (_PDF_NAME_MAX - 3)
)
#: The name of the stream an encrypted OOXML document (ECMA-376 agile or
#: standard encryption, MS-OFFCRYPTO §2.3.4) keeps its ciphertext in, as it
#: appears in the compound file directory (UTF-16LE).
_OLE_ENCRYPTED: Final = "EncryptedPackage".encode("utf-16-le")

#: What an unidentified binary starts like (magic, offset, description), for
#: the reason that refuses it: the sender learns what was not understood.
_LOOKS_LIKE: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"\x7fELF", 0, "ELF executable"),
    (b"MZ", 0, "Windows executable"),
    (b"\xfe\xed\xfa\xce", 0, "Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", 0, "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", 0, "Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", 0, "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", 0, "Java class or Mach-O universal binary"),
    (b"\x00asm", 0, "WebAssembly module"),
    (b"\x93NUMPY", 0, "NumPy array"),
    (b"ARROW1", 0, "Arrow IPC file"),
    (b"ORC", 0, "ORC file"),
    (b"Obj\x01", 0, "Avro container"),
    (b"GGUF", 0, "GGUF model"),
    (b"DICM", 128, "DICOM"),
    (b"\x80\x02", 0, "Python pickle"),
    (b"\x80\x03", 0, "Python pickle"),
    (b"\x80\x04", 0, "Python pickle"),
    (b"\x80\x05", 0, "Python pickle"),
)


def unknown_binary_reason(prefix: bytes) -> str:
    """The unscannable reason for a binary no format recognised (from its first bytes)."""
    for magic, offset, description in _LOOKS_LIKE:
        if prefix.startswith(magic, offset):
            return f"binary: unknown format (starts like {description})"
    return "binary: unknown format"


# --------------------------------------------------------------------------- readers


class _Nothing:
    """Reads nothing: pixels and samples hold no text (metadata is a reader's job)."""

    __slots__ = ()

    def feed(self, data: bytes) -> None:
        """Drop ``data``."""

    def finish(self) -> None:
        """Nothing to report."""


def _nothing(out: Extract) -> StreamReader:
    return _Nothing()


class _Refuse:
    """Refuses the member at its first byte."""

    __slots__ = ("_reason",)

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def feed(self, data: bytes) -> None:
        """Refuse.

        Raises:
            Unscannable: always.
        """
        raise Unscannable(self._reason)

    def finish(self) -> None:
        """Refuse (an empty member too).

        Raises:
            Unscannable: always.
        """
        raise Unscannable(self._reason)


def refusing(reason: str) -> Callable[[Extract], StreamReader]:
    """A stream-reader factory that makes every member unscannable with ``reason``."""

    def make(out: Extract) -> StreamReader:
        return _Refuse(reason)

    return make


class MarkerScan:
    """Which of a few byte markers occur anywhere in a stream, across chunks.

    Each chunk is searched whole, and its first bytes once more behind the
    last ``keep`` bytes of what came before, so a marker cut by a chunk
    boundary is found too: what is found does not depend on chunking.
    """

    __slots__ = ("_keep", "_markers", "_pattern", "_tail", "seen")

    def __init__(self, markers: tuple[bytes, ...], pattern: re.Pattern[bytes] | None) -> None:
        self._markers = markers
        self._pattern = pattern
        longest = max(len(marker) for marker in markers)
        if pattern is not None:
            longest = max(longest, _PDF_NAME_MAX + 1)
        self._keep = longest - 1
        self._tail = b""
        #: Indexes of the markers seen; ``len(markers)`` stands for the pattern.
        self.seen: set[int] = set()

    def feed(self, data: bytes) -> None:
        """Search the next bytes of the stream."""
        keep, seen = self._keep, self.seen
        window = self._tail + data[:keep]
        for index, marker in enumerate(self._markers):
            if index not in seen and (marker in window or marker in data):
                seen.add(index)
        pattern = self._pattern
        if (
            pattern is not None
            and len(self._markers) not in seen
            and (pattern.search(window) or pattern.search(data))
        ):
            seen.add(len(self._markers))
        self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]


def _raw_text(data: bytes) -> str:
    """Raw bytes as text the decoder writes back byte for byte (PEP 383 escapes)."""
    return data.decode("utf-8", "surrogateescape")


class _RawInspected:
    """A known binary fed raw whose whole byte stream is searched for markers.

    At its end it is unscannable with the first reason (in table order) whose
    marker was seen, or ``always`` when none was (None: nothing to report).
    """

    __slots__ = ("_always", "_member", "_reasons", "_scan")

    def __init__(
        self,
        out: Extract,
        media_type: str,
        scan: MarkerScan,
        reasons: tuple[str, ...],
        always: str | None,
    ) -> None:
        self._member = out.member("", media_type)
        self._scan = scan
        self._reasons = reasons
        self._always = always

    def feed(self, data: bytes) -> None:
        """Search ``data`` and pass it on raw."""
        self._scan.feed(data)
        self._member.write(_raw_text(data))

    def finish(self) -> None:
        """End the member; refuse it when a marker said so.

        Raises:
            Unscannable: a marker was seen, or the format is never inspected.
        """
        self._member.close()
        seen = self._scan.seen
        reason = next((r for i, r in enumerate(self._reasons) if i in seen), self._always)
        if reason is not None:
            raise Unscannable(reason)


def _pdf_raw(out: Extract) -> StreamReader:
    scan = MarkerScan((_PDF_ENCRYPT, _PDF_FILTER), _PDF_ESCAPED_NAME)
    reasons = (
        "pdf: encrypted content",
        "pdf: compressed streams not inspected",
        "pdf: compressed streams not inspected",  # an escaped name may spell either
    )
    return _RawInspected(out, PDF, scan, reasons, None)


def _ole_raw(out: Extract) -> StreamReader:
    # Word and Excel 97-2003 keep text as UTF-16LE (any non-Latin-1 text) and
    # numbers as binary doubles, in sector chains the raw bytes do not show in
    # order: never inspected, and an encrypted OOXML package says so.
    scan = MarkerScan((_OLE_ENCRYPTED,), None)
    always = "ole: document streams not inspected"
    return _RawInspected(out, OLE, scan, ("ole: encrypted content",), always)


class _SqliteRaw:
    """A UTF-8 SQLite database fed raw (its text is stored as is); UTF-16 is refused."""

    __slots__ = ("_head", "_member", "_out")

    def __init__(self, out: Extract) -> None:
        self._out = out
        self._head = bytearray()
        self._member: TextOut | None = None

    def feed(self, data: bytes) -> None:
        """Check the header once it is in, then pass bytes on raw.

        Raises:
            Unscannable: a UTF-16 or corrupt header.
        """
        if self._member is None:
            self._head += data
            if len(self._head) < _SQLITE_HEADER_BYTES:
                return
            data, self._head = bytes(self._head), bytearray()
            self._start(data)
        assert self._member is not None
        self._member.write(_raw_text(data))

    def _start(self, head: bytes) -> None:
        field = head[_SQLITE_ENCODING_OFFSET:_SQLITE_HEADER_BYTES]
        encoding = int.from_bytes(field, "big")
        if encoding in _SQLITE_UTF16:
            raise Unscannable("sqlite: UTF-16 text not inspected")
        if encoding != _SQLITE_UTF8:
            raise Unscannable("sqlite: corrupt header")
        self._member = self._out.member("", SQLITE)

    def finish(self) -> None:
        """End the member.

        Raises:
            Unscannable: the database ended inside its header.
        """
        if self._member is None:
            self._start(bytes(self._head))
        assert self._member is not None
        self._member.close()


# --------------------------------------------------------------------------- registry


def _webp(prefix: bytes) -> bool:
    return prefix.startswith(b"RIFF") and prefix.startswith(b"WEBP", 8)


#: Pixels and samples only (the sniff, media type and name of each): they pass,
#: nothing scanned. Their metadata (EXIF, XMP, text chunks) is for readers
#: registered by ``formats.media``, which outrank these.
_PIXELS: Final[tuple[tuple[str, str, Callable[[bytes], bool]], ...]] = (
    ("png-pixels", "image/png", Magic(b"\x89PNG\r\n\x1a\n")),
    ("jpeg-pixels", "image/jpeg", Magic(b"\xff\xd8\xff")),
    ("gif-pixels", "image/gif", Magic(b"GIF87a", b"GIF89a")),
    ("tiff-pixels", "image/tiff", Magic(b"II*\x00", b"MM\x00*")),
    ("webp-pixels", "image/webp", _webp),
    ("mp4-samples", "video/mp4", Magic(b"ftyp", offset=4)),
)

#: Refused until a family module registers a reader: (name, media type, magic,
#: reason). Parquet pages are compressed (Snappy, gzip, zstd) and
#: plain-encoded values are binary; HDF5 datasets are binary arrays, usually
#: chunked through a deflate filter; the rest are compressed or bit-packed
#: (BAM, CRAM and BCF hold sequence and genotype data, human genetic resources).
_REFUSED: Final[tuple[tuple[str, str, bytes, str], ...]] = (
    (
        "parquet-unread",
        "application/vnd.apache.parquet",
        b"PAR1",
        "parquet: compressed columns not inspected",
    ),
    ("hdf5-unread", "application/x-hdf5", b"\x89HDF\r\n\x1a\n", "hdf5: datasets not inspected"),
    ("7z", "application/x-7z-compressed", b"7z\xbc\xaf\x27\x1c", "7z: cannot be opened"),
    ("rar", "application/vnd.rar", b"Rar!\x1a\x07", "rar: cannot be opened"),
    ("lz4", "application/x-lz4", b"\x04\x22\x4d\x18", "lz4: cannot be opened"),
    ("compress", "application/x-compress", b"\x1f\x9d", "compress: cannot be opened"),
    ("bam-unread", "application/x-bam", b"BAM\x01", "bam: cannot be opened"),
    ("cram-unread", "application/x-cram", b"CRAM", "cram: cannot be opened"),
    ("bcf-unread", "application/x-bcf", b"BCF\x02", "bcf: cannot be opened"),
)

#: Every format this module registers.
BUILTIN_FORMATS: Final[tuple[Format, ...]] = (
    *(
        Format(name, media_type, sniff, stream=_nothing, priority=FALLBACK_PRIORITY)
        for name, media_type, sniff in _PIXELS
    ),
    Format("pdf-raw", PDF, Magic(b"%PDF-"), stream=_pdf_raw, priority=FALLBACK_PRIORITY),
    Format(
        "ole-raw",
        OLE,
        Magic(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
        stream=_ole_raw,
        priority=FALLBACK_PRIORITY,
    ),
    Format(
        "sqlite-raw",
        SQLITE,
        Magic(b"SQLite format 3\x00"),
        stream=_SqliteRaw,
        priority=FALLBACK_PRIORITY,
    ),
    *(
        Format(name, media_type, Magic(magic), stream=refusing(reason), priority=FALLBACK_PRIORITY)
        for name, media_type, magic, reason in _REFUSED
    ),
)
for _fmt in BUILTIN_FORMATS:
    register(_fmt)
