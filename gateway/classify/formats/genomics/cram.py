"""CRAM (CRAM 2.1/3.x): the SAM header rendered, records counted from container headers."""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Final

from gateway.classify.formats.base import Extract, TextOut, Unscannable
from gateway.classify.formats.genomics.common import I32, SAM_TYPE, U32, HeaderLines
from gateway.classify.formats.genomics.organism import OrganismEvidence

#: CRAM: a container header is a few ITF8/LTF8 numbers and the landmarks
#: (one per slice); 64 KiB is far beyond any real one.
MAX_CRAM_CONTAINER_HEADER: Final = 64 << 10
#: CRAM: the file header container, buffered whole (the SAM header, often
#: padded so it can be rewritten in place).
MAX_CRAM_HEADER_CONTAINER: Final = 64 << 20
#: CRAM: records claimed by one container. htslib writes 10 000 reads per
#: slice (100 000 for long-read profiles) and one slice per container.
MAX_CRAM_CONTAINER_RECORDS: Final = 1 << 20
#: CRAM: records claimed per byte of container data. A record carries at
#: least its position and length; real encoders need 1-30 bytes per record,
#: so eight per byte (one bit each) only refuses a container that lies.
MAX_CRAM_RECORDS_PER_BYTE: Final = 8

#: CRAM file definition: "CRAM", major, minor, 20-byte file id.
_CRAM_DEFINITION: Final = 26
#: CRAM block content type of the SAM header (CRAM 3.1 §8.1).
_CRAM_FILE_HEADER: Final = 0


def _itf8(buf: bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """An ITF8 integer (CRAM §2.3) at ``pos``: (value, next position), None if cut."""
    if pos >= end:
        return None
    b0 = buf[pos]
    if b0 < 0x80:
        return b0, pos + 1
    if b0 < 0xC0:
        n, value = 1, b0 & 0x3F
    elif b0 < 0xE0:
        n, value = 2, b0 & 0x1F
    elif b0 < 0xF0:
        n, value = 3, b0 & 0x0F
    else:
        if end - pos < 5:
            return None
        value = (b0 & 0x0F) << 28 | buf[pos + 1] << 20 | buf[pos + 2] << 12
        value |= buf[pos + 3] << 4 | buf[pos + 4] & 0x0F
        return value - (1 << 32) if value >= 1 << 31 else value, pos + 5
    if end - pos < n + 1:
        return None
    for i in range(1, n + 1):
        value = value << 8 | buf[pos + i]
    return value, pos + n + 1


def _ltf8(buf: bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """An LTF8 integer (CRAM §2.3) at ``pos``: (value, next position), None if cut."""
    if pos >= end:
        return None
    b0 = buf[pos]
    n = 0
    while n < 8 and b0 & (0x80 >> n):
        n += 1
    if end - pos < n + 1:
        return None
    value = b0 & (0xFF >> (n + 1)) if n < 8 else 0
    for i in range(1, n + 1):
        value = value << 8 | buf[pos + i]
    return value - (1 << 64) if value >= 1 << 63 else value, pos + n + 1


def _cram_container(buf: bytearray, pos: int, major: int) -> tuple[list[int], int] | None:
    """A container header (CRAM §7): (length, ref, start, span, records, counter,
    bases, blocks) and the header's size, or None when more bytes are needed."""
    end = len(buf)
    if end - pos < 4:
        return None
    fields = [I32.unpack_from(buf, pos)[0]]
    at = pos + 4
    for decode in (_itf8, _itf8, _itf8, _itf8, _ltf8, _ltf8, _itf8, _itf8):
        got = decode(buf, at, end)
        if got is None:
            return _cut(pos, end)
        fields.append(got[0])
        at = got[1]
    landmarks = fields.pop()
    if not 0 <= landmarks <= MAX_CRAM_CONTAINER_HEADER // 5:
        raise Unscannable("cram: corrupt container header")
    for _ in range(landmarks):
        got = _itf8(buf, at, end)
        if got is None:
            return _cut(pos, end)
        at = got[1]
    if major >= 3:
        if end - at < 4:
            return _cut(pos, end)
        if zlib.crc32(buf[pos:at]) != U32.unpack_from(buf, at)[0]:
            raise Unscannable("cram: container header fails its CRC")
        at += 4
    return fields, at - pos


def _cut(pos: int, end: int) -> tuple[list[int], int] | None:
    """A container header still incomplete: more bytes needed (None), within the bound."""
    if end - pos > MAX_CRAM_CONTAINER_HEADER:
        raise Unscannable("cram: corrupt container header")
    return None


def _block_size(buf: bytearray, pos: int) -> int | None:
    """Bytes of the CRAM 2.x block at ``pos`` (method, content type, three ITF8
    numbers, data; no CRC), None when more bytes are needed.

    The file header container of CRAM 2.x is read as its first block alone:
    htslib reads it so, and writes a container length that does not always
    cover the block."""
    at = pos + 2
    sizes = []
    for _ in range(3):
        got = _itf8(buf, at, len(buf))
        if got is None:
            return None if len(buf) - pos < 32 else -1
        sizes.append(got[0])
        at = got[1]
    if not 0 <= sizes[1] <= MAX_CRAM_HEADER_CONTAINER:
        return -1
    return at - pos + sizes[1]


def _inflate(method: int, data: bytes, size: int) -> bytes:
    """A CRAM block's data inflated to exactly ``size`` bytes (raw, gzip, bzip2, lzma)."""
    try:
        if method == 0:
            out = data
        elif method == 1:
            out = zlib.decompressobj(47).decompress(data, size + 1)
        elif method == 2:
            out = bz2.BZ2Decompressor().decompress(data, size + 1)
        elif method == 3:
            out = lzma.LZMADecompressor().decompress(data, size + 1)
        else:
            raise Unscannable("cram: header block in an unsupported codec")
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        raise Unscannable("cram: corrupt header block") from None
    if len(out) != size:
        raise Unscannable("cram: corrupt header block")
    return out


class CramReader:
    """Streaming CRAM reader: SAM header rendered, records counted (a StreamReader).

    Records are not decoded (documented limit): each is one
    ``sensitive.genetic`` finding, numbered by the container's record counter.
    """

    __slots__ = ("_buf", "_file_id", "_major", "_member", "_skip", "_state", "out")

    def __init__(self, out: Extract) -> None:
        self.out = out
        self._buf = bytearray()
        self._state = "definition"
        self._major = 0
        self._file_id = b""
        self._skip = 0
        self._member: TextOut | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        if self._skip:
            take = min(self._skip, len(data))
            self._skip -= take
            data = data[take:]
            if not data:
                return
        buf = self._buf
        buf += data
        pos = 0
        while True:
            if self._state == "definition":
                if len(buf) < _CRAM_DEFINITION:
                    break
                if buf[:4] != b"CRAM":
                    raise Unscannable("cram: bad magic")
                self._major = buf[4]
                if self._major not in (2, 3):
                    raise Unscannable("cram: unsupported version")
                self._file_id = bytes(buf[6:26])
                pos = _CRAM_DEFINITION
                self._state = "header"
            elif self._state == "header":
                got = _cram_container(buf, pos, self._major)
                if got is None:
                    break
                fields, size = got
                body = fields[0] if self._major >= 3 else _block_size(buf, pos + size)
                if body is None:
                    break
                if not 0 <= body <= MAX_CRAM_HEADER_CONTAINER:
                    raise Unscannable("cram: header container out of range")
                if len(buf) - pos < size + body:
                    break
                self._header(buf[pos + size : pos + size + body])
                pos += size + body
                self._state = "containers"
            else:
                got = _cram_container(buf, pos, self._major)
                if got is None:
                    break
                fields, size = got
                self._records(fields)
                pos += size
                skipped = min(fields[0], len(buf) - pos)
                pos += skipped
                if skipped < fields[0]:
                    self._skip = fields[0] - skipped  # slices: skipped as they arrive
                    break
        del buf[:pos]

    def finish(self) -> None:
        """The member ended: it must end at a container boundary."""
        if self._state != "containers" or self._buf or self._skip:
            raise Unscannable("cram: truncated")
        assert self._member is not None
        self._member.close()

    def _header(self, data: bytearray) -> None:
        """The SAM header in the file header container's first block (CRAM §8)."""
        end = len(data)
        if end < 2:
            raise Unscannable("cram: corrupt header container")
        method, content = data[0], data[1]
        pos = 2
        sizes = []
        for _ in range(3):
            got = _itf8(data, pos, end)
            if got is None:
                raise Unscannable("cram: corrupt header container")
            sizes.append(got[0])
            pos = got[1]
        _content_id, compressed, raw = sizes
        if content != _CRAM_FILE_HEADER or not 0 <= compressed <= end - pos:
            raise Unscannable("cram: corrupt header container")
        if not 4 <= raw <= MAX_CRAM_HEADER_CONTAINER:
            raise Unscannable("cram: header block size out of range")
        if self._major >= 3:
            if end - pos - compressed < 4:
                raise Unscannable("cram: corrupt header container")
            crc = U32.unpack_from(data, pos + compressed)[0]
            if zlib.crc32(data[: pos + compressed]) != crc:
                raise Unscannable("cram: header block fails its CRC")
        text = _inflate(method, bytes(data[pos : pos + compressed]), raw)
        (length,) = I32.unpack_from(text, 0)
        if not 0 <= length <= len(text) - 4:
            raise Unscannable("cram: corrupt header text")
        evidence = OrganismEvidence()
        self._member = self.out.member("alignments", SAM_TYPE)
        lines = HeaderLines(self._member, "@", "@CO\t", evidence)
        lines.feed(text[4 : 4 + length])
        lines.end()
        evidence.report(self.out)

    def _records(self, fields: list[int]) -> None:
        length, _ref, _start, _span, records, counter = fields[:6]
        if length < 0 or records < 0:
            raise Unscannable("cram: corrupt container header")
        if records > MAX_CRAM_CONTAINER_RECORDS or records > MAX_CRAM_RECORDS_PER_BYTE * length:
            raise Unscannable("cram: container claims more records than it can hold")
        prefix = b"cram\x00" + self._file_id + b"\x00"
        finding = self.out.finding
        for i in range(records):
            finding("sensitive.genetic", prefix + str(counter + i).encode())
