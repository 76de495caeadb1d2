"""A random-access reader run ahead on a worker thread, its report replayed in order.

Reading a large table is two kinds of work of comparable size: the reader
decodes pages and renders values as text (pyarrow's kernels), and the matcher
scans that text (Hyperscan). Both release the GIL, so on a second core they
can overlap: :func:`run_ahead` runs the reader on a worker thread while the
scanning thread replays what it reports, call by call, into the layer's real
:class:`~gateway.classify.formats.base.Extract`.

Nothing about the result changes. The reader sees an ``Extract`` whose
methods queue the call (``member``, ``nested``, ``finding``, ``attribute``,
``numeric``, and ``write``/``close`` on what those return); the scanning
thread makes exactly those calls, in the order the reader made them, on the
real one. The matcher, the decoder and their state are only ever touched by
the scanning thread, so the summary is the one the reader would give run in
line (``tests/classify/decode/test_runahead.py`` compares the two).

Bounds and stopping. The queue holds at most :data:`RUN_AHEAD_BYTES` of text
and nested-member bytes (one call of any size is let through when it is
empty): the reader blocks when it gets that far ahead. When a replayed call
raises (a limit reached, a nested member's decoder busy) or the scanning
thread stops for any reason, the worker is told to stop: its next report or
read raises, the reader unwinds, and the thread is joined before
:func:`run_ahead` returns or raises, so no reader thread outlives the scan
or the view it reads from. What the reader raises is raised on the scanning
thread once everything it reported before has been replayed.

Only formats whose reading releases the GIL gain from this, and only those
opt in (``Format.run_ahead``): the Arrow-based tables. A pure-Python reader
would just take turns with the matcher for the GIL.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from gateway.classify.formats.base import (
    BinaryOut,
    Extract,
    RandomAccess,
    RandomReader,
    TextOut,
    Unscannable,
)

#: Most text (characters) and nested-member bytes queued between the reader
#: and the scanning thread. The table reader writes ~1 MiB pieces, so this
#: is a few pieces ahead: enough to keep both threads busy (the two halves of
#: the work each take milliseconds per piece) and small next to the per-scan
#: memory target (SPEC §9: < 150 MB for a whole transfer).
RUN_AHEAD_BYTES: Final = 4 << 20
#: Bytes counted for a call that carries no text (opening a member, a count).
_CALL_BYTES: Final = 64


class _Stop(Unscannable):
    """Raised into the reader when the scanning thread stopped replaying."""

    def __init__(self) -> None:
        super().__init__("stopped")


class _Replay:
    """The scanning thread's side: the real Extract and the members it opened.

    A text member may be written to again after another was opened, so each
    stand-in stays mapped to its member (a reader opens a bounded number).
    """

    __slots__ = ("nested", "out", "texts")

    def __init__(self, out: Extract) -> None:
        self.out = out
        self.texts: dict[_Text, TextOut] = {}
        self.nested: dict[_Nested, BinaryOut] = {}


#: One queued call, made on the scanning thread.
_Call = Callable[[_Replay], None]


class _Queue:
    """The calls a reader made and the scanning thread has not replayed yet (bounded)."""

    __slots__ = ("_bytes", "_calls", "_cond", "_done", "error", "stopped")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls: deque[tuple[int, _Call]] = deque()
        self._bytes = 0
        self._done = False
        self.stopped = False
        #: What the reader raised (raised again on the scanning thread).
        self.error: BaseException | None = None

    def put(self, size: int, call: _Call) -> None:
        """Queue one call (worker), waiting while the queue is full.

        Raises:
            _Stop: the scanning thread stopped replaying.
        """
        with self._cond:
            while not self.stopped and self._calls and self._bytes + size > RUN_AHEAD_BYTES:
                self._cond.wait()
            if self.stopped:
                raise _Stop
            self._calls.append((size, call))
            self._bytes += size
            self._cond.notify_all()

    def get(self) -> _Call | None:
        """The next call (scanning thread), waiting for one; None once the reader ended."""
        with self._cond:
            while not self._calls and not self._done:
                self._cond.wait()
            if not self._calls:
                return None
            size, call = self._calls.popleft()
            self._bytes -= size
            self._cond.notify_all()
            return call

    def end(self, error: BaseException | None) -> None:
        """The reader returned (``error`` None) or raised ``error`` (worker)."""
        with self._cond:
            self.error = error
            self._done = True
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the reader (scanning thread): its next report or read raises."""
        with self._cond:
            self.stopped = True
            self._calls.clear()
            self._bytes = 0
            self._cond.notify_all()


class _Text:
    """A text member as the reader sees it: writes and close are queued."""

    __slots__ = ("_queue",)

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue

    def write(self, text: str) -> None:
        """Queue ``text`` for the member."""
        self._queue.put(len(text) + _CALL_BYTES, lambda r: r.texts[self].write(text))

    def close(self) -> None:
        """Queue the member's end."""
        self._queue.put(_CALL_BYTES, lambda r: r.texts[self].close())


class _Nested:
    """A nested member as the reader sees it: writes (copied) and close are queued."""

    __slots__ = ("_queue",)

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue

    def write(self, data: bytes) -> None:
        """Queue a copy of ``data`` (the reader may reuse its buffer)."""
        data = bytes(data)
        self._queue.put(len(data) + _CALL_BYTES, lambda r: r.nested[self].write(data))

    def close(self) -> None:
        """Queue the member's end."""
        self._queue.put(_CALL_BYTES, lambda r: r.nested[self].close())


class _QueuedExtract:
    """The :class:`Extract` the reader reports to on the worker thread."""

    __slots__ = ("_queue",)

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue

    def member(self, name: str, content_type: str) -> TextOut:
        """Queue opening a text member; return its stand-in."""
        text = _Text(self._queue)

        def call(r: _Replay) -> None:
            r.texts[text] = r.out.member(name, content_type)

        self._queue.put(_CALL_BYTES + len(name), call)
        return text

    def nested(self, name: str) -> BinaryOut:
        """Queue opening a nested member; return its stand-in."""
        nested = _Nested(self._queue)

        def call(r: _Replay) -> None:
            r.nested[nested] = r.out.nested(name)

        self._queue.put(_CALL_BYTES + len(name), call)
        return nested

    def finding(self, label: str, value: bytes) -> None:
        """Queue a direct finding (its value copied)."""
        value = bytes(value)
        self._queue.put(_CALL_BYTES + len(value), lambda r: r.out.finding(label, value))

    def attribute(self, key: str, value: str) -> None:
        """Queue an attribute."""
        self._queue.put(_CALL_BYTES, lambda r: r.out.attribute(key, value))

    def numeric(self, values: int) -> None:
        """Queue a count of numbers not rendered."""
        self._queue.put(_CALL_BYTES, lambda r: r.out.numeric(values))


class _StoppableSource:
    """The reader's view of the source: reads raise once the scanning thread stopped."""

    __slots__ = ("_queue", "_source")

    def __init__(self, source: RandomAccess, queue: _Queue) -> None:
        self._source = source
        self._queue = queue

    @property
    def size(self) -> int:
        """Bytes in the member."""
        return self._source.size

    def read_at(self, offset: int, length: int) -> bytes:
        """Read from the source, unless the scan stopped."""
        if self._queue.stopped:
            raise _Stop
        return self._source.read_at(offset, length)


def run_ahead(reader: RandomReader, source: RandomAccess, out: Extract) -> None:
    """Run ``reader`` over ``source`` on a worker thread, replaying its report into ``out``.

    Same calls on ``out``, in the same order, as ``reader(source, out)``;
    returns or raises on the calling thread once the worker has ended.

    Raises:
        Exception: what ``reader`` raised, or what a replayed call raised
            (the reader is then stopped first).
    """
    queue = _Queue()
    queued = _QueuedExtract(queue)
    view = _StoppableSource(source, queue)

    def work() -> None:
        error: BaseException | None = None
        try:
            reader(view, queued)
        except BaseException as exc:  # noqa: BLE001 - handed to the scanning thread, raised there
            error = exc
        queue.end(error)

    worker = threading.Thread(target=work, name="gateway-reader", daemon=True)
    worker.start()
    replay = _Replay(out)
    try:
        while (call := queue.get()) is not None:
            call(replay)
    finally:
        queue.stop()
        worker.join()
    if queue.error is not None:
        raise queue.error
