"""The egress role's transfer endpoint: one request, one transfer, one pipeline (SPEC §5).

A transfer is driven through :class:`~gateway.server.transfer.Transfer`, each
step one module:

1. **receive** (:mod:`gateway.server.receive`): the body streams into the
   classifier and the encrypted spool (and, large enough, to the twin).
2. **decide** (:mod:`gateway.server.decide`): inside ONE ledger transaction for
   the sender's organisation and year: read the counts, evaluate the policy
   (pure), append the audit record (durable before anything else happens)
   and, on allow, add the subjects.
3. **deliver** (:mod:`gateway.server.deliver`): only after ``begin_forwarding``
   (the zero-leak gate), to the route's destination
   (:mod:`gateway.server.destinations`): header + spooled age payload to the
   twin (``encrypt: envelope``), or decrypted plaintext over mutual TLS
   (``encrypt: tls``).

Every record goes through :mod:`gateway.server.records`. Any failure before
the verdict is fail-closed (nothing forwarded); any failure after it ends the
transfer ``failed`` in the audit log. A ``review`` verdict keeps the spool
(re-wrapped to the gateway's own spool key) until a compliance officer
approves or rejects it (:mod:`gateway.server.reviews`). This module checks the
request, runs those steps in order and turns the verdict into the answer.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from typing import Final, Literal
from urllib.parse import unquote

import structlog
from aiohttp import web

from gateway.crypto.age import build_header
from gateway.errors import (
    ClientError,
    GatewayError,
    PayloadTooLarge,
    Unavailable,
    UpstreamTimeout,
)
from gateway.policy.engine import CompiledPolicy, TransferContext
from gateway.server.access import note
from gateway.server.auth import sender_identity
from gateway.server.config import RETRY_AFTER_SECONDS
from gateway.server.connections import send_continue
from gateway.server.decide import decide
from gateway.server.deliver import deliver
from gateway.server.destinations.twin import H_REPLACE
from gateway.server.egress_state import EGRESS, EgressState
from gateway.server.job import Job, Release
from gateway.server.notes import clean_note
from gateway.server.problem import Problem, json_response
from gateway.server.receive import Aborted, receive
from gateway.server.records import published, receipt_json, record_end, verdict_fields
from gateway.server.transfer import TRANSFER_ID, State, Transfer, new_transfer_id

log = structlog.get_logger("gateway.egress")

#: ``Retry-After`` of a transfer cut at the drain deadline: another replica (or
#: this one, restarted) can take it at once.
DRAIN_RETRY_AFTER_SECONDS = 1
#: Longest accepted file name (bytes, UTF-8): the common filesystem limit (ext4, XFS).
MAX_NAME_BYTES = 255
#: The header a sender says what a transfer is for in (shown to the reviewer, recorded).
JUSTIFICATION_HEADER: Final = "X-Gateway-Justification"


class Blocked(GatewayError):
    """A policy verdict of ``block``: 403 with the verdict fields (SPEC §5).

    Not a :class:`~gateway.errors.Forbidden`: the sender may send, but the
    policy refused this content; the problem carries rule and reason.
    """

    status = 403
    slug = "blocked"
    title = "Transfer blocked by policy"


#: Unicode categories a file name may not contain: controls (Cc: C0, DEL and the
#: C1 range U+0080-U+009F, which terminals interpret), format characters (Cf: bidi
#: overrides and isolates, zero-width characters), line and paragraph separators
#: (Zl, Zp: a name that breaks a listing's lines), and lone surrogates (Cs: not
#: encodable as a file name in UTF-8).
_REFUSED_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def safe_name(raw: str) -> str:
    """Validate the file name a sender gave; it becomes a file name at the destination.

    Raises:
        ClientError: empty, a path, a dot name, control characters (C0, DEL,
            C1), format characters (Unicode category Cf: the bidi overrides
            U+202A-U+202E and isolates U+2066-U+2069 would let ``exe.csv``
            display as ``vsc.exe``), line or paragraph separators, lone
            surrogates, or too long.
    """
    name = raw
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(unicodedata.category(c) in _REFUSED_NAME_CATEGORIES for c in name)
        or name.startswith(".")
        or len(name.encode()) > MAX_NAME_BYTES
    ):
        raise ClientError(
            "the transfer path must be one file name (no '/', no leading dot, "
            f"no control or format characters, at most {MAX_NAME_BYTES} bytes)"
        )
    return name


def _justification(request: web.Request, state: EgressState, policy: CompiledPolicy) -> str | None:
    """The sender's justification header, checked (percent-encoded UTF-8), or None.

    Raises:
        ClientError: not a clean text (see :func:`gateway.server.notes.clean_note`).
    """
    raw = request.headers.get(JUSTIFICATION_HEADER)
    if raw is None:
        return None
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ClientError(f"{JUSTIFICATION_HEADER}: percent-encoded UTF-8") from None
    return clean_note(text, "justification", policy.detectors, state.services.secret)


async def handle_transfer(request: web.Request) -> web.StreamResponse:
    """``PUT|POST /v1/transfers/{route}/{path}``."""
    return await run_transfer(request, request.match_info["route"], request.match_info["path"])


async def run_transfer(request: web.Request, route_name: str, raw_name: str) -> web.Response:
    """Drive one transfer from the first body byte to its verdict response."""
    state = request.app[EGRESS]
    policy, context, transfer = await _admit(request, state, route_name, raw_name)
    note(request, transfer_id=transfer.id)
    state.remember(transfer)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    state.inflight += 1
    state.services.metrics.inflight.inc()
    try:
        with structlog.contextvars.bound_contextvars(transfer_id=transfer.id):
            log.info("transfer_started", route=route_name, sender=transfer.sender)
            try:
                async with asyncio.timeout(state.config.total_timeout):
                    return await _pipeline(state, request, transfer, policy, context)
            except asyncio.CancelledError:
                if not state.cut or task is None:
                    raise
                # Cut at the drain deadline (SIGTERM): an answer, not a reset. The
                # finally below records it aborted before the answer is sent.
                task.uncancel()
                raise Problem(
                    Unavailable,
                    "the gateway is shutting down and cut this transfer at its drain "
                    "deadline; nothing was delivered: send it again",
                    {"transfer_id": transfer.id},
                    headers={"Retry-After": str(DRAIN_RETRY_AFTER_SECONDS)},
                ) from None
            except TimeoutError:
                if transfer.verdict:
                    # Timed out while forwarding (SPEC §5): 504 with the verdict.
                    raise Problem(
                        UpstreamTimeout,
                        "the transfer exceeded the gateway's time limit while forwarding; "
                        "nothing was delivered",
                        dict(transfer.verdict),
                    ) from None
                raise Problem(
                    Unavailable,
                    "the transfer exceeded the gateway's time limit; nothing was forwarded",
                    {"transfer_id": transfer.id},
                ) from None
    finally:
        state.inflight -= 1
        state.services.metrics.inflight.dec()
        if task is not None:
            state.tasks.discard(task)
        if not transfer.state.final and transfer.id not in state.held:
            # Cancelled (shutdown deadline) or an unexpected error: never leave it open.
            ended: Literal[State.ABORTED, State.FAILED] = (
                State.ABORTED if transfer.state is State.RECEIVING else State.FAILED
            )
            await _end(
                state, transfer, context, policy, ended, "gateway shutdown or internal error"
            )
            state.release_spool(transfer.id)
        # Answer only once the other replicas can see what was recorded.
        await published(state, transfer.id)


async def _admit(
    request: web.Request, state: EgressState, route_name: str, raw_name: str
) -> tuple[CompiledPolicy, TransferContext, Transfer]:
    """Check the request before its body is invited; the policy, context and new transfer.

    Raises:
        GatewayError: shutting down, no policy, an unknown sender or route, a
            bad name, justification or replace header, too large, too many
            transfers, the audit log unwritable, or the spool full.
    """
    if state.closing:
        raise Unavailable("the gateway is shutting down; retry on another replica")
    policy = state.current_policy()
    identity = sender_identity(request, state.tokens)
    context = policy.context(route_name, identity)
    name = safe_name(raw_name)
    justification = _justification(request, state, policy)
    replaces = request.headers.get(H_REPLACE)
    if replaces is not None and not TRANSFER_ID.fullmatch(replaces):
        raise ClientError(f"{H_REPLACE}: the transfer id of the file to replace (t_…)")
    length = request.content_length
    if length is not None and length > state.config.max_body_bytes:
        raise PayloadTooLarge(
            f"the body ({length} bytes) exceeds the {state.config.max_body_bytes}-byte limit"
        )
    if state.inflight >= state.config.max_concurrent:
        raise Problem(
            Unavailable,
            "too many transfers in progress; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if not state.audit.healthy:
        state.services.metrics.fail_closed.labels("audit").inc()
        raise Unavailable("the audit log is not writable; nothing can be decided")
    state.spool.check_space()  # one statvfs(2)
    # Only now, with sender, route, name, size and capacity checked, is the
    # client invited to send its body (RFC 9110 §10.1.1).
    await send_continue(request)
    transfer = Transfer(
        id=new_transfer_id(),
        route=route_name,
        path=name,
        sender=identity,
        organisation=context.sender.organisation,
        justification=justification,
        replaces=replaces,
    )
    return policy, context, transfer


async def _end(
    state: EgressState,
    transfer: Transfer,
    context: TransferContext,
    policy: CompiledPolicy,
    final: Literal[State.ABORTED, State.FAILED],
    why: str,
    job: Job | None = None,
) -> None:
    """Record how a transfer without a verdict ended (with its summary once classified)."""
    summary = job.summary if job is not None else None
    await record_end(
        state,
        transfer,
        final,
        why,
        direction=context.route.direction,
        policy_version=policy.version,
        size=summary.size if summary is not None else None,
        summary=summary,
    )


async def _pipeline(
    state: EgressState,
    request: web.Request,
    transfer: Transfer,
    policy: CompiledPolicy,
    context: TransferContext,
) -> web.Response:
    """Receive, decide, then answer the verdict (and deliver an allowed transfer)."""
    job = await _received(state, request, transfer, policy, context)
    try:
        decision, receipt = await decide(state, job, policy)
    except GatewayError as exc:
        state.release_spool(transfer.id, job.info)
        if job.upload is not None:
            state.track(asyncio.ensure_future(job.upload.discard(state.upstream_ssl)))
        log.error("decision_failed", why=exc.title)
        await _end(state, transfer, context, policy, State.FAILED, exc.title.lower(), job)
        raise Problem(type(exc), exc.detail, {"transfer_id": transfer.id}) from None
    transfer.mark("decide")
    route, summary, metrics = job.route, job.summary, state.services.metrics
    assert summary is not None
    encrypt = decision.encrypt or route.encrypt
    if job.upload is not None and not (decision.action == "allow" and encrypt == "envelope"):
        # Not released: the twin drops the ciphertext it holds (it never got a key).
        state.track(asyncio.ensure_future(job.upload.discard(state.upstream_ssl)))
        job.upload = None
    fields = verdict_fields(transfer, summary, decision)
    fields["receipt"] = receipt_json(receipt)
    transfer.verdict = dict(fields)
    metrics.transfers.labels(transfer.route, route.direction, decision.action, decision.rule).inc()
    metrics.transfer_duration.labels(transfer.route, decision.action).observe(
        time.monotonic() - transfer.started
    )
    if decision.action == "block":
        metrics.transfer_bytes.labels(transfer.route, "blocked").inc(summary.size)
        log.info("transfer_blocked", rule=decision.rule)
        raise Problem(Blocked, decision.reason, {**fields, "reason": decision.reason})
    if decision.action == "review":
        log.info("transfer_held", rule=decision.rule)
        return _held_response(state, transfer, fields, decision.reason)
    job.fields = fields
    job.release = Release("allow", decision.rule, decision.reason, decision.policy_version, encrypt)
    return await deliver(state, job)


async def _received(
    state: EgressState,
    request: web.Request,
    transfer: Transfer,
    policy: CompiledPolicy,
    context: TransferContext,
) -> Job:
    """The body received and classified, as a job; a failure ends the transfer (fail closed)."""
    try:
        summary, info, upload = await receive(state, request, transfer, policy, context.route)
    except Aborted as exc:
        await _end(state, transfer, context, policy, State.ABORTED, exc.why)
        raise Problem(
            ClientError, f"{exc.why}; nothing was forwarded", {"transfer_id": transfer.id}
        ) from None
    except GatewayError as exc:
        final: Literal[State.ABORTED, State.FAILED] = (
            State.ABORTED if isinstance(exc, ClientError) else State.FAILED
        )
        await _end(state, transfer, context, policy, final, exc.title.lower())
        raise Problem(type(exc), exc.detail, {"transfer_id": transfer.id}) from None
    except Exception as exc:  # noqa: BLE001 - any classifier/cipher bug fails closed
        # A classifier or cipher failure must never forward: fail closed.
        log.error("receive_failed", error_type=type(exc).__name__)
        await _end(state, transfer, context, policy, State.FAILED, "classifier or spool failure")
        raise Problem(
            GatewayError,
            "the gateway could not classify the body; nothing was forwarded",
            {"transfer_id": transfer.id},
        ) from None
    transfer.classified()
    transfer.mark("receive")
    route = context.route
    # What the policy judges (and holds for review): chance-level findings
    # counted where the route or the label asks (chance: count).
    job = Job(transfer, context, policy.with_chance(summary, route), info, upload=upload)
    if upload is None and route.encrypt == "envelope" and route.recipient:
        # The envelope header (one X25519 exchange, ~0.4 ms) is built in a
        # worker thread while the verdict record is fsynced, off the latency
        # path. It wraps the file key for the recipient but never leaves the
        # process unless the verdict allows: building it early releases nothing.
        job.header = asyncio.ensure_future(
            asyncio.to_thread(build_header, info.file_key, [state.recipient(route)])
        )
    return job


def _held_response(
    state: EgressState, transfer: Transfer, fields: dict[str, object], reason: str
) -> web.Response:
    """The 202 of a transfer held for review, pointing at its status."""
    status_url = f"/v1/transfers/{transfer.id}"
    hours = state.config.review_expiry / 3600
    body = {
        **fields,
        "reason": reason,
        "state": State.HELD.value,
        "status_url": status_url,
        "next": (
            "held, encrypted, for a compliance officer, who approves it (it is then "
            f"delivered) or rejects it (it is deleted); unanswered after {hours:g} h it "
            f"is rejected as expired. GET {status_url} shows where it is."
        ),
    }
    response = json_response(body, status=202)
    response.headers["Location"] = status_url
    return response
