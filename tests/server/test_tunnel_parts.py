"""The parts of a CONNECT tunnel that need no network: authority, destinations, credentials."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ClientError
from gateway.server.tunnel import Tunnel, _normal_host, _proxy_token, parse_authority


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:9443", ("127.0.0.1", 9443)),
        ("Data.SZ.hetao.example:443", ("data.sz.hetao.example", 443)),
        ("[::1]:8443", ("::1", 8443)),
        ("[2001:DB8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_authorities_are_parsed(raw: str, expected: tuple[str, int]) -> None:
    assert parse_authority(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "host",
        "host:",
        "host:0",
        "host:65536",
        "host:x",
        "::1:443",
        "[nothing]:443",
        "a/b:443",
        "user@host:443",
        ":443",
        "host:443 ",
    ],
)
def test_anything_but_host_and_port_is_refused(raw: str) -> None:
    with pytest.raises(ClientError):
        parse_authority(raw)


@given(st.text(max_size=40))
def test_parsing_never_fails_otherwise(raw: str) -> None:
    try:
        host, port = parse_authority(raw)
    except ClientError:
        return
    assert 0 < port < 65536
    assert host == host.lower()


def test_a_host_header_is_normalised_with_the_tunnel_s_port() -> None:
    assert _normal_host("127.0.0.1:9443", 9443) == ("127.0.0.1", 9443)
    assert _normal_host("data.example", 443) == ("data.example", 443)
    assert _normal_host("[::1]", 8443) == ("::1", 8443)
    assert _normal_host("[::1]:8443", 1) == ("::1", 8443)
    assert _normal_host("not a host", 443) == ("", 0)
    assert Tunnel("::1", 8443, "s").authority == "[::1]:8443"


def test_proxy_credentials_are_a_bearer_token_or_basic_with_the_token_as_password() -> None:
    basic = base64.b64encode(b"hk-research:tok-123").decode()
    assert _proxy_token("Bearer tok-123") == "tok-123"
    assert _proxy_token("bearer  tok-123 ") == "tok-123"
    assert _proxy_token(f"Basic {basic}") == "tok-123"
    assert _proxy_token("Basic !!!") == ""
    assert _proxy_token("Digest x") == ""
    assert _proxy_token("") == ""
