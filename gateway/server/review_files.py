"""A held review from its files: the held metadata, summary and file key (SPEC §5).

A held review's spool is kept with its metadata sealed to the gateway's own
spool key (:meth:`gateway.server.spool.SpoolDir.hold`); after a restart, or
on another replica of the park, the review is rebuilt from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.classify.summary import ScanSummary
from gateway.crypto.age import unwrap_file_key
from gateway.crypto.header import parse_header
from gateway.policy.engine import CompiledPolicy, TransferContext
from gateway.server.egress_state import EgressState, Held
from gateway.server.job import Job
from gateway.server.spool import SpoolInfo
from gateway.server.transfer import State, Transfer


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def restored_parts(state: EgressState, held: Held) -> tuple[ScanSummary, SpoolInfo]:
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
    digests: see :func:`~gateway.server.reviews.ledger_digests`).
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


def held_from_meta(
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
        justification=text_or_none(meta.get("justification")),
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
        Job(transfer, TransferContext(route, sender), None, info),
        decision=decision,
        digests=digests,
        approvals=approvals,
    )
