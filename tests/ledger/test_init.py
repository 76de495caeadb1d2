"""``open_ledger``: which URL opens which backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.ledger import (
    MemoryLedger,
    PostgresLedger,
    SqliteLedger,
    open_ledger,
    redact_url,
)
from tests.ledger.pg import PG_URL, drop_schema, new_schema, require_pg


async def test_memory_url() -> None:
    assert isinstance(await open_ledger("memory:"), MemoryLedger)


@pytest.mark.parametrize("form", ["plain", "sqlite-abs"])
async def test_sqlite_urls_and_plain_paths(form: str, tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    url = str(path) if form == "plain" else f"sqlite:///{path}"  # "/tmp/…" -> four slashes
    ledger = await open_ledger(url)
    try:
        assert isinstance(ledger, SqliteLedger)
        assert ledger.path == path
    finally:
        await ledger.close()


async def test_sqlite_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = await open_ledger("sqlite:///var/l.sqlite3")
    await ledger.close()
    assert (tmp_path / "var" / "l.sqlite3").is_file()


@pytest.mark.postgres
async def test_postgres_url_with_schema() -> None:
    require_pg()
    schema = new_schema()
    ledger = await open_ledger(f"{PG_URL}?schema={schema}")
    try:
        assert isinstance(ledger, PostgresLedger)
        assert ledger.schema == schema
        await ledger.ping()
    finally:
        await ledger.close()
        await drop_schema(schema)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("sqlite://", "expected sqlite:///"),
        ("mysql://u:pw@db/x", "unsupported scheme 'mysql'"),
    ],
)
async def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        await open_ledger(url)
    assert "pw@" not in info.value.detail


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://gw:s3cret@db:5432/x") == "postgresql://gw:***@db:5432/x"
    assert redact_url("postgresql://gw@db/x") == "postgresql://gw@db/x"
    assert redact_url("var/ledger.sqlite3") == "var/ledger.sqlite3"


async def test_the_pool_size_is_a_url_parameter_within_bounds() -> None:
    from gateway.errors import ConfigError

    url = require_pg()
    schema = new_schema()
    try:
        ledger = await open_ledger(f"{url}?schema={schema}&pool_size=2")
        try:
            assert ledger._pool_max_size == 2
        finally:
            await ledger.close()
        for bad in ("0", "101", "ten"):
            with pytest.raises(ConfigError, match="pool_size must be a whole number"):
                await open_ledger(f"{url}?schema={schema}&pool_size={bad}")
    finally:
        await drop_schema(schema)
