"""The pipelined payload upload against a twin that stops reading (real loopback server)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import UpstreamError
from gateway.server.forward import Forwarded, PayloadUpload, post_bytes, post_stream
from tests.server.conftest import StandInTwin, serving_twin

#: One sealed batch as the egress sends it (egress OFFLOAD_BATCH).
BATCH = b"\x00" * (512 * 1024)


@contextlib.asynccontextmanager
async def _twin(twin: StandInTwin) -> AsyncIterator[str]:
    async with serving_twin(twin) as base:
        yield f"{base}/v1/payloads/t_{'0' * 32}"


async def _upload(session: aiohttp.ClientSession, url: str, stall: float) -> PayloadUpload:
    return PayloadUpload(session, url, {}, None, b"header", b"nonce", stall_timeout=stall)


async def test_send_gives_up_on_a_twin_that_stopped_reading() -> None:
    twin = StandInTwin(stall_payloads=True)
    async with _twin(twin) as url, aiohttp.ClientSession() as session:
        upload = await _upload(session, url, stall=0.5)
        started = time.monotonic()
        async with asyncio.timeout(30):  # before the deadline: blocked for good
            while not upload.stalled:
                await upload.send(BATCH)
            assert not await upload.finish()  # the caller falls back to the classic path
        assert time.monotonic() - started < 25
        await upload.send(BATCH)  # a stalled upload takes no more bytes, without waiting


async def test_a_reading_twin_gets_the_whole_payload() -> None:
    twin = StandInTwin(stall_payloads=False)
    async with _twin(twin) as url, aiohttp.ClientSession() as session:
        upload = await _upload(session, url, stall=5)
        for _ in range(40):  # 20 MiB: well past the socket buffers
            await upload.send(BATCH)
        assert await upload.finish()
        assert not upload.stalled
        assert upload.bytes == len(b"header" + b"nonce") + 40 * len(BATCH)


@contextlib.asynccontextmanager
async def _recorder(status: int) -> AsyncIterator[tuple[str, list[web.Request], list[bytes]]]:
    """A loopback upstream that keeps each request and its body and answers ``status``."""
    requests: list[web.Request] = []
    bodies: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        requests.append(request)
        bodies.append(await request.read())
        return web.json_response({"ok": status < 300}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/drop/x.bin", requests, bodies
    finally:
        await runner.cleanup()


async def test_post_bytes_sends_one_body_with_a_content_length() -> None:
    body = b"age header\n" + bytes(range(256)) * 8
    answers: list[tuple[int, bytes]] = []
    async with _recorder(201) as (url, requests, bodies), aiohttp.ClientSession() as session:
        sent = await post_bytes(
            session,
            url,
            body,
            headers={"X-Test": "1"},
            method="POST",
            on_response=lambda status, data: answers.append((status, data)),
        )
    assert sent == Forwarded(201, len(body), hashlib.sha256(body).hexdigest())
    assert bodies == [body]
    assert requests[0].method == "POST"
    assert requests[0].headers["X-Test"] == "1"
    assert requests[0].headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in requests[0].headers
    assert answers == [(201, b'{"ok": true}')]


async def test_post_bytes_and_post_stream_fail_alike_on_a_refusal() -> None:
    async with _recorder(500) as (url, _, bodies), aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError, match="answered 500"):
            await post_bytes(session, url, b"abc")
        with pytest.raises(UpstreamError, match="answered 500"):
            await post_stream(session, url, iter([b"b", b"c"]), prefix=b"a", threaded=False)
    assert bodies == [b"abc", b"abc"]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError):  # nothing listens there any more
            await post_bytes(session, url, b"abc")
