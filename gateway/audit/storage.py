"""The audit log's files: append-only segments, a proof index, checkpoints.

Blocking I/O only; :class:`~gateway.audit.log.AuditLog` runs it in a worker
thread, the CLI calls it directly. Layout of a log directory::

    segments/segment-<first index, 20 digits>.jsonl
        one canonical-JSON record per line (``\\n``-terminated; canonical JSON
        never contains a raw newline). A final line without ``\\n``, or one
        that is not canonical JSON, is a torn write.
    index/level-NN.bin
        32-byte hashes of the perfect subtrees of 2**NN leaves, in order
        (level 00 = the leaf hashes). Proofs read O(log² n) of them.
    index/offsets.bin
        per record: big-endian u64 byte offset in its segment, u32 length.
    index/transfers.sqlite3
        transfer id hash -> record indexes, a cache for lookups
        (gateway.audit.transfers; rebuilt from the segments when unusable).
    checkpoints.jsonl
        one JSON object per line: {"note": <signed checkpoint>, "time": ...,
        "indexed": <records whose index entries were synced>}.
    pruned.jsonl
        one line per segment deleted after its retention (gateway.audit.retention).
    torn/
        bytes cut from a torn tail on recovery, or beyond the last acknowledged
        record when a failed writer reopens (:class:`DurableMark`), kept,
        never deleted.
    probe.tmp
        written, synced and deleted by a failed writer testing the disk
        (:func:`probe_space`).
    LOCK
        flock()ed by the one writer.

Durability: a batch of records is written to the segment and synced with
``fdatasync`` before anyone is told it is logged. The index is derived data:
it is synced at most once a minute, just before a checkpoint line, which then
records how many records' index entries are durable (``indexed``). On open
everything after that point is rebuilt from the segments, and a torn final
record is cut off and kept in ``torn/``. Damage anywhere else is an
:class:`AuditIntegrityError`.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from gateway.audit.errors import AuditIntegrityError, AuditUnavailable
from gateway.audit.merkle import HASH_SIZE, CompactRange, leaf_hash
from gateway.audit.note import Checkpoint, NoteError, parse_note
from gateway.audit.records import RecordError, parse_canonical, utc_now
from gateway.errors import NotFound
from gateway.posix import write_all

SEGMENTS_DIR = "segments"
INDEX_DIR = "index"
TORN_DIR = "torn"
CHECKPOINTS_FILE = "checkpoints.jsonl"
PRUNED_FILE = "pruned.jsonl"
LOCK_FILE = "LOCK"
SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".jsonl"
#: u64 covers any segment size; u32 covers MAX_RECORD_BYTES many times over.
OFFSET_ENTRY = struct.Struct(">QI")
#: Tree sizes are < 2**64, so there are at most 64 levels of perfect subtrees.
MAX_LEVELS = 64
#: Segments close at 64 MiB: small enough to archive and re-verify piecewise,
#: large enough that a busy gateway opens a few per day.
DEFAULT_SEGMENT_MAX_BYTES = 64 * 1024 * 1024
#: Segments also close daily, so a day's records can be archived on their own.
DEFAULT_SEGMENT_MAX_AGE = 24 * 3600.0
#: The index is synced at a checkpoint at most once a minute or per 100k records,
#: which bounds what recovery re-reads (a minute of records) while keeping the
#: dozen index fsyncs out of the 10 s / 1,000-record checkpoint path.
INDEX_SYNC_INTERVAL = 60.0
INDEX_SYNC_RECORDS = 100_000
#: A checkpoints.jsonl line holds one note (MAX_NOTE_BYTES) plus JSON framing.
MAX_CHECKPOINT_LINE = 2 * 1024 * 1024
#: Written, synced and deleted by :func:`probe_space` in the log directory.
PROBE_FILE = "probe.tmp"


def segment_name(first: int) -> str:
    """File name of the segment whose first record has index ``first``."""
    return f"{SEGMENT_PREFIX}{first:020d}{SEGMENT_SUFFIX}"


def level_name(level: int) -> str:
    """File name of the index file for perfect subtrees of 2**level leaves."""
    return f"level-{level:02d}.bin"


def fsync_directory(path: Path) -> None:
    """Make a new or removed directory entry durable (POSIX needs this too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_space(directory: Path, size: int, *, fsync: bool = True) -> None:
    """Write ``size`` bytes to a scratch file in ``directory``, sync it, delete it.

    The test of a failed log before it is reopened: creating the file needs a
    free inode, writing it needs ``size`` bytes of free space (and a file-size
    limit that allows them), and the sync reaches the device.

    Raises:
        OSError: any of that failed (the scratch file is removed either way).
    """
    path = directory / PROBE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, bytes(size))
        if fsync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
        # Unlinking never needs space; a leftover (a crash right here) is
        # truncated by the next probe and read by nothing.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments of a log directory as ``(first index, path)``, in order."""
    seg_dir = directory / SEGMENTS_DIR
    if not seg_dir.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for entry in seg_dir.iterdir():
        name = entry.name
        if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX):
            digits = name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
            if digits.isdigit() and len(digits) == 20:
                found.append((int(digits), entry))
    found.sort()
    return found


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a segment as read from disk.

    Attributes:
        segment: the segment file.
        offset: byte offset of the line in the segment.
        data: the line without its newline.
        complete: whether the line ended in a newline.
    """

    segment: Path
    offset: int
    data: bytes
    complete: bool


def iter_lines(path: Path, offset: int = 0) -> Iterator[Line]:
    """The lines of one segment from byte ``offset`` on."""
    with path.open("rb") as file:
        file.seek(offset)
        pos = offset
        for raw in file:
            complete = raw.endswith(b"\n")
            data = raw[:-1] if complete else raw
            yield Line(path, pos, data, complete)
            pos += len(raw)


def records_from(
    segments: list[tuple[int, Path]],
    start: int,
    offset_of: Callable[[int], int | None],
) -> Iterator[tuple[int, bytes]]:
    """Complete records from index ``start`` on, as ``(index, bytes)``, read sequentially.

    Starts at the byte ``offset_of(start)`` names (asked only when ``start`` is
    not the first record of its segment; ``None``: unknown, read the segment
    from its beginning); stops at the first incomplete line (a write
    in progress). Pruned records are skipped: there is nothing left to read.
    """
    if not segments:
        return
    start = max(start, segments[0][0])
    pos = bisect.bisect_right([first for first, _ in segments], start) - 1
    offset = 0 if start == segments[pos][0] else offset_of(start)
    for number in range(pos, len(segments)):
        first, path = segments[number]
        index, skip_to = first, 0
        if number == pos and offset is not None:
            index, skip_to = start, offset
        for line in iter_lines(path, skip_to):
            if not line.complete:
                return
            if index >= start:
                yield index, line.data
            index += 1


def _end_of(entry: bytes) -> int | None:
    """The byte after a record (and its newline), from its offsets entry; ``None`` if short."""
    if len(entry) != OFFSET_ENTRY.size:
        return None
    offset, length = OFFSET_ENTRY.unpack(entry)
    return int(offset + length + 1)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint line of ``checkpoints.jsonl`` (signature not yet verified).

    Attributes:
        line: 1-based line number in the file.
        note: the signed note text.
        time: when it was written (informational, not signed).
        indexed: how many records' index entries were synced to disk when
            this line was written (recovery rebuilds the index from there).
    """

    line: int
    note: str
    time: str | None
    indexed: int = 0

    def checkpoint(self) -> Checkpoint:
        """The checkpoint body, parsed without checking signatures."""
        text, _ = parse_note(self.note)
        return Checkpoint.parse(text)


def _parse_checkpoint_line(raw: bytes, number: int) -> StoredCheckpoint:
    """Parse one complete ``checkpoints.jsonl`` line (signature not checked).

    Raises:
        ValueError: malformed.
    """
    if len(raw) > MAX_CHECKPOINT_LINE:
        raise ValueError("line too long")
    try:
        obj = json.loads(raw)
        note, stamp, indexed = obj["note"], obj.get("time"), obj.get("indexed", 0)
        if (
            not isinstance(note, str)
            or not isinstance(stamp, str | None)
            or type(indexed) is not int
            or indexed < 0
        ):
            raise ValueError("field types")
        entry = StoredCheckpoint(number, note, stamp, indexed)
        entry.checkpoint()
    except (KeyError, TypeError, NoteError, AttributeError) as exc:
        raise ValueError(str(exc)) from exc
    return entry


class CheckpointFile:
    """Streams ``checkpoints.jsonl`` line by line (it grows for years; never load it whole).

    Iterating yields every well-formed line. A malformed *final* line is a
    torn write: iteration stops and :attr:`torn_at` holds its byte offset.

    Raises:
        AuditIntegrityError: (while iterating) a malformed line before the last one.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / CHECKPOINTS_FILE
        self.torn_at: int | None = None

    def __iter__(self) -> Iterator[StoredCheckpoint]:
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return
        with file:
            pos = 0
            for number, raw in enumerate(file, start=1):
                if self.torn_at is not None:
                    raise AuditIntegrityError(
                        f"{self.path}:{number - 1}: malformed checkpoint line before the last one"
                    )
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn")
                    entry = _parse_checkpoint_line(raw, number)
                except ValueError:
                    self.torn_at = pos
                else:
                    yield entry
                pos += len(raw)


def latest_checkpoint(directory: Path) -> tuple[StoredCheckpoint | None, int | None]:
    """The last checkpoint line, reading only the end of the file.

    Returns:
        ``(latest, torn_at)``: the last well-formed checkpoint (its ``line``
        is 0: unknown without reading the whole file) and the byte offset
        of a torn final line, if any.

    Raises:
        AuditIntegrityError: the last two lines are both malformed.
    """
    path = directory / CHECKPOINTS_FILE
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return None, None
    with file:
        size = file.seek(0, os.SEEK_END)
        start = max(0, size - 2 * MAX_CHECKPOINT_LINE - 2)
        file.seek(start)
        data = file.read()
    pieces = data.split(b"\n")
    # pieces[-1] is what follows the final newline: empty unless the last line is torn.
    offsets: list[int] = []
    pos = start
    for piece in pieces:
        offsets.append(pos)
        pos += len(piece) + 1
    first_whole = 0 if start == 0 else 1  # the chunk may begin mid-line
    torn_at = offsets[-1] if pieces[-1] else None
    candidates = list(range(first_whole, len(pieces) - 1))
    for position in reversed(candidates):
        try:
            return _parse_checkpoint_line(pieces[position] + b"\n", 0), torn_at
        except ValueError:
            if position != candidates[-1] or torn_at is not None:
                raise AuditIntegrityError(
                    f"{path}: malformed checkpoint line before the last one"
                ) from None
            torn_at = offsets[position]
    return None, torn_at


class LogReader:
    """Read-only access to a log directory (CLI, verification, receipts).

    It reads what is on disk now; a log being written may grow meanwhile,
    which only ever appends.

    Args:
        directory: the log directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not (self.directory / SEGMENTS_DIR).is_dir():
            raise AuditUnavailable(f"{self.directory}: not an audit log directory (no segments/)")
        self.segments = list_segments(self.directory)
        self._firsts = [first for first, _ in self.segments]

    def iter_lines(self, start_segment: int = 0) -> Iterator[tuple[int, Line]]:
        """Every line of every segment from segment number ``start_segment``.

        Yields ``(expected index, line)``; the index is the segment's first
        index plus the line's position, so a missing or extra segment shows
        up as a mismatch the caller can report.
        """
        for first, path in self.segments[start_segment:]:
            index = first
            for line in iter_lines(path):
                yield index, line
                index += 1

    def segment_of(self, index: int) -> Path:
        """The segment file that holds (or held) record ``index`` (for messages)."""
        return self.segments[max(0, bisect.bisect_right(self._firsts, index) - 1)][1]

    def records_from(self, start: int) -> Iterator[tuple[int, bytes]]:
        """Complete records from index ``start`` on (see :func:`records_from`)."""
        return records_from(self.segments, start, self._offset_of)

    def _offset_of(self, index: int) -> int | None:
        # Record index-1 (same segment: records_from asks only mid-segment) ends
        # where record index starts, even when index is the next one to be written.
        try:
            with (self.directory / INDEX_DIR / "offsets.bin").open("rb") as file:
                file.seek((index - 1) * OFFSET_ENTRY.size)
                entry = file.read(OFFSET_ENTRY.size)
        except OSError:
            return None
        return _end_of(entry)

    def checkpoints(self) -> CheckpointFile:
        """The checkpoints on disk, oldest first, streamed (a torn last line is skipped)."""
        return CheckpointFile(self.directory)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The newest checkpoint, reading only the end of the file."""
        return latest_checkpoint(self.directory)[0]

    def stored_hash(self, level: int, index: int) -> bytes | None:
        """A stored perfect-subtree hash, or ``None`` when the index lacks it."""
        path = self.directory / INDEX_DIR / level_name(level)
        try:
            with path.open("rb") as file:
                file.seek(index * HASH_SIZE)
                data = file.read(HASH_SIZE)
        except FileNotFoundError:
            return None
        return data if len(data) == HASH_SIZE else None

    def stored_leaf_count(self) -> int:
        """How many leaf hashes the index holds."""
        try:
            return (self.directory / INDEX_DIR / level_name(0)).stat().st_size // HASH_SIZE
        except FileNotFoundError:
            return 0

    def subtree(self, level: int, index: int) -> bytes:
        """A :data:`~gateway.audit.merkle.SubtreeSource` over the stored index.

        Raises:
            AuditIntegrityError: the index lacks the hash.
        """
        value = self.stored_hash(level, index)
        if value is None:
            raise AuditIntegrityError(
                f"{self.directory}: index has no hash for level {level} node {index}"
            )
        return value

    def record(self, index: int) -> bytes:
        """The stored bytes of record ``index`` (via the offsets index).

        Raises:
            AuditIntegrityError: no such record or the index points at garbage.
        """
        pos = bisect.bisect_right(self._firsts, index) - 1
        offsets = self.directory / INDEX_DIR / "offsets.bin"
        try:
            with offsets.open("rb") as file:
                file.seek(index * OFFSET_ENTRY.size)
                entry = file.read(OFFSET_ENTRY.size)
            if pos < 0 or len(entry) != OFFSET_ENTRY.size:
                raise NotFound(f"{self.directory}: no record {index} (pruned, or not yet)")
            offset, length = OFFSET_ENTRY.unpack(entry)
            with self.segments[pos][1].open("rb") as file:
                file.seek(offset)
                data = file.read(length + 1)
        except OSError as exc:
            raise AuditIntegrityError(f"{self.directory}: cannot read record {index}") from exc
        if len(data) != length + 1 or not data.endswith(b"\n"):
            raise AuditIntegrityError(f"{self.directory}: index entry {index} is damaged")
        return data[:-1]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`SegmentStore.open` had to repair.

    Attributes:
        rebuilt_from: the first record whose index entries were rebuilt.
        torn_bytes: bytes cut from the end of the last segment.
        torn_file: where those bytes were kept.
        checkpoint_bytes_cut: bytes cut from the end of ``checkpoints.jsonl``.
    """

    rebuilt_from: int
    torn_bytes: int
    torn_file: Path | None
    checkpoint_bytes_cut: int = 0


@dataclass(frozen=True, slots=True)
class DurableMark:
    """How far a store's files were durable when it last wrote successfully.

    A writer that failed reopens its directory with this mark: whatever lies
    beyond it was never acknowledged (its write or sync failed, so the page
    cache may hold bytes the disk does not) and is cut off, and what lies
    within it must still be there, unchanged.

    Attributes:
        records: records appended and synced (the tree size).
        root: the Merkle root of those records.
        checkpoint_bytes: length of ``checkpoints.jsonl`` after its last sync.
    """

    records: int
    root: bytes
    checkpoint_bytes: int


class SegmentStore:
    """The single writer of a log directory (blocking; one thread at a time).

    Use :meth:`open`. After any write or fsync error the store is
    ``broken`` and refuses every further write: the caller must reopen.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_bytes: int,
        segment_max_age: float,
        fsync: bool,
    ) -> None:
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age = segment_max_age
        self.fsync = fsync
        self.broken = False
        self.tree = CompactRange()
        self.latest: StoredCheckpoint | None = None
        self.segments: list[tuple[int, Path]] = []
        self._firsts: list[int] = []
        self._lock_fd = -1
        self._segment_fd = -1
        self._segment_size = 0
        self._segment_opened = 0.0
        self._offsets_fd = -1
        self._level_fds: dict[int, int] = {}
        self._dirty: set[int] = set()
        self.index_synced = 0
        self._index_synced_at = 0.0  # monotonic; 0 forces a sync at the first checkpoint
        self._checkpoints_fd = -1
        self.durable = DurableMark(0, self.tree.root(), 0)

    # -- opening and recovery -------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
        segment_max_age: float = DEFAULT_SEGMENT_MAX_AGE,
        fsync: bool = True,
        on_record: Callable[[int, bytes], None] | None = None,
        durable: DurableMark | None = None,
    ) -> tuple[SegmentStore, Recovery]:
        """Open (creating if needed) and recover a log directory for writing.

        Args:
            on_record: called with ``(index, record bytes)`` for each record
                re-read during recovery (the caller's transfer-id index).
            durable: the :attr:`durable` mark of this process's previous,
                failed store of the same directory: complete records and
                checkpoint lines beyond it are cut off too (kept in
                ``torn/``), and the records within it must be on disk.

        Raises:
            AuditUnavailable: the directory cannot be created, locked or written.
            AuditIntegrityError: damage beyond a torn final write, or (with
                ``durable``) acknowledged records that are no longer on disk.
        """
        store = cls(
            Path(directory),
            segment_max_bytes=segment_max_bytes,
            segment_max_age=segment_max_age,
            fsync=fsync,
        )
        try:
            recovery = store._open(on_record, durable)
        except OSError as exc:
            store.close()
            raise AuditUnavailable(
                f"{store.directory}: audit log cannot be opened for writing: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            store.close()
            raise
        return store, recovery

    def _open(
        self, on_record: Callable[[int, bytes], None] | None, durable: DurableMark | None
    ) -> Recovery:
        directory = self.directory
        for sub in (directory, directory / SEGMENTS_DIR, directory / INDEX_DIR):
            sub.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AuditUnavailable(f"{directory}: audit log is in use by another process") from exc

        cp_path = directory / CHECKPOINTS_FILE
        cut = 0
        if durable is not None:
            if not cp_path.exists() or cp_path.stat().st_size < durable.checkpoint_bytes:
                raise AuditIntegrityError(
                    f"{cp_path}: shorter than the {durable.checkpoint_bytes} bytes this "
                    "process synced; published checkpoints are gone"
                )
            # A checkpoint line whose write or sync failed was never published
            # (no receipt or witness has it); after a failed sync the disk may
            # not hold it, so it must not stay for later lines to follow.
            cut += self._quarantine(cp_path, durable.checkpoint_bytes)[0]
        latest, torn_checkpoint = latest_checkpoint(directory)
        if torn_checkpoint is not None:
            # A checkpoint is re-signed from the tree; keep the torn line anyway.
            cut += self._quarantine(cp_path, torn_checkpoint)[0]
        self._checkpoints_fd = os.open(cp_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.latest = latest
        signed = self.latest.checkpoint() if self.latest else None

        self.segments = list_segments(directory)
        self._firsts = [first for first, _ in self.segments]
        self._offsets_fd = os.open(
            directory / INDEX_DIR / "offsets.bin", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644
        )
        for level in range(MAX_LEVELS):
            path = directory / INDEX_DIR / level_name(level)
            if path.exists():
                self._level_fd(level)

        # How much of the index can be trusted: what was synced before the
        # latest checkpoint line, and only as far as every file actually reaches.
        trusted = min(signed.size, self.latest.indexed) if signed and self.latest else 0
        trusted = min(trusted, os.fstat(self._offsets_fd).st_size // OFFSET_ENTRY.size)
        for level in range(MAX_LEVELS):
            if trusted >> level == 0:
                break
            stored = self._stored_count(level)
            trusted = min(trusted, (stored << level) | (trusted & ((1 << level) - 1)))
        self._truncate_index(trusted)
        self.index_synced = trusted
        self.tree = CompactRange.from_source(trusted, self.subtree)

        keep = durable.records if durable is not None else None
        torn_bytes, torn_file = self._rescan(trusted, signed, on_record, keep)
        if durable is not None and (
            self.tree.size != durable.records or self.tree.root() != durable.root
        ):
            raise AuditIntegrityError(
                f"{directory}: {self.tree.size} records on disk do not match the "
                f"{durable.records} this process acknowledged; run `gateway audit verify`"
            )
        self._open_current_segment()
        self._flush_dir()
        self.durable = DurableMark(
            self.tree.size, self.tree.root(), os.fstat(self._checkpoints_fd).st_size
        )
        return Recovery(trusted, torn_bytes, torn_file, cut)

    def _stored_count(self, level: int) -> int:
        if level not in self._level_fds:
            return 0
        return os.fstat(self._level_fds[level]).st_size // HASH_SIZE

    def _truncate_index(self, size: int) -> None:
        os.ftruncate(self._offsets_fd, size * OFFSET_ENTRY.size)
        for level, fd in self._level_fds.items():
            os.ftruncate(fd, (size >> level) * HASH_SIZE)

    def _locate(self, index: int) -> tuple[int, int]:
        """(segment position, byte offset) where record ``index`` starts."""
        if index == 0:
            return 0, 0
        offset, length = OFFSET_ENTRY.unpack(
            os.pread(self._offsets_fd, OFFSET_ENTRY.size, (index - 1) * OFFSET_ENTRY.size)
        )
        pos = bisect.bisect_right(self._firsts, index - 1) - 1
        end = offset + length + 1
        if pos + 1 < len(self.segments) and end >= self.segments[pos][1].stat().st_size:
            return pos + 1, 0
        return pos, end

    def _rescan(
        self,
        start: int,
        signed: Checkpoint | None,
        on_record: Callable[[int, bytes], None] | None,
        keep: int | None = None,
    ) -> tuple[int, Path | None]:
        """Re-read records from ``start``, rebuild their index, cut a torn tail.

        With ``keep``, records from index ``keep`` on are cut like a torn
        tail even when complete: their writer failed before acknowledging
        them. A failed batch is one write into the last segment (or into a
        segment it had just opened), so they can only be at the very end.
        """
        if not self.segments:
            if start or (signed and signed.size):
                raise AuditIntegrityError(
                    f"{self.directory}: segments are missing; a checkpoint covers "
                    f"{signed.size if signed else start} records"
                )
            return 0, None
        if signed is not None and start == signed.size and self.tree.root() != signed.root_hash:
            raise AuditIntegrityError(
                f"{self.directory}: the index does not match the latest signed checkpoint"
            )
        if start < self.segments[0][0]:
            raise AuditIntegrityError(
                f"{self.directory}: the index that stands in for pruned records "
                f"0..{self.segments[0][0] - 1} is damaged; restore it from a backup"
            )
        if start > self.segments[0][0]:
            self._check_record(start - 1)
        seg_pos, offset = self._locate(start)
        index = start
        hashes: list[bytes] = []
        entries: list[tuple[int, int]] = []
        for pos in range(seg_pos, len(self.segments)):
            first, path = self.segments[pos]
            if (pos > seg_pos or offset == 0) and first != index:
                raise AuditIntegrityError(
                    f"{path}: segment starts at record {first}, expected {index}"
                )
            last_segment = pos == len(self.segments) - 1
            for line in iter_lines(path, offset if pos == seg_pos else 0):
                if keep is not None and index >= keep:
                    if not last_segment:
                        raise AuditIntegrityError(
                            f"{path}: record {index} follows the last acknowledged "
                            f"record {keep - 1} but is not in the last segment"
                        )
                    self._append_index(hashes, entries)
                    return self._quarantine(path, line.offset)
                good = line.complete
                if good:
                    try:
                        parse_canonical(line.data)
                    except RecordError:
                        good = False
                if not good:
                    if not last_segment or (signed is not None and index < signed.size):
                        raise AuditIntegrityError(
                            f"{path}: record {index} at byte {line.offset} is damaged "
                            "and is not a torn final write"
                        )
                    self._append_index(hashes, entries)
                    return self._quarantine(path, line.offset)
                hashes.append(leaf_hash(line.data))
                entries.append((line.offset, len(line.data)))
                if on_record is not None:
                    on_record(index, line.data)
                index += 1
                if signed is not None and index == signed.size:
                    self._append_index(hashes, entries)
                    if self.tree.root() != signed.root_hash:
                        raise AuditIntegrityError(
                            f"{self.directory}: records 0..{index - 1} do not match the "
                            "latest signed checkpoint"
                        )
                if len(hashes) >= 4096:
                    self._append_index(hashes, entries)
            self._append_index(hashes, entries)
        if signed is not None and index < signed.size:
            raise AuditIntegrityError(
                f"{self.directory}: {index} records on disk but the latest checkpoint "
                f"covers {signed.size}; records from {index} are missing"
            )
        return 0, None

    def _check_record(self, index: int) -> None:
        """Check that record ``index`` (the last one the index vouches for) is intact.

        A full check is ``gateway audit verify``; this one catches damage at
        the end of the trusted region, where a crash or a bad disk would hit.
        """
        offset, length = OFFSET_ENTRY.unpack(
            os.pread(self._offsets_fd, OFFSET_ENTRY.size, index * OFFSET_ENTRY.size)
        )
        path = self.segments[bisect.bisect_right(self._firsts, index) - 1][1]
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read(length + 1)
        try:
            if not data.endswith(b"\n"):
                raise RecordError("cut short")
            parse_canonical(data[:-1])
            if leaf_hash(data[:-1]) != self.subtree(0, index):
                raise RecordError("differs from its leaf hash")
        except RecordError as exc:
            raise AuditIntegrityError(
                f"{path}: record {index} at byte {offset}, covered by a signed checkpoint, "
                f"is damaged ({exc}); run `gateway audit verify`"
            ) from exc

    def _quarantine(self, path: Path, offset: int) -> tuple[int, Path | None]:
        """Copy ``path[offset:]`` into ``torn/`` (fsynced), then truncate ``path``."""
        size = path.stat().st_size
        if size <= offset:
            return 0, None
        torn_bytes = size - offset
        torn_dir = self.directory / TORN_DIR
        torn_dir.mkdir(exist_ok=True)
        target = torn_dir / f"{path.name}.{offset}.{time.time_ns()}.bin"
        with path.open("rb") as src:
            src.seek(offset)
            data = src.read()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(torn_dir)
        with path.open("r+b") as dst:
            dst.truncate(offset)
            dst.flush()
            os.fsync(dst.fileno())
        return torn_bytes, target

    def _open_current_segment(self) -> None:
        if self.segments:
            path = self.segments[-1][1]
            self._segment_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._segment_size = os.fstat(self._segment_fd).st_size
            self._segment_opened = time.monotonic()
        else:
            self._new_segment(0)

    def _new_segment(self, first: int) -> None:
        path = self.directory / SEGMENTS_DIR / segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self.fsync:
            try:
                fsync_directory(path.parent)
            except OSError:
                os.close(fd)  # close() knows only the fds it was handed
                raise
        if self._segment_fd >= 0:
            os.close(self._segment_fd)
        self._segment_fd = fd
        self._segment_size = 0
        self._segment_opened = time.monotonic()
        self.segments.append((first, path))
        self._firsts.append(first)

    def _flush_dir(self) -> None:
        if self.fsync:
            for sub in (self.directory, self.directory / SEGMENTS_DIR, self.directory / INDEX_DIR):
                fsync_directory(sub)

    def _level_fd(self, level: int) -> int:
        fd = self._level_fds.get(level)
        if fd is None:
            path = self.directory / INDEX_DIR / level_name(level)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._level_fds[level] = fd
        return fd

    def _append_index(self, hashes: list[bytes], entries: list[tuple[int, int]]) -> None:
        """Append leaves to the tree and their entries to the index files; clears the lists."""
        if not hashes:
            return
        per_level: dict[int, list[bytes]] = {}
        for leaf in hashes:
            for level, _index, value in self.tree.append(leaf):
                per_level.setdefault(level, []).append(value)
        for level, values in per_level.items():
            write_all(self._level_fd(level), b"".join(values))
            self._dirty.add(level)
        write_all(self._offsets_fd, b"".join(OFFSET_ENTRY.pack(o, n) for o, n in entries))
        self._dirty.add(-1)
        hashes.clear()
        entries.clear()

    # -- the write path ---------------------------------------------------------

    @property
    def size(self) -> int:
        """Records durably in the log."""
        return self.tree.size

    def append(self, records: list[bytes], hashes: list[bytes]) -> float:
        """Append a batch of canonical records, durably (one write, one fdatasync).

        Returns:
            seconds spent in fdatasync (0 when fsync is off).

        Raises:
            OSError: the write or sync failed; the store is now broken.
            AuditUnavailable: the store was already broken.
        """
        if self.broken:
            raise AuditUnavailable(f"{self.directory}: audit log failed earlier; reopen it")
        self.broken = True  # until proven otherwise
        blob = b"".join(record + b"\n" for record in records)
        first = self.tree.size
        if self._segment_size and (
            self._segment_size + len(blob) > self.segment_max_bytes
            or time.monotonic() - self._segment_opened >= self.segment_max_age
        ):
            self._new_segment(first)
        base = self._segment_size
        entries: list[tuple[int, int]] = []
        for record in records:
            entries.append((base, len(record)))
            base += len(record) + 1
        write_all(self._segment_fd, blob)
        synced = 0.0
        if self.fsync:
            started = time.perf_counter()
            os.fdatasync(self._segment_fd)
            synced = time.perf_counter() - started
        self._segment_size = base
        # The records are durable; the index is derived data (rebuilt on open).
        self._append_index(list(hashes), entries)
        # Only now are they acknowledged: a failure above leaves them beyond the mark.
        self.durable = DurableMark(self.tree.size, self.tree.root(), self.durable.checkpoint_bytes)
        self.broken = False
        return synced

    def write_checkpoint(self, note: str, *, sync_index: bool = False) -> None:
        """Persist a signed checkpoint line (one fdatasync).

        Every :data:`INDEX_SYNC_INTERVAL` seconds or :data:`INDEX_SYNC_RECORDS`
        records, the index files are synced first and the line records how far
        (``indexed``); recovery rebuilds the index from there. Syncing a dozen
        index files at every checkpoint would cost more than the records' own
        group commits. ``sync_index`` forces the sync (clean shutdown).

        Raises:
            OSError: the store is now broken.
        """
        if self.broken:
            raise AuditUnavailable(f"{self.directory}: audit log failed earlier; reopen it")
        self.broken = True
        now = time.monotonic()
        if (
            sync_index
            or now - self._index_synced_at >= INDEX_SYNC_INTERVAL
            or self.tree.size - self.index_synced >= INDEX_SYNC_RECORDS
        ):
            if self.fsync:
                for key in sorted(self._dirty):
                    os.fsync(self._offsets_fd if key < 0 else self._level_fds[key])
            self._dirty.clear()
            self.index_synced = self.tree.size
            self._index_synced_at = now
        stamp = utc_now()
        entry = {"note": note, "time": stamp, "indexed": self.index_synced}
        write_all(self._checkpoints_fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode())
        if self.fsync:
            os.fdatasync(self._checkpoints_fd)
        self.latest = StoredCheckpoint(0, note, stamp, self.index_synced)
        self.durable = DurableMark(
            self.durable.records, self.durable.root, os.fstat(self._checkpoints_fd).st_size
        )
        self.broken = False

    # -- reads (safe from other threads while the writer appends) ---------------

    def subtree(self, level: int, index: int) -> bytes:
        """A stored perfect-subtree hash (a :data:`~gateway.audit.merkle.SubtreeSource`)."""
        fd = self._level_fds.get(level)
        data = os.pread(fd, HASH_SIZE, index * HASH_SIZE) if fd is not None else b""
        if len(data) != HASH_SIZE:
            raise AuditIntegrityError(
                f"{self.directory}: index has no hash for level {level} node {index}"
            )
        return data

    def records_from(self, start: int) -> Iterator[tuple[int, bytes]]:
        """Records from index ``start`` to :attr:`size` (see :func:`records_from`)."""
        return records_from(list(self.segments), start, self._offset_of)

    def _offset_of(self, index: int) -> int | None:
        # As LogReader._offset_of: where record index-1 of the same segment ends.
        return _end_of(
            os.pread(self._offsets_fd, OFFSET_ENTRY.size, (index - 1) * OFFSET_ENTRY.size)
        )

    def record(self, index: int) -> bytes:
        """The bytes of record ``index`` (must be below :attr:`size`)."""
        if not self.segments[0][0] <= index < self.tree.size:
            raise NotFound(f"no audit record {index} (pruned after its retention, or not yet)")
        offset, length = OFFSET_ENTRY.unpack(
            os.pread(self._offsets_fd, OFFSET_ENTRY.size, index * OFFSET_ENTRY.size)
        )
        pos = bisect.bisect_right(self._firsts, index) - 1
        first, path = self.segments[pos]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self.missing_segment(first, path)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        return data

    def missing_segment(self, first: int, path: Path) -> NoReturn:
        """Explain a segment file that vanished while this store was open.

        ``gateway audit prune`` may delete closed segments under a running
        gateway (the segment list is read at start-up): a segment its
        manifest names is gone on purpose, its records are simply no more.

        Raises:
            NotFound: the segment was pruned after its retention.
            AuditIntegrityError: it was deleted without pruning.
        """
        try:
            manifest = (self.directory / PRUNED_FILE).read_text("utf-8").splitlines()
        except FileNotFoundError:
            manifest = []
        for line in manifest:
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(line).get("first") == first:
                    raise NotFound(f"no audit record from {first} on (pruned after its retention)")
        raise AuditIntegrityError(f"{path}: segment missing, and not pruned")

    def close(self) -> None:
        """Close every file and release the lock (idempotent)."""
        fds = [self._segment_fd, self._offsets_fd, self._checkpoints_fd, self._lock_fd]
        fds += list(self._level_fds.values())
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._segment_fd = self._offsets_fd = self._checkpoints_fd = self._lock_fd = -1
        self._level_fds = {}
