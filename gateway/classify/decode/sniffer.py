"""The start of every stream: buffer a bounded prefix, decide what it is, open it.

The decision (:func:`choose`) is a pure function of the first
``SNIFF_BYTES`` (all of them when the stream is shorter), in this order:

1. a tar header (its own checksum vouches for it; its first bytes are a
   member's name, which could look like anything);
2. a registered format (:func:`gateway.classify.formats.identify`): the
   family readers, and the known binaries and encrypted formats this
   package registers. Before the other containers, because formats built on
   them (an xlsx is a zip, a BAM is gzip) need the whole member;
3. a compression or zip archive;
4. text, when the charset detector finds one (then its media type from the
   normalised text: CSV, FASTA, VCF …);
5. anything else is an unknown binary: unscannable from its first byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.classify import charset as cs
from gateway.classify.decode.archives import ARCHIVES, TAR, archive, is_tar
from gateway.classify.decode.binaries import unknown_binary_reason
from gateway.classify.decode.compress import COMPRESSIONS, compression
from gateway.classify.decode.core import OCTET_STREAM, SNIFF_BYTES, Context, Refused, Stream
from gateway.classify.decode.layers import Layer
from gateway.classify.decode.readers import (
    BufferedRandom,
    DeferredRandom,
    FormatLayer,
    StreamFormat,
)
from gateway.classify.decode.text import TextMember
from gateway.classify.formats import Format, identify

#: Every container layer we open, by name.
_CONTAINERS: dict[str, type[Layer]] = {**COMPRESSIONS, **ARCHIVES}


@dataclass(frozen=True, slots=True)
class UnknownBinary:
    """The decision for a binary nothing recognised.

    Attributes:
        reason: the unscannable reason, naming what it looked like.
    """

    reason: str


Choice = str | Format | cs.Detection | UnknownBinary


def choose(prefix: bytes, complete: bool) -> Choice:
    """What a stream starting with ``prefix`` is (see the module docstring).

    Args:
        prefix: the stream's first ``SNIFF_BYTES`` (all of it when shorter).
        complete: True when ``prefix`` is the whole stream.

    Returns:
        a container's name, a registered format, the text's charset
        detection, or an :class:`UnknownBinary`.
    """
    if not prefix:
        return cs.detect(prefix, complete)  # an empty member is empty text
    if is_tar(prefix):
        return TAR
    fmt = identify(prefix)
    if fmt is not None:
        return fmt
    name = compression(prefix) or archive(prefix)
    if name is not None:
        return name
    detection = cs.detect(prefix, complete)
    if detection.charset is not None:
        return detection
    return UnknownBinary(unknown_binary_reason(prefix))


class Sniffer:
    """The start of every stream: buffers a bounded prefix, then decides."""

    __slots__ = ("_asked", "_buf", "_ctx", "_depth", "_layers", "target")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
        self._ctx = ctx
        self._depth = depth
        self._layers = layers
        self._buf = bytearray()
        # The last answer of defers(): (the prefix it chose for, the choice).
        # A stream that then ends with that prefix is decided by it, not chosen again.
        self._asked: tuple[bytes, Choice] | None = None
        #: Where the stream's bytes go once decided.
        self.target: Stream | None = None

    def feed(self, data: bytes) -> None:
        """The stream's next bytes: buffered until the prefix is in, then passed on."""
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
        """The stream ended (decided now if it was shorter than the prefix)."""
        if self.target is None:
            buffered = bytes(self._buf)
            self._buf = bytearray()
            self._decide(buffered, complete=True)
        if self.target is not None:
            self.target.close()

    def defers(self) -> bool:
        """Whether this stream is (or, ending now, would be) read from a random-access view.

        Only the top-level stream defers (see :class:`DeferredRandom`). Before
        the decision it answers for the bytes buffered so far as if the stream
        ended there: exact once the whole input has been fed.
        """
        if self.target is not None:
            return isinstance(self.target, DeferredRandom)
        if self._depth:
            return False
        prefix = bytes(self._buf)
        choice = choose(prefix, complete=True)
        self._asked = (prefix, choice)
        return isinstance(choice, Format) and choice.random is not None

    def _format(self, fmt: Format) -> FormatLayer:
        ctx, depth, layers = self._ctx, self._depth, self._layers
        if fmt.stream is not None:
            return StreamFormat(ctx, depth, layers, fmt)
        if depth == 0:
            return DeferredRandom(ctx, depth, layers, fmt)
        return BufferedRandom(ctx, depth, layers, fmt)

    def _decide(self, data: bytes, complete: bool) -> None:
        prefix = data[:SNIFF_BYTES]
        ctx, layers = self._ctx, self._layers
        asked, self._asked = self._asked, None
        if complete and asked is not None and asked[0] == prefix:
            choice = asked[1]  # what defers() chose for these very bytes, as the whole stream
        else:
            choice = choose(prefix, complete)
        target: Stream
        if isinstance(choice, str):
            layer = _CONTAINERS[choice]
            if self._depth >= ctx.limits.max_depth:
                reason = f"{choice}: nested deeper than {ctx.limits.max_depth} layers"
                target = Refused(ctx, layers, layer.media_type, reason)
            else:
                target = layer(ctx, self._depth, layers)
        elif isinstance(choice, Format):
            target = self._format(choice)
        elif isinstance(choice, UnknownBinary):
            target = Refused(ctx, layers, OCTET_STREAM, choice.reason)
        else:
            assert choice.charset is not None  # choose() returns text detections only
            normaliser = cs.Normaliser(choice.charset)
            data = data[choice.bom :]
            split = len(prefix) - choice.bom
            head = normaliser.feed(data[:split])
            target = TextMember(ctx, layers, choice.charset, normaliser, head, complete)
            data = data[split:]
        self.target = target
        if data:
            target.feed(data)
