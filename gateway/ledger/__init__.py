"""The yearly export ledger: distinct subjects per organisation, category and year.

:func:`open_ledger` picks the backend from the configured ``ledger_url``:

=====================================  ==========================================
``memory:``                            :class:`~gateway.ledger.base.MemoryLedger`
``sqlite:///rel/path``,                :class:`~gateway.ledger.sqlite.SqliteLedger`
``sqlite:////abs/path``, a plain path  (SQLAlchemy's convention: three slashes
                                       then a relative path, four for absolute)
``postgresql://…`` (``postgres://``)   :class:`~gateway.ledger.postgres.PostgresLedger`;
                                       ``?schema=NAME`` picks the schema
=====================================  ==========================================
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.errors import ConfigError
from gateway.ledger.base import (
    PARK_TZ,
    Ledger,
    LedgerCount,
    LedgerTotal,
    LedgerTransaction,
    LedgerUnavailable,
    MemoryLedger,
    ledger_year,
)
from gateway.ledger.postgres import (
    DEFAULT_SCHEMA,
    MAX_POOL_SIZE,
    POOL_MAX_SIZE,
    PostgresLedger,
    redact_url,
)
from gateway.ledger.report import refresh_ledger_metrics
from gateway.ledger.sqlite import SqliteLedger

__all__ = [
    "DEFAULT_LEDGER_URL",
    "PARK_TZ",
    "Ledger",
    "LedgerCount",
    "LedgerTotal",
    "LedgerTransaction",
    "LedgerUnavailable",
    "MemoryLedger",
    "PostgresLedger",
    "SqliteLedger",
    "ledger_year",
    "open_ledger",
    "redact_url",
    "refresh_ledger_metrics",
]

#: The embedded default (SPEC §2: ``make run`` uses a SQLite ledger); relative to
#: the working directory, next to the audit log under ``var/``.
DEFAULT_LEDGER_URL = "var/ledger.sqlite3"

_POSTGRES_SCHEMES = ("postgresql", "postgres")


async def open_ledger(url: str, *, create: bool = True, password: str | None = None) -> Ledger:
    """Open (and by default create) the ledger that ``url`` names.

    Connects before returning, so a wrong path, host or password fails at
    start-up rather than on the first transfer.

    Args:
        url: ``memory:``, ``sqlite:///path``, a plain file path, or
            ``postgresql://user@host:port/db[?schema=NAME][&pool_size=N]``
            (``pool_size``: pooled connections per process, 10 by default).
        create: create the database file, schema and tables when missing.
            ``gateway ledger show`` passes ``False``: looking must not create.
        password: PostgreSQL's password when the URL carries none (read from
            ``ledger_password_file``); ignored by the other backends.

    Raises:
        ConfigError: the URL is malformed or names no supported backend, or
            (with ``create=False``) the SQLite file does not exist.
        LedgerUnavailable: the backend did not answer.
    """
    text = url.strip()
    if not text:
        raise ConfigError("ledger URL is empty")
    if text == "memory:":
        return MemoryLedger()
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    if scheme in _POSTGRES_SCHEMES:
        parts = urlsplit(text)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = DEFAULT_SCHEMA
        pool_size = POOL_MAX_SIZE
        kept: list[tuple[str, str]] = []
        for key, value in query:
            if key == "schema":
                schema = value
            elif key == "pool_size":
                if not value.isdigit() or not 1 <= int(value) <= MAX_POOL_SIZE:
                    raise ConfigError(
                        f"ledger URL: pool_size must be a whole number from 1 to {MAX_POOL_SIZE}"
                    )
                pool_size = int(value)
            else:
                kept.append((key, value))
        dsn = urlunsplit(parts._replace(query=urlencode(kept)))
        return await PostgresLedger(
            dsn, schema=schema, create=create, password=password, pool_max_size=pool_size
        ).open()
    if scheme == "sqlite":
        path = text[len("sqlite:///") :] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"ledger URL {text!r}: expected sqlite:///relative or sqlite:////abs")
        return await SqliteLedger(path, create=create).open()
    if scheme:
        raise ConfigError(
            f"ledger URL {redact_url(text)!r}: unsupported scheme {scheme!r}"
            " (expected memory:, sqlite:///, a file path or postgresql://)"
        )
    return await SqliteLedger(text, create=create).open()
