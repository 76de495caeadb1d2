"""Image metadata readers (gateway/classify/formats/media/): JPEG, PNG, WebP, TIFF.

Files made by Pillow (and TIFF structures built here where Pillow cannot write
them): EXIF GPS in Shenzhen becomes ``geo.precise_location`` by the text geo
rule and a position outside the Greater Bay Area or coarsened on purpose does
not; identifiers planted in EXIF, XMP, IPTC, PNG text chunks and JPEG comments
are found; clean images hold nothing identifier-shaped; data appended after
the image goes back to the decoder; corrupt and hostile variants (truncated,
lying offsets, IFD cycles, compressed-text bombs) are unscannable; and a
hypothesis test per reader mutates valid files and accepts only success or
``Unscannable``.
"""

from __future__ import annotations

import contextlib
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from gateway.bench.classify import _person
from gateway.classify import DetectorSet
from gateway.classify.formats import identify
from gateway.classify.formats.base import Extract, StreamReader, Unscannable
from gateway.classify.formats.media import JpegReader, PngReader, WebpReader, read_tiff
from gateway.classify.formats.media.text import gps_decimals
from gateway.classify.formats.testing import (
    RecordingExtract,
    label_counts,
    read_random,
    read_stream,
    scan_bytes,
)
from gateway.classify.summary import ScanSummary

DETECTORS = DetectorSet.build()
RNG = random.Random(23)
PEOPLE = [_person(RNG, n) for n in range(3)]
RESIDENT_ID, MOBILE, EMAIL, HKID = PEOPLE[0][:4]
#: Shenzhen Civic Centre (22.5431 N, 114.0579 E) in degrees, minutes, seconds.
SHENZHEN = ((22, 1), (32, 1), (3516, 100)), ((114, 1), (3, 1), (2844, 100))
#: Beijing: outside the Greater Bay Area box.
BEIJING = ((39, 1), (54, 1), (1512, 100)), ((116, 1), (24, 1), (2664, 100))
XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
    'xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    'exif:GPSLatitude="22,32.586N" exif:GPSLongitude="114,3.474E" '
    f'photoshop:City="Shenzhen" photoshop:AuthorsPosition="nurse {EMAIL}">'
    f"<dc:creator><rdf:Seq><rdf:li>Chan Tai Man {HKID}</rdf:li></rdf:Seq></dc:creator>"
    '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">All rights reserved</rdf:li></rdf:Alt>'
    "</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>"
).encode()


def exif(position: Any = SHENZHEN, planted: bool = True) -> Image.Exif:
    """EXIF with a GPS position and, when ``planted``, identifiers in text tags."""
    e = Image.Exif()
    e[0x010F] = "Huawei"
    e[0x0110] = "P60"
    if planted:
        e[0x013B] = f"Zhang San tel {MOBILE}"  # Artist
        e[0x8298] = f"patient {RESIDENT_ID}"  # Copyright
        e.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + f"see {EMAIL}".encode()  # UserComment
    if position is not None:
        (lat, lon) = position
        gps = e.get_ifd(0x8825)
        gps[1], gps[2] = "N", tuple(n / d for n, d in lat)
        gps[3], gps[4] = "E", tuple(n / d for n, d in lon)
    return e


def jpeg(**save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "teal").save(out, "JPEG", **save)
    return out.getvalue()


def png(**save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "teal").save(out, "PNG", **save)
    return out.getvalue()


def webp(**save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "teal").save(out, "WEBP", **save)
    return out.getvalue()


def scan(data: bytes, chunk: int = 0) -> ScanSummary:
    """Through the whole decoder, in ``chunk``-byte pieces (whole when 0)."""
    return scan_bytes(DETECTORS, data, chunk)


counts = label_counts


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def iptc(*datasets: tuple[int, str]) -> bytes:
    """An APP13 Photoshop segment holding IPTC IIM record 2 datasets (UTF-8)."""
    iim = b"\x1c\x01\x5a\x00\x03\x1b%G"
    for number, value in datasets:
        raw = value.encode()
        iim += struct.pack(">BBBH", 0x1C, 2, number, len(raw)) + raw
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim + b"\0" * (len(iim) & 1)
    return segment(0xED, b"Photoshop 3.0\x00" + resource)


def splice(data: bytes, *segments: bytes) -> bytes:
    """``segments`` inserted after a JPEG's SOI."""
    return data[:2] + b"".join(segments) + data[2:]


# -- JPEG -----------------------------------------------------------------------------------------


def test_jpeg_exif_xmp_iptc_comment_rendered() -> None:
    data = splice(
        jpeg(exif=exif(), xmp=XMP, comment=f"shot by {RESIDENT_ID}"),
        iptc((80, f"By-line {PEOPLE[1][0]}"), (120, f"Caption tel {PEOPLE[1][1]}")),
    )
    out = read_stream(JpegReader, data)
    text = out.text
    assert f"Artist: Zhang San tel {MOBILE}\n" in text
    assert f"Copyright: patient {RESIDENT_ID}\n" in text
    assert f"UserComment: see {EMAIL}\n" in text
    assert "GPS position: 22.5431000, 114.0579000\n" in text
    assert f"creator: Chan Tai Man {HKID}\n" in text
    assert f"AuthorsPosition: nurse {EMAIL}\n" in text
    assert f"IPTC By-line: By-line {PEOPLE[1][0]}\n" in text
    assert f"IPTC Caption/Abstract: Caption tel {PEOPLE[1][1]}\n" in text
    assert f"JPEG comment: shot by {RESIDENT_ID}\n" in text
    assert [m.name for m in out.members] == ["image metadata"]
    assert out.nested_members == []
    for chunk in (1, 5, 333):
        assert read_stream(JpegReader, data, chunk).text == text


def test_jpeg_gps_in_shenzhen_is_a_precise_location() -> None:
    summary = scan(jpeg(exif=exif(planted=False)), chunk=97)
    assert summary.content.type == "image/jpeg"
    assert counts(summary) == {"geo.precise_location": 1}


def test_jpeg_identifiers_found_through_the_decoder() -> None:
    data = splice(jpeg(exif=exif(), xmp=XMP), iptc((80, f"By-line {PEOPLE[1][0]}")))
    found = counts(scan(data))
    assert found["geo.precise_location"] == 2  # EXIF and XMP say the same place
    assert found["pii.cn_resident_id"] == 2
    assert found["pii.cn_phone"] == 1
    assert found["pii.email"] == 2
    assert found["pii.hk_id"] == 1


@pytest.mark.parametrize(
    "position",
    [
        BEIJING,
        (((22, 1), (32, 1)), ((114, 1), (3, 1))),  # whole minutes: coarsened on purpose (~1.8 km)
        None,
    ],
)
def test_jpeg_without_a_precise_gba_position(position: Any) -> None:
    summary = scan(jpeg(exif=exif(position, planted=False)))
    assert counts(summary) == {}


def test_gps_precision_rule() -> None:
    assert gps_decimals(1 / 360000) == 7  # seconds to 1/100: phones
    assert gps_decimals(1 / 3600) == 7  # whole seconds (~30 m): still a building
    assert gps_decimals(1 / 60) == 2  # whole minutes: not precise
    assert gps_decimals(1.0) == 0


def test_clean_jpeg_has_nothing_identifier_shaped() -> None:
    summary = scan(jpeg(exif=exif(None, planted=False), comment="holiday"))
    assert counts(summary) == {}
    assert summary.unscannable == ()
    assert scan(jpeg()).labels == {}


def test_data_after_the_image_goes_back_to_the_decoder() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ids.csv", f"name,id\nChan,{RESIDENT_ID}\n")
    data = jpeg() + archive.getvalue()
    out = read_stream(JpegReader, data, 100)
    [nested] = out.nested_members
    assert (nested.name, bytes(nested.data)) == ("data after end of image", archive.getvalue())
    assert counts(scan(data))["pii.cn_resident_id"] == 1
    padded = jpeg() + b"\0" * 100  # padding is no data
    assert read_stream(JpegReader, padded).nested_members == []


def test_jpeg_unknown_segments() -> None:
    text_segment = segment(0xE9, f"vendor note {MOBILE}".encode())
    binary_segment = segment(0xE9, bytes(range(256)))
    icc = segment(0xE2, b"ICC_PROFILE\x00" + bytes(range(256)))
    out = read_stream(JpegReader, splice(jpeg(), text_segment, binary_segment, icc))
    assert f"JPEG APP9 segment: vendor note {MOBILE}\n" in out.text
    [nested] = out.nested_members  # the ICC profile is skipped
    assert (nested.name, bytes(nested.data)) == ("jpeg APP9 segment", bytes(range(256)))


def test_multi_picture_jpeg_reads_every_image() -> None:
    second = jpeg(exif=exif(planted=False))
    out = read_stream(JpegReader, jpeg() + second)
    assert "GPS position: 22.5431000, 114.0579000\n" in out.text
    assert out.nested_members == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (jpeg()[:-2], "jpeg: truncated"),
        (jpeg()[:100], "jpeg: truncated"),
        (b"\xff\xd8\xff\xe1\x00\x01", "jpeg: corrupt segment length"),
        (b"\xff\xd8\x00\x00", "jpeg: corrupt marker"),
        (
            splice(jpeg(), segment(0xE1, b"Exif\0\0II*\0\xff\xff\0\0")),
            "jpeg: IFD past the end of the data",
        ),
        (splice(jpeg(), segment(0xE1, b"Exif\0\0XX*\0\x08\0\0\0")), "jpeg: bad TIFF header"),
        (
            splice(jpeg(), b"\xff\xed\x00\x20Photoshop 3.0\x008BIM\x04\x04\0\0\xff\xff\xff\xff"),
            "jpeg: Photoshop resource runs past its block",
        ),
    ],
)
def test_bad_jpeg_is_unscannable(data: bytes, reason: str) -> None:
    with pytest.raises(Unscannable) as caught:
        read_stream(JpegReader, data)
    assert caught.value.reason == reason


# -- TIFF (and EXIF structure) --------------------------------------------------------------------

Entry = tuple[int, int, int, bytes | tuple[str, int]]


def build_tiff(
    ifds: list[list[Entry]], next_of: dict[int, int] | None = None, big: bool = False
) -> bytes:
    """A little-endian TIFF (or BigTIFF) of ``ifds``; an entry's value is its raw bytes
    or ("ifd", k): a pointer to IFD k. ``next_of`` chains IFDs (k -> next k)."""
    next_of = next_of or {}
    head_size, count_size, entry_size, off = (16, 8, 20, "Q") if big else (8, 2, 12, "I")
    inline = 8 if big else 4
    sizes = [count_size + entry_size * len(entries) + inline for entries in ifds]
    offsets = [head_size + sum(sizes[:k]) for k in range(len(ifds))]
    data_at = head_size + sum(sizes)
    blobs = b""
    body = b""
    for k, entries in enumerate(ifds):
        body += struct.pack("<Q" if big else "<H", len(entries))
        for tag, kind, count, value in entries:
            raw = struct.pack("<" + off, offsets[value[1]]) if isinstance(value, tuple) else value
            if len(raw) <= inline:
                field = raw.ljust(inline, b"\0")
            else:
                field = struct.pack("<" + off, data_at + len(blobs))
                blobs += raw + b"\0" * (len(raw) & 1)
            body += struct.pack("<HHQ" if big else "<HHI", tag, kind, count) + field
        nxt = offsets[next_of[k]] if k in next_of else 0
        body += struct.pack("<" + off, nxt)
    head = b"II+\0\x08\0\0\0" + struct.pack("<Q", 16) if big else b"II*\0" + struct.pack("<I", 8)
    return head + body + blobs


def ascii_entry(tag: int, text: str) -> Entry:
    raw = text.encode() + b"\0"
    return (tag, 2, len(raw), raw)


def rational_entry(tag: int, parts: tuple[tuple[int, int], ...]) -> Entry:
    return (tag, 5, len(parts), b"".join(struct.pack("<II", n, d) for n, d in parts))


def gps_tiff(big: bool = False, position: Any = SHENZHEN) -> bytes:
    lat, lon = position
    return build_tiff(
        [
            [
                ascii_entry(270, f"OME plate, operator {EMAIL}"),
                ascii_entry(315, "Dr Wong"),
                (0x8825, 4, 1, ("ifd", 1)),
                (0x9C9D, 1, 0, b""),
            ],
            [
                ascii_entry(1, "N"),
                rational_entry(2, lat),
                ascii_entry(3, "E"),
                rational_entry(4, lon),
                (27, 7, 0, b""),
            ],
        ],
        big=big,
    )


@pytest.mark.parametrize("big", [False, True])
def test_tiff_and_bigtiff_metadata(big: bool) -> None:
    data = gps_tiff(big)
    out = read_random(read_tiff, data)
    assert f"ImageDescription: OME plate, operator {EMAIL}\n" in out.text
    assert "GPS position: 22.5431000, 114.0579000\n" in out.text
    summary = scan(data)
    assert summary.content.type == "image/tiff"
    assert counts(summary) == {"geo.precise_location": 1, "pii.email": 1}


def test_tiff_made_by_pillow_with_exif_and_xp_tags() -> None:
    e = exif(None)
    e[0x9C9C] = f"comment {HKID}".encode("utf-16-le")  # XPComment
    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, "TIFF", exif=e, description=f"desc {PEOPLE[2][1]}")
    text = read_random(read_tiff, out.getvalue()).text
    assert f"ImageDescription: desc {PEOPLE[2][1]}\n" in text
    assert f"Artist: Zhang San tel {MOBILE}\n" in text
    assert f"XPComment: comment {HKID}\n" in text


def test_multi_page_tiff_repeats_are_rendered_once() -> None:
    page = [ascii_entry(270, "same description")]
    data = build_tiff([page, page, page], next_of={0: 1, 1: 2})
    assert read_random(read_tiff, data).text == "ImageDescription: same description\n"


def test_tiff_values_read_are_bounded_in_total() -> None:
    """A thousand entries pointing at one 1 MiB value: 1 GiB of reads refused early."""
    count, value = 1000, b"x" * (1 << 20)
    data_at = 8 + 2 + 12 * count + 4
    entries = b"".join(struct.pack("<HHII", 270, 2, len(value), data_at) for _ in range(count))
    data = b"II*\0\x08\0\0\0" + struct.pack("<H", count) + entries + b"\0" * 4 + value
    with pytest.raises(Unscannable, match="tiff: more than 128 MiB of metadata"):
        read_random(read_tiff, data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (build_tiff([[ascii_entry(270, "a")]], next_of={0: 0}), "tiff: IFD cycle"),
        (build_tiff([[(0x8769, 4, 1, ("ifd", 0))]]), "tiff: IFD cycle"),
        (
            build_tiff([[ascii_entry(270, "abcdefgh")]])[:-4],
            "tiff: tag value past the end of the data",
        ),
        (b"II*\0\xff\xff\xff\x7f", "tiff: IFD past the end of the data"),
        (b"II*\0\x08\0\0\0\xff\xff", "tiff: IFD of more than 4096 entries"),
        (b"II+\0\x10\0\0\0" + b"\0" * 8, "tiff: bad BigTIFF header"),
        (
            b"MM\0+\0\x08\0\0\0\0\0\0\0\0\0\x10\0\0\0\0\0\0\0\x01",
            "tiff: IFD past the end of the data",
        ),
        (build_tiff([[(270, 2, 1 << 30, b"\0\0\0\0")]]), "tiff: tag value over 16 MiB"),
        (build_tiff([[(0x014A, 3, 1, b"\x08\0")]]), "tiff: corrupt IFD pointer"),
    ],
)
def test_bad_tiff_is_unscannable(data: bytes, reason: str) -> None:
    with pytest.raises(Unscannable) as caught:
        read_random(read_tiff, data)
    assert caught.value.reason == reason


# -- PNG and WebP ---------------------------------------------------------------------------------


def png_with_text(planted: bool = True) -> bytes:
    info = PngInfo()
    info.add_text("Author", f"Wang Wu {MOBILE}" if planted else "Wang Wu")
    info.add_text("Description", f"ward 3 {RESIDENT_ID}" if planted else "ward 3", zip=True)
    info.add_itxt("Comment", f"电话 {PEOPLE[1][1]}" if planted else "无", lang="zh", zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    return png(pnginfo=info, exif=exif(planted=planted))


def test_png_text_chunks_xmp_and_exif() -> None:
    data = png_with_text()
    out = read_stream(PngReader, data)
    text = out.text
    assert f"Author: Wang Wu {MOBILE}\n" in text
    assert f"Description: ward 3 {RESIDENT_ID}\n" in text
    assert f"Comment: 电话 {PEOPLE[1][1]}\n" in text
    assert f"creator: Chan Tai Man {HKID}\n" in text
    assert "GPS position: 22.5431000, 114.0579000\n" in text
    for chunk in (1, 9, 500):
        assert read_stream(PngReader, data, chunk).text == text
    found = counts(scan(data))
    assert found["geo.precise_location"] == 2
    assert found["pii.cn_resident_id"] == 2
    assert found["pii.cn_phone"] == 3
    assert found["pii.hk_id"] == 1


def test_png_imagemagick_raw_exif_profile() -> None:
    """ImageMagick keeps a JPEG's EXIF in a PNG as a hex "Raw profile type exif" text chunk."""
    raw = exif(planted=False).tobytes()
    hexed = raw.hex()
    body = (
        "\nexif\n"
        + f"{len(raw):8d}\n"
        + "\n".join(hexed[i : i + 72] for i in range(0, len(hexed), 72))
    )
    info = PngInfo()
    info.add_text("Raw profile type exif", body + "\n", zip=True)
    out = read_stream(PngReader, png(pnginfo=info))
    assert "GPS position: 22.5431000, 114.0579000\n" in out.text
    assert hexed[:40] not in out.text  # the hex itself is decoded, not rendered


def test_clean_png() -> None:
    summary = scan(png())
    assert (summary.content.type, counts(summary), summary.unscannable) == ("image/png", {}, ())


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def _png_insert(data: bytes, *chunks: bytes) -> bytes:
    """``chunks`` inserted after IHDR."""
    at = 8 + 25
    return data[:at] + b"".join(chunks) + data[at:]


def test_png_unknown_chunks_and_trailing_data_go_back_to_the_decoder() -> None:
    private = _png_chunk(b"prVt", b"\x00\x01binary")
    data = _png_insert(png(), private) + b"PK\x05\x06" + b"\0" * 18
    out = read_stream(PngReader, data, 7)
    assert [(n.name, bytes(n.data)) for n in out.nested_members] == [
        ("png chunk prVt", b"\x00\x01binary"),
        ("data after end of image", b"PK\x05\x06" + b"\0" * 18),
    ]


def test_png_compressed_text_bomb_is_bounded() -> None:
    bomb = b"Comment\0\0" + zlib.compress(b"A" * (64 << 20), 9)  # ~65 KB -> 64 MiB
    with pytest.raises(Unscannable) as caught:
        read_stream(PngReader, _png_insert(png(), _png_chunk(b"zTXt", bomb)))
    assert caught.value.reason == "png: compressed text expands past its bound"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png()[:-12], "png: truncated"),
        (b"\x89PNG\r\n\x1a\x0b" + b"\0" * 8, "png: bad signature"),
        (_png_insert(png(), _png_chunk(b"tEXt", b"a\0b", crc=1)), "png: chunk fails its CRC"),
        (_png_insert(png(), _png_chunk(b"tEXt", b"no separator")), "png: corrupt text chunk"),
        (_png_insert(png(), b"\xff\xff\xff\xfftEXt"), "png: corrupt chunk header"),
        (_png_insert(png(), b"\x00\x00\x00\x04t3Xt"), "png: corrupt chunk header"),
        (_png_insert(png(), _png_chunk(b"zTXt", b"k\0\0garbage")), "png: corrupt compressed text"),
        (
            _png_insert(png(), _png_chunk(b"eXIf", b"MM\0*\0\0\0\x08\0\x01")),
            "png: IFD past the end of the data",
        ),
    ],
)
def test_bad_png_is_unscannable(data: bytes, reason: str) -> None:
    with pytest.raises(Unscannable) as caught:
        read_stream(PngReader, data)
    assert caught.value.reason == reason


def test_webp_exif_and_xmp() -> None:
    data = webp(exif=exif(), xmp=XMP)
    out = read_stream(WebpReader, data)
    assert f"Artist: Zhang San tel {MOBILE}\n" in out.text
    assert f"creator: Chan Tai Man {HKID}\n" in out.text
    assert "GPS position: 22.5431000, 114.0579000\n" in out.text
    for chunk in (1, 64):
        assert read_stream(WebpReader, data, chunk).text == out.text
    summary = scan(data)
    assert summary.content.type == "image/webp"
    assert counts(summary)["geo.precise_location"] == 2
    assert counts(scan(webp())) == {}


def test_bad_webp_is_unscannable() -> None:
    data = webp(exif=exif())
    with pytest.raises(Unscannable, match="webp: truncated"):
        read_stream(WebpReader, data[:-10])
    lying = data[:12] + b"EXIF" + struct.pack("<I", 1 << 30) + data[20:]
    with pytest.raises(Unscannable, match="webp: chunk runs past the RIFF end"):
        read_stream(WebpReader, lying)
    out = read_stream(WebpReader, data + b"trailing text")
    assert [n.name for n in out.nested_members] == ["data after end of image"]


def test_sniffers() -> None:
    for data, name in ((jpeg(), "jpeg"), (png(), "png"), (webp(), "webp"), (gps_tiff(), "tiff")):
        fmt = identify(data)
        assert fmt is not None
        assert fmt.name == name
    bigtiff = identify(gps_tiff(big=True))
    assert bigtiff is not None
    assert bigtiff.name == "tiff"


# -- hostile mutations ----------------------------------------------------------------------------


def mutate(original: bytes, data: st.DataObject) -> bytes:
    """Flip, overwrite, cut or insert bytes: what a corrupt or hostile copy looks like."""
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        action = data.draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        if action == "flip" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "word":
            mutated[at : at + 4] = data.draw(st.sampled_from(_WORDS))
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(mutated)


#: Words a hostile copy plants: lengths and offsets of 0, 2^32-1, 8 (the first IFD).
_WORDS = [b"\xff" * 4, b"\0" * 4, b"\x08\0\0\0", b"\xff\xd8\xff\xe1"]
_JPEG = splice(jpeg(exif=exif(), xmp=XMP), iptc((80, "x")))
_PNG = png_with_text()
_WEBP = webp(exif=exif(), xmp=XMP)
_TIFF = gps_tiff()


def _random_tiff(data: bytes) -> RecordingExtract:
    return read_random(read_tiff, data)


_READERS: dict[str, tuple[bytes, Callable[[Extract], StreamReader] | None]] = {
    "jpeg": (_JPEG, JpegReader),
    "png": (_PNG, PngReader),
    "webp": (_WEBP, WebpReader),
    "tiff": (_TIFF, None),
}


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "tiff"])
@given(data=st.data())
def test_mutations_never_crash(name: str, data: st.DataObject) -> None:
    original, reader = _READERS[name]
    mutated = mutate(original, data)
    with contextlib.suppress(Unscannable):
        if reader is None:
            _random_tiff(mutated)
        else:
            read_stream(reader, mutated, data.draw(st.sampled_from([0, 29])))
