"""TextMatcher: Hyperscan streaming over text members, validation, counting.

The decoder drives a :class:`TextMatcher` through the ``TextSink`` methods
(``begin_member``, ``text``, ``end_member``, ``unscannable``, and ``finding``
for what format readers count themselves). Per member the
matcher owns a stream on the detector set's literal Hyperscan database and,
with the Python reference, one on its digit database; the compiled core
instead finds the digit cores and the matcher scans the digit database only
over the windows around them (:class:`DigitScan`, issue 17: the same hits). Per chunk it:

1. scans the chunk with both databases; the callback only records one packed
   int per hit (``end << 20 | id``); runs of 60 bases are found with
   ``bytes.translate`` (or in the compiled core), and those that are a token
   of their own (the token rule, :func:`genetic_runs_py`) recorded the same way;
2. sorts the hits by end offset, then id (Hyperscan's order among equal end
   offsets is not part of its contract, ours must be);
3. runs one small handler per hit on a ``window`` that holds at least the
   :data:`TAIL_BYTES` before the hit (the chunk itself, or for hits near its
   start the tail of earlier text + its beginning). Every look-back is bounded
   by :data:`~gateway.classify.detectors.CONTEXT_BYTES` and every position is
   an absolute stream offset, so the outcome does not depend on where chunks
   were cut, and memory does not depend on input size.

A member is framed by one ``\\n`` before and two after it: the patterns
include the boundary byte on each side (and some one byte of look-ahead), so
the frame makes an identifier at the very start or end of a member look like
any other.

Precedence (SPEC §3.1): validated candidates of ``pii.cn_resident_id``,
``org.cn_uscc``, ``pii.bank_card``, ``pii.cn_phone`` and ``pii.hk_phone`` whose
spans overlap are one finding, of the first label in that order. The same
rule merges overlapping findings of one label (``J45`` and ``J45.9``,
``+86 138…`` seen by two pattern variants). A candidate stays pending until
the next candidate of its group shows it is not overlapped.

Distinct values are kept as canonical bytes in per-label sets (bounded per
label by :data:`MAX_DISTINCT_PER_LABEL` and over all labels by
:data:`MAX_DISTINCT_VALUES`), so each distinct value is HMAC-ed exactly once,
in :meth:`TextMatcher.result`.

By default steps 2 and 3 run in the compiled core (``_native.c``): it sorts
the hits, runs the handlers of the identifier kinds natively and calls the
Python handler of every other kind, and it owns the counts, the distinct
values and the pending candidates. The ``_h_*`` handlers, ``_py_accept`` and
``_py_propose`` here are the reference implementation (``native=False``),
which the tests hold the core to.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import hyperscan

from gateway.classify import chance as C
from gateway.classify import detectors as D
from gateway.classify import labels as L
from gateway.classify import validators as V
from gateway.classify.summary import LabelStats

try:
    from gateway.classify import _native
except ImportError:  # pragma: no cover - a source tree whose extension was not built
    _native = None  # type: ignore[assignment]

#: Whether the compiled matcher core (``_native.c``) is built: TextMatcher uses
#: it by default; ``gateway bench classify`` says which core it measured.
NATIVE_AVAILABLE: Final = _native is not None

#: Bytes of earlier text kept before each chunk (see module docstring).
TAIL_BYTES: Final = D.CONTEXT_BYTES + D.MAX_FIXED_WIDTH

#: Distinct values tracked per label and scan. Above the 100,000-person
#: threshold of the CAC Provisions (REGULATIONS.md) so one transfer can show it
#: crosses it exactly. Past it, that label's ``distinct`` (and ``subjects``)
#: become lower bounds and ``distinct_capped`` is set; other labels go on counting.
MAX_DISTINCT_PER_LABEL: Final = 250_000

#: Distinct values tracked per scan over all labels: the memory bound (about
#: 100 bytes each, so at most ~50 MB per scan). Twice the per-label bound, so
#: one label that fills its bound leaves as much again for all the others.
MAX_DISTINCT_VALUES: Final = 2 * MAX_DISTINCT_PER_LABEL

#: Validation results remembered per validator (candidate bytes -> bool), so a
#: value repeated through a file is checked once. ~100 bytes per entry, four
#: validators: at most ~6.5 MB per scan.
MEMO_ENTRIES: Final = 16_384

#: Text is scanned in slices of at most this size, which bounds the hit list
#: of one scan call (a slice of back-to-back phone numbers: ~22,000 hits, ~2 MB)
#: however large the chunks the caller feeds.
SCAN_SLICE_BYTES: Final = 256 * 1024

#: ``content.unscannable`` reasons kept verbatim; further ones are only counted.
MAX_REASONS: Final = 1_000

#: RFC 5321 §4.5.3.1: local part ≤ 64 octets, domain ≤ 255.
EMAIL_LOCAL_MAX: Final = 64
EMAIL_DOMAIN_MAX: Final = 255

#: Longest "lat, long" text parsed back from its end (two numbers with up to
#: ~40 decimals each, and a key between them); a longer one is not a location
#: someone typed.
GEO_TEXT_MAX: Final = 128

#: Bytes of a genetic record's header/line kept as its identity for distinct counting.
RECORD_ID_BYTES: Final = 64

#: Distinct values of the lines of one block of runs of bases kept while the
#: token rule has not decided the block (about 0.5 MB); a larger block counts
#: as a sequence from there on (see ``TextMatcher._h_genetic_run``).
GENETIC_PENDING_MAX: Final = 4096

#: Base-64 bytes of a private key block used as its identity: the first ones
#: after its BEGIN line, or for a block whose BEGIN was cut off, the last ones
#: before its END line (one 64-character PEM line, RFC 7468 §2).
PEM_ID_BYTES: Final = 64

#: Bytes after a BEGIN line read for those first 64 (room for line breaks and
#: the armor headers of OpenPGP, RFC 9580 §6.2); always inside the context buffer.
PEM_SAMPLE_BYTES: Final = 256

#: Bits of a packed hit that hold the expression id (a million expressions).
_ID_BITS: Final = 20
_ID_MASK: Final = (1 << _ID_BITS) - 1

#: ``bytes.translate`` table: nucleotide bytes (SPEC §3.1) -> 0x01, others -> 0x00.
_BASE_TABLE: Final = bytes(1 if c in D.GENETIC_BASES else 0 for c in range(256))
_GENETIC_MIN: Final = D.GENETIC_MIN_RUN
_GENETIC_RUN_MARKS: Final = b"\x01" * _GENETIC_MIN
#: Stride of the sample that rules out runs of bases in a chunk: any run of 60
#: holds 60 // 12 = 5 sampled bytes in a row. Digits and CSV show no such
#: sample run at all; English prose (a quarter of its bytes are a/c/g/t/n)
#: shows about 70 per MB, each checked on the bytes around it alone.
_GENETIC_STRIDE: Final = 12
_GENETIC_SAMPLE_RUN: Final = b"\x01" * (_GENETIC_MIN // _GENETIC_STRIDE)
#: Below this size a chunk is translated whole (the sample saves nothing).
_GENETIC_SAMPLE_MIN_BYTES: Final = 1024

#: Built-in hotwords per class, lower-cased, with whether each must be a whole
#: word (the ASCII ones: "hotel" and "telemetry" hold no "tel").
_BUILTIN_HOTWORDS: Final = {
    cls: tuple((w.lower().encode(), w.isascii() and w.isalpha()) for w in words)
    for cls, words in D.BUILTIN_HOTWORDS.items()
}

#: Hotword position meaning "none seen in this member".
_NEVER: Final = -(1 << 62)

#: Precedence group key for the pending-candidate table (labels use their index ≥ 0).
_PRECEDENCE_GROUP: Final = -1
_RANK: Final = {label: rank for rank, label in enumerate(L.PRECEDENCE)}

#: Byte classes as 256-entry tables (indexing beats ``bytes.isalnum()`` per byte).
_ALNUM: Final = bytes(1 if chr(c).isascii() and chr(c).isalnum() else 0 for c in range(256))
_DIGIT: Final = bytes(1 if 48 <= c <= 57 else 0 for c in range(256))
_SEPARATOR: Final = frozenset(b" -")
#: ``bytes.translate`` table: e-mail local-part characters -> 0x01, others -> 0x00.
_EMAIL_LOCAL_TABLE: Final = bytes(
    1 if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "._%+-") else 0 for c in range(256)
)
#: The same for JWT characters (base64url and the dots between the parts).
_DIGIT_X_TABLE: Final = bytes(1 if _DIGIT[c] or c in b"Xx" else 0 for c in range(256))
_ICD_TABLE: Final = bytes(1 if _ALNUM[c] or c == 0x2E else 0 for c in range(256))
_LETTER: Final = bytes(1 if chr(c).isascii() and chr(c).isalpha() else 0 for c in range(256))
#: SPEC §3.1 ICD-10 code shape.
_ICD: Final = re.compile(rb"[A-TV-Z][0-9][0-9AB](?:\.[0-9A-Z]{1,4})?")
#: A last group of at most this many characters (separator included: 3
#: digits) is no group of a grouped number: cards and phones group in 4s.
_SHORT_GROUP: Final = 4
#: Widest group of a grouped number (the Amex 4-6-5 print layout).
_GROUP_DIGITS_MAX: Final = 6
#: Longest grouped number: 19 digits in fours = 23 bytes.
_GROUPED_MAX: Final = 23
#: Grouped shapes as class masks (d = digit, s = the separator), with their label.
_GROUP_SHAPES: Final = tuple(
    (mask.encode(), label)
    for mask, label in (
        ("dddsddddsdddd", L.CN_PHONE),
        ("ddddsdddd", L.HK_PHONE),
        ("ddddsddddsddddsddd", L.BANK_CARD),
        ("ddddsddddsddddsdddd", L.BANK_CARD),
        ("ddddsddddsddddsddddsd", L.BANK_CARD),
        ("ddddsddddsddddsddddsdd", L.BANK_CARD),
        ("ddddsddddsddddsddddsddd", L.BANK_CARD),
        ("ddddsddddddsddddd", L.BANK_CARD),
    )
)
#: The shapes longest first. A longer shape's label never ranks below that of
#: a shape it ends with (cards before phones, CN 3-4-4 before HK 4-4), so once
#: a longer shape is the pending candidate, every shorter one overlaps it and
#: loses in ``_propose``: the matcher stops there instead of validating them.
_GROUP_SHAPES_LONGEST_FIRST: Final = tuple(sorted(_GROUP_SHAPES, key=lambda s: -len(s[0])))
#: For a run that is exactly one shape: that shape and the shapes it ends with,
#: longest first.
_GROUP_SUFFIXES: Final = {
    mask: tuple((m, label) for m, label in _GROUP_SHAPES_LONGEST_FIRST if mask.endswith(m))
    for mask, _ in _GROUP_SHAPES
}
_GROUP_CLASSES: Final = {
    sep: bytes(0x64 if 48 <= c <= 57 else 0x73 if c == sep[0] else 0x6F for c in range(256))
    for sep in (b" ", b"-")
}
#: REGULATIONS.md: the second character of E/C + letter + 7 digits is never I or O.
_DOC_SECOND_LETTER: Final = frozenset(b"ABCDEFGHJKLMNPQRSTUVWXYZ")
#: Handler kinds the compiled core runs itself; every other kind calls its
#: Python handler from the core's loop.
_NATIVE_OPS: Final[dict[int, int]] = (
    {}
    if _native is None
    else {
        D.K_DIGITS: _native.OP_DIGITS,
        D.K_USCC: _native.OP_USCC,
        D.K_GROUPED: _native.OP_GROUPED,
        D.K_LETTERS: _native.OP_LETTERS,
        D.K_HKID_BRACKETS: _native.OP_HKID_BRACKETS,
        D.K_EMAIL: _native.OP_EMAIL,
    }
)
#: The labels the native handlers name, in the order ``_native.Core`` expects.
_NATIVE_LABELS: Final = (
    L.CN_RESIDENT_ID,
    L.CN_USCC,
    L.BANK_CARD,
    L.CN_PHONE,
    L.HK_PHONE,
    L.HK_ID,
    L.CN_PASSPORT,
    L.HK_PASSPORT,
    L.CN_TRAVEL_PERMIT,
)
#: The chance-tested validators are the first native labels, in the same order
#: (the core's CH_* index is its LB_* index).
assert _NATIVE_LABELS[: len(C.CHANCE_LABELS)] == C.CHANCE_LABELS
#: Column profiles (the compiled core's MAX_COLUMNS, MAX_SOURCES): columns past
#: the first MAX_COLUMNS of a table, and columns past MAX_SOURCES in one scan,
#: are not profiled (their findings count as outside a table).
MAX_COLUMNS: Final = 1024
MAX_SOURCES: Final = 65536
#: Tables past this many in one scan are not profiled (their header cells are
#: kept for the report: at most CONTEXT_BYTES each).
MAX_TABLES: Final = 1024
#: A distinct value whose column was set aside as chance-level (the core's SOURCE_ASIDE).
_ASIDE: Final = -2
#: Member types whose lines are table rows: delimited text, and plain text,
#: whose line is a value when it is nothing else (a list of sample IDs).
_TABLE_TYPES: Final = frozenset({"text/csv", "text/tab-separated-values"})
_LINE_TABLE_TYPES: Final = frozenset({"text/plain"})
#: A first line with a cell of this many digits or more is a row, not a header.
_DATA_CELL_DIGITS: Final = 8
#: The bytes around a value on a line of its own.
_LINE_PAD: Final = b' \t"'
_CH_RESIDENT_ID, _CH_USCC, _CH_CARD, _CH_CN_PHONE, _CH_HK_PHONE = range(len(C.CHANCE_LABELS))

#: Memo tables, one per validator.
K_MEMO_RESIDENT_ID: Final = 0
K_MEMO_USCC: Final = 1
K_MEMO_CARD: Final = 2
K_MEMO_HKID: Final = 3
_JWT_TABLE: Final = bytes(
    1 if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "_-.") else 0 for c in range(256)
)
_GEO_TAIL: Final = re.compile(
    rb"([0-9]{2,3}\.[0-9]{5,})" + D.GEO_SEPARATOR + rb"([0-9]{2,3}\.[0-9]{5,})\Z"
)
_GBA_LAT: Final = (21.5, 23.5)  # SPEC §3.1 geo.precise_location: 21.5-23.5 N
_GBA_LON: Final = (112.5, 115.0)  # SPEC §3.1: 112.5-115.0 E
#: IUPAC nucleotide codes (with ambiguity letters) and alignment gaps.
_IUPAC_NUCLEOTIDES: Final = b"ACGTUNRYKMSWBDHVacgtunrykmswbdhv.-"
#: At most one letter in 10 of a nucleotide line may be an ambiguity code: the
#: decoder's sniffer uses the same 90% share of plain bases.
_NUCLEOTIDE_PARTS: Final = 10
_RECORD_MARK: Final = {
    "text/x-fasta": b"\n>",
    "text/x-fastq": b"\n@",
    "text/x-vcf": b"\n",
    "text/x-sam": b"\n",
}


#: Delimiters the diagnosis-column rule recognises in a header line: RFC 4180's
#: comma, the semicolon of spreadsheets in decimal-comma locales, and tab.
_COLUMN_DELIMITERS: Final = (b",", b";", b"\t")


#: The words that make a header cell a diagnosis column (lower case, as the header is).
_DIAGNOSIS_WORDS: Final = tuple(w.encode() for w in D.BUILTIN_HOTWORDS[D.HW_DIAGNOSIS])


def _unquoted(line: bytes) -> bytes:
    """``line`` without the insides of its quoted CSV fields (RFC 4180 ``"…"``, ``""``)."""
    return b"".join(line.split(b'"')[::2])


def _split_cells(line: bytes, sep: bytes) -> list[bytes]:
    """The cells of one CSV line: ``sep`` splits only outside quotes (RFC 4180)."""
    cells = [b""]
    for i, part in enumerate(line.split(b'"')):
        if i % 2:  # inside quotes
            cells[-1] += part
            continue
        pieces = part.split(sep)
        cells[-1] += pieces[0]
        cells.extend(pieces[1:])
    return cells


def _nucleotides(line: bytes) -> bool:
    """Whether a FASTA sequence line holds nucleotides, not amino acids.

    The same test the decoder's sniffer applies to a whole file (IUPAC
    nucleotide letters and gaps only, at least 90% plain bases ACGTUN), here
    per record, as a multi-FASTA may mix records.
    """
    line = line.rstrip(b"\r")
    if not line or line.translate(None, _IUPAC_NUCLEOTIDES):
        return False
    letters = line.translate(None, b".-")
    others = len(letters.translate(None, b"ACGTUNacgtun"))
    return others * _NUCLEOTIDE_PARTS <= len(letters)


# -- runs of bases: the token rule ---------------------------------------------
#
# SPEC §3.1 counts a run of >= 60 bases outside the genomic formats; issue 13
# adds that it counts only as a token of its own, as identifiers do, so that
# base64 (zero bytes encode as "AAAA…") and PEM blocks are no genetic data:
#
# * a run that touches a token byte (detectors.GENETIC_TOKEN: letters, digits,
#   base64's "+/-_=") is part of a longer token; "=" only joins on the right
#   (padding ends base64, "seq=ACGT…" is a sequence);
# * a run alone on its line (blanks aside) is a line of a block. Consecutive
#   such lines are one block, and the block is base64 when the line above or
#   below it shows base64: a token of 60+ bytes that is not all bases (a full
#   line of base64 or a run glued inside one), a PEM armor line ("-----" and a
#   letter), or below, a last line that ends in padding ("AAA="). A blank
#   line, prose, a short word or a short line of bases shows nothing.
#
# Lines are counted one by one as before, once their block is known to be no
# base64; until then they are pending (the matcher's handler keeps their
# values). JSON escapes count as what they stand for ("\n" a line break, "\t"
# a blank, "\/" a token byte), so JSON strings wrapped with escaped line breaks
# read as their text does. Every decision reads at most detectors.GENETIC_REACH
# bytes on either side of a run; the state carried between chunks is
# (bases at the end, flags, position), and ``_native.genetic_runs`` is the same
# function in C (tests/classify/test_native.py holds them to each other).
#
# What the rule cannot tell apart: base64 made of bases only (of zero bytes
# alone, unpadded, no armor around it) from a poly-A sequence; a block whose
# only base64 line is a short unpadded last line; and "5'-ACGT…-3'" is glued
# by base64url's "-".

#: Byte classes of the rule: a base, another token byte, a blank, a line break,
#: any other byte, and the backslash that may start an escape.
_G_BASE: Final = 0
_G_TOKEN: Final = 1
_G_SPACE: Final = 2
_G_BREAK: Final = 3
_G_OTHER: Final = 4
_G_ESCAPE: Final = 5


def _genetic_tables() -> tuple[bytes, bytes]:
    """The class of every byte, and of every byte after a backslash (detectors.GENETIC_*)."""
    classes = bytearray([_G_OTHER]) * 256
    for c in D.GENETIC_TOKEN:
        classes[c] = _G_TOKEN
    for c in D.GENETIC_BASES:
        classes[c] = _G_BASE
    for c in D.GENETIC_SPACE:
        classes[c] = _G_SPACE
    classes[0x0A] = _G_BREAK
    classes[0x5C] = _G_ESCAPE
    escaped = bytearray([_G_OTHER]) * 256
    for chars, cls in (
        (D.GENETIC_ESCAPE_BREAK, _G_BREAK),
        (D.GENETIC_ESCAPE_SPACE, _G_SPACE),
        (D.GENETIC_ESCAPE_TOKEN, _G_TOKEN),
    ):
        for c in chars:
            escaped[c] = cls
    return bytes(classes), bytes(escaped)


_G_CLASS, _G_ESCAPED = _genetic_tables()


#: Bases that are the second byte of an escape ("\n", "\t"): no base there.
_G_ESCAPE_LETTERS: Final = bytes(c for c in D.GENETIC_BASES if _G_ESCAPED[c] != _G_OTHER)
_G_ESCAPE_PAIRS: Final = tuple(b"\\" + bytes([c]) for c in _G_ESCAPE_LETTERS)
_G_DASH: Final = 0x2D
_G_PAD: Final = 0x3D
_G_SPACE_MAX: Final = D.GENETIC_SPACE_MAX
#: Consecutive dashes of a PEM/PGP armor line (RFC 7468 §2).
_G_ARMOR_DASHES: Final = 5

# The run's status: its block glued (no hits), clean so far with nothing
# pending, or clean with pending lines. Kept in the state's flags.
_ST_NONE: Final = 0
_ST_GLUE: Final = 1
_ST_FRESH: Final = 2
_ST_PENDING: Final = 3
# What the state's position is: nothing; the byte after the last run, whose
# decision needs bytes still to come; the start of the block's next line.
_PD_NONE: Final = 0
_PD_AFTER: Final = 1
_PD_NEXT: Final = 2
# Decisions after a run.
_DEC_NEED: Final = 0
_DEC_CLEAN: Final = 1
_DEC_GLUE: Final = 2
_DEC_NEXT: Final = 3
# Flags: bit 0 the last byte was a backslash; bits 1-2 the status of the open
# run (once it holds GENETIC_MIN_RUN bases); bits 3-4 the position's kind;
# bits 5-6 the status that goes with it.
_F_BACKSLASH: Final = 1


def _setup_native_genetic() -> None:
    """Hand the rule's tables to the compiled core and check it runs on them.

    One source (detectors.GENETIC_*, through :func:`_genetic_tables`) for both
    implementations; a core built from other tables or other byte classes
    would count differently from the reference, so the import fails instead.
    """
    kinds = (D.GENETIC_COUNT, D.GENETIC_PENDING, D.GENETIC_COMMIT, D.GENETIC_DROP)
    tables = (_G_CLASS, _G_ESCAPED, D.GENETIC_MIN_RUN, D.GENETIC_SPACE_MAX, kinds)
    classes = (_G_BASE, _G_TOKEN, _G_SPACE, _G_BREAK, _G_OTHER, _G_ESCAPE)
    native = _native
    try:
        native_classes = (
            native.G_BASE,
            native.G_TOKEN,
            native.G_SPACE,
            native.G_BREAK,
            native.G_OTHER,
            native.G_ESCAPE,
        )
        if native_classes == classes:
            native.genetic_setup(*tables)
            if native.genetic_tables() == tables:
                return
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImportError(f"gateway.classify._native is out of date ({exc}): rebuild it") from exc
    raise ImportError("gateway.classify._native runs other genetic tables: rebuild it")


def _check_native_digits() -> None:
    """Check that the compiled core looks for the digit cores detectors.py declares.

    Its vector search is written for one core shape; a core built for another
    would open windows that miss matches, so the import fails instead.
    """
    native = _native
    try:
        shape = (
            native.DIGIT_CORE_RUN,
            native.DIGIT_CORE_GROUP,
            native.DIGIT_CORE_SEPARATORS,
            native.DIGIT_CORE_WORDS,
        )
        reach_max = native.DIGIT_REACH_MAX
    except AttributeError as exc:
        raise ImportError(f"gateway.classify._native is out of date ({exc}): rebuild it") from exc
    declared = (D.DIGIT_CORE_RUN, D.DIGIT_CORE_GROUP, D.DIGIT_CORE_SEPARATORS, D.DIGIT_CORE_WORDS)
    if shape != declared:
        raise ImportError("gateway.classify._native looks for other digit cores: rebuild it")
    if not D.DIGIT_CORE_RUN <= D.DIGIT_REACH <= reach_max:  # pragma: no cover - constants
        raise ImportError("detectors.DIGIT_REACH is out of the compiled core's range")


if _native is not None:
    _setup_native_genetic()
    _check_native_digits()


#: The digit-core search of a piece stops once its windows cover this share of
#: the piece (1/16) and half of what it searched: the piece is then streamed
#: whole (on PII-dense or numeric text the search reads ~1/16 of the bytes).
_DENSE_SHARE: Final = 16


def _drop_match(_pid: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
    """A match callback that records nothing (the tail's bytes read again)."""


class DigitScan:
    """The digit database over the windows around the digit cores (issue 17).

    Gives the hits the digit database streamed over every byte gives (see
    ``detectors``), as ``end << 20 | id``. :meth:`scan` asks the compiled core
    for the windows of a piece of text. Text dense with cores (windows over
    half the piece or more: CSV of read counts, an identifier every ~200 bytes)
    is streamed whole, as before the windows; elsewhere each window is scanned
    once in block mode, a view of the piece, no copy.

    The stream may thus miss text. Every match is at most
    :data:`~gateway.classify.detectors.DIGIT_REACH` bytes wide, so before it
    reads text again it reads the :data:`~gateway.classify.detectors.DIGIT_REACH`
    bytes before it with its hits dropped (they end there, and were reported):
    a match that began before the gap would be wider than that, so none is
    reported across it. A window that starts in the text before the piece is
    read by the stream the same way.

    Args:
        block: :meth:`~gateway.classify.detectors.DetectorSet.digit_windows_database`.
        block_scratch: a scratch for it (this scan's own).
        stream: the streaming digit database
            (:meth:`~gateway.classify.detectors.DetectorSet.databases`).
        stream_scratch: a scratch for it.
    """

    __slots__ = ("_block", "_block_scratch", "_database", "_fed", "_next", "_scratch", "_stream")

    def __init__(
        self,
        block: hyperscan.Database,
        block_scratch: hyperscan.Scratch,
        stream: hyperscan.Database,
        stream_scratch: hyperscan.Scratch,
    ) -> None:
        self._block = block
        self._block_scratch = block_scratch
        self._database = stream
        self._scratch = stream_scratch
        self._stream: Any = None
        self._fed = 0  # bytes the stream has read
        self._next = 0  # the offset in the text of the stream's next byte (else: a gap)
        self._open()

    def _open(self) -> None:
        # The stream borrows the database and the callback (hyperscan 0.9.1): this
        # object and the module keep them alive.
        stream = self._database.stream(match_event_handler=_drop_match)
        stream.__enter__()  # hs_open_stream
        self._stream = stream
        self._fed = 0

    def close(self) -> None:
        """Close the stream (idempotent)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def scan(self, data: bytes, tail: bytes, offset: int, hits: list[int]) -> None:
        """Append the hits that end in ``data`` to ``hits``.

        ``offset`` is the text offset of ``data[0]``, ``tail`` the text before it
        (at least its last :data:`~gateway.classify.detectors.DIGIT_REACH` bytes, or
        all of the text before ``data``).
        """
        n = len(data)
        windows = _native.digit_windows(data, tail, D.DIGIT_REACH, D.DIGIT_SKIP, n // _DENSE_SHARE)
        if not windows:
            return
        append = hits.append

        # The context is what to add to an end offset (the binding passes a
        # context of 0 as None: offsets that need nothing added have a handler
        # of their own).
        def on_match(pid: int, _start: int, end: int, _flags: int, base: Any) -> None:
            append((base + end) << _ID_BITS | pid)

        def on_match_as_is(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            append(end << _ID_BITS | pid)

        if (sum(windows[1::2]) - sum(windows[0::2])) * 2 >= n:
            self._follow(data, tail, offset, on_match, on_match_as_is)
            return
        # Windows are views, not copies (the binding reads any buffer; its stub
        # says str or bytes).
        view = cast(bytes, memoryview(data))
        for i in range(0, len(windows), 2):
            a, b = windows[i], windows[i + 1]
            if a < 0:
                self._follow(view[:b], tail, offset, on_match, on_match_as_is)
                continue
            base = offset + a
            self._block.scan(
                view[a:b],
                match_event_handler=on_match if base else on_match_as_is,
                context=base,
                scratch=self._block_scratch,
            )

    def _follow(
        self,
        data: bytes,
        tail: bytes,
        offset: int,
        on_match: Callable[[int, int, int, int, Any], None],
        on_match_as_is: Callable[[int, int, int, int, object], None],
    ) -> None:
        """Stream ``data`` (at ``offset``), after the tail's last bytes if it missed text."""
        scratch = self._scratch
        if self._next != offset:
            if len(tail) < D.DIGIT_REACH:  # the tail is all the text before: start again
                self.close()
                self._open()
            else:
                tail = tail[-D.DIGIT_REACH :]
            self._stream.scan(tail, scratch=scratch, match_event_handler=_drop_match)
            self._fed += len(tail)
        base = offset - self._fed
        handler = on_match if base else on_match_as_is
        self._stream.scan(data, scratch=scratch, match_event_handler=handler, context=base)
        self._fed += len(data)
        self._next = offset + len(data)


if TAIL_BYTES < D.GENETIC_MIN_RUN + D.GENETIC_REACH:  # pragma: no cover - constants
    raise ImportError("the token rule reads further back than the matcher keeps")


class _GeneticText:
    """The bytes a chunk's decisions may read: the tail before it and the chunk."""

    __slots__ = ("data", "end", "low", "offset", "tail")

    def __init__(self, data: bytes, offset: int, tail: bytes) -> None:
        self.data = data
        self.tail = tail
        self.offset = offset
        self.low = offset - len(tail)  # 0, or the rule reads no further back
        self.end = offset + len(data)

    def at(self, a: int) -> int:
        return self.data[a - self.offset] if a >= self.offset else self.tail[a - self.low]

    def unit(self, a: int) -> tuple[int, int, int, int] | None:
        """(class, byte, width, last byte read) of the unit at ``a``; None: not here yet."""
        if a >= self.end:
            return None
        c = self.at(a)
        cls = _G_CLASS[c]
        if cls != _G_ESCAPE:
            return cls, c, 1, a
        if a + 1 >= self.end:
            return None
        d = self.at(a + 1)
        escaped = _G_ESCAPED[d]
        if escaped == _G_OTHER:
            return _G_OTHER, c, 1, a + 1
        return escaped, d, 2, a + 1

    def unit_before(self, b: int) -> tuple[int, int, int]:
        """(class, byte, width) of the unit that ends at ``b`` (``b >= low``)."""
        c = self.at(b)
        if b > self.low and self.at(b - 1) == 0x5C:
            escaped = _G_ESCAPED[c]
            if escaped != _G_OTHER:
                return escaped, c, 2
        cls = _G_CLASS[c]
        return (_G_OTHER if cls == _G_ESCAPE else cls), c, 1


class _GeneticToken:
    """A neighbouring line's token, read unit by unit up to GENETIC_MIN_RUN units (C: GToken)."""

    __slots__ = ("dashes", "data", "letter", "other", "padded", "run", "units")

    def __init__(self) -> None:
        self.units = self.run = 0
        self.other = self.dashes = self.letter = self.data = self.padded = False

    def add(self, cls: int, c: int) -> bool:
        """Read one more unit; whether that makes GENETIC_MIN_RUN units (read no further)."""
        self.units += 1
        self.other = self.other or cls == _G_TOKEN
        self.run = self.run + 1 if c == _G_DASH else 0
        self.dashes = self.dashes or self.run >= _G_ARMOR_DASHES
        self.letter = self.letter or _LETTER[c] == 1
        self.padded = c == _G_PAD and self.data  # "…A==": padding after data
        self.data = self.data or c != _G_PAD
        return self.units == _GENETIC_MIN

    def shows_base64(self, padding: bool) -> bool:
        """Whether the token is base64's (``padding``: a padded end shows it, read forwards)."""
        if not self.other:
            return False
        return (
            self.units >= _GENETIC_MIN or (self.dashes and self.letter) or (padding and self.padded)
        )


def _genetic_top(text: _GeneticText, s: int) -> int:
    """_ST_GLUE or _ST_FRESH: how the run whose first base is at ``s`` begins."""
    b = s - 1
    if b < text.low:
        return _ST_FRESH
    cls, c, w = text.unit_before(b)
    if cls <= _G_TOKEN:  # glued, unless by "="
        return _ST_FRESH if c == _G_PAD else _ST_GLUE
    blanks = 0
    while cls == _G_SPACE:
        blanks += 1
        b -= w
        if blanks > _G_SPACE_MAX or b < text.low:
            return _ST_FRESH
        cls, c, w = text.unit_before(b)
    if cls != _G_BREAK:
        return _ST_FRESH
    b -= w  # the line above: its last token
    blanks = 0
    while True:
        if b < text.low:
            return _ST_FRESH
        cls, c, w = text.unit_before(b)
        if cls != _G_SPACE:
            break
        blanks += 1
        if blanks > _G_SPACE_MAX:
            return _ST_FRESH
        b -= w
    token = _GeneticToken()
    while cls <= _G_TOKEN and not token.add(cls, c):
        b -= w
        if b < text.low:
            break
        cls, c, w = text.unit_before(b)
    return _ST_GLUE if token.shows_base64(padding=False) else _ST_FRESH


def _genetic_after(text: _GeneticText, p: int) -> tuple[int, int, int]:
    """(decision, last byte read, next line's start) for the run that ends before ``p``."""
    unit = text.unit(p)
    if unit is None:
        return _DEC_NEED, 0, 0
    cls, c, w, last = unit
    if cls <= _G_TOKEN:
        return _DEC_GLUE, last, 0
    a = p
    blanks = 0
    while cls == _G_SPACE:
        blanks += 1
        if blanks > _G_SPACE_MAX:
            return _DEC_CLEAN, last, 0
        a += w
        unit = text.unit(a)
        if unit is None:
            return _DEC_NEED, 0, 0
        cls, c, w, last = unit
    if cls != _G_BREAK:
        return _DEC_CLEAN, last, 0
    a += w  # the line below: its first token
    blanks = 0
    while True:
        unit = text.unit(a)
        if unit is None:
            return _DEC_NEED, 0, 0
        cls, c, w, last = unit
        if cls != _G_SPACE:
            break
        blanks += 1
        if blanks > _G_SPACE_MAX:
            return _DEC_CLEAN, last, 0
        a += w
    start = a
    token = _GeneticToken()
    while cls <= _G_TOKEN:
        if token.add(cls, c):
            return (_DEC_GLUE if token.other else _DEC_NEXT), last, start
        a += w
        unit = text.unit(a)
        if unit is None:
            return _DEC_NEED, 0, 0
        cls, c, w, last = unit
    return (_DEC_GLUE if token.shows_base64(padding=True) else _DEC_CLEAN), last, 0


class _GeneticScan:
    """One chunk of :func:`genetic_runs_py`: the decisions and the hits they give."""

    __slots__ = ("hits", "open", "pending", "pid", "pos", "status", "text")

    def __init__(self, text: _GeneticText, flags: int, pos: int, pid: int, hits: list[int]) -> None:
        self.text = text
        self.open = flags >> 1 & 3
        self.pending = flags >> 3 & 3
        self.status = flags >> 5 & 3
        self.pos = pos
        self.pid = pid
        self.hits = hits

    def hit(self, kind: int, last: int) -> None:
        self.hits.append((last + 1) << _ID_BITS | (self.pid + kind))

    def resolve(self) -> None:
        """Decide a run whose decision the last chunk left open (its line is pending)."""
        decision, last, start = _genetic_after(self.text, self.pos)
        if decision == _DEC_NEED:
            return
        self.pending = _PD_NONE
        if decision == _DEC_NEXT:
            self.pending, self.pos = _PD_NEXT, start
        elif self.status == _ST_PENDING:
            self.hit(D.GENETIC_COMMIT if decision == _DEC_CLEAN else D.GENETIC_DROP, last)

    def begin(self, s: int, carried: bool) -> int:
        """The status of the run that starts at ``s`` (``carried``: from an earlier chunk)."""
        if carried and self.open != _ST_NONE:
            return self.open
        if self.pending == _PD_NEXT:
            self.pending = _PD_NONE
            if self.pos == s:  # the block's next line
                return self.status
            if self.status == _ST_PENDING:  # not reached: the next line is this run
                self.hit(D.GENETIC_COMMIT, s - 1)
        return _genetic_top(self.text, s)

    def run(self, s: int, j: int, carried: bool) -> None:
        """A run of bases from ``s`` up to the non-base at ``j`` (absolute offsets)."""
        status = self.begin(s, carried)
        self.open = _ST_NONE
        decision, last, start = _genetic_after(self.text, j)
        if decision in (_DEC_NEED, _DEC_NEXT):
            if status != _ST_GLUE:
                self.hit(D.GENETIC_PENDING, j)
                status = _ST_PENDING
            self.pending = _PD_AFTER if decision == _DEC_NEED else _PD_NEXT
            self.status = status
            self.pos = j if decision == _DEC_NEED else start
        elif decision == _DEC_GLUE:
            if status == _ST_PENDING:
                self.hit(D.GENETIC_DROP, last)
        elif status == _ST_FRESH:
            self.hit(D.GENETIC_COUNT, j)
        elif status == _ST_PENDING:
            self.hit(D.GENETIC_PENDING, j)
            self.hit(D.GENETIC_COMMIT, last)

    def state(self, run: int, backslash: bool) -> tuple[int, int, int]:
        open_status = self.open if run >= _GENETIC_MIN else _ST_NONE
        pending = self.pending
        flags = (
            (_F_BACKSLASH if backslash else 0)
            | open_status << 1
            | pending << 3
            | (self.status << 5 if pending else 0)
        )
        return run, flags, self.pos if pending else 0


def genetic_runs_py(
    data: bytes, offset: int, tail: bytes, state: tuple[int, int, int], pid: int, hits: list[int]
) -> tuple[int, int, int]:
    """Hits of the token rule for the runs of bases that end in ``data`` (the reference).

    Args:
        data: the chunk, at absolute ``offset`` of the member.
        tail: the text right before it (at least GENETIC_MIN_RUN +
            GENETIC_REACH bytes, or all of it).
        state: what the last chunk returned; ``(0, 0, 0)`` for a member's start.
        pid: ``DetectorSet.genetic_run_id``; hits are ``(end << 20) | (pid + kind)``
            with a ``detectors.GENETIC_*`` kind, a run's hits at the byte after it.
        hits: appended to.

    Returns:
        the state for the next chunk.

    Raises:
        ValueError: a state no chunk returned, or a tail longer than the text.
    """
    run, flags, pos = state
    pending = flags >> 3 & 3
    if (
        min(run, pos, flags, pid) < 0
        or flags >= 1 << 7
        or pending > _PD_NEXT
        or (pending == _PD_AFTER and not offset - len(tail) <= pos <= offset)
        or pid + D.GENETIC_HIT_KINDS - 1 > _ID_MASK
        or offset < len(tail)
    ):
        raise ValueError("bad state, offset, tail or pid")
    n = len(data)
    if not n:
        return state
    text = _GeneticText(data, offset, tail)
    scan = _GeneticScan(text, flags, pos, pid, hits)
    if scan.pending == _PD_AFTER:
        scan.resolve()
    probe = data
    if 0x5C in data or flags & _F_BACKSLASH:  # no base right after a backslash ("\n")
        for pair in _G_ESCAPE_PAIRS:
            probe = probe.replace(pair, b"\\\x00")
        if flags & _F_BACKSLASH and data[0] in _G_ESCAPE_LETTERS:
            probe = b"\x00" + probe[1:]
    backslash = data[-1] == 0x5C
    if n >= _GENETIC_SAMPLE_MIN_BYTES and _no_run_inside(probe):
        # No run of 60 lies inside ``data`` (it would show as 60 // stride
        # base samples in a row): only the run carried in can end here, and
        # the first and last 60 bytes each hold a non-base.
        first = probe[:_GENETIC_MIN].translate(_BASE_TABLE).find(0)
        if run + first >= _GENETIC_MIN:
            scan.run(offset - run, offset + first, True)
        scan.open = _ST_NONE
        last = probe[-_GENETIC_MIN:].translate(_BASE_TABLE).rfind(0)
        return scan.state(_GENETIC_MIN - 1 - last, backslash)
    marks = probe.translate(_BASE_TABLE)
    first = marks.find(0)
    if first < 0:
        if run + n >= _GENETIC_MIN:
            scan.open = scan.begin(offset - run, run > 0)
        return scan.state(run + n, backslash)
    if run + first >= _GENETIC_MIN:
        scan.run(offset - run, offset + first, True)
    scan.open = _ST_NONE
    i = marks.find(_GENETIC_RUN_MARKS, first)
    while i >= 0:
        j = marks.find(0, i + _GENETIC_MIN)
        if j < 0:
            scan.open = scan.begin(offset + i, False)
            return scan.state(n - i, backslash)
        scan.run(offset + i, offset + j, False)
        i = marks.find(_GENETIC_RUN_MARKS, j)
    return scan.state(n - 1 - marks.rfind(0), backslash)


def _no_run_inside(data: bytes) -> bool:
    """Whether a stride sample proves ``data`` holds no run of 60 bases.

    A run of 60 lies between two sampled non-bases (or an end of ``data``)
    and holds at least 5 sampled bases in a row, so checking the bytes between
    the two non-bases around every such sample run finds every run there is.
    """
    stride = _GENETIC_STRIDE
    sample = data[::stride].translate(_BASE_TABLE)
    j = sample.find(_GENETIC_SAMPLE_RUN)
    while j >= 0:
        k = sample.find(0, j)  # the sampled non-base that ends this sample run
        low = (j - 1) * stride + 1 if j else 0
        high = k * stride if k >= 0 else len(data)
        if data[low:high].translate(_BASE_TABLE).find(_GENETIC_RUN_MARKS) >= 0:
            return False
        if k < 0:
            break
        j = sample.find(_GENETIC_SAMPLE_RUN, k)
    return True


@dataclass(frozen=True, slots=True)
class MatchResult:
    """What the matcher found, ready for a ``ScanSummary``.

    Attributes:
        labels: findings per label (labels with none are absent).
        digests: per label, the truncated keyed hashes of the distinct values.
        subjects: largest ``distinct`` among personal labels.
        unscannable: the reasons reported by the decoder, in order.
        distinct_capped: whether a label reached :data:`MAX_DISTINCT_PER_LABEL`
            or all together :data:`MAX_DISTINCT_VALUES`.
        chance: per label, the findings set aside as chance-level (table
            columns of random digits, :mod:`gateway.classify.chance`): in no
            count, distinct value or subject above.
        chance_digests: the keyed hashes of the values set aside (for a
            policy that counts them anyway).
        columns: the column profiles with findings, for ``gateway explain``.
    """

    labels: dict[str, LabelStats]
    digests: dict[str, frozenset[bytes]]
    subjects: int
    unscannable: tuple[str, ...]
    distinct_capped: bool
    chance: dict[str, LabelStats] = field(default_factory=dict)
    chance_digests: dict[str, frozenset[bytes]] = field(default_factory=dict)
    columns: tuple[C.ColumnProfile, ...] = ()


class KeyedHasher:
    """HMAC-SHA-256 with a fixed key, truncated to 16 bytes, for many short messages.

    The inner and outer pad states are hashed once (RFC 2104) and copied per
    message: about 2x faster than ``hmac.new`` for identifiers.
    """

    #: SPEC / architecture: digests are truncated to 16 bytes.
    DIGEST_BYTES: Final = 16
    _BLOCK: Final = 64  # SHA-256 block size (RFC 2104 "B")

    def __init__(self, secret: bytes) -> None:
        key = hashlib.sha256(secret).digest() if len(secret) > self._BLOCK else secret
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        """The first 16 bytes of HMAC-SHA-256(secret, message)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: self.DIGEST_BYTES]


class TextMatcher:
    """Finds and counts labelled values in text members (a decode ``TextSink``).

    Args:
        detectors: the compiled detector set (shared, read-only).
        secret: key for the distinct-value hashes (the gateway secret).
        today: the date the birth-date check treats as "today" (UTC+8 by default);
            fixed for the whole scan so one scan sees one calendar.
        max_distinct: bound on tracked distinct values per label (tests lower it).
        max_distinct_total: bound on tracked distinct values over all labels.
        native: run the identifier handlers and the counting state in the
            compiled core (the default when it is built); ``False`` runs the
            Python reference implementation, which tests compare it with.
        chance_words: per chance-tested label, the header words that name it
            (:data:`gateway.classify.chance.HEADER_WORDS` by default; a
            policy adds its own).

    Raises:
        ValueError: the secret is shorter than 16 bytes.
        RuntimeError: ``native=True`` but the compiled core is not built.
    """

    def __init__(
        self,
        detectors: D.DetectorSet,
        secret: bytes,
        *,
        today: _dt.date | None = None,
        max_distinct: int = MAX_DISTINCT_PER_LABEL,
        max_distinct_total: int = MAX_DISTINCT_VALUES,
        native: bool | None = None,
        chance_words: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the distinct-count secret must be at least 16 bytes")
        if native and _native is None:
            raise RuntimeError("the compiled matcher core (gateway.classify._native) is not built")
        self._detectors = detectors
        self._hasher = KeyedHasher(secret)
        day = today or V.today_cst()
        self._dates = V.birth_dates(day)
        self._max_distinct = max_distinct
        self._max_distinct_total = max_distinct_total
        self._chance_words = C.HEADER_WORDS if chance_words is None else chance_words
        labels = detectors.labels
        self._labels = labels
        self._counts = [0] * len(labels)
        # Distinct values per label, as dicts rather than sets: a dict whose keys
        # and values are untracked (bytes, None) is itself untracked by the
        # cyclic GC, so 100,000s of values are not re-traversed by every full
        # collection (a set always is; that cost ~20% on PII-dense data).
        # Distinct values -> the column source they were seen in (-1: outside a
        # table column or in more than one place; _ASIDE: set aside).
        self._values: list[dict[bytes, int]] = [{} for _ in labels]
        self._aside = [0] * len(labels)  # values set aside, per label
        self._tracked = 0
        # Column profiles (the compiled core keeps its own): the tables' header
        # cells, and for the reference the sources [table, column, candidates,
        # shaped, valid, aside] and the current table's columns.
        self._tables: list[tuple[str, ...]] = []
        self._sources: list[list[Any]] = []
        self._col_source: dict[int, int] = {}
        self._table = -1
        self._table_sep = 0
        self._table_from = 0
        self._capped = False
        self._reasons: list[str] = []
        self._ix = {label: i for i, label in enumerate(labels)}
        self._chance_ix = {self._ix[label]: ch for ch, label in enumerate(C.CHANCE_LABELS)}
        self._rank = [_RANK.get(label, 0) for label in labels]
        self._group = [_PRECEDENCE_GROUP if label in _RANK else i for i, label in enumerate(labels)]
        self._memo: dict[int, dict[bytes, bool]] = {}
        self._scratches: dict[int, hyperscan.Scratch] = {}
        # A hit is one int, end << _ID_BITS | id: ints are not tracked by the
        # cyclic GC, tuples are, and a tuple per hit cost ~25% of PII-dense
        # scanning in collections. Start offsets exist only for SOM patterns
        # (custom regexes) and go to a side table.
        self._hits: list[int] = []
        self._starts: dict[int, int] = {}
        hits_append = self._hits.append
        starts = self._starts

        def on_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            hits_append(end << _ID_BITS | pid)
            if start:
                starts[end << _ID_BITS | pid] = start

        self._on_match = on_match

        def on_column_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            hits_append((end + self._column_delta) << _ID_BITS | pid)

        self._on_column_match = on_column_match
        self._column_stream: Any = None
        self._column_scratch: hyperscan.Scratch | None = None
        self._column_delta = 0
        self._column_from = -1
        specs = detectors.specs
        self._specs = specs
        table: dict[int, Callable[[int, int, int, int], None]] = {
            D.K_DIGITS: self._h_digits,
            D.K_USCC: self._h_uscc,
            D.K_GROUPED: self._h_grouped,
            D.K_LETTERS: self._h_letters,
            D.K_HKID_BRACKETS: self._h_hkid_brackets,
            D.K_EMAIL: self._h_email,
            D.K_GEO: self._h_geo,
            D.K_CRED_FIXED: self._h_fixed_value,
            D.K_JWT: self._h_jwt,
            D.K_PEM: self._h_pem,
            D.K_HEALTH: self._h_health,
            D.K_MARK: self._h_mark,
            D.K_GENETIC_RUN: self._h_genetic_run,
            D.K_GENETIC_RECORD: self._h_genetic_record,
            D.K_HOTWORD: self._h_hotword,
            D.K_CUSTOM_REGEX: self._h_custom,
            D.K_CUSTOM_KEYWORD: self._h_custom,
            D.K_ARMOR: self._h_armor,
        }
        self._handlers = [table[s.kind] for s in specs]
        self._accept: Callable[[int, bytes], None] = self._py_accept
        self._propose: Callable[[int, int, int, bytes], bool] = self._py_propose
        self._core: Any = None
        if _native is not None and native is not False:
            core = _native.Core(
                ops=bytes(_NATIVE_OPS.get(s.kind, _native.OP_PYTHON) for s in specs),
                spec_labels=[s.label for s in specs],
                spec_args=[s.arg for s in specs],
                ranks=self._rank,
                groups=[0 if g == _PRECEDENCE_GROUP else g + 1 for g in self._group],
                labels=[self._ix[label] for label in _NATIVE_LABELS],
                hotwords=[_BUILTIN_HOTWORDS[c] for c in (D.HW_PHONE, D.HW_PASSPORT, D.HW_PERMIT)],
                today=(day.year, day.month, day.day),
                secret=secret,
                max_distinct=max_distinct,
                max_total=max_distinct_total,
                tail_bytes=TAIL_BYTES,
            )
            self._core = core
            self._accept = core.accept
            self._propose = core.propose
        self._stream: Any = None
        self._digit_stream: Any = None
        self._digit_scan: DigitScan | None = None
        self._genetic_id = detectors.genetic_run_id
        self._genetic_runs = True
        self._member_type = ""
        self._head: bytes = b""
        self._reset_member()

    # -- TextSink ------------------------------------------------------------

    def begin_member(self, content_type: str) -> None:
        """Start a text member: a fresh stream on the database for its type."""
        if self._stream is not None:
            self.end_member()
        digit, literal = self._detectors.databases(content_type)
        self._digit_scratch = self._scratch_for(digit)
        self._scratch = self._scratch_for(literal)
        self._reset_member()
        self._member_type = content_type
        self._genetic_runs = content_type not in D.GENOMIC_TYPES
        # The streams borrow the databases and the callback without owning a
        # reference (hyperscan 0.9.1); the detector set and this matcher keep
        # them alive for as long as the streams exist.
        self._databases = (digit, literal)
        if self._core is not None:
            # The compiled core finds the digit cores: the digit database is
            # scanned around them only.
            block = self._detectors.digit_windows_database()
            self._digit_scan = DigitScan(
                block, self._scratch_for(block), digit, self._digit_scratch
            )
        else:
            digit_stream = digit.stream(match_event_handler=self._on_match)
            digit_stream.__enter__()  # hs_open_stream
            self._digit_stream = digit_stream
        stream = literal.stream(match_event_handler=self._on_match)
        stream.__enter__()
        self._stream = stream
        self._scan(b"\n")
        self._header_open = True

    def _scratch_for(self, database: hyperscan.Database) -> hyperscan.Scratch:
        scratch = self._scratches.get(id(database))
        if scratch is None:
            scratch = hyperscan.Scratch(database)
            self._scratches[id(database)] = scratch
        return scratch

    def text(self, data: bytes) -> None:
        """Scan the next piece of the member's UTF-8 text."""
        if not data:
            return
        if type(data) is not bytes:  # a bytearray or memoryview: the core reads bytes
            data = bytes(data)
        if self._stream is None:
            self.begin_member("text/plain")
        if self._header_open:
            # The first line says whether the member is a table (and its columns)
            # before any of its hits are handled, however the text was cut: it is
            # held until its end, CONTEXT_BYTES at most.
            head = self._head + data if self._head else data
            if head.find(b"\n") < 0 and len(head) < D.CONTEXT_BYTES:
                self._head = head
                return
            self._head = b""
            data = head
            self._capture_header(data)
        self._scan_text(data)

    def _scan_text(self, data: bytes) -> None:
        if len(data) <= SCAN_SLICE_BYTES:
            self._scan(data)
            return
        # A column stream opened by this data's header starts within the first
        # CONTEXT_BYTES, hence inside the first slice, which is where _scan uses it.
        for i in range(0, len(data), SCAN_SLICE_BYTES):
            self._scan(data[i : i + SCAN_SLICE_BYTES])

    def end_member(self) -> None:
        """Finish the member: frame its end, close the stream, commit pending findings."""
        if self._stream is None:
            return
        if self._header_open:
            head, self._head = self._head, b""
            if head:
                self._capture_header(head)
            if self._header_open:
                self._close_header()
            if head:
                self._scan_text(head)
        self._scan(b"\n\n")
        self._close_column_stream()
        self._close_streams()
        if self._hits:
            self._process()
        if self._pem_pending != _NEVER:  # a key block cut off by the member's end
            self._pem_identity(self._offset)
        if self._core is not None:
            self._core.commit()
            return
        for slot in self._pending.values():
            if slot[0]:
                self._py_accept(slot[4], slot[5], slot[6])
        self._pending.clear()

    def _close_column_stream(self) -> None:
        column, self._column_stream = self._column_stream, None
        if column is not None:
            column.close()

    def _close_streams(self) -> None:
        # hyperscan 0.9.1: ``Stream.close(scratch=…)`` mis-parses its arguments
        # (crashes), so close with the database's own scratch. close() holds the
        # GIL throughout, so that scratch is never used by two threads at once.
        stream, self._stream = self._stream, None
        digit_stream, self._digit_stream = self._digit_stream, None
        digit_scan, self._digit_scan = self._digit_scan, None
        if stream is not None:
            stream.close()
        if digit_stream is not None:
            digit_stream.close()
        if digit_scan is not None:
            digit_scan.close()

    def close(self) -> None:
        """Release the open streams of an abandoned scan (idempotent); counts nothing."""
        self._close_column_stream()
        if self._stream is not None:
            self._close_streams()
            self._hits.clear()
            self._starts.clear()

    def __del__(self) -> None:
        # Safety net for a scan abandoned without close(): Hyperscan stream state
        # is C memory that the binding does not free on garbage collection.
        if getattr(self, "_stream", None) is not None or getattr(self, "_column_stream", None):
            self.close()

    def unscannable(self, reason: str) -> None:
        """Record one ``content.unscannable`` finding (the reason never holds payload)."""
        ix = self._ix[L.UNSCANNABLE]
        self._accept(ix, reason.encode())
        if len(self._reasons) < MAX_REASONS:
            self._reasons.append(reason)

    def finding(self, label: str, value: bytes) -> None:
        """Count one finding a format reader made itself (a DICOM instance naming its patient).

        Counted like the matcher's own: ``value`` joins the label's distinct
        values (keyed-hashed in :meth:`result`, under the same bounds), by the
        compiled core or the reference alike. It is never stored beyond the
        scan, logged or returned.

        Raises:
            ValueError: ``label`` is not one of the detector set's labels, or
                is ``content.unscannable`` (a reader raises ``Unscannable``).
        """
        ix = self._ix.get(label)
        if ix is None or label == L.UNSCANNABLE:
            raise ValueError("a direct finding needs a detector label other than unscannable")
        self._accept(ix, bytes(value))

    # -- result --------------------------------------------------------------

    def result(self) -> MatchResult:
        """Counts, distinct counts, keyed digests and subjects of everything seen so far."""
        if self._stream is not None:
            self.end_member()
        stats: dict[str, LabelStats] = {}
        digests: dict[str, frozenset[bytes]] = {}
        subjects = 0
        core = self._core
        decisions = C.decide(self._raw_profiles(), self._tables, self._chance_words)
        chance: dict[str, LabelStats] = {}
        for d in decisions:
            if d.aside:
                self._set_aside(d.source, d.ch)
                label = d.profile.label
                before = chance.get(label, LabelStats(0, 0))
                chance[label] = LabelStats(before.count + d.profile.valid, 0)
        if core is not None:
            counts = core.stats()
            capped = core.capped
        else:
            counts = [
                (n, len(values) - aside)
                for n, values, aside in zip(self._counts, self._values, self._aside, strict=True)
            ]
            capped = self._capped
        for i, label in enumerate(self._labels):
            count, distinct = counts[i]
            if not count:
                continue
            stats[label] = LabelStats(count=count, distinct=distinct)
            digests[label] = self._digests(i, aside=False)
            if self._detectors.personal[i]:
                subjects = max(subjects, distinct)
        chance_digests: dict[str, frozenset[bytes]] = {}
        for label, aside in chance.items():
            chance_digests[label] = self._digests(self._ix[label], aside=True)
            chance[label] = LabelStats(aside.count, len(chance_digests[label]))
        return MatchResult(
            stats,
            digests,
            subjects,
            tuple(self._reasons),
            capped,
            chance=chance,
            chance_digests=chance_digests,
            columns=C.reported(decisions),
        )

    def _digests(self, label: int, *, aside: bool) -> frozenset[bytes]:
        """The keyed hashes of a label's distinct values (or of those set aside)."""
        prefix = self._labels[label].encode() + b"\0"
        if self._core is not None:
            return self._core.digests(label, prefix, aside)  # type: ignore[no-any-return]
        digest = self._hasher.digest
        return frozenset(
            digest(prefix + v)
            for v, seen in self._values[label].items()
            if (seen == _ASIDE) == aside
        )

    # -- machinery -----------------------------------------------------------

    def _reset_member(self) -> None:
        self._offset = 0
        self._tail = b""
        self._window = b""
        self._base = 0
        # The last scanned chunk, the tail before it and its offset (see _process).
        self._chunk = b""
        self._chunk_tail = b""
        self._chunk_offset = 0
        self._hotword = [_NEVER] * self._detectors.hotword_classes
        # Per overlap group: [pending?, start, end, rank, label, value, source],
        # updated in place (a tuple per candidate is GC-tracked garbage).
        self._pending: dict[int, list[Any]] = {}
        if self._core is not None:
            self._core.drop_pending()
            self._core.table(-1, 0)
        self._table = -1  # not a table until its first line says so
        self._header_open = False
        self._head = b""  # the first line's text while it is held (see text())
        self._header = bytearray()
        self._header_end = _NEVER
        self._diag_columns: frozenset[int] = frozenset()
        self._column_sep = b","
        self._column_from = -1
        # The token rule's state between chunks (genetic_runs_py), and the
        # values of the lines of a block of runs of bases that is not decided
        # yet (value -> lines), or whether a block too large to hold counts
        # its lines as they come.
        self._genetic_state = (0, 0, 0)
        self._genetic_pending: dict[bytes, int] = {}
        self._genetic_through = False
        # Private key blocks: whether a BEGIN line was seen and no END yet, and
        # the offset after a BEGIN line whose identity is still to be read.
        self._pem_open = False
        self._pem_pending = _NEVER
        self._pem_label = 0
        # Armor layers already reported in this member (one finding each).
        self._armored: set[bytes] = set()

    def _scan(self, data: bytes) -> None:
        tail = self._tail
        self._chunk = data
        self._chunk_tail = tail
        self._chunk_offset = self._offset
        if self._digit_scan is not None:
            self._digit_scan.scan(data, tail, self._offset, self._hits)
        else:
            self._digit_stream.scan(data, scratch=self._digit_scratch)
        self._stream.scan(data, scratch=self._scratch)
        if self._genetic_runs:
            self._scan_genetic_runs(data)
        column = self._column_stream
        if column is not None:
            if self._column_from >= 0:
                column.scan(data[self._column_from :], scratch=self._column_scratch)
                self._column_from = -1
            else:
                column.scan(data, scratch=self._column_scratch)
        self._offset += len(data)
        if self._hits:
            self._process()
        if self._pem_pending != _NEVER and self._offset >= self._pem_pending + PEM_SAMPLE_BYTES:
            self._pem_identity(self._offset)
        if len(data) >= TAIL_BYTES:
            self._tail = data[-TAIL_BYTES:]
        else:
            window = tail + data
            self._tail = window[-TAIL_BYTES:] if len(window) > TAIL_BYTES else window

    def _scan_genetic_runs(self, data: bytes) -> None:
        """Record the token rule's hits for the runs of >= 60 bases that end in ``data``.

        The runs ``[ACGTNacgtn]{60,}[^ACGTNacgtn]`` gave in Hyperscan, found at
        C speed (``translate`` and ``find``, after a stride sample proves most
        chunks hold none), then the token rule: see :func:`genetic_runs_py`.
        """
        runs = _native.genetic_runs if self._core is not None else genetic_runs_py
        self._genetic_state = runs(
            data, self._offset, self._tail, self._genetic_state, self._genetic_id, self._hits
        )

    def _process(self) -> None:
        """Run the handlers of the last chunk's hits, in (end, id) order.

        A handler looks back at most :data:`TAIL_BYTES` from its hit's end. Hits
        that end that far into the chunk see the chunk itself as their window;
        only the earlier ones need the tail in front of it, and they get the
        tail + the chunk's first :data:`TAIL_BYTES`. That spares copying every
        chunk behind the tail (a fresh megabyte buffer per chunk costs page
        faults as well as the copy). Both windows hold every byte a handler reads.
        """
        if self._core is not None:
            self._core.process(
                self._hits,
                self._chunk,
                self._chunk_offset,
                self._chunk_tail,
                self._starts,
                self._handlers,
                self,
            )
            self._hits.clear()
            return
        hits = self._hits
        hits.sort()
        handlers = self._handlers
        data = self._chunk
        offset = self._chunk_offset
        tail = self._chunk_tail
        late = offset + TAIL_BYTES
        base = offset - len(tail)
        self._window = tail + data[:TAIL_BYTES]
        self._base = base
        starts = self._starts
        early = True
        for hit in hits:
            end = hit >> _ID_BITS
            if early and end >= late:
                early = False
                base = self._base = offset
                self._window = data
            pid = hit & _ID_MASK
            handlers[pid](end - base, end, pid, starts.pop(hit, 0) if starts else 0)
        hits.clear()

    def _py_accept(self, label: int, value: bytes, source: int = -1) -> None:
        self._counts[label] += 1
        if source >= 0:
            ch = self._chance_ix.get(label)
            if ch is None or source >= len(self._sources):
                source = -1
            else:
                self._sources[source][4][ch] += 1
        values = self._values[label]
        seen = values.get(value)
        if seen is not None:
            if seen == _ASIDE:  # seen again after its column was set aside
                values[value] = source
                self._aside[label] -= 1
            elif seen != source:
                values[value] = -1  # seen in two places: never set aside
            return
        if (
            len(values) - self._aside[label] < self._max_distinct
            and self._tracked < self._max_distinct_total
        ):
            values[value] = source
            self._tracked += 1
        else:
            self._capped = True

    def _py_propose(self, label: int, start: int, end: int, value: bytes, source: int = -1) -> bool:
        """A validated candidate spanning ``[start, end)``: resolve overlaps, then count.

        Returns:
            whether the candidate is now the pending one of its group (a
            candidate inside its span that ranks no better would lose to it).
        """
        group = self._group[label]
        slot = self._pending.get(group)
        rank = self._rank[label]
        if slot is None:
            self._pending[group] = [True, start, end, rank, label, value, source]
            return True
        if slot[0] and start < slot[2]:  # overlaps the pending candidate
            if rank > slot[3] or (rank == slot[3] and end - start <= slot[2] - slot[1]):
                return False  # the pending one wins
        elif slot[0]:
            self._py_accept(slot[4], slot[5], slot[6])
        slot[0] = True
        slot[1] = start
        slot[2] = end
        slot[3] = rank
        slot[4] = label
        slot[5] = value
        slot[6] = source
        return True

    def _valid(self, kind: int, value: bytes, check: Callable[[bytes], bool]) -> bool:
        memo = self._memo.get(kind)
        if memo is None:
            memo = self._memo[kind] = {}
        ok = memo.get(value)
        if ok is None:
            ok = check(value)
            if len(memo) < MEMO_ENTRIES:
                memo[value] = ok
        return ok

    def _near_hotword(self, cls: int, start: int, window: int = D.HOTWORD_WINDOW) -> bool:
        return self._hotword_start(cls, start, window) >= start - window

    def _hotword_start(self, cls: int, start: int, window: int = D.HOTWORD_WINDOW) -> int:
        """Absolute start of the last hotword of class ``cls`` before ``start``.

        Custom hotwords are Hyperscan patterns whose hits update
        ``self._hotword``. Built-in ones are looked up here, in the ``window``
        bytes before the identifier, only when a candidate asks: as literals
        in the database they cost prose more than any identifier pattern.
        Built-in hotwords of one class never contain each other, so the one
        that ends last also starts last, as with the hits.

        Returns:
            the start offset, or a value below ``start - window`` when none.
        """
        words = _BUILTIN_HOTWORDS.get(cls)
        if words is None:
            return self._hotword[cls]
        text = self._window
        end = start - self._base
        low = max(0, end - window)
        region = text[low:end].lower()  # ASCII hotwords match case-insensitively
        found = _NEVER
        for word, word_start in words:
            k = region.rfind(word)
            while k >= 0:
                at = low + k
                if not word_start or not (
                    (at > 0 and _LETTER[text[at - 1]]) or _LETTER[text[at + len(word)]]
                ):
                    found = max(found, at + self._base)
                    break
                k = region.rfind(word, 0, k + len(word) - 1)
        return found

    # -- CSV header (diagnosis columns) --------------------------------------

    def _capture_header(self, data: bytes) -> None:
        cut = data.find(b"\n")
        room = D.CONTEXT_BYTES - len(self._header)
        if cut < 0:
            self._header += data[:room]
            if len(data) >= room:
                self._header_open = False  # too long to be a header line
                self._header_end = self._offset + len(data)
            return
        self._header += data[: min(cut, room)]
        self._header_end = self._offset + cut
        if cut <= room:
            self._close_header()
            if self._diag_columns:
                self._open_column_stream(cut)
        self._header_open = False

    def _close_header(self) -> None:
        self._header_open = False
        header = bytes(self._header).lower()
        if self._header_end == _NEVER:
            self._header_end = self._offset
        # The delimiter is the one the header line uses most, outside quotes
        # (a tie, e.g. a one-column header, keeps RFC 4180's comma).
        unquoted = _unquoted(header)
        sep = max(_COLUMN_DELIMITERS, key=unquoted.count)
        self._column_sep = sep
        # Every cell is a piece of the header without its quotes: a header
        # holding no hotword so has no diagnosis column (most headers; a JSON
        # member's first line is long and cut into many cells).
        bare = header.replace(b'"', b"")
        self._diag_columns = (
            frozenset(
                i
                for i, cell in enumerate(_split_cells(header, sep))
                if any(w in cell for w in _DIAGNOSIS_WORDS)
            )
            if any(w in bare for w in _DIAGNOSIS_WORDS)
            else frozenset()
        )
        self._start_table(header.removesuffix(b"\r"))

    # -- column profiles (chance.py) ------------------------------------------

    def _start_table(self, header: bytes) -> None:
        """Make the member a table for the column profiles when its lines are rows.

        Delimited text splits its rows at the header's delimiter; plain text
        is one column of the lines that are a value and nothing else. A first
        line with a long number in a cell is a row: the table then has no
        header and starts at the member's first byte.
        """
        kind = self._member_type
        if kind in _TABLE_TYPES:
            sep = b"\t" if kind == "text/tab-separated-values" else self._column_sep
            cells = [cell.strip(_LINE_PAD) for cell in _split_cells(header, sep)]
        elif kind in _LINE_TABLE_TYPES:
            sep = b"\n"
            cells = [header.strip(_LINE_PAD)]
        else:
            return
        if len(self._tables) >= MAX_TABLES:
            return
        row = any(len(cell) >= _DATA_CELL_DIGITS and cell.isdigit() for cell in cells)
        start = 0 if row else self._header_end  # the newline before the first row
        names = () if row else tuple(c[: C.HEADER_CHARS].decode("utf-8", "replace") for c in cells)
        if self._core is not None:
            self._core.table(sep[0], start)
        else:
            self._col_source = {}
        self._table = len(self._tables)
        self._table_sep = sep[0]
        self._table_from = start
        self._tables.append(names[:MAX_COLUMNS])

    def _column_source(self, s: int, end: int) -> int:
        """The source (a table column) of the value at window indices ``[s, end)``, or -1.

        -1: the member is no table, the value lies before its first row or on a
        line that starts more than CONTEXT_BYTES before it, in a column past
        MAX_COLUMNS, past MAX_SOURCES; in plain text, on a line with anything
        else. The compiled core's column_source does the same.
        """
        if self._table < 0:
            return -1
        window = self._window
        line = window.rfind(b"\n", max(0, s - D.CONTEXT_BYTES), s)
        if line < 0 or self._base + line < self._table_from:
            return -1
        cells = window[line + 1 : s]
        sep = self._table_sep
        if sep == 0x0A:
            if cells.strip(_LINE_PAD):
                return -1
            after = end
            while after < len(window) and window[after] in _LINE_PAD + b"\r":
                after += 1
            if after >= len(window) or window[after] != 0x0A:
                return -1
            column = 0
        else:
            if 0x22 in cells:  # '"': delimiters inside quoted fields do not count
                cells = _unquoted(cells)
            column = cells.count(sep)
        if column >= MAX_COLUMNS:
            return -1
        source = self._col_source.get(column)
        if source is not None:
            return source
        if len(self._sources) >= MAX_SOURCES:
            return -1
        source = len(self._sources)
        n = len(C.CHANCE_LABELS)
        self._sources.append([self._table, column, [0] * n, [0] * n, [0] * n, 0])
        self._col_source[column] = source
        return source

    def _profile(self, source: int, ch: int, shaped: bool) -> None:
        """Count a value of a chance-tested validator's length, and whether it has its shape."""
        entry = self._sources[source]
        entry[2][ch] += 1
        entry[3][ch] += shaped

    def _raw_profiles(self) -> list[C.RawProfile]:
        if self._core is not None:
            return self._core.profiles()  # type: ignore[no-any-return]
        return [
            (i, table, column, tuple(zip(cand, shaped, valid, strict=True)))
            for i, (table, column, cand, shaped, valid, _aside) in enumerate(self._sources)
        ]

    def _set_aside(self, source: int, ch: int) -> None:
        """One column's findings of one validator leave the counts (the core's set_aside)."""
        if self._core is not None:
            self._core.set_aside(source, ch)
            return
        entry = self._sources[source]
        if entry[5] & (1 << ch):
            return
        entry[5] |= 1 << ch
        label = self._ix[C.CHANCE_LABELS[ch]]
        self._counts[label] -= entry[4][ch]
        values = self._values[label]
        for value, seen in values.items():
            if seen == source:
                values[value] = _ASIDE
                self._aside[label] += 1

    def _open_column_stream(self, cut: int) -> None:
        """Scan for bare ICD-10 cells from the header's newline on (diagnosis column rule)."""
        database, _pid = self._detectors.column_database()
        if self._column_scratch is None:
            self._column_scratch = hyperscan.Scratch(database)
        stream = database.stream(match_event_handler=self._on_column_match)
        stream.__enter__()
        self._column_stream = stream
        self._column_delta = self._offset + cut
        self._column_from = cut

    def _in_diag_column(self, s: int) -> bool:
        """Whether window index ``s`` lies in a column whose header names a diagnosis."""
        if not self._diag_columns:
            return False
        window = self._window
        line = window.rfind(b"\n", max(0, s - D.CONTEXT_BYTES), s)
        if line < 0 or self._base + line < self._header_end:
            return False
        cells = window[line:s]
        if 0x22 in cells:  # '"': delimiters inside quoted fields do not count
            cells = _unquoted(cells)
        return cells.count(self._column_sep) in self._diag_columns

    # -- handlers: (window end index, absolute end, pattern id, SOM start) ----
    #
    # ``e`` indexes ``self._window`` just past the match, ``t`` is the same
    # position as an absolute stream offset. Most patterns end with one
    # boundary byte (at ``e - 1``); grouped numbers with one more look-ahead byte.

    def _run_start(self, end: int, longest: int, table: bytes) -> int:
        """Window index where the run of ``table`` bytes ending at ``end`` starts."""
        low = max(0, end - longest - 1)
        return low + self._window[low:end].translate(table).rfind(b"\x00") + 1

    def _fraction(self, p: int) -> bool:
        """Whether window index ``p``, the byte before an identifier, is the "." of a decimal.

        "0.13812345678" is a measurement, "No.440305…" and "Tel.2345…" are not.
        """
        window = self._window
        return window[p] == 0x2E and p > 0 and _DIGIT[window[p - 1]] == 1

    def _h_digits(self, e: int, t: int, pid: int, _f: int) -> None:
        end = e - 1
        start = self._run_start(end, 19, _DIGIT_X_TABLE)
        if self._window[start - 1] == 0x2E and self._fraction(start - 1):
            return
        run = self._window[start:end]
        n = len(run)
        first = t - 1 - n
        ix = self._ix
        propose = self._py_propose  # the reference's handler (the core has its own)
        # Only the lengths a column profile tests look up their column.
        src = self._column_source(start, end) if n == 11 or 15 <= n <= 19 else -1
        if n == 18:
            if src >= 0:
                self._profile(src, _CH_RESIDENT_ID, V.resident_id_shape(run, self._dates))
                self._profile(src, _CH_USCC, V.uscc_shape(run))
                self._profile(src, _CH_CARD, V.bank_card_shape(run))
            # A pending Resident ID outranks a USCC or card reading of the same run.
            if self._valid(K_MEMO_RESIDENT_ID, run, self._is_resident_id) and propose(
                ix[L.CN_RESIDENT_ID], first, t - 1, run.upper(), src
            ):
                return
            if self._valid(K_MEMO_USCC, run, V.is_uscc):
                propose(ix[L.CN_USCC], first, t - 1, run, src)
            if run[17] <= 0x39 and self._valid(K_MEMO_CARD, run, V.is_bank_card):
                propose(ix[L.BANK_CARD], first, t - 1, run, src)
        elif n == 8:
            if run[0] >= 0x32 and (
                self._hk_prefix(start - 1) or self._near_hotword(D.HW_PHONE, first)
            ):
                propose(ix[L.HK_PHONE], first, t - 1, run)
        elif n == 11:
            if src >= 0:
                # Both phone readings share a shape: eleven digits, the first not 0.
                shaped = run.isdigit() and run[0] != 0x30
                self._profile(src, _CH_CN_PHONE, shaped)
                self._profile(src, _CH_HK_PHONE, shaped)
            if run[0] == 0x31 and run[1] >= 0x33:  # 1[3-9]
                propose(ix[L.CN_PHONE], first, t - 1, run, src)
            elif run[:3] == b"852" and run[3] >= 0x32:
                propose(ix[L.HK_PHONE], first, t - 1, run[3:], src)
        elif n == 13:
            if run[:3] == b"861" and run[3] >= 0x33:
                propose(ix[L.CN_PHONE], first, t - 1, run[2:])
        else:
            if n == 15 and run[:5] == b"00861" and run[5] >= 0x33:
                propose(ix[L.CN_PHONE], first, t - 1, run[4:])
            if src >= 0:
                self._profile(src, _CH_CARD, V.bank_card_shape(run))
            if self._valid(K_MEMO_CARD, run, V.is_bank_card):
                propose(ix[L.BANK_CARD], first, t - 1, run, src)

    def _is_resident_id(self, value: bytes) -> bool:
        return V.is_resident_id(value, self._dates)

    def _h_uscc(self, e: int, t: int, pid: int, _f: int) -> None:
        value = self._window[e - 19 : e - 1]
        if self._fraction(e - 20):
            return
        if not value.isdigit() and self._valid(K_MEMO_USCC, value, V.is_uscc):
            self._propose(self._specs[pid].label, t - 19, t - 1, value)

    def _h_grouped(self, e: int, t: int, pid: int, _f: int) -> None:
        window = self._window
        end = e - 2
        low = max(0, end - _GROUPED_MAX - 2)
        segment = window[low:end]
        sep = b"-" if self._specs[pid].arg else b" "  # one separator per number
        classes = segment.translate(_GROUP_CLASSES[sep])
        run = classes[classes.rfind(b"o") + 1 :]
        # Usually the run is one known shape; a shape may also end it
        # ("852 2345 6789" holds the HK 4-4 shape, "86 138 1234 5678" a CN one).
        shapes = _GROUP_SUFFIXES.get(run)
        for mask, label in shapes or _GROUP_SHAPES_LONGEST_FIRST:
            if run.endswith(mask) and self._grouped(label, end - len(mask), end, t, sep):
                break
        # Or the number ends before a last group that is no group of it: a CVV,
        # an age ("4111 1111 1111 1111 123", "138 1234 5678 25"); a longer
        # number that validates as well overlaps it and wins in _propose.
        cut = len(run) - _SHORT_GROUP
        if cut > 0 and b"s" in run[cut:]:
            cut = run.rindex(b"s")
            shorter = end - (len(run) - cut)
            head = run[:cut]
            for mask, label in _GROUP_SUFFIXES.get(head, _GROUP_SHAPES_LONGEST_FIRST):
                if head.endswith(mask) and self._grouped(
                    label, shorter - len(mask), shorter, t - (end - shorter), sep
                ):
                    break

    def _grouped(self, label: str, begin: int, end: int, t: int, sep: bytes) -> bool:
        """One grouped number at window ``[begin, end)`` (absolute end ``t - 2``).

        Returns:
            whether it is now the pending candidate (see :meth:`_propose`).
        """
        window = self._window
        # The phones' leading digits first: they rule out most runs for the
        # price of an index ("+852 2345 6789" is tried as a 3-4-4 CN shape).
        lead = window[begin]
        if label == L.CN_PHONE:
            if lead != 0x31 or window[begin + 1] < 0x33:  # 1[3-9]
                return False
        elif label == L.HK_PHONE and lead < 0x32:  # [2-9]
            return False
        before = window[begin - 1]
        if _ALNUM[before] or (before == 0x2E and _DIGIT[window[begin - 2]]):
            return False  # part of an alphanumeric run, or a decimal fraction
        if (
            before == sep[0]
            and _DIGIT[window[begin - 2]]
            and self._group_before(begin - 2, sep)
            and not self._hk_prefix(begin - 1)
            and window[begin - 3 : begin - 1] != b"86"
        ):
            return False  # part of a longer grouped run, not a "+86"/"852" prefix
        digits = window[begin:end].replace(sep, b"")
        first = t - 2 - (end - begin)
        ix = self._ix[label]
        if label == L.CN_PHONE:
            return self._propose(ix, first, t - 2, digits)
        if label == L.HK_PHONE:
            return (
                self._hk_prefix(begin - 1) or self._near_hotword(D.HW_PHONE, first)
            ) and self._propose(ix, first, t - 2, digits)
        return self._valid(K_MEMO_CARD, digits, V.is_bank_card) and self._propose(
            ix, first, t - 2, digits
        )

    def _group_before(self, p: int, sep: bytes) -> bool:
        """Whether the digit run ending at window index ``p`` is a group of the same number.

        Only a group-sized run (at most :data:`_GROUP_DIGITS_MAX` digits) not
        itself led by the other separator is one: "9 4111 1111 1111 1111"
        goes on to the left, "6222021234567894 6222 0212 …" and
        "2026-01-01 138 1234 5678" do not.
        """
        window = self._window
        low = max(0, p - _GROUP_DIGITS_MAX)
        k = p
        while k >= low and _DIGIT[window[k]]:
            k -= 1
        if k < low:
            return False  # longer than any group
        return k < 0 or window[k] not in _SEPARATOR or window[k] == sep[0]

    def _hk_prefix(self, p: int) -> bool:
        """``+852``/``852``/``(852)`` right before window index ``p`` (the boundary byte)."""
        window = self._window
        c = window[p]
        if c in _SEPARATOR:
            p -= 1
            if p < 0:
                return False
            c = window[p]
        if c == 0x29:  # ")"
            return p >= 4 and window[p - 4 : p + 1] == b"(852)"
        return p >= 3 and window[p - 2 : p + 1] == b"852" and not _ALNUM[window[p - 3]]

    def _h_letters(self, e: int, t: int, pid: int, _f: int) -> None:
        end = e - 1
        start = self._run_start(end, 11, _ALNUM)
        if self._fraction(start - 1):
            return
        token = self._window[start:end]
        n = len(token)
        if n in (8, 9) and self._valid(K_MEMO_HKID, token, V.is_hkid):
            self._accept(self._ix[L.HK_ID], token)
        if n in (9, 11):
            self._travel_doc(token, t - 1 - n)

    def _h_hkid_brackets(self, e: int, t: int, pid: int, _f: int) -> None:
        opening = e - 3  # "(" of "(3)"
        start = self._run_start(opening, 8, _ALNUM)
        if self._fraction(start - 1):
            return
        window = self._window
        value = window[start:opening] + window[e - 2 : e - 1]
        if self._valid(K_MEMO_HKID, value, V.is_hkid):
            self._accept(self._specs[pid].label, value)

    def _travel_doc(self, value: bytes, start: int) -> None:
        letter = value[0]
        if len(value) == 11:
            if letter not in b"HM" or not value[1:].isdigit():
                return
        elif not (
            (letter in b"EGKHMC" and value[1:].isdigit())
            or (letter in b"EC" and value[1] in _DOC_SECOND_LETTER and value[2:].isdigit())
        ):
            return  # an HKID-shaped token (two letters, six digits) or "EI…"/"EO…"
        passport = self._hotword_start(D.HW_PASSPORT, start)
        permit = self._hotword_start(D.HW_PERMIT, start)
        limit = start - D.HOTWORD_WINDOW
        near_passport = passport >= limit
        near_permit = permit >= limit
        if not (near_passport or near_permit):
            return
        label: str | None
        if len(value) == 11 or letter in b"MC":  # H/M + 10 digits, Macao and exit-entry permits
            label = L.CN_TRAVEL_PERMIT if near_permit else None
        elif letter in b"EG":
            label = L.CN_PASSPORT if near_passport else None
        elif letter == 0x4B:  # "K"
            label = L.HK_PASSPORT if near_passport else None
        elif letter != 0x48 or not value[1:].isdigit():  # only "H" + 8 digits is left
            label = None
        elif near_passport and near_permit:  # the nearer hotword decides
            label = L.HK_PASSPORT if passport > permit else L.CN_TRAVEL_PERMIT
        else:
            label = L.HK_PASSPORT if near_passport else L.CN_TRAVEL_PERMIT
        if label is not None:
            self._accept(self._ix[label], value)

    def _h_email(self, e: int, t: int, pid: int, _f: int) -> None:
        window = self._window
        end = e - 2
        at = window.rfind(b"@", max(0, end - EMAIL_DOMAIN_MAX), end)
        if at < 0:
            return
        low = max(0, at - EMAIL_LOCAL_MAX - 1)
        k = window[low:at].translate(_EMAIL_LOCAL_TABLE).rfind(b"\x00")
        if k < 0:
            return  # local part longer than RFC 5321 allows
        start = low + k + 1
        while start < at and window[start] == 0x2E:  # a local part never starts with "."
            start += 1
        if start < at:
            self._accept(self._specs[pid].label, window[start:end].lower())

    def _h_geo(self, e: int, t: int, pid: int, _f: int) -> None:
        window = self._window
        m = _GEO_TAIL.search(window, max(0, e - 1 - GEO_TEXT_MAX), e - 1)
        if m is None:
            return
        first, second = float(m.group(1)), float(m.group(2))
        lat, lon = (first, second) if self._specs[pid].arg == 0 else (second, first)
        if _GBA_LAT[0] <= lat <= _GBA_LAT[1] and _GBA_LON[0] <= lon <= _GBA_LON[1]:
            self._accept(self._specs[pid].label, b"%.6f,%.6f" % (lat, lon))

    def _h_fixed_value(self, e: int, t: int, pid: int, _f: int) -> None:
        spec = self._specs[pid]
        self._accept(spec.label, self._window[e - spec.width + 1 : e - 1])

    def _h_jwt(self, e: int, t: int, pid: int, _f: int) -> None:
        window = self._window
        end = e - 1
        low = max(0, end - D.CONTEXT_BYTES)
        k = window[low:end].translate(_JWT_TABLE).rfind(b"\x00")
        token = window[low + k + 1 : end]
        if k >= 0:
            parts = token.split(b".")
            if len(parts) != 3 or not token.startswith(b"eyJ") or not parts[2]:
                return
        # k < 0: a token longer than the context; its tail is still a credential.
        self._accept(self._specs[pid].label, token)

    def _h_pem(self, e: int, t: int, pid: int, _f: int) -> None:
        spec = self._specs[pid]
        if self._pem_pending != _NEVER:  # the previous block ends at this line
            self._pem_identity(t)
        if spec.arg == 0:  # BEGIN: one finding, whether or not an END follows
            self._pem_open = True
            self._pem_label = spec.label
            self._pem_pending = t
            if self._offset >= t + PEM_SAMPLE_BYTES:
                self._pem_identity(t + PEM_SAMPLE_BYTES)
            return
        if self._pem_open:  # END of a block already counted at its BEGIN
            self._pem_open = False
            return
        window = self._window
        marker = window.rfind(b"-----END", max(0, e - 64), e)
        body = window[max(0, marker - PEM_ID_BYTES - 8) : marker].split()
        self._accept(spec.label, b"pem:" + b"".join(body)[-PEM_ID_BYTES:])

    def _pem_identity(self, limit: int) -> None:
        """Count the pending key block, identified by its first base-64 bytes.

        They are read from the :data:`PEM_SAMPLE_BYTES` after the BEGIN line,
        up to ``limit`` (an END line, the next BEGIN, the member's end) and to
        the first ``-----``: whichever event calls this, the same bytes result.
        """
        start = self._pem_pending
        self._pem_pending = _NEVER
        raw = self._bytes_at(start, min(limit, start + PEM_SAMPLE_BYTES))
        cut = raw.find(b"-----")
        if cut >= 0:
            raw = raw[:cut]
        self._accept(self._pem_label, b"pem:" + b"".join(raw.split())[:PEM_ID_BYTES])

    def _bytes_at(self, start: int, end: int) -> bytes:
        """Text at absolute offsets ``[start, end)`` of the last scanned chunk and its tail."""
        offset = self._chunk_offset
        chunk = self._chunk
        if start >= offset:
            return chunk[start - offset : end - offset]
        tail = self._chunk_tail
        head = tail[max(0, len(tail) - (offset - start)) :]
        return (head + chunk[: max(0, end - offset)])[: end - start]

    def _h_health(self, e: int, t: int, pid: int, _f: int) -> None:
        end = e - 2  # the boundary byte and one of look-ahead follow the code
        start = self._run_start(end, 8, _ICD_TABLE)
        code = self._window[start:end]
        if _ICD.fullmatch(code) is None:
            return
        first = t - 2 - len(code)
        hotword = self._hotword_start(D.HW_DIAGNOSIS, first)
        # Under a diagnosis column header, the header's own hotword says which
        # column holds codes, not that the first row's other cells do.
        near = hotword >= first - D.HOTWORD_WINDOW and not (
            self._diag_columns and hotword < self._header_end <= first
        )
        if near or self._in_diag_column(start):
            self._propose(self._specs[pid].label, first, t - 2, code)

    def _h_mark(self, e: int, t: int, pid: int, _f: int) -> None:
        spec = self._specs[pid]
        self._accept(spec.label, spec.value)

    def _h_genetic_run(self, e: int, t: int, pid: int, _f: int) -> None:
        spec = self._specs[pid]
        kind = spec.arg
        if kind == D.GENETIC_COMMIT or kind == D.GENETIC_DROP:  # a block of lines is decided
            if kind == D.GENETIC_COMMIT:
                self._genetic_count_pending(spec.label)
            self._genetic_pending.clear()
            self._genetic_through = False
            return
        value = self._window[e - 1 - _GENETIC_MIN : e - 1].upper()  # the run's last bases
        if kind == D.GENETIC_COUNT or self._genetic_through:
            self._accept(spec.label, value)
            return
        pending = self._genetic_pending
        pending[value] = pending.get(value, 0) + 1
        if len(pending) > GENETIC_PENDING_MAX:
            # Bounded memory: a block of this many distinct lines of bases is
            # a sequence (a base64 block's all-base lines repeat one value, or
            # a neighbouring line shows it long before).
            self._genetic_count_pending(spec.label)
            pending.clear()
            self._genetic_through = True

    def _genetic_count_pending(self, label: int) -> None:
        """Count the lines of the block of runs of bases held so far."""
        for value, lines in self._genetic_pending.items():
            for _ in range(lines):
                self._accept(label, value)

    def _h_genetic_record(self, e: int, t: int, pid: int, _f: int) -> None:
        window = self._window
        mark = _RECORD_MARK.get(self._member_type, b"\n")
        if mark == b"\n>":
            # FASTA hits end on the first sequence line (or its first bytes):
            # a protein record is no genetic data.
            line = window.rfind(b"\n", max(0, e - D.FASTA_SAMPLE_BYTES - 2), e - 1)
            if not _nucleotides(window[line + 1 : e].rstrip(b"\n")):
                return
            e = line + 1
        low = max(0, e - D.CONTEXT_BYTES)
        search_end = e - 1 if mark == b"\n" else e
        line = window.rfind(mark, low, search_end)
        if line < 0:
            ident = window[max(0, e - 1 - RECORD_ID_BYTES) : e - 1]
        else:
            first = line + len(mark)
            ident = window[first : first + RECORD_ID_BYTES].split(b"\n", 1)[0]
        self._accept(self._specs[pid].label, ident)

    def _h_armor(self, e: int, t: int, pid: int, _f: int) -> None:
        layer = self._specs[pid].value
        if layer not in self._armored:  # one finding per member, like the decoder's
            self._armored.add(layer)
            self.unscannable(layer.decode() + ": encrypted content")

    def _h_hotword(self, e: int, t: int, pid: int, _f: int) -> None:
        spec = self._specs[pid]
        begin = e - spec.width
        if spec.arg and begin > 0 and _LETTER[self._window[begin - 1]]:
            return  # "hotel" holds no "tel"
        self._hotword[spec.label] = t - spec.width

    def _h_custom(self, e: int, t: int, pid: int, f: int) -> None:
        spec = self._specs[pid]
        rt = self._detectors.custom_runtime[spec.arg]
        start = f if spec.kind == D.K_CUSTOM_REGEX else t - spec.width
        if t - start > D.CONTEXT_BYTES:
            return  # longer than the context: its value cannot be seen whole
        window = self._window
        s = start - self._base
        value = window[s : e - 1]
        if not value:
            return
        if rt.boundary and (
            (_ALNUM[value[0]] and s > 0 and _ALNUM[window[s - 1]])
            or (_ALNUM[value[-1]] and _ALNUM[window[e - 1]])
        ):
            return
        if rt.hotword_class >= 0 and not self._near_hotword(rt.hotword_class, start, rt.window):
            return
        if rt.validator is not None and not self._valid(
            -1 - spec.arg, value, V.REGISTRY[rt.validator]
        ):
            return
        if not rt.case_sensitive:
            value = value.lower()
        self._propose(spec.label, start, t - 1, value)
