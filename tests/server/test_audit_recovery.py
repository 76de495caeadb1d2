"""A full audit disk is an outage only while it is full (issue 11, finding 6).

Both parks run for real on loopback, each audit log on its own small tmpfs
(:mod:`tests.audit.fulldisk`). A filler file takes the rest of the space, so
the kernel answers ENOSPC: transfers are refused 503 and ``/readyz`` is 503
(fail closed, SPEC §5). Then the filler is deleted and nothing else is done:
with the shipped recovery schedule the park must be ready again within a few
seconds, a transfer must go through end to end, and the whole log must verify.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from gateway.audit.log import RECOVERY_FIRST_DELAY
from gateway.audit.storage import TORN_DIR, LogReader
from gateway.audit.verify import verify_log
from gateway.crypto.certs import ParkPaths
from gateway.crypto.tls import client_ssl_context
from gateway.server.runner import RunningGateway
from tests.audit.fulldisk import fill_up, small_filesystem
from tests.server.conftest import Parks, start_parks

CLEAN = b"run_id,instrument,temperature_c\n" + b"".join(
    f"R{i:05d},spectrometer-{i % 4},{20 + i % 17}.{i % 10}\n".encode() for i in range(2_000)
)
#: Room for the log plus the 4 MiB the recovery probe writes; the filler takes the rest.
AUDIT_DISK_BYTES = 16 * 1024 * 1024
#: The first probe comes RECOVERY_FIRST_DELAY (5 s) after the failure; the
#: rest is margin for two loaded cores, not a second probe interval.
READY_WITHIN = RECOVERY_FIRST_DELAY + 10.0
#: Transfers to push into a full disk before one is refused: each record takes
#: part of a page the log files already hold, and there are only so many.
MAX_TRIES = 40


def _twin_context(parks: Parks) -> Any:
    """The HK egress's client certificate: the SZ ingress serves only its twin."""
    hk, sz = ParkPaths(parks.pki / "hk"), ParkPaths(parks.pki / "sz")
    return client_ssl_context(ca=sz.ca_cert, cert=hk.cert("client"), key=hk.key("client"))


async def _readyz(parks: Parks, url: str, ssl: Any = None) -> tuple[int, dict[str, Any]]:
    async with parks.session.get(f"{url}/readyz", ssl=ssl) as response:
        return response.status, await response.json(content_type=None)


def _metric(park: RunningGateway, name: str) -> float | None:
    return park.services.metrics.registry.get_sample_value(name)


async def _push_until_refused(parks: Parks) -> tuple[str, int, dict[str, Any]]:
    """Push clean files until one is not delivered; its name, status and body."""
    for n in range(MAX_TRIES):
        name = f"full-{n}.csv"
        status, body = await parks.put("sz-lab", name, CLEAN)
        if status != 201:
            return name, status, body
    raise AssertionError(f"{MAX_TRIES} transfers went through a full audit disk")


async def _ready_again(parks: Parks, url: str, ssl: Any = None) -> float:
    """Seconds until ``/readyz`` answers 200 (polled, as a load balancer would)."""
    started = time.monotonic()
    while (await _readyz(parks, url, ssl))[0] != 200:
        assert time.monotonic() - started < READY_WITHIN, "still not ready"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def _assert_whole_log_verifies(parks: Parks, park: str, size: int) -> None:
    """Every record the park logged is complete and signed; no half record remains."""
    directory = parks.root / park / "audit"
    key = parks.hk if park == "hk" else parks.sz
    result = verify_log(directory, [key.services.signer.verifier])
    assert result.problems == [], result.problems
    assert result.records == size
    assert result.latest is not None
    assert result.latest.size == size  # the final checkpoint: the writer task came back
    assert not [w for w in result.warnings if "incomplete" in w or "torn" in w], result.warnings
    for _, line in LogReader(directory).iter_lines():
        assert line.complete
        json.loads(line.data)


async def test_the_egress_is_ready_again_when_its_full_audit_disk_gets_space(
    tmp_path: Path, pki: Path
) -> None:
    with small_filesystem(tmp_path / "hk" / "audit", AUDIT_DISK_BYTES) as disk:
        async with start_parks(tmp_path, pki) as parks:
            status, body = await parks.put("sz-lab", "before.csv", CLEAN)
            assert status == 201, body
            filler = fill_up(disk)
            _, status, body = await _push_until_refused(parks)
            assert status == 503, body
            assert not parks.hk.services.audit.healthy
            status, body = await parks.put("sz-lab", "during.csv", CLEAN)
            assert status == 503, body
            status, ready = await _readyz(parks, parks.egress)
            assert status == 503
            assert ready["checks"]["audit"] is False
            assert _metric(parks.hk, "gateway_audit_writable") == 0
            assert _metric(parks.hk, "gateway_audit_recoveries_total") == 0

            filler.unlink()  # space returns; nobody restarts anything
            waited = await _ready_again(parks, parks.egress)
            assert waited < READY_WITHIN
            assert _metric(parks.hk, "gateway_audit_writable") == 1
            assert _metric(parks.hk, "gateway_audit_recoveries_total") == 1
            status, body = await parks.put("sz-lab", "after.csv", CLEAN)
            assert status == 201, body
            assert parks.inbox_files("sz-lab")["after.csv"] == CLEAN
            assert "during.csv" not in parks.inbox_files("sz-lab")
            assert parks.events_of(body["transfer_id"]) == ["allowed", "delivered"]
            size = parks.hk.services.audit.size
        # What the failed write left half-written was cut and kept aside.
        assert list((disk / TORN_DIR).iterdir())
        _assert_whole_log_verifies(parks, "hk", size)


async def test_the_ingress_is_ready_again_when_its_full_audit_disk_gets_space(
    tmp_path: Path, pki: Path
) -> None:
    with small_filesystem(tmp_path / "sz" / "audit", AUDIT_DISK_BYTES) as disk:
        async with start_parks(tmp_path, pki) as parks:
            twin = _twin_context(parks)
            ingress = parks.sz.ingress_url
            assert ingress is not None
            status, body = await parks.put("sz-lab", "before.csv", CLEAN)
            assert status == 201, body
            filler = fill_up(disk)
            name, status, body = await _push_until_refused(parks)
            assert status == 502, body  # the twin could not record the delivery
            assert not parks.sz.services.audit.healthy
            refused = body["transfer_id"]
            assert name not in parks.inbox_files("sz-lab")
            status, ready = await _readyz(parks, ingress, twin)
            assert status == 503
            assert ready["checks"]["audit"] is False
            assert _metric(parks.sz, "gateway_audit_writable") == 0

            filler.unlink()
            await _ready_again(parks, ingress, twin)
            assert _metric(parks.sz, "gateway_audit_writable") == 1
            assert _metric(parks.sz, "gateway_audit_recoveries_total") == 1
            status, body = await parks.put("sz-lab", "after.csv", CLEAN)
            assert status == 201, body
            assert parks.inbox_files("sz-lab")["after.csv"] == CLEAN
            assert parks.events_of(body["transfer_id"], park="sz") == ["delivered"]
            assert parks.events_of(refused, park="sz") == []
            hk_size, sz_size = parks.hk.services.audit.size, parks.sz.services.audit.size
        _assert_whole_log_verifies(parks, "sz", sz_size)
        _assert_whole_log_verifies(parks, "hk", hk_size)
