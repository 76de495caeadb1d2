"""Charset detection and normalisation to UTF-8: full-width, format and digit folding.

SPEC §3.1: text is seen as the user wrote it — UTF-8, UTF-16 (BOM or
detected), GB18030/GBK and Big5 (detected) — and full-width digits and letters
(``１２３``, ``Ａ``) are normalised before matching. The whole full-width
ASCII block and the ideographic space are folded (NFKC's mapping for them), so
full-width punctuation in identifiers, coordinates and markings is seen too.
The decoder calls :func:`detect` once per member on a bounded raw prefix (so
the decision never depends on how the input was chunked), then pushes every
chunk of the member through one :class:`Normaliser`.

Issue 13 (SPEC §3.1, "Unicode format characters … are dropped and every
Unicode decimal digit is folded"): text pasted from word processors carries
zero-width spaces or soft hyphens between the digits of an identifier, and
digits of other scripts, mathematical, circled or superscript forms spell
identifiers a person reads as ordinary digits. :func:`fold` therefore also
drops invisible format characters and folds every decimal digit and every
compatibility form whose NFKC is ASCII; :func:`folding_table` says exactly
which characters, derived from :mod:`unicodedata` (see :func:`_replacement`).

UTF-8 is the fast path: an all-ASCII chunk goes through as it is (one
``isascii``, >10 GB/s). Other chunks go through the compiled core's fold, one
pass over the table (~5 GB/s on mixed English and Chinese prose, ~1.7 on
English with typographic quotes, ~250 MB/s on text dense with other-script
digits). Where the core is not built, :func:`fold_fullwidth` runs when a chunk
holds an EF byte, then one Hyperscan block scan finds the remaining characters
to fold (2-3 GB/s) and only those are replaced. Every other charset is
transcoded with an incremental codec, ``errors="replace"``, so a stray invalid
byte later in a member costs one U+FFFD, never an exception.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
import struct
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import hyperscan

_fold_native: Callable[[bytes], bytes] | None
try:
    from gateway.classify._native import fold as _fold_native
    from gateway.classify._native import fold_setup as _fold_setup_native
except ImportError:  # pragma: no cover - a source tree whose extension was not built
    _fold_native = None

UTF8: Final = "utf-8"
UTF16LE: Final = "utf-16le"
UTF16BE: Final = "utf-16be"
UTF32LE: Final = "utf-32le"
UTF32BE: Final = "utf-32be"
GB18030: Final = "gb18030"
BIG5: Final = "big5"
#: Text that is neither UTF-8 nor a CJK encoding: Western text in the wild is
#: windows-1252 far more often than true ISO-8859-1 (WHATWG Encoding maps the
#: ``latin1`` label to it for the same reason).
WINDOWS1252: Final = "windows-1252"

#: Python codec used for each reported charset. Big5 is decoded with the HKSCS
#: extension: Hong Kong text uses its supplementary characters, and the codec
#: is a strict superset of plain Big5.
_CODECS: Final[dict[str, str]] = {
    UTF16LE: "utf-16-le",
    UTF16BE: "utf-16-be",
    UTF32LE: "utf-32-le",
    UTF32BE: "utf-32-be",
    GB18030: "gb18030",
    BIG5: "big5hkscs",
    WINDOWS1252: "cp1252",
}

#: Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16
#: LE one).
_BOMS: Final[tuple[tuple[bytes, str], ...]] = (
    (codecs.BOM_UTF32_LE, UTF32LE),
    (codecs.BOM_UTF32_BE, UTF32BE),
    (codecs.BOM_UTF8, UTF8),
    (codecs.BOM_UTF16_LE, UTF16LE),
    (codecs.BOM_UTF16_BE, UTF16BE),
)

#: Share of the high (or low) bytes of a BOM-less prefix that must be NUL to
#: call it UTF-16. ASCII-heavy UTF-16 has ~100 %; Chinese UTF-16 with digits,
#: punctuation and Latin markup typically has 30-60 %; a quarter keeps mixed
#: text while the printable check below rejects binary arrays of small ints.
_UTF16_NUL_SHARE: Final = 0.25
#: The opposite byte of each UTF-16 code unit is almost never NUL in text
#: (U+0100, U+0200 … are rare); allow a little noise.
_UTF16_OTHER_NUL_SHARE: Final = 0.05
#: Decoded control characters (other than tab, newline, CR, FF, ESC) allowed
#: in text, as a share of all characters; binary data scores far higher.
_CONTROL_SHARE: Final = 0.02
#: Below this many bytes a prefix carries too little evidence for NUL-pattern
#: UTF-16 detection (two code units).
_UTF16_MIN_BYTES: Final = 4

#: Raw bytes that never occur in text: C0 controls except TAB LF VT FF CR ESC,
#: and DEL. Deleting every other byte value leaves only these.
_CONTROL_BYTES: Final = bytes(
    b for b in range(256) if (b < 0x20 and b not in b"\t\n\x0b\x0c\r\x1b") or b == 0x7F
)
_NOT_CONTROL: Final = bytes(b for b in range(256) if b not in _CONTROL_BYTES)
_DELETE_CONTROLS: Final[dict[int, None]] = dict.fromkeys(_CONTROL_BYTES)

#: The most frequent Chinese characters (simplified and traditional forms,
#: from the common-character lists of GB 2312 level 1 and the MOE 常用字 list)
#: plus the identity-document vocabulary the detectors key on, and full-width
#: punctuation. Text decoded with the right CJK codec is full of them; the same
#: bytes decoded with the wrong one land on rare characters.
_FREQUENT_CJK: Final = (
    "的一是不了人我在有他这這中大来來上个個国國和也子时時道出而要于於就下得可你年生自"
    "会會那后後能对對着著事其里裡裏所去行过過家十用发發天如然作方成者多日都三小军軍二无無"
    "同么麼经經法当當起与與好看学學进進种種将將还還分此心前面又定见見只隻没沒公从從们們"
    "说說为為动動实實现現长長开開问問间間关關点點业業电電话話号號码碼证證护護照诊診断斷"
    "医醫院姓名性别別男女龄齡地址身份手机機邮郵箱期民族省市区區县縣路街楼樓室香港深圳"
    "广廣东東政府公司信息資资料数數据據保密病历歷"
    "限閱阅文件附绝絕秘"  # the classification markings of SPEC §3.1
    "，。、；：？！「」『』（）《》…“”"
)
_FREQUENT_RE: Final = re.compile("[" + re.escape(_FREQUENT_CJK) + "]")
#: What CJK bytes decoded with the wrong two-byte codec land on, and right
#: Chinese text almost never holds: private use (GB18030 maps its user-defined
#: rows there), kana, Greek and Cyrillic (GB 2312 rows 4-7, where Big5 level-1
#: lead bytes A4-A7 fall), box drawing (GB row 9), bopomofo (Big5 A3 row, where
#: GB full-width punctuation falls), U+FFFD and C1 controls.
_WRONG_CODEC_RE: Final = re.compile(
    "[\u0080-\u009f\u0370-\u04ff\u2500-\u257f\u3040-\u30ff\u3100-\u312f\ue000-\uf8ff\ufffd]"
)
#: Characters UTF-16 text without NUL-heavy ASCII is made of: ASCII, Latin-1,
#: general punctuation, CJK symbols, kana, CJK (Ext A and unified), Hangul
#: syllables, CJK compatibility and the half/full-width forms. Arbitrary binary
#: read as UTF-16 is spread over the whole BMP (under half of it in these
#: blocks), so requiring nearly all of them separates the two.
_UTF16_TEXT_RE: Final = re.compile(
    "[\t\n\r\x20-\x7e\u00a0-\u00ff\u2000-\u206f\u3000-\u30ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uffef]"
)
#: Share of decoded characters that must lie in those blocks to call a prefix
#: without the NUL pattern UTF-16.
_UTF16_TEXT_SHARE: Final = 0.95
#: Full-width forms (digits, letters, punctuation): evidence for UTF-16 read
#: from the right byte order, as the frequent characters are.
_FULLWIDTH_RE: Final = re.compile("[\uff01-\uff5e]")

#: The full-width ASCII block U+FF01-FF5E in UTF-8, which NFKC maps to ASCII
#: 0x21-0x7E (SPEC §3.1 names digits and letters; punctuation is folded too so
#: that ``坐标：22.54321，114.05678`` or ``abc＠example.com`` reads as the user
#: meant it): U+FF01-FF3F is EF BC 81-BF, U+FF40-FF5E is EF BD 80-9E. One
#: pattern per lead, each starting with its literal lead so that ``re`` skips
#: to candidates with a fast prefix search (a leading group or alternation
#: would make it try every position: ~40x slower on CJK text), and each
#: matching a whole run so dense full-width text costs one call per run.
_FULLWIDTH_BC_RE: Final = re.compile(rb"\xef\xbc[\x81-\xbf](?:\xef\xbc[\x81-\xbf])*")
_FULLWIDTH_BD_RE: Final = re.compile(rb"\xef\xbd[\x80-\x9e](?:\xef\xbd[\x80-\x9e])*")
#: The last byte of each 3-byte sequence, mapped to its ASCII fold: under the
#: EF BC lead U+FF01+k -> 0x21+k is byte - 0x60; under EF BD, byte - 0x20.
_FOLD_BC: Final = bytes((b - 0x60) & 0xFF for b in range(256))
_FOLD_BD: Final = bytes((b - 0x20) & 0xFF for b in range(256))
_FW_LEAD: Final = b"\xef"
_FW_LEAD_BC: Final = b"\xef\xbc"
_FW_LEAD_BD: Final = b"\xef\xbd"
#: U+3000 IDEOGRAPHIC SPACE (NFKC: U+0020) in UTF-8.
_IDEOGRAPHIC_SPACE: Final = b"\xe3\x80\x80"
#: The same three bytes as a compiled search: ``re`` finds a literal 1.1-2.3x
#: faster than ``bytes.__contains__`` (1.3-1.6 GB/s on CJK and ASCII text,
#: where E3 80 is common in CJK punctuation), and every chunk holding an E3
#: byte pays this search (a quarter of the whole scan path on mixed prose).
_IDEOGRAPHIC_SPACE_RE: Final = re.compile(re.escape(_IDEOGRAPHIC_SPACE))


@dataclass(frozen=True, slots=True)
class Detection:
    """The outcome of :func:`detect` on a member's prefix.

    Attributes:
        charset: the reported charset name, or ``None`` for binary content.
        bom: length of the byte-order mark to skip (0 when there is none).
    """

    charset: str | None
    bom: int = 0


def _fold_bc(match: re.Match[bytes]) -> bytes:
    return match.group()[2::3].translate(_FOLD_BC)


def _fold_bd(match: re.Match[bytes]) -> bytes:
    return match.group()[2::3].translate(_FOLD_BD)


def fold_fullwidth(data: bytes) -> bytes:
    """Complete UTF-8 ``data`` with full-width ASCII and U+3000 folded (NFKC).

    The whole full-width block U+FF01-FF5E becomes ASCII 0x21-0x7E and the
    ideographic space becomes a space, as NFKC does, so that identifiers,
    coordinates, addresses and markings typed with a CJK input method match the
    same detectors as their ASCII spelling. :func:`fold` does this and more (in
    the compiled core); this is the first step of its Hyperscan path where the
    core is not built.
    """
    # Full-width forms all start with EF: one memchr (GB/s) spares CJK text the
    # two 2-byte searches, which run at ~0.9 GB/s there (their last byte is a
    # common continuation byte) and made folding a third of the scan path.
    if _FW_LEAD in data:
        if _FW_LEAD_BC in data:
            data = _FULLWIDTH_BC_RE.sub(_fold_bc, data)
        if _FW_LEAD_BD in data:
            data = _FULLWIDTH_BD_RE.sub(_fold_bd, data)
    if _IDEOGRAPHIC_SPACE_RE.search(data) is not None:
        data = data.replace(_IDEOGRAPHIC_SPACE, b" ")
    return data


# -- format characters, digits and compatibility forms (issue 13) -------------

#: Code points searched for characters to drop or fold, as (start, stop)
#: ranges. Below U+0080 nothing changes; planes 2-3 hold unified ideographs
#: (no decomposition, no digits) apart from the CJK compatibility supplement;
#: planes 4-13 are unassigned; plane 14 holds the tag characters and
#: variation selectors; planes 15-16 are private use. Searching only these
#: spares 0.6 s of ``unicodedata`` calls when the table is built; a test
#: checks over all of Unicode that nothing outside them qualifies.
_SEARCHED_RANGES: Final = ((0x80, 0x20000), (0x2F800, 0x2FA20), (0xE0000, 0xE1000))
#: Categories dropped whole: format characters (zero-width space and joiners,
#: soft hyphen, bidi controls, word joiner, BOM, Arabic number signs, tag
#: characters …) and enclosing marks (U+20E3, the keycap of a keycap digit
#: emoji; U+20DD, an enclosing circle), which decorate the character before
#: them and are not read alone.
_DROPPED_CATEGORIES: Final = frozenset({"Cf", "Me"})
#: Names of the invisible nonspacing marks that are dropped too (Unicode's
#: default-ignorable marks), by a part of their name: variation selectors
#: (U+FE0F of a keycap digit emoji, ideographic variation sequences, Mongolian
#: free variation selectors) and the combining grapheme joiner.
_IGNORABLE_MARK_NAMES: Final = ("VARIATION SELECTOR", "COMBINING GRAPHEME JOINER")
#: CJK characters NFKC maps to the unified ideograph they look like: CJK
#: compatibility ideographs (canonical duplicates, which NFC already unifies)
#: and the Kangxi / supplementary radicals that PDF text extraction emits for
#: ideographs. Folding them lets hotwords (``⼿機``, ``通⾏證``) and markings
#: match; circled and parenthesised ideographs (``㊙``, ``㈠``) stay.
_CJK_FOLDED_NAMES: Final = ("CJK COMPATIBILITY IDEOGRAPH", "KANGXI RADICAL", "CJK RADICAL")
#: Full-width ASCII forms (U+FF01-FF5E) and the ideographic space: what
#: :func:`fold_fullwidth` folds before the scan for the rest (the Hyperscan path).
_FULLWIDTH_FOLDED: Final = frozenset((*range(0xFF01, 0xFF5F), 0x3000))
#: Lead bytes whose characters :func:`_database` matches with one expression
#: per lead (all 3-byte: U+2000-U+2FFF and U+3000-U+3FFF).
_ALTERNATED_LEADS: Final = (0xE2, 0xE3)
#: Hyperscan ids: an expression's id is the UTF-8 length (2-4) of what it
#: matches, so a hit's start is its end minus its id.
_HIT_LENGTH_BITS: Final = 3
_HIT_LENGTH_MASK: Final = (1 << _HIT_LENGTH_BITS) - 1
#: Bytes scanned per Hyperscan call where the compiled core is not built (it
#: folds in one pass of its own: :func:`fold`). Bounds the hit list (at most
#: one hit per two bytes: 128 Ki ints) and the pieces joined per window
#: whatever the chunk size (``gateway scan --chunk-size`` goes to 64 MiB). Each
#: hit costs ~0.5 µs of Python (callback, slice): text with a folded character
#: every 250 bytes folds at ~150-250 MB/s, every 10 bytes (Arabic-Indic
#: numerals, Persian ZWNJ, hostile input) at ~3-10 MB/s; the core folds such
#: text at ~250 MB/s. Decoding and ``str.translate`` was no faster at any
#: density (4-25 MB/s).
_FOLD_WINDOW_BYTES: Final = 256 << 10


def _replacement(char: str) -> str | None:
    """What :func:`fold` makes of ``char`` (not ASCII): ``""`` to drop it, ``None`` to keep it.

    - Format characters (Cf), enclosing marks (Me), variation selectors and
      the grapheme joiner are dropped.
    - A decimal digit of any script (Nd) becomes its ASCII digit.
    - A character whose NFKC is printable ASCII becomes it when that holds a
      letter or digit or is one character (``𝟏``, ``①``, ``⑴``, ``²``, ``ℍ``,
      ``℡``, ``ﬁ``, NBSP and the other spaces, small and vertical punctuation
      forms); NFKC's pure punctuation runs (``…`` -> ``...``, ``‼``) are kept,
      so Chinese prose keeps its ellipsis.
    - A compatibility ideograph or radical becomes its unified ideograph.
    - Any other number with a digit value (``❶``, ``➀``, ``⓵``, Ethiopic
      digits) becomes that digit.
    """
    category = unicodedata.category(char)
    if category in _DROPPED_CATEGORIES:
        return ""
    if category == "Mn":
        name = unicodedata.name(char, "")
        if any(part in name for part in _IGNORABLE_MARK_NAMES):
            return ""
    if category == "Nd":
        return str(unicodedata.decimal(char))
    nfkc = unicodedata.normalize("NFKC", char)
    if nfkc != char:
        if nfkc.isascii() and nfkc.isprintable():
            if len(nfkc) == 1 or any(c.isalnum() for c in nfkc):
                return nfkc
        elif (
            len(nfkc) == 1
            and unicodedata.name(nfkc, "").startswith("CJK UNIFIED IDEOGRAPH")
            and unicodedata.name(char, "").startswith(_CJK_FOLDED_NAMES)
        ):
            return nfkc
    if category == "No":
        digit = unicodedata.digit(char, None)
        if digit is not None:
            return str(digit)
    return None


def _searched() -> Iterator[int]:
    for start, stop in _SEARCHED_RANGES:
        yield from range(start, stop)


def _escaped(data: bytes) -> bytes:
    return b"".join(b"\\x%02x" % byte for byte in data)


def _ranges(values: list[int]) -> Iterator[tuple[int, int]]:
    """Runs of consecutive ``values`` (sorted) as (first, last)."""
    first = last = values[0]
    for value in values[1:]:
        if value != last + 1:
            yield first, last
            first = value
        last = value
    yield first, last


def _byte_class(values: list[int]) -> bytes:
    """A Hyperscan class of the byte ``values`` (sorted)."""
    parts = (
        _escaped(bytes([a])) + (b"-" + _escaped(bytes([b])) if b > a else b"")
        for a, b in _ranges(values)
    )
    return b"[" + b"".join(parts) + b"]"


def _by_head(code_points: list[int]) -> dict[bytes, list[int]]:
    """The last UTF-8 byte of each of ``code_points``, by the bytes before it."""
    heads: dict[bytes, list[int]] = {}
    for cp in code_points:
        utf8 = chr(cp).encode()
        heads.setdefault(utf8[:-1], []).append(utf8[-1])
    return heads


def _database(code_points: list[int]) -> hyperscan.Database:
    """A block-mode database reporting every occurrence of ``code_points`` in UTF-8.

    The id of every expression is the UTF-8 length of what it matches. Most
    characters are grouped by their bytes but the last (one expression per
    lead byte or lead pair, with the last byte as a class): as fast to scan as
    one literal per character and 10x faster to compile (~0.15 s against 1.2
    s). The characters led by E2 and E3 (U+2000-U+3FFF: general punctuation,
    letterlike and enclosed forms, radicals, the ideographic space, squared
    units) are one expression per lead instead: text is full of their
    neighbours (typographic quotes, dashes and ellipses; CJK commas and full
    stops), and as separate expressions they made the scan 1.3-2x slower on
    English with typographic quotes and on Chinese text (0.5 against 0.65, 0.35
    against 0.6 ms/MB; mixed prose the same). Byte patterns only, so what is
    not UTF-8 has defined results (Hyperscan's UTF-8 mode has none).
    """
    expressions: list[bytes] = []
    ids: list[int] = []
    alternated: dict[int, list[int]] = {lead: [] for lead in _ALTERNATED_LEADS}
    grouped: list[int] = []
    for cp in code_points:
        lead = chr(cp).encode()[0]
        alternated.get(lead, grouped).append(cp)
    for head, tails in _by_head(grouped).items():
        expressions.append(_escaped(head) + _byte_class(tails))
        ids.append(len(head) + 1)
    for lead, members in alternated.items():
        if members:
            alternatives = (_escaped(h[1:]) + _byte_class(t) for h, t in _by_head(members).items())
            expressions.append(_escaped(bytes([lead])) + b"(?:" + b"|".join(alternatives) + b")")
            ids.append(3)
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=ids, flags=0)
    return database


@dataclass(frozen=True, slots=True)
class _Folding:
    """The folding table (built on first use, ~0.07 s)."""

    #: Code point -> replacement (``""``: dropped), for ``str.translate``.
    table: Mapping[int, str]
    #: UTF-8 of each character -> UTF-8 of its replacement.
    utf8: Mapping[bytes, bytes]
    #: The characters to scan for once :func:`fold_fullwidth` has run (all but the
    #: full-width block and U+3000).
    scanned: tuple[int, ...]


@functools.cache
def _folding() -> _Folding:
    table: dict[int, str] = {}
    for cp in _searched():
        replacement = _replacement(chr(cp))
        if replacement is not None:
            table[cp] = replacement
    table.update({cp: unicodedata.normalize("NFKC", chr(cp)) for cp in _FULLWIDTH_FOLDED})
    return _Folding(
        table=MappingProxyType(table),
        utf8=MappingProxyType({chr(cp).encode(): rep.encode() for cp, rep in table.items()}),
        scanned=tuple(sorted(cp for cp in table if cp not in _FULLWIDTH_FOLDED)),
    )


@functools.cache
def _database_for(fullwidth_folded: bool) -> hyperscan.Database:
    """The scan for text :func:`fold_fullwidth` has been through, or for text without an EF byte.

    The latter holds no full-width form but may hold U+3000: finding it in the
    same scan spares such text (mixed English and Chinese prose) the
    full-width pass, which costs as much as the scan (~0.2 ms/MB each).
    """
    scanned = list(_folding().scanned)
    return _database(scanned if fullwidth_folded else sorted([*scanned, 0x3000]))


def folding_table() -> Mapping[int, str]:
    """Every character :func:`fold` changes: code point -> replacement (``""`` when dropped).

    Derived from :mod:`unicodedata` (Unicode ``unicodedata.unidata_version``)
    by :func:`_replacement`; the full-width ASCII block and U+3000 included.
    """
    return _folding().table


class _Scratches(threading.local):
    """One Hyperscan scratch per database per thread: a scratch serves one scan at a time."""

    def __init__(self) -> None:
        self.by_database: dict[int, hyperscan.Scratch] = {}

    def get(self, database: hyperscan.Database) -> hyperscan.Scratch:
        scratch = self.by_database.get(id(database))
        if scratch is None:
            scratch = self.by_database[id(database)] = hyperscan.Scratch(database)
        return scratch


_SCRATCHES: Final = _Scratches()


@functools.cache
def _native_fold_ready() -> None:
    """Hand :func:`folding_table` to the compiled core (once, before its first fold)."""
    assert _fold_native is not None
    table = _folding().table
    points = sorted(table)
    replacements = [table[cp].encode() for cp in points]
    offsets = list(itertools.accumulate(map(len, replacements), initial=0))
    _fold_setup_native(
        struct.pack(f"={len(points)}I", *points),
        struct.pack(f"={len(offsets)}I", *offsets),
        b"".join(replacements),
    )


def fold(data: bytes) -> bytes:
    """Complete UTF-8 ``data`` normalised for matching (the same object when nothing changes).

    Full-width ASCII and U+3000 are folded (as :func:`fold_fullwidth`); format
    characters are dropped; every decimal digit and every compatibility form
    NFKC spells in ASCII is folded (:func:`folding_table`). Positions in the
    normalised text only serve the matcher (precedence, hotword windows,
    counting) and are never reported, so dropping a character or widening one
    (``⑴`` -> ``(1)``) is safe; a hotword window is measured in the text as it
    reads. Bytes that are not valid UTF-8 pass through unchanged.

    The compiled core folds in one pass over the table (ASCII skipped eight
    bytes at a time, every other character decoded and looked up in a bitmap:
    ~0.1 ms/MB on mixed prose, and dense folded text such as Arabic-Indic
    numerals no slower than any other CJK-dense text). Without it a Hyperscan
    scan finds the characters to replace (~0.5 ms/MB, and ~0.5 µs of Python
    per character replaced). :func:`fold_py` is the reference for both.
    """
    # All-ASCII text has nothing to fold: one pass that stops at the first
    # non-ASCII byte, ~15 GB/s on 4 MB chunks.
    if data.isascii():
        return data
    if _fold_native is not None:
        _native_fold_ready()
        return _fold_native(data)
    fullwidth = _FW_LEAD in data
    if fullwidth:
        data = fold_fullwidth(data)
    database = _database_for(fullwidth)
    scratch = _SCRATCHES.get(database)
    utf8 = _folding().utf8
    view = memoryview(data)
    size = len(data)
    folded: list[bytes] = []  # the text up to ``done``, a piece per window that changed
    done = start = 0
    while start < size:
        stop = _char_start(data, start + _FOLD_WINDOW_BYTES)
        hits = _hits(database, scratch, view[start:stop])
        if hits:
            pieces: list[bytes | memoryview] = []
            for hit in hits:
                end = start + (hit >> _HIT_LENGTH_BITS)
                begin = end - (hit & _HIT_LENGTH_MASK)
                pieces.append(view[done:begin])
                pieces.append(utf8[data[begin:end]])
                done = end
            folded.append(b"".join(pieces))
        start = stop
    if not folded:
        return data
    folded.append(data[done:])
    return b"".join(folded)


def _char_start(data: bytes, pos: int) -> int:
    """``pos``, moved back to the start of the UTF-8 character it falls in (or the end)."""
    if pos >= len(data):
        return len(data)
    for back in range(4):  # a 4-byte character's lead is 3 bytes back
        if data[pos - back] & 0xC0 != 0x80:
            return pos - back
    return pos  # not UTF-8 here: no character of the table to cut


def _hits(
    database: hyperscan.Database, scratch: hyperscan.Scratch, window: memoryview
) -> list[int]:
    """Every character of the table in ``window``: ``end << 3 | length``, by end."""
    hits: list[int] = []
    record = hits.append

    def on_match(length: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
        record(end << _HIT_LENGTH_BITS | length)

    # Any buffer is scanned (hyperscan's stub says bytes or str): windows are not copied.
    database.scan(window, match_event_handler=on_match, scratch=scratch)  # type: ignore[type-var]
    hits.sort()  # Hyperscan need not report different expressions in order of end
    return hits


def fold_py(data: bytes) -> bytes:
    """:func:`fold` by ``str.translate`` over the whole text: the reference it is tested against."""
    # surrogateescape round-trips any byte that is not UTF-8 unchanged.
    text = data.decode("utf-8", "surrogateescape").translate(_folding().table)
    return text.encode("utf-8", "surrogateescape")


def _complete_length(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 character cut at its end (0-3 bytes held back).

    Looks back at most three bytes for the lead of the last character: a lead
    whose sequence needs more bytes than are there starts the held tail.
    """
    size = len(data)
    for back in range(1, min(size, 3) + 1):
        byte = data[size - back]
        if byte < 0x80:
            return size
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return size - back if back < need else size
    return size


def _control_share(text: str) -> float:
    if not text:
        return 0.0
    return (len(text) - len(text.translate(_DELETE_CONTROLS))) / len(text)


def _decodes(data: bytes, codec: str, complete: bool) -> str | None:
    """``data`` decoded strictly (a cut last character allowed unless complete)."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    try:
        return decoder.decode(data, final=complete)
    except UnicodeDecodeError:
        return None


def _utf16_by_nuls(prefix: bytes, complete: bool) -> str | None:
    if len(prefix) < _UTF16_MIN_BYTES:
        return None
    even, odd = prefix[0::2], prefix[1::2]
    nul_even, nul_odd = even.count(0), odd.count(0)
    candidates: list[str] = []
    if nul_odd >= _UTF16_NUL_SHARE * len(odd) and nul_even <= _UTF16_OTHER_NUL_SHARE * len(even):
        candidates.append(UTF16LE)
    if nul_even >= _UTF16_NUL_SHARE * len(even) and nul_odd <= _UTF16_OTHER_NUL_SHARE * len(odd):
        candidates.append(UTF16BE)
    for charset in candidates:
        text = _decodes(prefix, _CODECS[charset], complete)
        if text is not None and _control_share(text) <= _CONTROL_SHARE:
            return charset
    return None


def _utf16_by_text(prefix: bytes, complete: bool) -> tuple[int, str] | None:
    """UTF-16 without a BOM or the NUL pattern (CJK, full-width): (score, charset).

    Both byte orders are decoded strictly; one is a candidate when nearly all
    its characters are in the blocks Chinese text uses and it holds evidence
    (frequent characters or full-width forms) outweighing wrong-codec ones.
    """
    if len(prefix) < _UTF16_MIN_BYTES:
        return None
    best: tuple[int, str] | None = None
    for charset in (UTF16LE, UTF16BE):
        text = _decodes(prefix, _CODECS[charset], complete)
        if not text or len(_UTF16_TEXT_RE.findall(text)) < _UTF16_TEXT_SHARE * len(text):
            continue
        score = _score(text) + len(_FULLWIDTH_RE.findall(text))
        if score > 0 and (best is None or score > best[0]):
            best = (score, charset)
    return best


def _score(text: str) -> int:
    """Evidence that ``text`` was decoded with the right CJK codec."""
    return len(_FREQUENT_RE.findall(text)) - len(_WRONG_CODEC_RE.findall(text))


def _gb_outside_gb2312(text: str) -> int:
    """Characters of GB18030-decoded ``text`` that GB 2312 lacks.

    Simplified Chinese is written almost entirely within GB 2312; Big5 bytes
    read as GB18030 land on GBK's extension rows (traditional and rare
    characters) whenever their trail byte is below 0xA1, about 40 % of Big5
    level-1 characters.
    """
    kept = text.encode("gb2312", "ignore").decode("gb2312")
    return len(text) - len(kept)


def detect(prefix: bytes, complete: bool) -> Detection:
    """Decide the charset of a member from its first bytes.

    Order: a BOM; UTF-16 by its NUL pattern (ASCII-heavy text); UTF-8 when the
    prefix is text-like and valid; then UTF-16 without NULs (CJK and
    full-width text) against GB18030 and Big5, by evidence; binary when the
    prefix holds NULs or control bytes and is not UTF-16; else Windows-1252.

    Args:
        prefix: the member's first bytes (the caller's bounded sniff prefix, or
            the whole member when it is shorter).
        complete: True when ``prefix`` is the whole member, so a cut multi-byte
            character at its end is an error rather than a chunk boundary.

    Returns:
        The charset and BOM length; ``charset`` is ``None`` for binary data.
    """
    for bom, charset in _BOMS:
        if prefix.startswith(bom):
            return Detection(charset, len(bom))
    utf16 = _utf16_by_nuls(prefix, complete)
    if utf16 is not None:
        return Detection(utf16)
    controls = len(prefix.translate(None, _NOT_CONTROL))
    textlike = b"\x00" not in prefix and controls <= _CONTROL_SHARE * len(prefix)
    if textlike and (prefix.isascii() or _decodes(prefix, "utf-8", complete) is not None):
        return Detection(UTF8)
    best = _utf16_by_text(prefix, complete)
    if not textlike:
        return Detection(best[1] if best is not None else None)
    for charset in (GB18030, BIG5):
        text = _decodes(prefix, _CODECS[charset], complete)
        if text is None:
            continue
        score = _score(text)
        if charset == GB18030:
            score -= _gb_outside_gb2312(text)
        # A tie keeps the earlier candidate: UTF-16 (its evidence is specific),
        # then GB18030, the larger repertoire.
        if best is None or score > best[0]:
            best = (score, charset)
    if best is not None:
        return Detection(best[1])
    return Detection(WINDOWS1252)


class Normaliser:
    """Incremental conversion of one member to folded UTF-8 (see :func:`fold`).

    ``feed`` returns the normalised bytes available so far; a multi-byte
    character cut by a chunk boundary (2, 3 or 4 bytes, whatever it is) is
    held back until the next chunk, so the concatenated output is independent
    of chunking.
    """

    __slots__ = ("_carry", "_decoder")

    def __init__(self, charset: str) -> None:
        """Start a member in ``charset`` (one of this module's names)."""
        self._decoder = (
            None if charset == UTF8 else codecs.getincrementaldecoder(_CODECS[charset])("replace")
        )
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        """Normalise the next chunk of the member."""
        if self._decoder is not None:
            data = self._decoder.decode(data).encode()
        if self._carry:
            data = self._carry + data
            self._carry = b""
        # Hold back a character cut at the end: it may be one to drop or fold.
        # (All-ASCII text, most CSV, logs and code, keeps every byte here and
        # fold's one ``isascii`` pass hands it back as it is.)
        complete = _complete_length(data)
        if complete < len(data):
            data, self._carry = data[:complete], data[complete:]
        return fold(data)

    def flush(self) -> bytes:
        """The member ended: whatever was held back, normalised."""
        tail = b""
        if self._decoder is not None:
            tail = self._decoder.decode(b"", final=True).encode()
        data = self._carry + tail
        self._carry = b""
        return fold(data)
