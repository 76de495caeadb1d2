"""The small grammars of the policy schema: comparisons, globs, age recipients, names."""

from __future__ import annotations

import pyrage
import pytest
from pydantic import ValidationError

from gateway.policy.model import (
    RouteSpec,
    RuleSpec,
    check_age_recipient,
    check_glob,
    check_rule_id,
    glob_to_regex,
)


def _threshold(text: object) -> object:
    return RuleSpec.model_validate(
        {"id": "r", "action": "block", "reason": "x", "when": {"subjects": text}}
    ).when.subjects


def _size(text: object) -> object:
    return RuleSpec.model_validate(
        {"id": "r", "action": "block", "reason": "x", "when": {"size": text}}
    ).when.size


@pytest.mark.parametrize(
    ("text", "actual", "expected"),
    [
        (">= 100000", 100_000, True),
        (">= 100000", 99_999, False),
        ("> 100_000", 100_001, True),
        ("<10,000", 9_999, True),
        ("== 3", 3, True),
        ("!= 3", 3, False),
        ("<= 0", 0, True),
    ],
)
def test_count_comparisons(text: str, actual: int, expected: bool) -> None:
    threshold = _threshold(text)
    assert threshold.test(actual) is expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "value"),
    [("> 1 GiB", 1 << 30), ("<= 10MB", 10**7), ("> 512", 512), ("< 2 KiB", 2048)],
)
def test_size_units(text: str, value: int) -> None:
    assert _size(text).value == value  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (100000, "expected a comparison string"),
        ("100000", "expected a comparison"),
        ("=> 5", "expected a comparison"),
        (">= 5 MiB", "a count takes no unit"),
        (">= 99999999999999999999", "too large"),
    ],
)
def test_bad_counts(text: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _threshold(text)


def test_bad_size_unit() -> None:
    with pytest.raises(ValidationError, match="unknown size unit"):
        _size("> 3 parsecs")


def test_globs() -> None:
    assert glob_to_regex("pii.*").fullmatch("pii.cn_phone")
    assert not glob_to_regex("pii.*").fullmatch("xpii.cn_phone")
    assert glob_to_regex("a?c").fullmatch("abc")
    assert not glob_to_regex("a.c").fullmatch("abc")  # '.' is literal
    for bad in ("pii.[a-z]", "{a,b}", "a\\b", ""):
        with pytest.raises(ValueError, match="glob"):
            check_glob(bad)
    with pytest.raises(ValueError, match="string glob"):
        check_glob(3)


def test_age_recipients_from_an_independent_implementation() -> None:
    key = str(pyrage.x25519.Identity.generate().to_public())
    assert check_age_recipient(key) == key
    assert check_age_recipient(key.upper()) == key
    flipped = key[:-1] + ("q" if key[-1] != "q" else "p")
    with pytest.raises(ValueError, match="bad checksum"):
        check_age_recipient(flipped)
    with pytest.raises(ValueError, match="wrong length"):
        check_age_recipient(key[:-2])
    with pytest.raises(ValueError, match="starting with 'age1'"):
        check_age_recipient("ssh-ed25519 AAAA")
    secret = str(pyrage.x25519.Identity.generate())
    with pytest.raises(ValueError, match="secret key"):
        check_age_recipient(secret)


def test_route_destination_and_legal_basis() -> None:
    ok = RouteSpec.model_validate(
        {"direction": "hk->sz", "destination": "http://127.0.0.1:8080/x", "encrypt": "tls"}
    )
    assert ok.recipient is None
    for url in ("http://example.org/", "ftp://h/", "https://user:pw@h/", "https://h:99999/"):
        with pytest.raises(ValidationError, match="URL"):
            RouteSpec.model_validate({"direction": "hk->sz", "destination": url})
    with pytest.raises(ValidationError, match="unknown legal basis"):
        RouteSpec.model_validate(
            {"direction": "hk->sz", "destination": "https://h/", "legal_basis": "handshake"}
        )
    with pytest.raises(ValidationError, match=r"\{file: path-to-recipient-file\}"):
        RouteSpec.model_validate(
            {"direction": "hk->sz", "destination": "https://h/", "recipient": {"path": "x"}}
        )


def test_rule_ids_and_reasons() -> None:
    assert check_rule_id("default", allow_default=True) == "default"
    with pytest.raises(ValueError, match="reserved"):
        check_rule_id("default")
    with pytest.raises(ValueError, match="lower-case"):
        check_rule_id("Has Space")
    rule = RuleSpec.model_validate(
        {"id": "r", "action": "allow", "reason": "  folded\n  reason  ", "encrypt": "tls"}
    )
    assert rule.reason == "folded reason"
    with pytest.raises(ValidationError, match="applies to allow and review"):
        RuleSpec.model_validate({"id": "r", "action": "block", "reason": "x", "encrypt": "tls"})
    with pytest.raises(ValidationError, match="empty list matches nothing"):
        RuleSpec.model_validate(
            {"id": "r", "action": "block", "reason": "x", "when": {"route": []}}
        )
