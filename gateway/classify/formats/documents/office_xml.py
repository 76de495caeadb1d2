"""Office Open XML and OpenDocument parts: their text as a reader sees it.

A ``.docx``, ``.xlsx``, ``.pptx``, ``.odt``, ``.ods`` or ``.odp`` file is a zip
archive; the decoder's zip layer opens it and offers each member to the
registry. The XML parts that hold a document's text are recognised here by
their root element (in its namespace, so a producer's choice of prefix does
not matter) and rendered as text; every other part (styles, relationships,
themes) stays with the decoder's text path.

Why a reader at all: the raw markup hides identifiers. Word splits a
paragraph into runs wherever formatting, spell-check state or revision ids
change, so ``<w:t>1101</w:t></w:r><w:r><w:t>05…</w:t>`` is one Resident ID
that no pattern over the raw XML finds. Rendering joins the runs of a
paragraph, ends lines at paragraphs, separates table cells, and renders a
worksheet (or an OpenDocument spreadsheet table) as ``text/csv`` rows whose
first row is the header, so the matcher's column rules apply.

Parsing is :mod:`xml.parsers.expat` driven incrementally (what ElementTree's
``XMLPullParser`` wraps, without building elements we would only throw
away): memory is the open-element stack and one buffered cell or paragraph
piece, whatever the part's size. The stdlib parser never fetches external
entities but does expand internal ones; OOXML (ECMA-376 Part 2 §8.1.4:
packages shall not contain DTD declarations) and ODF parts carry no DTD, so
any document type declaration is refused, and with it every entity
expansion trick (billion laughs, quadratic blowup).

Limits of this rendering (documented in docs/formats.md): a worksheet cell
that refers to a shared string renders empty (the string itself is scanned
in the shared strings part, which the zip usually stores after the sheets);
spreadsheet dates are serial numbers (their style is in another part);
tracked deletions are rendered with the text around them.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final
from xml.parsers import expat

from gateway.classify.formats.base import (
    CELL_CUT_OVERLAP,
    CELL_SEPARATOR,
    MAX_CELL_CHARS,
    Extract,
    TextOut,
    Unscannable,
    csv_line,
)

#: Open elements at once. Word nests tables in tables and text boxes in
#: shapes; real parts stay under 60 levels. Deeper nesting is crafted.
MAX_XML_DEPTH: Final = 256
#: Distinct element names in one part: OOXML and ODF vocabularies have a
#: few hundred; the cache of split names is bounded by this.
MAX_XML_NAMES: Final = 4096
#: Columns of a rendered row: Excel's own limit (XFD = 16,384); ODF tables
#: follow it too (LibreOffice allows 16,384 since 7.4).
MAX_COLUMNS: Final = 16_384
#: Cells an OpenDocument table may produce by repetition
#: (``table:number-columns-repeated`` / ``number-rows-repeated`` on cells
#: that hold a value): a few bytes of XML must not become gigabytes of text.
#: 2^20 is Excel's row count; empty repeated cells cost nothing.
MAX_REPEATED_CELLS: Final = 1 << 20
#: Characters buffered before they are written to the member.
_FLUSH_CHARS: Final = 64 << 10
#: Bytes of a part's start searched for its root element: the whole sniff
#: prefix. Word's root tag declares ~30 namespaces (~3 KB); a part whose root
#: lies further (a padded prolog) is unscannable (:func:`sniff_late_root`).
_ROOT_SCAN_BYTES: Final = 64 << 10
#: Runs of spaces rendered for one ``<text:s text:c="n"/>``.
_MAX_SPACES: Final = 16

_SEP: Final = "}"

W_NS: Final = frozenset(
    (
        "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        "http://purl.oclc.org/ooxml/wordprocessingml/main",
    )
)
S_NS: Final = frozenset(
    (
        "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
        "http://purl.oclc.org/ooxml/spreadsheetml/main",
    )
)
S_THREADED_NS: Final = "http://schemas.microsoft.com/office/spreadsheetml/2018/threadedcomments"
P_NS: Final = frozenset(
    (
        "http://schemas.openxmlformats.org/presentationml/2006/main",
        "http://purl.oclc.org/ooxml/presentationml/main",
        "http://schemas.microsoft.com/office/powerpoint/2018/8/main",
    )
)
PROPS_NS: Final = frozenset(
    (
        "http://schemas.openxmlformats.org/package/2006/metadata/core-properties",
        "http://schemas.openxmlformats.org/officeDocument/2006/extended-properties",
        "http://schemas.openxmlformats.org/officeDocument/2006/custom-properties",
        "http://purl.oclc.org/ooxml/officeDocument/extendedProperties",
        "http://purl.oclc.org/ooxml/officeDocument/customProperties",
    )
)
ODF_OFFICE_NS: Final = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ODF_TABLE_NS: Final = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_ODF_TEXT_NS: Final = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"

#: Root elements (local names) of the parts whose text is rendered.
WORD_ROOTS: Final = frozenset(
    ("document", "hdr", "ftr", "footnotes", "endnotes", "comments", "glossaryDocument")
)
SHEET_ROOTS: Final = frozenset(("worksheet", "sst", "comments"))
SLIDE_ROOTS: Final = frozenset(("sld", "notes", "cmLst"))
PROPS_ROOTS: Final = frozenset(("coreProperties", "Properties"))
ODF_ROOTS: Final = frozenset(("document-content", "document-styles", "document-meta", "document"))


# --------------------------------------------------------------------------- sniffing

_PROLOG: Final = re.compile(
    r"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\]\s*)?>)", re.DOTALL
)
_ROOT_TAG: Final = re.compile(r"<(?:([A-Za-z_][\w.\-]*):)?([A-Za-z_][\w.\-]*)([^>]*)>")
_XMLNS: Final = re.compile(r"""xmlns(?::([\w.\-]+))?\s*=\s*(["'])(.*?)\2""")


def root_element(prefix: bytes) -> tuple[str, str, str] | None:
    """The root element of an XML document from its first bytes.

    Returns:
        ``(namespace, local name, attribute text)`` of the root start tag, or
        None when ``prefix`` does not start (after a BOM, the XML declaration,
        comments, processing instructions and a DOCTYPE) with a complete
        start tag.
    """
    asked, found = _LAST_ROOT.entry  # one read: another thread may replace it
    if asked is prefix:  # the registry asks every sniffer about the same prefix
        return found
    found = _root_element(prefix)
    _LAST_ROOT.entry = (prefix, found)
    return found


#: What an XML document may start with before its root element.
_XML_START: Final = (b"<?xml", b"<!--", b"<!DOCTYPE", b"<?")


def sniff_late_root(prefix: bytes) -> bool:
    """True for XML whose root element is not within the sniffed prefix.

    A prolog padded past the prefix (40 KB of whitespace or a comment before
    ``<w:document>``) would otherwise keep a Word part from its reader, and
    raw markup splits identifiers across runs: such a part is unscannable.
    A complete short document without a root is not XML and is left alone.
    """
    if len(prefix) < _ROOT_SCAN_BYTES:
        return False
    head = prefix.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not head.startswith(_XML_START) and not prefix.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    return root_element(prefix) is None


class LateRootReader:
    """The reader of :func:`sniff_late_root` parts: unscannable at once."""

    def __init__(self, out: Extract) -> None:
        self._out = out

    def feed(self, data: bytes) -> None:
        """Refuse the part."""
        raise Unscannable("xml: root element beyond the first 64 KiB")

    def finish(self) -> None:
        """Refuse the part."""
        raise Unscannable("xml: root element beyond the first 64 KiB")


class _LastRoot:
    """The last prefix asked about and its root, compared by identity (cheap;
    the prefix is held, so its id cannot be reused while it is here)."""

    entry: tuple[bytes | None, tuple[str, str, str] | None] = (None, None)


_LAST_ROOT: Final = _LastRoot()


def _root_element(prefix: bytes) -> tuple[str, str, str] | None:
    head = prefix[:_ROOT_SCAN_BYTES]
    if head.lstrip(b" \t\r\n")[:1] not in (b"<", b"\xef", b"\xff", b"\xfe"):
        return None  # not markup: most members are rejected here
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head[: len(head) & ~1].decode("utf-16", "replace")
    else:
        text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    pos = 0
    while True:
        prolog = _PROLOG.match(text, pos)
        if prolog is None or prolog.end() == pos:
            break
        pos = prolog.end()
    while pos < len(text) and text[pos].isspace():
        pos += 1
    tag = _ROOT_TAG.match(text, pos)
    if tag is None:
        return None
    prefix_name, local, attributes = tag.group(1), tag.group(2), tag.group(3)
    namespaces = {name or "": uri for name, _, uri in _XMLNS.findall(attributes)}
    return namespaces.get(prefix_name or "", ""), local, attributes


def _root_in(prefix: bytes, namespaces: frozenset[str], roots: frozenset[str]) -> bool:
    root = root_element(prefix)
    return root is not None and root[0] in namespaces and root[1] in roots


def sniff_word(prefix: bytes) -> bool:
    """A WordprocessingML part with text (document, headers, notes, comments)."""
    return _root_in(prefix, W_NS, WORD_ROOTS)


def sniff_sheet(prefix: bytes) -> bool:
    """A SpreadsheetML worksheet, shared strings or comments part."""
    root = root_element(prefix)
    return root is not None and (
        (root[0] in S_NS and root[1] in SHEET_ROOTS)
        or (root[0] == S_THREADED_NS and root[1] == "ThreadedComments")
    )


def sniff_slide(prefix: bytes) -> bool:
    """A PresentationML slide, notes page or comment list."""
    return _root_in(prefix, P_NS, SLIDE_ROOTS)


def sniff_properties(prefix: bytes) -> bool:
    """OOXML document properties: core (title, creator), extended, custom."""
    return _root_in(prefix, PROPS_NS, PROPS_ROOTS)


_ODF_BODY: Final = re.compile(
    rb"<(?:[\w.\-]+:)?body\b[^>]*>\s*<(?:[\w.\-]+:)?(text|spreadsheet|presentation|drawing)\b"
)
_ODF_MIMETYPE: Final = re.compile(
    r"mimetype\s*=\s*[\"']application/vnd\.oasis\.opendocument\.(\w+)"
)
_ODF_KINDS: Final = {"text": "text", "spreadsheet": "spreadsheet", "presentation": "presentation"}


def odf_kind(prefix: bytes) -> str | None:
    """``text``, ``spreadsheet`` or ``presentation`` for an OpenDocument XML part
    whose body (or flat document's mimetype) is in ``prefix``; ``""`` for other
    OpenDocument parts (styles, meta, a body further on); None if not ODF."""
    root = root_element(prefix)
    if root is None or root[0] != ODF_OFFICE_NS or root[1] not in ODF_ROOTS:
        return None
    flat = _ODF_MIMETYPE.search(root[2])
    if flat is not None:
        return _ODF_KINDS.get(flat.group(1), "")
    body = _ODF_BODY.search(prefix)
    return _ODF_KINDS.get(body.group(1).decode(), "") if body else ""


# --------------------------------------------------------------------------- rendering


def _local(name: str) -> str:
    return name.rpartition(_SEP)[2]


def number_text(value: str) -> str:
    """A stored number as the digits a person typed: ``1.3812345678E+10`` and
    ``13812345678.0`` become ``13812345678``; other values are kept."""
    if "E" not in value and "e" not in value and not value.endswith(".0"):
        return value  # plain digits or a fraction: already as typed
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value
    if not number.is_finite() or number.adjusted() > 30 or number != number.to_integral_value():
        return value
    return str(int(number))


class _Renderer:
    """Receives a part's parse events and writes its members."""

    def start(self, local: str, attrs: dict[str, str]) -> None:
        """An element opens."""

    def end(self, local: str) -> None:
        """An element closes."""

    def chars(self, text: str) -> None:
        """Character data."""

    def close(self) -> None:
        """The part ended: write what is buffered and close members."""


class _Text:
    """A text/plain member opened on its first non-blank text, written in blocks."""

    def __init__(self, out: Extract, name: str, content_type: str = "text/plain") -> None:
        self._out = out
        self._name = name
        self._type = content_type
        self._member: TextOut | None = None
        self._parts: list[str] = []
        self._size = 0
        self._blank = True
        self._line_open = False

    def newline(self) -> None:
        """End the current line, unless it is empty: blank lines say nothing."""
        if self._line_open:
            self.write("\n")

    def write(self, text: str) -> None:
        if self._blank and text.isspace():
            return
        self._blank = False
        self._line_open = not text.endswith("\n")
        self._parts.append(text)
        self._size += len(text)
        if self._size >= _FLUSH_CHARS:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            if self._member is None:
                self._member = self._out.member(self._name, self._type)
            self._member.write("".join(self._parts))
            self._parts.clear()
            self._size = 0

    def close(self) -> None:
        self.flush()
        if self._member is not None:
            self._member.close()
            self._member = None


class _ProseRenderer(_Renderer):
    """Paragraph text: runs joined, a line per paragraph, tabs between cells.

    Args:
        breaks: elements that end a line when they close (paragraphs, rows).
        cells: elements followed by a tab when they close (table cells).
        marks: empty elements that stand for a character (``w:tab``, ``w:br``).
        skip: elements whose content is not rendered (``mc:Fallback``, which
            repeats its ``mc:Choice``; phonetic guides).
        every_break: end a line after every element (property lists).
        label: attribute (local name) rendered before an element's text
            (a custom property's ``name``).
    """

    def __init__(
        self,
        text: _Text,
        *,
        breaks: frozenset[str] = frozenset(),
        cells: frozenset[str] = frozenset(),
        marks: dict[str, str] | None = None,
        skip: frozenset[str] = frozenset(),
        every_break: bool = False,
        label: str = "",
    ) -> None:
        self._text = text
        self._breaks = breaks
        self._cells = cells
        self._marks = marks or {}
        self._skip = skip
        self._every_break = every_break
        self._label = label
        self._skipping = 0

    def start(self, local: str, attrs: dict[str, str]) -> None:
        if self._skipping or local in self._skip:
            self._skipping += 1
            return
        mark = self._marks.get(local)
        if mark is not None:
            self._text.write(mark)
        if self._label:
            for name, value in attrs.items():
                if _local(name) == self._label:
                    self._text.write(value + ": ")

    def end(self, local: str) -> None:
        if self._skipping:
            self._skipping -= 1
            return
        if self._every_break or local in self._breaks:
            self._text.newline()
        elif local in self._cells:
            self._text.write("\t")

    def chars(self, text: str) -> None:
        # Property lists are indented XML: whitespace between values is layout.
        if not self._skipping and not (self._every_break and text.isspace()):
            self._text.write(text)

    def close(self) -> None:
        self._text.close()


class _Row:
    """One table row being rendered: cells placed by column, trailing empties dropped."""

    __slots__ = ("cells", "pending")

    def __init__(self) -> None:
        self.cells: list[str] = []
        self.pending = 0  # empty cells not yet materialised

    def add(self, value: str, repeat: int = 1) -> int:
        """Append ``value`` ``repeat`` times; the cells materialised."""
        if not value:
            self.pending += repeat
            return 0
        if len(self.cells) + self.pending + repeat > MAX_COLUMNS:
            raise Unscannable(f"office: a row of more than {MAX_COLUMNS} columns")
        self.cells.extend([""] * self.pending)
        self.pending = 0
        self.cells.extend([value] * repeat)
        return repeat

    def place(self, column: int, value: str) -> None:
        """Put ``value`` in zero-based ``column`` (cells of a worksheet name their column)."""
        if column >= MAX_COLUMNS:
            raise Unscannable(f"office: a row of more than {MAX_COLUMNS} columns")
        filled = len(self.cells) + self.pending
        if column < filled:
            # out of order or repeated reference: keep the value, in the next column
            self.add(value)
            return
        self.pending += column - filled
        self.add(value)


_CELL_REF: Final = re.compile(r"([A-Z]{1,3})\d*")


def _column(reference: str | None, default: int) -> int:
    """Zero-based column of a cell reference (``C7`` -> 2)."""
    if reference is None:
        return default
    found = _CELL_REF.match(reference)
    if found is None:
        return default
    column = 0
    for letter in found.group(1):
        column = column * 26 + ord(letter) - 64
    return column - 1


#: Worksheet elements whose text is not a cell's value but is shown, printed
#: or evaluated: formulas (a string literal in ``=LEN("…")`` is nowhere
#: else), print headers and footers, data-validation lists and conditional
#: formats' formulas.
_SHEET_NOTE_ELEMENTS: Final = frozenset(
    (
        "f",
        "oddHeader",
        "oddFooter",
        "evenHeader",
        "evenFooter",
        "firstHeader",
        "firstFooter",
        "formula1",
        "formula2",
        "formula",
    )
)
#: Attributes shown to whoever opens the sheet: a validation's prompt and
#: error message, a hyperlink's text and tooltip.
_SHEET_NOTE_ATTRIBUTES: Final = {
    "dataValidation": ("promptTitle", "prompt", "errorTitle", "error"),
    "hyperlink": ("display", "tooltip"),
}
#: A print header's codes: its sections (``&L``, ``&C``, ``&R``: each on a line
#: of its own), then fonts (``&"font,style"``), font sizes and one-letter codes
#: (``&P`` page number, ``&B`` bold…), which are dropped: a code between two
#: halves of a number must not split it. ``&&`` is an ``&``.
_HEADER_SECTIONS: Final = re.compile(r"&[LCR]")
_HEADER_CODES: Final = re.compile(r'&"[^"]*"|&\d+|&[A-Za-z]')
#: Characters of a sheet's notes kept before they are written; past this they
#: are written mid-sheet, and the rows after continue as a new member.
_MAX_HELD_NOTES: Final = 1 << 20


class _SheetRenderer(_Renderer):
    """A SpreadsheetML worksheet as ``text/csv``: one line per non-empty row.

    Values are the cell's ``<v>`` (numbers as their digits, booleans, errors,
    formula results) or inline string; a shared-string cell renders empty
    (its text is in the shared strings part), and a row of them stays an
    empty row so the header stays first. Formulas, print headers and
    footers, data-validation lists and messages, conditional formats'
    formulas and hyperlink texts go to a second, ``text/plain`` member
    ("worksheet notes"), one per line, written after the rows so that the
    table's header row still precedes every row.
    """

    def __init__(self, out: Extract) -> None:
        self._text = _Text(out, "worksheet", "text/csv")
        self._notes = _Text(out, "worksheet notes", "text/plain")
        self._held: list[str] = []
        self._held_chars = 0
        self._note: list[str] | None = None
        self._note_chars = 0
        self._note_element = ""
        self._row: _Row | None = None
        self._cell: list[str] | None = None
        self._type = ""
        self._column = 0
        self._next = 0
        self._cells = 0
        self._skipping = 0

    def _hold(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self._held.append(text + "\n")
        self._held_chars += len(text) + 1
        if self._held_chars >= _MAX_HELD_NOTES:
            self._write_notes()

    def _write_notes(self) -> None:
        for line in self._held:
            self._notes.write(line)
        self._notes.flush()
        self._held.clear()
        self._held_chars = 0

    def start(self, local: str, attrs: dict[str, str]) -> None:
        if self._skipping or (local == "rPh" and self._cell is not None):
            self._skipping += 1
        elif self._note is not None:
            return  # an element inside a note (x14's formula1 holds an xm:f)
        elif local in _SHEET_NOTE_ELEMENTS:
            self._note = []
            self._note_chars = 0
            self._note_element = local
        elif local == "row":
            self._row = _Row()
            self._next = 0
            self._cells = 0
        elif local == "c" and self._row is not None:
            self._cells = min(self._cells + 1, MAX_COLUMNS)
            self._cell = []
            self._type = attrs.get("t", "n")
            self._column = _column(attrs.get("r"), self._next)
        else:
            for name in _SHEET_NOTE_ATTRIBUTES.get(local, ()):
                value = attrs.get(name)
                if value:
                    self._hold(value)

    def end(self, local: str) -> None:
        if self._skipping:
            self._skipping -= 1
        elif self._note is not None:
            if local != self._note_element:
                return
            self._hold_note()
            self._note = None
        elif local == "c" and self._row is not None and self._cell is not None:
            value = "".join(self._cell)
            if self._type == "s":
                value = ""
            elif self._type == "n":
                value = number_text(value.strip())
            self._row.place(self._column, value)
            self._next = self._column + 1
            self._cell = None
        elif local == "row" and self._row is not None:
            if self._row.cells:
                self._text.write(csv_line(self._row.cells))
            elif self._cells:
                # A row of shared strings (a header row, usually) stays a row,
                # so the data rows keep their places under it.
                self._text.write(CELL_SEPARATOR * (self._cells - 1) + "\n")
            self._row = None

    def _hold_note(self) -> None:
        assert self._note is not None
        text = "".join(self._note)
        if self._note_element.endswith(("Header", "Footer")):
            text = _HEADER_SECTIONS.sub("\n", text.replace("&&", "\0"))
            text = _HEADER_CODES.sub("", text).replace("\0", "&")
        for line in text.splitlines():
            self._hold(line)

    def chars(self, text: str) -> None:
        if self._skipping:
            return
        if self._note is not None:
            self._note.append(text)
            self._note_chars += len(text)
            if self._note_chars > MAX_CELL_CHARS:
                # A very long formula: held in pieces that overlap as a long
                # cell's do, so no identifier is cut (one in the overlap may
                # count twice).
                self._hold_note()
                self._note = ["".join(self._note)[-CELL_CUT_OVERLAP:]]
                self._note_chars = len(self._note[0])
        elif self._cell is not None:
            self._cell.append(text)

    def close(self) -> None:
        self._text.close()
        self._write_notes()
        self._notes.close()


_ODF_NUMERIC: Final = {
    "float": "value",
    "percentage": "value",
    "currency": "value",
    "date": "date-value",
    "time": "time-value",
    "boolean": "boolean-value",
}


class _OdfRenderer(_Renderer):
    """OpenDocument content: prose as lines; spreadsheet tables as ``text/csv`` members.

    Text outside spreadsheet tables goes to one ``text/plain`` member (tables
    of a text document become tab-separated lines in it). Each
    ``table:table`` of a spreadsheet becomes its own ``text/csv`` member; a
    numeric cell renders its ``office:value`` (the stored number, not its
    display format), and repeated rows and cells are repeated up to
    :data:`MAX_REPEATED_CELLS`.
    """

    _MARKS: Final = {"tab": "\t", "line-break": "\n", "annotation": "\n"}
    #: Elements that end a line of prose, or a line within a cell: paragraphs,
    #: headings, an annotation's author and date (which would otherwise run
    #: into the text they annotate), and a flat document's metadata fields.
    _BLOCKS: Final = frozenset(
        (
            "p",
            "h",
            "list-item",
            "creator",
            "date",
            "initial-creator",
            "creation-date",
            "title",
            "subject",
            "description",
            "keyword",
            "generator",
            "user-defined",
            "printed-by",
        )
    )

    def __init__(self, out: Extract, name: str) -> None:
        self._out = out
        self._prose = _Text(out, name)
        self._table: _Text | None = None
        self._tables = 0
        self._spreadsheet = 0
        self._row: _Row | None = None
        self._row_repeat = 1
        self._cell: list[str] | None = None
        self._cell_value: str | None = None
        self._cell_repeat = 1
        self._repeated = 0
        # Element depth now, and where the open table, row and cell started:
        # a sub-table inside a cell must not end them.
        self._level = 0
        self._table_level = self._row_level = self._cell_level = 0

    @staticmethod
    def _attr(attrs: dict[str, str], namespace: str, local: str) -> str | None:
        return attrs.get(namespace + _SEP + local)

    def _repeat(self, attrs: dict[str, str], local: str) -> int:
        raw = self._attr(attrs, _ODF_TABLE_NS, local) or "1"
        return max(1, int(raw)) if raw.isdigit() and len(raw) < 10 else 1

    def start(self, local: str, attrs: dict[str, str]) -> None:
        self._level += 1
        if local == "spreadsheet":
            self._spreadsheet += 1
        elif self._cell is not None:
            # inside a spreadsheet cell (its paragraphs, annotation, a sub-table):
            # every block in it ends with a line break (see end)
            if local == "s":
                self._cell.append(" ")
        elif local == "table" and self._spreadsheet and self._table is None:
            self._tables += 1
            self._table_level = self._level
            name = self._attr(attrs, _ODF_TABLE_NS, "name") or str(self._tables)
            self._table = _Text(self._out, f"table {name}", "text/csv")
        elif local == "table-row" and self._table is not None and self._row is None:
            self._row = _Row()
            self._row_level = self._level
            self._row_repeat = self._repeat(attrs, "number-rows-repeated")
        elif local in ("table-cell", "covered-table-cell") and self._row is not None:
            self._cell = []
            self._cell_level = self._level
            self._cell_repeat = self._repeat(attrs, "number-columns-repeated")
            kind = self._attr(attrs, ODF_OFFICE_NS, "value-type")
            key = _ODF_NUMERIC.get(kind or "")
            self._cell_value = self._attr(attrs, ODF_OFFICE_NS, key) if key else None
        elif local == "s":
            count = self._attr(attrs, _ODF_TEXT_NS, "c") or "1"
            self._prose.write(" " * (min(int(count), _MAX_SPACES) if count.isdigit() else 1))
        elif local in self._MARKS:
            self._prose.write(self._MARKS[local])

    def end(self, local: str) -> None:
        level = self._level
        self._level -= 1
        if local == "spreadsheet":
            self._spreadsheet -= 1
        elif self._cell is not None and level == self._cell_level:
            value = self._cell_value
            value = "".join(self._cell).strip() if value is None else number_text(value)
            assert self._row is not None
            self._count(self._row.add(value, self._cell_repeat) - 1)
            self._cell = None
        elif self._cell is not None:
            if local in self._BLOCKS or local in ("table-cell", "table-row"):
                self._cell.append("\n")
        elif self._row is not None and level == self._row_level:
            assert self._table is not None
            if self._row.cells:
                self._count(len(self._row.cells) * (self._row_repeat - 1))
                line = csv_line(self._row.cells)
                for _ in range(self._row_repeat):
                    self._table.write(line)
            self._row = None
        elif self._table is not None and level == self._table_level:
            self._table.close()
            self._table = None
        elif local in self._BLOCKS or local == "table-row":
            self._prose.newline()
        elif local == "table-cell":
            self._prose.write("\t")

    def _count(self, cells: int) -> None:
        self._repeated += max(0, cells)
        if self._repeated > MAX_REPEATED_CELLS:
            raise Unscannable(f"ods: more than {MAX_REPEATED_CELLS} repeated cells")

    def chars(self, text: str) -> None:
        if self._cell is not None:
            self._cell.append(text)
        elif self._table is None:
            self._prose.write(text)

    def close(self) -> None:
        if self._table is not None:
            self._table.close()
        self._prose.close()


_FALLBACK: Final = frozenset(("Fallback",))
#: Word's empty elements that stand for characters; a text box starts a line
#: of its own (its paragraphs sit inside a run of the paragraph anchoring it).
_WORD_MARKS: Final = {
    "tab": "\t",
    "br": "\n",
    "cr": "\n",
    "noBreakHyphen": "-",
    "txbxContent": "\n",
}
_MEMBER_NAMES: Final = {"hdr": "header", "ftr": "footer", "sst": "shared strings", "sld": "slide"}


def _renderer(namespace: str, local: str, out: Extract) -> _Renderer:
    """The renderer for a part with this root element."""
    name = _MEMBER_NAMES.get(local, local)
    if namespace in W_NS:
        return _ProseRenderer(
            _Text(out, name),
            breaks=frozenset(("p", "tr")),
            cells=frozenset(("tc",)),
            marks=_WORD_MARKS,
            skip=_FALLBACK,
        )
    if namespace in S_NS and local == "worksheet":
        return _SheetRenderer(out)
    if namespace in S_NS or namespace == S_THREADED_NS:
        return _ProseRenderer(
            _Text(out, name),
            breaks=frozenset(("si", "author", "comment", "threadedComment")),
            skip=frozenset(("rPh", "phoneticPr")),
        )
    if namespace in P_NS:
        return _ProseRenderer(
            _Text(out, name),
            breaks=frozenset(("p", "tr", "cm")),
            cells=frozenset(("tc",)),
            marks={"br": "\n", "tab": "\t", "txBody": "\n"},
            skip=_FALLBACK,
        )
    if namespace == ODF_OFFICE_NS and local != "document-meta":
        return _OdfRenderer(out, name.removeprefix("document-") or "document")
    # Property lists (OOXML core/app/custom, ODF meta): one value per line.
    return _ProseRenderer(_Text(out, "properties"), every_break=True, label="name")


class XmlTextReader:
    """A :class:`~gateway.classify.formats.base.StreamReader` for one OOXML or ODF part.

    The renderer is chosen from the root element as parsed (not from the
    sniffer), so a part always gets the rendering its content calls for.
    """

    def __init__(self, out: Extract) -> None:
        self._out = out
        self._renderer: _Renderer | None = None
        self._depth = 0
        self._failed = False
        #: Element names split once: a part repeats a few dozen names.
        self._names: dict[str, tuple[str, str]] = {}
        parser = expat.ParserCreate(namespace_separator=_SEP)
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._doctype
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._chars
        self._parser = parser

    def _doctype(self, *_: object) -> None:
        raise Unscannable("xml: document type declaration refused")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._depth > MAX_XML_DEPTH:
            raise Unscannable(f"xml: elements nested more than {MAX_XML_DEPTH} deep")
        split = self._names.get(name)
        if split is None:
            namespace, _, local = name.rpartition(_SEP)
            split = self._names[name] = (namespace, local)
            if len(self._names) > MAX_XML_NAMES:
                raise Unscannable(f"xml: more than {MAX_XML_NAMES} element names")
        if self._renderer is None:
            self._renderer = _renderer(split[0], split[1], self._out)
        self._renderer.start(split[1], attrs)

    def _end(self, name: str) -> None:
        self._depth -= 1
        assert self._renderer is not None
        self._renderer.end(self._names[name][1])

    def _chars(self, text: str) -> None:
        if self._renderer is not None:
            self._renderer.chars(text)

    def _parse(self, data: bytes, final: bool) -> None:
        if self._failed:
            return
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError:
            self._failed = True
            raise Unscannable("xml: malformed document") from None
        except Unscannable:
            self._failed = True
            raise
        except LookupError:  # an encoding declaration Python does not know
            self._failed = True
            raise Unscannable("xml: unknown encoding") from None
        except (ValueError, RecursionError, MemoryError):
            self._failed = True
            raise Unscannable("xml: unreadable document") from None

    def feed(self, data: bytes) -> None:
        """The next bytes of the part."""
        self._parse(data, False)

    def finish(self) -> None:
        """The part ended: it must be a complete document."""
        if self._failed:
            return
        self._parse(b"", True)
        if self._renderer is not None:
            self._renderer.close()


def make_xml_reader(out: Extract) -> XmlTextReader:
    """Factory registered for every OOXML and ODF part type."""
    return XmlTextReader(out)
