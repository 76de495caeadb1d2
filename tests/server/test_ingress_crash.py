"""A crash of the receiving park leaves no plaintext in the inbox (issue 11, finding 5).

The SZ ingress runs as a real ``gateway serve`` process, and this test is
its twin: it posts an envelope slowly with the HK gateway's client
certificate, watches ``/proc/<pid>/fd`` until the ingress holds an open file
with plaintext in it, and kills the process with SIGKILL. The timer sweep
and the staging fallback (inboxes without ``O_TMPFILE``) run in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.crypto.age import AgeEncryptor
from gateway.crypto.certs import ParkPaths
from gateway.crypto.keys import X25519Identity, identity_file_text
from gateway.crypto.tls import client_ssl_context
from gateway.server.ingress import INGRESS
from tests.server.conftest import Parks, slow_body, start_parks, sz_settings

#: In every line of the payloads that must never be left behind: a file holding
#: any part of their plaintext holds this.
CANARY = b"CANARY-f5-3c9e1d"
#: 16 MiB: at SLOW_STEP bytes per SLOW_PAUSE the envelope takes about 13 s to
#: arrive, ample time to catch the ingress writing it on a busy machine.
PAYLOAD = b"".join(b"%s,%08d,lab-reading\n" % (CANARY, i) for i in range(16 * 1024**2 // 38))
SLOW_STEP = 64 * 1024
SLOW_PAUSE = 0.05
#: Delivered before the crash; it must be the only file left in the inbox.
BEFORE = b"run_id,temperature_c\n" + b"R00001,21.5\n" * 1000
#: Long enough for a loaded two-core machine, short enough to fail a hung test.
WAIT_SECONDS = 30.0
#: A part file last written this long ago is a leftover for any total_timeout here.
LONG_AGO_SECONDS = 2 * 3600.0


def _envelope(identity: X25519Identity, data: bytes) -> bytes:
    encryptor = AgeEncryptor([identity.recipient])
    return encryptor.header() + encryptor.update(data) + encryptor.finish()


def _twin_context(pki: Path) -> Any:
    """The HK gateway's client certificate: the pinned twin of the SZ ingress."""
    hk, sz = ParkPaths(pki / "hk"), ParkPaths(pki / "sz")
    return client_ssl_context(ca=sz.ca_cert, cert=hk.cert("client"), key=hk.key("client"))


async def _post(
    session: aiohttp.ClientSession,
    base: str,
    pki: Path,
    name: str,
    body: object,
    transfer_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"X-Gateway-Transfer-Id": transfer_id} if transfer_id else {}
    async with session.post(
        f"{base}/v1/envelopes/sz-lab/{name}", data=body, headers=headers, ssl=_twin_context(pki)
    ) as r:
        return r.status, await r.json(content_type=None)


def _files(root: Path) -> set[Path]:
    """Every file below ``root``, hidden directories and files included."""
    return {Path(d) / f for d, _, files in os.walk(root) for f in files}


def _holding_canary(root: Path) -> list[Path]:
    return [p for p in _files(root) if CANARY in p.read_bytes()]


@dataclass
class Ingress:
    """A ``gateway serve`` process running the SZ ingress."""

    process: asyncio.subprocess.Process
    url: str
    log: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def ingress_process(
    root: Path, pki: Path, identity: X25519Identity, **ingress: Any
) -> AsyncIterator[Ingress]:
    """Run the SZ ingress of conftest's ``sz_settings`` as a ``gateway serve`` process."""
    identity_file = root / "sz" / "identity.agekey"
    identity_file.parent.mkdir(parents=True, exist_ok=True)
    identity_file.write_text(identity_file_text(identity))
    # sz-https is never used here: nothing listens there.
    settings = sz_settings(root, pki, identity_file, "https://127.0.0.1:9", **ingress)
    config = root / "sz.yaml"
    config.write_text(json.dumps(settings.model_dump(mode="json", exclude_none=True)))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,  # JSON log lines
        stderr=asyncio.subprocess.DEVNULL,
        cwd=str(Path(__file__).parents[2]),
    )
    assert process.stdout is not None
    running = Ingress(process, "")
    reader: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(60):
            while not running.url:
                line = await process.stdout.readline()
                assert line, "gateway serve exited before listening"
                event = _log_line(line, running.log)
                if event.get("event") == "listening":
                    running.url = event["ingress"]
        # Read on: a full pipe would block the process's logging.
        reader = asyncio.create_task(_read_log(process.stdout, running.log))
        yield running
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if reader is not None:
            await reader


def _log_line(line: bytes, log: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        event: dict[str, Any] = json.loads(line)
    except ValueError:
        return {}
    log.append(event)
    return event


async def _read_log(stream: asyncio.StreamReader, log: list[dict[str, Any]]) -> None:
    while line := await stream.readline():
        _log_line(line, log)


def _open_file_below(pid: int, under: Path) -> Path | None:
    """The ``/proc`` link of a non-empty file below ``under`` that ``pid`` has open."""
    for link in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(link).startswith(f"{under}/") and link.stat().st_size > 0:
                return link
    return None


async def _open_plaintext(pid: int, under: Path) -> Path:
    """Wait until ``pid`` holds a file below ``under`` with bytes in it; its ``/proc`` link.

    The ingress is then mid-delivery, with plaintext handed to the kernel
    (``stat`` through the link sees the file even when it has no name).
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while (link := _open_file_below(pid, under)) is None:
        assert time.monotonic() < deadline, f"the ingress never opened a file below {under}"
        await asyncio.sleep(0.02)
    return link


@pytest.mark.slow
@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "staging"])
async def test_sigkill_mid_delivery_leaves_no_plaintext(
    tmp_path: Path, pki: Path, unnamed: bool
) -> None:
    identity = X25519Identity.generate()
    inbox = tmp_path / "inbox" / "sz-lab"
    fallback = {} if unnamed else {"unnamed_temp_files": False}
    async with (
        ingress_process(tmp_path, pki, identity, **fallback) as sz,
        aiohttp.ClientSession() as session,
    ):
        status, body = await _post(session, sz.url, pki, "before.csv", _envelope(identity, BEFORE))
        assert status == 201, body
        envelope = _envelope(identity, PAYLOAD)
        pushing = asyncio.ensure_future(
            _post(
                session,
                sz.url,
                pki,
                "crash.csv",
                slow_body(envelope, SLOW_STEP, SLOW_PAUSE),
                "t_" + os.urandom(16).hex(),
            )
        )
        try:
            link = await _open_plaintext(sz.process.pid, tmp_path / "inbox")
            with link.open("rb") as held:
                assert CANARY in held.read(SLOW_STEP)  # decrypted plaintext, being written
            assert not pushing.done()
            # Mid-delivery the inbox shows nothing new, under any name.
            assert _files(inbox) == {inbox / "before.csv"}
            sz.process.send_signal(signal.SIGKILL)
            assert await sz.process.wait() == -signal.SIGKILL
        finally:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await pushing
    # Nothing of the killed delivery in the inbox, by name or by content.
    assert _files(inbox) == {inbox / "before.csv"}
    assert (inbox / "before.csv").read_bytes() == BEFORE
    assert _holding_canary(inbox) == []
    if unnamed:
        # An unnamed file dies with the process: no plaintext anywhere.
        assert _holding_canary(tmp_path) == []
        return
    # The fallback's part file is outside the inbox, and the next start deletes it.
    leftovers = _holding_canary(tmp_path)
    assert leftovers
    assert {p.parent for p in leftovers} == {tmp_path / "inbox" / ".sz-lab.staging"}
    async with ingress_process(tmp_path, pki, identity, unnamed_temp_files=False) as sz:
        assert _holding_canary(tmp_path) == []
        assert any(e.get("event") == "partial_deliveries_swept" for e in sz.log)
    assert _files(tmp_path / "inbox") == {inbox / "before.csv"}


def _plant(path: Path, age: float) -> Path:
    """A part file as a crashed delivery leaves it, last written ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PAYLOAD[:100_000])
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def _tid() -> str:
    return "t_" + os.urandom(16).hex()


async def _until_gone(*paths: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while any(p.exists() for p in paths):
        assert time.monotonic() < deadline, "the timer never swept the leftovers"
        await asyncio.sleep(0.02)


async def test_leftovers_are_swept_on_a_timer_without_a_restart(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, ingress={"partial_sweep_interval": 0.1}) as parks:
        # Planted after start-up, so only the timer can remove them.
        legacy = _plant(parks.inbox / "sz-lab" / ".incoming" / f"{_tid()}.part", LONG_AGO_SECONDS)
        staged = _plant(parks.inbox / ".sz-clinical.staging" / f"{_tid()}.part", LONG_AGO_SECONDS)
        # Written a moment ago: maybe another process's delivery in progress.
        fresh = _plant(parks.inbox / ".sz-lab.staging" / f"{_tid()}.part", 0.0)
        await _until_gone(legacy, staged)
        assert fresh.exists()
        status, body = await parks.put("sz-lab", "after.csv", BEFORE)
        assert status == 201, body
        assert parks.inbox_files("sz-lab") == {"after.csv": BEFORE}


async def _staged_part(parks: Parks, transfer_id: str) -> Path:
    path = parks.inbox / ".sz-lab.staging" / f"{transfer_id}.part"
    deadline = time.monotonic() + WAIT_SECONDS
    while not (path.exists() and path.stat().st_size > 0):
        assert time.monotonic() < deadline, "the delivery never staged its part file"
        await asyncio.sleep(0.02)
    return path


async def test_the_staging_fallback_delivers_end_to_end(tmp_path: Path, pki: Path) -> None:
    ingress = {"unnamed_temp_files": False, "partial_sweep_interval": 0.05}
    async with start_parks(tmp_path, pki, ingress=ingress) as parks:
        small, large = BEFORE, BEFORE * 30  # classic, and pipelined (> 256 KiB)
        for name, data in (("small.csv", small), ("large.csv", large)):
            status, body = await parks.put("sz-lab", name, data)
            assert status == 201, body
        assert parks.inbox_files("sz-lab") == {"small.csv": small, "large.csv": large}
        staging = parks.inbox / ".sz-lab.staging"
        assert staging.stat().st_mode & 0o777 == 0o700
        assert _files(staging) == set()
        # A slow delivery, posted by the twin: its plaintext waits outside the inbox.
        tid = _tid()
        data = PAYLOAD[: 4 * 1024**2]
        envelope = _envelope(parks.identity, data)
        assert parks.sz.ingress_url is not None
        pushing = asyncio.ensure_future(
            _post(
                parks.session,
                parks.sz.ingress_url,
                pki,
                "slow.csv",
                slow_body(envelope, SLOW_STEP, SLOW_PAUSE),
                tid,
            )
        )
        part = await _staged_part(parks, tid)
        assert not pushing.done()
        assert set(parks.inbox_files("sz-lab")) == {"small.csv", "large.csv"}
        assert _holding_canary(parks.inbox / "sz-lab") == []
        # Even when it looks abandoned, the timer spares a delivery in progress.
        old = time.time() - LONG_AGO_SECONDS
        os.utime(part, (old, old))
        legacy = _plant(parks.inbox / "sz-lab" / ".incoming" / f"{_tid()}.part", LONG_AGO_SECONDS)
        await _until_gone(legacy)  # a sweep ran after the part file looked old
        assert part.exists()
        assert parks.sz.ingress_app is not None
        assert tid in parks.sz.ingress_app[INGRESS].active
        status, body = await pushing
        assert status == 201, body
        assert parks.inbox_files("sz-lab")["slow.csv"] == data
        assert _files(staging) == set()
        assert parks.partial_files() == []
