"""requirements.lock and requirements-dev.lock: installs that are the same everywhere (issue 16).

The locks are made by ``make lock`` (pip-compile --generate-hashes from pyproject.toml)
and installed with ``pip install --require-hashes`` by the Makefile (the dev lock) and
by deploy/Dockerfile (the runtime lock). These tests fail when pyproject.toml changed
without ``make lock``: every declared dependency must be pinned, with hashes, and
nothing may be pinned that pyproject.toml does not bring in.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.deploy.tools import DEPLOY, REPO

LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
#: How pip-compile's annotation names the project itself as the reason for a pin.
PROJECT_ORIGIN = "hksz-gateway (pyproject.toml)"
#: The annotation of a pin the dev lock takes over from the runtime lock (make lock's -c).
CONSTRAINT_ORIGIN = "-c requirements.lock"
#: One pin: ``name==version \\`` then its ``--hash=sha256:`` lines.
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\]+)\s*\\?")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\s*\\?")


@dataclass
class Pin:
    """A locked requirement: its version, its files' hashes and why it is there."""

    version: str
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[NormalizedName, Pin]:
    """The pins of a pip-compile lock; anything else than a hashed ``==`` pin fails.

    Args:
        text: the lock file's content.

    Returns:
        The pins by canonical name.
    """
    pins: dict[NormalizedName, Pin] = {}
    current: Pin | None = None
    in_via = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comment = line.lstrip("#").strip()
            if current is not None and comment.startswith("via"):
                reason = comment.removeprefix("via").strip()
                in_via = not reason  # "# via" alone: the reasons follow, one a line
                if reason:
                    current.via.add(reason)
            elif current is not None and in_via and raw.startswith("    #   "):
                current.via.add(comment)
            else:
                in_via = False
            continue
        if HASH.fullmatch(line):
            assert current is not None, f"line {number}: a hash without a pin"
            current.hashes.append(line.split("=", 1)[1].rstrip(" \\"))
            continue
        match = PIN.fullmatch(line)
        assert match is not None, f"line {number}: not a `name==version` pin: {line!r}"
        current = Pin(match["version"])
        in_via = False
        name = canonicalize_name(match["name"])
        assert name not in pins, f"line {number}: {name} pinned twice"
        pins[name] = current
    return pins


def declared(extra: str | None = None) -> dict[NormalizedName, Requirement]:
    """pyproject.toml's dependencies, plus those of ``extra`` when given."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    if extra is not None:
        lines += project["optional-dependencies"][extra]
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in requirements}


LOCKS = {"runtime": (LOCK, None), "dev": (DEV_LOCK, "dev")}


@pytest.mark.parametrize("which", sorted(LOCKS))
def test_every_pin_has_hashes(which: str) -> None:
    path, _ = LOCKS[which]
    pins = parse_lock(path.read_text(encoding="utf-8"))
    assert pins
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert not unhashed, f"{path.name}: pinned without --hash: {unhashed}"


@pytest.mark.parametrize("which", sorted(LOCKS))
def test_the_lock_pins_exactly_what_pyproject_declares(which: str) -> None:
    path, extra = LOCKS[which]
    pins = parse_lock(path.read_text(encoding="utf-8"))
    wanted = declared(extra)
    missing = sorted(set(wanted) - set(pins))
    assert not missing, f"{path.name} lacks {missing}: run `make lock` and commit the locks"
    for name, requirement in wanted.items():
        assert Version(pins[name].version) in requirement.specifier, (
            f"{path.name}: {name}=={pins[name].version} is outside pyproject.toml's "
            f"{requirement}: run `make lock`"
        )
    # Nothing else is there for its own sake: a direct pin is a declared dependency, and
    # every other pin is the dependency of a pin in the same lock.
    direct = {name for name, pin in pins.items() if PROJECT_ORIGIN in pin.via}
    assert direct == set(wanted), f"{path.name}: run `make lock` ({direct ^ set(wanted)})"
    for name, pin in pins.items():
        reasons = pin.via - {PROJECT_ORIGIN, CONSTRAINT_ORIGIN}
        assert reasons or PROJECT_ORIGIN in pin.via, f"{path.name}: nothing needs {name}"
        strangers = {r for r in reasons if canonicalize_name(r) not in pins}
        assert not strangers, f"{path.name}: {name} is there for {strangers}, not locked"


def test_the_tests_run_the_versions_the_image_ships() -> None:
    runtime = parse_lock(LOCK.read_text(encoding="utf-8"))
    dev = parse_lock(DEV_LOCK.read_text(encoding="utf-8"))
    differ = {
        name: (pin.version, dev[name].version if name in dev else None)
        for name, pin in runtime.items()
        if name not in dev or dev[name].version != pin.version
    }
    assert not differ, f"the dev lock moved runtime pins: {differ}; run `make lock`"


def test_the_locks_name_no_index_of_this_machine() -> None:
    # parse_lock admits no option line; nor may the header carry this machine's pip
    # settings (find-links, a file:// index), which would send every install there.
    for path in (LOCK, DEV_LOCK):
        text = path.read_text(encoding="utf-8")
        assert "file://" not in text, path.name
        assert "/opt/" not in text, path.name


def test_make_installs_the_dev_lock_with_hashes() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    stamp = re.search(r"^\$\(STAMP\): (.*)$", makefile, re.MULTILINE)
    assert stamp is not None
    # The environment is rebuilt when anything it is made from changes.
    prerequisites = set(stamp.group(1).split())
    sources = {"gateway/classify/_native.c", "gateway/classify/formats/tables/_rows.c"}
    assert {"pyproject.toml", "$(LOCK)", "$(DEV_LOCK)", *sources} <= prerequisites
    assert re.search(r"^LOCK\s*:= requirements\.lock$", makefile, re.MULTILINE)
    assert re.search(r"^DEV_LOCK\s*:= requirements-dev\.lock$", makefile, re.MULTILINE)
    assert "pip install --quiet --require-hashes -r $(DEV_LOCK)" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
    assert re.search(r"^lock: ", makefile, re.MULTILINE)


def test_the_image_installs_the_runtime_lock_with_hashes() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY requirements.lock ./" in dockerfile
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile
