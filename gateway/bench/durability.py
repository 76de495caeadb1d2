"""A 1 KB transfer's durability points, replayed on one disk (issue 17).

An allowed transfer waits, one after the other, for the durability points
the SPEC's order requires (SPEC §7, docs/running.md): the egress's verdict
record (before any byte leaves); at the twin, the file's data and its
delivery record, synced at once; the twin's inbox directory (the file's
name); the egress's delivery record (before the sender hears ``201``).
:func:`durability_path` replays that sequence as the gateway does it (write,
fdatasync, rename, directory fsync) in a directory of the caller's choice,
so the part of the 1 KB latency target that the disk alone takes is
measured, not assumed: ``gateway bench stages --dir`` on an operator's own
audit volume, and ``gateway bench proxy`` next to the gateways it measures.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The small transfer's size (SPEC §9: 1 KB), as ``gateway bench proxy`` sends it.
SMALL_BYTES: Final = 1024
#: Replays of a 1 KB transfer's durability path (p99 needs a few hundred).
DEFAULT_DURABILITY_SAMPLES: Final = 300
#: Bytes of one audit record as appended (a transfer record's canonical JSON
#: and its newline are 500-700 bytes).
RECORD_BYTES: Final = 640


@dataclass(frozen=True, slots=True)
class Durability:
    """A 1 KB transfer's durability path replayed on one disk, in milliseconds."""

    directory: str
    samples: int
    #: One record appended and fdatasynced, as each audit log does.
    record_p50_ms: float
    record_p99_ms: float
    #: The whole path, its points one after the other (the twin's two at once).
    path_p50_ms: float
    path_p99_ms: float


def _append(fd: int, record: bytes, synced: list[float]) -> None:
    """Append ``record`` and fdatasync it (an audit log's group commit of one record)."""
    started = time.perf_counter()
    os.write(fd, record)
    os.fdatasync(fd)
    synced.append(time.perf_counter() - started)


def durability_path(directory: Path, samples: int = DEFAULT_DURABILITY_SAMPLES) -> Durability:
    """Replay a 1 KB allowed transfer's durability points ``samples`` times in ``directory``.

    In order, as the gateway waits for them: the egress's verdict record; the
    twin's file (written, then fsynced in a worker thread) and its delivery
    record, at once; the file's rename into the inbox and the inbox's fsync;
    the egress's delivery record. Two audit logs (the egress's and the twin's)
    and an inbox, in a temporary directory under ``directory``.

    Raises:
        OSError: ``directory`` is missing or cannot be written.
    """
    record = b"r" * (RECORD_BYTES - 1) + b"\n"
    body = os.urandom(SMALL_BYTES)
    synced: list[float] = []
    paths: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="gateway-bench-durability-", dir=directory) as tmp,
        ThreadPoolExecutor(1) as twin_thread,
    ):
        root = Path(tmp)
        inbox = root / "inbox"
        inbox.mkdir()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        egress_log = os.open(root / "egress.log", flags, 0o600)
        twin_log = os.open(root / "twin.log", flags, 0o600)
        inbox_fd = os.open(inbox, os.O_RDONLY)
        try:
            for i in range(samples):
                started = time.perf_counter()
                _append(egress_log, record, synced)  # the verdict, before any byte leaves
                part = inbox / f".part-{i}"
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, body)
                    data = twin_thread.submit(os.fsync, fd)
                    _append(twin_log, record, synced)  # delivered, while the data syncs
                    data.result()
                finally:
                    os.close(fd)
                os.rename(part, inbox / f"file-{i}")
                os.fsync(inbox_fd)  # the file's name
                _append(egress_log, record, synced)  # delivered, before the sender hears 201
                paths.append(time.perf_counter() - started)
        finally:
            for fd in (egress_log, twin_log, inbox_fd):
                os.close(fd)
    return Durability(
        str(directory),
        samples,
        _ms(synced, 50),
        _ms(synced, 99),
        _ms(paths, 50),
        _ms(paths, 99),
    )


def _ms(seconds: list[float], percentile: int) -> float:
    if len(seconds) == 1:
        return round(seconds[0] * 1000, 3)
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return round(cuts[percentile - 1] * 1000, 3)
