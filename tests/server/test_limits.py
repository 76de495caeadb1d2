"""Slow and numerous clients (issue 11, finding 2), against real listeners on loopback.

A request head must be complete within ``head_timeout`` (``408``, closed); an
idle kept-alive connection lives ``keepalive_timeout``; connections are capped
in total and per client address before any TLS handshake; and a slow-header
flood from one address past the open-files limit neither blocks other clients
nor fails a policy reload, and logs no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.crypto.certs import ParkPaths
from gateway.obs.metrics import Metrics
from gateway.server.connections import AcceptErrorLog, client_key, descriptor_budget
from tests.server.conftest import RESEARCH_TOKEN, Parks, start_parks
from tests.server.test_runner import egress_process, sz_park

pytestmark = pytest.mark.xdist_group("limits")


def _addr(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


async def _connect(
    url: str, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = _addr(url)
    return await asyncio.open_connection(host, port, local_addr=(source, 0))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it stays open longer."""
    return await asyncio.wait_for(reader.read(), timeout=seconds)


@contextlib.asynccontextmanager
async def _parks(tmp_path: Path, pki: Path, **limits: Any) -> AsyncIterator[Parks]:
    async with start_parks(
        tmp_path, pki, egress={"limits": limits}, ingress={"limits": limits}
    ) as parks:
        yield parks


async def test_slow_request_head_gets_408_and_is_closed(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, head_timeout=1.0) as parks:
        reader, writer = await _connect(parks.egress)
        started = time.monotonic()

        async def trickle() -> None:
            for byte in b"PUT /v1/transfers/sz-lab/x.csv HTTP/1.1\r\nHost: a\r\nX-Slow: 1":
                writer.write(bytes([byte]))
                await asyncio.sleep(0.2)

        slow = asyncio.create_task(trickle())
        try:
            answer = await _closed_within(reader, 8)
        finally:
            slow.cancel()
            writer.close()
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"application/problem+json" in head
        assert json.loads(body)["status"] == 408
        assert 0.9 < elapsed < 4


async def test_silent_connection_is_closed_at_the_head_timeout(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, head_timeout=1.0) as parks:
        for url in (parks.egress, parks.sz.ingress_url):
            assert url is not None
            reader, writer = await _connect(url)
            started = time.monotonic()
            try:
                await _closed_within(reader, 8)
            finally:
                writer.close()
            # The ingress is TLS: a client that never starts its handshake is dropped too.
            assert time.monotonic() - started < 4


async def test_idle_keep_alive_connection_is_closed(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, keepalive_timeout=1.0, head_timeout=10.0) as parks:
        reader, writer = await _connect(parks.egress)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            await _closed_within(reader, 8)
        finally:
            writer.close()
        assert time.monotonic() - started < 4


async def test_slow_head_on_a_kept_alive_connection_gets_408(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, keepalive_timeout=30.0, head_timeout=1.0) as parks:
        reader, writer = await _connect(parks.egress)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            await asyncio.wait_for(reader.readuntil(b"}\n"), 5)
            await asyncio.sleep(0.5)
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            started = time.monotonic()
            answer = await _closed_within(reader, 8)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert time.monotonic() - started < 4


async def test_a_refused_body_still_arriving_is_not_a_slow_head(tmp_path: Path, pki: Path) -> None:
    """After an early 401, the rest of the body drains: those bytes are no request head."""
    async with _parks(tmp_path, pki, head_timeout=1.0) as parks:
        reader, writer = await _connect(parks.egress)
        try:
            writer.write(
                b"PUT /v1/transfers/sz-lab/x.csv HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 401 ")
            await asyncio.wait_for(reader.readuntil(b"}\n"), 5)
            for _ in range(10):  # 2 s of body bytes, past the 1 s head time-out
                writer.write(b"abcd")
                await asyncio.sleep(0.2)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            rest = await _closed_within(reader, 8)
        finally:
            writer.close()
        assert b"408" not in rest.split(b"\r\n", 1)[0]
        assert rest.startswith(b"HTTP/1.1 200 "), rest[:80]


async def _healthz(url: str, source: str) -> int:
    reader, writer = await _connect(url, source)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        answer = await _closed_within(reader, 5)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1])


async def test_connections_are_capped_per_client_address(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, max_connections_per_client=4) as parks:
        held = [await _connect(parks.egress, "127.0.0.2") for _ in range(4)]
        try:
            reader, writer = await _connect(parks.egress, "127.0.0.2")
            refused = await _closed_within(reader, 5)
            writer.close()
            assert refused.startswith(b"HTTP/1.1 503 "), refused[:80]
            assert b"Retry-After: " in refused
            # Another address is served while 127.0.0.2 is at its cap.
            assert await _healthz(parks.egress, "127.0.0.3") == 200
            metrics = parks.hk.services.metrics.render().decode()
            assert (
                'gateway_connections_refused_total{listener="egress",reason="per_client"} 1.0'
                in (metrics)
            )
        finally:
            for _, w in held:
                w.close()
        # The slots are free again once those connections closed.
        await asyncio.sleep(0.3)
        assert await _healthz(parks.egress, "127.0.0.2") == 200


async def test_connections_are_capped_in_total(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, max_connections=6, max_connections_per_client=3) as parks:
        held = [await _connect(parks.egress, f"127.0.0.{2 + i // 3}") for i in range(6)]
        try:
            reader, writer = await _connect(parks.egress, "127.0.0.9")
            refused = await _closed_within(reader, 5)
            writer.close()
            assert refused.startswith(b"HTTP/1.1 503 ")
        finally:
            for _, w in held:
                w.close()


async def test_tls_connections_are_capped_before_the_handshake(tmp_path: Path, pki: Path) -> None:
    async with _parks(tmp_path, pki, max_connections_per_client=3, head_timeout=10.0) as parks:
        assert parks.sz.ingress_url is not None
        held = [await _connect(parks.sz.ingress_url, "127.0.0.2") for _ in range(3)]
        try:
            reader, writer = await _connect(parks.sz.ingress_url, "127.0.0.2")
            started = time.monotonic()
            assert await _closed_within(reader, 5) == b""
            writer.close()
            assert time.monotonic() - started < 2
        finally:
            for _, w in held:
                w.close()


# -- a slow-header flood past the open-files limit, against a real `gateway serve` --

#: The gateway process's open-files limit in the flood test (soft = hard).
FLOOD_NOFILE = 1024
#: Connections the flood opens from one address: more than the process has descriptors.
FLOOD_CONNECTIONS = 1300
FLOOD_HEAD_TIMEOUT = 5.0


def _nofile() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FLOOD_NOFILE, FLOOD_NOFILE))


async def test_slow_header_flood_blocks_neither_clients_nor_reloads(
    tmp_path: Path, pki: Path
) -> None:
    clean = b"".join(b"R%06d,probe,%d.5\n" % (i, i % 97) for i in range(2000))
    limits = {"head_timeout": FLOOD_HEAD_TIMEOUT, "max_connections_per_client": 64}
    async with (
        sz_park(tmp_path, pki) as (ingress, recipient, destination, inbox),
        egress_process(
            tmp_path,
            pki,
            ingress,
            recipient,
            destination,
            egress={"limits": limits},
            preexec=_nofile,
        ) as child,
    ):
        assert child.process.stdout is not None
        lines: list[bytes] = []
        reloaded = asyncio.Event()

        async def collect() -> None:
            assert child.process.stdout is not None
            async for line in child.process.stdout:
                lines.append(line)
                if b'"policy_loaded"' in line:
                    reloaded.set()

        collector = asyncio.create_task(collect())
        flood: list[asyncio.StreamWriter] = []
        closed_after: list[float] = []

        async def slow_client() -> None:
            try:
                reader, writer = await _connect(child.url, "127.0.0.2")
            except OSError:
                return
            flood.append(writer)
            opened = time.monotonic()
            writer.write(b"PUT /v1/transfers/sz-lab/slow.csv HTTP/1.1\r\n")
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(reader.read(), FLOOD_HEAD_TIMEOUT * 4)
            closed_after.append(time.monotonic() - opened)

        started = time.monotonic()
        clients = [asyncio.create_task(slow_client()) for _ in range(FLOOD_CONNECTIONS)]
        try:
            await asyncio.sleep(0.5)
            # A legitimate sender on another address is served while the flood holds.
            headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
            async with (
                aiohttp.ClientSession() as session,
                session.put(
                    f"{child.url}/v1/transfers/sz-lab/clean.csv", data=clean, headers=headers
                ) as r,
            ):
                assert r.status == 201, await r.text()
            served = time.monotonic() - started
            assert served < FLOOD_HEAD_TIMEOUT, "the transfer waited for the flood to time out"
            # A policy reload needs descriptors too: it still works.
            policy = tmp_path / "policies" / "policy.yaml"
            policy.write_text(policy.read_text().replace("Default deny.", "Default deny (v2)."))
            child.process.send_signal(signal.SIGHUP)
            await asyncio.wait_for(reloaded.wait(), 10)
            await asyncio.gather(*clients)
        finally:
            for task in clients:
                task.cancel()
            for writer in flood:
                writer.close()
            collector.cancel()
        assert (inbox / "sz-lab" / "clean.csv").read_bytes() == clean
        # Each slow connection that was let in was closed near the head time-out;
        # those over the per-address cap at once.
        assert closed_after
        assert max(closed_after) < FLOOD_HEAD_TIMEOUT + 5
        assert sum(1 for t in closed_after if t >= FLOOD_HEAD_TIMEOUT - 0.5) <= 64 * 2
        log = b"".join(lines)
        assert b"Traceback" not in log
        reloads = [json.loads(line) for line in lines if b'"policy_loaded"' in line]
        # The reload's line names the version it replaced (the one loaded at start).
        assert len(reloads) == 1
        assert reloads[0]["previous"] not in ("", reloads[0]["version"])


def test_descriptor_budget_keeps_the_reserve() -> None:
    assert descriptor_budget(1024, 1) == (1024 - 512) // 3
    assert descriptor_budget(20000, 2) == (20000 - 639) // 6
    assert descriptor_budget(8, 1) >= 1


async def test_accept_errors_are_logged_once_per_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = Metrics()
    handler = AcceptErrorLog(metrics, None, interval=60)
    loop = asyncio.get_running_loop()
    error = OSError(24, "Too many open files")
    for _ in range(500):
        handler(loop, {"message": "socket.accept() out of system resource", "exception": error})
    out = capsys.readouterr().out
    assert out.count("accept_failed") == 1
    assert "Traceback" not in out
    assert "gateway_accept_errors_total 500.0" in metrics.render().decode()
    assert handler.suppressed == 499


def _gauge(parks: Parks, listener: str = "egress") -> float:
    metrics = parks.hk.services.metrics if listener == "egress" else parks.sz.services.metrics
    for sample in metrics.connections.collect()[0].samples:
        if sample.labels["listener"] == listener:
            return float(sample.value)
    raise AssertionError(listener)


async def test_a_client_that_never_reads_its_answers_loses_the_connection(
    tmp_path: Path, pki: Path
) -> None:
    """Pipelined requests whose answers are never read: aborted at the send time-out."""
    async with _parks(
        tmp_path, pki, send_timeout=1.0, head_timeout=1.0, max_connections_per_client=1
    ) as parks:
        host, port = _addr(parks.egress)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, port))
        try:
            requests = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 2000
            with contextlib.suppress(OSError):
                await asyncio.wait_for(loop.sock_sendall(sock, requests), 5)
            # The slot is taken while the gateway waits for the client to read ...
            assert _gauge(parks) == 1
            assert await _healthz(parks.egress, "127.0.0.1") == 503
            # ... and freed once the send time-out aborts the connection.
            for _ in range(100):
                if _gauge(parks) == 0:
                    break
                await asyncio.sleep(0.1)
            assert _gauge(parks) == 0
            assert await _healthz(parks.egress, "127.0.0.1") == 200
        finally:
            sock.close()


def _tls_request_with_the_handshake(port: int, ca: Path) -> list[tuple[float, bytes]]:
    """Send a request in the same segment as the client's last handshake flight, then
    stay idle; what status lines arrive, when (a blocking client on a memory BIO)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if pending := outgoing.read():
                    sock.sendall(pending)
                incoming.write(sock.recv(65536))
        tls.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        sock.sendall(outgoing.read())  # Finished and the request, one segment
        started, events = time.monotonic(), []
        sock.settimeout(0.2)
        while time.monotonic() - started < 3:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                events.append((time.monotonic() - started, b"EOF"))
                break
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError):
                for line in tls.read(65536).split(b"\r\n"):
                    if line.startswith(b"HTTP/1.1"):
                        events.append((time.monotonic() - started, line))
        return events
    finally:
        sock.close()


async def test_a_request_sent_with_the_tls_handshake_keeps_its_connection_alive(
    tmp_path: Path, pki: Path
) -> None:
    """The first request parsed before the handshake completed: no stray 408 later."""
    hk_ca = ParkPaths(pki / "hk").ca_cert
    async with start_parks(
        tmp_path,
        pki,
        egress={
            "tls": {
                "cert": ParkPaths(pki / "hk").cert("server"),
                "key": ParkPaths(pki / "hk").key("server"),
            },
            "limits": {"head_timeout": 1.0, "keepalive_timeout": 30.0},
        },
    ) as parks:
        _, port = _addr(parks.egress)
        events = await asyncio.to_thread(_tls_request_with_the_handshake, port, hk_ca)
    assert [line for _, line in events] == [b"HTTP/1.1 200 OK"], events


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("127.0.0.2", 5000), "127.0.0.2"),
        (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::9", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:3::1", 5000, 0, 0), "2001:db8:1:3::/64"),
        (("::ffff:10.1.2.3", 5000, 0, 0), "10.1.2.3"),
        (("fe80::1%eth0", 5000, 0, 2), "fe80::/64"),
        (None, ""),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_64(peer: object, key: str) -> None:
    """One IPv6 host may send from any address of its /64: it is one client."""
    assert client_key(peer) == key
