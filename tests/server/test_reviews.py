"""Reviews and the status API: decisions move only once durable, restores check the log."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.server import reviews
from gateway.server.app import reload_policy
from gateway.server.egress import EGRESS, EgressState, append_record
from tests.server.conftest import (
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    Parks,
    stand_in_twin,
    start_parks,
)

CLEAN = b"run_id,value\n" + b"".join(f"R{i:05d},{i % 97}\n".encode() for i in range(300))
OFFICER = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}


def _state(parks: Parks) -> EgressState:
    assert parks.hk.egress_app is not None
    return parks.hk.egress_app[EGRESS]


async def _hold(parks: Parks, name: str) -> str:
    status, body = await parks.put("sz-review", name, CLEAN)
    assert status == 202, body
    return str(body["transfer_id"])


async def _decide(parks: Parks, tid: str, verb: str) -> tuple[int, dict[str, Any]]:
    url = f"{parks.egress}/v1/reviews/{tid}/{verb}"
    async with parks.session.post(url, headers=OFFICER) as r:
        result = r.status, await r.json(content_type=None)
    await parks.settle()
    return result


def _refuse(parks: Parks, monkeypatch: pytest.MonkeyPatch, event: str) -> None:
    """Fault injection: the HK audit log refuses records of one event."""
    audit = parks.hk.services.audit
    append = audit.append

    async def refuse(record: dict[str, Any]) -> Any:
        if record.get("event") == event:
            raise OSError(5, "Input/output error")
        return await append(record)

    monkeypatch.setattr(audit, "append", refuse)


@pytest.mark.parametrize(
    ("verb", "event", "status"), [("approve", "approved", 201), ("reject", "rejected", 200)]
)
async def test_a_decision_whose_record_fails_leaves_the_review_open(
    parks: Parks, monkeypatch: pytest.MonkeyPatch, verb: str, event: str, status: int
) -> None:
    tid = await _hold(parks, f"{verb}.csv")
    _refuse(parks, monkeypatch, event)
    code, problem = await _decide(parks, tid, verb)
    assert code == 503, problem
    assert parks.events_of(tid) == ["review"]
    assert parks.inbox_files("sz-review") == {}
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=SENDER) as r:
        assert (await r.json())["state"] == "review"
    monkeypatch.undo()
    code, body = await _decide(parks, tid, verb)
    assert code == status, body
    expected = ["review", "approved", "delivered"] if verb == "approve" else ["review", "rejected"]
    assert parks.events_of(tid) == expected


async def test_a_review_being_decided_cannot_be_decided_twice(
    parks: Parks, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = await _hold(parks, "twice.csv")
    audit = parks.hk.services.audit
    append = audit.append
    release = asyncio.Event()

    async def slow(record: dict[str, Any]) -> Any:
        if record.get("event") == "approved":
            await release.wait()
        return await append(record)

    monkeypatch.setattr(audit, "append", slow)
    first = asyncio.ensure_future(_decide(parks, tid, "approve"))
    for _ in range(500):
        if tid not in _state(parks).held:
            break
        await asyncio.sleep(0.01)
    code, problem = await _decide(parks, tid, "reject")
    assert code == 409, problem
    release.set()
    code, body = await first
    assert code == 201, body
    assert parks.events_of(tid) == ["review", "approved", "delivered"]
    assert parks.inbox_files("sz-review") == {"twice.csv": CLEAN}


async def test_approval_after_the_route_left_the_policy_is_a_conflict(parks: Parks) -> None:
    tid = await _hold(parks, "stale.csv")
    policy = parks.root / "policies" / "policy.yaml"
    text = policy.read_text()
    start = text.index("  sz-review:\n")
    end = text.index("  sz-contract:\n")
    text = text[:start] + text[end:]
    start = text.index("  - id: review.route\n")
    end = text.index("  - id: allow.clean\n")
    policy.write_text(text[:start] + text[end:])
    assert parks.hk.egress_app is not None
    result = await reload_policy(parks.hk.egress_app)
    assert result.ok, result.errors
    assert result.changed
    code, problem = await _decide(parks, tid, "approve")
    assert code == 409, problem
    assert "sz-review" in problem["detail"]
    assert parks.inbox_files("sz-review") == {}
    assert parks.events_of(tid) == ["review"]
    # Still open: the officer can reject it.
    code, body = await _decide(parks, tid, "reject")
    assert code == 200, body


async def test_status_ids_are_validated_and_lookups_bounded(
    parks: Parks, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("nope", "t_" + "0" * 31, "t_" + "G" * 32):
        for suffix in ("", "/receipt"):
            url = f"{parks.egress}/v1/transfers/{bad}{suffix}"
            async with parks.session.get(url, headers=OFFICER) as r:
                assert r.status == 400
                assert r.content_type == "application/problem+json"
    unknown = f"{parks.egress}/v1/transfers/t_{os.urandom(16).hex()}"
    async with parks.session.get(unknown, headers=OFFICER) as r:
        assert r.status == 404
    # Every lookup slot busy: a further lookup waits, then gets 503 + Retry-After.
    monkeypatch.setattr(reviews, "LOOKUP_WAIT_SECONDS", 0.2)
    assert parks.hk.egress_app is not None
    slots = parks.hk.egress_app[reviews.LOOKUPS]
    for _ in range(reviews.MAX_CONCURRENT_LOOKUPS):
        await slots.acquire()
    try:
        for suffix in ("", "/receipt"):
            async with parks.session.get(unknown + suffix, headers=OFFICER) as r:
                assert r.status == 503
                assert r.headers["Retry-After"]
    finally:
        for _ in range(reviews.MAX_CONCURRENT_LOOKUPS):
            slots.release()
    async with parks.session.get(unknown + "/receipt", headers=OFFICER) as r:
        assert r.status == 404


def _snapshot(parks: Parks, tid: str) -> dict[Path, bytes]:
    held = parks.root / "hk" / "spool" / "held"
    return {path: path.read_bytes() for path in held.glob(f"{tid}.*")}


def _restore_files(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        path.write_bytes(data)


async def test_restore_sweeps_held_spools_the_audit_log_does_not_show_open(parks: Parks) -> None:
    state = _state(parks)
    held_dir = parks.root / "hk" / "spool" / "held"
    open_id = await _hold(parks, "open.csv")
    decided = await _hold(parks, "decided.csv")
    interrupted = await _hold(parks, "interrupted.csv")
    # A spool whose `review` record never made it to the log (crash in between).
    unrecorded = "t_" + os.urandom(16).hex()
    for path, data in _snapshot(parks, open_id).items():
        target = path.with_name(unrecorded + path.name[len(open_id) :])
        target.write_bytes(data.replace(open_id.encode(), unrecorded.encode()))
    # A spool left behind by a decided review (crash before its deletion).
    files = _snapshot(parks, decided)
    code, _ = await _decide(parks, decided, "reject")
    assert code == 200
    _restore_files(files)
    # An approval the previous process recorded, then died before forwarding.
    held = state.held[interrupted]
    await append_record(
        state,
        "approved",
        held.transfer,
        direction=held.direction,
        decision="allow",
        rule=str(held.decision["rule"]),
        reason=str(held.decision["reason"]),
        policy_version=str(held.decision["policy_version"]),
    )
    # Restart the review bookkeeping as a new process would.
    state.held.clear()
    for tid in (open_id, decided, interrupted, unrecorded):
        state.recent.pop(tid, None)
    restored = await reviews.restore_held(state, state.current_policy())
    assert restored == 1
    assert set(state.held) == {open_id}
    assert {p.name.split(".")[0] for p in held_dir.iterdir()} == {open_id}
    assert parks.events_of(unrecorded) == []
    assert parks.events_of(decided) == ["review", "rejected"]
    assert parks.events_of(interrupted) == ["review", "approved", "failed"]
    assert parks.inbox_files("sz-review") == {}
    code, body = await _decide(parks, open_id, "approve")
    assert code == 201, body
    assert parks.inbox_files("sz-review") == {"open.csv": CLEAN}


async def test_an_approval_to_a_stalled_twin_times_out_with_504(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"total_timeout": 2}) as parks:
        tid = await _hold(parks, "stalled.csv")
        async with stand_in_twin(parks, stall_envelopes=True):
            state = _state(parks)
            decision = asyncio.create_task(_decide(parks, tid, "approve"))
            for _ in range(100):  # the approval is tracked for the shutdown drain
                if state.tasks:
                    break
                await asyncio.sleep(0.01)
            assert len(state.tasks) == 1
            async with asyncio.timeout(20):
                status, body = await decision
        assert status == 504, body
        assert body["transfer_id"] == tid
        assert body["type"].endswith("/upstream-timeout")
        assert parks.events_of(tid) == ["review", "approved", "failed"]
        assert not state.tasks
        assert tid not in state.held
