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
import dataclasses
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.audit.note import NoteVerifier
from gateway.audit.verify import verify_log
from gateway.ledger import PostgresLedger
from gateway.server.egress_state import EGRESS
from gateway.server.records import republish
from gateway.server.runner import RunningGateway, running
from tests.ledger.pg import PG_URL, drop_schema, new_schema, require_pg
from tests.server.conftest import (
    NAMED_OFFICER_TOKEN,
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    Parks,
    replica_settings,
    start_parks,
)
from tests.server.test_egress import CLEAN, personal_csv

SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
INSTANCES = ("hk-0", "hk-1")
#: The balancer's health checks: a replica that stops answering leaves the pool
#: within a second; a check slowed by a busy machine (2 s to answer, three misses)
#: does not take a healthy one out.
HAPROXY_CONFIG = """\
global
    stats socket {socket}
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 2s
frontend park
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET {check}
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


@dataclasses.dataclass
class Balancer:
    """A running HAProxy: its frontend's URL and its stats socket."""

    url: str
    socket: Path

    async def up(self) -> set[str]:
        """The replicas in HAProxy's pool (``show stat``): "UP", or "UP 1/3" while
        failing checks are counted towards taking one out."""
        reader, writer = await asyncio.open_unix_connection(self.socket)
        try:
            writer.write(b"show stat\n")
            await writer.drain()
            text = (await reader.read()).decode()
        finally:
            writer.close()
            await writer.wait_closed()
        header, *rows = text.lstrip("# ").splitlines()
        stats = [dict(zip(header.split(","), row.split(","), strict=False)) for row in rows]
        replicas = [s for s in stats if s["pxname"] == "replicas" and s["svname"] in INSTANCES]
        return {s["svname"] for s in replicas if s["status"].startswith("UP")}

    async def wait_until_up(self, instances: set[str], seconds: float = 10) -> None:
        """Wait until exactly ``instances`` are in the pool, as HAProxy's checks decide."""
        async with asyncio.timeout(seconds):
            while await self.up() != instances:  # noqa: ASYNC110 - HAProxy's state, polled
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def balancer(
    tmp_path: Path, replicas: list[RunningGateway], check: str = "/healthz"
) -> AsyncIterator[Balancer]:
    port = free_port()
    servers = "\n".join(
        f"    server {name} {gw.egress_url.removeprefix('http://')} check inter 200ms fall 3 rise 1"
        for name, gw in zip(INSTANCES, replicas, strict=True)
        if gw.egress_url is not None
    )
    config = tmp_path / "haproxy.cfg"
    socket_path = tmp_path / "haproxy.sock"
    config.write_text(
        HAPROXY_CONFIG.format(port=port, servers=servers, check=check, socket=socket_path)
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - a child for the whole test
        [haproxy(), "-f", str(config), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        proxy = Balancer(f"http://127.0.0.1:{port}", socket_path)
        try:
            # Listening, and both replicas in the pool.
            async with asyncio.timeout(10):
                while not socket_path.exists() and process.poll() is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await proxy.wait_until_up(set(INSTANCES))
        except (OSError, TimeoutError):
            process.terminate()  # its stderr ends only with it
            _, errors = process.communicate(timeout=10)
            pytest.fail(f"haproxy did not come up: {errors.decode(errors='replace')}")
        yield proxy
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


async def stop(replica: RunningGateway, drain_seconds: float | None = 1) -> None:
    """Stop ``replica`` as its process's exit would: drain it (unless the caller
    did), close its listeners, then its audit log."""
    if drain_seconds is not None:
        await replica.drain(drain_seconds)
    for runner in reversed(replica.runners):
        await runner.cleanup()
    await replica.services.audit.close()


def assert_logs_verify(root: Path, log_key: NoteVerifier, instances: tuple[str, ...]) -> None:
    """Each replica's audit log verifies under its own origin and the park's one key."""
    for instance in instances:
        verifier = NoteVerifier.from_public_key(f"hk.test/audit/{instance}", log_key.public_key)
        result = verify_log(root / instance / "audit", [verifier])
        assert result.ok, result.problems
        assert result.records > 0


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
        pool = await stack.enter_async_context(balancer(tmp_path, replicas))
        url = pool.url
        pushed: dict[str, str] = {}
        for number in range(6):
            data = personal_csv() if number == 3 else CLEAN[: 2000 + number]
            put = f"{url}/v1/transfers/sz-lab/r{number}.csv"
            async with session.put(put, data=data, headers=SENDER) as response:
                body = await response.json(content_type=None)
                assert response.status == (403 if number == 3 else 201), body
            pushed[body["transfer_id"]] = "blocked" if number == 3 else "delivered"
        owner: dict[str, str] = {}
        answered: dict[tuple[str, str], set[str]] = {}
        for transfer_id, final in pushed.items():
            receipts = []
            # Round robin: each kind of request at an odd and an even turn, so both
            # replicas answer the status and both the receipt.
            for what in ("", "/receipt", "/receipt", ""):
                async with session.get(
                    f"{url}/v1/transfers/{transfer_id}{what}", headers=SENDER
                ) as response:
                    body = await response.json(content_type=None)
                    assert response.status == 200, body
                    by = response.headers["X-Gateway-Instance"]
                answered.setdefault((transfer_id, what), set()).add(by)
                if what:
                    assert isinstance(body["index"], int)
                    receipts.append(body)
                    continue
                assert (body["transfer_id"], body["state"]) == (transfer_id, final)
                assert owner.setdefault(transfer_id, body["instance"]) == body["instance"]
            # One receipt whichever replica gives it; the other replica's adds the
            # instance whose log holds it.
            plain = [{k: v for k, v in r.items() if k != "instance"} for r in receipts]
            assert plain[0] == plain[1], receipts
            assert {r["instance"] for r in receipts if "instance" in r} <= {owner[transfer_id]}
        # Every transfer's status and receipt were answered by both replicas, for the
        # one that handled it.
        assert len(answered) == 2 * len(pushed)
        assert all(seen == set(INSTANCES) for seen in answered.values()), answered
        handled = {i: [t for t, by in owner.items() if by == i] for i in INSTANCES}
        assert handled["hk-0"]
        assert handled["hk-1"]
        # The replica that handled some is gone: the survivor still answers for them.
        gone, survivor = replicas
        await stop(gone)
        await pool.wait_until_up({"hk-1"})
        for transfer_id in handled["hk-0"]:
            status, body = await get(session, f"{survivor.egress_url}/v1/transfers/{transfer_id}")
            assert (status, body["instance"], body["state"]) == (200, "hk-0", pushed[transfer_id])
        # A path that is no transfer id is refused, not looked up.
        status, _ = await get(session, f"{url}/v1/transfers/{next(iter(pushed))}x")
        assert status in (400, 404)
    assert_logs_verify(tmp_path, log_key, INSTANCES)


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


async def test_any_replica_decides_any_review_even_when_its_replica_is_gone(
    tmp_path: Path, pki: Path
) -> None:
    """Reviews held on one replica are approved and rejected through the balancer
    on whichever replica answers; two officers racing on two replicas decide it
    once; four-eyes approvals given on different replicas count together; a
    review whose replica was stopped is approved on the survivor; a restarted
    replica does not bring back a review decided elsewhere."""
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    chan = {"Authorization": f"Bearer {NAMED_OFFICER_TOKEN}"}
    async with (
        park_replicas(tmp_path, pki) as (parks, replicas),
        contextlib.AsyncExitStack() as stack,
    ):
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        )
        url = (await stack.enter_async_context(balancer(tmp_path, replicas))).url

        async def hold(replica: RunningGateway, name: str) -> str:
            put = f"{replica.egress_url}/v1/transfers/sz-review/{name}"
            async with session.put(
                put, data=CLEAN[:2500] + name.encode(), headers=SENDER
            ) as response:
                body = await response.json(content_type=None)
                assert response.status == 202, body
            return str(body["transfer_id"])

        async def decide(
            base: str | None, transfer_id: str, verb: str, who: dict[str, str] = officer
        ) -> tuple[int, dict[str, Any], str]:
            post = f"{base}/v1/reviews/{transfer_id}/{verb}"
            async with session.post(post, json={"comment": f"{verb} it"}, headers=who) as response:
                body = await response.json(content_type=None)
                return response.status, body, response.headers["X-Gateway-Instance"]

        async def state_everywhere(transfer_id: str) -> set[str]:
            seen = set()
            for replica in replicas:
                status, body = await get(
                    session, f"{replica.egress_url}/v1/transfers/{transfer_id}"
                )
                assert status == 200, body
                seen.add(body["state"])
            return seen

        held_dir = tmp_path / "held"
        first, second = replicas
        # Through the balancer, decisions land on both replicas; each is decided
        # whichever replica holds it.
        on_first = [await hold(first, f"a{n}.csv") for n in range(3)]
        on_second = [await hold(second, f"b{n}.csv") for n in range(3)]
        deciders = set()
        for number, transfer_id in enumerate(on_first + on_second):
            verb = "approve" if number % 2 else "reject"
            status, body, by = await decide(url, transfer_id, verb)
            assert status == (201 if verb == "approve" else 200), body
            deciders.add(by)
            final = "delivered" if verb == "approve" else "rejected"
            assert await state_everywhere(transfer_id) == {final}
            # Decided once for the park: again on either replica is refused.
            for replica in replicas:
                again, _, _ = await decide(replica.egress_url, transfer_id, "approve")
                assert again == 404
        assert deciders == set(INSTANCES)
        assert not [p for p in held_dir.rglob("*") if p.is_file()]  # every held file went
        delivered = parks.inbox_files("sz-review")
        assert sorted(delivered) == sorted(f"{p}{n}.csv" for p, n in (("a", 1), ("b", 0), ("b", 2)))
        # Two officers on two replicas at once: one decision, not two.
        raced = await hold(first, "race.csv")
        results = await asyncio.gather(
            decide(first.egress_url, raced, "approve"),
            decide(second.egress_url, raced, "reject", chan),
        )
        codes = sorted(code for code, _, _ in results)
        assert codes[0] in (200, 201), results
        assert codes[1] in (404, 409), results
        assert len(await state_everywhere(raced)) == 1
        # Four eyes across replicas: the first approval is given on one replica,
        # the same officer is refused the second on the other, another officer's counts.
        reason = "    reason: Transfers on this route are checked by a compliance officer.\n"
        policy_file = tmp_path / "policies" / "policy.yaml"
        policy_file.write_text(
            policy_file.read_text().replace(reason, reason + "    approvals: 2\n")
        )
        from gateway.server.app import reload_policy

        for replica in replicas:
            assert replica.egress_app is not None
            assert (await reload_policy(replica.egress_app)).ok
        four_eyes = await hold(second, "four-eyes.csv")
        status, body, _ = await decide(first.egress_url, four_eyes, "approve")
        assert (status, body["approvals"]) == (202, "1 of 2"), body
        # Every replica's queue names the first approver, the holder's too.
        for replica in replicas:
            async with session.get(
                f"{replica.egress_url}/v1/reviews?state=pending", headers=officer
            ) as response:
                queue = await response.json(content_type=None)
            (row,) = [r for r in queue["reviews"] if r["transfer_id"] == four_eyes]
            assert row["approved_by"] == [body["officer"]], row
        status, body, _ = await decide(second.egress_url, four_eyes, "approve")
        assert status == 409, body
        status, body, _ = await decide(second.egress_url, four_eyes, "approve", chan)
        assert status == 201, body
        assert await state_everywhere(four_eyes) == {"delivered"}
        # The replica holding a review stops; the survivor approves it (four eyes, still).
        orphan = await hold(first, "orphan.csv")
        rejected_elsewhere = await hold(first, "rejected-elsewhere.csv")
        status, _, _ = await decide(second.egress_url, rejected_elsewhere, "reject")
        assert status == 200
        await stop(first)
        status, body, by = await decide(second.egress_url, orphan, "approve")
        assert (status, by) == (202, "hk-1"), body
        status, body, by = await decide(second.egress_url, orphan, "approve", chan)
        assert (status, by) == (201, "hk-1"), body
        assert "orphan.csv" in parks.inbox_files("sz-review")
        # Restarted, the first replica holds neither (both were decided on the other).
        settings = replica_settings(tmp_path, pki, "hk-0", first.services.settings.ledger_url)
        restarted = await stack.enter_async_context(running(settings, drain_seconds=2))
        page_url = f"{restarted.egress_url}/v1/reviews?state=pending"
        async with session.get(page_url, headers=officer) as response:
            page = await response.json(content_type=None)
        assert page["total"] == 0, page
        egress = restarted.egress_app
        assert egress is not None
        assert egress[EGRESS].held == {}
        status, body = await get(session, f"{restarted.egress_url}/v1/transfers/{orphan}")
        assert (status, body["state"], body["instance"]) == (200, "delivered", "hk-1")
        log_key = parks.hk.services.signer.verifier
    assert_logs_verify(tmp_path, log_key, INSTANCES)


async def test_a_claim_left_by_a_replica_that_died_deciding_is_settled_when_it_returns(
    tmp_path: Path, pki: Path
) -> None:
    """A replica stopped while it held the claim on another replica's review: the
    review is refused elsewhere (409, naming it) rather than decided twice, and
    once that replica is back, its start-up gives the claim up (nothing of the
    decision was recorded) and the review is decided on the holder."""
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    async with (
        park_replicas(tmp_path, pki) as (parks, (holder, claimer)),
        contextlib.AsyncExitStack() as stack,
    ):
        session = await stack.enter_async_context(aiohttp.ClientSession())
        put = f"{holder.egress_url}/v1/transfers/sz-review/claimed.csv"
        async with session.put(put, data=CLEAN[:2000], headers=SENDER) as response:
            held = await response.json(content_type=None)
            assert response.status == 202, held  # held for review on the holder
        transfer_id = held["transfer_id"]
        assert await claimer.services.directory.claim_review(transfer_id, "hk-1", 600) is not None
        await stop(claimer)
        approve = f"{holder.egress_url}/v1/reviews/{transfer_id}/approve"
        async with session.post(approve, json={"comment": "ok"}, headers=officer) as response:
            body = await response.json(content_type=None)
            assert response.status == 409, body
            assert "hk-1" in body["detail"]
        settings = replica_settings(tmp_path, pki, "hk-1", claimer.services.settings.ledger_url)
        await stack.enter_async_context(running(settings, drain_seconds=2))
        async with session.post(approve, json={"comment": "ok"}, headers=officer) as response:
            assert response.status == 201, await response.text()
        assert "claimed.csv" in parks.inbox_files("sz-review")


async def test_a_state_the_directory_missed_reaches_it_once_the_directory_is_back(
    tmp_path: Path, pki: Path
) -> None:
    """The transfers table goes away while a transfer is pushed (an outage of the
    directory alone): the transfer is delivered all the same, its state waits on
    the replica that handled it, and reaches the other replica once retried."""
    async with (
        park_replicas(tmp_path, pki) as (_, (first, second)),
        aiohttp.ClientSession() as session,
    ):
        assert first.egress_app is not None
        state = first.egress_app[EGRESS]
        directory = first.services.directory
        assert isinstance(directory, PostgresLedger)
        schema = directory.schema
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f"ALTER TABLE {schema}.transfers RENAME TO transfers_away")
            try:
                put = f"{first.egress_url}/v1/transfers/sz-lab/while-down.csv"
                async with session.put(put, data=CLEAN[:3000], headers=SENDER) as response:
                    body = await response.json(content_type=None)
                    assert response.status == 201, body
            finally:
                await conn.execute(f"ALTER TABLE {schema}.transfers_away RENAME TO transfers")
        finally:
            await conn.close()
        transfer_id = body["transfer_id"]
        assert transfer_id in state.unpublished
        status, _ = await get(session, f"{second.egress_url}/v1/transfers/{transfer_id}")
        assert status == 404  # the other replica has not heard of it yet
        assert await republish(state) == 1
        assert not state.unpublished
        status, seen = await get(session, f"{second.egress_url}/v1/transfers/{transfer_id}")
        assert (status, seen["state"], seen["instance"]) == (200, "delivered", "hk-0")


async def test_a_rolling_restart_loses_no_transfer(tmp_path: Path, pki: Path) -> None:
    """A rollout as Kubernetes does it, behind the balancer (which checks /readyz, as
    a readiness probe does): one replica is told to stop while a slow upload runs
    on it. It turns unready at once and leaves the pool; the upload in flight
    finishes and is delivered; every push through the balancer meanwhile lands on
    the other replica; the stopped replica comes back and continues its own log."""
    async with (
        park_replicas(tmp_path, pki) as (parks, (leaving, staying)),
        contextlib.AsyncExitStack() as stack,
    ):
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        )
        pool = await stack.enter_async_context(
            balancer(tmp_path, [leaving, staying], check="/readyz")
        )
        url = pool.url
        started = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            for piece in range(10):
                yield CLEAN[piece * 300 : (piece + 1) * 300]
                started.set()
                await asyncio.sleep(0.2)

        async def slow_push() -> tuple[int, dict[str, Any]]:
            put = f"{leaving.egress_url}/v1/transfers/sz-lab/in-flight.csv"
            async with session.put(put, data=slow_body(), headers=SENDER) as response:
                return response.status, await response.json(content_type=None)

        upload = asyncio.create_task(slow_push())
        await started.wait()
        assert leaving.egress_app is not None
        state = leaving.egress_app[EGRESS]
        async with asyncio.timeout(5):
            while not state.inflight:  # noqa: ASYNC110 - the gateway's own counter: its handler runs
                await asyncio.sleep(0.01)
        draining = asyncio.create_task(leaving.drain(30))
        ready = f"{leaving.egress_url}/readyz"
        async with session.get(ready) as response:
            assert response.status == 503  # unready at once: the balancer stops sending
        await pool.wait_until_up({"hk-1"})  # three failed checks: out of the pool
        landed = set()
        for number in range(6):
            put = f"{url}/v1/transfers/sz-lab/during-{number}.csv"
            async with session.put(put, data=CLEAN[:1500], headers=SENDER) as response:
                body = await response.json(content_type=None)
                assert response.status == 201, body
                landed.add(response.headers["X-Gateway-Instance"])
        assert landed == {"hk-1"}
        status, body = await upload
        assert status == 201, body
        assert await draining == 0  # nothing was cut
        delivered = parks.inbox_files("sz-lab")
        assert delivered["in-flight.csv"] == CLEAN[:3000]
        assert all(f"during-{n}.csv" in delivered for n in range(6))
        await stop(leaving, drain_seconds=None)  # drained above
        settings = replica_settings(tmp_path, pki, "hk-0", leaving.services.settings.ledger_url)
        back = await stack.enter_async_context(running(settings, drain_seconds=2))
        status, seen = await get(session, f"{back.egress_url}/v1/transfers/{body['transfer_id']}")
        assert (status, seen["state"], seen["instance"]) == (200, "delivered", "hk-0")
        log_key = parks.hk.services.signer.verifier
    assert_logs_verify(tmp_path, log_key, ("hk-0",))
