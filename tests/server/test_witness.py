"""The SZ ingress co-signs the HK egress's audit checkpoints; forks are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit.note import open_note
from gateway.errors import UpstreamError
from tests.server.conftest import start_parks

CLEAN = b"a,b\n" + b"1,2\n" * 1000


def _notes(path: Path) -> list[str]:
    files = list(path.glob("*.jsonl"))
    assert len(files) == 1
    return [json.loads(line)["note"] for line in files[0].read_text().splitlines()]


async def test_checkpoints_are_cosigned_and_extended(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, witness=True) as parks:
        await parks.put("sz-lab", "a.csv", CLEAN)
        first = await parks.hk.witness_now()
        assert first is not None
        # Both signatures verify: the HK log's and the SZ witness's.
        hk_key = parks.hk.services.signer.verifier
        sz_key = parks.sz.services.signer.verifier
        verified = open_note(first, [hk_key, sz_key])
        assert set(verified.signers) == {hk_key.name, sz_key.name}
        assert await parks.hk.witness_now() is None  # nothing new
        await parks.put("sz-lab", "b.csv", CLEAN)
        second = await parks.hk.witness_now()
        assert second is not None
        assert second != first
        # Both parks hold the same co-signed history.
        assert _notes(tmp_path / "hk" / "witness") == [first, second]
        assert _notes(tmp_path / "sz" / "witness") == [first, second]


async def test_a_forged_checkpoint_is_refused(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, witness=True) as parks:
        await parks.put("sz-lab", "a.csv", CLEAN)
        await parks.hk.witness_now()
        # The SZ witness now expects HK's log key; a log signed by another key is refused.
        witness_app = parks.sz.ingress_app
        assert witness_app is not None
        from gateway.server.witness import WITNESS

        witness = witness_app[WITNESS]
        witness.log_key = parks.sz.services.signer.verifier  # pretend HK's key were SZ's
        await parks.put("sz-lab", "b.csv", CLEAN)
        with pytest.raises(UpstreamError):
            await parks.hk.witness_now()
        assert len(_notes(tmp_path / "sz" / "witness")) == 1
