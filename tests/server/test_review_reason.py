"""What reviewers and senders say, and who said it (issue 15).

Every verdict carries its rule's reason (allow rules hold the sender's
remaining duties, PIPL Art. 39); an officer decides a review with a comment
(and a reference) that the audit log records under the officer's name; a
sender may say what a transfer is for; nobody decides their own transfer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from gateway.server.auth import token_digest
from tests.server.conftest import (
    NAMED_OFFICER_TOKEN,
    OFFICER_TOKEN,
    RESEARCH_TOKEN,
    SELF_OFFICER_TOKEN,
    Parks,
    edit_policy,
)

OFFICER = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
NAMED = {"Authorization": f"Bearer {NAMED_OFFICER_TOKEN}"}
SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
CLEAN = b"run_id,instrument,temperature_c\n" + b"".join(
    b"R%04d,spectrometer-%d,%d.5\n" % (i, i % 4, 20 + i % 9) for i in range(200)
)


async def test_an_allowed_transfer_hears_the_rules_reason(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "clean.csv", CLEAN)
    assert status == 201, body
    assert body["rule"] == "allow.clean"
    assert body["reason"] == "No personal or sensitive data found."
    async with parks.session.get(
        f"{parks.egress}/v1/transfers/{body['transfer_id']}", headers=SENDER
    ) as r:
        assert (await r.json())["reason"] == "No personal or sensitive data found."


async def _decide(
    parks: Parks, tid: str, verb: str, body: Any, headers: dict[str, str] = OFFICER
) -> tuple[int, dict[str, Any]]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with parks.session.post(
        f"{parks.egress}/v1/reviews/{tid}/{verb}", headers=headers, **kwargs
    ) as r:
        result = r.status, await r.json(content_type=None)
    await parks.settle()
    return result


def _records(parks: Parks, tid: str, event: str) -> list[dict[str, Any]]:
    return [r for r in parks.audit_events() if r.get("transfer_id") == tid and r["event"] == event]


async def test_a_rejection_names_the_officer_and_tells_the_sender_why(parks: Parks) -> None:
    status, held = await parks.put("sz-review", "a.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    decision = {"comment": "No  HGR filing\nnumber was given.", "reference": "HGR-2026/0412"}
    status, body = await _decide(parks, tid, "reject", decision, NAMED)
    assert status == 200, body
    expected = "rejected by a compliance officer: No HGR filing number was given."
    assert (body["reason"], body["state"], body["officer"]) == (
        expected,
        "rejected",
        "chan.tai-man",
    )
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=SENDER) as r:
        state = await r.json()
    assert (state["state"], state["reason"]) == ("rejected", expected)
    (record,) = _records(parks, tid, "rejected")
    assert record["reason"] == expected
    assert (record["officer"], record["comment"], record["reference"]) == (
        "chan.tai-man",
        "No HGR filing number was given.",
        "HGR-2026/0412",
    )


async def test_an_approval_names_the_officer(parks: Parks) -> None:
    status, held = await parks.put("sz-review", "b.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    status, body = await _decide(parks, tid, "approve", {"comment": "As agreed with the lab."})
    assert status == 201, body
    (record,) = _records(parks, tid, "approved")
    # An unnamed officer token: recorded by the first digits of its digest.
    assert record["officer"] == "officer-" + token_digest(OFFICER_TOKEN)[:8]
    assert record["comment"] == "As agreed with the lab."
    assert "reference" not in record
    assert parks.inbox_files("sz-review") == {"b.csv": CLEAN}


async def test_nobody_decides_their_own_transfer(parks: Parks) -> None:
    status, held = await parks.put("sz-review", "c.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    myself = {"Authorization": f"Bearer {SELF_OFFICER_TOKEN}"}
    status, problem = await _decide(parks, tid, "approve", {"comment": "mine, fine"}, myself)
    assert status == 403, problem
    assert "own transfer" in problem["detail"]
    assert parks.events_of(tid) == ["review"]
    assert parks.inbox_files("sz-review") == {}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"comment": "call 13812345678 about it"}, "holds a value the classifier finds"),
        ({"comment": "x" * 501}, "1 to 500 characters"),
        ({"comment": "  "}, "1 to 500 characters"),
        ({"comment": "ok\u200b"}, "no control or format characters"),
        ({"comment": "fine", "officer": "me"}, "must be JSON"),
        ({"comment": "fine", "reference": "x" * 101}, "1 to 100 characters"),
        ({"reference": "HGR-1"}, "comment: a text"),
        (["comment"], "must be JSON"),
        (b"not json", "must be JSON"),
        (b"", "needs a comment"),
        ({"comment": 5}, "1 to 500 characters"),
    ],
)
async def test_a_bad_decision_is_400_and_the_review_stays_open(
    parks: Parks, body: Any, says: str
) -> None:
    status, held = await parks.put("sz-review", "d.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    for verb in ("approve", "reject"):
        status, problem = await _decide(parks, tid, verb, body)
        assert status == 400, problem
        assert says in problem["detail"]
        assert "13812345678" not in str(problem)
    assert parks.events_of(tid) == ["review"]
    status, decided = await _decide(parks, tid, "reject", {"comment": "Resubmit it."})
    assert status == 200, decided


async def test_a_senders_justification_reaches_the_reviewer_and_the_record(parks: Parks) -> None:
    why = "Calibration runs for the joint 深港 spectrometer study."
    headers = {**SENDER, "X-Gateway-Justification": quote(why)}
    async with parks.session.put(
        f"{parks.egress}/v1/transfers/sz-review/e.csv", data=CLEAN, headers=headers
    ) as r:
        assert r.status == 202
        tid = (await r.json())["transfer_id"]
    async with parks.session.get(f"{parks.egress}/v1/reviews/{tid}", headers=OFFICER) as r:
        assert (await r.json())["justification"] == why
    (record,) = _records(parks, tid, "review")
    assert record["justification"] == why
    # A justification holding a value is refused before the body is read.
    bad = {**SENDER, "X-Gateway-Justification": "for 13812345678"}
    async with parks.session.put(
        f"{parks.egress}/v1/transfers/sz-review/f.csv", data=CLEAN, headers=bad
    ) as r:
        assert r.status == 400
        assert "13812345678" not in await r.text()
    assert "f.csv" not in str(parks.audit_events())


async def test_a_four_eyes_review_needs_two_different_officers(parks: Parks) -> None:

    reason = "    reason: Transfers on this route are checked by a compliance officer.\n"
    await edit_policy(parks, reason, reason + "    approvals: 2\n")
    status, held = await parks.put("sz-review", "g.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    status, first = await _decide(parks, tid, "approve", {"comment": "Looks right."})
    assert status == 202, first
    assert (first["approvals"], first["state"]) == ("1 of 2", "review")
    assert parks.inbox_files("sz-review") == {}
    # The same officer again: refused, still open.
    status, problem = await _decide(parks, tid, "approve", {"comment": "Really."})
    assert status == 409, problem
    async with parks.session.get(f"{parks.egress}/v1/reviews/{tid}", headers=OFFICER) as r:
        review = await r.json()
    assert review["approvals_needed"] == 2
    assert review["approved_by"] == [first["officer"]]
    status, done = await _decide(parks, tid, "approve", {"comment": "Agreed."}, NAMED)
    assert status == 201, done
    assert parks.inbox_files("sz-review") == {"g.csv": CLEAN}
    assert parks.events_of(tid) == ["review", "review", "approved", "delivered"]
    (_, second_review) = _records(parks, tid, "review")
    assert (second_review["officer"], second_review["detail"]) == (
        first["officer"],
        "approval 1 of 2",
    )
    (approved,) = _records(parks, tid, "approved")
    assert (approved["officer"], approved["comment"]) == ("chan.tai-man", "Agreed.")
