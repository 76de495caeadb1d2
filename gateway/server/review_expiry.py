"""Expiry of held reviews: rejected as expired when undecided after ``review_expiry``.

Also drops the reviews held here that another replica of the park decided.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway.errors import (
    Conflict,
    GatewayError,
    NotFound,
)
from gateway.server.egress_state import EgressState
from gateway.server.review_claims import deciding, forget_decided
from gateway.server.review_queue import EXPIRED_PREFIX, MAX_REVIEW_PAGE
from gateway.server.reviews import reject

log = structlog.get_logger("gateway.reviews")


async def expire_reviews(state: EgressState, *, now: float | None = None) -> int:
    """Reject the held reviews older than ``review_expiry`` as expired; how many.

    Each is recorded ``rejected`` ("expired: …"), its spool deleted, as an
    officer's rejection would; one being decided right now is left alone.
    """
    expiry = state.config.review_expiry
    moment = time.time() if now is None else now
    due = [tid for tid, held in state.held.items() if moment - held.transfer.created_at >= expiry]
    if state.park_wide:
        # Also those no replica holds in memory (their replica is gone).
        due += [tid for tid in await _park_due(state, moment - expiry) if tid not in due]
    expired = 0
    for transfer_id in due:
        try:
            async with deciding(state, transfer_id) as held:
                if moment - held.transfer.created_at < expiry:
                    continue
                hours = expiry / 3600
                why = f"{EXPIRED_PREFIX}no decision within {hours:g} h"
                await reject(state, held, None, why=why)
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

    A replica may decide a review this one holds
    (:func:`~gateway.server.review_claims.deciding`); the directory then
    shows it decided, and this replica's queue, metrics and expiry must not
    keep it.
    """
    if not state.park_wide:
        return 0
    forgotten = 0
    for transfer_id in [t for t in state.held if t not in state.deciding]:
        try:
            entry = await state.services.directory.find_transfer(transfer_id)
        except GatewayError:
            return forgotten  # the directory is down: try again next time
        if entry is not None and entry.status.get("state") != "review":
            forgotten += forget_decided(state, transfer_id, entry)
    return forgotten


async def expire_periodically(state: EgressState) -> None:
    """Run :func:`expire_reviews` (and :func:`forget_decided_elsewhere`) every
    minute, or every tenth of the expiry if shorter."""
    interval = min(60.0, state.config.review_expiry / 10)
    while True:
        await asyncio.sleep(interval)
        await forget_decided_elsewhere(state)
        await expire_reviews(state)
