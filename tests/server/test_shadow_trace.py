"""Shadow rules leave a trace (issue 15): the verdict's audit record, a metric, a log event."""

from __future__ import annotations

from structlog.testing import capture_logs

from tests.server.conftest import Parks, edit_policy
from tests.server.test_review_reason import CLEAN

SHADOW_RULE = """  - id: trial.block-instruments
    action: block
    mode: shadow
    reason: Trying out a block on instrument readings.
    when:
      content_type: [text/csv]
  - id: allow.clean
"""


async def test_a_matching_shadow_rule_is_recorded_counted_and_logged(parks: Parks) -> None:
    version = await edit_policy(parks, "  - id: allow.clean\n", SHADOW_RULE)
    with capture_logs() as logs:
        status, body = await parks.put("sz-lab", "readings.csv", CLEAN)
    assert status == 201, body
    assert (body["rule"], body["policy_version"]) == ("allow.clean", version)
    tid = body["transfer_id"]
    (verdict,) = [
        r for r in parks.audit_events() if r.get("transfer_id") == tid and r["event"] == "allowed"
    ]
    assert verdict["shadow"] == {"trial.block-instruments": "block"}
    (delivered,) = [
        r for r in parks.audit_events() if r.get("transfer_id") == tid and r["event"] == "delivered"
    ]
    assert "shadow" not in delivered  # the verdict's record carries it, once
    assert {
        (e["event"], e.get("rule"), e.get("would")) for e in logs if e["event"] == "shadow_matched"
    } == {("shadow_matched", "trial.block-instruments", "block")}
    async with parks.session.get(f"{parks.egress}/metrics") as r:
        text = await r.text()
    assert 'gateway_shadow_matches_total{action="block",rule="trial.block-instruments"} 1.0' in text


async def test_no_shadow_field_when_no_shadow_rule_matched(parks: Parks) -> None:
    status, body = await parks.put("sz-lab", "readings.csv", CLEAN)
    assert status == 201, body
    tid = body["transfer_id"]
    records = [r for r in parks.audit_events() if r.get("transfer_id") == tid]
    assert records
    assert all("shadow" not in r for r in records)
