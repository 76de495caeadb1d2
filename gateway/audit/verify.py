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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit.errors import AuditIntegrityError
from gateway.audit.merkle import HASH_SIZE, CompactRange, leaf_hash
from gateway.audit.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint, open_note
from gateway.audit.records import RecordError, parse_canonical
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    INDEX_DIR,
    MAX_CHECKPOINT_LINE,
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
        witnessed: co-signed checkpoints (from the witness's store) that the
            records reproduce.
        witnessed_latest: the largest of them.
        problems: failures (any problem fails verification).
        warnings: conditions worth knowing that are not tampering, such as
            records not yet covered by a checkpoint.
        suppressed: problems beyond :data:`MAX_PROBLEMS` not listed.
    """

    records: int = 0
    checkpoints: int = 0
    latest: Checkpoint | None = None
    witnessed: int = 0
    witnessed_latest: Checkpoint | None = None
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


@dataclass(frozen=True, slots=True)
class Witnessed:
    """A checkpoint of this log that the other park's witness co-signed.

    Attributes:
        where: ``file:line`` of the note in the witness's store.
        checkpoint: its body (signed by the log's key and the witness's).
        witnesses: names of the witness keys that signed it.
    """

    where: str
    checkpoint: Checkpoint
    witnesses: frozenset[str]


def _witness_notes(path: Path) -> Iterator[tuple[int, str | None]]:
    """``(line, note)`` of a witness store, ``note`` ``None`` where a line is malformed.

    A witness store (``<witness_dir>/<origin>.jsonl``, as either park keeps
    it) is JSON lines ``{"note": …, "time": …}``; a file that does not start
    with ``{`` is one note (as ``GET /v1/witness`` hands it out).
    """
    with path.open("rb") as file:
        if file.read(1) != b"{":
            file.seek(0)
            data = file.read(MAX_CHECKPOINT_LINE + 1)
            # Undecodable or oversized: a text no key verifies, so a problem, not a torn line.
            yield 1, data.decode("utf-8", "replace") if len(data) <= MAX_CHECKPOINT_LINE else ""
            return
        file.seek(0)
        for number, raw in enumerate(file, start=1):
            try:
                if len(raw) > MAX_CHECKPOINT_LINE or not raw.endswith(b"\n"):
                    raise ValueError("torn or too long")
                note = json.loads(raw)["note"]
            except (ValueError, KeyError, TypeError):
                note = None
            yield number, note if isinstance(note, str) else None


def read_witnessed(
    path: Path,
    log_keys: Sequence[NoteVerifier],
    witness_keys: Sequence[NoteVerifier],
    result: VerifyResult,
) -> Iterator[Witnessed]:
    """Stream the co-signed checkpoints of a witness store, oldest first.

    Each note must carry a valid signature by one of ``witness_keys`` and by
    one of ``log_keys``; a note that does not, and a store whose sizes go
    backwards (a witness never co-signs that), are problems in ``result``
    and skipped. A malformed final line (a crash while appending) is a
    warning; one before it a problem.
    """
    previous: Witnessed | None = None
    malformed: int | None = None
    try:
        for number, note in _witness_notes(path):
            if malformed is not None:
                _add(result, Problem(None, f"{path}:{malformed}: malformed co-signed note line"))
                malformed = None
            if note is None:
                malformed = number
                continue
            where = f"{path}:{number}"
            try:
                witnesses = open_note(note, witness_keys).signers
            except NoteError as exc:
                _add(result, Problem(None, f"{where}: not co-signed by the witness key: {exc}"))
                continue
            try:
                checkpoint, _ = open_checkpoint(note, log_keys)
            except NoteError as exc:
                _add(result, Problem(None, f"{where}: not a checkpoint signed by the log: {exc}"))
                continue
            if previous is not None and checkpoint.size < previous.checkpoint.size:
                message = (
                    f"{where}: co-signed size {checkpoint.size} is below {previous.where}'s "
                    f"{previous.checkpoint.size}: the witness store was altered"
                )
                _add(result, Problem(None, message))
                continue
            previous = Witnessed(where, checkpoint, witnesses)
            yield previous
    except OSError as exc:
        _add(result, Problem(None, f"{path}: cannot read the witness store: {exc.strerror}"))
    if malformed is not None:
        result.warnings.append(
            f"{path}:{malformed}: torn final line ignored (a crash while writing it)"
        )


class _WitnessCheck:
    """Compares the records with each co-signed checkpoint, in size order.

    The log's own checkpoints prove the records match what the log signed;
    the witness's copies prove the log did not sign a *different* history
    since: a log truncated and re-signed (rolled back) or rewritten and
    re-signed (forked) by someone holding its key still fails here.
    """

    def __init__(self, entries: Iterator[Witnessed], walk: _TreeWalk, result: VerifyResult):
        self._entries = entries
        self._walk = walk
        self._result = result
        self._next = next(entries, None)
        self.failed = False

    def upto(self, size: int | None, origin: str | None) -> None:
        """Check every co-signed checkpoint up to ``size`` (``None``: all the rest)."""
        while self._next is not None and (size is None or self._next.checkpoint.size <= size):
            entry, self._next = self._next, next(self._entries, None)
            if not self.failed:
                self._check(entry, origin)

    def _check(self, entry: Witnessed, origin: str | None) -> None:
        checkpoint, where = entry.checkpoint, entry.where
        if origin is not None and checkpoint.origin != origin:
            _add(
                self._result,
                Problem(
                    None, f"{where}: co-signed checkpoint of another log ({checkpoint.origin!r})"
                ),
            )
            return
        walk = self._walk
        walk.advance(checkpoint.size)
        agreed = self._result.witnessed_latest
        since = agreed.size if agreed is not None else 0
        if walk.count < checkpoint.size:
            self.failed = True
            message = (
                f"rolled back: {where}: the witness co-signed {checkpoint.size} records but "
                f"the log holds {walk.count}: records from {walk.count} were removed"
            )
            _add(self._result, Problem(walk.count, message))
        elif walk.tree.root() != checkpoint.root_hash:
            self.failed = True
            message = (
                f"forked: records {since}..{checkpoint.size - 1} do not reproduce the root the "
                f"witness co-signed at size {checkpoint.size} ({where}): the log was "
                "rewritten after it was witnessed"
            )
            _add(self._result, Problem(since, message))
        else:
            self._result.witnessed += 1
            self._result.witnessed_latest = checkpoint


#: A log forged wholesale could yield millions of findings; the first ones say it all.
MAX_PROBLEMS = 100


def _add(result: VerifyResult, problem: Problem) -> None:
    if len(result.problems) < MAX_PROBLEMS:
        result.problems.append(problem)
    else:
        result.suppressed += 1


def verify_log(
    directory: str | os.PathLike[str],
    verifiers: list[NoteVerifier],
    *,
    witness_keys: Sequence[NoteVerifier] = (),
    witnessed: Sequence[Path] = (),
) -> VerifyResult:
    """Verify a log directory against the gateway's public key(s).

    One streaming pass over the records and the checkpoints together (both
    only grow, and checkpoint sizes never decrease), so memory stays O(log n)
    however many years the log holds.

    With ``witness_keys`` and ``witnessed`` (the other park's witness store
    of this log, ``<witness_dir>/<origin>.jsonl``), every checkpoint the
    witness co-signed must also be reproduced by the records, in the same
    pass: a log rolled back or forked behind a witnessed checkpoint fails
    even when its own checkpoints were re-signed to match.

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
    witness = _WitnessCheck(
        (
            entry
            for path in witnessed
            for entry in read_witnessed(Path(path), verifiers, witness_keys, result)
        ),
        walk,
        result,
    )
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
        witness.upto(size, origin)
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
    witness.upto(None, origin)
    _check_checkpoints_kept(result, cp_path, witness)
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


def _check_checkpoints_kept(result: VerifyResult, cp_path: Path, witness: _WitnessCheck) -> None:
    """The log signs (and stores) a checkpoint before offering it to the witness,
    so the witness cannot hold a larger one than the log's own file."""
    witnessed = result.witnessed_latest
    if witnessed is None or witness.failed:
        return
    own = result.latest.size if result.latest is not None else 0
    if witnessed.size > own:
        _add(
            result,
            Problem(
                None,
                f"rolled back: {cp_path} ends at size {own} but the witness co-signed size "
                f"{witnessed.size}: signed checkpoints were removed",
            ),
        )
