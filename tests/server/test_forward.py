"""The pipelined payload upload against a twin that stops reading (real loopback server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.server.forward import PayloadUpload
from tests.server.conftest import StandInTwin

#: One sealed batch as the egress sends it (egress OFFLOAD_BATCH).
BATCH = b"\x00" * (512 * 1024)


@contextlib.asynccontextmanager
async def _twin(twin: StandInTwin) -> AsyncIterator[str]:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", twin.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/payloads/t_{'0' * 32}"
    finally:
        twin.release.set()
        await runner.cleanup()


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
