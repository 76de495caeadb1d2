"""Destinations: the URL parsed once, the file URL it gives, one kind per encrypt mode."""

from __future__ import annotations

import pytest

from gateway.server.destinations import destination, endpoint
from gateway.server.destinations.https import HttpsEndpoint
from gateway.server.destinations.twin import TwinEnvelope


@pytest.mark.parametrize(
    ("url", "host", "port", "path", "tls"),
    [
        ("https://Twin.Example:9443", "twin.example", 9443, "", True),
        (
            "https://twin.example/v1/envelopes/sz-lab/",
            "twin.example",
            443,
            "v1/envelopes/sz-lab",
            True,
        ),
        ("http://127.0.0.1:8080/drop", "127.0.0.1", 8080, "drop", False),
        ("https://twin.example:bad", "twin.example", None, "", True),
    ],
)
def test_an_endpoint_is_the_url_parsed(
    url: str, host: str, port: int | None, path: str, tls: bool
) -> None:
    parsed = endpoint(url)
    assert (parsed.host, parsed.port, parsed.path, parsed.tls) == (host, port, path, tls)
    assert endpoint(url) is parsed  # parsed once


def test_a_bare_twin_gets_the_envelope_endpoint_and_a_path_names_its_own() -> None:
    assert (
        endpoint("https://twin:9443").file_url("sz-lab", "a b.csv")
        == "https://twin:9443/v1/envelopes/sz-lab/a%20b.csv"
    )
    assert (
        endpoint("https://twin:9443/in/").file_url("sz-lab", "a.csv")
        == "https://twin:9443/in/a.csv"
    )
    assert endpoint("https://twin:9443/in").origin == "https://twin:9443"


def test_the_encrypt_mode_picks_the_kind_of_destination() -> None:
    assert isinstance(destination("https://twin:9443", "envelope"), TwinEnvelope)
    assert isinstance(destination("https://dest:9443/in", "tls"), HttpsEndpoint)
    with pytest.raises(KeyError):
        destination("https://twin:9443", "carrier-pigeon")
