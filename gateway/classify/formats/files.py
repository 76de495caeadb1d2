"""Random access to a local regular file, for ``gateway scan`` and ``gateway policy test``.

The proxy reads footer-indexed formats through a decrypting view of its
encrypted spool (:mod:`gateway.server.spool_view`); the command-line tools read
a file the user named, in place.
"""

from __future__ import annotations

import io
import os
import stat
from typing import BinaryIO

from gateway.classify.formats.base import Handoff, Unscannable


class FileAccess:
    """A random-access view (``RandomAccess``) of a regular file, by positioned reads.

    ``os.pread`` leaves the descriptor's offset alone, so the scan's
    sequential reads and a reader's random ones do not disturb each other.
    The file's size is taken when the view is asked (at the end of the scan):
    a file that changed while it was scanned no longer matches the bytes fed,
    and the decoder refuses to read it.

    Args:
        fd: an open descriptor of a regular file (the caller closes it).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def size(self) -> int:
        """Bytes in the file now."""
        try:
            return os.fstat(self._fd).st_size
        except OSError:
            raise Unscannable("file: cannot be read") from None

    def handoff(self) -> Handoff:
        """A reader process reads the file itself (a duplicate of the descriptor)."""
        return Handoff(self._fd, f"{__name__}:open_handed", b"")

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at the end of the file.

        Raises:
            Unscannable: a negative offset or length, or a read error.
        """
        if offset < 0 or length < 0:
            raise Unscannable("file: negative offset or length")
        parts: list[bytes] = []
        try:
            while length:
                part = os.pread(self._fd, length, offset)
                if not part:
                    break
                parts.append(part)
                offset += len(part)
                length -= len(part)
        except OSError:
            raise Unscannable("file: cannot be read") from None
        return b"".join(parts)


def open_handed(fd: int, _params: bytes) -> FileAccess:
    """A reader process's view of a file handed over (:meth:`FileAccess.handoff`); the
    descriptor is the process's until it exits."""
    return FileAccess(fd)


def file_access(stream: BinaryIO) -> FileAccess | None:
    """A :class:`FileAccess` on ``stream`` when it is a regular file (a pipe is not)."""
    try:
        fd = stream.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return FileAccess(fd) if regular else None
