"""The right to decide one review, in this process and across the park (issue 16).

One decision at a time per review: a review is taken out of the held set
while a decision on it is recorded, and, with a shared directory, claimed
there (a lease), so two officers on two replicas decide it once. A review
another replica holds is taken over from the shared held directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from gateway.crypto.errors import AgeError
from gateway.errors import (
    Conflict,
    GatewayError,
    NotFound,
    Unavailable,
)
from gateway.ledger.base import TransferEntry
from gateway.server.egress_state import EgressState, Held
from gateway.server.records import published
from gateway.server.review_files import held_from_meta, text_or_none
from gateway.server.transfer import State

log = structlog.get_logger("gateway.reviews")


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


def forget_decided(state: EgressState, transfer_id: str, entry: TransferEntry) -> int:
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
        claimed = await directory.claim_review(transfer_id, state.instance, lease)
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
        forget_decided(state, transfer_id, seen)
    raise NotFound(f"no transfer {transfer_id!r} is waiting for review")


def merged_approvals(
    here: list[tuple[str, str, str | None]], park: tuple[dict[str, Any], ...]
) -> list[tuple[str, str, str | None]]:
    """The approvals the park's directory names, then any only this replica knows."""
    merged = [
        (str(a.get("officer")), str(a.get("comment", "")), text_or_none(a.get("reference")))
        for a in park
    ]
    named = {officer for officer, _, _ in merged}
    return merged + [a for a in here if a[0] not in named]


async def release_claim(
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
        await state.services.directory.release_review(transfer_id, state.instance, rows)
    except GatewayError as exc:
        log.error("review_claim_not_released", transfer_id=transfer_id, error=exc.title)


@contextlib.asynccontextmanager
async def deciding(state: EgressState, transfer_id: str) -> AsyncIterator[Held]:
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
        if state.park_wide:
            claimed = await _claim_in_park(state, transfer_id)
        local = transfer_id in state.held
        if local or claimed is None:
            held = _claim(state, transfer_id)
        else:
            held = await _take_over(state, claimed)
        if claimed is not None:
            held.approvals = merged_approvals(held.approvals, claimed.approvals)
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
            await release_claim(
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
    held = held_from_meta(transfer_id, path, meta, state.current_policy(), [])
    if held is None:
        raise Conflict(f"{where}; its route or sender is no longer in the policy in force")
    history = entry.status.get("history")
    if isinstance(history, list) and history:
        held.transfer.history = [(str(h["state"]), float(h["at"])) for h in history]
    state.remember(held.transfer)
    return held


async def held_elsewhere(state: EgressState, transfer_id: str) -> Held | None:
    """An open review of the park held by another replica (read only), or None."""
    try:
        entry = await state.services.directory.find_transfer(transfer_id)
    except GatewayError:
        return None
    if entry is None or entry.status.get("state") != "review":
        return None
    held = await _take_over(state, entry)
    held.approvals = merged_approvals([], entry.approvals)
    return held
