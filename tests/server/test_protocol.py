"""Small protocol defects (issue 11, finding 9), on a real egress over raw sockets.

File names with C1 controls or line separators are refused; ``Expect:
100-continue`` is answered only once the sender, the route, the name and the
declared size were checked (a refused upload is never invited to send its
body); other expectations get a problem+json ``417``; requests the parser
refuses are answered with an ``HTTP/1.1`` status line.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest

from tests.server.conftest import RESEARCH_TOKEN, Parks

BODY = b"sample,reading\ns1,0.5\ns2,0.7\n"


async def _open(parks: Parks) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parks.egress.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, object]]:
    head = await _read_head(reader)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
    return head, json.loads(body) if body else {}


@pytest.mark.parametrize(
    "char",
    ["\u0085", "\u009b", "\u0080", "\u009f", "\u2028", "\u2029"],
    ids=["NEL", "CSI", "PAD", "APC", "LS", "PS"],
)
async def test_names_with_c1_controls_or_separators_are_refused(parks: Parks, char: str) -> None:
    name = quote(f"report{char}.csv")
    status, body = await parks.put("sz-lab", name, BODY)
    assert status == 400
    assert "control" in str(body["detail"])
    assert parks.inbox_files() == {}


async def test_plain_unicode_names_still_pass(parks: Parks) -> None:
    status, _ = await parks.put("sz-lab", quote("實驗數據-é.csv"), BODY)
    assert status == 201
    assert list(parks.inbox_files()) == ["實驗數據-é.csv"]


def _expecting(path: str, token: str | None, length: int, expect: str = "100-continue") -> bytes:
    lines = [
        f"PUT {path} HTTP/1.1",
        "Host: gateway",
        f"Content-Length: {length}",
        f"Expect: {expect}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("path", "token", "length", "status"),
    [
        ("/v1/transfers/sz-lab/a.csv", None, len(BODY), 401),
        ("/v1/transfers/sz-lab/a.csv", "tok-wrong-0000000000", len(BODY), 401),
        ("/v1/transfers/nowhere/a.csv", RESEARCH_TOKEN, len(BODY), 404),
        ("/v1/transfers/sz-lab/.hidden", RESEARCH_TOKEN, len(BODY), 400),
        ("/v1/transfers/sz-lab/huge.csv", RESEARCH_TOKEN, 1 << 40, 413),
    ],
    ids=["no-token", "unknown-token", "unknown-route", "bad-name", "too-large"],
)
async def test_refused_upload_is_not_invited_to_send(
    parks: Parks, path: str, token: str | None, length: int, status: int
) -> None:
    reader, writer = await _open(parks)
    try:
        writer.write(_expecting(path, token, length))
        await writer.drain()
        head, body = await _read_response(reader)
        # The body was never invited, so the client may or may not send it:
        # the connection closes rather than guess where a next request starts.
        rest = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert rest == b""
    assert b"connection: close" in head.lower()
    assert b"100 Continue" not in head
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert body["status"] == status
    assert parks.inbox_files() == {}


async def test_accepted_upload_is_invited_once_checked(parks: Parks) -> None:
    reader, writer = await _open(parks)
    try:
        writer.write(_expecting("/v1/transfers/sz-lab/ok.csv", RESEARCH_TOKEN, len(BODY)))
        await writer.drain()
        interim = await _read_head(reader)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(BODY)
        await writer.drain()
        head, body = await _read_response(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 201 "), head
    assert body["decision"] == "allow"
    await parks.settle()
    assert parks.inbox_files() == {"ok.csv": BODY}


async def test_an_http_1_0_client_is_never_sent_100_continue(parks: Parks) -> None:
    """RFC 9110 §10.1.1: 1xx answers are not for HTTP/1.0 clients."""
    reader, writer = await _open(parks)
    try:
        head = _expecting("/v1/transfers/sz-lab/old.csv", RESEARCH_TOKEN, len(BODY))
        writer.write(head.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), timeout=0.5)
        writer.write(BODY)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert b"100 Continue" not in raw
    assert raw.startswith((b"HTTP/1.0 201 ", b"HTTP/1.1 201 ")), raw[:80]


@pytest.mark.parametrize("expect", ["200-ok", "100-continue, something", "fast please"])
async def test_other_expectations_are_417_problem_json(parks: Parks, expect: str) -> None:
    reader, writer = await _open(parks)
    try:
        writer.write(_expecting("/v1/transfers/sz-lab/x.csv", RESEARCH_TOKEN, len(BODY), expect))
        await writer.drain()
        head, body = await _read_response(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 417 "), head
    assert b"application/problem+json" in head
    assert body["status"] == 417
    assert parks.inbox_files() == {}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"PUT http://127.0.0.1:99999999/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"PUT /v1/transfers/sz-lab/a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    ],
    ids=["bad-port", "bad-header", "two-lengths", "tls-to-plain-port"],
)
async def test_parser_refusals_are_http_1_1_problem_json(
    parks: Parks, request_bytes: bytes
) -> None:
    reader, writer = await _open(parks)
    try:
        writer.write(request_bytes)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 400
