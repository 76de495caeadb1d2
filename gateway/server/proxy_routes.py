"""Forward-proxy routing: which route a plain-HTTP proxy request (absolute URI) names.

A client configured with the gateway as its HTTP proxy sends
``PUT http://twin:9443/v1/envelopes/sz-lab/data.csv``; the route is the one
whose destination (parsed once, :func:`gateway.server.destinations.endpoint`)
has the request's host and port and whose path is the longest prefix of the
request's directory. The transfer then runs as any other
(:func:`gateway.server.egress.run_transfer`).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from aiohttp import web

from gateway.errors import ClientError, Forbidden
from gateway.policy.engine import Route
from gateway.server.auth import sender_identity
from gateway.server.destinations import endpoint
from gateway.server.destinations.base import DEFAULT_PORTS
from gateway.server.egress import run_transfer
from gateway.server.egress_state import EGRESS


def route_for(routes: list[Route], target: str) -> tuple[Route, str]:
    """The route an absolute proxy URI names, and the file name it ends in (still quoted).

    The route is the one whose destination has the target's host and port
    and whose destination path is the longest prefix of the target's
    directory (``http://twin:9443/v1/envelopes/sz-lab/data.csv`` is route
    ``sz-lab``; a bare ``http://twin:9443/data.csv`` needs a route whose
    destination is the bare twin address). The last path segment is the file name.

    Raises:
        Forbidden: the host and port are not any route's destination (SPEC §5: 403).
        ClientError: a malformed target, or several routes fit equally well.
    """
    parts = urlsplit(target)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        raise ClientError("the proxy request's target has a malformed port") from None
    host = (parts.hostname or "").lower()
    if not host or port is None:
        raise ClientError("the proxy request's target must be an http(s) URL with a host")
    directory, _, last = parts.path.rpartition("/")
    directory = directory.strip("/")
    best: list[Route] = []
    best_length = -1
    for route in routes:
        dest = endpoint(route.destination)
        # Effective ports: a target without a port means its scheme's default
        # port, which must be the destination's (explicit or by its scheme).
        if dest.host != host or dest.port != port:
            continue
        prefix = dest.path
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
    return best[0], last


async def handle_forward_proxy(request: web.Request) -> web.StreamResponse:
    """A plain-HTTP proxy request (absolute URI): a transfer on the route it names.

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
    route, last = route_for(list(policy.routes.values()), request.raw_path)
    return await run_transfer(request, route.name, unquote(last))
