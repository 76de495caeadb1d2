"""Format readers inside the decoder: the :class:`Extract` they report to, and how each is fed.

When the sniffer recognises a registered :class:`~gateway.classify.formats.Format`,
the member becomes a *format layer*, read in one of three ways:

* a **streaming** format (``Format.stream``) is fed the member's bytes, the
  sniffed prefix included, re-cut into fixed ``BLOCK_BYTES`` blocks, so the
  reader sees the same calls whatever the chunking (:class:`StreamFormat`);
* a **random-access** format nested in an archive, a compression or another
  reader's member is buffered, up to ``ScanLimits.max_nested_random_bytes``
  reserved from the decoder budget like a window, and read from that buffer
  when the member ends (:class:`BufferedRandom`);
* a random-access format that is the transfer's body itself is only counted
  as it streams (never buffered) and read at ``Decoder.finish(source)`` from
  the view the caller gives, the encrypted spool (:class:`DeferredRandom`).

A random-access format's scout (``Format.scout``) is shown the member's bytes
as they arrive either way, and its notes go to the reader with the view.

What a reader reports goes through its layer's :class:`Extract`: text
members to the sink as normalised UTF-8 after their name (as a
``NAME_TYPE`` member), nested members through a new sniffer one layer
deeper, direct findings to the sink, attributes and numeric counts to the
decoder. The sink takes one member at a time: opening a member (text or
nested) ends the one open before; writing again to an earlier text member
continues it as a new sink member, while a nested member, once ended, is
gone (writing to it is a reader bug).

A reader's :class:`~gateway.classify.formats.base.Unscannable` makes the
member unscannable with the reader's reason; any other exception makes it
"<format>: unreadable" (a reader bug, never a crash of the scan; nothing
from the exception is logged or reported). Once the member failed, every
later call of the reader on its Extract raises ``Unscannable`` so that it
unwinds. A :class:`~gateway.classify.budget.DecoderBusy` raised while a
nested member is decoded is kept and raised again once the reader returns,
whatever the reader did with it: the whole scan answers 503.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Final

from gateway.classify import charset as cs
from gateway.classify.budget import DecoderBusy
from gateway.classify.decode.core import (
    BLOCK_BYTES,
    RATIO_GRACE_BYTES,
    SNIFF_BYTES,
    Context,
    Stream,
    human,
)
from gateway.classify.decode.layers import Layer
from gateway.classify.formats import Format
from gateway.classify.formats.base import (
    BinaryOut,
    RandomAccess,
    ScoutedAccess,
    StreamReader,
    TextOut,
    Unscannable,
)
from gateway.classify.summary import ContentInfo

#: Fixed buffers of a format layer: its re-cut input block (streaming
#: readers) and the sniff buffer of the nested member it may hand back.
#: Reserved when the layer opens.
FORMAT_BUFFER_BYTES: Final = BLOCK_BYTES + SNIFF_BYTES
#: A buffered random-access member reserves its memory in steps of this size
#: as it grows: a 20 KB spreadsheet in a zip holds 1 MiB of the budget, not
#: the 64 MiB bound, and a 60 MiB one asks the budget 60 times, not per chunk.
RANDOM_BUFFER_STEP_BYTES: Final = 1 << 20
#: Longest direct-finding value kept as it is for distinct counting; longer
#: ones are replaced by their SHA-256 (then keyed-hashed like any value). The
#: matcher's distinct-value bound assumes values of about 100 bytes; a
#: patient's identity is shorter than this.
FINDING_VALUE_MAX_BYTES: Final = 64
#: Attribute keys one scan keeps, values per key and characters per key or
#: value. Values come from a reader's fixed vocabulary (``organism``:
#: ``Homo sapiens``), so these only bound a reader bug; past them further
#: attributes are dropped.
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_VALUES: Final = 64
MAX_ATTRIBUTE_CHARS: Final = 128


class _Stopped(Unscannable):
    """Raised into a reader by its Extract once the member failed, so that it unwinds."""


def _encode(text: str) -> bytes:
    """UTF-8 of a reader's text; lone surrogates from PEP 383 decoding become their bytes."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace")


class _TextOut:
    """A text member a reader writes (:class:`~gateway.classify.formats.base.TextOut`)."""

    __slots__ = ("_layer", "closed", "content_type", "normaliser")

    def __init__(self, layer: FormatLayer, content_type: str) -> None:
        self._layer = layer
        self.content_type = content_type
        self.normaliser = cs.Normaliser(cs.UTF8)
        self.closed = False

    def write(self, text: str | bytes) -> None:
        """Append ``text`` (or its UTF-8) to the member."""
        self._layer.write_text(self, text)

    def close(self) -> None:
        """End the member (idempotent)."""
        self._layer.close_text(self)


class _NestedOut:
    """A nested member a reader hands back (:class:`~gateway.classify.formats.base.BinaryOut`)."""

    __slots__ = ("_layer", "child", "closed")

    def __init__(self, layer: FormatLayer, child: Stream | None) -> None:
        self._layer = layer
        #: The member's stream (a sniffer); None when it is refused (too deep).
        self.child = child
        self.closed = False

    def write(self, data: bytes) -> None:
        """Append raw bytes of the nested member."""
        self._layer.write_nested(self, data)

    def close(self) -> None:
        """End the nested member (idempotent)."""
        self._layer.close_nested(self)


class _Extract:
    """What a reader reports to (:class:`~gateway.classify.formats.base.Extract`).

    A facade over its format layer, so the reader sees the contract's five
    methods and nothing of the layer.
    """

    __slots__ = ("_layer",)

    def __init__(self, layer: FormatLayer) -> None:
        self._layer = layer

    def member(self, name: str, content_type: str) -> TextOut:
        """Open a text member named ``name`` (scanned) of ``content_type``."""
        return self._layer.member(name, content_type)

    def nested(self, name: str) -> BinaryOut:
        """Open a nested member named ``name`` (scanned), decoded one layer deeper."""
        return self._layer.nested(name)

    def finding(self, label: str, value: bytes) -> None:
        """Count one finding of ``label``; ``value`` only feeds distinct counting."""
        self._layer.finding(label, value)

    def attribute(self, key: str, value: str) -> None:
        """Report a fact policies may condition on."""
        self._layer.attribute(key, value)

    def numeric(self, values: int) -> None:
        """Count ``values`` numbers seen and not rendered."""
        self._layer.numeric(values)


class _BufferAccess:
    """A :class:`RandomAccess` over a buffered member (no copy of the buffer)."""

    __slots__ = ("_view",)

    def __init__(self, view: memoryview) -> None:
        self._view = view

    @property
    def size(self) -> int:
        """Bytes in the member."""
        return len(self._view)

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end)."""
        if offset < 0 or length < 0:
            raise Unscannable("negative offset or length")
        return bytes(self._view[offset : offset + length])


class FormatLayer(Layer):
    """The member of a registered format: its reader's Extract, limits and failure.

    Subclasses feed the reader (:class:`StreamFormat`) or read the whole
    member at its end (:class:`RandomFormat`).
    """

    buffers = FORMAT_BUFFER_BYTES
    __slots__ = (
        "_busy",
        "_current",
        "_extract",
        "_fmt",
        "_in",
        "_nested_out",
        "_size",
        "name",
    )

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...], fmt: Format) -> None:
        # Set before the base reserves its buffers: a refusal reports by name.
        self.name = fmt.name
        self._fmt = fmt
        self._current: _TextOut | _NestedOut | None = None
        self._busy: DecoderBusy | None = None
        self._extract = _Extract(self)
        #: Bytes of the member read so far (the ratio's base).
        self._in = 0
        #: Bytes of nested members handed back.
        self._nested_out = 0
        #: Bytes of the member (which member describes the input).
        self._size = 0
        super().__init__(ctx, depth, layers)

    # -- the Extract ---------------------------------------------------------

    def member(self, name: str, content_type: str) -> TextOut:
        """Open a text member (ends the member open before)."""
        self._alive()
        self._suspend()
        self._scan_name(name)
        out = _TextOut(self, content_type)
        self._ctx.sink.begin_member(content_type)
        self._current = out
        return out

    def write_text(self, out: _TextOut, text: str | bytes) -> None:
        """Normalise ``text`` and pass it to the sink, resuming ``out`` if another was opened.

        UTF-8 that is ASCII (a rendered table, most often) goes on as it is; other
        UTF-8 is decoded and encoded as a str is, so a lone surrogate reads the same
        whichever way the reader wrote it.

        Raises:
            ValueError: ``out`` was closed (a reader bug).
        """
        if out.closed:
            raise ValueError("text member written after close")
        self._alive()
        if self._current is not out:
            self._suspend()  # the member open now ends; ``out`` goes on as a new one
            self._ctx.sink.begin_member(out.content_type)
            self._current = out
        if isinstance(text, bytes) and text.isascii():
            data = out.normaliser.feed(text)
        else:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "surrogatepass")
            data = out.normaliser.feed(_encode(text))
        if data:
            self._expand(len(data))
            self._ctx.sink.text(data)

    def close_text(self, out: _TextOut) -> None:
        """End ``out`` (idempotent)."""
        if out.closed:
            return
        out.closed = True
        if self._current is out:
            self._current = None
            self._end_text(out)

    def nested(self, name: str) -> BinaryOut:
        """Open a nested member one layer deeper (ends the member open before)."""
        self._alive()
        self._suspend()
        self._scan_name(name)
        limit = self._ctx.limits.max_depth
        if self._depth >= limit:
            self._report(f"nested deeper than {limit} layers")
            return _NestedOut(self, None)
        out = _NestedOut(self, self._ctx.open_stream(self._depth + 1, self._inner))
        self._current = out
        return out

    def write_nested(self, out: _NestedOut, data: bytes) -> None:
        """Decode ``data`` as the next bytes of ``out`` under the expansion limits.

        Raises:
            ValueError: ``out`` was ended (closed, or another member was opened).
        """
        if out.closed:
            raise ValueError("nested member written after it ended")
        self._alive()
        if out.child is None:
            return
        size = len(data)
        self._nested_out += size
        self._expand(size)
        ratio = self._ctx.limits.max_ratio
        if self._nested_out > RATIO_GRACE_BYTES and self._nested_out > ratio * self._in:
            self._fail(f"expansion ratio over {ratio:g}:1")
            raise _Stopped("stopped")
        self._decode(out.child, bytes(data))

    def close_nested(self, out: _NestedOut) -> None:
        """End ``out`` (idempotent)."""
        if out.closed:
            return
        out.closed = True
        if self._current is out:
            self._current = None
            if out.child is not None:
                self._decode(out.child, None)

    def finding(self, label: str, value: bytes) -> None:
        """Pass one direct finding to the sink (a long value as its SHA-256)."""
        self._alive()
        value = bytes(value)
        if len(value) > FINDING_VALUE_MAX_BYTES:
            value = b"sha256:" + hashlib.sha256(value).digest()
        self._ctx.sink.finding(label, value)

    def attribute(self, key: str, value: str) -> None:
        """Keep ``key = value`` for the scan's ContentInfo (bounded; see the constants).

        Raises:
            ValueError: an empty or over-long key or value (a reader bug).
        """
        self._alive()
        if not (0 < len(key) <= MAX_ATTRIBUTE_CHARS and 0 < len(value) <= MAX_ATTRIBUTE_CHARS):
            raise ValueError("attribute key or value empty or too long")
        attributes = self._ctx.attributes
        values = attributes.get(key)
        if values is None:
            if len(attributes) >= MAX_ATTRIBUTES:
                return
            values = attributes[key] = []
        if value not in values and len(values) < MAX_ATTRIBUTE_VALUES:
            values.append(value)

    def numeric(self, values: int) -> None:
        """Count numbers seen and not rendered.

        Raises:
            ValueError: a negative count (a reader bug).
        """
        self._alive()
        if values < 0:
            raise ValueError("a negative count of numeric values")
        self._ctx.numeric += values

    # -- machinery -----------------------------------------------------------

    def _alive(self) -> None:
        """Stop a reader that goes on after its member failed."""
        if self._dead:
            raise _Stopped("stopped")

    def _scan_name(self, name: str) -> None:
        if name:
            self._ctx.member_name(name.encode("utf-8", "replace"))

    def _end_text(self, out: _TextOut) -> None:
        rest = out.normaliser.flush()  # at most a held-back character: never over a limit
        if rest:
            self._ctx.expanded += len(rest)
            self._ctx.sink.text(rest)
        self._ctx.sink.end_member()

    def _suspend(self) -> None:
        """End the member open now: a text member may go on later, a nested one may not."""
        current, self._current = self._current, None
        if isinstance(current, _TextOut):
            self._end_text(current)
        elif current is not None:
            current.closed = True
            if current.child is not None:
                self._decode(current.child, None)

    def _expand(self, size: int) -> None:
        """Count ``size`` bytes of output against the scan's expansion cap."""
        ctx = self._ctx
        ctx.expanded += size
        cap = ctx.limits.max_expanded_bytes
        if ctx.expanded > cap:
            self._fail(f"expanded size over {human(cap)}")
            raise _Stopped("stopped")

    def _decode(self, child: Stream, data: bytes | None) -> None:
        """Feed (or with None, close) a nested member's stream, keeping a DecoderBusy."""
        try:
            if data is None:
                child.close()
            else:
                child.feed(data)
        except DecoderBusy as busy:
            self._busy = busy
            self._dead = True
            raise _Stopped("stopped") from None

    def _close_child(self) -> None:
        """End whatever member the reader left open (after the reader, or on failure)."""
        with contextlib.suppress(_Stopped):  # a DecoderBusy, kept in self._busy
            self._suspend()

    def _run(self, call: Callable[..., object], *args: object) -> None:
        """Run one reader call; what it raises is this member's failure.

        Raises:
            DecoderBusy: a nested member's layer could not reserve its window.
        """
        try:
            call(*args)
        except DecoderBusy:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is the member's, never the scan's
            if self._busy is not None:
                raise self._busy from None
            if not self._dead:
                reason = exc.reason if isinstance(exc, Unscannable) else f"{self.name}: unreadable"
                self._give_up(reason)
            return
        if self._busy is not None:
            raise self._busy

    def _give_up(self, reason: str) -> None:
        """The reader failed with ``reason`` (already naming the format)."""
        self._ctx.unscannable(self._layers, reason)
        self._dead = True
        self._close_child()
        self._free()

    def _finish_member(self) -> None:
        """After the reader: end what it left open, record the member, give memory back."""
        if not self._dead:
            self._close_child()
            if self._busy is not None:
                raise self._busy
        self._ctx.member_done(
            ContentInfo(self._fmt.media_type, None, self._layers),
            self._size,
            names_container=self._fmt.names_container,
        )
        self._free()


class StreamFormat(FormatLayer):
    """A member of a streaming format, fed to its reader in fixed blocks."""

    __slots__ = ("_carry", "_reader")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...], fmt: Format) -> None:
        self._carry = bytearray()
        self._reader: StreamReader | None = None
        super().__init__(ctx, depth, layers, fmt)
        if not self._dead:
            self._run(self._make)

    def _make(self) -> None:
        make = self._fmt.stream
        assert make is not None  # the sniffer builds this layer for streaming formats only
        self._reader = make(self._extract)

    def feed(self, data: bytes) -> None:
        """The member's next bytes, re-cut into ``BLOCK_BYTES`` blocks for the reader."""
        self._size += len(data)
        view = memoryview(data)
        if self._carry and not self._dead:
            need = BLOCK_BYTES - len(self._carry)
            self._carry += view[:need]
            view = view[need:]
            if len(self._carry) < BLOCK_BYTES:
                return
            block = bytes(self._carry)
            self._carry.clear()
            self._block(block)
        whole = len(view) - len(view) % BLOCK_BYTES
        for start in range(0, whole, BLOCK_BYTES):
            if self._dead:
                return
            self._block(bytes(view[start : start + BLOCK_BYTES]))
        if whole < len(view) and not self._dead:
            self._carry += view[whole:]

    def _block(self, block: bytes) -> None:
        self._in += len(block)
        reader = self._reader
        assert reader is not None  # dropped only when the layer is dead
        self._run(reader.feed, block)

    def close(self) -> None:
        """The member ended: the last block, the reader's finish, the member recorded."""
        if not self._dead and self._carry:
            block = bytes(self._carry)
            self._carry.clear()
            self._block(block)
        if not self._dead:
            reader = self._reader
            assert reader is not None
            self._run(reader.finish)
        self._finish_member()

    def _drop_codec(self) -> None:
        self._reader = None
        self._carry = bytearray()


class RandomFormat(FormatLayer):
    """A member of a random-access format, read whole once it has ended.

    Its format's scout (if it has one) sees the bytes as they arrive; the
    reader gets its notes with the view.
    """

    __slots__ = ("_scout",)

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...], fmt: Format) -> None:
        self._scout = fmt.scout() if fmt.scout is not None else None
        super().__init__(ctx, depth, layers, fmt)

    def _look(self, data: bytes) -> None:
        """Show the member's next bytes to the scout."""
        if self._scout is not None and not self._dead:
            self._scout.feed(data)

    def _read(self, source: RandomAccess) -> None:
        """Run the reader over ``source``, then record the member."""
        scout, self._scout = self._scout, None
        if not self._dead:
            reader = self._fmt.random
            assert reader is not None  # the sniffer builds this layer for random formats only
            self._in = self._size
            if scout is not None:
                source = ScoutedAccess(source, scout.notes())
            self._run(reader, source, self._extract)
        self._finish_member()


class BufferedRandom(RandomFormat):
    """A nested random-access member: buffered (bounded, reserved), read at its end."""

    __slots__ = ("_buffer",)

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...], fmt: Format) -> None:
        self._buffer = bytearray()
        super().__init__(ctx, depth, layers, fmt)

    def feed(self, data: bytes) -> None:
        """Buffer the member's next bytes, within the bound and the reserved memory."""
        self._size += len(data)
        if self._dead:
            return
        limit = self._ctx.limits.max_nested_random_bytes
        size = len(self._buffer) + len(data)
        if size > limit:
            self._fail(f"nested member over {human(limit)}")
            return
        step = RANDOM_BUFFER_STEP_BYTES
        if not self._reserve(self.buffers + -(-size // step) * step, "member buffer"):
            return
        self._buffer += data
        self._look(data)

    def close(self) -> None:
        """Read the buffered member."""
        with memoryview(self._buffer) as view:
            self._read(_BufferAccess(view))

    def _drop_codec(self) -> None:
        self._buffer = bytearray()


class DeferredRandom(RandomFormat):
    """The transfer's body in a random-access format: counted as it streams, read at finish.

    Never buffered: ``Decoder.finish(source)`` gives the view to read it from
    (the encrypted spool); without one the member is unscannable ("<format>:
    needs random access").
    """

    __slots__ = ()

    def feed(self, data: bytes) -> None:
        """Count the member's next bytes (hashed by the scanner, spooled by its caller)."""
        self._size += len(data)
        self._look(data)

    def close(self) -> None:
        """Read the member from the decoder's source, if one was given and it matches."""
        source = self._ctx.source
        reason = self._unusable(source)
        if reason is not None:
            self._give_up(reason)
        if source is None or self._dead:
            self._finish_member()
            return
        self._read(source)

    def _unusable(self, source: RandomAccess | None) -> str | None:
        """Why ``source`` cannot be read as this member (None: it can)."""
        if source is None:
            return f"{self.name}: needs random access"
        try:
            size = source.size
        except Unscannable as exc:
            return exc.reason
        if size != self._size:
            return f"{self.name}: random-access view does not match the input"
        return None
