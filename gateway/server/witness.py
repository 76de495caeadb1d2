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

from gateway.audit.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint
from gateway.audit.witness import WitnessError, witness_checkpoint
from gateway.errors import ClientError, Conflict, NotFound, UpstreamError
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


@dataclass(slots=True)
class Witness:
    """The ingress side: co-signs one twin log's checkpoints.

    Args:
        directory: where co-signed notes are kept.
        origin: the twin log's origin line.
        log_key: the twin log's verifier key.
        signer: this gateway's own checkpoint key.
    """

    directory: Path
    origin: str
    log_key: NoteVerifier
    signer: NoteSigner
    previous: Checkpoint | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def restore(self) -> None:
        """Resume from the last co-signed note on disk (after a restart)."""
        note = last_note(self.directory, self.origin)
        if note is not None:
            self.previous, _ = open_checkpoint(note, [self.log_key])

    async def cosign(self, note: str, proof: list[bytes]) -> str:
        """Verify and co-sign; store the result.

        Raises:
            Conflict: the checkpoint is forged, for another log, or not an extension.
        """
        async with self.lock:
            try:
                checkpoint, cosigned = witness_checkpoint(
                    note,
                    self.log_key,
                    self.signer,
                    origin=self.origin,
                    previous=self.previous,
                    proof=proof,
                )
            except WitnessError as exc:
                log.error("witness_refused", origin=self.origin, error=str(exc))
                raise Conflict(f"refusing to co-sign: {exc}") from None
            await asyncio.to_thread(append_note, self.directory, self.origin, cosigned)
            self.previous = checkpoint
            return cosigned


WITNESS = web.AppKey("witness", Witness)


async def handle_state(request: web.Request) -> web.StreamResponse:
    """``GET /v1/witness``: the origin and size this witness last co-signed."""
    witness = _witness(request)
    size = witness.previous.size if witness.previous else 0
    return json_response({"origin": witness.origin, "size": size})


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
        async with session.get(endpoint, ssl=ssl_context, timeout=upstream_timeout()) as r:
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
