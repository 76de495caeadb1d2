"""The hostile-decoder phase of ``gateway bench proxy`` (issue 11, finding 7).

Many uploads at once whose decompressors ask for the largest windows the
classifier accepts: ``zstd --long=27`` frames (a 128 MiB window) and xz
streams with ``xz -9``'s 64 MiB dictionary, each decoding to a little more
than its window, so that the whole window is really written (resident), of
clean prose that the benchmark policy allows. The phase measures the peak RSS
of the benchmark process (the egress runs in it) while they run, under the
egress's decoder memory budget and, for comparison, under a budget no machine
could fill (:data:`UNBOUNDED_BUDGET`).

Under a budget, the uploads whose window does not fit are answered ``503``
with ``Retry-After``; the benchmark's client retries them (sooner than the
header asks, at most :data:`RETRY_SECONDS` with jitter, to keep the run
short), so every upload is delivered in the end and the run also shows what
admission costs in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import lzma
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import structlog
import zstandard

from gateway.bench.classify import generate
from gateway.server.egress_state import EGRESS
from gateway.server.runner import RunningGateway

#: Uploads started at once by default: a quarter of SPEC §9's 256 concurrent
#: transfers, every one of them hostile (issue 11 asks for 64).
HOSTILE_UPLOADS: Final = 64
#: The budget of the comparison run: 1 TiB, more than any host has, so nothing
#: is refused (the per-scan cap of 256 MiB still applies; one window fits it).
UNBOUNDED_BUDGET: Final = 1 << 40
#: ``zstd --long=27``: the largest window libzstd decodes by default.
ZSTD_WINDOW_LOG: Final = 27
#: ``xz -9``/``-9e``'s LZMA2 dictionary (xz(1), the presets table). The
#: stream is made with preset 1's fast match finder so the benchmark builds it
#: in seconds: the decoder's memory depends on the dictionary size only.
XZ_DICTIONARY: Final = 64 << 20
#: Output beyond the window: enough that every byte of the window is written.
OUTPUT_MARGIN: Final = 4 << 20
#: Longest pause before a refused upload retries (Retry-After says 5 s; the
#: benchmark retries sooner, with jitter, to keep the run short).
RETRY_SECONDS: Final = 1.0
#: A phase that has not finished in ten minutes is stuck: fail it.
PHASE_TIMEOUT_SECONDS: Final = 600.0
#: Prose generated as paragraphs to pick from (~920 paragraphs of ~570 bytes).
VOCABULARY_BYTES: Final = 512 << 10
#: Paragraphs per piece handed to the compressors (~11 MB).
PARAGRAPHS_PER_PIECE: Final = 20_000
#: How often RSS is sampled.
RSS_INTERVAL: Final = 0.05
_MIB: Final = 1 << 20

log = structlog.get_logger("gateway.bench")

#: Starts the gateway pair of one run with egress settings overridden
#: (``gateway.bench.proxy.gateway_pair``).
PairFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[RunningGateway, Path]]]


@dataclass(frozen=True, slots=True)
class HostileRun:
    """One run of the phase (RSS and budgets in MiB, as /proc/self/status counts).

    Attributes:
        budget_mb: the egress's ``decoder_memory_bytes``.
        uploads: uploads started at once (half zstd, half xz).
        completed: uploads finally allowed and delivered (201).
        refused_503: ``503`` answers the uploads got before they were admitted.
        errors: uploads that ended in anything but ``201`` or ``503``.
        seconds: from the first upload to the last answer.
        rss_start_mb: RSS of the benchmark process when the uploads started.
        rss_peak_mb: the highest RSS sampled while they ran.
        reserved_peak_mb: the most decoder memory the budget had reserved at once.
    """

    budget_mb: float
    uploads: int
    completed: int
    refused_503: int
    errors: int
    seconds: float
    rss_start_mb: float
    rss_peak_mb: float
    reserved_peak_mb: float

    def ok(self) -> bool:
        """Every upload delivered, none failed, and the budget held."""
        return (
            self.completed == self.uploads
            and self.errors == 0
            and self.reserved_peak_mb <= self.budget_mb
        )


def rss_mb() -> float:
    """The benchmark process's resident set size in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hostile_payloads(output_bytes: int | None = None, seed: int = 7) -> tuple[bytes, bytes]:
    """A ``zstd --long=27`` upload and an xz upload with xz -9's dictionary.

    Each decodes to clean prose paragraphs in random order, each paragraph
    behind a random number: about 53:1 (zstd) and 13:1 (xz), under the
    classifier's 100:1 ratio limit, so the uploads are scanned to the end.

    Args:
        output_bytes: decoded size of both; by default each one's window plus
            :data:`OUTPUT_MARGIN` (the worst case: the whole window resident).
        seed: the paragraph order.
    """
    paragraphs = [line for line in generate("prose", VOCABULARY_BYTES).split(b"\n") if line]
    rng = random.Random(seed)
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=ZSTD_WINDOW_LOG, enable_ldm=True
    )
    zstd = zstandard.ZstdCompressor(compression_params=params).compressobj()
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 1, "dict_size": XZ_DICTIONARY}]
    xz = lzma.LZMACompressor(format=lzma.FORMAT_XZ, filters=filters)
    zstd_size = output_bytes or (1 << ZSTD_WINDOW_LOG) + OUTPUT_MARGIN
    xz_size = output_bytes or XZ_DICTIONARY + OUTPUT_MARGIN
    zstd_out: list[bytes] = []
    xz_out: list[bytes] = []
    done = 0
    while done < max(zstd_size, xz_size):
        piece = b"".join(
            b"%d %s\n" % (rng.randrange(10**6), paragraph)
            for paragraph in rng.choices(paragraphs, k=PARAGRAPHS_PER_PIECE)
        )
        if done < zstd_size:
            zstd_out.append(zstd.compress(piece[: zstd_size - done]))
        if done < xz_size:
            xz_out.append(xz.compress(piece[: xz_size - done]))
        done += len(piece)
    zstd_out.append(zstd.flush())
    xz_out.append(xz.flush())
    return b"".join(zstd_out), b"".join(xz_out)


async def _upload(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str], seed: int
) -> tuple[bool, int]:
    """PUT until allowed: (delivered, 503 answers on the way)."""
    jitter = random.Random(seed)
    refused = 0
    while True:
        try:
            async with session.put(url, data=data, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("hostile_upload_error", error_type=type(exc).__name__, refused=refused)
            return False, refused
        if status == 201:
            return True, refused
        if status != 503:
            log.warning("hostile_upload_refused", status=status, refused=refused)
            return False, refused
        refused += 1
        await asyncio.sleep(RETRY_SECONDS * (0.5 + jitter.random() / 2))


async def run_hostile(
    pair: PairFactory,
    root: Path,
    payloads: tuple[bytes, bytes],
    uploads: int,
    budget: int,
    headers: dict[str, str],
) -> HostileRun:
    """Start a gateway pair with ``budget`` and push ``uploads`` hostile uploads at once.

    Args:
        pair: starts the gateway pair (``gateway_pair``), egress settings as keywords.
        root: an empty directory for the pair's keys, logs and inbox.
        payloads: the zstd and the xz upload (:func:`hostile_payloads`).
        uploads: how many at once; even ones are zstd, odd ones xz.
        budget: the egress's ``decoder_memory_bytes``.
        headers: the sender's authorization.
    """
    async with (
        pair(root, decoder_memory_bytes=budget) as (hk, _inbox),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=uploads * 2)) as session,
    ):
        assert hk.egress_app is not None
        decoder_budget = hk.egress_app[EGRESS].decoder_budget
        base = f"{hk.egress_url}/v1/transfers/bench/"
        rss_start = rss_mb()
        peak = rss_start
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb())
                await asyncio.sleep(RSS_INTERVAL)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(PHASE_TIMEOUT_SECONDS):
                results = await asyncio.gather(
                    *(
                        _upload(
                            session,
                            f"{base}hostile{i}.txt.{'xz' if i % 2 else 'zst'}",
                            payloads[i % 2],
                            headers,
                            seed=i,
                        )
                        for i in range(uploads)
                    )
                )
        finally:
            seconds = time.perf_counter() - started
            done.set()
            await sampler
        await asyncio.gather(*hk.egress_app[EGRESS].background, return_exceptions=True)
    completed = sum(1 for delivered, _ in results if delivered)
    return HostileRun(
        budget_mb=round(budget / _MIB, 1),
        uploads=uploads,
        completed=completed,
        refused_503=sum(refused for _, refused in results),
        errors=uploads - completed,
        seconds=round(seconds, 1),
        rss_start_mb=round(rss_start, 1),
        rss_peak_mb=round(peak, 1),
        reserved_peak_mb=round(decoder_budget.peak / _MIB, 1),
    )


async def hostile_phase(
    pair: PairFactory,
    root: Path,
    uploads: int,
    budget: int,
    headers: dict[str, str],
    *,
    output_bytes: int | None = None,
) -> tuple[HostileRun, ...]:
    """Run the phase under ``budget``, then under :data:`UNBOUNDED_BUDGET`.

    The budgeted run goes first: the unbounded one leaves the allocator
    holding what it freed, which would inflate a later start.
    """
    payloads = await asyncio.to_thread(hostile_payloads, output_bytes)
    runs = []
    for name, limit in (("budget", budget), ("unbounded", UNBOUNDED_BUDGET)):
        (root / name).mkdir(parents=True)
        runs.append(await run_hostile(pair, root / name, payloads, uploads, limit, headers))
    return tuple(runs)


def render_runs(runs: tuple[HostileRun, ...]) -> list[str]:
    """One line per run, for the benchmark's text output."""
    lines = []
    for run in runs:
        budget = (
            "no budget (1 TiB)"
            if run.budget_mb * _MIB >= UNBOUNDED_BUDGET
            else (f"decoder budget {run.budget_mb:.0f} MiB")
        )
        lines.append(
            f"{run.uploads} hostile zstd --long=27 / xz -9 uploads, {budget}: "
            f"{run.completed}/{run.uploads} delivered, {run.refused_503} answers 503 (retried), "
            f"{run.errors} errors, {run.seconds:.1f} s; RSS {run.rss_start_mb:.0f} -> peak "
            f"{run.rss_peak_mb:.0f} MiB, windows reserved at most {run.reserved_peak_mb:.0f} MiB "
            f"{'ok' if run.ok() else 'MISSED'}"
        )
    return lines
