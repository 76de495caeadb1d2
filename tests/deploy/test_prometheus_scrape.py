"""A real Prometheus scrapes a real gateway carrying traffic and evaluates the real alert rules.

Debian's ``prometheus`` server runs on 127.0.0.1 with a port of its own,
scraping the gateway's ``/metrics`` every second and loading
deploy/prometheus/alerts.yml unchanged (``GatewayAuditWriteFailures`` has no
``for:`` delay, so it can fire within seconds). The gateway runs in this
process (:func:`gateway.server.runner.running`) with the shipped policy packs,
forwarding allowed transfers to an upstream on loopback.

Over loopback the gateway admits the scrape without a token (``metrics_tokens``
empty). With ``metrics_tokens`` set, the shipped scrape job's ``authorization``
(deploy/prometheus/scrape.yml) must carry the token, and a job without it is
refused (``up`` 0).

The audit log is made unwritable the way a dying disk does it to a running
process: the descriptors the gateway writes through stop accepting writes
(a read-only descriptor of the same file is ``dup2``-ed over each). Changing
permissions would not do it: open descriptors keep their access, and the tests
may run as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.crypto.keys import X25519Identity
from gateway.policy.loader import policy_files
from gateway.server.config import (
    AuditConfig,
    EgressConfig,
    GatewaySettings,
    TokenEntry,
    token_digest,
)
from gateway.server.runner import RunningGateway, running
from tests.deploy.promql import dashboard_queries, substitute_variables
from tests.deploy.tools import DEPLOY, REPO, require_tool
from tests.obs.test_metrics import label_value_problems

pytestmark = pytest.mark.slow

RULES = DEPLOY / "prometheus" / "alerts.yml"
SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
METRICS_TOKEN = "ops-scrape-metrics-token"
#: Scrape and evaluate every second so that the test waits seconds, not minutes.
SCRAPE_INTERVAL = "1s"
#: Prometheus 2.42 opens its TSDB and answers /-/ready in about a second on 2 cores.
PROMETHEUS_READY_SECONDS = 60
#: Several scrape and evaluation rounds, with margin for a loaded CI machine.
CONVERGE_SECONDS = 60
POLL_SECONDS = 0.25
#: Enough of Prometheus' log to show why it did not start or scrape.
LOG_TAIL_CHARS = 2000
#: How long Prometheus gets to exit after SIGTERM before it is killed.
STOP_SECONDS = 15
TOKEN = "ops-scrape-test-token"
SENDER = "ops-scrape-tester"
ROUTE = "ops-lab"
ALLOWED = 3
BLOCKED = 2
CLEAN_BODY = b"sample_id,temperature_c,ph\n" + b"".join(
    b"S%04d,%d.5,7.%d\n" % (i, 20 + i % 10, i % 10) for i in range(200)
)
#: A PRC classification mark (SPEC 3.1 marking.cn_classified): always blocked by 00-base.
CLASSIFIED_BODY = "会议纪要\n绝密★\n内容从略\n".encode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """A destination on loopback that accepts whatever it is sent."""

    async def accept(request: web.Request) -> web.Response:
        async for _ in request.content.iter_chunked(1 << 16):
            pass
        return web.Response(status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def _policy_dir(tmp_path: Path, upstream: str) -> Path:
    """The shipped packs plus a site file with one sender and one route to ``upstream``.

    The sender belongs to ``sz-genomics-lab``, the organisation the HGR pack's
    white list names (10-hgr.yaml), which the policy must declare.
    """
    policies = tmp_path / "policies"
    policies.mkdir()
    for pack in policy_files(REPO / "policies"):
        if pack.name != "90-demo.yaml":
            shutil.copy(pack, policies / pack.name)
    site = {
        "senders": {SENDER: {"team": "ops", "organisation": "sz-genomics-lab"}},
        "routes": {
            ROUTE: {
                "direction": "sz->hk",
                "destination": upstream,
                "recipient": X25519Identity.generate().recipient.encode(),
            }
        },
    }
    (policies / "90-site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    return policies


def _settings(tmp_path: Path, upstream: str, metrics_tokens: tuple[str, ...]) -> GatewaySettings:
    var = tmp_path / "var"
    return GatewaySettings(
        name="sz",
        egress=EgressConfig(
            host="127.0.0.1",
            port=0,
            policy_dir=_policy_dir(tmp_path, upstream),
            spool_dir=var / "spool",
            spool_identity=var / "keys" / "spool.agekey",
            tokens=(TokenEntry(sha256=token_digest(TOKEN), identity=SENDER),),
            min_free_spool_bytes=0,
        ),
        audit=AuditConfig(
            dir=var / "audit", signing_key=var / "keys" / "audit.key", origin="ops.test/audit"
        ),
        ledger_url=str(var / "ledger.sqlite3"),
        secret_file=var / "keys" / "secret",
        metrics_tokens=metrics_tokens,
    )


@pytest.fixture
async def gateway(tmp_path: Path, upstream: str) -> AsyncIterator[RunningGateway]:
    async with running(_settings(tmp_path, upstream, ())) as gw:
        yield gw


def _job(name: str, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": SCRAPE_INTERVAL,
        "static_configs": [{"targets": [target]}],
        **extra,
    }


def _prometheus_config(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": jobs,
    }


@pytest.fixture
def prometheus_process(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], str]]:
    """Start Debian's prometheus with scrape jobs; yields a starter returning its base URL."""
    binary = require_tool("prometheus")
    started: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "prometheus.log"

    def start(jobs: list[dict[str, Any]]) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(_prometheus_config(jobs)), encoding="utf-8")
        port = _free_port()
        with log_path.open("wb") as log:
            started.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            )
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _until(what: str, probe: Callable[[], Awaitable[bool]], log: Path | None = None) -> None:
    deadline = time.monotonic() + CONVERGE_SECONDS
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(POLL_SECONDS)
    pytest.fail(f"timed out after {CONVERGE_SECONDS} s waiting for {what}\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    """The end of Prometheus' log, to explain a timeout."""
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]


async def _query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _scalar(session: aiohttp.ClientSession, base: str, expr: str) -> float | None:
    result = await _query(session, base, expr)
    return float(result[0]["value"][1]) if result else None


def _break_policy(policies: Path) -> None:
    """Add a policy file that fails validation (a rule id must be lower case)."""
    broken = {"rules": [{"id": "Not-Lower-Case", "action": "block", "reason": "broken"}]}
    (policies / "95-broken.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")


def _unwritable(directory: Path) -> int:
    """Make every writable descriptor this process holds under ``directory`` read-only."""
    broken = 0
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        with contextlib.suppress(OSError):
            target = Path(os.readlink(entry))
            if not target.is_relative_to(directory) or not target.is_file():
                continue
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                continue
            readonly = os.open(target, os.O_RDONLY)
            os.dup2(readonly, fd)
            os.close(readonly)
            broken += 1
    return broken


async def test_prometheus_sees_transfers_blocks_and_the_audit_failure_alert(
    gateway: RunningGateway,
    prometheus_process: Callable[[list[dict[str, Any]]], str],
    tmp_path: Path,
) -> None:
    assert gateway.egress_url is not None
    target = gateway.egress_url.removeprefix("http://")
    prometheus = prometheus_process([_job("hksz-gateway", target)])
    log = tmp_path / "prometheus.log"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{prometheus}/-/ready") as response:
                    return response.status == 200
            return False

        async def scraped() -> bool:
            return await _scalar(session, prometheus, 'up{job="hksz-gateway"}') == 1.0

        await _until("Prometheus to be ready", ready, log)
        await _until("the first scrape of the gateway", scraped, log)

        for i in range(ALLOWED):
            url = f"{gateway.egress_url}/v1/transfers/{ROUTE}/clean-{i}.csv"
            async with session.put(url, data=CLEAN_BODY, headers=headers) as response:
                assert response.status == 201, await response.text()
        for i in range(BLOCKED):
            url = f"{gateway.egress_url}/v1/transfers/{ROUTE}/minutes-{i}.txt"
            async with session.put(url, data=CLASSIFIED_BODY, headers=headers) as response:
                assert response.status == 403, await response.text()

        async def counted() -> bool:
            allowed = await _scalar(
                session, prometheus, 'sum(gateway_transfers_total{decision="allow"})'
            )
            blocked = await _scalar(
                session, prometheus, 'sum(gateway_transfers_total{decision="block"})'
            )
            return (allowed, blocked) == (float(ALLOWED), float(BLOCKED))

        await _until("the transfer and block counters to move", counted, log)
        held = await _scalar(
            session, prometheus, 'sum(gateway_transfer_bytes_total{stage="blocked"})'
        )
        assert held == float(BLOCKED * len(CLASSIFIED_BODY))
        forwarded = await _scalar(
            session, prometheus, 'sum(gateway_transfer_bytes_total{stage="forwarded"})'
        )
        assert forwarded is not None
        assert forwarded >= ALLOWED * len(CLEAN_BODY)  # ciphertext is a little larger

        # Every dashboard query evaluates against the real data without error.
        for where, expr in dashboard_queries():
            async with session.get(
                f"{prometheus}/api/v1/query", params={"query": substitute_variables(expr)}
            ) as response:
                body = await response.json()
            assert body["status"] == "success", (where, body)

        # What a real gateway exports after real traffic holds no id, path or value.
        async with session.get(f"{gateway.egress_url}/metrics") as response:
            exposition = await response.text()
        samples = [
            s for family in text_string_to_metric_families(exposition) for s in family.samples
        ]
        assert label_value_problems(samples) == []

        def firing(alertname: str) -> Callable[[], Awaitable[bool]]:
            async def probe() -> bool:
                async with session.get(f"{prometheus}/api/v1/alerts") as response:
                    alerts = (await response.json())["data"]["alerts"]
                return any(
                    a["labels"]["alertname"] == alertname and a["state"] == "firing" for a in alerts
                )

            return probe

        # A rejected reload: the first failure must be visible to increase(),
        # which is why the result="failure" child exists from start-up.
        assert not await firing("GatewayPolicyReloadFailed")()
        _break_policy(tmp_path / "policies")
        await gateway.reload_policy()
        await _until("GatewayPolicyReloadFailed to fire", firing("GatewayPolicyReloadFailed"), log)

        assert not await firing("GatewayAuditWriteFailures")()
        assert _unwritable(tmp_path / "var" / "audit") > 0
        url = f"{gateway.egress_url}/v1/transfers/{ROUTE}/after-failure.csv"
        async with session.put(url, data=CLEAN_BODY, headers=headers) as response:
            assert response.status == 503, await response.text()  # fail closed
        # Checked at once: the log heals by itself from RECOVERY_FIRST_DELAY (5 s)
        # on, which may come before the alert fires on a loaded machine.
        async with session.get(f"{gateway.egress_url}/readyz") as response:
            assert response.status == 503
        await _until("GatewayAuditWriteFailures to fire", firing("GatewayAuditWriteFailures"), log)


async def test_prometheus_scrapes_with_the_shipped_token_wiring_and_not_without_it(
    tmp_path: Path,
    upstream: str,
    prometheus_process: Callable[[list[dict[str, Any]]], str],
) -> None:
    # The shipped job's authorization block, its credentials_file pointed at a
    # file here (Debian's Prometheus has no kubernetes_sd, so the target is static).
    (shipped,) = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))["scrape_configs"]
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS_TOKEN + "\n")  # as `echo` writes it: Prometheus trims it
    authorization = {**shipped["authorization"], "credentials_file": str(token_file)}
    settings = _settings(tmp_path, upstream, (token_digest(METRICS_TOKEN),))
    async with running(settings) as gateway, aiohttp.ClientSession() as session:
        assert gateway.egress_url is not None
        target = gateway.egress_url.removeprefix("http://")
        prometheus = prometheus_process(
            [
                _job(shipped["job_name"], target, authorization=authorization),
                _job("no-token", target),
            ]
        )
        log = tmp_path / "prometheus.log"

        async def scraped() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                token_up = await _scalar(session, prometheus, f'up{{job="{shipped["job_name"]}"}}')
                refused_up = await _scalar(session, prometheus, 'up{job="no-token"}')
                return (token_up, refused_up) == (1.0, 0.0)
            return False

        await _until("the token job to be up and the tokenless one down", scraped, log)
        policies = await _scalar(
            session, prometheus, f'gateway_policy_info{{job="{shipped["job_name"]}"}}'
        )
        assert policies == 1.0
        assert await _scalar(session, prometheus, 'gateway_policy_info{job="no-token"}') is None
