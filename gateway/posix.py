"""Small helpers over POSIX file descriptors, shared by every layer of the gateway."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less, to a pipe or a full disk).

    Raises:
        OSError: the write failed (what was written before stays written).
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
