"""Audit records: their canonical bytes and the schema the gateway fills.

A record's bytes are the leaf of the Merkle tree, so they must be the same
for every writer and verifier. Canonical JSON here means:

* a JSON object (RFC 8259) at the top; object keys are printable ASCII
  (U+0020..U+007E), unique, sorted by code point;
* no insignificant whitespace: ``,`` and ``:`` with nothing around them;
* strings are UTF-8; ``"`` and ``\\`` are backslash-escaped, U+0008, U+0009,
  U+000A, U+000C, U+000D as ``\\b \\t \\n \\f \\r``, every other character
  below U+0020 as ``\\u00xx`` (lower-case hex); everything else is written
  literally (no ``\\u`` escapes for non-ASCII);
* numbers are integers only, in ``[-(2**53 - 1), 2**53 - 1]`` (exact in every
  JSON implementation), written in plain decimal; no floats, so durations
  are integer microseconds and times are strings;
* ``true``, ``false``, ``null`` as usual.

This is exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` on the restricted value space, and it coincides with
RFC 8785 (JCS) for that space. A verifier re-parses each stored line and
re-encodes it; any difference is a tamper.

Records carry metadata only (SPEC §7): the builders below accept counts,
sizes, digests and identifiers, never a matched value or payload bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, NotRequired, TypedDict

from gateway.classify.summary import ScanSummary

#: Integers beyond 2**53 - 1 lose precision in JavaScript and many JSON parsers.
MAX_SAFE_INTEGER: Final = 2**53 - 1
#: A metadata record is a few hundred bytes; 64 KiB leaves room for a policy
#: with hundreds of custom labels while bounding what one append can write.
MAX_RECORD_BYTES: Final = 64 * 1024
#: Nesting depth of a record (transfer records use 3); bounds the validator's recursion.
MAX_DEPTH: Final = 8
#: Identifiers (transfer id, sender, route, rule, policy version): short tokens.
MAX_ID_CHARS: Final = 256
#: A rule's human reason, as written in the policy YAML.
MAX_REASON_CHARS: Final = 2048

#: Record schema version, bumped on incompatible changes.
SCHEMA_VERSION: Final = 1

#: Times are UTC with microseconds and a ``Z`` suffix, so string order is time order.
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME_RE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")

TransferEvent = Literal[
    "allowed", "blocked", "review", "approved", "rejected", "delivered", "aborted", "failed"
]
#: One record per decision and per state change of a transfer (SPEC §7).
TRANSFER_EVENTS: Final[frozenset[str]] = frozenset(TransferEvent.__args__)  # type: ignore[attr-defined]
PolicyEvent = Literal["policy_loaded", "policy_rejected"]
POLICY_EVENTS: Final[frozenset[str]] = frozenset(PolicyEvent.__args__)  # type: ignore[attr-defined]
Decision = Literal["allow", "block", "review"]
DECISIONS: Final[frozenset[str]] = frozenset(Decision.__args__)  # type: ignore[attr-defined]


class RecordError(ValueError):
    """A record cannot be logged: it is not canonical-JSON-able or breaks the schema."""


class LabelCount(TypedDict):
    """Findings of one label in a transfer (never the values)."""

    count: int
    distinct: int


class TransferRecord(TypedDict):
    """The audit record of one transfer decision or state change.

    Every field is metadata. ``sha256`` digests are of the whole plaintext
    and ciphertext streams (not of any matched value); ``labels`` holds counts
    only; ``recipient_key`` is the fingerprint (SHA-256 hex) of the route's
    age recipient, not the key itself; ``timings_us`` are durations in
    integer microseconds by stage (``receive``, ``classify``, ``decide``,
    ``forward``, ``total``).
    """

    v: int
    kind: Literal["transfer"]
    time: str
    event: TransferEvent
    transfer_id: str
    sender: str
    organisation: str | None
    route: str
    direction: str
    decision: Decision
    rule: str
    reason: str
    policy_version: str
    bytes: int
    sha256: str | None
    content_type: str | None
    labels: dict[str, LabelCount]
    subjects: int
    ciphertext_bytes: int | None
    ciphertext_sha256: str | None
    recipient_key: str | None
    upstream_status: int | None
    timings_us: dict[str, int]
    detail: NotRequired[str]
    shadow: NotRequired[dict[str, str]]
    officer: NotRequired[str]
    comment: NotRequired[str]
    reference: NotRequired[str]
    justification: NotRequired[str]


class PolicyRecord(TypedDict):
    """The audit record of a policy load attempt (SPEC §7: policy loaded/rejected)."""

    v: int
    kind: Literal["policy"]
    time: str
    event: PolicyEvent
    policy_version: str | None
    errors: int
    rejected_sha256: NotRequired[str]


def utc_now() -> str:
    """The current time in the records' :data:`TIME_FORMAT`."""
    # isoformat is several times faster than strftime, and this runs per record.
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def format_time(moment: datetime) -> str:
    """``moment`` (timezone-aware) in the records' :data:`TIME_FORMAT`."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def _check_value(value: Any, depth: int) -> None:
    """Refuse anything outside the canonical value space (hot path: one call per record)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise RecordError("integer outside ±(2**53 - 1)")
        return
    if depth >= MAX_DEPTH:
        raise RecordError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() and key.isprintable()):
                raise RecordError(f"key {key!r}: keys must be printable ASCII strings")
            if type(item) is not str:
                try:
                    _check_value(item, depth + 1)
                except RecordError as exc:
                    raise RecordError(f"{key}: {exc}") from None
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_value(item, depth + 1)
        return
    if isinstance(value, float):
        raise RecordError("floats are not canonical; use integers (microseconds)")
    if isinstance(value, int):  # an int subclass (IntEnum): encoded as its value
        _check_value(int(value), depth)
        return
    if isinstance(value, str):
        return
    raise RecordError(f"{type(value).__name__} is not a JSON value")


def canonical_json(record: Mapping[str, Any]) -> bytes:
    """The canonical bytes of ``record`` (see the module docstring).

    Raises:
        RecordError: a value outside the canonical space, or the record is
            larger than :data:`MAX_RECORD_BYTES`.
    """
    if not isinstance(record, Mapping):
        raise RecordError("a record must be a JSON object")
    _check_value(record, 0)
    try:
        data = json.dumps(
            record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError("record holds a string that is not valid Unicode") from exc
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"record is {len(data)} bytes, over the {MAX_RECORD_BYTES}-byte limit")
    return data


def _reject_float(text: str) -> float:
    raise RecordError("floats are not canonical")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise RecordError("duplicate object key")
    return result


def parse_canonical(data: bytes) -> dict[str, Any]:
    """Parse a stored record and check that its bytes are canonical.

    Raises:
        RecordError: not UTF-8, not a JSON object, or not byte-for-byte the
            canonical encoding of what it parses to.
    """
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_float,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecordError("not a UTF-8 JSON document") from exc
    if not isinstance(value, dict):
        raise RecordError("not a JSON object")
    if canonical_json(value) != data:
        raise RecordError("not in canonical form")
    return value


def _require_id(name: str, value: str) -> str:
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable():
        raise RecordError(f"{name} must be 1..{MAX_ID_CHARS} printable characters")
    return value


def _require_sha256(name: str, value: str | None) -> str | None:
    if value is not None and not _SHA256_RE.fullmatch(value):
        raise RecordError(f"{name} must be 64 lower-case hex digits")
    return value


def _require_count(name: str, value: int | None) -> int | None:
    if value is not None:
        _count(name, value)
    return value


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise RecordError(f"{name} must be a non-negative integer")
    return value


def transfer_record(
    *,
    event: TransferEvent,
    transfer_id: str,
    sender: str,
    organisation: str | None,
    route: str,
    direction: str,
    decision: Decision,
    rule: str,
    reason: str,
    policy_version: str,
    summary: ScanSummary | None = None,
    size: int | None = None,
    ciphertext_bytes: int | None = None,
    ciphertext_sha256: str | None = None,
    recipient_key: str | None = None,
    upstream_status: int | None = None,
    timings_us: Mapping[str, int] | None = None,
    detail: str | None = None,
    shadow: Mapping[str, str] | None = None,
    officer: str | None = None,
    comment: str | None = None,
    reference: str | None = None,
    justification: str | None = None,
    time: str | None = None,
) -> TransferRecord:
    """Build a transfer record, so the server fills the same fields every time.

    Label findings come from ``summary`` as counts only; its keyed digests and
    anything else are deliberately not copied. ``size`` overrides the byte
    count for transfers that ended before a summary existed (aborted).

    Args:
        detail: a short fixed phrase for aborted/failed transfers
            (``"client disconnected"``, ``"upstream timeout"``), never data.
        shadow: the shadow-mode rules that matched the verdict, each with
            the action it would have taken (``shadow`` in the record when any).
        officer, comment, reference: who decided a review, why, and the
            filing or ticket it refers to (``approved``/``rejected``).
        justification: what the sender said the transfer is for.
        time: the event time (:data:`TIME_FORMAT`); now when omitted.

    Raises:
        RecordError: a field is malformed.
    """
    if event not in TRANSFER_EVENTS:
        raise RecordError(f"unknown transfer event {event!r}")
    if decision not in DECISIONS:
        raise RecordError(f"unknown decision {decision!r}")
    if len(reason) > MAX_REASON_CHARS:
        raise RecordError(f"reason is longer than {MAX_REASON_CHARS} characters")
    stamp = time if time is not None else utc_now()
    if not _TIME_RE.fullmatch(stamp):
        raise RecordError("time must be UTC like 2026-01-31T12:00:00.000000Z")
    labels: dict[str, LabelCount] = {}
    if summary is not None:
        labels = {
            label: {"count": stats.count, "distinct": stats.distinct}
            for label, stats in sorted(summary.labels.items())
        }
    timings = dict(timings_us or {})
    for stage, micros in timings.items():
        _require_id("timing stage", stage)
        _count(f"timings_us.{stage}", micros)
    record: TransferRecord = {
        "v": SCHEMA_VERSION,
        "kind": "transfer",
        "time": stamp,
        "event": event,
        "transfer_id": _require_id("transfer_id", transfer_id),
        "sender": _require_id("sender", sender),
        "organisation": None if organisation is None else _require_id("organisation", organisation),
        "route": _require_id("route", route),
        "direction": _require_id("direction", direction),
        "decision": decision,
        "rule": _require_id("rule", rule),
        "reason": reason,
        "policy_version": _require_id("policy_version", policy_version),
        "bytes": _require_count(
            "bytes", size if size is not None else (summary.size if summary else 0)
        )
        or 0,
        "sha256": _require_sha256("sha256", summary.sha256 if summary else None),
        "content_type": summary.content.type if summary else None,
        "labels": labels,
        "subjects": summary.subjects if summary else 0,
        "ciphertext_bytes": _require_count("ciphertext_bytes", ciphertext_bytes),
        "ciphertext_sha256": _require_sha256("ciphertext_sha256", ciphertext_sha256),
        "recipient_key": _require_sha256("recipient_key", recipient_key),
        "upstream_status": upstream_status,
        "timings_us": timings,
    }
    if detail is not None:
        record["detail"] = _require_id("detail", detail)
    if shadow:
        for rule_id, action in shadow.items():
            _require_id("shadow rule", rule_id)
            if action not in DECISIONS:
                raise RecordError(f"unknown shadow action {action!r}")
        record["shadow"] = dict(sorted(shadow.items()))
    if officer is not None:
        record["officer"] = _require_id("officer", officer)
    if comment is not None:
        record["comment"] = _bounded_text("comment", comment)
    if reference is not None:
        record["reference"] = _bounded_text("reference", reference)
    if justification is not None:
        record["justification"] = _bounded_text("justification", justification)
    return record


def _bounded_text(name: str, text: str) -> str:
    if len(text) > MAX_REASON_CHARS:
        raise RecordError(f"{name} is longer than {MAX_REASON_CHARS} characters")
    return text


def policy_record(
    *,
    event: PolicyEvent,
    policy_version: str | None,
    errors: int = 0,
    rejected: str | None = None,
    time: str | None = None,
) -> PolicyRecord:
    """Build the record of a policy load (``policy_loaded``) or rejection.

    Only the number of errors is logged: error texts quote policy files,
    which belong in the operator's log, not in the permanent audit trail.
    """
    if event not in POLICY_EVENTS:
        raise RecordError(f"unknown policy event {event!r}")
    stamp = time if time is not None else utc_now()
    if not _TIME_RE.fullmatch(stamp):
        raise RecordError("time must be UTC like 2026-01-31T12:00:00.000000Z")
    record: PolicyRecord = {
        "v": SCHEMA_VERSION,
        "kind": "policy",
        "time": stamp,
        "event": event,
        "policy_version": None
        if policy_version is None
        else _require_id("policy_version", policy_version),
        "errors": _count("errors", errors),
    }
    if rejected:
        record["rejected_sha256"] = _require_sha256("rejected", rejected) or ""
    return record
