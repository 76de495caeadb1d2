"""The ingress role: mutual TLS, verified-only delivery, pipelined payloads."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.crypto.age import AgeEncryptor
from gateway.crypto.certs import ParkPaths
from gateway.crypto.tls import client_ssl_context
from gateway.server.config import AuditConfig
from gateway.server.ingress import INGRESS
from gateway.server.receive import OFFLOAD_BATCH
from tests.server.conftest import Parks, running, sha256, slow_body, start_parks

CLEAN = b"run_id,instrument,temperature_c\n" + b"".join(
    f"R{i:05d},spectrometer-{i % 4},{20 + i % 17}.{i % 10}\n".encode() for i in range(40_000)
)
RESIDENT_ID = b"440305198412252041"


def _twin_context(parks: Parks) -> object:
    hk, sz = ParkPaths(parks.pki / "hk"), ParkPaths(parks.pki / "sz")
    return client_ssl_context(ca=sz.ca_cert, cert=hk.cert("client"), key=hk.key("client"))


async def test_tampered_envelope_delivers_nothing(parks: Parks) -> None:
    encryptor = AgeEncryptor([parks.identity.recipient])
    envelope = bytearray(encryptor.header() + encryptor.update(CLEAN) + encryptor.finish())
    envelope[-100] ^= 0x01
    hk = ParkPaths(parks.pki / "hk")
    sz = ParkPaths(parks.pki / "sz")
    context = client_ssl_context(ca=sz.ca_cert, cert=hk.cert("client"), key=hk.key("client"))
    url = f"{parks.sz.ingress_url}/v1/envelopes/sz-lab/tampered.csv"
    async with parks.session.post(url, data=bytes(envelope), ssl=context) as r:
        assert r.status == 400
        problem = await r.json(content_type=None)
    assert "nothing was delivered" in problem["detail"]
    assert parks.inbox_files("sz-lab") == {}
    assert parks.partial_files() == []
    # Truncated: the final chunk is missing.
    truncated = bytes(envelope[: len(encryptor.header()) + 16 + 65552])
    async with parks.session.post(url, data=truncated, ssl=context) as r:
        assert r.status == 400
    assert parks.inbox_files("sz-lab") == {}
    # Without a client certificate the handshake itself is refused.
    plain = client_ssl_context(ca=sz.ca_cert)
    with pytest.raises(aiohttp.ClientError):
        async with parks.session.post(url, data=b"x", ssl=plain) as r:
            await r.read()
    # A client certificate from the wrong CA (SZ's own) is refused too.
    wrong = client_ssl_context(ca=sz.ca_cert, cert=sz.cert("client"), key=sz.key("client"))
    with pytest.raises(aiohttp.ClientError):
        async with parks.session.post(url, data=b"x", ssl=wrong) as r:
            await r.read()


def _records(parks: Parks, tid: str, park: str) -> list[dict[str, object]]:
    return [r for r in parks.audit_events(park) if r.get("transfer_id") == tid]


async def test_pipelined_transfer_is_a_standard_age_file_end_to_end(parks: Parks) -> None:
    data = CLEAN * 3  # > 256 KiB: the payload streams to the twin while classified
    status, body = await parks.put("sz-lab", "big.csv", data)
    assert status == 201, body
    assert parks.inbox_files("sz-lab") == {"big.csv": data}
    tid = body["transfer_id"]
    hk = next(r for r in _records(parks, tid, "hk") if r["event"] == "delivered")
    sz = _records(parks, tid, "sz")[0]
    # Both parks account for the same ciphertext: header || payload, one age file.
    assert hk["ciphertext_sha256"] == sz["ciphertext_sha256"]
    assert hk["ciphertext_bytes"] == sz["ciphertext_bytes"]
    assert hk["recipient_key"] == parks.identity.recipient.fingerprint()
    assert list((parks.root / "sz" / "spool").glob("*")) == []


async def test_pipelined_blocked_transfer_leaves_nothing_at_the_twin(parks: Parks) -> None:
    data = CLEAN * 3 + b"x," + RESIDENT_ID + b"\n"
    status, body = await parks.put("sz-lab", "people.csv", data)
    assert status == 403
    assert parks.inbox_files("sz-lab") == {}
    assert parks.events_of(body["transfer_id"], "sz") == []
    assert list((parks.root / "sz" / "spool").glob("*.payload")) == []


async def test_non_pipelined_mode(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"pipelined": False}) as parks:
        status, body = await parks.put("sz-lab", "big.csv", CLEAN * 3)
        assert status == 201, body
        assert parks.inbox_files("sz-lab") == {"big.csv": CLEAN * 3}


async def test_payload_without_a_valid_header_delivers_nothing(parks: Parks) -> None:
    context = _twin_context(parks)
    tid = "t_" + os.urandom(16).hex()
    base = parks.sz.ingress_url
    encryptor = AgeEncryptor([parks.identity.recipient])
    header = encryptor.header()
    payload = encryptor.update(CLEAN) + encryptor.finish()
    async with parks.session.put(f"{base}/v1/payloads/{tid}", data=payload, ssl=context) as r:
        assert r.status == 201
    # The right recipient but a different file key: the header MAC fails.
    other = AgeEncryptor([parks.identity.recipient]).header()
    url = f"{base}/v1/envelopes/sz-lab/x.csv"
    headers = {"X-Gateway-Payload": tid}
    async with parks.session.post(url, data=other, headers=headers, ssl=context) as r:
        assert r.status == 400
    assert parks.inbox_files("sz-lab") == {}
    # The payload was consumed by the failed attempt: a replay finds nothing.
    async with parks.session.post(url, data=header, headers=headers, ssl=context) as r:
        assert r.status == 404
    assert parks.partial_files() == []
    # Upload again, then the real header delivers exactly the plaintext.
    async with parks.session.put(f"{base}/v1/payloads/{tid}", data=payload, ssl=context) as r:
        assert r.status == 201
    async with parks.session.post(url, data=header, headers=headers, ssl=context) as r:
        assert r.status == 201, await r.text()
    assert parks.inbox_files("sz-lab") == {"x.csv": CLEAN}


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
async def test_altered_pipelined_payload_delivers_nothing(parks: Parks, damage: str) -> None:
    # The payload is decrypted (and hashed, in a second thread) only after its
    # header came; an error deep in it must leave neither a file nor a part.
    context = _twin_context(parks)
    tid = "t_" + os.urandom(16).hex()
    base = parks.sz.ingress_url
    encryptor = AgeEncryptor([parks.identity.recipient])
    header = encryptor.header()
    data = CLEAN * 3  # several MiB: many STREAM chunks verify before the damage
    payload = bytearray(encryptor.update(data) + encryptor.finish())
    if damage == "flipped":
        payload[len(payload) * 3 // 4] ^= 0x01
    else:
        del payload[-100:]
    async with parks.session.put(
        f"{base}/v1/payloads/{tid}", data=bytes(payload), ssl=context
    ) as r:
        assert r.status == 201
    url = f"{base}/v1/envelopes/sz-lab/damaged.csv"
    headers = {"X-Gateway-Payload": tid}
    async with parks.session.post(url, data=header, headers=headers, ssl=context) as r:
        assert r.status == 400, await r.text()
    assert parks.inbox_files("sz-lab") == {}
    assert parks.partial_files() == []
    assert list((parks.root / "sz" / "spool").glob("*.payload")) == []


async def test_discarded_payload_is_gone(parks: Parks) -> None:
    context = _twin_context(parks)
    tid = "t_" + os.urandom(16).hex()
    url = f"{parks.sz.ingress_url}/v1/payloads/{tid}"
    async with parks.session.put(url, data=b"ciphertext", ssl=context) as r:
        assert r.status == 201
    assert len(list((parks.root / "sz" / "spool").glob("*.payload"))) == 1
    async with parks.session.delete(url, ssl=context) as r:
        assert r.status == 204
    assert list((parks.root / "sz" / "spool").glob("*.payload")) == []
    with pytest.raises(aiohttp.ClientError):
        async with parks.session.put(
            url, data=b"x", ssl=client_ssl_context(ca=ParkPaths(parks.pki / "sz").ca_cert)
        ) as r:
            await r.read()


def _envelope(parks: Parks, data: bytes) -> bytes:
    encryptor = AgeEncryptor([parks.identity.recipient])
    return encryptor.header() + encryptor.update(data) + encryptor.finish()


async def _post(
    parks: Parks, name: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, str, dict[str, object]]:
    url = f"{parks.sz.ingress_url}/v1/envelopes/sz-lab/{name}"
    async with parks.session.post(
        url, data=body, headers=headers or {}, ssl=_twin_context(parks)
    ) as r:
        return r.status, r.content_type, await r.json(content_type=None)


async def _until_active(parks: Parks, count: int) -> None:
    assert parks.sz.ingress_app is not None
    state = parks.sz.ingress_app[INGRESS]
    for _ in range(1000):  # 10 s at most
        if len(state.active) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first envelope never started")


async def test_a_delivery_whose_record_fails_leaves_no_file(
    parks: Parks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the SZ audit log refuses the `delivered` record only.
    audit = parks.sz.services.audit
    append = audit.append

    async def refuse_delivered(record: dict[str, object]) -> object:
        if record.get("event") == "delivered":
            raise OSError(28, "No space left on device")
        return await append(record)

    monkeypatch.setattr(audit, "append", refuse_delivered)
    status, content_type, problem = await _post(parks, "a.csv", _envelope(parks, CLEAN))
    assert (status, content_type) == (503, "application/problem+json")
    assert "nothing was delivered" in str(problem["detail"])
    assert parks.inbox_files("sz-lab") == {}
    assert parks.partial_files() == []
    assert parks.events_of(str(problem["transfer_id"]), "sz") == ["failed"]


async def test_a_delivery_whose_file_cannot_be_synced_leaves_no_file(
    parks: Parks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's fsync runs while its record is written: when the fsync fails after
    the record landed, the file never gets its name and the record is corrected."""
    from gateway.server.inbox import FileDrop

    def failing_sync(drop: FileDrop) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(FileDrop, "sync", failing_sync)
    status, content_type, problem = await _post(parks, "b.csv", _envelope(parks, CLEAN))
    assert (status, content_type) == (503, "application/problem+json")
    assert "nothing was delivered" in str(problem["detail"])
    assert parks.inbox_files("sz-lab") == {}
    assert parks.partial_files() == []
    assert parks.events_of(str(problem["transfer_id"]), "sz") == ["delivered", "failed"]


async def test_an_unconsumed_file_is_never_replaced(parks: Parks) -> None:
    inbox = parks.inbox / "sz-lab"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "x.csv").write_bytes(b"the consumer has not read this yet\n")
    status, content_type, problem = await _post(parks, "x.csv", _envelope(parks, CLEAN))
    assert (status, content_type) == (409, "application/problem+json")
    assert parks.inbox_files("sz-lab") == {"x.csv": b"the consumer has not read this yet\n"}
    assert parks.partial_files() == []
    assert parks.events_of(str(problem["transfer_id"]), "sz") == ["failed"]


async def test_concurrent_deliveries_of_one_name_deliver_one(parks: Parks) -> None:
    slow = slow_body(_envelope(parks, CLEAN), 64 * 1024, 0.05)
    first = asyncio.ensure_future(_post(parks, "same.csv", slow))
    await _until_active(parks, 1)
    status, _, problem = await _post(parks, "same.csv", _envelope(parks, CLEAN[:100]))
    assert status == 409, problem
    status, _, body = await first
    assert status == 201, body
    assert parks.inbox_files("sz-lab") == {"same.csv": CLEAN}


async def test_a_duplicate_transfer_id_is_a_conflict(parks: Parks) -> None:
    tid = "t_" + os.urandom(16).hex()
    headers = {"X-Gateway-Transfer-Id": tid}
    slow = slow_body(_envelope(parks, CLEAN), 64 * 1024, 0.05)
    first = asyncio.ensure_future(_post(parks, "one.csv", slow, headers))
    await _until_active(parks, 1)
    status, content_type, problem = await _post(parks, "two.csv", _envelope(parks, CLEAN), headers)
    assert (status, content_type) == (409, "application/problem+json")
    assert problem["transfer_id"] == tid
    status, _, body = await first
    assert status == 201, body
    assert parks.inbox_files("sz-lab") == {"one.csv": CLEAN}
    # The duplicate left no record in the history of the transfer in progress.
    assert parks.events_of(tid, "sz") == ["delivered"]


async def test_partial_deliveries_are_swept_at_start_up(tmp_path: Path, pki: Path) -> None:
    # Part files of the staging fallback (beside each inbox), and of older
    # versions (inside it): all plaintext a crash left, however recent.
    stale = [
        tmp_path / "inbox" / folder / f"t_{os.urandom(16).hex()}.part"
        for folder in (
            "sz-lab/.incoming",
            "sz-clinical/.incoming",
            ".sz-lab.staging",
            ".sz-review.staging",
        )
    ]
    for path in stale:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"plaintext of an interrupted envelope")
    async with start_parks(tmp_path, pki) as parks:
        assert parks.partial_files() == []
        # The emptied directories of older versions go too.
        assert not (parks.inbox / "sz-lab" / ".incoming").exists()
        status, _, body = await _post(parks, "after.csv", _envelope(parks, CLEAN))
        assert status == 201, body


def _payload_url(parks: Parks, tid: str) -> str:
    return f"{parks.sz.ingress_url}/v1/payloads/{tid}"


async def _put_payload(parks: Parks, tid: str, body: object) -> tuple[int, dict[str, object]]:
    async with parks.session.put(
        _payload_url(parks, tid), data=body, ssl=_twin_context(parks)
    ) as r:
        return r.status, await r.json(content_type=None)


async def test_payload_uploads_are_admitted_like_envelopes(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, ingress={"max_concurrent": 1}) as parks:
        assert parks.sz.ingress_app is not None
        state = parks.sz.ingress_app[INGRESS]
        tid = "t_" + "a" * 32
        slow = asyncio.create_task(_put_payload(parks, tid, slow_body(CLEAN, 50_000, 0.05)))
        for _ in range(500):
            if state.inflight:
                break
            await asyncio.sleep(0.01)
        assert state.inflight == 1  # a payload holds a slot
        status, body = await _put_payload(parks, "t_" + "b" * 32, b"abc")
        assert status == 503, body
        status, _, body = await _post(parks, "second.csv", _envelope(parks, b"abc"))
        assert status == 503, body
        assert (await slow)[0] == 201
        assert state.inflight == 0
        state.closing = True
        status, body = await _put_payload(parks, "t_" + "c" * 32, b"abc")
        assert status == 503, body
        state.closing = False
    async with start_parks(tmp_path / "full", pki, ingress={"min_free_spool_bytes": 1 << 62}) as p:
        status, body = await _put_payload(p, "t_" + "d" * 32, b"abc")
        assert status == 503, body
        assert str(body["type"]).endswith("/spool-full")


async def test_a_payload_upload_cut_off_is_a_clean_abort(parks: Parks) -> None:
    assert parks.sz.ingress_app is not None
    state = parks.sz.ingress_app[INGRESS]
    tid = "t_" + "e" * 32

    async def cut_off() -> object:
        yield CLEAN[:200_000]
        await asyncio.sleep(0.3)
        raise RuntimeError("the twin went away")

    with capture_logs() as logs:
        with pytest.raises((aiohttp.ClientError, RuntimeError)):
            await _put_payload(parks, tid, cut_off())
        for _ in range(500):
            if any(e.get("event") == "payload_aborted" for e in logs):
                break
            await asyncio.sleep(0.01)
    events = [e.get("event") for e in logs]
    assert "payload_aborted" in events
    assert "internal_error" not in events
    assert state.inflight == 0
    assert not (parks.root / "sz" / "spool" / f"{tid}.payload").exists()


async def test_a_stalled_https_destination_is_bounded(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, ingress={"total_timeout": 2}) as parks:
        parks.recorder.mode = "stall"
        try:
            async with asyncio.timeout(20):
                status, body = await parks.put("sz-https", "stalled.csv", CLEAN[:5000])
        finally:
            parks.recorder.release.set()
        assert status == 502, body
        assert parks.events_of(body["transfer_id"], "sz") == ["failed"]


@pytest.mark.parametrize("size", [0, 1, 65_536, 65_537, OFFLOAD_BATCH + 1, 2 * OFFLOAD_BATCH + 5])
async def test_envelopes_of_every_size_are_delivered_whole(parks: Parks, size: int) -> None:
    # The file drop is created by the first worker-thread step that has
    # plaintext for it, or by the final one (an empty file); the last short
    # batch is decrypted together with the final chunk and the fsync.
    data = (CLEAN * (size // len(CLEAN) + 1))[:size]
    status, _, body = await _post(parks, "f.csv", _envelope(parks, data))
    assert status == 201, body
    assert body["bytes"] == size
    assert body["sha256"] == sha256(data)
    assert parks.inbox_files("sz-lab") == {"f.csv": data}
    assert parks.partial_files() == []
    assert parks.events_of(str(body["transfer_id"]), "sz") == ["delivered"]


@pytest.mark.parametrize("size", [100, OFFLOAD_BATCH + 100])
async def test_a_damaged_last_chunk_leaves_no_part_file(parks: Parks, size: int) -> None:
    envelope = bytearray(_envelope(parks, CLEAN[:size]))
    envelope[-5] ^= 0x01  # in the final chunk's tag: found only when finishing
    status, _, problem = await _post(parks, "bad.csv", bytes(envelope))
    assert status == 400, problem
    assert parks.inbox_files("sz-lab") == {}
    assert parks.partial_files() == []
    assert parks.events_of(str(problem["transfer_id"]), "sz") == ["failed"]


async def test_a_payload_and_its_header_may_reach_different_replicas(
    tmp_path: Path, pki: Path
) -> None:
    """Two ingress replicas of the SZ park share a payload directory (issue 16): the
    payload PUT to one, the header POSTed to the other, the file is delivered; a
    replica starting meanwhile leaves the other's payload alone."""
    shared = tmp_path / "shared" / "payloads"
    async with start_parks(tmp_path, pki, ingress={"payload_dir": shared}) as parks:
        first = parks.sz
        context = _twin_context(parks)
        tid = "t_" + os.urandom(16).hex()
        encryptor = AgeEncryptor([parks.identity.recipient])
        header = encryptor.header()
        payload = encryptor.update(CLEAN) + encryptor.finish()
        url = f"{first.ingress_url}/v1/payloads/{tid}"
        async with parks.session.put(url, data=payload, ssl=context) as r:
            assert r.status == 201, await r.text()
        assert [p.name for p in shared.iterdir()] == [f"{tid}.payload"]
        # A second replica starts (its own instance, log and spool; the same
        # identity, inboxes and payload directory): the payload in flight stays.
        base = first.services.settings
        assert base.ingress is not None
        second_settings = base.model_copy(
            update={
                "instance": "sz-1",
                "audit": AuditConfig(
                    dir=tmp_path / "sz-1" / "audit",
                    signing_key=tmp_path / "sz" / "audit.key",
                    origin="sz.test/audit/sz-1",
                ),
                "witness_dir": tmp_path / "sz-1" / "witness",
                "ingress": base.ingress.model_copy(
                    update={"port": 0, "spool_dir": tmp_path / "sz-1" / "spool"}
                ),
            }
        )
        async with running(second_settings, drain_seconds=2) as second:
            assert [p.name for p in shared.iterdir()] == [f"{tid}.payload"]
            envelope = f"{second.ingress_url}/v1/envelopes/sz-lab/split.csv"
            headers = {"X-Gateway-Payload": tid}
            async with parks.session.post(envelope, data=header, headers=headers, ssl=context) as r:
                assert r.status == 201, await r.text()
                assert r.headers["X-Gateway-Instance"] == "sz-1"
        assert parks.inbox_files("sz-lab") == {"split.csv": CLEAN}
        assert list(shared.iterdir()) == []  # consumed
