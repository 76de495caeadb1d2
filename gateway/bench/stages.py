"""``gateway bench stages``: what each byte of an allowed transfer costs, and the ceiling that sets.

SPEC §9 asks for an allowed transfer at half the speed of a plain aiohttp
pass-through. The pass-through relays bytes; the gateway must also do, for
every byte, work the SPEC and the threat model require (SPEC §3, §6, §7):
classify it, hash the plaintext and the ciphertext (both go into the audit
records of both parks), encrypt it into the age payload, carry it over
mutual TLS, and at the twin decrypt the TLS, hash the ciphertext, open the
age payload, hash the plaintext and write the file. This command measures
each of those stages alone, on one thread, as CPU-seconds per GB (10**9
bytes), and the pass-through's own CPU-seconds per GB in the same run.

From those it derives the ceiling: no schedule can run the gateway faster
than ``cores / (work per GB)``, however well its stages overlap, where the
work per GB is the sum of the stages plus one relay's HTTP handling (the
gateway's two HTTP hops cost at least what the pass-through's do). Set
against the pass-through's measured speed, that is the highest ratio the
hardware allows (issue 17: "where the hardware makes a target impossible,
the gap shown by … a calculation of the ceiling").

A 1 KB transfer is bound by something else: the CPU of its steps and the
durability points it waits for one after the other. This command replays
those points on the disk where ``--dir`` lies
(:mod:`gateway.bench.durability`), so the part of the 1 KB latency target
(p99 over the pass-through < 5 ms) that the disk alone takes is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import aiohttp

from gateway.bench.classify import generate
from gateway.bench.durability import DEFAULT_DURABILITY_SAMPLES, Durability, durability_path
from gateway.bench.proxy import (
    BLOCK,
    TARGET_P99_EXTRA_MS,
    TARGET_RATIO,
    _measured,
    _throughput,
    passthrough_process,
)
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.crypto.certs import ParkPaths, init_dev_pki
from gateway.crypto.stream import PAYLOAD_NONCE_SIZE, StreamDecryptor, StreamEncryptor

#: Bytes each stage processes by default (MB): enough to dwarf set-up costs.
DEFAULT_SIZE_MB: Final = 128
#: Bytes per call, as the gateway's body lanes hand them on.
CHUNK: Final = 64 * 1024
#: Cores of the reference machine (SPEC §9 figures are measured on 2).
DEFAULT_CORES: Final = 2
_GB: Final = 1e9


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: where it runs and its CPU-seconds per GB."""

    side: str
    name: str
    cpu_s_per_gb: float


@dataclass(frozen=True, slots=True)
class StagesBench:
    """The stages, the pass-through's figures and the ceiling they set."""

    size_mb: int
    cores: int
    stages: tuple[Stage, ...]
    relay_cpu_s_per_gb: float
    passthrough_mb_s: float
    durability: Durability

    @property
    def work_cpu_s_per_gb(self) -> float:
        """The least CPU time a GB of allowed transfer takes: every stage plus one relay."""
        return round(sum(s.cpu_s_per_gb for s in self.stages) + self.relay_cpu_s_per_gb, 3)

    @property
    def ceiling_mb_s(self) -> float:
        """The fastest any schedule on ``cores`` could run the gateway."""
        return round(self.cores / self.work_cpu_s_per_gb * 1000, 1)

    @property
    def ceiling_ratio(self) -> float:
        """That ceiling against the pass-through measured in the same run."""
        return round(self.ceiling_mb_s / self.passthrough_mb_s, 3)


def _cpu_per_gb(run: Callable[[], None], size: int) -> float:
    """CPU-seconds per GB of ``run`` on this thread (best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
    return round(best / (size / _GB), 3)


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i : i + CHUNK])


def _tls_pair(directory: Path) -> tuple[ssl.SSLObject, ssl.SSLObject, list[ssl.MemoryBIO]]:
    """A client and a server TLS 1.3 session over memory, handshake done (a dev PKI's
    server certificate, as the twin's ingress presents)."""
    init_dev_pki(directory)
    park = ParkPaths(directory / "hk")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_2
    server_context.load_cert_chain(park.cert("server"), park.key("server"))
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(park.ca_cert)
    client_context.check_hostname = False
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_context.wrap_bio(bios[0], bios[1])
    server = server_context.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
        if client.version() and server.version():
            try:
                client.do_handshake()
                server.do_handshake()
                break
            except ssl.SSLWantReadError:
                continue
    return client, server, bios


def measure(size_mb: int = DEFAULT_SIZE_MB) -> tuple[Stage, ...]:
    """Every stage's CPU-seconds per GB on ``size_mb`` MB of clean prose."""
    data = generate("prose", size_mb * 1_000_000)
    size = len(data)
    detectors = DetectorSet.build()
    secret = os.urandom(32)
    file_key, nonce = os.urandom(16), os.urandom(PAYLOAD_NONCE_SIZE)
    ciphertext = b"".join(_encrypt(file_key, nonce, data))

    def classify() -> None:
        scanner = Scanner(detectors, secret)
        for chunk in _chunks(data):
            scanner.feed(chunk)
        scanner.finish()

    def sha_plain() -> None:
        digest = hashlib.sha256()
        for chunk in _chunks(data):
            digest.update(chunk)

    def sha_cipher() -> None:
        digest = hashlib.sha256()
        for chunk in _chunks(ciphertext):
            digest.update(chunk)

    def encrypt() -> None:
        for _ in _encrypt(file_key, nonce, data):
            pass

    def decrypt() -> None:
        decryptor = StreamDecryptor(file_key, nonce)
        for chunk in _chunks(ciphertext):
            decryptor.feed(chunk)
        decryptor.finish()

    stages: list[Stage] = [
        Stage("egress", "classify (all built-in detectors)", _cpu_per_gb(classify, size)),
        Stage("egress", "SHA-256 of the plaintext", _cpu_per_gb(sha_plain, size)),
        Stage("egress", "age STREAM encrypt (the spool)", _cpu_per_gb(encrypt, size)),
        Stage("egress", "SHA-256 of the ciphertext", _cpu_per_gb(sha_cipher, size)),
    ]
    with tempfile.TemporaryDirectory(prefix="gateway-bench-stages-") as tmp:
        send, receive = _tls_costs(Path(tmp), ciphertext)
        stages.append(Stage("egress", "TLS to the twin (encrypt)", send))
        stages.append(Stage("twin", "TLS from the egress (decrypt)", receive))
        stages.append(Stage("twin", "SHA-256 of the ciphertext", _cpu_per_gb(sha_cipher, size)))
        stages.append(Stage("twin", "age STREAM decrypt", _cpu_per_gb(decrypt, size)))
        stages.append(Stage("twin", "SHA-256 of the plaintext", _cpu_per_gb(sha_plain, size)))
        stages.append(Stage("twin", "write the file", _write_cost(Path(tmp) / "out", data)))
    return tuple(stages)


def _encrypt(file_key: bytes, nonce: bytes, data: bytes) -> Iterator[bytes]:
    encryptor = StreamEncryptor(file_key, nonce)
    for chunk in _chunks(data):
        yield encryptor.update(chunk)
    yield encryptor.finish()


def _tls_costs(directory: Path, data: bytes) -> tuple[float, float]:
    """CPU-seconds per GB to send ``data`` over TLS, and to receive it."""
    client, server, bios = _tls_pair(directory)
    send = receive = float("inf")
    for _ in range(3):
        sent = got = 0.0
        for chunk in _chunks(data):
            started = time.thread_time()
            client.write(chunk)
            wire = bios[1].read()
            middle = time.thread_time()
            bios[2].write(wire)
            while True:
                try:
                    server.read(len(chunk) + 1024)
                except ssl.SSLWantReadError:
                    break
            got += time.thread_time() - middle
            sent += middle - started
        send, receive = min(send, sent), min(receive, got)
    return round(send / (len(data) / _GB), 3), round(receive / (len(data) / _GB), 3)


def _write_cost(path: Path, data: bytes) -> float:
    """CPU-seconds per GB to write ``data`` to a file in 1 MiB writes and sync it."""

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            for i in range(0, len(data), 1 << 20):
                os.write(fd, view[i : i + (1 << 20)])
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink()

    return _cpu_per_gb(write, len(data))


async def _relay(size_mb: int) -> tuple[float, float]:
    """The pass-through's MB/s and CPU-seconds per GB, as ``gateway bench proxy`` runs it."""
    block = generate("prose", BLOCK)
    async with aiohttp.ClientSession() as session, passthrough_process() as (url, pid):
        await _throughput(session, f"{url}/warm", block, BLOCK, {})
        rate, (cpu,) = await _measured(
            session, f"{url}/big", block, size_mb * 1_000_000, {}, (pid,)
        )
    return rate, cpu


def run(
    size_mb: int = DEFAULT_SIZE_MB,
    cores: int = DEFAULT_CORES,
    *,
    directory: Path | None = None,
    samples: int = DEFAULT_DURABILITY_SAMPLES,
) -> StagesBench:
    """Measure every stage, the pass-through (twice the stages' size, at least 256 MB)
    and the 1 KB durability path in ``directory`` (default: the temporary directory)."""
    durability = durability_path(directory or Path(tempfile.gettempdir()), samples)
    stages = measure(size_mb)
    rate, relay = asyncio.run(_relay(max(256, 2 * size_mb)))
    return StagesBench(size_mb, cores, stages, relay, round(rate, 1), durability)


def render(result: StagesBench, as_json: bool) -> str:
    """A table, or one JSON object."""
    if as_json:
        return json.dumps(
            {
                **asdict(result),
                "work_cpu_s_per_gb": result.work_cpu_s_per_gb,
                "ceiling_mb_s": result.ceiling_mb_s,
                "ceiling_ratio": result.ceiling_ratio,
                "target_ratio": TARGET_RATIO,
                "target_p99_extra_ms": TARGET_P99_EXTRA_MS,
            }
        )
    durability = result.durability
    lines = [f"CPU-seconds per GB, each stage alone on one thread ({result.size_mb} MB of prose)"]
    for side in ("egress", "twin"):
        for stage in (s for s in result.stages if s.side == side):
            lines.append(f"  {side:<6} {stage.name:<36} {stage.cpu_s_per_gb:6.2f}")
    lines += [
        f"  relay  {'HTTP in and out (the pass-through)':<36} {result.relay_cpu_s_per_gb:6.2f}",
        f"  {'work per GB, at the least':<43} {result.work_cpu_s_per_gb:6.2f}",
        f"ceiling on {result.cores} cores: {result.ceiling_mb_s:.0f} MB/s; the pass-through "
        f"ran at {result.passthrough_mb_s:.0f} MB/s: ratio at most {result.ceiling_ratio:.2f} "
        f"(target {TARGET_RATIO})",
        f"1 KB transfer, one at a time: its durability points in sequence, replayed "
        f"{durability.samples} times in {durability.directory}",
        f"  one audit record appended and fdatasynced   p50 {durability.record_p50_ms:.2f} / "
        f"p99 {durability.record_p99_ms:.2f} ms",
        f"  the path (egress verdict; twin file and record; inbox; egress delivery)   "
        f"p50 {durability.path_p50_ms:.2f} / p99 {durability.path_p99_ms:.2f} ms",
        f"  the disk alone takes {durability.path_p99_ms / TARGET_P99_EXTRA_MS:.0%} of the "
        f"{TARGET_P99_EXTRA_MS:g} ms p99 budget over the pass-through",
    ]
    return "\n".join(lines)


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway bench stages`` to the bench group."""
    parser = bench_subparsers.add_parser(
        "stages",
        help="CPU-seconds per GB of each stage of an allowed transfer, and the ceiling",
        description="Each stage an allowed transfer's bytes go through (classify, hash, "
        "encrypt, TLS, and at the twin decrypt, hash, write), alone on one thread, "
        "against the pass-through measured in the same run: the fastest any schedule "
        "on the given cores could go. Then a 1 KB transfer's durability points (audit "
        "records, the twin's file and inbox), replayed in sequence on the disk of --dir: "
        "the part of the 1 KB latency the disk alone takes.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--size-mb", type=int, default=DEFAULT_SIZE_MB, help="bytes each stage processes (MB)"
    )
    parser.add_argument(
        "--cores", type=int, default=DEFAULT_CORES, help="cores the ceiling is computed for"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the durability path is replayed: the audit log's and the inbox's "
        "filesystem (default: the temporary directory)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_DURABILITY_SAMPLES,
        help="replays of the durability path",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if args.size_mb < 1 or args.cores < 1 or args.samples < 1:
        print(
            "gateway bench stages: --size-mb, --cores and --samples must be at least 1",
            file=sys.stderr,
        )
        return 2
    if args.dir is not None and not args.dir.is_dir():
        print(f"gateway bench stages: --dir {args.dir}: not a directory", file=sys.stderr)
        return 2
    try:
        result = run(args.size_mb, args.cores, directory=args.dir, samples=args.samples)
    except OSError as exc:
        where = args.dir or tempfile.gettempdir()
        print(
            f"gateway bench stages: cannot replay the durability path in {where}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    print(render(result, args.json))
    return 0
