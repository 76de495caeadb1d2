"""Text transforms: the encodings text travels in, decoded before the matcher reads it (issue 13).

A browser, a mail client or a JSON parser decodes these before a person reads
the text, so the classifier does too (SPEC §3.1 "Text is also seen through
the encodings it travels in"):

==============  ======================================================  ======================
transform       triggered by                                            decoded
==============  ======================================================  ======================
json-escapes    in a JSON member (``application/json``, JSON Lines)     in place: the decoded
                any string escape; in other text a ``\\uXXXX`` (a      text replaces the raw
                ``\\n`` too, where a stage can still be added)          text
char-refs       in any text, a decimal or hex reference (``&#49;``,     in place
                ``&#x31;``) or a named one the HTML5 list knows
                (``&nbsp;``, ``&lpar;``, ``&hyphen;`` …)
percent         in a form body (``application/x-www-form-urlencoded``,  in place
                ``+`` as a space too) any escape; in other text an
                escape after the member's first ``=`` (a query string)
base64, hex     a run of :data:`RUN_MIN_CHARS` base64 characters        in addition: a nested
                (standard or URL-safe, wrapped lines joined); hex when  member, sniffed and
                it is all hex digits                                    opened like any
==============  ======================================================  ======================

**Where they hook in.** :class:`Transforms` is the
:class:`~gateway.classify.decode.core.TextSink` the decoder's layers write to;
it wraps the matcher. Every text member — a text file, a format reader's
member (an e-mail's HTML body), a member name — passes through a
:class:`_Pipeline` of its own: the in-place transforms as a chain of
*stages*, then the run finder, then the matcher.

**Triggered by their markers.** A stage is added to a member's chain where
the first marker of its kind appears in the chain's output (``&#4`` … ``9;``
cut by a chunk boundary is found as one marker), so text without markers
goes through untouched: on clean text the cost is three ``memchr`` passes
per chunk (``&``, ``\\``, and ``=`` or, after it, ``%``). A stage decodes its
kind everywhere after its first marker, and its output is watched again: a
percent-encoded ``&#49;`` in a JSON string is three stages, a JSON document
in a JSON string two. Each stage's output is normalised like raw text
(:class:`gateway.classify.charset.Normaliser`: ``&#65297;``, a full-width
``1``, is folded to ``1``). References that stand for a space or a dash
are a space or ``-`` (``138&hyphen;1234&hyphen;5678`` is a grouped number).

**In place, or in addition.** The in-place transforms decode *instead of*
the raw text: a decoded marker rewrites only itself, so a raw identifier
next to it is still seen, exactly once (the matcher's ``count`` counts
findings: an identifier seen raw and decoded would count twice). A percent
escape of a control byte is left as it is (``15%110101…`` is a literal
``%`` before an identifier). Base64 and hex are speculative (an
18-digit Resident ID is a valid hex and base64 run itself), so the raw run
stays in the member and its decoded bytes are scanned *in addition*, as a
nested member: the run's characters hold no identifier of their own, so
nothing counts twice; numbers of up to 19 digits are no run at all.

**Runs.** Hyperscan (a streaming database per member, stopped at each report)
finds 16 base64 characters in a row; the run is walked back to its start
and read to its end with a regex, decoding as it streams. Whether its
decoded bytes are worth a member is decided on their first ``SNIFF_BYTES``
as the sniffer decides any stream (:func:`_verdict`): UTF-8 text and every
format the decoder or the registry knows (a base64'd zip, gzip, PDF,
Parquet or PNG) are opened, encrypted formats included (``age: encrypted
content``); other bytes are *noise* and dropped, whatever their size — keys,
hashes, signatures, nonces, certificates, ciphertext tokens, a hex dump of
random bytes: text that holds them is text, and making it unscannable
would block every API payload. (Raw, an unknown binary is unscannable from
its first byte, issue 12: raw bytes of a binary format hide binary-encoded
numbers; a binary encoded in text is one value of that text.) Encrypted
content inside ASCII armor is left to the matcher, which reports the armor
already. Decoded runs are *deferred*: buffered (reserved from the
decoder budget past :data:`DEFER_FREE_BYTES`) and decoded as nested members
when their member ends, so that member stays one member for the matcher
(its CSV header, its hotwords); past :data:`DEFER_FLUSH_BYTES` the member is
suspended at the end of a run, the runs decoded, and the member resumed.

Runs of :data:`RUN_MIN_CHARS` are searched in every member of a structured
type (JSON, HTML, XML, SVG, form bodies) and every member decoded from a
run. Other text (prose, CSV, logs) is searched for them in its first
:data:`HEAD_BYTES`, and for the rest when a long run there, or
:data:`HEAD_ACCEPTS` short ones, decoded to something (a CSV with a base64
column); otherwise past the head runs of :data:`LONG_RUN_CHARS` are the
candidates: a blob of encoded identifiers deep in a long log is decoded,
while the tokens and long words of ordinary text (a 16-character run in
every few hundred bytes of a log, each a decode attempt) are not. The
compiled core searches (``alphabet_run``, ~0.1 ms/MB on prose, against ~1.7
for Hyperscan's class repeats where the core is not built) and passes over
the digests and signatures that fill logs and lockfiles without Python
(``next_run``: a complete run of at most 512 characters whose hex and base64
decodings are neither text nor a known magic number); a log with two
digests a line decodes at ~11 ms/MB and an npm lockfile at ~5 (~300 and
~190 with every candidate read by the state machine and the format
registry).

**Limits.** Every stage and every run is a decode layer, named in
``ContentInfo.layers``: a member at depth ``d`` with ``k`` stages is text at
depth ``d + k``, a run in it a member at ``d + k + 1``, under
``ScanLimits.max_depth``; decoded run bytes count against
``max_expanded_bytes``; a run is buffered up to ``max_nested_random_bytes``
(as a nested random-access member is). A transform past a limit is
``content.unscannable`` with a reason naming it (``base64: nested deeper
than 4 layers``), never a silent pass; only *weak* markers (a ``\\n`` in
text that is not JSON, a named reference in decoded text: as likely text
as an encoding) are passed over when too deep. Every decision is made at a
position of the content, so the sink sees the same calls for every
chunking.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import html
import html.entities
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import hyperscan

from gateway.classify import charset as cs
from gateway.classify.decode.archives import archive, is_tar
from gateway.classify.decode.compress import compression
from gateway.classify.decode.core import NAME_TYPE, SNIFF_BYTES, Context, TextSink, human
from gateway.classify.decode.encrypted import ENCRYPTED_FORMATS
from gateway.classify.decode.readers import RANDOM_BUFFER_STEP_BYTES
from gateway.classify.decode.text import (
    APPLICATION_FORM,
    APPLICATION_JSON,
    APPLICATION_XML,
    IMAGE_SVG,
    TEXT_FASTA,
    TEXT_FASTQ,
    TEXT_HTML,
    TEXT_SAM,
    TEXT_VCF,
)
from gateway.classify.detectors import ARMOR_MARKERS
from gateway.classify.formats import identify

# --------------------------------------------------------------------------- names and bounds

#: Layer names of the transforms, in ``ContentInfo.layers`` and reasons.
JSON_ESCAPES: Final = "json-escapes"
CHAR_REFS: Final = "char-refs"
PERCENT: Final = "percent"
BASE64: Final = "base64"
HEX: Final = "hex"
MARKUP: Final = "markup"

#: Longest JSON escape: a surrogate pair ``\\uD83D\\uDE00`` (RFC 8259 §7). The
#: JSON stage holds back at most this many bytes at a chunk boundary.
JSON_ESCAPE_BYTES: Final = 12
#: Digits of a numeric character reference decoded. U+10FFFF needs 7 decimal
#: digits; HTML allows any number of leading zeros, so a longer reference is
#: a browser's "1" too: past this bound it is unscannable, never passed raw.
CHAR_REF_DIGITS: Final = 32
#: Longest HTML5 entity name (``CounterClockwiseContourIntegral``, 31).
CHAR_REF_NAME: Final = 31
#: Bytes a character reference may span (``&#`` + 32 digits + ``;``, the
#: longest named one is 33): the char-refs stage's hold-back at a boundary.
CHAR_REF_BYTES: Final = 3 + CHAR_REF_DIGITS + 1
#: Shortest run of base64-alphabet characters decoded: 16 characters are 12
#: bytes (the base64 of an 18-character Resident ID is 24, of an HKID 14 and
#: padding, of a bare 11-digit mobile number 15 and a pad: below it, as is
#: any token shorter than a sentence). Shorter runs are never candidates.
RUN_MIN_CHARS: Final = 16
#: Shortest all-digit run decoded: Resident IDs, card numbers and phones are
#: 11-19 digits and their hex decoding is printable ASCII by chance (0.6^9
#: for 18 digits), so numbers up to 19 digits are left alone. The hex of a
#: mobile number is 22 digits.
NUMBER_MIN_DIGITS: Final = 20
#: An all-digit run is hex only when what it decodes to is numbers (at most
#: this share of other characters) or hex digits: the hex of "ID 110101…"
#: has letters in it and is not all digits, the hex of a list of numbers and
#: the hex of hex are.
NUMERIC_OTHER_SHARE: Final = 0.25
#: Accepted runs in a prose/CSV/log head that make the whole member searched
#: (besides one long run): a column of base64 values gives hundreds.
HEAD_ACCEPTS: Final = 3
#: Characters of a run looked at to tell hex from base64: a run whose first
#: 64 characters are all hex digits is hex (base64 of anything is that
#: unlikely to avoid the other 42 characters: (22/64)^64 ~ 10^-30).
RUN_DECIDE_CHARS: Final = 64
#: Bytes at the start of a prose/CSV/log member in which runs of
#: :data:`RUN_MIN_CHARS` are searched; past it runs of :data:`LONG_RUN_CHARS`,
#: unless runs in the head decoded to something (see HEAD_ACCEPTS): then every
#: run. One sniff prefix.
HEAD_BYTES: Final = SNIFF_BYTES
#: Shortest run searched for past the head of prose, a table or a log (and
#: shortest all-digit run there): a blob of encoded identifiers deep in a long
#: text is found. 64 characters are 48 bytes (the base64 of two Resident IDs
#: and their separators), and a block wrapped at 64 (PEM, ``openssl base64``)
#: or 76 characters (MIME, ``base64``) has whole lines of it. The core passes
#: over the digests and signatures that fill logs without Python
#: (``next_run``); shorter runs (tokens, long words: one in every few hundred
#: bytes of a log) are not candidates there.
LONG_RUN_CHARS: Final = 64
#: Decoded run bytes a member defers before it is suspended at the end of a
#: run and the runs are decoded: bounds deferral memory per member for a
#: JSON Lines file with a base64 field in every record.
DEFER_FLUSH_BYTES: Final = 1 << 20
#: Deferred bytes are reserved from the decoder budget in the steps a buffered
#: random-access member reserves in, once a member holds more than
#: :data:`DEFER_FREE_BYTES` of them (up to one sniff prefix a member holds
#: unreserved, as a sniffer holds its prefix).
DEFER_STEP_BYTES: Final = RANDOM_BUFFER_STEP_BYTES
DEFER_FREE_BYTES: Final = SNIFF_BYTES
#: Decoded bytes below which a run that is not UTF-8 text is only looked at
#: for a compression or archive magic, not asked of the format registry:
#: no registered format is smaller (a PNG is at least 67 bytes), a gzip is 20.
FORMAT_MIN_BYTES: Final = 64
#: Share of printable ASCII (and white space) that decoded bytes the charset
#: detector calls GB18030, Big5 or windows-1252 need to be text: a table or a
#: log in a legacy charset is mostly ASCII, while a run of one letter
#: (``aaaa…`` decodes to ``i\xa6\x9a…``, 33 %), random bytes (37 %) and
#: base64url dashes (0 %) decode to "text" in GB18030 that is not.
LEGACY_ASCII_SHARE: Final = 0.5
#: Wrapped base64 (MIME 76, PEM 64, ``xxd -p`` 60): a run that ends at a line
#: break continues on the next line when its line is this wide, a multiple
#: of 4, not padded, and the next line (after at most
#: :data:`WRAP_INDENT_MAX` spaces or tabs) starts with a base64 character.
WRAP_MIN_CHARS: Final = 32
WRAP_MAX_CHARS: Final = 1024
WRAP_INDENT_MAX: Final = 64
#: Decoded characters cached per char-refs stage (``&nbsp;`` decoded once).
REF_CACHE_ENTRIES: Final = 4096

#: Member types whose every run is searched (machine-written structure).
STRUCTURED_TYPES: Final = frozenset(
    {APPLICATION_JSON, TEXT_HTML, APPLICATION_XML, IMAGE_SVG, APPLICATION_FORM}
)
#: Member types searched for no runs: sequence lines are runs of letters.
_NO_RUNS: Final = frozenset({TEXT_FASTA, TEXT_FASTQ, TEXT_SAM, TEXT_VCF})
#: A name (a file's, an archive member's, a justification) is searched for runs
#: only when it has one this long with letters and digits, or digits past a
#: number's length (as base64 and hex of an identifier have): most names have
#: none, the run finder's set-up would cost every member of a large archive,
#: and a long word or a long number in a name is no encoding.
_NAME_RUN: Final = re.compile(rb"[A-Za-z0-9+=-]{%d,}" % RUN_MIN_CHARS)
_LETTER: Final = re.compile(rb"[A-Za-z]")
_DIGIT: Final = re.compile(rb"[0-9]")


def _name_has_run(data: bytes) -> bool:
    return any(
        _DIGIT.search(run) and (_LETTER.search(run) or len(run) >= NUMBER_MIN_DIGITS)
        for run in _NAME_RUN.findall(data)
    )


# --------------------------------------------------------------------------- in-place stages

_JSON_ALL: Final = re.compile(rb'\\u[0-9A-Fa-f]{4}(?:\\u[0-9A-Fa-f]{4})*|\\["\\/bfnrt]')
#: JSON's one-character escapes, in decoded text (after ``\\uXXXX``).
_JSON_SIMPLE_STR: Final = re.compile(r'\\(["\\/bfnrt])')
_JSON_SIMPLE_CHARS: Final[dict[str, str]] = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_JSON_SIMPLE: Final[dict[bytes, bytes]] = {
    b"\\" + key.encode(): char.encode() for key, char in _JSON_SIMPLE_CHARS.items()
}
_JSON_MARK_ALL: Final = re.compile(rb'\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4})')
_JSON_MARK_U: Final = re.compile(rb"\\u[0-9A-Fa-f]{4}")
#: Markers a stage cannot be added for (too deep) are passed over when weak:
#: these entries of the blocked set say so for JSON's one-character escapes
#: and for named references.
_WEAK_JSON: Final = "json-escapes (weak)"
_WEAK_REFS: Final = "char-refs (weak)"

#: A character reference, split out of the text: group 1 holds the digits of a
#: decimal one with its semicolon (``&#24352;``: how exporters write non-ASCII
#: text; decoded through a cache keyed by them), group 2 any other reference
#: after its ``&``. (The pattern starts with its literal ``&``, which the regex
#: engine searches for three times as fast as a group.)
_REF_SPLIT: Final = re.compile(
    rb"&(?:#([0-9]{1,%d});|((?:#(?:[xX][0-9A-Fa-f]{1,%d}|[0-9]{1,%d})|[A-Za-z][A-Za-z0-9]{0,%d});?))"
    % (CHAR_REF_DIGITS, CHAR_REF_DIGITS, CHAR_REF_DIGITS, CHAR_REF_NAME - 1)
)
_REF_MARK: Final = re.compile(
    rb"&(?:#(?:[0-9]|[xX][0-9A-Fa-f])|([A-Za-z][A-Za-z0-9]{0,%d});)" % (CHAR_REF_NAME - 1)
)
#: A numeric reference the char-refs stage decodes (one it left as it was,
#: longer than CHAR_REF_DIGITS, is no marker in its output).
_REF_MARK_NESTED: Final = re.compile(
    rb"&#(?:[xX][0-9A-Fa-f]{1,%d}(?![0-9A-Fa-f])|[0-9]{1,%d}(?![0-9]))"
    % (CHAR_REF_DIGITS, CHAR_REF_DIGITS)
)
_HEX_DIGITS: Final = b"0123456789ABCDEFabcdef"
_DIGITS: Final = b"0123456789"
#: HTML5 named references, with their semicolon (``html.entities.html5``).
_ENTITY_NAMES: Final = frozenset(
    name[:-1].encode() for name in html.entities.html5 if name.endswith(";")
)
#: What a reference decodes to is folded where it can stand in an identifier:
#: no-break and typographic spaces are a space, hyphens, dashes and the minus
#: sign a hyphen-minus (``138&hyphen;1234&hyphen;5678`` is a grouped number).
_REF_FOLD: Final = str.maketrans(
    {
        **dict.fromkeys((0xA0, 0x202F, 0x205F, *range(0x2000, 0x200B)), " "),
        **dict.fromkeys((*range(0x2010, 0x2016), 0x2212, 0xFE58, 0xFE63), "-"),
    }
)

#: A run of percent escapes, split out of the text without its first ``%``.
_PCT_SPLIT: Final = re.compile(rb"%([0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*)")
#: A percent escape of a byte that may be decoded: not a C0 control other
#: than tab, LF and CR, not DEL. ``15%110101…`` keeps its ``%11``, so a raw
#: identifier after a literal percent sign is never eaten.
_PCT_MARK: Final = re.compile(rb"%(?:[2-6][0-9A-Fa-f]|7[0-9A-Ea-e]|[89A-Fa-f][0-9A-Fa-f]|0[9AaDd])")
#: The bytes that may follow the ``%`` of a :data:`_PCT_MARK` (every hex digit):
#: the percent search tries only those ``%`` (text full of "12.5%" tries none).
_PCT_FOLLOW: Final = bytes(1 if chr(b) in "0123456789ABCDEFabcdef" else 0 for b in range(256))
_PCT_BYTES: Final[dict[bytes, bytes]] = {
    f"{hi}{lo}".encode(): bytes([int(hi + lo, 16)])
    for hi in "0123456789ABCDEFabcdef"
    for lo in "0123456789ABCDEFabcdef"
    if _PCT_MARK.fullmatch(f"%{hi}{lo}".encode())
}
_CONTROLS: Final = bytes(b for b in range(256) if (b < 0x20 and b not in b"\t\n\r") or b == 0x7F)
_NOT_CONTROLS: Final = bytes(b for b in range(256) if b not in _CONTROLS)


def _utf8(text: str) -> bytes:
    """UTF-8 of decoded text; surrogate pairs from ``\\uXXXX`` joined, lone ones U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return joined.encode("utf-8")


def _json_escape_run(match: re.Match[bytes]) -> bytes:
    """One ``\\uXXXX`` run (or a simple escape) as UTF-8."""
    found = match.group()
    simple = _JSON_SIMPLE.get(found)
    if simple is not None:
        return simple
    return _utf8("".join([chr(int(found[i + 2 : i + 6], 16)) for i in range(0, len(found), 6)]))


def _json_simple(match: re.Match[str]) -> str:
    return _JSON_SIMPLE_CHARS[match.group(1)]


def _json_bulk(region: bytes) -> bytes | None:
    """Every JSON escape of an ASCII region, ``\\uXXXX`` in one C pass; None when it
    cannot be used (non-ASCII bytes, or a malformed ``\\u``/``\\U`` escape).

    ``raw_unicode_escape`` decodes exactly the ``\\u`` escapes a JSON parser
    does (those after an odd number of backslashes, so ``\\\\u0031`` stays a
    backslash and ``u0031``); the one-character escapes follow, left to right.
    """
    if not region.isascii():
        return None
    try:
        text = region.decode("raw_unicode_escape")
    except UnicodeDecodeError:
        return None
    if "\\" in text:
        text = _JSON_SIMPLE_STR.sub(_json_simple, text)
    return _utf8(text)


def _json_cut(buf: bytes) -> int:
    """Where ``buf`` may be cut without splitting a JSON escape (or a surrogate pair).

    Cut before the first escape that starts in the last
    :data:`JSON_ESCAPE_BYTES` bytes: a backslash whose predecessor is not a
    backslash starts an escape (the first of a run of them), and a
    ``\\uD8xx``-``\\uDBxx`` before it keeps the pair together.
    """
    n = len(buf)
    low = max(0, n - JSON_ESCAPE_BYTES)
    b = buf.find(b"\\", low)
    if b < 0:
        return n
    # Walk back over a run of backslashes to its first: that one starts an escape.
    # (A run longer than the walk is pathological: cut inside it, keeping the
    # hold-back bounded, at the risk of pairing its backslashes differently.)
    stop = max(0, b - _BACKSLASH_WALK)
    while b > stop and buf[b - 1] == 0x5C:
        b -= 1
    # A high surrogate right before it belongs with it.
    if b >= 6 and buf[b - 6 : b - 2].lower() in _HIGH_SURROGATES:
        b -= 6
    return b


#: Backslashes walked back over to find where a run of them starts.
_BACKSLASH_WALK: Final = 64
#: ``\\uD8`` … ``\\uDB``: the start of a high surrogate's escape (lower-cased).
_HIGH_SURROGATES: Final = frozenset(f"\\ud{x}".encode() for x in "89ab")
#: The lead byte of each in-place transform's markers and the most bytes a
#: marker spans (``\\uXXXX``; ``&#x`` + digits + ``;``; ``%XX``): where the
#: watch and the stages hold back at a chunk boundary.
_REF_HOLD: Final = (b"&", CHAR_REF_BYTES + 1)
_PCT_HOLD: Final = (b"%", 3)
_HOLDS: Final = (_REF_HOLD, (b"\\", 6), _PCT_HOLD)
#: A marker search finds each lead with ``bytes.find`` and tries the pattern
#: there (about 0.5 us a lead), up to one lead per this many bytes of the text
#: searched (and 16 more); past that it lets the pattern search the rest (a
#: regex scan, about 0.4 ms/MB). Stray ``&``, ``%`` or ``\\`` (``R&D``,
#: ``12.5%``, ``C:\\Users``) in clean text thus cost a memchr pass, not a regex
#: scan of every chunk; text dense with them costs one regex scan.
_BYTES_PER_LEAD_TRIED: Final = 4096


#: The bytes the watch's markers start with, and "=" (percent escapes count
#: after one): text without any of them has no marker.
_WATCH_LEADS: Final = b"\\&="


def find_any_py(data: bytes, start: int, stop: int, chars: bytes) -> int:
    """The index of the first byte of ``data[start:stop]`` in ``chars``, or -1: what the
    compiled core's ``find_any`` does in one pass."""
    found = [at for c in chars if (at := data.find(bytes((c,)), start, stop)) >= 0]
    return min(found, default=-1)


def find_lead_py(data: bytes, start: int, stop: int, lead: bytes, follow: bytes) -> int:
    """The index of the first ``lead`` in ``data[start:stop]`` whose next byte is marked
    in ``follow`` (a byte per byte value), or -1: what the compiled core's ``find_lead``
    does without a call per lead."""
    at = data.find(lead, start, stop)
    while at >= 0:
        if at + 1 < len(data) and follow[data[at + 1]]:
            return at
        at = data.find(lead, at + 1, stop)
    return -1


def _hold_back(buf: bytes, lead: bytes, span: int) -> int:
    """Where ``buf`` may be cut without splitting a marker of up to ``span`` bytes that
    starts with ``lead``: before the first ``lead`` in its last ``span - 1`` bytes."""
    at = buf.find(lead, max(0, len(buf) - span + 1))
    return len(buf) if at < 0 else at


def _marks(
    pattern: re.Pattern[bytes],
    lead: bytes,
    buf: bytes,
    lo: int,
    hi: int,
    follow: bytes | None = None,
) -> Iterator[re.Match[bytes]]:
    """The matches of ``pattern`` (whose matches start with ``lead``) that start in
    ``buf[lo:hi]``, in order and not overlapping, as ``pattern.finditer`` gives them.

    With ``follow`` (a byte per byte value, marking every byte that may come
    second in a match), only the leads followed by such a byte are tried.
    """
    find = _find_lead or find_lead_py

    def next_lead(start: int) -> int:
        if follow is None:
            return buf.find(lead, start, hi)
        return find(buf, start, hi, lead, follow)

    at = next_lead(lo)
    tries = 16 + (hi - lo) // _BYTES_PER_LEAD_TRIED
    while at >= 0:
        if not tries:
            for mark in pattern.finditer(buf, at):
                if mark.start() >= hi:
                    return
                yield mark
            return
        tries -= 1
        found = pattern.match(buf, at)
        if found is None:
            at = next_lead(at + 1)
        else:
            yield found
            at = next_lead(found.end())


class _Stage:
    """One in-place transform in a member's chain: bytes in, decoded UTF-8 out.

    ``feed`` keeps back at most a marker's length at a chunk boundary (so a
    marker cut by the boundary is decoded whole), ``final=True`` flushes it.
    The output is normalised like raw text (full-width folding …), unless the
    stage decodes nothing (``normalises`` False: its output is text that was
    normalised already).
    """

    name = ""
    #: The lead byte of the stage's markers and the most bytes one spans (the
    #: hold-back of :meth:`_cut`, which the JSON stage replaces).
    hold: tuple[bytes, int]
    #: Whether the stage changed the text (a layer of the member's text then).
    used = True
    normalises = True
    __slots__ = ("_carry", "_normaliser", "_pipe")

    def __init__(self, pipe: _Pipeline) -> None:
        self._pipe = pipe
        self._carry = b""
        self._normaliser = cs.Normaliser(cs.UTF8) if self.normalises else None

    def feed(self, data: bytes, final: bool = False) -> bytes:
        """Decode the next bytes (all of them when ``final``)."""
        buf = self._carry + data if self._carry else data
        cut = len(buf) if final else self._cut(buf)
        self._carry = buf[cut:]
        region = buf[:cut] if cut < len(buf) else buf
        out = self._decode(region) if region else b""
        normaliser = self._normaliser
        if normaliser is not None:
            out = normaliser.feed(out) if out else b""
            if final:
                out += normaliser.flush()
        return out

    def _cut(self, buf: bytes) -> int:
        return _hold_back(buf, *self.hold)

    def _decode(self, region: bytes) -> bytes:
        raise NotImplementedError


class _JsonStage(_Stage):
    """JSON string escapes, all of them (RFC 8259 §7), from the first marker on.

    In a JSON member any escape starts the stage; in other text only a
    ``\\uXXXX`` does (a Windows path's ``\\new`` starts nothing), and from
    there the text is read as JSON strings are: a form field or a log line
    holding a JSON document has its ``\\\\`` and ``\\"`` too.
    """

    name = JSON_ESCAPES
    __slots__ = ()

    def _cut(self, buf: bytes) -> int:
        return _json_cut(buf)

    def _decode(self, region: bytes) -> bytes:
        if b"\\" not in region:
            return region
        bulk = _json_bulk(region)
        if bulk is not None:
            return bulk
        return _JSON_ALL.sub(_json_escape_run, region)


class _RefStage(_Stage):
    """HTML/XML character references, decimal, hex and named (HTML5), as a browser decodes them."""

    name = CHAR_REFS
    hold = _REF_HOLD
    __slots__ = ("_cache", "_overlong")

    def __init__(self, pipe: _Pipeline) -> None:
        super().__init__(pipe)
        self._cache: dict[bytes, bytes] = {}
        self._overlong = False

    def _decode(self, region: bytes) -> bytes:
        if b"&" not in region:
            return region
        # Text, decimal digits, other reference, text, …: a loop over the references
        # (a regex callback per reference costs four times as much).
        pieces: list[bytes | None] = _REF_SPLIT.split(region)
        if len(pieces) == 1:
            return region
        cache = self._cache
        for i in range(1, len(pieces), 3):
            digits = pieces[i]
            if digits is not None:
                cached = cache.get(digits)
                pieces[i] = cached if cached is not None else self._decimal(digits)
            else:
                pieces[i] = self._other(pieces, i)
            pieces[i + 1] = b""
        if self._overlong:
            self._overlong = False
            self._pipe.refuse(f"{CHAR_REFS}: character reference over {CHAR_REF_DIGITS} digits")
        return b"".join(pieces)  # type: ignore[arg-type]  # every None replaced above

    def _decimal(self, digits: bytes) -> bytes:
        """A decimal reference with its semicolon, by its digits (cached under them)."""
        return self._one(b"&#" + digits + b";", digits)

    def _other(self, pieces: list[bytes | None], i: int) -> bytes:
        """The reference ``pieces[i + 1]`` (any but a decimal one with its semicolon,
        without its ``&``); ``pieces[i + 2]``, the text after it, tells whether a
        numeric one without its semicolon was cut short."""
        found = b"&" + (pieces[i + 1] or b"")
        if found[1:2] == b"#" and not found.endswith(b";"):
            following = (pieces[i + 2] or b"")[:1]
            if following and following in (_HEX_DIGITS if found[2:3] in b"xX" else _DIGITS):
                self._overlong = True  # more digits than we decode: a browser would
                return found
        return self._one(found)

    def _one(self, found: bytes, key: bytes | None = None) -> bytes:
        """One reference (as the text wrote it) decoded as HTML5 does, folded; cached under
        ``key`` (a decimal one's digits), else under the reference."""
        key = found if key is None else key
        cached = self._cache.get(key)
        if cached is None:
            text = html.unescape(found.decode("ascii")).translate(_REF_FOLD)
            cached = text.encode("utf-8", "replace")
            if len(self._cache) >= REF_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = cached
        return cached


class _PercentStage(_Stage):
    """Percent-encoding (RFC 3986 §2.1); in a form body ``+`` is a space too (WHATWG URL).

    An escape of a control byte (other than tab, LF, CR) stays as it is: it is
    a literal ``%`` before text (``15%110101…``) more likely than an escape, and
    decoding it would eat a raw identifier. Every other escape is decoded, as a
    browser or a form parser decodes it.
    """

    name = PERCENT
    hold = _PCT_HOLD
    __slots__ = ("_form",)

    def __init__(self, pipe: _Pipeline, form: bool) -> None:
        super().__init__(pipe)
        self._form = form

    def _decode(self, region: bytes) -> bytes:
        if self._form and b"+" in region:
            region = region.replace(b"+", b" ")
        if b"%" not in region:
            return region
        pieces = _PCT_SPLIT.split(region)  # text, a run of escapes, text, …
        for i in range(1, len(pieces), 2):
            pieces[i] = _pct_run(pieces[i])
        return b"".join(pieces)


#: Elements a browser lays out inline with no space of their own (HTML's
#: phrasing content, and the presentational ones it still renders): text on
#: both sides of their tags reads as one word, ``440305<b></b>198506121237``
#: as one Resident ID.
_INLINE_ELEMENTS: Final = [
    "a",
    "abbr",
    "b",
    "bdi",
    "bdo",
    "big",
    "cite",
    "code",
    "data",
    "del",
    "dfn",
    "em",
    "font",
    "i",
    "ins",
    "kbd",
    "mark",
    "nobr",
    "q",
    "rp",
    "rt",
    "ruby",
    "s",
    "samp",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "time",
    "tt",
    "u",
    "var",
    "wbr",
]
#: Longest inline tag (its attributes included) and comment joined across; a
#: longer one stays text, as every tag did before.
MARKUP_TAG_BYTES: Final = 256
#: Most tags and comments in a row joined across (a longer run stays text).
MARKUP_RUN_TAGS: Final = 8
#: Attribute and comment text kept aside until the next line break; past this,
#: the member is unscannable (text cannot be both joined and kept).
MARKUP_ASIDE_BYTES: Final = 64 << 10


def _trie(words: list[str]) -> str:
    """An alternation of ``words`` grouped by their first letters (the regex engine
    tries one branch per letter instead of every word)."""
    branches = []
    for first in sorted({w[0] for w in words}):
        rest = [w[1:] for w in words if w[0] == first]
        tail = _trie([r for r in rest if r])
        if tail:
            tail = f"(?:{tail}){'?' if '' in rest else ''}"
        branches.append(re.escape(first) + tail)
    return "|".join(branches)


_INLINE_NAMES: Final = _trie(_INLINE_ELEMENTS).encode()
_INLINE_RUN: Final = re.compile(
    rb"(?:<(?:/?(?:%s)(?:[\s/][^<>]{0,%d})?|!--[\s\S]{0,%d}?--)>){1,%d}"
    % (_INLINE_NAMES, MARKUP_TAG_BYTES, MARKUP_TAG_BYTES, MARKUP_RUN_TAGS),
    re.IGNORECASE,
)
#: Characters that may continue an identifier on each side of a run of tags.
_JOINABLE_CLASS: Final = rb"0-9A-Za-z@._+\-"
_JOINABLE: Final = frozenset(
    b for b in range(256) if re.fullmatch(rb"[%s]" % _JOINABLE_CLASS, bytes([b]))
)
#: Where a run may start: an inline tag or a comment right after such a
#: character (a character class first: the regex engine skips ahead on it,
#: ~130 MB/s on an HTML table export, where matching the run at every ``<``
#: ran at ~20).
_MARKUP_CANDIDATE: Final = re.compile(
    rb"[%s]<(?:/?(?:%s)[\s/>]|!--)" % (_JOINABLE_CLASS, _INLINE_NAMES), re.IGNORECASE
)
#: An attribute's value, and a comment's text, in a run of tags.
_MARKUP_TEXT: Final = re.compile(
    rb"""=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))|<!--([\s\S]*?)-->"""
)
_MARKUP_HOLD: Final = (MARKUP_TAG_BYTES + 8) * MARKUP_RUN_TAGS


class _MarkupStage(_Stage):
    """Inline tags and comments inside a word, removed as a browser shows the text.

    In an HTML member only, and only a run of inline elements' tags or
    comments directly between two characters that may continue an identifier
    (``[0-9A-Za-z@._+-]``): ``440305<span>198506121237</span>`` reads as
    the Resident ID a person sees. Every other tag stays in the text as it
    was (a block's tag or white space separates words for a browser too).
    The removed tags' attribute values and comments' text are kept: written
    after the next line break of the text, a line each (never inside the
    word). The stage shows as a layer only where it removed something.
    """

    name = MARKUP
    normalises = False  # the text out is text in with tags taken out
    __slots__ = ("_aside", "_aside_bytes", "_prev", "used")

    def __init__(self, pipe: _Pipeline) -> None:
        super().__init__(pipe)
        self._prev = b""
        self._aside: list[bytes] = []
        self._aside_bytes = 0
        self.used = False

    def feed(self, data: bytes, final: bool = False) -> bytes:
        out = super().feed(data, final)
        if final and self._aside:
            out += b"\n" + b"\n".join(self._aside) + b"\n"
            self._aside.clear()
        return out

    def _cut(self, buf: bytes) -> int:
        """Hold back an unfinished tag or comment, and a run of tags at the end
        (the character after it decides)."""
        n = len(buf)
        window = max(0, n - _MARKUP_HOLD)
        cut = n
        opened = buf.rfind(b"<!--", window)
        if opened >= 0 and buf.find(b"-->", opened + 4) < 0:
            cut = opened
        lt = buf.rfind(b"<", window, cut)
        if lt >= 0 and buf.find(b">", lt, cut) < 0:
            cut = lt
        for _ in range(MARKUP_RUN_TAGS):
            if cut == 0 or buf[cut - 1] != 0x3E:  # ">"
                break
            lt = buf.rfind(b"<", max(window, cut - MARKUP_TAG_BYTES - 8), cut)
            if lt < 0 or _INLINE_RUN.fullmatch(buf, lt, cut) is None:
                break
            cut = lt
        return cut

    def _decode(self, region: bytes) -> bytes:
        before = self._prev[0] if self._prev else -1
        self._prev = region[-1:]
        if b"<" not in region:
            return self._place_aside(region, 0)
        pieces: list[bytes] = []
        last = 0
        end = len(region)
        # Text kept aside goes after the first line break past the word it came
        # from (past the start of this region when it is older than the region).
        after = 0 if self._aside else -1
        candidates: Iterator[re.Match[bytes] | None] = _MARKUP_CANDIDATE.finditer(region)
        if before in _JOINABLE and region[:1] == b"<":  # a run at the start of the region
            candidates = itertools.chain((None,), candidates)
        for candidate in candidates:
            start = 0 if candidate is None else candidate.start() + 1
            if start < last:
                continue  # inside the run just removed
            run = _INLINE_RUN.match(region, start)
            if run is None:
                continue
            stop = run.end()
            if stop >= end or region[stop] not in _JOINABLE:
                continue
            pieces.append(region[last:start])
            if after < 0:  # the first removal: nothing was removed before it
                after = start
            last = stop
            self._keep(run.group())
        if not pieces:
            return self._place_aside(region, 0)
        self.used = True
        pieces.append(region[last:])
        return self._place_aside(b"".join(pieces), after)

    def _keep(self, tags: bytes) -> None:
        for found in _MARKUP_TEXT.finditer(tags):
            text = next((g for g in found.groups() if g), b"").strip()
            if not text:
                continue
            self._aside.append(text)
            self._aside_bytes += len(text) + 1
            if self._aside_bytes > MARKUP_ASIDE_BYTES:
                self._aside.clear()
                self._aside_bytes = 0
                self._pipe.refuse(
                    f"{MARKUP}: over {MARKUP_ASIDE_BYTES >> 10} KiB of attributes inside words"
                )

    def _place_aside(self, out: bytes, after: int) -> bytes:
        """``out`` with the text kept aside after its first line break from ``after`` on."""
        if not self._aside or after < 0:
            return out
        newline = out.find(b"\n", after)
        if newline < 0:
            return out
        kept = b"\n".join(self._aside) + b"\n"
        self._aside.clear()
        self._aside_bytes = 0
        return out[: newline + 1] + kept + out[newline + 1 :]


def _pct_run(run: bytes) -> bytes:
    """A run of percent escapes (without its first ``%``) as its bytes; escapes of
    control bytes stay as they are."""
    raw = binascii.unhexlify(run.replace(b"%", b""))
    if not raw.translate(None, _NOT_CONTROLS):
        return raw
    get = _PCT_BYTES.get
    found = b"%" + run
    return b"".join([get(found[i + 1 : i + 3], found[i : i + 3]) for i in range(0, len(found), 3)])


# --------------------------------------------------------------------------- runs

_HEX_ENDED: Final = "hex-ended"
_NOT_ALPHABET: Final = re.compile(rb"[^A-Za-z0-9+/_\-]")
#: Where a wrapped line may continue: the standard alphabet only, so that a
#: PEM ``-----END`` line or a MIME ``--boundary`` never continues a block.
_STANDARD: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")
_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_HEX_DASH: Final = b"0123456789ABCDEFabcdef-"
#: What may follow a run's characters and make it go on (padding, a wrapped line).
_RUN_GOES_ON: Final = frozenset(b"=\r\n")
#: The search reports 16 characters in a row of the *standard* alphabet that
#: end with one that is not a digit (a UUID's hex and dashes, a line of
#: dashes, a Resident ID or a card number never are), or 20 digits in a row
#: (maybe the hex of numbers); it stops at the first report, the run is
#: walked back over the whole alphabet (``-`` and ``_`` of base64url too) to
#: its start and read to its end with a regex, and a new search starts after
#: it. Base64 of text or of any known format starts with a letter and holds
#: letters throughout, so it is always reported. The compiled core searches
#: (``alphabet_run``: 64 bytes at a time, 0.2-1 ms/MB); Hyperscan where it is
#: not built (~1.7 ms/MB: its character-class repeats are slow on letters).
_SHORT: Final = (RUN_MIN_CHARS, NUMBER_MIN_DIGITS)
_RUN_ID: Final = 0
_NUMBER_ID: Final = 1
#: Text scanned per Hyperscan call while searching for the next run.
_SEARCH_BLOCK_BYTES: Final = 16 << 10
#: Characters a run is walked back over from its reported stretch (and the
#: text kept before each piece for it).
RUN_WALK_CHARS: Final = 64
#: Bytes that are not text (as :mod:`gateway.classify.charset` counts them).
_TEXT_CONTROLS: Final = bytes(
    b for b in range(256) if (b < 0x20 and b not in b"\t\n\x0b\x0c\r\x1b") or b == 0x7F
)
_NOT_TEXT_CONTROLS: Final = bytes(b for b in range(256) if b not in _TEXT_CONTROLS)
#: Share of control bytes text may hold (the charset detector's bound).
_CONTROL_SHARE: Final = 0.02
_PRINTABLE_ASCII: Final = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_WIDE: Final = frozenset({cs.UTF16LE, cs.UTF16BE, cs.UTF32LE, cs.UTF32BE})
#: Byte-order marks (UTF-8, UTF-16, UTF-32), and the share of NUL bytes that
#: makes the charset detector consider UTF-16 (ASCII text in UTF-16: half).
_BOMS: Final = (
    codecs.BOM_UTF8,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
)
_UTF16_NUL_SHARE: Final = 0.125

_next_run: Callable[[bytes, int, int, int, int, int, int], tuple[int, int, int]] | None
_find_any: Callable[[bytes, int, int, bytes], int] | None
_find_lead: Callable[[bytes, int, int, bytes, bytes], int] | None
try:
    from gateway.classify._native import find_any as _find_any
    from gateway.classify._native import find_lead as _find_lead
    from gateway.classify._native import next_run as _next_run
except ImportError:  # pragma: no cover - a source tree whose extension was not built
    _next_run = _find_any = _find_lead = None
#: The search state of a run search done by the compiled core (no stream object).
_CORE_SEARCH: Final = object()

_STANDARD_BYTES: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_STANDARD_ALPHABET: Final = frozenset(_STANDARD_BYTES)


def alphabet_run_py(
    data: bytes, start: int, stop: int, run: int, digits: int, min_run: int, min_digits: int
) -> tuple[int, int, int]:
    """Where the run search reports next in ``data[start:stop]``: the reference of the
    compiled core's ``alphabet_run`` (which looks at a fraction of the bytes) and of
    the Hyperscan database below.

    ``run`` standard-alphabet characters and ``digits`` digits are in a row just
    before ``start``. The report is at the first byte that ends ``min_run`` of
    them in a row and is not a digit, or ends ``min_digits`` digits in a row:
    ``(its offset + 1, run, digits)``; ``(-1, run, digits)`` with the counts at
    ``stop`` when there is none.
    """
    for i in range(start, stop):
        if data[i] in _STANDARD_ALPHABET:
            run += 1
            digits = digits + 1 if 0x30 <= data[i] <= 0x39 else 0
            if (digits == 0 and run >= min_run) or digits >= min_digits:
                return i + 1, run, digits
        else:
            run = digits = 0
    return -1, run, digits


_db_lock = threading.Lock()
_db: dict[bool, Any] = {}


def _run_database(long: bool = False) -> Any:
    """The streaming database reporting 16 base64 characters in a row, or 20 digits
    (``long``: :data:`LONG_RUN_CHARS` of either), compiled once; where the compiled
    core is not built (:func:`alphabet_run_py` says what it reports)."""
    database = _db.get(long)
    if database is None:
        with _db_lock:
            database = _db.get(long)
            if database is None:
                run, digits = (LONG_RUN_CHARS, LONG_RUN_CHARS) if long else _SHORT
                database = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
                database.compile(
                    expressions=[
                        rb"[A-Za-z0-9+/]{%d}[A-Za-z+/]" % (run - 1),
                        rb"[0-9]{%d}" % digits,
                    ],
                    ids=[_RUN_ID, _NUMBER_ID],
                    elements=2,
                    flags=[0, 0],
                )
                _db[long] = database
    return database


#: Text of a prose/CSV/log member searched for run starts: the head, and the
#: 16 characters after it in which a run starting in it is reported.
_PROBE_END: Final = HEAD_BYTES + RUN_MIN_CHARS + 1
#: Text kept before each piece: a run is reported up to 64 characters after
#: the piece starts and walked back at most RUN_WALK_CHARS from there.
_TAIL_BYTES: Final = LONG_RUN_CHARS + RUN_WALK_CHARS

#: Verdicts on a run's decoded bytes: not yet, a member, noise, past a limit.
_PENDING: Final = 0
_ACCEPT: Final = 1
_DROP: Final = 2
_REFUSED: Final = 3
#: Accepted, and encrypted (the nested member will say so), unless the member
#: is ASCII armor the matcher reports already.
_ENCRYPTED: Final = 4
#: The start every armor marker (ARMOR_MARKERS) shares, and the longest marker.
_ARMOR_LEAD: Final = b"-----BEGIN "
_ARMOR_BYTES: Final = max(len(marker) for marker, _ in ARMOR_MARKERS)
_ARMORS: Final = tuple(marker.encode() for marker, _ in ARMOR_MARKERS)


def _utf8_text(prefix: bytes, complete: bool) -> bool:
    """Whether ``prefix`` is UTF-8 text: no NUL, few controls, valid (a cut last character
    allowed unless ``complete``)."""
    if b"\x00" in prefix:
        return False
    if len(prefix.translate(None, _NOT_TEXT_CONTROLS)) > _CONTROL_SHARE * len(prefix):
        return False
    if prefix.isascii():
        return True
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(prefix, final=complete)
    except UnicodeDecodeError:
        return False
    return True


def _verdict(prefix: bytes, complete: bool) -> int:
    """What to do with a run whose decoded bytes start with ``prefix``.

    Returns:
        accept (UTF-8 text, a compression or archive, a registered format,
        text in another charset with evidence enough), encrypted (accept,
        unless in armor), or drop (noise).
    """
    if not prefix:
        return _DROP
    if _utf8_text(prefix, complete):
        return _ACCEPT
    if compression(prefix) or archive(prefix):
        return _ACCEPT
    if len(prefix) < FORMAT_MIN_BYTES:
        return _DROP
    if is_tar(prefix):
        return _ACCEPT
    fmt = identify(prefix)
    if fmt is not None:
        return _ENCRYPTED if fmt in ENCRYPTED_FORMATS else _ACCEPT
    # Text in another charset, as the sniffer would call it (its detector is
    # only asked when the bytes look like text: a byte-order mark, UTF-16's
    # NUL pattern, or mostly ASCII).
    nuls = prefix.count(0)
    ascii_share = len(prefix) - len(prefix.translate(None, _PRINTABLE_ASCII))
    if prefix.startswith(_BOMS) or nuls >= _UTF16_NUL_SHARE * len(prefix):
        detection = cs.detect(prefix, complete)
        if detection.charset is not None and (detection.bom or detection.charset in _WIDE):
            return _ACCEPT
    elif (
        ascii_share >= LEGACY_ASCII_SHARE * len(prefix)
        and cs.detect(prefix, complete).charset is not None
    ):
        return _ACCEPT
    return _DROP


class _Run:
    """One run being decoded: its characters in, its bytes kept until the verdict, then deferred."""

    __slots__ = (
        "carry",
        "chars",
        "digits",
        "kind",
        "layers",
        "line",
        "lines",
        "out",
        "start",
        "total",
        "verdict",
        "width",
    )

    def __init__(self, start: int) -> None:
        self.start = start  # member offset of its first character
        self.kind = ""  # "" until decided: HEX, BASE64 (or _HEX_ENDED)
        self.digits = True  # every character so far a decimal digit
        self.chars = bytearray()  # characters kept until the kind is decided
        self.carry = b""  # characters of an incomplete quantum
        self.out = bytearray()  # decoded bytes (until the verdict, then deferred)
        self.total = 0  # decoded bytes so far
        self.verdict = _PENDING
        self.line = 0  # characters on the current line
        self.lines = 0  # line breaks joined (a wrapped block)
        self.width = 0  # the first line's width, once the block wraps
        self.layers: tuple[str, ...] = ()  # where its member is decoded


class _Runs:
    """The run finder of one member: watches the member's final text and forwards it to the sink.

    The text is forwarded as it comes, except the few bytes after a run whose
    end is not decided yet (``==`` padding, or a line break that may continue
    a wrapped block): a suspension at a run's end (:data:`DEFER_FLUSH_BYTES`)
    then splits the member at the same byte whatever the chunking.

    Offsets are member offsets of this text. ``_forwarded`` <= ``_consumed``
    <= ``_received``; ``_held`` is the text from ``_forwarded`` to
    ``_received``; ``_tail`` the :data:`RUN_MIN_CHARS` bytes before
    ``_forwarded`` (a run is reported at its 16th character, so its start
    may lie up to 16 bytes before the piece that reports it).
    """

    _NONE: Final = 0
    _RUN: Final = 1
    _PAD: Final = 2
    _BREAK: Final = 3

    __slots__ = (
        "_accepted",
        "_armor",
        "_armor_everywhere",
        "_armor_tail",
        "_base",
        "_buf",
        "_buffered",
        "_consumed",
        "_deferred",
        "_deferred_bytes",
        "_digit_carry",
        "_end",
        "_floor",
        "_forwarded",
        "_gap",
        "_held",
        "_hit",
        "_long",
        "_on",
        "_on_match",
        "_pads",
        "_pipe",
        "_received",
        "_reserved",
        "_run",
        "_run_carry",
        "_scanned",
        "_scratch",
        "_state",
        "_stream",
        "_stream_base",
        "_stream_long",
        "_tail",
    )

    def __init__(self, pipe: _Pipeline, on: bool) -> None:
        self._pipe = pipe
        self._on = on  # every run is searched (else those starting in the head)
        self._long = False  # past the head: runs of LONG_RUN_CHARS are searched
        self._received = 0
        self._consumed = 0
        self._forwarded = 0
        self._floor = 0  # runs reported before this offset were parts of earlier ones
        self._held = b""
        self._tail = b""
        self._buf = b""  # the text being processed, from member offset _base
        self._base = 0
        self._run: _Run | None = None
        self._state = self._NONE
        self._end = 0  # where the current run's characters ended (PAD, BREAK)
        self._gap = 0  # line-break bytes seen after a wrapped line
        self._pads = 0  # "=" seen after the run
        self._deferred: list[_Run] = []
        self._deferred_bytes = 0
        self._buffered = 0  # decoded bytes held: the current run's and the deferred ones
        self._reserved = 0  # decoder memory reserved for them (DEFER_STEP_BYTES steps)
        self._accepted = 0  # runs accepted (in a prose/CSV head: how many)
        self._armor = -1  # where the first ASCII armor marker starts (-1: none yet)
        # Markers are looked for in a structured member's text, else in the head
        # only (a search of every byte costs 0.3 ms/MB): an encrypted run in armor
        # past it is one more unscannable reason beside the matcher's own.
        self._armor_everywhere = on
        self._armor_tail = b""
        self._scanned = 0  # where the search has read up to (member offset)
        self._stream_base = 0  # where it started
        self._stream_long = False  # the lengths Hyperscan's database searches for
        self._run_carry = 0  # alphabet characters and digits in a row before _scanned
        self._digit_carry = 0
        self._hit = -1  # the end of the stretch Hyperscan reported (stream offset), -1: none

        def on_match(_pid: int, _start: int, end: int, _flags: int, _ctx: object) -> bool:
            self._hit = end
            return True  # stop: the run is read by regex, a new stream starts after it

        # The stream borrows the callback and the database (hyperscan 0.9.1):
        # this object and the module keep both alive while it is open.
        self._on_match = on_match
        self._scratch = pipe.owner.scratch()
        self._stream: Any = None
        self._open_stream(0)

    def _open_stream(self, at: int, run: int = 0, digits: int = 0) -> None:
        """A new search over the text from member offset ``at`` on (``run`` alphabet
        characters and ``digits`` digits in a row before it)."""
        self.close()
        if _next_run is not None:
            self._stream = _CORE_SEARCH
            self._run_carry, self._digit_carry = run, digits
        else:
            # Hyperscan starts afresh: a run that began before ``at`` is reported
            # once it has the whole length after it (the walk back finds its start).
            self._stream_long = self._long and not self._on
            stream = _run_database(self._stream_long).stream(match_event_handler=self._on_match)
            stream.__enter__()
            self._stream = stream
        self._stream_base = self._scanned = at

    def _search(self, limit: int) -> int:
        """The start of the next stretch of 16 in the text up to ``limit``, or -1."""
        stream = self._stream
        if stream is None or self._scanned >= limit:
            return -1
        buf, base = self._buf, self._base
        long = self._long and not self._on
        length = LONG_RUN_CHARS if long else RUN_MIN_CHARS
        if stream is _CORE_SEARCH:
            assert _next_run is not None
            lo, hi, run, digits = (
                self._scanned - base,
                limit - base,
                self._run_carry,
                self._digit_carry,
            )
            lengths = (LONG_RUN_CHARS, LONG_RUN_CHARS) if long else _SHORT
            end, run, digits = _next_run(buf, lo, hi, run, digits, *lengths)
            self._run_carry, self._digit_carry = run, digits
            if end >= 0:
                self.close()  # stopped: a new search starts after the run
                return base + end - length
            self._scanned = limit
            return -1
        if self._stream_long != long:
            self._open_stream(self._scanned)
            stream = self._stream
        self._hit = -1
        # In blocks: the binding copies what it scans, and a search stops at the
        # next run, which is often a few hundred bytes on.
        while self._scanned < limit:
            stop = min(limit, self._scanned + _SEARCH_BLOCK_BYTES)
            with contextlib.suppress(hyperscan.ScanTerminated):
                stream.scan(buf[self._scanned - base : stop - base], scratch=self._scratch)
            if self._hit >= 0:
                start = self._stream_base + self._hit - length
                self.close()  # stopped: a new stream starts after the run
                return start
            self._scanned = stop
        return -1

    # -- input and output ----------------------------------------------------

    def feed(self, piece: bytes) -> None:
        """The member's next text (after the in-place stages)."""
        if self._armor < 0 and (self._armor_everywhere or self._received < _PROBE_END):
            self._find_armor(piece)
        self._received += len(piece)
        self._buf = self._held + piece if self._held else piece
        self._base = self._forwarded
        self._process(final=False)
        self._forward_to(self._hold_from())
        self._buf = b""

    def finish(self) -> None:
        """The member's text ended: the last run ends, what was held is forwarded."""
        self._buf, self._base = self._held, self._forwarded
        self._process(final=True)
        self._forward_to(self._received)
        self._buf = b""
        self.close()

    def close(self) -> None:
        """End the search (idempotent)."""
        stream, self._stream = self._stream, None
        if stream is not None and stream is not _CORE_SEARCH:
            stream.close()

    def _find_armor(self, piece: bytes) -> None:
        """Note where the first armor marker starts (the matcher reports armored text)."""
        tail = self._armor_tail
        look = tail + piece if tail else piece
        at = look.find(_ARMOR_LEAD)
        while at >= 0:
            if look.startswith(_ARMORS, at):
                offset = self._received - len(tail) + at
                if self._armor_everywhere or offset < _PROBE_END:  # whatever the chunking
                    self._armor = offset
                return
            at = look.find(_ARMOR_LEAD, at + 1)
        self._armor_tail = look[-(_ARMOR_BYTES - 1) :]

    def _hold_from(self) -> int:
        if self._state in (self._PAD, self._BREAK):
            return self._end
        return self._received

    def _forward_to(self, offset: int) -> None:
        """Forward the text up to member offset ``offset``; hold the rest of ``_buf``."""
        buf, base = self._buf, self._base
        start = self._forwarded
        if offset > start:
            if start == base and offset - base == len(buf):
                part = buf
            else:
                part = buf[start - base : offset - base]
            self._pipe.forward(part)
            self._tail = (
                part[-_TAIL_BYTES:]
                if len(part) >= _TAIL_BYTES
                else (self._tail + part)[-_TAIL_BYTES:]
            )
            self._forwarded = offset
        rest = self._forwarded - base
        self._held = buf[rest:] if rest < len(buf) else b""

    # -- the state machine ---------------------------------------------------

    def _process(self, final: bool) -> None:
        """Consume ``_buf`` (which starts at ``_base``) from ``_consumed`` on."""
        buf, base = self._buf, self._base
        n = len(buf)
        i = self._consumed - base
        while True:
            state = self._state
            if state == self._RUN:
                found = _NOT_ALPHABET.search(buf, i)
                j = found.start() if found is not None else n
                if j > i:
                    self._chars(buf[i:j])
                i = j
                if j == n:
                    if final:
                        self._end_run(base + n)
                        continue
                    break
                byte = buf[j]
                if byte == 0x3D:  # "=": padding
                    self._state, self._pads, self._end = self._PAD, 0, base + j
                elif byte in b"\r\n" and self._wraps():
                    self._state, self._gap, self._end = self._BREAK, 0, base + j
                else:
                    self._end_run(base + j)
                continue
            if state == self._PAD:
                while i < n and buf[i] == 0x3D and self._pads < 2:
                    i += 1
                    self._pads += 1
                if i == n and self._pads < 2 and not final:
                    break
                self._end_run(base + i)
                continue
            if state == self._BREAK:
                nxt = self._line_break(buf, i, final)
                if nxt is None:
                    i = n
                    break
                if nxt < 0:
                    i = self._end - base
                    self._end_run(self._end)
                    continue
                i = nxt  # the next line goes on with the run
                run = self._run
                assert run is not None
                run.lines += 1
                run.line = 0
                self._state = self._RUN
                continue
            # No run open: the next one the search reports (a prose/CSV head is
            # searched for short runs up to where its last one may be reported).
            if self._stream is None:
                self._open_stream(max(self._floor, base + i))
            head = not self._on and not self._long
            limit = min(base + n, _PROBE_END) if head else base + n
            stretch = self._search(limit)
            if stretch < 0:
                i = n
                if head and base + n >= _PROBE_END:
                    # Every run starting in the head was reported: long ones from here
                    # (the search goes on where it stopped, its counts carried).
                    self._long = True
                    continue
                break
            start = self._walk_back(max(stretch, self._floor))
            if head and start >= HEAD_BYTES:
                # A short run past the head: searched again, from its start, as long.
                self._long = True
                self._search_from(start)
                continue
            if start >= base:
                # The common short run (a UUID, a hash, a token) that is certainly
                # noise is passed over without the state machine.
                i = start - base
                found = _NOT_ALPHABET.search(buf, i)
                if (
                    found is not None
                    and found.start() - i < RUN_DECIDE_CHARS
                    and buf[found.start()] not in _RUN_GOES_ON
                    and _noise(buf[i : found.start()])
                ):
                    i = found.start()
                    self._floor = base + i
                    continue
            self._run = _Run(start)
            self._state = self._RUN
            if start < base:
                self._chars(self._tail[len(self._tail) - (base - start) :])
                i = 0
            else:
                i = start - base
        self._consumed = base + i

    def _walk_back(self, stretch: int) -> int:
        """Where the run holding the stretch of 16 reported at ``stretch`` starts: walked
        back over base64 (and base64url) characters, at most RUN_WALK_CHARS, never into
        an earlier run."""
        buf, base = self._buf, self._base
        lower = max(self._floor, stretch - RUN_WALK_CHARS)
        if lower >= stretch:
            return stretch
        tail = self._tail
        if stretch <= base:
            seg = tail[len(tail) - (base - lower) : len(tail) - (base - stretch)]
        elif lower >= base:
            seg = buf[lower - base : stretch - base]
        else:
            seg = tail[len(tail) - (base - lower) :] + buf[: stretch - base]
        return stretch - (len(seg) - len(seg.rstrip(_ALPHABET)))

    def _search_from(self, start: int) -> None:
        """Search again from member offset ``start``, the start of a run (walked back
        over the alphabet: what lies before the buffer is in the kept tail)."""
        base = self._base
        if start >= base:
            self._open_stream(start)
            return
        before = self._tail[len(self._tail) - (base - start) :]
        standard = len(before) - len(before.rstrip(_STANDARD_BYTES))  # base64url's - and _ break it
        self._open_stream(base, standard, len(before) - len(before.rstrip(_DIGITS)))

    def _wraps(self) -> bool:
        """Whether the run's line may go on on the next one (see :data:`WRAP_MIN_CHARS`)."""
        run = self._run
        assert run is not None
        if run.kind in (HEX, _HEX_ENDED):
            return False
        if run.lines == 0:
            width = run.line
            if not (WRAP_MIN_CHARS <= width <= WRAP_MAX_CHARS and width % 4 == 0):
                return False
            run.width = width
        return run.line == run.width

    def _line_break(self, buf: bytes, i: int, final: bool) -> int | None:
        """After a wrapped line: the next line's first character's index, -1 (the run ended)
        or None (more text needed)."""
        n = len(buf)
        gap = self._gap  # 0: nothing yet, 1: "\r" seen, >= 2: line break seen (+ indentation)
        while i < n:
            byte = buf[i]
            if gap == 0 and byte == 0x0D:
                gap = 1
            elif gap <= 1 and byte == 0x0A:
                gap = 2
            elif gap >= 2 and byte in _STANDARD:
                self._gap = 0
                return i
            elif gap >= 2 and byte in b" \t" and gap < 2 + WRAP_INDENT_MAX:
                gap += 1
            else:
                self._gap = 0
                return -1
            i += 1
        self._gap = gap
        if final:
            self._gap = 0
            return -1
        return None

    # -- a run's characters and bytes ----------------------------------------

    def _chars(self, chars: bytes) -> None:
        """The current run's next characters."""
        run = self._run
        assert run is not None
        run.line += len(chars)
        if run.digits and chars.translate(None, _DIGITS):
            run.digits = False
        if not run.kind:
            run.chars += chars
            if len(run.chars) < RUN_DECIDE_CHARS:
                return
            chars = bytes(run.chars)
            run.chars = bytearray()
            run.kind = HEX if not chars.translate(None, _HEX_DIGITS) else BASE64
        if run.verdict in (_DROP, _REFUSED) or run.kind == _HEX_ENDED:
            return
        data = run.carry + chars if run.carry else chars
        if run.kind == HEX:
            good = _hex_prefix(data)
            whole = good - good % 2
            run.carry = data[whole:good]
            if good < len(data):  # a hex run that stops being hex ends its bytes there
                run.kind = _HEX_ENDED
                run.carry = b""
            if whole:
                self._bytes(binascii.unhexlify(data[:whole]))
            return
        whole = len(data) - len(data) % 4
        run.carry = data[whole:]
        if whole:
            self._bytes(binascii.a2b_base64(data[:whole].translate(_URLSAFE)))

    def _bytes(self, out: bytes) -> None:
        """Decoded bytes of the current run: counted, kept until its verdict, then deferred."""
        run = self._run
        assert run is not None
        if not out or run.verdict in (_DROP, _REFUSED):
            return
        ctx = self._pipe.ctx
        kind = _layer_name(run)
        run.total += len(out)
        ctx.expanded += len(out)
        cap = ctx.limits.max_expanded_bytes
        if ctx.expanded > cap:
            self._refuse(run, f"{kind}: expanded size over {human(cap)}")
            return
        limit = ctx.limits.max_nested_random_bytes
        if run.total > limit:
            self._refuse(run, f"{kind}: run over {human(limit)}")
            return
        self._buffered += len(out)
        need = _reservation(self._buffered)
        if need > self._reserved:
            memory = ctx.memory
            if not memory.reserve(need - self._reserved, f"{kind} run buffer"):
                self._buffered -= len(out)
                self._refuse(run, f"{kind}: decoder memory over {human(memory.cap)}")
                return
            self._reserved = need
        run.out += out
        if run.verdict == _PENDING and len(run.out) >= SNIFF_BYTES:
            self._decide(run, complete=False)

    def release(self, run: _Run) -> None:
        """Drop a run's bytes (a deferred one once decoded) and give back the memory no
        longer needed."""
        self._buffered -= len(run.out)
        run.out = bytearray()
        keep = _reservation(self._buffered)
        if keep < self._reserved:
            self._pipe.ctx.memory.release(self._reserved - keep)
            self._reserved = keep

    def _refuse(self, run: _Run, reason: str) -> None:
        run.verdict = _REFUSED
        self._pipe.refuse(reason)
        self.release(run)
        self._on = True  # encoded content: every run of the member is searched

    def _decide(self, run: _Run, complete: bool) -> None:
        prefix = bytes(run.out[:SNIFF_BYTES])
        verdict = _verdict(prefix, complete)
        if verdict == _ACCEPT and run.digits and not _numeric_text(prefix):
            verdict = _DROP  # random digits whose hex happens to be printable
        if verdict == _ENCRYPTED:
            # Inside ASCII armor the matcher reports the encrypted content already.
            armored = 0 <= self._armor < run.start
            verdict = _DROP if armored else _ACCEPT
        if verdict == _DROP:
            run.verdict = _DROP
            self.release(run)
        else:
            run.verdict = _ACCEPT
            self._accepted += 1
            # Encoded content (a long run, or several in a prose/CSV head): every
            # run of the member is searched. One short run that decoded to text
            # may be chance (a 20-digit number whose hex is printable).
            if run.total >= RUN_DECIDE_CHARS // 2 or self._accepted >= HEAD_ACCEPTS:
                self._on = True
            layers = self._pipe.text_layers()
            limit = self._pipe.ctx.limits.max_depth
            if len(layers) + 1 > limit:
                self._refuse(run, f"{_layer_name(run)}: nested deeper than {limit} layers")
            else:
                run.layers = (*layers, _layer_name(run))

    def _end_run(self, end: int) -> None:
        """The current run ends at member offset ``end``: its last bytes, its verdict, a flush."""
        run = self._run
        assert run is not None
        self._state = self._NONE
        if not run.kind:
            self._short_run(run)
        elif run.verdict not in (_DROP, _REFUSED):
            if run.kind == BASE64:
                self._bytes(_decode_chars(run.carry, BASE64))  # its last partial quantum
            run.carry = b""
            if run.verdict == _PENDING:
                self._decide(run, complete=True)
        self._run = None
        self._floor = end
        self.close()  # the next search starts after the run
        if run.verdict == _ACCEPT:
            self._deferred.append(run)
            self._deferred_bytes += len(run.out)
            if self._deferred_bytes >= DEFER_FLUSH_BYTES:
                self._forward_to(end)
                self._pipe.suspend_and_flush()

    def _short_run(self, run: _Run) -> None:
        """A run shorter than RUN_DECIDE_CHARS: hex when it is all hex and decodes to
        something as hex, else base64. A number (digits only) shorter than
        :data:`NUMBER_MIN_DIGITS` is an identifier or a value, not a run."""
        chars = bytes(run.chars)
        run.chars = bytearray()
        if len(chars) < NUMBER_MIN_DIGITS and not chars.translate(None, _DIGITS):
            run.verdict = _DROP
            return
        kinds = (HEX, BASE64) if not chars.translate(None, _HEX_DIGITS) else (BASE64,)
        for kind in kinds:
            out = _decode_chars(chars, kind)
            if kind == HEX and len(kinds) == 2:
                dropped = _verdict(out, True) == _DROP
                if dropped or (run.digits and not _numeric_text(out)):
                    continue
            run.kind = kind
            self._bytes(out)
            if run.verdict == _PENDING:
                self._decide(run, complete=True)
            return

    # -- deferred runs -------------------------------------------------------

    def take_deferred(self) -> list[_Run]:
        """The accepted runs to decode now (release each with :meth:`release`)."""
        runs, self._deferred, self._deferred_bytes = self._deferred, [], 0
        return runs

    def drop(self) -> None:
        """Give back everything (an abandoned decode)."""
        self._deferred = []
        self._run = None
        self._buffered = 0
        self._pipe.ctx.memory.release(self._reserved)
        self._reserved = 0
        self.close()


def _reservation(buffered: int) -> int:
    """Decoder memory reserved for ``buffered`` bytes of runs: none up to one sniff
    prefix (a member's small buffers, like the sniffer's own), then whole steps."""
    if buffered <= DEFER_FREE_BYTES:
        return 0
    return -(-buffered // DEFER_STEP_BYTES) * DEFER_STEP_BYTES


def _noise(chars: bytes) -> bool:
    """Whether a complete short run is certainly noise (its full verdict would drop it):
    a number, a UUID, or characters that decode, as hex or as base64, to bytes that
    are neither text nor a compression or archive."""
    if not chars.translate(None, _DIGITS):
        return len(chars) < NUMBER_MIN_DIGITS
    if not chars.translate(None, _HEX_DASH):
        if b"-" in chars:
            return True  # a UUID or a dashed hex id: base64 would hold other letters
        if _maybe_something(_decode_chars(chars, HEX)):
            return False
    return not _maybe_something(_decode_chars(chars, BASE64))


def _decode_chars(chars: bytes, kind: str) -> bytes:
    """What a whole short run (or a run's last characters) decodes to as ``kind``: hex in
    whole pairs; base64 (or base64url) with its last partial quantum, as unpadded base64
    ends. :func:`_noise` decodes exactly what :meth:`_Runs._short_run` will, so that it
    never drops a run the full verdict accepts."""
    if kind == HEX:
        return binascii.unhexlify(chars[: len(chars) - len(chars) % 2])
    whole = len(chars) - len(chars) % 4
    out = binascii.a2b_base64(chars[:whole].translate(_URLSAFE)) if whole else b""
    if len(chars) - whole >= 2:
        out += binascii.a2b_base64(chars[whole:].translate(_URLSAFE) + b"==")
    return out


def _maybe_something(out: bytes) -> bool:
    """A cheap superset of what :func:`_verdict` accepts from a short run's bytes."""
    if out.isascii():
        return b"\x00" not in out and len(out.translate(None, _NOT_TEXT_CONTROLS)) <= (
            _CONTROL_SHARE * len(out)
        )
    try:
        out.decode("utf-8")
    except UnicodeDecodeError:
        return bool(compression(out) or archive(out))
    return True


def _numeric_text(decoded: bytes) -> bool:
    """Whether hex-decoded bytes of an all-digit run are numbers or hex (the hex of digits
    is all digits, ``3X``, and so is the hex of hex): a run of random digits decodes
    to printable ASCII by chance, but almost never to mostly digits and spaces
    (a digit pair in 30-39: 1 in 10) or to hex digits only (22 in 100)."""
    if not decoded.translate(None, _HEX_DIGITS):
        return True
    return len(decoded.translate(None, b"0123456789 ")) <= NUMERIC_OTHER_SHARE * len(decoded)


def _hex_prefix(data: bytes) -> int:
    """Length of the leading hex digits of ``data``."""
    return len(data) - len(data.lstrip(_HEX_DIGITS))


def _layer_name(run: _Run) -> str:
    return HEX if run.kind in (HEX, _HEX_ENDED) else BASE64


# --------------------------------------------------------------------------- a member's pipeline


class _Pipeline:
    """One text member on its way to the matcher: stages, the marker watch, the run finder.

    The *watch* looks at the chain's output (the raw text while there is no
    stage) for the first real marker of each transform; where it finds one
    it adds that transform's stage to the chain and hands it the text from
    the marker on. It holds back a possible marker cut by a chunk boundary.
    """

    __slots__ = (
        "_blocked",
        "_held",
        "_json",
        "_runs",
        "_url",
        "content_type",
        "ctx",
        "layers",
        "owner",
        "stages",
        "suspended",
    )

    def __init__(self, owner: Transforms, content_type: str, layers: tuple[str, ...]) -> None:
        self.owner = owner
        assert owner.ctx is not None
        self.ctx: Context = owner.ctx
        self.content_type = content_type
        self.layers = layers
        self.stages: list[_Stage] = []
        self.suspended = False
        self._held = b""
        self._json = content_type == APPLICATION_JSON
        # Percent escapes count (a form: from its start; else after a "=").
        self._url = content_type == APPLICATION_FORM
        self._blocked: set[str] = set()  # transforms refused here (too deep)
        self._runs: _Runs | None = None
        if content_type == TEXT_HTML:
            # Not a decoding layer: it joins words, it nests nothing (no depth).
            self.stages.append(_MarkupStage(self))

    # -- text in -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """The member's next normalised text."""
        for stage in self.stages:
            data = stage.feed(data)
            if not data:
                return
        self._watch(data, final=False)

    def finish_text(self) -> None:
        """The member's text ended: every stage flushed in order, then the watch and the runs."""
        i = 0
        while i < len(self.stages):
            out = self.stages[i].feed(b"", final=True)
            for stage in self.stages[i + 1 :]:
                if not out:
                    break
                out = stage.feed(out)
            if out:
                self._watch(out, final=False)
            i += 1
        self._watch(b"", final=True)
        if self._runs is not None:
            self._runs.finish()

    def stage_names(self) -> tuple[str, ...]:
        """The layers the in-place stages added (the markup stage where it removed tags)."""
        return tuple(stage.name for stage in self.stages if stage.used)

    def text_layers(self) -> tuple[str, ...]:
        """Where the member's decoded text is: its layers and its decoding stages.

        The markup stage joins words and nests nothing: it is not a layer the
        text is under (nor counted against ``max_depth``), so a nested member's
        layers do not depend on whether a chunk before it held a tag.
        """
        return (*self.layers, *(n for n in self.stage_names() if n != MARKUP))

    # -- the watch -----------------------------------------------------------

    def _watch(self, data: bytes, final: bool) -> None:
        buf = self._held + data if self._held else data
        self._held = b""
        n = len(buf)
        hi = n if final else self._cut(buf)
        if not self._url and (_find_any or find_any_py)(buf, 0, hi, _WATCH_LEADS) < 0:
            self._pass(buf, hi)  # no marker starts here (the usual case, in one pass)
            return
        # Percent escapes count from the member's first "=" on (a form: from its start).
        equals = -1 if self._url else buf.find(b"=", 0, hi)
        pct_from = 0 if self._url else (equals + 1 if equals >= 0 else hi)
        lo = 0
        while True:
            found = self._find(buf, lo, hi, pct_from)
            if found is None:
                break
            at, kind, strong = found
            stage = self._add(kind, strong)
            if stage is None:
                lo = at + 1
                continue
            if 0 <= equals < at:
                self._url = True
            if at:
                self._emit(buf[:at])
            out = stage.feed(buf[at:], final)
            if out or final:
                self._watch(out, final)
            return
        if equals >= 0:
            self._url = True
        self._pass(buf, hi)

    def _pass(self, buf: bytes, hi: int) -> None:
        """``buf[:hi]`` on unchanged, the rest held back for the next text."""
        if hi:
            self._emit(buf if hi == len(buf) else buf[:hi])
        if hi < len(buf):
            self._held = buf[hi:]

    def _cut(self, buf: bytes) -> int:
        """Hold back from the first byte that may start a marker the boundary cut."""
        return min(_hold_back(buf, lead, span) for lead, span in _HOLDS)

    def _find(self, buf: bytes, lo: int, hi: int, pct_from: int) -> tuple[int, str, bool] | None:
        """The first real marker starting in ``buf[lo:hi]``, its transform, and whether it
        is strong evidence (a weak one too deep to decode is passed over silently).

        Percent escapes count from ``pct_from`` on (after a "=", see :meth:`_watch`).
        """
        best: tuple[int, str, bool] | None = None
        blocked = self._blocked
        names = self.stage_names()
        if JSON_ESCAPES not in blocked:
            pattern = _JSON_MARK_U if _WEAK_JSON in blocked else _JSON_MARK_ALL
            mark = next(_marks(pattern, b"\\", buf, lo, hi), None)
            if mark is not None:
                # The stage starts at the first of the backslashes before the escape,
                # so that it pairs them as a JSON parser does.
                at = mark.start()
                strong = mark.group()[1:2] == b"u" or (self._json and JSON_ESCAPES not in names)
                stop = max(lo, at - _BACKSLASH_WALK)
                while at > stop and buf[at - 1] == 0x5C:
                    at -= 1
                best = (at, JSON_ESCAPES, strong)
        end = hi if best is None else best[0]
        if CHAR_REFS not in blocked:
            nested = CHAR_REFS in names
            numeric_only = _WEAK_REFS in blocked
            for mark in _marks(_REF_MARK, b"&", buf, lo, end):
                at = mark.start()
                name = mark.group(1)
                if name is None:
                    # Numeric. Decoded text may hold one the stage before left as it
                    # was (too long): that is no marker.
                    if nested and _REF_MARK_NESTED.match(buf, at) is None:
                        continue
                    best, end = (at, CHAR_REFS, True), at
                    break
                if not numeric_only and name in _ENTITY_NAMES:
                    # A named reference in decoded text (``&amp;nbsp;``, HTML escaped
                    # twice) is weak evidence: decoded if it can be, else passed over.
                    best, end = (at, CHAR_REFS, not nested), at
                    break
        if PERCENT not in blocked:
            start = max(lo, pct_from)
            mark = next(_marks(_PCT_MARK, b"%", buf, start, end, _PCT_FOLLOW), None)
            if mark is not None:
                best = (mark.start(), PERCENT, True)
        return best

    def _add(self, kind: str, strong: bool) -> _Stage | None:
        """A new stage of ``kind`` at the end of the chain; None when it would be too deep.

        Too deep, a strong marker makes the member unscannable; a weak one (a
        ``\\n`` in text that is not JSON: a Windows path as likely as an escape;
        a named reference in decoded text) is passed over, and only the strong
        ones (``\\uXXXX``, numeric references) are looked for from then on.
        """
        limit = self.ctx.limits.max_depth
        decoding = sum(1 for stage in self.stages if stage.name != MARKUP)  # used or not
        if len(self.layers) + decoding + 1 > limit:
            if strong:
                self._blocked.add(kind)
                self.refuse(f"{kind}: nested deeper than {limit} layers")
            else:
                self._blocked.add(_WEAK_JSON if kind == JSON_ESCAPES else _WEAK_REFS)
            return None
        stage: _Stage
        if kind == JSON_ESCAPES:
            stage = _JsonStage(self)
        elif kind == CHAR_REFS:
            stage = _RefStage(self)
        else:
            stage = _PercentStage(self, self.content_type == APPLICATION_FORM)
        self.stages.append(stage)
        return stage

    # -- text out ------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        runs = self._runs
        if runs is None:
            kind = self.content_type
            if kind in _NO_RUNS or (kind == NAME_TYPE and not _name_has_run(data)):
                self.forward(data)
                return
            on = (
                kind in STRUCTURED_TYPES
                or kind == NAME_TYPE  # short: searched whole, as structured text is
                or self.layers[-1:] in ((BASE64,), (HEX,))
            )
            runs = self._runs = _Runs(self, on)
        runs.feed(data)

    def forward(self, data: bytes) -> None:
        """Text to the matcher."""
        self.owner.inner.text(data)

    def refuse(self, reason: str) -> None:
        """One unscannable finding where the member's decoded text is."""
        self.ctx.unscannable(self.text_layers(), reason)

    def suspend_and_flush(self) -> None:
        """End the member here, decode its deferred runs, resume it as a new sink member."""
        self.owner.suspend_and_flush(self)

    def flush_deferred(self) -> None:
        """Decode the accepted runs as nested members, one after the other."""
        runs = self._runs
        if runs is None:
            return
        for run in runs.take_deferred():
            try:
                self.owner.nested(run.layers, bytes(run.out))
            finally:
                runs.release(run)

    def close(self) -> None:
        """An abandoned member: its run finder's stream and memory."""
        if self._runs is not None:
            self._runs.drop()


# --------------------------------------------------------------------------- the sink


class Transforms:
    """The :class:`~gateway.classify.decode.core.TextSink` the decoder's layers write to.

    It passes every text member through a :class:`_Pipeline` of its own and
    on to ``inner`` (the matcher), decodes the runs a member defers as
    nested members (through the decoder's sniffer, one layer deeper), and
    passes everything else through. A member's layers (its depth) are those
    of the deepest layer open when it begins, or of the run it was decoded
    from.

    Attributes:
        inner: the sink the decoded text goes to.
        ctx: the decoder's context (set by :meth:`bind`).
        last_stages: the stages of the member that ended last, for its
            ``ContentInfo.layers``.
    """

    __slots__ = ("_origins", "_scratch", "_stack", "ctx", "inner", "last_stages")

    def __init__(self, inner: TextSink) -> None:
        self.inner = inner
        self.ctx: Context | None = None
        self.last_stages: tuple[str, ...] = ()
        self._stack: list[_Pipeline] = []
        self._origins: list[tuple[str, ...]] = []
        self._scratch: Any = None

    def bind(self, ctx: Context) -> None:
        """The decoder's context (which holds this sink)."""
        self.ctx = ctx

    def scratch(self) -> Any:
        """This decode's Hyperscan scratch for the run database (one decode runs on one
        thread)."""
        if self._scratch is None:
            self._scratch = hyperscan.Scratch(_run_database())
        return self._scratch

    # -- TextSink ------------------------------------------------------------

    def begin_member(self, content_type: str) -> None:
        """A new text member (the open one, if any, ends first)."""
        stack = self._stack
        if stack and not stack[-1].suspended:
            self.end_member()
        stack.append(_Pipeline(self, content_type, self._origin()))
        self.inner.begin_member(content_type)

    def text(self, data: bytes) -> None:
        """The current member's next normalised text."""
        if not data:
            return
        stack = self._stack
        if not stack or stack[-1].suspended:
            self.begin_member("text/plain")
        stack[-1].feed(data)

    def end_member(self) -> None:
        """The current member ends: its text, then the runs it deferred."""
        stack = self._stack
        if not stack or stack[-1].suspended:
            return
        pipe = stack[-1]
        pipe.finish_text()
        stack.pop()
        self.inner.end_member()
        pipe.flush_deferred()
        self.last_stages = pipe.stage_names()

    def unscannable(self, reason: str) -> None:
        """Passed on."""
        self.inner.unscannable(reason)

    def finding(self, label: str, value: bytes) -> None:
        """Passed on."""
        self.inner.finding(label, value)

    # -- for the pipelines ---------------------------------------------------

    def suspend_and_flush(self, pipe: _Pipeline) -> None:
        """End ``pipe``'s sink member, decode its deferred runs, begin it again."""
        self.inner.end_member()
        pipe.suspended = True
        try:
            pipe.flush_deferred()
        finally:
            pipe.suspended = False
        self.inner.begin_member(pipe.content_type)

    def nested(self, layers: tuple[str, ...], data: bytes) -> None:
        """Decode ``data`` as a member ``layers`` deep (a run's bytes), through the sniffer."""
        ctx = self.ctx
        assert ctx is not None
        self._origins.append(layers)
        try:
            stream = ctx.open_stream(len(layers), layers)
            stream.feed(data)
            stream.close()
        finally:
            self._origins.pop()

    def close(self) -> None:
        """An abandoned decode: close every open member's Hyperscan stream (idempotent)."""
        for pipe in self._stack:
            pipe.close()
        self._stack.clear()

    def _origin(self) -> tuple[str, ...]:
        """The layers of a member beginning now: the deepest open layer's, or a run's."""
        best = self._origins[-1] if self._origins else ()
        ctx = self.ctx
        if ctx is not None:
            for layer in ctx.layers:
                inner = layer._inner
                if len(inner) > len(best):
                    best = inner
        return best
