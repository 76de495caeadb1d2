"""Forward-proxy routing: the route an absolute proxy URI names (pure; the HTTP side is in
test_egress.py)."""

from __future__ import annotations

import pytest

from gateway.errors import ClientError, Forbidden
from gateway.policy.engine import Route
from gateway.server.proxy_routes import route_for


def _route(name: str, destination: str) -> Route:
    return Route(name, "hk->sz", destination, None, None, "tls")


ROUTES = [
    _route("bare", "https://twin:9443"),
    _route("lab", "https://twin:9443/v1/envelopes/sz-lab"),
    _route("other-port", "https://twin:9444/v1/envelopes/sz-lab"),
    _route("default-port", "https://plain.example/in"),
]


@pytest.mark.parametrize(
    ("target", "route", "name"),
    [
        ("https://twin:9443/v1/envelopes/sz-lab/a.csv", "lab", "a.csv"),
        ("https://TWIN:9443/data%20x.csv", "bare", "data%20x.csv"),
        ("https://twin:9443/v1/envelopes/sz-labs/a.csv", "bare", "a.csv"),
        ("https://plain.example:443/in/a.csv", "default-port", "a.csv"),
        ("https://plain.example/in/sub/a.csv", "default-port", "a.csv"),
    ],
)
def test_the_longest_destination_path_on_the_same_host_and_port_wins(
    target: str, route: str, name: str
) -> None:
    found, last = route_for(ROUTES, target)
    assert (found.name, last) == (route, name)


def test_a_host_no_route_names_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        route_for(ROUTES, "https://elsewhere:9443/a.csv")
    with pytest.raises(Forbidden):  # the default port is not 9443
        route_for(ROUTES, "https://twin/a.csv")


@pytest.mark.parametrize("target", ["https://twin:bad/a.csv", "/v1/a.csv", "ftp://twin/a.csv"])
def test_a_malformed_target_is_the_clients_error(target: str) -> None:
    with pytest.raises(ClientError):
        route_for(ROUTES, target)


def test_two_routes_that_fit_equally_are_ambiguous() -> None:
    twins = [*ROUTES, _route("lab-again", "https://twin:9443/v1/envelopes/sz-lab/")]
    with pytest.raises(ClientError, match="several routes"):
        route_for(twins, "https://twin:9443/v1/envelopes/sz-lab/a.csv")
