"""Locate Debian's Prometheus binaries (``promtool``, ``prometheus``) for the deploy tests.

Both come from the Debian package ``prometheus``. ``.ci/run`` installs it; when a
developer runs the tests without it, the first test that needs it tries one
``apt-get install`` (serialised across pytest-xdist workers by a file lock) and
otherwise fails with a message saying how to install it. Never a skip: CI
must not pass with the alert rules untested (issue 7).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: Where Debian puts the binaries, in case PATH is trimmed (e.g. under sudo or a venv shell).
DEBIAN_BIN = Path("/usr/bin")
#: apt-get on a cold cache downloads ~30 MB; a generous bound that still ends a hung install.
APT_TIMEOUT_SECONDS = 600
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

_install_attempted = False


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and (DEBIAN_BIN / name).is_file():
        found = str(DEBIAN_BIN / name)
    return found


def _apt_install_once() -> str:
    """Try ``apt-get install -y prometheus`` once per process; return what went wrong, if any."""
    global _install_attempted
    if _install_attempted:
        return "an earlier apt-get install in this run did not provide it"
    _install_attempted = True
    lock_path = Path(tempfile.gettempdir()) / "hksz-gateway-apt-prometheus.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other xdist worker may be installing right now
        if _which("promtool") is not None and _which("prometheus") is not None:
            return ""
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            result = subprocess.run(
                ["apt-get", "install", "-y", "-qq", "prometheus"],
                capture_output=True,
                text=True,
                env=env,
                timeout=APT_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"apt-get could not run: {exc}"
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return f"apt-get install prometheus exited {result.returncode}: {last}"
    return ""


def require_tool(name: str) -> str:
    """The path of ``name`` (``promtool`` or ``prometheus``); install or fail clearly.

    Args:
        name: the binary to find.

    Returns:
        An absolute path to the executable.
    """
    found = _which(name)
    if found is not None:
        return found
    problem = _apt_install_once()
    found = _which(name)
    if found is not None:
        return found
    pytest.fail(
        f"{name} not found on PATH or in {DEBIAN_BIN} ({problem or 'install did not provide it'}); "
        "install Debian's package with: apt-get update && apt-get install -y prometheus",
        pytrace=False,
    )
