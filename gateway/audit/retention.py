"""Retention: delete closed segments only once every record in them has expired.

PIPL Arts. 55–56 require processing records to be kept at least 3 years, so
the retention can be configured longer but never shorter. Pruning removes
the oldest closed segments whose newest record is older than the retention;
the last (open) segment is never touched, nor is any record a signed
checkpoint does not cover yet or whose index entries are not yet synced.

A pruned segment leaves its leaf hashes in the index and a line in
``pruned.jsonl`` (first index, count, SHA-256 of the file, newest record
time). The tree still spans it: ``gateway audit verify`` uses the stored leaf
hashes in its place, which the signed checkpoints authenticate, so every
later record stays verifiable and provable. Before deleting, pruning checks
that the stored leaf hashes match the segment's records.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.audit.errors import AuditIntegrityError
from gateway.audit.merkle import leaf_hash
from gateway.audit.records import RecordError, format_time, parse_canonical
from gateway.audit.storage import (
    PRUNED_FILE,
    LogReader,
    fsync_directory,
    iter_lines,
    latest_checkpoint,
)
from gateway.errors import ConfigError

#: PIPL Art. 56: at least 3 years; 1,096 days includes a leap day.
MIN_RETENTION = timedelta(days=1096)
DEFAULT_RETENTION = MIN_RETENTION


@dataclass(frozen=True, slots=True)
class PrunedSegment:
    """A segment removed after its retention expired.

    Attributes:
        first: index of its first record.
        count: number of records.
        sha256: hex SHA-256 of the deleted file.
        newest: time of its newest record.
    """

    first: int
    count: int
    sha256: str
    newest: str


def _inspect(reader: LogReader, first: int, path: Path) -> PrunedSegment:
    """Check a segment against the index and summarise it (before deletion)."""
    digest = hashlib.sha256()
    newest = ""
    count = 0
    for line in iter_lines(path):
        index = first + count
        if not line.complete:
            raise AuditIntegrityError(f"{path}: record {index} is cut short; not pruning")
        try:
            record = parse_canonical(line.data)
        except RecordError as exc:
            raise AuditIntegrityError(f"{path}: record {index}: {exc}; not pruning") from exc
        if reader.stored_hash(0, index) != leaf_hash(line.data):
            raise AuditIntegrityError(
                f"{path}: record {index} differs from the index that would stand in for it; "
                "run `gateway audit verify`; not pruning"
            )
        stamp = record.get("time")
        if isinstance(stamp, str) and stamp > newest:
            newest = stamp
        digest.update(line.data + b"\n")
        count += 1
    return PrunedSegment(first, count, digest.hexdigest(), newest)


def prune(
    directory: str | os.PathLike[str],
    retention: timedelta = DEFAULT_RETENTION,
    *,
    now: datetime | None = None,
) -> list[PrunedSegment]:
    """Delete the oldest closed segments whose every record is older than ``retention``.

    Returns:
        the segments deleted, oldest first.

    Raises:
        ConfigError: ``retention`` is shorter than :data:`MIN_RETENTION`.
        AuditIntegrityError: a candidate segment does not match the index.
    """
    if retention < MIN_RETENTION:
        raise ConfigError(
            f"retention {retention.days} days is shorter than the {MIN_RETENTION.days} days "
            "PIPL Art. 56 requires"
        )
    reader = LogReader(directory)
    moment = now if now is not None else datetime.now(UTC)
    cutoff = format_time(moment - retention)
    latest, _ = latest_checkpoint(reader.directory)
    # Pruned records live on only as index entries: those must be durable, and signed.
    covered = min(latest.checkpoint().size, latest.indexed) if latest is not None else 0
    pruned: list[PrunedSegment] = []
    segments = reader.segments
    for (first, path), (next_first, _) in itertools.pairwise(segments):
        if next_first > covered:
            break  # not all of it is under a signed checkpoint yet
        summary = _inspect(reader, first, path)
        if summary.count != next_first - first or not summary.newest or summary.newest >= cutoff:
            break  # the oldest segment still in retention: everything after is newer
        line = {
            "first": summary.first,
            "count": summary.count,
            "sha256": summary.sha256,
            "newest": summary.newest,
            "pruned_at": format_time(moment),
            "retention_days": retention.days,
        }
        manifest = reader.directory / PRUNED_FILE
        fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        fsync_directory(path.parent)
        pruned.append(summary)
    return pruned
