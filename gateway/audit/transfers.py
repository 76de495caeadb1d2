"""A persistent transfer-id index: which records belong to a transfer.

``AuditLog.find`` and ``gateway audit prove`` answer "the records of transfer
X" for a transfer logged days ago (a review approved later, a sender's
receipt). Scanning every segment for that costs seconds at a million records,
so the single writer also keeps ``index/transfers.sqlite3``: a B-tree of
``(id hash, record index)`` pairs, one SQLite transaction per group commit.
A lookup is O(log n) page reads; memory is SQLite's bounded page cache, not
the ids.

Why SQLite: it is in the standard library, and its atomic commit gives the
index a consistent "covered up to record N" mark in the same transaction as
the entries, so recovery is "read the mark, re-index from there" with no
custom file format to get wrong. In WAL mode with ``synchronous=NORMAL`` a
commit does not fsync (SQLite syncs only when it checkpoints its WAL, every
~4 MiB of pages), so the index adds no fsync per record: after a power loss
it may lag the segments, never lead them, and is caught up on open.

It is a cache, never evidence: ids are stored only as 64-bit hashes, every
hit is re-checked against the record it names, verification never reads it,
and a missing, corrupt or inconsistent index is rebuilt from the segments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from gateway.audit.errors import AuditIntegrityError

#: The index file, next to the proof index under ``index/``.
TRANSFERS_FILE = "transfers.sqlite3"
#: Bumped when the schema changes; an index of another format is rebuilt.
FORMAT_VERSION = 1
#: Ids are stored as 64-bit BLAKE2b hashes (SQLite's native integer): 8 bytes
#: per entry whatever the id's length. A collision only costs a re-check.
ID_HASH_BYTES = 8
#: SQLite page cache per connection, in KiB (negative = KiB in SQLite's
#: convention): 2 MiB keeps the B-tree's inner pages resident for ~10M entries.
CACHE_KIB = 2048
#: Records indexed per transaction while catching up on open: the same bound
#: as a group commit (gateway.audit.log.MAX_BATCH_RECORDS).
CATCH_UP_BATCH = 4096
#: How long a reader waits for the writer's lock (WAL readers rarely wait at all).
BUSY_TIMEOUT_MS = 5000

#: A top-level ``"transfer_id":"…"`` member of a canonical record. Catching up
#: uses this instead of a full JSON parse (5x faster); a match inside a nested
#: object only adds an entry that the re-check at lookup drops.
_TRANSFER_ID = re.compile(rb'"transfer_id":"((?:[^"\\]|\\.)*)"')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    id_hash INTEGER NOT NULL,
    record INTEGER NOT NULL,
    PRIMARY KEY (id_hash, record)
) WITHOUT ROWID;
"""

_log = structlog.get_logger("gateway.audit")


def id_hash(transfer_id: str) -> int:
    """The 64-bit signed key a transfer id is stored under."""
    digest = hashlib.blake2b(transfer_id.encode("utf-8"), digest_size=ID_HASH_BYTES).digest()
    return int.from_bytes(digest, "big", signed=True)


def transfer_ids(data: bytes) -> list[str]:
    """Candidate transfer ids of one canonical record (for catching up).

    Returns every ``"transfer_id"`` string member; the lookup re-checks the
    record, so a spurious candidate is harmless and none is ever missed.
    """
    found: list[str] = []
    for raw in _TRANSFER_ID.findall(data):
        try:
            if b"\\" not in raw:  # no escape: the bytes are the id (3x faster than JSON)
                found.append(raw.decode("utf-8"))
            else:
                value = json.loads(b'"' + raw + b'"')
                if isinstance(value, str):
                    found.append(value)
        except ValueError:  # not UTF-8 or a bad escape: not a transfer id
            continue
    return found


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rwc'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _remove_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


class TransferIndex:
    """The writer's handle on ``index/transfers.sqlite3`` (see the module docstring).

    Use :meth:`open`. Writes (:meth:`add`, :meth:`catch_up`) come from one
    thread at a time (the log's writer); :meth:`lookup` may run concurrently
    from other threads on its own connection.

    Attributes:
        path: the index file.
        size: records ``0..size-1`` are indexed (those still in segments).
    """

    def __init__(self, path: Path, writer: sqlite3.Connection, size: int, last_leaf: bytes) -> None:
        self.path = path
        self.size = size
        self._last_leaf = last_leaf
        self._writer = writer
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls, directory: Path, *, log_size: int, leaf: Callable[[int], bytes], fsync: bool
    ) -> TransferIndex:
        """Open the index of the log in ``directory``; start over if it cannot be used.

        Args:
            directory: the log's ``index/`` directory.
            log_size: records in the log now.
            leaf: the stored leaf hash of a record (the proof index's level 0).
            fsync: whether SQLite may sync at its WAL checkpoints (off in tests).

        Raises:
            sqlite3.Error, OSError: not even a fresh index can be created.
        """
        path = directory / TRANSFERS_FILE
        try:
            index = cls._open_existing(path, fsync=fsync)
            if not index._consistent(log_size, leaf):
                index.close()
                raise ValueError("inconsistent with the log")
        except (sqlite3.Error, ValueError) as exc:
            if path.exists():
                _log.warning("audit_transfer_index_rebuilt", path=str(path), reason=str(exc))
            _remove_files(path)
            index = cls._open_existing(path, fsync=fsync)
        return index

    @classmethod
    def _open_existing(cls, path: Path, *, fsync: bool) -> TransferIndex:
        conn = _connect(path, read_only=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'NORMAL' if fsync else 'OFF'}")
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", FORMAT_VERSION), ("size", 0), ("leaf", b"")],
                )
                meta = {"format": FORMAT_VERSION, "size": 0, "leaf": b""}
            size, last_leaf = meta.get("size"), meta.get("leaf")
            if (
                meta.get("format") != FORMAT_VERSION
                or type(size) is not int
                or size < 0
                or not isinstance(last_leaf, bytes)
            ):
                raise ValueError("unknown format")
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, size, last_leaf)

    def _consistent(self, log_size: int, leaf: Callable[[int], bytes]) -> bool:
        """Whether the index's mark names the same record the log has there.

        The index is committed after the records' fdatasync, so it can lag
        but never lead; an index ahead of the log, or one whose last record's
        leaf hash differs (a restored or replaced log), is not this log's.
        """
        if self.size == 0:
            return True
        if self.size > log_size:
            return False
        try:
            return leaf(self.size - 1) == self._last_leaf
        except AuditIntegrityError:  # no stored hash: the proof index was rebuilt shorter
            return False

    def catch_up(
        self, records: Iterable[tuple[int, bytes]], log_size: int, leaf: Callable[[int], bytes]
    ) -> int:
        """Index ``records`` (index, canonical bytes), then mark all ``log_size`` indexed.

        Args:
            records: every record from :attr:`size` to ``log_size`` still in a
                segment (a just-recovered log has no incomplete one; pruned
                records have nothing left to index).
            log_size: records in the log.
            leaf: the stored leaf hash of a record.

        Returns:
            how many records were read.
        """
        if self.size >= log_size:
            return 0
        batch: list[tuple[str, int]] = []
        count = 0
        for index, data in records:
            if index >= log_size:
                break
            batch.extend((tid, index) for tid in transfer_ids(data))
            count += 1
            if count % CATCH_UP_BATCH == 0:
                self.add(batch, index + 1, leaf(index))
                batch.clear()
        self.add(batch, log_size, leaf(log_size - 1))
        return count

    def add(self, entries: Iterable[tuple[str, int]], size: int, last_leaf: bytes) -> None:
        """Record ``(transfer id, record index)`` pairs and the new mark, atomically.

        Args:
            entries: the transfer records among records ``self.size..size-1``.
            size: records now indexed.
            last_leaf: leaf hash of record ``size - 1`` (checked on open).

        Raises:
            sqlite3.Error: the index could not be written (the caller stops using it).
        """
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO entries VALUES (?, ?)",
                [(id_hash(tid), index) for tid, index in entries],
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'size'", (size,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'leaf'", (last_leaf,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.size = size
        self._last_leaf = last_leaf

    def lookup(self, transfer_id: str) -> list[int]:
        """Indexes of the records indexed under ``transfer_id``'s hash, ascending.

        Candidates only: the caller must check each record carries the id.

        Raises:
            sqlite3.Error: the index is unreadable (the caller scans instead).
        """
        with self._read_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the transfer index is closed")
            if self._reader is None:
                self._reader = _connect(self.path, read_only=True)
            return _lookup(self._reader, transfer_id)

    def close(self) -> None:
        """Close both connections (idempotent; SQLite folds its WAL back in)."""
        with self._read_lock:
            self._closed = True
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._writer.close()

    def discard(self) -> None:
        """Close and delete the index (it failed or lied; the next open rebuilds it)."""
        with contextlib.suppress(sqlite3.Error):
            self.close()
        _remove_files(self.path)


def _lookup(conn: sqlite3.Connection, transfer_id: str) -> list[int]:
    rows = conn.execute(
        "SELECT record FROM entries WHERE id_hash = ? ORDER BY record", (id_hash(transfer_id),)
    ).fetchall()
    return [int(row[0]) for row in rows]


def read_index(
    directory: Path, transfer_id: str, leaf: Callable[[int], bytes | None]
) -> tuple[list[int], int] | None:
    """Look ``transfer_id`` up in a log's index without writing (for the CLI).

    Args:
        directory: the log's ``index/`` directory.
        transfer_id: the transfer.
        leaf: the stored leaf hash of a record, or ``None`` (to check the mark).

    Returns:
        ``(candidate record indexes, records covered)``, or ``None`` when
        there is no usable index (the caller scans).
    """
    path = directory / TRANSFERS_FILE
    if not path.exists():
        return None
    try:
        conn = _connect(path, read_only=True)
    except sqlite3.Error:
        return None
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        size, last_leaf = meta.get("size"), meta.get("leaf")
        if meta.get("format") != FORMAT_VERSION or type(size) is not int or size < 0:
            return None
        if size and leaf(size - 1) != last_leaf:
            return None  # not this log's index (or the log was replaced): scan
        return _lookup(conn, transfer_id), size
    except sqlite3.Error:
        return None
    finally:
        conn.close()
