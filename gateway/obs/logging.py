"""Structured logs: one JSON line per state change, and nothing worth stealing in them.

Ops ship stdout to a log pipeline that many people can read, for years. So the
processor chain ends, just before rendering, in :func:`redact`, a defence in
depth behind the rule that no code logs payload or matched values (SPEC §3.2,
STYLE.md §8):

- keys that may carry secrets or data (``token``, ``authorization``,
  ``cookie``, ``password``, ``value``, ``match``, ``payload``, ``body`` …) are
  masked whatever their value;
- bytes never pass: they become a length marker;
- strings are scrubbed of what obviously looks like an identifier the
  classifier detects (18-character resident ids, Mainland mobiles, e-mail
  addresses, payment card numbers that pass Luhn, HKIDs, PEM blocks, bearer
  and basic credentials, AWS/GitHub/JWT tokens) and truncated;
- objects of unknown types are reduced to their type name rather than a
  ``repr`` that might include their contents.

Standard-library records (aiohttp's access log, asyncio's warnings) go through
the same chain, so every line on stdout is redacted JSON.

The server binds ``transfer_id`` with :func:`structlog.contextvars.bind_contextvars`;
:func:`structlog.contextvars.merge_contextvars` adds it to every event.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from pathlib import PurePath
from typing import Any, TextIO
from uuid import UUID

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.errors import ConfigError

#: Longest string kept in a log field. The longest legitimate field (a policy
#: error ``file:line:col: message`` or a rule's reason) stays well below it, and a
#: line stays far below Docker's 16 KiB line split, so one event is one line.
MAX_STRING_CHARS = 1024
#: Longest traceback kept (``exception``, ``stack``): about 40 frames. Cut from
#: the front, because the raising frame and the message come last.
MAX_TRACEBACK_CHARS = 8 * 1024
#: Keys that hold tracebacks, as written by :func:`structlog.processors.format_exc_info`.
_TRACEBACK_KEYS = frozenset({"exception", "stack"})
#: Longest string the scrubbing regexes look at: beyond it the tail is cut first
#: (it would be truncated anyway), which bounds the time one event can cost.
MAX_SCAN_CHARS = 64 * 1024
#: Nesting depth followed into dicts and lists; deeper structure is replaced,
#: not rendered (no event the gateway logs legitimately nests this deep).
MAX_DEPTH = 6
#: Items kept per list or dict: events carry label counts (< 30 labels), not tables.
MAX_ITEMS = 64

#: Distinct keys whose verdict is cached: events use a few dozen field names.
KEY_CACHE_SIZE = 1024

#: What replaces a masked value.
REDACTED = "[REDACTED]"

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("json", "console")

#: Words that make a key sensitive when they appear as a word of it
#: (``x_auth_token``, ``matched_value``, ``request_body``).
_SENSITIVE_WORDS = frozenset(
    {
        "authorization",
        "auth",
        "bearer",
        "body",
        "chunk",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "data",
        "match",
        "matched",
        "matches",
        "passphrase",
        "passwd",
        "password",
        "payload",
        "plaintext",
        "raw",
        "sample",
        "secret",
        "session",
        "token",
        "value",
        "values",
    }
)
#: Multi-word sensitive keys, matched on the ``_``-joined key.
_SENSITIVE_PHRASES = ("api_key", "apikey", "private_key", "secret_key", "access_key", "set_cookie")
#: A sensitive-sounding key whose last word is one of these, holding a number, is
#: a count (``match_count``, ``payload_bytes``) and is kept: counts are the point.
_COUNT_WORDS = frozenset({"count", "counts", "len", "length", "size", "bytes", "total", "n"})
_KEY_WORDS = re.compile(r"[a-z0-9]+")

#: Identifier-like text. Each pattern runs only when its cheap guard (a literal
#: every match must contain) is in the string, so an ordinary event costs a few
#: substring tests. Every pattern starts at a boundary (a lookbehind), which also
#: keeps the scan linear on long letter/digit runs. Boundaries follow the
#: classifier: no part of a longer letter/digit run.
_PEM = re.compile(r"-----BEGIN[ A-Z0-9]*-----.*?(?:-----END[ A-Z0-9]*-----|\Z)", re.DOTALL)
_AUTH = re.compile(r"\b(?:[Bb]earer|[Bb]asic|[Tt]oken)\s+[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_AWS = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
_GITHUB = re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_NUMERIC = re.compile(
    r"""
    (?=[0-9A-Z+])(?<![0-9A-Za-z+])  # a class first lets the engine skip ahead fast
    (?:
      (?P<cn_id>[0-9]{17}[0-9Xx])
    | (?P<card>[0-9](?:[ -]?[0-9]){14,18})
    | (?P<cn_mobile>(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2})
    | (?P<hk_id>[A-Z]{1,2}[0-9]{6}(?:\([0-9A]\)|[0-9A]))
    )
    (?![0-9A-Za-z])
    """,
    re.VERBOSE,
)
_NUMERIC_MARKERS = {
    "cn_id": "[CN_RESIDENT_ID]",
    "card": "[CARD]",
    "cn_mobile": "[CN_MOBILE]",
    "hk_id": "[HK_ID]",
}
_DIGIT = re.compile(r"[0-9]")
#: A letter/digit run cut by truncation could be the visible half of an
#: identifier; it is dropped with the rest.
_TRAILING_WORD = re.compile(r"[0-9A-Za-z@._%+-]+\Z")
_LEADING_WORD = re.compile(r"\A[0-9A-Za-z@._%+-]+")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _numeric(match: re.Match[str]) -> str:
    kind = match.lastgroup or ""
    if kind == "card" and not _luhn(match.group().replace(" ", "").replace("-", "")):
        return match.group()  # a long number, not a card: byte counts, ids, timestamps
    return _NUMERIC_MARKERS[kind]


def _scrub_identifiers(text: str) -> str:
    if "-----BEGIN" in text:
        text = _PEM.sub("[PEM]", text)
    if "earer" in text or "asic" in text or "oken" in text:
        text = _AUTH.sub("[CREDENTIAL]", text)
    if "eyJ" in text:
        text = _JWT.sub("[CREDENTIAL]", text)
    if "AKIA" in text or "ASIA" in text:
        text = _AWS.sub("[CREDENTIAL]", text)
    if "gh" in text and "_" in text:
        text = _GITHUB.sub("[CREDENTIAL]", text)
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    if _DIGIT.search(text):
        text = _NUMERIC.sub(_numeric, text)
    return text


def scrub(text: str, limit: int = MAX_STRING_CHARS, *, keep_tail: bool = False) -> str:
    """``text`` with identifier-like substrings replaced and its length bounded.

    A cut never leaves part of an identifier behind: the letter/digit run the
    cut goes through is dropped too.

    Args:
        text: any string headed for a log line.
        limit: the most characters kept (plus a truncation note).
        keep_tail: keep the end rather than the start (tracebacks).
    """
    if len(text) > MAX_SCAN_CHARS:
        if keep_tail:
            text = _LEADING_WORD.sub("", text[-MAX_SCAN_CHARS:])
        else:
            text = _TRAILING_WORD.sub("", text[:MAX_SCAN_CHARS])
    text = _scrub_identifiers(text)
    if len(text) > limit:
        if keep_tail:
            text = f"[truncated]…{_LEADING_WORD.sub('', text[-limit:])}"
        else:
            text = f"{_TRAILING_WORD.sub('', text[:limit])}…[truncated]"
    return text


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def is_sensitive_key(key: str) -> bool:
    """Whether a field called ``key`` may carry payload or secrets."""
    normal = key.lower().replace("-", "_")
    words = _KEY_WORDS.findall(normal)
    joined = "_".join(words)
    return any(w in _SENSITIVE_WORDS for w in words) or any(p in joined for p in _SENSITIVE_PHRASES)


def _is_count(key: str, value: object) -> bool:
    words = _KEY_WORDS.findall(key.lower())
    return (
        bool(words)
        and words[-1] in _COUNT_WORDS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


def _clean(value: object, depth: int) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if depth >= MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return _clean_mapping(value, depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        kept = [_clean(item, depth + 1) for item in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            kept.append(f"…{len(items) - MAX_ITEMS} more")
        return kept
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    if isinstance(value, Enum):
        return _clean(value.value, depth + 1)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, PurePath | UUID | IPv4Address | IPv6Address):
        return scrub(str(value))
    # An arbitrary object's repr may hold its contents (a summary, a buffer).
    return f"<{type(value).__name__}>"


def _clean_mapping(mapping: Mapping[Any, Any], depth: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for i, (raw_key, value) in enumerate(mapping.items()):
        if i == MAX_ITEMS:
            out["…"] = f"{len(mapping) - MAX_ITEMS} more"
            break
        key = scrub(str(raw_key)) if not isinstance(raw_key, bytes) else f"<{len(raw_key)} bytes>"
        if is_sensitive_key(key) and not _is_count(key, value):
            out[key] = REDACTED
        elif depth == 0 and key in _TRACEBACK_KEYS and isinstance(value, str):
            out[key] = scrub(value, MAX_TRACEBACK_CHARS, keep_tail=True)
        else:
            out[key] = _clean(value, depth)
    return out


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets and payload, scrub identifiers, bound sizes.

    Put it last before the renderer, after exception formatting, so that
    tracebacks and exception messages are scrubbed too. ``exc_info`` that is
    still present is dropped: a renderer would format it unscrubbed.
    """
    event_dict.pop("exc_info", None)
    return _clean_mapping(event_dict, 0)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _tail(fmt: str) -> list[Processor]:
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False, sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    return [structlog.processors.format_exc_info, redact, renderer]


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library to write redacted lines.

    Args:
        fmt: ``json`` (one JSON object per line, for log pipelines) or
            ``console`` (aligned ``key=value`` for humans; ``--log-format``).
        level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        stream: where lines go; standard output by default (12-factor: the
            platform collects stdout).

    Raises:
        ConfigError: unknown format or level.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if level.lower() not in LEVELS:
        raise ConfigError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    threshold = LEVELS[level.lower()]
    out = stream if stream is not None else sys.stdout

    # structlog events render natively (about half the cost of a detour through
    # the standard library); both paths write whole lines under one lock.
    writer = structlog.WriteLogger(out)
    structlog.configure(
        processors=[*_shared_processors(), *_tail(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *args: writer,
        # Not cached: tests and `gateway serve` may reconfigure after loggers exist.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_formatter_leftovers,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_tail(fmt)],
    )
    handler = _GatewayHandler(writer)
    handler.addFilter(_no_bytes_arguments)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Replace only our own handler: a second call (reload, tests) must not
    # duplicate lines, nor remove handlers someone else installed.
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)


def _drop_formatter_leftovers(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Drop ``message``/``asctime`` that another handler's formatter left on the record.

    :class:`~structlog.stdlib.ExtraAdder` would copy them as extras; ``message``
    is the text formatted *before* our bytes filter ran, so it may hold payload.
    """
    event_dict.pop("message", None)
    event_dict.pop("asctime", None)
    return event_dict


def _no_bytes_arguments(record: logging.LogRecord) -> bool:
    """Replace bytes ``%``-arguments of standard-library records by a length marker.

    ``log.error("client sent %r", data)`` would otherwise put the payload into
    the message text before :func:`redact` ever sees it as bytes.
    """
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, bytes | bytearray | memoryview) for a in args):
        record.args = tuple(
            f"<{len(a)} bytes>" if isinstance(a, bytes | bytearray | memoryview) else a
            for a in args
        )
    elif isinstance(args, Mapping) and any(
        isinstance(a, bytes | bytearray | memoryview) for a in args.values()
    ):
        record.args = {
            k: f"<{len(a)} bytes>" if isinstance(a, bytes | bytearray | memoryview) else a
            for k, a in args.items()
        }
    return True


class _GatewayHandler(logging.Handler):
    """Writes standard-library records through structlog's writer.

    Sharing the :class:`structlog.WriteLogger` (and so its per-file lock) keeps
    lines from the two paths from interleaving mid-line; the class also lets
    :func:`configure_logging` find its own handler again.
    """

    def __init__(self, writer: structlog.WriteLogger) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg(self.format(record))
        except Exception:  # noqa: BLE001 - as logging.StreamHandler: a log line must never crash the gateway
            self.handleError(record)
