"""THREAT_MODEL.md names the test behind each mitigation: every one must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "THREAT_MODEL.md").read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) > 50
    missing = []
    for path, name in references:
        source = ROOT / path
        pattern = re.compile(rf"^(async )?def {name}\(", re.MULTILINE)
        if not source.is_file() or not pattern.search(source.read_text(encoding="utf-8")):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_finding_of_issue_11_has_a_row_with_tests() -> None:
    text = (ROOT / "THREAT_MODEL.md").read_text(encoding="utf-8")
    for finding in range(1, 10):
        rows = [line for line in text.splitlines() if line.startswith(f"| F{finding} |")]
        assert rows, f"F{finding} has no row"
        assert all(REFERENCE.search(row) for row in rows), f"F{finding} names no test"
