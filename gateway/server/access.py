"""The access log and the request metrics of both listeners (issue 16).

One JSON line per request, event ``access``: method, the handler's name and
route *template* (``transfer``, ``/v1/transfers/{route}/{path}``; never the
raw path: a file name or a path segment may hold the very value a transfer
was blocked for), status,
bytes in and out, duration, the sender (or twin, or officer) identity once
authenticated, and the transfer id once one exists. Beside it,
``gateway_http_requests_total{listener,handler,code}`` and
``gateway_http_request_duration_seconds{listener,handler}``.

Handlers say who and which transfer through :func:`note`; the middleware is
the outermost one, so it sees the status the client gets (problem+json
answers included) and the whole time the request took.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.obs.metrics import Metrics
from gateway.server.problem import Handler
from gateway.server.transfer import TRANSFER_ID

log = structlog.get_logger("gateway.access")

#: The ``handler`` of a request no route matched, and of a forward-proxy request.
UNMATCHED = "unmatched"
FORWARD_PROXY = "forward-proxy"
#: The ``handler`` of a ``CONNECT``, and of a request inside its tunnel (issue 18).
CONNECT = "connect"
TUNNELLED = "tunnelled"
#: nginx's code for a request whose client went away before the answer.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class AccessNote:
    """What a handler learnt about the request, for its access-log line."""

    identity: str | None = None
    transfer_id: str | None = None


#: Where a request keeps its :class:`AccessNote`.
ACCESS_NOTE = web.RequestKey("access_note", AccessNote)


def note(
    request: web.Request, *, identity: str | None = None, transfer_id: str | None = None
) -> None:
    """Tell the access log who sent the request or which transfer it is about."""
    entry = request.get(ACCESS_NOTE)
    if entry is None:
        return
    if identity is not None:
        entry.identity = identity
    if transfer_id is not None:
        entry.transfer_id = transfer_id


def handler_of(request: web.Request) -> tuple[str, str]:
    """The handler's name (a slug, the metric label) and its route template.

    Both are fixed by the application, never taken from the request, so
    neither can carry what a client put in the URL.
    """
    if request.raw_path.startswith(("http://", "https://")):
        return FORWARD_PROXY, FORWARD_PROXY
    if request.method == "CONNECT":
        return CONNECT, CONNECT
    if getattr(request.protocol, "tunnel", None) is not None:
        return TUNNELLED, TUNNELLED
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED, UNMATCHED
    return resource.name or UNMATCHED, resource.canonical


def _bytes_out(response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    return response.content_length or 0


#: Names the replica that answered (behind a balancer, ops need to know which).
INSTANCE_HEADER = "X-Gateway-Instance"


def access_middleware(metrics: Metrics, listener: str, instance: str = "") -> Middleware:
    """The outermost middleware of ``listener`` (``egress`` or ``ingress``) of ``instance``."""

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        entry = AccessNote()
        request[ACCESS_NOTE] = entry
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            if instance and not response.prepared:
                response.headers[INSTANCE_HEADER] = instance
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            name, template = handler_of(request)
            metrics.http_requests.labels(listener, name, str(status)).inc()
            metrics.http_duration.labels(listener, name).observe(elapsed)
            transfer_id = entry.transfer_id
            if transfer_id is None:
                offered = request.match_info.get("id", "")
                transfer_id = offered if TRANSFER_ID.fullmatch(offered) else None
            log.info(
                "access",
                listener=listener,
                method=request.method,
                handler=name,
                path_template=template,
                status=status,
                bytes_in=request.content.total_bytes,
                bytes_out=_bytes_out(response),
                duration_ms=round(elapsed * 1000, 3),
                identity=entry.identity,
                transfer_id=transfer_id,
                instance=instance or None,
            )

    return access
