"""Rendering image metadata as text: the member, XMP, IPTC and Photoshop resources.

Everything an image says about itself becomes ``name: value`` lines in one
``text/plain`` member (opened on first use), which the text detectors scan:
identifiers and phone numbers in captions, authors and comments, and GPS
positions as ``lat, lon`` decimal degrees, which the geo detector judges by
the Greater Bay Area rule (SPEC §3.1 ``geo.precise_location``).
"""

from __future__ import annotations

import math
import re
import struct
import xml.etree.ElementTree as ET
from typing import Final

from gateway.classify.formats.base import Extract, TextOut, Unscannable

#: Characters rendered per image, in total. Metadata is kilobytes; an
#: OME-TIFF ImageDescription of a large plate reaches megabytes.
MAX_RENDERED_CHARS: Final = 32 << 20
#: Bytes of one text value read (an OME-XML description; a UTF-8 comment).
MAX_TEXT_VALUE: Final = 16 << 20
#: Bytes of values read or inflated per image, repeats included: a TIFF whose
#: thousand entries all point at one 16 MiB value, or a PNG of a thousand
#: small compressed chunks each inflating a megabyte, costs no more than this.
MAX_DECODED_BYTES: Final = 128 << 20
#: Bytes of one XMP packet parsed (extended XMP in JPEG splits a large
#: packet over segments; Lightroom's rarely exceed 1 MiB).
MAX_XMP_BYTES: Final = 16 << 20
#: Elements of one XMP packet visited.
MAX_XMP_ELEMENTS: Final = 200_000
#: Decimals of a rendered GPS position: beyond the geo rule's five (SPEC
#: §3.1, ~1 m), so a position recorded to the metre or finer always counts.
GPS_DECIMALS: Final = 7
#: A position recorded no finer than this (degrees) was coarsened on
#: purpose (whole arc-minutes: ~1.8 km); it is rendered with the decimals
#: its precision supports, so it does not count as precise. Anything finer,
#: down to whole arc-seconds (~30 m), is rendered with :data:`GPS_DECIMALS`.
GPS_COARSE_STEP: Final = 1 / 600


class MetadataText:
    """The metadata member of one image file: ``name: value`` lines, bounded.

    Args:
        out: where the member is opened (on the first line).
        what: the format, prefixing unscannable reasons (``"jpeg"``).
    """

    __slots__ = ("_chars", "_decoded", "_member", "_out", "_seen", "what")

    def __init__(self, out: Extract, what: str) -> None:
        self._out = out
        self.what = what
        self._member: TextOut | None = None
        self._chars = 0
        self._decoded = 0
        self._seen: set[tuple[str, str]] = set()

    def spend(self, size: int) -> None:
        """Account ``size`` bytes of values read or inflated (see :data:`MAX_DECODED_BYTES`)."""
        self._decoded += size
        if self._decoded > MAX_DECODED_BYTES:
            raise Unscannable(f"{self.what}: more than {MAX_DECODED_BYTES >> 20} MiB of metadata")

    def line(self, name: str, value: str) -> None:
        """One attribute; empty values and repeats (every page of a TIFF) are not rendered."""
        value = value.strip("\x00 \t\r\n")
        if not value or (name, value) in self._seen:
            return
        self._seen.add((name, value))
        self.write(f"{name}: {value}\n")

    def gps(self, name: str, lat: float, lon: float, decimals: int) -> None:
        """A position as ``lat, lon`` decimal degrees (the geo detector's form)."""
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            self.write(f"{name}: {lat:.{decimals}f}, {lon:.{decimals}f}\n")

    def write(self, text: str) -> None:
        """Append text to the member (bounded)."""
        self._chars += len(text)
        if self._chars > MAX_RENDERED_CHARS:
            raise Unscannable(f"{self.what}: more than {MAX_RENDERED_CHARS >> 20} MiB of metadata")
        if self._member is None:
            self._member = self._out.member("image metadata", "text/plain")
        self._member.write(text)

    def close(self) -> None:
        """End the member (if one was opened)."""
        if self._member is not None:
            self._member.close()


def gps_decimals(step: float) -> int:
    """Decimals to render a coordinate known to ``step`` degrees (see :data:`GPS_COARSE_STEP`)."""
    if step < GPS_COARSE_STEP:
        return GPS_DECIMALS
    return max(0, min(GPS_DECIMALS, math.ceil(-math.log10(step))))


def decode_text(data: bytes) -> str:
    """Bytes of a text field in an unstated charset: UTF-8, else GB18030 (Chinese
    software writes GBK), else Latin-1."""
    data = data[:MAX_TEXT_VALUE]
    for codec in ("utf-8", "gb18030"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def looks_text(data: bytes) -> bool:
    """Whether a payload of unknown kind is text (rendered) rather than binary."""
    if not data:
        return False
    sample = data[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # a character cut at the sample's end is fine
            return False
        text = sample[: exc.start].decode("utf-8")
    printable = sum(1 for c in text if c.isprintable() or c in "\r\n\t")
    return printable >= 0.95 * len(text)


# --------------------------------------------------------------------------- XMP

_RDF: Final = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
#: RDF structure, not properties: their content is named after the property
#: that holds them.
_RDF_STRUCTURE: Final = frozenset(("RDF", "Description", "Seq", "Bag", "Alt", "li", "xmpmeta"))
_XMP_GPS: Final = frozenset(("GPSLatitude", "GPSLongitude", "GPSDestLatitude", "GPSDestLongitude"))
#: XMP GPSCoordinate (XMP Specification Part 2, §1.2.7.4): "DDD,MM,SSk" or "DDD,MM.mmk".
_XMP_COORD: Final = re.compile(
    r"\s*([0-9]{1,3}),([0-9]{1,2})(?:\.([0-9]+))?(?:,([0-9]{1,2})(?:\.([0-9]+))?)?\s*([NSEWnsew])\s*"
)


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1] if name.startswith("{") else name.split(":")[-1]


def render_xmp(data: bytes, text: MetadataText) -> None:
    """An XMP packet: every property value and attribute as a line; GPS as a position.

    A packet with a document type declaration (entities: none in real XMP)
    or one expat cannot parse is rendered as its raw text.
    """
    if len(data) > MAX_XMP_BYTES:
        raise Unscannable(f"{text.what}: XMP packet over {MAX_XMP_BYTES >> 20} MiB")
    start = data.find(b"<")
    if start < 0:
        return
    data = data[start:].rstrip(b"\x00 \r\n\t")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        text.write("XMP: " + decode_text(data) + "\n")
        return
    try:
        root = ET.fromstring(data)  # noqa: S314 - no DTD (refused above): no entities to expand
    except ET.ParseError:
        text.write("XMP: " + decode_text(data) + "\n")
        return
    positions: dict[str, tuple[float, float]] = {}
    stack: list[tuple[ET.Element, str]] = [(root, "XMP")]
    visited = 0
    while stack:
        elem, parent = stack.pop()
        visited += 1
        if visited > MAX_XMP_ELEMENTS:
            raise Unscannable(f"{text.what}: more than {MAX_XMP_ELEMENTS} XMP elements")
        local = _local(elem.tag) if isinstance(elem.tag, str) else ""
        name = parent if local in _RDF_STRUCTURE or not local else local
        for key, value in elem.attrib.items():
            attr = _local(key)
            if key.startswith("{" + _RDF) and attr in ("about", "parseType"):
                continue
            text.line(attr, value)
            _xmp_gps(attr, value, positions)
        if elem.text and elem.text.strip():
            text.line(name, elem.text)
            _xmp_gps(name, elem.text, positions)
        stack.extend((child, name) for child in reversed(list(elem)))
    for prefix, label in (("GPS", "GPS position"), ("GPSDest", "GPS destination")):
        lat, lon = positions.get(prefix + "Latitude"), positions.get(prefix + "Longitude")
        if lat is not None and lon is not None:
            text.gps(label, lat[0], lon[0], gps_decimals(max(lat[1], lon[1])))


def _xmp_gps(name: str, value: str, positions: dict[str, tuple[float, float]]) -> None:
    if name not in _XMP_GPS:
        return
    match = _XMP_COORD.fullmatch(value)
    if match is None:
        return
    deg, minutes, min_frac, seconds, sec_frac, ref = match.groups()
    degrees = int(deg) + float(f"{minutes}.{min_frac or 0}") / 60
    if seconds is not None:
        degrees += float(f"{seconds}.{sec_frac or 0}") / 3600
        step = 10.0 ** -len(sec_frac or "") / 3600
    else:
        step = 10.0 ** -len(min_frac or "") / 60
    if ref.upper() in "SW":
        degrees = -degrees
    positions[name] = (degrees, step)


# --------------------------------------------------------------------------- IPTC

#: IPTC IIM record 2 datasets (IPTC-NAA IIM 4.2 §6) by number.
IPTC_NAMES: Final[dict[int, str]] = {
    5: "Object Name",
    7: "Edit Status",
    10: "Urgency",
    12: "Subject Reference",
    15: "Category",
    20: "Supplemental Category",
    22: "Fixture Identifier",
    25: "Keywords",
    26: "Content Location Code",
    27: "Content Location Name",
    40: "Special Instructions",
    55: "Date Created",
    60: "Time Created",
    65: "Originating Program",
    80: "By-line",
    85: "By-line Title",
    90: "City",
    92: "Sub-location",
    95: "Province/State",
    100: "Country Code",
    101: "Country",
    103: "Original Transmission Reference",
    105: "Headline",
    110: "Credit",
    115: "Source",
    116: "Copyright Notice",
    118: "Contact",
    120: "Caption/Abstract",
    122: "Writer/Editor",
}
#: IIM 1:90 Coded Character Set: ESC % G is UTF-8.
_IPTC_UTF8: Final = b"\x1b%G"


def render_iptc(data: bytes, text: MetadataText) -> None:
    """IPTC IIM datasets (``0x1C`` record dataset length value …) as lines.

    The block ends at the first byte that is not a tag marker (writers pad
    with zeros); a length running past the block is a corrupt file.
    """
    pos = 0
    utf8 = False
    while pos + 5 <= len(data) and data[pos] == 0x1C:
        record, dataset = data[pos + 1], data[pos + 2]
        (length,) = struct.unpack_from(">H", data, pos + 3)
        pos += 5
        if length & 0x8000:  # extended dataset: the length's own length follows
            size = length & 0x7FFF
            if size > 4 or pos + size > len(data):
                raise Unscannable(f"{text.what}: corrupt IPTC dataset")
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if pos + length > len(data):
            raise Unscannable(f"{text.what}: IPTC dataset runs past its block")
        value = data[pos : pos + length]
        pos += length
        if record == 1 and dataset == 90:
            utf8 = value.startswith(_IPTC_UTF8)
        elif record == 2 and dataset != 0:
            if dataset in (200, 201, 202) and not looks_text(value):
                continue  # object data preview: an image
            shown = value.decode("utf-8", "replace") if utf8 else decode_text(value)
            text.line("IPTC " + IPTC_NAMES.get(dataset, f"2:{dataset}"), shown)


# --------------------------------------------------------------------------- Photoshop

#: Image resource blocks (Adobe Photoshop File Formats Specification, "Image
#: Resource Blocks"): IPTC-NAA record and XMP metadata.
_PS_IPTC: Final = 0x0404
_PS_XMP: Final = 0x0424
_PS_SIGNATURES: Final = (b"8BIM", b"PHUT", b"AgHg", b"DCSR", b"MeSa")


def render_photoshop(data: bytes, text: MetadataText) -> None:
    """Photoshop image resources (APP13, TIFF tag 34377): the IPTC and XMP ones."""
    pos = 0
    while pos + 12 <= len(data) and data[pos : pos + 4] in _PS_SIGNATURES:
        (ident,) = struct.unpack_from(">H", data, pos + 4)
        name_len = data[pos + 6]
        pos += 6 + ((name_len + 2) & ~1)  # Pascal string padded to an even size
        if pos + 4 > len(data):
            raise Unscannable(f"{text.what}: corrupt Photoshop resource")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise Unscannable(f"{text.what}: Photoshop resource runs past its block")
        value = data[pos : pos + size]
        pos += size + (size & 1)
        if ident == _PS_IPTC:
            render_iptc(value, text)
        elif ident == _PS_XMP:
            render_xmp(value, text)
