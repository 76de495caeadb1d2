"""The transparency audit log (SPEC §7): an RFC 6962/9162 Merkle tree of records.

Modules, one purpose each:

* :mod:`~gateway.audit.records` – canonical JSON and the record schema/builders;
* :mod:`~gateway.audit.merkle` – tree hashing, inclusion/consistency/range proofs;
* :mod:`~gateway.audit.note` – C2SP signed notes and tlog-checkpoints (Ed25519);
* :mod:`~gateway.audit.keys` – signing key files and verifier keys;
* :mod:`~gateway.audit.storage` – segment files, proof index, crash recovery;
* :mod:`~gateway.audit.log` – :class:`AuditLog`, the async group-commit writer (fails
  closed on a failed write, heals by itself once the disk takes writes again);
* :mod:`~gateway.audit.transfers` – the persistent transfer-id index (a lookup cache);
* :mod:`~gateway.audit.receipt` – receipts and export bundles, offline verification;
* :mod:`~gateway.audit.verify` – whole-log verification with the first bad index;
* :mod:`~gateway.audit.retention` – pruning segments past retention (≥ 3 years);
* :mod:`~gateway.audit.witness` – co-signing the twin gateway's checkpoints.

See docs/audit.md for the formats and the regulator's procedure.
"""

from __future__ import annotations

from gateway.audit.errors import AuditIntegrityError, AuditUnavailable
from gateway.audit.keys import load_or_create_signing_key, load_verifier
from gateway.audit.log import AuditLog
from gateway.audit.note import Checkpoint, NoteSigner, NoteVerifier, cosign_note, open_note
from gateway.audit.receipt import Receipt, verify_receipt
from gateway.audit.records import (
    PolicyRecord,
    RecordError,
    TransferRecord,
    policy_record,
    transfer_record,
)
from gateway.audit.witness import WitnessError, witness_checkpoint

__all__ = [
    "AuditIntegrityError",
    "AuditLog",
    "AuditUnavailable",
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "PolicyRecord",
    "Receipt",
    "RecordError",
    "TransferRecord",
    "WitnessError",
    "cosign_note",
    "load_or_create_signing_key",
    "load_verifier",
    "open_note",
    "policy_record",
    "transfer_record",
    "verify_receipt",
    "witness_checkpoint",
]
