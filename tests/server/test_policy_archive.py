"""The policy archive (issue 15): the rules behind any decision stay readable."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.cli import main
from gateway.policy.archive import archive_dir
from gateway.server.app import reload_policy
from tests.server.conftest import OFFICER_TOKEN, Parks, edit_policy


def _mine(out: str) -> str:
    """The command's output without the running parks' log lines."""
    return "".join(line for line in out.splitlines(keepends=True) if not line.startswith("20"))


async def test_every_version_in_force_is_archived_and_a_rejected_one_named(
    parks: Parks, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = parks.root / "hk" / "audit"
    store = archive_dir(audit)
    (first,) = [p.stem for p in store.glob("*.json")]
    second = await edit_policy(
        parks, "reason: No personal or sensitive data found.", "reason: Nothing personal found."
    )
    assert sorted(p.stem for p in store.glob("*.json")) == sorted([first, second])
    assert main(["policy", "show", second[:12], "--audit", str(audit)]) == 0
    shown = json.loads(_mine(capsys.readouterr().out))
    assert any(r.get("reason") == "Nothing personal found." for r in shown["rules"])
    assert main(["policy", "diff", first, second, "--audit", str(audit)]) == 1
    out = _mine(capsys.readouterr().out)
    assert '-      "reason": "No personal or sensitive data found.",' in out
    assert '+      "reason": "Nothing personal found.",' in out
    assert main(["policy", "diff", second, second, "--audit", str(audit)]) == 0
    assert main(["policy", "show", "deadbeef", "--audit", str(audit)]) == 2
    assert "not in the archive" in capsys.readouterr().err
    # A policy that does not load: the record names what was rejected and what stayed.
    path = parks.root / "policies" / "policy.yaml"
    path.write_text(path.read_text() + "\nrules: [oops\n")
    assert parks.hk.egress_app is not None
    result = await reload_policy(parks.hk.egress_app)
    assert not result.ok
    (rejected,) = [r for r in parks.audit_events() if r.get("event") == "policy_rejected"]
    assert rejected["policy_version"] == second
    assert len(rejected["rejected_sha256"]) == 64
    assert rejected["rejected_sha256"] not in (first, second)


async def test_policy_status_tells_an_officer_what_is_in_force(
    parks: Parks, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = parks.root / "policies"
    argv = ["policy", "status", str(directory), "--url", parks.egress, "--token", OFFICER_TOKEN]
    assert await asyncio.to_thread(main, argv) == 0
    out = _mine(capsys.readouterr().out)
    assert "(in force)" in out
    # Edited but not loaded yet (the gateway reloads on SIGHUP or a file change):
    # this directory's version is not the one in force.
    path = directory / "policy.yaml"
    path.write_text(path.read_text().replace("Default deny.", "Nothing else passes."))
    assert await asyncio.to_thread(main, argv) == 1
    assert "NOT in force" in _mine(capsys.readouterr().out)
    # Files that do not load: the gateway keeps its version and says so.
    path.write_text(path.read_text() + "\nrules: [oops\n")
    assert parks.hk.egress_app is not None
    assert not (await reload_policy(parks.hk.egress_app)).ok
    assert await asyncio.to_thread(main, argv) == 1
    out = _mine(capsys.readouterr().out)
    assert "REJECTED: the gateway's policy files do not load" in out
    assert "does not load" in out
    # Senders do not see it.
    sender = ["--token", "tok-research-0123456789"]
    assert await asyncio.to_thread(main, [*argv[:-2], *sender]) == 2
