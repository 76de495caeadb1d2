"""JPEG metadata reader: segments up to the scan, then the scan skipped unread.

A JPEG (ITU-T T.81 Annex B) is a series of marker segments: SOI, tables,
APPn metadata, SOF, then SOS followed by entropy-coded data, in which a
``0xFF`` byte is always followed by ``0x00`` (stuffing) or a restart marker,
so the next real marker is found with a byte search, without buffering the
scan. Progressive images have several scans with tables between them; the
file ends at EOI.

Read: APP1 EXIF (:mod:`~gateway.classify.formats.media.exif`) and XMP
(extended XMP reassembled), APP13 Photoshop resources (IPTC), COM comments.
Known segments of colour, thumbnails and vendor structure (JFIF, ICC, MPF,
FlashPix, Adobe, Ducky, JUMBF) are skipped; any other APPn segment is
rendered when it is text and otherwise handed to the decoder as a nested
member. Secondary images of a multi-picture file (MPF: each starts with SOI
after the previous EOI) are read the same way; any other data after the end
of the image is handed to the decoder as a nested member (a zip appended to a
photo is opened and scanned; a motion photo's MP4 passes as video). Pixels
are never decoded.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.classify.formats import Magic
from gateway.classify.formats.base import BinaryOut, Extract, Unscannable
from gateway.classify.formats.media.exif import render_exif
from gateway.classify.formats.media.text import (
    MAX_XMP_BYTES,
    MetadataText,
    decode_text,
    looks_text,
    render_photoshop,
    render_xmp,
)

#: Images in one file: the primary and the secondary images of a
#: multi-picture file (MPF: previews, depth maps, gain maps; a handful).
MAX_IMAGES: Final = 64
#: Marker segments per image (tables, metadata, scans of a progressive image).
MAX_SEGMENTS: Final = 4096

_XMP_ID: Final = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXT_ID: Final = b"http://ns.adobe.com/xmp/extension/\x00"
_PHOTOSHOP_ID: Final = b"Photoshop 3.0\x00"
#: Known APPn segments holding no text (colour profiles, thumbnails, structure):
#: (marker, identifier prefix).
_SKIPPED: Final = (
    (0xE0, b"JFIF\x00"),
    (0xE0, b"JFXX\x00"),
    (0xE1, b"Exif\x00"),  # handled before this list is consulted
    (0xE2, b"ICC_PROFILE\x00"),
    (0xE2, b"MPF\x00"),
    (0xE2, b"FPXR\x00"),
    (0xEB, b"JP"),  # JUMBF boxes (ISO/IEC 19566-5), C2PA manifests
    (0xEC, b"Ducky"),
    (0xEE, b"Adobe"),
)
#: A marker in entropy-coded data: 0xFF then neither stuffing (0x00), a
#: restart marker (0xD0-0xD7) nor fill (0xFF).
_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
#: Fill after EOI: 0xFF before another 0xFF or a zero.
_FILL: Final = (b"\xff\xff", b"\xff\x00")
#: Markers without a length (TEM, RSTn).
_STANDALONE: Final = frozenset((0x01, *range(0xD0, 0xD8)))


class JpegReader:
    """Streaming JPEG metadata reader (a StreamReader)."""

    def __init__(self, out: Extract) -> None:
        self.out = out
        self.text = MetadataText(out, "jpeg")
        self._buf = bytearray()
        self._state = "soi"
        self._images = 0
        self._segments = 0
        self._xmp_ext = bytearray()
        self._trailer: BinaryOut | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        if self._trailer is not None:
            self._trailer.write(data)
            return
        self._buf += data
        self._run()

    def finish(self) -> None:
        """The member ended: the image must have reached EOI."""
        if self._trailer is not None:
            self._trailer.close()
        elif self._state != "after" or self._buf.strip(b"\x00\xff"):
            raise Unscannable("jpeg: truncated")
        if self._xmp_ext:
            render_xmp(bytes(self._xmp_ext), self.text)
        self.text.close()

    def _run(self) -> None:
        buf = self._buf
        pos = 0
        while True:
            if self._state == "scan":
                match = _MARKER.search(buf, pos)
                if match is None:
                    # Keep a last 0xFF: the byte after it says what it is.
                    pos = len(buf) - 1 if buf.endswith(b"\xff") else len(buf)
                    break
                pos = match.start()
                self._state = "marker"
            elif self._state == "soi":
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\xff\xd8":
                    raise Unscannable("jpeg: no start of image")
                self._images += 1
                if self._images > MAX_IMAGES:
                    raise Unscannable(f"jpeg: more than {MAX_IMAGES} images")
                self._segments = 0
                pos += 2
                self._state = "marker"
            elif self._state == "marker":
                got = self._marker(buf, pos)
                if got is None:
                    break
                pos = got
            else:  # after EOI: padding, another image (MPF), or trailing data
                while pos < len(buf) and (buf[pos] == 0 or bytes(buf[pos : pos + 2]) in _FILL):
                    pos += 1  # padding and fill
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] == b"\xff\xd8":
                    self._state = "soi"
                    continue
                self._trailer = self.out.nested("data after end of image")
                self._trailer.write(bytes(buf[pos:]))
                pos = len(buf)
                break
        del buf[:pos]

    def _marker(self, buf: bytearray, pos: int) -> int | None:
        """One marker (and its segment) at ``pos``; the position after it, None if cut."""
        while pos + 1 < len(buf) and buf[pos] == 0xFF and buf[pos + 1] == 0xFF:
            pos += 1  # fill bytes (T.81 B.1.1.2)
        if len(buf) - pos < 2:
            return None
        if buf[pos] != 0xFF:
            raise Unscannable("jpeg: corrupt marker")
        marker = buf[pos + 1]
        self._segments += 1
        if self._segments > MAX_SEGMENTS:
            raise Unscannable(f"jpeg: more than {MAX_SEGMENTS} segments")
        if marker in _STANDALONE:
            return pos + 2
        if marker == _EOI:
            self._state = "after"
            return pos + 2
        if marker == _SOI or marker == 0x00:
            raise Unscannable("jpeg: corrupt marker")
        if len(buf) - pos < 4:
            return None
        length = buf[pos + 2] << 8 | buf[pos + 3]
        if length < 2:
            raise Unscannable("jpeg: corrupt segment length")
        end = pos + 2 + length
        if end > len(buf):
            return None  # a segment is at most 64 KiB: buffered whole
        if 0xE0 <= marker <= 0xEF or marker == _COM:
            self._segment(marker, bytes(buf[pos + 4 : end]))
        if marker == _SOS:
            self._state = "scan"
        return end

    def _segment(self, marker: int, payload: bytes) -> None:
        text = self.text
        if marker == _COM:
            text.line("JPEG comment", decode_text(payload))
        elif marker == 0xE1 and payload.startswith(b"Exif\x00"):
            render_exif(payload, text)
        elif marker == 0xE1 and payload.startswith(_XMP_ID):
            render_xmp(payload[len(_XMP_ID) :], text)
        elif marker == 0xE1 and payload.startswith(_XMP_EXT_ID):
            # GUID (32), full length (4), offset (4), then this part of the packet.
            self._xmp_ext += payload[len(_XMP_EXT_ID) + 40 :]
            if len(self._xmp_ext) > MAX_XMP_BYTES:
                raise Unscannable(f"jpeg: extended XMP over {MAX_XMP_BYTES >> 20} MiB")
        elif marker == 0xED and payload.startswith(_PHOTOSHOP_ID):
            render_photoshop(payload[len(_PHOTOSHOP_ID) :], text)
        elif any(marker == m and payload.startswith(p) for m, p in _SKIPPED):
            return
        elif looks_text(payload):
            text.line(f"JPEG APP{marker - 0xE0} segment", decode_text(payload))
        elif payload:
            nested = self.out.nested(f"jpeg APP{marker - 0xE0} segment")
            nested.write(payload)
            nested.close()


#: SOI then a marker.
sniff_jpeg: Final = Magic(b"\xff\xd8\xff")
