"""Held reviews after a restart: restored when still open, settled otherwise.

A held spool is restored only when the audit log shows the review open; a
decided one is swept, an approval recorded but never forwarded ends
``failed``. With a shared directory, the claims this replica held when it
stopped are settled too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from gateway.audit.records import parse_canonical
from gateway.crypto.errors import AgeError
from gateway.errors import (
    GatewayError,
)
from gateway.ledger.base import TransferEntry
from gateway.policy.engine import CompiledPolicy
from gateway.server.egress_state import EgressState
from gateway.server.records import published, record_end
from gateway.server.review_claims import merged_approvals, release_claim
from gateway.server.review_files import held_from_meta, text_or_none
from gateway.server.transfer import State, Transfer

log = structlog.get_logger("gateway.reviews")


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
        park_approvals: tuple[dict[str, Any], ...] = ()
        if state.park_wide:
            decides_here, park_approvals = await _restore_in_park(state, transfer_id, records)
            if not decides_here:
                continue
        last = records[-1] if records else {}
        if last.get("event") != "review":
            if last.get("event") == "approved":
                await _fail_interrupted(state, meta, last)
            await asyncio.to_thread(state.spool.release, transfer_id)
            log.warning("held_review_swept", transfer_id=transfer_id, last=last.get("event"))
            continue
        approvals = merged_approvals(_recorded_approvals(records), park_approvals)
        held = held_from_meta(transfer_id, path, meta, policy, approvals)
        if held is None:
            log.warning("held_review_unroutable", transfer_id=transfer_id)
            continue
        state.held[transfer_id] = held
        state.remember(held.transfer)
        restored += 1
    if state.park_wide:
        await settle_claims(state)
    return restored


#: States of a transfer in the directory that say nothing more will read its held files.
_FINAL_STATES = frozenset(s.value for s in State if s.final)


async def _restore_in_park(
    state: EgressState, transfer_id: str, records: list[dict[str, Any]]
) -> tuple[bool, tuple[dict[str, Any], ...]]:
    """Whether this replica's own audit records decide what becomes of a review it
    held, and the approvals the park's directory names for it.

    Not here when the directory shows another replica deciding it (its claim),
    or deciding it after this one (the decision's records are in that
    replica's log; once final, nothing reads the files, so they go).
    """
    try:
        entry = await state.services.directory.find_transfer(transfer_id)
    except GatewayError as exc:
        log.warning("transfer_directory_unavailable", error=exc.title)
        return True, ()  # this replica's audit log alone, as a single gateway
    if entry is None:
        return True, ()
    ours = records[-1].get("event") if records else None
    if entry.status.get("state") == "review":
        if ours != "review" and ours is not None:
            return True, ()  # decided here, the directory a step behind: settle from our log
        if entry.claimed_by is not None and entry.claimed_by != state.instance:
            return False, ()
        # The park's approvals: another replica may have added one.
        return True, entry.approvals
    if entry.instance == state.instance:
        return True, ()  # our records are the latest: settle from them
    if entry.status.get("state") in _FINAL_STATES:
        await asyncio.to_thread(state.spool.release, transfer_id)
        log.info("held_review_swept", transfer_id=transfer_id, decided_by=entry.instance)
    return False, ()


async def settle_claims(state: EgressState) -> int:
    """Settle the claims this replica held on reviews when it stopped; how many.

    A replica that died deciding a review another replica held left its
    claim: if its audit log shows the approval recorded, the transfer ends
    ``failed`` (its subjects are counted; approving it again would count
    them twice); a decision recorded but not yet in the directory is
    published; otherwise the claim is given up and the review stays open.
    """
    try:
        claims = await state.services.directory.claims_of(state.instance, ("review",))
    except GatewayError as exc:
        log.warning("transfer_directory_unavailable", error=exc.title)
        return 0
    for entry in claims:
        transfer_id = entry.transfer_id
        found = await state.audit.find(transfer_id)
        last = parse_canonical(found[-1].record) if found else {}
        event = last.get("event")
        # The files may be in the directory of the replica that held the review.
        held_in = await asyncio.to_thread(state.spool.locate, transfer_id)
        if event == "approved":
            meta = await asyncio.to_thread(_held_meta_or_status, state, transfer_id, entry)
            await _fail_interrupted(state, meta, last)
            await asyncio.to_thread(state.spool.release, transfer_id, held_in)
        elif event in _FINAL_STATES:
            await _republish(state, entry, last, found[-1].index)
            await asyncio.to_thread(state.spool.release, transfer_id, held_in)
        await release_claim(state, transfer_id, None)
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
    state: EgressState, entry: TransferEntry, last: dict[str, Any], seq: int
) -> None:
    """Publish the decision this replica recorded (``last``, at index ``seq`` of its
    log) but the directory missed."""
    status = dict(entry.status)
    status["state"] = last.get("event")
    status["history"] = [
        *(status.get("history") or []),
        {"state": last.get("event"), "at": last.get("time")},
    ]
    with contextlib.suppress(GatewayError):
        await state.services.directory.publish_transfer(
            TransferEntry(entry.transfer_id, state.instance, entry.sender, status), seq
        )


def _recorded_approvals(records: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """The approvals a four-eyes review had before a restart, from its audit records.

    Each is a ``review`` record naming the officer (:func:`gateway.server.reviews._first_approval`);
    the signed log, not memory, says who approved, so a restart neither
    forgets an approval nor lets the same officer give the second one.
    """
    return [
        (str(r["officer"]), str(r.get("comment", "")), text_or_none(r.get("reference")))
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
