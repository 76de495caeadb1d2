"""End to end through both parks: verdicts, zero leak, errors, faults, concurrency."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import os
import random
import time
import zipfile
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.errors import GatewayError
from gateway.server.egress import safe_name
from gateway.server.egress_state import EGRESS
from gateway.server.receive import INLINE_MAX_BYTES, SPOOL_MEMORY_BYTES
from tests.server.conftest import (
    GHOST_TOKEN,
    OFFICER_TOKEN,
    Parks,
    sha256,
    slow_body,
    stand_in_twin,
    start_parks,
)

#: A valid Mainland resident ID (GB 11643 check character) and a valid CN mobile.
RESIDENT_ID = b"440305198412252041"
PHONE = b"13723960779"
CLEAN = b"run_id,instrument,temperature_c\n" + b"".join(
    f"R{i:05d},spectrometer-{i % 4},{20 + i % 17}.{i % 10}\n".encode() for i in range(20_000)
)

GENETIC = (Path(__file__).parents[2] / "samples" / "genetic.fasta").read_bytes()


def personal_csv(rows: int = 50) -> bytes:
    lines = [b"name,resident_id,mobile"]
    lines += [b"Chen Wei," + RESIDENT_ID + b"," + PHONE for _ in range(rows)]
    return b"\n".join(lines) + b"\n"


async def test_allowed_file_arrives_byte_identical(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "clean.csv", CLEAN)
    assert status == 201, body
    assert body["decision"] == "allow"
    assert body["rule"] == "allow.clean"
    assert body["bytes"] == len(CLEAN)
    assert body["sha256"] == sha256(CLEAN)
    assert body["upstream_status"] == 201
    assert body["labels"] == {}
    assert body["policy_version"]
    assert body["receipt"]["index"] >= 0
    assert parks.inbox_files("sz-lab") == {"clean.csv": CLEAN}
    assert parks.partial_files() == []
    assert parks.events_of(body["transfer_id"]) == ["allowed", "delivered"]
    assert parks.events_of(body["transfer_id"], "sz") == ["delivered"]
    # Nothing is left in the spool once the transfer ended.
    assert [p for p in (parks.root / "hk" / "spool").rglob("*") if p.is_file()] == []


async def test_blocked_file_leaves_nothing(parks: Parks) -> None:
    data = personal_csv()
    status, body = await parks.put("sz-lab", "people.csv", data)
    assert status == 403
    assert body["type"].endswith("/blocked")
    assert body["decision"] == "block"
    assert body["rule"] == "block.personal"
    assert body["reason"] == "Personal information needs a standard contract filing."
    assert body["labels"]["pii.cn_resident_id"]["count"] == 50
    assert body["labels"]["pii.cn_resident_id"]["distinct"] == 1
    assert body["subjects"] >= 1
    assert body["transfer_id"].startswith("t_")
    assert parks.inbox_files("sz-lab") == {}
    assert parks.partial_files() == []
    assert parks.events_of(body["transfer_id"]) == ["blocked"]
    assert parks.events_of(body["transfer_id"], "sz") == []
    # No matched value in the response or anywhere in the audit log.
    assert RESIDENT_ID.decode() not in str(body)
    for segment in (parks.root / "hk" / "audit").rglob("*.jsonl"):
        assert RESIDENT_ID not in segment.read_bytes()
        assert PHONE not in segment.read_bytes()


async def test_an_identifier_in_the_transfer_name_is_blocked(parks: Parks) -> None:
    # Clean content, but the name (which becomes the delivered file's name)
    # holds a Resident ID: the name crosses the border too.
    name = f"scan_{RESIDENT_ID.decode()}.txt"
    status, body = await parks.put("sz-lab", name, CLEAN)
    assert status == 403, body
    assert body["labels"]["pii.cn_resident_id"] == {"count": 1, "distinct": 1}
    assert parks.inbox_files("sz-lab") == {}
    assert parks.events_of(body["transfer_id"], "sz") == []
    assert body["bytes"] == len(CLEAN)  # the name is no part of the content


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("label", "payload"),
    [
        ("gzip", gzip.compress(personal_csv(3), mtime=0)),
        ("zip", _zip("inner/people.csv", personal_csv(3))),
        ("gbk", "姓名,身份证\n陈伟,".encode("gbk") + RESIDENT_ID + "\n".encode("gbk")),
        ("utf16", ("name,id\nChen," + RESIDENT_ID.decode() + "\n").encode("utf-16")),
        # base64 of a table of people after 300 KB of a clean one (issue 13)
        ("late-base64", CLEAN[:300_000] + b"blob," + base64.b64encode(personal_csv(3)) + b"\n"),
    ],
    ids=["gzip", "zip", "gbk", "utf16", "late-base64"],  # gzip and zip bytes hold timestamps
)
async def test_identifiers_in_layers_and_charsets_are_blocked(
    parks: Parks, label: str, payload: bytes
) -> None:
    status, body = await parks.put("sz-lab", f"data-{label}.bin", payload)
    assert status == 403, body
    assert body["labels"].get("pii.cn_resident_id", {}).get("count", 0) >= 1
    assert parks.inbox_files("sz-lab") == {}


async def test_identifier_split_across_network_chunks_is_blocked(parks: Parks) -> None:
    prefix = CLEAN[:300_000]
    data = prefix + b"x," + RESIDENT_ID + b"\n" + CLEAN[:1000]
    cut = len(prefix) + 2 + 9  # in the middle of the identifier
    pieces = [data[:cut], data[cut:]]

    async def body() -> object:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0.05)

    status, verdict = await parks.put("sz-lab", "split.csv", body())
    assert status == 403, verdict
    assert verdict["labels"]["pii.cn_resident_id"]["count"] == 1
    assert parks.inbox_files("sz-lab") == {}


async def test_genetic_data_blocked_with_reason(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "genetic.fasta", GENETIC)
    assert status == 403
    assert body["rule"] == "block.genetic"
    assert "genetic" in body["reason"]


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="hksz-gateway"'),
        ("Bearer wrong-token", 'Bearer realm="hksz-gateway", error="invalid_token"'),
    ],
)
async def test_401_names_the_bearer_challenge(
    parks: Parks, authorization: str | None, challenge: str
) -> None:
    # RFC 9110 §15.5.2: a 401 carries WWW-Authenticate (RFC 6750 §3 for bearer tokens).
    headers = {"Authorization": authorization} if authorization else {}
    url = f"{parks.egress}/v1/transfers/sz-lab/a.csv"
    async with parks.session.put(url, data=b"x", headers=headers) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == challenge


async def test_unknown_route_is_404(parks: Parks) -> None:
    status, body = await parks.put("nowhere", "a.csv", b"x")
    assert status == 404
    assert body["status"] == 404
    assert "unknown route" in body["detail"]
    assert "nowhere" not in body["detail"]  # client text, never echoed (test_no_echo.py)


@pytest.mark.parametrize("token", [None, "wrong-token", GHOST_TOKEN])
async def test_unknown_sender_is_401(parks: Parks, token: str | None) -> None:
    status, body = await parks.put("sz-lab", "a.csv", b"hello", token=token)
    assert status == 401
    assert body["type"].endswith("/unauthenticated")
    assert parks.inbox_files("sz-lab") == {}


async def test_bad_file_name_is_400(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", ".hidden", b"hello")
    assert status == 400
    assert "file name" in body["detail"]


async def test_oversized_body_is_413(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"max_body_bytes": 100_000}) as parks:
        status, _ = await parks.put("sz-lab", "big.csv", CLEAN)  # declared length
        assert status == 413
        # Streamed without a length: the cap is enforced while reading.
        status, body = await parks.put("sz-lab", "big.csv", slow_body(CLEAN, 65536, 0))
        assert status == 413
        assert body["transfer_id"].startswith("t_")
        assert parks.events_of(body["transfer_id"]) == ["aborted"]
        assert parks.inbox_files("sz-lab") == {}


async def test_post_and_forward_proxy_mode(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "posted.csv", CLEAN[:5000], method="POST")
    assert status == 201, body
    assert parks.inbox_files("sz-lab") == {"posted.csv": CLEAN[:5000]}
    # Forward-proxy: an absolute URI whose host is a route's destination.
    ingress = parks.sz.ingress_url
    assert ingress is not None
    headers = {"Authorization": "Bearer tok-research-0123456789"}
    twin = ingress.replace("https", "http")
    # The bare twin address is route sz-clinical's destination.
    for path, route, name in (
        ("/v1/envelopes/sz-lab/proxied.csv", "sz-lab", "proxied.csv"),
        ("/bare.csv", "sz-clinical", "bare.csv"),
    ):
        async with parks.session.put(
            twin + path, data=CLEAN[:5000], headers=headers, proxy=parks.egress
        ) as response:
            assert response.status == 201, await response.text()
        assert name in parks.inbox_files(route)
    async with parks.session.put(
        "http://example.org/x.csv", data=b"abc", headers=headers, proxy=parks.egress
    ) as response:
        assert response.status == 403
        assert (await response.json(content_type=None))["type"].endswith("/forbidden")


async def test_bare_twin_destination_uses_envelope_endpoint(parks: Parks) -> None:
    # sz-clinical's destination is the twin's bare address: /v1/envelopes/{route} is added.
    status, body = await parks.put("sz-clinical", "c.csv", CLEAN[:5000])
    assert status == 201, body
    assert parks.inbox_files("sz-clinical") == {"c.csv": CLEAN[:5000]}


async def test_https_destination_through_ingress(parks: Parks) -> None:
    data = os.urandom(3_000_000).hex().encode()[:3_000_000]
    status, body = await parks.put("sz-https", "big.txt", data)
    assert status == 201, body
    assert parks.recorder.received == {"/https/big.txt": data}


async def test_tls_mode_sends_plaintext_over_mutual_tls(parks: Parks) -> None:
    status, body = await parks.put("sz-tls", "direct.csv", CLEAN)
    assert status == 201, body
    assert parks.recorder.received == {"/tls/direct.csv": CLEAN}
    assert parks.events_of(body["transfer_id"]) == ["allowed", "delivered"]


async def test_status_and_receipt_endpoints(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "clean.csv", CLEAN[:1000])
    assert status == 201
    tid = body["transfer_id"]
    auth = {"Authorization": "Bearer tok-research-0123456789"}
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=auth) as r:
        assert r.status == 200
        state = await r.json()
    assert state["state"] == "delivered"
    assert state["decision"] == "allow"
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}/receipt", headers=auth) as r:
        assert r.status == 200
        receipt = await r.json()
    assert receipt["record"]["transfer_id"] == tid
    async with parks.session.get(f"{parks.egress}/v1/transfers/t_{'0' * 32}", headers=auth) as r:
        assert r.status == 404
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}") as r:
        assert r.status == 401
    # Another sender does not see it.
    other = {"Authorization": f"Bearer {GHOST_TOKEN}"}
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=other) as r:
        assert r.status == 404
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}/receipt", headers=other) as r:
        assert r.status == 404
    # A compliance officer may read it too.
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=officer) as r:
        assert r.status == 200


async def test_review_approve_and_reject(parks: Parks) -> None:
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    status, held = await parks.put("sz-review", "a.csv", CLEAN[:4000])
    assert status == 202
    assert held["decision"] == "review"
    assert parks.inbox_files("sz-review") == {}
    # The held spool is ciphertext at rest.
    held_files = list((parks.root / "hk" / "spool" / "held").glob("*.payload"))
    assert len(held_files) == 1
    assert CLEAN[:100] not in held_files[0].read_bytes()
    url = f"{parks.egress}/v1/reviews/{held['transfer_id']}/approve"
    comment = {"comment": "instrument readings, as agreed"}
    async with parks.session.post(
        url, json=comment, headers={"Authorization": "Bearer tok-research-0123456789"}
    ) as r:
        assert r.status == 403  # a sender is not a compliance officer
    async with parks.session.post(url, headers=officer) as r:
        assert r.status == 400  # a decision needs a comment
    async with parks.session.post(url, json=comment, headers=officer) as r:
        assert r.status == 201, await r.text()
    await parks.settle()
    assert parks.inbox_files("sz-review") == {"a.csv": CLEAN[:4000]}
    assert parks.events_of(held["transfer_id"]) == ["review", "approved", "delivered"]
    async with parks.session.post(url, json=comment, headers=officer) as r:
        assert r.status == 404  # no longer waiting

    status, held2 = await parks.put("sz-review", "b.csv", CLEAN[:4000])
    assert status == 202
    url = f"{parks.egress}/v1/reviews/{held2['transfer_id']}/reject"
    async with parks.session.post(url, json={"comment": "not this one"}, headers=officer) as r:
        assert r.status == 200
    assert "b.csv" not in parks.inbox_files("sz-review")
    assert parks.events_of(held2["transfer_id"]) == ["review", "rejected"]
    assert list((parks.root / "hk" / "spool" / "held").glob("*")) == []


async def test_health_ready_metrics(parks: Parks) -> None:
    async with parks.session.get(f"{parks.egress}/healthz") as r:
        assert r.status == 200
    async with parks.session.get(f"{parks.egress}/readyz") as r:
        assert r.status == 200
        assert (await r.json())["checks"] == {
            "serving": True,
            "policy": True,
            "audit": True,
            "ledger": True,
        }
    await parks.put("sz-lab", "clean.csv", CLEAN[:1000])
    async with parks.session.get(f"{parks.egress}/metrics") as r:
        text = await r.text()
    assert 'gateway_transfers_total{decision="allow"' in text
    assert "gateway_inflight_transfers 0.0" in text


# --------------------------------------------------------------------------- faults


async def test_client_abort_mid_body_delivers_nothing(
    parks: Parks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hyperscan 0.9.1 frees a stream's memory only on an explicit close: an
    # aborted transfer's scanner must be closed too (counted through a spy).
    from gateway.classify.engine import Scanner

    closed: list[Scanner] = []
    real_close = Scanner.close

    def spy_close(self: Scanner) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(Scanner, "close", spy_close)
    host, port = parks.egress.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    head = (
        "PUT /v1/transfers/sz-lab/aborted.csv HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer tok-research-0123456789\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    writer.write(head + CLEAN[:300_000])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()
    for _ in range(50):
        events = [r["event"] for r in parks.audit_events() if r.get("kind") == "transfer"]
        if events:
            break
        await asyncio.sleep(0.1)
    assert events == ["aborted"]
    assert len(closed) >= 1
    assert parks.inbox_files("sz-lab") == {}
    await parks.settle()  # spool files are deleted in a tracked worker thread
    assert [p for p in (parks.root / "hk" / "spool").rglob("*") if p.is_file()] == []
    # The gateway keeps serving.
    status, _ = await parks.put("sz-lab", "after.csv", CLEAN[:1000])
    assert status == 201


async def test_slow_client_is_served(parks: Parks) -> None:
    data = CLEAN[:200_000]
    status, body = await parks.put("sz-lab", "slow.csv", slow_body(data, 10_000, 0.02))
    assert status == 201, body
    assert parks.inbox_files("sz-lab") == {"slow.csv": data}


async def test_idle_client_times_out(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"idle_timeout": 0.3}) as parks:

        async def stalls() -> object:
            yield CLEAN[:1000]
            await asyncio.sleep(1.5)
            yield CLEAN[1000:2000]

        # The gateway answers 400 and closes while the client is still sending.
        try:
            status, _ = await parks.put("sz-lab", "stall.csv", stalls())
        except aiohttp.ClientError:
            status = 400
        assert status == 400
        await asyncio.sleep(0.2)
        assert [r["event"] for r in parks.audit_events() if r.get("kind") == "transfer"] == [
            "aborted"
        ]
        assert parks.inbox_files("sz-lab") == {}


async def test_destination_down_is_502(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki) as parks:
        parks.recorder.mode = "error"
        status, body = await parks.put("sz-tls", "x.csv", CLEAN[:5000])
        assert status == 502
        assert body["decision"] == "allow"
        assert parks.events_of(body["transfer_id"]) == ["allowed", "failed"]
        assert parks.recorder.received == {}


async def test_twin_unreachable_is_502(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki) as parks:
        # Stop the ingress: the twin is down.
        for runner in parks.sz.runners:
            await runner.cleanup()
        parks.sz.runners.clear()
        status, body = await parks.put("sz-lab", "x.csv", CLEAN[:5000])
        assert status == 502
        assert parks.events_of(body["transfer_id"]) == ["allowed", "failed"]
        assert parks.inbox_files("sz-lab") == {}


async def test_destination_reset_mid_forward(parks: Parks) -> None:
    parks.recorder.mode = "reset"
    data = os.urandom(1_000_000).hex().encode()
    status, body = await parks.put("sz-tls", "reset.csv", data)
    assert status == 502, body
    assert parks.recorder.received == {}
    assert parks.events_of(body["transfer_id"]) == ["allowed", "failed"]
    # Through the ingress as well: the ingress reports the failure, nothing is dropped.
    status, body = await parks.put("sz-https", "reset.csv", data)
    assert status == 502, body
    assert parks.events_of(body["transfer_id"], "sz") == ["failed"]


async def test_spool_disk_low_fails_closed(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"min_free_spool_bytes": 1 << 62}) as parks:
        status, body = await parks.put("sz-lab", "x.csv", CLEAN[:1000])
        assert status == 503
        assert body["type"].endswith("/spool-full")
        assert parks.inbox_files("sz-lab") == {}


def _redirect_open_files(under: Path, device: str) -> int:
    """Point every fd this process holds open under ``under`` at ``device``; return how many."""
    target = os.open(device, os.O_WRONLY)
    moved = 0
    try:
        for entry in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{entry}").startswith(str(under)):
                    os.dup2(target, int(entry))
                    moved += 1
    finally:
        os.close(target)
    return moved


async def test_audit_log_unwritable_fails_closed(parks: Parks) -> None:
    # The disk under the audit log "fills up": its open segment now writes to
    # /dev/full, so the kernel answers ENOSPC to the next write.
    status, _ = await parks.put("sz-lab", "before.csv", CLEAN[:1000])
    assert status == 201
    assert _redirect_open_files(parks.root / "hk" / "audit" / "segments", "/dev/full") >= 1
    status, body = await parks.put("sz-lab", "x.csv", CLEAN[:1000])
    assert status == 503, body
    assert body["transfer_id"].startswith("t_")
    assert not parks.hk.services.audit.healthy
    status, body = await parks.put("sz-lab", "y.csv", CLEAN[:1000])
    assert status == 503
    async with parks.session.get(f"{parks.egress}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"]["audit"] is False
    assert set(parks.inbox_files("sz-lab")) == {"before.csv"}


async def test_ledger_failure_fails_closed(tmp_path: Path, pki: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    people = CLEAN[:3000] + b"x," + PHONE + b"\n"  # one subject: the ledger is written
    async with start_parks(tmp_path, pki, ledger_url=str(ledger)) as parks:
        status, body = await parks.put("sz-contract", "first.csv", people)
        assert status == 201, body
        assert body["subjects"] == 1
        # The disk under the SQLite ledger fills up: its open files now write to /dev/full.
        assert _redirect_open_files(ledger.parent / ledger.name, "/dev/full") >= 1
        status, body = await parks.put("sz-contract", "second.csv", people.replace(b"779", b"778"))
        assert status == 503, body
        assert body["transfer_id"].startswith("t_")
        # The ledger's own error names its file: that is for the log, not the sender.
        assert str(ledger) not in str(body)
        assert "sqlite" not in str(body).lower()
        registry = parks.hk.services.metrics.registry
        assert registry.get_sample_value("gateway_fail_closed_total", {"reason": "ledger"}) == 1
        # Fail closed: nothing delivered, and no "allowed" record for it.
        assert set(parks.inbox_files("sz-clinical")) == {"first.csv"}
        assert parks.events_of(body["transfer_id"]) == ["failed"]


async def test_clean_transfer_does_not_write_the_ledger(tmp_path: Path, pki: Path) -> None:
    # No subjects to add: the ledger transaction commits without a write, so
    # without an fsync (a durability point less on every clean transfer).
    ledger = tmp_path / "ledger.sqlite3"
    async with start_parks(tmp_path, pki, ledger_url=str(ledger)) as parks:
        status, body = await parks.put("sz-lab", "warm.csv", CLEAN[:1000])
        assert status == 201, body
        wal = ledger.with_name(ledger.name + "-wal")
        before = wal.stat().st_size if wal.exists() else 0
        for i in range(3):
            status, body = await parks.put("sz-lab", f"c{i}.csv", CLEAN[:1000])
            assert status == 201, body
            assert body["subjects"] == 0
        assert (wal.stat().st_size if wal.exists() else 0) == before
        # A transfer with a subject still is counted (and written).
        status, body = await parks.put("sz-contract", "p.csv", CLEAN[:1000] + b"x," + PHONE + b"\n")
        assert status == 201, body
        assert wal.stat().st_size > before


async def test_too_many_transfers_is_503_with_retry_after(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"max_concurrent": 1}) as parks:
        slow = asyncio.create_task(parks.put("sz-lab", "slow.csv", slow_body(CLEAN, 50_000, 0.05)))
        await asyncio.sleep(0.3)
        url = f"{parks.egress}/v1/transfers/sz-lab/second.csv"
        headers = {"Authorization": "Bearer tok-research-0123456789"}
        async with parks.session.put(url, data=b"abc", headers=headers) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) > 0
        status, _ = await slow
        assert status == 201


async def test_oversized_header_is_refused(parks: Parks) -> None:
    headers = {"Authorization": "Bearer tok-research-0123456789", "X-Big": "x" * 20_000}
    async with parks.session.put(
        f"{parks.egress}/v1/transfers/sz-lab/h.csv", data=b"abc", headers=headers
    ) as r:
        assert r.status in (400, 431)
    assert parks.inbox_files("sz-lab") == {}


# --------------------------------------------------------------------------- concurrency


async def test_64_concurrent_transfers_mixed_verdicts(parks: Parks) -> None:
    rng = random.Random(4)
    jobs = []
    for i in range(64):
        kind = rng.choice(["clean", "personal", "genetic"])
        if kind == "clean":
            data = CLEAN[: rng.randint(1000, 200_000)]
        elif kind == "personal":
            data = CLEAN[:5000] + b"p," + RESIDENT_ID + b"\n"
        else:
            data = GENETIC
        jobs.append((kind, f"f{i:02d}.csv", data))
    results = await asyncio.gather(*(parks.put("sz-lab", name, data) for _, name, data in jobs))
    expected = {
        "clean": (201, "allow.clean"),
        "personal": (403, "block.personal"),
        "genetic": (403, "block.genetic"),
    }
    delivered = parks.inbox_files("sz-lab")
    for (kind, name, data), (status, body) in zip(jobs, results, strict=True):
        assert (status, body["rule"]) == expected[kind], (kind, body)
        events = parks.events_of(body["transfer_id"])
        if kind == "clean":
            assert delivered[name] == data
            assert events == ["allowed", "delivered"]
        else:
            assert name not in delivered
            assert events == ["blocked"]
    assert parks.partial_files() == []


#: Large enough to fill the loopback socket buffers of a peer that never reads.
STALL_BODY = CLEAN * 28  # ~17 MB


async def _put_timed(parks: Parks, route: str, name: str, data: bytes) -> tuple[int, float]:
    """PUT and return (status, seconds); 0 when the egress closed the connection early."""
    started = time.monotonic()
    headers = {"Authorization": "Bearer tok-research-0123456789"}
    try:
        async with parks.session.put(
            f"{parks.egress}/v1/transfers/{route}/{name}", data=data, headers=headers
        ) as response:
            status = response.status
    except aiohttp.ClientError:
        status = 0
    return status, time.monotonic() - started


async def test_stalled_pipelined_upload_falls_back_to_the_classic_path(
    tmp_path: Path, pki: Path
) -> None:
    # The twin takes the payload PUT but never reads it: after idle_timeout the
    # upload is cancelled and header + spool go out after the verdict instead.
    egress = {"idle_timeout": 1, "total_timeout": 60}
    async with (
        start_parks(tmp_path, pki, egress=egress) as parks,
        stand_in_twin(parks, stall_payloads=True) as twin,
    ):
        async with asyncio.timeout(40):
            status, body = await parks.put("sz-lab", "big.csv", STALL_BODY)
        assert status == 201, body
        assert twin.payload_puts == 1
        assert list(twin.envelopes) == ["/v1/envelopes/sz-lab/big.csv"]
        assert parks.events_of(body["transfer_id"]) == ["allowed", "delivered"]


async def test_total_timeout_bounds_a_stalled_pipelined_upload(tmp_path: Path, pki: Path) -> None:
    # Nothing at the twin reads: the total timeout must end the transfer on time
    # (it used to wait for the stalled upload, ~1 h + 120 s with the defaults).
    async with (
        start_parks(tmp_path, pki, egress={"total_timeout": 3}) as parks,
        stand_in_twin(parks, stall_payloads=True, stall_envelopes=True),
    ):
        async with asyncio.timeout(30):
            status, elapsed = await _put_timed(parks, "sz-lab", "big.csv", STALL_BODY)
        assert status in (0, 503), status
        assert elapsed < 15
        state = parks.hk.egress_app[EGRESS]  # type: ignore[index]
        assert state.inflight == 0
        ends = [
            r["event"]
            for r in parks.audit_events()
            if r.get("kind") == "transfer" and r["event"] in ("aborted", "failed")
        ]
        assert ends == ["aborted"]
        assert parks.inbox_files("sz-lab") == {}


async def test_timeout_while_forwarding_is_504_with_the_verdict(tmp_path: Path, pki: Path) -> None:
    async with (
        start_parks(tmp_path, pki, egress={"total_timeout": 2}) as parks,
        stand_in_twin(parks, stall_payloads=True, stall_envelopes=True),
        asyncio.timeout(20),
    ):
        status, body = await parks.put("sz-lab", "small.csv", CLEAN[:5000])
    assert status == 504, body
    assert body["type"].endswith("/upstream-timeout")
    for key in ("decision", "rule", "labels", "subjects", "bytes", "sha256", "policy_version"):
        assert key in body, key
    assert body["decision"] == "allow"
    assert body["sha256"] == sha256(CLEAN[:5000])
    assert parks.events_of(body["transfer_id"]) == ["allowed", "failed"]


async def test_delivered_record_is_durable_before_201(
    parks: Parks, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = parks.hk.egress_app[EGRESS].audit  # type: ignore[index]
    append = audit.append

    async def slow_append(record: dict[str, object]) -> object:
        if record.get("event") == "delivered":
            await asyncio.sleep(0.5)
        return await append(record)

    monkeypatch.setattr(audit, "append", slow_append)
    headers = {"Authorization": "Bearer tok-research-0123456789"}
    async with parks.session.put(
        f"{parks.egress}/v1/transfers/sz-lab/durable.csv", data=CLEAN[:5000], headers=headers
    ) as response:
        assert response.status == 201
        tid = (await response.json())["transfer_id"]
    # No settle(): the record must be on disk when the 201 arrives.
    assert parks.events_of(tid) == ["allowed", "delivered"]

    async def failing_append(record: dict[str, object]) -> object:
        if record.get("event") == "delivered":
            raise GatewayError("disk gone")
        return await append(record)

    monkeypatch.setattr(audit, "append", failing_append)
    status, body = await parks.put("sz-lab", "unrecorded.csv", CLEAN[:5000])
    assert status == 503, body
    assert body["decision"] == "allow"
    assert body["transfer_id"].startswith("t_")


@pytest.mark.parametrize(
    "name",
    [
        "report\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE
        "a\u202ab.csv",
        "a\u2066b.csv",
        "a\u2069b.csv",
        "a\u200bb.csv",  # ZERO WIDTH SPACE (Cf)
        "\ufeffdata.csv",  # BYTE ORDER MARK (Cf)
    ],
)
def test_safe_name_refuses_format_characters(name: str) -> None:
    with pytest.raises(GatewayError):
        safe_name(name)


def test_safe_name_keeps_ordinary_unicode() -> None:
    assert safe_name("数据-été.csv") == "数据-été.csv"


async def test_bidi_file_name_over_http_is_400(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "x%E2%80%AEvsc.exe", CLEAN[:100])
    assert status == 400, body
    assert parks.inbox_files("sz-lab") == {}


async def _proxy_put(parks: Parks, url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with parks.session.put(url, data=b"abc", headers=headers, proxy=parks.egress) as r:
        return r.status, r.content_type


async def test_forward_proxy_checks_port_scheme_and_auth_first(parks: Parks) -> None:
    ingress = parks.sz.ingress_url
    assert ingress is not None
    host = ingress.split("://")[1].split(":")[0]
    token = "tok-research-0123456789"
    # No port: the scheme's default (80), not the route's 9443-style port.
    assert await _proxy_put(parks, f"http://{host}/v1/envelopes/sz-lab/x.csv", token) == (
        403,
        "application/problem+json",
    )
    # Unauthenticated: 401 whether or not the host is a route's destination.
    for url in (f"{ingress.replace('https', 'http')}/x.csv", "http://example.org/x.csv"):
        assert await _proxy_put(parks, url, None) == (401, "application/problem+json")


async def test_forward_proxy_malformed_port_is_problem_400(
    parks: Parks, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection(*parks.egress.split("//")[1].split(":"))
    try:
        with capture_logs() as logs:
            writer.write(
                b"PUT http://127.0.0.1:99999999/x.csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer tok-research-0123456789\r\n"
                b"Content-Length: 3\r\nConnection: close\r\n\r\nabc"
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert head.split(b" ")[1] == b"400", head
        assert b"application/problem+json" in head
        assert [e["event"] for e in logs] == ["malformed_http_request"]
        assert not [r for r in caplog.records if r.exc_info]  # no traceback logged
    finally:
        writer.close()


async def test_a_small_body_never_touches_the_spool_disk(parks: Parks) -> None:
    # A body whose sealed payload fits SPOOL_MEMORY_BYTES stays in memory (no
    # file to create and delete on its latency path); a larger one spills to
    # a spool file, and when that cannot be created it still fails closed.
    spool = parks.root / "hk" / "spool"
    moved = spool.with_name("spool-moved")
    spool.rename(moved)
    spool.write_bytes(b"")  # a file where the spool directory was: no file can go in
    try:
        small = CLEAN[: INLINE_MAX_BYTES - 10]
        status, body = await parks.put("sz-lab", "small.csv", small)
        assert status == 201, body
        assert parks.events_of(body["transfer_id"]) == ["allowed", "delivered"]
        status, body = await parks.put("sz-lab", "large.csv", CLEAN[: SPOOL_MEMORY_BYTES + 10])
        assert status == 503, body
        assert parks.events_of(body["transfer_id"]) == ["failed"]
    finally:
        spool.unlink()
        moved.rename(spool)
    assert parks.inbox_files("sz-lab") == {"small.csv": small}
    status, body = await parks.put("sz-lab", "large.csv", CLEAN[: SPOOL_MEMORY_BYTES + 10])
    assert status == 201, body
    assert [p for p in spool.rglob("*") if p.is_file()] == []
