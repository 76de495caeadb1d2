"""A real ``gateway serve`` process: SIGTERM with transfers in flight, a spool that hits
a file-size quota, hot reload, and held reviews surviving a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.crypto.keys import X25519Identity, identity_file_text
from gateway.server.runner import MALLOC_ARENAS, limit_malloc_arenas
from tests.server.conftest import (
    NAMED_OFFICER_TOKEN,
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    edit_policy,
    hk_settings,
    recording_destination,
    running,
    start_parks,
    sz_settings,
    write_policy,
)

CLEAN = b"".join(f"R{i:06d},probe-{i % 7},{i % 97}.{i % 10}\n".encode() for i in range(200_000))
#: A process-wide file-size quota for the spool test: the spool of a larger body
#: hits it (EFBIG), while the audit log and keys stay far below it.
FSIZE_QUOTA = 2 * 1024 * 1024


def _quota() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_QUOTA, FSIZE_QUOTA))


class Child:
    """A ``gateway serve --config`` subprocess and its egress URL."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url


@contextlib.asynccontextmanager
async def egress_process(
    root: Path, pki: Path, ingress_url: str, recipient: str, destination: str, **kw: Any
) -> AsyncIterator[Child]:
    quota = kw.pop("quota", False)
    preexec = kw.pop("preexec", _quota if quota else None)
    extra_args: list[str] = kw.pop("args", [])
    write_policy(root / "policies", ingress_url, recipient, destination)
    settings = hk_settings(root, pki, root / "policies", **kw.pop("egress", {}))
    config = root / "hk.yaml"
    data = settings.model_dump(mode="json", exclude_none=True)
    del data["instance"]  # the process names itself (--instance, or its host name)
    # Long enough for the quick transfer to finish on a loaded 2-core CI machine,
    # far shorter than the slow transfers (20 s), which must be aborted.
    data["drain_seconds"] = 4.0
    data.update(kw.pop("settings", {}))
    config.write_text(json.dumps(data))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        *extra_args,
        # Logs go to stdout (issue 7); stderr carries only a fatal one-line error.
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=preexec,
        cwd=str(Path(__file__).parents[2]),
    )
    assert process.stdout is not None
    url = ""
    async with asyncio.timeout(60):
        while not url:
            line = await process.stdout.readline()
            assert line, "gateway serve exited before listening"
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                # Installed as CI and `make run` install it: both compiled parts are built.
                assert event.get("event") not in (
                    "classifier_core_missing",
                    "table_renderer_missing",
                )
                if event.get("event") == "listening":
                    url = event["egress"]
                    assert event["classifier_core"] == "native"
                    # glibc here: the egress's heap is held to two arenas.
                    assert event["malloc_arenas"] == MALLOC_ARENAS
    try:
        yield Child(process, url)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def sz_park(root: Path, pki: Path) -> AsyncIterator[tuple[str, str, str, Path]]:
    identity = X25519Identity.generate()
    identity_file = root / "sz" / "identity.agekey"
    identity_file.parent.mkdir(parents=True)
    identity_file.write_text(identity_file_text(identity))
    async with (
        recording_destination(pki) as recorder,
        running(sz_settings(root, pki, identity_file, recorder.url)) as sz,
    ):
        assert sz.ingress_url is not None
        yield sz.ingress_url, identity.recipient.encode(), recorder.url, root / "inbox"


def _events(root: Path, park: str = "hk") -> list[dict[str, Any]]:
    out = []
    for segment in sorted((root / park / "audit" / "segments").glob("*.jsonl")):
        out += [json.loads(line) for line in segment.read_bytes().splitlines()]
    return out


async def _trickle(data: bytes, seconds: float) -> AsyncIterator[bytes]:
    step = max(1, len(data) // 20)
    for i in range(0, len(data), step):
        yield data[i : i + step]
        await asyncio.sleep(seconds / 20)


@pytest.mark.slow
async def test_sigterm_drains_then_aborts_in_flight(tmp_path: Path, pki: Path) -> None:
    async with (
        sz_park(tmp_path, pki) as (ingress, recipient, dest, inbox),
        egress_process(tmp_path, pki, ingress, recipient, dest) as child,
    ):
        headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
        async with aiohttp.ClientSession() as session:

            async def push(name: str, seconds: float) -> tuple[int, Any]:
                url = f"{child.url}/v1/transfers/sz-lab/{name}"
                try:
                    async with session.put(
                        url, data=_trickle(CLEAN[:400_000], seconds), headers=headers
                    ) as r:
                        return r.status, await r.json(content_type=None)
                except aiohttp.ClientError as exc:
                    return -1, repr(exc)

            async def ready() -> int:
                async with session.get(f"{child.url}/readyz") as r:
                    return r.status

            quick = asyncio.create_task(push("quick.csv", 1.0))
            slow = [asyncio.create_task(push(f"slow{i}.csv", 20.0)) for i in range(3)]
            await asyncio.sleep(0.5)
            assert await ready() == 200
            child.process.send_signal(signal.SIGTERM)
            # At once unready (a balancer stops sending), while in-flight ones go on.
            seen = []
            for _ in range(100):
                seen.append(await ready())
                if seen[-1] == 503:
                    break
                await asyncio.sleep(0.05)
            assert seen[-1] == 503, seen
            async with asyncio.timeout(30):
                code = await child.process.wait()
            answers = [await quick] + [await t for t in slow]
        assert code == 0
        # The one that finished inside the drain deadline was delivered in full.
        assert answers[0][0] == 201
        # The ones cut at the deadline hear 503 problem+json with their id, not a reset.
        cut = answers[1:]
        assert [status for status, _ in cut] == [503, 503, 503], cut
        assert all(body["transfer_id"].startswith("t_") for _, body in cut)
        assert all("drain deadline" in body["detail"] for _, body in cut)
        delivered = {p.name for p in (inbox / "sz-lab").iterdir() if p.is_file()}
        assert delivered == {"quick.csv"}
        assert (inbox / "sz-lab" / "quick.csv").read_bytes() == CLEAN[:400_000]
        events = [r["event"] for r in _events(tmp_path) if r.get("kind") == "transfer"]
        assert sorted(events) == ["aborted", "aborted", "aborted", "allowed", "delivered"]
        assert [p for p in (tmp_path / "hk" / "spool").rglob("*") if p.is_file()] == []


@pytest.mark.slow
async def test_spool_quota_fails_closed(tmp_path: Path, pki: Path) -> None:
    async with (
        sz_park(tmp_path, pki) as (ingress, recipient, dest, inbox),
        egress_process(tmp_path, pki, ingress, recipient, dest, quota=True) as child,
    ):
        headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
        async with aiohttp.ClientSession() as session:
            url = f"{child.url}/v1/transfers/sz-lab/big.csv"
            async with session.put(url, data=CLEAN * 2, headers=headers) as r:
                status = r.status
                body = await r.json(content_type=None)
            assert status == 503, body
            assert body["type"].endswith("/spool-full")
            # Small transfers still pass: the gateway keeps serving.
            url = f"{child.url}/v1/transfers/sz-lab/small.csv"
            async with session.put(url, data=CLEAN[:10_000], headers=headers) as r:
                assert r.status == 201
        assert {p.name for p in (inbox / "sz-lab").iterdir() if p.is_file()} == {"small.csv"}
        events = [
            (r["event"], r.get("detail")) for r in _events(tmp_path) if r.get("kind") == "transfer"
        ]
        assert events[0][0] == "failed"
        assert [p.name for p in (tmp_path / "hk" / "spool").glob("*.payload")] == []


async def test_policy_hot_reload_keeps_old_version_on_error(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki) as parks:
        assert parks.hk.egress_app is not None
        status, first = await parks.put("sz-lab", "a.csv", CLEAN[:1000])
        assert status == 201
        policy = tmp_path / "policies" / "policy.yaml"
        text = policy.read_text()
        policy.write_text(text + "\n  - this is: [not valid\n")
        await parks.hk.reload_policy()
        status, second = await parks.put("sz-lab", "b.csv", CLEAN[:1000])
        assert status == 201
        assert second["policy_version"] == first["policy_version"]
        policy.write_text(text.replace("Default deny.", "Default deny (v2)."))
        await parks.hk.reload_policy()
        status, third = await parks.put("sz-lab", "c.csv", CLEAN[:1000])
        assert third["policy_version"] != first["policy_version"]
        events = [r["event"] for r in parks.audit_events() if r.get("kind") == "policy"]
        assert events == ["policy_loaded", "policy_rejected", "policy_loaded"]


async def test_held_review_survives_restart(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki) as parks:
        status, held = await parks.put("sz-review", "kept.csv", CLEAN[:3000])
        assert status == 202
        status, done = await parks.put("sz-lab", "done.csv", CLEAN[:3000])
        assert status == 201
    # A new gateway process (same spool, same spool key) still holds it.
    async with start_parks(tmp_path, pki) as parks:
        officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
        tid = held["transfer_id"]
        async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=officer) as r:
            assert (await r.json())["state"] == "review"
        # A finished transfer of the previous process is answered from the audit log.
        url = f"{parks.egress}/v1/transfers/{done['transfer_id']}"
        async with parks.session.get(url, headers=officer) as r:
            old = await r.json()
        assert old["state"] == "delivered"
        assert [h["state"] for h in old["history"]] == ["allowed", "delivered"]
        url = f"{parks.egress}/v1/reviews/{tid}/approve"
        async with parks.session.post(url, json={"comment": "ok"}, headers=officer) as r:
            assert r.status == 201, await r.text()
        await parks.settle()
        assert parks.inbox_files("sz-review") == {"kept.csv": CLEAN[:3000]}
        assert parks.events_of(tid) == ["review", "approved", "delivered"]


async def test_a_first_approval_survives_restart(tmp_path: Path, pki: Path) -> None:
    officer = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
    second = {"Authorization": f"Bearer {NAMED_OFFICER_TOKEN}"}
    reason = "    reason: Transfers on this route are checked by a compliance officer.\n"
    async with start_parks(tmp_path, pki) as parks:
        await edit_policy(parks, reason, reason + "    approvals: 2\n")
        status, held = await parks.put("sz-review", "four.csv", CLEAN[:3000])
        assert status == 202
        tid = held["transfer_id"]
        url = f"{parks.egress}/v1/reviews/{tid}/approve"
        async with parks.session.post(url, json={"comment": "first"}, headers=officer) as r:
            assert r.status == 202, await r.text()
            first = (await r.json())["officer"]
    async with start_parks(tmp_path, pki) as parks:
        # The approval is read back from the audit log, not forgotten.
        async with parks.session.get(f"{parks.egress}/v1/reviews/{tid}", headers=officer) as r:
            review = await r.json()
        assert (review["approvals_needed"], review["approved_by"]) == (2, [first])
        url = f"{parks.egress}/v1/reviews/{tid}/approve"
        async with parks.session.post(url, json={"comment": "again"}, headers=officer) as r:
            assert r.status == 409, await r.text()  # the same officer cannot give the second
        assert parks.inbox_files("sz-review") == {}
        async with parks.session.post(url, json={"comment": "agreed"}, headers=second) as r:
            assert r.status == 201, await r.text()
        await parks.settle()
        assert parks.inbox_files("sz-review") == {"four.csv": CLEAN[:3000]}
        assert parks.events_of(tid) == ["review", "review", "approved", "delivered"]


async def test_the_instance_names_its_audit_directory_and_origin(tmp_path: Path, pki: Path) -> None:
    audit = {
        "dir": str(tmp_path / "hk" / "{instance}" / "audit"),
        "signing_key": str(tmp_path / "hk" / "audit.key"),
        "origin": "hk.test/audit/{instance}",
    }
    async with (
        sz_park(tmp_path, pki) as (ingress, recipient, dest, _),
        egress_process(
            tmp_path,
            pki,
            ingress,
            recipient,
            dest,
            settings={"audit": audit},
            args=["--instance", "hk-gw-7"],
        ) as child,
    ):
        headers = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
        async with aiohttp.ClientSession() as session:
            url = f"{child.url}/v1/transfers/sz-lab/one.csv"
            async with session.put(url, data=CLEAN[:2000], headers=headers) as r:
                assert r.status == 201
        child.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await child.process.wait() == 0
    log_dir = tmp_path / "hk" / "hk-gw-7" / "audit"
    lines = (log_dir / "checkpoints.jsonl").read_text().splitlines()
    origins = {json.loads(line)["note"].split("\n")[0] for line in lines}
    assert origins == {"hk.test/audit/hk-gw-7"}
    assert not (tmp_path / "hk" / "{instance}").exists()


def test_quota_is_larger_than_a_small_transfer() -> None:
    # Guard for the spool test above: the small transfer must fit, the big one must not.
    assert 10_000 < FSIZE_QUOTA < len(CLEAN) * 2
    assert os.name == "posix"


async def test_sighup_reloads_certificates_and_reports_expiry(tmp_path: Path, pki: Path) -> None:
    import shutil

    from gateway.crypto.certs import init_dev_pki

    local = tmp_path / "pki"
    shutil.copytree(pki, local)
    other = tmp_path / "other-pki"
    init_dev_pki(other)
    async with start_parks(tmp_path, local) as parks:
        async with parks.session.get(f"{parks.egress}/metrics") as r:
            text = await r.text()
        line = next(x for x in text.splitlines() if 'cert="egress-client"' in x)
        first = float(line.split()[-1])
        assert 80 * 86400 < first < 91 * 86400  # 90-day dev leaf
        # It counts down between scrapes without a reload (the expiry alert
        # must be able to fire on a process that runs for months).
        await asyncio.sleep(1.1)
        async with parks.session.get(f"{parks.egress}/metrics") as r:
            text = await r.text()
        line = next(x for x in text.splitlines() if 'cert="egress-client"' in x)
        assert first - 5 < float(line.split()[-1]) <= first - 1
        status, _ = await parks.put("sz-lab", "a.csv", CLEAN[:1000])
        assert status == 201
        # SZ's server certificate is replaced by one from another CA, then reloaded:
        # new handshakes present it, and the HK twin (trusting the SZ CA) refuses it.
        sz_dir = local / "sz"
        saved = {n: (sz_dir / n).read_bytes() for n in ("server.crt", "server.key")}
        for n in saved:
            (sz_dir / n).write_bytes((other / "sz" / n).read_bytes())
        parks.sz.reload_tls()
        parks.hk.reload_tls()  # a new client context: pooled connections are not reused
        status, body = await parks.put("sz-lab", "b.csv", CLEAN[:1000])
        assert status == 502, body
        for n, data in saved.items():
            (sz_dir / n).write_bytes(data)
        parks.sz.reload_tls()
        status, _ = await parks.put("sz-lab", "c.csv", CLEAN[:1000])
        assert status == 201


def test_malloc_arenas_are_limited_where_glibc_has_the_setting() -> None:
    """glibc (this machine, CI, the image) accepts the limit (mallopt returns 1)."""
    assert limit_malloc_arenas() == MALLOC_ARENAS
