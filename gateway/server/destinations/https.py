"""An HTTPS endpoint as a destination: the plaintext over mutual TLS (``encrypt: tls``).

The spool is decrypted as it is read and PUT to the endpoint under the
route's file URL; the transfer's metadata goes with it in the twin's
``X-Gateway-…`` headers. No age recipient: the TLS session is the protection.
"""

from __future__ import annotations

from gateway.server.destinations.base import Destination, post, streams_threaded
from gateway.server.destinations.twin import twin_headers
from gateway.server.egress_state import EgressState
from gateway.server.forward import Forwarded
from gateway.server.job import Job


class HttpsEndpoint(Destination, mode="tls"):
    """An HTTPS endpoint that takes the plaintext file."""

    async def send(self, state: EgressState, job: Job) -> tuple[Forwarded, str | None]:
        """PUT the decrypted spool; no recipient key (None)."""
        assert job.release is not None
        transfer, route, info = job.transfer, job.route, job.info
        url = self.endpoint.file_url(route.name, transfer.path)
        headers = twin_headers(
            transfer, route.direction, job.release.rule, job.release.policy_version
        )
        ssl_context = self.endpoint.ssl_context(state)
        blocks = info.plaintext_blocks()
        # A spool kept in memory goes out whole (see :func:`post`), a spool file streams.
        body = b"".join(blocks) if info.payload is not None else blocks
        sent = await post(
            state, url, headers, ssl_context, "PUT", body, threaded=streams_threaded(job)
        )
        return sent, None
