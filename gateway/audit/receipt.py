"""Receipts and export bundles: what a sender or regulator verifies offline.

A *receipt* proves one record is in the log: the record, its index, its leaf
hash, an RFC 9162 inclusion proof and the signed checkpoint the proof leads
to. An *export bundle* proves that a run of consecutive records is exactly
positions ``start..end-1`` of the log (nothing left out in between): the
records, the compact-range hashes left and right of them, and one signed
checkpoint. Both need only the gateway's public key to verify.

JSON forms (hashes are standard base64, like checkpoint root hashes)::

    {"format": "hksz-gateway-receipt/1", "index": 7, "leaf_hash": "…",
     "record": {…}, "tree_size": 12, "inclusion_proof": ["…"], "checkpoint": "<note>"}

    {"format": "hksz-gateway-audit-bundle/1", "start": 5, "records": [{…}],
     "left": ["…"], "right": ["…"], "checkpoint": "<note>"}

``tree_size``, ``inclusion_proof`` and ``checkpoint`` are ``null`` in a
receipt issued before any checkpoint covered the record.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.merkle import (
    HASH_SIZE,
    ProofError,
    leaf_hash,
    verify_inclusion,
    verify_range,
)
from gateway.audit.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from gateway.audit.records import RecordError, canonical_json, parse_canonical

RECEIPT_FORMAT = "hksz-gateway-receipt/1"
BUNDLE_FORMAT = "hksz-gateway-audit-bundle/1"
#: A proof is at most 64 hashes deep (tree sizes are < 2**64).
MAX_PROOF_HASHES = 64


class ReceiptError(ValueError):
    """A receipt or bundle is malformed or does not verify."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ReceiptError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ReceiptError(f"{what} is not valid base64") from exc
    if len(raw) != HASH_SIZE:
        raise ReceiptError(f"{what} is not a 32-byte hash")
    return raw


def _hash_list(value: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise ReceiptError(f"{what} must be a list of at most {MAX_PROOF_HASHES} hashes")
    return tuple(_unb64(item, f"{what}[{i}]") for i, item in enumerate(value))


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReceiptError(f"{what} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that one record is in the log.

    Attributes:
        index: the record's position (0-based) in the log.
        leaf_hash: SHA-256(0x00 || record).
        record: the record's canonical bytes.
        tree_size: size of the checkpoint the proof is against, if any.
        inclusion_proof: RFC 9162 inclusion proof, if checkpointed.
        checkpoint: the signed checkpoint note, if checkpointed.
    """

    index: int
    leaf_hash: bytes
    record: bytes
    tree_size: int | None = None
    inclusion_proof: tuple[bytes, ...] | None = None
    checkpoint: str | None = None

    @property
    def checkpointed(self) -> bool:
        """Whether the receipt carries an inclusion proof and checkpoint."""
        return self.checkpoint is not None

    def to_json(self) -> dict[str, Any]:
        """The receipt's JSON form (see the module docstring)."""
        return {
            "format": RECEIPT_FORMAT,
            "index": self.index,
            "leaf_hash": _b64(self.leaf_hash),
            "record": parse_canonical(self.record),
            "tree_size": self.tree_size,
            "inclusion_proof": None
            if self.inclusion_proof is None
            else [_b64(h) for h in self.inclusion_proof],
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Receipt:
        """Parse a receipt's JSON form.

        Raises:
            ReceiptError: not a receipt.
        """
        if not isinstance(obj, Mapping) or obj.get("format") != RECEIPT_FORMAT:
            raise ReceiptError(f"not a receipt (format is not {RECEIPT_FORMAT})")
        record = obj.get("record")
        if not isinstance(record, Mapping):
            raise ReceiptError("receipt has no record object")
        try:
            data = canonical_json(record)
        except RecordError as exc:
            raise ReceiptError(f"receipt record: {exc}") from exc
        size = obj.get("tree_size")
        proof = obj.get("inclusion_proof")
        note = obj.get("checkpoint")
        if (size is None) != (note is None) or (proof is None) != (note is None):
            raise ReceiptError("tree_size, inclusion_proof and checkpoint go together")
        if note is not None and not isinstance(note, str):
            raise ReceiptError("checkpoint must be the signed note text")
        return cls(
            index=_int(obj.get("index"), "index"),
            leaf_hash=_unb64(obj.get("leaf_hash"), "leaf_hash"),
            record=data,
            tree_size=None if size is None else _int(size, "tree_size"),
            inclusion_proof=None if proof is None else _hash_list(proof, "inclusion_proof"),
            checkpoint=note,
        )


def verify_receipt(receipt: Receipt, verifiers: Iterable[NoteVerifier]) -> Checkpoint:
    """Verify a receipt offline: record → leaf hash → proof → signed checkpoint.

    Returns:
        the verified checkpoint.

    Raises:
        ReceiptError: any step fails (the message says which).
    """
    if leaf_hash(receipt.record) != receipt.leaf_hash:
        raise ReceiptError("the record does not hash to the receipt's leaf hash")
    if receipt.checkpoint is None or receipt.inclusion_proof is None:
        raise ReceiptError(
            "receipt has no inclusion proof yet (issued before a checkpoint); "
            "fetch it again with `gateway audit prove`"
        )
    try:
        checkpoint, _ = open_checkpoint(receipt.checkpoint, verifiers)
    except NoteError as exc:
        raise ReceiptError(f"checkpoint: {exc}") from exc
    if checkpoint.size != receipt.tree_size:
        raise ReceiptError("receipt tree_size differs from its checkpoint's size")
    try:
        verify_inclusion(
            receipt.index,
            checkpoint.size,
            receipt.leaf_hash,
            receipt.inclusion_proof,
            checkpoint.root_hash,
        )
    except ProofError as exc:
        raise ReceiptError(f"record {receipt.index}: {exc}") from exc
    return checkpoint


@dataclass(frozen=True, slots=True)
class Bundle:
    """Consecutive records with a range proof against one signed checkpoint.

    Attributes:
        start: index of the first record.
        records: canonical bytes of each record, in log order.
        left: compact-range hashes of ``[0, start)``.
        right: compact-range hashes of ``[start + len(records), tree size)``.
        checkpoint: the signed checkpoint note.
    """

    start: int
    records: tuple[bytes, ...]
    left: tuple[bytes, ...]
    right: tuple[bytes, ...]
    checkpoint: str

    def to_json(self) -> dict[str, Any]:
        """The bundle's JSON form (see the module docstring)."""
        return {
            "format": BUNDLE_FORMAT,
            "start": self.start,
            "records": [parse_canonical(r) for r in self.records],
            "left": [_b64(h) for h in self.left],
            "right": [_b64(h) for h in self.right],
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Bundle:
        """Parse a bundle's JSON form.

        Raises:
            ReceiptError: not a bundle.
        """
        if not isinstance(obj, Mapping) or obj.get("format") != BUNDLE_FORMAT:
            raise ReceiptError(f"not an audit bundle (format is not {BUNDLE_FORMAT})")
        records = obj.get("records")
        note = obj.get("checkpoint")
        if not isinstance(records, list) or not isinstance(note, str):
            raise ReceiptError("bundle needs a records list and a checkpoint note")
        data: list[bytes] = []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ReceiptError(f"bundle record {i} is not an object")
            try:
                data.append(canonical_json(record))
            except RecordError as exc:
                raise ReceiptError(f"bundle record {i}: {exc}") from exc
        return cls(
            start=_int(obj.get("start"), "start"),
            records=tuple(data),
            left=_hash_list(obj.get("left"), "left"),
            right=_hash_list(obj.get("right"), "right"),
            checkpoint=note,
        )


def verify_bundle(bundle: Bundle, verifiers: Sequence[NoteVerifier]) -> Checkpoint:
    """Verify that a bundle's records are exactly positions ``start..`` of the signed log.

    Raises:
        ReceiptError: bad signature, or the records and hashes do not
            reproduce the checkpoint's root (a record edited, left out,
            added or reordered).
    """
    try:
        checkpoint, _ = open_checkpoint(bundle.checkpoint, verifiers)
    except NoteError as exc:
        raise ReceiptError(f"checkpoint: {exc}") from exc
    try:
        verify_range(
            bundle.start,
            (leaf_hash(r) for r in bundle.records),
            bundle.left,
            bundle.right,
            checkpoint.size,
            checkpoint.root_hash,
        )
    except ProofError as exc:
        raise ReceiptError(f"records {bundle.start}..: {exc}") from exc
    return checkpoint
