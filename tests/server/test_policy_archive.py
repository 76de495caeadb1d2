"""The policy archive (issue 15): the rules behind any decision stay readable."""

from __future__ import annotations

import json

import pytest

from gateway.cli import main
from gateway.policy.archive import archive_dir
from gateway.server.app import reload_policy
from tests.server.conftest import Parks
from tests.server.test_chance_egress import edit_policy


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
