"""Offline verification of a whole log directory (``gateway audit verify``).

The verifier trusts only the public key. It recomputes the Merkle tree from
the segment files and checks every signed checkpoint against it: a root that
differs, or a checkpoint larger than the log, proves an edit, deletion,
reordering, insertion or truncation.

To name the *first bad index* it also reads the log's own leaf-hash index
(``index/level-00.bin``). That file is not trusted by itself, but when the
tree built from the stored leaf hashes reproduces a signed root, each stored
leaf hash is authenticated by that signature (collision resistance), so the
first record whose recomputed hash differs from its stored one is exactly
the first tampered record. If the index was rewritten too, the verifier
falls back to the last checkpoint that still matches: the damage lies in
``[that size, the failing checkpoint's size)`` and its start is reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit.errors import AuditIntegrityError
from gateway.audit.merkle import HASH_SIZE, CompactRange, leaf_hash
from gateway.audit.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from gateway.audit.records import RecordError, parse_canonical
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    INDEX_DIR,
    PRUNED_FILE,
    LogReader,
    level_name,
)


@dataclass(slots=True)
class Problem:
    """One finding of the verifier.

    Attributes:
        index: the first record index the finding implicates, if any.
        message: what is wrong, naming the file or checkpoint line.
    """

    index: int | None
    message: str


@dataclass(slots=True)
class VerifyResult:
    """Outcome of :func:`verify_log`.

    Attributes:
        records: records read from the segments.
        checkpoints: checkpoints whose signature verified.
        latest: the largest verified checkpoint.
        problems: failures (any problem fails verification).
        warnings: conditions worth knowing that are not tampering, such as
            records not yet covered by a checkpoint.
        suppressed: problems beyond :data:`MAX_PROBLEMS` not listed.
    """

    records: int = 0
    checkpoints: int = 0
    latest: Checkpoint | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    suppressed: int = 0

    @property
    def ok(self) -> bool:
        """Whether the log verified."""
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        """The smallest record index any problem implicates."""
        indices = [p.index for p in self.problems if p.index is not None]
        return min(indices) if indices else None


class _StoredLeaves:
    """Sequential reader of the log's own leaf-hash index (an untrusted hint)."""

    def __init__(self, directory: Path) -> None:
        path = directory / INDEX_DIR / level_name(0)
        self.count = path.stat().st_size // HASH_SIZE if path.exists() else 0
        self._file = path.open("rb") if self.count else None

    def next(self) -> bytes | None:
        if self._file is None:
            return None
        data = self._file.read(HASH_SIZE)
        return data if len(data) == HASH_SIZE else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _TreeWalk:
    """Streams the records, recomputing the tree (and the stored-leaf tree beside it)."""

    def __init__(self, reader: LogReader, result: VerifyResult) -> None:
        self._lines = reader.iter_lines()
        self._last_segment = reader.segments[-1][1] if reader.segments else None
        self._result = result
        self._stored = _StoredLeaves(reader.directory)
        self.tree = CompactRange()
        self.stored_tree: CompactRange | None = CompactRange()
        self.first_leaf_mismatch: int | None = None
        self.exhausted = False
        self._pruned_until = 0
        first = reader.segments[0][0] if reader.segments else 0
        if first:
            self._stand_in_for_pruned(reader, first)

    def _stand_in_for_pruned(self, reader: LogReader, first: int) -> None:
        """Feed the stored leaf hashes of records ``0..first-1``, whose segments are gone.

        Legitimately they were pruned after their retention (``pruned.jsonl``
        says so); the signed roots then authenticate the stored hashes.
        """
        expected = 0
        try:
            with (reader.directory / PRUNED_FILE).open("rb") as manifest:
                for raw in manifest:
                    entry = json.loads(raw)
                    if entry.get("first") != expected:
                        break
                    expected += int(entry["count"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if expected == first:
            self._result.warnings.append(
                f"records 0..{first - 1} were pruned after their retention "
                f"({PRUNED_FILE}); their indexed leaf hashes stand in for them"
            )
        else:
            self._problem(
                min(expected, first),
                f"records {min(expected, first)}..{first - 1}: segment files are missing "
                f"and not recorded as pruned in {PRUNED_FILE}",
            )
        self._pruned_until = first

    def _stand_in(self) -> None:
        """One pruned record: its stored leaf hash enters both trees."""
        index = self.tree.size
        leaf = self._stored.next() if index < self._stored.count else None
        if leaf is None:
            self._problem(index, f"records from {index}: neither segments nor index hold them")
            self.exhausted = True
            return
        self.tree.append(leaf)
        if self.stored_tree is not None:
            self.stored_tree.append(leaf)

    @property
    def count(self) -> int:
        return self.tree.size

    @property
    def stored_count(self) -> int:
        return self._stored.count

    def advance(self, size: int) -> None:
        """Read records until ``size`` are in the tree or the log ends."""
        while not self.exhausted and self.tree.size < size:
            self._step()

    def drain(self) -> None:
        """Read every remaining record."""
        while not self.exhausted:
            self._step()
        self._stored.close()

    def _problem(self, index: int, message: str) -> None:
        _add(self._result, Problem(index, message))

    def _step(self) -> None:
        count = self.tree.size
        if count < self._pruned_until:
            self._stand_in()
            return
        item = next(self._lines, None)
        if item is None:
            self.exhausted = True
            return
        expected_index, line = item
        if expected_index != count:
            self._problem(
                count,
                f"{line.segment}: segment starts at record {expected_index}, expected "
                f"{count}: a segment file is missing or extra",
            )
            self.exhausted = True
            return
        if not line.complete:
            if line.segment == self._last_segment:
                self._result.warnings.append(
                    f"{line.segment}: incomplete final record {count} at byte {line.offset} "
                    "(a torn write; the gateway cuts it off on restart)"
                )
            else:
                self._problem(count, f"{line.segment}: record {count} is cut short")
            self.exhausted = True
            return
        try:
            parse_canonical(line.data)
        except RecordError as exc:
            self._problem(count, f"{line.segment}: record {count} at byte {line.offset}: {exc}")
        leaf = leaf_hash(line.data)
        stored_leaf = self._stored.next() if count < self._stored.count else None
        if stored_leaf is not None and stored_leaf != leaf and self.first_leaf_mismatch is None:
            self.first_leaf_mismatch = count
        self.tree.append(leaf)
        if self.stored_tree is not None:
            if stored_leaf is None:
                self.stored_tree = None
            else:
                self.stored_tree.append(stored_leaf)


#: A log forged wholesale could yield millions of findings; the first ones say it all.
MAX_PROBLEMS = 100


def _add(result: VerifyResult, problem: Problem) -> None:
    if len(result.problems) < MAX_PROBLEMS:
        result.problems.append(problem)
    else:
        result.suppressed += 1


def verify_log(directory: str | os.PathLike[str], verifiers: list[NoteVerifier]) -> VerifyResult:
    """Verify a log directory against the gateway's public key(s).

    One streaming pass over the records and the checkpoints together (both
    only grow, and checkpoint sizes never decrease), so memory stays O(log n)
    however many years the log holds.

    Raises:
        AuditUnavailable: not a log directory.
        AuditIntegrityError: ``checkpoints.jsonl`` is malformed before its last line.
    """
    reader = LogReader(directory)
    result = VerifyResult()
    cp_path = reader.directory / CHECKPOINTS_FILE
    walk = _TreeWalk(reader, result)
    origin: str | None = None
    previous = 0
    last_good = 0  # the largest size whose signed root matched the records
    failed = False  # after the first root mismatch, later roots fail for the same reason
    checkpoints = reader.checkpoints()
    entries = iter(checkpoints)
    while True:
        try:
            entry = next(entries, None)
        except AuditIntegrityError as exc:  # a malformed line before the last one
            _add(result, Problem(None, f"{exc.detail}: forged or damaged checkpoint"))
            break
        if entry is None:
            break
        where = f"{cp_path}:{entry.line}"
        try:
            checkpoint, _ = open_checkpoint(entry.note, verifiers)
        except NoteError as exc:
            _add(result, Problem(None, f"{where}: forged or damaged checkpoint: {exc}"))
            continue
        if origin is None:
            origin = checkpoint.origin
        elif checkpoint.origin != origin:
            _add(
                result, Problem(None, f"{where}: checkpoint of another log ({checkpoint.origin!r})")
            )
            continue
        size = checkpoint.size
        if size < previous:
            _add(
                result,
                Problem(size, f"{where}: tree size went backwards from {previous} to {size}"),
            )
            continue
        previous = size
        result.checkpoints += 1
        result.latest = checkpoint
        if failed:
            continue
        walk.advance(size)
        if walk.count < size:
            _add(
                result,
                Problem(
                    walk.count,
                    f"{where}: checkpoint covers {size} records but the log has {walk.count}: "
                    f"records from {walk.count} were deleted or truncated",
                ),
            )
            failed = True
        elif walk.tree.root() == checkpoint.root_hash:
            last_good = size
        else:
            failed = True
            mismatch = walk.first_leaf_mismatch
            stored_ok = walk.stored_tree is not None and (
                walk.stored_tree.root() == checkpoint.root_hash
            )
            if stored_ok and mismatch is not None and last_good <= mismatch < size:
                message = (
                    f"record {mismatch}: differs from the record the signed checkpoint "
                    f"({where}, size {size}) covers: edited, inserted, deleted or reordered"
                )
                _add(result, Problem(mismatch, message))
            else:
                message = (
                    f"records {last_good}..{size - 1}: do not reproduce the signed root of "
                    f"{where} (size {size}); the index was altered too, so the first bad "
                    f"record is at or after {last_good}"
                )
                _add(result, Problem(last_good, message))
    if checkpoints.torn_at is not None:
        result.warnings.append(f"{cp_path}: torn final line ignored (a crash while writing it)")
    if result.checkpoints == 0:
        _add(result, Problem(None, f"{cp_path}: no checkpoint verifies with the key"))
    walk.drain()
    result.records = walk.count
    covered = result.latest.size if result.latest else 0
    mismatch = walk.first_leaf_mismatch
    if mismatch is not None and mismatch >= covered:
        _add(
            result,
            Problem(
                mismatch,
                f"record {mismatch}: differs from its indexed leaf hash "
                "(not yet covered by a checkpoint)",
            ),
        )
    if walk.stored_count > walk.count and not result.problems:
        result.warnings.append(
            f"the index holds {walk.stored_count} leaf hashes but the segments "
            f"{walk.count} records: records from {walk.count} may have been truncated, "
            "or the log is being written"
        )
    if walk.count > covered and result.checkpoints:
        result.warnings.append(
            f"records {covered}..{walk.count - 1} are not yet covered by a signed checkpoint"
        )
    return result
