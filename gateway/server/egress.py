"""The egress role: receive, classify, decide, audit, forward (SPEC §5).

One request is one transfer, driven through :class:`~gateway.server.transfer.Transfer`:

1. **receive**: the body streams in (``readany``, awaited, so TCP backpressure
   reaches the client); each batch is fed to the classifier and sealed into the
   encrypted spool in a worker thread, so the event loop keeps serving others.
2. **decide**: inside ONE ledger transaction for the sender's organisation and
   year: read the counts, evaluate the policy (pure), append the audit record
   (durable before anything else happens) and, on allow, add the subjects.
3. **forward**: only after ``begin_forwarding`` (the zero-leak gate): header +
   spooled age payload to the twin (``encrypt: envelope``), or decrypted
   plaintext over mutual TLS (``encrypt: tls``).

Any failure before the verdict is fail-closed (nothing forwarded); any failure
after it ends the transfer ``failed`` in the audit log. A ``review`` verdict
keeps the spool (re-wrapped to the gateway's own spool key) until a compliance
officer approves or rejects it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

import aiohttp
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.audit.log import AuditLog
from gateway.audit.receipt import Receipt
from gateway.audit.records import Decision as DecisionName
from gateway.audit.records import TransferEvent, transfer_record
from gateway.classify.budget import DecoderBudget
from gateway.classify.engine import Scanner
from gateway.classify.summary import ScanSummary
from gateway.crypto.age import build_header
from gateway.crypto.keys import X25519Identity, X25519Recipient
from gateway.errors import (
    ClientError,
    Conflict,
    Forbidden,
    GatewayError,
    PayloadTooLarge,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.ledger import ledger_year
from gateway.ledger.base import LedgerUnavailable, LocalOnly, TransferEntry
from gateway.obs.metrics import Metrics
from gateway.policy.engine import CompiledPolicy, Decision, Route, TransferContext
from gateway.server.access import note
from gateway.server.auth import TokenTable, sender_identity
from gateway.server.config import RETRY_AFTER_SECONDS, EgressConfig
from gateway.server.connections import send_continue
from gateway.server.forward import (
    DestinationConflict,
    Forwarded,
    PayloadUpload,
    join_url,
    post_bytes,
    post_stream,
)
from gateway.server.notes import clean_note
from gateway.server.problem import Problem, json_response
from gateway.server.services import Services
from gateway.server.spool import (
    READ_SIZE,
    SpoolDir,
    SpoolInfo,
    SpoolWriter,
    iter_payload,
)
from gateway.server.spool_view import SpoolView
from gateway.server.transfer import TRANSFER_ID, State, Transfer, new_transfer_id

log = structlog.get_logger("gateway.egress")

#: Received bytes are handed to the worker threads in batches of at least this
#: size. Hyperscan, the cipher and hashlib release the GIL for most of a batch,
#: but every hand-off wakes a thread and moves the GIL (measured 50-300 µs on
#: a loaded 2-core host): 512 KiB keeps that to a few % of the batch's work.
#: 1 MiB measured no faster but held ~5 MB more RSS per large transfer (each
#: batch lives in several places at once: pending, both lanes, the upload).
OFFLOAD_BATCH = 512 * 1024
#: ``Retry-After`` of a transfer cut at the drain deadline: another replica (or
#: this one, restarted) can take it at once.
DRAIN_RETRY_AFTER_SECONDS = 1
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
#: Parsed route recipients kept per process: a policy names a handful, so
#: reaching this means many reloads with new keys, and the cache starts over.
RECIPIENT_CACHE = 256
#: Finished transfers remembered for ``GET /v1/transfers/{id}``; older ones are
#: answered from the audit log. 10,000 small dicts are a few MB.
RECENT_TRANSFERS = 10_000
#: Longest accepted file name (bytes, UTF-8): the common filesystem limit (ext4, XFS).
MAX_NAME_BYTES = 255
#: Headers that tell the twin who sent what under which verdict (metadata only).
H_TRANSFER = "X-Gateway-Transfer-Id"
H_SENDER = "X-Gateway-Sender"
H_ORGANISATION = "X-Gateway-Organisation"
H_RULE = "X-Gateway-Rule"
H_POLICY = "X-Gateway-Policy-Version"
H_DIRECTION = "X-Gateway-Direction"
#: The ingress twin's envelope endpoint, ``/v1/envelopes/{route}/{name}``.
ENVELOPE_PREFIX = ("v1", "envelopes")
#: The twin's endpoint for payloads streamed ahead of their header (pipelined mode).
PAYLOAD_PREFIX = ("v1", "payloads")
#: Names the pipelined payload an envelope's header belongs to.
H_PAYLOAD = "X-Gateway-Payload"
#: The transfer whose delivered file of the same name this one may replace: a
#: sender's header, passed on to the twin as it is (issue 16).
H_REPLACE = "X-Gateway-Replace"

#: What a sender is told when the ledger fails (never the file path or database host).
_LEDGER_DOWN = "the ledger is unavailable; nothing was forwarded"

_ACTION_EVENT: dict[str, TransferEvent] = {
    "allow": "allowed",
    "block": "blocked",
    "review": "review",
}


class Blocked(GatewayError):
    """A policy verdict of ``block``: 403 with the verdict fields (SPEC §5).

    Not a :class:`~gateway.errors.Forbidden`: the sender may send, but the
    policy refused this content; the problem carries rule and reason.
    """

    status = 403
    slug = "blocked"
    title = "Transfer blocked by policy"


@dataclass(slots=True)
class Held:
    """A transfer waiting for a compliance officer, with what forwarding needs.

    ``summary`` is None after a restart (only its JSON survives in the held
    metadata); ``info.file_key`` is then empty until approval unwraps it.
    """

    transfer: Transfer
    context: TransferContext
    direction: str
    decision: dict[str, Any]
    summary: ScanSummary | None
    digests: Mapping[str, frozenset[bytes]]
    info: SpoolInfo
    encrypt: str
    #: Approvals recorded so far when the rule asks for more than one
    #: (officer, comment, reference); restored from the audit records after a restart.
    approvals: list[tuple[str, str, str | None]] = field(default_factory=list)


@dataclass(slots=True)
class EgressState:
    """Everything the egress handlers share, kept under :data:`EGRESS`.

    Attributes:
        config: the egress section of the settings.
        services: audit log, ledger, metrics, secret.
        policy: callable returning the policy in force (None until one loaded).
        tokens: bearer-token table.
        spool: the encrypted spool directory.
        spool_identity: the gateway's own age identity for held reviews.
        decoder_budget: the decoder memory every transfer's classifier
            reserves its decompression windows from (503 when it is held).
        session: HTTP client for the twin and destinations.
        upstream_ssl: TLS client context for the twin and destinations
            (built once: loading certificates per transfer would cost a millisecond).
        inflight: transfers in progress.
        recent: recently seen transfers by id.
        held: transfers waiting for review by id.
        tasks: in-flight transfer tasks (for draining at shutdown).
        background: payload discards at the twin still running after the answer.
        closing: shutting down; new transfers get 503.
        cut: the drain deadline passed; transfers still running are being
            cancelled, and answer 503 with their transfer id.
        recipients: route recipients by their ``age1…`` string, parsed once
            (a Bech32 decode and checksum cost ~40 µs, twice per transfer).
    """

    config: EgressConfig
    services: Services
    policy: Callable[[], CompiledPolicy | None]
    tokens: TokenTable
    spool: SpoolDir
    spool_identity: X25519Identity
    decoder_budget: DecoderBudget
    session: aiohttp.ClientSession | None = None
    upstream_ssl: ssl.SSLContext | None = None
    inflight: int = 0
    recent: OrderedDict[str, Transfer] = field(default_factory=OrderedDict)
    held: dict[str, Held] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    background: set[asyncio.Future[Any]] = field(default_factory=set)
    closing: bool = False
    cut: bool = False
    recipients: dict[str, X25519Recipient] = field(default_factory=dict)
    #: Directory writes of each transfer not yet awaited by its request (issue 16).
    publishing: dict[str, list[asyncio.Future[Any]]] = field(default_factory=dict)
    #: Reviews a decision is being recorded on here, also those held by another
    #: replica (:func:`gateway.server.reviews.handle_review`).
    deciding: set[str] = field(default_factory=set)
    #: Directory writes that failed, the newest per transfer, retried by
    #: :func:`republish_periodically` (at most :data:`MAX_UNPUBLISHED`).
    unpublished: OrderedDict[str, tuple[TransferEntry, int]] = field(default_factory=OrderedDict)

    def track(self, future: asyncio.Future[Any]) -> None:
        """Keep a background job (a payload discard at the twin) alive until done; log failures."""
        self.background.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            self.background.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.error("background_task_failed", error_type=type(f.exception()).__name__)

        future.add_done_callback(done)

    @property
    def audit(self) -> AuditLog:
        """The audit log."""
        return self.services.audit

    def current_policy(self) -> CompiledPolicy:
        """The policy in force.

        Raises:
            Unavailable: no policy has loaded (fail closed).
        """
        policy: CompiledPolicy | None = self.policy()
        if policy is None:
            self.services.metrics.fail_closed.labels("policy").inc()
            raise Unavailable("no valid policy is loaded; nothing can be decided")
        return policy

    def release_spool(self, transfer_id: str, info: SpoolInfo | None = None) -> None:
        """Delete a transfer's spool files in a worker thread, tracked until done.

        unlink(2) frees a file's extents in the calling thread: 27 ms measured
        for 128 MB on this ext4 (mounted with ``discard``), far more for
        gigabytes; on the event loop that would stall every other transfer.
        A spool kept in memory (``info.payload``) left nothing on disk.
        """
        if info is not None and info.payload is not None:
            return
        self.track(asyncio.ensure_future(asyncio.to_thread(self.spool.release, transfer_id)))

    def recipient(self, route: Route) -> X25519Recipient:
        """The age recipient an envelope on ``route`` is encrypted to.

        Raises:
            Unavailable: the route names no recipient.
            KeyFormatError: the recipient is not a valid ``age1…`` key.
        """
        text = route.recipient
        if not text:
            raise Unavailable(f"route {route.name!r} has no recipient key for envelope mode")
        found = self.recipients.get(text)
        if found is None:
            if len(self.recipients) >= RECIPIENT_CACHE:
                self.recipients.clear()
            found = self.recipients[text] = X25519Recipient.parse(text)
        return found

    def remember(self, transfer: Transfer) -> None:
        """Keep ``transfer`` for the status API, evicting the oldest past the bound."""
        self.recent[transfer.id] = transfer
        self.recent.move_to_end(transfer.id)
        while len(self.recent) > RECENT_TRANSFERS:
            oldest, _ = self.recent.popitem(last=False)
            if oldest in self.held:  # a held review is never forgotten
                self.recent[oldest] = self.held[oldest].transfer


EGRESS = web.AppKey("egress", EgressState)


#: Unicode categories a file name may not contain: controls (Cc: C0, DEL and the
#: C1 range U+0080-U+009F, which terminals interpret), format characters (Cf: bidi
#: overrides and isolates, zero-width characters), line and paragraph separators
#: (Zl, Zp: a name that breaks a listing's lines), and lone surrogates (Cs: not
#: encodable as a file name in UTF-8).
_REFUSED_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def safe_name(raw: str) -> str:
    """Validate the file name a sender gave; it becomes a file name at the destination.

    Raises:
        ClientError: empty, a path, a dot name, control characters (C0, DEL,
            C1), format characters (Unicode category Cf: the bidi overrides
            U+202A-U+202E and isolates U+2066-U+2069 would let ``exe.csv``
            display as ``vsc.exe``), line or paragraph separators, lone
            surrogates, or too long.
    """
    name = raw
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(unicodedata.category(c) in _REFUSED_NAME_CATEGORIES for c in name)
        or name.startswith(".")
        or len(name.encode()) > MAX_NAME_BYTES
    ):
        raise ClientError(
            "the transfer path must be one file name (no '/', no leading dot, "
            f"no control or format characters, at most {MAX_NAME_BYTES} bytes)"
        )
    return name


# ---------------------------------------------------------------------------
# receive


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


def _start_upload(
    state: EgressState, transfer: Transfer, route: Route, writer: SpoolWriter
) -> PayloadUpload | None:
    """A pipelined upload for an envelope route, if configured and possible."""
    if not state.config.pipelined or route.encrypt != "envelope" or not route.recipient:
        return None
    if state.session is None:
        return None
    parts = urlsplit(route.destination)
    url = join_url(f"{parts.scheme}://{parts.netloc}", *PAYLOAD_PREFIX, transfer.id)
    header = build_header(writer.file_key, [state.recipient(route)])
    return PayloadUpload(
        state.session,
        url,
        _twin_headers(transfer, route.direction, "pending", "pending"),
        state.upstream_ssl if url.startswith("https:") else None,
        header,
        writer.nonce,
        # A twin that takes no payload bytes for as long as a sender may stay
        # silent has stalled: the transfer continues the classic way.
        stall_timeout=state.config.idle_timeout,
    )


async def _receive(
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
            lanes.upload = _start_upload(state, transfer, route, writer)
        await lanes.submit(batch)

    try:
        try:
            while True:
                try:
                    async with asyncio.timeout(config.idle_timeout):
                        chunk = await request.content.readany()
                except TimeoutError:
                    raise _Aborted("client idle timeout") from None
                except (aiohttp.ClientError, ConnectionError, aiohttp.web.HTTPException):
                    raise _Aborted("client disconnected") from None
                except RequestPayloadError:
                    # Bad chunked framing mid-body (connections.py surfaces it at once).
                    raise _Aborted("the request body's framing is malformed") from None
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
                raise _Aborted("client disconnected")
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
    first, so the reader's next read fails and the thread ends before the
    caller closes the scanner (no thread may outlive what it reads). Memory:
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


class _Aborted(Exception):
    """The client went away or stalled; the transfer ends ``aborted``."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


# ---------------------------------------------------------------------------
# verdict fields


def verdict_fields(transfer: Transfer, summary: ScanSummary, decision: Decision) -> dict[str, Any]:
    """The SPEC §5 verdict members common to every response."""
    return {
        "transfer_id": transfer.id,
        "decision": decision.action,
        "rule": decision.rule,
        "labels": {
            label: {"count": s.count, "distinct": s.distinct}
            for label, s in sorted(summary.labels.items())
        },
        "subjects": summary.subjects,
        "bytes": summary.size,
        "sha256": summary.sha256,
        "policy_version": decision.policy_version,
        # The rule's reason, allowed transfers included: allow rules carry the
        # sender's remaining duties (PIPL Art. 39 notice and consent).
        "reason": decision.reason,
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """The receipt as it appears in verdicts and ``/receipt`` (the audit log's JSON form)."""
    return receipt.to_json()


async def append_record(
    state: EgressState,
    event: TransferEvent,
    transfer: Transfer,
    *,
    direction: str,
    decision: DecisionName,
    rule: str,
    reason: str,
    policy_version: str,
    summary: ScanSummary | None = None,
    size: int | None = None,
    forwarded: Forwarded | None = None,
    recipient_key: str | None = None,
    detail: str | None = None,
    shadow: Mapping[str, str] | None = None,
    officer: str | None = None,
    comment: str | None = None,
    reference: str | None = None,
) -> Any:
    """Append one audit record; 503 (fail closed) when the log cannot take it."""
    record = transfer_record(
        event=event,
        transfer_id=transfer.id,
        sender=transfer.sender,
        organisation=transfer.organisation or None,
        route=transfer.route,
        direction=direction,
        decision=decision,
        rule=rule,
        reason=reason,
        policy_version=policy_version,
        summary=summary,
        size=size,
        ciphertext_bytes=forwarded.bytes if forwarded else None,
        ciphertext_sha256=forwarded.sha256 if forwarded else None,
        recipient_key=recipient_key,
        upstream_status=forwarded.status if forwarded else None,
        timings_us=transfer.timings_us(),
        detail=detail,
        shadow=shadow,
        officer=officer,
        comment=comment,
        reference=reference,
        justification=transfer.justification,
    )
    try:
        receipt = await state.audit.append(record)
    except GatewayError:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise
    except Exception as exc:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise Unavailable(
            "the audit log cannot be written; the transfer was not forwarded"
        ) from exc
    outcome = _OUTCOMES.get(event)
    # A four-eyes review's first approval is a `review` record naming the officer:
    # the transfer was held once, not again.
    if outcome is not None and not (event == "review" and officer is not None):
        state.services.metrics.transfer_outcomes.labels(transfer.route, outcome).inc()
    _publish(state, event, transfer, receipt, decided=event in _DECISIONS and not officer)
    return receipt


#: The records that carry a transfer's decision: the receipt the status API gives.
_DECISIONS = frozenset({"allowed", "blocked", "review"})


def _publish(
    state: EgressState, event: str, transfer: Transfer, receipt: Receipt, *, decided: bool
) -> None:
    """Tell the park's other replicas what this record made of the transfer (issue 16).

    With a PostgreSQL ledger, any replica then answers its status and receipt;
    a single gateway shares nothing (:class:`~gateway.ledger.base.LocalOnly`).
    The write runs beside the request, not inside it: a verdict record is
    appended under the organisation's ledger lock, and a second pooled
    connection taken there could wait for ever on transactions that wait for
    it. The request answers only once its writes landed (:func:`published`).
    The record is durable already: a directory that does not answer leaves
    the other replicas a step behind, it does not fail the transfer.
    """
    if isinstance(state.services.directory, LocalOnly):
        return
    status = transfer.status_json()
    status["state"] = event
    if not status["history"] or status["history"][-1]["state"] != event:
        status["history"].append({"state": event, "at": round(time.time(), 3)})
    if event == "review":
        # What the park's review queue shows an officer on any replica.
        status["organisation"] = transfer.organisation
        status["justification"] = transfer.justification
    entry = TransferEntry(
        transfer.id,
        state.services.settings.instance,
        transfer.sender,
        status,
        receipt_json(receipt) if decided else None,
    )

    async def write() -> None:
        try:
            await state.services.directory.publish_transfer(entry, receipt.index)
        except GatewayError as exc:
            log.warning("transfer_not_published", transfer_id=transfer.id, error=exc.title)
            _keep_unpublished(state, entry, receipt.index)
        else:
            waiting = state.unpublished.get(transfer.id)
            if waiting is not None and waiting[1] <= receipt.index:
                del state.unpublished[transfer.id]

    task = asyncio.ensure_future(write())
    state.track(task)
    pending = state.publishing.setdefault(transfer.id, [])
    pending.append(task)

    def landed(done: asyncio.Future[Any]) -> None:
        pending.remove(done)
        if not pending and state.publishing.get(transfer.id) is pending:
            del state.publishing[transfer.id]

    task.add_done_callback(landed)


#: The most failed directory writes a replica keeps for retrying: past it the
#: oldest are dropped (their transfers answer on this replica, from its log).
MAX_UNPUBLISHED = 10_000
#: Seconds between retries of the failed directory writes.
REPUBLISH_SECONDS = 5.0


def _keep_unpublished(state: EgressState, entry: TransferEntry, seq: int) -> None:
    """Keep a write the directory did not take, to retry; a newer one of the same transfer wins."""
    waiting = state.unpublished.get(entry.transfer_id)
    if waiting is not None and waiting[1] > seq:
        return
    state.unpublished[entry.transfer_id] = (entry, seq)
    state.unpublished.move_to_end(entry.transfer_id)
    while len(state.unpublished) > MAX_UNPUBLISHED:
        dropped, _ = state.unpublished.popitem(last=False)
        log.error("transfer_publish_dropped", transfer_id=dropped)


async def republish(state: EgressState) -> int:
    """Retry the directory writes that failed, oldest first; how many landed.

    Stops at the first that fails again (the directory is still down). A
    write ordered after one already there is refused by the directory
    itself (``seq``), so a retry never undoes a newer state.
    """
    landed = 0
    for transfer_id, (entry, seq) in list(state.unpublished.items()):
        try:
            await state.services.directory.publish_transfer(entry, seq)
        except GatewayError:
            break
        if state.unpublished.get(transfer_id) == (entry, seq):
            del state.unpublished[transfer_id]
        landed += 1
    if landed:
        log.info("transfers_republished", count=landed, waiting=len(state.unpublished))
    return landed


async def republish_periodically(state: EgressState) -> None:
    """Run :func:`republish` every :data:`REPUBLISH_SECONDS` while writes wait."""
    while True:
        await asyncio.sleep(REPUBLISH_SECONDS)
        if state.unpublished:
            await republish(state)


#: How long a request waits for its transfer's directory writes before answering.
PUBLISH_WAIT_SECONDS = 5.0


async def published(state: EgressState, transfer_id: str) -> None:
    """Wait (bounded) until what was recorded of the transfer is visible to the other replicas."""
    tasks = list(state.publishing.get(transfer_id, ()))
    if tasks:
        await asyncio.wait(tasks, timeout=PUBLISH_WAIT_SECONDS)


#: The records that end a transfer, or hold it, as ``gateway_transfer_outcomes_total`` names them.
_OUTCOMES: dict[str, str] = {
    "delivered": "delivered",
    "blocked": "blocked",
    "review": "held",
    "rejected": "rejected",
    "failed": "failed",
    "aborted": "aborted",
}


def _shadow_matches(state: EgressState, transfer: Transfer, decision: Decision) -> dict[str, str]:
    """The shadow rules that matched, each with the action it would have taken: counted
    (``gateway_shadow_matches_total``), logged, and kept for the verdict's record."""
    matched: dict[str, str] = {
        step.rule: step.action for step in decision.trace if step.mode == "shadow" and step.matched
    }
    for rule_id, action in matched.items():
        state.services.metrics.shadow_matches.labels(rule_id, action).inc()
        log.info("shadow_matched", rule=rule_id, would=action, decided=decision.action)
    return matched


async def record_end(
    state: EgressState,
    transfer: Transfer,
    final: Literal[State.ABORTED, State.FAILED],
    why: str,
    *,
    direction: str,
    policy_version: str,
    size: int | None,
    decision: DecisionName = "block",
    rule: str = "gateway.fail-closed",
    summary: ScanSummary | None = None,
) -> None:
    """End a transfer aborted/failed and log it; a log failure here is only logged."""
    transfer.end(final)
    event: TransferEvent = "aborted" if final is State.ABORTED else "failed"
    try:
        await append_record(
            state,
            event,
            transfer,
            direction=direction,
            decision=decision,
            rule=rule,
            reason=why,
            policy_version=policy_version,
            summary=summary,
            size=size,
            detail=why,
        )
    except GatewayError:
        log.error("audit_end_record_failed", transfer_id=transfer.id, state=final.value)
    log.warning("transfer_" + event, transfer_id=transfer.id, why=why)


# ---------------------------------------------------------------------------
# forward


def envelope_url(destination: str, route: str, name: str) -> str:
    """Where an envelope goes: ``destination/name``, or the twin's default endpoint.

    A destination with a path (``https://twin:9443/v1/envelopes/sz-lab``)
    names the endpoint itself; a bare twin address (``https://twin:9443``)
    gets the ingress's standard ``/v1/envelopes/{route}``.
    """
    if urlsplit(destination).path.strip("/"):
        return join_url(destination, name)
    return join_url(destination, *ENVELOPE_PREFIX, route, name)


def _twin_headers(transfer: Transfer, direction: str, rule: str, version: str) -> dict[str, str]:
    headers = {
        H_TRANSFER: transfer.id,
        H_SENDER: transfer.sender,
        H_ORGANISATION: transfer.organisation,
        H_RULE: rule,
        H_POLICY: version,
        H_DIRECTION: direction,
        "Content-Type": "application/octet-stream",
    }
    if transfer.replaces is not None:
        headers[H_REPLACE] = transfer.replaces
    return headers


async def _forward(
    state: EgressState,
    transfer: Transfer,
    route: Route,
    info: SpoolInfo,
    encrypt: str,
    rule: str,
    version: str,
    upload: PayloadUpload | None = None,
    header: asyncio.Future[bytes] | None = None,
) -> tuple[Forwarded, str | None]:
    """Send a released transfer; returns what went out and the recipient fingerprint.

    ``header`` is the route recipient's age header if it was built ahead
    (while the verdict record was being made durable).
    """
    transfer.begin_forwarding()
    assert state.session is not None
    url = envelope_url(route.destination, route.name, transfer.path)
    headers = _twin_headers(transfer, route.direction, rule, version)
    ssl_context = state.upstream_ssl if url.startswith("https:") else None
    if upload is not None and encrypt == "envelope":
        # Pipelined: the twin holds the payload; the header releases it (SPEC §6).
        headers[H_PAYLOAD] = transfer.id
        released_to = state.recipient(route).fingerprint()
        sent = await post_bytes(
            state.session,
            url,
            upload.header,
            headers=headers,
            ssl_context=ssl_context,
            method="POST",
        )
        return Forwarded(sent.status, upload.bytes, upload.digest.hexdigest()), released_to
    # A small spool (kept in memory) goes out as one body with a Content-Length:
    # headers and body leave in one TLS write and reach the twin in one read,
    # where chunked streaming costs a write, a TLS record and a wake-up per
    # piece (header, payload, terminator) on both sides. A spool file streams.
    body: bytes | None = None
    blocks: Iterator[bytes] = iter(())
    fingerprint: str | None
    if encrypt == "tls":
        prefix, method, fingerprint = b"", "PUT", None
        if info.payload is not None:
            body = b"".join(info.plaintext_blocks())
        else:
            blocks = info.plaintext_blocks()
    else:
        recipient = state.recipient(route)
        if header is not None:
            prefix = await header
        else:
            prefix = build_header(info.file_key, [recipient])  # one X25519 exchange: ~0.1 ms
        method, fingerprint = "POST", recipient.fingerprint()
        if info.payload is not None:
            body = prefix + info.payload
        else:
            blocks = iter_payload(info.path)
    if body is not None:
        sent = await post_bytes(
            state.session, url, body, headers=headers, ssl_context=ssl_context, method=method
        )
    else:
        sent = await post_stream(
            state.session,
            url,
            blocks,
            prefix=prefix,
            threaded=info.payload_bytes > READ_SIZE,
            headers=headers,
            ssl_context=ssl_context,
            method=method,
        )
    return sent, fingerprint


# ---------------------------------------------------------------------------
# the transfer pipeline


#: The header a sender says what a transfer is for in (shown to the reviewer, recorded).
JUSTIFICATION_HEADER: Final = "X-Gateway-Justification"


def _justification(request: web.Request, state: EgressState, policy: CompiledPolicy) -> str | None:
    """The sender's justification header, checked (percent-encoded UTF-8), or None.

    Raises:
        ClientError: not a clean text (see :func:`gateway.server.notes.clean_note`).
    """
    raw = request.headers.get(JUSTIFICATION_HEADER)
    if raw is None:
        return None
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ClientError(f"{JUSTIFICATION_HEADER}: percent-encoded UTF-8") from None
    return clean_note(text, "justification", policy.detectors, state.services.secret)


async def run_transfer(request: web.Request, route_name: str, raw_name: str) -> web.Response:
    """Drive one transfer from the first body byte to its verdict response."""
    state = request.app[EGRESS]
    if state.closing:
        raise Unavailable("the gateway is shutting down; retry on another replica")
    policy = state.current_policy()
    identity = sender_identity(request, state.tokens)
    context = policy.context(route_name, identity)
    name = safe_name(raw_name)
    justification = _justification(request, state, policy)
    replaces = request.headers.get(H_REPLACE)
    if replaces is not None and not TRANSFER_ID.fullmatch(replaces):
        raise ClientError(f"{H_REPLACE}: the transfer id of the file to replace (t_…)")
    length = request.content_length
    if length is not None and length > state.config.max_body_bytes:
        raise PayloadTooLarge(
            f"the body ({length} bytes) exceeds the {state.config.max_body_bytes}-byte limit"
        )
    if state.inflight >= state.config.max_concurrent:
        raise Problem(
            Unavailable,
            "too many transfers in progress; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if not state.audit.healthy:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise Unavailable("the audit log is not writable; nothing can be decided")
    state.spool.check_space()  # one statvfs(2)
    # Only now, with sender, route, name, size and capacity checked, is the
    # client invited to send its body (RFC 9110 §10.1.1).
    await send_continue(request)
    transfer = Transfer(
        id=new_transfer_id(),
        route=route_name,
        path=name,
        sender=identity,
        organisation=context.sender.organisation,
        justification=justification,
        replaces=replaces,
    )
    note(request, transfer_id=transfer.id)
    state.remember(transfer)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    state.inflight += 1
    state.services.metrics.inflight.inc()
    try:
        with structlog.contextvars.bound_contextvars(transfer_id=transfer.id):
            log.info("transfer_started", route=route_name, sender=identity)
            try:
                async with asyncio.timeout(state.config.total_timeout):
                    return await _pipeline(state, request, transfer, policy, context)
            except asyncio.CancelledError:
                if not state.cut or task is None:
                    raise
                # Cut at the drain deadline (SIGTERM): an answer, not a reset. The
                # finally below records it aborted before the answer is sent.
                task.uncancel()
                raise Problem(
                    Unavailable,
                    "the gateway is shutting down and cut this transfer at its drain "
                    "deadline; nothing was delivered: send it again",
                    {"transfer_id": transfer.id},
                    headers={"Retry-After": str(DRAIN_RETRY_AFTER_SECONDS)},
                ) from None
            except TimeoutError:
                if transfer.verdict:
                    # Timed out while forwarding (SPEC §5): 504 with the verdict.
                    raise Problem(
                        UpstreamTimeout,
                        "the transfer exceeded the gateway's time limit while forwarding; "
                        "nothing was delivered",
                        dict(transfer.verdict),
                    ) from None
                raise Problem(
                    Unavailable,
                    "the transfer exceeded the gateway's time limit; nothing was forwarded",
                    {"transfer_id": transfer.id},
                ) from None
    finally:
        state.inflight -= 1
        state.services.metrics.inflight.dec()
        if task is not None:
            state.tasks.discard(task)
        if not transfer.state.final and transfer.id not in state.held:
            # Cancelled (shutdown deadline) or an unexpected error: never leave it open.
            await record_end(
                state,
                transfer,
                State.ABORTED if transfer.state is State.RECEIVING else State.FAILED,
                "gateway shutdown or internal error",
                direction=context.route.direction,
                policy_version=policy.version,
                size=None,
            )
            state.release_spool(transfer.id)
        # Answer only once the other replicas can see what was recorded.
        await published(state, transfer.id)


async def _pipeline(
    state: EgressState,
    request: web.Request,
    transfer: Transfer,
    policy: CompiledPolicy,
    context: TransferContext,
) -> web.Response:
    route = context.route
    metrics = state.services.metrics
    try:
        summary, info, upload = await _receive(state, request, transfer, policy, context.route)
    except _Aborted as exc:
        await record_end(
            state,
            transfer,
            State.ABORTED,
            exc.why,
            direction=route.direction,
            policy_version=policy.version,
            size=None,
        )
        raise Problem(
            ClientError, f"{exc.why}; nothing was forwarded", {"transfer_id": transfer.id}
        ) from None
    except GatewayError as exc:
        final: Literal[State.ABORTED, State.FAILED] = (
            State.ABORTED if isinstance(exc, ClientError) else State.FAILED
        )
        await record_end(
            state,
            transfer,
            final,
            exc.title.lower(),
            direction=route.direction,
            policy_version=policy.version,
            size=None,
        )
        raise Problem(type(exc), exc.detail, {"transfer_id": transfer.id}) from None
    except Exception as exc:  # noqa: BLE001 - any classifier/cipher bug fails closed
        # A classifier or cipher failure must never forward: fail closed.
        log.error("receive_failed", error_type=type(exc).__name__)
        await record_end(
            state,
            transfer,
            State.FAILED,
            "classifier or spool failure",
            direction=route.direction,
            policy_version=policy.version,
            size=None,
        )
        raise Problem(
            GatewayError,
            "the gateway could not classify the body; nothing was forwarded",
            {"transfer_id": transfer.id},
        ) from None
    transfer.advance(State.CLASSIFIED)
    transfer.mark("receive")
    # What the policy judges (and holds for review): chance-level findings
    # counted where the route or the label asks (chance: count).
    summary = policy.with_chance(summary, route)
    header: asyncio.Future[bytes] | None = None
    if upload is None and route.encrypt == "envelope" and route.recipient:
        # The envelope header (one X25519 exchange, ~0.4 ms) is built in a
        # worker thread while the verdict record is fsynced, off the latency
        # path. It wraps the file key for the recipient but never leaves the
        # process unless the verdict allows: building it early releases nothing.
        header = asyncio.ensure_future(
            asyncio.to_thread(build_header, info.file_key, [state.recipient(route)])
        )
    try:
        decision, receipt = await _decide(state, transfer, policy, context, summary, info)
    except GatewayError as exc:
        state.release_spool(transfer.id, info)
        if upload is not None:
            state.track(asyncio.ensure_future(upload.discard(state.upstream_ssl)))
        log.error("decision_failed", why=exc.title)
        await record_end(
            state,
            transfer,
            State.FAILED,
            exc.title.lower(),
            direction=route.direction,
            policy_version=policy.version,
            size=summary.size,
            summary=summary,
        )
        raise Problem(type(exc), exc.detail, {"transfer_id": transfer.id}) from None
    transfer.mark("decide")
    encrypt = decision.encrypt or route.encrypt
    if upload is not None and not (decision.action == "allow" and encrypt == "envelope"):
        # Not released: the twin drops the ciphertext it holds (it never got a key).
        state.track(asyncio.ensure_future(upload.discard(state.upstream_ssl)))
        upload = None
    fields = verdict_fields(transfer, summary, decision)
    fields["receipt"] = receipt_json(receipt)
    transfer.verdict = dict(fields)
    metrics.transfers.labels(transfer.route, route.direction, decision.action, decision.rule).inc()
    metrics.transfer_duration.labels(transfer.route, decision.action).observe(
        time.monotonic() - transfer.started
    )
    if decision.action == "block":
        metrics.transfer_bytes.labels(transfer.route, "blocked").inc(summary.size)
        log.info("transfer_blocked", rule=decision.rule)
        raise Problem(Blocked, decision.reason, {**fields, "reason": decision.reason})
    if decision.action == "review":
        log.info("transfer_held", rule=decision.rule)
        status_url = f"/v1/transfers/{transfer.id}"
        hours = state.config.review_expiry / 3600
        body = {
            **fields,
            "reason": decision.reason,
            "state": State.HELD.value,
            "status_url": status_url,
            "next": (
                "held, encrypted, for a compliance officer, who approves it (it is then "
                f"delivered) or rejects it (it is deleted); unanswered after {hours:g} h it "
                f"is rejected as expired. GET {status_url} shows where it is."
            ),
        }
        response = json_response(body, status=202)
        response.headers["Location"] = status_url
        return response
    return await deliver(
        state,
        transfer,
        route,
        info,
        summary,
        encrypt,
        fields,
        decision.rule,
        decision.reason,
        decision.policy_version,
        "allow",
        upload,
        header,
    )


async def _decide(
    state: EgressState,
    transfer: Transfer,
    policy: CompiledPolicy,
    context: TransferContext,
    summary: ScanSummary,
    info: SpoolInfo,
) -> tuple[Decision, Receipt]:
    """Evaluate and record atomically under the organisation's ledger lock.

    The verdict's record is appended inside the transaction. When the
    transaction added subjects it commits only once that record is durable;
    when it wrote nothing, its commit (a lock release) overlaps the record's
    fsync. Either way this returns only with the record durable.
    """
    ledger = state.services.ledger
    # Only directions the policy counts (2024 Provisions: exports, sz->hk) reach the ledger.
    digests = policy.ledger_digests(summary, context.route.direction)
    year = ledger_year()
    appending: asyncio.Future[Receipt] | None = None
    try:
        async with ledger.transaction(context.sender.organisation, year) as tx:
            counts = {c: await tx.count(c, d) for c, d in digests.items()}
            decision = policy.evaluate(context, summary, counts)
            event = _ACTION_EVENT[decision.action]
            shadow = _shadow_matches(state, transfer, decision)
            held_info: SpoolInfo | None = None
            if decision.action == "review":
                held_info = await asyncio.to_thread(
                    _hold_spool, state, transfer, info, summary, decision, digests
                )
            if decision.action == "block":
                transfer.advance(State.BLOCKED)
            elif decision.action == "review":
                transfer.advance(State.HELD)
            else:
                transfer.advance(State.ALLOWED)
            totals: dict[str, int] = {}
            if decision.action == "allow":
                # Recorded inside the transaction: if the audit append below
                # fails, the transaction rolls back and nothing was counted.
                # A category with no subjects is not written at all: a
                # transaction without writes commits without an fsync (the
                # common clean transfer keeps one durability point less).
                for category, values in digests.items():
                    if values:
                        totals[category] = await tx.add(category, values)
            appending = asyncio.ensure_future(
                append_record(
                    state,
                    event,
                    transfer,
                    direction=context.route.direction,
                    decision=decision.action,
                    rule=decision.rule,
                    reason=decision.reason,
                    policy_version=decision.policy_version,
                    summary=summary,
                    shadow=shadow,
                )
            )
            if totals:
                # Subjects were added: the record is durable before they are
                # committed (a failed append rolls them back: nothing counted).
                receipt = await appending
        if not totals:
            # Nothing was written: the commit only released the lock, so it
            # ran while the record was being fsynced (a thread round trip
            # less on the latency path). The record still precedes the verdict.
            receipt = await appending
        for category, total in totals.items():
            state.services.metrics.ledger_subjects.labels(
                context.sender.organisation, category
            ).set(total)
    except LedgerUnavailable as exc:
        # Its detail names the database file or host: for the log, not the client.
        state.services.metrics.fail_closed.labels("ledger").inc()
        log.error("ledger_failed", error_type=type(exc).__name__)
        raise Unavailable(_LEDGER_DOWN) from None
    except GatewayError:
        raise
    except Exception as exc:
        state.services.metrics.fail_closed.labels("ledger").inc()
        log.error("ledger_failed", error_type=type(exc).__name__)
        raise Unavailable(_LEDGER_DOWN) from exc
    finally:
        if appending is not None and not appending.done():
            # The commit failed (or we were cancelled) while the record was
            # on its way: it may still be logged; its outcome is only logged.
            state.track(appending)
    if decision.action == "block":
        state.release_spool(transfer.id, info)
    if held_info is not None:
        state.held[transfer.id] = Held(
            transfer=transfer,
            context=context,
            direction=context.route.direction,
            decision=_decision_meta(decision),
            summary=summary,
            digests=digests,
            info=held_info,
            encrypt=decision.encrypt or context.route.encrypt,
        )
    return decision, receipt


def _decision_meta(decision: Decision) -> dict[str, Any]:
    return {
        "action": decision.action,
        "rule": decision.rule,
        "reason": decision.reason,
        "encrypt": decision.encrypt,
        "policy_version": decision.policy_version,
        "approvals": decision.approvals,
    }


def _hold_spool(
    state: EgressState,
    transfer: Transfer,
    info: SpoolInfo,
    summary: ScanSummary,
    decision: Decision,
    digests: Mapping[str, frozenset[bytes]],
) -> SpoolInfo:
    """Re-wrap the spool's file key to the gateway's own key and keep it for review."""
    header = build_header(info.file_key, [state.spool_identity.recipient])
    meta = {
        "transfer_id": transfer.id,
        "route": transfer.route,
        "path": transfer.path,
        "name_clean": transfer.name_clean,
        "justification": transfer.justification,
        "sender": transfer.sender,
        "organisation": transfer.organisation,
        "created_at": transfer.created_at,
        "plaintext_bytes": info.plaintext_bytes,
        "payload_bytes": info.payload_bytes,
        "summary": summary.to_json(),
        # Keyed hashes only (HMAC with the gateway secret), for the ledger at
        # approval: per category as the policy of the day counted them, and per
        # label (with the cap flag), so that an approval after a restart counts
        # exactly as the policy in force would (reviews._ledger_digests).
        "digests": {c: sorted(d.hex() for d in v) for c, v in digests.items()},
        "label_digests": {
            label: sorted(d.hex() for d in v) for label, v in summary.digests.items()
        },
        "distinct_capped": summary.distinct_capped,
        "decision": _decision_meta(decision),
    }
    # The metadata names the file: encrypted to the spool key like the payload.
    return state.spool.hold(info, header, meta, state.spool_identity.recipient)


async def deliver(
    state: EgressState,
    transfer: Transfer,
    route: Route,
    info: SpoolInfo,
    summary: ScanSummary | None,
    encrypt: str,
    fields: dict[str, Any],
    rule: str,
    reason: str,
    version: str,
    decision: DecisionName,
    upload: PayloadUpload | None = None,
    header: asyncio.Future[bytes] | None = None,
) -> web.Response:
    """Forward an allowed/approved transfer and record the outcome.

    ``header``: the route recipient's age header, if built ahead (see :func:`_forward`).
    """
    metrics = state.services.metrics

    async def end(final: Literal[State.ABORTED, State.FAILED], why: str) -> None:
        """Nothing was delivered: release the spool and record how it ended."""
        state.release_spool(transfer.id, info)
        state.held.pop(transfer.id, None)
        await record_end(
            state,
            transfer,
            final,
            why,
            direction=route.direction,
            policy_version=version,
            size=fields.get("bytes"),
            decision=decision,
            rule=rule,
        )

    try:
        sent, recipient_fp = await _forward(
            state, transfer, route, info, encrypt, rule, version, upload, header
        )
    except asyncio.CancelledError:
        # The drain deadline stopped it mid-forward (the gateway's doing, not the
        # destination's), or the transfer's own time limit ran out on a slow twin.
        if state.cut:
            await end(State.ABORTED, "gateway shutdown while forwarding")
        else:
            metrics.upstream_errors.labels(transfer.route, "error").inc()
            await end(State.FAILED, "upstream error")
        raise
    except DestinationConflict as exc:
        # The destination kept its file of that name: the sender's to resolve,
        # not an upstream failure (no upstream-error metric, no alert).
        await end(State.FAILED, "the destination holds a file of that name")
        how = (
            f"; to replace it on purpose, push again with {H_REPLACE}: {exc.existing}"
            if exc.existing
            else ""
        )
        existing = {"existing_transfer_id": exc.existing} if exc.existing else {}
        raise Problem(
            Conflict, f"{exc.detail}; nothing was replaced{how}", {**fields, **existing}
        ) from None
    except UpstreamError as exc:
        kind = "timeout" if exc.status == 504 else "error"
        metrics.upstream_errors.labels(transfer.route, kind).inc()
        await end(State.FAILED, "upstream " + kind)
        raise Problem(type(exc), f"{exc.detail}; nothing was delivered", fields) from None
    except Exception:
        await end(State.FAILED, "forwarding failure")
        raise
    transfer.mark("forward")
    state.release_spool(transfer.id, info)
    state.held.pop(transfer.id, None)
    metrics.transfer_bytes.labels(transfer.route, "forwarded").inc(sent.bytes)
    transfer.advance(State.DELIVERED)
    fields["upstream_status"] = sent.status
    # SPEC §7: the delivery record is durable before the sender hears 201, so
    # a delivered transfer's trail never ends at ``allowed`` (one fsync on
    # the answer's latency; see docs/running.md for the measured cost).
    try:
        await append_record(
            state,
            "delivered",
            transfer,
            direction=route.direction,
            decision=decision,
            rule=rule,
            reason=reason,
            policy_version=version,
            summary=summary,
            size=fields.get("bytes"),
            forwarded=sent,
            recipient_key=recipient_fp,
        )
    except GatewayError as exc:
        # Delivered, but its record is missing: the log marks itself unhealthy
        # and no new transfer is accepted; the sender must not read success.
        log.error("audit_delivered_record_failed", error=exc.title)
        raise Problem(
            Unavailable,
            "the transfer was delivered but its delivery record could not be written",
            fields,
        ) from None
    transfer.verdict = dict(fields)
    log.info("transfer_delivered", upstream_status=sent.status)
    return json_response(fields, status=201)


# ---------------------------------------------------------------------------
# handlers


async def handle_transfer(request: web.Request) -> web.StreamResponse:
    """``PUT|POST /v1/transfers/{route}/{path}``."""
    return await run_transfer(request, request.match_info["route"], request.match_info["path"])


#: RFC 9110 §4.2: the port a URI without one means.
_DEFAULT_PORTS = {"http": 80, "https": 443}


async def handle_forward_proxy(request: web.Request) -> web.StreamResponse:
    """A plain-HTTP proxy request (absolute URI): a transfer on the route it names.

    The route is the one whose destination has the request's host and port
    and whose destination path is the longest prefix of the request's
    directory (``http://twin:9443/v1/envelopes/sz-lab/data.csv`` is route
    ``sz-lab``; a bare ``http://twin:9443/data.csv`` needs a route whose
    destination is the bare twin address). The last path segment is the file name.

    Raises:
        Unauthenticated: no valid sender token (checked before any route lookup).
        Forbidden: the host and port are not any route's destination (SPEC §5: 403).
        ClientError: a malformed target, or several routes fit equally well.
    """
    state = request.app[EGRESS]
    policy = state.current_policy()
    # Authenticate first: an unauthenticated client learns nothing about which
    # hosts are routes (401 for every host, known or not).
    sender_identity(request, state.tokens)
    target = urlsplit(request.raw_path)
    try:
        port = target.port or _DEFAULT_PORTS.get(target.scheme)
    except ValueError:
        raise ClientError("the proxy request's target has a malformed port") from None
    host = (target.hostname or "").lower()
    if not host or port is None:
        raise ClientError("the proxy request's target must be an http(s) URL with a host")
    directory, _, last = target.path.rpartition("/")
    directory = directory.strip("/")
    best: list[Route] = []
    best_length = -1
    for route in policy.routes.values():
        dest = urlsplit(route.destination)
        if (dest.hostname or "").lower() != host:
            continue
        # Effective ports: a target without a port means its scheme's default
        # port, which must be the destination's (explicit or by its scheme).
        if (dest.port or _DEFAULT_PORTS.get(dest.scheme)) != port:
            continue
        prefix = dest.path.strip("/")
        if prefix and directory != prefix and not directory.startswith(prefix + "/"):
            continue
        if len(prefix) > best_length:
            best, best_length = [route], len(prefix)
        elif len(prefix) == best_length:
            best.append(route)
    if not best:
        # Not echoed: the host is the client's text and may hold an identifier.
        raise Forbidden("the target host is not the destination of any route")
    if len(best) > 1:
        names = ", ".join(sorted(r.name for r in best))
        raise ClientError(
            f"the URL fits several routes ({names}); use /v1/transfers/{{route}}/{{name}}"
        )
    return await run_transfer(request, best[0].name, unquote(last))
