"""Client connections: admission, request-head deadline, protocol errors (issue 11).

A security gateway must stay answerable while hostile or careless clients hold
connections open. This module is the thin layer between the listening socket
and aiohttp's request handling:

* :class:`Gate` is the protocol every accepted TCP connection starts in. It
  counts the connection against its listener's cap and its client address's
  cap *before* any TLS handshake or buffer is spent on it, closes it at once
  when either is reached (a plain-HTTP client is told ``503`` first), and
  otherwise hands the transport to aiohttp, through TLS when the listener has
  a certificate (the handshake is bounded by the request-head time-out).
* :class:`GatewayRequestHandler` is aiohttp's connection handler with what a
  careful proxy adds: a deadline for completing each request head (``408``,
  as nginx and HAProxy answer), an explicit keep-alive time-out, framing
  errors in the middle of a body reported to the handler at once (aiohttp
  queues them behind the request, which then waits for its idle time-out),
  parser refusals rendered as problem+json with an ``HTTP/1.1`` status line,
  and ``Expect`` taken out of aiohttp's hands so that ``100 Continue`` is only
  sent once the gateway has checked the request (:func:`send_continue`).
* :func:`descriptor_budget` raises the open-files limit to its hard limit and
  lowers the connection caps so that connections can never take the
  descriptors the audit log, the ledger and policy reloads need.
* :class:`AcceptErrorLog` replaces asyncio's traceback per failed ``accept``
  with one line per :data:`~gateway.server.config.ACCEPT_ERROR_LOG_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import resource
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.web_protocol import ERROR as PARSER_ERROR_REQUEST
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_protocol import _ErrInfo as ParserErrorMessage
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import ClientError, GatewayError
from gateway.obs.metrics import Metrics
from gateway.server.config import (
    ACCEPT_ERROR_LOG_SECONDS,
    FD_RESERVE,
    FDS_PER_CONNECTION,
    LISTEN_BACKLOG,
    RETRY_AFTER_SECONDS,
    ListenerLimits,
)
from gateway.server.problem import (
    PROBLEM_JSON,
    PROBLEM_TYPE_BASE,
    Handler,
    Problem,
    problem_response,
)

log = structlog.get_logger("gateway.server")

#: The ``Expect`` value a client sent, kept on the request once aiohttp no
#: longer sees the header (see :class:`GatewayRequestHandler`).
EXPECTATION = web.RequestKey("expectation", str)
#: Set once ``100 Continue`` went out, so it is sent at most once per request.
_CONTINUED = web.RequestKey("continued", bool)
#: RFC 9110 §10.1.1: the only expectation HTTP defines.
CONTINUE_EXPECTATION = "100-continue"
#: The interim response that invites the client to send its body.
_CONTINUE_LINE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PARSER_ERROR_REQUEST_11 = PARSER_ERROR_REQUEST._replace(version=HttpVersion11)
#: Highest open-files soft limit the gateway raises itself to: far above any
#: connection cap, and bounded so a huge hard limit (2**30 in some containers)
#: does not make select-based code or per-fd tables pathological.
NOFILE_CEILING = 1 << 20


class ExpectationFailed(ClientError):
    """An ``Expect`` value other than ``100-continue`` (RFC 9110 §10.1.1: 417)."""

    status = 417
    slug = "expectation-failed"
    title = "Expectation failed"


def _raw_problem(status: int, reason: str, slug: str, detail: str, *, retry: bool) -> bytes:
    """A complete ``Connection: close`` problem+json response, for when no request exists."""
    body = (
        json.dumps(
            {"type": PROBLEM_TYPE_BASE + slug, "title": reason, "status": status, "detail": detail}
        )
        + "\n"
    ).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {PROBLEM_JSON}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry:
        head.append(f"Retry-After: {RETRY_AFTER_SECONDS}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_HEAD_TIMEOUT_RESPONSE = _raw_problem(
    408,
    "Request Timeout",
    "request-timeout",
    "the request line and headers did not arrive in time; the connection is closed",
    retry=False,
)
#: RFC 9113 §3.4: what an HTTP/2 client sends first.
_HTTP2_PREFACE = b"PRI * HTTP/2.0"
_HTTP2_RESPONSE = _raw_problem(
    505,
    "HTTP Version Not Supported",
    "http-version-not-supported",
    "the gateway speaks HTTP/1.1 inside a tunnel (its TLS offers only http/1.1 by ALPN); "
    "send the transfer over HTTP/1.1",
    retry=False,
)
_OVER_CAPACITY_RESPONSE = _raw_problem(
    503,
    "Service Unavailable",
    "unavailable",
    "too many open connections; retry later",
    retry=True,
)


def client_address(transport: asyncio.BaseTransport) -> str:
    """The key a client's connections are counted under: its IPv4 address or IPv6 /64.

    One IPv6 host is routinely given a whole /64 (RFC 6177) and can send from
    any address in it: counted per address, one host would have 2**64 caps.
    An IPv4-mapped address counts as the IPv4 address. ``""`` when the
    transport has no peer address.
    """
    return client_key(transport.get_extra_info("peername"))


def client_key(peer: object) -> str:
    """:func:`client_address` of a socket's ``peername`` (``(host, port, …)`` or None)."""
    if not (isinstance(peer, tuple) and peer):
        return ""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return str(peer[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class ConnectionLimiter:
    """Open connections of one listener, in total and per client address.

    Attributes:
        listener: ``egress`` or ``ingress`` (the metrics label).
        total: cap on open connections.
        per_client: cap on open connections from one address.
        metrics: where the gauge and refusal counters live.
    """

    listener: str
    total: int
    per_client: int
    metrics: Metrics
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and counted as refused) if over a cap."""
        if self.open >= self.total:
            self.metrics.connections_refused.labels(self.listener, "total").inc()
            return False
        held = self.by_client.get(address, 0)
        if held >= self.per_client:
            self.metrics.connections_refused.labels(self.listener, "per_client").inc()
            return False
        self.by_client[address] = held + 1
        self.open += 1
        self.metrics.connections.labels(self.listener).set(self.open)
        return True

    def release(self, address: str) -> None:
        """A connection admitted from ``address`` closed."""
        held = self.by_client.get(address, 0) - 1
        if held > 0:
            self.by_client[address] = held
        else:
            self.by_client.pop(address, None)
        self.open = max(0, self.open - 1)
        self.metrics.connections.labels(self.listener).set(self.open)


class GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler with the gateway's connection rules (module docstring)."""

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gateway_server = manager
        self._head_deadline: asyncio.TimerHandle | None = None
        # When the first request head is due: set from the accepted TCP
        # connection (the TLS handshake counts), so it is one absolute time.
        self._first_head_due: float | None = None
        self._send_deadline: asyncio.TimerHandle | None = None
        # The body of the last request parsed: until it ended, bytes are body
        # (aiohttp drains an unread one after the answer), not a next head.
        self._last_payload: Any = None
        self._on_close: Callable[[], None] | None = None
        self._request_factory = self._make_request

    # -- lifetime ---------------------------------------------------------

    def admitted(self, on_close: Callable[[], None], accepted_at: float) -> None:
        """Call ``on_close`` exactly once when this connection ends (the limiter's release).

        Args:
            on_close: the limiter's release of this connection's slot.
            accepted_at: loop time the TCP connection was accepted; the first
                request head is due ``head_timeout`` after it, TLS handshake included.
        """
        self._on_close = on_close
        self._first_head_due = accepted_at + self._gateway_server.limits.head_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the connection; its first request head must arrive within the deadline."""
        super().connection_made(transport)
        # Over TLS, a request sent with the handshake's last flight may have been
        # parsed already (asyncio delivers it before this call): no deadline then.
        if self._request_count == 0 and not self._messages:
            self._arm_head_deadline(self._first_head_due)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Release the connection's slot, then let aiohttp tear the connection down."""
        self._disarm_head_deadline()
        self._disarm_send_deadline()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        super().connection_lost(exc)

    # -- CONNECT tunnels (issue 18) ----------------------------------------

    #: The tunnel this connection carries, when it is the inside of a ``CONNECT``.
    tunnel: Any = None

    async def continue_in_tunnel(
        self, context: ssl.SSLContext, tunnel: Any, established: bytes
    ) -> bool:
        """Hand this connection to a TLS server session inside a ``CONNECT`` tunnel.

        ``established`` (the ``200`` line) is written as is; from then on the
        bytes of the connection are a TLS session with ``context``, and the
        requests inside it are served by a new handler of this listener that
        carries ``tunnel``, under the same connection slot, request-head and
        keep-alive time-outs (the handshake counts as the head's). This
        handler lets go of the connection without closing it: the response
        aiohttp tries to write for the ``CONNECT`` goes nowhere.

        Returns:
            whether the TLS handshake succeeded (if not, the connection is closed).
        """
        transport = self.transport
        assert transport is not None
        self._disarm_head_deadline()
        self._disarm_send_deadline()
        release = self._on_close or (lambda: None)
        self._on_close = None
        # Let go: nothing this handler still writes reaches the wire, and the
        # server no longer counts it (the inner handler is counted instead).
        self.transport = None
        self.force_close()
        self._gateway_server.connection_lost(self, None)
        transport.write(established)
        inner = self._gateway_server()
        inner.tunnel = tunnel
        inner.admitted(release, self._loop.time())
        timeout = self._gateway_server.limits.head_timeout
        return await serve_over_tls(transport, inner, context, timeout, release)

    def close_without_draining(self) -> None:
        """After this answer, close at once instead of reading the rest of the body.

        aiohttp reads ("lingers on") an unread body for up to 10 s after the
        answer so that a kept-alive connection can be reused; a body that was
        never invited may never come, and the connection closes anyway.
        """
        self._lingering_time = 0.0

    # -- request-head deadline --------------------------------------------

    def _arm_head_deadline(self, due: float | None = None) -> None:
        if self._head_deadline is None:
            if due is None:
                due = self._loop.time() + self._gateway_server.limits.head_timeout
            self._head_deadline = self._loop.call_at(due, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _waiting_for_head(self) -> bool:
        """True while no request is queued, handled or draining: bytes now are a request head."""
        return (
            not self._messages
            and not self._request_in_progress
            and (self._last_payload is None or self._last_payload.is_eof())
        )

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if transport is None or self._force_close or not self._waiting_for_head():
            return
        self._gateway_server.metrics.head_timeouts.labels(self._gateway_server.listener).inc()
        log.info("request_head_timeout", listener=self._gateway_server.listener)
        # No request exists to answer through aiohttp: the 408 is written as is.
        transport.write(_HEAD_TIMEOUT_RESPONSE)
        self.force_close()

    # -- send deadline ------------------------------------------------------

    def pause_writing(self) -> None:
        """The socket's send buffer is full: the client has this long to read on."""
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self._loop.call_later(
                self._gateway_server.limits.send_timeout, self._send_timed_out
            )

    def resume_writing(self) -> None:
        """The client reads again."""
        self._disarm_send_deadline()
        super().resume_writing()

    def _disarm_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _send_timed_out(self) -> None:
        """A client that stopped reading its answers loses the connection, at once.

        Without this a client that pipelines requests and never reads holds
        its slot forever: the handler waits to write, so neither the head
        deadline nor the keep-alive time-out applies (nginx ``send_timeout``).
        ``abort``, not ``close``: a close would wait for the unsent data.
        """
        self._send_deadline = None
        transport = self.transport
        if transport is None:
            return
        log.info("response_send_timeout", listener=self._gateway_server.listener)
        transport.abort()

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, timing request heads and surfacing body framing errors."""
        if (
            self.tunnel is not None
            and self._request_count == 0
            and self.transport is not None
            and len(data) >= 3
            and data.startswith(_HTTP2_PREFACE[: len(data)])
        ):
            # An HTTP/2 client that ignored ALPN: one clear answer, not a parse error.
            self.transport.write(_HTTP2_RESPONSE)
            self.force_close()
            return
        idle = self._waiting_for_head()
        parsed = self._request_count
        queued = len(self._messages)
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm_head_deadline()
            if self._messages:
                self._last_payload = self._messages[-1][1]
            self._surface_framing_error(queued)
        elif idle and data and self._waiting_for_head():
            # The first bytes of a request head on an idle kept-alive connection.
            self._arm_head_deadline()

    def _surface_framing_error(self, queued: int) -> None:
        """A parse error while a body streams ends that body now, not at its idle time-out.

        aiohttp answers a parser error by queueing an error "request" behind the
        request whose body was being read; that request's handler never learns of
        it and waits for body bytes until its idle time-out. The error is given to
        the body instead (the handler answers ``400``, recorded ``aborted``) and
        the connection closes after that answer: nothing after the bad framing is
        parsed as a request.
        """
        current = self._current_request
        if current is None or len(self._messages) <= queued or current.content.is_eof():
            # No body in progress: the error is the next request's, answered as such.
            return
        message = self._messages[-1][0]
        if not isinstance(message, ParserErrorMessage):
            return
        self._messages.pop()
        current.content.set_exception(
            RequestPayloadError("the request body's framing is malformed")
        )
        # At its end too: aiohttp would otherwise drain ("linger on") the rest
        # of the body after the answer, meet the error again and log a traceback.
        current.content.feed_eof()
        self.close()

    # -- requests ---------------------------------------------------------

    def _make_request(self, message: Any, payload: Any, *args: Any) -> BaseRequest:
        """aiohttp's request factory, with ``Expect`` kept from aiohttp's own handling.

        aiohttp answers ``Expect: 100-continue`` as soon as a route matches, before
        any handler ran: a sender with a wrong token or an oversized body was
        invited to send it. The header is removed here and its value kept under
        :data:`EXPECTATION`; :func:`send_continue` answers it once the gateway
        has checked the request, and :func:`expectation_middleware` refuses other
        values with ``417``.
        """
        if message is PARSER_ERROR_REQUEST:
            # aiohttp's stand-in for what the parser refused says HTTP/1.0, and the
            # answer's status line would too; this server speaks HTTP/1.1.
            message = _PARSER_ERROR_REQUEST_11
        expectation = None
        if hdrs.EXPECT in message.headers:
            expectation = ",".join(message.headers.getall(hdrs.EXPECT))
            kept = CIMultiDict((k, v) for k, v in message.headers.items() if k.lower() != "expect")
            message = message._replace(
                headers=CIMultiDictProxy(kept),
                raw_headers=tuple((k, v) for k, v in message.raw_headers if k.lower() != b"expect"),
            )
        request = self._gateway_server.request_factory(message, payload, *args)
        if expectation is not None:
            request[EXPECTATION] = expectation
        return request

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Render a request aiohttp could not parse or handle as problem+json.

        A request the parser refused (a malformed target such as
        ``http://host:99999999/x``, a bad header, conflicting framing) never
        reaches the middlewares; aiohttp would answer ``text/plain`` with an
        ``HTTP/1.0`` status line and log a traceback. Here it is an RFC 9457
        problem with an ``HTTP/1.1`` status line and one log line without the
        request bytes (they may be payload).
        """
        log.warning(
            "malformed_http_request",
            status=status,
            error_type=type(exc).__name__ if exc is not None else None,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; the connection is dropped")
        error = (
            ClientError("the request could not be parsed (malformed target, header or framing)")
            if 400 <= status < 500
            else GatewayError("internal gateway error; nothing was forwarded")
        )
        response = problem_response(error)
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's server for one listener, making :class:`GatewayRequestHandler` connections.

    Attributes:
        listener: ``egress`` or ``ingress``.
        limits: the listener's time-outs and caps.
        metrics: the process's metrics.
        handshakes: TLS handshakes in progress (each task referenced until it ends).
    """

    listener: str
    limits: ListenerLimits
    metrics: Metrics

    def configure(self, listener: str, limits: ListenerLimits, metrics: Metrics) -> None:
        """Set what the connection handlers need (called once, before listening)."""
        self.listener, self.limits, self.metrics = listener, limits, metrics
        self.handshakes: set[asyncio.Task[None]] = set()
        self._kwargs["keepalive_timeout"] = limits.keepalive_timeout

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        """Stop TLS handshakes still in progress, then shut connections down as aiohttp does."""
        for task in list(self.handshakes):
            task.cancel()
        await super().shutdown(timeout)

    def __call__(self) -> GatewayRequestHandler:
        """A connection handler for one admitted connection."""
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class Gate(asyncio.Protocol):
    """The first protocol of every accepted connection: admit, then hand over (module docstring)."""

    def __init__(
        self,
        server: GatewayServer,
        limiter: ConnectionLimiter,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._server = server
        self._limiter = limiter
        self._ssl = ssl_context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit or refuse the connection; admitted ones go to aiohttp (through TLS)."""
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        transport = cast(asyncio.Transport, transport)
        address = client_address(transport)
        if not self._limiter.admit(address):
            if self._ssl is None:
                transport.write(_OVER_CAPACITY_RESPONSE)
            transport.close()
            return
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._limiter.release(address)

        handler = self._server()
        handler.admitted(release, asyncio.get_running_loop().time())
        if self._ssl is None:
            transport.set_protocol(handler)
            handler.connection_made(transport)
            return
        # No byte is read until the handshake starts (start_tls resumes reading).
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._handshake(transport, handler, release))
        self._server.handshakes.add(task)
        task.add_done_callback(self._server.handshakes.discard)

    async def _handshake(
        self,
        transport: asyncio.Transport,
        handler: GatewayRequestHandler,
        release: Callable[[], None],
    ) -> None:
        assert self._ssl is not None
        # The handshake is part of the request head's time budget.
        timeout = self._server.limits.head_timeout
        await serve_over_tls(transport, handler, self._ssl, timeout, release)


async def serve_over_tls(
    transport: asyncio.Transport,
    handler: GatewayRequestHandler,
    context: ssl.SSLContext,
    handshake_seconds: float,
    release: Callable[[], None],
) -> bool:
    """Run the server side of a TLS handshake on ``transport``, then hand it to ``handler``.

    A failed, slow or abandoned handshake answers nothing: the connection is
    dropped and its slot given back (``release``). Returns whether it succeeded.
    """
    try:
        secure = await asyncio.get_running_loop().start_tls(
            transport, handler, context, server_side=True, ssl_handshake_timeout=handshake_seconds
        )
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
        transport.abort()
        release()
        return False
    except asyncio.CancelledError:
        transport.abort()
        release()
        raise
    if secure is None:  # the peer closed during the handshake
        release()
        return False
    handler.connection_made(secure)
    return True


class GatedSite(web.TCPSite):
    """A TCP site whose connections start in a :class:`Gate` (TLS is done by the gate)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limiter: ConnectionLimiter,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._limiter = limiter

    async def start(self) -> None:
        """Listen; every accepted connection is admitted by a :class:`Gate`."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert isinstance(server, GatewayServer)
        context, limiter = self._ssl_context, self._limiter
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Gate(server, limiter, context),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit (up to a ceiling); return it.

    Like the Go runtime and nginx's ``worker_rlimit_nofile``: the soft limit
    (often 1024) is a compatibility default for ``select(2)`` users, which
    asyncio's epoll loop is not.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_CEILING if hard == resource.RLIM_INFINITY else min(hard, NOFILE_CEILING)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return NOFILE_CEILING if soft == resource.RLIM_INFINITY else soft


def descriptor_budget(nofile: int, listeners: int) -> int:
    """The most connections one listener may hold so that descriptors never run out.

    :data:`~gateway.server.config.FD_RESERVE` stays free for the audit log,
    the ledger, policy reloads and one accept burst; each connection is
    counted at :data:`~gateway.server.config.FDS_PER_CONNECTION` (its socket,
    its spool file, its upstream connection). When the limit is so low that
    the reserve does not fit, half of it is reserved instead.

    Args:
        nofile: the open-files limit.
        listeners: listeners in this process (they share the descriptor table).
    """
    reserve = min(FD_RESERVE, nofile // 2)
    return max(1, (nofile - reserve) // (FDS_PER_CONNECTION * max(1, listeners)))


def make_limiter(
    listener: str, limits: ListenerLimits, metrics: Metrics, budget: int
) -> ConnectionLimiter:
    """The connection limiter of a listener, its caps lowered to the descriptor budget."""
    total = min(limits.max_connections, budget)
    per_client = min(limits.max_connections_per_client, total)
    if total < limits.max_connections:
        log.warning(
            "connection_cap_lowered",
            listener=listener,
            configured=limits.max_connections,
            effective=total,
            detail="the open-files limit cannot back the configured cap",
        )
    return ConnectionLimiter(listener, total, per_client, metrics)


async def send_continue(request: web.Request) -> None:
    """Send ``100 Continue`` if the client asked for it; call once the request is checked.

    RFC 9110 §10.1.1: a server that would refuse the request on its headers
    (unknown sender, too large, unknown route) answers with the final status
    instead, and the client never sends its body.
    """
    if request.get(EXPECTATION) is None or request.get(_CONTINUED):
        return
    if request.version < HttpVersion11:
        return  # RFC 9110 §10.1.1: an HTTP/1.0 client is sent no 1xx answer
    request[_CONTINUED] = True
    await request.writer.write(_CONTINUE_LINE)


def _closing(error: GatewayError) -> web.StreamResponse:
    response = problem_response(error)
    response.force_close()
    return response


@web.middleware
async def expectation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Expect`` handling around everything else (the outermost middleware).

    Any expectation but ``100-continue`` is ``417`` problem+json (RFC 9110
    §10.1.1). A request that expected ``100-continue`` but was answered
    without it (refused on its headers) closes its connection: the client
    may or may not send the body it was not invited to send, so nothing on
    this connection can tell where a next request would start.
    """
    expectation = request.get(EXPECTATION)
    if expectation is None:
        return await handler(request)
    if expectation.strip().lower() != CONTINUE_EXPECTATION:
        return _closing(
            ExpectationFailed("the only expectation this gateway meets is 100-continue")
        )
    response = await handler(request)
    if not request.get(_CONTINUED):
        response.force_close()
        if isinstance(request.protocol, GatewayRequestHandler):
            request.protocol.close_without_draining()
    return response


class NotImplementedCoding(GatewayError):
    """A transfer coding other than ``chunked`` (RFC 9112 §6.1: 501)."""

    status = 501
    slug = "not-implemented"
    title = "Transfer coding not implemented"


@web.middleware
async def framing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse request framings a proxy in front could read differently; close after.

    RFC 9112 §6.1: a ``Transfer-Encoding`` in an HTTP/1.0 request means faulty
    framing (an HTTP/1.0 front end would take the chunks for the body *and*
    the next request), so it is ``400`` and the connection is closed before
    anything after it is read as a request; a transfer coding other than a
    final ``chunked`` is ``501`` (the coded bytes would otherwise be taken for
    the data, undecoded by anyone).
    """
    codings = [
        c.strip().lower()
        for value in request.headers.getall(hdrs.TRANSFER_ENCODING, ())
        for c in value.split(",")
    ]
    if codings:
        if request.version < HttpVersion11:
            return _closing(ClientError("Transfer-Encoding is not allowed in an HTTP/1.0 request"))
        if codings != ["chunked"]:
            return _closing(
                NotImplementedCoding("the only transfer coding accepted is chunked, alone")
            )
    return await handler(request)


#: RFC 9110 §8.4.1: ``identity`` (or no coding at all) means the body is the data.
_IDENTITY = frozenset({"", "identity"})


class UnsupportedCoding(ClientError):
    """A request body with a ``Content-Encoding`` (RFC 9110 §15.5.16: 415)."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported content coding"


@web.middleware
async def content_coding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse coded request bodies before a byte of them is read.

    The classifier must be the only thing that decodes (issue 11, finding 1):
    aiohttp's own decompression (switched off in the apps' handler arguments)
    did not check that a gzip member ended, so a truncated body was delivered
    as its decodable prefix, and it ignored the classifier's expansion limits.
    A compressed file is sent as a file (``data.csv.gz``): the classifier opens
    it under its limits and the recipient receives it as sent.
    """
    codings = [
        c.strip().lower()
        for value in request.headers.getall(hdrs.CONTENT_ENCODING, ())
        for c in value.split(",")
    ]
    if any(c not in _IDENTITY for c in codings):
        # RFC 7694 §3: a 415 for a content coding names the codings accepted.
        raise Problem(
            UnsupportedCoding,
            "request bodies are not accepted with a Content-Encoding; send compressed data "
            "as a file (e.g. data.csv.gz): the classifier opens it under its own limits",
            headers={"Accept-Encoding": "identity"},
        )
    return await handler(request)


class AcceptErrorLog:
    """A loop exception handler that logs failed accepts once per interval, without traceback.

    asyncio reports every failed ``accept(2)`` (EMFILE, ENFILE, ENOBUFS,
    ENOMEM) to the loop's exception handler, whose default logs a traceback
    each time and then pauses accepting for a second: tens of MB of log in
    seconds under a flood. Everything else goes to the previous handler.

    Args:
        metrics: ``gateway_accept_errors_total`` is counted here.
        previous: the handler in place before (None: asyncio's default).
        interval: seconds between two log lines.
    """

    def __init__(
        self,
        metrics: Metrics,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
        interval: float = ACCEPT_ERROR_LOG_SECONDS,
    ) -> None:
        self.metrics = metrics
        self.previous = previous
        self.interval = interval
        self.suppressed = 0
        self._last = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Handle one exception context of ``loop``."""
        if "accept" not in str(context.get("message", "")) or not isinstance(
            context.get("exception"), OSError
        ):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.metrics.accept_errors.inc()
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        error = context["exception"]
        log.error(
            "accept_failed",
            errno=error.errno,
            error=error.strerror,
            suppressed=self.suppressed,
            detail="the process is out of file descriptors or memory; accepting pauses 1 s",
        )
        self.suppressed = 0
        self._last = now
