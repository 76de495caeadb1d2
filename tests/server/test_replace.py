"""A name already in the twin's inbox is a 409 naming the earlier transfer, and a
sender who names that transfer replaces the file on purpose (issue 16).

Before, the twin's 409 reached the sender as a 502 "upstream error" and fired
the upstream-error alert, for what is the sender's to resolve.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gateway.server.inbox import DELIVERED_BY_XATTR, REPLACING_SUFFIX, sweep_at_start
from tests.server.conftest import GHOST_TOKEN, RESEARCH_TOKEN, Parks, edit_policy
from tests.server.test_access_log import metrics, sample
from tests.server.test_egress import CLEAN

FIRST = CLEAN[:5000]
SECOND = CLEAN[5000:9000]
THIRD = CLEAN[9000:12000]


async def push(
    parks: Parks, data: bytes, replaces: str | None = None, token: str = RESEARCH_TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if replaces is not None:
        headers["X-Gateway-Replace"] = replaces
    url = f"{parks.egress}/v1/transfers/sz-lab/same.csv"
    async with parks.session.put(url, data=data, headers=headers) as response:
        result = response.status, await response.json(content_type=None)
    await parks.settle()
    return result


async def test_a_taken_name_is_409_naming_the_earlier_transfer_and_can_be_replaced(
    parks: Parks,
) -> None:
    status, first = await push(parks, FIRST)
    assert status == 201, first
    delivered = parks.inbox / "sz-lab" / "same.csv"
    assert os.getxattr(delivered, DELIVERED_BY_XATTR).decode() == first["transfer_id"]

    # The same name again: refused, naming the transfer whose file is there.
    status, refused = await push(parks, SECOND)
    assert status == 409, refused
    assert refused["existing_transfer_id"] == first["transfer_id"]
    assert refused["transfer_id"] != first["transfer_id"]
    assert f"X-Gateway-Replace: {first['transfer_id']}" in refused["detail"]
    assert parks.inbox_files("sz-lab") == {"same.csv": FIRST}
    assert parks.events_of(refused["transfer_id"]) == ["allowed", "failed"]
    exported = await metrics(parks, parks.egress)
    assert sample(exported, "gateway_upstream_errors_total", route="sz-lab", kind="error") == 0
    assert (
        sample(exported, "gateway_transfer_outcomes_total", route="sz-lab", outcome="failed") == 1
    )

    # Naming another transfer than the one that delivered it replaces nothing.
    status, wrong = await push(parks, SECOND, replaces=refused["transfer_id"])
    assert status == 409, wrong
    assert wrong["existing_transfer_id"] == first["transfer_id"]
    assert parks.inbox_files("sz-lab") == {"same.csv": FIRST}

    # Naming it replaces the file, atomically, and the record says so.
    status, replaced = await push(parks, SECOND, replaces=first["transfer_id"])
    assert status == 201, replaced
    assert parks.inbox_files("sz-lab") == {"same.csv": SECOND}
    assert os.getxattr(delivered, DELIVERED_BY_XATTR).decode() == replaced["transfer_id"]
    (record,) = [
        r
        for r in parks.audit_events("sz")
        if r.get("transfer_id") == replaced["transfer_id"] and r.get("event") == "delivered"
    ]
    assert record["detail"] == f"replaces the file transfer {first['transfer_id']} delivered"
    # The replaced transfer's id no longer replaces anything: the file is the new one's.
    status, stale = await push(parks, THIRD, replaces=first["transfer_id"])
    assert (status, stale["existing_transfer_id"]) == (409, replaced["transfer_id"])
    assert not [p for p in (parks.inbox / "sz-lab").iterdir() if p.name.startswith(".")]


async def test_a_replacement_header_that_is_no_transfer_id_is_refused(parks: Parks) -> None:
    status, problem = await push(parks, FIRST, replaces="../etc/passwd")
    assert status == 400, problem
    assert "X-Gateway-Replace" in problem["detail"]
    assert parks.inbox_files("sz-lab") == {}


def test_a_replacement_a_crash_left_under_its_hidden_name_is_swept(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    leftover = inbox / f".t_{'0' * 32}{REPLACING_SUFFIX}"
    leftover.write_bytes(b"plaintext")
    kept = inbox / "data.csv"
    kept.write_bytes(b"delivered")
    assert sweep_at_start([inbox]) == 1
    assert sorted(p.name for p in inbox.iterdir()) == ["data.csv"]


async def test_only_the_same_sender_learns_the_id_and_may_replace(parks: Parks) -> None:
    await edit_policy(
        parks,
        "senders:\n",
        "senders:\n  ghost:\n    team: imaging\n    organisation: hku\n",
    )
    status, first = await push(parks, FIRST)
    assert status == 201, first
    # Another sender of the route: refused, and not told which transfer it was.
    status, other = await push(parks, SECOND, token=GHOST_TOKEN)
    assert status == 409, other
    assert "existing_transfer_id" not in other
    assert first["transfer_id"] not in other["detail"]
    # Knowing the id (say, from its own sender) does not let it replace the file.
    status, other = await push(parks, SECOND, replaces=first["transfer_id"], token=GHOST_TOKEN)
    assert status == 409, other
    assert parks.inbox_files("sz-lab") == {"same.csv": FIRST}
    status, own = await push(parks, SECOND, replaces=first["transfer_id"])
    assert status == 201, own
    assert parks.inbox_files("sz-lab") == {"same.csv": SECOND}
