"""Read the next items of an iterator on a worker thread while the caller uses this one.

For readers whose iterator does its work with the GIL released (pyarrow
decoding a Parquet row group's next batch): the caller renders batch *n*
while batch *n + 1* is decoded. Items come out in order, exactly the items the
iterator gives; what it raises is raised at the position it was raised, after
every item before it. At most :data:`PREFETCH_ITEMS` items wait.

Leaving the loop early (an exception, a ``break``) stops the worker: it gets
no further item, and :func:`prefetched` waits for the one it is computing
before returning, so no thread outlives the reader that started it (it may
be reading from a view the caller closes next).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator, Iterable
from typing import Final, Generic, TypeVar

#: Items computed ahead of the caller: one waiting while the next is made.
#: A record batch is bounded by its reader (a few MB), and a deeper queue
#: only holds more memory: the two threads run at the pace of the slower.
PREFETCH_ITEMS: Final = 1

T = TypeVar("T")


class _Ahead(Generic[T]):
    """The items made and not yet taken, and how the worker ended (under one lock)."""

    __slots__ = ("cond", "done", "error", "items", "stopped")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: deque[T] = deque()
        self.done = False
        self.stopped = False
        self.error: BaseException | None = None


def _work(source: Iterable[T], ahead: _Ahead[T]) -> None:
    error: BaseException | None = None
    try:
        for item in source:
            with ahead.cond:
                while len(ahead.items) >= PREFETCH_ITEMS and not ahead.stopped:
                    ahead.cond.wait()
                if ahead.stopped:
                    return
                ahead.items.append(item)
                ahead.cond.notify_all()
            del item  # not kept alive here once handed over
    except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
        error = exc
    finally:
        with ahead.cond:
            ahead.error = error
            ahead.done = True
            ahead.cond.notify_all()


def prefetched(source: Iterable[T]) -> Generator[T, None, None]:
    """``source``'s items, each made on a worker thread while the caller uses the one before.

    Raises:
        Exception: what iterating ``source`` raised, after the items before it.
    """
    ahead: _Ahead[T] = _Ahead()
    worker = threading.Thread(target=_work, args=(source, ahead), name="gateway-prefetch")
    worker.daemon = True
    worker.start()
    try:
        while True:
            with ahead.cond:
                while not ahead.items and not ahead.done:
                    ahead.cond.wait()
                if not ahead.items:
                    break
                item = ahead.items.popleft()
                ahead.cond.notify_all()
            yield item
            del item
    finally:
        with ahead.cond:
            ahead.stopped = True
            ahead.items.clear()
            ahead.cond.notify_all()
        worker.join()
    if ahead.error is not None:
        raise ahead.error
