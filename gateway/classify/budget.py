"""The decoder memory budget: what all scans of one process may hold in windows at once.

A decompressing layer keeps a window of recent output: zstd up to 128 MiB
(``zstd --long=27``), xz up to 64 MiB (``xz -9``), bzip2 about 3.7 MB, deflate
32 KiB; every layer also keeps a few fixed buffers (see
:mod:`gateway.classify.decode`). One transfer's layers may thus hold hundreds
of MiB, and 256 concurrent hostile uploads could ask for tens of GB (issue 11,
finding 7). A :class:`DecoderBudget` bounds the sum: each layer reserves the
memory its window needs *before* it allocates it, through the
:class:`DecoderAccount` of its scan, and gives it back when it ends. Closing
the account (``Decoder.close``, ``Scanner.close``, which the egress always
calls) gives back whatever the scan still held, also after an abort.

The admission rule (also in docs/running.md, "Limits"):

* A reservation that would take one scan past its cap (the smaller of
  ``ScanLimits.max_decoder_bytes`` and the budget's capacity) asks for memory
  no transfer may ever get: the account refuses it and the layer is
  ``content.unscannable`` ("zstd: decoder memory over 256 MiB"), like every
  other decode limit. Retrying would not help, so it is no 503.
* A reservation within the cap that the budget cannot grant now, because
  *other* scans hold it, raises :class:`DecoderBusy`: the transfer is
  answered ``503`` with ``Retry-After`` and nothing is forwarded. Nothing
  waits for memory: a worker thread blocked on another transfer's window
  would hold up the transfers that could release it.

Sans-I/O like the rest of the classifier: a :class:`threading.Lock` guards
the counters, because scans are fed from worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from gateway.errors import Unavailable


class DecoderBusy(Unavailable):
    """Decoder memory is held by other transfers; the sender should retry later (503)."""

    slug: ClassVar[str] = "decoder-memory-busy"
    title: ClassVar[str] = "Decoder memory busy"


class DecoderBudget:
    """Bytes of decoder memory that all scans sharing this object may hold at once.

    One per process role (the egress app makes one from
    ``egress.decoder_memory_bytes``), passed to every ``Scanner``; never a
    module global, so two gateways in one process (the tests) do not share one.

    Args:
        capacity: bytes that may be reserved at once (> 0).
        on_refusal: called (outside the lock, in the reserving thread) each
            time a reservation is refused because others hold the budget;
            the egress counts it in ``gateway_fail_closed_total``.

    Raises:
        ValueError: a capacity that is not positive.
    """

    __slots__ = ("_capacity", "_lock", "_on_refusal", "_peak", "_refusals", "_reserved")

    def __init__(self, capacity: int, *, on_refusal: Callable[[], None] | None = None) -> None:
        if capacity <= 0:
            raise ValueError("a decoder budget needs a positive capacity")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._on_refusal = on_refusal
        self._reserved = 0
        self._peak = 0
        self._refusals = 0

    @property
    def capacity(self) -> int:
        """Bytes that may be reserved at once."""
        return self._capacity

    @property
    def reserved(self) -> int:
        """Bytes reserved now, over all open accounts."""
        return self._reserved

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once."""
        return self._peak

    @property
    def refusals(self) -> int:
        """Reservations refused because other scans held the budget."""
        return self._refusals

    def account(self, cap: int) -> DecoderAccount:
        """A new account for one scan, which may hold at most ``cap`` bytes.

        Args:
            cap: the scan's own cap (``ScanLimits.max_decoder_bytes``); the
                account's cap is the smaller of it and :attr:`capacity`.
        """
        return DecoderAccount(self, min(cap, self._capacity))


class DecoderAccount:
    """One scan's reservations against a :class:`DecoderBudget`.

    Layers of the scan grow their reservation with :meth:`reserve` and give it
    back with :meth:`release`; :meth:`close` gives back everything still held
    and refuses later reservations. Every method is thread-safe and
    :meth:`close` is idempotent, so an abort from another thread cannot leak
    a reservation.
    """

    __slots__ = ("_budget", "_cap", "_closed", "_held")

    def __init__(self, budget: DecoderBudget, cap: int) -> None:
        self._budget = budget
        self._cap = cap
        self._held = 0
        self._closed = False

    @property
    def cap(self) -> int:
        """The most this scan may hold at once."""
        return self._cap

    @property
    def held(self) -> int:
        """Bytes this scan holds now."""
        return self._held

    def reserve(self, size: int, what: str) -> bool:
        """Reserve ``size`` more bytes for this scan.

        Args:
            size: bytes to add (nothing happens for 0 or less).
            what: what needs them, for the sender (``"zstd window"``).

        Returns:
            True when reserved; False when the scan's own cap does not allow
            it (the caller makes the layer unscannable).

        Raises:
            DecoderBusy: the cap allows it but other scans hold the budget.
            RuntimeError: the account was closed.
        """
        if size <= 0:
            return True
        budget = self._budget
        with budget._lock:
            if self._closed:
                raise RuntimeError("the scan's decoder memory was already given back")
            if self._held + size > self._cap:
                return False
            granted = budget._reserved + size <= budget._capacity
            if granted:
                budget._reserved += size
                budget._peak = max(budget._peak, budget._reserved)
                self._held += size
            else:
                budget._refusals += 1
        if granted:
            return True
        if budget._on_refusal is not None:
            budget._on_refusal()
        raise DecoderBusy(
            f"the {what} needs {_mib(size)} of decoder memory, which other transfers hold "
            "now; nothing was forwarded, retry later"
        )

    def release(self, size: int) -> None:
        """Give back ``size`` bytes (at most what is held: releasing twice is harmless)."""
        budget = self._budget
        with budget._lock:
            size = min(size, self._held)
            if size > 0:
                self._held -= size
                budget._reserved -= size

    def close(self) -> None:
        """Give back everything this scan holds; later reservations raise (idempotent)."""
        budget = self._budget
        with budget._lock:
            self._closed = True
            budget._reserved -= self._held
            self._held = 0


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
