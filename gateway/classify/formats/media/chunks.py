"""PNG and WebP metadata readers: chunked formats, pixel chunks skipped unread.

PNG (ISO/IEC 15948, PNG 3rd edition): signature, then chunks of length, type,
data and CRC. Text chunks (tEXt Latin-1, zTXt compressed, iTXt UTF-8,
optionally compressed) are rendered as ``keyword: text``; eXIf is EXIF; the
XMP packet is the iTXt ``XML:com.adobe.xmp``; ImageMagick's "Raw profile
type" text chunks (hex-encoded EXIF, XMP, IPTC) are decoded. Image data
(IDAT, APNG frames) and known ancillary chunks are skipped as they stream
past; a chunk of any other type is handed to the decoder as a nested member,
and so is data after IEND.

WebP (RIFF container, RFC 9649): chunks of FourCC, size and data (padded to
even). EXIF and XMP chunks are rendered; image chunks (VP8, VP8L, ALPH,
ANMF …) are skipped; any other chunk and data after the RIFF end are nested
members.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Final

from gateway.classify.formats.base import BinaryOut, Extract, Unscannable
from gateway.classify.formats.media.exif import render_exif
from gateway.classify.formats.media.text import (
    MAX_TEXT_VALUE,
    MetadataText,
    decode_text,
    render_iptc,
    render_photoshop,
    render_xmp,
)

#: Bytes of a text or EXIF chunk buffered (PNG allows 2^31-1; a text chunk is
#: rarely over a few KiB, an XMP packet a few hundred KiB).
MAX_TEXT_CHUNK: Final = 16 << 20
#: Chunks per file (APNG: ~2 per frame; thousands of frames is a long animation).
MAX_CHUNKS: Final = 1 << 20
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: Chunks whose data is pixels, palettes, colour or layout (PNG 3rd ed. §11,
#: APNG, and common private ones: Apple iDOT/CgBI, C2PA caBX, Android npTc).
_PNG_SKIPPED: Final = frozenset(
    (
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT",
        b"sRGB", b"cICP", b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"bKGD", b"hIST", b"pHYs",
        b"sPLT", b"tIME", b"acTL", b"fcTL", b"fdAT", b"oFFs", b"pCAL", b"sCAL", b"sTER",
        b"gIFg", b"vpAg", b"iDOT", b"CgBI", b"caBX", b"npTc", b"npLb", b"dSIG",
    )
)  # fmt: skip
_PNG_TEXT: Final = frozenset((b"tEXt", b"zTXt", b"iTXt", b"eXIf"))
_XMP_KEYWORD: Final = b"XML:com.adobe.xmp"
_XMP_APP1: Final = b"http://ns.adobe.com/xap/1.0/\x00"
#: ImageMagick/ExifTool raw profiles: "\n<name>\n<spaces><length>\n<hex lines>".
_RAW_PROFILE: Final = re.compile(rb"\s*\n?\s*([A-Za-z0-9 _-]*)\n\s*([0-9]+)\n([0-9a-fA-F\s]*)")
#: Sustained ratio past which compressed text is a bomb (SPEC §3.1).
MAX_TEXT_RATIO: Final = 100
_TEXT_RATIO_GRACE: Final = 1 << 20


def _inflate(data: bytes, text: MetadataText) -> bytes:
    """A zlib stream (zTXt, compressed iTXt), bounded in size and ratio (and
    counted against the image's decoding budget)."""
    limit = min(MAX_TEXT_VALUE, _TEXT_RATIO_GRACE + MAX_TEXT_RATIO * len(data))
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise Unscannable(f"{text.what}: corrupt compressed text") from None
    if len(out) > limit:
        raise Unscannable(f"{text.what}: compressed text expands past its bound")
    text.spend(len(out))
    return out


class PngReader:
    """Streaming PNG metadata reader (a StreamReader)."""

    def __init__(self, out: Extract) -> None:
        self.out = out
        self.text = MetadataText(out, "png")
        self._buf = bytearray()
        self._state = "signature"
        self._skip = 0  # bytes of a skipped chunk still to come (data and CRC)
        self._sink: BinaryOut | None = None  # where a nested chunk's data goes
        self._chunks = 0

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        if self._state == "trailer":
            assert self._sink is not None
            self._sink.write(data)
            return
        if self._skip:
            data = self._skipping(data)
        self._buf += data
        self._run()

    def finish(self) -> None:
        """The member ended: it must have reached IEND."""
        if self._state == "trailer":
            assert self._sink is not None
            self._sink.close()
        elif self._state != "end" or self._skip or self._buf.strip(b"\x00"):
            raise Unscannable("png: truncated")
        self.text.close()

    def _skipping(self, data: bytes) -> bytes:
        take = min(self._skip, len(data))
        payload = min(take, max(0, self._skip - 4))  # the chunk's data, not its CRC
        if self._sink is not None and payload:
            self._sink.write(data[:payload])
        self._skip -= take
        if not self._skip and self._sink is not None:
            self._sink.close()
            self._sink = None
        return data[take:]

    def _run(self) -> None:
        buf = self._buf
        pos = 0
        while True:
            if self._state == "signature":
                if len(buf) < 8:
                    break
                if buf[:8] != PNG_SIGNATURE:
                    raise Unscannable("png: bad signature")
                pos = 8
                self._state = "chunks"
            elif self._state == "chunks":
                if len(buf) - pos < 8:
                    break
                length, kind = struct.unpack_from(">I4s", buf, pos)
                if length > 0x7FFFFFFF or not kind.isalpha():
                    raise Unscannable("png: corrupt chunk header")
                self._chunks += 1
                if self._chunks > MAX_CHUNKS:
                    raise Unscannable(f"png: more than {MAX_CHUNKS} chunks")
                if kind in _PNG_TEXT:
                    if length > MAX_TEXT_CHUNK:
                        raise Unscannable(f"png: text chunk over {MAX_TEXT_CHUNK >> 20} MiB")
                    if len(buf) - pos < 12 + length:
                        break
                    chunk = bytes(buf[pos + 4 : pos + 8 + length])
                    if zlib.crc32(chunk) != struct.unpack_from(">I", buf, pos + 8 + length)[0]:
                        raise Unscannable("png: chunk fails its CRC")
                    self._chunk(kind, chunk[4:])
                    pos += 12 + length
                    continue
                pos += 8
                if kind == b"IEND":
                    self._state = "end"
                if kind not in _PNG_SKIPPED:
                    self._sink = self.out.nested(f"png chunk {kind.decode('ascii')}")
                self._skip = length + 4
                taken = bytes(buf[pos:])
                rest = self._skipping(taken)
                pos += len(taken) - len(rest)
                if self._skip:
                    break
            else:  # after IEND: zero padding, else trailing data for the decoder
                while pos < len(buf) and buf[pos] == 0:
                    pos += 1
                if pos < len(buf):
                    self._sink = self.out.nested("data after end of image")
                    self._sink.write(bytes(buf[pos:]))
                    self._state = "trailer"
                    pos = len(buf)
                break
        del buf[:pos]

    def _chunk(self, kind: bytes, data: bytes) -> None:
        text = self.text
        if kind == b"eXIf":
            render_exif(data, text)
            return
        keyword, sep, rest = data.partition(b"\x00")
        if not sep:
            raise Unscannable("png: corrupt text chunk")
        if kind == b"tEXt":
            value = rest
        elif kind == b"zTXt":
            if not rest or rest[0] != 0:
                raise Unscannable("png: corrupt text chunk")
            value = _inflate(rest[1:], text)
        else:  # iTXt: flag, method, language\0, translated keyword\0, text
            if len(rest) < 2:
                raise Unscannable("png: corrupt text chunk")
            flag, method = rest[0], rest[1]
            _language, _, rest = rest[2:].partition(b"\x00")
            translated, _, value = rest.partition(b"\x00")
            if flag:
                if method != 0:
                    raise Unscannable("png: corrupt text chunk")
                value = _inflate(value, text)
            if translated:
                text.line("PNG text keyword", translated.decode("utf-8", "replace"))
        name = keyword.decode("latin-1")
        if keyword == _XMP_KEYWORD:
            render_xmp(value, text)
        elif keyword.startswith(b"Raw profile type ") and _raw_profile(keyword[17:], value, text):
            return
        elif kind == b"iTXt":
            text.line(name, value.decode("utf-8", "replace"))
        else:
            text.line(name, decode_text(value))


def _raw_profile(kind: bytes, value: bytes, text: MetadataText) -> bool:
    """An ImageMagick raw profile (hex-encoded EXIF, XMP, IPTC); False if not one."""
    match = _RAW_PROFILE.match(value)
    if match is None:
        return False
    try:
        data = bytes.fromhex(re.sub(rb"\s+", b"", match.group(3)).decode("ascii"))
    except ValueError:
        return False
    profile = kind.lower()
    if profile in (b"exif", b"app1") and data.startswith(b"Exif\x00"):
        render_exif(data, text)
    elif profile == b"xmp" or (profile == b"app1" and data.startswith(_XMP_APP1)):
        render_xmp(data[len(_XMP_APP1) :] if data.startswith(_XMP_APP1) else data, text)
    elif profile in (b"iptc", b"8bim") and data.startswith(b"8BIM"):
        render_photoshop(data, text)
    elif profile == b"iptc":
        render_iptc(data, text)
    else:
        return False
    return True


# --------------------------------------------------------------------------- WebP

#: WebP chunks of pixels, animation and colour (RFC 9649 §2.7).
_WEBP_SKIPPED: Final = frozenset((b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"))
_WEBP_TEXT: Final = frozenset((b"EXIF", b"XMP "))


class WebpReader:
    """Streaming WebP metadata reader (a StreamReader)."""

    def __init__(self, out: Extract) -> None:
        self.out = out
        self.text = MetadataText(out, "webp")
        self._buf = bytearray()
        self._state = "header"
        self._left = 0  # bytes of the RIFF payload still to come
        self._skip = 0
        self._sink: BinaryOut | None = None
        self._chunks = 0

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        if self._state == "trailer":
            assert self._sink is not None
            self._sink.write(data)
            return
        if self._skip:
            take = min(self._skip, len(data))
            self._sunk(data[:take])
            data = data[take:]
        self._buf += data
        self._run()

    def finish(self) -> None:
        """The member ended: the RIFF chunk must be whole."""
        if self._state == "trailer":
            assert self._sink is not None
            self._sink.close()
        elif self._state != "end" or self._skip or self._buf:
            raise Unscannable("webp: truncated")
        self.text.close()

    def _sunk(self, data: bytes | bytearray) -> None:
        self._skip -= len(data)
        self._left -= len(data)
        if self._sink is not None:
            self._sink.write(bytes(data))
            if not self._skip:
                self._sink.close()
                self._sink = None

    def _run(self) -> None:
        buf = self._buf
        pos = 0
        while True:
            if self._state == "header":
                if len(buf) < 12:
                    break
                riff, size, webp = struct.unpack_from("<4sI4s", buf)
                if riff != b"RIFF" or webp != b"WEBP" or size < 4:
                    raise Unscannable("webp: bad RIFF header")
                self._left = size - 4
                pos = 12
                self._state = "chunks"
            elif self._state == "chunks":
                if not self._left:
                    self._state = "end"
                    continue
                if len(buf) - pos < 8:
                    break
                kind, size = struct.unpack_from("<4sI", buf, pos)
                padded = size + (size & 1)
                if 8 + padded > self._left:
                    raise Unscannable("webp: chunk runs past the RIFF end")
                self._chunks += 1
                if self._chunks > MAX_CHUNKS:
                    raise Unscannable(f"webp: more than {MAX_CHUNKS} chunks")
                if kind in _WEBP_TEXT:
                    if size > MAX_TEXT_CHUNK:
                        raise Unscannable(f"webp: metadata chunk over {MAX_TEXT_CHUNK >> 20} MiB")
                    if len(buf) - pos < 8 + padded:
                        break
                    data = bytes(buf[pos + 8 : pos + 8 + size])
                    if kind == b"EXIF":
                        render_exif(data, self.text)
                    else:
                        render_xmp(data, self.text)
                    pos += 8 + padded
                    self._left -= 8 + padded
                    continue
                pos += 8
                self._left -= 8
                if kind not in _WEBP_SKIPPED:
                    self._sink = self.out.nested(f"webp chunk {kind.decode('latin-1').strip()}")
                self._skip = padded
                take = min(self._skip, len(buf) - pos)
                self._sunk(buf[pos : pos + take])
                pos += take
                if self._skip:
                    break
            elif self._state == "end":
                if pos < len(buf):
                    self._sink = self.out.nested("data after end of image")
                    self._sink.write(bytes(buf[pos:]))
                    self._state = "trailer"
                    pos = len(buf)
                break
        del buf[:pos]
