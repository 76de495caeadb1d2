"""Fixtures of the audit tests: a signing key and small record factories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.audit.keys import create_signing_key
from gateway.audit.note import NoteSigner

ORIGIN = "gw.test/sz-egress"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    create_signing_key(path)
    return path


@pytest.fixture
def signer(key_file: Path) -> NoteSigner:
    from gateway.audit.keys import load_signing_key

    return NoteSigner(ORIGIN, load_signing_key(key_file))


def record(i: int, **extra: Any) -> dict[str, Any]:
    """A small transfer-like record with a unique transfer id."""
    return {
        "kind": "transfer",
        "time": f"2026-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}.000000Z",
        "transfer_id": f"t-{i}",
        "event": "allowed",
        "decision": "allow",
        "sender": f"lab-{i % 3}",
        "route": "sz-to-hk",
        **extra,
    }
