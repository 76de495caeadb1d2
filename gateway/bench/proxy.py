"""``gateway bench proxy``: the whole gateway against a plain aiohttp pass-through, one run.

Everything runs on loopback with generated data (clean prose from
:mod:`gateway.bench.classify`, so every transfer is allowed). The client is
this process; what it measures runs in processes of their own, as on real
hosts (on one machine they still share its CPUs):

* **baseline**: a plain aiohttp pass-through proxy (stream the request body
  into a client request to a sink that discards it), the SPEC §9 yardstick,
  proxy and sink in one process;
* **gateway**: the HK egress (classify, spool encrypted, decide, audit with
  fsync, forward the age envelope over mutual TLS) and the SZ ingress
  (verify, decrypt, write the file), each a ``gateway serve`` process, with a
  real file audit log and SQLite ledger in a temporary directory.
* **floor** (1 KB transfers only): a 1 KB transfer's data path and nothing
  else (:mod:`gateway.bench.floor`: the exchanges, classification, the age
  envelope, the durability points), egress and twin each in a process of
  its own, so the 1 KB figures split into what the data path takes on this
  machine and what everything around it (policy, ledger, audit log's Merkle
  tree, checks, metrics, logs) adds.

Measured (SPEC §9 and issue 17 targets in brackets): throughput of one large
transfer and the ratio gateway/baseline [>= 0.5], with the CPU-seconds per GB
each side spends (the baseline's process; the egress's and the twin's), so
the ratio can be read on any machine; 1 KB transfer latency p50/p99 and the
p99 excess over the baseline, one at a time and 64 at once [< 5 ms both],
with transfers per second at 64, and the disk's part of that latency (a
1 KB transfer's durability points replayed where the gateways ran,
:mod:`gateway.bench.durability`); 256 concurrent transfers against an egress
in this process [no error, no lost audit record, checked in its audit log];
peak RSS during one large transfer [< 150 MB, flat] and
during one large Parquet transfer (issue 12: read after the upload from the
encrypted spool, a table of strings, integers, timestamps and floats from
:mod:`gateway.bench.formats`; ``--parquet-mb``, 2000 for the issue's 2 GB
case) [< 150 MB, flat]; with ``--hostile-decoders N`` (default 64; 0 skips it), peak RSS while N
worst-case ``zstd --long=27`` / ``xz -9`` uploads run at once, under the decoder
memory budget and without one (:mod:`gateway.bench.hostile`, issue 11).
The twin (the other park's gateway) runs as its own ``gateway serve`` process,
as it would on its own host; on one machine it still shares the CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.bench.classify import generate
from gateway.bench.durability import SMALL_BYTES, durability_path
from gateway.bench.floor import URL_KEY, PairFiles
from gateway.bench.hostile import HOSTILE_UPLOADS, HostileRun, hostile_phase, render_runs
from gateway.classify.formats.isolation import ISOLATED_MAX_MEMORY
from gateway.crypto.certs import spki_pin
from gateway.obs.logging import configure_logging
from gateway.server.config import DECODER_MEMORY_BYTES, GatewaySettings, token_digest
from gateway.server.egress_state import EGRESS
from gateway.server.runner import RunningGateway, running

#: SPEC §9 targets.
TARGET_RATIO: Final = 0.5
TARGET_P99_EXTRA_MS: Final = 5.0
TARGET_CONCURRENT: Final = 256
TARGET_RSS_MB: Final = 150.0
#: Default sizes: big enough to dwarf connection set-up, small enough for a quick run.
DEFAULT_SIZE_MB: Final = 256
DEFAULT_LARGE_MB: Final = 1024
#: Default Parquet transfer (MB): a few row groups, read in well under a
#: minute; ``--parquet-mb 2000`` is the issue's 2 GB case (a few minutes).
DEFAULT_PARQUET_MB: Final = 256
#: Seconds a subprocess may take to write the benchmark's Parquet file
#: (2 GB takes about a minute on the development machine).
PARQUET_WRITE_SECONDS: Final = 900.0
#: Small-transfer latency samples (p99 needs a few hundred).
LATENCY_SAMPLES: Final = 300
#: Clients sending 1 KB transfers at once in the concurrent latency phase (issue 17).
LATENCY_CONCURRENCY: Final = 64
#: 1 KB transfers each of those clients sends, one after another.
LATENCY_PER_CLIENT: Final = 10
#: Bytes per body chunk the benchmark client sends (a generated block, repeated).
BLOCK: Final = 4 * 1024 * 1024
#: 1 KB transfers through the floor before it is measured (the gateway's pair
#: is warmed by the throughput transfers before its latency phase).
FLOOR_WARM_UP: Final = 20
#: Seconds the twin process may take to start listening (imports, key loading).
TWIN_START_SECONDS: Final = 60.0
#: How often RSS is sampled during the large transfer.
RSS_INTERVAL: Final = 0.05
T = TypeVar("T")

_TOKEN: Final = "bench-token"  # noqa: S105 - a throwaway token for a loopback benchmark
_MB: Final = 1_000_000

_POLICY: Final = """\
name: bench
categories:
  personal: ["pii.*"]
senders:
  bench: {{team: bench, organisation: bench-org}}
routes:
  bench:
    direction: hk->sz
    destination: {ingress}/v1/envelopes/bench
    recipient: {recipient}
rules:
  - id: block.personal
    action: block
    reason: personal data
    when: {{categories: {{any: [personal]}}}}
  - id: allow.clean
    action: allow
    reason: clean
default: {{action: block, reason: default deny}}
"""


@dataclass(frozen=True, slots=True)
class ProxyBench:
    """One run's numbers (MB = 10**6 bytes)."""

    size_mb: float
    baseline_mb_s: float
    gateway_mb_s: float
    ratio: float
    baseline_p50_ms: float
    baseline_p99_ms: float
    gateway_p50_ms: float
    gateway_p99_ms: float
    p99_extra_ms: float
    concurrent: int
    samples: int
    concurrent_errors: int
    audit_records_missing: int
    large_mb: float
    large_mb_s: float
    rss_start_mb: float
    rss_peak_mb: float
    parquet_mb: float = 0.0
    parquet_file_bytes: int = 0
    parquet_mb_s: float = 0.0
    parquet_rss_start_mb: float = 0.0
    parquet_rss_peak_mb: float = 0.0
    #: Peak PSS of the reader processes (zygote and reader) during the Parquet phase.
    parquet_readers_mb: float = 0.0
    hostile: tuple[HostileRun, ...] = ()
    #: CPU-seconds per GB of the throughput transfer: the pass-through's process,
    #: the egress's and the twin's (their descendants included).
    baseline_cpu_s_per_gb: float = 0.0
    egress_cpu_s_per_gb: float = 0.0
    twin_cpu_s_per_gb: float = 0.0
    #: 1 KB transfers from :data:`LATENCY_CONCURRENCY` clients at once.
    concurrency: int = LATENCY_CONCURRENCY
    baseline_p99_concurrent_ms: float = 0.0
    gateway_p50_concurrent_ms: float = 0.0
    gateway_p99_concurrent_ms: float = 0.0
    p99_extra_concurrent_ms: float = 0.0
    baseline_per_s_concurrent: float = 0.0
    gateway_per_s_concurrent: float = 0.0
    #: CPU milliseconds per sequential 1 KB transfer: the pass-through's, the
    #: egress's and the twin's. A transfer's egress and twin work run one after
    #: the other on its path, so their sum is a lower bound on its latency.
    baseline_cpu_ms_per_small: float = 0.0
    egress_cpu_ms_per_small: float = 0.0
    twin_cpu_ms_per_small: float = 0.0
    #: A 1 KB transfer's durability points replayed on the disk the gateways
    #: ran on (:mod:`gateway.bench.durability`): the part of its latency that
    #: is the disk's, p50 and p99 in milliseconds.
    durability_p50_ms: float = 0.0
    durability_p99_ms: float = 0.0
    #: The floor of a 1 KB transfer (:mod:`gateway.bench.floor`): its data
    #: path alone, in processes of their own, measured as the gateway is.
    floor_p50_ms: float = 0.0
    floor_p99_ms: float = 0.0
    floor_p99_extra_ms: float = 0.0
    floor_egress_cpu_ms_per_small: float = 0.0
    floor_twin_cpu_ms_per_small: float = 0.0
    floor_p99_concurrent_ms: float = 0.0
    floor_p99_extra_concurrent_ms: float = 0.0
    floor_per_s_concurrent: float = 0.0

    @property
    def gateway_cpu_s_per_gb(self) -> float:
        """What the gateway spends on a GB, both parks together."""
        return round(self.egress_cpu_s_per_gb + self.twin_cpu_s_per_gb, 2)

    def ok(self) -> bool:
        """Whether every SPEC §9 target held."""
        return (
            self.ratio >= TARGET_RATIO
            and self.p99_extra_ms < TARGET_P99_EXTRA_MS
            and self.p99_extra_concurrent_ms < TARGET_P99_EXTRA_MS
            and self.concurrent_errors == 0
            and self.audit_records_missing == 0
            and self.rss_peak_mb < TARGET_RSS_MB
            and (not self.parquet_mb or self.parquet_rss_peak_mb < TARGET_RSS_MB)
            and all(run.ok() for run in self.hostile)
        )


def _status_mb(pid: int | str, field: str) -> float:
    """A ``/proc/<pid>/status``-style size field in MB (0 once the process is gone)."""
    path, key = (
        (f"/proc/{pid}/smaps_rollup", "Pss:")
        if field == "Pss"
        else (f"/proc/{pid}/status", "VmRSS:")
    )
    try:
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``'s threads and every process below it so far (nanosecond
    resolution: ``/proc/<pid>/task/<tid>/schedstat``, not clock ticks)."""
    total = 0
    for one in (pid, *_descendants(pid)):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{one}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the reader zygote and its reader processes)."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError):
                    children = [int(c) for c in (task / "children").read_text().split()]
                    found.extend(children)
                    queue.extend(children)
    return found


@dataclass(frozen=True, slots=True)
class Memory:
    """Memory of a gateway process over one measured phase (MB)."""

    start_mb: float
    peak_mb: float
    #: Peak proportional set size of its reader processes together (the zygote
    #: and the readers it forked share their libraries: PSS counts a shared
    #: page once across them, RSS once in each).
    readers_peak_mb: float


async def _sampled(work: Awaitable[T], pid: int) -> tuple[T, Memory]:
    """``work``'s result and process ``pid``'s memory before and while it ran."""
    start = peak = _status_mb(pid, "VmRSS")
    readers = 0.0
    done = asyncio.Event()

    def sample() -> None:
        nonlocal peak, readers
        peak = max(peak, _status_mb(pid, "VmRSS"))
        readers = max(readers, sum(_status_mb(child, "Pss") for child in _descendants(pid)))

    async def sampler() -> None:
        while not done.is_set():
            sample()
            await asyncio.sleep(RSS_INTERVAL)

    task = asyncio.create_task(sampler())
    try:
        result = await work
    finally:
        done.set()
        await task
    sample()
    return result, Memory(start, peak, readers)


async def _file_body(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes, read a block at a time off the event loop (never held whole)."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while block := await asyncio.to_thread(file.read, BLOCK):
            yield block
    finally:
        await asyncio.to_thread(file.close)


async def write_parquet_file(path: Path, size_mb: int) -> None:
    """The benchmark's Parquet table, written by a subprocess.

    pyarrow's allocator keeps memory it freed: writing gigabytes here would
    raise this process's RSS, which is what the benchmark measures.
    """
    code = "import sys; from gateway.bench.formats import write_parquet; " + (
        "write_parquet(sys.argv[1], int(sys.argv[2]))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(path), str(size_mb * _MB)
    )
    try:
        async with asyncio.timeout(PARQUET_WRITE_SECONDS):
            if await process.wait() != 0:
                raise RuntimeError("writing the benchmark's Parquet file failed")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _parquet_transfer(
    session: aiohttp.ClientSession, url: str, path: Path, headers: dict[str, str]
) -> float:
    """MB/s of one Parquet upload; it must be allowed and read (not unscannable)."""
    size = (await asyncio.to_thread(path.stat)).st_size
    started = time.perf_counter()
    async with session.put(url, data=_file_body(path), headers=headers) as response:
        verdict = await response.json(content_type=None)
        status = response.status
    elapsed = time.perf_counter() - started
    if status != 201:
        raise RuntimeError(f"benchmark Parquet transfer failed with HTTP {status}")
    if verdict.get("labels"):
        raise RuntimeError(f"benchmark Parquet transfer was not read clean: {verdict['labels']}")
    return size / _MB / elapsed


async def _body(block: bytes, total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = block[: min(len(block), total - sent)]
        sent += len(piece)
        yield piece


@contextlib.asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _sink(request: web.Request) -> web.StreamResponse:
    async for _ in request.content.iter_any():
        pass
    return web.json_response({"ok": True}, status=201)


def serve_passthrough() -> None:
    """Run :func:`passthrough` until killed, announcing its URL on stdout (its own process)."""

    async def serve() -> None:
        async with passthrough() as url:
            print(json.dumps({"event": "listening", "url": url}), flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())


@contextlib.asynccontextmanager
async def passthrough_process() -> AsyncIterator[tuple[str, int]]:
    """:func:`passthrough` in a process of its own: its URL and pid."""
    code = "from gateway.bench.proxy import serve_passthrough; serve_passthrough()"
    async with _child([sys.executable, "-c", code], "url") as running_child:
        yield running_child


@contextlib.asynccontextmanager
async def _child(argv: list[str], key: str) -> AsyncIterator[tuple[str, int]]:
    """Start a server process; yield the ``key`` of its JSON ``listening`` line and its pid.

    Its stdout is read to the end meanwhile (a full pipe would stall it); it
    is terminated when the block exits.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        # `gateway serve` logs to stdout (issue 7); a fatal error on stderr
        # reaches the benchmark's own stderr.
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    assert process.stdout is not None
    url = ""
    try:
        async with asyncio.timeout(TWIN_START_SECONDS):
            while not url:
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError("a benchmark server process exited before listening")
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    url = event.get(key) or "" if event.get("event") == "listening" else ""
        drain = asyncio.create_task(_discard(process.stdout))
        try:
            yield url, process.pid
        finally:
            drain.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@contextlib.asynccontextmanager
async def passthrough() -> AsyncIterator[str]:
    """A plain aiohttp pass-through proxy in front of a discarding sink."""
    sink_app = web.Application(client_max_size=1 << 40)
    sink_app.router.add_route("*", "/{tail:.*}", _sink)
    async with _serve(sink_app) as sink, aiohttp.ClientSession() as session:

        async def relay(request: web.Request) -> web.StreamResponse:
            async def body() -> AsyncIterator[bytes]:
                async for chunk in request.content.iter_any():
                    yield chunk

            async with session.put(sink + request.path, data=body()) as upstream:
                return web.json_response(await upstream.json(), status=upstream.status)

        proxy_app = web.Application(client_max_size=1 << 40)
        proxy_app.router.add_route("*", "/{tail:.*}", relay)
        async with _serve(proxy_app) as url:
            yield url


@contextlib.asynccontextmanager
async def gateway_process(
    settings: GatewaySettings, config: Path, listener: str
) -> AsyncIterator[tuple[str, int]]:
    """Run a gateway as its own ``gateway serve`` process; yield a listener's URL and its pid.

    Args:
        settings: the gateway's configuration (written to ``config``).
        config: where the configuration file goes.
        listener: ``"egress"`` or ``"ingress"``: whose URL to yield.
    """
    text = json.dumps(settings.model_dump(mode="json", exclude_none=True))
    await asyncio.to_thread(config.write_text, text)
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    async with _child(argv, listener) as running_child:
        yield running_child


@contextlib.asynccontextmanager
async def twin_process(settings: GatewaySettings, config: Path) -> AsyncIterator[tuple[str, int]]:
    """Run the SZ twin as its own ``gateway serve`` process; yield its ingress URL and pid.

    The twin is the other park's gateway: its decryption and delivery are not
    part of the egress path being measured, so it runs in its own process.
    """
    async with gateway_process(settings, config, "ingress") as running_twin:
        yield running_twin


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def _common_name(cert: Path) -> str:
    """The subject CN of a PEM certificate (the twin name the ingress pins)."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    return str(loaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _pin(cert: Path) -> str:
    """The public-key pin of a PEM certificate (the twins pin each other's keys)."""
    return spki_pin(x509.load_pem_x509_certificate(cert.read_bytes()))


@dataclass(frozen=True, slots=True)
class _Pair:
    """What both kinds of benchmark pair are built from."""

    files: PairFiles
    recipient: str
    sz_settings: GatewaySettings


def _pair(root: Path) -> _Pair:
    """Keys, certificates and the SZ ingress's settings under ``root``."""
    files = PairFiles(root)
    files.create()
    hk, sz = files.hk, files.sz
    sz_settings = GatewaySettings.model_validate(
        {
            "name": "sz",
            "ingress": {
                "port": 0,
                "tls": {
                    "cert": sz.cert("server"),
                    "key": sz.key("server"),
                    "client_ca": hk.ca_cert,
                },
                "identity": files.identity_file,
                # Only the HK gateway's own client certificate may post envelopes.
                "twin_names": [_common_name(hk.cert("client"))],
                "twin_spki": [_pin(hk.cert("client"))],
                "deliver": {"bench": files.inbox.as_uri()},
                "spool_dir": root / "sz-spool",
            },
            "audit": {
                "dir": root / "sz-audit",
                "signing_key": root / "sz-audit.key",
                "origin": "bench.local/sz",
            },
            "ledger_url": str(root / "sz-ledger.sqlite3"),
            "secret_file": root / "sz-secret",
        }
    )
    return _Pair(files, files.identity().recipient.encode(), sz_settings)


def _egress_settings(pair: _Pair, ingress_url: str, **egress: Any) -> GatewaySettings:
    """The HK egress's settings, routing to the SZ ingress at ``ingress_url``."""
    root, hk, sz = pair.files.root, pair.files.hk, pair.files.sz
    (root / "policies").mkdir()
    (root / "policies" / "bench.yaml").write_text(
        _POLICY.format(ingress=ingress_url, recipient=pair.recipient)
    )
    return GatewaySettings.model_validate(
        {
            "name": "hk",
            "egress": {
                "port": 0,
                "policy_dir": root / "policies",
                "spool_dir": root / "hk-spool",
                "spool_identity": root / "hk-spool.agekey",
                "tokens": [{"sha256": token_digest(_TOKEN), "identity": "bench"}],
                "upstream_tls": {
                    "cert": hk.cert("client"),
                    "key": hk.key("client"),
                    "ca": sz.ca_cert,
                    "pin_spki": [_pin(sz.cert("server"))],
                },
                "min_free_spool_bytes": 0,
                **egress,
            },
            "audit": {
                "dir": root / "hk-audit",
                "signing_key": root / "hk-audit.key",
                "origin": "bench.local/hk",
            },
            "ledger_url": str(root / "hk-ledger.sqlite3"),
            "secret_file": root / "hk-secret",
        }
    )


@contextlib.asynccontextmanager
async def gateway_pair(root: Path, **egress: Any) -> AsyncIterator[tuple[RunningGateway, Path]]:
    """The HK egress (in this process), the SZ ingress, real keys, audit logs and SQLite ledgers.

    Keyword arguments override settings of the egress section.
    """
    pair = _pair(root)
    async with (
        twin_process(pair.sz_settings, root / "sz.yaml") as (ingress_url, _),
        running(_egress_settings(pair, ingress_url, **egress)) as hk_gw,
    ):
        yield hk_gw, pair.files.inbox


@dataclass(frozen=True, slots=True)
class ProcessPair:
    """An egress and its twin, each in its own process."""

    url: str
    twin_url: str
    egress_pid: int
    twin_pid: int
    inbox: Path


@contextlib.asynccontextmanager
async def egress_process_pair(root: Path) -> AsyncIterator[ProcessPair]:
    """As :func:`gateway_pair`, the HK egress in its own process.

    Throughput, latency, CPU time and memory are measured on this pair: the
    egress's numbers are then its own, not those of the benchmark's client too.
    """
    pair = _pair(root)
    async with (
        twin_process(pair.sz_settings, root / "sz.yaml") as (ingress_url, twin_pid),
        gateway_process(_egress_settings(pair, ingress_url), root / "hk.yaml", "egress") as (
            url,
            pid,
        ),
    ):
        yield ProcessPair(url, ingress_url, pid, twin_pid, pair.files.inbox)


@contextlib.asynccontextmanager
async def floor_pair(root: Path) -> AsyncIterator[ProcessPair]:
    """The floor of a 1 KB transfer (:mod:`gateway.bench.floor`): its egress (plain
    HTTP, as the gateway's) and twin (mutual TLS), each in a process of its own,
    with keys and files under ``root``."""
    files = PairFiles(root)
    await asyncio.to_thread(files.create)

    def argv(*args: str) -> list[str]:
        code = f"from gateway.bench.floor import serve; serve(*{list(args)!r})"
        return [sys.executable, "-c", code]

    async with (
        _child(argv("twin", str(root)), URL_KEY) as (twin_url, twin_pid),
        _child(argv("egress", str(root), twin_url), URL_KEY) as (url, egress_pid),
    ):
        yield ProcessPair(url, twin_url, egress_pid, twin_pid, files.inbox)


async def _put(session: aiohttp.ClientSession, url: str, data: Any, headers: dict[str, str]) -> int:
    async with session.put(url, data=data, headers=headers) as response:
        await response.read()
        return response.status


async def _put_id(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> str | None:
    """The transfer id of an allowed transfer, None on any failure."""
    try:
        async with session.put(url, data=data, headers=headers) as response:
            body = await response.json(content_type=None)
            return str(body["transfer_id"]) if response.status == 201 else None
    except (aiohttp.ClientError, OSError, ValueError, KeyError):
        return None


async def _throughput(
    session: aiohttp.ClientSession, url: str, block: bytes, total: int, headers: dict[str, str]
) -> float:
    started = time.perf_counter()
    status = await _put(session, url, _body(block, total), headers)
    elapsed = time.perf_counter() - started
    if status != 201:
        raise RuntimeError(f"benchmark transfer failed with HTTP {status}")
    return total / _MB / elapsed


async def _latencies(
    session: aiohttp.ClientSession, url: str, small: bytes, headers: dict[str, str], samples: int
) -> list[float]:
    out = []
    for i in range(samples):
        started = time.perf_counter()
        status = await _put(session, f"{url}{i}.txt", small, headers)
        out.append((time.perf_counter() - started) * 1000)
        if status != 201:
            raise RuntimeError(f"small transfer failed with HTTP {status}")
    return out


async def _cpu_spent(work: Awaitable[T], pids: tuple[int, ...]) -> tuple[T, list[float]]:
    """``work``'s result and the CPU-seconds each of ``pids`` spent while it ran."""
    before = [_cpu_seconds(pid) for pid in pids]
    result = await work
    return result, [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]


async def _latencies_cpu(
    session: aiohttp.ClientSession,
    url: str,
    small: bytes,
    headers: dict[str, str],
    samples: int,
    pids: tuple[int, ...],
) -> tuple[list[float], tuple[float, ...]]:
    """:func:`_latencies`, and the CPU milliseconds per transfer each of ``pids`` spent."""
    out, spent = await _cpu_spent(_latencies(session, url, small, headers, samples), pids)
    return out, tuple(round(s * 1000 / samples, 3) for s in spent)


async def _concurrent_latencies(
    session: aiohttp.ClientSession, url: str, small: bytes, headers: dict[str, str]
) -> tuple[list[float], float]:
    """Latencies (ms) of 1 KB transfers from :data:`LATENCY_CONCURRENCY` clients at
    once, each sending :data:`LATENCY_PER_CLIENT` in a row, and transfers per second."""
    started = time.perf_counter()
    clients = await asyncio.gather(
        *(
            _latencies(session, f"{url}{n}-", small, headers, LATENCY_PER_CLIENT)
            for n in range(LATENCY_CONCURRENCY)
        )
    )
    out = [ms for client in clients for ms in client]
    return out, len(out) / (time.perf_counter() - started)


async def _measured(
    session: aiohttp.ClientSession,
    url: str,
    block: bytes,
    total: int,
    headers: dict[str, str],
    pids: tuple[int, ...],
) -> tuple[float, tuple[float, ...]]:
    """MB/s of one transfer and the CPU-seconds per GB each of ``pids`` spent on it."""
    rate, spent = await _cpu_spent(_throughput(session, url, block, total, headers), pids)
    return rate, tuple(round(s / (total / 1e9), 2) for s in spent)


def small_text(block: bytes, size: int) -> bytes:
    """``size`` bytes of ``block``'s text, cut at a character boundary (padded with spaces).

    A cut through a multi-byte character is not UTF-8 any more: the charset
    detection would take the transfer for Windows-1252, a path no real text
    file takes.
    """
    text = block[:size].decode("utf-8", "ignore").encode()
    return text + b" " * (size - len(text))


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run_async(
    size_mb: int = DEFAULT_SIZE_MB,
    large_mb: int = DEFAULT_LARGE_MB,
    *,
    samples: int = LATENCY_SAMPLES,
    concurrent: int = TARGET_CONCURRENT,
    hostile: int = 0,
    decoder_memory_mb: int = DECODER_MEMORY_BYTES >> 20,
    parquet_mb: int = 0,
) -> ProxyBench:
    """Run every measurement once and return the numbers.

    Args:
        size_mb: size of the throughput transfer.
        large_mb: size of the transfer during which RSS is sampled.
        parquet_mb: size of the Parquet transfer during which RSS is
            sampled (0: no Parquet phase).
        samples: sequential 1 KB transfers for the latency percentiles.
        concurrent: transfers started at once.
        hostile: worst-case decoder uploads at once (0: no hostile phase).
        decoder_memory_mb: the egress's decoder memory budget in that phase.
    """
    block = generate("prose", BLOCK)
    small = small_text(block, SMALL_BYTES)
    total = size_mb * _MB
    headers = {"Authorization": f"Bearer {_TOKEN}"}
    connector = aiohttp.TCPConnector(limit=concurrent * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with passthrough_process() as (proxy, proxy_pid):
            await _throughput(session, f"{proxy}/warm", block, BLOCK, {})
            baseline, (base_cpu,) = await _measured(
                session, f"{proxy}/big", block, total, {}, (proxy_pid,)
            )
            base_lat, (base_small,) = await _latencies_cpu(
                session, f"{proxy}/small", small, {}, samples, (proxy_pid,)
            )
            base_many, base_rate = await _concurrent_latencies(session, f"{proxy}/m", small, {})
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
            table = Path(tmp) / "bench.parquet"
            table_bytes = 0
            if parquet_mb:
                await write_parquet_file(table, parquet_mb)
                table_bytes = (await asyncio.to_thread(table.stat)).st_size
            # The egress and the twin in their own processes: the numbers are theirs.
            async with egress_process_pair(Path(tmp) / "processes") as pair:
                base = f"{pair.url}/v1/transfers/bench/"
                await _throughput(session, base + "warm.txt", block, BLOCK, headers)
                gateway, (egress_cpu, twin_cpu) = await _measured(
                    session,
                    base + "big.txt",
                    block,
                    total,
                    headers,
                    (pair.egress_pid, pair.twin_pid),
                )
                (pair.inbox / "big.txt").unlink()
                gw_lat, (egress_small, twin_small) = await _latencies_cpu(
                    session,
                    base + "small",
                    small,
                    headers,
                    samples,
                    (pair.egress_pid, pair.twin_pid),
                )
                gw_many, gw_rate = await _concurrent_latencies(session, base + "m", small, headers)
            # The same 1 KB transfers through the floor: the data path alone.
            async with floor_pair(Path(tmp) / "floor") as floor:
                await _latencies(session, f"{floor.url}/warm-", small, {}, FLOOR_WARM_UP)
                floor_lat, floor_cpu = await _latencies_cpu(
                    session,
                    f"{floor.url}/small",
                    small,
                    {},
                    samples,
                    (floor.egress_pid, floor.twin_pid),
                )
                floor_many, floor_rate = await _concurrent_latencies(
                    session, f"{floor.url}/m", small, {}
                )
            # The disk's part of a 1 KB transfer's latency, where the gateways' logs were.
            durability = await asyncio.to_thread(durability_path, Path(tmp), samples)
            # Memory on a fresh pair: the phases before would have grown the egress's heap.
            async with egress_process_pair(Path(tmp) / "memory") as pair:
                base = f"{pair.url}/v1/transfers/bench/"
                await _throughput(session, base + "warm.txt", block, BLOCK, headers)
                large, memory = await _sampled(
                    _throughput(session, base + "large.txt", block, large_mb * _MB, headers),
                    pair.egress_pid,
                )
                (pair.inbox / "large.txt").unlink()
                # Then one large Parquet table, read after its upload from the spool.
                parquet, parquet_memory = 0.0, Memory(0.0, 0.0, 0.0)
                if parquet_mb:
                    parquet, parquet_memory = await _sampled(
                        _parquet_transfer(session, base + "large.parquet", table, headers),
                        pair.egress_pid,
                    )
                    (pair.inbox / "large.parquet").unlink()
            # Concurrency, checked against the egress's own audit log: in this process.
            async with gateway_pair(Path(tmp) / "in-process") as (hk, inbox):
                base = f"{hk.egress_url}/v1/transfers/bench/"
                ids = await asyncio.gather(
                    *(
                        _put_id(session, f"{base}c{i}.txt", small, headers)
                        for i in range(concurrent)
                    )
                )
                errors = sum(1 for tid in ids if tid is None)
                assert hk.egress_app is not None
                # Delivery records are written just after each answer: let them land.
                await asyncio.gather(*hk.egress_app[EGRESS].background, return_exceptions=True)
                missing = 0
                for tid in ids:
                    if tid is not None:
                        events = await hk.services.audit.find(tid)
                        missing += 2 - len(events)  # "allowed" and "delivered"
                missing += concurrent - len(list(inbox.glob("c*.txt")))
            # Last: its windows would inflate the RSS of any phase after it.
            runs = (
                await hostile_phase(
                    gateway_pair, Path(tmp) / "hostile", hostile, decoder_memory_mb << 20, headers
                )
                if hostile
                else ()
            )
    return ProxyBench(
        size_mb=size_mb,
        baseline_mb_s=round(baseline, 1),
        gateway_mb_s=round(gateway, 1),
        ratio=round(gateway / baseline, 3),
        baseline_p50_ms=round(_pct(base_lat, 50), 3),
        baseline_p99_ms=round(_pct(base_lat, 99), 3),
        gateway_p50_ms=round(_pct(gw_lat, 50), 3),
        gateway_p99_ms=round(_pct(gw_lat, 99), 3),
        p99_extra_ms=round(_pct(gw_lat, 99) - _pct(base_lat, 99), 3),
        concurrent=concurrent,
        samples=samples,
        concurrent_errors=errors,
        audit_records_missing=missing,
        large_mb=large_mb,
        large_mb_s=round(large, 1),
        rss_start_mb=round(memory.start_mb, 1),
        rss_peak_mb=round(memory.peak_mb, 1),
        parquet_mb=parquet_mb,
        parquet_file_bytes=table_bytes,
        parquet_mb_s=round(parquet, 1),
        parquet_rss_start_mb=round(parquet_memory.start_mb, 1),
        parquet_rss_peak_mb=round(parquet_memory.peak_mb, 1),
        parquet_readers_mb=round(parquet_memory.readers_peak_mb, 1),
        hostile=runs,
        baseline_cpu_s_per_gb=base_cpu,
        egress_cpu_s_per_gb=egress_cpu,
        twin_cpu_s_per_gb=twin_cpu,
        baseline_p99_concurrent_ms=round(_pct(base_many, 99), 3),
        gateway_p50_concurrent_ms=round(_pct(gw_many, 50), 3),
        gateway_p99_concurrent_ms=round(_pct(gw_many, 99), 3),
        p99_extra_concurrent_ms=round(_pct(gw_many, 99) - _pct(base_many, 99), 3),
        baseline_per_s_concurrent=round(base_rate, 1),
        gateway_per_s_concurrent=round(gw_rate, 1),
        baseline_cpu_ms_per_small=base_small,
        egress_cpu_ms_per_small=egress_small,
        twin_cpu_ms_per_small=twin_small,
        durability_p50_ms=durability.path_p50_ms,
        durability_p99_ms=durability.path_p99_ms,
        floor_p50_ms=round(_pct(floor_lat, 50), 3),
        floor_p99_ms=round(_pct(floor_lat, 99), 3),
        floor_p99_extra_ms=round(_pct(floor_lat, 99) - _pct(base_lat, 99), 3),
        floor_egress_cpu_ms_per_small=floor_cpu[0],
        floor_twin_cpu_ms_per_small=floor_cpu[1],
        floor_p99_concurrent_ms=round(_pct(floor_many, 99), 3),
        floor_p99_extra_concurrent_ms=round(_pct(floor_many, 99) - _pct(base_many, 99), 3),
        floor_per_s_concurrent=round(floor_rate, 1),
    )


def render(result: ProxyBench, as_json: bool) -> str:
    """Human table or one JSON object."""
    if as_json:
        return json.dumps(
            {
                **asdict(result),
                "gateway_cpu_s_per_gb": result.gateway_cpu_s_per_gb,
                "ok": result.ok(),
            }
        )
    mark = {True: "ok", False: "MISSED"}
    return "\n".join(
        [
            f"throughput ({result.size_mb} MB, one transfer)",
            f"  aiohttp pass-through   {result.baseline_mb_s:10.1f} MB/s",
            f"  gateway (allowed)      {result.gateway_mb_s:10.1f} MB/s   ratio "
            f"{result.ratio:.2f} (target >= {TARGET_RATIO}) {mark[result.ratio >= TARGET_RATIO]}",
            f"  CPU-seconds per GB     pass-through {result.baseline_cpu_s_per_gb:.2f}, gateway "
            f"{result.gateway_cpu_s_per_gb:.2f} (egress {result.egress_cpu_s_per_gb:.2f} + twin "
            f"{result.twin_cpu_s_per_gb:.2f})",
            f"1 KB latency ({result.samples} sequential)",
            f"  pass-through p50/p99   {result.baseline_p50_ms:.2f} / "
            f"{result.baseline_p99_ms:.2f} ms",
            f"  gateway p50/p99        {result.gateway_p50_ms:.2f} / {result.gateway_p99_ms:.2f} ms"
            f"   p99 extra {result.p99_extra_ms:.2f} ms (target < {TARGET_P99_EXTRA_MS})"
            f" {mark[result.p99_extra_ms < TARGET_P99_EXTRA_MS]}",
            f"  CPU ms per transfer    pass-through {result.baseline_cpu_ms_per_small:.2f}, "
            f"egress {result.egress_cpu_ms_per_small:.2f} + twin "
            f"{result.twin_cpu_ms_per_small:.2f} (one after the other: a lower bound on "
            "its latency)",
            f"  durability points      p50 {result.durability_p50_ms:.2f} / p99 "
            f"{result.durability_p99_ms:.2f} ms on this disk (verdict record; twin file and "
            f"record; inbox; delivery record: the disk's part of the latency)",
            f"  floor p50/p99          {result.floor_p50_ms:.2f} / {result.floor_p99_ms:.2f} ms"
            f"   p99 extra {result.floor_p99_extra_ms:.2f} ms: the data path alone, CPU ms "
            f"egress {result.floor_egress_cpu_ms_per_small:.2f} + twin "
            f"{result.floor_twin_cpu_ms_per_small:.2f}",
            f"1 KB latency ({result.concurrency} clients at once, {LATENCY_PER_CLIENT} each)",
            f"  pass-through p99       {result.baseline_p99_concurrent_ms:.2f} ms, "
            f"{result.baseline_per_s_concurrent:.0f} transfers/s",
            f"  gateway p50/p99        {result.gateway_p50_concurrent_ms:.2f} / "
            f"{result.gateway_p99_concurrent_ms:.2f} ms, {result.gateway_per_s_concurrent:.0f} "
            f"transfers/s   p99 extra {result.p99_extra_concurrent_ms:.2f} ms (target < "
            f"{TARGET_P99_EXTRA_MS}) {mark[result.p99_extra_concurrent_ms < TARGET_P99_EXTRA_MS]}",
            f"  floor p99              {result.floor_p99_concurrent_ms:.2f} ms, "
            f"{result.floor_per_s_concurrent:.0f} transfers/s   p99 extra "
            f"{result.floor_p99_extra_concurrent_ms:.2f} ms",
            f"{result.concurrent} concurrent transfers: {result.concurrent_errors} errors, "
            f"{result.audit_records_missing} missing audit records or deliveries "
            f"{mark[result.concurrent_errors == 0 and result.audit_records_missing == 0]}",
            f"large transfer {result.large_mb} MB at {result.large_mb_s:.1f} MB/s: RSS "
            f"{result.rss_start_mb:.0f} -> peak {result.rss_peak_mb:.0f} MB "
            f"(target < {TARGET_RSS_MB:.0f}) {mark[result.rss_peak_mb < TARGET_RSS_MB]}",
            *(
                [
                    f"parquet transfer {result.parquet_mb} MB "
                    f"({result.parquet_file_bytes / _MB:.0f} MB file, read from the spool) at "
                    f"{result.parquet_mb_s:.1f} MB/s: RSS {result.parquet_rss_start_mb:.0f} -> "
                    f"peak {result.parquet_rss_peak_mb:.0f} MB (target < {TARGET_RSS_MB:.0f}) "
                    f"{mark[result.parquet_rss_peak_mb < TARGET_RSS_MB]}",
                    f"  its reader processes (pyarrow, outside the gateway's process): "
                    f"peak {result.parquet_readers_mb:.0f} MB PSS, each bounded to its zygote's "
                    f"size + {ISOLATED_MAX_MEMORY >> 20} MiB",
                ]
                if result.parquet_mb
                else []
            ),
            *render_runs(result.hostile),
        ]
    )


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway bench proxy`` to the bench group."""
    parser = bench_subparsers.add_parser(
        "proxy",
        help="the gateway against a plain aiohttp pass-through proxy, on loopback",
        description="Throughput ratio with each side's CPU-seconds per GB, 1 KB latency one "
        "at a time and 64 at once, 256 concurrent transfers, RSS during one large transfer "
        "(SPEC §9, issue 17) and during one large Parquet transfer (issue 12), measured in "
        "one run; the pass-through, the egress and the twin each in a process of its own.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--size-mb", type=int, default=DEFAULT_SIZE_MB, help="throughput transfer size (MB)"
    )
    parser.add_argument(
        "--large-mb",
        type=int,
        default=DEFAULT_LARGE_MB,
        help="RSS transfer size (MB); the SPEC target is 5000 MB under 150 MB RSS",
    )
    parser.add_argument(
        "--parquet-mb",
        type=int,
        default=DEFAULT_PARQUET_MB,
        metavar="MB",
        help=f"Parquet transfer during which RSS is sampled (default {DEFAULT_PARQUET_MB}; "
        "the issue 12 target is 2000 MB under 150 MB RSS; 0 skips it)",
    )
    parser.add_argument(
        "--hostile-decoders",
        type=int,
        default=HOSTILE_UPLOADS,
        metavar="N",
        help="worst-case zstd --long=27 / xz -9 uploads at once, measured with and without "
        "the decoder memory budget (0 skips the phase)",
    )
    parser.add_argument(
        "--decoder-memory-mb",
        type=int,
        default=DECODER_MEMORY_BYTES >> 20,
        help="the egress's decoder memory budget in that phase (MiB)",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if args.size_mb < 1 or args.large_mb < 1:
        # A 0 MB baseline would divide the ratio by zero.
        print("gateway bench proxy: --size-mb and --large-mb must be at least 1", file=sys.stderr)
        return 2
    if args.parquet_mb < 0:
        print("gateway bench proxy: --parquet-mb must be at least 0", file=sys.stderr)
        return 2
    if args.hostile_decoders < 0 or args.decoder_memory_mb < 1:
        print(
            "gateway bench proxy: --hostile-decoders must be at least 0 "
            "and --decoder-memory-mb at least 1",
            file=sys.stderr,
        )
        return 2
    configure_logging("console", "warning", stream=sys.stderr)
    result = asyncio.run(
        run_async(
            args.size_mb,
            args.large_mb,
            hostile=args.hostile_decoders,
            decoder_memory_mb=args.decoder_memory_mb,
            parquet_mb=args.parquet_mb,
        )
    )
    print(render(result, args.json))
    return 0
