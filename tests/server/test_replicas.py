"""Replicas of one park behind a real load balancer (issue 16).

Two `gateway serve` replicas of the HK park (their own instance names, audit
logs and spools; one shared PostgreSQL ledger in a schema of this test's own,
one secret and signing key) behind HAProxy from Debian's packages, round
robin, no stickiness, a new connection per request; the SZ twin behind them.
Every transfer pushed through the balancer answers its status and receipt on
either replica, and still on the survivor once the replica that handled it
is gone; both audit logs verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.audit.note import NoteVerifier
from gateway.audit.verify import verify_log
from gateway.server.runner import RunningGateway
from tests.ledger.pg import drop_schema, new_schema, require_pg
from tests.server.conftest import (
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    Parks,
    replica_settings,
    running,
    start_parks,
)
from tests.server.test_egress import CLEAN, personal_csv

SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
INSTANCES = ("hk-0", "hk-1")
#: The balancer's health checks: a replica that stops answering leaves the pool fast.
HAPROXY_CONFIG = """\
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend park
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /healthz
{servers}
"""


def haproxy() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None
    )
    if found is None:
        pytest.fail("haproxy is not installed: apt-get install haproxy (.ci/run does)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def balancer(tmp_path: Path, replicas: list[RunningGateway]) -> AsyncIterator[str]:
    port = free_port()
    servers = "\n".join(
        f"    server {name} {gw.egress_url.removeprefix('http://')} check inter 200ms fall 1 rise 1"
        for name, gw in zip(INSTANCES, replicas, strict=True)
        if gw.egress_url is not None
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    process = subprocess.Popen(  # noqa: ASYNC220 - a child for the whole test
        [haproxy(), "-f", str(config), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(
                    f"haproxy did not come up: {process.stderr.read() if process.stderr else ''}"
                )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.asynccontextmanager
async def park_replicas(
    root: Path, pki: Path, query: str = ""
) -> AsyncIterator[tuple[Parks, list[RunningGateway]]]:
    """The twin parks, and the HK park's replicas on a PostgreSQL schema of their own."""
    schema = new_schema()
    ledger_url = f"{require_pg()}?schema={schema}{query}"
    try:
        async with start_parks(root, pki) as parks, contextlib.AsyncExitStack() as stack:
            replicas = [
                await stack.enter_async_context(
                    running(replica_settings(root, pki, name, ledger_url), drain_seconds=2)
                )
                for name in INSTANCES
            ]
            yield parks, replicas
    finally:
        await drop_schema(schema)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, headers=SENDER) as response:
        return response.status, await response.json(content_type=None)


async def test_any_replica_answers_for_any_transfer_behind_a_balancer(
    tmp_path: Path, pki: Path
) -> None:
    async with (
        park_replicas(tmp_path, pki) as (parks, replicas),
        contextlib.AsyncExitStack() as stack,
    ):
        log_key = parks.hk.services.signer.verifier  # the replicas' key file, other names
        # A new connection per request: nothing sticks a client to a replica.
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        )
        url = await stack.enter_async_context(balancer(tmp_path, replicas))
        pushed: dict[str, str] = {}
        for number in range(6):
            data = personal_csv() if number == 3 else CLEAN[: 2000 + number]
            put = f"{url}/v1/transfers/sz-lab/r{number}.csv"
            async with session.put(put, data=data, headers=SENDER) as response:
                body = await response.json(content_type=None)
                assert response.status in (201, 403), body
            pushed[body["transfer_id"]] = "blocked" if number == 3 else "delivered"
        owner: dict[str, str] = {}
        answered: dict[str, set[str]] = {}
        for transfer_id, final in pushed.items():
            for what in ("", "/receipt") * 2 + ("",) * 2:  # round robin: both replicas
                async with session.get(
                    f"{url}/v1/transfers/{transfer_id}{what}", headers=SENDER
                ) as response:
                    body = await response.json(content_type=None)
                    assert response.status == 200, body
                    by = response.headers["X-Gateway-Instance"]
                answered.setdefault(transfer_id, set()).add(by)
                if what:
                    assert isinstance(body["index"], int)
                    continue
                assert (body["transfer_id"], body["state"]) == (transfer_id, final)
                assert owner.setdefault(transfer_id, body["instance"]) == body["instance"]
        # Every transfer was answered by both replicas, for the one that handled it.
        assert all(seen == set(INSTANCES) for seen in answered.values()), answered
        handled = {i: [t for t, by in owner.items() if by == i] for i in INSTANCES}
        assert handled["hk-0"]
        assert handled["hk-1"]
        # The replica that handled some is gone: the survivor still answers for them.
        gone, survivor = replicas
        await gone.drain(1)
        for runner in reversed(gone.runners):
            await runner.cleanup()
        for transfer_id in handled["hk-0"]:
            status, body = await get(session, f"{survivor.egress_url}/v1/transfers/{transfer_id}")
            assert (status, body["instance"], body["state"]) == (200, "hk-0", pushed[transfer_id])
        # A path that is no transfer id is refused, not looked up.
        status, _ = await get(session, f"{url}/v1/transfers/{next(iter(pushed))}x")
        assert status in (400, 404)
    for instance in INSTANCES:
        verifier = NoteVerifier.from_public_key(f"hk.test/audit/{instance}", log_key.public_key)
        result = verify_log(tmp_path / instance / "audit", [verifier])
        assert result.ok, result.problems
        assert result.records > 0


async def test_publishing_never_waits_for_a_connection_its_own_transaction_holds(
    tmp_path: Path, pki: Path
) -> None:
    """A counted transfer's verdict record is appended inside the organisation's
    ledger transaction, which holds a pooled connection; its directory write must
    not need a second one there. With a pool of one connection it would wait for
    ever: the transfer must be answered, and its status visible on the other replica."""
    async with (
        park_replicas(tmp_path, pki, "&pool_size=1") as (_, (first, second)),
        aiohttp.ClientSession() as session,
    ):
        put = f"{first.egress_url}/v1/transfers/sz-contract/people.csv"
        async with asyncio.timeout(30):
            async with session.put(put, data=personal_csv(), headers=SENDER) as response:
                body = await response.json(content_type=None)
                assert response.status == 201, body
            assert body["subjects"] >= 1  # counted: the ledger transaction ran
            status, seen = await get(
                session, f"{second.egress_url}/v1/transfers/{body['transfer_id']}"
            )
        assert (status, seen["state"], seen["instance"]) == (200, "delivered", "hk-0")


async def test_every_replica_shows_the_park_s_review_queue(tmp_path: Path, pki: Path) -> None:
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    async with (
        park_replicas(tmp_path, pki) as (_, replicas),
        aiohttp.ClientSession() as session,
    ):
        held: dict[str, str] = {}
        for number, replica in enumerate(replicas):
            put = f"{replica.egress_url}/v1/transfers/sz-review/held{number}.csv"
            async with session.put(put, data=CLEAN[:3000], headers=SENDER) as response:
                body = await response.json(content_type=None)
                assert response.status == 202, body
            held[body["transfer_id"]] = INSTANCES[number]

        async def queue(replica: RunningGateway) -> dict[str, Any]:
            url = f"{replica.egress_url}/v1/reviews?state=pending"
            async with session.get(url, headers=officer) as response:
                assert response.status == 200
                return dict(await response.json(content_type=None))

        for replica in replicas:
            page = await queue(replica)
            assert page["total"] == 2
            assert {r["transfer_id"]: r["instance"] for r in page["reviews"]} == held
            assert all(r["sender"] == "hk-research" for r in page["reviews"])
            assert all(r["organisation"] == "hku" for r in page["reviews"])
        # Decided on the replica that holds it: gone from every replica's queue.
        first = next(t for t, i in held.items() if i == "hk-0")
        url = f"{replicas[0].egress_url}/v1/reviews/{first}/approve"
        async with session.post(url, json={"comment": "ok"}, headers=officer) as response:
            assert response.status == 201, await response.text()
        for replica in replicas:
            page = await queue(replica)
            assert [r["transfer_id"] for r in page["reviews"]] == [t for t in held if t != first]
