"""The status API of the egress role: ``GET /v1/transfers/{id}`` and its receipt (SPEC §5).

A transfer is answered from memory while recent, from the park's shared
directory when another replica recorded it (issue 16), else from the audit
log, with a bounded number of log scans at a time. Senders see their own
transfers only; compliance officers see all. Who is asking
(:func:`officer_of`) and which transfer (:func:`requested_id`) are read here
for the review endpoints too.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from gateway.audit.receipt import Receipt
from gateway.audit.records import parse_canonical
from gateway.errors import (
    ClientError,
    GatewayError,
    NotFound,
    Unavailable,
)
from gateway.ledger.base import TransferEntry
from gateway.server.auth import require_officer, sender_identity
from gateway.server.config import RETRY_AFTER_SECONDS
from gateway.server.egress_state import EGRESS, EgressState
from gateway.server.problem import Problem, json_response
from gateway.server.records import receipt_json
from gateway.server.transfer import TRANSFER_ID, State

log = structlog.get_logger("gateway.reviews")


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


def requested_id(request: web.Request) -> str:
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
    transfer_id = requested_id(request)
    transfer = state.recent.get(transfer_id)
    if transfer is None or (transfer.state is State.HELD and state.park_wide):
        # Not here, or held here: any replica of the park may have decided it since.
        shared = await _shared(state, transfer_id)
        if shared is not None:
            _check_owner(reader, shared.sender, transfer_id)
            return json_response({**shared.status, "instance": shared.instance})
    if transfer is not None:
        _check_owner(reader, transfer.sender, transfer_id)
        return json_response({**transfer.status_json(), "instance": state.instance})
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
        "instance": state.instance,
    }
    return json_response(body)


async def handle_receipt(request: web.Request) -> web.StreamResponse:
    """``GET /v1/transfers/{id}/receipt``: the full receipt of the decision record."""
    state = request.app[EGRESS]
    reader = _reader(request, state)
    transfer_id = requested_id(request)
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
