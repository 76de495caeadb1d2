"""Items made a step ahead on a worker thread (gateway/classify/formats/prefetch.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from gateway.classify.formats.prefetch import PREFETCH_ITEMS, prefetched


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gateway-prefetch"]


def test_items_in_order_made_on_another_thread() -> None:
    makers: set[int] = set()

    def numbers() -> Iterator[int]:
        for n in range(100):
            makers.add(threading.get_ident())
            yield n

    assert list(prefetched(numbers())) == list(range(100))
    assert makers
    assert threading.get_ident() not in makers
    assert not _prefetch_threads()


def test_an_error_comes_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("page 3 is corrupt")

    got: list[int] = []
    with pytest.raises(ValueError, match="page 3 is corrupt"):
        got.extend(prefetched(failing()))
    assert got == [1, 2]
    assert not _prefetch_threads()


def test_leaving_early_stops_the_worker() -> None:
    made: list[int] = []
    finished = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                made.append(n)
                yield n
                n += 1
        finally:
            finished.set()

    with contextlib.closing(prefetched(endless())) as items:
        for n in items:
            if n == 3:
                break
    assert not _prefetch_threads()  # joined before closing returned
    assert finished.is_set()  # and the source was closed
    # The worker made at most the items taken, one waiting and one in hand.
    assert len(made) <= 4 + PREFETCH_ITEMS + 1


def _render_all(items: Iterator[bytes]) -> None:
    with contextlib.closing(prefetched(items)) as ahead:
        for _ in ahead:
            raise RuntimeError("render failed")


def test_an_exception_in_the_caller_stops_the_worker() -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"x" * 1000

    with pytest.raises(RuntimeError, match="render failed"):
        _render_all(endless())
    assert not _prefetch_threads()
