"""The ledger gauges are read from the ledger, not left to the next transfer (issue 16).

A real PostgreSQL database of the test's own: filled before the gateway
starts (the gauges must show it at once), written by "another replica"
while it runs, and made to refuse connections (``ALLOW_CONNECTIONS false``
and its sessions ended) to see ``gateway_ledger_up`` fall and recover.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from gateway.ledger import ledger_year, open_ledger
from gateway.server import app as server_app
from tests.ledger.pg import PROBE_TIMEOUT_S, require_pg
from tests.server.conftest import Parks, start_parks

ORG = "replica-b-lab"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(require_pg(), timeout=PROBE_TIMEOUT_S)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of this test's own, and its URL."""
    base = require_pg()
    name = f"gw_gauges_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE {name}")
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await _admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        await _admin(f"DROP DATABASE IF EXISTS {name}")


async def export(url: str, people: range) -> None:
    """What another replica's allowed transfer does to the ledger."""
    ledger = await open_ledger(url)
    try:
        async with ledger.transaction(ORG, ledger_year()) as tx:
            await tx.add("personal", [f"person-{i}".encode() for i in people])
    finally:
        await ledger.close()


async def gauge(parks: Parks, pattern: str) -> float | None:
    async with parks.session.get(f"{parks.egress}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if re.fullmatch(pattern + r" \S+", line):
            return float(line.rsplit(" ", 1)[1])
    return None


async def wait_for(read: Callable[[], object], want: object, seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while (got := await read()) != want:  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, f"still {got!r}, want {want!r}"
        await asyncio.sleep(0.1)


SUBJECTS = r'gateway_ledger_subjects\{category="personal",organisation="' + ORG + r'"\}'


async def test_ledger_gauges_from_start_across_replicas_and_through_an_outage(
    tmp_path: Path, pki: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await export(database, range(7))
    monkeypatch.setattr(server_app, "LEDGER_REFRESH_SECONDS", 0.2)
    async with start_parks(tmp_path, pki, ledger_url=database) as parks:
        # At start, before any transfer: what the ledger holds.
        await wait_for(lambda: gauge(parks, SUBJECTS), 7.0, seconds=5)
        assert await gauge(parks, "gateway_ledger_up") == 1.0
        # Another replica exports more people of the organisation.
        await export(database, range(5, 12))
        await wait_for(lambda: gauge(parks, SUBJECTS), 12.0)
        # The database stops taking connections and its sessions end.
        name = database.rsplit("/", 1)[1]
        await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await _admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        await wait_for(lambda: gauge(parks, "gateway_ledger_up"), 0.0)
        assert await gauge(parks, SUBJECTS) == 12.0  # the last count read stays
        await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await wait_for(lambda: gauge(parks, "gateway_ledger_up"), 1.0)
