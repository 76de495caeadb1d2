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
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import re
import threading
import zlib
from typing import Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from gateway.classify.formats.base import AccessFile, Extract, RandomAccess, Unscannable

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
#: Embedded files (document attachments and file-attachment annotations).
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


# --------------------------------------------------------------------------- pre-check


class _Budget:
    """What the pre-check has decoded and read so far."""

    __slots__ = ("decoded", "work", "work_limit")

    def __init__(self, size: int) -> None:
        self.decoded = 0
        self.work = 0
        self.work_limit = 4 * size + PDF_PRECHECK_SLACK_BYTES


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


def _ascii_decode(name: bytes, raw: bytes) -> bytes:
    """ASCIIHex or ASCII85 data decoded (ISO 32000-1 §7.4.2-7.4.3); b"" when corrupt."""
    raw = raw.split(b">" if name in (b"ASCIIHexDecode", b"AHx") else b"~>", 1)[0]
    try:
        if name in (b"ASCIIHexDecode", b"AHx"):
            digits = re.sub(rb"[^0-9A-Fa-f]", b"", raw)
            return binascii.unhexlify(digits + b"0" * (len(digits) % 2))
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
        budget.work += len(block)
        if budget.work > budget.work_limit:
            raise Unscannable("pdf: too many overlapping streams")
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
        budget.work += len(block)
        if budget.work > budget.work_limit:
            raise Unscannable("pdf: too many overlapping streams")
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


class _Document:
    """One opened document being rendered into an :class:`Extract`."""

    def __init__(self, doc: pdfium.PdfDocument, file: _GuardedFile, out: Extract) -> None:
        self._doc = doc
        self._file = file
        self._out = out
        self._chars = 0
        self._attachments = 0

    def render(self) -> None:
        self._metadata()
        self._doc.init_forms()
        form = self._doc.formenv.raw if self._doc.formenv else None
        pages = len(self._doc)
        if pages > MAX_PDF_PAGES:
            raise Unscannable(f"pdf: more than {MAX_PDF_PAGES} pages")
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
            if value:
                lines.append(f"{key}: {value}\n")
        if lines:
            member = self._out.member("metadata", "text/plain")
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
                self._chars += count
                if self._chars > MAX_PDF_TEXT_CHARS:
                    raise Unscannable(f"pdf: more than {MAX_PDF_TEXT_CHARS} characters")
                text = textpage.get_text_range() if count else ""
            finally:
                textpage.close()
            notes = self._annotations(page, form)
        finally:
            page.close()
        self._file.check()
        if text or notes:
            member = self._out.member(f"page {index + 1}", "text/plain")
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
        self._attachments += 1
        if self._attachments > MAX_PDF_ATTACHMENTS:
            raise Unscannable(f"pdf: more than {MAX_PDF_ATTACHMENTS} embedded files")
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
        nested = self._out.nested(name or f"attachment {self._attachments}")
        nested.write(data)
        nested.close()


def read_pdf(source: RandomAccess, out: Extract) -> None:
    """Render a PDF's text, annotations, form values and metadata; hand back its files.

    One ``text/plain`` member per page with text (``page 3``), one for the
    document information (``metadata``); embedded files go to
    :meth:`Extract.nested` under their names.

    Raises:
        Unscannable: encrypted, corrupt, or past a bound of this module.
    """
    check_streams(source)
    with _PDFIUM_LOCK:
        file = _GuardedFile(source)
        try:
            doc = pdfium.PdfDocument(file)
        except pdfium.PdfiumError as exc:
            file.check()
            if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
                raise Unscannable("pdf: encrypted") from None
            raise Unscannable("pdf: corrupt or unreadable document") from None
        try:
            file.check()
            if pdfium_c.FPDF_GetSecurityHandlerRevision(doc.raw) != -1:
                raise Unscannable("pdf: encrypted")
            _Document(doc, file, out).render()
        except pdfium.PdfiumError:
            file.check()
            raise Unscannable("pdf: corrupt or unreadable document") from None
        finally:
            doc.close()


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
