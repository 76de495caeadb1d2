"""The egress's decoder memory budget against concurrent hostile uploads (issue 11, finding 7).

Real parks on loopback with a small budget: two ``zstd --long=27`` uploads
hold their 128 MiB windows (their bodies paused halfway), and the uploads
that arrive meanwhile (another ``--long=27`` zstd, an ``xz -9e``) are answered
``503`` with ``Retry-After`` and problem+json, recorded ``failed``, nothing
delivered; once the first ones finished, a retry is allowed. A window larger
than the whole budget is unscannable instead (the policy blocks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import lzma
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import zstandard

from gateway.bench.classify import generate
from gateway.classify.budget import DecoderBudget
from gateway.classify.decode import LAYER_BUFFER_BYTES, ZSTD_STATE_BYTES
from gateway.server.config import RETRY_AFTER_SECONDS
from gateway.server.egress_state import EGRESS
from gateway.server.receive import OFFLOAD_BATCH
from tests.server.conftest import RESEARCH_TOKEN, Parks, start_parks

#: What the egress reserves for one ``zstd --long=27`` layer.
ZSTD_LONG_LAYER = LAYER_BUFFER_BYTES + ZSTD_STATE_BYTES + (1 << 27)
#: Two such windows and 40 MiB: a third zstd (128.8 MiB) or an xz -9 (64.3
#: MiB) does not fit while two are held, yet each fits the budget alone.
BUDGET = 2 * ZSTD_LONG_LAYER + (40 << 20)
#: How long the tests wait for the egress to reach a state (reserve, give back).
WAIT_SECONDS = 30.0
#: Clean prose (the test policy allows it): every upload is allowed once admitted.
TEXT = generate("prose", 3 << 20)


def zst_long(data: bytes) -> bytes:
    """Like ``zstd --long=27``: the frame header declares a 128 MiB window."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27, enable_ldm=True)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return compressor.compress(data) + compressor.flush()


ZST = zst_long(TEXT)
XZ = lzma.compress(TEXT, preset=9 | lzma.PRESET_EXTREME)


async def paused(data: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """The first OFFLOAD_BATCH + 64 KiB (fed to the classifier at once), then wait."""
    cut = OFFLOAD_BATCH + (64 << 10)
    assert len(data) > cut
    for start in range(0, cut, 64 << 10):
        yield data[start : start + (64 << 10)]
    await release.wait()
    yield data[cut:]


async def put(
    parks: Parks, name: str, body: Any
) -> tuple[int, dict[str, str], dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
    url = f"{parks.egress}/v1/transfers/sz-lab/{name}"
    async with parks.session.put(url, data=body, headers=headers) as response:
        result = (
            response.status,
            dict(response.headers),
            await response.json(content_type=None),
            response.content_type,
        )
    await parks.settle()
    return result


def budget_of(parks: Parks) -> DecoderBudget:
    assert parks.hk.egress_app is not None
    return parks.hk.egress_app[EGRESS].decoder_budget


async def eventually(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def metric(parks: Parks, name: str) -> float:
    async with parks.session.get(f"{parks.egress}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


async def test_uploads_past_the_budget_get_503_and_a_retry_succeeds(
    tmp_path: Path, pki: Path
) -> None:
    async with start_parks(tmp_path, pki, egress={"decoder_memory_bytes": BUDGET}) as parks:
        release = asyncio.Event()
        holders = [
            asyncio.create_task(put(parks, f"held{i}.csv.zst", paused(ZST, release)))
            for i in range(2)
        ]
        await eventually(lambda: budget_of(parks).reserved >= 2 * ZSTD_LONG_LAYER)
        assert await metric(parks, "gateway_decoder_memory_reserved_bytes") >= 2 * ZSTD_LONG_LAYER

        refused = {}
        for name, body in (("late.csv.zst", ZST), ("late.csv.xz", XZ)):
            status, headers, problem, content_type = await put(parks, name, body)
            assert status == 503, problem
            assert headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            assert content_type == "application/problem+json"
            assert problem["type"].endswith("/decoder-memory-busy")
            assert "retry later" in problem["detail"]
            assert "nothing was forwarded" in problem["detail"]
            refused[name] = problem["transfer_id"]
        for name, transfer_id in refused.items():
            assert parks.events_of(transfer_id) == ["failed"]
            record = next(r for r in parks.audit_events() if r.get("transfer_id") == transfer_id)
            assert record["reason"] == "decoder memory busy"
            assert name not in parks.inbox_files()
        assert await metric(parks, 'gateway_fail_closed_total{reason="decoder_memory"}') == len(
            refused
        )

        release.set()
        for task in holders:
            status, _, verdict, _ = await task
            assert status == 201, verdict
        assert parks.inbox_files()["held0.csv.zst"] == ZST
        assert await metric(parks, "gateway_decoder_memory_reserved_bytes") == 0

        # Once the first uploads finished, the refused ones are admitted.
        for name, body in (("late.csv.zst", ZST), ("late.csv.xz", XZ)):
            status, _, verdict, _ = await put(parks, name, body)
            assert status == 201, verdict
            assert verdict["labels"] == {}
            assert parks.inbox_files()[name] == body
        assert await metric(parks, "gateway_decoder_memory_reserved_bytes") == 0


async def test_a_client_that_leaves_mid_upload_gives_its_window_back(
    tmp_path: Path, pki: Path
) -> None:
    async with start_parks(tmp_path, pki, egress={"decoder_memory_bytes": BUDGET}) as parks:
        release = asyncio.Event()
        task = asyncio.create_task(put(parks, "gone.csv.zst", paused(ZST, release)))
        await eventually(lambda: budget_of(parks).reserved >= ZSTD_LONG_LAYER)
        task.cancel()  # the client closes its connection mid-body
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task
        await eventually(lambda: budget_of(parks).reserved == 0)
        await parks.settle()
        assert "gone.csv.zst" not in parks.inbox_files()


async def test_a_window_larger_than_the_whole_budget_is_unscannable(
    tmp_path: Path, pki: Path
) -> None:
    async with start_parks(tmp_path, pki, egress={"decoder_memory_bytes": 64 << 20}) as parks:
        status, headers, problem, content_type = await put(parks, "big.csv.zst", ZST)
        # Retrying could never help: the layer is content.unscannable and the
        # test policy's first rule blocks that (403, not 503).
        assert status == 403, problem
        assert content_type == "application/problem+json"
        assert problem["rule"] == "block.unscannable"
        assert problem["labels"]["content.unscannable"]["count"] == 1
        assert "Retry-After" not in headers
        assert "big.csv.zst" not in parks.inbox_files()
        # Nor does an xz -9 dictionary (64 MiB and the decoder state) fit it.
        status, _, problem, _ = await put(parks, "big.csv.xz", XZ)
        assert status == 403
        assert problem["rule"] == "block.unscannable"
