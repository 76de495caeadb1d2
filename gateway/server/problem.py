"""RFC 9457 problem+json: the one place errors become HTTP responses (STYLE.md §5).

Handlers raise :class:`~gateway.errors.GatewayError` subclasses (or
:class:`Problem` when a response carries verdict fields); this middleware
renders them. Anything else is a gateway bug: it is logged without payload and
answered 500, fail closed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from gateway.errors import (
    BEARER_CHALLENGE,
    GatewayError,
    Unauthenticated,
    Unavailable,
)
from gateway.server.config import RETRY_AFTER_SECONDS

#: Media type of RFC 9457 problem details.
PROBLEM_JSON = "application/problem+json"
#: Base of the ``type`` URIs; the slug of the error class completes it.
PROBLEM_TYPE_BASE = "https://hksz-gateway.dev/problems/"

log = structlog.get_logger("gateway.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(GatewayError):
    """A GatewayError with a chosen status and extension members.

    Used where the problem carries more than a detail: a blocked verdict (403
    with the verdict fields), or any error that names its ``transfer_id``.

    Args:
        base: the error class whose status, slug and title apply.
        detail: the human explanation.
        extensions: RFC 9457 extension members (verdict fields, transfer_id).
        headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        base: type[GatewayError],
        detail: str,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.base = base
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})


def json_line(value: Any) -> bytes:
    """UTF-8 JSON plus a newline, so ``curl`` output ends cleanly on a terminal."""
    return (json.dumps(value, ensure_ascii=False) + "\n").encode()


def json_response(value: Any, status: int = 200) -> web.Response:
    """A JSON verdict or status response (one line, newline-terminated)."""
    return web.Response(body=json_line(value), status=status, content_type="application/json")


def problem_response(
    error: GatewayError,
    *,
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Render ``error`` as an RFC 9457 response."""
    base: type[GatewayError] = error.base if isinstance(error, Problem) else type(error)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + base.slug,
        "title": base.title,
        "status": base.status,
        "detail": error.detail,
    }
    all_headers: dict[str, str] = {}
    if isinstance(error, Problem):
        body.update(error.extensions)
        all_headers.update(error.headers)
    body.update(extensions or {})
    all_headers.update(headers or {})
    if base.status == Unavailable.status and "Retry-After" not in all_headers:
        all_headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if base.status == Unauthenticated.status and "WWW-Authenticate" not in all_headers:
        # RFC 9110 §15.5.2: every 401 names how to authenticate.
        all_headers["WWW-Authenticate"] = (
            error.challenge if isinstance(error, Unauthenticated) else BEARER_CHALLENGE
        )
    return web.Response(
        status=base.status,
        body=json_line(body),
        content_type=PROBLEM_JSON,
        headers=all_headers,
    )


_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "payload-too-large",
    431: "request-header-fields-too-large",
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error raised by a handler into problem+json, once."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return problem_response(exc)
    except web.HTTPException as exc:
        # aiohttp's own routing errors (404 no route, 405, 413 from client_max_size).
        if exc.status < 400:
            raise
        body = {
            "type": PROBLEM_TYPE_BASE + _HTTP_SLUGS.get(exc.status, "http-error"),
            "title": exc.reason,
            "status": exc.status,
            "detail": exc.reason,
        }
        return web.Response(
            status=exc.status,
            body=json_line(body),
            content_type=PROBLEM_JSON,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception as exc:  # noqa: BLE001 - fail closed: a bug is a 500, never a forward
        # The route template, never the path: it holds the client's route and file name.
        resource = request.match_info.route.resource
        endpoint = resource.canonical if resource is not None else None
        log.error("internal_error", error_type=type(exc).__name__, endpoint=endpoint)
        return problem_response(GatewayError("internal gateway error; nothing was forwarded"))
