"""Where the PostgreSQL tests find their server, and how they isolate themselves.

The server comes from ``GATEWAY_TEST_PG`` (default: the local test database).
When none answers, PostgreSQL tests are skipped with that reason, except under
``CI=true``, where a missing server is a failure: CI must not go green by
silently testing less.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

#: The test server (issue 6): trust auth on loopback, database ``test``.
PG_URL = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
#: Seconds to wait for the probe connection: a local server answers in milliseconds.
PROBE_TIMEOUT_S = 3.0


@functools.cache
def _probe() -> str | None:
    async def connect() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=PROBE_TIMEOUT_S)
        await conn.close()

    try:
        # Its own thread and loop: the caller may be inside pytest-asyncio's loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, connect()).result()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL at {PG_URL} ({type(exc).__name__}: {exc})"
    return None


def require_pg() -> str:
    """The server URL; skip (or, under ``CI=true``, fail) when it does not answer."""
    problem = _probe()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI=true requires it (set GATEWAY_TEST_PG)")
        pytest.skip(problem)
    return PG_URL


def new_schema() -> str:
    """A schema name no other test (or xdist worker) uses."""
    return f"t_ledger_{uuid.uuid4().hex[:16]}"


async def drop_schema(schema: str) -> None:
    """Drop a test's schema and everything in it."""
    conn = await asyncpg.connect(PG_URL, timeout=PROBE_TIMEOUT_S)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
