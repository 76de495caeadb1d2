"""The gateway's error hierarchy; each error knows whose fault it is.

Like ``h11.ProtocolError``, every error carries an HTTP status hint so that the
server renders it exactly once, as RFC 9457 problem+json, in one middleware.
Messages never contain payload bytes or matched values.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base class of every error the gateway reports to a user.

    Attributes:
        status: the HTTP status the server answers with.
        slug: a stable, machine-readable problem type (the last part of the
            problem ``type`` URI).
        title: a short human summary of the problem type.
    """

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal gateway error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ClientError(GatewayError):
    """The request is malformed: the sender must change it."""

    status = 400
    slug = "bad-request"
    title = "Bad request"


#: RFC 9110 §11.6.1: a 401 carries at least one challenge. Senders, officers
#: and metrics scrapers authenticate with bearer tokens (RFC 6750 §3).
BEARER_CHALLENGE = 'Bearer realm="hksz-gateway"'


class Unauthenticated(ClientError):
    """No or unknown sender identity.

    Args:
        detail: the human explanation.
        challenge: the ``WWW-Authenticate`` challenge the 401 carries.
    """

    status = 401
    slug = "unauthenticated"
    title = "Unknown sender"

    def __init__(self, detail: str, challenge: str = BEARER_CHALLENGE) -> None:
        super().__init__(detail)
        self.challenge = challenge


class Forbidden(ClientError):
    """The sender is known but may not do this (not a policy verdict)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ClientError):
    """Unknown route, transfer or review."""

    status = 404
    slug = "not-found"
    title = "Not found"


class ProxyAuthenticationRequired(ClientError):
    """A ``CONNECT`` without a sender identity (issue 18): the proxy asks for one."""

    status = 407
    slug = "proxy-authentication-required"
    title = "Proxy authentication required"


class MethodNotAllowed(ClientError):
    """A method the resource does not take (inside a tunnel: only transfers)."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(ClientError):
    """The object is not in a state that allows the request."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(ClientError):
    """The body exceeds the configured size cap."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UpstreamError(GatewayError):
    """The destination or the twin gateway failed."""

    status = 502
    slug = "upstream-error"
    title = "Upstream failure"


class UpstreamTimeout(UpstreamError):
    """The destination or the twin gateway did not answer in time."""

    status = 504
    slug = "upstream-timeout"
    title = "Upstream timeout"


class Unavailable(GatewayError):
    """The gateway cannot decide safely right now, so it fails closed."""

    status = 503
    slug = "unavailable"
    title = "Gateway unavailable"


class ConfigError(GatewayError):
    """A configuration, policy or key file is invalid (CLI: exit 1 or 2)."""

    status = 500
    slug = "config-error"
    title = "Configuration error"
