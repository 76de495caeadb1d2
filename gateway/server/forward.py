"""The HTTP client plumbing for released bytes: bodies whole or streamed, the pipelined upload.

The destinations (:mod:`gateway.server.destinations`) send through these
functions; only a transfer whose state machine has passed
``begin_forwarding`` reaches them, and they never decide anything. Each
returns the upstream status and raises :class:`~gateway.errors.UpstreamError`
/ ``UpstreamTimeout`` on failure, after which the caller records the
transfer as failed.

Streaming reads of spool files run in worker threads (``asyncio.to_thread``)
and each block is awaited into the socket before the next is read, so memory
stays at one block per transfer however large the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from gateway.crypto.tls import SpkiPinMismatch
from gateway.crypto.tls import client_ssl_context as tls_client_context
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.server.config import (
    UPSTREAM_CONNECT_TIMEOUT_SECONDS,
    UPSTREAM_READ_TIMEOUT_SECONDS,
    TlsClient,
)
from gateway.server.transfer import TRANSFER_ID

#: Status the twin and HTTPS destinations must answer for a successful delivery.
_SUCCESS = range(200, 300)

log = structlog.get_logger("gateway.forward")
#: Bytes of an upstream's answer read (the twin's verdict JSON is ~2 KB); the
#: rest of a longer answer is dropped with its connection.
RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What went out.

    Attributes:
        status: the upstream's HTTP status (201 for a file drop).
        bytes: bytes sent on the wire (ciphertext for envelopes).
        sha256: hex SHA-256 of what was sent.
    """

    status: int
    bytes: int
    sha256: str


def client_ssl_context(tls: TlsClient | None) -> ssl.SSLContext:
    """A TLS client context: verify the server against ``tls.ca`` and present our cert.

    With ``tls.pin_spki`` every server reached with it must also hold a pinned
    key (checked in the handshake, before any request byte is written).
    Without ``tls`` the system trust store is used and no client certificate is sent.
    """
    if tls is None:
        return tls_client_context()
    return tls_client_context(ca=tls.ca, cert=tls.cert, key=tls.key, pin_spki=tls.pin_spki)


def _client_error(exc: aiohttp.ClientError) -> str:
    """Why a connection failed: the pin mismatch spelled out, else the error class.

    A pin mismatch is logged (``upstream_pin_refused``) and named in the
    error with the key the server presented, a public value, so an operator
    can tell a rotated key (add its pin) from an impostor.
    """
    cause = getattr(exc, "certificate_error", None)
    if isinstance(cause, SpkiPinMismatch):
        log.warning("upstream_pin_refused", server=cause.server, spki=cause.presented)
        return f"the server's TLS key is not pinned (presented sha256//{cause.presented})"
    return type(exc).__name__


def upstream_timeout() -> aiohttp.ClientTimeout:
    """Connect and read timeouts for the twin and destinations (504 past them)."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=UPSTREAM_CONNECT_TIMEOUT_SECONDS,
        sock_read=UPSTREAM_READ_TIMEOUT_SECONDS,
    )


def join_url(base: str, *segments: str) -> str:
    """``base`` with URL-quoted path segments appended."""
    return base.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)


class _Source:
    """The body of an upstream request: a prefix, then blocks read (maybe) in a thread.

    If the upstream fails mid-body, aiohttp abandons the async iterator while
    a worker thread may still be reading the next block; :meth:`close` waits
    for that read before closing the underlying file, so a read never races
    a close.
    """

    def __init__(self, blocks: Iterator[bytes], prefix: bytes, threaded: bool) -> None:
        self._blocks = blocks
        self._prefix = prefix
        self._threaded = threaded
        self._inflight: asyncio.Future[bytes] | None = None
        self.digest = hashlib.sha256()
        self.bytes = 0

    def _step(self) -> bytes:
        block = next(self._blocks, b"")
        self.digest.update(block)  # hashlib releases the GIL for large buffers
        return block

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._prefix:
            self.digest.update(self._prefix)
            self.bytes += len(self._prefix)
            yield self._prefix
        while True:
            # File reads, decryption and hashing of a large spool run off the
            # event loop; a small spool is a single read, cheaper than a thread hop.
            if self._threaded:
                self._inflight = asyncio.ensure_future(asyncio.to_thread(self._step))
                block = await asyncio.shield(self._inflight)
                self._inflight = None
            else:
                block = self._step()
            if not block:
                return
            self.bytes += len(block)
            yield block

    async def close(self) -> None:
        """Wait for a read in flight, then close the block iterator (and its file)."""
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()


async def post_stream(
    session: aiohttp.ClientSession,
    url: str,
    blocks: Iterator[bytes],
    *,
    prefix: bytes = b"",
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    method: str = "PUT",
    threaded: bool = True,
    on_response: Callable[[int, bytes], None] | None = None,
) -> Forwarded:
    """Stream ``prefix`` then ``blocks`` to ``url``; return status, size and digest.

    Raises:
        UpstreamTimeout: connect or read timed out.
        UpstreamError: connection refused or reset, or a non-2xx answer.
    """
    source = _Source(blocks, prefix, threaded)
    try:
        status = await _send(
            session, method, url, source.__aiter__(), headers, ssl_context, on_response
        )
    finally:
        await source.close()
    return Forwarded(status, source.bytes, source.digest.hexdigest())


async def post_bytes(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    method: str = "PUT",
    on_response: Callable[[int, bytes], None] | None = None,
) -> Forwarded:
    """Send a small ``body`` whole (with a Content-Length); return status, size and digest.

    For bodies already in memory: aiohttp writes the request line, headers and
    body together, so the upstream gets the request in one TLS record and one
    read instead of a chunk per piece.

    Raises:
        UpstreamTimeout: connect or read timed out.
        UpstreamError: connection refused or reset, or a non-2xx answer.
    """
    status = await _send(session, method, url, body, headers, ssl_context, on_response)
    return Forwarded(status, len(body), hashlib.sha256(body).hexdigest())


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes | AsyncIterator[bytes],
    headers: dict[str, str] | None,
    ssl_context: ssl.SSLContext | None,
    on_response: Callable[[int, bytes], None] | None,
) -> int:
    """One upstream request; the 2xx status, or the upstream failure as our error."""
    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=headers,
            ssl=ssl_context if ssl_context is not None else True,
            timeout=upstream_timeout(),
        ) as response:
            answer = await response.content.read(RESPONSE_BYTES)
            if on_response is not None:
                on_response(response.status, answer)
            status = response.status
    except TimeoutError:
        raise UpstreamTimeout(f"{_host(url)} did not answer in time") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{_host(url)}: {_client_error(exc)}") from None
    except OSError as exc:
        raise UpstreamError(f"{_host(url)}: {exc.strerror or type(exc).__name__}") from None
    if status == DestinationConflict.status:
        raise DestinationConflict(
            f"{_host(url)} holds a file of that name already", _existing_transfer(answer)
        )
    if status not in _SUCCESS:
        raise UpstreamError(f"{_host(url)} answered {status}")
    return status


class DestinationConflict(UpstreamError):
    """The destination (or the twin's inbox) has a file of that name and kept it (409).

    Not a failure of the destination: the sender hears ``409`` and which
    transfer delivered the file, where the answer says.
    """

    status = 409

    def __init__(self, detail: str, existing: str | None) -> None:
        super().__init__(detail)
        self.existing = existing


def _existing_transfer(answer: bytes) -> str | None:
    """``existing_transfer_id`` of a problem+json answer, if it is a transfer id."""
    try:
        value = json.loads(answer).get("existing_transfer_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and TRANSFER_ID.fullmatch(value) else None


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


#: Sealed batches queued for a pipelined upload; a full queue slows the
#: receiver (backpressure) instead of buffering: 4 x 512 KiB (egress
#: ``OFFLOAD_BATCH``) = 2 MiB per transfer, enough to ride out TLS bursts.
UPLOAD_QUEUE = 4


class PayloadUpload:
    """Stream a transfer's sealed age payload to the twin while it is classified (SPEC §6).

    The twin spools the payload but cannot read it: the header, which wraps
    the file key, stays here until an allow verdict. Ciphertext accounting
    covers ``header || payload``, the age file the recipient ends up with.
    The caller feeds :attr:`digest` in its worker thread, so hashing never
    runs on the event loop.

    Args:
        session: the client session.
        url: the twin's ``/v1/payloads/{id}`` URL.
        headers: transfer metadata headers.
        ssl_context: mutual TLS to the twin.
        header: the age header for the route's recipient (sent later).
        nonce: the payload nonce (the first payload bytes).
        stall_timeout: seconds a queued batch may wait for the twin to take
            it; past that the upload is cancelled (the twin stopped reading)
            and the transfer falls back to the classic path, so a stalled
            twin never holds the receiver (or its shutdown) hostage.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        ssl_context: ssl.SSLContext | None,
        header: bytes,
        nonce: bytes,
        stall_timeout: float,
    ) -> None:
        self.url = url
        self.stall_timeout = stall_timeout
        self.stalled = False
        self.header = header
        self.digest = hashlib.sha256(header + nonce)
        self.bytes = len(header) + len(nonce)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=UPLOAD_QUEUE)
        self._queue.put_nowait(nonce)
        self._session = session
        self._task = asyncio.create_task(self._run(headers, ssl_context))

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def _run(self, headers: dict[str, str], ssl_context: ssl.SSLContext | None) -> None:
        try:
            async with self._session.put(
                self.url,
                data=self._body(),
                headers=headers,
                ssl=ssl_context if ssl_context is not None else True,
                timeout=upstream_timeout(),
            ) as response:
                await response.read()
                if response.status not in _SUCCESS:
                    raise UpstreamError(
                        f"{_host(self.url)} refused the payload ({response.status})"
                    )
        except TimeoutError:
            raise UpstreamTimeout(f"{_host(self.url)} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{_host(self.url)}: {_client_error(exc)}") from None

    async def send(self, sealed: bytes) -> None:
        """Queue sealed bytes (already hashed by the caller); waits while the queue is full.

        Waits at most :attr:`stall_timeout`: a twin that takes nothing for
        that long has stalled, and the upload is cancelled (the spool still
        holds everything; :meth:`finish` then reports failure).
        """
        if not sealed:
            return
        self.bytes += len(sealed)
        if self._task.done() or self.stalled:
            return  # the upload failed; the spool still has everything
        await self._put(sealed)

    async def _put(self, item: bytes | None) -> None:
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            done, _ = await asyncio.wait(
                {put, self._task}, timeout=self.stall_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not put.done():
                put.cancel()
        if not done:
            self.stalled = True
            self.cancel()

    async def finish(self) -> bool:
        """End the upload; True when the twin holds the whole payload."""
        if not self._task.done() and not self.stalled:
            await self._put(None)
        if not self.stalled and not self._task.done():
            # At most UPLOAD_QUEUE batches are still queued, each allowed the
            # stall timeout, then the twin's answer gets the upstream read timeout.
            bound = self.stall_timeout * (UPLOAD_QUEUE + 1) + UPSTREAM_READ_TIMEOUT_SECONDS
            done, _ = await asyncio.wait({self._task}, timeout=bound)
            if not done:
                self.stalled = True
                self.cancel()
        if self.stalled or self._task.cancelled():
            await asyncio.wait({self._task})  # a cancelled upload ends promptly
            return False
        try:
            await self._task
        except (UpstreamError, OSError):
            return False
        return True

    def cancel(self) -> None:
        """Stop uploading (the transfer ended before its verdict)."""
        self._task.cancel()

    async def discard(self, ssl_context: ssl.SSLContext | None) -> None:
        """Ask the twin to drop the payload (block, review, or a non-envelope verdict)."""
        self.cancel()
        with contextlib.suppress(asyncio.CancelledError, UpstreamError):
            await self._task
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self._session.delete(
                self.url,
                ssl=ssl_context if ssl_context is not None else True,
                timeout=upstream_timeout(),
            ) as response:
                await response.read()
