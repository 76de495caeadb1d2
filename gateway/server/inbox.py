"""Delivering verified plaintext into a local inbox (``file://`` destinations), crash-safe.

A consumer of the inbox, or a backup crawler running as the gateway's user,
would take a half-written file for the data. So plaintext has no name in
the inbox's tree until it is complete, synced and recorded, whatever
moment the process dies at (issue 11, finding 5):

- A delivery is an unnamed temporary file in the inbox (``open(2)`` with
  ``O_TMPFILE``). It has no directory entry: after a crash or ``SIGKILL``
  nothing is left (the kernel frees the inode; after a power loss, journal
  recovery does). The commit gives it its name with ``linkat(2)`` through
  ``/proc/self/fd/N`` (``AT_SYMLINK_FOLLOW``), which works without
  privileges; ``AT_EMPTY_PATH`` would need ``CAP_DAC_READ_SEARCH``.
- Where the inbox's file system has no ``O_TMPFILE`` (NFS, many FUSE file
  systems, kernels before 3.11), ``/proc`` is not mounted, or the ingress
  setting ``unnamed_temp_files`` is off, the file is written as
  ``<id>.part`` in a hidden sibling of the inbox,
  ``<parent>/.<inbox>.staging/`` (mode 0700): outside the tree consumers
  read, yet on the inbox's file system unless the inbox itself is a mount
  point (then linking fails with ``EXDEV``, a ``503``, and nothing is
  delivered). A crash leaves that part file there: :func:`sweep_at_start`
  deletes every one at start-up and :func:`sweep_periodically` those not
  written to for the ingress ``total_timeout`` while the gateway runs.
- Part files of versions before this module (``<inbox>/.incoming/<id>.part``)
  are swept the same way.

Either way the name appears through ``link``, which never replaces an
existing name (``EEXIST``): the consumer may not have read that file yet.
Each delivered file carries the id of the transfer that delivered it in the
extended attribute ``user.hksz.transfer_id`` (where the file system keeps
user attributes), so a refusal can name the earlier transfer, and a sender
who names it (``X-Gateway-Replace``) replaces that file on purpose: linked
under a hidden name, then renamed over it, atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from gateway.errors import Conflict
from gateway.server.forward import Forwarded
from gateway.server.transfer import TRANSFER_ID

log = structlog.get_logger("gateway.ingress")

#: The extended attributes naming the transfer that delivered an inbox file and
#: its sender: only the same sender may replace it, naming that transfer.
DELIVERED_BY_XATTR = "user.hksz.transfer_id"
SENDER_XATTR = "user.hksz.sender"
#: Suffix of the hidden name a replacement is linked under before its rename.
REPLACING_SUFFIX = ".replacing"
#: Suffix of a staged (fallback) or legacy part file; the stem is the transfer id.
PART_SUFFIX = ".part"
#: Where versions before unnamed temporary files wrote part files, inside the
#: inbox (so a crash left plaintext in the consumer's tree); swept, never written.
LEGACY_INCOMING_DIR = ".incoming"
#: Suffix of the fallback staging directory beside the inbox (``.<inbox>.staging``).
STAGING_SUFFIX = ".staging"
#: Plaintext buffered per delivery before a write(2), as it always was: two
#: 512 KiB ingress batches (egress ``OFFLOAD_BATCH``) per system call.
WRITE_BUFFER_BYTES = 1024 * 1024
#: ``open(O_TMPFILE)`` fails with these where it is not available: EOPNOTSUPP
#: from a file system without it, EISDIR from a kernel before 3.11 (which
#: reads the flag as O_DIRECTORY), EINVAL from some FUSE and network file systems.
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
#: Names every descriptor of this process; linkat(2) follows it to an unnamed file.
_PROC_FD = Path("/proc/self/fd")


def inbox_path(url: str) -> Path:
    """The directory a ``file://`` destination names."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ValueError(f"not a local file:// URL: {url}")
    return Path(parts.path)


def staging_dir(inbox: Path) -> Path:
    """The fallback staging directory of an inbox: its hidden sibling ``.<name>.staging``."""
    return inbox.parent / f".{inbox.name}{STAGING_SUFFIX}"


def file_inboxes(deliver: Mapping[str, str]) -> list[Path]:
    """The directories of the ``file://`` destinations among an ingress's routes."""
    return [inbox_path(url) for url in deliver.values() if url.startswith("file://")]


class FileDrop:
    """One delivery into an inbox: write, :meth:`close_writing`, :meth:`sync` (fsync), then
    :meth:`place` (link).

    Until :meth:`place`, the plaintext has no name in the inbox: it is an
    unnamed temporary file there, or (fallback) a part file in the staging
    directory beside it. Blocking; call from a worker thread.

    Args:
        directory: the inbox (created if missing).
        name: the final file name (a single path segment).
        transfer_id: names the staged part file in the fallback, so
            concurrent deliveries never collide.
        unnamed: use an unnamed temporary file where the file system
            allows it; False always stages.

    Raises:
        FileExistsError: a part file of this transfer id is staged already.
        OSError: the inbox or the staging directory cannot be written.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        transfer_id: str,
        *,
        unnamed: bool = True,
        replaces: str | None = None,
        sender: str = "",
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.final = directory / name
        self.transfer_id = transfer_id
        #: The transfer whose file of this name this delivery may replace.
        self.replaces = replaces
        self.sender = sender
        #: The part file's path in the fallback; None for an unnamed file.
        self.staged: Path | None = None
        fd = _open_unnamed(directory) if unnamed else None
        if fd is None:
            staging = staging_dir(directory)
            staging.mkdir(mode=0o700, exist_ok=True)
            self.staged = staging / f"{transfer_id}{PART_SUFFIX}"
            fd = os.open(self.staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        # Where the file system keeps no user attributes, the name stays unattributed.
        with contextlib.suppress(OSError):
            os.setxattr(fd, DELIVERED_BY_XATTR, transfer_id.encode("ascii"))
            os.setxattr(fd, SENDER_XATTR, sender.encode("utf-8"))
        # Open until placed or discarded: an unnamed file lives only as long as this.
        self._file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER_BYTES)
        self.bytes = 0
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """Append verified plaintext."""
        self._file.write(data)
        self._digest.update(data)
        self.bytes += len(data)

    def close_writing(self) -> Forwarded:
        """Flush what was written: its size and SHA-256 (the file stays open, unnamed)."""
        self._file.flush()
        return Forwarded(201, self.bytes, self._digest.hexdigest())

    def sync(self) -> None:
        """fsync the data; nothing is visible in the inbox yet."""
        os.fsync(self._file.fileno())

    def place(self) -> bool:
        """Give the sealed file its name, never over an existing one, then fsync the inbox.

        ``rename(2)`` would silently replace an unconsumed file of the same
        name; ``link(2)`` fails with ``EEXIST`` instead (atomic, so two
        deliveries racing for one name cannot both win). The descriptors and
        a staged part name are released whatever happens.

        Returns:
            whether the new name is durable (False: linked, but the directory
            fsync failed).

        With ``replaces``, the name may be taken by that transfer's file (or
        be free): the file is linked under a hidden name and renamed over it.

        Raises:
            FileExistsError: the inbox holds that name already (delivered by
                another transfer than ``replaces``); nothing changed.
            OSError: the link failed (e.g. ``EXDEV``: the staging directory is
                on another file system); nothing changed.
        """
        if self.staged is not None:
            source = str(self.staged)
        else:
            source = f"{_PROC_FD}/{self._file.fileno()}"
        try:
            directory = os.open(self.final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                # A dir_fd makes CPython call linkat(2), which honours
                # AT_SYMLINK_FOLLOW; plain link(2) would link the /proc
                # symlink itself (EXDEV).
                if self.replaces is None:
                    os.link(source, self.final.name, dst_dir_fd=directory, follow_symlinks=True)
                else:
                    self._replace(source, directory)
                try:
                    os.fsync(directory)
                except OSError:
                    return False
                return True
            finally:
                os.close(directory)
        finally:
            self.discard()

    def _replace(self, source: str, directory: int) -> None:
        """Put the file in place of the one ``replaces`` delivered (or of none)."""
        hidden = f".{self.transfer_id}{REPLACING_SUFFIX}"
        os.link(source, hidden, dst_dir_fd=directory, follow_symlinks=True)
        try:
            if os.path.lexists(self.final) and not may_replace(
                self.final, self.replaces, self.sender
            ):
                raise FileExistsError(errno.EEXIST, "delivered by another transfer", self.final)
            os.rename(hidden, self.final.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(hidden, dir_fd=directory)
            raise

    def discard(self) -> None:
        """Close the file and remove a staged part name; never raises.

        An unnamed file that was not placed is freed by the kernel here; a
        placed one keeps its name in the inbox.
        """
        with contextlib.suppress(OSError):
            self._file.close()
        if self.staged is not None:
            with contextlib.suppress(OSError):
                self.staged.unlink()
            self.staged = None


def _open_unnamed(directory: Path) -> int | None:
    """An unnamed, linkable file in ``directory``, or None where that is not available.

    Without ``O_EXCL`` the file may be linked later (``O_TMPFILE | O_EXCL``
    forbids it). Mode 0640 as a delivered file has always had.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not _PROC_FD.is_dir():
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, 0o640)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return None
        raise


def delivered_by(path: Path) -> str | None:
    """The transfer that delivered an inbox file, where its attribute says so."""
    try:
        value = os.getxattr(path, DELIVERED_BY_XATTR, follow_symlinks=False)
    except OSError:
        return None
    text = value.decode("ascii", "replace")
    return text if TRANSFER_ID.fullmatch(text) else None


def delivered_for(path: Path) -> str | None:
    """The sender whose transfer delivered an inbox file, where its attribute says so."""
    try:
        return os.getxattr(path, SENDER_XATTR, follow_symlinks=False).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def may_replace(path: Path, replaces: str | None, sender: str) -> bool:
    """Whether ``sender`` naming transfer ``replaces`` may replace the file at ``path``:
    that transfer delivered it, for that same sender."""
    return (
        replaces is not None
        and delivered_by(path) == replaces
        and delivered_for(path) == sender
        and bool(sender)
    )


def open_drop(
    directory: Path,
    name: str,
    transfer_id: str,
    *,
    unnamed: bool,
    replaces: str | None = None,
    sender: str = "",
) -> FileDrop:
    """A :class:`FileDrop`; a staged part file of the same transfer id is a conflict.

    Raises:
        Conflict: that transfer is being delivered already (fallback only;
            the ingress refuses a duplicate transfer id before this).
        OSError: the inbox or its staging directory cannot be written.
    """
    try:
        return FileDrop(
            directory, name, transfer_id, unnamed=unnamed, replaces=replaces, sender=sender
        )
    except FileExistsError:
        raise Conflict(f"transfer {transfer_id!r} is being delivered already") from None


def _part_files(inbox: Path) -> Iterator[Path]:
    """Part files of an inbox: staged beside it, left inside it by older versions,
    and replacements a crash left under their hidden name (linked, not renamed)."""
    for folder in (staging_dir(inbox), inbox / LEGACY_INCOMING_DIR):
        yield from folder.glob(f"*{PART_SUFFIX}")
    yield from inbox.glob(f".t_*{REPLACING_SUFFIX}")


def sweep_at_start(inboxes: Collection[Path]) -> int:
    """Delete every part file of the inboxes, and the emptied legacy directories; return count.

    A part file is plaintext of a delivery that never finished (the
    process crashed or was killed), and no twin will complete it: its
    egress recorded that transfer failed. Call at start-up, before the
    listener accepts envelopes.
    """
    removed = 0
    for inbox in inboxes:
        for path in _part_files(inbox):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        with contextlib.suppress(OSError):  # not empty, or never there
            (inbox / LEGACY_INCOMING_DIR).rmdir()
    return removed


def sweep_stale(inboxes: Collection[Path], idle_for: float, keep: Collection[str] = ()) -> int:
    """Delete part files not written to for ``idle_for`` seconds; return how many.

    This process's deliveries in progress are spared (``keep``). One of
    another process sharing the inbox writes its buffer
    (:data:`WRITE_BUFFER_BYTES`) out far more often at any useful rate
    (1 MiB per hour is 290 bytes/s), so a part file idle for the ingress
    ``total_timeout`` is a leftover of a crash that no restart swept.

    Args:
        inboxes: the ``file://`` inboxes.
        idle_for: seconds since the last write (mtime) before a file goes.
        keep: transfer ids of this process's deliveries in progress,
            never deleted whatever their age.
    """
    cutoff = time.time() - idle_for
    removed = 0
    for inbox in inboxes:
        for path in _part_files(inbox):
            if path.name.removesuffix(PART_SUFFIX) in keep:
                continue
            with contextlib.suppress(OSError):  # gone meanwhile: finished or swept
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


async def sweep_periodically(
    inboxes: Collection[Path], every: float, idle_for: float, active: Collection[str]
) -> None:
    """Run :func:`sweep_stale` every ``every`` seconds until cancelled.

    Args:
        inboxes: the ``file://`` inboxes.
        every: seconds between sweeps (ingress ``partial_sweep_interval``).
        idle_for: age past which a part file is a leftover (ingress ``total_timeout``).
        active: the live set of transfer ids in progress (read on the event loop).
    """
    while True:
        await asyncio.sleep(every)
        keep = frozenset(active)  # a snapshot: the set changes on the loop meanwhile
        try:
            # Unlinking a large file frees its extents in the calling thread.
            removed = await asyncio.to_thread(sweep_stale, inboxes, idle_for, keep)
        except OSError as exc:
            log.error("partial_deliveries_sweep_failed", error=exc.strerror)
            continue
        if removed:
            log.warning("partial_deliveries_swept", files=removed)
