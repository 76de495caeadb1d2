"""Scanner: the classifier's sans-I/O front door (SPEC §3).

``Scanner.feed(chunk)`` any number of times, then ``Scanner.finish()`` returns
the :class:`~gateway.classify.summary.ScanSummary`, like ``h11.Connection``.
It hashes the raw input (SHA-256), drives the decode layers, which drive the
:class:`~gateway.classify.matcher.TextMatcher`, and assembles the summary.

A transfer whose body is a random-access format (Parquet, SQLite …: its
index is at the end) is counted and hashed as it is fed but read only at
``finish(source)``, from a random-access view of the whole body that the
caller gives (the egress: its encrypted spool, decrypted chunk by chunk;
``gateway scan``: the file). :attr:`Scanner.wants_random_access` says when
one is needed.

Hashing runs on a helper thread while Hyperscan scans: both ``hashlib`` and
Hyperscan release the GIL, so on a machine with a spare core the hash costs
almost no wall time (SPEC §9 whole-path targets). Chunks are handed over in
batches of :data:`HASH_BATCH_BYTES`, so the 64 KiB chunks the proxy feeds do
not each pay a thread hand-off. The scanner does no I/O of its own; the
thread only ever computes the hash.
"""

from __future__ import annotations

import collections
import datetime as _dt
import hashlib
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import MappingProxyType, TracebackType
from typing import Final

from gateway.classify.budget import DecoderBudget
from gateway.classify.decode import NAME_MAX_BYTES, Decoder, ScanLimits
from gateway.classify.detectors import DetectorSet
from gateway.classify.formats.base import RandomAccess
from gateway.classify.matcher import MAX_DISTINCT_PER_LABEL, MAX_DISTINCT_VALUES, TextMatcher
from gateway.classify.summary import ScanSummary

#: Input is hashed on the helper thread in batches of at least this many
#: bytes. A hand-off costs ~20 µs plus a wake-up of the scanning thread; per
#: 64 KiB chunk (hashed in ~45 µs at ~1.4 GB/s) that was a quarter of the
#: whole-path time on prose, per MiB it is noise. Inputs smaller than one batch
#: (a 1 KB transfer) are hashed in line and never start the thread.
HASH_BATCH_BYTES: Final = 1 << 20
#: Batches handed to the helper thread and not yet hashed, at most: while it
#: hashes one, the next is already waiting, so it never idles for a wake-up of
#: the feeding thread (with one, a body that needs no decoding while it streams,
#: a Parquet file, was fed at ~0.9 GB/s against SHA-256's ~1.2 here). Bounds
#: the chunks held for hashing to these batches plus the one being gathered.
HASH_AHEAD: Final = 2

_DEFAULT_LIMITS: Final = ScanLimits()


class Scanner:
    """Classify one stream of bytes; feed it in chunks of any size.

    Args:
        detectors: the detector set of the policy version in force (shared).
        secret: the gateway secret keying the distinct-value hashes.
        limits: decode limits (depth, ratio, expanded size, decoder memory).
        budget: the process-wide decoder memory budget (the egress's); None
            for a budget of this scan's own (``gateway scan``: only
            ``limits.max_decoder_bytes`` applies).
        today: the date the birth-date check treats as today (default: UTC+8 now).
        max_distinct: bound on tracked distinct values per label.
        max_distinct_total: bound on tracked distinct values over all labels.
        chance_words: per chance-tested label, the header words that name it
            (the policy's ``chance_words``; built-in ones by default).

    The summary is identical for every way of cutting the same bytes into
    chunks, except ``seconds``.
    """

    def __init__(
        self,
        detectors: DetectorSet,
        secret: bytes,
        limits: ScanLimits = _DEFAULT_LIMITS,
        *,
        budget: DecoderBudget | None = None,
        today: _dt.date | None = None,
        max_distinct: int = MAX_DISTINCT_PER_LABEL,
        max_distinct_total: int = MAX_DISTINCT_VALUES,
        chance_words: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._matcher = TextMatcher(
            detectors,
            secret,
            today=today,
            max_distinct=max_distinct,
            max_distinct_total=max_distinct_total,
            chance_words=chance_words,
        )
        self._decoder = Decoder(self._matcher, limits, budget=budget)
        self._sha = hashlib.sha256()
        self._size = 0
        self._seconds = 0.0
        self._worker: ThreadPoolExecutor | None = None
        self._hash_jobs: collections.deque[Future[None]] = collections.deque()
        self._unhashed: list[bytes] = []
        self._unhashed_bytes = 0
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    @property
    def wants_random_access(self) -> bool:
        """Whether :meth:`finish` needs a random-access view of the input to read it.

        True once the input's first bytes were recognised as a random-access
        format (Parquet, SQLite, HDF5 …): it is then counted and hashed as it
        is fed, never buffered, and read at :meth:`finish` from the ``source``
        given there. An input shorter than the sniff prefix (64 KiB) is only
        decided at its end; until then the answer is for the bytes fed so
        far as if the input ended there, so it is exact once everything was
        fed. False after :meth:`finish`.
        """
        return self._decoder.wants_random_access

    def scan_name(self, name: str) -> bool:
        """Classify the input's own name (a transfer's path), before any :meth:`feed`.

        Scanned as archive member names are (a text member of its own):
        ``110101199003077777.jpg`` names a person whatever the picture holds.
        The name is no part of ``size`` or ``sha256``.

        Returns:
            True when the name may hold a matched value: the classifier found
            something in it, or it is longer than the part that is scanned
            (:data:`~gateway.classify.decode.NAME_MAX_BYTES`). Such a name is
            never echoed (SPEC §3.2: no output or error holds a matched value).

        Raises:
            RuntimeError: after :meth:`feed` or :meth:`finish`.
        """
        if self._finished or self._size:
            raise RuntimeError("Scanner.scan_name() must come before the first feed()")
        raw = name.encode("utf-8", "surrogatepass")
        self._decoder.name(raw)  # never raises
        # Nothing was fed before the name, so any finding so far is the name's.
        # The name's member is closed already: result() only reads the counts.
        return len(raw) > NAME_MAX_BYTES or bool(self._matcher.result().labels)

    def feed(self, chunk: bytes) -> None:
        """Classify the next chunk of input.

        Raises:
            DecoderBusy: a decompressor's window could not be reserved because
                other scans hold the decoder memory budget (503 + Retry-After);
                the scan's decoder memory is given back at once.
            RuntimeError: after :meth:`finish`.
        """
        if self._finished:
            raise RuntimeError("Scanner.feed() after finish()")
        if not chunk:
            return
        started = time.perf_counter()
        data = chunk if type(chunk) is bytes else bytes(chunk)
        self._unhashed.append(data)
        self._unhashed_bytes += len(data)
        if self._unhashed_bytes >= HASH_BATCH_BYTES:
            self._wait_hash(HASH_AHEAD - 1)  # one thread: batches are hashed in order
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="gateway-sha256")
            batch, self._unhashed, self._unhashed_bytes = self._unhashed, [], 0
            self._hash_jobs.append(self._worker.submit(self._hash, batch))
        self._size += len(data)
        self._decoder.feed(data)
        self._seconds += time.perf_counter() - started

    def finish(self, source: RandomAccess | None = None) -> ScanSummary:
        """End the input and return the summary.

        Args:
            source: a random-access view of the whole input, exactly the bytes
                fed (the transfer's spool, the scanned file). Read only when
                :attr:`wants_random_access`; without one such an input is
                ``content.unscannable`` ("parquet: needs random access").

        Raises:
            DecoderBusy: a nested member's window could not be reserved
                because other scans hold the budget (as for :meth:`feed`).
            RuntimeError: when called twice.
        """
        if self._finished:
            raise RuntimeError("Scanner.finish() called twice")
        started = time.perf_counter()
        try:
            content = self._decoder.finish(source)
            numeric = self._decoder.numeric_values
            result = self._matcher.result()
            self._wait_hash()
            batch, self._unhashed, self._unhashed_bytes = self._unhashed, [], 0
            self._hash(batch)
        finally:
            self.close()
        self._seconds += time.perf_counter() - started
        return ScanSummary(
            size=self._size,
            sha256=self._sha.hexdigest(),
            content=content,
            labels=MappingProxyType(result.labels),
            subjects=result.subjects,
            unscannable=result.unscannable,
            seconds=self._seconds,
            digests=MappingProxyType(result.digests),
            distinct_capped=result.distinct_capped,
            numeric_values=numeric,
            chance=MappingProxyType(result.chance),
            chance_digests=MappingProxyType(result.chance_digests),
            columns=result.columns,
        )

    def close(self) -> None:
        """Release the hashing thread and the decoder memory (idempotent).

        An unfinished scan is abandoned.
        """
        self._finished = True
        self._unhashed, self._unhashed_bytes = [], 0
        self._decoder.close()
        self._matcher.close()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True)
        self._hash_jobs.clear()

    def __enter__(self) -> Scanner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _hash(self, batch: list[bytes]) -> None:
        update = self._sha.update
        for data in batch:
            update(data)

    def _wait_hash(self, pending: int = 0) -> None:
        """Wait until at most ``pending`` batches are still to be hashed."""
        jobs = self._hash_jobs
        while len(jobs) > pending:
            jobs.popleft().result()
