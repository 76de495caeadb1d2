"""problem_response: RFC 9457 bodies and the headers HTTP requires with them."""

from __future__ import annotations

import json

from gateway.errors import BEARER_CHALLENGE, Forbidden, Unauthenticated, Unavailable
from gateway.server.auth import INVALID_TOKEN_CHALLENGE, MUTUAL_TLS_CHALLENGE
from gateway.server.problem import PROBLEM_JSON, Problem, problem_response


def test_every_401_carries_a_challenge() -> None:
    # RFC 9110 §15.5.2: a 401 without WWW-Authenticate tells the client nothing.
    plain = problem_response(Unauthenticated("no token"))
    assert plain.status == 401
    assert plain.content_type == PROBLEM_JSON
    assert plain.headers["WWW-Authenticate"] == BEARER_CHALLENGE
    assert json.loads(plain.body)["detail"] == "no token"  # type: ignore[arg-type]
    wrapped = problem_response(Problem(Unauthenticated, "no token", {"transfer_id": "t_1"}))
    assert wrapped.headers["WWW-Authenticate"] == BEARER_CHALLENGE
    invalid = problem_response(Unauthenticated("unknown", challenge=INVALID_TOKEN_CHALLENGE))
    expected = 'Bearer realm="hksz-gateway", error="invalid_token"'
    assert invalid.headers["WWW-Authenticate"] == expected
    twin = problem_response(Unauthenticated("twin only", challenge=MUTUAL_TLS_CHALLENGE))
    assert twin.headers["WWW-Authenticate"].startswith("Mutual-TLS ")


def test_other_statuses_carry_no_challenge() -> None:
    assert "WWW-Authenticate" not in problem_response(Forbidden("no")).headers
    unavailable = problem_response(Unavailable("later"))
    assert "WWW-Authenticate" not in unavailable.headers
    assert unavailable.headers["Retry-After"].isdigit()
