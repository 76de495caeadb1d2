"""Column profiles end to end (issue 14): tables of random digits cross, real numbers do not.

Both parks run for real (tests/server/conftest.py): uploads go through the HK
egress on ``sz-lab`` (``block.personal`` on any ``pii.*``, else
``allow.clean``) to the SZ ingress and its inbox. Each table is about 1 MB.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from gateway.classify.testing import assay_csv
from gateway.ledger import ledger_year
from tests.server.conftest import RESEARCH_TOKEN, Parks, edit_policy, sha256

ROWS = 20_000
AUTH = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
ORGANISATION = "hku"  # hk-research's organisation in the test policy


def sensor_csv(seed: int = 5) -> bytes:
    """A sensor log: a timestamp, an 11-digit random device number and a temperature."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    lines = ["timestamp,device,temp"]
    for i in range(ROWS):
        at = (start + dt.timedelta(seconds=15 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{at},{rng.randint(10**10, 10**11 - 1)},{rng.uniform(15, 35):.2f}")
    return ("\n".join(lines) + "\n").encode()


async def status_of(parks: Parks, tid: str) -> dict[str, Any]:
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=AUTH) as r:
        assert r.status == 200
        state: dict[str, Any] = await r.json()
    return state


async def receipt_of(parks: Parks, tid: str) -> dict[str, Any]:
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}/receipt", headers=AUTH) as r:
        assert r.status == 200
        receipt: dict[str, Any] = await r.json()
    return receipt


async def personal_subjects(parks: Parks) -> int:
    totals = await parks.hk.services.ledger.totals(ledger_year(), ORGANISATION)
    return sum(t.subjects for t in totals if t.category == "personal")


def audit_bytes(parks: Parks, park: str = "hk") -> bytes:
    return b"".join(p.read_bytes() for p in (parks.root / park / "audit").rglob("*.jsonl"))


async def assert_delivered_clean(parks: Parks, name: str, data: bytes) -> str:
    """Upload ``data`` on sz-lab; it must be allowed as clean and arrive byte-identical."""
    status, body = await parks.put("sz-lab", name, data)
    assert status == 201, body
    assert (body["decision"], body["rule"]) == ("allow", "allow.clean")
    assert body["labels"] == {}
    assert body["subjects"] == 0
    assert body["bytes"] == len(data)
    assert body["sha256"] == sha256(data)
    assert body["upstream_status"] == 201
    tid: str = body["transfer_id"]
    assert parks.inbox_files("sz-lab").get(name) == data
    assert parks.partial_files() == []
    assert parks.events_of(tid) == ["allowed", "delivered"]
    assert parks.events_of(tid, "sz") == ["delivered"]
    state = await status_of(parks, tid)
    assert state["state"] == "delivered"
    assert (state["labels"], state["subjects"]) == ({}, 0)
    record = (await receipt_of(parks, tid))["record"]
    assert record["transfer_id"] == tid
    assert (record["event"], record["rule"]) == ("allowed", "allow.clean")  # the verdict's record
    assert (record["labels"], record["subjects"]) == ({}, 0)
    return tid


async def test_assay_table_of_random_digits_is_delivered(parks: Parks) -> None:
    data = assay_csv()
    assert 900_000 < len(data) < 1_300_000
    await assert_delivered_clean(parks, "assay.csv", data)
    # The chance-level "phone numbers" and "cards" reached no ledger.
    assert await personal_subjects(parks) == 0


async def test_assay_table_with_a_mobile_column_is_blocked(parks: Parks) -> None:
    data = assay_csv(mobile=True)
    status, body = await parks.put("sz-lab", "assay-contacts.csv", data)
    assert status == 403, body
    assert body["type"].endswith("/blocked")
    assert (body["decision"], body["rule"]) == ("block", "block.personal")
    # The named column counts, every one of its numbers; the random columns stay aside.
    assert body["labels"] == {"pii.cn_phone": {"count": ROWS, "distinct": ROWS}}
    assert body["subjects"] == ROWS
    tid = body["transfer_id"]
    assert parks.inbox_files("sz-lab") == {}
    assert parks.recorder.received == {}
    assert parks.partial_files() == []
    assert parks.events_of(tid) == ["blocked"]
    assert parks.events_of(tid, "sz") == []
    state = await status_of(parks, tid)
    assert state["state"] == "blocked"
    assert state["labels"] == body["labels"]
    # No number of the table in the verdict or the audit log.
    header, first, *_ = data.split(b"\n", 2)
    values = first.split(b",")
    log = audit_bytes(parks)
    for value in (values[0], values[1], values[-1]):
        assert value.decode() not in str(body)
        assert value not in log
    assert header.endswith(b",mobile")


async def test_sensor_log_with_random_device_numbers_is_delivered(parks: Parks) -> None:
    data = sensor_csv()
    await assert_delivered_clean(parks, "sensors.csv", data)
    assert await personal_subjects(parks) == 0


async def test_route_chance_count_blocks_the_assay_table(parks: Parks) -> None:
    data = assay_csv(seed=15)
    version = await edit_policy(
        parks,
        "  sz-lab:\n    direction: hk->sz\n",
        "  sz-lab:\n    direction: hk->sz\n    chance: count\n",
    )
    status, body = await parks.put("sz-lab", "assay.csv", data)
    assert status == 403, body
    assert (body["decision"], body["rule"]) == ("block", "block.personal")
    assert body["policy_version"] == version
    # Every chance-tested label the random columns hit is counted on this route.
    assert set(body["labels"]) == {"pii.cn_phone", "pii.hk_phone", "pii.bank_card"}
    assert 1400 < body["labels"]["pii.cn_phone"]["count"] < 1720
    assert 1850 < body["labels"]["pii.bank_card"]["count"] < 2150
    assert body["subjects"] == max(s["distinct"] for s in body["labels"].values())
    assert parks.inbox_files("sz-lab") == {}
    assert parks.events_of(body["transfer_id"]) == ["blocked"]
    assert parks.events_of(body["transfer_id"], "sz") == []
    # Another route of the same policy still sets them aside.
    status, body = await parks.put("sz-https", "assay.csv", data)
    assert status == 201, body
    assert (body["rule"], body["labels"]) == ("allow.clean", {})
    assert parks.recorder.received == {"/https/assay.csv": data}


async def test_policy_header_words_reach_the_egress(parks: Parks) -> None:
    data = sensor_csv(seed=6)
    await assert_delivered_clean(parks, "sensors.csv", data)
    version = await edit_policy(
        parks, "rules:\n", "chance:\n  headers:\n    pii.cn_phone: [Device]\nrules:\n"
    )
    status, body = await parks.put("sz-lab", "sensors-again.csv", data)
    assert status == 403, body
    assert (body["rule"], body["policy_version"]) == ("block.personal", version)
    # The column is named now: its chance-level hits count (the built-in words name
    # pii.hk_phone too, the policy's words only the label they are given for).
    assert 1400 < body["labels"]["pii.cn_phone"]["count"] < 1720
    assert "pii.bank_card" not in body["labels"]
    assert "sensors-again.csv" not in parks.inbox_files("sz-lab")
    assert parks.events_of(body["transfer_id"]) == ["blocked"]
