"""The SZ ingress co-signs the HK egress's audit checkpoints; forks are refused."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from gateway.audit.keys import load_or_create_signing_key
from gateway.audit.note import Checkpoint, NoteSigner, open_note, sign_checkpoint
from gateway.errors import ClientError, Conflict, NotFound, UpstreamError
from gateway.server.witness import WITNESS
from tests.server.conftest import RESEARCH_TOKEN, replica_settings, running, start_parks

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


async def test_several_replicas_are_each_witnessed_under_their_own_origin(
    tmp_path: Path, pki: Path
) -> None:
    """The twin park runs replicas (origins hk.test/audit/hk-0, -1, one signing key):
    one witness co-signs each origin on its own; an origin outside its glob is refused."""
    key_file = tmp_path / "hk" / "audit.key"
    key_file.parent.mkdir(parents=True)
    log_key = NoteSigner("hk.test/audit", load_or_create_signing_key(key_file)).verifier
    witness = {"origin": "hk.test/audit/*", "log_key": str(log_key)}
    async with start_parks(tmp_path, pki, ingress={"witness": witness}) as parks:
        assert parks.sz.ingress_url is not None
        replicas = []
        async with contextlib.AsyncExitStack() as stack:
            for instance in ("hk-0", "hk-1"):
                settings = replica_settings(
                    tmp_path, pki, instance, witness_url=parks.sz.ingress_url
                )
                replicas.append(await stack.enter_async_context(running(settings, drain_seconds=2)))
            headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
            for number, replica in enumerate(replicas):
                for _ in range(number + 1):  # logs of different sizes
                    url = f"{replica.egress_url}/v1/transfers/sz-lab/r{number}.csv"
                    async with parks.session.put(url, data=CLEAN, headers=headers) as r:
                        assert r.status in (201, 409), await r.text()
                first = await replica.witness_now()
                assert first is not None
                assert set(open_note(first, [replica.services.signer.verifier]).signers) == {
                    f"hk.test/audit/hk-{number}"
                }
            stored = sorted(p.name for p in (tmp_path / "sz" / "witness").glob("*.jsonl"))
            assert stored == ["hk.test_audit_hk-0.jsonl", "hk.test_audit_hk-1.jsonl"]
            # Each origin is extended on its own: hk-1 grows, hk-0's state is untouched.
            async with parks.session.put(
                f"{replicas[1].egress_url}/v1/transfers/sz-lab/more.csv",
                data=CLEAN,
                headers=headers,
            ) as r:
                assert r.status == 201
            assert await replicas[1].witness_now() is not None
            assert await replicas[0].witness_now() is None
            assert len(_notes_of(tmp_path / "sz" / "witness", "hk.test_audit_hk-1.jsonl")) == 2
            assert len(_notes_of(tmp_path / "sz" / "witness", "hk.test_audit_hk-0.jsonl")) == 1
        # An origin outside the glob is neither answered nor co-signed, even under the key.
        assert parks.sz.ingress_app is not None
        witness_state = parks.sz.ingress_app[WITNESS]
        with pytest.raises(NotFound):
            witness_state.state_of("hk.test/audit")
        stranger = sign_checkpoint(
            Checkpoint("hk.test/audit", 1, b"\0" * 32),
            NoteSigner("hk.test/audit", load_or_create_signing_key(key_file)),
        )
        with pytest.raises(Conflict, match="not a witnessed origin"):
            await witness_state.cosign(stranger, [])
        # Several origins: the state is asked for by origin.
        with pytest.raises(ClientError, match="origin="):
            witness_state.state_of(None)


def _notes_of(path: Path, name: str) -> list[str]:
    return [json.loads(line)["note"] for line in (path / name).read_text().splitlines()]
