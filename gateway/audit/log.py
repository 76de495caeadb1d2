"""The asynchronous audit log the server appends to (group commit, checkpoints).

One writer task owns the files. ``append`` canonicalises the record, queues
it and waits; the writer takes everything queued (up to a bound), writes it
with one ``write`` and one ``fdatasync`` in a worker thread, then wakes every
waiter with its receipt. Records arriving during that fsync form the next
batch, so 256 concurrent transfers share a handful of fsyncs instead of
queueing behind 256 of them, and the event loop keeps serving meanwhile.

The same task signs a checkpoint after ``checkpoint_every`` new records, or
``checkpoint_interval`` seconds after the last checkpoint when records
arrived since, and every ``idle_interval`` seconds regardless (so a verifier
sees the log is alive), plus a final one on :meth:`AuditLog.close`.

After any write or fsync failure the log is unhealthy: the server answers
503 and ``/readyz`` turns false, and ``append`` raises
:class:`~gateway.audit.errors.AuditUnavailable` at once. It never retries
the failed write: after a failed fsync Linux may have dropped the dirty
pages, so a retry could acknowledge a record that is not on disk. Instead
the writer task heals the log by itself (a full disk that gets space back
must not need a restart, issue 11): every :data:`RECOVERY_FIRST_DELAY`
seconds, backing off to :data:`RECOVERY_MAX_DELAY`, it probes the directory
(:func:`~gateway.audit.storage.probe_space`), and once that passes it
closes the files and reopens them as a restart would, cutting everything
beyond the last acknowledged record and checkpoint
(:class:`~gateway.audit.storage.DurableMark`), checks that the tree on disk
is the one it acknowledged, and signs a checkpoint. Only then is the log
healthy again. Records on disk that contradict what it acknowledged stop the
healing for good (:class:`~gateway.audit.errors.AuditIntegrityError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import structlog

from gateway.audit.errors import AuditIntegrityError, AuditUnavailable
from gateway.audit.merkle import consistency_proof, inclusion_proof, leaf_hash
from gateway.audit.note import Checkpoint, NoteSigner, sign_checkpoint
from gateway.audit.receipt import Receipt
from gateway.audit.records import canonical_json
from gateway.audit.storage import (
    DEFAULT_SEGMENT_MAX_AGE,
    DEFAULT_SEGMENT_MAX_BYTES,
    INDEX_DIR,
    Recovery,
    SegmentStore,
    iter_lines,
    probe_space,
)
from gateway.audit.transfers import TransferIndex
from gateway.errors import NotFound
from gateway.obs.metrics import Metrics

T = TypeVar("T")

#: Records per group commit. 4096 small records are ~2 MiB: one write, and a
#: latency bound for the first waiter of a very large burst.
MAX_BATCH_RECORDS = 4096
#: Bytes per group commit (records are ≤ 64 KiB each, so at least 64 per batch).
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Appends waiting for the writer before ``append`` itself waits (backpressure):
#: 16x the 4096-record batch, far above the 256 concurrent transfers of SPEC §9.
MAX_PENDING = 65_536
#: SPEC §7: a checkpoint at least every 1,000 records or 10 s; 60 s when idle.
DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_INTERVAL = 10.0
DEFAULT_IDLE_INTERVAL = 60.0
#: First probe of a failed log 5 s after the failure: Kubernetes asks /readyz
#: every 10 s by default (probe periodSeconds), so a disk that got space back
#: has the replica ready again at its next readiness check or the one after.
RECOVERY_FIRST_DELAY = 5.0
#: The delay doubles while probes fail, up to once a minute: a disk that stays
#: full costs one probe a minute, the I/O of an idle checkpoint
#: (DEFAULT_IDLE_INTERVAL), and space that returns is used within a minute.
RECOVERY_MAX_DELAY = 60.0
#: A probe writes and syncs one whole group commit (MAX_BATCH_BYTES): with less
#: room the first large batch after healing would fail again at once.
RECOVERY_PROBE_BYTES = MAX_BATCH_BYTES

_log = structlog.get_logger("gateway.audit")


@dataclass(slots=True)
class _Pending:
    data: bytes
    leaf: bytes
    transfer_id: str | None
    future: asyncio.Future[Receipt]


class AuditLog:
    """An append-only, checkpointed transparency log in one directory.

    Create it with :meth:`open`; always :meth:`close` it. A cancelled
    ``append`` may still be logged (the record was already queued).

    Attributes:
        fsyncs: group commits so far (each is one write and one fdatasync).
        recoveries: times the log healed by itself after a failure.
    """

    def __init__(
        self,
        store: SegmentStore,
        signer: NoteSigner,
        *,
        origin: str,
        metrics: Metrics | None,
        checkpoint_every: int,
        checkpoint_interval: float,
        idle_interval: float,
        recovery_delay: float = RECOVERY_FIRST_DELAY,
        recovery_max_delay: float = RECOVERY_MAX_DELAY,
    ) -> None:
        self._store = store
        self._signer = signer
        self._origin = origin
        self._metrics = metrics
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval
        self._idle_interval = idle_interval
        self._recovery_delay = recovery_delay
        self._recovery_max_delay = recovery_max_delay
        self._pending: deque[_Pending] = deque()
        self._slots = asyncio.Semaphore(MAX_PENDING)
        self._wakeup = asyncio.Event()
        # Serialises the store's writes: batches and checkpoints (also sync_checkpoint).
        self._io = asyncio.Lock()
        self._healthy = True
        self._closing = False
        self._closed = False
        self._failure = ""
        # False once healing cannot help: the disk contradicts what was
        # acknowledged, or the writer task itself crashed.
        self._recoverable = True
        self._failed_at = 0.0  # monotonic time of the first failure of an outage
        # Readers (receipt, find, consistency_proof) use the store's files from
        # worker threads; healing closes and reopens them, so it waits until
        # none is reading and holds new ones back meanwhile.
        self._readers = 0
        self._no_readers = asyncio.Event()
        self._no_readers.set()
        self._readable = asyncio.Event()
        self._readable.set()
        self._store_open = True
        self._size = store.size
        self._checkpoint: Checkpoint | None = None
        self._checkpoint_note: str | None = None
        self._last_checkpoint = time.monotonic()
        self._transfers: TransferIndex | None = None
        # Set (from any thread) once the transfer index failed or lied: from then
        # on find() scans, the writer stops feeding it, and close() deletes it.
        self._transfers_broken: str | None = None
        self._writer: asyncio.Task[None] | None = None
        self.fsyncs = 0
        self.recoveries = 0

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        signer: NoteSigner,
        *,
        origin: str,
        metrics: Metrics | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        idle_interval: float = DEFAULT_IDLE_INTERVAL,
        segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
        segment_max_age: float = DEFAULT_SEGMENT_MAX_AGE,
        fsync: bool = True,
        recovery_delay: float = RECOVERY_FIRST_DELAY,
        recovery_max_delay: float = RECOVERY_MAX_DELAY,
    ) -> AuditLog:
        """Open (or create) the log in ``directory``, recover it, start the writer.

        Args:
            directory: the log directory (created if missing).
            signer: the gateway's checkpoint-signing key.
            origin: the checkpoint origin line, unique to this log
                (e.g. ``hksz-gateway.example/sz-egress``).
            metrics: where to count records, failures, fsyncs, tree size.
            checkpoint_every: sign after this many new records.
            checkpoint_interval: seconds after the last checkpoint at which
                new records get one.
            idle_interval: seconds between checkpoints with no new records.
            segment_max_bytes: close a segment once it reaches this size.
            segment_max_age: close a segment once it is this old (seconds).
            fsync: sync every batch (only tests and benchmarks turn it off).
            recovery_delay: seconds from a failure to the first probe.
            recovery_max_delay: the longest delay between probes while they
                keep failing (the delay doubles up to it).

        Raises:
            AuditUnavailable: the directory cannot be written or is in use.
            AuditIntegrityError: the log is damaged beyond a torn final write,
                or belongs to another origin.
        """
        if checkpoint_every < 1 or min(checkpoint_interval, idle_interval) <= 0:
            raise ValueError("checkpoint intervals must be positive")
        if not 0 < recovery_delay <= recovery_max_delay:
            raise ValueError("recovery delays must be positive and the first the shorter")
        Checkpoint(origin, 0, b"\0" * 32).to_text()  # validates the origin early
        store, recovery = await asyncio.to_thread(
            SegmentStore.open,
            directory,
            segment_max_bytes=segment_max_bytes,
            segment_max_age=segment_max_age,
            fsync=fsync,
        )
        log = cls(
            store,
            signer,
            origin=origin,
            metrics=metrics,
            checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
            idle_interval=idle_interval,
            recovery_delay=recovery_delay,
            recovery_max_delay=recovery_max_delay,
        )
        log._transfers = await asyncio.to_thread(_open_transfer_index, store)
        if recovery.torn_bytes:
            _log.warning(
                "audit_torn_tail_truncated",
                directory=str(directory),
                bytes=recovery.torn_bytes,
                kept_in=str(recovery.torn_file),
                tree_size=store.size,
            )
        if store.latest is not None:
            latest = store.latest.checkpoint()
            if latest.origin != origin:
                await asyncio.to_thread(log._close_files)
                raise AuditIntegrityError(
                    f"{directory}: log origin is {latest.origin!r}, configured {origin!r}"
                )
            log._checkpoint = latest
            log._checkpoint_note = store.latest.note
        if metrics is not None:
            metrics.audit_tree_size.set(store.size)
        if log._checkpoint is None or log._checkpoint.size != store.size:
            try:
                await log._write_checkpoint()
            except AuditUnavailable:
                await asyncio.to_thread(log._close_files)
                raise
        if metrics is not None:
            metrics.audit_writable.set(1)
        log._writer = asyncio.create_task(log._run(), name="audit-writer")
        return log

    # -- state --------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False from a failed write or fsync until the log healed (the server fails closed)."""
        return self._healthy and not self._closed

    @property
    def size(self) -> int:
        """Records durably logged so far."""
        return self._size

    @property
    def origin(self) -> str:
        """The checkpoint origin of this log."""
        return self._origin

    @property
    def checkpoint(self) -> tuple[Checkpoint, str] | None:
        """The latest signed checkpoint and its note, if any."""
        if self._checkpoint is None or self._checkpoint_note is None:
            return None
        return self._checkpoint, self._checkpoint_note

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise AuditUnavailable("audit log is closed")
        if not self._healthy:
            raise AuditUnavailable(f"audit log is unavailable: {self._failure}")

    # -- appending ----------------------------------------------------------------

    async def append(self, record: Mapping[str, Any]) -> Receipt:
        """Log ``record`` and return once it is durable (written and fsynced).

        Args:
            record: metadata only (see :mod:`gateway.audit.records`).

        Returns:
            its receipt: index and leaf hash (no proof yet; see :meth:`receipt`).

        Raises:
            AuditUnavailable: the log failed or is closed; nothing was logged
                (or it is unknown whether it was: the caller must fail closed).
            RecordError: the record is not canonical-JSON-able.
        """
        self._check_open()
        data = canonical_json(record)
        tid = record.get("transfer_id")
        async with self._slots:
            self._check_open()
            future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
            self._pending.append(
                _Pending(data, leaf_hash(data), tid if isinstance(tid, str) else None, future)
            )
            self._wakeup.set()
            return await future

    async def _run(self) -> None:
        delay = self._recovery_delay
        try:
            while True:
                if not self._healthy:
                    if self._closing or not self._recoverable:
                        break
                    healed = await self._heal_after(delay)
                    delay = (
                        self._recovery_delay if healed else min(delay * 2, self._recovery_max_delay)
                    )
                    continue
                if not self._pending and not self._closing:
                    self._wakeup.clear()
                    await self._sleep(self._checkpoint_wait())
                if self._pending:
                    await self._commit(self._take_batch())
                if self._healthy and self._checkpoint_due():
                    with contextlib.suppress(AuditUnavailable):  # _fail recorded it
                        await self._write_checkpoint()
                if self._healthy and self._closing and not self._pending:
                    break
            if self._healthy:
                await self._write_checkpoint(final=True)
        except AuditUnavailable:
            pass  # already recorded by _fail; waiters were told
        except Exception as exc:  # the writer must never die silently
            self._recoverable = False
            self._fail(exc)
            raise

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if an append, a failure or ``close`` wakes the writer."""
        self._wakeup.clear()
        # asyncio.timeout, not wait_for: wait_for runs the wait as a task of
        # its own, a loop iteration more before each batch.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._pending and len(batch) < MAX_BATCH_RECORDS:
            item = self._pending[0]
            if batch and size + len(item.data) > MAX_BATCH_BYTES:
                break
            batch.append(self._pending.popleft())
            size += len(item.data)
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        async with self._io:
            first = self._size

            def durable(synced: float) -> None:
                # Runs on the event loop as soon as the batch is on disk, while
                # the worker thread goes on to update the transfer index.
                self._size = first + len(batch)
                self.fsyncs += 1
                for offset, item in enumerate(batch):
                    if not item.future.done():
                        item.future.set_result(Receipt(first + offset, item.leaf, item.data))
                if self._metrics is not None:
                    self._metrics.audit_records.inc(len(batch))
                    if self._store.fsync:
                        self._metrics.audit_fsync.observe(synced)
                    self._metrics.audit_tree_size.set(self._size)

            def on_durable(synced: float) -> None:
                loop.call_soon_threadsafe(durable, synced)

            try:
                await asyncio.to_thread(self._write_batch, first, batch, on_durable)
            except (OSError, AuditUnavailable) as exc:
                self._fail(exc, batch)
                return

    def _write_batch(
        self, first: int, batch: list[_Pending], on_durable: Callable[[float], None]
    ) -> None:
        """Write and sync a batch, report it durable, then index its transfer ids (worker thread).

        ``on_durable`` (given the fdatasync seconds) wakes the appenders right
        after the sync: the transfer index is derived data, committed without
        an fsync of its own (see :mod:`gateway.audit.transfers`), so no
        verdict waits for it (a SQLite commit, ~0.1 ms per batch). It failing
        never fails the log. The next batch starts only after this returns
        (the ``_io`` lock), so the index never falls behind by more than a batch.
        """
        synced = self._store.append([p.data for p in batch], [p.leaf for p in batch])
        on_durable(synced)
        index = self._transfers
        if index is not None and self._transfers_broken is None:
            try:
                if index.size != first:
                    raise sqlite3.DatabaseError(f"index covers {index.size}, batch starts {first}")
                index.add(
                    [(p.transfer_id, first + n) for n, p in enumerate(batch) if p.transfer_id],
                    first + len(batch),
                    batch[-1].leaf,
                )
            except sqlite3.Error as exc:
                self._break_transfers(f"cannot write: {exc}")

    def _break_transfers(self, reason: str) -> None:
        if self._transfers_broken is None:
            self._transfers_broken = reason
            _log.error("audit_transfer_index_failed", reason=reason)

    def _fail(self, exc: BaseException, batch: Sequence[_Pending] = ()) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        first_failure = self._healthy
        self._healthy = False
        self._failure = reason or type(exc).__name__
        if first_failure:
            self._failed_at = time.monotonic()
            _log.error("audit_write_failed", error=self._failure, tree_size=self._size)
            if self._metrics is not None:
                self._metrics.audit_write_failures.inc()
                self._metrics.audit_writable.set(0)
        error = AuditUnavailable(f"audit log is unavailable: {self._failure}")
        for item in [*batch, *self._pending]:
            if not item.future.done():
                item.future.set_exception(error)
        self._pending.clear()
        self._wakeup.set()  # a failed sync_checkpoint: the writer starts healing

    # -- healing ------------------------------------------------------------------

    async def _heal_after(self, delay: float) -> bool:
        """Wait ``delay`` seconds (``close`` cuts it short), then try to heal; True if healed."""
        await self._sleep(delay)
        if self._closing:
            return False
        return await self._recover(delay)

    async def _recover(self, delay: float) -> bool:
        """Probe the directory and, if it takes a batch again, reopen the log; True if healed.

        Args:
            delay: seconds since the previous attempt (for the log line).
        """
        next_in = min(delay * 2, self._recovery_max_delay)
        try:
            await asyncio.to_thread(
                probe_space, self._store.directory, RECOVERY_PROBE_BYTES, fsync=self._store.fsync
            )
        except OSError as exc:
            _log.warning(
                "audit_recovery_probe_failed", error=exc.strerror or str(exc), next_in=next_in
            )
            return False
        async with self._io, self._exclusive():
            try:
                store, recovery, checkpoint, note = await asyncio.to_thread(self._reopen)
            except AuditIntegrityError as exc:
                self._recoverable = False
                _log.critical("audit_recovery_impossible", error=exc.detail)
                return False
            except (OSError, AuditUnavailable) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else exc.detail
                _log.warning("audit_recovery_failed", error=reason or str(exc), next_in=next_in)
                return False
            self._store, self._store_open = store, True
            self._transfers_broken = None
            self._transfers = await asyncio.to_thread(_open_transfer_index, store)
        self._checkpoint, self._checkpoint_note = checkpoint, note
        self._last_checkpoint = time.monotonic()
        self._healthy, self._failure = True, ""
        self.recoveries += 1
        if self._metrics is not None:
            self._metrics.audit_last_checkpoint.set(time.time())
            self._metrics.audit_recoveries.inc()
            self._metrics.audit_writable.set(1)
        _log.warning(
            "audit_recovered",
            tree_size=self._size,
            cut_bytes=recovery.torn_bytes,
            cut_checkpoint_bytes=recovery.checkpoint_bytes_cut,
            kept_in=str(recovery.torn_file) if recovery.torn_file else None,
            unavailable_seconds=round(time.monotonic() - self._failed_at, 1),
        )
        return True

    def _reopen(self) -> tuple[SegmentStore, Recovery, Checkpoint, str]:
        """Close the failed files and open them again as a restart would (worker thread).

        Everything beyond the failed store's durable mark is cut (its write or
        sync failed, so it was never acknowledged and the disk may not hold
        what the page cache shows); the records within must be on disk as
        acknowledged. A checkpoint over them is signed and synced with the
        index before anyone is told the log works again.

        Raises:
            OSError, AuditUnavailable: the disk still fails; try again later.
            AuditIntegrityError: the disk contradicts what was acknowledged.
        """
        old = self._store
        mark = old.durable
        if mark.records != self._size:
            raise AuditIntegrityError(
                f"{old.directory}: the store holds {mark.records} records, "
                f"{self._size} were acknowledged"
            )
        self._store_open = False
        self._close_files()
        store, recovery = SegmentStore.open(
            old.directory,
            segment_max_bytes=old.segment_max_bytes,
            segment_max_age=old.segment_max_age,
            fsync=old.fsync,
            durable=mark,
        )
        try:
            checkpoint = Checkpoint(self._origin, store.size, store.tree.root())
            note = sign_checkpoint(checkpoint, self._signer)
            store.write_checkpoint(note, sync_index=True)
        except BaseException:
            store.close()
            raise
        return store, recovery, checkpoint, note

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """Hold the store's files open for a read (worker threads read them)."""
        await self._readable.wait()
        if self._closed:
            raise AuditUnavailable("audit log is closed")
        if not self._store_open:
            raise AuditUnavailable(f"audit log is unavailable: {self._failure}")
        self._readers += 1
        self._no_readers.clear()
        try:
            yield
        finally:
            self._readers -= 1
            if not self._readers:
                self._no_readers.set()

    async def _read_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read of the store's files in a worker thread, inside :meth:`_reading`.

        If the awaiting task is cancelled, the thread still reads on: the
        cancellation waits for it, so the reader count stays held and a
        recovery never closes files under a running read.
        """
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """Hold new readers back and wait for the current ones (to swap the store)."""
        self._readable.clear()
        try:
            await self._no_readers.wait()
            yield
        finally:
            self._readable.set()

    # -- checkpoints ----------------------------------------------------------------

    def _checkpoint_wait(self) -> float:
        since = time.monotonic() - self._last_checkpoint
        covered = self._checkpoint.size if self._checkpoint else -1
        interval = self._checkpoint_interval if covered != self._size else self._idle_interval
        return max(0.0, interval - since)

    def _checkpoint_due(self) -> bool:
        covered = self._checkpoint.size if self._checkpoint else -1
        since = time.monotonic() - self._last_checkpoint
        fresh = self._size - max(covered, 0)
        if covered != self._size and (
            fresh >= self._checkpoint_every or since >= self._checkpoint_interval
        ):
            return True
        return since >= self._idle_interval

    async def _write_checkpoint(self, *, final: bool = False) -> None:
        async with self._io:
            if not self._healthy:
                raise AuditUnavailable(f"audit log is unavailable: {self._failure}")
            checkpoint = Checkpoint(self._origin, self._store.size, self._store.tree.root())
            note = sign_checkpoint(checkpoint, self._signer)
            try:
                await asyncio.to_thread(self._store.write_checkpoint, note, sync_index=final)
            except (OSError, AuditUnavailable) as exc:
                self._fail(exc)
                raise AuditUnavailable(f"audit log is unavailable: {self._failure}") from exc
        self._checkpoint, self._checkpoint_note = checkpoint, note
        self._last_checkpoint = time.monotonic()
        if self._metrics is not None:
            self._metrics.audit_last_checkpoint.set(time.time())

    async def sync_checkpoint(self) -> tuple[Checkpoint, str]:
        """Sign a checkpoint covering every durable record now (for tests and shutdown paths)."""
        self._check_open()
        if self._checkpoint is None or self._checkpoint.size != self._size:
            await self._write_checkpoint()
        latest = self.checkpoint
        if latest is None:
            raise AuditUnavailable(f"audit log is unavailable: {self._failure}")
        return latest

    # -- proofs and lookups -----------------------------------------------------------

    async def receipt(self, index: int) -> Receipt:
        """The receipt of record ``index``, with a proof once a checkpoint covers it.

        Raises:
            NotFound: no such record.
            AuditUnavailable: the log is closed, or being reopened after a failure.
        """
        async with self._reading():
            return await self._receipt(index)

    async def _receipt(self, index: int) -> Receipt:
        if not 0 <= index < self._size:
            raise NotFound(f"no audit record {index}")
        checkpoint, note = self._checkpoint, self._checkpoint_note
        data = await self._read_in_thread(self._store.record, index)
        leaf = leaf_hash(data)
        if checkpoint is None or note is None or index >= checkpoint.size:
            return Receipt(index, leaf, data)
        proof = await self._read_in_thread(
            inclusion_proof, index, checkpoint.size, self._store.subtree
        )
        return Receipt(index, leaf, data, checkpoint.size, tuple(proof), note)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between two checkpointed sizes (for witnesses).

        Raises:
            NotFound: ``new_size`` is beyond the latest checkpoint.
            AuditUnavailable: the log is closed, or being reopened after a failure.
        """
        async with self._reading():
            covered = self._checkpoint.size if self._checkpoint else 0
            if not 0 <= old_size <= new_size <= covered:
                raise NotFound(f"no consistency proof from {old_size} to {new_size}")
            return await self._read_in_thread(
                consistency_proof, old_size, new_size, self._store.subtree
            )

    async def find(self, transfer_id: str) -> list[Receipt]:
        """Receipts of every record of one transfer, in log order (empty if none).

        Looked up in the persistent transfer index (a few page reads), each hit
        re-read and checked to carry ``transfer_id``; only when the index is
        unavailable, or names a record of another transfer, are the segments
        scanned (seconds at a million records) in a worker thread.

        Raises:
            AuditUnavailable: the log is closed, or being reopened after a failure.
        """
        async with self._reading():
            indices = await self._read_in_thread(self._find_indices, transfer_id, self._size)
            return [await self._receipt(index) for index in indices]

    def _find_indices(self, transfer_id: str, size: int) -> list[int]:
        """Indices of ``transfer_id``'s records below ``size`` (worker thread)."""
        index = self._transfers
        if index is not None and self._transfers_broken is None:
            found = self._lookup(index, transfer_id, size)
            if found is not None:
                return found
        return _scan_for(list(self._store.segments), size, transfer_id, self._store.missing_segment)

    def _lookup(self, index: TransferIndex, transfer_id: str, size: int) -> list[int] | None:
        """The index's answer, verified against the records; ``None`` if it cannot be used."""
        covered = index.size
        try:
            candidates = index.lookup(transfer_id)
        except sqlite3.Error as exc:
            self._break_transfers(f"cannot read: {exc}")
            return None
        first_kept = self._store.segments[0][0]
        # Records from `covered` on are scanned below; the writer may index some
        # of them while this lookup runs (appenders are answered before it does),
        # so the index's answer is used only below both marks: no record twice.
        limit = min(size, covered)
        found: list[int] = []
        for candidate in candidates:
            if candidate >= limit or candidate < first_kept:
                continue  # logged after this lookup began, or pruned after its retention
            try:
                data = self._store.record(candidate)
            except NotFound:
                continue  # pruned under this running gateway (gateway audit prune)
            if not record_matches(data, transfer_id):
                # A 64-bit hash collision is ~1e-13 per lookup: far likelier the
                # index was damaged. Never trust it for this or later lookups.
                self._break_transfers(f"entry for record {candidate} names another record")
                return None
            found.append(candidate)
        if covered < size:  # only while a failed index lags; the writer keeps it current
            found.extend(
                i
                for i, data in self._store.records_from(covered)
                if i < size and record_matches(data, transfer_id)
            )
        return found

    # -- shutdown -----------------------------------------------------------------------

    async def close(self) -> None:
        """Flush queued records, write a final checkpoint, close the files."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await asyncio.wait([self._writer])
            if not self._writer.cancelled() and self._writer.exception() is not None:
                # Already counted by _fail; the traceback belongs in the operator's log.
                _log.error("audit_writer_crashed", exc_info=self._writer.exception())
        self._closed = True
        await asyncio.to_thread(self._close_files)

    def _close_files(self) -> None:
        if self._transfers is not None:
            if self._transfers_broken is None:
                with contextlib.suppress(sqlite3.Error):
                    self._transfers.close()
            else:  # it failed or lied: the next open rebuilds it from the segments
                self._transfers.discard()
            self._transfers = None
        self._store.close()


def _open_transfer_index(store: SegmentStore) -> TransferIndex | None:
    """Open the transfer index and index the records it lacks (worker thread).

    Without one (SQLite cannot create it), ``find`` scans: slower, still correct.
    """

    def leaf(index: int) -> bytes:
        return store.subtree(0, index)

    index: TransferIndex | None = None
    try:
        index = TransferIndex.open(
            store.directory / INDEX_DIR, log_size=store.size, leaf=leaf, fsync=store.fsync
        )
        indexed = index.catch_up(store.records_from(index.size), store.size, leaf)
    except (sqlite3.Error, OSError, AuditIntegrityError) as exc:
        _log.error("audit_transfer_index_unavailable", error=str(exc))
        if index is not None:
            index.discard()
        return None
    if indexed:
        _log.info("audit_transfer_index_caught_up", records=indexed, tree_size=store.size)
    return index


def record_matches(data: bytes, transfer_id: str) -> bool:
    """Whether canonical record bytes belong to ``transfer_id`` (cheap pre-check, then parse)."""
    needle = b'"transfer_id":' + json.dumps(transfer_id, ensure_ascii=False).encode("utf-8")
    if needle not in data:
        return False
    try:
        return bool(json.loads(data).get("transfer_id") == transfer_id)
    except ValueError:
        return False


def _scan_for(
    segments: list[tuple[int, Any]],
    size: int,
    transfer_id: str,
    missing: Callable[[int, Any], NoReturn],
) -> list[int]:
    """Indices of ``transfer_id``'s records below ``size``, by scanning every segment.

    A review can be approved days after it was logged, so no segment can be
    skipped; the byte pre-check keeps this at disk-read speed. A segment
    pruned since start-up is skipped; ``missing`` raises for any other.
    """
    found: list[int] = []
    for first, path in segments:
        try:
            found.extend(
                first + n
                for n, line in enumerate(iter_lines(path))
                if line.complete and first + n < size and record_matches(line.data, transfer_id)
            )
        except FileNotFoundError:
            with contextlib.suppress(NotFound):
                missing(first, path)
    return found
