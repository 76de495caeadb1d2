"""Reviews and the status API: decisions move only once durable, restores check the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import ledger_year, open_ledger
from gateway.ledger.base import Ledger
from gateway.server import review_restore, status
from gateway.server.app import reload_policy
from gateway.server.egress_state import EGRESS, EgressState
from gateway.server.records import append_record
from tests.ledger.pg import drop_schema, new_schema, require_pg
from tests.server.conftest import (
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    Parks,
    edit_policy,
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
    async with parks.session.post(
        url, json={"comment": f"{verb}d in the test"}, headers=OFFICER
    ) as r:
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
    monkeypatch.setattr(status, "LOOKUP_WAIT_SECONDS", 0.2)
    assert parks.hk.egress_app is not None
    slots = parks.hk.egress_app[status.LOOKUPS]
    for _ in range(status.MAX_CONCURRENT_LOOKUPS):
        await slots.acquire()
    try:
        for suffix in ("", "/receipt"):
            async with parks.session.get(unknown + suffix, headers=OFFICER) as r:
                assert r.status == 503
                assert r.headers["Retry-After"]
    finally:
        for _ in range(status.MAX_CONCURRENT_LOOKUPS):
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
    restored = await review_restore.restore_held(state, state.current_policy())
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


# ---------------------------------------------------------------------------
# approval re-checks the policy in force and the ledger

#: The test policy's yearly threshold of people (the CAC Provisions' 100,000,
#: scaled down so a test can cross it with a handful of synthetic hashes).
THRESHOLD = 10
#: Rules put first in the test policy: a held transfer with personal data on
#: ``sz-review`` is reviewed while its organisation stays under the threshold,
#: blocked once the year's total including it would reach it.
LEDGER_RULES = f"""\
  - id: block.ledger-threshold
    action: block
    reason: >
      This organisation's personal data sent this year would reach
      {THRESHOLD} people.
    when:
      route: sz-review
      ledger:
        personal: {{projected: ">= {THRESHOLD}"}}
  - id: review.personal
    action: review
    reason: Personal data on this route is checked by a compliance officer.
    when:
      route: sz-review
      categories:
        any: [personal]
"""
ORGANISATION = "hku"


def _people(first: int, n: int) -> bytes:
    """A CSV naming ``n`` distinct people by e-mail address."""
    rows = (f"P{i},person{i}@example.com\n".encode() for i in range(first, first + n))
    return b"name,email\n" + b"".join(rows)


async def _with_ledger_rules(parks: Parks) -> str:
    return await edit_policy(parks, "rules:\n", "rules:\n" + LEDGER_RULES)


async def _hold_people(parks: Parks, name: str, data: bytes) -> str:
    status, body = await parks.put("sz-review", name, data)
    assert status == 202, body
    assert body["rule"] == "review.personal"
    return str(body["transfer_id"])


async def _personal_total(parks: Parks) -> int:
    totals = await parks.hk.services.ledger.totals(ledger_year(), ORGANISATION)
    return sum(t.subjects for t in totals if t.category == "personal")


async def _raise_ledger_to(parks: Parks, ledger: Ledger, subjects: int) -> None:
    """Seed the organisation's yearly total through the ledger's own transaction API."""
    async with ledger.transaction(ORGANISATION, ledger_year()) as tx:
        current = await tx.count("personal", ())
        await tx.add("personal", {os.urandom(16) for _ in range(subjects - current.current)})
    assert await _personal_total(parks) == subjects


async def _state_of(parks: Parks, tid: str) -> str:
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=OFFICER) as r:
        assert r.status == 200
        return str((await r.json())["state"])


def _record(parks: Parks, tid: str, event: str) -> dict[str, Any]:
    (found,) = [
        r for r in parks.audit_events() if r.get("transfer_id") == tid and r.get("event") == event
    ]
    return found


async def _assert_refused_and_still_open(
    parks: Parks, tid: str, problem: dict[str, Any], total: int
) -> None:
    """A refused approval: nothing delivered, recorded or counted; rejecting still works."""
    assert problem["type"].endswith("/conflict")
    assert problem["state"] == "review"
    assert parks.inbox_files("sz-review") == {}
    assert parks.events_of(tid) == ["review"]
    assert await _state_of(parks, tid) == "review"
    assert await _personal_total(parks) == total
    code, body = await _decide(parks, tid, "reject")
    assert code == 200, body
    assert parks.events_of(tid) == ["review", "rejected"]


@contextlib.asynccontextmanager
async def _ledger_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A ledger URL of ``backend``; PostgreSQL in a schema of its own, dropped afterwards."""
    if backend == "memory":
        yield "memory:"
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        schema = new_schema()
        try:
            yield f"{require_pg()}?schema={schema}"
        finally:
            await drop_schema(schema)


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_approval_after_the_ledger_crossed_the_threshold_is_refused(
    tmp_path: Path, pki: Path, backend: str
) -> None:
    async with (
        _ledger_url(backend, tmp_path) as url,
        start_parks(tmp_path, pki, ledger_url=url) as parks,
    ):
        version = await _with_ledger_rules(parks)
        tid = await _hold_people(parks, "over.csv", _people(0, 3))
        if backend == "memory":
            await _raise_ledger_to(parks, parks.hk.services.ledger, THRESHOLD)
        else:
            # Another replica (its own connection to the shared ledger) raises the total.
            replica = await open_ledger(url)
            try:
                await _raise_ledger_to(parks, replica, THRESHOLD)
            finally:
                await replica.close()
        code, problem = await _decide(parks, tid, "approve")
        assert code == 409, problem
        assert problem["detail"].startswith(
            "the policy in force now blocks this transfer: rule block.ledger-threshold: "
            f"This organisation's personal data sent this year would reach {THRESHOLD} people."
        )
        assert problem["rule"] == "block.ledger-threshold"
        assert problem["policy_version"] == version
        await _assert_refused_and_still_open(parks, tid, problem, THRESHOLD)


async def test_approval_under_the_threshold_counts_and_delivers_under_the_policy_in_force(
    parks: Parks,
) -> None:
    held_version = await _with_ledger_rules(parks)
    data = _people(0, 3)
    tid = await _hold_people(parks, "under.csv", data)
    # With the 3 held people the year stays one short of the threshold.
    await _raise_ledger_to(parks, parks.hk.services.ledger, THRESHOLD - 4)
    # A policy edit that does not concern this transfer: a new version in force.
    version = await edit_policy(parks, "name: server-tests\n", "name: server-tests-v2\n")
    assert version != held_version
    code, body = await _decide(parks, tid, "approve")
    assert code == 201, body
    assert body["policy_version"] == version
    assert body["rule"] == "review.personal"
    assert parks.inbox_files("sz-review") == {"under.csv": data}
    assert parks.events_of(tid) == ["review", "approved", "delivered"]
    assert await _personal_total(parks) == THRESHOLD - 1
    assert _record(parks, tid, "review")["policy_version"] == held_version
    approved = _record(parks, tid, "approved")
    assert approved["policy_version"] == version
    assert approved["rule"] == "review.personal"
    assert approved["reason"] == "Personal data on this route is checked by a compliance officer."
    assert approved["labels"]["pii.email"] == {"count": 3, "distinct": 3}


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("  hk-research:\n", "  hk-other:\n", "sender 'hk-research' is not in the policy"),
        ("organisation: hku\n", "organisation: hku-med\n", "organisation 'hku-med'"),
    ],
    ids=["sender-removed", "organisation-changed"],
)
async def test_approval_after_the_sender_changed_in_the_policy_is_refused(
    parks: Parks, old: str, new: str, named: str
) -> None:
    tid = await _hold(parks, "changed.csv")
    await edit_policy(parks, old, new)
    code, problem = await _decide(parks, tid, "approve")
    assert code == 409, problem
    assert problem["type"].endswith("/conflict")
    assert named in problem["detail"]
    assert parks.inbox_files("sz-review") == {}
    assert parks.events_of(tid) == ["review"]
    code, body = await _decide(parks, tid, "reject")
    assert code == 200, body


async def test_reviews_restored_after_a_restart_are_rechecked_too(parks: Parks) -> None:
    state = _state(parks)
    await _with_ledger_rules(parks)
    first, second = _people(0, 3), _people(3, 3)
    tid_first = await _hold_people(parks, "first.csv", first)
    tid_second = await _hold_people(parks, "second.csv", second)
    # Restart the review bookkeeping as a new process would: no summary in memory.
    state.held.clear()
    for tid in (tid_first, tid_second):
        state.recent.pop(tid, None)
    assert await review_restore.restore_held(state, state.current_policy()) == 2
    assert all(held.summary is None for held in state.held.values())
    # Under the threshold: approved, and its people counted from the held hashes.
    code, body = await _decide(parks, tid_first, "approve")
    assert code == 201, body
    assert parks.inbox_files("sz-review") == {"first.csv": first}
    assert await _personal_total(parks) == 3
    assert _record(parks, tid_first, "approved")["labels"]["pii.email"]["distinct"] == 3
    # The second would bring the year to the threshold: refused.
    await _raise_ledger_to(parks, parks.hk.services.ledger, THRESHOLD - 3)
    code, problem = await _decide(parks, tid_second, "approve")
    assert code == 409, problem
    assert problem["rule"] == "block.ledger-threshold"
    assert parks.events_of(tid_second) == ["review"]
    assert await _personal_total(parks) == THRESHOLD - 3
    code, body = await _decide(parks, tid_second, "reject")
    assert code == 200, body
    assert parks.inbox_files("sz-review") == {"first.csv": first}


@pytest.mark.parametrize("held_by", ["this version", "an older version"])
async def test_a_restored_review_counts_its_people_from_the_held_hashes(
    parks: Parks, held_by: str
) -> None:
    state = _state(parks)
    await _with_ledger_rules(parks)
    people = _people(0, 3)
    tid = await _hold_people(parks, "restored.csv", people)
    _, _, meta = state.spool.held_parts(tid, state.spool_identity)
    # The held metadata keeps the keyed hashes per label and the cap flag, so
    # that an approval after a restart counts as the policy in force would.
    assert set(meta["label_digests"]) == set(meta["summary"]["labels"])
    assert len(meta["label_digests"]["pii.email"]) == 3
    assert meta["distinct_capped"] is False
    if held_by == "an older version":  # per-category hashes only, in clear
        (state.spool.held / f"{tid}.meta.age").unlink()
        meta_file = state.spool.held / f"{tid}.json"
        del meta["label_digests"], meta["distinct_capped"]
        meta_file.write_text(json.dumps(meta), encoding="utf-8")
    state.held.clear()
    state.recent.pop(tid, None)
    assert await review_restore.restore_held(state, state.current_policy()) == 1
    # Restoring sealed any metadata held in clear (it names the file).
    assert not (state.spool.held / f"{tid}.json").exists()
    assert (state.spool.held / f"{tid}.meta.age").is_file()
    code, body = await _decide(parks, tid, "approve")
    assert code == 201, body
    assert parks.inbox_files("sz-review") == {"restored.csv": people}
    assert await _personal_total(parks) == 3
