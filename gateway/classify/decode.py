"""Streaming decode layers: raw bytes in, normalised text members out.

The :class:`Decoder` sits between the scanner's input and the matcher. It
opens containers and compressions as they stream (gzip, zstd, bz2, xz, zip,
tar; nested up to :attr:`ScanLimits.max_depth`), decides each member's type and
charset on a bounded prefix, and hands every member to a :class:`TextSink` as
normalised UTF-8 (see :mod:`gateway.classify.charset`). It never holds a whole
member: every buffer below is bounded by a named constant.

Design decisions the spec leaves open (recorded here and in the docs):

* **Decide by content, never by file name.** Every stream — the input, each
  decompressed stream, each archive member — starts in a sniffer that buffers
  its first :data:`SNIFF_BYTES` (or all of it when shorter) and only then
  decides. The decision therefore never depends on how the input was chunked.
* **Chunk invariance under limits.** Decompressing layers re-cut their input
  into fixed :data:`BLOCK_BYTES` blocks before decompressing, so the
  decompressor sees the same calls for every chunking and a limit trips at the
  same output byte whatever the chunk sizes were.
* **"Sustained" expansion ratio.** A decompressing layer (or zip member) is
  refused once its output exceeds :data:`RATIO_GRACE_BYTES` *and* its
  cumulative output is more than ``max_ratio`` times its cumulative input. The
  grace keeps small, very compressible files (a page of zeros, a short
  repetitive log) scannable; past it the average ratio decides. Input counts
  in whole blocks, so a bomb is stopped after at most
  max(4 MiB, 100 x 64 KiB) of output, in constant memory.
* **Known binaries** are handled per format: fail closed wherever raw bytes
  would not show the text (the product blocks ``content.unscannable``):

  ====================  ==================================================
  format                handling
  ====================  ==================================================
  PNG JPEG GIF WebP     fed raw: pixels hold no text, metadata chunks (tEXt,
  TIFF MP4 ELF          EXIF, XMP, udta, strings) are raw text
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
  ====================  ==================================================

  **Member names** (zip names, tar paths from ustar, pax or GNU long-name
  headers) are scanned too, each as a text member of type :data:`NAME_TYPE`:
  a scanned ID card is often named by its number.

  **Encrypted content** is unscannable whatever its size ("<layer>:
  encrypted content"): ``openssl enc`` (``Salted__``), binary age and OpenPGP
  messages (session-key packets then an encrypted data packet) are refused;
  PGP and age ASCII armor is text: the matcher reports it wherever it starts
  in a text member (``detectors.ARMOR_MARKERS``), and the rest of the member
  is still scanned. **Unknown binary** members are fed raw up
  to ``unknown_binary_limit``; past it they are unscannable and the rest is
  dropped. **Opaque containers** we cannot open (7z, RAR, LZ4, compress, BAM,
  CRAM, BCF) are unscannable at once: they are compressed or packed, so raw
  scanning would see nothing.
* **Unscannable findings** are reported once per layer path and reason
  (``("gzip", "zip")`` + ``"zip: encrypted member"``): three encrypted members
  of one zip give one finding, and the number of findings is bounded by a
  constant however many members an archive has.
* **ContentInfo of an archive** describes its *dominant* member: the one with
  the most decoded bytes (the first one on a tie), with the layers opened to
  reach it. A policy asking "is this VCF data?" should see the 2 GB VCF, not
  the README next to it. An archive without members reports the archive type.
* **Zip** is read through its local headers (the central directory at the end
  is never needed). STORED, DEFLATE and BZIP2 members are opened; a STORED
  member with a data descriptor has no length to stop at and is refused (as
  Java's ``ZipInputStream`` does). CRCs are not verified: the classifier scans
  what an extractor would produce either way.
* **Decoder memory is reserved before it is allocated**, from the process-wide
  :class:`~gateway.classify.budget.DecoderBudget` through the scan's account:
  every layer its fixed buffers (:data:`LAYER_BUFFER_BYTES`,
  :data:`TAR_BUFFER_BYTES`), and each decompressor its window as its header
  declares it: the zstd frame header's window size (RFC 8878 §3.1.1.1.2), the
  LZMA2 dictionary size in the first xz block header (the decompressor's
  ``memlimit`` is then exactly what was reserved), the bzip2 block size digit,
  zlib's fixed 32 KiB window. A layer's reservation only grows (a decompressor
  keeps its largest buffers) and is given back when the layer ends or fails,
  and all of it when the decoder is closed. The rule: a layer that would take
  its scan past ``ScanLimits.max_decoder_bytes`` (or the whole budget) is
  unscannable ("zstd: decoder memory over 256 MiB"); one that fits but finds
  the budget held by other scans raises
  :class:`~gateway.classify.budget.DecoderBusy` (503 + ``Retry-After``).
  Reservations happen at fixed points of the byte stream (a layer's start, a
  frame, stream or member header within a re-cut block), so they too are the
  same for every chunking.
"""

from __future__ import annotations

import bz2
import csv
import io
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Final, Protocol, cast

import zstandard

from gateway.classify import charset as cs
from gateway.classify.budget import DecoderAccount, DecoderBudget
from gateway.classify.summary import ContentInfo

#: Bytes of each stream buffered before its type and charset are decided. A
#: tar header needs 512; 64 KiB of text holds ~20,000 CJK characters, far more
#: than the GB18030/Big5 frequency test needs, and costs 64 KiB per open layer.
SNIFF_BYTES: Final = 64 << 10
#: Decompressing layers re-cut their input into blocks of this size so that
#: limits trip at chunking-independent points (see the module docstring); one
#: such block is buffered per layer.
BLOCK_BYTES: Final = 64 << 10
#: Most output produced by one decompression step (zlib/bz2/lzma
#: ``max_length``, zstd ``write_size``): the bound on memory a bomb can make
#: us allocate at once, and the size of the chunks the sink receives.
STEP_BYTES: Final = 64 << 10
#: Output a decompressing layer may produce before the expansion ratio is
#: enforced ("sustained", SPEC §3.1). 4 MiB lets a small, extremely
#: compressible file through (gzip tops out near 1032:1, so 4 KiB of input)
#: while a bomb costs at most 4 MiB of decompression work before it is refused.
RATIO_GRACE_BYTES: Final = 4 << 20
#: Largest pax extended header we parse (tar 'x' members). POSIX sets no limit;
#: real ones are a few hundred bytes (long paths, sizes, xattrs); 1 MiB is a
#: generous bound on memory.
PAX_MAX_BYTES: Final = 1 << 20
#: Media type of the text member that carries an archive member's name: names
#: are scanned like text ("110101199003077777_scan.jpg" names a person), each
#: as a member of its own, so no identifier spans a name and a body.
NAME_TYPE: Final = "text/x-member-name"
#: Bytes of a member name scanned. Real paths stay under PATH_MAX (4096 on
#: Linux); pax and GNU long names are otherwise bounded only by their header.
NAME_MAX_BYTES: Final = 4096
#: xz decoder memory limit. ``xz -9``/``-9e`` need 65 MiB to decompress
#: (xz(1), "Memory usage"); anything larger was crafted and is refused.
XZ_MEMLIMIT_BYTES: Final = 72 << 20
#: Largest zstd window accepted: libzstd's own default decoding limit
#: (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27). Frames made with ``--long=28`` or more
#: are refused rather than allowed to allocate up to 2 GiB.
ZSTD_MAX_WINDOW_BYTES: Final = 1 << 27
#: Most decoder memory one scan may hold at once, over all its open layers
#: (``ScanLimits.max_decoder_bytes``). The largest zstd window with its layer
#: (128.8 MiB) plus an xz -9 member (64.3 MiB) and the buffers of two more
#: layers fit; two ``--long=27`` zstd windows nested in each other (257.6 MiB)
#: do not, and the inner one is unscannable. One hostile transfer thus holds
#: at most a quarter of the default 1 GiB process budget.
MAX_DECODER_BYTES: Final = 256 << 20
#: Fixed buffers of a decompressing layer (gzip, zstd, bz2, xz, zip): its
#: re-cut input block, one decompression step of output and its child
#: stream's sniff buffer. Reserved when the layer opens.
LAYER_BUFFER_BYTES: Final = BLOCK_BYTES + STEP_BYTES + SNIFF_BYTES
#: zlib inflate state: a 32 KiB window (1 << MAX_WBITS) plus about 7 KiB of
#: state (zlib's zconf.h, "memory requirements for inflate"), rounded up.
ZLIB_INFLATE_BYTES: Final = 48 << 10
#: bzip2 decompression without ``-s``: 100 kB + 4 bytes per byte of the block
#: size, 100 kB x the digit after ``BZh`` (bzip2 manual §2.6: 3700k for -9).
BZ2_BASE_BYTES: Final = 100_000
BZ2_PER_LEVEL_BYTES: Final = 400_000
#: xz decoder memory beyond the LZMA2 dictionary: liblzma 5.4 asks for
#: dictionary + 65,592 bytes (66,968 with a BCJ and a delta filter), measured
#: as the smallest ``memlimit`` that decodes; 128 KiB leaves room for other
#: liblzma versions.
XZ_STATE_BYTES: Final = 128 << 10
#: zstd decoder memory beyond the window: libzstd 1.5's context (95,968 bytes,
#: ``zstandard.estimate_decompression_context_size()``) and its block-sized
#: input and output buffers; measured 489,248 bytes over a 128 MiB window
#: (``ZstdDecompressor.memory_size()`` after a ``--long=27`` frame).
ZSTD_STATE_BYTES: Final = 640 << 10

_TAR_BLOCK: Final = 512
#: Fixed buffers of a tar layer: a header block, the largest pax header and
#: long name it collects, and its member's sniff buffer.
TAR_BUFFER_BYTES: Final = SNIFF_BYTES + PAX_MAX_BYTES + NAME_MAX_BYTES + _TAR_BLOCK
_ZERO_BLOCK: Final = bytes(_TAR_BLOCK)
#: Fixed part of a zip local file header after its 4-byte signature
#: (APPNOTE.TXT 4.3.7).
_ZIP_LOCAL_FIXED: Final = 26
_ZIP_LOCAL: Final = struct.Struct("<HHHHHIIIHH")


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Bounds on what the decoder expands (SPEC §3.1 ``content.unscannable``).

    Attributes:
        max_depth: container/compression layers opened one inside another
            (SPEC §3.1: "nested to depth 4"); a fifth is unscannable.
        max_ratio: sustained expansion ratio beyond which a decompressing layer
            is refused (SPEC §3.1: "ratio > 100:1 sustained"; see
            :data:`RATIO_GRACE_BYTES` for what sustained means).
        max_expanded_bytes: total bytes produced by all decompressing layers of
            one scan. 64 GiB is ~110 s of scanning at the 600 MB/s scan-path
            target, and still fits a 5 GB transfer (SPEC §9) compressed 10:1.
        unknown_binary_limit: an unknown binary member larger than this is
            unscannable (SPEC §3.1: 1 MiB).
        max_decoder_bytes: decoder memory (windows and layer buffers) one scan
            may hold at once; a layer that would need more is unscannable
            (see :data:`MAX_DECODER_BYTES`).
    """

    max_depth: int = 4
    max_ratio: float = 100.0
    max_expanded_bytes: int = 64 << 30
    unknown_binary_limit: int = 1 << 20
    max_decoder_bytes: int = MAX_DECODER_BYTES


class TextSink(Protocol):
    """Receiver of decoded text members (implemented by ``matcher.TextMatcher``)."""

    def begin_member(self, content_type: str) -> None:
        """A new member starts (``text/csv``, ``text/x-fasta``, ``image/png`` …)."""

    def text(self, data: bytes) -> None:
        """Normalised UTF-8 of the current member (raw bytes for binaries)."""

    def end_member(self) -> None:
        """The current member ends; identifiers never span two members."""

    def unscannable(self, reason: str) -> None:
        """One ``content.unscannable`` finding; ``reason`` names the layer."""


class _Stream(Protocol):
    def feed(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _Abort(Exception):
    """Raised inside a zstd write callback to stop a refused layer."""


class _Context:
    """State shared by every layer of one decoder."""

    __slots__ = (
        "best",
        "best_size",
        "expanded",
        "layers",
        "limits",
        "memory",
        "reported",
        "sink",
    )

    def __init__(self, sink: TextSink, limits: ScanLimits, memory: DecoderAccount) -> None:
        self.sink = sink
        self.limits = limits
        self.memory = memory
        #: Layers that may hold a decompressor, freed all at once when the
        #: decoder is closed early (a zstd layer and its writer form a cycle
        #: that only the garbage collector would otherwise break).
        self.layers: set[_Layer] = set()
        self.expanded = 0
        self.reported: set[tuple[tuple[str, ...], str]] = set()
        self.best: ContentInfo | None = None
        self.best_size = -1

    def unscannable(self, layers: tuple[str, ...], reason: str) -> None:
        key = (layers, reason)
        if key not in self.reported:
            self.reported.add(key)
            self.sink.unscannable(reason)

    def member_name(self, raw: bytes) -> None:
        """Scan an archive member's name, as a text member of type :data:`NAME_TYPE`.

        Zip names are UTF-8 (flag bit 11, or unflagged by most tools) or a
        legacy code page; Chinese archivers write GBK. Invalid UTF-8 is read
        as GB18030, which keeps ASCII (every identifier's digits) intact.
        """
        raw = raw[:NAME_MAX_BYTES]
        if not raw:
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("gb18030", "replace")
        self.sink.begin_member(NAME_TYPE)
        self.sink.text(cs.fold_fullwidth(text.encode()))
        self.sink.end_member()

    def member_done(self, info: ContentInfo, size: int) -> None:
        if size > self.best_size:
            self.best, self.best_size = info, size


# --------------------------------------------------------------------------- sniffing

_GZIP: Final = "gzip"
_ZSTD: Final = "zstd"
_BZ2: Final = "bz2"
_XZ: Final = "xz"
_ZIP: Final = "zip"
_TAR: Final = "tar"

#: Media type of each container we open.
_CONTAINER_TYPES: Final[dict[str, str]] = {
    _GZIP: "application/gzip",
    _ZSTD: "application/zstd",
    _BZ2: "application/x-bzip2",
    _XZ: "application/x-xz",
    _ZIP: "application/zip",
    _TAR: "application/x-tar",
}
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC: Final = b"\xfd7zXZ\x00"
#: bzip2 stream header: "BZh", block size 1-9, then a block magic (pi) or the
#: end-of-stream magic (sqrt(pi)) for an empty stream.
_BZ2_RE: Final = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
_ZIP_LOCAL_SIG: Final = b"PK\x03\x04"
_ZIP_EMPTY_SIG: Final = b"PK\x05\x06"
_ZIP_SPAN_SIG: Final = b"PK\x07\x08"
_ZIP_CENTRAL_SIG: Final = b"PK\x01\x02"
_ZIP_EOCD_SIG: Final = b"PK\x05\x06"
_ZIP64_EOCD_SIG: Final = b"PK\x06\x06"
_ZIP64_LOCATOR_SIG: Final = b"PK\x06\x07"
_ZIP_SIGNATURE_SIG: Final = b"PK\x05\x05"
_ZIP_ARCHIVE_EXTRA_SIG: Final = b"PK\x06\x08"
#: Records after the last member (APPNOTE 4.3.6), by signature: the size of
#: their fixed part after the signature. Each is walked, not scanned, so that
#: bytes appended after the end of the archive cannot hide there.
_ZIP_TAIL_FIXED: Final[dict[bytes, int]] = {
    _ZIP_CENTRAL_SIG: 42,
    _ZIP_EOCD_SIG: 18,
    _ZIP64_EOCD_SIG: 8,
    _ZIP64_LOCATOR_SIG: 16,
    _ZIP_SIGNATURE_SIG: 2,
    _ZIP_ARCHIVE_EXTRA_SIG: 4,
}

PDF: Final = "application/pdf"
OLE: Final = "application/x-ole-storage"
SQLITE: Final = "application/vnd.sqlite3"
#: Known binary formats (magic, offset, media type). Each is handled as the
#: module docstring's table says: images, video and executables are fed raw;
#: PDF, OLE and SQLite are fed raw and inspected; the rest are refused.
_KNOWN_BINARIES: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"%PDF-", 0, PDF),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"WEBP", 8, "image/webp"),
    (b"ftyp", 4, "video/mp4"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, OLE),
    (b"SQLite format 3\x00", 0, SQLITE),
    (b"PAR1", 0, "application/vnd.apache.parquet"),
    (b"\x89HDF\r\n\x1a\n", 0, "application/x-hdf5"),
    (b"\x7fELF", 0, "application/x-elf"),
)
#: Known binaries whose text the raw bytes do not show, refused outright
#: (media type -> reason): Parquet pages are compressed (Snappy, gzip, zstd)
#: and plain-encoded values are binary; HDF5 datasets are binary arrays,
#: usually chunked through a deflate filter.
_NOT_INSPECTED: Final[dict[str, str]] = {
    "application/vnd.apache.parquet": "parquet: compressed columns not inspected",
    "application/x-hdf5": "hdf5: datasets not inspected",
}
#: SQLite header offset 56: the database text encoding, big-endian 1 (UTF-8),
#: 2 (UTF-16le) or 3 (UTF-16be) (sqlite.org/fileformat.html §1.3.13).
_SQLITE_ENCODING_OFFSET: Final = 56
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
#: Binary encrypted formats recognised by their first bytes (magic, media
#: type, layer name): ``openssl enc`` with a salt, and age v1 (C2SP age spec).
_ENCRYPTED: Final[tuple[tuple[bytes, str, str], ...]] = (
    (b"Salted__", "application/x-openssl-encrypted", "openssl"),
    (b"age-encryption.org/v1\n", "application/x-age-encrypted", "age"),
)
_PGP_TYPE: Final = "application/pgp-encrypted"
#: OpenPGP packet tags (RFC 9580 §5): public-key and symmetric-key encrypted
#: session keys, which open every encrypted message, and the encrypted data
#: packets that follow them (SED, SEIPD, OCB/AEAD).
_PGP_PKESK, _PGP_SKESK = 1, 3
_PGP_DATA_TAGS: Final = frozenset((9, 18, 20))
#: Versions of those session-key packets (RFC 9580 §5.1, §5.3; v5 is the
#: LibrePGP variant).
_PGP_ESK_VERSIONS: Final[dict[int, frozenset[int]]] = {
    _PGP_PKESK: frozenset((3, 6)),
    _PGP_SKESK: frozenset((4, 5, 6)),
}
#: Session-key packets walked before giving up: one per recipient; 64 is more
#: than any real message carries and keeps the walk bounded.
_PGP_MAX_ESK: Final = 64
#: Opaque containers we cannot open (magic, media type, layer name): their
#: content is compressed or bit-packed, so they are unscannable outright. BAM,
#: CRAM and BCF hold sequence/genotype data (human genetic resources) in packed
#: binary the detectors cannot count.
_OPAQUE: Final[tuple[tuple[bytes, str, str], ...]] = (
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed", "7z"),
    (b"Rar!\x1a\x07", "application/vnd.rar", "rar"),
    (b"\x04\x22\x4d\x18", "application/x-lz4", "lz4"),
    (b"\x1f\x9d", "application/x-compress", "compress"),
    (b"BAM\x01", "application/x-bam", "bam"),
    (b"CRAM", "application/x-cram", "cram"),
    (b"BCF\x02", "application/x-bcf", "bcf"),
)

TEXT_PLAIN: Final = "text/plain"
TEXT_CSV: Final = "text/csv"
TEXT_TSV: Final = "text/tab-separated-values"
APPLICATION_JSON: Final = "application/json"
TEXT_FASTA: Final = "text/x-fasta"
TEXT_FASTQ: Final = "text/x-fastq"
TEXT_VCF: Final = "text/x-vcf"
TEXT_SAM: Final = "text/x-sam"
OCTET_STREAM: Final = "application/octet-stream"

#: A nucleotide sequence line of FASTA/FASTQ: IUPAC nucleotide codes
#: (NC-IUB 1984: ACGTU, N and the ambiguity codes RYKMSWBDHV) and gaps.
_NUCLEOTIDE_LINE: Final = re.compile(rb"[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.\-]+")
#: An amino-acid sequence line: by convention upper case (FASTA format,
#: NCBI BLAST help), with stop ``*`` and gaps.
_PROTEIN_LINE: Final = re.compile(rb"[A-Z*\-]+")
_ACGTUN: Final = b"ACGTUNacgtun"
_GAPS: Final = b".-"
#: Share of the sniffed sequence letters that must be plain bases (ACGTUN):
#: ambiguity codes are a few per cent of real reads and assemblies, while
#: English words made only of IUPAC letters ("Thanks", "hands") are not.
_NUCLEOTIDE_SHARE: Final = 0.9
TEXT_FASTA_PROTEIN: Final = "text/x-fasta-protein"
_SAM_HEADER: Final = re.compile(rb"@(?:HD|SQ|RG|PG|CO)\t")
#: SAM alignment lines have 11 mandatory tab-separated fields (SAMv1 §1.4).
_SAM_FIELDS: Final = 11
#: Lines looked at to call a member CSV/TSV; two agreeing lines are required.
_CSV_SNIFF_LINES: Final = 10
_CSV_MIN_LINES: Final = 2


def _tar_checksum_ok(block: bytes) -> bool:
    field = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        expected = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if expected == unsigned:
        return True
    signed: int = sum(struct.unpack("148b", block[:148])) + sum(struct.unpack("356b", block[156:]))
    return expected == signed + 8 * 0x20


def _is_tar(prefix: bytes) -> bool:
    return (
        len(prefix) >= _TAR_BLOCK
        and prefix[257:262] == b"ustar"
        and _tar_checksum_ok(prefix[:_TAR_BLOCK])
    )


def _container(prefix: bytes) -> str | None:
    """Name of the container ``prefix`` starts, if it is one we open."""
    if prefix.startswith(b"\x1f\x8b\x08"):
        return _GZIP
    if prefix.startswith(_ZSTD_MAGIC):
        return _ZSTD
    if _BZ2_RE.match(prefix):
        return _BZ2
    if prefix.startswith(_XZ_MAGIC):
        return _XZ
    if prefix.startswith((_ZIP_LOCAL_SIG, _ZIP_EMPTY_SIG, _ZIP_SPAN_SIG + _ZIP_LOCAL_SIG)):
        return _ZIP
    if _is_tar(prefix):
        return _TAR
    return None


def _known_binary(prefix: bytes) -> str | None:
    for magic, offset, media_type in _KNOWN_BINARIES:
        if prefix.startswith(magic, offset):
            return media_type
    return None


def _opaque(prefix: bytes) -> tuple[str, str] | None:
    for magic, media_type, name in _OPAQUE:
        if prefix.startswith(magic):
            return media_type, name
    return None


def _nucleotides(lines: list[bytes]) -> bool:
    """Whether ``lines`` are nucleotide sequence lines, mostly plain bases."""
    if not lines or not all(_NUCLEOTIDE_LINE.fullmatch(line) for line in lines):
        return False
    letters = b"".join(lines).translate(None, _GAPS)
    others = len(letters.translate(None, _ACGTUN))
    return others <= (1 - _NUCLEOTIDE_SHARE) * len(letters)


def _fasta_kind(lines: list[bytes]) -> str | None:
    """FASTA (nucleotide), protein FASTA or neither, from the sniffed lines.

    ``lines[0]`` is the first header; every other non-empty line that is not a
    header (``>``) or comment (``;``) must be a sequence line, the first one
    right after the header.
    """
    if not lines[1] or lines[1].startswith((b">", b";")):
        return None
    sequence = [line for line in lines[1:] if line and not line.startswith((b">", b";"))]
    if _nucleotides(sequence):
        return TEXT_FASTA
    if all(_PROTEIN_LINE.fullmatch(line) for line in sequence):
        return TEXT_FASTA_PROTEIN
    return None


def _pgp_packet(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """The OpenPGP packet header at ``pos``: (tag, body start, body length).

    RFC 9580 §4.2: new-format headers (0xC0 | tag) with one-, two- or
    five-octet lengths, legacy headers (0x80 | tag << 2 | length type) with
    one-, two- or four-octet lengths. Partial and indeterminate lengths are
    returned as length -1 (only data packets use them).
    """
    if pos + 2 > len(data) or not data[pos] & 0x80:
        return None
    first = data[pos]
    if first & 0x40:
        tag, octet = first & 0x3F, data[pos + 1]
        if octet < 192:
            return tag, pos + 2, octet
        if octet < 224:
            if pos + 3 > len(data):
                return None
            return tag, pos + 3, ((octet - 192) << 8) + data[pos + 2] + 192
        if octet == 255:
            if pos + 6 > len(data):
                return None
            return tag, pos + 6, int.from_bytes(data[pos + 2 : pos + 6], "big")
        return tag, pos + 2, -1
    tag, length_type = (first >> 2) & 0x0F, first & 0x03
    if length_type == 3:
        return tag, pos + 1, -1
    size = (1, 2, 4)[length_type]
    if pos + 1 + size > len(data):
        return None
    return tag, pos + 1 + size, int.from_bytes(data[pos + 1 : pos + 1 + size], "big")


def _pgp_message(prefix: bytes) -> bool:
    """Whether ``prefix`` starts a binary OpenPGP encrypted message.

    One or more session-key packets of a known version, then an encrypted data
    packet (RFC 9580 §10.3, "Encrypted Message"): a walk of a few packet
    headers, specific enough that other binaries do not pass it by chance.
    """
    pos = 0
    for count in range(_PGP_MAX_ESK + 1):
        header = _pgp_packet(prefix, pos)
        if header is None:
            return False
        tag, body, length = header
        if count and tag in _PGP_DATA_TAGS:
            return True
        versions = _PGP_ESK_VERSIONS.get(tag)
        if versions is None or length < 1 or body >= len(prefix) or prefix[body] not in versions:
            return False
        pos = body + length
    return False


def _encrypted(prefix: bytes) -> tuple[str, str] | None:
    """(media type, layer name) of a binary encrypted format ``prefix`` starts."""
    for magic, media_type, name in _ENCRYPTED:
        if prefix.startswith(magic):
            return media_type, name
    if _pgp_message(prefix):
        return _PGP_TYPE, "pgp"
    return None


def _delimited(lines: list[bytes], delimiter: str) -> bool:
    text = "\n".join(line.decode("utf-8", "replace") for line in lines)
    widths = {len(row) for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row}
    return len(widths) == 1 and widths.pop() > 1


def sniff_text_type(text: bytes, complete: bool) -> str:
    """The media type of a text member, from its normalised first bytes.

    Args:
        text: the member's first bytes as normalised UTF-8.
        complete: True when ``text`` is the whole member (its last line is
            then complete too).

    Returns:
        ``text/x-vcf``, ``text/x-sam``, ``text/x-fasta``, ``text/x-fastq``,
        ``text/x-fasta-protein``, ``application/json``, ``text/csv``,
        ``text/tab-separated-values`` or ``text/plain``. The genetic types let
        the detection core count one finding per record (SPEC §3.1
        ``sensitive.genetic``), so they require nucleotide sequence lines; a
        protein FASTA gets its own type, which the matcher scans as plain text.
    """
    if text.startswith(b"##fileformat=VCF"):
        return TEXT_VCF
    if _SAM_HEADER.match(text):
        return TEXT_SAM
    lines = text.split(b"\n", _CSV_SNIFF_LINES + 1)
    if not complete or len(lines) > _CSV_SNIFF_LINES:
        lines = lines[:-1]  # the last piece may be a cut line
    lines = [line.removesuffix(b"\r") for line in lines]
    if text.startswith(b">") and len(lines) >= 2:
        kind = _fasta_kind(lines)
        if kind is not None:
            return kind
    if (
        text.startswith(b"@")
        and len(lines) >= 3
        and _nucleotides([lines[1]])
        and lines[2].startswith(b"+")
    ):
        return TEXT_FASTQ
    if text.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
        return APPLICATION_JSON
    if lines:
        fields = lines[0].split(b"\t")
        if len(fields) >= _SAM_FIELDS and fields[1].isdigit() and fields[3].isdigit():
            return TEXT_SAM
    rows = [line for line in lines if line]
    if len(rows) >= _CSV_MIN_LINES:
        for delimiter, media_type in ((",", TEXT_CSV), ("\t", TEXT_TSV), (";", TEXT_CSV)):
            if delimiter.encode() in rows[0] and _delimited(rows, delimiter):
                return media_type
    return TEXT_PLAIN


# --------------------------------------------------------------------------- members


class _TextMember:
    """A text member: normalised to UTF-8 and passed to the sink."""

    __slots__ = ("_charset", "_ctx", "_layers", "_normaliser", "_size", "_text", "_type")

    def __init__(
        self,
        ctx: _Context,
        layers: tuple[str, ...],
        charset: str,
        normaliser: cs.Normaliser,
        head: bytes,
        complete: bool,
    ) -> None:
        self._ctx = ctx
        self._layers = layers
        self._charset = charset
        self._normaliser = normaliser
        self._type = sniff_text_type(head, complete)
        self._text = ctx.sink.text
        self._size = len(head)
        ctx.sink.begin_member(self._type)
        if head:
            self._text(head)

    def feed(self, data: bytes) -> None:
        out = self._normaliser.feed(data)
        if out:
            self._size += len(out)
            self._text(out)

    def close(self) -> None:
        out = self._normaliser.flush()
        if out:
            self._size += len(out)
            self._text(out)
        self._ctx.sink.end_member()
        self._ctx.member_done(ContentInfo(self._type, self._charset, self._layers), self._size)


class _BinaryMember:
    """A binary member fed raw, up to ``limit`` bytes when the format is unknown."""

    __slots__ = ("_ctx", "_layers", "_limit", "_size", "_type")

    def __init__(
        self, ctx: _Context, layers: tuple[str, ...], media_type: str, limit: int | None
    ) -> None:
        self._ctx = ctx
        self._layers = layers
        self._type = media_type
        self._limit = limit
        self._size = 0
        ctx.sink.begin_member(media_type)

    def feed(self, data: bytes) -> None:
        size, limit = self._size, self._limit
        self._size = size + len(data)
        if limit is None or self._size <= limit:
            self._ctx.sink.text(data)
        elif size <= limit:
            if size < limit:
                self._ctx.sink.text(data[: limit - size])
            self._ctx.unscannable(self._layers, f"binary: unknown format over {_human(limit)}")

    def close(self) -> None:
        self._ctx.sink.end_member()
        self._ctx.member_done(ContentInfo(self._type, None, self._layers), self._size)


class _MarkerScan:
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


class _InspectedMember(_BinaryMember):
    """A known binary fed raw whose whole byte stream is searched for markers.

    At its end it reports the first reason (in table order) whose marker was
    seen, or ``always`` when none was (None: nothing to report).
    """

    __slots__ = ("_always", "_reasons", "_scan")

    def __init__(
        self,
        ctx: _Context,
        layers: tuple[str, ...],
        media_type: str,
        scan: _MarkerScan,
        reasons: tuple[str, ...],
        always: str | None,
    ) -> None:
        super().__init__(ctx, layers, media_type, None)
        self._scan = scan
        self._reasons = reasons
        self._always = always

    def feed(self, data: bytes) -> None:
        self._scan.feed(data)
        super().feed(data)

    def close(self) -> None:
        super().close()
        seen = self._scan.seen
        reason = next((r for i, r in enumerate(self._reasons) if i in seen), self._always)
        if reason is not None:
            self._ctx.unscannable(self._layers, reason)


def _pdf(ctx: _Context, layers: tuple[str, ...]) -> _InspectedMember:
    scan = _MarkerScan((_PDF_ENCRYPT, _PDF_FILTER), _PDF_ESCAPED_NAME)
    reasons = (
        "pdf: encrypted content",
        "pdf: compressed streams not inspected",
        "pdf: compressed streams not inspected",  # an escaped name may spell either
    )
    return _InspectedMember(ctx, layers, PDF, scan, reasons, None)


def _ole(ctx: _Context, layers: tuple[str, ...]) -> _InspectedMember:
    # Word and Excel 97-2003 keep text as UTF-16LE (any non-Latin-1 text) and
    # numbers as binary doubles, in sector chains the raw bytes do not show in
    # order: never inspected, and an encrypted OOXML package says so.
    scan = _MarkerScan((_OLE_ENCRYPTED,), None)
    always = "ole: document streams not inspected"
    return _InspectedMember(ctx, layers, OLE, scan, ("ole: encrypted content",), always)


class _Refused:
    """A stream we do not open: reported unscannable, its bytes dropped."""

    __slots__ = ("_ctx", "_layers", "_size", "_type")

    def __init__(
        self, ctx: _Context, layers: tuple[str, ...], media_type: str, reason: str
    ) -> None:
        self._ctx = ctx
        self._layers = layers
        self._type = media_type
        self._size = 0
        ctx.unscannable(layers, reason)

    def feed(self, data: bytes) -> None:
        self._size += len(data)

    def close(self) -> None:
        self._ctx.member_done(ContentInfo(self._type, None, self._layers), self._size)


def _human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


class _Sniffer:
    """The start of every stream: buffers a bounded prefix, then decides."""

    __slots__ = ("_buf", "_ctx", "_depth", "_layers", "target")

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        self._ctx = ctx
        self._depth = depth
        self._layers = layers
        self._buf = bytearray()
        self.target: _Stream | None = None

    def feed(self, data: bytes) -> None:
        if self.target is not None:
            self.target.feed(data)
            return
        if not self._buf and len(data) >= SNIFF_BYTES:
            self._decide(data, complete=False)
            return
        self._buf += data
        if len(self._buf) >= SNIFF_BYTES:
            buffered = bytes(self._buf)
            self._buf = bytearray()
            self._decide(buffered, complete=False)

    def close(self) -> None:
        if self.target is None:
            buffered = bytes(self._buf)
            self._buf = bytearray()
            self._decide(buffered, complete=True)
        if self.target is not None:
            self.target.close()

    def _known(self, media_type: str, prefix: bytes) -> _Stream:
        """The stream for a known binary format (the module docstring's table)."""
        ctx, layers = self._ctx, self._layers
        if media_type in _NOT_INSPECTED:
            return _Refused(ctx, layers, media_type, _NOT_INSPECTED[media_type])
        if media_type == PDF:
            return _pdf(ctx, layers)
        if media_type == OLE:
            return _ole(ctx, layers)
        if media_type == SQLITE:
            field = prefix[_SQLITE_ENCODING_OFFSET : _SQLITE_ENCODING_OFFSET + 4]
            encoding = int.from_bytes(field, "big")
            if encoding in _SQLITE_UTF16:
                ctx.unscannable(layers, "sqlite: UTF-16 text not inspected")
            elif encoding != _SQLITE_UTF8:
                ctx.unscannable(layers, "sqlite: corrupt header")
        return _BinaryMember(ctx, layers, media_type, None)

    def _decide(self, data: bytes, complete: bool) -> None:
        prefix = data[:SNIFF_BYTES]
        ctx, layers = self._ctx, self._layers
        target: _Stream
        name = _container(prefix)
        opaque = _opaque(prefix)
        if name is not None and self._depth >= ctx.limits.max_depth:
            reason = f"{name}: nested deeper than {ctx.limits.max_depth} layers"
            target = _Refused(ctx, layers, _CONTAINER_TYPES[name], reason)
        elif name is not None:
            target = _LAYERS[name](ctx, self._depth, layers)
        elif opaque is not None:
            media_type, opaque_name = opaque
            target = _Refused(ctx, layers, media_type, f"{opaque_name}: cannot be opened")
        elif (encrypted := _encrypted(prefix)) is not None:
            media_type, encrypted_name = encrypted
            target = _Refused(ctx, layers, media_type, f"{encrypted_name}: encrypted content")
        elif (binary_type := _known_binary(prefix)) is not None:
            target = self._known(binary_type, prefix)
        else:
            detection = cs.detect(prefix, complete)
            if detection.charset is None:
                limit = ctx.limits.unknown_binary_limit
                target = _BinaryMember(ctx, layers, OCTET_STREAM, limit)
            else:
                normaliser = cs.Normaliser(detection.charset)
                data = data[detection.bom :]
                split = len(prefix) - detection.bom
                head = normaliser.feed(data[:split])
                target = _TextMember(ctx, layers, detection.charset, normaliser, head, complete)
                data = data[split:]
        self.target = target
        if data:
            target.feed(data)


# --------------------------------------------------------------------------- layers


class _Layer:
    """Base of the container and compression layers: child stream and failure."""

    name: str = ""
    #: Fixed buffers this layer keeps, reserved when it opens.
    buffers: int = 0
    __slots__ = ("_child", "_ctx", "_dead", "_depth", "_held", "_inner", "_layers")

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        self._ctx = ctx
        self._depth = depth
        self._layers = layers
        self._inner = (*layers, self.name)
        self._child: _Stream | None = None
        self._dead = False
        self._held = 0
        ctx.layers.add(self)
        self._reserve(self.buffers, "buffers")

    def _reserve(self, size: int, what: str) -> bool:
        """Hold at least ``size`` bytes of decoder memory for this layer (it only grows).

        Returns:
            False when the scan's cap does not allow it: the layer has failed.

        Raises:
            DecoderBusy: other scans hold the budget (the whole scan stops).
        """
        extra = size - self._held
        if extra <= 0:
            return True
        memory = self._ctx.memory
        if not memory.reserve(extra, f"{self.name} {what}"):
            self._fail(f"decoder memory over {_human(memory.cap)}")
            return False
        self._held = size
        return True

    def _free(self) -> None:
        """Drop the decompressor and give back this layer's decoder memory (idempotent)."""
        self._drop_codec()
        held, self._held = self._held, 0
        self._ctx.memory.release(held)
        self._ctx.layers.discard(self)

    def _drop_codec(self) -> None:
        """Drop the references to this layer's decompressor (frees its window)."""

    def _open_child(self) -> _Stream:
        child = _Sniffer(self._ctx, self._depth + 1, self._inner)
        self._child = child
        return child

    def _close_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.close()

    def _done(self) -> None:
        """Register the container itself: what an archive without members is."""
        info = ContentInfo(_CONTAINER_TYPES[self.name], None, self._layers)
        self._ctx.member_done(info, 0)

    def _report(self, reason: str) -> None:
        """One unscannable finding for this layer; the layer carries on."""
        self._ctx.unscannable(self._layers, f"{self.name}: {reason}")

    def _fail(self, reason: str) -> None:
        """This layer cannot go on: report it, end the open member, drop the rest."""
        self._report(reason)
        self._dead = True
        self._close_child()
        self._free()


class _Expanding(_Layer):
    """A layer whose output is larger than its input: limits and re-blocking."""

    buffers = LAYER_BUFFER_BYTES
    __slots__ = ("_carry", "_in", "_out")

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._carry = bytearray()
        self._in = 0
        self._out = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        if self._carry and not self._dead:
            need = BLOCK_BYTES - len(self._carry)
            self._carry += view[:need]
            view = view[need:]
            if len(self._carry) < BLOCK_BYTES:
                return
            block = bytes(self._carry)
            self._carry.clear()
            self._in += len(block)
            self._block(block)
        whole = len(view) - len(view) % BLOCK_BYTES
        for start in range(0, whole, BLOCK_BYTES):
            if self._dead:
                return
            self._in += BLOCK_BYTES
            self._block(view[start : start + BLOCK_BYTES])
        if whole < len(view) and not self._dead:
            self._carry += view[whole:]

    def close(self) -> None:
        if not self._dead and self._carry:
            block = bytes(self._carry)
            self._carry.clear()
            self._in += len(block)
            self._block(block)
        if not self._dead:
            self._end()
        self._close_child()
        self._done()
        self._free()

    def _emit(self, out: bytes) -> bool:
        """Pass decompressed ``out`` on unless it breaks a limit (then fail)."""
        size = len(out)
        self._out += size
        ctx = self._ctx
        ctx.expanded += size
        limits = ctx.limits
        if ctx.expanded > limits.max_expanded_bytes:
            self._fail(f"expanded size over {_human(limits.max_expanded_bytes)}")
            return False
        if self._out > RATIO_GRACE_BYTES and self._out > limits.max_ratio * self._in:
            self._fail(f"expansion ratio over {limits.max_ratio:g}:1")
            return False
        assert self._child is not None  # output only flows while a member is open
        self._child.feed(out)
        return True

    def _inflate(self, d: zlib._Decompress, data: bytes | memoryview) -> bool:
        """Run zlib on ``data`` in bounded steps; False once the layer failed."""
        while True:
            try:
                out = d.decompress(data, STEP_BYTES)
            except zlib.error:
                self._fail("corrupt stream")
                return False
            if out and not self._emit(out):
                return False
            data = d.unconsumed_tail
            if d.eof or (not data and len(out) < STEP_BYTES):
                return True

    def _unpack(
        self,
        d: bz2.BZ2Decompressor | lzma.LZMADecompressor,
        data: bytes | memoryview,
        reason: str,
    ) -> bool:
        """Run bz2 or lzma on ``data`` in bounded steps; False once the layer failed."""
        try:
            out = d.decompress(data, STEP_BYTES)
            while True:
                if out and not self._emit(out):
                    return False
                if d.eof or d.needs_input:
                    return True
                out = d.decompress(b"", STEP_BYTES)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as error:
            self._fail(reason or self._reason(error))
            return False

    def _reason(self, error: Exception) -> str:
        return "corrupt stream"

    def _block(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError


class _Multistream(_Expanding):
    """gzip, bz2 and xz: concatenated streams decode as one, like gzip(1) does.

    Zero bytes after the last stream are padding (tape blocks, xz stream
    padding) and are ignored; anything else after it is unscannable, because
    an extractor would either fail or show bytes we did not see.
    """

    magic: bytes = b""
    __slots__ = ("_active", "_head", "_padding")

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._head = b""
        self._padding = False
        # Every stream, the first one too, starts once its header is in
        # (:meth:`_need`): the header says how much memory it needs.
        self._active = False
        if not self._dead:
            self._open_child()

    def _need(self, head: bytes) -> int:
        """Bytes of a stream's start needed before :meth:`_start` (at least its magic)."""
        return len(self.magic)

    def _start(self, head: bytes) -> bool:
        """Reserve memory for and make a decompressor for the stream ``head`` starts.

        Returns:
            False when the layer failed (its memory would pass the scan's cap).
        """
        raise NotImplementedError

    def _run(self, data: bytes | memoryview) -> bytes | None:
        """Decompress ``data``; the bytes after the stream's end, else None."""
        raise NotImplementedError

    def _block(self, data: bytes | memoryview) -> None:
        while data and not self._dead:
            if not self._active:
                data = self._next_stream(bytes(data))
                if not data:
                    return
            rest = self._run(data)
            if rest is None:
                return
            self._active = False
            data = rest

    def _next_stream(self, data: bytes) -> bytes:
        head = self._head + data
        if head.count(0) == len(head):
            self._padding = True
            self._head = b""
            return b""
        if self._padding or not self.magic.startswith(head[: len(self.magic)]):
            self._fail("trailing data after end of stream")
            return b""
        if len(head) < self._need(head):
            self._head = head  # at most a magic or an xz block header: bounded
            return b""
        self._head = b""
        if not self._start(head):
            return b""
        self._active = True
        return head

    def _end(self) -> None:
        if self._active or len(self._head) >= len(self.magic):
            self._fail("truncated stream")
        elif self._head:
            self._fail("trailing data after end of stream")


class _Gzip(_Multistream):
    name = _GZIP
    magic = b"\x1f\x8b"
    __slots__ = ("_z",)

    def _start(self, head: bytes) -> bool:
        if not self._reserve(self.buffers + ZLIB_INFLATE_BYTES, "deflate window"):
            return False
        # wbits 16+15: gzip header and trailer; zlib checks CRC-32 and ISIZE.
        self._z: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return True

    def _run(self, data: bytes | memoryview) -> bytes | None:
        z = self._z
        assert z is not None  # dropped only when the layer is dead
        if not self._inflate(z, data) or not z.eof:
            return None
        return z.unused_data

    def _drop_codec(self) -> None:
        self._z = None


class _Bz2OrXz(_Multistream):
    __slots__ = ("_d",)
    _d: bz2.BZ2Decompressor | lzma.LZMADecompressor | None

    def _run(self, data: bytes | memoryview) -> bytes | None:
        d = self._d
        assert d is not None  # dropped only when the layer is dead
        if not self._unpack(d, data, ""):
            return None
        return d.unused_data if d.eof else None

    def _drop_codec(self) -> None:
        self._d = None


def bz2_memory(level: int) -> int:
    """Decoder memory of a bzip2 stream of block size ``level`` (1-9; others count as 9)."""
    if not 1 <= level <= 9:
        level = 9
    return BZ2_BASE_BYTES + BZ2_PER_LEVEL_BYTES * level


class _Bz2(_Bz2OrXz):
    name = _BZ2
    magic = b"BZh"
    __slots__ = ()

    def _need(self, head: bytes) -> int:
        return len(self.magic) + 1  # the block size digit

    def _start(self, head: bytes) -> bool:
        # A bad digit is left for bz2 to refuse as corrupt, with the -9 reservation.
        if not self._reserve(self.buffers + bz2_memory(head[3] - 0x30), "bzip2 block"):
            return False
        self._d = bz2.BZ2Decompressor()
        return True


#: An xz stream header: magic, stream flags, CRC-32 (xz file format §2.1.1).
_XZ_STREAM_HEADER: Final = 12
_XZ_LZMA2: Final = 0x21
#: LZMA2 dictionary-size properties above this are invalid (xz format §5.3.1).
_XZ_MAX_DICT_PROP: Final = 40


def _xz_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """An xz multibyte integer at ``pos`` (xz format §1.2): (value, next position)."""
    value = 0
    for i in range(9):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return None


def xz_dictionary(head: bytes) -> int | None:
    """The LZMA2 dictionary size the first block of the xz stream ``head`` starts declares.

    Args:
        head: the stream's first bytes, through its first block header (or
            the index indicator of a stream without blocks).

    Returns:
        The dictionary size (0 for a stream without blocks or without an
        LZMA2 filter, which liblzma then refuses), or None when the block
        header is malformed (bad CRC-32, reserved bits, a varint past its end).
    """
    start = _XZ_STREAM_HEADER
    if head[start] == 0:  # index indicator: no blocks (xz format §3.1.1)
        return 0
    end = start + (head[start] + 1) * 4
    header = head[start:end]
    if len(header) < end - start:
        return None
    if zlib.crc32(header[:-4]) != int.from_bytes(header[-4:], "little"):
        return None
    flags = header[1]
    if flags & 0x3C:
        return None
    pos = 2
    for present in (flags & 0x40, flags & 0x80):  # compressed, uncompressed size
        if present:
            field = _xz_varint(header, pos)
            if field is None:
                return None
            pos = field[1]
    dictionary = 0
    for _ in range((flags & 0x03) + 1):
        fid = _xz_varint(header, pos)
        size = None if fid is None else _xz_varint(header, fid[1])
        if fid is None or size is None or size[1] + size[0] > len(header) - 4:
            return None
        props = header[size[1] : size[1] + size[0]]
        if fid[0] == _XZ_LZMA2:
            if len(props) != 1 or props[0] > _XZ_MAX_DICT_PROP:
                return None
            bits = props[0]
            dictionary = 0xFFFFFFFF if bits == 40 else (2 | (bits & 1)) << (bits // 2 + 11)
        pos = size[1] + size[0]
    return dictionary


class _Xz(_Bz2OrXz):
    name = _XZ
    magic = _XZ_MAGIC
    __slots__ = ()

    def _need(self, head: bytes) -> int:
        if len(head) <= _XZ_STREAM_HEADER:
            return _XZ_STREAM_HEADER + 1
        size = head[_XZ_STREAM_HEADER]
        return _XZ_STREAM_HEADER + ((size + 1) * 4 if size else 1)

    def _start(self, head: bytes) -> bool:
        dictionary = xz_dictionary(head)
        if dictionary is None:
            self._fail("corrupt stream")
            return False
        need = dictionary + XZ_STATE_BYTES
        if need > XZ_MEMLIMIT_BYTES:
            self._fail(f"decoder memory over {_human(XZ_MEMLIMIT_BYTES)}")
            return False
        if not self._reserve(self.buffers + need, "xz dictionary"):
            return False
        # The memory limit is what this layer reserved for its decompressor (the
        # largest of its streams so far): a later block of this stream that
        # declares a larger dictionary is refused by liblzma, never allocated.
        self._d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=self._held - self.buffers)
        return True

    def _reason(self, error: Exception) -> str:
        if isinstance(error, lzma.LZMAError) and "limit" in str(error).lower():
            return "block needs a larger dictionary than the stream's first"
        return "corrupt stream"


def _gather(
    buf: bytearray, want: int, data: bytes | memoryview, pos: int, end: int
) -> tuple[int, bytes | None]:
    """Move bytes of ``data[pos:end]`` into ``buf`` until it holds a ``want``-byte header.

    Returns:
        the new position, and the complete header (``buf`` is then emptied)
        or None while more input is needed.
    """
    step = min(want - len(buf), end - pos)
    buf += data[pos : pos + step]
    if len(buf) < want:
        return pos + step, None
    header = bytes(buf)
    buf.clear()
    return pos + step, header


def _zstd_window(descriptor: int, rest: bytes) -> int:
    """The window size a zstd frame header declares (RFC 8878 §3.1.1.1.2).

    Args:
        descriptor: the Frame_Header_Descriptor byte.
        rest: the header bytes after it (window descriptor, dictionary id,
            frame content size).
    """
    if not (descriptor >> 5) & 1:  # the window descriptor byte
        exponent, mantissa = rest[0] >> 3, rest[0] & 7
        base = 1 << (10 + exponent)
        return base + (base >> 3) * mantissa
    # Single segment: the window is the frame content size.
    fcs_flag = descriptor >> 6
    start = (0, 1, 2, 4)[descriptor & 3]
    size = (1, 2, 4, 8)[fcs_flag]
    content = int.from_bytes(rest[start : start + size], "little")
    return content + 256 if fcs_flag == 1 else content


class _ZstdFrames:
    """Tracks zstd frame boundaries (RFC 8878 §3.1) to tell a truncated stream.

    The zstandard stream writer decodes but cannot say whether the input
    stopped inside a frame; this walks the frame and block headers (a few
    bytes per block of up to 128 KiB) and skips the block bodies.
    """

    __slots__ = ("_checksum", "_descriptor", "_hdr", "_skip", "_state", "_want", "window")

    _MAGIC, _SKIPPABLE_SIZE, _DESCRIPTOR, _HEADER_REST, _BLOCK = range(5)

    def __init__(self) -> None:
        self._state = self._MAGIC
        self._want = 4
        self._hdr = bytearray()
        self._skip = 0
        self._checksum = False
        self._descriptor = 0
        #: The largest window a frame header seen so far declared (0: none yet).
        self.window = 0

    @property
    def at_boundary(self) -> bool:
        return self._state == self._MAGIC and not self._hdr and not self._skip

    def feed(self, data: bytes | memoryview) -> bool:
        """Follow ``data``; False when it is not a zstd frame sequence."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            pos, header = _gather(self._hdr, self._want, data, pos, end)
            if header is not None and not self._on_header(header):
                return False
        return True

    def _on_header(self, header: bytes) -> bool:
        state, value = self._state, int.from_bytes(header, "little")
        if state == self._MAGIC:
            if value == 0xFD2FB528:
                self._state, self._want = self._DESCRIPTOR, 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._want = self._SKIPPABLE_SIZE, 4
            else:
                return False
        elif state == self._SKIPPABLE_SIZE:
            self._state, self._want, self._skip = self._MAGIC, 4, value
        elif state == self._DESCRIPTOR:
            if value & 0x08:  # reserved bit must be zero
                return False
            single_segment = (value >> 5) & 1
            self._checksum = bool((value >> 2) & 1)
            self._descriptor = value
            rest = (
                (0 if single_segment else 1)
                + (0, 1, 2, 4)[value & 3]
                + ((1 if single_segment else 0), 2, 4, 8)[value >> 6]
            )
            if rest:
                self._state, self._want = self._HEADER_REST, rest
            else:
                self._state, self._want = self._BLOCK, 3
        elif state == self._HEADER_REST:
            self.window = max(self.window, _zstd_window(self._descriptor, header))
            self._state, self._want = self._BLOCK, 3
        else:
            block_type, size = (value >> 1) & 3, value >> 3
            if block_type == 3:  # reserved block type
                return False
            self._skip = 1 if block_type == 1 else size
            if value & 1:  # last block of the frame
                self._skip += 4 if self._checksum else 0
                self._state, self._want = self._MAGIC, 4
        return True


class _ZstdOutput:
    """The "file" the zstandard stream writer writes decoded output to."""

    __slots__ = ("_emit",)

    def __init__(self, emit: Callable[[bytes], bool]) -> None:
        self._emit = emit

    def write(self, data: bytes) -> int:
        chunk = data if isinstance(data, bytes) else bytes(data)
        if not self._emit(chunk):
            raise _Abort
        return len(chunk)


class _Zstd(_Expanding):
    name = _ZSTD
    __slots__ = ("_frames", "_writer")

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._frames = _ZstdFrames()
        self._writer: zstandard.ZstdDecompressionWriter | None = None
        if self._dead or not self._reserve(self.buffers + ZSTD_STATE_BYTES, "zstd context"):
            return
        self._open_child()
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW_BYTES)
        # The stream writer hands output to write() in pieces of at most
        # STEP_BYTES as it decodes, so a bomb never materialises in memory.
        self._writer = decompressor.stream_writer(
            cast("IO[bytes]", _ZstdOutput(self._emit)),
            write_size=STEP_BYTES,
            write_return_read=True,
            closefd=False,
        )

    def _block(self, data: bytes | memoryview) -> None:
        frames = self._frames
        if not frames.feed(data):
            self._fail("corrupt stream")
            return
        # The frame headers of this block are read before any of it is decoded:
        # the window is reserved before libzstd allocates it.
        if frames.window > ZSTD_MAX_WINDOW_BYTES:
            self._fail(f"window over {_human(ZSTD_MAX_WINDOW_BYTES)}")
            return
        need = self.buffers + ZSTD_STATE_BYTES + frames.window
        if not self._reserve(need, "zstd window"):
            return
        writer = self._writer
        assert writer is not None  # dropped only when the layer is dead
        try:
            writer.write(data)
        except _Abort:
            return
        except zstandard.ZstdError as error:
            if "too much memory" in str(error):
                self._fail(f"window over {_human(ZSTD_MAX_WINDOW_BYTES)}")
            else:
                self._fail("corrupt stream")

    def _end(self) -> None:
        if not self._frames.at_boundary:
            self._fail("truncated stream")

    def _drop_codec(self) -> None:
        self._writer = None


class _Zip(_Expanding):
    """Zip read through its local file headers (APPNOTE.TXT §4.3)."""

    name = _ZIP
    __slots__ = (
        "_descriptor",
        "_hdr",
        "_inflater",
        "_local",
        "_members",
        "_method",
        "_next",
        "_record",
        "_remaining",
        "_state",
        "_want",
        "_zip64",
    )

    _SIG, _LOCAL, _NAMES, _DATA, _SKIP, _DESC, _DESC_BODY, _TAIL, _TAIL_FIXED, _DONE = range(10)
    _STORED, _DEFLATED, _BZIP2 = 0, 8, 12

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._state = self._SIG
        self._want = 4
        self._hdr = bytearray()
        self._members = 0
        self._local: tuple[int, ...] = ()
        self._method = 0
        self._descriptor = False
        self._zip64 = False
        self._remaining: int | None = None
        self._inflater: zlib._Decompress | bz2.BZ2Decompressor | None = None
        self._next = self._SIG
        self._record = b""

    def _block(self, data: bytes | memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._dead:
            state = self._state
            if state == self._DONE:
                if bytes(data[pos:]).count(0) != end - pos:
                    self._report("data after end of archive")
                    self._dead = True
                return
            if state == self._DATA:
                pos = self._member_data(data, pos)
            elif state == self._SKIP:
                assert self._remaining is not None
                step = min(self._remaining, end - pos)
                self._remaining -= step
                pos += step
                if not self._remaining:
                    self._state, self._want = self._next, 4
            else:
                pos, header = _gather(self._hdr, self._want, data, pos, end)
                if header is not None:
                    self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        state = self._state
        if state == self._SIG:
            if header == _ZIP_LOCAL_SIG:
                self._state, self._want = self._LOCAL, _ZIP_LOCAL_FIXED
            elif header in _ZIP_TAIL_FIXED:
                self._tail_record(header)
            elif header == _ZIP_SPAN_SIG and self._members == 0:
                pass  # split-archive marker before the first header
            else:
                self._fail("bad local header")
        elif state == self._LOCAL:
            self._local = _ZIP_LOCAL.unpack(header)
            name_len, extra_len = self._local[8], self._local[9]
            self._state, self._want = self._NAMES, name_len + extra_len
            if not self._want:
                self._on_header(b"")
        elif state == self._NAMES:
            self._start_member(header)
        elif state == self._TAIL:
            self._tail_record(header)
        elif state == self._TAIL_FIXED:
            self._tail_fixed(header)
        elif state == self._DESC:
            if header == _ZIP_SPAN_SIG:
                self._state, self._want = self._DESC_BODY, 20 if self._zip64 else 12
            else:  # signature omitted: these 4 bytes were the CRC-32
                self._state, self._want = self._DESC_BODY, 16 if self._zip64 else 8
                self._hdr += header  # keep alignment of the size fields below
                self._want += 4
        else:  # _DESC_BODY: crc, compressed size, uncompressed size
            size_format = "<Q" if self._zip64 else "<I"
            (compressed,) = struct.unpack_from(size_format, header, 4)
            if compressed != self._in:
                self._fail("bad data descriptor")
                return
            self._state, self._want = self._SIG, 4

    def _tail_record(self, signature: bytes) -> None:
        size = _ZIP_TAIL_FIXED.get(signature)
        if size is None:
            self._fail("bad central directory")
            return
        self._record = signature
        self._state, self._want = self._TAIL_FIXED, size

    def _tail_fixed(self, fixed: bytes) -> None:
        record, after = self._record, self._TAIL
        if record == _ZIP_CENTRAL_SIG:  # name, extra field and comment follow
            skip = sum(struct.unpack_from("<HHH", fixed, 24))
        elif record == _ZIP_EOCD_SIG:  # the archive comment follows
            (skip,), after = struct.unpack_from("<H", fixed, 16), self._DONE
        elif record == _ZIP64_EOCD_SIG:
            (skip,) = struct.unpack("<Q", fixed)
        elif record == _ZIP_SIGNATURE_SIG:
            (skip,) = struct.unpack("<H", fixed)
        elif record == _ZIP_ARCHIVE_EXTRA_SIG:
            (skip,) = struct.unpack("<I", fixed)
        else:  # zip64 locator: fixed size only
            skip = 0
        self._skip_then(skip, after)

    def _skip_then(self, size: int, after: int) -> None:
        self._next = after
        if size:
            self._state, self._remaining = self._SKIP, size
        else:
            self._state, self._want = after, 4

    def _start_member(self, names: bytes) -> None:
        _version, flags, method, _time, _date, _crc, compressed, size, name_len, _ = self._local
        self._ctx.member_name(names[:name_len])  # an encrypted member's name is plain too
        self._zip64 = False
        extra = names[name_len:]
        pos = 0
        while pos + 4 <= len(extra):
            tag, length = struct.unpack_from("<HH", extra, pos)
            if tag == 0x0001:  # Zip64 extended information (APPNOTE 4.5.3)
                self._zip64 = True
                values = extra[pos + 4 : pos + 4 + length]
                fields = [v for v in (size, compressed) if v == 0xFFFFFFFF]
                if len(values) < 8 * len(fields):
                    self._fail("bad zip64 extra field")
                    return
                parsed = struct.unpack_from(f"<{len(fields)}Q", values) if fields else ()
                if size == 0xFFFFFFFF and parsed:
                    size, parsed = parsed[0], parsed[1:]
                if compressed == 0xFFFFFFFF and parsed:
                    compressed = parsed[0]
            pos += 4 + length
        encrypted, self._descriptor = bool(flags & 0x01), bool(flags & 0x08)
        self._members += 1
        self._method = method
        self._in = self._out = 0
        if encrypted or method not in (self._STORED, self._DEFLATED, self._BZIP2):
            reason = "encrypted member" if encrypted else f"unsupported method {method}"
            if self._descriptor:
                self._fail(reason)  # no length to skip by: the rest is unreadable
                return
            self._report(reason)
            self._skip_then(compressed, self._SIG)
            return
        if method == self._STORED and self._descriptor:
            self._fail("stored member with data descriptor")
            return
        # A bzip2 member's block size is in its data, not in the local header:
        # reserve for the largest (-9). Members are read one at a time, so the
        # reservation of the largest member so far covers every later one.
        codec = {self._DEFLATED: ZLIB_INFLATE_BYTES, self._BZIP2: bz2_memory(9)}.get(method, 0)
        if not self._reserve(self.buffers + codec, "zip member decompressor"):
            return
        self._open_child()
        self._state = self._DATA
        self._remaining = None if self._descriptor else compressed
        if method == self._DEFLATED:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        elif method == self._BZIP2:
            self._inflater = bz2.BZ2Decompressor()
        else:
            self._inflater = None
            if not compressed:
                self._end_member()

    def _member_data(self, data: bytes | memoryview, pos: int) -> int:
        end = len(data)
        if self._remaining is not None:
            end = min(end, pos + self._remaining)
        piece = data[pos:end]
        if self._inflater is None:  # STORED
            self._in += len(piece)
            assert self._child is not None
            assert self._remaining is not None
            self._child.feed(bytes(piece))
            self._remaining -= len(piece)
            if not self._remaining:
                self._end_member()
            return end
        self._in += len(piece)
        used = self._decompress_member(piece)
        if used is None:
            return len(data)
        if self._remaining is not None:
            self._remaining -= used
        return pos + used

    def _decompress_member(self, piece: bytes | memoryview) -> int | None:
        """Feed compressed member bytes; how many were used, None on failure."""
        d = self._inflater
        if isinstance(d, bz2.BZ2Decompressor):
            if not self._unpack(d, piece, "corrupt member"):
                return None
        else:
            assert d is not None
            if not self._inflate(d, piece):
                return None
        if not d.eof:
            if self._remaining is not None and len(piece) >= self._remaining:
                self._fail("corrupt member")
                return None
            return len(piece)
        used = len(piece) - len(d.unused_data)
        self._in -= len(d.unused_data)
        self._end_member()
        if self._descriptor:
            self._state, self._want = self._DESC, 4
        elif self._remaining is not None and used != self._remaining:
            self._fail("bad compressed size")
            return None
        return used

    def _end_member(self) -> None:
        self._close_child()
        self._inflater = None
        self._state, self._want = self._SIG, 4

    def _drop_codec(self) -> None:
        self._inflater = None

    def _end(self) -> None:
        if self._state != self._DONE:
            self._fail("truncated archive")


class _Tar(_Layer):
    """tar (v7, ustar, pax, GNU): 512-byte headers, members streamed."""

    name = _TAR
    buffers = TAR_BUFFER_BYTES
    __slots__ = (
        "_hdr",
        "_long_name",
        "_pad",
        "_pax",
        "_pax_path",
        "_pax_size",
        "_remaining",
        "_state",
        "_want",
    )

    _HEADER, _DATA, _SKIP, _PAX, _PAD, _END, _LONG_NAME = range(7)
    #: GNU long name: the next member's name is this member's data.
    _GNU_LONG_NAME: Final = ord("L")
    #: Members that carry data to scan: regular, contiguous, GNU multi-volume
    #: continuation; unknown type flags too (POSIX: treat as regular files).
    _NO_DATA: Final = frozenset(b"123456")
    _META: Final = frozenset(b"gLKV")

    def __init__(self, ctx: _Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._state = self._HEADER
        self._want = _TAR_BLOCK
        self._hdr = bytearray()
        self._remaining = 0
        self._pad = 0
        self._pax = bytearray()
        self._pax_size: int | None = None
        # The next member's name from a pax "path" record or a GNU long name.
        self._pax_path: bytes | None = None
        self._long_name = bytearray()

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._dead:
            state = self._state
            if state == self._END:
                if data.count(0, pos) != end - pos:
                    self._report("data after end of archive")
                    self._dead = True
                return
            if state == self._HEADER:
                pos, header = _gather(self._hdr, _TAR_BLOCK, data, pos, end)
                if header is not None:
                    self._on_header(header)
                continue
            step = min(self._remaining, end - pos)
            if state == self._DATA:
                assert self._child is not None
                self._child.feed(data[pos : pos + step])
            elif state == self._PAX:
                self._pax += data[pos : pos + step]
            elif state == self._LONG_NAME:
                room = NAME_MAX_BYTES - len(self._long_name)
                self._long_name += data[pos : pos + min(step, max(room, 0))]
            self._remaining -= step
            pos += step
            if not self._remaining:
                self._after_body()

    def _after_body(self) -> None:
        if self._state == self._DATA:
            self._close_child()
        elif self._state == self._PAX:
            self._parse_pax(bytes(self._pax))
            self._pax.clear()
        elif self._state == self._LONG_NAME:
            self._pax_path = bytes(self._long_name).split(b"\0", 1)[0]
            self._long_name.clear()
        if self._state != self._PAD and self._pad:
            self._state, self._remaining = self._PAD, self._pad
        elif not self._dead:
            self._state = self._HEADER

    def _on_header(self, header: bytes) -> None:
        if header == _ZERO_BLOCK:
            self._state = self._END
            return
        if not _tar_checksum_ok(header):
            self._fail("bad header checksum")
            return
        size = _tar_number(header[124:136])
        if size is None:
            self._fail("bad header")
            return
        flag = header[156]
        if flag not in (ord("x"), *self._META) and self._pax_size is not None:
            size, self._pax_size = self._pax_size, None
        self._pad = -size % _TAR_BLOCK
        if flag == ord("S"):
            self._fail("GNU sparse member not supported")
            return
        if flag in self._NO_DATA:
            self._pad = 0
            self._pax_path = None  # a link's or directory's own long name
            return
        self._remaining = size
        if flag == ord("x"):
            if size > PAX_MAX_BYTES:
                self._fail("oversized pax header")
                return
            self._state = self._PAX
        elif flag == self._GNU_LONG_NAME:
            self._state = self._LONG_NAME
        elif flag in self._META:
            self._state = self._SKIP
        else:
            self._ctx.member_name(self._take_name(header))
            self._open_child()
            self._state = self._DATA
        if not size:
            self._after_body()

    def _take_name(self, header: bytes) -> bytes:
        """The member's path: a preceding pax ``path`` or GNU long name, else the header's."""
        path, self._pax_path = self._pax_path, None
        if path is not None:
            return path
        name = header[0:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        return prefix + b"/" + name if prefix else name

    def _parse_pax(self, records: bytes) -> None:
        pos = 0
        while pos < len(records):
            space = records.find(b" ", pos)
            try:
                length = int(records[pos:space])
            except ValueError:
                self._fail("bad pax header")
                return
            record = records[space + 1 : pos + length]
            key, _, value = record.rstrip(b"\n").partition(b"=")
            if key == b"path":
                self._pax_path = value
            if key == b"size":
                try:
                    self._pax_size = int(value)
                except ValueError:
                    self._fail("bad pax header")
                    return
            if length <= 0:
                self._fail("bad pax header")
                return
            pos += length

    def close(self) -> None:
        if not self._dead and (self._hdr or self._state not in (self._HEADER, self._END)):
            self._fail("truncated archive")
        self._close_child()
        self._done()
        self._free()


def _tar_number(field: bytes) -> int | None:
    """A tar numeric field: octal text, or GNU base-256 when the top bit is set."""
    if field[0] & 0x80:
        if field[0] & 0x40:  # negative
            return None
        return int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


_LAYERS: Final[dict[str, Callable[[_Context, int, tuple[str, ...]], _Stream]]] = {
    _GZIP: _Gzip,
    _ZSTD: _Zstd,
    _BZ2: _Bz2,
    _XZ: _Xz,
    _ZIP: _Zip,
    _TAR: _Tar,
}


# --------------------------------------------------------------------------- decoder


class Decoder:
    """Turns a byte stream into text members for a :class:`TextSink`.

    Sans-I/O like the rest of the classifier: ``feed`` any number of times,
    then ``finish``. The sequence of sink calls (texts concatenated per member)
    is the same for every way of cutting the input into chunks.

    Args:
        sink: receives the text members.
        limits: the decode limits.
        budget: the process-wide decoder memory budget this decoder's layers
            reserve their windows from; None gives the decoder a budget of
            its own of ``limits.max_decoder_bytes`` (``gateway scan``), so
            only the per-scan cap applies and :class:`DecoderBusy` never
            happens.
    """

    __slots__ = ("_ctx", "_direct", "_finished", "_root", "_started")

    def __init__(
        self,
        sink: TextSink,
        limits: ScanLimits = ScanLimits(),
        *,
        budget: DecoderBudget | None = None,
    ) -> None:
        """Prepare to decode one input for ``sink`` under ``limits``."""
        if budget is None:
            budget = DecoderBudget(limits.max_decoder_bytes)
        self._ctx = _Context(sink, limits, budget.account(limits.max_decoder_bytes))
        self._root = _Sniffer(self._ctx, 0, ())
        self._direct: Callable[[bytes], None] | None = None
        self._finished = False
        self._started = False

    def name(self, raw: bytes) -> None:
        """Scan the input's own name (a transfer's path) as archive member names are.

        Raises:
            RuntimeError: after the first :meth:`feed` (the name is a member
                of its own, and the input's first member may be open by then).
        """
        if self._started or self._finished:
            raise RuntimeError("Decoder.name() must come before the first feed()")
        self._ctx.member_name(raw)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Decode the next chunk of input (any bytes-like object; copied unless bytes).

        Raises:
            DecoderBusy: a layer's window could not be reserved because other
                scans hold the budget; the decoder is then closed.
            RuntimeError: after :meth:`finish` or :meth:`close`.
        """
        data = chunk if type(chunk) is bytes else bytes(chunk)
        if self._direct is not None:
            self._direct(data)
            return
        if self._finished:
            raise RuntimeError("Decoder.feed() called after finish()")
        self._started = True
        try:
            self._root.feed(data)
        except BaseException:
            self.close()  # a layer's state is undefined now: give its memory back
            raise
        target = self._root.target
        if isinstance(target, _TextMember):
            # Plain text at the top: skip the sniffer on every later chunk.
            self._direct = target.feed

    def finish(self) -> ContentInfo:
        """End the input; returns what the content was recognised as.

        Raises:
            DecoderBusy: as for :meth:`feed` (a short input's only layer opens
                here).
            RuntimeError: when called twice, or after :meth:`close`.
        """
        if self._finished:
            raise RuntimeError("Decoder.finish() called twice")
        self._finished = True
        self._direct = None
        try:
            self._root.close()
        finally:
            self.close()
        best = self._ctx.best
        assert best is not None  # the root stream always ends as a member
        return best

    def close(self) -> None:
        """Give back all decoder memory this decoder holds (idempotent).

        An unfinished decode is abandoned: later calls raise. The egress
        calls it through ``Scanner.close`` whatever happened to the transfer.
        """
        self._finished = True
        self._direct = None
        ctx = self._ctx
        for layer in list(ctx.layers):
            layer._free()
        ctx.memory.close()
