"""The policy archive: versions kept once, read back only if they hash to their name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.policy import load_policy
from gateway.policy.archive import archive_policy, read_version
from tests.policy.conftest import WritePolicy


def test_a_version_is_kept_once_and_read_back_verified(
    write_policy: WritePolicy, tmp_path: Path
) -> None:
    policy = load_policy(
        write_policy({"p.yaml": "rules:\n  - {id: a, action: allow, reason: fine}\n"})
    )
    store = tmp_path / "archive"
    path = archive_policy(store, policy.version, policy.content)
    assert path.name == f"{policy.version}.json"
    assert archive_policy(store, policy.version, policy.content) == path  # once
    assert read_version(store, policy.version[:8]) == dict(policy.content)
    with pytest.raises(ValueError, match="does not hash"):
        archive_policy(store, "0" * 64, policy.content)
    # An edited archive is caught, as an edited log is.
    text = json.loads(path.read_text())
    text["rules"][0]["action"] = "block"
    path.write_text(json.dumps(text))
    with pytest.raises(GatewayError, match="altered"):
        read_version(store, policy.version)
    for bad in ("abc", "z" * 10, "1234567890"):
        with pytest.raises(GatewayError):
            read_version(store, bad)
