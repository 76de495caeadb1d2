"""``CONNECT`` with TLS interception: ``HTTPS_PROXY`` works unchanged (issue 18).

A client told ``HTTPS_PROXY=http://gateway:8080`` asks for ``CONNECT
host:port`` before it speaks TLS to an ``https://`` URL. Like an enterprise
DLP proxy (Squid ``ssl_bump``, mitmproxy), the egress answers ``200`` only
for an authenticated sender and a ``host:port`` that is a route's
destination, then terminates the client's TLS inside the tunnel with a leaf
certificate for that host minted by the gateway's *interception CA*
(:mod:`gateway.crypto.intercept`), which the organisation's clients trust.
The requests inside are transfers like any forward-proxy request: the URL is
``https://host:port`` plus the request's path, classified, decided, audited
and delivered the same way (:func:`tunnel_url`). Nothing is ever tunnelled
blind:

- no sender identity (``Proxy-Authorization: Bearer <token>``, or ``Basic``
  with the token as password, which ``HTTPS_PROXY=http://name:token@…``
  gives; or the client certificate of a TLS proxy listener): ``407`` with
  ``Proxy-Authenticate``;
- a ``host:port`` no route names: ``403`` before anything else happens (no
  tunnel, no connection to it, no name lookup);
- inside the tunnel, a method other than the transfer methods: ``405``; a
  ``Host`` naming another place than the tunnel's: ``400``; an SNI name
  other than the ``CONNECT`` host: the handshake fails.

The tunnel's connection keeps its slot and time-outs (a slow or silent client
inside meets the request-head and keep-alive time-outs as outside); HTTP/1.1
with keep-alive inside, ALPN offering ``http/1.1`` only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import structlog
from aiohttp import web

from gateway.crypto.intercept import InterceptionCA, canonical_host
from gateway.errors import (
    ClientError,
    Forbidden,
    MethodNotAllowed,
    ProxyAuthenticationRequired,
    Unavailable,
)
from gateway.server.access import note
from gateway.server.auth import TokenTable, peer_common_name
from gateway.server.connections import GatewayRequestHandler
from gateway.server.destinations import endpoint
from gateway.server.egress import run_transfer
from gateway.server.egress_state import EGRESS
from gateway.server.problem import Problem
from gateway.server.proxy_routes import route_for

log = structlog.get_logger("gateway.tunnel")

#: The ``200`` that opens a tunnel (RFC 9110 §9.3.6: no framing headers).
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
#: What a ``407`` asks for.
PROXY_CHALLENGE = 'Bearer realm="hksz-gateway", Basic realm="hksz-gateway"'
#: The methods a transfer inside a tunnel may use (as forward-proxy transfers).
TRANSFER_METHODS = frozenset({"PUT", "POST"})


@dataclass(frozen=True, slots=True)
class Tunnel:
    """An open ``CONNECT`` tunnel: where it leads and who opened it.

    Attributes:
        host: the ``CONNECT`` host (lower case; an IP address without brackets).
        port: its port.
        sender: the sender identity that opened it; every transfer inside is theirs.
    """

    host: str
    port: int
    sender: str

    @property
    def authority(self) -> str:
        """``host:port`` as written in a URL (IPv6 in brackets)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{shown}:{self.port}"


def tunnel_of(request: web.Request) -> Tunnel | None:
    """The tunnel a request arrived through, if it did."""
    protocol = request.protocol
    tunnel = getattr(protocol, "tunnel", None)
    return tunnel if isinstance(tunnel, Tunnel) else None


def parse_authority(raw: str) -> tuple[str, int]:
    """``host:port`` of a ``CONNECT`` request (RFC 9110 §9.3.6: authority-form, port required).

    Raises:
        ClientError: not a host and a port.
    """
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClientError("CONNECT takes host:port (authority-form, with the port)")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ClientError("CONNECT: the bracketed host is not an IPv6 address") from None
    elif not host or ":" in host or any(c in host for c in "/?#@ \t"):
        raise ClientError("CONNECT takes host:port (authority-form, with the port)")
    return host.lower(), int(port_text)


def tunnel_url(tunnel: Tunnel, request: web.Request) -> str:
    """The absolute ``https://`` URL a request inside the tunnel addresses.

    Raises:
        Problem: 405 for a method other than a transfer's.
        ClientError: an origin-form target is required, and a ``Host`` header
            must name the tunnel's host and port.
    """
    if request.method not in TRANSFER_METHODS:
        raise Problem(
            MethodNotAllowed,
            f"inside a tunnel only transfers are taken ({', '.join(sorted(TRANSFER_METHODS))})",
            headers={"Allow": ", ".join(sorted(TRANSFER_METHODS))},
        )
    target = request.raw_path
    if not target.startswith("/"):
        raise ClientError("inside a tunnel a request names its path (origin-form)")
    host = request.headers.get("Host")
    if host is not None and _normal_host(host, tunnel.port) != (tunnel.host, tunnel.port):
        raise ClientError("the Host header names another place than the tunnel leads to")
    return f"https://{tunnel.authority}{target}"


def _normal_host(value: str, default_port: int) -> tuple[str, int]:
    """A ``Host`` header's host and port (``default_port`` when it names none)."""
    has_port = "]:" in value if value.startswith("[") else ":" in value
    try:
        return parse_authority(value if has_port else f"{value}:{default_port}")
    except ClientError:
        return ("", 0)


def _sni_must_name(host: str) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """An SNI callback refusing a server name other than the tunnel's host."""

    def check(
        _conn: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        if server_name is None:
            return None
        with contextlib.suppress(ValueError):
            if canonical_host(server_name)[0] == host:
                return None
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    return check


def proxy_sender(request: web.Request, tokens: TokenTable) -> str:
    """Who opens the tunnel: the proxy listener's client certificate, else a proxy bearer token.

    Raises:
        Problem: 407 with ``Proxy-Authenticate`` when neither names a sender.
    """
    common_name = peer_common_name(request)
    if common_name is not None:
        return common_name
    values = request.headers.getall("Proxy-Authorization", ())
    if len(values) > 1:
        raise ClientError("more than one Proxy-Authorization header")
    token = _proxy_token(values[0] if values else "")
    identity = tokens.lookup(token) if token else None
    if identity is None:
        detail = (
            "unknown proxy bearer token"
            if token
            else "CONNECT needs a sender identity: Proxy-Authorization: Bearer <token>"
        )
        raise Problem(
            ProxyAuthenticationRequired, detail, headers={"Proxy-Authenticate": PROXY_CHALLENGE}
        )
    return identity


def _proxy_token(value: str) -> str:
    """The sender token of a ``Proxy-Authorization`` header: ``Bearer <token>``, or
    ``Basic`` with the token as password (what ``HTTPS_PROXY=http://name:token@host:port``
    makes curl, requests and httpx send); empty when there is none."""
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


async def open_tunnel(
    request: web.Request,
    tokens: TokenTable,
    allowed: frozenset[tuple[str, int]],
    context_for: Callable[[str], ssl.SSLContext],
) -> web.StreamResponse:
    """Answer a ``CONNECT``: refuse it, or open the tunnel (see the module docstring).

    Args:
        request: the ``CONNECT`` request.
        tokens: the senders' bearer tokens.
        allowed: the ``(host, port)`` pairs routes lead to.
        context_for: the interception CA's server context for a host name.

    Raises:
        Problem: 407 (no sender), 403 (not a route's destination).
        ClientError: a malformed authority, or TLS bytes sent before the ``200``.
    """
    sender = proxy_sender(request, tokens)
    note(request, identity=sender)
    host, port = parse_authority(request.raw_path)
    if (host, port) not in allowed:
        # Not echoed: the host is the client's text and may hold an identifier.
        raise Forbidden("CONNECT: no route leads to that host and port; nothing is tunnelled")
    protocol = request.protocol
    if not isinstance(protocol, GatewayRequestHandler):
        raise Unavailable("this listener cannot open tunnels")
    if request.content.total_bytes:
        raise ClientError("bytes arrived before the tunnel was established: wait for its 200")
    try:
        host = canonical_host(host)[0]
        context = await asyncio.to_thread(context_for, host)
    except ValueError:
        raise ClientError("CONNECT: that host name cannot have a certificate") from None
    # The leaf names the CONNECT host: a client asking for another name in its
    # SNI is not talking to where the tunnel was allowed to lead. (The context
    # is this host's alone, so every tunnel to it sets the same check.)
    context.sni_callback = _sni_must_name(host)
    tunnel = Tunnel(host, port, sender)
    opened = await protocol.continue_in_tunnel(context, tunnel, ESTABLISHED)
    log.info("tunnel_opened" if opened else "tunnel_handshake_failed", host=host, port=port)
    # aiohttp writes this nowhere: the connection belongs to the tunnel now.
    return web.Response(status=200)


#: The egress's interception CA, when ``egress.intercept`` configures one.
INTERCEPT = web.AppKey("intercept", InterceptionCA)


async def handle_connect(request: web.Request) -> web.StreamResponse:
    """``CONNECT host:port`` on the egress listener (see the module docstring).

    Raises:
        Problem: 405 when no interception CA is configured (nothing is tunnelled
            blind), 407, 403.
    """
    ca = request.app.get(INTERCEPT)
    if ca is None:
        raise Problem(
            MethodNotAllowed,
            "this gateway opens no tunnels (egress.intercept is not configured): "
            "send the transfer as PUT /v1/transfers/{route}/{name} or as an http:// proxy request",
            headers={"Allow": "PUT, POST"},
        )
    state = request.app[EGRESS]
    policy = state.current_policy()
    allowed = frozenset(
        (dest.host, dest.port)
        for dest in (endpoint(route.destination) for route in policy.routes.values())
        if dest.scheme == "https" and dest.port is not None
    )
    return await open_tunnel(request, state.tokens, allowed, ca.context_for)


async def handle_tunnelled(request: web.Request, tunnel: Tunnel) -> web.StreamResponse:
    """A request inside a tunnel: a transfer to ``https://host:port/path`` (module docstring)."""
    url = tunnel_url(tunnel, request)
    state = request.app[EGRESS]
    route, last = route_for(list(state.current_policy().routes.values()), url)
    return await run_transfer(request, route.name, unquote(last))
