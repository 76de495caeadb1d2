"""The decoder core: limits, the :class:`TextSink` contract and the state one decode shares.

Every other module of the package builds on these names: the sniffer
(:mod:`.sniffer`) decides what each stream is, the layers (:mod:`.compress`,
:mod:`.archives`, :mod:`.readers`) open it, and all of them report to the
:class:`Context` of their decoder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from gateway.classify import charset as cs
from gateway.classify.budget import DecoderAccount
from gateway.classify.formats import SNIFF_PREFIX_BYTES
from gateway.classify.formats.base import RandomAccess
from gateway.classify.summary import ContentInfo

if TYPE_CHECKING:
    from gateway.classify.decode.layers import Layer

#: Bytes of each stream buffered before its type and charset are decided. A
#: tar header needs 512; 64 KiB of text holds ~20,000 CJK characters, far more
#: than the GB18030/Big5 frequency test needs, and costs 64 KiB per open layer.
#: The format registry's sniffers see the same prefix (one source of truth:
#: :data:`gateway.classify.formats.SNIFF_PREFIX_BYTES`).
SNIFF_BYTES: Final = SNIFF_PREFIX_BYTES
#: Decompressing layers re-cut their input into blocks of this size so that
#: limits trip at chunking-independent points (see the package docstring); one
#: such block is buffered per layer. Streaming format readers are fed the same
#: blocks.
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
#: Media type of the text member that carries an archive member's name: names
#: are scanned like text ("110101199003077777_scan.jpg" names a person), each
#: as a member of its own, so no identifier spans a name and a body.
NAME_TYPE: Final = "text/x-member-name"
#: Bytes of a member name scanned. Real paths stay under PATH_MAX (4096 on
#: Linux); pax and GNU long names are otherwise bounded only by their header.
NAME_MAX_BYTES: Final = 4096
#: A full stop after anything but a digit (a decimal point), before a digit.
_NAME_DOT: Final = re.compile(r"(?<![0-9])\.(?=[0-9])")
_NAME_SEPARATORS: Final = str.maketrans({"_": " ", "/": " ", "\\": " "})
#: Most decoder memory one scan may hold at once, over all its open layers
#: (``ScanLimits.max_decoder_bytes``). The largest zstd window with its layer
#: (128.8 MiB) plus an xz -9 member (64.3 MiB) and the buffers of two more
#: layers fit; two ``--long=27`` zstd windows nested in each other (257.6 MiB)
#: do not, and the inner one is unscannable. One hostile transfer thus holds
#: at most a quarter of the default 1 GiB process budget.
MAX_DECODER_BYTES: Final = 256 << 20
#: Largest member of a random-access format (Parquet, SQLite, an xlsx …)
#: buffered when it is nested in an archive, a compression or another
#: format's member: it has no spool of its own to be read from. 64 MiB holds
#: the spreadsheets, reports and small tables that travel zipped, fits the
#: per-scan decoder cap beside a zstd window, and a scan holds one such buffer
#: at a time per nesting path. The transfer's body itself is never buffered:
#: it is read from the encrypted spool (``Scanner.finish(source)``).
NESTED_RANDOM_MAX_BYTES: Final = 64 << 20
#: Media type of content nothing could identify.
OCTET_STREAM: Final = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Bounds on what the decoder expands (SPEC §3.1 ``content.unscannable``).

    Attributes:
        max_depth: container/compression layers opened one inside another
            (SPEC §3.1: "nested to depth 4"); a fifth is unscannable. A
            format reader's nested members (an e-mail's attachments) are one
            layer deeper than the format's member.
        max_ratio: sustained expansion ratio beyond which a decompressing layer
            (or the nested members a format reader hands back) is refused
            (SPEC §3.1: "ratio > 100:1 sustained"; see
            :data:`RATIO_GRACE_BYTES` for what sustained means).
        max_expanded_bytes: total bytes produced by all decompressing layers
            and format readers of one scan. 64 GiB is ~110 s of scanning at
            the 600 MB/s scan-path target, and still fits a 5 GB transfer
            (SPEC §9) compressed 10:1.
        max_decoder_bytes: decoder memory (windows, layer buffers, buffered
            random-access members) one scan may hold at once; a layer that
            would need more is unscannable (see :data:`MAX_DECODER_BYTES`).
        max_nested_random_bytes: largest nested member of a random-access
            format that is buffered to be read (see
            :data:`NESTED_RANDOM_MAX_BYTES`); a larger one is unscannable.
    """

    max_depth: int = 4
    max_ratio: float = 100.0
    max_expanded_bytes: int = 64 << 30
    max_decoder_bytes: int = MAX_DECODER_BYTES
    max_nested_random_bytes: int = NESTED_RANDOM_MAX_BYTES


class TextSink(Protocol):
    """Receiver of decoded text members (implemented by ``matcher.TextMatcher``)."""

    def begin_member(self, content_type: str) -> None:
        """A new member starts (``text/csv``, ``text/x-fasta``, ``application/pdf`` …)."""

    def text(self, data: bytes) -> None:
        """Normalised UTF-8 of the current member."""

    def end_member(self) -> None:
        """The current member ends; identifiers never span two members."""

    def unscannable(self, reason: str) -> None:
        """One ``content.unscannable`` finding; ``reason`` names the layer."""

    def finding(self, label: str, value: bytes) -> None:
        """One finding a format reader made itself (a DICOM instance naming its patient).

        ``value`` identifies the finding for distinct counting only (keyed
        hash); it is never stored, logged or returned.
        """


class Stream(Protocol):
    """Where the bytes of one stream go once its type is decided."""

    def feed(self, data: bytes) -> None:
        """The next bytes of the stream."""

    def close(self) -> None:
        """The stream ended."""


#: Makes the stream for a member at a depth, below the given layers (the sniffer).
StreamFactory = Callable[["Context", int, tuple[str, ...]], Stream]


class Context:
    """State shared by every layer of one decoder.

    Attributes:
        sink: receives the text members.
        limits: the decode limits.
        memory: the scan's decoder memory account.
        stream_factory: makes a member's stream (the sniffer), for layers
            that have members (see :meth:`open_stream`); given by the decoder,
            because the sniffer module builds the layers and the layers cannot
            import it.
        layers: open layers, freed all at once when the decoder is closed early
            (a zstd layer and its writer form a cycle that only the garbage
            collector would otherwise break).
        expanded: bytes produced by decompressing layers and format readers.
        attributes: facts format readers reported (``organism``), each key's
            values in the order first seen.
        numeric: numbers format readers saw and deliberately did not render.
        source: the random-access view of the whole input, once
            ``Decoder.finish`` was given one.
    """

    __slots__ = (
        "attributes",
        "best",
        "best_named",
        "best_size",
        "expanded",
        "layers",
        "limits",
        "memory",
        "numeric",
        "reported",
        "sink",
        "source",
        "stream_factory",
    )

    def __init__(
        self,
        sink: TextSink,
        limits: ScanLimits,
        memory: DecoderAccount,
        stream_factory: StreamFactory,
    ) -> None:
        self.sink = sink
        self.limits = limits
        self.memory = memory
        self.stream_factory = stream_factory
        self.layers: set[Layer] = set()
        self.expanded = 0
        self.reported: set[tuple[tuple[str, ...], str]] = set()
        self.best: ContentInfo | None = None
        self.best_size = -1
        self.best_named = False
        self.attributes: dict[str, list[str]] = {}
        self.numeric = 0
        self.source: RandomAccess | None = None

    def open_stream(self, depth: int, layers: tuple[str, ...]) -> Stream:
        """The stream of a new member ``depth`` layers deep, below ``layers``."""
        return self.stream_factory(self, depth, layers)

    def unscannable(self, layers: tuple[str, ...], reason: str) -> None:
        """Report ``reason`` once per layer path (three encrypted members: one finding)."""
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
        text = name_text(raw)
        if not text:
            return
        self.sink.begin_member(NAME_TYPE)
        self.sink.text(cs.fold(text.encode()))
        self.sink.end_member()

    def member_done(self, info: ContentInfo, size: int, *, names_container: bool = False) -> None:
        """A member ended with ``size`` decoded bytes: the largest describes the input.

        A member whose format names its container (``Format.names_container``:
        the main part of an Office or OpenDocument package) describes the
        input whatever its size; the first such member wins.
        """
        if self.best_named:
            return
        if names_container or size > self.best_size:
            self.best, self.best_size, self.best_named = info, size, names_container


class Refused:
    """A stream we do not open: reported unscannable, its bytes dropped."""

    __slots__ = ("_ctx", "_layers", "_size", "_type")

    def __init__(self, ctx: Context, layers: tuple[str, ...], media_type: str, reason: str) -> None:
        self._ctx = ctx
        self._layers = layers
        self._type = media_type
        self._size = 0
        ctx.unscannable(layers, reason)

    def feed(self, data: bytes) -> None:
        """Count and drop ``data``."""
        self._size += len(data)

    def close(self) -> None:
        """Record the member (its type describes the input when it is the largest)."""
        self._ctx.member_done(ContentInfo(self._type, None, self._layers), self._size)


def human(size: int) -> str:
    """``size`` as a reason shows it: ``64 MiB``, ``1 GiB``, else bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def name_text(raw: bytes) -> str:
    """A name (at most :data:`NAME_MAX_BYTES` of it) as the matcher reads it.

    UTF-8, else GB18030. In a name a full stop before a digit separates words
    (``scan.440305….csv``; in text it does not after a letter, for speed:
    docs/policies.md), and so do an underscore and a path's slashes, which
    would otherwise join a base64 or hex token to the words around it into one
    run of noise.
    """
    raw = raw[:NAME_MAX_BYTES]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", "replace")
    return _NAME_DOT.sub(" ", text).translate(_NAME_SEPARATORS)


def gather(
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
