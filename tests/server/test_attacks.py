"""Hostile clients against the running parks: the attack classes that hold stay held (issue 11).

Each test attacks the real HK egress (and, where it matters, the SZ ingress)
on loopback as a misbehaving client would, mostly over raw sockets so that no
client library tidies the request first, and checks concrete outcomes: the
status and problem type, whether the connection was closed, what the inbox,
a recording listener and both audit logs hold afterwards. Every refusal has a
positive control, in its test or beside it (the same path with honest input
gets through), so no test passes because the path was dead. THREAT_MODEL.md
names these tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.crypto.certs import ParkPaths
from gateway.crypto.tls import client_ssl_context
from gateway.server.app import reload_policy
from gateway.server.config import token_digest
from gateway.server.egress_state import EGRESS
from tests.server.conftest import (
    GHOST_TOKEN,
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    Parks,
    start_parks,
)
from tests.server.test_auth import _issue_client

#: A valid Mainland resident ID (GB 11643 check character): personal data the policy blocks.
RESIDENT_ID = b"440305198412252041"
CLEAN = b"run_id,instrument,temperature_c\n" + b"".join(
    f"R{i:04d},spectrometer-{i % 4},{20 + i % 17}.{i % 10}\n".encode() for i in range(200)
)
#: Seconds to wait for the gateway to answer or close; far above what loopback needs.
WAIT = 10.0

# --------------------------------------------------------------------------- raw HTTP


@dataclass
class Reply:
    """One HTTP/1.x response read off a raw socket (header names in lower case)."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    """Everything a raw connection got back: the responses, and whether the server closed it."""

    replies: list[Reply]
    closed: bool


def parse_replies(data: bytes) -> list[Reply]:
    """Split a byte stream into responses (the gateway always sends Content-Length)."""
    replies: list[Reply] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", len(rest)))
        replies.append(Reply(status, headers, rest[:length]))
        data = rest[length:]
    return replies


def address(parks: Parks) -> tuple[str, int]:
    host, port = parks.egress.split("//")[1].rsplit(":", 1)
    return host, int(port)


async def exchange(parks: Parks, data: bytes, wait: float = WAIT) -> Exchange:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait``)."""
    reader, writer = await asyncio.open_connection(*address(parks))
    received = b""
    closed = False
    try:
        writer.write(data)
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return Exchange(parse_replies(received), closed)


def auth(token: str = RESEARCH_TOKEN) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()


def put(target: str, body: bytes, *, host: str = "gateway", close: bool = True) -> bytes:
    """A well-framed PUT (Content-Length) with the research token.

    ``close``: ask the gateway to close the connection after answering, so
    :func:`exchange` returns at once instead of waiting out a keep-alive.
    """
    return (
        f"PUT {target} HTTP/1.1\r\nHost: {host}\r\n".encode()
        + auth()
        + (b"Connection: close\r\n" if close else b"")
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def is_problem(reply: Reply) -> bool:
    return reply.headers.get("content-type", "").startswith("application/problem+json")


def transfer_records(parks: Parks, park: str = "hk") -> list[dict[str, Any]]:
    return [r for r in parks.audit_events(park) if r.get("kind") == "transfer"]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


async def hold_a_review(parks: Parks) -> str:
    """Push a clean file on the review route; its transfer id (held, ``review``)."""
    status, body = await parks.put("sz-review", "held.csv", CLEAN)
    assert status == 202, body
    tid: str = body["transfer_id"]
    assert parks.events_of(tid) == ["review"]
    return tid


async def officer_state(parks: Parks, tid: str) -> str:
    headers = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=headers) as r:
        assert r.status == 200
        state: str = (await r.json())["state"]
    return state


# --------------------------------------------------------------------------- smuggling


def _smuggled_transfer(_: str) -> bytes:
    """A second request hidden in the first one's body: a transfer on another route."""
    return put("/v1/transfers/sz-clinical/smuggled.csv", b"abc", close=False)


#: The body of an approval (SPEC §5: a required comment).
APPROVAL = b'{"comment": "approved"}'


def _smuggled_approval(review_id: str, extra: bytes = b"") -> bytes:
    """A second request hidden in the first one's body: an officer approving a held review."""
    return (
        f"POST /v1/reviews/{review_id}/approve HTTP/1.1\r\nHost: gateway\r\n".encode()
        + auth(OFFICER_TOKEN)
        + extra
        + f"Content-Type: application/json\r\nContent-Length: {len(APPROVAL)}\r\n\r\n".encode()
        + APPROVAL
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _framings(smuggled: bytes) -> dict[str, tuple[bytes, bytes]]:
    """(header lines, body) of a first request whose framing hides ``smuggled``.

    CL.TE: a front end reading Content-Length forwards everything, a back end
    reading the chunked body stops at ``0`` and takes the rest as a new request.
    TE.CL: the reverse, the smuggled request sits inside a chunk. The rest vary
    how Transfer-Encoding or Content-Length is written so that two parsers
    disagree about which one applies.
    """
    cl_te = b"0\r\n\r\n" + smuggled
    te_cl = _chunk(smuggled) + b"0\r\n\r\n"
    length = f"Content-Length: {len(cl_te)}\r\n".encode()
    # TE.CL: the length covers only the chunk-size line, so the chunk is the next request.
    size_line_length = f"Content-Length: {len(_chunk(smuggled)) - len(smuggled) - 2}\r\n".encode()
    return {
        "cl-te": (length + b"Transfer-Encoding: chunked\r\n", cl_te),
        "te-cl": (b"Transfer-Encoding: chunked\r\n" + size_line_length, te_cl),
        "two-content-lengths": (b"Content-Length: 0\r\n" + length, cl_te),
        "te-chunked-identity": (length + b"Transfer-Encoding: chunked, identity\r\n", cl_te),
        "te-identity-then-chunked-lines": (
            length + b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
            cl_te,
        ),
        "te-space-before-colon": (length + b"Transfer-Encoding : chunked\r\n", cl_te),
        "te-tab-value": (length + b"Transfer-Encoding:\tchunked\r\n", cl_te),
        "te-xchunked": (length + b"Transfer-Encoding: xchunked\r\n", cl_te),
        "te-obs-fold": (length + b"Transfer-Encoding: identity\r\n\tchunked\r\n", cl_te),
        "te-line-starting-with-space": (length + b" Transfer-Encoding: chunked\r\n", cl_te),
        "te-bare-cr": (length + b"Transfer-Encoding: chunked\r\r\n", cl_te),
    }


FRAMINGS = sorted(_framings(b""))


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_smuggled_requests_are_never_executed(parks: Parks, framing: str) -> None:
    """Ambiguous framing is a 400 with the connection closed; the hidden request never runs."""
    review_id = await hold_a_review(parks)
    before = len(transfer_records(parks))
    for smuggle in (_smuggled_transfer, _smuggled_approval):
        lines, body = _framings(smuggle(review_id))[framing]
        request = (
            b"PUT /v1/transfers/sz-lab/first.csv HTTP/1.1\r\nHost: gateway\r\n"
            + auth()
            + lines
            + b"\r\n"
            + body
        )
        answer = await exchange(parks, request)
        assert [r.status for r in answer.replies] == [400], (framing, smuggle.__name__)
        assert is_problem(answer.replies[0])
        assert answer.closed, "the connection must not be reused after a framing error"
    await parks.settle()
    # Neither the first nor a hidden request ran: no transfer, no approval, no delivery.
    assert len(transfer_records(parks)) == before
    assert parks.events_of(review_id) == ["review"]
    assert await officer_state(parks, review_id) == "review"
    assert files_under(parks.inbox) == []
    assert transfer_records(parks, "sz") == []


@pytest.mark.parametrize("smuggle", [_smuggled_transfer, _smuggled_approval])
async def test_transfer_encoding_in_http_1_0_is_faulty_framing(parks: Parks, smuggle: Any) -> None:
    """RFC 9112 §6.1: an HTTP/1.0 request with Transfer-Encoding is 400, then closed.

    An HTTP/1.0 front end knows no chunked framing: it would take the chunks,
    and the request after them, for one body. The gateway must not run the
    request hidden there (it once did, on a kept-alive connection).
    """
    review_id = await hold_a_review(parks)
    before = len(transfer_records(parks))
    request = (
        b"PUT /v1/transfers/sz-lab/first.csv HTTP/1.0\r\nHost: gateway\r\n"
        + auth()
        + b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunk(b"abc")
        + b"0\r\n\r\n"
        + smuggle(review_id)
    )
    answer = await exchange(parks, request)
    assert [r.status for r in answer.replies] == [400]
    assert is_problem(answer.replies[0])
    assert answer.closed
    await parks.settle()
    assert len(transfer_records(parks)) == before
    assert parks.events_of(review_id) == ["review"]
    assert files_under(parks.inbox) == []


async def test_a_well_framed_pipeline_runs_every_request(parks: Parks) -> None:
    """The control for the smuggling cases: honest pipelining is served request by request.

    Shows that :func:`exchange` does see a second request when one runs, so the
    smuggling test above would notice a hidden request being executed.
    """
    review_id = await hold_a_review(parks)
    request = (
        put("/v1/transfers/sz-lab/first.csv", b"abc", close=False)
        + _smuggled_transfer(review_id)
        + _smuggled_approval(review_id, b"Connection: close\r\n")
    )
    answer = await exchange(parks, request)
    assert [r.status for r in answer.replies] == [201, 201, 201]
    assert answer.closed
    await parks.settle()
    assert parks.inbox_files("sz-lab") == {"first.csv": b"abc"}
    assert parks.inbox_files("sz-clinical") == {"smuggled.csv": b"abc"}
    assert parks.events_of(review_id) == ["review", "approved", "delivered"]


async def test_a_transfer_coding_the_gateway_does_not_decode_hides_nothing(parks: Parks) -> None:
    """``Transfer-Encoding: gzip, chunked``: what is classified is exactly what is delivered.

    aiohttp removes only the chunked framing and leaves the gzip layer in the
    body, so the classifier opens it under its own limits (a refusal of the
    unknown coding, 400/415/501, would hold too). Personal data inside never
    crosses, and a clean body is delivered as the coded bytes that were
    classified, never as something decoded behind the classifier's back.
    """
    personal = b"name,resident_id\n" + (b"Chen Wei," + RESIDENT_ID + b"\n") * 20

    def coded_put(name: str, body: bytes) -> bytes:
        return (
            f"PUT /v1/transfers/sz-lab/{name} HTTP/1.1\r\nHost: gateway\r\n".encode()
            + auth()
            + b"Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
            + _chunk(gzip.compress(body))
            + b"0\r\n\r\n"
        )

    (reply,) = (await exchange(parks, coded_put("coded.csv", personal))).replies
    assert is_problem(reply)
    # RFC 9112 §6.1: a transfer coding the gateway does not implement is 501.
    assert reply.status == 501, reply
    await parks.settle()
    assert files_under(parks.inbox) == []
    events = [r["event"] for r in transfer_records(parks)]
    assert "allowed" not in events
    assert "delivered" not in events
    # Control: a clean body under the same label is delivered as the classified bytes.
    (reply,) = (await exchange(parks, coded_put("clean.csv.gz", CLEAN))).replies
    await parks.settle()
    assert reply.status == 501, reply
    assert files_under(parks.inbox) == []


# --------------------------------------------------------------------------- names


#: Transfer names as sent on the wire (percent-encoded where a client would have to).
HOSTILE_NAMES = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "..%2Fescape.csv",
    "%2e%2e%2f%2e%2e%2fescape.csv",
    "a%2Fescape.csv",
    "%2Fescape.csv",
    "%2F%2Fescape.csv",
    "%2Ftmp%2Fescape.csv",
    "..%5Cescape.csv",
    "a%5Cescape.csv",
    "C:%5Cescape.csv",
    ".escape.csv",
    "%2eescape.csv",
    "escape%00.csv",
    "escape.csv%00.exe",
    "escape%0A.csv",
    "escape%0D.csv",
    "escape%09.csv",
    "escape%1B.csv",
    "escape%7F.csv",
    "x" * 252 + ".csv",  # 256 bytes: one over the file-system limit
    "%E6%95%B0" * 86,  # 258 bytes of UTF-8 in 86 characters
    "escape%E2%80%AEvsc.exe",  # RIGHT-TO-LEFT OVERRIDE
    "escape%E2%81%A6.csv",  # LEFT-TO-RIGHT ISOLATE
    "esc%E2%80%8Bape.csv",  # ZERO WIDTH SPACE
    "esc%E2%80%8Dape.csv",  # ZERO WIDTH JOINER
    "%EF%BB%BFescape.csv",  # BYTE ORDER MARK
]
#: Targets with the traversal in the route or in extra path segments (no route: 404).
HOSTILE_TARGETS = [
    "/v1/transfers/sz-lab//tmp/escape.csv",
    "/v1/transfers/sz-lab/../escape.csv",
    "/v1/transfers/../transfers/sz-lab/escape.csv",
    "/v1/transfers/%2e%2e/sz-lab/escape.csv",
    "/v1/transfers/sz-lab%2F..%2Fsz-clinical/escape.csv",
]


async def test_hostile_names_write_nothing_outside_the_inbox(parks: Parks) -> None:
    """Traversal, odd and overlong names are refused; nothing lands anywhere but the route dir."""
    refused: dict[str, int] = {}
    for i, name in enumerate(HOSTILE_NAMES):
        answer = await exchange(parks, put(f"/v1/transfers/sz-lab/{name}", b"MARK-%d" % i))
        (reply,) = answer.replies
        assert is_problem(reply), name
        refused[name] = reply.status
    for i, target in enumerate(HOSTILE_TARGETS):
        (reply,) = (await exchange(parks, put(target, b"MARK-T%d" % i))).replies
        assert is_problem(reply), target
        refused[target] = reply.status
    # Forward-proxy form: the last segment of the URL is the name, after unquoting.
    twin = parks.sz.ingress_url
    assert twin is not None
    twin = twin.replace("https://", "http://")
    for i, name in enumerate(("..", "%2e%2e", "..%2F..%2Fescape.csv", "%2Ftmp%2Fescape.csv")):
        (reply,) = (await exchange(parks, put(f"{twin}/{name}", b"MARK-P%d" % i))).replies
        assert is_problem(reply), name
        refused["proxy " + name] = reply.status
    assert {k: v for k, v in refused.items() if v != 400} == {
        target: 404 for target in HOSTILE_TARGETS
    }
    # Control: the longest legal name (255 bytes) is delivered, so the path was live.
    longest = "x" * 251 + ".csv"
    (reply,) = (await exchange(parks, put(f"/v1/transfers/sz-lab/{longest}", b"MARK-OK"))).replies
    assert reply.status == 201, reply
    await parks.settle()
    inbox = [p.relative_to(parks.inbox) for p in files_under(parks.inbox)]
    assert inbox == [Path("sz-lab") / longest]
    # Walk everything the test's parks own: only the delivered file holds a marker in clear.
    holding = [p for p in files_under(parks.root) if b"MARK-" in p.read_bytes()]
    assert holding == [parks.inbox / "sz-lab" / longest]
    for above in (parks.root, parks.root.parent):
        assert not [p for p in above.iterdir() if "escape" in p.name]
    assert not [p for p in files_under(parks.root) if "escape" in p.name]


async def test_the_ingress_refuses_hostile_names_even_from_the_twin(parks: Parks) -> None:
    """Defence in depth: an envelope from the pinned twin itself cannot name a path.

    The twin's client certificate passes the pin; the ingress still validates
    the name and the route before it reads a byte of the envelope.
    """
    hk, sz = ParkPaths(parks.pki / "hk"), ParkPaths(parks.pki / "sz")
    context = client_ssl_context(ca=sz.ca_cert, cert=hk.cert("client"), key=hk.key("client"))
    base = parks.sz.ingress_url
    cases = {
        "/v1/envelopes/sz-lab/..": 400,
        "/v1/envelopes/sz-lab/%2e%2e": 400,
        "/v1/envelopes/sz-lab/..%2F..%2Fescape.csv": 400,
        "/v1/envelopes/sz-lab/%2Ftmp%2Fescape.csv": 400,
        "/v1/envelopes/sz-lab/.escape.csv": 400,
        "/v1/envelopes/sz-lab/escape%00.csv": 400,
        "/v1/envelopes/sz-lab/escape%E2%80%AEvsc.exe": 400,
        "/v1/envelopes/%2e%2e/escape.csv": 404,
        "/v1/envelopes/sz-lab%2F..%2F..%2Ftmp/escape.csv": 404,
    }
    seen = {}
    for path, _ in cases.items():
        url = URL(f"{base}{path}", encoded=True)
        async with parks.session.post(url, data=b"not an envelope", ssl=context) as r:
            seen[path] = r.status
            assert r.content_type == "application/problem+json"
    assert seen == cases
    assert files_under(parks.inbox) == []
    assert not [p for p in files_under(parks.root) if "escape" in p.name]
    # Control: the same client reaches the handler (a non-envelope body fails as one).
    url = URL(f"{base}/v1/envelopes/sz-lab/fine.csv", encoded=True)
    async with parks.session.post(url, data=b"not an envelope", ssl=context) as r:
        assert r.status == 400
    assert [r["event"] for r in transfer_records(parks, "sz")] == ["failed"]


# --------------------------------------------------------------------------- forward proxy


@dataclass
class Listener:
    """A plain TCP listener on loopback that records every connection it accepts."""

    port: int = 0
    connections: list[bytes] = field(default_factory=list)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            self.connections.append(await asyncio.wait_for(reader.read(4096), 2))
        writer.close()


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[Listener]:
    """Run a :class:`Listener` on 127.0.0.1 (the "other host" a trick would reach)."""
    recorder = Listener()
    server = await asyncio.start_server(recorder._accept, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        server.close()
        await server.wait_closed()


async def test_forward_proxy_serves_only_the_exact_route_destination(parks: Parks) -> None:
    """Absolute-URI tricks: aliases, userinfo, ports, schemes, Host headers, CONNECT.

    Only a URL whose host and port are a route's destination is a transfer,
    and it goes to that route's configured destination; every other host is
    403 and the gateway opens no connection anywhere else.
    """
    ingress = parks.sz.ingress_url
    assert ingress is not None
    port = int(ingress.rsplit(":", 1)[1])
    # A route whose destination is written with a host name, for the case and dot tricks.
    (parks.root / "policies" / "zz-by-name.yaml").write_text(
        "routes:\n  sz-by-name:\n    direction: hk->sz\n"
        f"    destination: https://localhost:{port}/v1/envelopes/sz-lab\n"
        f"    recipient: {parks.identity.recipient.encode()}\n"
        "    legal_basis: gba-standard-contract\n"
    )
    assert parks.hk.egress_app is not None
    assert (await reload_policy(parks.hk.egress_app)).ok
    envelopes = "/v1/envelopes/sz-lab"
    async with listener() as other:
        cases: list[tuple[str, str, str | None, int]] = [
            # (case, absolute URI, Host header, expected status)
            ("route destination", f"http://127.0.0.1:{port}{envelopes}/p1.csv", None, 201),
            (
                "userinfo before the route host",
                f"http://evil@127.0.0.1:{port}{envelopes}/p2.csv",
                None,
                201,
            ),
            (
                "route host as userinfo",
                f"http://127.0.0.1:{port}@127.0.0.1:{other.port}/x.csv",
                None,
                403,
            ),
            ("host in upper case", f"http://LOCALHOST:{port}{envelopes}/p3.csv", None, 201),
            ("https absolute form", f"https://127.0.0.1:{port}{envelopes}/p4.csv", None, 201),
            (
                "Host header names another host",
                f"http://127.0.0.1:{port}{envelopes}/p5.csv",
                f"127.0.0.1:{other.port}",
                201,
            ),
            ("trailing dot", f"http://localhost.:{port}{envelopes}/x.csv", None, 403),
            ("trailing dot on the IP", f"http://127.0.0.1.:{port}{envelopes}/x.csv", None, 403),
            ("IPv6 loopback", f"http://[::1]:{port}{envelopes}/x.csv", None, 403),
            ("IPv4-mapped IPv6", f"http://[::ffff:127.0.0.1]:{port}{envelopes}/x.csv", None, 403),
            ("decimal IP", f"http://2130706433:{port}{envelopes}/x.csv", None, 403),
            ("short IP", f"http://127.1:{port}{envelopes}/x.csv", None, 403),
            ("hex IP", f"http://0x7f000001:{port}{envelopes}/x.csv", None, 403),
            ("octal IP", f"http://0177.0.0.1:{port}{envelopes}/x.csv", None, 403),
            ("another port", f"http://127.0.0.1:{other.port}{envelopes}/x.csv", None, 403),
            ("localhost, another port", f"http://localhost:{other.port}/x.csv", None, 403),
            ("default port", f"http://127.0.0.1{envelopes}/x.csv", None, 403),
            ("https default port", f"https://127.0.0.1{envelopes}/x.csv", None, 403),
            (
                "Host header names the route",
                f"http://127.0.0.1:{other.port}/x.csv",
                f"127.0.0.1:{port}",
                403,
            ),
            ("the egress itself", f"{parks.egress}/v1/transfers/sz-lab/x.csv", None, 403),
        ]
        seen = {}
        for case, url, host, _ in cases:
            (reply,) = (await exchange(parks, put(url, b"abc", host=host or "gateway"))).replies
            seen[case] = reply.status
            if reply.status != 201:
                assert is_problem(reply), case
        assert seen == {case: status for case, _, _, status in cases}
        # CONNECT is not a tunnel (issue 18): refused, and nothing is opened to its target.
        for target in (f"127.0.0.1:{other.port}", f"127.0.0.1:{port}"):
            request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode() + auth() + b"\r\n"
            answer = await exchange(parks, request, wait=2)
            assert answer.replies, target
            assert 400 <= answer.replies[0].status < 500, target
        await parks.settle()
        assert other.connections == []
    delivered = {f"p{i}.csv" for i in range(1, 6)}
    assert set(parks.inbox_files("sz-lab")) == delivered
    assert files_under(parks.inbox / "sz-clinical") == []
    assert sorted(r["event"] for r in transfer_records(parks, "sz")) == ["delivered"] * 5


# --------------------------------------------------------------------------- tokens


#: Authorization header lines that identify no sender (None: no header at all).
NO_SENDER = {
    "no header": None,
    "empty": b"Authorization: \r\n",
    "scheme only": b"Authorization: Bearer\r\n",
    "scheme and a space": b"Authorization: Bearer \r\n",
    "basic": b"Authorization: Basic cmVzZWFyY2g6cGFzc3dvcmQ=\r\n",
    "another scheme with the token": f"Authorization: Token {RESEARCH_TOKEN}\r\n".encode(),
    "tab instead of a space": f"Authorization: Bearer\t{RESEARCH_TOKEN}\r\n".encode(),
    "no space": f"Authorization: Bearer{RESEARCH_TOKEN}\r\n".encode(),
    "unknown token": b"Authorization: Bearer tok-unknown-0123456789\r\n",
    "unknown token, trailing spaces": b"Authorization: Bearer tok-unknown-0123456789   \r\n",
    "token and more": f"Authorization: Bearer {RESEARCH_TOKEN} {RESEARCH_TOKEN}\r\n".encode(),
    "token prefix": f"Authorization: Bearer {RESEARCH_TOKEN[:-1]}\r\n".encode(),
    "token with a suffix": f"Authorization: Bearer {RESEARCH_TOKEN}x\r\n".encode(),
    "identity unknown to the policy": auth(GHOST_TOKEN),
    "officer token is no sender": auth(OFFICER_TOKEN),
    "proxy authorization only": f"Proxy-Authorization: Bearer {RESEARCH_TOKEN}\r\n".encode(),
}
#: A declared body far larger than anything the gateway should read before refusing.
DECLARED = 50_000_000


@pytest.mark.parametrize("case", sorted(NO_SENDER))
async def test_no_sender_is_refused_before_the_body(parks: Parks, case: str) -> None:
    """401 with a challenge, answered from the headers alone; nothing spooled, logged or sent."""
    line = NO_SENDER[case] or b""
    reader, writer = await asyncio.open_connection(*address(parks))
    try:
        writer.write(
            b"PUT /v1/transfers/sz-lab/a.csv HTTP/1.1\r\nHost: gateway\r\n"
            + line
            + f"Content-Length: {DECLARED}\r\n\r\n".encode()
            + CLEAN[:1000]
        )
        await writer.drain()
        # Not one more body byte is sent: the answer must come from the headers.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        (reply,) = parse_replies(head)
        length = int(reply.headers["content-length"])
        reply.body = await asyncio.wait_for(reader.readexactly(length), WAIT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert reply.status == 401, reply
    assert reply.headers["www-authenticate"].startswith('Bearer realm="hksz-gateway"')
    assert is_problem(reply)
    await parks.settle()
    assert transfer_records(parks) == []
    assert files_under(parks.root / "hk" / "spool") == []
    assert files_under(parks.inbox) == []
    assert parks.recorder.received == {}


@pytest.mark.parametrize("valid_first", [True, False])
async def test_two_authorization_headers_are_refused(parks: Parks, valid_first: bool) -> None:
    """Which of two Authorization headers a front end honours is anyone's guess: neither is."""
    lines = [auth(), b"Authorization: Bearer tok-unknown-0123456789\r\n"]
    if not valid_first:
        lines.reverse()
    answer = await exchange(
        parks,
        b"PUT /v1/transfers/sz-lab/a.csv HTTP/1.1\r\nHost: gateway\r\n"
        + b"".join(lines)
        + f"Content-Length: {len(CLEAN)}\r\nConnection: close\r\n\r\n".encode()
        + CLEAN,
    )
    assert [r.status for r in answer.replies] == [400]
    assert is_problem(answer.replies[0])
    await parks.settle()
    assert transfer_records(parks) == []
    assert files_under(parks.inbox) == []


async def test_a_valid_token_is_the_control_for_the_refusals(parks: Parks) -> None:
    """The same raw request with the research token is received, classified and delivered."""
    answer = await exchange(parks, put("/v1/transfers/sz-lab/a.csv", CLEAN))
    assert [r.status for r in answer.replies] == [201]
    await parks.settle()
    assert parks.inbox_files("sz-lab") == {"a.csv": CLEAN}


@pytest.mark.parametrize("case", ["no header", "unknown token", "identity unknown to the policy"])
async def test_forward_proxy_requests_without_a_sender_are_401(parks: Parks, case: str) -> None:
    """Proxy form too: 401 for the route's own destination, before any route is looked up."""
    twin = parks.sz.ingress_url
    assert twin is not None
    line = NO_SENDER[case] or b""
    target = twin.replace("https://", "http://") + "/v1/envelopes/sz-lab/a.csv"
    request = (
        f"PUT {target} HTTP/1.1\r\nHost: gateway\r\n".encode()
        + line
        + b"Content-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    (reply,) = (await exchange(parks, request)).replies
    assert reply.status == 401
    assert "www-authenticate" in reply.headers
    await parks.settle()
    assert transfer_records(parks) == []
    assert files_under(parks.inbox) == []


async def test_a_client_certificate_names_the_sender_and_nothing_else(
    tmp_path: Path, pki: Path
) -> None:
    """On a TLS egress, the verified certificate's CN is the sender; a token cannot override it.

    A certificate from another CA fails the handshake; one from the park CA
    whose CN is no sender of the policy is 401, even with a valid token beside it.
    """
    hk = ParkPaths(pki / "hk")
    tls = {"cert": hk.cert("server"), "key": hk.key("server"), "client_ca": hk.ca_cert}
    certs = tmp_path / "senders"
    research = _issue_client(pki, "hk", "hk-research", certs / "hk")
    stranger = _issue_client(pki, "hk", "mallory", certs / "hk")
    foreign = _issue_client(pki, "sz", "hk-research", certs / "sz")
    async with start_parks(tmp_path / "run", pki, egress={"tls": tls}) as parks:

        async def push(name: str, cert: tuple[Path, Path] | None, token: str | None) -> int:
            context = client_ssl_context(
                ca=hk.ca_cert, cert=cert[0] if cert else None, key=cert[1] if cert else None
            )
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            url = f"{parks.egress}/v1/transfers/sz-lab/{name}"
            async with parks.session.put(url, data=CLEAN, headers=headers, ssl=context) as r:
                return r.status

        assert await push("cert.csv", research, None) == 201
        assert await push("token.csv", None, RESEARCH_TOKEN) == 201
        assert await push("stranger.csv", stranger, None) == 401
        assert await push("stranger-with-token.csv", stranger, RESEARCH_TOKEN) == 401
        assert await push("nobody.csv", None, None) == 401
        with pytest.raises(aiohttp.ClientError):
            await push("foreign.csv", foreign, None)
        await parks.settle()
        assert sorted(parks.inbox_files("sz-lab")) == ["cert.csv", "token.csv"]
        senders = {r["sender"] for r in transfer_records(parks)}
        assert senders == {"hk-research"}


# --------------------------------------------------------------------------- officers


#: Credentials that are not a compliance officer's, and the refusal each gets.
NOT_OFFICERS: dict[str, tuple[str | None, int]] = {
    "no token": (None, 401),
    "basic": ("Basic b2ZmaWNlcjpwYXNzd29yZA==", 401),
    "scheme only": ("Bearer", 401),
    "sender token": (f"Bearer {RESEARCH_TOKEN}", 403),
    "identity unknown to the policy": (f"Bearer {GHOST_TOKEN}", 403),
    "unknown token": ("Bearer tok-unknown-0123456789", 403),
    "officer token prefix": (f"Bearer {OFFICER_TOKEN[:-1]}", 403),
}


async def test_officer_endpoints_refuse_everyone_else(parks: Parks) -> None:
    """Approve, reject and the review listings need an officer token; the review stays open."""
    review_id = await hold_a_review(parks)
    held = files_under(parks.root / "hk" / "spool" / "held")
    assert held
    for case, (authorization, expected) in NOT_OFFICERS.items():
        headers = {"Authorization": authorization} if authorization else {}
        for verb in ("approve", "reject"):
            url = f"{parks.egress}/v1/reviews/{review_id}/{verb}"
            body = {"comment": "looks fine to me"}
            async with parks.session.post(url, json=body, headers=headers) as r:
                assert r.status == expected, (case, verb)
                assert r.content_type == "application/problem+json"
                if expected == 401:
                    assert "WWW-Authenticate" in r.headers
        for listing in ("/v1/reviews?state=pending", f"/v1/reviews/{review_id}", "/v1/reviews"):
            async with parks.session.get(parks.egress + listing, headers=headers) as r:
                assert r.status >= 400, (case, listing)
                assert review_id not in await r.text()
    await parks.settle()
    assert parks.events_of(review_id) == ["review"]
    assert await officer_state(parks, review_id) == "review"
    assert files_under(parks.root / "hk" / "spool" / "held") == held
    assert files_under(parks.inbox) == []
    # Control: the officer's token does approve it, so the refusals above were the gate.
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    url = f"{parks.egress}/v1/reviews/{review_id}/approve"
    async with parks.session.post(url, json={"comment": "ok"}, headers=officer) as r:
        assert r.status == 201, await r.text()
    await parks.settle()
    assert parks.inbox_files("sz-review") == {"held.csv": CLEAN}


# --------------------------------------------------------------------------- other senders

PARTNER_TOKEN = "tok-partner-0123456789"
#: A second sender of another organisation, merged into the parks' policy set.
PARTNER_POLICY = "senders:\n  hk-partner:\n    team: chemistry\n    organisation: cuhk\n"


@pytest.fixture
async def two_senders(tmp_path: Path, pki: Path) -> AsyncIterator[Parks]:
    """The parks with a second real sender (``hk-partner``, token :data:`PARTNER_TOKEN`)."""
    (tmp_path / "policies").mkdir(parents=True)
    (tmp_path / "policies" / "senders-partner.yaml").write_text(PARTNER_POLICY)
    tokens = [
        {"sha256": token_digest(RESEARCH_TOKEN), "identity": "hk-research"},
        {"sha256": token_digest(PARTNER_TOKEN), "identity": "hk-partner"},
    ]
    async with start_parks(tmp_path, pki, egress={"tokens": tokens}) as parks:
        yield parks


async def _get(parks: Parks, path: str, token: str) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    async with parks.session.get(parks.egress + path, headers=headers) as r:
        return r.status, r.content_type, await r.read()


async def test_another_senders_transfer_does_not_exist_for_you(two_senders: Parks) -> None:
    """Sender B asking for sender A's transfers gets exactly the 404 of an id nobody used."""
    parks = two_senders
    # The partner is a working sender (the control for its refusals below).
    status, own = await parks.put("sz-lab", "partner.csv", CLEAN, token=PARTNER_TOKEN)
    assert status == 201, own
    ids = []
    for route, name, data, expected in (
        ("sz-lab", "a.csv", CLEAN, 201),
        ("sz-lab", "b.csv", b"id," + RESIDENT_ID + b"\n", 403),
        ("sz-review", "c.csv", CLEAN, 202),
    ):
        status, verdict = await parks.put(route, name, data)
        assert status == expected, verdict
        ids.append(verdict["transfer_id"])
    unknown = "t_" + os.urandom(16).hex()
    state = parks.hk.egress_app[EGRESS]  # type: ignore[index]
    for where in ("memory", "audit log"):
        if where == "audit log":
            state.recent.clear()  # as after a restart: looked up in the audit log
        for suffix in ("", "/receipt"):
            _, _, nobody = await _get(parks, f"/v1/transfers/{unknown}{suffix}", PARTNER_TOKEN)
            for tid in ids:
                status, kind, body = await _get(
                    parks, f"/v1/transfers/{tid}{suffix}", PARTNER_TOKEN
                )
                assert (status, kind) == (404, "application/problem+json"), (where, suffix)
                # Byte for byte the answer for an unknown id: nothing tells them apart.
                assert body.replace(tid.encode(), unknown.encode()) == nobody, (where, suffix)
                status, _, _ = await _get(parks, f"/v1/transfers/{tid}{suffix}", RESEARCH_TOKEN)
                assert status == 200, (where, suffix)
            status, _, _ = await _get(
                parks, f"/v1/transfers/{own['transfer_id']}{suffix}", PARTNER_TOKEN
            )
            assert status == 200, (where, suffix)
    # Nothing the partner did touched A's review.
    assert parks.events_of(ids[2]) == ["review"]
