"""The twin gateway co-signs only checkpoints that extend what it witnessed."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.log import AuditLog
from gateway.audit.note import Checkpoint, NoteSigner, open_note, sign_checkpoint
from gateway.audit.witness import WitnessError, witness_checkpoint
from tests.audit.conftest import ORIGIN, record


async def test_witness_cosigns_a_growing_log_and_refuses_forks(
    tmp_path: Path, signer: NoteSigner
) -> None:
    twin = NoteSigner("gw.test/hk-ingress", Ed25519PrivateKey.generate())
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        for i in range(5):
            await log.append(record(i))
        first, note = await log.sync_checkpoint()
        seen, cosigned = witness_checkpoint(
            note, signer.verifier, twin, origin=ORIGIN, previous=None, proof=[]
        )
        assert open_note(cosigned, [signer.verifier, twin.verifier]).signers == {
            ORIGIN,
            "gw.test/hk-ingress",
        }
        for i in range(5, 12):
            await log.append(record(i))
        second, note2 = await log.sync_checkpoint()
        proof = await log.consistency_proof(first.size, second.size)
        seen2, _ = witness_checkpoint(
            note2, signer.verifier, twin, origin=ORIGIN, previous=seen, proof=proof
        )
        assert seen2 == second
    finally:
        await log.close()

    # A fork: the log signs a different tree of the same history size.
    forked = sign_checkpoint(Checkpoint(ORIGIN, second.size, b"\x01" * 32), signer)
    with pytest.raises(WitnessError, match="fork or rollback"):
        witness_checkpoint(forked, signer.verifier, twin, origin=ORIGIN, previous=seen, proof=proof)
    # A rollback to a smaller tree.
    with pytest.raises(WitnessError, match="fork or rollback"):
        witness_checkpoint(note, signer.verifier, twin, origin=ORIGIN, previous=seen2, proof=[])
    # Not signed by the log, or another log.
    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(WitnessError, match="trusted"):
        witness_checkpoint(
            sign_checkpoint(second, impostor),
            signer.verifier,
            twin,
            origin=ORIGIN,
            previous=None,
            proof=[],
        )
    with pytest.raises(WitnessError, match="expected"):
        witness_checkpoint(
            note2, signer.verifier, twin, origin="gw.test/x", previous=None, proof=[]
        )
