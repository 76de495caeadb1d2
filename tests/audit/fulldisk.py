"""A real full disk for tests: a small tmpfs mounted in a temporary directory.

The audit log must heal by itself once a full disk gets space back (issue 11),
so its tests need the kernel to answer ``ENOSPC`` for real, partial writes
included. The tests run as root in CI and locally, where ``mount -t tmpfs``
works; without that permission they fail with a message saying so rather than
skip, so CI can never pass with the recovery untested.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: mount(8) and umount(8) return at once; a hang means something is wrong.
MOUNT_TIMEOUT_SECONDS = 30
#: The filler grows in 64 KiB writes: the last one is cut short at the last free page.
FILL_CHUNK = 64 * 1024


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes at ``mountpoint`` (created); unmount it on exit.

    Raises:
        pytest.fail.Exception: the mount is not permitted here (not root).
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=MOUNT_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs at {mountpoint} ({result.stderr.strip()}): the full-disk "
            "tests need root, as in CI (`.ci/run`) and the development container"
        )
    try:
        yield mountpoint
    finally:
        done = subprocess.run(
            ["umount", str(mountpoint)], capture_output=True, timeout=MOUNT_TIMEOUT_SECONDS
        )
        if done.returncode != 0:  # a file still open after a failed test: detach it anyway
            subprocess.run(["umount", "--lazy", str(mountpoint)], timeout=MOUNT_TIMEOUT_SECONDS)


def fill_up(directory: Path) -> Path:
    """Write a filler file in ``directory`` until the file system is full; return its path.

    Pages other files already hold keep their slack, so a few small writes
    may still fit after this; the next one that needs a page fails.
    """
    path = directory / "filler"
    chunk = bytes(FILL_CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return path
    finally:
        os.close(fd)
