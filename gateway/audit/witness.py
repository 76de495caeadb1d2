"""Witnessing the twin gateway's checkpoints (no I/O; the server moves the bytes).

The ingress gateway in the other park co-signs the egress gateway's
checkpoints, so both parks hold the same signed history and neither can
later present a different one. A witness must only co-sign a checkpoint that
(1) the log signed and (2) extends the last checkpoint it co-signed, proven
by an RFC 9162 consistency proof; otherwise the log forked or rolled back.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.audit.merkle import ProofError, verify_consistency
from gateway.audit.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    cosign_note,
    open_checkpoint,
)


class WitnessError(ValueError):
    """The witness refuses to co-sign: bad signature, other log, fork or rollback."""


def witness_checkpoint(
    note: str,
    log_key: NoteVerifier,
    witness: NoteSigner,
    *,
    origin: str,
    previous: Checkpoint | None,
    proof: Sequence[bytes],
) -> tuple[Checkpoint, str]:
    """Verify a log's checkpoint against what this witness saw before, then co-sign it.

    Args:
        note: the signed checkpoint received from the twin.
        log_key: the twin log's verifier key.
        witness: this gateway's signing key.
        origin: the origin the twin's log must have.
        previous: the last checkpoint this witness co-signed for that log
            (``None`` the first time).
        proof: consistency proof from ``previous.size`` to the new size
            (empty the first time or when the size did not change).

    Returns:
        the verified checkpoint and the note with the witness's signature
        added; the caller stores it as the new ``previous``.

    Raises:
        WitnessError: the note does not verify, is for another log, or does
            not extend ``previous``.
    """
    try:
        checkpoint, _ = open_checkpoint(note, [log_key])
    except NoteError as exc:
        raise WitnessError(f"checkpoint from {log_key.name}: {exc}") from exc
    if checkpoint.origin != origin:
        raise WitnessError(f"checkpoint is for {checkpoint.origin!r}, expected {origin!r}")
    if previous is not None:
        try:
            verify_consistency(
                previous.size, checkpoint.size, previous.root_hash, checkpoint.root_hash, proof
            )
        except ProofError as exc:
            raise WitnessError(
                f"{origin}: size {checkpoint.size} does not extend the witnessed size "
                f"{previous.size} (fork or rollback): {exc}"
            ) from exc
    return checkpoint, cosign_note(note, witness)
