"""The review queue: what compliance officers see of held reviews (SPEC §5).

``GET /v1/reviews`` lists the open reviews (of this gateway, or of the whole
park with a shared directory) and the recently decided ones;
``GET /v1/reviews/{id}`` shows one open review and what deciding it now
would do; the queue's size and age are reported as metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from gateway.errors import (
    ClientError,
    GatewayError,
    NotFound,
    Unavailable,
)
from gateway.ledger import ledger_year
from gateway.ledger.base import LedgerUnavailable
from gateway.server.egress_state import EGRESS, EgressState, Held
from gateway.server.problem import json_response
from gateway.server.review_claims import held_elsewhere
from gateway.server.review_files import restored_parts
from gateway.server.reviews import judge_now
from gateway.server.status import officer_of, requested_id
from gateway.server.transfer import State, Transfer

log = structlog.get_logger("gateway.reviews")


#: States ``GET /v1/reviews`` lists: the open reviews, and the recent decided
#: ones (rejected by an officer, or expired undecided after ``review_expiry``).
REVIEW_STATES = ("pending", "approved", "rejected", "expired")


#: How an expiry's rejection reason starts (:func:`~gateway.server.review_expiry.expire_reviews`).
EXPIRED_PREFIX = "expired: "


#: Page size of ``GET /v1/reviews``: the default and the largest.
REVIEW_PAGE = 50


MAX_REVIEW_PAGE = 500


def _page_arg(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > most:
        raise ClientError(f"{name}: a whole number from 0 to {most}")
    return int(raw)


def _review_outcome(transfer: Transfer) -> str:
    """``pending``, ``approved``, ``rejected`` (by an officer) or ``expired``."""
    decided = [step for step, _ in transfer.history if step in ("approved", "rejected")]
    if not decided:
        return "pending"
    if decided[-1] == "rejected" and str(transfer.verdict.get("reason", "")).startswith(
        EXPIRED_PREFIX
    ):
        return "expired"
    return decided[-1]


def _row(
    status: Mapping[str, Any],
    *,
    sender: str,
    organisation: str | None,
    justification: str | None,
    held_at: float,
    state: str,
    review: str,
) -> dict[str, Any]:
    """What a list of reviews shows of one transfer, from its status body: who,
    where, what (names only when clean, labels as counts), since when."""
    return {
        "transfer_id": status["transfer_id"],
        "state": state,
        "review": review,
        "sender": sender,
        "organisation": organisation,
        "route": status.get("route"),
        "path": status.get("path"),
        "path_withheld": status.get("path_withheld", True),
        "bytes": status.get("bytes"),
        "sha256": status.get("sha256"),
        "labels": status.get("labels", {}),
        "subjects": status.get("subjects", 0),
        "rule": status.get("rule"),
        "reason": status.get("reason"),
        "policy_version": status.get("policy_version"),
        "justification": justification,
        "held_at": round(held_at, 3),
    }


def _open_review(row: dict[str, Any], held: Held | None, now: float) -> dict[str, Any]:
    """Add how long an open review has waited, and the approvals so far if held here."""
    if held is not None:
        row["approvals_needed"] = held.approvals_needed
        row["approved_by"] = [officer for officer, _, _ in held.approvals]
    row["waiting_seconds"] = round(max(0.0, now - row["held_at"]), 3)
    return row


def _review_row(transfer: Transfer, held: Held | None) -> dict[str, Any]:
    """A row of a review this gateway holds or decided (its memory), or one held
    elsewhere in the park (``held``: the open review, with its approvals so far)."""
    row = _row(
        transfer.status_json(),
        sender=transfer.sender,
        organisation=transfer.organisation,
        justification=transfer.justification,
        held_at=transfer.created_at,
        state="pending" if transfer.state is State.HELD else transfer.state.value,
        review=_review_outcome(transfer),
    )
    if transfer.state is not State.HELD:
        return row
    return _open_review(row, held, time.time())


async def handle_reviews(request: web.Request) -> web.StreamResponse:
    """``GET /v1/reviews?state=pending|approved|rejected|expired&limit=N&offset=K`` (officers).

    Oldest first. ``pending`` are the reviews open in this gateway, or, with
    a PostgreSQL ledger, on every replica of the park (each names the replica
    that holds it); ``approved`` and ``rejected`` the decided ones it still
    holds in memory (``gateway audit query --event approved`` reaches the older ones).
    """
    state = request.app[EGRESS]
    officer_of(request, state)
    wanted = request.query.get("state", "pending")
    if wanted not in REVIEW_STATES:
        raise ClientError(f"state: one of {', '.join(REVIEW_STATES)}")
    limit = _page_arg(request, "limit", REVIEW_PAGE, MAX_REVIEW_PAGE)
    offset = _page_arg(request, "offset", 0, 10**9)
    if wanted == "pending" and state.park_wide:
        try:
            return json_response(await _park_queue(state, limit, offset))
        except GatewayError as exc:
            # The shared directory is down: this replica's own queue still shows.
            log.warning("review_queue_unavailable", error=exc.title)
    if wanted == "pending":
        transfers = [held.transfer for held in state.held.values()]
    else:
        # Decided reviews: approved ones go on to be delivered (or fail), so
        # what counts is the decision in their history.
        transfers = [t for t in state.recent.values() if _review_outcome(t) == wanted]
    transfers.sort(key=lambda t: (t.created_at, t.id))
    page = transfers[offset : offset + limit]
    return json_response(
        {
            "state": wanted,
            "total": len(transfers),
            "offset": offset,
            "limit": limit,
            "reviews": [_review_row(t, state.held.get(t.id)) for t in page],
        }
    )


async def _park_queue(state: EgressState, limit: int, offset: int) -> dict[str, Any]:
    """The reviews open on every replica of the park (the shared directory), oldest first.

    Each names the replica that holds it (``instance``): that replica decides
    it. Those held here add the approvals so far.
    """
    total, entries = await state.services.directory.pending_reviews(limit, offset)
    now = time.time()
    rows = []
    for entry in entries:
        status = entry.status
        history = status.get("history")
        row = _row(
            status,
            sender=entry.sender,
            organisation=status.get("organisation"),
            justification=status.get("justification"),
            held_at=float(history[0]["at"]) if history else now,
            state="pending",
            review="pending",
        )
        row["instance"] = entry.instance
        row = _open_review(row, state.held.get(entry.transfer_id), now)
        if entry.approvals:  # the park's record of them: any replica may have added one
            row["approved_by"] = [str(a.get("officer")) for a in entry.approvals]
        rows.append(row)
    return {"state": "pending", "total": total, "offset": offset, "limit": limit, "reviews": rows}


async def handle_review_detail(request: web.Request) -> web.StreamResponse:
    """``GET /v1/reviews/{id}`` (officers): an open review and what deciding it would do.

    Besides the transfer's facts, the policy in force evaluates it again, as
    an approval would, against the organisation's yearly totals as they are
    now (read under the ledger lock; nothing is counted): the whole trace,
    shadow rules included, the ledger position per category and the lines the
    policy draws.

    Raises:
        NotFound: no open review of that id (a decided one: ``GET /v1/transfers/{id}``).
    """
    state = request.app[EGRESS]
    officer_of(request, state)
    transfer_id = requested_id(request)
    held = state.held.get(transfer_id)
    if held is None and state.park_wide:
        held = await held_elsewhere(state, transfer_id)
    if held is None:
        raise NotFound("no open review of that id; a decided one is at /v1/transfers/{id}")
    transfer = held.transfer
    body = _review_row(transfer, held)
    rule, reason, version = held.verdict()
    body["held_by"] = {"rule": rule, "reason": reason, "policy_version": version}
    if held.summary is None:  # restored after a restart: read from the held files
        summary_now, _info = await asyncio.to_thread(restored_parts, state, held)
    else:
        summary_now = held.summary
    try:
        async with state.services.ledger.transaction(transfer.organisation, ledger_year()) as tx:
            judged = await judge_now(state, held, summary_now, tx)
    except LedgerUnavailable:
        state.services.metrics.fail_closed.labels("ledger").inc()
        raise Unavailable("the ledger is unavailable; the review cannot be shown") from None
    body["ledger"] = {
        category: {"current": count.current, "projected": count.projected}
        for category, count in sorted(judged.counts.items())
    }
    body["lines"] = [
        {"category": category, "people": people, "rule": rule, "action": action}
        for category, people, rule, action in judged.policy.ledger_lines()
    ]
    body["now"] = judged.decision.to_json()
    return json_response(body)


def track_pending(state: EgressState) -> None:
    """Report the review queue in ``gateway_reviews_pending`` and
    ``gateway_review_oldest_age_seconds`` (read when /metrics is scraped)."""
    metrics = state.services.metrics

    def oldest() -> float:
        started = [held.transfer.created_at for held in state.held.values()]
        return max(0.0, time.time() - min(started)) if started else 0.0

    metrics.reviews_pending.set_function(lambda: float(len(state.held)))
    metrics.review_oldest_age.set_function(oldest)
