"""The base of every layer that opens a stream: child streams, memory, failure, limits.

A *layer* sits between a stream's bytes and the streams of its members: a
compression has one member, an archive one at a time, a format reader the
nested members it hands back. It reserves the decoder memory it needs before
allocating it, reports what it cannot see through once, and when it fails,
ends its open member and drops the rest of its input.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Final

from gateway.classify.decode.core import (
    BLOCK_BYTES,
    RATIO_GRACE_BYTES,
    SNIFF_BYTES,
    STEP_BYTES,
    Context,
    Stream,
    human,
)
from gateway.classify.summary import ContentInfo

#: Fixed buffers of a decompressing layer (gzip, zstd, bz2, xz, zip): its
#: re-cut input block, one decompression step of output and its child
#: stream's sniff buffer. Reserved when the layer opens.
LAYER_BUFFER_BYTES: Final = BLOCK_BYTES + STEP_BYTES + SNIFF_BYTES


class Layer:
    """Base of the container and compression layers: child stream and failure."""

    #: Short name, in layer lists and unscannable reasons (``gzip``).
    name: str = ""
    #: Media type of the container itself (an archive without members).
    media_type: str = ""
    #: Fixed buffers this layer keeps, reserved when it opens.
    buffers: int = 0
    __slots__ = ("_child", "_ctx", "_dead", "_depth", "_held", "_inner", "_layers")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
        self._ctx = ctx
        self._depth = depth
        self._layers = layers
        self._inner = (*layers, self.name)
        self._child: Stream | None = None
        self._dead = False
        self._held = 0
        ctx.layers.add(self)
        self._reserve(self.buffers, "buffers")

    def feed(self, data: bytes) -> None:
        """The layer's next input bytes."""
        raise NotImplementedError

    def close(self) -> None:
        """The layer's input ended: finish, end the open member, give memory back."""
        raise NotImplementedError

    def _reserve(self, size: int, what: str) -> bool:
        """Hold at least ``size`` bytes of decoder memory for this layer (it only grows).

        Returns:
            False when the scan's cap does not allow it: the layer has failed.

        Raises:
            DecoderBusy: other scans hold the budget (the whole scan stops).
        """
        extra = size - self._held
        if extra <= 0:
            return True
        memory = self._ctx.memory
        if not memory.reserve(extra, f"{self.name} {what}"):
            self._fail(f"decoder memory over {human(memory.cap)}")
            return False
        self._held = size
        return True

    def _free(self) -> None:
        """Drop the decompressor and give back this layer's decoder memory (idempotent)."""
        self._drop_codec()
        held, self._held = self._held, 0
        self._ctx.memory.release(held)
        self._ctx.layers.discard(self)

    def _drop_codec(self) -> None:
        """Drop the references to this layer's decompressor (frees its window)."""

    def _open_child(self) -> Stream:
        child = self._ctx.open_stream(self._depth + 1, self._inner)
        self._child = child
        return child

    def _close_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.close()

    def _done(self) -> None:
        """Register the container itself: what an archive without members is."""
        info = ContentInfo(self.media_type, None, self._layers)
        self._ctx.member_done(info, 0)

    def _report(self, reason: str) -> None:
        """One unscannable finding for this layer; the layer carries on."""
        self._ctx.unscannable(self._layers, f"{self.name}: {reason}")

    def _fail(self, reason: str) -> None:
        """This layer cannot go on: report it, end the open member, drop the rest."""
        self._report(reason)
        self._dead = True
        self._close_child()
        self._free()


class Expanding(Layer):
    """A layer whose output is larger than its input: limits and re-blocking."""

    buffers = LAYER_BUFFER_BYTES
    __slots__ = ("_carry", "_in", "_out")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._carry = bytearray()
        self._in = 0
        self._out = 0

    def feed(self, data: bytes) -> None:
        """Decompress ``data``, re-cut into ``BLOCK_BYTES`` blocks."""
        view = memoryview(data)
        if self._carry and not self._dead:
            need = BLOCK_BYTES - len(self._carry)
            self._carry += view[:need]
            view = view[need:]
            if len(self._carry) < BLOCK_BYTES:
                return
            block = bytes(self._carry)
            self._carry.clear()
            self._in += len(block)
            self._block(block)
        whole = len(view) - len(view) % BLOCK_BYTES
        for start in range(0, whole, BLOCK_BYTES):
            if self._dead:
                return
            self._in += BLOCK_BYTES
            self._block(view[start : start + BLOCK_BYTES])
        if whole < len(view) and not self._dead:
            self._carry += view[whole:]

    def close(self) -> None:
        """Decompress the last block, check the stream ended, end the member."""
        if not self._dead and self._carry:
            block = bytes(self._carry)
            self._carry.clear()
            self._in += len(block)
            self._block(block)
        if not self._dead:
            self._end()
        self._close_child()
        self._done()
        self._free()

    def _ratio_in(self) -> int:
        """The input bytes the output so far came from (the expansion ratio's base)."""
        return self._in

    def _emit(self, out: bytes) -> bool:
        """Pass decompressed ``out`` on unless it breaks a limit (then fail)."""
        size = len(out)
        self._out += size
        ctx = self._ctx
        ctx.expanded += size
        limits = ctx.limits
        if ctx.expanded > limits.max_expanded_bytes:
            self._fail(f"expanded size over {human(limits.max_expanded_bytes)}")
            return False
        if self._out > RATIO_GRACE_BYTES and self._out > limits.max_ratio * self._ratio_in():
            self._fail(f"expansion ratio over {limits.max_ratio:g}:1")
            return False
        assert self._child is not None  # output only flows while a member is open
        self._child.feed(out)
        return True

    def _inflate(self, d: zlib._Decompress, data: bytes | memoryview) -> bool:
        """Run zlib on ``data`` in bounded steps; False once the layer failed."""
        while True:
            try:
                out = d.decompress(data, STEP_BYTES)
            except zlib.error:
                self._fail("corrupt stream")
                return False
            if out and not self._emit(out):
                return False
            data = d.unconsumed_tail
            if d.eof or (not data and len(out) < STEP_BYTES):
                return True

    def _unpack(
        self,
        d: bz2.BZ2Decompressor | lzma.LZMADecompressor,
        data: bytes | memoryview,
        reason: str,
    ) -> bool:
        """Run bz2 or lzma on ``data`` in bounded steps; False once the layer failed."""
        try:
            out = d.decompress(data, STEP_BYTES)
            while True:
                if out and not self._emit(out):
                    return False
                if d.eof or d.needs_input:
                    return True
                out = d.decompress(b"", STEP_BYTES)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as error:
            self._fail(reason or self._reason(error))
            return False

    def _reason(self, error: Exception) -> str:
        return "corrupt stream"

    def _block(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError
