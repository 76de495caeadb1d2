"""One ledger fixture over every backend, so that all share one test suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.ledger import Ledger, MemoryLedger, PostgresLedger, SqliteLedger
from tests.ledger.pg import drop_schema, new_schema, require_pg

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """A fresh, empty ledger of each backend."""
    backend: str = request.param
    if backend == "memory":
        memory = MemoryLedger()
        yield memory
        await memory.close()
    elif backend == "sqlite":
        sqlite = await SqliteLedger(tmp_path / "ledger.sqlite3").open()
        yield sqlite
        await sqlite.close()
    else:
        url = require_pg()
        schema = new_schema()
        postgres = await PostgresLedger(url, schema=schema).open()
        try:
            yield postgres
        finally:
            await postgres.close()
            await drop_schema(schema)
