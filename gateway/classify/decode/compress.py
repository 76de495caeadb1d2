"""Compression layers: gzip, bzip2, xz and zstd, opened as they stream.

Each decompressor's window is reserved as its header declares it, before
libz, libbz2, liblzma or libzstd allocate it (see :mod:`gateway.classify.budget`),
and its output leaves in steps of at most ``STEP_BYTES``, so a bomb never
materialises in memory.
"""

from __future__ import annotations

import bz2
import lzma
import re
import zlib
from collections.abc import Callable
from typing import IO, Final, cast

import zstandard

from gateway.classify.decode.core import STEP_BYTES, Context, gather, human
from gateway.classify.decode.layers import Expanding, Layer

#: xz decoder memory limit. ``xz -9``/``-9e`` need 65 MiB to decompress
#: (xz(1), "Memory usage"); anything larger was crafted and is refused.
XZ_MEMLIMIT_BYTES: Final = 72 << 20
#: Largest zstd window accepted: libzstd's own default decoding limit
#: (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27). Frames made with ``--long=28`` or more
#: are refused rather than allowed to allocate up to 2 GiB.
ZSTD_MAX_WINDOW_BYTES: Final = 1 << 27
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

GZIP: Final = "gzip"
ZSTD: Final = "zstd"
BZ2: Final = "bz2"
XZ: Final = "xz"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
#: bzip2 stream header: "BZh", block size 1-9, then a block magic (pi) or the
#: end-of-stream magic (sqrt(pi)) for an empty stream.
BZ2_RE: Final = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")


class _Abort(Exception):
    """Raised inside a zstd write callback to stop a refused layer."""


def compression(prefix: bytes) -> str | None:
    """Name of the compression ``prefix`` starts, if it is one we open."""
    if prefix.startswith(b"\x1f\x8b\x08"):
        return GZIP
    if prefix.startswith(ZSTD_MAGIC):
        return ZSTD
    if BZ2_RE.match(prefix):
        return BZ2
    if prefix.startswith(XZ_MAGIC):
        return XZ
    return None


class _Multistream(Expanding):
    """gzip, bz2 and xz: concatenated streams decode as one, like gzip(1) does.

    Zero bytes after the last stream are padding (tape blocks, xz stream
    padding) and are ignored; anything else after it is unscannable, because
    an extractor would either fail or show bytes we did not see.
    """

    magic: bytes = b""
    __slots__ = ("_active", "_head", "_padding")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
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
            # A magic, an xz block header, or a gzip header of at most
            # GZIP_HEADER_MAX_BYTES and the block that passed it: bounded.
            self._head = head
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


#: Longest gzip header read (RFC 1952 §2.3: its name and comment are
#: NUL-terminated, without a limit); tools write a few hundred bytes.
GZIP_HEADER_MAX_BYTES: Final = 64 << 10
_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2


def gzip_header(head: bytes) -> tuple[int, list[bytes]] | None:
    """The length of the gzip member header ``head`` starts, and its file name and
    comment (RFC 1952 §2.3.1); None while the header is not all in ``head``."""
    if len(head) < 10:
        return None
    flags, pos, texts = head[3], 10, []
    if flags & _FEXTRA:
        if len(head) < 12:
            return None
        pos += 2 + int.from_bytes(head[10:12], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = head.find(b"\0", pos)
            if end < 0:
                return None
            texts.append(head[pos:end])
            pos = end + 1
    if flags & _FHCRC:
        pos += 2
    return (pos, texts) if pos <= len(head) else None


class _Gzip(_Multistream):
    """gzip; each member's file name and comment (``gzip -N`` restores the name)
    are scanned as a member name when the member starts (a later member's then
    ends the text member its content is in, which continues as a new one)."""

    name = GZIP
    media_type = "application/gzip"
    magic = b"\x1f\x8b"
    __slots__ = ("_z",)

    def _need(self, head: bytes) -> int:
        if gzip_header(head) is not None or len(head) >= GZIP_HEADER_MAX_BYTES:
            return len(self.magic)
        return len(head) + 1  # more of the header

    def _start(self, head: bytes) -> bool:
        header = gzip_header(head)
        if header is None:
            self._fail(f"header over {GZIP_HEADER_MAX_BYTES >> 10} KiB")
            return False
        for text in header[1]:
            self._ctx.member_name(text)
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
    name = BZ2
    media_type = "application/x-bzip2"
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
    name = XZ
    media_type = "application/x-xz"
    magic = XZ_MAGIC
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
            self._fail(f"decoder memory over {human(XZ_MEMLIMIT_BYTES)}")
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
            pos, header = gather(self._hdr, self._want, data, pos, end)
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


class _Zstd(Expanding):
    name = ZSTD
    media_type = "application/zstd"
    __slots__ = ("_frames", "_writer")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
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
            self._fail(f"window over {human(ZSTD_MAX_WINDOW_BYTES)}")
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
                self._fail(f"window over {human(ZSTD_MAX_WINDOW_BYTES)}")
            else:
                self._fail("corrupt stream")

    def _end(self) -> None:
        if not self._frames.at_boundary:
            self._fail("truncated stream")

    def _drop_codec(self) -> None:
        self._writer = None


#: The compression layers, by the name :func:`compression` gives.
COMPRESSIONS: Final[dict[str, type[Layer]]] = {
    GZIP: _Gzip,
    ZSTD: _Zstd,
    BZ2: _Bz2,
    XZ: _Xz,
}
