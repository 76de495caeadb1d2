"""The :class:`Decoder`: one input's bytes in, text members and findings out to a ``TextSink``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Final

from gateway.classify.budget import DecoderBudget
from gateway.classify.decode.core import Context, ScanLimits, TextSink
from gateway.classify.decode.sniffer import Sniffer
from gateway.classify.decode.text import TextMember
from gateway.classify.decode.transforms import Transforms
from gateway.classify.formats.base import RandomAccess
from gateway.classify.summary import ContentInfo

#: How several values of one attribute (two organisms in one archive) are
#: joined in ``ContentInfo.attributes``: sorted, so the same files give the
#: same text whatever their order.
ATTRIBUTE_SEPARATOR: Final = "; "

_DEFAULT_LIMITS: Final = ScanLimits()


class Decoder:
    """Turns a byte stream into text members for a :class:`TextSink`.

    Sans-I/O like the rest of the classifier: ``feed`` any number of times,
    then ``finish``. The sequence of sink calls (texts concatenated per member)
    is the same for every way of cutting the input into chunks.

    Args:
        sink: receives the text members.
        limits: the decode limits.
        budget: the process-wide decoder memory budget this decoder's layers
            reserve their windows from; None gives the decoder a budget of
            its own of ``limits.max_decoder_bytes`` (``gateway scan``), so
            only the per-scan cap applies and :class:`DecoderBusy` never
            happens.
    """

    __slots__ = ("_ctx", "_direct", "_finished", "_root", "_started", "_transforms")

    def __init__(
        self,
        sink: TextSink,
        limits: ScanLimits = _DEFAULT_LIMITS,
        *,
        budget: DecoderBudget | None = None,
    ) -> None:
        """Prepare to decode one input for ``sink`` under ``limits``."""
        if budget is None:
            budget = DecoderBudget(limits.max_decoder_bytes)
        account = budget.account(limits.max_decoder_bytes)
        # Every text member passes the text transforms (JSON escapes, character
        # references, percent-encoding, base64 and hex runs) on its way to the sink.
        self._transforms = Transforms(sink)
        self._ctx = Context(self._transforms, limits, account, Sniffer)
        self._transforms.bind(self._ctx)
        self._root = Sniffer(self._ctx, 0, ())
        self._direct: Callable[[bytes], None] | None = None
        self._finished = False
        self._started = False

    @property
    def wants_random_access(self) -> bool:
        """Whether the input is a random-access format, to be read at :meth:`finish`.

        True once the input's first bytes were recognised as a footer-indexed
        format (Parquet, SQLite …): such an input is counted, not buffered,
        and read from the ``source`` given to :meth:`finish`. Before the
        decision (an input shorter than the sniff prefix) the answer is for
        the bytes fed so far, as if the input ended there: exact once the
        whole input has been fed.
        """
        return not self._finished and self._root.defers()

    @property
    def numeric_values(self) -> int:
        """Numbers format readers saw and deliberately did not render (float columns …)."""
        return self._ctx.numeric

    def name(self, raw: bytes) -> None:
        """Scan the input's own name (a transfer's path) as archive member names are.

        Raises:
            RuntimeError: after the first :meth:`feed` (the name is a member
                of its own, and the input's first member may be open by then).
        """
        if self._started or self._finished:
            raise RuntimeError("Decoder.name() must come before the first feed()")
        self._ctx.member_name(raw)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Decode the next chunk of input (any bytes-like object; copied unless bytes).

        Raises:
            DecoderBusy: a layer's window could not be reserved because other
                scans hold the budget; the decoder is then closed.
            RuntimeError: after :meth:`finish` or :meth:`close`.
        """
        data = chunk if type(chunk) is bytes else bytes(chunk)
        if self._direct is not None:
            self._direct(data)
            return
        if self._finished:
            raise RuntimeError("Decoder.feed() called after finish()")
        self._started = True
        try:
            self._root.feed(data)
        except BaseException:
            self.close()  # a layer's state is undefined now: give its memory back
            raise
        target = self._root.target
        if isinstance(target, TextMember):
            # Plain text at the top: skip the sniffer on every later chunk.
            self._direct = target.feed

    def finish(self, source: RandomAccess | None = None) -> ContentInfo:
        """End the input; returns what the content was recognised as.

        Args:
            source: a random-access view of the whole input (the transfer's
                encrypted spool, a file): read only when the input is a
                random-access format (:attr:`wants_random_access`); without
                one such an input is unscannable ("<format>: needs random
                access"). Its size must be the number of bytes fed.

        Raises:
            DecoderBusy: as for :meth:`feed` (a short input's only layer opens
                here).
            RuntimeError: when called twice, or after :meth:`close`.
        """
        if self._finished:
            raise RuntimeError("Decoder.finish() called twice")
        self._finished = True
        self._direct = None
        self._ctx.source = source
        try:
            self._root.close()
        finally:
            self._ctx.source = None
            self.close()
        best = self._ctx.best
        assert best is not None  # the root stream always ends as a member
        attributes = self._ctx.attributes
        if not attributes:
            return best
        join = ATTRIBUTE_SEPARATOR.join
        joined = {key: join(sorted(attributes[key])) for key in sorted(attributes)}
        return replace(best, attributes=MappingProxyType(joined))

    def close(self) -> None:
        """Give back all decoder memory this decoder holds (idempotent).

        An unfinished decode is abandoned: later calls raise. The egress
        calls it through ``Scanner.close`` whatever happened to the transfer.
        """
        self._finished = True
        self._direct = None
        ctx = self._ctx
        self._transforms.close()
        for layer in list(ctx.layers):
            layer._free()
        ctx.memory.close()
