"""Deciding a held review: approve (once, or twice for four eyes) or reject (SPEC §5).

A transfer with a ``review`` verdict is held (its spool re-wrapped to the
gateway's own key, see :mod:`gateway.server.spool`) until a compliance
officer approves it, or rejects it, which deletes the spool. An approval
evaluates the transfer again, in one ledger transaction
(:func:`gateway.server.decide.decide_under_lock`), against the policy in force
and the organisation's yearly totals as they are now: if that would block it
(a threshold crossed while it waited, a changed rule, a route or sender gone)
the approval is refused (409) and the review stays open; otherwise the
approval is recorded, its subjects added to the ledger, and it is delivered
through the same path as an allowed transfer (:mod:`gateway.server.deliver`).
A review leaves the ``review`` state only once its decision record is durable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web

from gateway.audit.receipt import Receipt
from gateway.audit.records import Decision as DecisionName
from gateway.audit.records import TransferEvent
from gateway.classify.summary import ScanSummary
from gateway.errors import (
    ClientError,
    Conflict,
    Forbidden,
    Unavailable,
    UpstreamTimeout,
)
from gateway.ledger.base import LedgerCount, LedgerTransaction
from gateway.policy.engine import CompiledPolicy, Decision, TransferContext
from gateway.policy.model import Direction
from gateway.server.decide import Ruling, decide_under_lock
from gateway.server.deliver import deliver
from gateway.server.egress_state import EGRESS, EgressState, Held
from gateway.server.job import Job, Release
from gateway.server.notes import MAX_REFERENCE_CHARS, clean_note
from gateway.server.problem import Problem, json_response
from gateway.server.records import append_record, receipt_json, record_end
from gateway.server.review_claims import deciding
from gateway.server.review_files import restored_parts
from gateway.server.status import officer_of, requested_id
from gateway.server.transfer import State, Transfer

log = structlog.get_logger("gateway.reviews")


async def handle_review(request: web.Request) -> web.StreamResponse:
    """``POST /v1/reviews/{id}/approve|reject`` (compliance officers only).

    Any replica of a park decides any of its reviews
    (:func:`~gateway.server.review_claims.deciding`). The transfer's state
    moves only once its record is durable: if the audit log (or the ledger)
    fails, the review stays open and can be decided again.
    """
    state = request.app[EGRESS]
    officer = officer_of(request, state)
    transfer_id = requested_id(request)
    verb = request.match_info["verb"]
    if state.closing:
        raise Unavailable("the gateway is shutting down; decide the review again after restart")
    comment, reference = await _decision_body(request, state)
    decided_by = _DecidedBy(officer, comment, reference)
    # Tracked like a transfer: shutdown drains it, then cancels it (recorded failed).
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    try:
        with structlog.contextvars.bound_contextvars(transfer_id=transfer_id):
            async with deciding(state, transfer_id) as held:
                if held.transfer.sender == officer:
                    raise Forbidden("a sender cannot decide its own transfer; another officer must")
                return await _decide(state, held, verb, decided_by)
    finally:
        if task is not None:
            state.tasks.discard(task)


async def _decide(state: EgressState, held: Held, verb: str, by: _DecidedBy) -> web.StreamResponse:
    """Reject, approve (once of two, for four eyes) or approve and forward."""
    transfer = held.transfer
    # An approval forwards: bounded like a transfer, so a stalled twin
    # cannot keep the officer (and a slot at shutdown) waiting forever.
    try:
        async with asyncio.timeout(state.config.total_timeout):
            if verb == "reject":
                return await reject(state, held, by)
            if len(held.approvals) + 1 < held.approvals_needed:
                return await _first_approval(state, held, by)
            if any(by.officer == officer for officer, _, _ in held.approvals):
                raise Conflict(
                    "this review needs approvals by two different officers; you approved it already"
                )
            return await _approve(state, held, by)
    except TimeoutError:
        if transfer.state is not State.HELD and not transfer.state.final:
            # Approved (recorded) but not forwarded in time.
            await _end_approved(state, held, "approval timed out while forwarding")
        raise Problem(
            UpstreamTimeout,
            "the review decision exceeded the gateway's time limit; nothing was delivered",
            {"transfer_id": transfer.id, "state": transfer.state.value},
        ) from None


async def _first_approval(state: EgressState, held: Held, by: _DecidedBy) -> web.StreamResponse:
    """Record an approval that is not yet enough (four eyes); the review stays open.

    The record is a ``review`` record naming the officer: the transfer's trail
    still ends at ``review``, so it is restored as open after a restart, with
    the approvals its records name (:func:`~gateway.server.review_restore._recorded_approvals`).
    """
    transfer = held.transfer
    if any(by.officer == officer for officer, _, _ in held.approvals):
        raise Conflict("you approved this review already; another officer must approve it")
    _rule, reason, _version = held.verdict()
    needed = held.approvals_needed
    count = len(held.approvals) + 1
    await _record_decision(
        state, held, "review", "review", reason, by, detail=f"approval {count} of {needed}"
    )
    held.approvals.append((by.officer, by.comment, by.reference))
    body = {
        **transfer.verdict,
        "state": transfer.state.value,
        "approvals": f"{count} of {needed}",
        "officer": by.officer,
        "next": "another compliance officer must approve it before it is delivered",
    }
    return json_response(body, status=202)


#: The most request body bytes a review decision reads.
MAX_DECISION_BODY_BYTES = 8192


_DECISION_BODY = '{"comment": "…", "reference": "…" (optional)}'


@dataclass(frozen=True, slots=True)
class _DecidedBy:
    """Who decided a review, why, and the filing or ticket it refers to."""

    officer: str
    comment: str
    reference: str | None


async def _decision_body(request: web.Request, state: EgressState) -> tuple[str, str | None]:
    """The officer's comment (required) and reference (optional) from the JSON body.

    Checked before the review is claimed, as every text that reaches the
    sender and the audit log is (:func:`gateway.server.notes.clean_note`).

    Raises:
        ClientError: no such body (400).
    """
    if request.content_length is not None and request.content_length > MAX_DECISION_BODY_BYTES:
        raise ClientError(f"a review decision's body is at most {MAX_DECISION_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_DECISION_BODY_BYTES + 1) if request.can_read_body else b""
    if len(raw) > MAX_DECISION_BODY_BYTES:
        raise ClientError(f"a review decision's body is at most {MAX_DECISION_BODY_BYTES} bytes")
    if not raw.strip():
        raise ClientError(f"a review decision needs a comment: {_DECISION_BODY}")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ClientError(f"the body must be JSON: {_DECISION_BODY}") from None
    if not isinstance(body, dict) or set(body) - {"comment", "reference"}:
        raise ClientError(f"the body must be JSON: {_DECISION_BODY}")
    detectors, secret = state.current_policy().detectors, state.services.secret
    comment = clean_note(body.get("comment"), "comment", detectors, secret)
    reference = body.get("reference")
    if reference is not None:
        reference = clean_note(reference, "reference", detectors, secret, most=MAX_REFERENCE_CHARS)
    return comment, reference


async def reject(
    state: EgressState, held: Held, by: _DecidedBy | None, *, why: str | None = None
) -> web.StreamResponse:
    """Reject a held review: by an officer (``by``), or expired (``why``)."""
    transfer = held.transfer
    reason = why or f"rejected by a compliance officer: {by.comment if by else ''}"
    receipt = await _record_decision(state, held, "rejected", "block", reason, by)
    transfer.rejected()
    await asyncio.to_thread(state.spool.release, transfer.id, held.info.path.parent)
    body = {
        **transfer.verdict,
        "state": transfer.state.value,
        "reason": reason,
        **({"officer": by.officer} if by else {}),
        "receipt": receipt_json(receipt),
    }
    transfer.verdict = body
    return json_response(body)


async def _record_decision(
    state: EgressState,
    held: Held,
    event: TransferEvent,
    decision: DecisionName,
    reason: str,
    by: _DecidedBy | None,
    *,
    detail: str | None = None,
) -> Receipt:
    """Append the record of a first approval (four eyes) or of a rejection (or the expiry).

    Under the rule and policy version of the verdict that held the review; an
    approval that releases it is recorded under the ledger lock instead
    (:func:`_approve`).
    """
    transfer = held.transfer
    rule, _reason, version = held.verdict()
    receipt: Receipt = await append_record(
        state,
        event,
        transfer,
        direction=held.direction,
        decision=decision,
        rule=rule,
        reason=reason,
        policy_version=version,
        summary=held.summary,
        size=transfer.verdict.get("bytes"),
        detail=detail,
        officer=by.officer if by else None,
        comment=by.comment if by else None,
        reference=by.reference if by else None,
    )
    return receipt


async def _approve(state: EgressState, held: Held, by: _DecidedBy) -> web.StreamResponse:
    """Approve a held review if the policy in force would not now block it.

    The review was decided against the policy and the ledger of its day; a
    review can stay open for days, meanwhile the organisation's yearly total
    may have crossed a threshold or the policy may have changed. So, under the
    organisation's ledger lock (:func:`gateway.server.decide.decide_under_lock`,
    as a new transfer's verdict), the transfer is evaluated again against the
    policy in force and the ledger as it is now, and counted and recorded only
    if that is not a ``block``. The approval record keeps the review's rule
    and reason (the officer's approval is what allows it) with the policy
    version in force.

    Raises:
        Problem: 409 when the policy in force blocks the transfer; the review
            stays open and nothing is recorded.
        Conflict: its route or sender is no longer in the policy in force, or
            the sender now belongs to another organisation.
    """
    transfer = held.transfer
    rule, reason, _ = held.verdict()
    if held.summary is None or not held.info.file_key:
        summary, info = await asyncio.to_thread(restored_parts, state, held)
    else:
        summary, info = held.summary, held.info

    judged = summary

    async def judge(tx: LedgerTransaction) -> Ruling:
        nonlocal judged
        now = await judge_now(state, held, summary, tx)
        policy, context, judged, recheck = now.policy, now.context, now.summary, now.decision
        digests, direction = now.digests, context.route.direction
        if recheck.action == "block":
            # Raised inside the transaction: nothing was added, it rolls back.
            raise _refusal(transfer, recheck)

        async def record() -> Receipt:
            receipt: Receipt = await append_record(
                state,
                "approved",
                transfer,
                direction=direction,
                decision="allow",
                rule=rule,
                reason=reason,
                policy_version=policy.version,
                summary=judged,
                size=transfer.verdict.get("bytes"),
                officer=by.officer,
                comment=by.comment,
                reference=by.reference,
            )
            # A review leaves the review state only once its record is durable.
            transfer.approved()
            # What the response, the twin and a later failure record show.
            transfer.verdict["policy_version"] = policy.version
            return receipt

        # Counted, then the record, in one transaction: a failed append rolls
        # the counts back. Always awaited inside it: a commit that fails after
        # the approval is recorded ends the transfer (below), never forwards it.
        return Ruling(policy, context, recheck, digests, counts=True, record=record)

    def unavailable() -> str:
        if transfer.state is not State.HELD:
            return "the ledger is unavailable; the approved transfer was not forwarded"
        return "the ledger is unavailable; the review stays open"

    try:
        ruling, _receipt = await decide_under_lock(
            state, transfer.organisation, judge, unavailable=unavailable
        )
    except Exception:
        if transfer.state is State.APPROVED:
            # Recorded approved, but the ledger did not commit its subjects:
            # forwarding now would under-count the yearly totals. End it.
            await _end_approved(state, held, "ledger commit failed after the approval")
        raise
    context = ruling.context
    fields = {k: v for k, v in transfer.verdict.items() if k != "reason"}
    fields["decision"] = "allow"
    job = Job(transfer, context, judged, info, fields=fields)
    encrypt = ruling.decision.encrypt or context.route.encrypt
    job.release = Release("allow", rule, reason, ruling.policy.version, encrypt)
    return await deliver(state, job)


@dataclass(frozen=True, slots=True)
class JudgedNow:
    """A held review judged by the policy in force against the ledger as it is now."""

    policy: CompiledPolicy
    context: TransferContext
    summary: ScanSummary
    digests: Mapping[str, frozenset[bytes]]
    counts: dict[str, LedgerCount]
    decision: Decision


async def judge_now(
    state: EgressState, held: Held, summary: ScanSummary, tx: LedgerTransaction
) -> JudgedNow:
    """Judge a held review as an approval would now, inside ``tx`` (its ledger lock).

    The policy is read under the lock: a reload while waiting for it is the
    policy the review is judged by. Chance-level findings count as that
    policy says (``chance: count`` on the route or the label); the held
    summary counted those its own day's policy said (counting is idempotent).
    Nothing is added to the ledger here.
    """
    policy = state.current_policy()
    context = current_context(policy, held.transfer)
    judged = policy.with_chance(summary, context.route)
    digests = ledger_digests(policy, held, judged, context.route.direction)
    counts = await tx.counts(digests)
    return JudgedNow(
        policy, context, judged, digests, counts, policy.evaluate(context, judged, counts)
    )


def current_context(policy: CompiledPolicy, transfer: Transfer) -> TransferContext:
    """The held transfer's route and sender as the policy in force names them.

    Raises:
        Conflict: the route or the sender is no longer in the policy, or the
            sender now belongs to another organisation than the one whose
            ledger the transfer was held under (its subjects would be counted
            for one organisation and judged against another's total).
    """
    route = policy.routes.get(transfer.route)
    if route is None:
        # Approving would send to a destination the policy in force no longer names.
        raise Conflict(
            f"route {transfer.route!r} is not in the policy in force; "
            "restore the route or reject the review"
        )
    sender = policy.senders.get(transfer.sender)
    if sender is None:
        raise Conflict(
            f"sender {transfer.sender!r} is not in the policy in force; "
            "restore the sender or reject the review"
        )
    if sender.organisation != transfer.organisation:
        raise Conflict(
            f"sender {transfer.sender!r} now belongs to organisation {sender.organisation!r}, "
            f"not {transfer.organisation!r} as when the transfer was held; "
            "reject the review and have the sender push the file again"
        )
    return TransferContext(route, sender)


def ledger_digests(
    policy: CompiledPolicy, held: Held, summary: ScanSummary, direction: Direction
) -> dict[str, frozenset[bytes]]:
    """The held transfer's people per ledger category, as the policy in force counts them.

    The summary carries the keyed hashes per label (held by this process, or
    restored from the held metadata), and the policy in force sorts them into
    its own categories, exactly as a new transfer's. A spool held by an older
    version kept only the hashes per category of the policy that held it:
    those are used for the categories the policy in force still counts.
    """
    # Every label with findings has its digests, so labels without digests
    # can only be a summary restored from such an older spool.
    if held.summary is not None or summary.digests or not summary.labels:
        return policy.ledger_digests(summary, direction)
    if not policy.counts_in_ledger(direction):
        return {category: frozenset() for category in policy.ledger_categories}
    return {
        category: frozenset(held.digests.get(category, frozenset()))
        for category in policy.ledger_categories
    }


def _refusal(transfer: Transfer, recheck: Decision) -> Problem:
    """The 409 for an approval the policy in force would block (the review stays open).

    No audit record is written: the audit events (SPEC §7) have none for a
    refused approval, and a ``blocked`` record would end the transfer's trail
    while the review is still open (and a restart would then sweep it).
    """
    log.warning("approval_refused", rule=recheck.rule, policy_version=recheck.policy_version)
    return Problem(
        Conflict,
        f"the policy in force now blocks this transfer: rule {recheck.rule}: "
        f"{' '.join(recheck.reason.split())} (nothing was delivered or counted; the review "
        "stays open: reject it, or approve it again once the policy allows it)",
        {
            "transfer_id": transfer.id,
            "state": State.HELD.value,
            "rule": recheck.rule,
            "policy_version": recheck.policy_version,
        },
    )


async def _end_approved(state: EgressState, held: Held, why: str) -> None:
    """End a recorded approval that will not be forwarded: delete its spool, record ``failed``."""
    transfer = held.transfer
    await asyncio.to_thread(state.spool.release, transfer.id, held.info.path.parent)
    await record_end(
        state,
        transfer,
        State.FAILED,
        why,
        direction=held.direction,
        policy_version=_approval_version(held),
        size=transfer.verdict.get("bytes"),
        decision="allow",
        rule=held.verdict()[0],
    )


def _approval_version(held: Held) -> str:
    """The policy version an approval was recorded under (the held verdict's until then)."""
    return str(held.transfer.verdict.get("policy_version") or held.verdict()[2])
