"""Built-in and custom detector definitions, compiled into Hyperscan databases.

The patterns are designed so that Hyperscan itself rejects non-candidates
(SPEC §3, §9): most include the byte before and after the identifier
(``[^0-9A-Za-z]``), so a phone number inside a longer digit run never reaches
Python, and they have a fixed width, so the matcher computes the start as
``end - width`` without start-of-match tracking. Candidates that only count
near a hotword (an 8-digit HK phone, an ICD-10 code) carry a superset of the
hotword window in their pattern, so the digits of scientific CSV never reach
Python; the matcher then looks for the built-in hotword in the 32 bytes before
the candidate. Custom hotwords are patterns of their own, whose last position
per class the matcher remembers. Only custom regular expressions, whose width
is unknown, use ``HS_FLAG_SOM_LEFTMOST``.

A :class:`DetectorSet` is immutable and shared by every scanner of one policy
version: it owns the compiled databases, a scanner owns only its stream and
scratch. Member formats with record structure (FASTA, FASTQ, VCF, SAM) get
their own database variant, compiled on first use, with the format's record
pattern; outside them the matcher finds "runs of 60 bases" itself with
``bytes.translate`` (a class run Hyperscan has to track at every byte of
prose cost more than all the identifiers together).

The patterns are compiled into two databases (:attr:`PatternSpec.database`):
:data:`DB_DIGIT` holds the identifiers led by a boundary byte and a digit or
capital class and their abbreviation-dot variants, and the AWS key id;
:data:`DB_LITERAL`, scanned over every byte, everything anchored on a literal
(the "852" and phone-hotword HK phones, the "2[123]." / "11[2-5]." coordinates,
the GitHub token, e-mail "@", JWT, PEM, armor, diagnosis hotwords,
markings, custom detectors). Measured on the bench data (``gateway bench classify``), the two
passes together are 2-3x faster than one database holding both: Hyperscan then
falls back to engines that suit neither. Which side a pattern goes to is a
measured choice, not a rule Hyperscan states: a literal-led pattern with a
class tail (the phone hotword + 32-byte window, "852" + 8 digits) in the digit
database cost that pass 1.5-2.7x on prose. Hits do not depend on the split (one
callback, hits sorted by end and id), so moving a pattern changes speed only;
re-measure both passes on prose, numeric and PII after moving or adding one.

The digit database is not scanned over every byte (issue 17). Each of its
patterns is built around a *core* (:data:`DIGIT_CORE_RUN` digits in a row, or
a digit, a separator of :data:`DIGIT_CORE_SEPARATORS` and
:data:`DIGIT_CORE_GROUP` digits, or one of :data:`DIGIT_CORE_WORDS`) and is
at most :data:`DIGIT_REACH` bytes wide,
so every match lies within :data:`DIGIT_REACH` bytes of a core. The compiled
core finds the cores (``_native.digit_windows``, 64 bytes per vector step) and
the matcher (``matcher.DigitScan``) scans the block-mode variant of the
database over the windows around them only, or streams text whose windows
cover half of it or more. Any pattern of digits costs Hyperscan about 1 ns a byte on
text where a number comes every few words (its automaton never gets to skip),
and lab notes and reports are such text; their numbers ("12.5 mg/L",
"n = 248", "2019–2023") hold no core. A pattern added to the digit database
must hold a core and fit the reach (``tests/classify/test_digit_windows.py``
checks both); one that does not belongs in the literal database (or gets a
core word, as the AWS key id did).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Final

import hyperscan

from gateway.classify import labels as L
from gateway.classify import validators

#: Bumped whenever a built-in pattern or validator changes meaning, so a
#: DetectorSet fingerprint (and hence a policy version's scan semantics) changes with it.
ENGINE_VERSION: Final = "hksz-classify/4"

#: Bytes of context the matcher keeps before each chunk. Every look-back (the
#: widest fixed pattern, e-mail local part + domain, a JWT, the start of a CSV
#: line for the diagnosis-column rule) is bounded by it, which is what makes
#: results independent of chunking and memory independent of input size.
CONTEXT_BYTES: Final = 4096

#: The widest fixed-width pattern (a grouped 19-digit card: 42 bytes, a GitHub
#: token: 42) rounded up; the matcher keeps this much more than CONTEXT_BYTES so
#: that every identifier start has a full CONTEXT_BYTES of history.
MAX_FIXED_WIDTH: Final = 64

#: The core of every digit-database match (see the module docstring): this many
#: digits in a row, or a digit, one of the separators and DIGIT_CORE_GROUP
#: digits (the grouped numbers: "138 1234 5678", "4111-1111-…"). The compiled
#: core's search is written for these values; the matcher checks at import
#: that it was built for them.
DIGIT_CORE_RUN: Final = 6
DIGIT_CORE_GROUP: Final = 4
DIGIT_CORE_SEPARATORS: Final = b" -"
#: The AWS key id's prefixes, a core too: a key id may hold no digit, and in the
#: digit database it costs nothing (in the literal one ~0.03 ms/MB, ~2% of the
#: PII-dense and JSON kinds).
DIGIT_CORE_WORDS: Final = (b"AKIA", b"ASIA")

#: The widest match of the digit database, bytes (boundary and look-ahead bytes
#: included): a grouped number after an abbreviation, "acct." + 4 + 3 x 7 + 6 +
#: 2 = 38, rounded up to MAX_FIXED_WIDTH. A match holding a core that ends at e
#: lies in [e + 1 - DIGIT_REACH, e + 1 + DIGIT_REACH).
DIGIT_REACH: Final = MAX_FIXED_WIDTH

#: Bytes after a core in which no further core is looked for: the window of the
#: core reaches this much further instead, which holds their windows. On text
#: dense with long numbers (a CSV of read counts, an identifier every ~200
#: bytes) the core search then reads a fraction of the bytes. A window costs a
#: Python call and a Hyperscan scan, ~1 us plus ~1 ns a byte on number-rich
#: text: a lone core's window (2 x DIGIT_REACH + DIGIT_SKIP bytes) costs about
#: twice a call, and windows closer than that are one.
DIGIT_SKIP: Final = 1024

#: Whether the compiled core is built: only it scans the digit windows' database
#: (``matcher.DigitScan``); without it that database is never compiled.
NATIVE_BUILT: Final = importlib.util.find_spec("gateway.classify._native") is not None

#: Expressions per detector set: the matcher packs an expression id into 20 bits.
MAX_EXPRESSIONS: Final = (1 << 20) - 1

#: SPEC §3.1: hotwords count "within 32 bytes before" the identifier.
HOTWORD_WINDOW: Final = 32

#: Upper bound on a custom detector's hotword window: it must fit the context buffer.
MAX_HOTWORD_WINDOW: Final = 1024

#: Longest hotword or keyword accepted from a policy (bytes of UTF-8), so that
#: "hotword start" stays inside the context buffer.
MAX_KEYWORD_BYTES: Final = 256

# Pattern kinds: the matcher dispatches on these (one handler each).
K_DIGITS: Final = 0
K_USCC: Final = 1
K_GROUPED: Final = 2
K_LETTERS: Final = 3
K_HKID_BRACKETS: Final = 4
K_EMAIL: Final = 5
K_GEO: Final = 6
K_CRED_FIXED: Final = 7
K_JWT: Final = 8
K_PEM: Final = 9
K_HEALTH: Final = 10
K_MARK: Final = 11
K_GENETIC_RUN: Final = 12
K_GENETIC_RECORD: Final = 13
K_HOTWORD: Final = 14
K_CUSTOM_REGEX: Final = 15
K_CUSTOM_KEYWORD: Final = 16
K_ARMOR: Final = 17

#: The two streaming databases a pattern can be compiled into (see the module docstring).
DB_DIGIT: Final = 0
DB_LITERAL: Final = 1

# Hotword classes of the built-in labels; custom detectors get classes after these.
HW_PHONE: Final = 0
HW_PASSPORT: Final = 1
HW_PERMIT: Final = 2
HW_DIAGNOSIS: Final = 3

#: ASCII-armored encrypted text (RFC 9580 §6.2, C2SP age "ASCII armor") and
#: the layer name of its ``content.unscannable`` reason.
ARMOR_MARKERS: Final = (
    ("-----BEGIN PGP MESSAGE-----", "pgp"),
    ("-----BEGIN AGE ENCRYPTED FILE-----", "age"),
)

#: SPEC §3.1 hotwords per class. ASCII hotwords match case-insensitively and
#: must not continue a word ("hotel" holds no "tel").
BUILTIN_HOTWORDS: Final[dict[int, tuple[str, ...]]] = {
    HW_PHONE: ("tel", "phone", "mobile", "電話", "电话", "手機", "手机"),
    HW_PASSPORT: ("passport", "護照", "护照"),
    HW_PERMIT: ("回鄉證", "回乡证", "通行證", "通行证", "permit"),
    HW_DIAGNOSIS: ("diagnosis", "icd", "診斷", "诊断", "病历", "病歷"),
}

#: An ICD-10 code as a cell value (SPEC §3.1 shape), for the diagnosis-column rule.
#: It ends with two bytes: a boundary and one of look-ahead, so that a code
#: that goes on with "." and more characters ("E11.12345", "E11.9.1") is not
#: one, while a sentence's full stop after it ("E11.") still ends it.
COLUMN_HEALTH_PATTERN: Final = (
    rb"[^0-9A-Za-z.][A-TV-Z][0-9][0-9AB](?:\.[0-9A-Z]{1,4})?"
    rb"(?:[^0-9A-Za-z.][\s\S]|\.[^0-9A-Za-z])"
)

#: What may stand between a latitude and a longitude: a separator, then
#: optionally the next key ('"lon": ', "&lng=") within a small bounded span
#: (a key of up to 16 characters: "longitude" and its variants fit).
GEO_SEPARATOR: Final = rb"[ \t]*[,;/&\t ][ \t]*(?:[\"']?[A-Za-z_]{1,16}[\"']?[ \t]*[:=][ \t]*)?"

#: The private key kinds of PEM (RFC 7468; PKCS #1, SEC 1, OpenSSH,
#: PKCS #8 encrypted) and OpenPGP armor (RFC 9580 §6.2).
PEM_PRIVATE_KINDS: Final = (
    rb"(?:(?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY|PGP PRIVATE KEY BLOCK)"
)

#: Bytes of a FASTA record's first sequence line sampled to tell nucleotides
#: from amino acids (60: the line width NCBI writes).
FASTA_SAMPLE_BYTES: Final = 60

#: Member content types with record structure (SPEC §3.1 ``sensitive.genetic``).
GENOMIC_TYPES: Final = ("text/x-fasta", "text/x-fastq", "text/x-vcf", "text/x-sam")

_B: Final = rb"[^0-9A-Za-z]"  # the identifier boundary (SPEC §3.1)
#: The byte before an identifier in the digit database: as ``_B``, and not a
#: "." either, so the fraction of a decimal number ("0.13812345678") is a
#: measurement, not a phone, without reaching Python (scientific CSV is full
#: of them: letting them through cost 8x on the numeric bench).
_LB: Final = rb"[^0-9A-Za-z.]"
_ANY: Final = rb"[\s\S]"  # one byte of look-ahead, checked in Python


class DetectorError(ValueError):
    """A custom detector is invalid; names the detector (and pattern) at fault.

    Attributes:
        label: the detector's label.
        field: ``"patterns"``, ``"keywords"``, ``"hotwords"``, ``"validator"`` …
        index: index of the offending entry in that field, if any.
    """

    def __init__(self, label: str, field: str, message: str, index: int | None = None) -> None:
        where = f"{field}[{index}]" if index is not None else field
        super().__init__(f"detector {label}: {where}: {message}")
        self.label = label
        self.field = field
        self.index = index


@dataclass(frozen=True, slots=True)
class CustomDetector:
    """A policy-declared detector (SPEC §3.1 "Custom detectors").

    Attributes:
        label: ``custom.<name>``.
        patterns: Hyperscan-syntax regular expressions (no look-around, no
            back-references).
        keywords: literal strings (a dictionary).
        hotwords: when given, a match counts only with one of these within
            ``window`` bytes before it.
        window: the hotword window in bytes.
        validator: name of a check from :data:`validators.REGISTRY`, run on
            the matched text.
        case_sensitive: whether patterns, keywords and hotwords match case.
        personal: the label counts as personal data, so its distinct values
            take part in ``subjects``.
        boundary: apply the identifier boundary rule (not part of a longer
            run of ASCII letters and digits).
    """

    label: str
    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    hotwords: tuple[str, ...] = ()
    window: int = HOTWORD_WINDOW
    validator: str | None = None
    case_sensitive: bool = True
    personal: bool = False
    boundary: bool = True

    def __post_init__(self) -> None:
        if not self.label.startswith(L.CUSTOM_PREFIX) or not L.is_known_label(self.label):
            raise DetectorError(
                self.label, "label", "must be 'custom.' followed by letters, digits, _ - ."
            )
        if not self.patterns and not self.keywords:
            raise DetectorError(self.label, "patterns", "give at least one pattern or keyword")
        if not 1 <= self.window <= MAX_HOTWORD_WINDOW:
            raise DetectorError(
                self.label, "window", f"must be between 1 and {MAX_HOTWORD_WINDOW} bytes"
            )
        if self.validator is not None and self.validator not in validators.REGISTRY:
            known = ", ".join(sorted(validators.REGISTRY))
            raise DetectorError(
                self.label, "validator", f"unknown validator {self.validator!r} (known: {known})"
            )
        for name, words in (("keywords", self.keywords), ("hotwords", self.hotwords)):
            for i, word in enumerate(words):
                if not word or len(word.encode()) > MAX_KEYWORD_BYTES:
                    raise DetectorError(
                        self.label, name, f"must be 1 to {MAX_KEYWORD_BYTES} bytes", i
                    )
        for i, pattern in enumerate(self.patterns):
            _check_custom_regex(self.label, i, pattern, self.case_sensitive)


@dataclass(frozen=True, slots=True)
class PatternSpec:
    """One Hyperscan expression and how the matcher interprets its matches.

    Attributes:
        expr: the expression (bytes, byte-oriented: text is UTF-8).
        flags: Hyperscan flags.
        kind: one of the ``K_*`` handler kinds.
        width: bytes matched, boundary and look-ahead bytes included; 0 when
            variable.
        label: index into :attr:`DetectorSet.labels` (or the hotword class for
            ``K_HOTWORD``).
        arg: kind-specific small integer (hotword length, custom detector index …).
        value: kind-specific constant (the canonical value of a marking …).
        database: :data:`DB_DIGIT` or :data:`DB_LITERAL` (speed only: the
            hits are the same either way).
    """

    expr: bytes
    flags: int
    kind: int
    width: int
    label: int
    arg: int = 0
    value: bytes = b""
    database: int = DB_LITERAL


def _lit(text: str) -> bytes:
    """A literal as a Hyperscan expression (every byte escaped)."""
    return b"".join(b"\\x%02x" % c for c in text.encode())


def _caseless(word: str) -> bytes:
    """An ASCII word as a case-insensitive expression, for use inside a larger pattern."""
    return b"".join(b"[%s%s]" % (bytes([c]).upper(), bytes([c]).lower()) for c in word.encode())


#: The abbreviations written with a "." right before an identifier ("No.440305…",
#: "Mob.138…", "Tel.2345…", "HKID No.A123…"): there the "." is a boundary too.
#: These variants are led by the literal words: a generic "letter then dot"
#: (as an alternative or as expressions of their own) cost Hyperscan 3-5x on
#: the numeric and prose data, the literal words cost nothing measurable.
DOT_ABBREVIATIONS: Final = ("no", "nr", "mob", "tel", "ph", "id", "acct", "card")
_DOT: Final = b"(?:" + b"|".join(_caseless(w) for w in DOT_ABBREVIATIONS) + rb")\."


def _check_custom_regex(label: str, index: int, pattern: str, case_sensitive: bool) -> None:
    flags = 0 if case_sensitive else hyperscan.HS_FLAG_CASELESS
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        db.compile(expressions=[pattern.encode()], ids=[0], flags=[flags])
    except hyperscan.error as exc:
        raise DetectorError(label, "patterns", f"invalid expression: {exc}", index) from None


class _Builder:
    """Accumulates pattern specs and label indices for one detector set."""

    def __init__(self) -> None:
        self.specs: list[PatternSpec] = []
        self.labels: list[str] = list(L.BUILTIN_LABELS)
        self.personal: list[bool] = [lab.startswith("pii.") for lab in L.BUILTIN_LABELS]
        self.custom_classes: list[int] = []

    def label_index(self, label: str, personal: bool = False) -> int:
        if label not in self.labels:
            self.labels.append(label)
            self.personal.append(personal)
        idx = self.labels.index(label)
        self.personal[idx] = self.personal[idx] or personal
        return idx

    def add(
        self,
        expr: bytes,
        kind: int,
        width: int,
        label: int,
        *,
        flags: int = 0,
        arg: int = 0,
        value: bytes = b"",
        database: int = DB_LITERAL,
    ) -> None:
        if database not in (DB_DIGIT, DB_LITERAL):  # it would be compiled into neither
            raise ValueError(f"unknown database {database}")
        self.specs.append(PatternSpec(expr, flags, kind, width, label, arg, value, database))

    def hotword(self, cls: int, word: str, caseless: bool) -> None:
        # A bare literal (Hyperscan's literal matcher handles it in the same
        # pass); "hotel" holding no "tel" is checked by the matcher.
        raw = word.encode()
        flags = hyperscan.HS_FLAG_CASELESS if caseless else 0
        word_start = 1 if raw[:1].isalpha() else 0
        self.add(_lit(word), K_HOTWORD, len(raw), cls, flags=flags, arg=word_start)


def _builtin(b: _Builder) -> None:
    ix = b.labels.index
    # Every all-digit identifier in one pattern: one hit per digit run of an
    # identifier's length (11 CN phone or 852+8; 13 86+CN phone; 15-19 card,
    # 0086+CN phone; 18 Resident ID / USCC / card). One automaton instead of a
    # dozen is what keeps Hyperscan fast (each engine scans all bytes).
    for left in (_LB, _DOT):
        b.add(
            left + rb"(?:[0-9]{11}|[0-9]{13}|[0-9]{15,19}|[0-9]{17}[Xx])" + _B,
            K_DIGITS,
            0,
            ix(L.CN_RESIDENT_ID),
            database=DB_DIGIT,
        )
    # An 8-digit run is only an HK phone after a "852" prefix or near a phone
    # hotword (SPEC §3.1), so those patterns carry the prefix or the hotword:
    # the 8-digit counts and ids of scientific CSV never reach Python. Both are
    # supersets (up to 32 bytes of anything after the hotword); the K_DIGITS
    # handler checks the exact prefix and hotword window. A CJK hotword's last
    # byte may itself be the boundary byte before the number.
    hk_number = rb"[2-9][0-9]{7}" + _B
    b.add(
        rb"(?:[^0-9A-Za-z]852[ \-]|\(852\)[ \-]?)" + hk_number,
        K_DIGITS,
        0,
        ix(L.HK_PHONE),
    )
    phone_words = BUILTIN_HOTWORDS[HW_PHONE]
    ascii_phone = b"|".join(_caseless(w) for w in phone_words if w.isascii())
    cjk_phone = b"|".join(_lit(w) for w in phone_words if not w.isascii())
    within = rb"[\s\S]{0,%d}" % HOTWORD_WINDOW  # a superset of the window
    after_ascii = b"(?:" + ascii_phone + b")" + within + _B
    after_cjk = b"(?:" + cjk_phone + b")(?:" + within + _B + b")?"
    b.add(
        b"(?:" + after_ascii + b"|" + after_cjk + b")" + hk_number,
        K_DIGITS,
        0,
        ix(L.HK_PHONE),
    )
    # USCCs with at least one letter; all-digit ones (and "…X") are K_DIGITS
    # runs. Requiring the letter keeps every Resident ID from firing twice.
    uscc = rb"[0-9A-HJ-NPQRTUWXY]"
    letter = rb"[A-HJ-NPQRTUWXY]"
    with_letter = [letter + uscc + rb"[0-9]{6}" + uscc + b"{10}"]
    with_letter.append(rb"[0-9]" + letter + rb"[0-9]{6}" + uscc + b"{10}")
    for i in range(9):  # first letter in the organisation code, position 9 + i
        with_letter.append(rb"[0-9]{%d}" % (8 + i) + letter + uscc + b"{%d}" % (9 - i))
    with_letter.append(rb"[0-9]{17}[A-HJ-NPQRTUWY]")  # a letter check char other than X
    for left in (_LB, _DOT):
        body = b"(?:" + b"|".join(with_letter) + b")" + _B
        b.add(left + body, K_USCC, 20, ix(L.CN_USCC), database=DB_DIGIT)
    # Grouped numbers (CN mobile 3-4-4, HK 4-4, cards in fours, Amex 4-6-5) in
    # one loose pattern per separator; the matcher checks the exact shape. One
    # loose automaton is 4x faster in Hyperscan than the exact shapes. The
    # separator is fixed per pattern (arg 0 = space, 1 = "-"), so that the two
    # bytes after the number (boundary + look-ahead) end it at another
    # separator ("138-1234-5678 2026-01-01"), while the same separator and
    # digits go on as a longer grouped run, of which the matcher also tries
    # the number before a last group ("4111 1111 1111 1111 123", "… 25 岁").
    for arg, sep in enumerate((rb" ", rb"\-")):
        groups = rb"(?:%s[0-9]{4,6}){1,3}(?:%s[0-9]{1,5})?" % (sep, sep)
        ending = rb"(?:[^0-9A-Za-z%s][\s\S]|%s[^0-9])" % (sep, sep)
        grouped = rb"[0-9]{3,4}" + groups + ending
        for left in (_LB, _DOT):
            b.add(left + grouped, K_GROUPED, 0, ix(L.BANK_CARD), arg=arg, database=DB_DIGIT)
    # Letter-led: HKID without brackets, passports and permits, as two loose
    # shapes (twice as fast in Hyperscan as the exact alternatives, and an id
    # like "V00000001" still never fires); the matcher checks the exact shapes.
    # The letter says which labels are possible, the hotword class which one it is.
    for left in (_LB, _DOT):
        b.add(
            left + rb"(?:[A-Z]{1,2}[0-9]{6}[0-9A]|[CEGHKM][A-Z]?[0-9]{7,10})" + _B,
            K_LETTERS,
            0,
            ix(L.HK_ID),
            database=DB_DIGIT,
        )
        hkid = left + rb"[A-Z]{1,2}[0-9]{6}\([0-9A]\)"
        b.add(hkid, K_HKID_BRACKETS, 0, ix(L.HK_ID), database=DB_DIGIT)
    domain_label = rb"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
    b.add(
        # Anchored on the "@" literal (the matcher finds the local part): a
        # leading character class made this the costliest engine on prose.
        b"@" + domain_label + rb"(?:\." + domain_label + rb")*"
        rb"\.[A-Za-z]{2,63}(?:[^A-Za-z0-9.\-][\s\S]|\.[^A-Za-z0-9])",
        K_EMAIL,
        0,
        ix(L.EMAIL),
    )
    geo = ix(L.PRECISE_LOCATION)
    lat = rb"2[123]\.[0-9]{5,}"
    lon = rb"11[2-5]\.[0-9]{5,}"
    sep = GEO_SEPARATOR
    left = rb"[^0-9A-Za-z.\-]"
    b.add(left + lat + sep + lon + rb"[^0-9A-Za-z]", K_GEO, 0, geo, arg=0)
    b.add(left + lon + sep + lat + rb"[^0-9A-Za-z]", K_GEO, 0, geo, arg=1)
    cred = ix(L.CREDENTIAL)
    # The AWS key id's prefix is a digit core of its own (DIGIT_CORE_WORDS).
    b.add(_LB + rb"(?:AKIA|ASIA)[0-9A-Z]{16}" + _B, K_CRED_FIXED, 22, cred, database=DB_DIGIT)
    b.add(_LB + rb"gh[pousr]_[A-Za-z0-9]{36}" + _B, K_CRED_FIXED, 42, cred)
    b.add(
        rb"eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+[^A-Za-z0-9_\-]",
        K_JWT,
        0,
        cred,
    )
    # A private key block counts once, from its BEGIN line (a truncated key
    # has no END) or, for the tail of a block whose BEGIN was cut off, its END
    # line; the matcher pairs them (arg 0 = BEGIN, 1 = END).
    b.add(b"-----BEGIN " + PEM_PRIVATE_KINDS + b"-----", K_PEM, 0, cred, arg=0)
    b.add(b"-----END " + PEM_PRIVATE_KINDS + b"-----", K_PEM, 0, cred, arg=1)
    # Armored encrypted text is unscannable wherever it starts in a text
    # member, in whatever charset the member was written (the matcher sees it
    # as UTF-8); the value is the layer name its reason starts with.
    for marker, layer in ARMOR_MARKERS:
        b.add(_lit(marker), K_ARMOR, 0, ix(L.UNSCANNABLE), value=layer.encode())
    # ICD-10 codes only count after a diagnosis hotword (SPEC §3.1), so the
    # pattern carries the hotword: a lab plate's "A01" never reaches Python.
    # The exact 32-byte window is checked by the matcher; the column rule uses
    # COLUMN_HEALTH_PATTERN on its own stream, opened only under a diagnosis header.
    diag = b"|".join(
        _caseless(w) if w.isascii() else _lit(w) for w in BUILTIN_HOTWORDS[HW_DIAGNOSIS]
    )
    b.add(
        b"(?:" + diag + rb")[\s\S]{0,%d}" % HOTWORD_WINDOW + COLUMN_HEALTH_PATTERN,
        K_HEALTH,
        0,
        ix(L.HEALTH),
    )
    cn_mark = ix(L.CN_CLASSIFIED)
    for word in ("绝密", "絕密", "机密", "機密", "秘密"):
        for gap in ("", " "):
            mark = word + gap + "★"
            b.add(_lit(mark), K_MARK, 0, cn_mark, value=(word + "★").encode())
    for word in ("国家秘密", "國家秘密"):
        b.add(_lit(word), K_MARK, 0, cn_mark, value=word.encode())
    hk_mark = ix(L.HK_CLASSIFIED)
    for word in ("TOP SECRET", "SECRET", "CONFIDENTIAL", "RESTRICTED"):
        b.add(
            rb"\n[ \t]*" + _lit(word) + rb"(?:[ \t]*\([^\n)]{0,200}\))?[ \t]*\r?\n",
            K_MARK,
            0,
            hk_mark,
            value=word.encode(),
        )
    for word in ("限閱文件", "機密"):
        b.add(rb"\n[ \t]*" + _lit(word) + rb"[ \t]*\r?\n", K_MARK, 0, hk_mark, value=word.encode())
    # The built-in hotwords are not patterns: the matcher looks for them in the
    # 32 bytes before the rare candidate that needs one (see
    # ``TextMatcher._hotword_start``); as literals they cost every byte of prose.


#: The record patterns of the genomic formats (SPEC §3.1: one finding per FASTA/FASTQ
#: record, per VCF data line, per SAM alignment line). Each reports at a line end.
_GENOMIC_RECORDS: Final[dict[str, bytes]] = {
    # FASTA: reported on the record's first sequence line, after its first
    # FASTA_SAMPLE_BYTES or at its end, so the matcher can tell a nucleotide
    # record from a protein one (only the former is genetic data).
    "text/x-fasta": rb"\n>[^\n]*\n(?:[^\n]{%d}|[^\n]{0,%d}\n)"
    % (FASTA_SAMPLE_BYTES, FASTA_SAMPLE_BYTES - 1),
    "text/x-fastq": rb"\n@[^\n]*\n[A-Za-z.*\-]*\r?\n\+",
    "text/x-vcf": rb"\n[^#\n][^\n]*\n",
    "text/x-sam": rb"\n[^@\n][^\n]*\n",
}
#: A run of at least 60 bases (SPEC §3.1), reported once, at the byte after it.
#: Kept as a spec (it documents the rule and gives the matcher an expression id)
#: but never compiled: the matcher finds these runs itself (``genetic_runs``),
#: and only those that are a token of their own count (the token rule below).
_GENETIC_RUN: Final = rb"[ACGTNacgtn]{60,}[^ACGTNacgtn]"
#: SPEC §3.1: the bytes of a nucleotide run, and its minimum length.
GENETIC_BASES: Final = b"ACGTNacgtn"
GENETIC_MIN_RUN: Final = 60

# The token rule (issue 13): outside the genomic formats a run of bases counts
# only as a token of its own, as identifiers do (SPEC §3.1 boundaries), so that
# base64 (zero bytes encode as "AAAA…") and PEM blocks are no genetic data. One
# source for both implementations of the rule: ``matcher.genetic_runs_py`` and
# ``_native.genetic_runs``, whose tables are built from these at import and
# compared (``matcher._setup_native_genetic``).

#: Bytes a token is made of: letters, digits and the rest of base64's alphabets
#: (RFC 4648 §4 "+/", §5 URL-safe "-_", the "=" padding). A run that touches
#: one of them is part of a longer token, except that "=" before a run does not
#: join it ("seq=ACGT…"): in base64, "=" only ever ends a token.
GENETIC_TOKEN: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="
#: Blank bytes: around a line break they keep two lines linked ("\r" of CRLF too).
GENETIC_SPACE: Final = b" \t\r"
#: Escapes of text inside JSON and other string literals: backslash + one of
#: these bytes is a line break, a blank, a token byte ("\/", which JSON allows
#: for "/"); a backslash before anything else is neither.
GENETIC_ESCAPE_BREAK: Final = b"n"
GENETIC_ESCAPE_SPACE: Final = b"tr"
GENETIC_ESCAPE_TOKEN: Final = b"/"
#: Most blanks (or blank escapes) on one side of a line break that still link two lines.
GENETIC_SPACE_MAX: Final = 64
#: Bytes the rule reads before a run's first base or after its last: up to
#: GENETIC_SPACE_MAX + 1 blanks on each side of a line break, the break, and one
#: token of up to GENETIC_MIN_RUN units, each unit at most an escape's two
#: bytes. The matcher keeps this much (and a run's first bases) of earlier text.
GENETIC_REACH: Final = 4 * GENETIC_SPACE_MAX + 2 * GENETIC_MIN_RUN + 8
#: The hits of the rule, as offsets from ``DetectorSet.genetic_run_id`` (one
#: expression id each): a run that counts now; a run that counts if its block
#: of lines turns out to be a sequence; and the two outcomes of that block.
GENETIC_COUNT: Final = 0
GENETIC_PENDING: Final = 1
GENETIC_COMMIT: Final = 2
GENETIC_DROP: Final = 3
GENETIC_HIT_KINDS: Final = 4


def _custom(b: _Builder, detectors: Sequence[CustomDetector]) -> None:
    next_class = max(BUILTIN_HOTWORDS) + 1
    for det_index, det in enumerate(detectors):
        label = b.label_index(det.label, det.personal)
        caseless = 0 if det.case_sensitive else hyperscan.HS_FLAG_CASELESS
        cls = -1
        if det.hotwords:
            cls = next_class
            next_class += 1
            for word in det.hotwords:
                b.hotword(cls, word, caseless=not det.case_sensitive)
        for pattern in det.patterns:
            b.add(
                b"(?:" + pattern.encode() + b")" + _ANY,
                K_CUSTOM_REGEX,
                0,
                label,
                flags=caseless | hyperscan.HS_FLAG_SOM_LEFTMOST,
                arg=det_index,
            )
        for word in det.keywords:
            b.add(
                _lit(word) + _ANY,
                K_CUSTOM_KEYWORD,
                len(word.encode()) + 1,
                label,
                flags=caseless,
                arg=det_index,
            )
        b.custom_classes.append(cls)


@dataclass(frozen=True, slots=True)
class _CustomRuntime:
    """What the matcher needs per custom detector."""

    hotword_class: int
    window: int
    validator: str | None
    case_sensitive: bool
    boundary: bool


class DetectorSet:
    """The compiled detectors of one policy version: immutable, shared, thread-safe.

    Build with :meth:`build`; hand the same instance to every
    :class:`~gateway.classify.engine.Scanner` of that policy version.

    Attributes:
        custom: the custom detectors, in declaration order.
        labels: every label this set can report; index = the matcher's label id.
        personal: per label, whether it counts toward ``subjects``.
        specs: the pattern specs, index = Hyperscan expression id.
        fingerprint: hex SHA-256 over the engine version and the custom
            detectors; equal fingerprints mean identical scan semantics.
    """

    __slots__ = (
        "_lock",
        "_run_id",
        "_variants",
        "custom",
        "custom_runtime",
        "fingerprint",
        "hotword_classes",
        "labels",
        "personal",
        "som",
        "specs",
    )

    custom: tuple[CustomDetector, ...]
    custom_runtime: tuple[_CustomRuntime, ...]
    fingerprint: str
    hotword_classes: int
    labels: tuple[str, ...]
    personal: tuple[bool, ...]
    som: bool
    specs: tuple[PatternSpec, ...]
    _run_id: int
    _variants: dict[str, hyperscan.Database]
    _lock: threading.Lock

    def __init__(self, custom: Iterable[CustomDetector] = ()) -> None:
        detectors = tuple(custom)
        builder = _Builder()
        _builtin(builder)
        _custom(builder, detectors)
        genetic = builder.labels.index(L.GENETIC)
        run_id = len(builder.specs)
        for hit_kind in range(GENETIC_HIT_KINDS):
            builder.add(_GENETIC_RUN, K_GENETIC_RUN, 0, genetic, arg=hit_kind)
        for content_type in GENOMIC_TYPES:
            builder.add(_GENOMIC_RECORDS[content_type], K_GENETIC_RECORD, 0, genetic)
        classes = builder.custom_classes
        init = object.__setattr__
        init(self, "custom", detectors)
        init(
            self,
            "custom_runtime",
            tuple(
                _CustomRuntime(cls, d.window, d.validator, d.case_sensitive, d.boundary)
                for cls, d in zip(classes, detectors, strict=True)
            ),
        )
        init(self, "hotword_classes", max([max(BUILTIN_HOTWORDS), *classes]) + 1)
        init(self, "labels", tuple(builder.labels))
        init(self, "personal", tuple(builder.personal))
        if len(builder.specs) > MAX_EXPRESSIONS:
            raise DetectorError(
                detectors[-1].label if detectors else "builtin",
                "keywords",
                f"more than {MAX_EXPRESSIONS} patterns and keywords in one policy",
            )
        init(self, "specs", tuple(builder.specs))
        init(self, "som", any(s.flags & hyperscan.HS_FLAG_SOM_LEFTMOST for s in self.specs))
        init(self, "fingerprint", _fingerprint(detectors))
        init(self, "_run_id", run_id)
        init(self, "_lock", threading.Lock())
        init(self, "_variants", {})
        # The plain-text variant is always needed: compile it now so that a bad
        # policy fails at load time, not in the first transfer. So is the
        # windows' variant of the digit database wherever the compiled core is
        # built (~40 ms that the first transfer would otherwise wait for).
        self.databases("text/plain")
        if NATIVE_BUILT:
            self.digit_windows_database()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DetectorSet is immutable")

    def __repr__(self) -> str:
        return f"DetectorSet(custom={len(self.custom)}, fingerprint={self.fingerprint[:12]})"

    @classmethod
    def build(cls, custom: Iterable[CustomDetector] = ()) -> DetectorSet:
        """Compile the built-in detectors plus ``custom`` (once per policy version).

        Raises:
            DetectorError: a custom detector is invalid (names the detector).
        """
        return cls(custom)

    @property
    def genetic_run_id(self) -> int:
        """Expression id of the "run of 60 bases" rule (found by the matcher, not Hyperscan).

        The rule reports :data:`GENETIC_HIT_KINDS` kinds of hit, with this id
        plus :data:`GENETIC_COUNT`, :data:`GENETIC_PENDING` … as theirs.
        """
        return self._run_id

    def databases(self, content_type: str) -> tuple[hyperscan.Database, hyperscan.Database]:
        """The two streaming databases for a member of ``content_type`` (compiled once).

        Returns:
            ``(digit, literal)``: the digit database is shared by every member
            type; the literal one has a variant per genomic record format.
        """
        digit = self._variant("digit")
        literal = self._variant(content_type if content_type in GENOMIC_TYPES else "text/plain")
        return digit, literal

    def digit_windows_database(self) -> hyperscan.Database:
        """The digit database in block mode, for the windows around the digit cores.

        The same expressions and ids as the streaming digit database of
        :meth:`databases`; the matcher scans it over the windows
        ``_native.digit_windows`` gives (see the module docstring).
        """
        return self._variant("digit-windows")

    def column_database(self) -> tuple[hyperscan.Database, int]:
        """The database (and expression id) for ICD-10 codes under a diagnosis column header."""
        pid = next(i for i, s in enumerate(self.specs) if s.kind == K_HEALTH)
        return self._variant("column"), pid

    def _variant(self, key: str) -> hyperscan.Database:
        db = self._variants.get(key)
        if db is not None:
            return db
        with self._lock:
            db = self._variants.get(key)
            if db is None:
                db = self._compile(key)
                self._variants[key] = db
        return db

    def _compile(self, key: str) -> hyperscan.Database:
        run_id = self._run_id
        mode = hyperscan.HS_MODE_STREAM
        if key == "column":
            pid = next(i for i, s in enumerate(self.specs) if s.kind == K_HEALTH)
            exprs, ids, flags = [COLUMN_HEALTH_PATTERN], [pid], [0]
        else:
            if key in ("digit", "digit-windows"):
                ids = [i for i in range(run_id) if self.specs[i].database == DB_DIGIT]
                if key == "digit-windows":
                    mode = hyperscan.HS_MODE_BLOCK
            else:
                ids = [i for i in range(run_id) if self.specs[i].database == DB_LITERAL]
                if key in GENOMIC_TYPES:
                    ids.append(run_id + GENETIC_HIT_KINDS + GENOMIC_TYPES.index(key))
                if self.som:
                    mode |= hyperscan.HS_MODE_SOM_HORIZON_LARGE
            exprs = [self.specs[i].expr for i in ids]
            flags = [self.specs[i].flags for i in ids]
        db = hyperscan.Database(mode=mode)
        db.compile(expressions=exprs, ids=ids, flags=flags)
        return db


def _fingerprint(detectors: Sequence[CustomDetector]) -> str:
    canonical = json.dumps(
        {"engine": ENGINE_VERSION, "custom": [asdict(d) for d in detectors]},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
