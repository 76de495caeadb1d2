"""The destination interface: where a released transfer's bytes go, parsed once from its URL.

A route's destination URL is parsed once (:func:`endpoint`, cached) into an
:class:`Endpoint`; the kind of destination follows from how the transfer goes
out (its ``encrypt`` mode). Each kind is one module that registers itself
(:class:`Destination` subclasses name their mode): the twin's envelope
endpoint (:mod:`~gateway.server.destinations.twin`) and a plain HTTPS
endpoint over mutual TLS (:mod:`~gateway.server.destinations.https`).
Only a transfer past :meth:`~gateway.server.transfer.Transfer.begin_forwarding`
reaches :meth:`Destination.send`.
"""

from __future__ import annotations

import functools
import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from gateway.server.egress_state import EgressState
from gateway.server.forward import Forwarded, join_url, post_bytes, post_stream
from gateway.server.job import Job
from gateway.server.spool import READ_SIZE

#: RFC 9110 §4.2: the port a URI without one means.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: The ingress twin's envelope endpoint, ``/v1/envelopes/{route}/{name}``.
ENVELOPE_PREFIX = ("v1", "envelopes")
#: Parsed destination URLs kept per process: a policy names a handful.
ENDPOINT_CACHE = 256


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A destination URL, parsed once.

    Attributes:
        url: the URL as the policy gives it.
        scheme: ``https`` (``http`` only for loopback test endpoints).
        host: the host name, lower case.
        port: the effective port (explicit, else the scheme's default), or
            None when the URL's port is malformed.
        path: the path, without leading or trailing ``/``.
        origin: ``scheme://host:port`` as written.
    """

    url: str
    scheme: str
    host: str
    port: int | None
    path: str
    origin: str

    @property
    def tls(self) -> bool:
        """Whether the endpoint is reached over TLS (the upstream client context)."""
        return self.scheme == "https"

    def ssl_context(self, state: EgressState) -> ssl.SSLContext | None:
        """The TLS client context for this endpoint (None: plain HTTP on loopback)."""
        return state.upstream_ssl if self.tls else None

    def file_url(self, route: str, name: str) -> str:
        """Where a file goes: ``url/name``, or the twin's default endpoint.

        A destination with a path (``https://twin:9443/v1/envelopes/sz-lab``)
        names the endpoint itself; a bare twin address (``https://twin:9443``)
        gets the ingress's standard ``/v1/envelopes/{route}``.
        """
        if self.path:
            return join_url(self.url, name)
        return join_url(self.url, *ENVELOPE_PREFIX, route, name)


@functools.lru_cache(maxsize=ENDPOINT_CACHE)
def endpoint(url: str) -> Endpoint:
    """``url`` parsed (once per URL: the result is cached)."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    return Endpoint(
        url=url,
        scheme=parts.scheme,
        host=(parts.hostname or "").lower(),
        port=port,
        path=parts.path.strip("/"),
        origin=f"{parts.scheme}://{parts.netloc}",
    )


class Destination(ABC):
    """Sends a released transfer to one kind of destination; one subclass per ``encrypt`` mode."""

    #: The ``encrypt`` mode this kind of destination serves.
    mode: ClassVar[str]
    _kinds: ClassVar[dict[str, type[Destination]]] = {}

    def __init_subclass__(cls, *, mode: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.mode = mode
        Destination._kinds[mode] = cls

    def __init__(self, where: Endpoint) -> None:
        self.endpoint = where

    @abstractmethod
    async def send(self, state: EgressState, job: Job) -> tuple[Forwarded, str | None]:
        """Send the released ``job``; what went out and the recipient key's fingerprint.

        Raises:
            UpstreamError: the destination failed or refused (``UpstreamTimeout``,
                ``DestinationConflict`` among them).
        """


def destination(url: str, encrypt: str) -> Destination:
    """The destination at ``url`` for a transfer that goes out as ``encrypt``.

    Raises:
        KeyError: no destination kind serves ``encrypt`` (the policy schema
            allows only the registered modes).
    """
    return Destination._kinds[encrypt](endpoint(url))


async def post(
    state: EgressState,
    url: str,
    headers: dict[str, str],
    ssl_context: ssl.SSLContext | None,
    method: str,
    body: bytes | Iterator[bytes],
    *,
    prefix: bytes = b"",
    threaded: bool = False,
) -> Forwarded:
    """Send ``body`` whole if it is bytes, else ``prefix`` and the blocks streamed.

    A small spool (kept in memory) goes out as one body with a Content-Length:
    headers and body leave in one TLS write and reach the twin in one read,
    where chunked streaming costs a write, a TLS record and a wake-up per
    piece (header, payload, terminator) on both sides. A spool file streams
    (its reads in a worker thread when ``threaded``).
    """
    assert state.session is not None
    if isinstance(body, bytes):
        return await post_bytes(
            state.session, url, body, headers=headers, ssl_context=ssl_context, method=method
        )
    return await post_stream(
        state.session,
        url,
        body,
        prefix=prefix,
        threaded=threaded,
        headers=headers,
        ssl_context=ssl_context,
        method=method,
    )


def streams_threaded(job: Job) -> bool:
    """Whether the spool is large enough for its reads to run in a worker thread."""
    return job.info.payload_bytes > READ_SIZE
