"""The transfer record writer: a transfer's audit records, and what the park sees of them.

Every record of a transfer is appended here (:func:`append_record`), counted
in ``gateway_transfer_outcomes_total`` and published to the park's shared
directory beside the request (issue 16); a request answers only once those
directory writes landed (:func:`published`). The verdict members every answer
carries (:func:`verdict_fields`) and the receipt's JSON form live here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Literal

import structlog

from gateway.audit.receipt import Receipt
from gateway.audit.records import Decision as DecisionName
from gateway.audit.records import TransferEvent, transfer_record
from gateway.classify.summary import ScanSummary
from gateway.errors import GatewayError, Unavailable
from gateway.ledger.base import TransferEntry
from gateway.policy.engine import Decision
from gateway.server.egress_state import EgressState
from gateway.server.forward import Forwarded
from gateway.server.transfer import State, Transfer

log = structlog.get_logger("gateway.egress")


def verdict_fields(transfer: Transfer, summary: ScanSummary, decision: Decision) -> dict[str, Any]:
    """The SPEC §5 verdict members common to every response."""
    return {
        "transfer_id": transfer.id,
        "decision": decision.action,
        "rule": decision.rule,
        "labels": {
            label: {"count": s.count, "distinct": s.distinct}
            for label, s in sorted(summary.labels.items())
        },
        "subjects": summary.subjects,
        "bytes": summary.size,
        "sha256": summary.sha256,
        "policy_version": decision.policy_version,
        # The rule's reason, allowed transfers included: allow rules carry the
        # sender's remaining duties (PIPL Art. 39 notice and consent).
        "reason": decision.reason,
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """The receipt as it appears in verdicts and ``/receipt`` (the audit log's JSON form)."""
    return receipt.to_json()


async def append_record(
    state: EgressState,
    event: TransferEvent,
    transfer: Transfer,
    *,
    direction: str,
    decision: DecisionName,
    rule: str,
    reason: str,
    policy_version: str,
    summary: ScanSummary | None = None,
    size: int | None = None,
    forwarded: Forwarded | None = None,
    recipient_key: str | None = None,
    detail: str | None = None,
    shadow: Mapping[str, str] | None = None,
    officer: str | None = None,
    comment: str | None = None,
    reference: str | None = None,
) -> Any:
    """Append one audit record; 503 (fail closed) when the log cannot take it."""
    record = transfer_record(
        event=event,
        transfer_id=transfer.id,
        sender=transfer.sender,
        organisation=transfer.organisation or None,
        route=transfer.route,
        direction=direction,
        decision=decision,
        rule=rule,
        reason=reason,
        policy_version=policy_version,
        summary=summary,
        size=size,
        ciphertext_bytes=forwarded.bytes if forwarded else None,
        ciphertext_sha256=forwarded.sha256 if forwarded else None,
        recipient_key=recipient_key,
        upstream_status=forwarded.status if forwarded else None,
        timings_us=transfer.timings_us(),
        detail=detail,
        shadow=shadow,
        officer=officer,
        comment=comment,
        reference=reference,
        justification=transfer.justification,
    )
    try:
        receipt = await state.audit.append(record)
    except GatewayError:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise
    except Exception as exc:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise Unavailable(
            "the audit log cannot be written; the transfer was not forwarded"
        ) from exc
    outcome = _OUTCOMES.get(event)
    # A four-eyes review's first approval is a `review` record naming the officer:
    # the transfer was held once, not again.
    if outcome is not None and not (event == "review" and officer is not None):
        state.services.metrics.transfer_outcomes.labels(transfer.route, outcome).inc()
    _publish(state, event, transfer, receipt, decided=event in _DECISIONS and not officer)
    return receipt


#: The records that carry a transfer's decision: the receipt the status API gives.
_DECISIONS = frozenset({"allowed", "blocked", "review"})


def _publish(
    state: EgressState, event: str, transfer: Transfer, receipt: Receipt, *, decided: bool
) -> None:
    """Tell the park's other replicas what this record made of the transfer (issue 16).

    With a PostgreSQL ledger, any replica then answers its status and receipt;
    a single gateway shares nothing (:class:`~gateway.ledger.base.LocalOnly`).
    The write runs beside the request, not inside it: a verdict record is
    appended under the organisation's ledger lock, and a second pooled
    connection taken there could wait for ever on transactions that wait for
    it. The request answers only once its writes landed (:func:`published`).
    The record is durable already: a directory that does not answer leaves
    the other replicas a step behind, it does not fail the transfer.
    """
    if not state.park_wide:
        return
    status = transfer.status_json()
    status["state"] = event
    if not status["history"] or status["history"][-1]["state"] != event:
        status["history"].append({"state": event, "at": round(time.time(), 3)})
    if event == "review":
        # What the park's review queue shows an officer on any replica.
        status["organisation"] = transfer.organisation
        status["justification"] = transfer.justification
    entry = TransferEntry(
        transfer.id,
        state.instance,
        transfer.sender,
        status,
        receipt_json(receipt) if decided else None,
    )

    async def write() -> None:
        try:
            await state.services.directory.publish_transfer(entry, receipt.index)
        except GatewayError as exc:
            log.warning("transfer_not_published", transfer_id=transfer.id, error=exc.title)
            _keep_unpublished(state, entry, receipt.index)
        else:
            waiting = state.unpublished.get(transfer.id)
            if waiting is not None and waiting[1] <= receipt.index:
                del state.unpublished[transfer.id]

    task = asyncio.ensure_future(write())
    state.track(task)
    pending = state.publishing.setdefault(transfer.id, [])
    pending.append(task)

    def landed(done: asyncio.Future[Any]) -> None:
        pending.remove(done)
        if not pending and state.publishing.get(transfer.id) is pending:
            del state.publishing[transfer.id]

    task.add_done_callback(landed)


#: The most failed directory writes a replica keeps for retrying: past it the
#: oldest are dropped (their transfers answer on this replica, from its log).
MAX_UNPUBLISHED = 10_000
#: Seconds between retries of the failed directory writes.
REPUBLISH_SECONDS = 5.0


def _keep_unpublished(state: EgressState, entry: TransferEntry, seq: int) -> None:
    """Keep a write the directory did not take, to retry; a newer one of the same transfer wins."""
    waiting = state.unpublished.get(entry.transfer_id)
    if waiting is not None and waiting[1] > seq:
        return
    state.unpublished[entry.transfer_id] = (entry, seq)
    state.unpublished.move_to_end(entry.transfer_id)
    while len(state.unpublished) > MAX_UNPUBLISHED:
        dropped, _ = state.unpublished.popitem(last=False)
        log.error("transfer_publish_dropped", transfer_id=dropped)


async def republish(state: EgressState) -> int:
    """Retry the directory writes that failed, oldest first; how many landed.

    Stops at the first that fails again (the directory is still down). A
    write ordered after one already there is refused by the directory
    itself (``seq``), so a retry never undoes a newer state.
    """
    landed = 0
    for transfer_id, (entry, seq) in list(state.unpublished.items()):
        try:
            await state.services.directory.publish_transfer(entry, seq)
        except GatewayError:
            break
        if state.unpublished.get(transfer_id) == (entry, seq):
            del state.unpublished[transfer_id]
        landed += 1
    if landed:
        log.info("transfers_republished", count=landed, waiting=len(state.unpublished))
    return landed


async def republish_periodically(state: EgressState) -> None:
    """Run :func:`republish` every :data:`REPUBLISH_SECONDS` while writes wait."""
    while True:
        await asyncio.sleep(REPUBLISH_SECONDS)
        if state.unpublished:
            await republish(state)


#: How long a request waits for its transfer's directory writes before answering.
PUBLISH_WAIT_SECONDS = 5.0


async def published(state: EgressState, transfer_id: str) -> None:
    """Wait (bounded) until what was recorded of the transfer is visible to the other replicas."""
    tasks = list(state.publishing.get(transfer_id, ()))
    if tasks:
        await asyncio.wait(tasks, timeout=PUBLISH_WAIT_SECONDS)


#: The records that end a transfer, or hold it, as ``gateway_transfer_outcomes_total`` names them.
_OUTCOMES: dict[str, str] = {
    "delivered": "delivered",
    "blocked": "blocked",
    "review": "held",
    "rejected": "rejected",
    "failed": "failed",
    "aborted": "aborted",
}


async def record_end(
    state: EgressState,
    transfer: Transfer,
    final: Literal[State.ABORTED, State.FAILED],
    why: str,
    *,
    direction: str,
    policy_version: str,
    size: int | None,
    decision: DecisionName = "block",
    rule: str = "gateway.fail-closed",
    summary: ScanSummary | None = None,
) -> None:
    """End a transfer aborted/failed and log it; a log failure here is only logged."""
    event = transfer.end(final)
    try:
        await append_record(
            state,
            event,
            transfer,
            direction=direction,
            decision=decision,
            rule=rule,
            reason=why,
            policy_version=policy_version,
            summary=summary,
            size=size,
            detail=why,
        )
    except GatewayError:
        log.error("audit_end_record_failed", transfer_id=transfer.id, state=final.value)
    log.warning("transfer_" + event, transfer_id=transfer.id, why=why)
