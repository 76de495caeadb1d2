"""Reviews an officer can run (issue 15): list, show, approve, reject, over the API and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import main
from gateway.server.egress_state import EGRESS
from gateway.server.review_expiry import expire_reviews
from tests.ledger.pg import drop_schema, new_schema, require_pg
from tests.server.conftest import (
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    Parks,
    replica_settings,
    running,
    start_parks,
)
from tests.server.test_review_reason import CLEAN

OFFICER = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}


async def _get(parks: Parks, path: str, headers: dict[str, str] = OFFICER) -> tuple[int, Any]:
    async with parks.session.get(f"{parks.egress}{path}", headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def _hold(parks: Parks, name: str) -> str:
    status, body = await parks.put("sz-review", name, CLEAN)
    assert status == 202, body
    return str(body["transfer_id"])


async def test_officers_list_and_page_open_reviews_oldest_first(parks: Parks) -> None:
    first = await _hold(parks, "first.csv")
    second = await _hold(parks, "second.csv")
    status, page = await _get(parks, "/v1/reviews")
    assert status == 200, page
    assert (page["state"], page["total"]) == ("pending", 2)
    assert [r["transfer_id"] for r in page["reviews"]] == [first, second]
    row = page["reviews"][0]
    assert (row["state"], row["route"], row["rule"]) == ("pending", "sz-review", "review.route")
    assert row["path"] == "first.csv"
    assert row["bytes"] == len(CLEAN)
    assert row["waiting_seconds"] >= 0
    status, page = await _get(parks, "/v1/reviews?limit=1&offset=1")
    assert [r["transfer_id"] for r in page["reviews"]] == [second]
    # Senders do not see the queue; a bad argument is a 400.
    status, _ = await _get(parks, "/v1/reviews", SENDER)
    assert status == 403
    for query in ("?state=maybe", "?limit=-1", "?limit=501", "?offset=x"):
        status, problem = await _get(parks, "/v1/reviews" + query)
        assert status == 400, query
        assert problem["type"].endswith("/bad-request")


async def test_an_officer_sees_what_deciding_would_do(parks: Parks) -> None:
    tid = await _hold(parks, "third.csv")
    status, review = await _get(parks, f"/v1/reviews/{tid}")
    assert status == 200, review
    assert review["held_by"]["rule"] == "review.route"
    assert review["now"]["action"] == "review"
    assert review["now"]["rule"] == "review.route"
    matched = [step["rule"] for step in review["now"]["trace"] if step["matched"]]
    assert matched == ["review.route"]
    assert set(review["ledger"]) == {"personal", "sensitive"}
    # hk->sz: the ledger counts exports only, this transfer adds nobody.
    assert review["ledger"]["personal"]["projected"] == review["ledger"]["personal"]["current"]
    status, _ = await _get(parks, f"/v1/reviews/{tid}", SENDER)
    assert status == 403
    status, _ = await _get(parks, "/v1/reviews/t_" + "0" * 32)
    assert status == 404


async def _cli(
    capsys: pytest.CaptureFixture[str], parks: Parks, *argv: str
) -> tuple[int, str, str]:
    """Run ``gateway review`` in a thread (the parks serve in this loop); its output
    without the servers' log lines."""
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["review", *argv, "--url", parks.egress, "--token", OFFICER_TOKEN]
    )
    out, err = capsys.readouterr()
    mine = "".join(line for line in out.splitlines(keepends=True) if not line.startswith("20"))
    return code, mine, err


async def test_the_review_command_lists_shows_approves_and_rejects(
    parks: Parks, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = await _hold(parks, "keep.csv")
    drop = await _hold(parks, "drop.csv")
    code, out, _ = await _cli(capsys, parks, "list")
    assert code == 0
    assert out.startswith("2 pending review(s)")
    assert keep in out
    assert drop in out
    code, out, _ = await _cli(capsys, parks, "show", keep)
    assert code == 0
    assert "held by:  review.route" in out
    assert "now:      the policy in force would REVIEW by review.route" in out
    code, out, _ = await _cli(
        capsys, parks, "approve", keep, "--comment", "Fine.", "--reference", "T-1"
    )
    assert (code, out.strip()) == (0, f"{keep}: approved and delivered (destination answered 201)")
    await parks.settle()
    assert parks.inbox_files("sz-review") == {"keep.csv": CLEAN}
    (approved,) = [
        r for r in parks.audit_events() if r.get("transfer_id") == keep and r["event"] == "approved"
    ]
    assert (approved["comment"], approved["reference"]) == ("Fine.", "T-1")
    code, out, _ = await _cli(capsys, parks, "reject", drop, "--comment", "Wrong project.")
    assert code == 0
    assert "rejected by a compliance officer: Wrong project." in out
    code, out, _ = await _cli(capsys, parks, "list", "--state", "rejected", "--json")
    assert [r["transfer_id"] for r in json.loads(out)["reviews"]] == [drop]
    code, out, _ = await _cli(capsys, parks, "list", "--state", "approved", "--json")
    assert [r["transfer_id"] for r in json.loads(out)["reviews"]] == [keep]
    # Decided: no longer open.
    code, _, err = await _cli(capsys, parks, "approve", keep, "--comment", "again")
    assert code == 2
    assert "404" in err


async def test_the_review_command_needs_a_token_and_a_gateway(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_TOKEN", raising=False)
    assert main(["review", "list"]) == 2
    assert "officer token" in capsys.readouterr().err
    assert main(["review", "list", "--token", "x", "--url", "ftp://h"]) == 2
    assert "http:// or https://" in capsys.readouterr().err
    code = main(["review", "list", "--token", "x", "--url", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach" in capsys.readouterr().err


async def test_a_held_transfer_says_where_to_look_and_expires_unanswered(parks: Parks) -> None:
    async with parks.session.put(
        f"{parks.egress}/v1/transfers/sz-review/late.csv", data=CLEAN, headers=SENDER
    ) as r:
        assert r.status == 202
        body = await r.json()
        location = r.headers["Location"]
    tid = body["transfer_id"]
    assert location == body["status_url"] == f"/v1/transfers/{tid}"
    assert "compliance officer" in body["next"]
    assert "168 h" in body["next"]
    async with parks.session.get(f"{parks.egress}/metrics") as r:
        text = await r.text()
    assert "gateway_reviews_pending 1.0" in text
    (age,) = [
        line for line in text.splitlines() if line.startswith("gateway_review_oldest_age_seconds ")
    ]
    assert float(age.split()[1]) > 0
    state = parks.hk.egress_app[EGRESS] if parks.hk.egress_app is not None else None
    assert state is not None
    # Not due yet: nothing happens.
    assert await expire_reviews(state) == 0
    created = state.held[tid].transfer.created_at
    assert await expire_reviews(state, now=created + state.config.review_expiry) == 1
    assert parks.events_of(tid) == ["review", "rejected"]
    (record,) = [r for r in parks.audit_events() if r.get("transfer_id") == tid][-1:]
    assert record["reason"] == "expired: no decision within 168 h"
    assert list((parks.root / "hk" / "spool" / "held").glob("*")) == []
    status, seen = await _get(parks, location, SENDER)
    assert (status, seen["state"], seen["reason"]) == (200, "rejected", record["reason"])
    # Officers find it among the expired reviews, not among those an officer rejected.
    status, listed = await _get(parks, "/v1/reviews?state=expired")
    assert status == 200
    assert [(r["transfer_id"], r["review"]) for r in listed["reviews"]] == [(tid, "expired")]
    status, listed = await _get(parks, "/v1/reviews?state=rejected")
    assert (status, listed["total"]) == (200, 0)
    async with parks.session.get(f"{parks.egress}/metrics") as r:
        text = await r.text()
    assert "gateway_reviews_pending 0.0" in text
    assert "gateway_review_oldest_age_seconds 0.0" in text


async def test_an_approval_judges_chance_findings_as_the_policy_in_force_does(
    parks: Parks,
) -> None:
    """Held while its route set chance-level findings aside; the route counts them
    now. The view and the approval both judge by the policy in force: a block
    shown to the officer is the block the approval meets (409), not an allow."""
    from gateway.classify.testing import assay_csv
    from tests.server.conftest import edit_policy

    rules = (
        "  - id: block.many-phones\n    action: block\n    reason: Too many phone numbers.\n"
        '    when:\n      labels: {count: {"pii.cn_phone": ">= 1000"}}\n'
        "  - id: review.held-route\n    action: review\n    reason: Checked by an officer.\n"
        "    when:\n      route: sz-review\n"
    )
    await edit_policy(parks, "  - id: block.personal\n", rules + "  - id: block.personal\n")
    status, body = await parks.put("sz-review", "assay.csv", assay_csv(seed=15))
    assert status == 202, body
    assert "pii.cn_phone" not in body["labels"]  # set aside on this route, for now
    tid = body["transfer_id"]
    await edit_policy(
        parks,
        "  sz-review:\n    direction: hk->sz\n",
        "  sz-review:\n    direction: hk->sz\n    chance: count\n",
    )
    async with parks.session.get(f"{parks.egress}/v1/reviews/{tid}", headers=OFFICER) as r:
        assert r.status == 200
        view = await r.json()
    assert (view["now"]["action"], view["now"]["rule"]) == ("block", "block.many-phones")
    approve = f"{parks.egress}/v1/reviews/{tid}/approve"
    async with parks.session.post(approve, json={"comment": "ok"}, headers=OFFICER) as r:
        refusal = await r.json()
        assert r.status == 409, refusal
    assert refusal["rule"] == "block.many-phones"
    assert "assay.csv" not in parks.inbox_files("sz-review")


async def test_a_review_held_on_another_replica_shows_its_approvals_so_far(
    tmp_path: Path, pki: Path
) -> None:
    """With a PostgreSQL ledger any replica shows any open review of its park (issue 16):
    one held on the other replica, given a first of two approvals there, shows
    that approval and what deciding it now would do."""
    schema = new_schema()
    ledger_url = f"{require_pg()}?schema={schema}"
    try:
        async with (
            start_parks(tmp_path, pki),
            contextlib.AsyncExitStack() as stack,
            aiohttp.ClientSession() as session,
        ):
            policy = tmp_path / "policies" / "policy.yaml"
            reason = "    reason: Transfers on this route are checked by a compliance officer.\n"
            assert reason in policy.read_text()
            policy.write_text(policy.read_text().replace(reason, reason + "    approvals: 2\n"))
            holder, other = [
                await stack.enter_async_context(
                    running(replica_settings(tmp_path, pki, name, ledger_url), drain_seconds=2)
                )
                for name in ("hk-0", "hk-1")
            ]
            put = f"{holder.egress_url}/v1/transfers/sz-review/four-eyes.csv"
            async with session.put(put, data=CLEAN, headers=SENDER) as r:
                assert r.status == 202, await r.text()
                tid = (await r.json())["transfer_id"]
            approve = f"{holder.egress_url}/v1/reviews/{tid}/approve"
            async with session.post(approve, json={"comment": "ok"}, headers=OFFICER) as r:
                first = await r.json()
                assert (r.status, first["approvals"]) == (202, "1 of 2"), first
            assert other.egress_app is not None
            assert tid not in other.egress_app[EGRESS].held
            async with session.get(f"{other.egress_url}/v1/reviews/{tid}", headers=OFFICER) as r:
                view = await r.json()
                assert r.status == 200, view
            assert (view["transfer_id"], view["state"]) == (tid, "pending")
            assert (view["approvals_needed"], view["approved_by"]) == (2, [first["officer"]])
            assert view["now"]["action"] == "review"
    finally:
        await drop_schema(schema)
