"""Image metadata readers: JPEG, TIFF, PNG, WebP (issue 12; SPEC §3.1 ``geo.precise_location``).

Photos from field sites carry more than pixels: EXIF (camera, owner, serial
numbers, comments and the GPS position), XMP (creator, rights, descriptions,
GPS again) and IPTC (by-line, caption, city, contact). These readers render
all of it as text in one ``image metadata`` member (:mod:`.text`): GPS
positions as ``lat, lon`` decimal degrees with seven decimals, so the geo
detector applies the same Greater Bay Area rule as to a position typed in a
CSV; every text field as a ``name: value`` line for the identifier
detectors.

Pixels are never decoded: text drawn into an image, and anything hidden in
its pixel values, is not seen (documented limit). JPEG, PNG and WebP stream
(their metadata precedes or interleaves the pixel data, which is skipped as
it passes); TIFF, whose directories may be anywhere in the file, is read at
random. Other media (GIF, MP4, HEIF) are registered by the decoder as pixels
or samples only.
"""

from __future__ import annotations

from typing import Final

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract as _Extract
from gateway.classify.formats.base import RandomAccess
from gateway.classify.formats.media.chunks import PNG_SIGNATURE, PngReader, WebpReader
from gateway.classify.formats.media.exif import TiffWalker
from gateway.classify.formats.media.jpeg import JpegReader, sniff_jpeg
from gateway.classify.formats.media.text import MetadataText

__all__ = ["JPEG", "PNG", "TIFF", "WEBP", "JpegReader", "PngReader", "WebpReader", "read_tiff"]


def read_tiff(source: RandomAccess, out: _Extract) -> None:
    """A TIFF or BigTIFF file's metadata (a RandomReader): every IFD walked, no strip read."""
    text = MetadataText(out, "tiff")
    TiffWalker(source, text).walk()
    text.close()


_sniff_png: Final = Magic(PNG_SIGNATURE)
#: Classic TIFF and BigTIFF, either byte order.
_sniff_tiff: Final = Magic(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _sniff_webp(prefix: bytes) -> bool:
    return prefix.startswith(b"RIFF") and prefix[8:12] == b"WEBP"


#: Above the decoder's pixels-only registrations of the same types (they pass
#: unread), below DICOM (whose preamble may hold a TIFF header).
MEDIA_PRIORITY: Final = 10

JPEG: Final = register(
    Format("jpeg", "image/jpeg", sniff_jpeg, stream=JpegReader, priority=MEDIA_PRIORITY)
)
PNG: Final = register(
    Format("png", "image/png", _sniff_png, stream=PngReader, priority=MEDIA_PRIORITY)
)
WEBP: Final = register(
    Format(
        "webp", "image/webp", _sniff_webp, stream=WebpReader, priority=MEDIA_PRIORITY, leads=b"R"
    )
)
TIFF: Final = register(
    Format("tiff", "image/tiff", _sniff_tiff, random=read_tiff, priority=MEDIA_PRIORITY)
)
