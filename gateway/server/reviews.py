"""Reviews and the status API of the egress role (SPEC §5).

A transfer with a ``review`` verdict is held (its spool re-wrapped to the
gateway's own key, see :mod:`gateway.server.spool`) until a compliance
officer approves it, or rejects it, which deletes the spool. An approval
evaluates the transfer again, in one ledger transaction, against the policy
in force and the organisation's yearly totals as they are now: if that would
block it (a threshold crossed while it waited, a changed rule, a route or
sender gone) the approval is refused (409) and the review stays open;
otherwise the approval is recorded, its subjects added to the ledger, and it
is forwarded through the same path as an allowed transfer. A review leaves
the ``review`` state only once its decision record is durable. Held reviews
are restored after a restart when the audit log shows them still open.
``GET /v1/transfers/{id}`` answers from memory for recent transfers and from
the audit log for older ones, with a bounded number of log scans at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.audit.receipt import Receipt
from gateway.audit.records import parse_canonical
from gateway.classify.summary import ScanSummary
from gateway.crypto.age import unwrap_file_key
from gateway.crypto.errors import AgeError
from gateway.crypto.header import parse_header
from gateway.errors import (
    ClientError,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    Unavailable,
    UpstreamTimeout,
)
from gateway.ledger import ledger_year
from gateway.ledger.base import LedgerTransaction, LedgerUnavailable, LocalOnly, TransferEntry
from gateway.policy.engine import CompiledPolicy, Decision, TransferContext
from gateway.policy.model import Direction
from gateway.server.auth import require_officer, sender_identity
from gateway.server.config import RETRY_AFTER_SECONDS
from gateway.server.decide import Ruling, decide_under_lock
from gateway.server.deliver import deliver
from gateway.server.egress_state import EGRESS, EgressState, Held
from gateway.server.job import Job, Release
from gateway.server.notes import MAX_REFERENCE_CHARS, clean_note
from gateway.server.problem import Problem, json_response
from gateway.server.records import append_record, published, receipt_json, record_end
from gateway.server.spool import SpoolInfo
from gateway.server.transfer import State, Transfer

log = structlog.get_logger("gateway.reviews")


#: The format of a transfer id (:func:`gateway.server.transfer.new_transfer_id`);
#: anything else is refused before the audit log is searched.
TRANSFER_ID = re.compile(r"t_[0-9a-f]{32}")
#: Audit-log lookups by transfer id running at once. A lookup of an id not seen
#: since start-up scans every segment in a worker thread, and asyncio's default
#: executor (min(32, cores + 4) threads: 6 on the 2-core reference host) also
#: runs every transfer's classifier, spool and fsync work; two scans at most
#: leave the other threads to transfers.
MAX_CONCURRENT_LOOKUPS = 2
#: Seconds a status request waits for a lookup slot before 503 + Retry-After;
#: a segment scan reads at disk speed, so a slot is normally free well before.
LOOKUP_WAIT_SECONDS = 10.0
#: The semaphore bounding lookups (set by ``make_egress_app``).
LOOKUPS = web.AppKey("status_lookups", asyncio.Semaphore)


def new_lookup_slots() -> asyncio.Semaphore:
    """The app's bound on concurrent audit-log lookups (:data:`LOOKUPS`)."""
    return asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)


def officer_of(request: web.Request, state: EgressState) -> str:
    """The name of the compliance officer making the request (see :func:`require_officer`)."""
    config = state.config
    named = [(entry.sha256, entry.name) for entry in config.officers]
    return require_officer(request, config.officer_tokens, named)


def _reader(request: web.Request, state: EgressState) -> str | None:
    """Who may read a transfer: None for a compliance officer, else the sender identity.

    Raises:
        Unauthenticated: neither an officer token nor a known sender.
    """
    try:
        officer_of(request, state)
        return None
    except GatewayError:
        pass
    return sender_identity(request, state.tokens)


def _check_owner(reader: str | None, sender: object, transfer_id: str) -> None:
    # Senders see their own transfers only; to anyone else it does not exist.
    if reader is not None and reader != sender:
        raise NotFound(f"unknown transfer {transfer_id!r}")


def _transfer_id(request: web.Request) -> str:
    """The ``{id}`` of the URL, validated.

    Raises:
        ClientError: not a transfer id (400; the audit log is not searched).
    """
    transfer_id = request.match_info["id"]
    if not TRANSFER_ID.fullmatch(transfer_id):
        raise ClientError("malformed transfer id: expected t_ and 32 hex digits")
    return transfer_id


async def _find(request: web.Request, state: EgressState, transfer_id: str) -> list[Receipt]:
    """The transfer's audit records, holding one of the bounded lookup slots.

    Raises:
        NotFound: the audit log has no record of ``transfer_id``.
        Problem: 503 + Retry-After when no lookup slot freed in time.
    """
    slots = request.app[LOOKUPS]
    try:
        async with asyncio.timeout(LOOKUP_WAIT_SECONDS):
            await slots.acquire()
    except TimeoutError:
        raise Problem(
            Unavailable,
            "too many transfer lookups in progress; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    try:
        records = await state.audit.find(transfer_id)
    finally:
        slots.release()
    if not records:
        raise NotFound(f"unknown transfer {transfer_id!r}")
    return records


async def handle_status(request: web.Request) -> web.StreamResponse:
    """``GET /v1/transfers/{id}``: verdict and state (memory first, then the audit log)."""
    state = request.app[EGRESS]
    reader = _reader(request, state)
    transfer_id = _transfer_id(request)
    transfer = state.recent.get(transfer_id)
    if transfer is not None and not (transfer.state is State.HELD and _park_wide(state)):
        _check_owner(reader, transfer.sender, transfer_id)
        return json_response({**transfer.status_json(), "instance": _instance(state)})
    # Held here: any replica of the park may have decided it since.
    shared = await _shared(state, transfer_id)
    if shared is None and transfer is not None:
        _check_owner(reader, transfer.sender, transfer_id)
        return json_response({**transfer.status_json(), "instance": _instance(state)})
    if shared is not None:
        _check_owner(reader, shared.sender, transfer_id)
        return json_response({**shared.status, "instance": shared.instance})
    records = await _find(request, state, transfer_id)
    parsed = [parse_canonical(r.record) for r in records]
    _check_owner(reader, parsed[0].get("sender"), transfer_id)
    last = parsed[-1]
    body = {
        "transfer_id": transfer_id,
        "state": last.get("event"),
        "decision": parsed[0].get("decision"),
        "rule": parsed[0].get("rule"),
        "route": last.get("route"),
        "policy_version": last.get("policy_version"),
        "history": [{"state": r.get("event"), "at": r.get("time")} for r in parsed],
        "instance": _instance(state),
    }
    return json_response(body)


def _instance(state: EgressState) -> str:
    """This replica's instance name: whose audit log holds the transfer's records."""
    return state.services.settings.instance


async def handle_receipt(request: web.Request) -> web.StreamResponse:
    """``GET /v1/transfers/{id}/receipt``: the full receipt of the decision record."""
    state = request.app[EGRESS]
    reader = _reader(request, state)
    transfer_id = _transfer_id(request)
    try:
        records = await _find(request, state, transfer_id)
    except NotFound:
        # Another replica's record: the receipt it published (index and leaf
        # hash in its log, named by instance; `gateway audit prove` there, or
        # its own /receipt, adds the inclusion proof).
        shared = await _shared(state, transfer_id)
        if shared is None or shared.receipt is None:
            raise
        _check_owner(reader, shared.sender, transfer_id)
        return json_response({**shared.receipt, "instance": shared.instance})
    _check_owner(reader, parse_canonical(records[0].record).get("sender"), transfer_id)
    receipt = await state.audit.receipt(records[0].index)
    return json_response(receipt_json(receipt))


async def _shared(state: EgressState, transfer_id: str) -> TransferEntry | None:
    """What another replica of the park published about the transfer (issue 16)."""
    try:
        return await state.services.directory.find_transfer(transfer_id)
    except GatewayError as exc:
        # The directory is PostgreSQL: down, the local audit log still answers
        # for this replica's own transfers.
        log.warning("transfer_directory_unavailable", error=exc.title)
        return None


#: States ``GET /v1/reviews`` lists: the open reviews, and the recent decided
#: ones (rejected by an officer, or expired undecided after ``review_expiry``).
REVIEW_STATES = ("pending", "approved", "rejected", "expired")
#: How an expiry's rejection reason starts (:func:`expire_reviews`).
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
        row["approvals_needed"] = _approvals_needed(held)
        row["approved_by"] = [officer for officer, _, _ in held.approvals]
    row["waiting_seconds"] = round(max(0.0, now - row["held_at"]), 3)
    return row


def _review_row(transfer: Transfer, state_held: Mapping[str, Held] | None = None) -> dict[str, Any]:
    """A row of a review this gateway holds or decided (its memory)."""
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
    held = state_held.get(transfer.id) if state_held is not None else None
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
    if wanted == "pending" and not isinstance(state.services.directory, LocalOnly):
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
            "reviews": [_review_row(t, state.held) for t in page],
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
    transfer_id = _transfer_id(request)
    held = state.held.get(transfer_id)
    if held is None and _park_wide(state):
        held = await _held_elsewhere(state, transfer_id)
    if held is None:
        raise NotFound("no open review of that id; a decided one is at /v1/transfers/{id}")
    transfer = held.transfer
    body = _review_row(transfer, state.held)
    rule, reason, version = _recorded_verdict(held)
    body["held_by"] = {"rule": rule, "reason": reason, "policy_version": version}
    if held.summary is None:  # restored after a restart: read from the held files
        summary_now, _info = await asyncio.to_thread(_restored_parts, state, held)
    else:
        summary_now = held.summary
    try:
        async with state.services.ledger.transaction(transfer.organisation, ledger_year()) as tx:
            policy = state.current_policy()
            context = _current_context(policy, transfer)
            summary_now = policy.with_chance(summary_now, context.route)
            digests = _ledger_digests(policy, held, summary_now, context.route.direction)
            counts = {c: await tx.count(c, d) for c, d in digests.items()}
            now = policy.evaluate(context, summary_now, counts)
    except LedgerUnavailable:
        state.services.metrics.fail_closed.labels("ledger").inc()
        raise Unavailable("the ledger is unavailable; the review cannot be shown") from None
    body["ledger"] = {
        category: {"current": count.current, "projected": count.projected}
        for category, count in sorted(counts.items())
    }
    body["lines"] = [
        {"category": category, "people": people, "rule": rule, "action": action}
        for category, people, rule, action in policy.ledger_lines()
    ]
    body["now"] = now.to_json()
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


async def expire_reviews(state: EgressState, *, now: float | None = None) -> int:
    """Reject the held reviews older than ``review_expiry`` as expired; how many.

    Each is recorded ``rejected`` ("expired: …"), its spool deleted, as an
    officer's rejection would; one being decided right now is left alone.
    """
    expiry = state.config.review_expiry
    moment = time.time() if now is None else now
    due = [tid for tid, held in state.held.items() if moment - held.transfer.created_at >= expiry]
    if _park_wide(state):
        # Also those no replica holds in memory (their replica is gone).
        due += [tid for tid in await _park_due(state, moment - expiry) if tid not in due]
    expired = 0
    for transfer_id in due:
        try:
            async with _deciding(state, transfer_id) as held:
                if moment - held.transfer.created_at < expiry:
                    continue
                hours = expiry / 3600
                why = f"{EXPIRED_PREFIX}no decision within {hours:g} h"
                await _reject(state, held, None, why=why)
                expired += 1
                log.info("review_expired", transfer_id=transfer_id)
        except (NotFound, Conflict):
            continue  # decided meanwhile, or being decided
        except GatewayError as exc:
            log.error("review_expiry_failed", transfer_id=transfer_id, why=exc.title)
    return expired


async def _park_due(state: EgressState, held_before: float) -> list[str]:
    """The park's open reviews held before ``held_before`` (the directory's queue)."""
    due: list[str] = []
    offset = 0
    try:
        while True:
            _, page = await state.services.directory.pending_reviews(MAX_REVIEW_PAGE, offset)
            for entry in page:
                history = entry.status.get("history") or [{}]
                if float(history[0].get("at", 0.0)) > held_before:
                    return due
                due.append(entry.transfer_id)
            if len(page) < MAX_REVIEW_PAGE:
                return due
            offset += len(page)
    except GatewayError as exc:
        log.warning("review_queue_unavailable", error=exc.title)
        return due


async def forget_decided_elsewhere(state: EgressState) -> int:
    """Drop the reviews held here that another replica decided; how many.

    A replica may decide a review this one holds (:func:`_deciding`); the
    directory then shows it decided, and this replica's queue, metrics and
    expiry must not keep it.
    """
    if not _park_wide(state):
        return 0
    forgotten = 0
    for transfer_id in [t for t in state.held if t not in state.deciding]:
        try:
            entry = await state.services.directory.find_transfer(transfer_id)
        except GatewayError:
            return forgotten  # the directory is down: try again next time
        if entry is not None and entry.status.get("state") != "review":
            forgotten += _forget_decided(state, transfer_id, entry)
    return forgotten


async def expire_periodically(state: EgressState) -> None:
    """Run :func:`expire_reviews` (and :func:`forget_decided_elsewhere`) every
    minute, or every tenth of the expiry if shorter."""
    interval = min(60.0, state.config.review_expiry / 10)
    while True:
        await asyncio.sleep(interval)
        await forget_decided_elsewhere(state)
        await expire_reviews(state)


def _claim(state: EgressState, transfer_id: str) -> Held:
    """Take a held review out of ``state.held`` while a decision on it is recorded.

    A second approve or reject arriving meanwhile finds it gone (409), so one
    review is never approved twice; the caller puts it back if the decision
    could not be recorded.

    Raises:
        NotFound: no such review (or it was decided already).
        Conflict: the review is being decided right now.
    """
    held = state.held.pop(transfer_id, None)
    if held is None:
        raise NotFound(f"no transfer {transfer_id!r} is waiting for review")
    if held.transfer.state is not State.HELD:
        state.held[transfer_id] = held
        raise Conflict(f"transfer {transfer_id!r} is {held.transfer.state.value}, not under review")
    return held


#: A replica's claim on a review it decides outlives the decision's own bound
#: (``total_timeout``) by this much; past it (the replica died deciding) another
#: replica may claim the review.
CLAIM_MARGIN_SECONDS = 60.0


def _park_wide(state: EgressState) -> bool:
    """Whether the park's replicas share their reviews (a PostgreSQL directory)."""
    return not isinstance(state.services.directory, LocalOnly)


def _forget_decided(state: EgressState, transfer_id: str, entry: TransferEntry) -> int:
    """Drop a review held here that the directory shows decided elsewhere (1 if it was held)."""
    if state.held.pop(transfer_id, None) is None:
        return 0
    log.info(
        "review_decided_elsewhere",
        transfer_id=transfer_id,
        state=entry.status.get("state"),
        by=entry.instance,
    )
    return 1


async def _claim_in_park(state: EgressState, transfer_id: str) -> TransferEntry | None:
    """Claim an open review in the park's directory: no other replica decides it meanwhile.

    Returns:
        The directory's entry (with the approvals so far), or None when the
        directory never heard of the review but this gateway holds it (held
        while the directory was down: no other replica can reach it).

    Raises:
        Unavailable: the directory does not answer (nothing is decided).
        Conflict: another replica is deciding it right now.
        NotFound: no such open review (or it was decided already).
    """
    directory = state.services.directory
    lease = state.config.total_timeout + CLAIM_MARGIN_SECONDS
    try:
        claimed = await directory.claim_review(transfer_id, _instance(state), lease)
        seen = claimed or await directory.find_transfer(transfer_id)
    except GatewayError:
        state.services.metrics.fail_closed.labels("ledger").inc()
        raise Unavailable(
            "the park's transfer directory is unavailable; decide the review again later"
        ) from None
    if claimed is not None:
        return claimed
    if seen is None and transfer_id in state.held:
        return None
    if seen is not None and seen.status.get("state") == "review":
        raise Conflict(
            f"a decision on transfer {transfer_id!r} is being recorded by replica {seen.claimed_by}"
        )
    if seen is not None:
        _forget_decided(state, transfer_id, seen)
    raise NotFound(f"no transfer {transfer_id!r} is waiting for review")


def _merged_approvals(
    here: list[tuple[str, str, str | None]], park: tuple[dict[str, Any], ...]
) -> list[tuple[str, str, str | None]]:
    """The approvals the park's directory names, then any only this replica knows."""
    merged = [
        (str(a.get("officer")), str(a.get("comment", "")), _text_or_none(a.get("reference")))
        for a in park
    ]
    named = {officer for officer, _, _ in merged}
    return merged + [a for a in here if a[0] not in named]


async def _release_claim(
    state: EgressState, transfer_id: str, approvals: list[tuple[str, str, str | None]] | None
) -> None:
    """End this replica's claim; an open review's approvals go to the directory with it.

    If the directory does not answer, the claim stays until its lease ends
    (the review cannot be decided elsewhere meanwhile).
    """
    rows = (
        [{"officer": o, "comment": c, "reference": r} for o, c, r in approvals]
        if approvals is not None
        else None
    )
    try:
        await state.services.directory.release_review(transfer_id, _instance(state), rows)
    except GatewayError as exc:
        log.error("review_claim_not_released", transfer_id=transfer_id, error=exc.title)


@contextlib.asynccontextmanager
async def _deciding(state: EgressState, transfer_id: str) -> AsyncIterator[Held]:
    """The right to decide one review, in this process and in the whole park.

    One decision at a time per review: in this process (``state.deciding``)
    and, with a shared directory, across the park's replicas (a claim in the
    directory, :func:`_claim_in_park`). A review held by another replica,
    alive or gone, is taken over from the shared held directory
    (:func:`_take_over`). Afterwards a review still open goes back where it
    was, its approvals so far recorded for the whole park; a decided one's
    records are visible to every replica before the caller answers.

    Raises:
        NotFound: no such open review.
        Conflict: it is being decided here or on another replica.
        Unavailable: the directory, or the held files, cannot be reached.
    """
    if transfer_id in state.deciding:
        raise Conflict(f"a decision on transfer {transfer_id!r} is being recorded")
    state.deciding.add(transfer_id)
    claimed: TransferEntry | None = None
    held: Held | None = None
    try:
        if _park_wide(state):
            claimed = await _claim_in_park(state, transfer_id)
        local = transfer_id in state.held
        if local or claimed is None:
            held = _claim(state, transfer_id)
        else:
            held = await _take_over(state, claimed)
        if claimed is not None:
            held.approvals = _merged_approvals(held.approvals, claimed.approvals)
        try:
            yield held
        finally:
            if local and held.transfer.state is State.HELD:
                state.held[transfer_id] = held  # not decided: still open for review
            await published(state, transfer_id)
    finally:
        state.deciding.discard(transfer_id)
        if claimed is not None:
            still_open = held is not None and held.transfer.state is State.HELD
            await _release_claim(
                state, transfer_id, held.approvals if held is not None and still_open else None
            )


async def _take_over(state: EgressState, entry: TransferEntry) -> Held:
    """A review another replica holds, from its files in the shared held directory.

    Raises:
        Unavailable: its files are not reachable from here, or sealed to
            another spool key (the park's replicas must share both).
        Conflict: its route or sender is no longer in the policy in force.
    """
    transfer_id = entry.transfer_id
    where = f"transfer {transfer_id!r} is held by replica {entry.instance}"
    try:
        path, _header, meta = await asyncio.to_thread(
            state.spool.held_parts, transfer_id, state.spool_identity
        )
    except OSError:
        raise Unavailable(
            f"{where}, whose held files this replica cannot read: egress.held_dir must be "
            "a directory the park's replicas share"
        ) from None
    except AgeError:
        raise Unavailable(
            f"{where} under another spool key: the park's replicas must share egress.spool_identity"
        ) from None
    held = _held_from_meta(transfer_id, path, meta, state.current_policy(), [])
    if held is None:
        raise Conflict(f"{where}; its route or sender is no longer in the policy in force")
    history = entry.status.get("history")
    if isinstance(history, list) and history:
        held.transfer.history = [(str(h["state"]), float(h["at"])) for h in history]
    state.remember(held.transfer)
    return held


async def _held_elsewhere(state: EgressState, transfer_id: str) -> Held | None:
    """An open review of the park held by another replica (read only), or None."""
    try:
        entry = await state.services.directory.find_transfer(transfer_id)
    except GatewayError:
        return None
    if entry is None or entry.status.get("state") != "review":
        return None
    held = await _take_over(state, entry)
    held.approvals = _merged_approvals([], entry.approvals)
    return held


async def handle_review(request: web.Request) -> web.StreamResponse:
    """``POST /v1/reviews/{id}/approve|reject`` (compliance officers only).

    Any replica of a park decides any of its reviews (:func:`_deciding`). The
    transfer's state moves only once its record is durable: if the audit log
    (or the ledger) fails, the review stays open and can be decided again.
    """
    state = request.app[EGRESS]
    officer = officer_of(request, state)
    transfer_id = _transfer_id(request)
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
            async with _deciding(state, transfer_id) as held:
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
                return await _reject(state, held, by)
            if len(held.approvals) + 1 < _approvals_needed(held):
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


def _approvals_needed(held: Held) -> int:
    """How many distinct officers must approve the review (the holding rule's ``approvals``)."""
    needed = held.decision.get("approvals", 1)
    return needed if isinstance(needed, int) and needed > 0 else 1


async def _first_approval(state: EgressState, held: Held, by: _DecidedBy) -> web.StreamResponse:
    """Record an approval that is not yet enough (four eyes); the review stays open.

    The record is a ``review`` record naming the officer: the transfer's trail
    still ends at ``review``, so it is restored as open after a restart, with
    the approvals its records name (:func:`_recorded_approvals`).
    """
    transfer = held.transfer
    if any(by.officer == officer for officer, _, _ in held.approvals):
        raise Conflict("you approved this review already; another officer must approve it")
    rule, reason, version = _recorded_verdict(held)
    needed = _approvals_needed(held)
    count = len(held.approvals) + 1
    await append_record(
        state,
        "review",
        transfer,
        direction=held.direction,
        decision="review",
        rule=rule,
        reason=reason,
        policy_version=version,
        summary=held.summary,
        size=transfer.verdict.get("bytes"),
        detail=f"approval {count} of {needed}",
        officer=by.officer,
        comment=by.comment,
        reference=by.reference,
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


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _recorded_verdict(held: Held) -> tuple[str, str, str]:
    """Rule, reason and policy version of the ``review`` verdict."""
    meta = held.decision
    return (
        str(meta.get("rule", "")),
        str(meta.get("reason", "")),
        str(meta.get("policy_version", "")),
    )


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


async def _reject(
    state: EgressState, held: Held, by: _DecidedBy | None, *, why: str | None = None
) -> web.StreamResponse:
    """Reject a held review: by an officer (``by``), or expired (``why``)."""
    transfer = held.transfer
    rule, _reason, version = _recorded_verdict(held)
    reason = why or f"rejected by a compliance officer: {by.comment if by else ''}"
    receipt = await append_record(
        state,
        "rejected",
        transfer,
        direction=held.direction,
        decision="block",
        rule=rule,
        reason=reason,
        policy_version=version,
        summary=held.summary,
        size=transfer.verdict.get("bytes"),
        officer=by.officer if by else None,
        comment=by.comment if by else None,
        reference=by.reference if by else None,
    )
    transfer.rejected()
    await asyncio.to_thread(state.spool.release, transfer.id)
    body = {
        **transfer.verdict,
        "state": transfer.state.value,
        "reason": reason,
        **({"officer": by.officer} if by else {}),
        "receipt": receipt_json(receipt),
    }
    transfer.verdict = body
    return json_response(body)


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
    rule, reason, _ = _recorded_verdict(held)
    if held.summary is None or not held.info.file_key:
        summary, info = await asyncio.to_thread(_restored_parts, state, held)
    else:
        summary, info = held.summary, held.info
    judged: list[tuple[CompiledPolicy, TransferContext]] = []

    async def judge(tx: LedgerTransaction) -> Ruling:
        # The policy is read under the lock: a reload while waiting for it
        # is the policy this approval is judged by.
        policy = state.current_policy()
        context = _current_context(policy, transfer)
        judged.append((policy, context))
        direction = context.route.direction
        digests = _ledger_digests(policy, held, summary, direction)
        counts = {c: await tx.count(c, d) for c, d in digests.items()}
        recheck = policy.evaluate(context, summary, counts)
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
                summary=summary,
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
        return Ruling(recheck, digests, counts=True, record=record)

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
    policy, context = judged[-1]
    fields = {k: v for k, v in transfer.verdict.items() if k != "reason"}
    fields["decision"] = "allow"
    job = Job(transfer, context, summary, info, fields=fields)
    encrypt = ruling.decision.encrypt or context.route.encrypt
    job.release = Release("allow", rule, reason, policy.version, encrypt)
    return await deliver(state, job)


def _current_context(policy: CompiledPolicy, transfer: Transfer) -> TransferContext:
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


def _ledger_digests(
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
    await asyncio.to_thread(state.spool.release, transfer.id)
    await record_end(
        state,
        transfer,
        State.FAILED,
        why,
        direction=held.direction,
        policy_version=_approval_version(held),
        size=transfer.verdict.get("bytes"),
        decision="allow",
        rule=_recorded_verdict(held)[0],
    )


def _approval_version(held: Held) -> str:
    """The policy version an approval was recorded under (the held verdict's until then)."""
    return str(held.transfer.verdict.get("policy_version") or _recorded_verdict(held)[2])


def _restored_parts(state: EgressState, held: Held) -> tuple[ScanSummary, SpoolInfo]:
    """Summary and spool file key of a review restored after a restart, from its held files.

    Runs in a worker thread: it reads the held metadata and header and
    unwraps the file key with the spool identity (one X25519 exchange).
    """
    _, header, meta = state.spool.held_parts(held.transfer.id, state.spool_identity)
    summary = held.summary or _summary_from_json(meta["summary"], meta)
    info = held.info
    if not info.file_key:
        key = unwrap_file_key(parse_header(header), [state.spool_identity])
        info = SpoolInfo(info.path, key, info.plaintext_bytes, info.payload_bytes)
    return summary, info


def _summary_from_json(obj: Mapping[str, Any], meta: Mapping[str, Any]) -> ScanSummary:
    """A :class:`ScanSummary` from its SPEC §3.2 JSON and the held metadata beside it.

    The held metadata carries the keyed hashes per label and the
    ``distinct_capped`` flag (``label_digests``; spools held by an older
    version have only per-category hashes, and then the summary has no
    digests: see :func:`_ledger_digests`).
    """
    labelled = meta.get("label_digests") or {}
    return ScanSummary.from_json(
        obj,
        digests={
            str(label): frozenset(bytes.fromhex(h) for h in values)
            for label, values in labelled.items()
        },
        distinct_capped=bool(meta.get("distinct_capped", False)),
    )


async def restore_held(state: EgressState, policy: CompiledPolicy | None) -> int:
    """Reload held reviews from the spool after a restart; return how many.

    A held spool is restored only when the audit log shows it open: its last
    record is the ``review`` verdict. Without that record (a crash between
    making the spool durable and appending the record) the review never
    existed for anyone; with a later record (approved, rejected, failed …)
    it was decided already. Either way its spool is deleted, not restored.
    Metadata an older version held in clear is sealed to the spool key here
    (:meth:`~gateway.server.spool.SpoolDir.held_parts`).

    With a shared directory another replica may have decided, or be
    deciding, a review this one held: the directory says so, and such a
    review is neither restored nor swept here (:func:`_restore_in_park`).
    The claims this replica held when it stopped are settled too
    (:func:`settle_claims`).
    """
    restored = 0
    for transfer_id in state.spool.held_ids():
        path, _header, meta = await asyncio.to_thread(
            state.spool.held_parts, transfer_id, state.spool_identity
        )
        records = [parse_canonical(r.record) for r in await state.audit.find(transfer_id)]
        if _park_wide(state) and not await _restore_in_park(state, transfer_id, meta, records):
            continue
        last = records[-1] if records else {}
        if last.get("event") != "review":
            if last.get("event") == "approved":
                await _fail_interrupted(state, meta, last)
            await asyncio.to_thread(state.spool.release, transfer_id)
            log.warning("held_review_swept", transfer_id=transfer_id, last=last.get("event"))
            continue
        held = _held_from_meta(transfer_id, path, meta, policy, _recorded_approvals(records))
        if held is None:
            log.warning("held_review_unroutable", transfer_id=transfer_id)
            continue
        state.held[transfer_id] = held
        state.remember(held.transfer)
        restored += 1
    if _park_wide(state):
        await settle_claims(state)
    return restored


#: States of a transfer in the directory that say nothing more will read its held files.
_FINAL_STATES = frozenset({s.value for s in State if s.final} | {"rejected", "blocked"})


async def _restore_in_park(
    state: EgressState, transfer_id: str, meta: Mapping[str, Any], records: list[dict[str, Any]]
) -> bool:
    """Whether this replica's own audit records decide what becomes of a review it held.

    False when the directory shows another replica deciding it (its claim),
    or deciding it after this one (the decision's records are in that
    replica's log; once final, nothing reads the files, so they go), or
    when it is still open: it stays in memory here only when this replica
    holds it, and is decidable from anywhere either way.
    """
    try:
        entry = await state.services.directory.find_transfer(transfer_id)
    except GatewayError as exc:
        log.warning("transfer_directory_unavailable", error=exc.title)
        return True  # this replica's audit log alone, as a single gateway
    if entry is None:
        return True
    me = _instance(state)
    ours = records[-1].get("event") if records else None
    if entry.status.get("state") == "review":
        if ours != "review" and ours is not None:
            return True  # decided here, the directory a step behind: settle from our log
        claimed_elsewhere = entry.claimed_by is not None and entry.claimed_by != me
        if claimed_elsewhere:
            return False
        if entry.approvals:
            # The park's approvals (another replica may have added one).
            records.extend(
                {"event": "review", **approval}
                for approval in entry.approvals
                if approval.get("officer") not in {r.get("officer") for r in records}
            )
        return True
    if entry.instance == me:
        return True  # our records are the latest: settle from them
    if entry.status.get("state") in _FINAL_STATES:
        await asyncio.to_thread(state.spool.release, transfer_id)
        log.info("held_review_swept", transfer_id=transfer_id, decided_by=entry.instance)
    del meta
    return False


async def settle_claims(state: EgressState) -> int:
    """Settle the claims this replica held on reviews when it stopped; how many.

    A replica that died deciding a review another replica held left its
    claim: if its audit log shows the approval recorded, the transfer ends
    ``failed`` (its subjects are counted; approving it again would count
    them twice); a decision recorded but not yet in the directory is
    published; otherwise the claim is given up and the review stays open.
    """
    try:
        claims = await state.services.directory.claims_of(_instance(state), ("review",))
    except GatewayError as exc:
        log.warning("transfer_directory_unavailable", error=exc.title)
        return 0
    for entry in claims:
        transfer_id = entry.transfer_id
        records = [parse_canonical(r.record) for r in await state.audit.find(transfer_id)]
        last = records[-1] if records else {}
        event = last.get("event")
        if event == "approved":
            meta = await asyncio.to_thread(_held_meta_or_status, state, transfer_id, entry)
            await _fail_interrupted(state, meta, last)
            await asyncio.to_thread(state.spool.release, transfer_id)
        elif event in _FINAL_STATES:
            await _republish(state, entry, records)
            await asyncio.to_thread(state.spool.release, transfer_id)
        await _release_claim(state, transfer_id, None)
        await published(state, transfer_id)
        log.warning("review_claim_settled", transfer_id=transfer_id, last=event)
    return len(claims)


def _held_meta_or_status(
    state: EgressState, transfer_id: str, entry: TransferEntry
) -> dict[str, Any]:
    """What ending an interrupted approval needs: the held metadata, else the status."""
    try:
        return state.spool.held_parts(transfer_id, state.spool_identity)[2]
    except (OSError, AgeError):
        status = entry.status
        history = status.get("history") or [{}]
        return {
            "transfer_id": transfer_id,
            "route": status.get("route", ""),
            "path": status.get("path", ""),
            "sender": entry.sender,
            "organisation": status.get("organisation", ""),
            "created_at": history[0].get("at", time.time()),
        }


async def _republish(
    state: EgressState, entry: TransferEntry, records: list[dict[str, Any]]
) -> None:
    """Publish the decision this replica recorded but the directory missed."""
    last = records[-1]
    status = dict(entry.status)
    status["state"] = last.get("event")
    history = list(status.get("history") or [])
    history += [{"state": r.get("event"), "at": r.get("time")} for r in records[-1:]]
    status["history"] = history
    found = await state.audit.find(entry.transfer_id)
    seq = found[-1].index if found else 0
    with contextlib.suppress(GatewayError):
        await state.services.directory.publish_transfer(
            TransferEntry(entry.transfer_id, _instance(state), entry.sender, status), seq
        )


def _held_from_meta(
    transfer_id: str,
    path: Path,
    meta: Mapping[str, Any],
    policy: CompiledPolicy | None,
    approvals: list[tuple[str, str, str | None]],
) -> Held | None:
    """A held review from its metadata (None: its route or sender is not in ``policy``)."""
    route = policy.routes.get(meta["route"]) if policy is not None else None
    sender = policy.senders.get(meta["sender"]) if policy is not None else None
    if route is None or sender is None:
        return None
    transfer = Transfer(
        id=transfer_id,
        route=meta["route"],
        path=meta["path"],
        sender=meta["sender"],
        organisation=meta["organisation"],
        state=State.HELD,
        created_at=float(meta["created_at"]),
        # Held by an older version (no flag): the name was never judged here, withhold it.
        name_clean=meta.get("name_clean") is True,
        justification=_text_or_none(meta.get("justification")),
    )
    decision = meta["decision"]
    summary_json = meta["summary"]
    transfer.verdict = {
        "transfer_id": transfer_id,
        "decision": "review",
        "rule": decision["rule"],
        "labels": summary_json.get("labels", {}),
        "subjects": summary_json.get("subjects", 0),
        "bytes": summary_json.get("bytes", 0),
        "sha256": summary_json.get("sha256"),
        "policy_version": decision["policy_version"],
        "reason": decision["reason"],
    }
    info = SpoolInfo(path, b"", int(meta["plaintext_bytes"]), int(meta["payload_bytes"]))
    digests = {
        c: frozenset(bytes.fromhex(h) for h in values)
        for c, values in meta.get("digests", {}).items()
    }
    return Held(
        transfer=transfer,
        context=TransferContext(route, sender),
        direction=route.direction,
        decision=decision,
        summary=None,
        digests=digests,
        info=info,
        encrypt=decision.get("encrypt") or route.encrypt,
        approvals=approvals,
    )


def _recorded_approvals(records: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """The approvals a four-eyes review had before a restart, from its audit records.

    Each is a ``review`` record naming the officer (:func:`_first_approval`);
    the signed log, not memory, says who approved, so a restart neither
    forgets an approval nor lets the same officer give the second one.
    """
    return [
        (str(r["officer"]), str(r.get("comment", "")), _text_or_none(r.get("reference")))
        for r in records
        if r.get("event") == "review" and isinstance(r.get("officer"), str)
    ]


async def _fail_interrupted(
    state: EgressState, meta: dict[str, Any], approved: dict[str, Any]
) -> None:
    """End an approval the previous process recorded but never forwarded.

    Its subjects are in the ledger already; restoring it as a review would let
    it be approved (and counted) twice. It ends ``failed``; the sender pushes again.
    """
    transfer = Transfer(
        id=str(meta["transfer_id"]),
        route=str(approved.get("route", meta["route"])),
        path=str(meta["path"]),
        sender=str(approved.get("sender", meta["sender"])),
        organisation=str(approved.get("organisation") or meta["organisation"]),
        state=State.APPROVED,
        created_at=float(meta["created_at"]),
    )
    await record_end(
        state,
        transfer,
        State.FAILED,
        "gateway restarted before forwarding the approved transfer",
        direction=str(approved.get("direction", "")),
        policy_version=str(approved.get("policy_version", "")),
        size=approved.get("bytes"),
        decision="allow",
        rule=str(approved.get("rule", "")),
    )
