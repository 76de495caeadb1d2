"""Receiving a transfer's body: the read loop and its two lanes (classifier, spool).

The body streams in (``readany``, awaited, so TCP backpressure reaches the
client); each batch is fed to the classifier and sealed into the encrypted
spool in worker threads, so the event loop keeps serving others. A body large
enough is also streamed, sealed, to the twin while it is classified (the
pipelined upload, :mod:`gateway.server.destinations.twin`): its header, which
holds the key, waits for the verdict.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.classify.engine import Scanner
from gateway.classify.summary import ScanSummary
from gateway.errors import PayloadTooLarge
from gateway.obs.metrics import Metrics
from gateway.policy.engine import CompiledPolicy, Route
from gateway.server.destinations.twin import start_upload
from gateway.server.egress_state import EgressState
from gateway.server.forward import PayloadUpload
from gateway.server.spool import SpoolInfo, SpoolWriter
from gateway.server.spool_view import SpoolView
from gateway.server.transfer import Transfer

log = structlog.get_logger("gateway.egress")

#: Received bytes are handed to the worker threads in batches of at least this
#: size. Hyperscan, the cipher and hashlib release the GIL for most of a batch,
#: but every hand-off wakes a thread and moves the GIL (measured 50-300 µs on
#: a loaded 2-core host): 512 KiB keeps that to a few % of the batch's work.
#: 1 MiB measured no faster but held ~5 MB more RSS per large transfer (each
#: batch lives in several places at once: pending, both lanes, the upload).
OFFLOAD_BATCH = 512 * 1024
#: A body no larger than this is classified and sealed on the event loop in one
#: step (~0.3 ms at the classifier's slowest ~200 MB/s): cheaper than the two
#: thread hand-offs it would otherwise cost, and short enough not to stall others.
INLINE_MAX_BYTES = 64 * 1024
#: A sealed body up to this size stays in memory instead of a spool file (see
#: :mod:`gateway.server.spool`): creating and deleting the file cost ~0.35 ms of
#: journal work on every small transfer's latency path (measured on ext4). It
#: holds an ``INLINE_MAX_BYTES`` body's age payload (16-byte nonce, 16-byte tag
#: per 64 KiB chunk) with room to spare, so an inline body never touches the
#: disk; a larger one spills to its file in the spool lane's worker thread.
#: Bounded per transfer, so at most this times ``max_concurrent`` in memory.
SPOOL_MEMORY_BYTES = INLINE_MAX_BYTES + 1024


class _Lanes:
    """Classifier and spool, each in its own worker thread, one batch in flight per lane.

    While batch N is classified and sealed, the event loop already reads batch
    N+1 from the socket: receiving, classifying and encrypting overlap (the
    classifier and the cipher release the GIL for most of their work). At
    most one batch waits per lane, so memory stays at a few batches and a slow
    lane slows reading, which is TCP backpressure on the client. With a
    pipelined upload, the sealed output of the spool lane also goes to the
    twin (hashed in the lane's thread).
    """

    def __init__(self, scanner: Scanner, writer: SpoolWriter, upload: PayloadUpload | None) -> None:
        self.scanner = scanner
        self.writer = writer
        self.upload = upload
        self._scan: asyncio.Future[None] | None = None
        self._spool: asyncio.Future[bytes] | None = None

    def _seal(self, batch: bytes) -> bytes:
        sealed = self.writer.write(batch)
        if self.upload is not None and sealed:
            self.upload.digest.update(sealed)
        return sealed

    async def _forward_sealed(self) -> None:
        if self._spool is not None:
            sealed = await self._spool
            self._spool = None
            if self.upload is not None:
                await self.upload.send(sealed)

    async def submit(self, batch: bytes) -> None:
        """Hand ``batch`` to both lanes once each has finished its previous batch."""
        loop = asyncio.get_running_loop()
        if self._scan is not None:
            await self._scan
        self._scan = loop.run_in_executor(None, self.scanner.feed, batch)
        await self._forward_sealed()
        self._spool = loop.run_in_executor(None, self._seal, batch)

    async def drain(self, *, forward: bool = True) -> None:
        """Wait for both lanes (also after an error: no thread may outlive the spool).

        Args:
            forward: pass the last sealed batch on to the upload. False after
                an error, a timeout or a cancellation: then nothing more goes
                to the twin (which may be the reason for the error).
        """
        pending = [f for f in (self._scan, self._spool) if f is not None]
        try:
            if self._spool is not None and self._scan is not None:
                await asyncio.gather(self._scan, self._spool)
            if forward:
                await self._forward_sealed()
        finally:
            self._scan = self._spool = None
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


#: A body must reach this size before its payload is streamed to the twin while
#: classifying: below it, one extra request costs more latency than it saves.
PIPELINE_MIN_BYTES = 256 * 1024


async def receive(
    state: EgressState,
    request: web.Request,
    transfer: Transfer,
    policy: CompiledPolicy,
    route: Route,
) -> tuple[ScanSummary, SpoolInfo, PayloadUpload | None]:
    """Stream the body into the classifier and the encrypted spool (and maybe the twin)."""
    config = state.config
    # Windows are reserved from the process-wide budget: a transfer that finds
    # it held by others raises DecoderBusy from a feed (503 + Retry-After,
    # recorded failed, nothing forwarded); scanner.close() gives it all back.
    scanner = Scanner(
        policy.detectors,
        state.services.secret,
        budget=state.decoder_budget,
        chance_words=policy.chance_words,
    )
    # The transfer's name crosses the border too (it names the delivered file);
    # one holding a value is never shown back (status API, held metadata).
    transfer.name_clean = not scanner.scan_name(transfer.path)
    try:
        # No I/O here: the spool file is created only if the body outgrows
        # SPOOL_MEMORY_BYTES, and then in the spool lane's worker thread
        # (open(2) with O_CREAT waits for the filesystem journal while a
        # concurrent fsync commits it: 0.7 ms on average under load).
        writer = state.spool.new_writer(transfer.id, memory_bytes=SPOOL_MEMORY_BYTES)
    except BaseException:
        scanner.close()
        raise
    lanes = _Lanes(scanner, writer, None)
    metrics = state.services.metrics
    received = 0
    chunks: list[bytes] = []
    pending = 0

    async def submit(batch: bytes) -> None:
        if lanes.upload is None and received >= PIPELINE_MIN_BYTES:
            lanes.upload = start_upload(state, transfer, route, writer)
        await lanes.submit(batch)

    try:
        try:
            while True:
                try:
                    async with asyncio.timeout(config.idle_timeout):
                        chunk = await request.content.readany()
                except TimeoutError:
                    raise Aborted("client idle timeout") from None
                except (aiohttp.ClientError, ConnectionError, aiohttp.web.HTTPException):
                    raise Aborted("client disconnected") from None
                except RequestPayloadError:
                    # Bad chunked framing mid-body (connections.py surfaces it at once).
                    raise Aborted("the request body's framing is malformed") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > config.max_body_bytes:
                    raise PayloadTooLarge(
                        f"the body exceeds the {config.max_body_bytes}-byte limit; "
                        "nothing was forwarded"
                    )
                chunks.append(chunk)
                pending += len(chunk)
                if pending >= OFFLOAD_BATCH:
                    batch = b"".join(chunks)  # the one copy a batch costs
                    chunks.clear()
                    pending = 0
                    await submit(batch)
            if request.content.exception() is not None:
                raise Aborted("client disconnected")
            tail = b"".join(chunks)
            chunks.clear()
            threaded = received > INLINE_MAX_BYTES
            if threaded:
                await submit(tail)
            else:
                # A small body: one inline step is cheaper than two thread hops.
                scanner.feed(tail)
                writer.write(tail)
        except BaseException:
            if lanes.upload is not None:
                lanes.upload.cancel()  # first: a stalled twin must not hold up the drain
            await lanes.drain(forward=False)
            raise
        await lanes.drain()
        started = time.perf_counter()
        # A footer-indexed member (Parquet, HDF5, SQLite, PDF) is read once the
        # spool is finished, through a decrypting view of it (issue 12).
        summary = None if scanner.wants_random_access else scanner.finish()
        if threaded:
            info = await asyncio.to_thread(writer.finish)
        else:
            info = writer.finish()
        upload = lanes.upload
        if upload is not None:
            upload.digest.update(writer.last_sealed)
            await upload.send(writer.last_sealed)
            if not await upload.finish():
                # The twin did not take the payload: forward the classic way later.
                log.warning("pipelined_upload_failed")
                state.track(asyncio.ensure_future(upload.discard(state.upstream_ssl)))
                upload = None
        if summary is None:
            # After the pipelined upload ended: the twin's body time-out must
            # not run while the reader works; its header still waits for the verdict.
            summary = await _finish_from_spool(scanner, info, metrics)
        metrics.classifier_seconds.inc(summary.seconds or time.perf_counter() - started)
    except BaseException:
        writer.discard()
        if lanes.upload is not None:
            state.track(asyncio.ensure_future(lanes.upload.discard(state.upstream_ssl)))
        raise
    finally:
        # hyperscan 0.9.1 frees stream memory only on an explicit close, not on
        # GC: an aborted transfer must not leak it (idempotent after finish()).
        scanner.close()
    metrics.classifier_bytes.inc(summary.size)
    metrics.transfer_bytes.labels(transfer.route, "received").inc(summary.size)
    for label, stats in summary.labels.items():
        metrics.detections.labels(label).inc(stats.count)
    return summary, info, upload


async def _finish_from_spool(scanner: Scanner, info: SpoolInfo, metrics: Metrics) -> ScanSummary:
    """Finish the scan with its random-access reader on a :class:`SpoolView` of ``info``.

    Runs in a worker thread, inside the transfer's total time-out: the verdict
    waits for it. On cancellation (time-out, shutdown) the view is closed
    first, so the reader's next read fails (a reader process reading the
    spool itself is killed once the gateway sees the view closed) and the
    thread ends before the caller closes the scanner (no thread may outlive
    what it reads). The view's counters include the chunks a reader process's
    own view read. Memory:
    the view's chunk cache (:data:`~gateway.server.spool_view.VIEW_CACHE_CHUNKS`)
    plus what the reader holds.
    """
    view = SpoolView(info)  # no I/O until the reader's first read (in the thread)
    job = asyncio.ensure_future(asyncio.to_thread(scanner.finish, view))
    try:
        summary: ScanSummary = await asyncio.shield(job)
    except BaseException:
        view.close()
        await asyncio.gather(job, return_exceptions=True)
        raise
    finally:
        view.close()
        metrics.spool_view_chunks.labels("decrypted").inc(view.chunks_decrypted)
        metrics.spool_view_chunks.labels("cached").inc(view.cache_hits)
    return summary


class Aborted(Exception):
    """The client went away or stalled; the transfer ends ``aborted``."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
