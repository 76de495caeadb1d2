"""The sender hears the rule's reason on every verdict, and an officer's reason on a rejection.

Issue 15, legal error 5: allow rules carry the sender's remaining duties
(PIPL Art. 39 notice and consent), so a ``201`` says them; a rejected review
says why when the officer gives a reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import OFFICER_TOKEN, RESEARCH_TOKEN, Parks

OFFICER = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
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


async def _reject(parks: Parks, tid: str, body: Any) -> tuple[int, dict[str, Any]]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with parks.session.post(
        f"{parks.egress}/v1/reviews/{tid}/reject", headers=OFFICER, **kwargs
    ) as r:
        return r.status, await r.json(content_type=None)


async def test_a_rejection_tells_the_sender_the_officers_reason(parks: Parks) -> None:
    status, held = await parks.put("sz-review", "a.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    status, body = await _reject(parks, tid, {"reason": "No  HGR filing\nnumber was given."})
    assert status == 200, body
    expected = "rejected by a compliance officer: No HGR filing number was given."
    assert body["reason"] == expected
    assert body["state"] == "rejected"
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=SENDER) as r:
        state = await r.json()
    assert (state["state"], state["reason"]) == ("rejected", expected)
    (record,) = [
        r for r in parks.audit_events() if r.get("transfer_id") == tid and r["event"] == "rejected"
    ]
    assert record["reason"] == expected


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"reason": "call 13812345678 about it"}, "holds a value the classifier finds"),
        ({"reason": "x" * 501}, "1 to 500 characters"),
        ({"reason": "  "}, "1 to 500 characters"),
        ({"reason": "ok\u200b"}, "no control or format characters"),
        ({"reason": "fine", "officer": "me"}, "must be JSON"),
        (["reason"], "must be JSON"),
        (b"not json", "must be JSON"),
        ({"reason": 5}, "1 to 500 characters"),
    ],
)
async def test_a_bad_reason_is_400_and_the_review_stays_open(
    parks: Parks, body: Any, says: str
) -> None:
    status, held = await parks.put("sz-review", "b.csv", CLEAN)
    assert status == 202
    tid = held["transfer_id"]
    status, problem = await _reject(parks, tid, body)
    assert status == 400, problem
    assert says in problem["detail"]
    assert "13812345678" not in str(problem)
    assert parks.events_of(tid) == ["review"]
    # Still open: a reject without a reason decides it.
    status, body2 = await _reject(parks, tid, b"")
    assert status == 200, body2
    assert body2["reason"] == "rejected by a compliance officer"
