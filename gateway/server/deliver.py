"""Delivering a released transfer: send it to its destination and record the outcome.

Only a transfer with an allow verdict, or an approval, gets here, and its
bytes leave only past :meth:`~gateway.server.transfer.Transfer.begin_forwarding`
(the zero-leak gate). The ``delivered`` record is durable before the sender
hears 201; a transfer that was not delivered ends ``failed`` (or ``aborted``,
cut at the drain deadline) with its spool released.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import structlog
from aiohttp import web

from gateway.errors import Conflict, GatewayError, Unavailable, UpstreamError
from gateway.server.destinations import destination
from gateway.server.destinations.twin import H_REPLACE
from gateway.server.egress_state import EgressState
from gateway.server.forward import DestinationConflict
from gateway.server.job import Job
from gateway.server.problem import Problem, json_response
from gateway.server.records import append_record, record_end
from gateway.server.transfer import State

log = structlog.get_logger("gateway.egress")


async def deliver(state: EgressState, job: Job) -> web.Response:
    """Forward an allowed/approved transfer (``job.release`` set) and record the outcome."""
    assert job.release is not None
    transfer, release, fields = job.transfer, job.release, job.fields
    metrics = state.services.metrics

    async def end(final: Literal[State.ABORTED, State.FAILED], why: str) -> None:
        """Nothing was delivered: release the spool and record how it ended."""
        state.release_spool(transfer.id, job.info)
        state.held.pop(transfer.id, None)
        await record_end(
            state,
            transfer,
            final,
            why,
            direction=job.direction,
            policy_version=release.policy_version,
            size=fields.get("bytes"),
            decision=release.decision,
            rule=release.rule,
        )

    try:
        transfer.begin_forwarding()
        target = destination(job.route.destination, release.encrypt)
        sent, recipient_fp = await target.send(state, job)
    except asyncio.CancelledError:
        # The drain deadline stopped it mid-forward (the gateway's doing, not the
        # destination's), or the transfer's own time limit ran out on a slow twin.
        if state.cut:
            await end(State.ABORTED, "gateway shutdown while forwarding")
        else:
            metrics.upstream_errors.labels(transfer.route, "error").inc()
            await end(State.FAILED, "upstream error")
        raise
    except DestinationConflict as exc:
        # The destination kept its file of that name: the sender's to resolve,
        # not an upstream failure (no upstream-error metric, no alert).
        await end(State.FAILED, "the destination holds a file of that name")
        how = (
            f"; to replace it on purpose, push again with {H_REPLACE}: {exc.existing}"
            if exc.existing
            else ""
        )
        existing = {"existing_transfer_id": exc.existing} if exc.existing else {}
        raise Problem(
            Conflict, f"{exc.detail}; nothing was replaced{how}", {**fields, **existing}
        ) from None
    except UpstreamError as exc:
        kind = "timeout" if exc.status == 504 else "error"
        metrics.upstream_errors.labels(transfer.route, kind).inc()
        await end(State.FAILED, "upstream " + kind)
        raise Problem(type(exc), f"{exc.detail}; nothing was delivered", fields) from None
    except Exception:
        await end(State.FAILED, "forwarding failure")
        raise
    transfer.mark("forward")
    state.release_spool(transfer.id, job.info)
    state.held.pop(transfer.id, None)
    metrics.transfer_bytes.labels(transfer.route, "forwarded").inc(sent.bytes)
    transfer.delivered()
    fields["upstream_status"] = sent.status
    # SPEC §7: the delivery record is durable before the sender hears 201, so
    # a delivered transfer's trail never ends at ``allowed`` (one fsync on
    # the answer's latency; see docs/running.md for the measured cost).
    try:
        await append_record(
            state,
            "delivered",
            transfer,
            direction=job.direction,
            decision=release.decision,
            rule=release.rule,
            reason=release.reason,
            policy_version=release.policy_version,
            summary=job.summary,
            size=fields.get("bytes"),
            forwarded=sent,
            recipient_key=recipient_fp,
        )
    except GatewayError as exc:
        # Delivered, but its record is missing: the log marks itself unhealthy
        # and no new transfer is accepted; the sender must not read success.
        log.error("audit_delivered_record_failed", error=exc.title)
        raise Problem(
            Unavailable,
            "the transfer was delivered but its delivery record could not be written",
            fields,
        ) from None
    transfer.verdict = dict(fields)
    log.info("transfer_delivered", upstream_status=sent.status)
    return json_response(fields, status=201)
