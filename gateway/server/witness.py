"""Cross-park witnessing of audit checkpoints (SPEC §7, issue 6 "Witnessing").

The egress gateway sends its latest signed checkpoint, with an RFC 9162
consistency proof from the size the twin last co-signed, to the twin's
ingress listener (mutual TLS). The ingress verifies the log's signature and
the proof (:func:`gateway.audit.witness.witness_checkpoint`), adds its own
signature line, stores the co-signed note and returns it; the egress stores
it too. Both parks then hold the same signed history, and a fork or rollback
of either log is refused (409) instead of co-signed.

Stored notes are appended as JSON lines (``{"note": …, "time": …}``) to
``<witness_dir>/<origin>.jsonl`` and fsynced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from gateway.audit.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    parse_note,
)
from gateway.audit.witness import WitnessError, witness_checkpoint
from gateway.errors import ClientError, Conflict, NotFound, UpstreamError
from gateway.policy.model import glob_to_regex, is_glob
from gateway.server.forward import upstream_timeout
from gateway.server.ingress import require_twin
from gateway.server.problem import json_response

log = structlog.get_logger("gateway.witness")

#: How often the egress offers its checkpoint to the twin: the audit log signs
#: at least every 10 s under load (SPEC §7), so witnessing keeps pace with it.
WITNESS_INTERVAL_SECONDS = 10.0
#: A checkpoint note is a few hundred bytes; a consistency proof is at most 64
#: hashes. 64 KiB bounds what a witness request may make the ingress parse.
MAX_WITNESS_REQUEST = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _store_path(directory: Path, origin: str) -> Path:
    return directory / (_UNSAFE.sub("_", origin) + ".jsonl")


def append_note(directory: Path, origin: str, note: str) -> None:
    """Append a co-signed note durably (blocking; call from a thread)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = json.dumps({"note": note, "time": round(time.time(), 3)}) + "\n"
    fd = os.open(_store_path(directory, origin), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def last_note(directory: Path, origin: str) -> str | None:
    """The most recent stored note for ``origin`` (blocking)."""
    path = _store_path(directory, origin)
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return str(json.loads(line)["note"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


#: Origins one witness keeps state for: the twin's replicas, present and past
#: (a scaled-away replica's state stays on disk and is read again if it returns).
MAX_WITNESSED_ORIGINS = 1024


@dataclass(slots=True)
class _Witnessed:
    """What this witness last co-signed for one origin, and the lock that orders it."""

    previous: Checkpoint | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class Witness:
    """The ingress side: co-signs the checkpoints of the twin's log(s).

    The twin park may run several replicas, each with its own log and origin
    (``…/audit/{instance}``), all signed with one key under its origin's name.
    ``origin`` is then a glob (``hksz-gateway.sz.hetao/audit/*``): every
    matching origin is witnessed on its own, each checkpoint against the last
    one co-signed *for that origin*, with the key's public half named after it.

    Args:
        directory: where co-signed notes are kept (one file per origin).
        origin: the twin log's origin, or a glob of its replicas' origins.
        log_key: the twin log's verifier key (its name is ignored for a glob).
        signer: this gateway's own checkpoint key.
    """

    directory: Path
    origin: str
    log_key: NoteVerifier
    signer: NoteSigner
    origins: dict[str, _Witnessed] = field(default_factory=dict)

    def matches(self, origin: str) -> bool:
        """Whether ``origin`` is one this witness co-signs."""
        return glob_to_regex(self.origin).fullmatch(origin) is not None

    def verifier(self, origin: str) -> NoteVerifier:
        """The log key under ``origin``'s name (how each replica signs)."""
        if origin == self.log_key.name:
            return self.log_key
        return NoteVerifier.from_public_key(origin, self.log_key.public_key)

    def restore(self) -> None:
        """Resume the configured origin from its last co-signed note (after a restart)."""
        if not is_glob(self.origin):
            self._load(self.origin)

    def _load(self, origin: str) -> _Witnessed:
        """The state of ``origin``, read from its store the first time it is asked for."""
        state = self.origins.get(origin)
        if state is None:
            if len(self.origins) >= MAX_WITNESSED_ORIGINS:
                raise ClientError("too many witnessed origins")
            note = last_note(self.directory, origin)
            previous = open_checkpoint(note, [self.verifier(origin)])[0] if note else None
            state = self.origins[origin] = _Witnessed(previous)
        return state

    def state_of(self, origin: str | None) -> tuple[str, Checkpoint | None]:
        """The origin asked about (the configured one by default) and its last checkpoint.

        Raises:
            ClientError: no origin given while the configured one is a glob.
            NotFound: an origin this witness does not co-sign.
        """
        if origin is None:
            if is_glob(self.origin):
                raise ClientError("this witness co-signs several origins: ask with ?origin=")
            origin = self.origin
        if not self.matches(origin):
            raise NotFound("this gateway does not witness that origin")
        return origin, self._load(origin).previous

    async def cosign(self, note: str, proof: list[bytes]) -> str:
        """Verify and co-sign; store the result.

        Raises:
            Conflict: the checkpoint is forged, for another log, or not an extension.
        """
        try:
            origin = Checkpoint.parse(parse_note(note)[0]).origin
        except NoteError as exc:
            raise Conflict(f"refusing to co-sign: {exc}") from None
        if not self.matches(origin):
            log.error("witness_refused", origin=origin[:200], error="not a witnessed origin")
            raise Conflict(f"refusing to co-sign: {origin!r} is not a witnessed origin")
        state = self._load(origin)
        async with state.lock:
            try:
                checkpoint, cosigned = witness_checkpoint(
                    note,
                    self.verifier(origin),
                    self.signer,
                    origin=origin,
                    previous=state.previous,
                    proof=proof,
                )
            except WitnessError as exc:
                log.error("witness_refused", origin=origin, error=str(exc))
                raise Conflict(f"refusing to co-sign: {exc}") from None
            await asyncio.to_thread(append_note, self.directory, origin, cosigned)
            state.previous = checkpoint
            return cosigned


WITNESS = web.AppKey("witness", Witness)


async def handle_state(request: web.Request) -> web.StreamResponse:
    """``GET /v1/witness[?origin=O]``: the origin and size this witness last co-signed."""
    witness = _witness(request)
    origin, previous = witness.state_of(request.query.get("origin"))
    return json_response({"origin": origin, "size": previous.size if previous else 0})


async def handle_cosign(request: web.Request) -> web.StreamResponse:
    """``POST /v1/witness``: ``{"note": …, "proof": [base64 hash, …]}`` -> co-signed note."""
    witness = _witness(request)
    if request.content_length is not None and request.content_length > MAX_WITNESS_REQUEST:
        raise ClientError("witness request too large")
    raw = await request.content.read(MAX_WITNESS_REQUEST + 1)
    if len(raw) > MAX_WITNESS_REQUEST:
        raise ClientError("witness request too large")
    try:
        body = json.loads(raw)
        note = str(body["note"])
        proof = [base64.b64decode(h, validate=True) for h in body.get("proof", [])]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ClientError("witness request: expected {note, proof}") from None
    cosigned = await witness.cosign(note, proof)
    return json_response({"cosigned": cosigned})


def _witness(request: web.Request) -> Witness:
    # Only the pinned twin may read or extend what this gateway co-signs.
    require_twin(request)
    witness = request.app.get(WITNESS)
    if witness is None:
        raise NotFound("this gateway does not witness a twin log")
    return witness


async def offer_checkpoint(
    session: aiohttp.ClientSession,
    url: str,
    audit: Any,
    directory: Path,
    ssl_context: Any,
) -> str | None:
    """Egress side: send the latest checkpoint to the twin; store the co-signed note.

    Returns the co-signed note, or None when there is nothing new to witness.

    Raises:
        UpstreamError: the twin refused or could not be reached.
    """
    current = audit.checkpoint
    if current is None:
        return None
    checkpoint, note = current
    endpoint = url.rstrip("/") + "/v1/witness"
    try:
        async with session.get(
            endpoint,
            params={"origin": checkpoint.origin},
            ssl=ssl_context,
            timeout=upstream_timeout(),
        ) as r:
            if r.status != 200:
                raise UpstreamError(f"twin witness answered {r.status}")
            state = await r.json(content_type=None)
        old = int(state.get("size", 0))
        if old == checkpoint.size:
            return None
        proof = await audit.consistency_proof(old, checkpoint.size) if old > 0 else []
        payload = {"note": note, "proof": [base64.b64encode(h).decode() for h in proof]}
        async with session.post(
            endpoint, json=payload, ssl=ssl_context, timeout=upstream_timeout()
        ) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise UpstreamError(f"twin refused to co-sign ({r.status})")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise UpstreamError(f"twin witness unreachable: {type(exc).__name__}") from None
    cosigned = str(answer["cosigned"])
    await asyncio.to_thread(append_note, directory, checkpoint.origin, cosigned)
    return cosigned


async def witness_loop(
    session: aiohttp.ClientSession,
    url: str,
    audit: Any,
    directory: Path,
    ssl_context: Any,
) -> None:
    """Offer checkpoints to the twin forever (a cleanup_ctx task of the egress app)."""
    while True:
        await asyncio.sleep(WITNESS_INTERVAL_SECONDS)
        try:
            await offer_checkpoint(session, url, audit, directory, ssl_context)
        except UpstreamError as exc:
            log.warning("witness_failed", error=exc.detail)
