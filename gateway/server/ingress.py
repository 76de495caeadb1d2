"""The ingress role: accept age envelopes from the twin and deliver them locally (SPEC §6).

The listener requires a client certificate from the other park's CA (mutual
TLS, enforced by the SSL context), and every handler then checks that it is
the pinned twin's (``ingress.twin_names`` and ``twin_spki``, :class:`~gateway.server.auth.TwinPin`):
that CA may sign research senders' certificates too, and they must not reach
the ingress past their own park's classifier, policy, ledger and audit.
Each envelope is decrypted as its chunks arrive, but nothing is delivered
until the final chunk has verified:

- ``file://DIR``: verified plaintext goes to an unnamed temporary file in
  ``DIR`` (or, without ``O_TMPFILE``, a part file in a staging directory
  beside it: :mod:`gateway.server.inbox`); after ``finish()`` verified the
  last chunk it is fsynced while its ``delivered`` record is appended (the
  two durability waits overlap), and only once both are durable is it
  linked to ``DIR/<name>``, never over an existing file (409). A truncated
  or altered envelope, a record that cannot be written, or a crash leaves
  no file in ``DIR``; a crash between the record and the link leaves a
  record without a file, the safe direction.
- ``https://…``: the ciphertext is spooled while every chunk is verified; only
  after the final chunk verified is it decrypted again and streamed to the
  destination over mutual TLS. The destination never sees a byte of an
  envelope that would not verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.audit.records import RecordError, TransferEvent, transfer_record
from gateway.crypto.age import AgeDecryptor
from gateway.crypto.errors import AgeError
from gateway.crypto.keys import X25519Identity
from gateway.errors import (
    ClientError,
    Conflict,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UpstreamTimeout,
)
from gateway.server.access import note
from gateway.server.auth import TwinPin
from gateway.server.config import RETRY_AFTER_SECONDS, IngressConfig
from gateway.server.connections import send_continue
from gateway.server.destinations.twin import (
    H_DIRECTION,
    H_ORGANISATION,
    H_PAYLOAD,
    H_POLICY,
    H_REPLACE,
    H_RULE,
    H_SENDER,
    H_TRANSFER,
)
from gateway.server.egress import safe_name
from gateway.server.forward import Forwarded, join_url, post_stream
from gateway.server.inbox import (
    FileDrop,
    delivered_by,
    delivered_for,
    inbox_path,
    may_replace,
    open_drop,
)
from gateway.server.problem import Problem, json_response
from gateway.server.receive import OFFLOAD_BATCH
from gateway.server.services import Services
from gateway.server.spool import READ_SIZE, SpoolFull
from gateway.server.transfer import TRANSFER_ID, new_transfer_id

log = structlog.get_logger("gateway.ingress")

T = TypeVar("T")

#: Spooled payloads of pipelined transfers, waiting for their header.
PAYLOAD_SUFFIX = ".payload"


@dataclass(slots=True)
class IngressState:
    """What the ingress handlers share, kept under :data:`INGRESS`.

    Attributes:
        config: the ingress section of the settings.
        services: audit log, ledger, metrics.
        identities: age identities that open envelopes.
        session: HTTP client for ``https://`` destinations.
        destination_ssl: TLS client context for ``https://`` destinations.
        inflight: envelopes being received.
        tasks: in-flight handler tasks (drained at shutdown).
        twin: the pinned twin certificate (``ingress.twin_names``, ``twin_spki``), checked
            on every envelope, payload and witness request.
        active: transfer ids of envelopes being received (a second envelope
            with the same id is a 409, not a clash of temporary files).
        claimed: inbox files being delivered; a second delivery of the same
            name is refused before it is recorded (no clobbering).
    """

    config: IngressConfig
    services: Services
    identities: list[X25519Identity]
    session: aiohttp.ClientSession | None = None
    destination_ssl: ssl.SSLContext | None = None
    inflight: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closing: bool = False
    cut: bool = False
    twin: TwinPin = field(init=False)
    active: set[str] = field(default_factory=set)
    claimed: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.twin = TwinPin(
            self.config.twin_names, self.config.twin_fingerprints, self.config.twin_spki
        )


INGRESS = web.AppKey("ingress", IngressState)


class _Sink:
    """Where verified plaintext goes while an envelope arrives (blocking: worker threads only).

    Each byte is hashed once per digest: the ciphertext here, the plaintext
    here or (for a file drop, which hashes what it writes) in the drop.

    The file drop is created by the first call that has plaintext for it (or
    by :meth:`finish`), so in a worker thread: creating a file waits for the
    filesystem journal (0.2-0.4 ms measured, more while a concurrent fsync
    commits), which must not stall the event loop, and a small envelope is
    created, written and synced in one thread trip. (An opener thread of
    its own, started as the envelope arrives, measured no faster: it waits
    for the GIL while the envelope is decrypted.)

    Args:
        decryptor: opens the envelope.
        open_drop: makes the file drop (:func:`~gateway.server.inbox.open_drop`
            with its arguments bound); None for an ``https://`` destination.
        spool: the ciphertext spool of an ``https://`` destination.
    """

    def __init__(
        self,
        decryptor: AgeDecryptor,
        open_drop: Callable[[], FileDrop] | None,
        spool: BinaryIO | None,
    ):
        self.decryptor = decryptor
        self.drop: FileDrop | None = None
        self._open_drop = open_drop
        self.spool = spool
        self._plain = hashlib.sha256() if open_drop is None else None
        self.cipher = hashlib.sha256()
        self.plain_bytes = 0
        self.cipher_bytes = 0

    def feed(self, data: bytes) -> None:
        self.hash_ciphertext(data)
        if self.spool is not None:
            self.spool.write(data)
        self._plaintext(self.decryptor.feed(data))

    def hash_ciphertext(self, data: bytes) -> None:
        """Account for ciphertext bytes (hashlib releases the GIL on large buffers)."""
        self.cipher.update(data)
        self.cipher_bytes += len(data)

    def decrypt(self, data: bytes) -> bytes:
        """Verified plaintext of ciphertext already counted by :meth:`hash_ciphertext`.

        The caller hands it to :meth:`deliver`, maybe from another thread.
        """
        if self.spool is not None:
            self.spool.write(data)
        return self.decryptor.feed(data)

    def deliver(self, plain: bytes) -> None:
        """Hash and write verified plaintext (to the file drop, if there is one)."""
        self._plaintext(plain)

    def _file_drop(self) -> FileDrop:
        """The file drop, created on first use (mkdir + open(2)).

        Raises:
            Conflict: its staged part file exists (the transfer is being delivered).
            OSError: the inbox cannot be written.
        """
        if self.drop is None:
            assert self._open_drop is not None
            self.drop = self._open_drop()
        return self.drop

    def _plaintext(self, plain: bytes) -> None:
        if not plain:
            return
        self.plain_bytes += len(plain)
        if self._open_drop is not None:
            self._file_drop().write(plain)
        elif self._plain is not None:
            self._plain.update(plain)

    def finish(self, last: bytes = b"") -> Forwarded | None:
        """Feed ``last``, verify the final chunk, and flush a file drop (made if still
        missing); the caller syncs it (:meth:`FileDrop.sync`) while its record is written."""
        if last:
            self.feed(last)
        self._plaintext(self.decryptor.finish())
        if self.spool is not None:
            self.spool.flush()
            self.spool.close()
        if self._open_drop is not None:
            # Complete, not yet visible: it is placed in the inbox only after
            # its data and its ``delivered`` record are durable (see _place).
            return self._file_drop().close_writing()
        return None

    def plain_sha256(self, dropped: Forwarded | None) -> str:
        """Hex SHA-256 of the verified plaintext (after :meth:`finish`)."""
        if dropped is not None:
            return dropped.sha256
        assert self._plain is not None
        return self._plain.hexdigest()

    def discard(self) -> None:
        """Discard the file drop and close the spool (no thread may be using them)."""
        if self.drop is not None:
            self.drop.discard()
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.close()


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; if cancelled, return only once the thread is done.

    A worker thread cannot be cancelled: the caller's cleanup (discarding the
    sink) must not race a write or a file creation still running in it.
    """
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(job)
    finally:
        if not job.done():
            await asyncio.wait([job])


async def _remove(path: Path) -> None:
    """Delete a spooled file (if there) in a worker thread, and wait for it.

    unlink(2) frees a file's extents in the calling thread: 27 ms measured for
    128 MB on this ext4 (mounted with ``discard``), far more for gigabytes; on
    the event loop that would stall every other envelope. Awaited, so the
    file is gone when the handler answers; a cancelled wait still lets the
    thread finish the unlink.
    """
    await asyncio.to_thread(_unlink_quietly, path)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _read_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(READ_SIZE):
            yield block


async def _feed_payload_file(sink: _Sink, path: Path) -> None:
    """Decrypt a pipelined payload that waited on disk for its header (SPEC §6).

    This is the only work left after the verdict, so it runs on two cores:
    one worker thread hashes the ciphertext while another decrypts, hashes
    and writes the plaintext, each reading the (page-cached) file in
    :data:`READ_SIZE` blocks: one thread hop per file rather than per block.
    (Splitting decryption and writing into a third thread measured slower:
    the queue hand-offs cost more than the overlap gains on two cores.)
    """

    def hash_file() -> None:
        for block in _read_blocks(path):
            sink.hash_ciphertext(block)

    def decrypt_file() -> None:
        for block in _read_blocks(path):
            sink.deliver(sink.decrypt(block))

    jobs = [asyncio.ensure_future(asyncio.to_thread(job)) for job in (hash_file, decrypt_file)]
    try:
        await asyncio.gather(*(asyncio.shield(job) for job in jobs))
    finally:
        # A worker thread cannot be cancelled: both end before the caller
        # discards the sink, so no write races the close of the file drop.
        await asyncio.wait(jobs)


def _decrypt_file(path: Path, identities: list[X25519Identity]) -> Iterator[bytes]:
    decryptor = AgeDecryptor(identities)
    with path.open("rb") as f:
        while True:
            block = f.read(READ_SIZE)
            if not block:
                break
            plain = decryptor.feed(block)
            if plain:
                yield plain
    last = decryptor.finish()
    if last:
        yield last


async def _request_batches(
    request: web.Request, limit: int, idle_timeout: float
) -> AsyncIterator[bytes]:
    """The request body in batches of at least OFFLOAD_BATCH bytes (the last may be short).

    Raises:
        _Abort: the twin went silent or disconnected.
        PayloadTooLarge: more than ``limit`` bytes.
    """
    pending = bytearray()
    received = 0
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            raise _Abort("twin idle timeout") from None
        except (aiohttp.ClientError, ConnectionError):
            raise _Abort("twin disconnected") from None
        except RequestPayloadError:
            raise _Abort("malformed body framing") from None
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the upload exceeds the {limit}-byte limit")
        pending += chunk
        if len(pending) >= OFFLOAD_BATCH:
            yield bytes(pending)
            pending.clear()
    if request.content.exception() is not None:
        raise _Abort("twin disconnected")
    yield bytes(pending)


def _payload_path(state: IngressState, offered: str | None) -> Path | None:
    """The spooled payload a pipelined envelope refers to (X-Gateway-Payload).

    Raises:
        NotFound: no such payload (never uploaded, or already used or discarded).
    """
    if offered is None:
        return None
    if not TRANSFER_ID.fullmatch(offered):
        raise ClientError("malformed payload id")
    path = state.config.payloads / f"{offered}{PAYLOAD_SUFFIX}"
    if not path.is_file():
        raise NotFound(f"no payload {offered!r} is waiting for its header")
    return path


async def handle_payload_put(request: web.Request) -> web.StreamResponse:
    """``PUT /v1/payloads/{id}``: spool an age payload that has no header yet (pipelined).

    The ingress cannot read it: the file key arrives only with the header,
    which the egress sends after an allow verdict (SPEC §6).
    """
    state = request.app[INGRESS]
    require_twin(request)
    transfer_id = request.match_info["id"]
    if not TRANSFER_ID.fullmatch(transfer_id):
        raise ClientError("malformed payload id")
    # The same admission as an envelope: a payload holds a slot, a socket and disk.
    if state.closing:
        raise Unavailable("the gateway is shutting down")
    _require_slot(state, transfer_id)
    config = state.config
    config.payloads.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (
        config.min_free_spool_bytes
        and shutil.disk_usage(config.payloads).free < config.min_free_spool_bytes
    ):
        raise SpoolFull("the spool disk is low on space; try again later")
    path = config.payloads / f"{transfer_id}{PAYLOAD_SUFFIX}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(f"payload {transfer_id!r} exists already") from None
    await send_continue(request)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    state.inflight += 1
    state.services.metrics.inflight.inc()
    size = 0
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as f:
            try:
                async for batch in _request_batches(
                    request, config.max_body_bytes, config.idle_timeout
                ):
                    size += len(batch)
                    await asyncio.to_thread(f.write, batch)
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
    except _Abort as exc:
        # The twin went away or went silent: nothing is kept, nothing to record
        # (the egress records the transfer; its envelope will find no payload).
        log.warning("payload_aborted", transfer_id=transfer_id, why=exc.why)
        raise Problem(
            ClientError, f"{exc.why}; the payload was discarded", {"transfer_id": transfer_id}
        ) from None
    finally:
        state.inflight -= 1
        state.services.metrics.inflight.dec()
        if task is not None:
            state.tasks.discard(task)
    return json_response({"transfer_id": transfer_id, "bytes": size}, status=201)


async def handle_payload_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/payloads/{id}``: the verdict was not allow; drop the ciphertext."""
    state = request.app[INGRESS]
    require_twin(request)
    transfer_id = request.match_info["id"]
    if not TRANSFER_ID.fullmatch(transfer_id):
        raise ClientError("malformed payload id")
    # In a worker thread: unlinking a large file would stall the loop (see _remove).
    await asyncio.to_thread(
        (state.config.payloads / f"{transfer_id}{PAYLOAD_SUFFIX}").unlink, missing_ok=True
    )
    return web.Response(status=204)


def sweep_payloads(directory: Path, older_than: float) -> int:
    """Delete payloads whose header never came (egress crashed or blocked); return count."""
    removed = 0
    cutoff = time.time() - older_than
    for path in directory.glob(f"*{PAYLOAD_SUFFIX}"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def require_twin(request: web.Request) -> None:
    """Refuse any peer but the pinned twin gateway (401 without a certificate, else 403).

    The pin is checked on the certificate of this very TLS connection (name
    and public key), so every request on it is the twin's or none is.
    """
    request.app[INGRESS].twin.check(request)


def _meta(request: web.Request, name: str) -> str:
    value = request.headers.get(name, "")
    return value if 0 < len(value) <= 256 and value.isprintable() else "unknown"


def _require_slot(state: IngressState, transfer_id: str) -> None:
    """503 with Retry-After when ``max_concurrent`` envelopes and payloads are in progress."""
    if state.inflight >= state.config.max_concurrent:
        raise Problem(
            Unavailable,
            "too many envelopes in progress; retry later",
            {"transfer_id": transfer_id},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


async def handle_envelope(request: web.Request) -> web.StreamResponse:
    """``POST /v1/envelopes/{route}/{path}``: receive, verify, deliver one envelope."""
    require_twin(request)
    state = request.app[INGRESS]
    if state.closing:
        raise Unavailable("the gateway is shutting down")
    route = request.match_info["route"]
    destination = state.config.deliver.get(route)
    if destination is None:
        raise NotFound("no local destination for this route")  # not echoed: the URL's text
    name = safe_name(request.match_info["path"])
    replaces = request.headers.get(H_REPLACE)
    if replaces is not None and not TRANSFER_ID.fullmatch(replaces):
        raise ClientError(f"{H_REPLACE}: a transfer id (t_ and 32 hex digits)")
    offered = request.headers.get(H_TRANSFER, "")
    transfer_id = offered if TRANSFER_ID.fullmatch(offered) else new_transfer_id()
    note(request, transfer_id=transfer_id)
    if transfer_id in state.active:
        # Not recorded: the id's history belongs to the envelope in progress.
        raise Problem(
            Conflict,
            "an envelope with this transfer id is in progress",
            {"transfer_id": transfer_id},
        )
    _require_slot(state, transfer_id)
    if not state.services.audit.healthy:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise Problem(Unavailable, "the audit log is not writable", {"transfer_id": transfer_id})
    await send_continue(request)  # checked: now the body may come (RFC 9110 §10.1.1)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    state.active.add(transfer_id)
    state.inflight += 1
    state.services.metrics.inflight.inc()
    started = time.monotonic()
    meta = {
        "sender": _meta(request, H_SENDER),
        "organisation": _meta(request, H_ORGANISATION),
        "rule": _meta(request, H_RULE),
        "policy_version": _meta(request, H_POLICY),
        "direction": _meta(request, H_DIRECTION),
    }
    try:
        with structlog.contextvars.bound_contextvars(transfer_id=transfer_id):
            return await _receive_and_deliver(
                state, request, transfer_id, route, name, destination, meta, started, replaces
            )
    finally:
        state.active.discard(transfer_id)
        state.inflight -= 1
        state.services.metrics.inflight.dec()
        if task is not None:
            state.tasks.discard(task)


async def _audit(
    state: IngressState,
    event: TransferEvent,
    transfer_id: str,
    route: str,
    meta: dict[str, str],
    started: float,
    *,
    size: int,
    sent: Forwarded | None = None,
    ciphertext: tuple[int, str] | None = None,
    detail: str | None = None,
    plain_sha256: str | None = None,
) -> Any:
    try:
        record = transfer_record(
            event=event,
            transfer_id=transfer_id,
            sender=meta["sender"],
            organisation=meta["organisation"],
            route=route,
            direction=meta["direction"],
            # The twin sends only transfers its policy allowed.
            decision="allow",
            rule=meta["rule"],
            reason="delivered by the ingress twin" if event == "delivered" else (detail or event),
            policy_version=meta["policy_version"],
            size=size,
            ciphertext_bytes=ciphertext[0] if ciphertext else None,
            ciphertext_sha256=ciphertext[1] if ciphertext else None,
            upstream_status=sent.status if sent else None,
            timings_us={"total": int((time.monotonic() - started) * 1_000_000)},
            detail=detail,
        )
        if plain_sha256 is not None:
            record["sha256"] = plain_sha256
    except RecordError as exc:
        raise ClientError(f"invalid transfer metadata from the twin: {exc}") from None
    try:
        return await state.services.audit.append(record)
    except GatewayError:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise
    except Exception as exc:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise Unavailable("the audit log cannot be written") from exc


async def _receive_and_deliver(
    state: IngressState,
    request: web.Request,
    transfer_id: str,
    route: str,
    name: str,
    destination: str,
    meta: dict[str, str],
    started: float,
    replaces: str | None = None,
) -> web.StreamResponse:
    config = state.config
    # Resolve a pipelined payload first: a missing one must not leave a temp file.
    payload = _payload_path(state, request.headers.get(H_PAYLOAD))
    decryptor = AgeDecryptor(state.identities)
    spool_path: Path | None = None
    opener: Callable[[], FileDrop] | None = None
    spool_file: BinaryIO | None = None
    claim: Path | None = None
    synced = True
    extra = {"transfer_id": transfer_id}
    try:
        try:
            if destination.startswith("file://"):
                try:
                    claim = _claim_name(
                        state, inbox_path(destination) / name, replaces, meta["sender"]
                    )
                except GatewayError:
                    if payload is not None:  # the transfer ends here: its payload too
                        with contextlib.suppress(OSError):
                            payload.unlink()
                    raise
                opener = functools.partial(  # called in a worker thread (_Sink)
                    open_drop,
                    claim.parent,
                    name,
                    transfer_id,
                    unnamed=config.unnamed_temp_files,
                    replaces=replaces,
                    sender=meta["sender"],
                )
            else:
                config.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                spool_path = config.spool_dir / f"{transfer_id}.age"
                spool_file = _open_spool(spool_path)
        except BaseException:
            spool_path = None  # not ours to delete: it may be a concurrent envelope's
            raise
        sink = _Sink(decryptor, opener, spool_file)
        try:
            source = _request_batches(request, config.max_body_bytes, config.idle_timeout)
            # Each batch is fed once the next has arrived, and the last one with
            # finish(): a small envelope costs one thread trip (decrypt, create,
            # write, fsync), and no decryption or file I/O runs on the loop.
            held: bytes = b""
            async for batch in source:
                if held:
                    await _off_loop(sink.feed, held)
                held = batch
            if payload is not None:
                # Pipelined (SPEC §6): the payload arrived earlier; this body was the header.
                if held:
                    await _off_loop(sink.feed, held)
                    held = b""
                await _feed_payload_file(sink, payload)
            dropped = await _off_loop(sink.finish, held)
        except BaseException:
            sink.discard()
            raise
        finally:
            if payload is not None:
                await _remove(payload)
        ciphertext = (sink.cipher_bytes, sink.cipher.hexdigest())
        plain_sha = sink.plain_sha256(dropped)

        async def record_delivered(sent: Forwarded) -> Any:
            return await _audit(
                state,
                "delivered",
                transfer_id,
                route,
                meta,
                started,
                size=sink.plain_bytes,
                sent=sent,
                ciphertext=ciphertext,
                plain_sha256=plain_sha,
                detail=(
                    f"replaces the file transfer {replaces} delivered"
                    if replaces and dropped is not None
                    else None
                ),
            )

        receipt: Any = None
        if dropped is not None:
            sent = dropped
            assert sink.drop is not None
            # A file drop is recorded first and placed after: a failed append
            # leaves nothing in the inbox, and a crash in between leaves a
            # record without a file (over-recording, the safe direction),
            # never a delivered file without its record. Its data is synced
            # while the record is: a 1 KB envelope waits for one fsync less,
            # and nothing gets a name before both are durable.
            syncing = asyncio.ensure_future(asyncio.to_thread(sink.drop.sync))
            try:
                try:
                    receipt = await record_delivered(sent)
                finally:
                    await asyncio.wait([syncing])  # the thread may not outlive the drop
                syncing.result()  # an fsync that failed: OSError, recorded failed below
            except BaseException:
                sink.discard()
                raise
            synced = await _place(sink.drop)
        else:
            assert spool_path is not None
            assert state.session is not None
            try:
                # Connect and read timeouts do not bound a destination that
                # accepts the connection but stops reading: this does.
                async with asyncio.timeout(config.total_timeout):
                    sent = await post_stream(
                        state.session,
                        join_url(destination, name),
                        _decrypt_file(spool_path, state.identities),
                        headers={
                            H_TRANSFER: transfer_id,
                            "Content-Type": "application/octet-stream",
                        },
                        ssl_context=state.destination_ssl,
                    )
            except TimeoutError:
                raise UpstreamTimeout(
                    "the destination did not take the delivery within the time limit"
                ) from None
    except _Abort as exc:
        await _audit_quiet(state, "aborted", transfer_id, route, meta, started, exc.why)
        raise Problem(ClientError, f"{exc.why}; nothing was delivered", extra) from None
    except AgeError as exc:
        state.services.metrics.upstream_errors.labels(route, "envelope").inc()
        await _audit_quiet(state, "failed", transfer_id, route, meta, started, "invalid envelope")
        raise Problem(type(exc), f"{exc.detail}; nothing was delivered", extra) from None
    except GatewayError as exc:
        # A Problem raised inside keeps its kind and its members (existing_transfer_id).
        kind = exc.base if isinstance(exc, Problem) else type(exc)
        members = {**extra, **exc.extensions} if isinstance(exc, Problem) else extra
        await _audit_quiet(state, "failed", transfer_id, route, meta, started, kind.title.lower())
        raise Problem(kind, f"{exc.detail}; nothing was delivered", members) from None
    except OSError as exc:
        await _audit_quiet(state, "failed", transfer_id, route, meta, started, "delivery failure")
        raise Problem(
            Unavailable, f"local delivery failed ({exc.strerror}); nothing was delivered", extra
        ) from None
    finally:
        if claim is not None:
            state.claimed.discard(claim)
        if spool_path is not None:
            await _remove(spool_path)
    if dropped is None:
        receipt = await record_delivered(sent)
    elif not synced:
        # Recorded and in the inbox; only the durability of its name is in doubt.
        log.error("inbox_directory_sync_failed", route=route)
        raise Problem(Unavailable, "the delivered file could not be made durable", extra)
    # "delivered", not "forwarded": the twin's egress counted these bytes on their
    # way out; a park's dashboard must not add both.
    state.services.metrics.transfer_bytes.labels(route, "delivered").inc(sink.plain_bytes)
    log.info("envelope_delivered", route=route, status=sent.status)
    return json_response(
        {
            "transfer_id": transfer_id,
            "route": route,
            "bytes": sink.plain_bytes,
            "sha256": plain_sha,
            "ciphertext_bytes": ciphertext[0],
            "ciphertext_sha256": ciphertext[1],
            "upstream_status": sent.status,
            "receipt": receipt.to_json(),
        },
        status=201,
    )


def _claim_name(
    state: IngressState, final: Path, replaces: str | None = None, sender: str = ""
) -> Path:
    """Reserve an inbox file name for this delivery, or refuse (409) if it is taken.

    Delivery never replaces a file of the same name (the consumer may not
    have read it yet), unless its sender named the transfer of its own that
    delivered it (``replaces``). The check is repeated atomically when the
    file is placed (:meth:`FileDrop.place`); this one refuses before anything
    is received.

    Raises:
        Problem: 409, a file of that name is in the inbox (naming the
            transfer that delivered it to the same sender) or being delivered.
    """
    if final in state.claimed:
        raise Conflict(f"{final.name!r} is being delivered by another transfer")
    if os.path.lexists(final) and not may_replace(final, replaces, sender):
        raise _name_taken(final, sender)
    state.claimed.add(final)
    return final


def _name_taken(final: Path, sender: str) -> Problem:
    """The 409 for a name in the inbox; it names the transfer that delivered the
    file only to that transfer's own sender (who alone may replace it)."""
    existing = delivered_by(final) if delivered_for(final) == sender and sender else None
    by = f" (delivered by transfer {existing})" if existing else ""
    return Problem(
        Conflict,
        f"{final.name!r} is in the inbox already{by} and was not replaced",
        {"existing_transfer_id": existing} if existing else {},
    )


def _open_spool(path: Path) -> BinaryIO:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(f"transfer {path.stem!r} is being delivered already") from None
    return os.fdopen(fd, "wb", buffering=1024 * 1024)


async def _place(drop: FileDrop) -> bool:
    """Link a recorded delivery into the inbox, then fsync the inbox (one worker-thread trip).

    Returns:
        whether the new name is durable (False: linked, but the directory
        fsync failed; the caller answers 503).

    Raises:
        Conflict: the name was taken meanwhile (by a process outside this
            gateway); the sealed file is discarded.
        OSError: the file could not be placed; it is discarded.
    """
    try:
        return await asyncio.to_thread(drop.place)  # discards the file unless linked
    except FileExistsError:
        raise _name_taken(drop.final, drop.sender) from None


async def _audit_quiet(
    state: IngressState,
    event: TransferEvent,
    transfer_id: str,
    route: str,
    meta: dict[str, str],
    started: float,
    why: str,
) -> None:
    try:
        await _audit(state, event, transfer_id, route, meta, started, size=0, detail=why)
    except GatewayError:
        log.error("audit_end_record_failed", event=event)
    log.warning("envelope_" + event, why=why)


class _Abort(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


async def handle_healthz(request: web.Request) -> web.StreamResponse:
    """``GET /healthz`` on the ingress listener."""
    return json_response({"status": "ok"})
