"""The twin protocol: the ingress twin's envelope endpoint as a destination (SPEC §6).

An allowed transfer goes to the twin as an age file (``encrypt: envelope``):
the recipient's header, which wraps the spool's file key, then the spool's
payload as it is (the spool *is* the age payload). With the pipelined upload
the payload streamed to ``/v1/payloads/{id}`` while the body was classified
(:func:`start_upload`), and only the header follows, after an allow verdict,
naming the payload it releases (:data:`H_PAYLOAD`). The ``X-Gateway-…``
headers tell the twin who sent what under which verdict (metadata only).
"""

from __future__ import annotations

from gateway.crypto.age import build_header
from gateway.policy.engine import Route
from gateway.server.destinations.base import Destination, endpoint, post, streams_threaded
from gateway.server.egress_state import EgressState
from gateway.server.forward import Forwarded, PayloadUpload, join_url
from gateway.server.job import Job
from gateway.server.spool import SpoolWriter, iter_payload
from gateway.server.transfer import Transfer

#: Headers that tell the twin who sent what under which verdict (metadata only).
H_TRANSFER = "X-Gateway-Transfer-Id"
H_SENDER = "X-Gateway-Sender"
H_ORGANISATION = "X-Gateway-Organisation"
H_RULE = "X-Gateway-Rule"
H_POLICY = "X-Gateway-Policy-Version"
H_DIRECTION = "X-Gateway-Direction"
#: The twin's endpoint for payloads streamed ahead of their header (pipelined mode).
PAYLOAD_PREFIX = ("v1", "payloads")
#: Names the pipelined payload an envelope's header belongs to.
H_PAYLOAD = "X-Gateway-Payload"
#: The transfer whose delivered file of the same name this one may replace: a
#: sender's header, passed on to the twin as it is (issue 16).
H_REPLACE = "X-Gateway-Replace"


def twin_headers(transfer: Transfer, direction: str, rule: str, version: str) -> dict[str, str]:
    """The metadata headers of a transfer's request to its destination."""
    headers = {
        H_TRANSFER: transfer.id,
        H_SENDER: transfer.sender,
        H_ORGANISATION: transfer.organisation,
        H_RULE: rule,
        H_POLICY: version,
        H_DIRECTION: direction,
        "Content-Type": "application/octet-stream",
    }
    if transfer.replaces is not None:
        headers[H_REPLACE] = transfer.replaces
    return headers


def start_upload(
    state: EgressState, transfer: Transfer, route: Route, writer: SpoolWriter
) -> PayloadUpload | None:
    """A pipelined upload for an envelope route, if configured and possible."""
    if not state.config.pipelined or route.encrypt != "envelope" or not route.recipient:
        return None
    if state.session is None:
        return None
    twin = endpoint(route.destination)
    url = join_url(twin.origin, *PAYLOAD_PREFIX, transfer.id)
    header = build_header(writer.file_key, [state.recipient(route)])
    return PayloadUpload(
        state.session,
        url,
        twin_headers(transfer, route.direction, "pending", "pending"),
        twin.ssl_context(state),
        header,
        writer.nonce,
        # A twin that takes no payload bytes for as long as a sender may stay
        # silent has stalled: the transfer continues the classic way.
        stall_timeout=state.config.idle_timeout,
    )


class TwinEnvelope(Destination, mode="envelope"):
    """The twin's envelope endpoint: an age file the route's recipient decrypts."""

    async def send(self, state: EgressState, job: Job) -> tuple[Forwarded, str | None]:
        """POST the header and the payload, or only the header of a pipelined payload.

        ``job.header`` is the recipient's header if it was built ahead (while
        the verdict record was being made durable).
        """
        assert job.release is not None
        transfer, route = job.transfer, job.route
        url = self.endpoint.file_url(route.name, transfer.path)
        headers = twin_headers(
            transfer, route.direction, job.release.rule, job.release.policy_version
        )
        ssl_context = self.endpoint.ssl_context(state)
        recipient = state.recipient(route)
        upload = job.upload
        if upload is not None:
            # Pipelined: the twin holds the payload; the header releases it (SPEC §6).
            headers[H_PAYLOAD] = transfer.id
            sent = await post(state, url, headers, ssl_context, "POST", upload.header)
            return Forwarded(sent.status, upload.bytes, upload.digest.hexdigest()), (
                recipient.fingerprint()
            )
        info = job.info
        if job.header is not None:
            prefix = await job.header
        else:
            prefix = build_header(info.file_key, [recipient])  # one X25519 exchange: ~0.1 ms
        if info.payload is not None:
            sent = await post(state, url, headers, ssl_context, "POST", prefix + info.payload)
        else:
            sent = await post(
                state,
                url,
                headers,
                ssl_context,
                "POST",
                iter_payload(info.path),
                prefix=prefix,
                threaded=streams_threaded(job),
            )
        return sent, recipient.fingerprint()
