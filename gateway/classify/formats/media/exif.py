"""TIFF structure walking: EXIF (in JPEG, PNG, WebP) and TIFF files themselves.

A TIFF (TIFF 6.0 §2; BigTIFF) is a header and a chain of image file
directories (IFDs), each a list of tagged values that may point to further
IFDs (EXIF, GPS, interoperability, sub-images). The walk reads only IFDs and
the values it renders, never strips or tiles of pixels; it is bounded in
IFDs and entries and refuses a directory visited twice (a cycle).

Rendered: every ASCII/UTF-8 tag of every IFD (ImageDescription, Artist,
Copyright, Make, Model, serial numbers, OME-XML…), the Windows XP text tags,
UserComment and the GPS text tags, XMP (tag 700), IPTC (33723) and Photoshop
resources (34377); the GPS position as ``lat, lon`` decimal degrees. Maker
notes (vendor binary) are not read.
"""

from __future__ import annotations

import struct
from typing import Final

from gateway.classify.formats.base import BytesAccess, RandomAccess, Unscannable
from gateway.classify.formats.media.text import (
    MAX_TEXT_VALUE,
    MetadataText,
    decode_text,
    gps_decimals,
    render_iptc,
    render_photoshop,
    render_xmp,
)

#: IFDs walked per file (pages of a multi-page TIFF, their sub-images and
#: EXIF/GPS directories). Microscopy stacks reach thousands of pages.
MAX_IFDS: Final = 65_536
#: Entries of one IFD (real ones hold 10-60; TIFF's count field allows 65 535).
MAX_IFD_ENTRIES: Final = 4096
#: Entries over the whole file.
MAX_ENTRIES: Final = 1 << 20

#: Bytes per value of each TIFF field type (TIFF 6.0 §2, BigTIFF, EXIF 3.0 UTF-8).
_TYPE_SIZES: Final[dict[int, int]] = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
    13: 4, 16: 8, 17: 8, 18: 8, 129: 1,
}  # fmt: skip
_ASCII, _UTF8, _BYTE, _UNDEFINED, _RATIONAL, _SRATIONAL = 2, 129, 1, 7, 5, 10
_LONG, _IFD, _LONG8, _IFD8 = 4, 13, 16, 18

#: Pointer tags to other IFDs (EXIF 3.0 §4.6.3; TIFF SubIFDs, TIFF Tech Note 1).
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD, _SUB_IFDS = 0x8769, 0x8825, 0xA005, 0x014A
_XMP_TAG, _IPTC_TAG, _PHOTOSHOP_TAG = 700, 33723, 34377
_USER_COMMENT = 0x9286
#: Windows XP tags (UTF-16LE in BYTE arrays).
_XP_TAGS: Final[dict[int, str]] = {
    0x9C9B: "XPTitle",
    0x9C9C: "XPComment",
    0x9C9D: "XPAuthor",
    0x9C9E: "XPKeywords",
    0x9C9F: "XPSubject",
}
#: Names of the text tags of image and EXIF IFDs (TIFF 6.0, EXIF 3.0, DNG).
_NAMES: Final[dict[int, str]] = {
    269: "DocumentName",
    270: "ImageDescription",
    271: "Make",
    272: "Model",
    285: "PageName",
    305: "Software",
    306: "DateTime",
    315: "Artist",
    316: "HostComputer",
    33432: "Copyright",
    0x9003: "DateTimeOriginal",
    0x9004: "DateTimeDigitized",
    0x9010: "OffsetTime",
    0x9011: "OffsetTimeOriginal",
    0x9012: "OffsetTimeDigitized",
    0xA004: "RelatedSoundFile",
    0xA420: "ImageUniqueID",
    0xA430: "CameraOwnerName",
    0xA431: "BodySerialNumber",
    0xA433: "LensMake",
    0xA434: "LensModel",
    0xA435: "LensSerialNumber",
    0xA436: "ImageTitle",
    0xA437: "Photographer",
    0xA438: "ImageEditor",
    0xA439: "CameraFirmware",
    0xA43A: "RAWDevelopingSoftware",
    0xA43B: "ImageEditingSoftware",
    0xA43C: "MetadataEditingSoftware",
    0xC614: "UniqueCameraModel",
    0xC615: "LocalizedCameraModel",
    0xC62F: "CameraSerialNumber",
}
#: GPS IFD tags (EXIF 3.0 §4.6.6).
_GPS_NAMES: Final[dict[int, str]] = {
    1: "GPSLatitudeRef",
    3: "GPSLongitudeRef",
    9: "GPSStatus",
    10: "GPSMeasureMode",
    12: "GPSSpeedRef",
    14: "GPSTrackRef",
    16: "GPSImgDirectionRef",
    18: "GPSMapDatum",
    19: "GPSDestLatitudeRef",
    21: "GPSDestLongitudeRef",
    23: "GPSDestBearingRef",
    25: "GPSDestDistanceRef",
    27: "GPSProcessingMethod",
    28: "GPSAreaInformation",
    29: "GPSDateStamp",
}
#: GPS coordinate tags: (latitude ref, latitude, longitude ref, longitude), label.
_GPS_PAIRS: Final = (((1, 2, 3, 4), "GPS position"), ((19, 20, 21, 22), "GPS destination"))
#: EXIF character codes of UserComment and the GPS text tags (EXIF 3.0 Table 9).
_CHARSET_CODES: Final[dict[bytes, str]] = {
    b"ASCII\x00\x00\x00": "ascii",
    b"UNICODE\x00": "utf-16",
    b"JIS\x00\x00\x00\x00\x00": "iso2022_jp",
}


class TiffWalker:
    """Walks the IFDs of one TIFF structure and renders what they say.

    Args:
        source: the bytes holding it.
        text: where lines go.
        base: offset of the TIFF header in ``source`` (IFD offsets count from it).
    """

    def __init__(self, source: RandomAccess, text: MetadataText, base: int = 0) -> None:
        self._src = source
        self._text = text
        self._base = base
        self._what = text.what
        self._visited: set[int] = set()
        self._entries = 0
        self._order = "<"
        self._big = False

    def walk(self) -> None:
        """Read the header, then every IFD reachable from it."""
        head = self._src.read_at(self._base, 16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            raise Unscannable(f"{self._what}: bad TIFF header")
        self._order = order
        (magic,) = struct.unpack_from(order + "H", head, 2)
        if magic == 42:
            (first,) = struct.unpack_from(order + "I", head, 4)
        elif magic == 43 and len(head) >= 16:
            self._big = True
            size, zero, first = struct.unpack_from(order + "HHQ", head, 4)
            if size != 8 or zero != 0:
                raise Unscannable(f"{self._what}: bad BigTIFF header")
        else:
            raise Unscannable(f"{self._what}: bad TIFF header")
        queue: list[tuple[int, str]] = [(first, "image")]
        while queue:
            offset, kind = queue.pop()
            while offset:
                offset = self._ifd(offset, kind, queue)

    def _read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or self._base + offset + length > self._src.size:
            raise Unscannable(f"{self._what}: {what} past the end of the data")
        return self._src.read_at(self._base + offset, length)

    def _ifd(self, offset: int, kind: str, queue: list[tuple[int, str]]) -> int:
        """Render one IFD, queue the IFDs it points to; the next IFD's offset (0: none)."""
        if offset in self._visited:
            raise Unscannable(f"{self._what}: IFD cycle")
        self._visited.add(offset)
        if len(self._visited) > MAX_IFDS:
            raise Unscannable(f"{self._what}: more than {MAX_IFDS} IFDs")
        o = self._order
        count_size, entry_size, next_size = (8, 20, 8) if self._big else (2, 12, 4)
        (count,) = struct.unpack(
            o + ("Q" if self._big else "H"), self._read(offset, count_size, "IFD")
        )
        if count > MAX_IFD_ENTRIES:
            raise Unscannable(f"{self._what}: IFD of more than {MAX_IFD_ENTRIES} entries")
        self._entries += count
        if self._entries > MAX_ENTRIES:
            raise Unscannable(f"{self._what}: more than {MAX_ENTRIES} IFD entries")
        table = self._read(offset + count_size, count * entry_size, "IFD")
        gps: dict[int, bytes | tuple[float, float]] = {}
        for i in range(count):
            at = i * entry_size
            if self._big:
                tag, kind_code, n = struct.unpack_from(o + "HHQ", table, at)
                field = table[at + 12 : at + 20]
            else:
                tag, kind_code, n = struct.unpack_from(o + "HHI", table, at)
                field = table[at + 8 : at + 12]
            self._entry(kind, tag, kind_code, n, field, queue, gps)
        if kind == "gps":
            self._gps(gps)
        at = offset + count_size + count * entry_size
        if self._base + at + next_size > self._src.size:
            return 0  # no next-IFD field at the very end of an EXIF block: none
        (nxt,) = struct.unpack(o + ("Q" if self._big else "I"), self._read(at, next_size, "IFD"))
        return int(nxt)

    def _value(self, kind_code: int, n: int, field: bytes) -> bytes:
        """The bytes of an entry's value: in the entry, or at the offset it holds."""
        size = n * _TYPE_SIZES[kind_code]
        if size > MAX_TEXT_VALUE:
            raise Unscannable(f"{self._what}: tag value over {MAX_TEXT_VALUE >> 20} MiB")
        if size <= len(field):
            return field[:size]
        (offset,) = struct.unpack(self._order + ("Q" if self._big else "I"), field)
        self._text.spend(size)
        return self._read(offset, size, "tag value")

    def _offsets(self, kind_code: int, n: int, field: bytes) -> list[int]:
        if kind_code not in (_LONG, _IFD, _LONG8, _IFD8) or n > MAX_IFD_ENTRIES:
            raise Unscannable(f"{self._what}: corrupt IFD pointer")
        code = "I" if kind_code in (_LONG, _IFD) else "Q"
        return list(struct.unpack(f"{self._order}{n}{code}", self._value(kind_code, n, field)))

    def _entry(
        self,
        kind: str,
        tag: int,
        kind_code: int,
        n: int,
        field: bytes,
        queue: list[tuple[int, str]],
        gps: dict[int, bytes | tuple[float, float]],
    ) -> None:
        if kind_code not in _TYPE_SIZES:
            return  # TIFF 6.0 §2: readers skip fields of unknown types
        text = self._text
        if kind == "gps":
            if tag in (2, 4, 20, 22) and kind_code in (_RATIONAL, _SRATIONAL) and 1 <= n <= 3:
                gps[tag] = _degrees(self._value(kind_code, n, field), self._order, kind_code)
            elif tag in (1, 3, 19, 21) and kind_code == _ASCII:
                gps[tag] = self._value(kind_code, n, field)
            if tag in (27, 28) and kind_code in (_UNDEFINED, _BYTE):
                text.line(_GPS_NAMES[tag], self._comment(self._value(kind_code, n, field)))
            elif kind_code in (_ASCII, _UTF8):
                name = _GPS_NAMES.get(tag, f"GPS tag {tag}")
                text.line(name, decode_text(self._value(kind_code, n, field)))
            return
        if tag in (_EXIF_IFD, _GPS_IFD, _INTEROP_IFD, _SUB_IFDS):
            child = {_EXIF_IFD: "exif", _GPS_IFD: "gps", _INTEROP_IFD: "interop"}.get(tag, "image")
            queue.extend((offset, child) for offset in self._offsets(kind_code, n, field))
        elif tag == _USER_COMMENT and kind_code in (_UNDEFINED, _BYTE, _ASCII):
            # UNDEFINED by the standard; some writers (Pillow) use BYTE or ASCII.
            text.line("UserComment", self._comment(self._value(kind_code, n, field)))
        elif kind_code in (_ASCII, _UTF8):
            name = _NAMES.get(tag, f"TIFF tag {tag}")
            text.line(name, decode_text(self._value(kind_code, n, field)))
        elif tag in _XP_TAGS and kind_code == _BYTE:
            value = self._value(kind_code, n, field)
            text.line(_XP_TAGS[tag], value.decode("utf-16-le", "replace"))
        elif tag == _XMP_TAG and kind_code in (_BYTE, _UNDEFINED):
            render_xmp(self._value(kind_code, n, field), text)
        elif tag == _IPTC_TAG and kind_code in (_BYTE, _UNDEFINED, _LONG):
            render_iptc(self._value(kind_code, n, field), text)
        elif tag == _PHOTOSHOP_TAG and kind_code in (_BYTE, _UNDEFINED):
            render_photoshop(self._value(kind_code, n, field), text)

    def _comment(self, value: bytes) -> str:
        """UserComment / GPS text: an 8-byte character code, then the text."""
        codec = _CHARSET_CODES.get(value[:8])
        body = value[8:]
        if codec == "utf-16" and body[:2] not in (b"\xff\xfe", b"\xfe\xff"):
            codec = "utf-16-le" if self._order == "<" else "utf-16-be"
        if codec is None:
            return decode_text(body)
        return body.decode(codec, "replace")

    def _gps(self, gps: dict[int, bytes | tuple[float, float]]) -> None:
        for (lat_ref, lat_tag, lon_ref, lon_tag), label in _GPS_PAIRS:
            lat, lon = gps.get(lat_tag), gps.get(lon_tag)
            if not isinstance(lat, tuple) or not isinstance(lon, tuple):
                continue
            if math_nan(lat[0]) or math_nan(lon[0]):
                continue
            lat_sign = -1 if _ref(gps.get(lat_ref)) == "S" else 1
            lon_sign = -1 if _ref(gps.get(lon_ref)) == "W" else 1
            decimals = gps_decimals(max(lat[1], lon[1]))
            self._text.gps(label, lat_sign * lat[0], lon_sign * lon[0], decimals)


def math_nan(value: float) -> bool:
    """True for NaN (a rational with a zero denominator)."""
    return value != value


def _ref(value: bytes | tuple[float, float] | None) -> str:
    if isinstance(value, bytes):
        return value[:1].decode("latin-1").upper()
    return ""


def _degrees(data: bytes, order: str, kind_code: int) -> tuple[float, float]:
    """Degrees, minutes, seconds as rationals -> (degrees, step): the step is
    the finest unit the rationals can express (their precision)."""
    n = len(data) // 8
    values = struct.unpack(f"{order}{2 * n}{'I' if kind_code == _RATIONAL else 'i'}", data)
    degrees, step = 0.0, 1.0
    for i, unit in zip(range(n), (1.0, 60.0, 3600.0), strict=False):
        num, den = values[2 * i], values[2 * i + 1]
        if den == 0:
            if num == 0:
                continue  # 0/0: an absent part (writers fill unused seconds so)
            return float("nan"), 1.0
        degrees += num / den / unit
        step = min(step, 1 / (den * unit))
    return degrees, step


def render_exif(data: bytes, text: MetadataText) -> None:
    """An EXIF block (a TIFF structure, after an optional ``Exif\\0\\0`` prefix)."""
    if data.startswith(b"Exif\x00"):
        data = data[6:]
    if data:
        TiffWalker(BytesAccess(data), text).walk()
