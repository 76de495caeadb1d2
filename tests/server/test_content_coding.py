"""Coded and broken request bodies (issue 11, findings 1 and 4).

The classifier is the only thing that decodes: a body with a
``Content-Encoding`` is refused ``415`` before a byte of it is read (aiohttp's
own decompression once delivered a truncated gzip body's decodable prefix and
expanded 100 KB into 64 MiB past every classifier limit). A body whose framing
breaks partway is a client error answered at once (``400``, recorded
``aborted``), not a ``500`` and not a wait for the idle time-out.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import time
import zlib
from pathlib import Path

import pytest
import zstandard

from gateway.crypto.certs import ParkPaths
from gateway.crypto.tls import client_ssl_context
from tests.server.conftest import RESEARCH_TOKEN, Parks, start_parks

CLEAN = b"sample,reading,unit\n" + b"".join(
    b"s%05d,%d.%02d,mV\n" % (i, i % 97, i % 100) for i in range(4000)
)


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _exchange(url: str, data: bytes, *, pause_after: int | None = None) -> bytes:
    """Send raw bytes to ``url``'s listener and read the whole answer (until close)."""
    host, port = _host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if pause_after is None:
            writer.write(data)
        else:
            writer.write(data[:pause_after])
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(data[pause_after:])
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()


def _status_and_body(raw: bytes) -> tuple[str, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, json.loads(body) if body.strip() else {}


def _gzip_bomb() -> bytes:
    """About 64 KB of gzip that expands to 64 MiB of zeros (~1000:1)."""
    return gzip.compress(bytes(64 << 20), compresslevel=9)


CODED_BODIES = {
    "gzip": gzip.compress(CLEAN),
    "x-gzip": gzip.compress(CLEAN),
    "deflate": zlib.compress(CLEAN),
    "zstd": zstandard.ZstdCompressor().compress(CLEAN),
    "br": b"\x1b\x00\x00",
    "GZIP": gzip.compress(CLEAN),
    "identity, gzip": gzip.compress(CLEAN),
    "gzip, identity": gzip.compress(CLEAN),
}


@pytest.mark.parametrize("coding", sorted(CODED_BODIES))
async def test_coded_body_is_refused_before_it_is_read(parks: Parks, coding: str) -> None:
    headers = {
        "Authorization": f"Bearer {RESEARCH_TOKEN}",
        "Content-Encoding": coding,
    }
    url = f"{parks.egress}/v1/transfers/sz-lab/readings.csv"
    async with parks.session.put(url, data=CODED_BODIES[coding], headers=headers) as r:
        assert r.status == 415
        assert r.content_type == "application/problem+json"
        assert r.headers["Accept-Encoding"] == "identity"
        body = await r.json(content_type=None)
    assert body["status"] == 415
    assert "Content-Encoding" in body["detail"]
    await parks.settle()
    assert parks.inbox_files() == {}
    assert [r for r in parks.audit_events() if "transfer_id" in r] == []


async def test_identity_coding_is_the_plain_body(parks: Parks) -> None:
    headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}", "Content-Encoding": "identity"}
    url = f"{parks.egress}/v1/transfers/sz-lab/readings.csv"
    async with parks.session.put(url, data=CLEAN, headers=headers) as r:
        assert r.status == 201, await r.text()
    await parks.settle()
    assert parks.inbox_files() == {"readings.csv": CLEAN}


async def test_truncated_gzip_body_delivers_nothing(parks: Parks) -> None:
    """The critical finding: a gzip member cut off halfway, in complete chunked framing."""
    coded = gzip.compress(CLEAN)
    half = coded[: len(coded) // 2]
    request = (
        b"PUT /v1/transfers/sz-lab/half.csv HTTP/1.1\r\n"
        b"Host: gateway\r\n"
        b"Authorization: Bearer " + RESEARCH_TOKEN.encode() + b"\r\n"
        b"Content-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        b"%x\r\n" % len(half) + half + b"\r\n0\r\n\r\n"
    )
    status, _, body = _status_and_body(await _exchange(parks.egress, request))
    assert status.startswith("HTTP/1.1 415")
    assert body["status"] == 415
    await parks.settle()
    assert parks.inbox_files() == {}


async def test_gzip_bomb_is_not_expanded(parks: Parks) -> None:
    bomb = _gzip_bomb()
    assert len(bomb) < 100_000
    headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}", "Content-Encoding": "gzip"}
    url = f"{parks.egress}/v1/transfers/sz-lab/zeros.bin"
    async with parks.session.put(url, data=bomb, headers=headers) as r:
        assert r.status == 415
    await parks.settle()
    assert parks.inbox_files() == {}


@pytest.mark.parametrize(
    "damage",
    ["bad-crc", "trailing-garbage", "not-gzip"],
)
async def test_corrupt_coded_body_is_a_client_error(
    parks: Parks, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    coded = bytearray(gzip.compress(CLEAN))
    if damage == "bad-crc":
        coded[-8] ^= 0xFF
    elif damage == "trailing-garbage":
        coded += b"this is not gzip"
    else:
        coded = bytearray(b"plain text pretending to be gzip\n" * 100)
    headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}", "Content-Encoding": "gzip"}
    url = f"{parks.egress}/v1/transfers/sz-lab/broken.csv"
    with caplog.at_level(logging.DEBUG):
        async with parks.session.put(url, data=bytes(coded), headers=headers) as r:
            assert 400 <= r.status < 500
            assert r.content_type == "application/problem+json"
    await parks.settle()
    assert parks.inbox_files() == {}
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


async def test_forward_proxy_request_with_a_coding_is_refused(parks: Parks) -> None:
    assert parks.sz.ingress_url is not None
    target = parks.sz.ingress_url.replace("https://", "http://") + "/v1/envelopes/sz-lab/x.csv"
    headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}", "Content-Encoding": "gzip"}
    async with parks.session.put(
        target, data=gzip.compress(CLEAN), headers=headers, proxy=parks.egress
    ) as r:
        assert r.status == 415
    await parks.settle()
    assert parks.inbox_files() == {}


async def test_ingress_refuses_a_coded_envelope(parks: Parks) -> None:
    sz, hk = ParkPaths(parks.pki / "sz"), ParkPaths(parks.pki / "hk")
    context = client_ssl_context(ca=sz.ca_cert, cert=hk.cert("client"), key=hk.key("client"))
    url = f"{parks.sz.ingress_url}/v1/envelopes/sz-lab/x.csv"
    headers = {"Content-Encoding": "gzip", "X-Gateway-Transfer-Id": "t_" + "a" * 32}
    async with parks.session.post(
        url, data=gzip.compress(b"age-encryption.org/v1\n"), headers=headers, ssl=context
    ) as r:
        assert r.status == 415
    assert parks.inbox_files() == {}


def _chunked_request(name: str, first: bytes) -> bytes:
    return (
        f"PUT /v1/transfers/sz-lab/{name} HTTP/1.1\r\n".encode() + b"Host: gateway\r\n"
        b"Authorization: Bearer " + RESEARCH_TOKEN.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n" % len(first) + first + b"\r\n"
    )


@pytest.mark.parametrize("size", [1000, 300_000], ids=["inline", "threaded"])
async def test_malformed_chunk_size_mid_body_is_answered_at_once(
    tmp_path: Path, pki: Path, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad chunked framing partway through: 400 now, ``aborted``, nothing delivered.

    The idle time-out is 60 s: before the fix the transfer waited for it.
    """
    async with start_parks(tmp_path, pki, egress={"idle_timeout": 60}) as parks:
        head = _chunked_request("framing.csv", CLEAN[:size] if size <= len(CLEAN) else CLEAN * 3)
        request = head + b"ZZ-not-a-size\r\nabc\r\n0\r\n\r\n"
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG):
            raw = await _exchange(parks.egress, request, pause_after=len(head))
        elapsed = time.monotonic() - started
        status, headers, body = _status_and_body(raw)
        assert status.startswith("HTTP/1.1 400"), raw[:200]
        assert headers["content-type"] == "application/problem+json"
        assert "framing" in str(body["detail"])
        assert elapsed < 10
        # One answer only: the bad framing is not parsed as a second request.
        assert raw.count(b"HTTP/1.1 ") == 1
        await parks.settle()
        tid = str(body["transfer_id"])
        assert parks.events_of(tid) == ["aborted"]
        assert parks.inbox_files() == {}
        assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


async def test_a_malformed_next_request_does_not_abort_a_complete_one(parks: Parks) -> None:
    """The parser error belongs to the request after the body: the complete one is served."""
    body = CLEAN * 20
    first = (
        b"PUT /v1/transfers/sz-lab/complete.csv HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + RESEARCH_TOKEN.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    host, port = _host_port(parks.egress)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(0.02)  # the transfer's handler is running, its body complete
        writer.write(b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)
    assert statuses == [b"201", b"400"], raw[:300]
    await parks.settle()
    assert parks.inbox_files() == {"complete.csv": body}
