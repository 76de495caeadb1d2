"""The access log, the request metrics and the outcome metric (issue 16), on real parks.

Every request gets one ``access`` line with the route template, never the
raw path: a file name, or anything a client puts in a URL, may be the very
value a transfer is blocked for.
"""

from __future__ import annotations

import json
import re
from typing import Any

from structlog.testing import capture_logs

from tests.server.conftest import OFFICER_TOKEN, RESEARCH_TOKEN, TWIN_NAME, Parks
from tests.server.test_egress import CLEAN, RESIDENT_ID, personal_csv

SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}
OFFICER = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
TRANSFER = "/v1/transfers/{route}/{path}"


def sample(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text ``text`` (0 when the series is absent)."""
    want = {k: v for k, v in labels.items()}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if got == want:
            return float(match.group(3))
    return 0.0


async def metrics(parks: Parks, url: str) -> str:
    async with parks.session.get(f"{url}/metrics") as response:
        return await response.text()


def access_lines(logs: list[dict[str, Any]], listener: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == "access" and e["listener"] == listener]


async def test_one_access_line_per_request_with_templates_never_raw_paths(parks: Parks) -> None:
    secret_name = f"scan_{RESIDENT_ID.decode()}.csv"
    with capture_logs() as logs:
        status, allowed = await parks.put("sz-lab", "clean.csv", CLEAN)
        assert status == 201
        status, blocked = await parks.put("sz-lab", secret_name, personal_csv())
        assert status == 403
        tid = allowed["transfer_id"]
        async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=SENDER) as r:
            assert r.status == 200
            status_bytes = len(await r.read())
        # Junk (here an identifier) where a transfer id goes, and a path no route has.
        junk = f"{parks.egress}/v1/transfers/{RESIDENT_ID.decode()}"
        async with parks.session.get(junk, headers=SENDER) as r:
            assert r.status == 400
        async with parks.session.get(f"{parks.egress}/nowhere/{RESIDENT_ID.decode()}") as r:
            assert r.status == 404
        async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}") as r:
            assert r.status == 401
    egress = access_lines(logs, "egress")
    assert [(e["method"], e["handler"], e["path_template"], e["status"]) for e in egress] == [
        ("PUT", "transfer", TRANSFER, 201),
        ("PUT", "transfer", TRANSFER, 403),
        ("GET", "transfer-status", "/v1/transfers/{id}", 200),
        ("GET", "transfer-status", "/v1/transfers/{id}", 400),
        ("GET", "unmatched", "unmatched", 404),
        ("GET", "transfer-status", "/v1/transfers/{id}", 401),
    ]
    put_ok, put_blocked, status_ok, junk_line, unmatched, anonymous = egress
    assert (put_ok["identity"], put_ok["transfer_id"]) == ("hk-research", tid)
    assert put_ok["bytes_in"] == len(CLEAN)
    assert put_ok["bytes_out"] > 0
    assert put_ok["duration_ms"] > 0
    assert put_blocked["transfer_id"] == blocked["transfer_id"]
    assert (status_ok["transfer_id"], status_ok["bytes_out"]) == (tid, status_bytes)
    # A path segment that is not a transfer id is not logged; nobody was identified.
    assert junk_line["transfer_id"] is None
    assert (unmatched["identity"], unmatched["transfer_id"]) == (None, None)
    assert anonymous["identity"] is None
    # The twin's side: its own line per envelope, naming the twin and the transfer.
    ingress = access_lines(logs, "ingress")
    envelopes = [e for e in ingress if e["transfer_id"] == tid]
    assert envelopes
    assert all(e["identity"] == TWIN_NAME for e in envelopes)
    assert {e["handler"] for e in envelopes} <= {"envelope", "payload"}
    # Nothing of the identifier, anywhere in any access line.
    text = json.dumps(egress + ingress)
    assert RESIDENT_ID.decode() not in text
    assert secret_name not in text

    exported = await metrics(parks, parks.egress)
    labels = {"listener": "egress", "handler": "transfer"}
    assert sample(exported, "gateway_http_requests_total", **labels, code="201") == 1
    assert sample(exported, "gateway_http_requests_total", **labels, code="403") == 1
    assert (
        sample(
            exported,
            "gateway_http_requests_total",
            listener="egress",
            handler="unmatched",
            code="404",
        )
        == 1
    )
    assert sample(exported, "gateway_http_request_duration_seconds_count", **labels) == 2


async def test_the_outcome_of_each_transfer_is_counted(parks: Parks) -> None:
    assert (await parks.put("sz-lab", "a.csv", CLEAN))[0] == 201
    assert (await parks.put("sz-lab", "b.csv", personal_csv()))[0] == 403
    status, held = await parks.put("sz-review", "c.csv", CLEAN)
    assert status == 202
    url = f"{parks.egress}/v1/reviews/{held['transfer_id']}/reject"
    async with parks.session.post(url, json={"comment": "not this one"}, headers=OFFICER) as r:
        assert r.status == 200, await r.text()
    exported = await metrics(parks, parks.egress)
    outcome = "gateway_transfer_outcomes_total"
    assert sample(exported, outcome, route="sz-lab", outcome="delivered") == 1
    assert sample(exported, outcome, route="sz-lab", outcome="blocked") == 1
    assert sample(exported, outcome, route="sz-review", outcome="held") == 1
    assert sample(exported, outcome, route="sz-review", outcome="rejected") == 1
    assert sample(exported, outcome, route="sz-review", outcome="delivered") == 0
