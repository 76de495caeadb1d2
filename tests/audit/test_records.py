"""Canonical JSON and the transfer/policy record builders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from gateway.audit.records import (
    MAX_RECORD_BYTES,
    RecordError,
    canonical_json,
    format_time,
    parse_canonical,
    policy_record,
    transfer_record,
)
from gateway.classify.summary import ContentInfo, LabelStats, ScanSummary

PLANTED_ID = "11010519491231002X"


def summary() -> ScanSummary:
    return ScanSummary(
        size=1234,
        sha256="ab" * 32,
        content=ContentInfo("text/csv", "utf-8", ("gzip",)),
        labels=MappingProxyType(
            {"pii.cn_resident_id": LabelStats(3, 2), "pii.email": LabelStats(1, 1)}
        ),
        subjects=2,
        digests=MappingProxyType({"pii.cn_resident_id": frozenset({b"\x01" * 16})}),
    )


def test_canonical_json_is_sorted_compact_utf8() -> None:
    data = canonical_json({"b": 1, "a": [True, None, '深圳\n"x"'], "c": {"z": 0, "y": -5}})
    assert data == '{"a":[true,null,"深圳\\n\\"x\\""],"b":1,"c":{"y":-5,"z":0}}'.encode()
    assert parse_canonical(data) == {"a": [True, None, '深圳\n"x"'], "b": 1, "c": {"y": -5, "z": 0}}


def test_control_characters_are_escaped_so_a_record_is_one_line() -> None:
    data = canonical_json({"s": "a\x00\x1f\x7f\u2028b"})
    assert b"\n" not in data
    assert data == b'{"s":"a\\u0000\\u001f\x7f\xe2\x80\xa8b"}'


@pytest.mark.parametrize(
    "value",
    [
        {"x": 1.5},
        {"x": float("nan")},
        {"x": 2**53},
        {"x": b"bytes"},
        {1: "non-string key"},
        {"ключ": "non-ASCII key"},
        {"x": "\ud800"},
        {"x": [[[[[[[[[[1]]]]]]]]]]},
        {"x": "a" * MAX_RECORD_BYTES},
    ],
)
def test_values_outside_the_canonical_space_are_refused(value: dict[Any, Any]) -> None:
    with pytest.raises(RecordError):
        canonical_json(value)


@pytest.mark.parametrize(
    "text",
    [
        b'{"b":1,"a":2}',  # unsorted
        b'{"a": 1}',  # whitespace
        b'{"a":1,"a":1}',  # duplicate key
        b'{"a":1.0}',  # float
        b'{"a":"\\u00e9"}',  # needless escape
        b"[1]",  # not an object
        b'{"a":1',  # torn
        b"\x00\x00\x00",  # zero-filled tail
        b'{"a":"\xff"}',  # not UTF-8
    ],
)
def test_non_canonical_bytes_are_detected(text: bytes) -> None:
    with pytest.raises(RecordError):
        parse_canonical(text)


def test_transfer_record_copies_counts_never_values_or_digests() -> None:
    record = transfer_record(
        event="allowed",
        transfer_id="t-1",
        sender="lab-a",
        organisation="org-a",
        route="sz-to-hk",
        direction="sz->hk",
        decision="allow",
        rule="gba-contract",
        reason="GBA Standard Contract route",
        policy_version="c0ffee",
        summary=summary(),
        ciphertext_bytes=1300,
        ciphertext_sha256="cd" * 32,
        recipient_key="ef" * 32,
        upstream_status=201,
        timings_us={"classify": 120, "total": 900},
    )
    data = canonical_json(record)
    assert parse_canonical(data) == record
    assert record["labels"] == {
        "pii.cn_resident_id": {"count": 3, "distinct": 2},
        "pii.email": {"count": 1, "distinct": 1},
    }
    assert record["bytes"] == 1234
    assert record["sha256"] == "ab" * 32
    assert record["content_type"] == "text/csv"
    assert b"\x01" * 16 not in data
    assert "01" * 16 not in data.decode()
    assert PLANTED_ID not in data.decode()
    assert set(record) == {
        "v",
        "kind",
        "time",
        "event",
        "transfer_id",
        "sender",
        "organisation",
        "route",
        "direction",
        "decision",
        "rule",
        "reason",
        "policy_version",
        "bytes",
        "sha256",
        "content_type",
        "labels",
        "subjects",
        "ciphertext_bytes",
        "ciphertext_sha256",
        "recipient_key",
        "upstream_status",
        "timings_us",
    }


def test_aborted_transfer_without_summary() -> None:
    record = transfer_record(
        event="aborted",
        transfer_id="t-2",
        sender="lab-a",
        organisation=None,
        route="r",
        direction="hk->sz",
        decision="allow",
        rule="-",
        reason="",
        policy_version="v",
        size=77,
        detail="client disconnected",
        time="2026-01-31T12:00:00.000000Z",
    )
    assert record["bytes"] == 77
    assert record["sha256"] is None
    assert record["labels"] == {}
    assert record["detail"] == "client disconnected"
    assert record["time"] == "2026-01-31T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event", "exploded"),
        ("decision", "maybe"),
        ("transfer_id", ""),
        ("sender", "x" * 300),
        ("ciphertext_sha256", "ABC"),
        ("time", "2026-01-31 12:00"),
        ("timings_us", {"total": 1.5}),
        ("size", -1),
    ],
)
def test_transfer_record_validates_fields(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {
        "event": "blocked",
        "transfer_id": "t",
        "sender": "s",
        "organisation": None,
        "route": "r",
        "direction": "sz->hk",
        "decision": "block",
        "rule": "rule-1",
        "reason": "why",
        "policy_version": "v",
    }
    kwargs[field] = value
    with pytest.raises(RecordError):
        transfer_record(**kwargs)


def test_policy_record_logs_only_the_error_count() -> None:
    record = policy_record(event="policy_rejected", policy_version=None, errors=3)
    assert record["kind"] == "policy"
    assert record["errors"] == 3
    json.loads(canonical_json(record))
    with pytest.raises(RecordError):
        policy_record(event="policy_exploded", policy_version="v")  # type: ignore[arg-type]


def test_times_sort_as_strings() -> None:
    early = format_time(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    late = format_time(datetime(2026, 1, 1, 8, 0, 0, 1, tzinfo=UTC))
    assert early == "2026-01-01T08:00:00.000000Z"
    assert early < late
    with pytest.raises(ValueError, match="timezone"):
        format_time(datetime(2026, 1, 1))
