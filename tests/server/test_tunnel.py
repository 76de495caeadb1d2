"""``HTTPS_PROXY`` works unchanged (issue 18): real clients through CONNECT tunnels.

The HK egress is the proxy; the SZ ingress (an ``https://`` route destination)
is where the clients believe they are talking to. curl and Python ``requests``
and ``httpx`` are given only the proxy variable and the interception CA; a raw
client checks what they cannot show (keep-alive inside one tunnel, an HTTP/2
preface, a silent client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.crypto.certs import ParkPaths
from gateway.server.config import ListenerLimits
from tests.server.conftest import RESEARCH_TOKEN, Parks, start_parks

CLEAN = b"sample_id,od600\n" + b"".join(
    f"S{i:04d},{i % 97}.{i % 7}\n".encode() for i in range(3000)
)
#: Resident ID numbers (valid check digits): blocked by the shipped rule.
PEOPLE = b"name,id\n" + b"".join(
    f"person{i},{number}\n".encode()
    for i, number in enumerate(["11010519491231002X", "440305198412252041", "110101199003074477"])
)


def intercept_ca(pki: Path) -> Path:
    return ParkPaths(pki / "hk").intercept_ca_cert


@contextlib.asynccontextmanager
async def proxy_parks(root: Path, pki: Path, **limits: Any) -> AsyncIterator[Parks]:
    hk = ParkPaths(pki / "hk")
    egress: dict[str, Any] = {
        "intercept": {"cert": hk.intercept_ca_cert, "key": hk.intercept_ca_key},
    }
    if limits:
        egress["limits"] = ListenerLimits(**limits)
    async with start_parks(root, pki, egress=egress) as parks:
        yield parks


def proxy_env(parks: Parks, token: str = RESEARCH_TOKEN) -> dict[str, str]:
    """What a research user sets: the proxy with the token as password, nothing else."""
    assert parks.hk.egress_url is not None
    proxy = parks.hk.egress_url.replace("http://", f"http://hk-research:{token}@")
    keep = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return {**keep, "HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": ""}


def destination(parks: Parks, name: str) -> str:
    assert parks.sz.ingress_url is not None
    return f"{parks.sz.ingress_url}/v1/envelopes/sz-lab/{name}"


def curl(
    parks: Parks, url: str, data: bytes, tmp: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, int, dict[str, Any] | None]:
    """curl -T through the proxy: exit code, HTTP status, JSON body."""
    upload = tmp / "upload.bin"
    upload.write_bytes(data)
    out = tmp / "answer.json"
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            str(out),
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            "-T",
            str(upload),
            *extra,
            url,
        ],
        env=env if env is not None else proxy_env(parks),
        capture_output=True,
        check=False,
    )
    status = int(done.stdout or b"0")
    body = json.loads(out.read_bytes()) if out.exists() and out.stat().st_size else None
    return done.returncode, status, body


def transfer_events(parks: Parks) -> list[dict[str, Any]]:
    return [r for r in parks.audit_events("hk") if r.get("transfer_id")]


async def test_curl_pushes_through_https_proxy_and_a_file_with_ids_is_blocked(
    tmp_path: Path, pki: Path
) -> None:
    async with proxy_parks(tmp_path / "run", pki) as parks:
        ca = str(intercept_ca(pki))
        code, status, body = await asyncio.to_thread(
            curl, parks, destination(parks, "notes.csv"), CLEAN, tmp_path, "--cacert", ca
        )
        assert (code, status) == (0, 201), body
        assert body is not None
        assert parks.inbox_files("sz-lab") == {"notes.csv": CLEAN}
        assert body["transfer_id"].startswith("t_")
        code, status, body = await asyncio.to_thread(
            curl, parks, destination(parks, "people.csv"), PEOPLE, tmp_path, "--cacert", ca
        )
        assert (code, status) == (0, 403), body
        assert body is not None
        assert body["decision"] == "block"
        assert "people.csv" not in parks.inbox_files("sz-lab")
        assert not any(v.encode() in json.dumps(body).encode() for v in ("440305198412252041",))
        events = {r["transfer_id"]: r["event"] for r in transfer_events(parks)}
        assert sorted(events.values()).count("blocked") == 1


async def test_requests_and_httpx_push_with_only_the_proxy_variable(
    tmp_path: Path, pki: Path
) -> None:
    """Nothing in the code names the proxy or the CA: the environment does."""
    import httpx
    import requests

    async with proxy_parks(tmp_path, pki) as parks:
        ca = str(intercept_ca(pki))
        env = {**proxy_env(parks), "REQUESTS_CA_BUNDLE": ca, "SSL_CERT_FILE": ca}

        def with_requests() -> tuple[int, dict[str, Any]]:
            with _environ(env):
                answer = requests.put(destination(parks, "r.csv"), data=CLEAN, timeout=30)
            return answer.status_code, answer.json()

        def with_httpx() -> tuple[int, dict[str, Any]]:
            with _environ(env):
                answer = httpx.put(destination(parks, "x.csv"), content=CLEAN, timeout=30)
            return answer.status_code, answer.json()

        status, body = await asyncio.to_thread(with_requests)
        assert status == 201, body
        status, body = await asyncio.to_thread(with_httpx)
        assert status == 201, body
        assert parks.inbox_files("sz-lab") == {"r.csv": CLEAN, "x.csv": CLEAN}


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def test_connect_is_refused_without_credentials_or_to_a_host_no_route_names(
    tmp_path: Path, pki: Path
) -> None:
    decoy_hits = 0

    async def decoy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal decoy_hits
        decoy_hits += 1
        writer.close()

    server = await asyncio.start_server(decoy, "127.0.0.1", 0)
    decoy_port = server.sockets[0].getsockname()[1]
    try:
        async with proxy_parks(tmp_path, pki) as parks:
            assert parks.sz.ingress_url is not None
            twin = parks.sz.ingress_url.removeprefix("https://")
            token = base64.b64encode(f"x:{RESEARCH_TOKEN}".encode()).decode()
            # No credentials: 407 with a challenge, before anything else.
            status, headers, body = await connect(parks, twin, {})
            assert status == 407, body
            assert "Bearer" in headers["proxy-authenticate"]
            assert json.loads(body)["status"] == 407
            status, _, _ = await connect(parks, twin, {"Proxy-Authorization": "Bearer wrong"})
            assert status == 407
            # A host and port no route leads to: 403, and nobody connected there.
            auth = {"Proxy-Authorization": f"Basic {token}"}
            status, _, body = await connect(parks, f"127.0.0.1:{decoy_port}", auth)
            assert status == 403, body
            assert str(decoy_port) not in body
            status, _, _ = await connect(parks, "decoy.invalid:443", auth)
            assert status == 403
            status, _, _ = await connect(parks, "no-port", auth)
            assert status == 400
            assert decoy_hits == 0
            # A client that does not trust the interception CA fails its handshake,
            # and nothing is recorded as a transfer.
            code, _, _ = await asyncio.to_thread(
                curl, parks, destination(parks, "untrusted.csv"), CLEAN, tmp_path
            )
            assert code == 60  # curl: peer certificate cannot be authenticated
            assert transfer_events(parks) == []
            assert parks.inbox_files("sz-lab") == {}
    finally:
        server.close()
        await server.wait_closed()


async def connect(
    parks: Parks, authority: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], str]:
    """One CONNECT on a new connection: status, headers (lower-case names), body."""
    assert parks.hk.egress_url is not None
    host, port = parks.hk.egress_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        fields = {}
        for line in head.decode().split("\r\n")[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        body = (await reader.readexactly(length)).decode() if length else ""
        return status, fields, body
    finally:
        writer.close()


def open_raw_tunnel(parks: Parks) -> tuple[socket.socket, str]:
    """CONNECT to the SZ ingress (blocking): the socket after the ``200``, and the authority."""
    assert parks.hk.egress_url is not None
    assert parks.sz.ingress_url is not None
    host, port = parks.hk.egress_url.removeprefix("http://").rsplit(":", 1)
    authority = parks.sz.ingress_url.removeprefix("https://")
    raw = socket.create_connection((host, int(port)), timeout=15)
    raw.sendall(
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        f"Proxy-Authorization: Bearer {RESEARCH_TOKEN}\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return raw, authority


class RawTunnel:
    """A CONNECT tunnel driven by hand (blocking; run in a thread)."""

    def __init__(self, parks: Parks, pki: Path, *, alpn: list[str] | None = None) -> None:
        raw, self.authority = open_raw_tunnel(parks)
        context = ssl.create_default_context(cafile=str(intercept_ca(pki)))
        if alpn:
            context.set_alpn_protocols(alpn)
        self.tls = context.wrap_socket(raw, server_hostname=self.authority.rsplit(":", 1)[0])
        self.file = self.tls.makefile("rb")

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
        self.tls.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {self.authority}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return self.answer()

    def answer(self) -> tuple[int, dict[str, Any]]:
        status_line = self.file.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, json.loads(self.file.read(length)) if length else {}

    def close(self) -> None:
        self.file.close()
        self.tls.close()


async def test_one_tunnel_carries_several_transfers_and_only_transfers(
    tmp_path: Path, pki: Path
) -> None:
    async with proxy_parks(tmp_path, pki) as parks:

        def session() -> list[tuple[int, dict[str, Any]]]:
            tunnel = RawTunnel(parks, pki, alpn=["h2", "http/1.1"])
            try:
                assert tunnel.tls.selected_alpn_protocol() == "http/1.1"
                assert tunnel.tls.version() in ("TLSv1.2", "TLSv1.3")
                return [
                    tunnel.request("PUT", "/v1/envelopes/sz-lab/one.csv", CLEAN),
                    tunnel.request("POST", "/v1/envelopes/sz-lab/two.csv", CLEAN[:500]),
                    tunnel.request("GET", "/v1/envelopes/sz-lab/one.csv"),
                    tunnel.request("DELETE", "/v1/envelopes/sz-lab/one.csv"),
                    tunnel.request("PUT", "/v1/envelopes/sz-lab/three.csv", CLEAN[:100]),
                ]
            finally:
                tunnel.close()

        answers = await asyncio.to_thread(session)
        assert [status for status, _ in answers] == [201, 201, 405, 405, 201]
        assert answers[2][1]["status"] == 405
        assert parks.inbox_files("sz-lab") == {
            "one.csv": CLEAN,
            "two.csv": CLEAN[:500],
            "three.csv": CLEAN[:100],
        }
        # Ops see the tunnel and what went through it under fixed handler names.
        async with parks.session.get(f"{parks.hk.egress_url}/metrics") as response:
            metrics = await response.text()
        counted = {
            (m["handler"], m["code"]): float(m["n"])
            for m in re.finditer(
                r'gateway_http_requests_total\{code="(?P<code>\d+)",handler="(?P<handler>[a-z-]+)"'
                r',listener="egress"\} (?P<n>[0-9.]+)',
                metrics,
            )
        }
        assert counted[("tunnelled", "201")] == 3
        assert counted[("tunnelled", "405")] == 2
        assert counted[("connect", "200")] == 1


async def test_a_server_name_other_than_the_connect_host_fails_the_handshake(
    tmp_path: Path, pki: Path
) -> None:
    """The SNI check is the server's: even a client that verifies nothing gets no session."""
    async with proxy_parks(tmp_path, pki) as parks:

        def handshake(server_name: str) -> None:
            raw, _ = open_raw_tunnel(parks)
            careless = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            careless.check_hostname = False
            careless.verify_mode = ssl.CERT_NONE
            with raw, careless.wrap_socket(raw, server_hostname=server_name):
                pass

        # The gateway refuses the name and drops the connection (the client sees EOF).
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(handshake, "partner.example.org")
        assert transfer_events(parks) == []


async def test_http2_inside_a_tunnel_gets_a_clear_error(tmp_path: Path, pki: Path) -> None:
    async with proxy_parks(tmp_path, pki) as parks:

        def preface() -> tuple[int, dict[str, Any]]:
            tunnel = RawTunnel(parks, pki)
            try:
                tunnel.tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                return tunnel.answer()
            finally:
                tunnel.close()

        status, body = await asyncio.to_thread(preface)
        assert status == 505, body
        assert "HTTP/1.1" in body["detail"]


async def test_a_silent_client_inside_a_tunnel_meets_the_head_time_out(
    tmp_path: Path, pki: Path
) -> None:
    async with proxy_parks(tmp_path, pki, head_timeout=1.0) as parks:

        def silent() -> tuple[int, dict[str, Any]]:
            tunnel = RawTunnel(parks, pki)
            try:
                return tunnel.answer()  # says nothing: the gateway speaks first, 408
            finally:
                tunnel.close()

        status, _ = await asyncio.wait_for(asyncio.to_thread(silent), 20)
        assert status == 408


async def test_idle_tunnels_do_not_starve_transfers(tmp_path: Path, pki: Path) -> None:
    """Fifty tunnels opened and left silent (a bounded flood) while a transfer runs."""
    async with proxy_parks(tmp_path, pki) as parks:
        assert parks.hk.egress_url is not None
        assert parks.sz.ingress_url is not None
        host, port = parks.hk.egress_url.removeprefix("http://").rsplit(":", 1)
        authority = parks.sz.ingress_url.removeprefix("https://")
        idle = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
                f"Proxy-Authorization: Bearer {RESEARCH_TOKEN}\r\n\r\n".encode()
            )
            idle.append((reader, writer))
        try:
            for reader, _ in idle:
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(
                    b"HTTP/1.1 200"
                )
            status, body = await asyncio.wait_for(parks.put("sz-lab", "during.csv", CLEAN), 20)
            assert status == 201, body
        finally:
            for _, writer in idle:
                writer.close()


async def test_a_tls_proxy_listener_takes_the_client_certificate_as_the_sender(
    tmp_path: Path, pki: Path
) -> None:
    """``--proxy https://…`` with a client certificate: TLS to the proxy, the tunnel's
    TLS inside it, and the certificate's CN is the sender without any token."""
    from tests.server.test_attacks import _issue_client

    hk = ParkPaths(pki / "hk")
    research = _issue_client(pki, "hk", "hk-research", tmp_path / "senders")
    egress: dict[str, Any] = {
        "intercept": {"cert": hk.intercept_ca_cert, "key": hk.intercept_ca_key},
        "tls": {"cert": hk.cert("server"), "key": hk.key("server"), "client_ca": hk.ca_cert},
    }
    async with start_parks(tmp_path / "run", pki, egress=egress) as parks:
        assert parks.hk.egress_url is not None
        keep = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        args = [
            "--proxy", parks.hk.egress_url, "--proxy-cacert", str(hk.ca_cert),
            "--proxy-cert", str(research[0]), "--proxy-key", str(research[1]),
            "--cacert", str(intercept_ca(pki)),
        ]  # fmt: skip
        code, status, body = await asyncio.to_thread(
            curl, parks, destination(parks, "cert.csv"), CLEAN, tmp_path, *args, env=keep
        )
        assert (code, status) == (0, 201), body
        # Without the certificate and without a token: the CONNECT is answered 407.
        refused = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_connect}", "--max-time", "30",
             "-T", "-", *args[:4], "--cacert", str(intercept_ca(pki)),
             destination(parks, "none.csv")],
            input=CLEAN, env=keep, capture_output=True, check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert refused.stdout == b"407", refused.stderr
        assert parks.inbox_files("sz-lab") == {"cert.csv": CLEAN}
        senders = {r["sender"] for r in transfer_events(parks) if r.get("sender")}
        assert senders == {"hk-research"}
