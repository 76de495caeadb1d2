"""Deciding under the organisation's ledger lock: one function for verdicts and approvals.

A transfer's verdict and an officer's approval of a held review are decided
the same way (:func:`decide_under_lock`): inside ONE ledger transaction for
the sender's organisation and the year, read the counts, evaluate the policy
(pure), add the subjects when the decision counts them, and append the
decision's audit record; the transaction commits only once that record is
durable when it added subjects (a failed append rolls them back: nothing
counted). What differs, the judgement, is the caller's: :func:`decide` here
for a new transfer, :func:`gateway.server.reviews._approve` for an approval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.audit.receipt import Receipt
from gateway.classify.summary import ScanSummary
from gateway.crypto.age import build_header
from gateway.errors import GatewayError, Unavailable
from gateway.ledger import ledger_year
from gateway.ledger.base import LedgerTransaction, LedgerUnavailable
from gateway.policy.engine import CompiledPolicy, Decision, TransferContext
from gateway.server.egress_state import EgressState, Held
from gateway.server.job import Job
from gateway.server.records import append_record
from gateway.server.spool import SpoolInfo
from gateway.server.transfer import Transfer

log = structlog.get_logger("gateway.egress")

#: What a sender is told when the ledger fails (never the file path or database host).
LEDGER_DOWN = "the ledger is unavailable; nothing was forwarded"


@dataclass(slots=True)
class Ruling:
    """What a judgement under the ledger lock settled, and how to record it.

    Attributes:
        policy: the policy it was judged by (read under the lock for an approval).
        context: the route and sender as that policy names them.
        decision: the policy's decision.
        digests: the transfer's people (keyed hashes) per ledger category.
        counts: whether the decision adds them to the ledger (allow, approval).
        record: appends the decision's audit record (and what must follow it).
        may_trail: when nothing was added, the transaction's commit (only a
            lock release then) may run while the record is being made
            durable; the record is still durable before this returns.
    """

    policy: CompiledPolicy
    context: TransferContext
    decision: Decision
    digests: Mapping[str, frozenset[bytes]]
    counts: bool
    record: Callable[[], Awaitable[Receipt]]
    may_trail: bool = False


async def decide_under_lock(
    state: EgressState,
    organisation: str,
    judge: Callable[[LedgerTransaction], Awaitable[Ruling]],
    *,
    unavailable: Callable[[], str],
) -> tuple[Ruling, Receipt]:
    """Judge, count and record atomically under ``organisation``'s ledger lock.

    ``judge`` reads the counts it needs from the transaction and evaluates;
    it may raise (nothing is added then: the transaction rolls back). Returns
    only with the decision's record durable.

    Raises:
        Unavailable: the ledger failed (``unavailable()`` says what to the
            client; the database file or host only reaches the log).
        GatewayError: what ``judge`` or the record raised.
    """
    metrics = state.services.metrics
    appending: asyncio.Future[Receipt] | None = None
    try:
        async with state.services.ledger.transaction(organisation, ledger_year()) as tx:
            ruling = await judge(tx)
            totals: dict[str, int] = {}
            if ruling.counts:
                # Recorded inside the transaction: if the audit append below
                # fails, the transaction rolls back and nothing was counted.
                # A category with no subjects is not written at all: a
                # transaction without writes commits without an fsync (the
                # common clean transfer keeps one durability point less).
                for category, values in ruling.digests.items():
                    if values:
                        totals[category] = await tx.add(category, values)
            appending = asyncio.ensure_future(ruling.record())
            if totals or not ruling.may_trail:
                # Subjects were added: the record is durable before they are
                # committed (a failed append rolls them back: nothing counted).
                receipt = await appending
        if not totals and ruling.may_trail:
            # Nothing was written: the commit only released the lock, so it
            # ran while the record was being fsynced (a thread round trip
            # less on the latency path). The record still precedes the verdict.
            receipt = await appending
        for category, total in totals.items():
            metrics.ledger_subjects.labels(organisation, category).set(total)
    except LedgerUnavailable as exc:
        # Its detail names the database file or host: for the log, not the client.
        metrics.fail_closed.labels("ledger").inc()
        log.error("ledger_failed", error_type=type(exc).__name__)
        raise Unavailable(unavailable()) from None
    except GatewayError:
        raise
    except Exception as exc:
        metrics.fail_closed.labels("ledger").inc()
        log.error("ledger_failed", error_type=type(exc).__name__)
        raise Unavailable(unavailable()) from exc
    finally:
        if appending is not None and not appending.done():
            # The commit failed (or we were cancelled) while the record was
            # on its way: it may still be logged; its outcome is only logged.
            state.track(appending)
    return ruling, receipt


async def decide(state: EgressState, job: Job, policy: CompiledPolicy) -> tuple[Decision, Receipt]:
    """A received transfer's verdict, evaluated and recorded under the ledger lock.

    A ``review`` keeps the spool (re-wrapped to the gateway's own key) inside
    the transaction, before its record; a ``block`` releases it afterwards.
    """
    transfer, context, summary, info = job.transfer, job.context, job.summary, job.info
    assert summary is not None
    # Only directions the policy counts (2024 Provisions: exports, sz->hk) reach the ledger.
    digests = policy.ledger_digests(summary, context.route.direction)
    held_info: SpoolInfo | None = None

    async def judge(tx: LedgerTransaction) -> Ruling:
        nonlocal held_info
        counts = await tx.counts(digests)
        decision = policy.evaluate(context, summary, counts)
        shadow = _shadow_matches(state, decision)
        if decision.action == "review":
            held_info = await asyncio.to_thread(
                _hold_spool, state, transfer, info, summary, decision, digests
            )
        event = transfer.decided(decision.action)
        return Ruling(
            policy,
            context,
            decision,
            digests,
            counts=decision.action == "allow",
            record=lambda: append_record(
                state,
                event,
                transfer,
                direction=context.route.direction,
                decision=decision.action,
                rule=decision.rule,
                reason=decision.reason,
                policy_version=decision.policy_version,
                summary=summary,
                shadow=shadow,
            ),
            may_trail=True,
        )

    ruling, receipt = await decide_under_lock(
        state, context.sender.organisation, judge, unavailable=lambda: LEDGER_DOWN
    )
    decision = ruling.decision
    if decision.action == "block":
        state.release_spool(transfer.id, info)
    if held_info is not None:
        state.held[transfer.id] = Held(
            Job(transfer, context, summary, held_info),
            decision=decision_meta(decision),
            digests=digests,
        )
    return decision, receipt


def decision_meta(decision: Decision) -> dict[str, Any]:
    """What a held review keeps of the verdict that held it (also in its held metadata)."""
    return {
        "action": decision.action,
        "rule": decision.rule,
        "reason": decision.reason,
        "encrypt": decision.encrypt,
        "policy_version": decision.policy_version,
        "approvals": decision.approvals,
    }


def _shadow_matches(state: EgressState, decision: Decision) -> dict[str, str]:
    """The shadow rules that matched, each with the action it would have taken: counted
    (``gateway_shadow_matches_total``), logged, and kept for the verdict's record."""
    matched: dict[str, str] = {
        step.rule: step.action for step in decision.trace if step.mode == "shadow" and step.matched
    }
    for rule_id, action in matched.items():
        state.services.metrics.shadow_matches.labels(rule_id, action).inc()
        log.info("shadow_matched", rule=rule_id, would=action, decided=decision.action)
    return matched


def _hold_spool(
    state: EgressState,
    transfer: Transfer,
    info: SpoolInfo,
    summary: ScanSummary,
    decision: Decision,
    digests: Mapping[str, frozenset[bytes]],
) -> SpoolInfo:
    """Re-wrap the spool's file key to the gateway's own key and keep it for review."""
    header = build_header(info.file_key, [state.spool_identity.recipient])
    meta = {
        "transfer_id": transfer.id,
        "route": transfer.route,
        "path": transfer.path,
        "name_clean": transfer.name_clean,
        "justification": transfer.justification,
        "sender": transfer.sender,
        "organisation": transfer.organisation,
        "created_at": transfer.created_at,
        "plaintext_bytes": info.plaintext_bytes,
        "payload_bytes": info.payload_bytes,
        "summary": summary.to_json(),
        # Keyed hashes only (HMAC with the gateway secret), for the ledger at
        # approval: per category as the policy of the day counted them, and per
        # label (with the cap flag), so that an approval after a restart counts
        # exactly as the policy in force would (gateway.server.reviews.ledger_digests).
        "digests": {c: sorted(d.hex() for d in v) for c, v in digests.items()},
        "label_digests": {
            label: sorted(d.hex() for d in v) for label, v in summary.digests.items()
        },
        "distinct_capped": summary.distinct_capped,
        "decision": decision_meta(decision),
    }
    # The metadata names the file: encrypted to the spool key like the payload.
    return state.spool.hold(info, header, meta, state.spool_identity.recipient)
