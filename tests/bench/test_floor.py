"""The floor of a 1 KB transfer does each required step for real (``gateway.bench.floor``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.bench.floor import RecordLog
from gateway.bench.proxy import floor_pair
from gateway.crypto.certs import ParkPaths


async def test_the_floor_classifies_seals_records_and_delivers(tmp_path: Path) -> None:
    bodies = {
        "plain.txt": b"plain lab notes " * 64,
        "chinese.txt": "深圳河套 37.0 °C, n = 248\n".encode() * 30,
        "binary.bin": bytes(range(256)) * 4,
    }
    async with floor_pair(tmp_path / "floor") as pair, aiohttp.ClientSession() as session:
        for name, body in bodies.items():
            async with session.put(f"{pair.url}/{name}", data=body) as answer:
                assert answer.status == 201
                assert (await answer.json())["sha256"] == hashlib.sha256(body).hexdigest()
        # Delivered whole, through the age envelope and the twin's mutual TLS.
        assert {p.name: p.read_bytes() for p in pair.inbox.iterdir()} == bodies
    egress = [json.loads(line) for line in (tmp_path / "floor" / "egress-records.log").open()]
    twin = [json.loads(line) for line in (tmp_path / "floor" / "twin-records.log").open()]
    # The verdict before the delivery, per transfer, each with the classifier's hash.
    assert [(r["event"], r["name"]) for r in egress] == [
        (event, name) for name in bodies for event in ("allowed", "delivered")
    ]
    assert all(r["sha256"] == hashlib.sha256(bodies[r["name"]]).hexdigest() for r in egress)
    assert [(r["name"], r["size"]) for r in twin] == [(n, len(b)) for n, b in bodies.items()]


async def test_the_floor_twin_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    root = tmp_path / "floor"
    async with floor_pair(root) as pair:
        context = ssl.create_default_context(cafile=ParkPaths(root / "pki" / "sz").ca_cert)
        context.check_hostname = False
        url = f"{pair.twin_url}/x.txt"
        async with aiohttp.ClientSession() as session:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                async with session.post(url, data=b"age", ssl=context) as answer:
                    await answer.read()
            # The same server check with the egress's certificate gets through TLS to the
            # handler, which refuses the body: it was the missing certificate above.
            hk = ParkPaths(root / "pki" / "hk")
            context.load_cert_chain(hk.cert("client"), hk.key("client"))
            async with session.post(url, data=b"age", ssl=context) as answer:
                assert answer.status == 500
        assert not list(pair.inbox.iterdir())


async def test_records_waiting_at_once_share_a_sync(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "records.log")
    writes: list[int] = []
    original = log._write

    def counted(data: bytes) -> None:
        writes.append(data.count(b"\n"))
        original(data)

    log._write = counted  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(log.append({"n": n}) for n in range(40)))
    finally:
        await log.close()
    lines = (tmp_path / "records.log").read_text().splitlines()
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(40))
    assert sum(writes) == 40
    assert len(writes) < 40  # group commit: one write and fdatasync served several


async def test_a_record_that_cannot_be_written_fails_its_append(tmp_path: Path) -> None:
    log = RecordLog(Path("/dev/full"))
    try:
        with pytest.raises(OSError, match="No space left"):
            await log.append({"event": "allowed"})
    finally:
        await log.close()


async def test_an_append_cancelled_while_its_sync_runs_does_not_stop_the_log(
    tmp_path: Path,
) -> None:
    log = _slow_log(tmp_path / "records.log", 0.1)
    try:
        first = asyncio.ensure_future(log.append({"n": 1}))
        await asyncio.sleep(0.02)  # its write and sync are under way
        first.cancel()  # as aiohttp cancels a handler whose client went away
        async with asyncio.timeout(5):
            await log.append({"n": 2})  # the writer lives on
    finally:
        await log.close()
    lines = (tmp_path / "records.log").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 2]


async def test_closing_the_log_during_a_sync_answers_its_appends(tmp_path: Path) -> None:
    log = _slow_log(tmp_path / "records.log", 0.2)
    waiting = asyncio.ensure_future(log.append({"n": 1}))
    await asyncio.sleep(0.02)  # its write and sync are under way
    await log.close()
    with pytest.raises(asyncio.CancelledError):  # answered (cancelled), not left hanging
        async with asyncio.timeout(5):
            await waiting


def _slow_log(path: Path, seconds: float) -> RecordLog:
    """A record log whose every write and sync takes ``seconds`` longer."""
    log = RecordLog(path)
    write = log._write

    def slow(data: bytes) -> None:
        time.sleep(seconds)
        write(data)

    log._write = slow  # type: ignore[method-assign]
    return log
