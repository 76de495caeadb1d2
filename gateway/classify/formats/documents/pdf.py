"""PDF: the text of every page, annotations, form fields, metadata and embedded files.

Read with pypdfium2 (Google's PDFium, the engine of Chrome's PDF viewer: the
widest real-world PDF coverage of any permissively licensed library, BSD/
Apache). It is given the member as a file object over the
:class:`~gateway.classify.formats.base.RandomAccess` view and reads it lazily,
block by block, through ``FPDF_LoadCustomDocument`` (measured: opening a
200-page, 160 kB file read 17 kB; extracting every page read each block about
2.6 times, so the spool's chunk cache matters more than the file size). No
size bound is needed for memory; the bounds below bound PDFium's work.

**Trust decision.** PDFium is native code parsing hostile input in our
process. It is fuzzed continuously by Chrome (OSS-Fuzz) and is what a
browser exposes to any web page, so we accept it in-process rather than pay a
subprocess per PDF; what we do not accept is its lack of resource bounds:

* PDFium inflates a Flate stream without an output cap (a 1 MB page content
  stream can expand to gigabytes). Before PDFium sees the file,
  :func:`check_streams` walks every ``stream`` keyword and inflates each
  non-image stream in bounded steps, through chained Flate filters, refusing
  one that decodes past :data:`MAX_PDF_STREAM_BYTES` or a file whose streams
  decode past :data:`MAX_PDF_DECODED_BYTES`. Image XObjects are skipped:
  text extraction never decodes them. LZW and RunLength streams (obsolete,
  and bombs that zlib cannot measure) are refused unless they are images.
* Encrypted PDFs are unscannable even when they open without a password:
  their streams are ciphertext the pre-check cannot measure.
* Pages, characters per page, annotations and attachments are counted
  against the named bounds below before their text is taken.
* PDFium is not thread-safe; one re-entrant lock serialises its use in this
  process (an embedded PDF is read while its container holds the lock).

A residual risk remains and is documented: a page that draws the same form
XObject many times costs PDFium time proportional to the draws.

**What PDFium does not show.** PDFium shows a document's latest revision.
The file holds more, and all of it reaches the recipient: every earlier
revision an incremental update left in place (text "removed" by an update, a
deleted page: any tool shows them again by cutting the file at an earlier
``%%EOF``), objects that no cross-reference section names or that one marks
free, bytes between objects. Before PDFium runs, :class:`_Layout` maps the
file in one walk (each ``N G obj`` with its stream data skipped by
``/Length``, the gaps between objects, every ``startxref … %%EOF``) and
parses each revision's cross-reference chain. Then:

* the latest revision is rendered as before (``page 3``, ``metadata``);
* each earlier revision (the file's first bytes up to its ``%%EOF``, at most
  :data:`MAX_PDF_REVISIONS`) is opened by PDFium and rendered the same way
  (``revision 1 page 3``), with what it repeats word for word left out (see
  :class:`_Reported` for how that keeps counts honest); one that a later
  revision only added objects to (Word's trailing empty update) is not
  opened again. A linearized file's first-page section ends in ``%%EOF``
  too but is no revision (Annex F). The page, character and attachment
  bounds count over all revisions;
* every object no rendered revision reads (by its cross-reference, or, where
  PDFium rebuilt one, by PDFium's rebuild rule), every object in an object
  stream that no entry names, and bytes between objects that are not file
  structure are read as PDF syntax (``unreferenced object 12``, ``outside
  objects``): strings decoded, streams decoded (Flate with predictors,
  ASCIIHex, ASCII85) and read the same way, embedded files handed back. An
  unreferenced stream with a filter we do not decode makes the file
  unscannable rather than a hiding place.

Limits: objects a revision's cross-reference names but its page tree does not
reach, and data PDFium does not render in reached ones (XMP, bookmarks,
private keys), are not read; text in an unreferenced content stream is read
as its string bytes, so text drawn in a font whose codes are not ASCII (CID
fonts, as CJK documents use) is not recovered from it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ctypes
import hashlib
import re
import threading
import zlib
from array import array
from typing import TYPE_CHECKING, Final, NamedTuple

from gateway.classify.formats.base import AccessFile, Extract, LazyModule, RandomAccess, Unscannable

# PDFium (pypdfium2) and numpy (which sorts and matches the file's
# cross-reference entries against its objects) load with the first PDF.
if TYPE_CHECKING:
    import numpy as np
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c
else:
    np = LazyModule("numpy")
    pdfium = LazyModule("pypdfium2")
    pdfium_c = LazyModule("pypdfium2.raw")

#: Pages read. 10,000 pages is a long scanned archive box; PDFium extracts
#: about 1,400 text pages per second here, so the bound is ~7 s of work.
MAX_PDF_PAGES: Final = 10_000
#: Characters on one page. A dense A4 page of 6-point text holds ~20,000; a
#: page past a million characters was crafted (or is a data dump better sent
#: as CSV).
MAX_PDF_PAGE_CHARS: Final = 1 << 20
#: Characters over the whole document: 10,000 pages of ~6,400 characters.
MAX_PDF_TEXT_CHARS: Final = 64 << 20
#: Decoded size of one non-image stream (page content, font program, object
#: stream, embedded file). A full CJK OpenType font is ~20 MB; PDFium holds a
#: decoded stream whole, so this is also its largest single allocation for us.
MAX_PDF_STREAM_BYTES: Final = 64 << 20
#: Decoded bytes of all non-image streams together: ~2-3 s of inflation.
MAX_PDF_DECODED_BYTES: Final = 1 << 30
#: Compressed bytes the stream pre-check may feed to zlib, beyond the file's
#: own size four times over: streams that fail part-way are re-searched from
#: where they failed, and this bounds that rework on a crafted file.
PDF_PRECHECK_SLACK_BYTES: Final = 64 << 20
#: Chained Flate filters followed (``[/FlateDecode /FlateDecode]``); real
#: producers use one.
MAX_PDF_FILTER_DEPTH: Final = 4
#: Embedded files (document attachments, file-attachment annotations, and
#: embedded file streams no revision reads), over all revisions.
MAX_PDF_ATTACHMENTS: Final = 256
#: Annotations read per page (comments, form widgets, attachments).
MAX_PDF_ANNOTATIONS: Final = 4096
#: Characters kept from one metadata value, annotation or form field value.
MAX_PDF_STRING_CHARS: Final = 1 << 20

#: Document information entries rendered (ISO 32000-1 §14.3.3, Table 317).
PDF_METADATA_KEYS: Final = ("Title", "Author", "Subject", "Keywords", "Creator", "Producer")

#: PDFium is not thread-safe: every call into it holds this lock. Re-entrant,
#: because an embedded file handed back to the decoder is decoded while the
#: lock is held, and may itself be a PDF.
_PDFIUM_LOCK: Final = threading.RLock()

#: Pre-check reads the file in blocks of this size.
_SCAN_BLOCK: Final = 1 << 20
#: Bytes before a ``stream`` keyword searched for its dictionary. Stream
#: dictionaries are a few hundred bytes; a longer one is read as non-image.
_DICT_LOOKBACK: Final = 4096
#: Input fed to zlib per step while measuring a stream.
_INFLATE_STEP: Final = 64 << 10
#: "stream" then its end-of-line (ISO 32000-1 §7.3.8.1; a lone CR is
#: tolerated by PDFium), not the end of an "endstream" keyword.
_STREAM_KEYWORD: Final = re.compile(rb"(?<!end)stream(?:\r\n|\n|\r)")
_OBJ_HEADER: Final = re.compile(rb"\d+\s+\d+\s+obj\b")
_NAME_ESCAPE: Final = re.compile(rb"#([0-9A-Fa-f]{2})")
_IMAGE: Final = re.compile(rb"/Subtype\s*/Image(?![^\s/\[\]<>()])")
_FILTER: Final = re.compile(rb"/Filter\s*(\[[^\]]*\]|/[^\s/\[\]<>()]+)")
_NAME: Final = re.compile(rb"/([^\s/\[\]<>()]+)")
_ASCII_FILTERS: Final = frozenset((b"ASCIIHexDecode", b"AHx", b"ASCII85Decode", b"A85"))
_UNMEASURED_FILTERS: Final = frozenset((b"LZWDecode", b"LZW", b"RunLengthDecode", b"RL"))
_ENDSTREAM: Final = b"endstream"
_NOT_HEX: Final = re.compile(rb"[^0-9A-Fa-f]")


# --------------------------------------------------------------------------- pre-check


class _Budget:
    """What a pass over the file (the pre-check, the file map) has decoded and read so far."""

    __slots__ = ("decoded", "work", "work_limit")

    def __init__(self, size: int) -> None:
        self.decoded = 0
        self.work = 0
        self.work_limit = 4 * size + PDF_PRECHECK_SLACK_BYTES

    def charge(self, length: int, reason: str) -> None:
        """Count ``length`` bytes read; past the bound the file is unscannable for ``reason``."""
        self.work += length
        if self.work > self.work_limit:
            raise Unscannable(reason)


class _InflateChain:
    """Measure a stream through chained zlib layers without keeping its output.

    A layer whose output starts with a zlib header (CMF 0x78, ``CMF*256+FLG``
    divisible by 31, RFC 1950 §2.2) is followed by another layer, up to
    :data:`MAX_PDF_FILTER_DEPTH`: that is how ``[/FlateDecode /FlateDecode]``
    looks, whatever the dictionary says.
    """

    __slots__ = ("_budget", "_heads", "_layers", "_outputs", "failed")

    def __init__(self, budget: _Budget) -> None:
        self._budget = budget
        self._layers = [zlib.decompressobj()]
        self._outputs = [0]
        self._heads = [b""]
        self.failed = False

    @property
    def eof(self) -> bool:
        return self._layers[0].eof

    def unused(self) -> int:
        return len(self._layers[0].unused_data)

    def feed(self, data: bytes) -> bool:
        """Decode ``data``; False once the stream stopped being zlib data."""
        self._feed(0, data)
        return not self.failed

    def _feed(self, level: int, data: bytes) -> None:
        layer = self._layers[level]
        while data and not layer.eof:
            try:
                out = layer.decompress(data, _INFLATE_STEP)
            except zlib.error:
                if level == 0:
                    self.failed = True
                return
            data = layer.unconsumed_tail
            if not out:
                continue
            self._outputs[level] += len(out)
            self._budget.decoded += len(out)
            if self._outputs[level] > MAX_PDF_STREAM_BYTES:
                raise Unscannable(f"pdf: a stream decodes past {MAX_PDF_STREAM_BYTES >> 20} MiB")
            if self._budget.decoded > MAX_PDF_DECODED_BYTES:
                raise Unscannable(f"pdf: streams decode past {MAX_PDF_DECODED_BYTES >> 20} MiB")
            self._next(level, out)

    def _next(self, level: int, out: bytes) -> None:
        if len(self._heads[level]) < 2:
            self._heads[level] += out[: 2 - len(self._heads[level])]
            head = self._heads[level]
            if (
                len(head) == 2
                and level + 1 < MAX_PDF_FILTER_DEPTH
                and head[0] == 0x78
                and (head[0] << 8 | head[1]) % 31 == 0
            ):
                self._layers.append(zlib.decompressobj())
                self._outputs.append(0)
                self._heads.append(b"")
        if level + 1 < len(self._layers):
            self._feed(level + 1, out)


def _dictionary(before: bytes) -> bytes:
    """The stream dictionary preceding a ``stream`` keyword, #-escapes decoded."""
    headers = list(_OBJ_HEADER.finditer(before))
    if headers:
        before = before[headers[-1].end() :]
    return _NAME_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), before)


def _filters(dictionary: bytes) -> list[bytes]:
    found = _FILTER.search(dictionary)
    return _NAME.findall(found.group(1)) if found else []


def _unhex(raw: bytes) -> bytes:
    """Hex digits decoded, anything else left out, an odd last digit read as if
    followed by 0 (a hex string, ISO 32000-1 §7.3.4.3, and ASCIIHexDecode data)."""
    digits = _NOT_HEX.sub(b"", raw)
    return binascii.unhexlify(digits + b"0" * (len(digits) % 2))


def _ascii_decode(name: bytes, raw: bytes) -> bytes:
    """ASCIIHex or ASCII85 data decoded (ISO 32000-1 §7.4.2-7.4.3); b"" when corrupt."""
    raw = raw.split(b">" if name in (b"ASCIIHexDecode", b"AHx") else b"~>", 1)[0]
    try:
        if name in (b"ASCIIHexDecode", b"AHx"):
            return _unhex(raw)
        return base64.a85decode(re.sub(rb"\s", b"", raw).removeprefix(b"<~"))
    except ValueError:
        return b""


def _measure(source: RandomAccess, start: int, budget: _Budget) -> int:
    """Inflate the stream at ``start``; the offset to resume the search from."""
    chain = _InflateChain(budget)
    pos = start
    while pos < source.size and not chain.eof and not chain.failed:
        block = source.read_at(pos, _INFLATE_STEP)
        if not block:
            break
        budget.charge(len(block), "pdf: too many overlapping streams")
        if not chain.feed(block):
            return pos  # search again from the block where the data stopped being zlib
        pos += len(block)
    return pos - chain.unused() if chain.eof else pos


def _measure_ascii(source: RandomAccess, start: int, name: bytes, budget: _Budget) -> int:
    """Decode an ASCIIHex/ASCII85 stream, then measure the Flate data under it."""
    raw = bytearray()
    pos = start
    while len(raw) <= MAX_PDF_STREAM_BYTES:
        block = source.read_at(pos, _INFLATE_STEP)
        if not block:
            break
        budget.charge(len(block), "pdf: too many overlapping streams")
        end = (bytes(raw[-len(_ENDSTREAM) :]) + block).find(_ENDSTREAM)
        raw += block
        pos += len(block)
        if end >= 0:
            break
    else:
        raise Unscannable(f"pdf: a stream decodes past {MAX_PDF_STREAM_BYTES >> 20} MiB")
    chain = _InflateChain(budget)
    chain.feed(_ascii_decode(name, bytes(raw)))
    return start + 1


def _top_level(dictionary: bytes) -> bytes:
    """The bytes of a stream dictionary at its own level: no string, no nested dictionary.

    ``/Subtype /Image`` counts only as the dictionary's own key: written inside
    a string (``/Note (/Subtype /Image)``) or a nested dictionary it would let
    a content stream pass as an image, and PDFium would inflate it unmeasured.
    """
    kept = bytearray()
    depth = 0  # dictionary nesting: 1 is the stream dictionary itself
    parens = 0  # literal string nesting (PDF 32000-1 §7.3.4.2: balanced parentheses)
    brackets = 0  # array nesting
    i, n = 0, len(dictionary)
    while i < n:
        c = dictionary[i]
        if parens:
            if c == 0x5C:  # backslash escapes the next byte
                i += 2
                continue
            parens += {0x28: 1, 0x29: -1}.get(c, 0)
        elif c == 0x28:
            parens = 1
        elif dictionary.startswith(b"<<", i):
            depth += 1
            i += 2
            continue
        elif dictionary.startswith(b">>", i):
            depth -= 1
            i += 2
            continue
        elif c == 0x3C:  # a hex string <...>
            end = dictionary.find(b">", i)
            i = n if end < 0 else end + 1
            continue
        elif c in (0x5B, 0x5D):  # an array: its names are values, not keys
            brackets = max(0, brackets + (1 if c == 0x5B else -1))
        elif depth <= 1 and not brackets:
            kept.append(c)
        i += 1
    return bytes(kept)


def check_streams(source: RandomAccess) -> None:
    """Refuse a PDF whose streams would make PDFium decode without bound.

    Raises:
        Unscannable: a non-image stream decodes past
            :data:`MAX_PDF_STREAM_BYTES`, all of them past
            :data:`MAX_PDF_DECODED_BYTES`, one uses a filter whose output we
            cannot measure (LZW, RunLength), or the file makes the search
            rework past its bound.
    """
    budget = _Budget(source.size)
    offset = 0
    while offset < source.size:
        base = max(0, offset - _DICT_LOOKBACK)
        block = source.read_at(base, offset - base + _SCAN_BLOCK)
        found = _STREAM_KEYWORD.search(block, offset - base)
        if found is None:
            if base + len(block) >= source.size:
                return
            offset = base + len(block) - len("stream\r\n")
            continue
        start = base + found.end()
        dictionary = _dictionary(block[max(0, found.start() - _DICT_LOOKBACK) : found.start()])
        if _IMAGE.search(_top_level(dictionary)):
            offset = start  # text extraction never decodes image data
            continue
        filters = _filters(dictionary)
        if _UNMEASURED_FILTERS.intersection(filters):
            raise Unscannable("pdf: LZW or RunLength stream not inspected")
        if filters and filters[0] in _ASCII_FILTERS:
            offset = _measure_ascii(source, start, filters[0], budget)
        else:
            offset = max(start, _measure(source, start, budget))


# --------------------------------------------------------------------------- file structure
#
# PDFium shows the latest revision of a document and nothing else. The file
# holds more: every earlier revision an incremental update left in place (a
# page whose Resident ID was "removed" by an update, a deleted page), which
# any tool shows again by cutting the file at an earlier ``%%EOF``; objects no
# cross-reference section points to, or that one marks free; bytes between
# objects. The map below finds them before PDFium runs: one walk over the
# body records each indirect object (its stream data skipped by ``/Length``),
# the gaps between objects, and every ``startxref … %%EOF``; each revision's
# cross-reference sections are parsed along their ``/Prev`` chain.

#: Revisions read: the latest and each earlier one that a ``startxref …
#: %%EOF`` ends (ISO 32000-1 §7.5.6). Each earlier revision is a whole
#: document PDFium opens and extracts again, so this bounds that work to 32
#: document loads (the page and character bounds above count over all of
#: them). Real files have a few: one per digital signature, one per
#: incremental save; Acrobat rewrites a file whole once its updates grow.
MAX_PDF_REVISIONS: Final = 32
#: Cross-reference sections parsed over all revisions: a revision adds one, a
#: hybrid file (``/XRefStm``) or a linearized one (its first-page section)
#: one more.
MAX_PDF_XREF_SECTIONS: Final = 4 * MAX_PDF_REVISIONS
#: Indirect objects in the body. A 10,000-page report holds ~50,000; PDFium
#: refuses object numbers past 4 Mi. The map keeps ~25 bytes per object.
MAX_PDF_OBJECTS: Final = 1 << 20
#: Unreferenced objects read as raw syntax (each ~35 µs and a member of its
#: own). Files that tools wrote have none or a handful (a broken
#: cross-reference is read by PDFium's rebuild rule instead); 64 Ki is ~2 s.
MAX_PDF_UNREFERENCED: Final = 1 << 16
#: Cross-reference entries over all sections (a writer may list every object
#: again in each update, as PDFium does): 8 bytes each in the map.
MAX_PDF_XREF_ENTRIES: Final = 1 << 22

_W: Final = rb"[\x00\t\n\x0c\r ]"  # white space (ISO 32000-1 Table 1)
_REG: Final = rb"[^\x00\t\n\x0c\r ()<>\[\]{}/%]"  # a regular character (§7.2.2)
_WHITE: Final = b"\x00\t\n\x0c\r "
#: ``N G obj`` at token boundaries.
_HEADER: Final = re.compile(
    rb"(?<!" + _REG + rb")(\d{1,10})" + _W + rb"+(\d{1,5})" + _W + rb"+obj(?!" + _REG + rb")"
)
_SKIP: Final = re.compile(rb"(?:" + _W + rb"++|%[^\r\n]*+)*+")
_PAREN: Final = re.compile(rb"\\[\s\S]|[()]")
#: Inside a dictionary or array only delimiters change the nesting.
_DELIMITER: Final = re.compile(rb"[()<>\[\]{}%]")
#: What may stand before and after a keyword: white space or a delimiter (a
#: slash before makes it a name).
_KEYWORD_BEFORE: Final = frozenset(b"\x00\t\n\x0c\r ()<>[]{}%")
_KEYWORD_AFTER: Final = frozenset(b"\x00\t\n\x0c\r ()<>[]{}/%")
_ATOM: Final = re.compile(rb"\d+" + _W + rb"+\d+" + _W + rb"+R(?!" + _REG + rb")|/?" + _REG + rb"*")
_STREAM_AT: Final = re.compile(rb"stream(?:\r\n|\n|\r)?")
_ENDSTREAM_AT: Final = re.compile(_W + rb"*endstream")
#: Possessive: white space and comments are never given back (no backtracking).
_ENDOBJ_AT: Final = re.compile(rb"(?:" + _W + rb"++|%[^\r\n]*+)*+endobj")
_LENGTH: Final = re.compile(
    rb"/Length(?!" + _REG + rb")" + _W + rb"*(\d{1,15})(?![\d.]|" + _W + rb"+\d+" + _W + rb"+R)"
)
_OBJSTM: Final = re.compile(rb"/Type" + _W + rb"*/ObjStm(?!" + _REG + rb")")
_LINEARIZED: Final = re.compile(rb"/Linearized(?!" + _REG + rb")")
_STARTXREF: Final = re.compile(rb"startxref" + _W + rb"*(\d{1,15})")
_EOF_AFTER: Final = re.compile(_W + rb"*%%EOF(?:\r\n|\r|\n)?")
_XREF_AT: Final = re.compile(rb"xref(?!" + _REG + rb")")
_SUBSECTION: Final = re.compile(rb"(\d{1,10})" + _W + rb"+(\d{1,10})(?!" + _REG + rb")")
_ENTRIES: Final = re.compile(rb"(\d{10}) (\d{5}) ([fn])(?:\r\n| \r| \n)")
_ENTRY: Final = re.compile(rb"(\d{1,10})[ \t]+(\d{1,5})[ \t]+([fn])(?!" + _REG + rb")")
_TRAILER_AT: Final = re.compile(rb"trailer(?!" + _REG + rb")")

#: Bytes kept before a window's first wanted byte (a header's boundary).
_LOOKBEHIND: Final = 64
#: Bytes a header search backs up over at the end of a window (a header cut by it).
_RESUME_BACKUP: Final = 64 << 10
#: Bytes looked at after a value for its ``stream`` or ``endobj`` keyword.
_AFTER_VALUE: Final = 512
#: Bytes a window must hold past where a search or a value starts; when it
#: holds fewer, a new window of a whole block is read.
_SEARCH: Final = 4 << 10
#: Object numbers PDFium reads (its ``kMaxObjectNumber``, 24 Mi): an object
#: numbered past them is in no revision PDFium shows, so it is unreferenced.
_MAX_NUMBER: Final = 24 << 20
#: An in-use entry is kept as ``offset << 25 | number`` (offsets below 512 GiB),
#: an entry in an object stream as ``number << 39 | stream << 14 | index``.
_NUM_BITS: Final = 25
_NUM_MASK: Final = (1 << _NUM_BITS) - 1
_INDEX_BITS: Final = 14
_INDEX_MASK: Final = (1 << _INDEX_BITS) - 1


def _walk_block(size: int) -> int:
    """Bytes the walk reads at a time: 1/64 of the file, 4 KiB to 1 MiB. A small
    file is read in small pieces, as PDFium reads it."""
    return max(4 << 10, min(_SCAN_BLOCK, size >> 6))


class _Window:
    """Buffered reads of the file for the walk; what they cost is bounded like the pre-check."""

    __slots__ = ("_budget", "_source", "base", "block", "buf", "size")

    def __init__(self, source: RandomAccess) -> None:
        self._source = source
        self.size = source.size
        self.base = 0
        self.buf = b""
        self.block = _walk_block(self.size)
        self._budget = _Budget(self.size)

    def at(self, pos: int, need: int = 0) -> tuple[bytes, int]:
        """A buffer and its offset in the file, holding ``[pos, pos + need)``
        (less at the end of the file) and the bytes just before ``pos``."""
        need = need or self.block
        low = max(0, pos - _LOOKBEHIND)
        if self.base <= low and min(pos + need, self.size) <= self.base + len(self.buf):
            return self.buf, self.base
        length = max(need, min(self.block, self.size - pos)) + pos - low
        self._charge(length)
        self.buf = self._source.read_at(low, length)
        self.base = low
        return self.buf, self.base

    def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``: from the window when it holds them (a value
        just parsed), else read for this call alone (the window stays)."""
        if self.base <= start and end <= self.base + len(self.buf):
            return self.buf[start - self.base : end - self.base]
        self._charge(end - start)
        return self._source.read_at(start, end - start)

    def find(self, needle: bytes, start: int) -> int:
        """The offset of ``needle`` at or after ``start``; -1 when absent."""
        pos = start
        while pos < self.size:
            buf, base = self.at(pos, _SEARCH)
            found = buf.find(needle, pos - base)
            if found >= 0:
                return base + found
            if base + len(buf) >= self.size:
                break
            pos = base + len(buf) - len(needle) + 1
        return -1

    def _charge(self, length: int) -> None:
        self._budget.charge(length, "pdf: file structure too costly to map")


def _literal_end(buf: bytes, i: int) -> int:
    """The index past the literal string opening at ``buf[i]``; -1 when ``buf`` ends first."""
    depth = 0
    for found in _PAREN.finditer(buf, i):
        c = buf[found.start()]
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if not depth:
                return found.end()
    return -1


def _keyword(buf: bytes, i: int) -> int:
    """Where the next ``endobj`` or ``stream`` keyword at or after ``buf[i]`` starts
    (``len(buf)`` when none does): an unclosed dictionary or array ends there."""
    nearest = len(buf)
    for word in (b"stream", b"endobj"):
        at = buf.find(word, i, nearest)
        while at >= 0 and not (
            (at == 0 or buf[at - 1] in _KEYWORD_BEFORE)
            and (at + len(word) == len(buf) or buf[at + len(word)] in _KEYWORD_AFTER)
        ):
            at = buf.find(word, at + 1, nearest)
        if at >= 0:
            nearest = at
    return nearest


def _value_end(buf: bytes, i: int) -> int:
    """The index past the PDF value at ``buf[i]`` (white space first); -1 when ``buf`` ends first.

    Only what changes the nesting is looked at inside a dictionary or array:
    strings (which may hold any delimiter), hex strings, comments, brackets.
    An ``endobj`` or ``stream`` keyword ends a dictionary or array left open.
    """
    i = _SKIP.match(buf, i).end()  # type: ignore[union-attr]
    n = len(buf)
    depth = 0
    limit = -1
    while i < n:
        c = buf[i]
        if c == 0x28:  # (
            i = _literal_end(buf, i)
            if i < 0:
                return -1
        elif c == 0x3C:  # << or a hex string
            if buf.startswith(b"<<", i):
                depth += 1
                i += 2
            else:
                end = buf.find(b">", i)
                if end < 0:
                    return -1
                i = end + 1
        elif c == 0x3E:  # >> (a stray > is passed over)
            if buf.startswith(b">>", i):
                depth -= 1
                i += 2
            else:
                i += 1
        elif c in b"[{":
            depth += 1
            i += 1
        elif c in b"]}":
            depth -= 1
            i += 1
        elif c == 0x25:  # a comment
            i = _SKIP.match(buf, i).end()  # type: ignore[union-attr]
        else:
            atom = _ATOM.match(buf, i)
            return atom.end() if atom and atom.end() > i else i + 1
        if depth <= 0:
            return i
        if i > limit:
            limit = _keyword(buf, i)
        found = _DELIMITER.search(buf, i, limit)
        if found is None:
            return limit if limit < n else -1
        i = found.start()
    return -1


class _Object(NamedTuple):
    """Where one indirect object's parts lie in the file."""

    value: int  # start of its value (after ``obj``)
    value_end: int
    data: int  # start of its stream data, -1 for no stream
    data_end: int
    end: int  # past ``endobj`` (or where the object stops)
    object_stream: bool


def _parse_object(win: _Window, value: int) -> _Object | None:
    """The object whose value starts at ``value``; None when the value never ends."""
    need = _SEARCH
    while True:
        buf, base = win.at(value, need)
        end = _value_end(buf, value - base)
        at_eof = base + len(buf) >= win.size
        if end >= 0 and (len(buf) >= end + _AFTER_VALUE or at_eof):
            break
        if end < 0 and at_eof:
            return None
        need = end - (value - base) + _AFTER_VALUE if end >= 0 else min(4 * need, win.size - value)
    value_end = base + end
    k = _SKIP.match(buf, end).end()  # type: ignore[union-attr]
    if buf.startswith(b"endobj", k):
        return _Object(value, value_end, -1, -1, base + k + 6, False)
    marker = _STREAM_AT.match(buf, k)
    if marker is None:
        return _Object(value, value_end, -1, -1, value_end, False)
    data = base + marker.end()
    lengths = _LENGTH.findall(buf, value - base, end)
    if len(lengths) > 1:  # a nested /Length: the dictionary's own is at its top level
        lengths = _LENGTH.findall(_top_level(buf[value - base : end]))
    length = int(lengths[0]) if len(lengths) == 1 else -1
    objstm = _OBJSTM.search(buf, value - base, end) is not None
    data_end = after = -1
    if 0 <= length <= win.size - data:
        buf, base = win.at(data + length, _AFTER_VALUE)
        closing = _ENDSTREAM_AT.match(buf, data + length - base)
        if closing:
            data_end, after = data + length, base + closing.end()
    if data_end < 0:  # no direct /Length, or a wrong one: up to the next endstream, as PDFium
        found = win.find(b"endstream", data)
        data_end, after = (found, found + 9) if found >= 0 else (win.size, win.size)
    buf, base = win.at(after, _AFTER_VALUE)
    closing = _ENDOBJ_AT.match(buf, after - base)
    return _Object(
        value, value_end, data, data_end, base + closing.end() if closing else after, objstm
    )


def _object_at(win: _Window, offset: int) -> tuple[int, _Object] | None:
    """The indirect object whose ``N G obj`` header is at ``offset`` (white space and
    comments first): where the header starts, and the object; None when there is none."""
    buf, base = win.at(offset, _AFTER_VALUE)
    start = _SKIP.match(buf, offset - base).end()  # type: ignore[union-attr]
    header = _HEADER.match(buf, start)
    obj = _parse_object(win, base + header.end()) if header else None
    return None if obj is None else (base + start, obj)


def _read_value(win: _Window, pos: int) -> tuple[bytes, int] | None:
    """The bytes of the value at ``pos`` and the offset past it; None when it never ends."""
    need = _SEARCH
    while True:
        buf, base = win.at(pos, need)
        end = _value_end(buf, pos - base)
        if end >= 0:
            return buf[pos - base : end], base + end
        if base + len(buf) >= win.size:
            return None
        need = min(4 * need, win.size - pos)


def _key(name: bytes) -> bytes:
    return rb"/" + name + rb"(?!" + _REG + rb")" + _W + rb"*"


_PREV: Final = re.compile(_key(b"Prev") + rb"(\d{1,15})(?![\d.])")
_XREFSTM: Final = re.compile(_key(b"XRefStm") + rb"(\d{1,15})(?![\d.])")
_SIZE: Final = re.compile(_key(b"Size") + rb"(\d{1,10})(?![\d.])")
_ROOT: Final = re.compile(_key(b"Root") + rb"(\d{1,10})" + _W + rb"+(\d{1,5})" + _W + rb"+R")
_INFO: Final = re.compile(_key(b"Info") + rb"(\d{1,10})" + _W + rb"+(\d{1,5})" + _W + rb"+R")
_XREF_TYPE: Final = re.compile(_key(b"Type") + rb"/XRef(?!" + _REG + rb")")
_WIDTHS: Final = re.compile(
    _key(b"W")
    + rb"\["
    + _W
    + rb"*(\d{1,2})"
    + _W
    + rb"+(\d{1,2})"
    + _W
    + rb"+(\d{1,2})"
    + _W
    + rb"*\]"
)
_INDEX: Final = re.compile(_key(b"Index") + rb"\[([\d\x00\t\n\x0c\r ]*)\]")


class _Section:
    """One cross-reference section: a table and its trailer, or a stream (§7.5.4, §7.5.8)."""

    __slots__ = (
        "compressed",
        "entries",
        "header",
        "high",
        "info",
        "low",
        "offset",
        "prev",
        "root",
        "size",
        "span",
        "xrefstm",
    )

    def __init__(self, offset: int) -> None:
        self.offset = offset
        #: In-use entries, ``offset << 25 | number``.
        self.entries = array("Q")
        #: Entries of objects in object streams, ``number << 39 | stream << 14 | index``.
        self.compressed = array("Q")
        self.low = 1 << 62  # lowest object number given (the free list's head aside)
        self.high = -1  # highest object number given
        self.prev: int | None = None
        self.xrefstm: int | None = None
        self.root: tuple[int, int] | None = None
        self.info: tuple[int, int] | None = None
        self.size = 0
        self.span: tuple[int, int] | None = None  # a table's bytes, up to ``trailer``
        self.header = -1  # a stream's object header

    def add(self, number: int, kind: int, field2: int, field3: int) -> None:
        """One entry: ``kind`` 0 free, 1 in use at ``field2``, 2 in object stream ``field2``."""
        self.high = max(self.high, number)
        if number or kind:
            self.low = min(self.low, number)
        if number >= _MAX_NUMBER:
            return
        if kind == 1 and 0 < field2 < 1 << (64 - _NUM_BITS):
            self.entries.append(field2 << _NUM_BITS | number)
        elif kind == 2 and field2 < _MAX_NUMBER and field3 <= _INDEX_MASK:
            self.compressed.append((number << _NUM_BITS | field2) << _INDEX_BITS | field3)

    def trailer(self, dictionary: bytes) -> None:
        """Read the entries of a trailer (or cross-reference stream) dictionary."""
        top = _top_level(dictionary)
        if found := _PREV.search(top):
            self.prev = int(found.group(1))
        if found := _XREFSTM.search(top):
            self.xrefstm = int(found.group(1))
        if found := _SIZE.search(top):
            self.size = int(found.group(1))
        if found := _ROOT.search(top):
            self.root = (int(found.group(1)), int(found.group(2)))
        if found := _INFO.search(top):
            self.info = (int(found.group(1)), int(found.group(2)))


class _Revision:
    """An earlier revision: the file's first ``end`` bytes, and its cross-reference chain."""

    __slots__ = ("adds_only", "chain", "end", "number")

    def __init__(self, number: int, end: int, chain: list[_Section] | None) -> None:
        self.number = number
        self.end = end
        self.chain = chain
        #: The next revision only added objects: its rendering holds all of this one.
        self.adds_only = False


def _effective(chain: list[_Section], attribute: str) -> object:
    for section in chain:
        value = getattr(section, attribute)
        if value is not None:
            return value
    return None


def _adds_only(older: list[_Section] | None, newer: list[_Section] | None) -> bool:
    """Whether ``newer`` keeps every section of ``older`` in order, adds entries only
    for object numbers ``older`` never had, and names the same catalog and document
    information: what it shows then holds everything ``older`` shows (Word, for one,
    ends each file with such an empty update)."""
    if not older or not newer:
        return False
    kept = {id(section) for section in older}
    if [section for section in newer if id(section) in kept] != older:
        return False
    size = max(max(s.size for s in older), max(s.high for s in older) + 1)
    added = [section for section in newer if id(section) not in kept]
    return (
        all(section.low >= size for section in added)
        and _effective(older, "root") == _effective(newer, "root")
        and _effective(older, "info") == _effective(newer, "info")
    )


class _Layout:
    """The map of one PDF: its objects, the gaps between them, its revisions and sections."""

    def __init__(self, source: RandomAccess, totals: _Totals) -> None:
        self.win = _Window(source)
        self.totals = totals
        self.offsets = array("q")
        self.numbers = array("q")
        self.generations = array("q")
        #: White space before each header: an entry may point into it.
        self.leads = array("B")
        self.object_streams: list[int] = []
        self.gaps: list[tuple[int, int]] = []
        self.linearized = False
        self.sections: dict[int, _Section | None] = {}
        self.entries = 0
        self.latest: list[_Section] | None = None
        self.earlier: list[_Revision] = []
        # filled in as revisions are read
        self.chains: list[list[_Section]] = []
        self.repaired: list[int] = []

    # -- the walk

    def walk(self) -> None:
        """Record every object and gap, then the revisions and their sections."""
        win = self.win
        pos = 0
        while pos < win.size:
            buf, base = win.at(pos, _SEARCH)
            found = _HEADER.search(buf, pos - base)
            if found is None:
                stop = base + len(buf)
                if stop >= win.size:
                    self._gap(pos, win.size)
                    break
                step = self._resume(buf, base, stop - _LOOKBEHIND, pos)
                self._gap(pos, step)
                pos = step
                continue
            start, value = base + found.start(), base + found.end()
            lead = found.start()
            while lead > 0 and found.start() - lead < 255 and buf[lead - 1] in _WHITE:
                lead -= 1
            if buf[max(0, pos - base) : found.start()].strip(_WHITE):
                self._gap(pos, start)
            obj = _parse_object(win, value)
            if obj is None:  # a value that never ends: not an object
                self._gap(start, value)
                pos = value
                continue
            if len(self.offsets) >= MAX_PDF_OBJECTS:
                raise Unscannable(f"pdf: more than {MAX_PDF_OBJECTS} objects")
            if not self.offsets:  # a linearization dictionary is the first object (F.2)
                head = win.read(obj.value, min(obj.value_end, obj.value + 1024))
                self.linearized = _LINEARIZED.search(head) is not None
            if obj.object_stream:
                self.object_streams.append(len(self.offsets))
            self.offsets.append(start)
            self.numbers.append(int(found.group(1)))
            self.generations.append(int(found.group(2)))
            self.leads.append(found.start() - lead)
            pos = max(obj.end, value)
        self._revisions()

    @staticmethod
    def _resume(buf: bytes, base: int, at: int, pos: int) -> int:
        """Where the header search goes on after a window without one: before any run of
        digits and white space at its end, so that a header across the edge is seen whole."""
        i = at - base
        floor = max(pos - base + 1, i - _RESUME_BACKUP)
        while i > floor and buf[i - 1] in b"0123456789\x00\t\n\x0c\r ":
            i -= 1
        return max(base + i, pos + 1)

    def _gap(self, start: int, end: int) -> None:
        if end <= start:
            return
        if self.gaps and self.gaps[-1][1] == start:
            self.gaps[-1] = (self.gaps[-1][0], end)
        else:
            self.gaps.append((start, end))

    def _markers(self) -> list[tuple[int, int, int]]:
        """Each ``startxref N`` between objects: its offset, N, and the offset past the
        ``%%EOF`` that follows it (-1 when none does)."""
        found: list[tuple[int, int, int]] = []
        ends = 0
        for start, end in self.gaps:
            pos = start
            while pos < end:
                buf, base = self.win.at(pos, _SEARCH)
                stop = min(end, base + len(buf))
                safe = stop if stop == end else stop - 2 * _LOOKBEHIND
                for marker in _STARTXREF.finditer(buf, pos - base, stop - base):
                    if base + marker.start() >= safe:
                        break
                    eof = _EOF_AFTER.match(buf, marker.end(), stop - base)
                    found.append(
                        (
                            base + marker.start(),
                            int(marker.group(1)),
                            base + eof.end() if eof else -1,
                        )
                    )
                    if eof:
                        ends += 1
                        if ends > MAX_PDF_REVISIONS + 1:  # one more: a linearized file's first page
                            raise Unscannable(f"pdf: more than {MAX_PDF_REVISIONS} revisions")
                    elif len(found) > 1 and found[-2][2] < 0:
                        del found[-2]  # only the last startxref without %%EOF matters
                pos = max(safe, pos + 1)
        return found

    def _revisions(self) -> None:
        markers = self._markers()
        if not markers:
            return
        latest = markers[-1]
        # A linearized file's first-page section (ISO 32000-1 Annex F.3.3) ends in
        # "startxref … %%EOF" right after the linearization dictionary: it is part of
        # the one revision, whose /Prev points past it, not an earlier revision.
        first_page_end = self.offsets[1] if self.linearized and len(self.offsets) > 1 else -1
        earlier = [m for m in markers[:-1] if m[2] >= 0 and m[2] > first_page_end]
        if len(earlier) + 1 > MAX_PDF_REVISIONS:
            raise Unscannable(f"pdf: more than {MAX_PDF_REVISIONS} revisions")
        self.latest = self._chain(latest[1], None)
        self.earlier = [
            _Revision(number, end, self._chain(target, end))
            for number, (_, target, end) in enumerate(earlier, 1)
        ]
        newer = [revision.chain for revision in self.earlier[1:]] + [self.latest]
        for revision, chain in zip(self.earlier, newer, strict=False):
            revision.adds_only = _adds_only(revision.chain, chain)

    # -- cross-reference sections

    def _chain(self, head: int, limit: int | None) -> list[_Section] | None:
        """The sections a revision reads from ``head`` on (its hybrid stream, then ``/Prev``);
        None when one does not parse, or lies past ``limit``. A ``/Prev`` loop ends the chain."""
        chain: list[_Section] = []
        visited: set[int] = set()
        todo = [head]
        while todo:
            offset = todo.pop()
            if offset in visited:
                continue
            visited.add(offset)
            if limit is not None and offset >= limit:
                return None
            section = self._section(offset)
            if section is None:
                return None
            chain.append(section)
            if section.prev is not None:
                todo.append(section.prev)
            if section.xrefstm is not None:
                todo.append(section.xrefstm)
        return chain

    def _section(self, offset: int) -> _Section | None:
        if offset in self.sections:
            return self.sections[offset]
        if len(self.sections) >= MAX_PDF_XREF_SECTIONS:
            raise Unscannable(f"pdf: more than {MAX_PDF_XREF_SECTIONS} cross-reference sections")
        section = None
        if 0 <= offset < self.win.size:
            section = self._table(offset) or self._stream(offset)
        self.sections[offset] = section
        return section

    def _count(self, entries: int) -> None:
        self.entries += entries
        if self.entries > MAX_PDF_XREF_ENTRIES:
            raise Unscannable(f"pdf: more than {MAX_PDF_XREF_ENTRIES} cross-reference entries")

    def _table(self, offset: int) -> _Section | None:
        win = self.win
        buf, base = win.at(offset, _AFTER_VALUE)
        i = _SKIP.match(buf, offset - base).end()  # type: ignore[union-attr]
        if not _XREF_AT.match(buf, i):
            return None
        section = _Section(offset)
        pos = base + i + 4
        while True:
            buf, base = win.at(pos, _AFTER_VALUE)
            i = _SKIP.match(buf, pos - base).end()  # type: ignore[union-attr]
            if _TRAILER_AT.match(buf, i):
                table_end = base + i
                pos = table_end + 7
                break
            subsection = _SUBSECTION.match(buf, i)
            if subsection is None:
                return None
            first, count = int(subsection.group(1)), int(subsection.group(2))
            if count > (win.size - pos) // 18:
                return None
            self._count(count)
            pos = base + subsection.end()
            buf, base = win.at(pos, 20 * count + _AFTER_VALUE)
            i = _SKIP.match(buf, pos - base).end()  # type: ignore[union-attr]
            block = buf[i : i + 20 * count]
            rows = _ENTRIES.findall(block)
            if len(rows) == count and _ENTRIES.sub(b"", block) == b"":
                for number, (field, generation, kind) in enumerate(rows, first):
                    section.add(number, 1 if kind == b"n" else 0, int(field), int(generation))
                pos = base + i + 20 * count
                continue
            for number in range(first, first + count):  # entries not 20 bytes each
                i = _SKIP.match(buf, i).end()  # type: ignore[union-attr]
                entry = _ENTRY.match(buf, i)
                if entry is None:
                    return None
                kind = 1 if entry.group(3) == b"n" else 0
                section.add(number, kind, int(entry.group(1)), int(entry.group(2)))
                i = entry.end()
            pos = base + i
        value = _read_value(win, pos)
        if value is None:
            return None
        section.trailer(value[0])
        section.span = (offset, table_end)  # its trailer is read with the bytes around it
        return section

    def _stream(self, offset: int) -> _Section | None:
        win = self.win
        found = _object_at(win, offset)
        if found is None:
            return None
        header, obj = found
        if obj.data < 0 or obj.data_end - obj.data > MAX_PDF_STREAM_BYTES:
            return None
        dictionary = win.read(obj.value, obj.value_end)
        widths = _WIDTHS.search(dictionary)
        if not _XREF_TYPE.search(_top_level(dictionary)) or widths is None:
            return None
        w0, w1, w2 = (int(w) for w in widths.groups())
        row = w0 + w1 + w2
        if max(w0, w1, w2) > 8 or not row:
            return None
        section = _Section(offset)
        section.trailer(dictionary)
        section.header = header
        index = _INDEX.search(dictionary)
        bounds = [int(n) for n in index.group(1).split()] if index else [0, section.size]
        try:
            data = _decode(win.read(obj.data, obj.data_end), dictionary, self.totals)
        except _Undecodable:
            return None
        if data is None:
            return None
        pos = 0
        for first, count in zip(bounds[::2], bounds[1::2], strict=False):
            count = min(count, (len(data) - pos) // row)
            self._count(count)
            for number in range(first, first + count):
                kind = int.from_bytes(data[pos : pos + w0], "big") if w0 else 1
                field2 = int.from_bytes(data[pos + w0 : pos + w0 + w1], "big")
                field3 = int.from_bytes(data[pos + w0 + w1 : pos + row], "big")
                section.add(number, kind, field2, field3)
                pos += row
        return section

    # -- what the rendered revisions did not read

    def rendered(self, chain: list[_Section] | None, valid: bool, end: int) -> None:
        """Record a revision PDFium read: the objects its sections name, or, when PDFium
        rebuilt its cross-reference (or ours did not parse), those a rebuild of its first
        ``end`` bytes finds."""
        if chain is not None and valid:
            self.chains.append(chain)
        else:
            self.repaired.append(end)

    def unreferenced(self) -> tuple[list[int], list[tuple[int, frozenset[int]]]]:
        """The objects no rendered revision reads (indices into the map), and the
        object streams that one reads by their sections, each with the indices of the
        objects in it that no section names."""
        count = len(self.offsets)
        if not count:
            return [], []
        offsets = np.frombuffer(self.offsets, dtype=np.int64)
        numbers = np.frombuffer(self.numbers, dtype=np.int64)
        leads = np.frombuffer(self.leads, dtype=np.uint8).astype(np.int64)
        generations = np.frombuffer(self.generations, dtype=np.int64)
        read = np.zeros(count, dtype=bool)
        sections = list({id(s): s for chain in self.chains for s in chain}.values())
        if sections:
            keys = np.unique(
                np.concatenate([np.frombuffer(s.entries, dtype=np.uint64) for s in sections])
            )
            small = numbers < _MAX_NUMBER
            # an entry names the object whose header starts at its offset, or after
            # white space there (PDFium skips it): ``delta`` bytes before the header
            for delta in range(int(leads.max()) + 1):
                todo = ~read & small & (leads >= delta) & (offsets >= delta)
                if not todo.any():
                    break
                probe = (offsets[todo] - delta).astype(np.uint64) << _NUM_BITS
                probe |= numbers[todo].astype(np.uint64)
                read[np.flatnonzero(todo)[np.isin(probe, keys)]] = True
        by_sections = read.copy()
        for end in self.repaired:  # as PDFium rebuilds: the highest generation, then the last
            within = np.flatnonzero(offsets < end)
            if within.size:
                order = within[np.lexsort((offsets[within], generations[within], numbers[within]))]
                last = np.ones(order.size, dtype=bool)
                last[:-1] = numbers[order][1:] != numbers[order][:-1]
                read[order[last]] = True
        headers = {s.header for s in self.sections.values() if s is not None and s.header >= 0}
        if headers:
            read |= np.isin(offsets, np.fromiter(headers, dtype=np.int64))
        streams: list[tuple[int, frozenset[int]]] = []
        if sections:
            compressed = np.unique(
                np.concatenate([np.frombuffer(s.compressed, dtype=np.uint64) for s in sections])
            )
            for index in self.object_streams:
                if by_sections[index] and self.numbers[index] < _MAX_NUMBER:
                    stream = self.numbers[index]
                    mine = compressed[(compressed >> _INDEX_BITS) & _NUM_MASK == stream]
                    streams.append(
                        (
                            index,
                            frozenset(
                                int(k) >> (_NUM_BITS + _INDEX_BITS) << _INDEX_BITS
                                | int(k) & _INDEX_MASK
                                for k in mine
                            ),
                        )
                    )
        return [int(i) for i in np.flatnonzero(~read)], streams


# --------------------------------------------------------------------------- decoding

#: Filters whose output is image samples (ISO 32000-1 §7.4.8-7.4.10): as for
#: referenced images, their data is not read (no OCR).
_IMAGE_FILTERS: Final = frozenset(
    (b"DCTDecode", b"DCT", b"JPXDecode", b"JBIG2Decode", b"CCITTFaxDecode", b"CCF")
)
_FLATE_FILTERS: Final = frozenset((b"FlateDecode", b"Fl"))
_PARMS: Final = re.compile(rb"/(?:DecodeParms|DP)(?!" + _REG + rb")")
_PARMS_ITEM: Final = re.compile(rb"<<(?:[^<>]|<[^<>]*>)*>>|null")


class _Undecodable(Exception):
    """A stream with a filter this module does not decode."""


class _Totals:
    """Work done over every revision and unreferenced object of one file."""

    __slots__ = ("attachments", "chars", "decoded", "pages")

    def __init__(self) -> None:
        self.pages = 0
        self.chars = 0
        self.attachments = 0
        self.decoded = 0

    def add_pages(self, count: int) -> None:
        self.pages += count
        if self.pages > MAX_PDF_PAGES:
            raise Unscannable(f"pdf: more than {MAX_PDF_PAGES} pages")

    def add_chars(self, count: int) -> None:
        self.chars += count
        if self.chars > MAX_PDF_TEXT_CHARS:
            raise Unscannable(f"pdf: more than {MAX_PDF_TEXT_CHARS} characters")

    def add_attachment(self) -> None:
        """One more embedded file handed back (an attachment, or an unreferenced one)."""
        self.attachments += 1
        if self.attachments > MAX_PDF_ATTACHMENTS:
            raise Unscannable(f"pdf: more than {MAX_PDF_ATTACHMENTS} embedded files")

    def add_decoded(self, count: int) -> None:
        self.decoded += count
        if self.decoded > MAX_PDF_DECODED_BYTES:
            raise Unscannable(f"pdf: streams decode past {MAX_PDF_DECODED_BYTES >> 20} MiB")


def _inflate(data: bytes, totals: _Totals) -> bytes:
    """Flate data decoded in bounded steps; a corrupt tail ends it, as in PDFium."""
    inflater = zlib.decompressobj()
    out = bytearray()
    try:
        for start in range(0, len(data), _INFLATE_STEP):
            chunk = data[start : start + _INFLATE_STEP]
            while chunk and not inflater.eof:
                piece = inflater.decompress(chunk, _INFLATE_STEP)
                out += piece
                if len(out) > MAX_PDF_STREAM_BYTES:
                    raise Unscannable(
                        f"pdf: a stream decodes past {MAX_PDF_STREAM_BYTES >> 20} MiB"
                    )
                chunk = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        pass
    totals.add_decoded(len(out))
    return bytes(out)


def _parameter(parms: bytes, name: bytes, default: int) -> int:
    found = re.search(_key(name) + rb"(\d{1,9})(?![\d.])", parms)
    return int(found.group(1)) if found else default


def _unpredict(data: bytes, parms: bytes) -> bytes:
    """Undo a Flate predictor (ISO 32000-1 §7.4.4.4: TIFF 2 at 8 bits, PNG 10-15)."""
    predictor = _parameter(parms, b"Predictor", 1)
    if predictor <= 1:
        return data
    colors = min(max(_parameter(parms, b"Colors", 1), 1), 32)
    bits = _parameter(parms, b"BitsPerComponent", 8)
    columns = min(max(_parameter(parms, b"Columns", 1), 1), 1 << 24)
    if bits not in (1, 2, 4, 8, 16):
        raise _Undecodable
    bpp = max(1, colors * bits // 8)
    width = (columns * colors * bits + 7) // 8
    if predictor == 2:
        if bits != 8:
            raise _Undecodable
        rows = np.frombuffer(data, dtype=np.uint8)[: len(data) // width * width]
        samples = rows.reshape(-1, columns, colors)
        return bytes(np.cumsum(samples, axis=1, dtype=np.uint8).tobytes())
    if predictor < 10:
        raise _Undecodable
    stride = width + 1
    count = len(data) // stride
    table = np.frombuffer(data, dtype=np.uint8)[: count * stride].reshape(count, stride)
    kinds = table[:, 0]
    if not count:
        return b""
    if bool((kinds == 2).all()) or (count == 1 and kinds[0] in (0, 2)):
        return bytes(np.cumsum(table[:, 1:], axis=0, dtype=np.uint8).tobytes())
    out = bytearray()
    previous = bytearray(width)
    for kind, raw in zip(kinds.tolist(), (bytes(r[1:]) for r in table), strict=True):
        row = bytearray(raw)
        if kind == 1:
            for i in range(bpp, width):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(raw, previous, strict=True))
        elif kind == 3:
            for i in range(width):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(width):
                a = row[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif kind != 0:
            raise _Undecodable
        out += row
        previous = row
    return bytes(out)


def _decode(data: bytes, dictionary: bytes, totals: _Totals) -> bytes | None:
    """A stream's data through its filters; None for image data.

    Raises:
        _Undecodable: a filter this module does not decode (LZW, RunLength, Crypt …).
    """
    dictionary = _NAME_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), dictionary)
    filters = _filters(dictionary)
    if len(filters) > MAX_PDF_FILTER_DEPTH:
        raise _Undecodable
    parms = [b""] * len(filters)
    found = _PARMS.search(dictionary)
    if found:
        end = _value_end(dictionary, found.end())
        value = dictionary[found.end() : end if end >= 0 else len(dictionary)].strip(_WHITE)
        items = _PARMS_ITEM.findall(value) if value.startswith(b"[") else [value]
        for i, item in enumerate(items[: len(filters)]):
            parms[i] = b"" if item == b"null" else item
    for name, parm in zip(filters, parms, strict=True):
        if name in _IMAGE_FILTERS:
            return None
        if name in _FLATE_FILTERS:
            data = _unpredict(_inflate(data, totals), parm)
        elif name in _ASCII_FILTERS:
            data = _ascii_decode(name, data)
            totals.add_decoded(len(data))
        else:
            raise _Undecodable
    return data


# --------------------------------------------------------------------------- raw text

#: One token of PDF syntax, for rendering bytes no page shows: a literal
#: string, a hex string, an array's brackets, a regular token, anything else.
_LEX: Final = re.compile(
    rb"(\()|(<[0-9A-Fa-f\x00\t\n\x0c\r ]*>)|(\[)|(\])|("
    + _REG
    + rb"+)|(%[^\r\n]*|"
    + _W
    + rb"+|[\s\S])"
)
_NUMBER: Final = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)")
_ESCAPE: Final = re.compile(rb"\\(?:([0-7]{1,3})|(\r\n|\r|\n)|([\s\S]))|(\r\n?)")
_ESCAPED: Final = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
#: Operators that show a string (ISO 32000-1 §9.4.3): strings they show in a
#: row are joined, as a page's text runs on.
_SHOW_TEXT: Final = frozenset((b"Tj", b"TJ", b"'", b'"'))
#: A displacement in a TJ array (thousandths of a text unit) this far left
#: reads as a word space (a space glyph is ~250 wide).
_KERN_SPACE: Final = -200.0


def _unescape(raw: bytes) -> bytes:
    """A literal string's bytes (ISO 32000-1 §7.3.4.2)."""
    if b"\\" not in raw and b"\r" not in raw:
        return raw

    def one(found: re.Match[bytes]) -> bytes:
        octal, newline, char, eol = found.groups()
        if octal:
            return bytes((int(octal, 8) & 0xFF,))
        if newline:
            return b""
        if char:
            return _ESCAPED.get(char, char)
        return b"\n" if eol else b""

    return _ESCAPE.sub(one, raw)


def _text_string(raw: bytes) -> str:
    """A string's text: UTF-16 or UTF-8 by its byte order mark, else UTF-8 or Latin-1."""
    if raw[:2] == b"\xfe\xff":
        return raw[2:].decode("utf-16-be", "replace")
    if raw[:2] == b"\xff\xfe":
        return raw[2:].decode("utf-16-le", "replace")
    if raw[:3] == b"\xef\xbb\xbf":
        return raw[3:].decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _render_raw(data: bytes) -> tuple[str, bytes]:
    """Bytes of PDF syntax (an object, a decoded stream) as text, every byte once.

    Returns the strings, decoded (escapes, hex, UTF-16), one per line, except
    that the strings a content stream shows in a row (a ``TJ`` array's strings
    between their displacements, consecutive ``Tj``) are joined, as a page's
    text would read. And the rest, strings left out: numbers, names,
    operators, comments, binary data.
    """
    text: list[str] = []
    rest = bytearray()
    joined = False
    arrays = 0
    pos, size = 0, len(data)
    while pos < size:
        token = _LEX.match(data, pos)
        assert token is not None  # the last alternative takes any byte
        kind = token.lastindex
        if kind in (1, 2):
            if kind == 1:
                end = _literal_end(data, pos)
                raw = _unescape(data[pos + 1 : end - 1] if end > 0 else data[pos + 1 :])
                pos = end if end > 0 else size
            else:
                raw = _unhex(token.group(2))
                pos = token.end()
            text.append(_text_string(raw) if joined else "\n" + _text_string(raw))
            joined = False  # a string right after a string is another value
            rest += b" "
            continue
        if kind == 3:
            arrays += 1
        elif kind == 4:
            arrays = max(0, arrays - 1)
        elif kind == 5:
            word = token.group(5)
            if arrays and _NUMBER.fullmatch(word):  # a TJ displacement: the run goes on
                if float(word) < _KERN_SPACE:
                    text.append(" ")
                joined = True
            else:
                joined = word in _SHOW_TEXT
        rest += token.group()
        pos = token.end()
    return "".join(text), bytes(rest)


_EMBEDDED_FILE: Final = re.compile(_key(b"Type") + rb"/EmbeddedFile(?!" + _REG + rb")")
_COMMENT: Final = re.compile(rb"%[^\r\n]*")
_FIRST: Final = re.compile(_key(b"First") + rb"(\d{1,10})(?![\d.])")
#: File structure between objects that is not reported: the header, the
#: binary-marker comment line, a trailer's standard entries, ``startxref N``,
#: ``%%EOF`` (cross-reference tables are cut out by their spans).
_HEX_OR_LITERAL: Final = rb"(?:<[0-9A-Fa-f\x00\t\n\x0c\r ]*>|\((?:[^()\\]|\\[\s\S])*\))"
_STRUCTURE: Final = re.compile(
    rb"%PDF-\d\.\d|%[\x80-\xff]+(?=[\r\n])|startxref" + _W + rb"*\d{1,15}|%%EOF|trailer|<<|>>"
    rb"|/(?:Size|Prev|XRefStm)" + _W + rb"*\d{1,15}"
    rb"|/(?:Root|Info|Encrypt)" + _W + rb"*\d{1,10}" + _W + rb"+\d{1,5}" + _W + rb"+R"
    rb"|/ID"
    + _W
    + rb"*\["
    + _W
    + rb"*"
    + _HEX_OR_LITERAL
    + _W
    + rb"*"
    + _HEX_OR_LITERAL
    + _W
    + rb"*\]"
)


# --------------------------------------------------------------------------- PDFium


class _GuardedFile(AccessFile):
    """An :class:`AccessFile` that never raises into PDFium's read callback.

    An exception inside a ctypes callback cannot cross the C frames; it would
    be printed and lost. A failed read returns short (PDFium sees a read
    error) and the exception is raised again once PDFium returns.
    """

    def __init__(self, source: RandomAccess) -> None:
        super().__init__(source)
        self.error: Unscannable | None = None

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except Unscannable as exc:
            self.error = exc
        except Exception:  # noqa: BLE001 - nothing may escape into C
            self.error = Unscannable("pdf: member could not be read")
        return 0

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _utf16(buffer: ctypes.Array[ctypes.c_ushort], nbytes: int) -> str:
    raw = bytes(memoryview(buffer).cast("B"))[: max(0, nbytes - 2)]
    return raw.decode("utf-16-le", "replace")[:MAX_PDF_STRING_CHARS]


def _annot_string(annot: pdfium_c.FPDF_ANNOTATION, key: bytes) -> str:
    """An annotation's text entry (``Contents``), bounded."""
    nbytes = pdfium_c.FPDFAnnot_GetStringValue(annot, key, None, 0)
    if nbytes <= 2:
        return ""
    nbytes = min(nbytes, 2 * MAX_PDF_STRING_CHARS + 2)
    buffer = (ctypes.c_ushort * (nbytes // 2))()
    pdfium_c.FPDFAnnot_GetStringValue(annot, key, buffer, nbytes)
    return _utf16(buffer, nbytes)


def _field_value(form: pdfium_c.FPDF_FORMHANDLE, annot: pdfium_c.FPDF_ANNOTATION) -> str:
    """A form widget's field value (the field's ``/V``, inherited or not), bounded."""
    nbytes = pdfium_c.FPDFAnnot_GetFormFieldValue(form, annot, None, 0)
    if nbytes <= 2:
        return ""
    nbytes = min(nbytes, 2 * MAX_PDF_STRING_CHARS + 2)
    buffer = (ctypes.c_ushort * (nbytes // 2))()
    pdfium_c.FPDFAnnot_GetFormFieldValue(form, annot, buffer, nbytes)
    return _utf16(buffer, nbytes)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Reported:
    """What has been reported already, when earlier revisions are read too.

    An earlier revision repeats most of the latest: a signature or a filled-in
    form changes a few objects and leaves every page as it was. Its pages,
    comments, field values, metadata lines and attachments are reported only
    when not already reported word for word (by a later revision or an earlier
    page), so a Resident ID on an unchanged page counts once, not once per
    revision. A page whose text changed is reported whole: identifiers on it
    that did not change count again (never fewer findings than the file
    holds; ``distinct`` counts and subjects are unaffected).
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def new(self, text: str) -> bool:
        """Whether ``text`` was not reported before (it is from now on)."""
        digest = _digest(text)
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True

    def note(self, text: str) -> None:
        """Record ``text`` as reported."""
        self._seen.add(_digest(text))


class _Document:
    """One opened revision being rendered into an :class:`Extract`.

    Args:
        label: prefixed to member names: ``""`` for the latest revision,
            ``"revision 2 "`` for an earlier one.
        reported: what was reported already, or None when the file has one
            revision. The latest revision reports everything (and records it);
            an earlier one only what is new.
    """

    def __init__(
        self,
        doc: pdfium.PdfDocument,
        file: _GuardedFile,
        out: Extract,
        totals: _Totals,
        label: str = "",
        reported: _Reported | None = None,
    ) -> None:
        self._doc = doc
        self._file = file
        self._out = out
        self._totals = totals
        self._label = label
        self._reported = reported

    def _fresh(self, text: str) -> bool:
        """Whether to report ``text``: always in the latest revision, once otherwise."""
        if self._reported is None:
            return True
        if not self._label:
            self._reported.note(text)
            return True
        return self._reported.new(text)

    def render(self) -> None:
        self._metadata()
        self._doc.init_forms()
        form = self._doc.formenv.raw if self._doc.formenv else None
        pages = len(self._doc)
        self._totals.add_pages(pages)
        for index in range(pages):
            self._page(index, form)
        count = self._doc.count_attachments()
        for index in range(count):
            self._attachment(pdfium_c.FPDFDoc_GetAttachment(self._doc.raw, index))
        self._file.check()

    def _metadata(self) -> None:
        lines = []
        for key in PDF_METADATA_KEYS:
            value = self._doc.get_metadata_value(key)[:MAX_PDF_STRING_CHARS]
            if value and self._fresh(f"{key}: {value}\n"):
                lines.append(f"{key}: {value}\n")
        if lines:
            member = self._out.member(f"{self._label}metadata", "text/plain")
            member.write("".join(lines))
            member.close()

    def _page(self, index: int, form: pdfium_c.FPDF_FORMHANDLE | None) -> None:
        page = self._doc[index]
        try:
            textpage = page.get_textpage()
            try:
                count = textpage.count_chars()
                if count > MAX_PDF_PAGE_CHARS:
                    raise Unscannable(f"pdf: more than {MAX_PDF_PAGE_CHARS} characters on a page")
                self._totals.add_chars(count)
                text = textpage.get_text_range() if count else ""
            finally:
                textpage.close()
            notes = self._annotations(page, form)
        finally:
            page.close()
        self._file.check()
        if text and not self._fresh(text):
            text = ""
        notes = [note for note in notes if self._fresh(note)]
        if text or notes:
            member = self._out.member(f"{self._label}page {index + 1}", "text/plain")
            member.write(text)
            for note in notes:
                member.write("\n" + note)
            member.close()

    def _annotations(
        self, page: pdfium.PdfPage, form: pdfium_c.FPDF_FORMHANDLE | None
    ) -> list[str]:
        """Comment texts and form field values of a page; attachments handed back."""
        count = pdfium_c.FPDFPage_GetAnnotCount(page.raw)
        if count > MAX_PDF_ANNOTATIONS:
            raise Unscannable(f"pdf: more than {MAX_PDF_ANNOTATIONS} annotations on a page")
        notes: list[str] = []
        for index in range(count):
            annot = pdfium_c.FPDFPage_GetAnnot(page.raw, index)
            if not annot:
                continue
            try:
                contents = _annot_string(annot, b"Contents")
                if contents:
                    notes.append(contents)
                subtype = pdfium_c.FPDFAnnot_GetSubtype(annot)
                if subtype == pdfium_c.FPDF_ANNOT_WIDGET and form:
                    value = _field_value(form, annot)
                    if value:
                        notes.append(value)
                elif subtype == pdfium_c.FPDF_ANNOT_FILEATTACHMENT:
                    self._attachment(pdfium_c.FPDFAnnot_GetFileAttachment(annot))
            finally:
                pdfium_c.FPDFPage_CloseAnnot(annot)
        return notes

    def _attachment(self, raw: pdfium_c.FPDF_ATTACHMENT) -> None:
        """Hand an embedded file back to the decoder (its size was pre-checked)."""
        if not raw:
            return
        self._totals.add_attachment()
        attachment = pdfium.PdfAttachment(raw, self._doc)
        try:
            name = attachment.get_name()[:MAX_PDF_STRING_CHARS]
        except pdfium.PdfiumError:
            name = ""
        try:
            data = bytes(attachment.get_data())
        except pdfium.PdfiumError:
            return  # an attachment without data holds nothing to scan
        self._file.check()
        if self._reported is not None and not self._fresh(
            hashlib.blake2b(data, digest_size=16).hexdigest()
        ):
            return
        nested = self._out.nested(name or f"attachment {self._totals.attachments}")
        nested.write(data)
        nested.close()


class _Prefix:
    """The first ``size`` bytes of a :class:`RandomAccess`: an earlier revision."""

    def __init__(self, source: RandomAccess, size: int) -> None:
        self._source = source
        self._size = size

    @property
    def size(self) -> int:
        """Bytes in the revision."""
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the revision's end)."""
        return self._source.read_at(offset, max(0, min(length, self._size - offset)))


def _render(
    source: RandomAccess,
    out: Extract,
    totals: _Totals,
    label: str = "",
    reported: _Reported | None = None,
) -> bool | None:
    """Open a revision with PDFium and render it.

    Returns:
        whether PDFium read its cross-reference as it stands (False: it rebuilt
        it by scanning the file), or None when an earlier revision (``label``
        set) does not open or fails part-way: its objects are then read as
        unreferenced ones.

    Raises:
        Unscannable: encrypted, corrupt (the latest revision), or past a bound.
    """
    file = _GuardedFile(source)
    try:
        doc = pdfium.PdfDocument(file)
    except pdfium.PdfiumError as exc:
        file.check()
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise Unscannable("pdf: encrypted") from None
        if label:
            return None
        raise Unscannable("pdf: corrupt or unreadable document") from None
    try:
        file.check()
        if pdfium_c.FPDF_GetSecurityHandlerRevision(doc.raw) != -1:
            raise Unscannable("pdf: encrypted")
        _Document(doc, file, out, totals, label, reported).render()
        return bool(pdfium_c.FPDF_DocumentHasValidCrossReferenceTable(doc.raw))
    except pdfium.PdfiumError:
        file.check()
        if label:  # what it reported stays; its objects are read as unreferenced ones
            return None
        raise Unscannable("pdf: corrupt or unreadable document") from None
    finally:
        doc.close()


def _render_unreferenced(layout: _Layout, out: Extract, totals: _Totals) -> None:
    """Report what no rendered revision reads: unreferenced objects (and those in
    object streams no section names), and bytes between objects.

    They are read as PDF syntax, not drawn (nothing says which page, font or
    resources they belong to): strings decoded, streams decoded through their
    filters and read the same way. A stream this module cannot decode (LZW,
    RunLength, Crypt, an unknown filter) makes the file unscannable: it is a
    place to hide data, and no reader of ours sees into it. An unreferenced
    embedded file is handed back to the decoder, like an attachment.
    """
    objects, streams = layout.unreferenced()
    if len(objects) > MAX_PDF_UNREFERENCED:
        raise Unscannable(f"pdf: more than {MAX_PDF_UNREFERENCED} unreferenced objects")
    for index in objects:
        found = _object_at(layout.win, layout.offsets[index])
        if found is not None:
            name = f"unreferenced object {layout.numbers[index]}"
            _unreferenced_object(layout.win, found[1], name, out, totals)
    unnamed = len(objects)
    for index, named in streams:
        unnamed = _unreferenced_in_stream(layout, index, named, out, totals, unnamed)
    _outside_objects(layout, out, totals)


def _refuse_undecodable(data: bytes, dictionary: bytes, totals: _Totals, what: str) -> bytes | None:
    """:func:`_decode` for a stream no page reads: one with a filter not decoded
    makes the file unscannable (``what`` names the stream in the reason)."""
    try:
        return _decode(data, dictionary, totals)
    except _Undecodable:
        raise Unscannable(f"pdf: {what} has a filter not read") from None


def _stream_data(
    win: _Window, obj: _Object, dictionary: bytes, totals: _Totals, what: str
) -> bytes | None:
    """The data of stream ``obj`` through its filters, bounded; None for image data."""
    if obj.data_end - obj.data > MAX_PDF_STREAM_BYTES:
        raise Unscannable(f"pdf: a stream decodes past {MAX_PDF_STREAM_BYTES >> 20} MiB")
    return _refuse_undecodable(win.read(obj.data, obj.data_end), dictionary, totals, what)


def _unreferenced_object(
    win: _Window, obj: _Object, name: str, out: Extract, totals: _Totals
) -> None:
    if obj.value_end - obj.value > MAX_PDF_TEXT_CHARS - totals.chars:
        raise Unscannable(f"pdf: more than {MAX_PDF_TEXT_CHARS} characters")
    dictionary = win.read(obj.value, obj.value_end)
    data = b""
    if obj.data >= 0:
        top = _top_level(dictionary)
        decoded = (
            None
            if _IMAGE.search(top)  # as for referenced images, their data is not read
            else _stream_data(win, obj, dictionary, totals, "an unreferenced stream")
        )
        if decoded is not None and _EMBEDDED_FILE.search(top):
            totals.add_attachment()
            nested = out.nested(name)
            nested.write(decoded)
            nested.close()
        elif decoded is not None:
            data = decoded
    _write_raw(out, name, [dictionary, data], totals)


def _unreferenced_in_stream(
    layout: _Layout,
    index: int,
    named: frozenset[int],
    out: Extract,
    totals: _Totals,
    unnamed: int,
) -> int:
    """Report the objects of an object stream that no cross-reference entry names;
    ``unnamed`` counts unreferenced objects so far (returned updated)."""
    found = _object_at(layout.win, layout.offsets[index])
    if found is None or found[1].data < 0:
        return unnamed
    obj = found[1]
    dictionary = layout.win.read(obj.value, obj.value_end)
    first = _FIRST.search(_top_level(dictionary))
    if first is None:
        return unnamed
    data = _stream_data(layout.win, obj, dictionary, totals, "an object stream")
    if not data:
        return unnamed
    start = int(first.group(1))
    numbers = _COMMENT.sub(b" ", data[:start])  # qpdf's QDF mode writes comments there
    pairs = [int(n) for n in re.findall(rb"\d+", numbers)]
    places = list(zip(pairs[::2], pairs[1::2], strict=False))
    for i, (number, offset) in enumerate(places):
        if (number << _INDEX_BITS | i) in named:
            continue
        unnamed += 1
        if unnamed > MAX_PDF_UNREFERENCED:
            raise Unscannable(f"pdf: more than {MAX_PDF_UNREFERENCED} unreferenced objects")
        end = places[i + 1][1] if i + 1 < len(places) else len(data) - start
        _write_raw(
            out, f"unreferenced object {number}", [data[start + offset : start + end]], totals
        )
    return unnamed


def _outside_objects(layout: _Layout, out: Extract, totals: _Totals) -> None:
    """Report bytes between objects that are not file structure (header, sections, trailers)."""
    spans = sorted(s.span for s in layout.sections.values() if s is not None and s.span)
    lows = [low for low, _ in spans]
    pieces: list[bytes] = []
    size = 0
    for start, end in layout.gaps:
        parts: list[tuple[int, int]] = []
        for low, high in spans[max(0, bisect.bisect_right(lows, start) - 1) :]:
            if low >= end:
                break
            if high <= start:
                continue
            if low > start:  # cut cross-reference tables and trailers out
                parts.append((start, low))
            start = max(start, high)
        if start < end:
            parts.append((start, end))
        for low, high in parts:
            while low < high:
                stop = min(high, low + _SCAN_BLOCK)
                buf, base = layout.win.at(low, stop - low)
                raw = buf[low - base : stop - base]
                piece = _STRUCTURE.sub(b" ", raw)
                if piece.strip(_WHITE):
                    found = [piece, *_loose_streams(raw, totals)]
                    pieces.extend(found)
                    size += sum(len(part) for part in found)
                    if size > MAX_PDF_TEXT_CHARS - totals.chars:
                        raise Unscannable(f"pdf: more than {MAX_PDF_TEXT_CHARS} characters")
                low = stop
    if pieces:
        _write_raw(out, "outside objects", pieces, totals)


def _loose_streams(raw: bytes, totals: _Totals) -> list[bytes]:
    """The decoded data of streams in bytes no object header claims (a header
    glued to the byte before it, a broken one): rendered raw, their data would
    stay compressed."""
    decoded: list[bytes] = []
    for keyword in _STREAM_KEYWORD.finditer(raw):
        end = raw.find(_ENDSTREAM, keyword.end())
        dictionary = _dictionary(raw[max(0, keyword.start() - _DICT_LOOKBACK) : keyword.start()])
        if _IMAGE.search(_top_level(dictionary)):
            continue
        data = _refuse_undecodable(
            raw[keyword.end() : end if end >= 0 else len(raw)],
            dictionary,
            totals,
            "an unreferenced stream",
        )
        if data:
            decoded.append(data)
    return decoded


def _write_raw(out: Extract, name: str, parts: list[bytes], totals: _Totals) -> None:
    """One text member of raw PDF syntax: for each part, its strings, then the rest."""
    rendered: list[str] = []
    for part in parts:
        if not part:
            continue
        strings, rest = _render_raw(part)
        rendered.append(strings)
        rendered.append("\n" + rest.decode("utf-8", "replace"))
    text = "".join(rendered)
    if not text.strip():
        return
    totals.add_chars(len(text))
    member = out.member(name, "text/plain")
    for start in range(0, len(text), _SCAN_BLOCK):
        member.write(text[start : start + _SCAN_BLOCK])
    member.close()


def read_pdf(source: RandomAccess, out: Extract) -> None:
    """Render a PDF's text, annotations, form values and metadata; hand back its files.

    One ``text/plain`` member per page with text (``page 3``), one for the
    document information (``metadata``); embedded files go to
    :meth:`Extract.nested` under their names. Then what the latest revision
    does not show: each earlier revision's pages, metadata and files not
    already reported (``revision 1 page 3``), objects no cross-reference
    reads (``unreferenced object 12``), bytes between objects (``outside
    objects``).

    Raises:
        Unscannable: encrypted, corrupt, or past a bound of this module.
    """
    check_streams(source)
    totals = _Totals()
    layout = _Layout(source, totals)
    layout.walk()
    reported = _Reported() if layout.earlier else None
    with _PDFIUM_LOCK:
        valid = _render(source, out, totals, "", reported)
        layout.rendered(layout.latest, bool(valid), source.size)
        newer_read = bool(valid) and layout.latest is not None
        for revision in reversed(layout.earlier):
            if revision.adds_only and newer_read:
                layout.rendered(revision.chain, True, revision.end)
                continue
            label = f"revision {revision.number} "
            valid = _render(_Prefix(source, revision.end), out, totals, label, reported)
            if valid is not None:
                layout.rendered(revision.chain, valid, revision.end)
            newer_read = bool(valid) and revision.chain is not None
    _render_unreferenced(layout, out, totals)


#: A PDF header (ISO 32000-1 §7.5.2) and an indirect object after it.
_PDF_HEADER: Final = re.compile(rb"%PDF-\d\.\d")
_PDF_OBJECT: Final = re.compile(rb"\d+\s+\d+\s+obj\b")


def sniff_pdf(prefix: bytes) -> bool:
    """A PDF header at the start, or in the first 1024 bytes (where PDFium and
    Acrobat look for it) when an indirect object follows: junk prepended to a
    PDF must not hide it, and a text that merely quotes ``%PDF-`` is not one."""
    if prefix.startswith(b"%PDF-"):
        return True
    header = _PDF_HEADER.search(prefix, 0, 1024 + 8)
    return (
        header is not None
        and header.start() < 1024
        and bool(_PDF_OBJECT.search(prefix, header.end()))
    )
