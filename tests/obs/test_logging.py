"""Structured logs: JSON lines with transfer ids, and no planted value ever in them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.obs.logging import (
    MAX_ITEMS,
    MAX_STRING_CHARS,
    REDACTED,
    configure_logging,
    is_sensitive_key,
    redact,
    scrub,
)

# Planted values: valid-looking identifiers and secrets that must never be logged.
RESIDENT_ID = "11010519491231002X"
MOBILE = "13812345678"
EMAIL = "li.wei@example.edu.cn"
CARD = "6222021234567890128"  # UnionPay prefix, passes Luhn
HKID = "A123456(3)"
BEARER_TOKEN = "tok_8f3kL0qZ2mXv9WbR"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
PAYLOAD = "name,id\nzhang san,payload-row-secret-77\n"
PLANTED = [
    RESIDENT_ID,
    MOBILE,
    EMAIL,
    CARD,
    HKID,
    BEARER_TOKEN,
    AWS_KEY,
    GITHUB_TOKEN,
    JWT,
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "payload-row-secret-77",
    "hunter2-password",
    "cookie-session-9d8e",
]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured onto a buffer; the previous configuration restored after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def assert_nothing_planted(text: str) -> None:
    leaked = [value for value in PLANTED if value in text]
    assert leaked == [], f"leaked into the log: {leaked}"


def test_json_line_per_event_with_bound_transfer_id(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream=stream)
    structlog.contextvars.bind_contextvars(transfer_id="tr_01HZX")
    log = structlog.get_logger("gateway.server")
    log.info("transfer.allowed", route="hk-to-sz", rule="gba-contract", bytes=1_048_576)
    log.debug("not shown at info")
    (event,) = lines(stream)
    assert event["event"] == "transfer.allowed"
    assert event["transfer_id"] == "tr_01HZX"
    assert event["level"] == "info"
    assert event["bytes"] == 1_048_576
    assert event["rule"] == "gba-contract"
    assert datetime.fromisoformat(event["timestamp"]).tzinfo is not None


def test_planted_values_never_reach_the_output(stream: io.StringIO) -> None:
    configure_logging("json", "debug", stream=stream)
    log = structlog.get_logger()
    log.warning(
        f"odd upload from {EMAIL} with Bearer {BEARER_TOKEN}",
        token=BEARER_TOKEN,
        authorization=f"Bearer {BEARER_TOKEN}",
        cookie="cookie-session-9d8e",
        password="hunter2-password",
        matched_value=RESIDENT_ID,
        payload=PAYLOAD.encode(),
        body=PAYLOAD,
        headers={"X-Api-Key": AWS_KEY, "Set-Cookie": "cookie-session-9d8e", "accept": "*/*"},
        note=f"call {MOBILE} or +86 138-1234-5678, card {CARD}, hkid {HKID}",
        samples=[JWT, GITHUB_TOKEN, {"pem": PEM}],
        reason=f"key material: {PEM}",
        chunk=b"\x00\x01raw",
        match_count=3,
    )
    text = stream.getvalue()
    assert_nothing_planted(text)
    assert "138-1234-5678" not in text
    (event,) = lines(stream)
    assert event["token"] == REDACTED
    assert event["payload"] == REDACTED
    assert event["match_count"] == 3  # counts are the point of the log: kept
    assert event["headers"]["accept"] == "*/*"
    assert event["headers"]["X-Api-Key"] == REDACTED
    assert "[EMAIL]" in event["event"]
    assert "[CN_MOBILE]" in event["note"]
    assert "[CARD]" in event["note"]
    assert "[HK_ID]" in event["note"]
    assert event["reason"] == "key material: [PEM]"


def test_exceptions_are_scrubbed_and_keep_their_last_frame(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream=stream)
    log = structlog.get_logger()
    try:
        raise ValueError(f"bad row with {RESIDENT_ID} and {EMAIL}")
    except ValueError:
        log.exception("transfer.failed")
    assert_nothing_planted(stream.getvalue())
    (event,) = lines(stream)
    assert "ValueError: bad row with [CN_RESIDENT_ID] and [EMAIL]" in event["exception"]
    assert "exc_info" not in event


def test_standard_library_records_go_through_the_same_chain(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream=stream)
    logging.getLogger("aiohttp.access").info(
        '127.0.0.1 "PUT /v1/transfers/hk/%s.csv HTTP/1.1" 201', MOBILE
    )
    logging.getLogger("aiohttp.server").error(
        "client sent %r", b"payload-row-secret-77", extra={"body": PAYLOAD}
    )
    assert_nothing_planted(stream.getvalue())
    access, server = lines(stream)
    assert access["event"] == '127.0.0.1 "PUT /v1/transfers/hk/[CN_MOBILE].csv HTTP/1.1" 201'
    assert access["level"] == "info"
    assert server["body"] == REDACTED
    assert server["event"] == "client sent '<21 bytes>'"
    assert "message" not in server  # pytest's own handler formatted the record first


def test_console_format_is_redacted_too(stream: io.StringIO) -> None:
    configure_logging("console", "info", stream=stream)
    structlog.get_logger().info("transfer.blocked", token=BEARER_TOKEN, note=f"id {RESIDENT_ID}")
    text = stream.getvalue()
    assert "transfer.blocked" in text
    assert "[CN_RESIDENT_ID]" in text
    assert_nothing_planted(text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_reconfiguring_does_not_duplicate_lines(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream=io.StringIO())
    configure_logging("json", "info", stream=stream)
    structlog.get_logger().info("once")
    assert len(lines(stream)) == 1


@pytest.mark.parametrize(
    ("fmt", "level", "message"),
    [("xml", "info", "log format 'xml'"), ("json", "loud", "log level 'loud'")],
)
def test_bad_format_or_level(fmt: str, level: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        configure_logging(fmt, level)


def run(**event: Any) -> dict[str, Any]:
    return dict(redact(None, "info", dict(event)))


def test_bytes_become_a_length_marker_everywhere() -> None:
    out = run(event="x", data_len=5, blob=b"abcde", nested={"inner": [bytearray(b"12")]})
    assert out["blob"] == "<5 bytes>"
    assert out["nested"] == {"inner": ["<2 bytes>"]}
    assert out["data_len"] == 5


def test_long_strings_are_truncated_without_a_partial_identifier() -> None:
    # The resident id straddles the cut: neither half may remain.
    text = "x " * ((MAX_STRING_CHARS - 9) // 2) + " " + RESIDENT_ID + " tail"
    out = run(event=text)["event"]
    assert out.endswith("…[truncated]")
    assert len(out) <= MAX_STRING_CHARS + len("…[truncated]")
    assert RESIDENT_ID[:5] not in out
    huge = scrub("y" * 200_000 + RESIDENT_ID)
    assert RESIDENT_ID[:5] not in huge
    assert len(huge) <= MAX_STRING_CHARS + len("…[truncated]")


def test_unknown_objects_are_reduced_to_their_type() -> None:
    class Summary:
        def __repr__(self) -> str:
            return f"Summary(values=[{RESIDENT_ID!r}])"

    out = run(
        event="x",
        summary=Summary(),
        path=Path("/data/upload.csv"),
        at=datetime(2026, 1, 1, tzinfo=UTC),
        error=OSError(f"no mailbox {EMAIL} (550)"),
    )
    assert out["summary"] == "<Summary>"
    assert out["path"] == "/data/upload.csv"
    assert out["at"] == "2026-01-01T00:00:00+00:00"
    assert out["error"] == "OSError: no mailbox [EMAIL] (550)"


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"leaf": "ok"}
    for _ in range(20):
        deep = {"down": deep}
    out = run(event="x", deep=deep, many=list(range(MAX_ITEMS + 10)))
    assert out["many"][-1] == "…10 more"
    assert len(out["many"]) == MAX_ITEMS + 1
    assert "ok" not in json.dumps(out["deep"])


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "Authorization",
        "x-auth-token",
        "cookie",
        "client_secret",
        "password",
        "value",
        "matched_value",
        "payload",
        "request_body",
        "X-Api-Key",
        "private_key_pem",
        "data",
    ],
)
def test_sensitive_keys(key: str) -> None:
    assert is_sensitive_key(key)
    assert run(event="x", **{key: "anything"})[key] == REDACTED


@pytest.mark.parametrize(
    "key", ["transfer_id", "route", "rule", "decision", "labels", "subjects", "sha256", "reason"]
)
def test_ordinary_keys_pass(key: str) -> None:
    assert not is_sensitive_key(key)
    assert run(event="x", **{key: "hk-to-sz"})[key] == "hk-to-sz"


def test_scrub_leaves_ordinary_numbers_and_hashes_alone() -> None:
    ordinary = (
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08,"
        " 1234567890123456 bytes (not Luhn), at 2026-11-25T08:46:30.123456+00:00,"
        " transfer 123e4567-e89b-12d3-a456-426614174000, port 8443"
    )
    assert scrub(ordinary) == ordinary


@pytest.mark.parametrize(
    ("planted", "marker"),
    [
        (RESIDENT_ID, "[CN_RESIDENT_ID]"),
        ("110105194912310021", "[CN_RESIDENT_ID]"),
        (MOBILE, "[CN_MOBILE]"),
        ("+86 138 1234 5678", "[CN_MOBILE]"),
        (EMAIL, "[EMAIL]"),
        (CARD, "[CARD]"),
        ("4111 1111 1111 1111", "[CARD]"),
        (HKID, "[HK_ID]"),
        (f"Bearer {BEARER_TOKEN}", "[CREDENTIAL]"),
        ("Basic dXNlcjpodW50ZXIy", "[CREDENTIAL]"),
        (AWS_KEY, "[CREDENTIAL]"),
        (GITHUB_TOKEN, "[CREDENTIAL]"),
        (JWT, "[CREDENTIAL]"),
        (PEM, "[PEM]"),
    ],
)
def test_scrub_markers(planted: str, marker: str) -> None:
    assert scrub(f"before {planted}, after") == f"before {marker}, after"


def test_a_pem_block_without_its_end_is_scrubbed_to_the_end() -> None:
    assert scrub("key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow, cut here") == "key: [PEM]"


_SEPARATORS = st.sampled_from([" ", ",", ";", "\n", "\t", "(", ")", "=", ":", "|", "，"])


@given(
    prefix=st.text(max_size=300),
    planted=st.sampled_from([RESIDENT_ID, MOBILE, EMAIL, CARD, AWS_KEY, JWT, GITHUB_TOKEN]),
    left=_SEPARATORS,
    right=_SEPARATORS,
    suffix=st.text(max_size=300),
)
def test_planted_identifier_never_survives_any_context(
    prefix: str, planted: str, left: str, right: str, suffix: str
) -> None:
    assert planted not in scrub(prefix + left + planted + right + suffix)
