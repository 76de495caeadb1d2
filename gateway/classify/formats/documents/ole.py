"""Legacy Office: Excel ``.xls``, Word ``.doc`` and PowerPoint ``.ppt`` compound files.

All three are OLE2 compound files ([MS-CFB]: magic ``D0 CF 11 E0 A1 B1 1A
E1``), a small FAT file system whose streams hold the document. The raw
bytes show nothing reliable (UTF-16 text split across sectors, numbers as
IEEE doubles), so the streams are decoded:

* the compound file itself with olefile (pure Python, BSD, the reference
  reader used by oletools and most malware-analysis tooling), opened with
  ``DEFECT_INCORRECT`` so a malformed file is refused instead of patched up;
* ``.xls`` with python-calamine (the Rust calamine crate, MIT: fast, no
  Python loop per record), every sheet as ``text/csv``. calamine's own
  compound-file layer follows chains without loop detection and reserves
  what a DIMENSIONS record says (an allocation failure in Rust aborts the
  process), so it never sees the upload: the workbook stream is read by
  olefile, its records checked (:func:`check_workbook`), and calamine parses
  a compound file rebuilt around that one stream (:func:`compound_file`);
* ``.doc`` by the documented piece table ([MS-DOC] §2.4.1 "Retrieving
  Text"): the FIB gives the ``Clx`` in the table stream, whose ``PlcPcd``
  maps character positions to 8-bit (cp1252, "compressed") or UTF-16 runs of
  the ``WordDocument`` stream;
* ``.ppt`` by walking the records of the "PowerPoint Document" stream
  ([MS-PPT] §2.3.1 record header) for its text atoms;
* the summary information property sets ([MS-OLEPS]: title, author,
  keywords, comments, company …) of all three, as a ``properties`` member.

Encrypted content ([MS-OFFCRYPTO]: an ``EncryptedPackage`` stream, Word's
``fEncrypted`` FIB bit, Excel's ``FILEPASS`` record, PowerPoint's
``CryptSession10Container`` or ``EncryptedSummary``) is unscannable with
"ole: encrypted content". Anything else unreadable is unscannable with a
reason; every stream, record and cell count is bounded below.
"""

from __future__ import annotations

import datetime as _dt
import io
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from gateway.classify.formats import Magic
from gateway.classify.formats.base import (
    AccessFile,
    Extract,
    LazyModule,
    RandomAccess,
    Unscannable,
    csv_line,
)

# The libraries load when a compound file arrives (LazyModule: the registry
# imports this module at the first scan; sniffing reads the header itself).
if TYPE_CHECKING:
    import olefile
    import python_calamine
else:
    olefile = LazyModule("olefile")
    python_calamine = LazyModule("python_calamine")

#: Largest compound file opened. olefile keeps the FAT (4 bytes per sector)
#: and every directory entry it reaches in memory, and calamine reads an
#: ``.xls`` whole; 128 MiB covers image-heavy presentations (the largest
#: legacy files in practice) while bounding that memory.
MAX_OLE_BYTES: Final = 128 << 20
#: Largest single stream read into memory (olefile reads a stream whole):
#: Word's text and table streams, PowerPoint's document stream, Excel's
#: workbook stream. A 1,000-page Word document's WordDocument stream is
#: ~5 MB; pictures live in other streams that are never read.
MAX_OLE_STREAM_BYTES: Final = 64 << 20
#: Largest summary-information stream parsed: real ones are a few KiB.
MAX_PROPERTY_STREAM_BYTES: Final = 1 << 20
#: Characters of Word text decoded (the piece table's total): 64 Mi
#: characters is ~20,000 pages.
MAX_DOC_CHARS: Final = 64 << 20
#: Pieces in a Word piece table: one per edit span; heavily fast-saved
#: documents reach a few thousand.
MAX_DOC_PIECES: Final = 1 << 20
#: Records walked in a PowerPoint document stream: a 500-slide deck has a
#: few hundred thousand.
MAX_PPT_RECORDS: Final = 4 << 20
#: Records walked in an Excel workbook stream (one per cell, at least 10
#: bytes each: the stream bound allows ~6 million).
MAX_XLS_RECORDS: Final = 8 << 20
#: Cells of the sheets' used ranges together. calamine materialises a
#: sheet's range densely (rows x columns, ~32 bytes a cell), so two cells
#: at A1 and IV65536 cost 16 Mi cells; 4 Mi cells (65,536 rows x 64
#: columns) bounds that memory to ~128 MiB.
MAX_XLS_CELLS: Final = 4 << 20
#: Characters kept from one summary-information property.
MAX_PROPERTY_CHARS: Final = 64 << 10

#: The compound file signature ([MS-CFB] §2.2).
OLE_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_WORD: Final = "WordDocument"
_EXCEL: Final = ("Workbook", "Book")
_POWERPOINT: Final = "PowerPoint Document"
_ENCRYPTED: Final = ("EncryptedPackage", "EncryptedSummary")

#: What olefile and the stream parsers raise on malformed input (olefile
#: raises OSError for defects and lets struct, index and value errors of a
#: hostile file through).
_CORRUPT: Final = (
    OSError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    ZeroDivisionError,
    RecursionError,
    MemoryError,
    struct.error,
    EOFError,
)


def _stream(ole: olefile.OleFileIO, name: str, limit: int = MAX_OLE_STREAM_BYTES) -> bytes:
    """A whole stream, refused past ``limit`` bytes."""
    if ole.get_size(name) > limit:
        raise Unscannable(f"ole: stream over {limit >> 20} MiB")
    with ole.openstream(name) as stream:
        data: bytes = stream.read(limit + 1)
    return data


# --------------------------------------------------------------------------- properties

#: Summary-information properties rendered ([MS-OLEPS] §2.25-2.26): the
#: free-text ones, never counts or dates.
PROPERTY_NAMES: Final = (
    "title",
    "subject",
    "author",
    "keywords",
    "comments",
    "last_saved_by",
    "category",
    "manager",
    "company",
)


def _property_text(value: object, codepage: object) -> str:
    if isinstance(value, bytes):
        # olefile reads the VT_I2 codepage as signed: 65001 (UTF-8) arrives as -535.
        page = codepage & 0xFFFF if isinstance(codepage, int) else 0
        encoding = {65001: "utf-8", 1200: "utf-16-le", 0: "cp1252"}.get(page, f"cp{page}")
        try:
            text = value.decode(encoding, "replace")
        except LookupError:
            text = value.decode("cp1252", "replace")
    elif isinstance(value, str):
        text = value
    else:
        return ""
    return text.rstrip("\x00")[:MAX_PROPERTY_CHARS]


def _properties(ole: olefile.OleFileIO, out: Extract) -> None:
    for name in ("\x05SummaryInformation", "\x05DocumentSummaryInformation"):
        if ole.exists(name) and ole.get_size(name) > MAX_PROPERTY_STREAM_BYTES:
            raise Unscannable("ole: summary information over 1 MiB")
    meta = ole.get_metadata()
    lines = []
    for name in PROPERTY_NAMES:
        text = _property_text(getattr(meta, name, None), meta.codepage)
        if text.strip():
            lines.append(f"{name}: {text}\n")
    if lines:
        member = out.member("properties", "text/plain")
        member.write("".join(lines))
        member.close()


# --------------------------------------------------------------------------- Word

#: Word's control characters in the text stream ([MS-DOC] §2.8.x and
#: "Special characters"): paragraph and cell marks, line and page breaks,
#: field delimiters, anchors of pictures and notes, special hyphens.
_WORD_CONTROLS: Final = str.maketrans(
    {
        "\r": "\n",
        "\x07": "\t",
        "\x0b": "\n",
        "\x0c": "\n",
        "\x0e": "\n",
        "\x13": " ",
        "\x14": " ",
        "\x15": " ",
        "\x01": None,
        "\x02": None,
        "\x05": None,
        "\x08": None,
        "\x1e": "-",
        "\x1f": None,
    }
)
_FIB_IDENT: Final = 0xA5EC
#: nFib of Word 97 and every later FibBase ([MS-DOC] §2.5.2): Word 6/95
#: files (nFib 101-105) have another FIB and no piece table in this form.
_FIB_WORD97: Final = 0x00C1
_F_ENCRYPTED: Final = 0x0100
_F_WHICH_TABLE: Final = 0x0200
#: fcClx/lcbClx are the 34th pair of FibRgFcLcb97 (index 33).
_CLX_PAIR: Final = 33
_PCD_COMPRESSED: Final = 0x40000000


def word_text(word: bytes, tables: dict[str, bytes]) -> str:
    """The text of a Word 97+ document from its WordDocument and table streams.

    Args:
        word: the ``WordDocument`` stream.
        tables: the table streams present (``"0Table"``, ``"1Table"``).

    Raises:
        Unscannable: encrypted, pre-97, or a FIB or piece table that does not
            fit its streams.
    """
    if len(word) < 34:
        raise Unscannable("doc: truncated file information block")
    ident, nfib = struct.unpack_from("<HH", word, 0)
    (flags,) = struct.unpack_from("<H", word, 0x0A)
    if ident != _FIB_IDENT:
        raise Unscannable("doc: not a Word binary document")
    if flags & _F_ENCRYPTED:
        raise Unscannable("ole: encrypted content")
    if nfib < _FIB_WORD97:
        raise Unscannable("doc: Word 95 or older format not inspected")
    table = tables.get("1Table" if flags & _F_WHICH_TABLE else "0Table")
    if table is None:
        raise Unscannable("doc: table stream missing")
    # FibBase (32 bytes), csw + FibRgW97, cslw + FibRgLw97, cbRgFcLcb + FibRgFcLcb.
    (csw,) = struct.unpack_from("<H", word, 32)
    offset = 34 + 2 * csw
    (cslw,) = struct.unpack_from("<H", word, offset)
    offset += 2 + 4 * cslw
    (pairs,) = struct.unpack_from("<H", word, offset)
    if pairs <= _CLX_PAIR:
        raise Unscannable("doc: file information block without a piece table")
    fc_clx, lcb_clx = struct.unpack_from("<II", word, offset + 2 + 8 * _CLX_PAIR)
    if fc_clx + lcb_clx > len(table) or lcb_clx == 0:
        raise Unscannable("doc: piece table outside its stream")
    return "".join(_pieces(word, table[fc_clx : fc_clx + lcb_clx])).translate(_WORD_CONTROLS)


def _pieces(word: bytes, clx: bytes) -> Iterator[str]:
    """The text of each piece of a Clx ([MS-DOC] §2.9.38 Clx, §2.9.177 PlcPcd)."""
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:  # Prc: clxt, cbGrpprl, GrpPrl
        (size,) = struct.unpack_from("<h", clx, pos + 1)
        if size < 0:
            raise Unscannable("doc: corrupt piece table")
        pos += 3 + size
    if pos + 5 > len(clx) or clx[pos] != 0x02:
        raise Unscannable("doc: corrupt piece table")
    (lcb,) = struct.unpack_from("<I", clx, pos + 1)
    plc = clx[pos + 5 : pos + 5 + lcb]
    if len(plc) != lcb or lcb < 16 or (lcb - 4) % 12:
        raise Unscannable("doc: corrupt piece table")
    count = (lcb - 4) // 12
    if count > MAX_DOC_PIECES:
        raise Unscannable(f"doc: more than {MAX_DOC_PIECES} pieces")
    cps = struct.unpack_from(f"<{count + 1}I", plc, 0)
    total = 0
    for index in range(count):
        chars = cps[index + 1] - cps[index]
        total += chars
        if chars < 0 or total > MAX_DOC_CHARS:
            raise Unscannable("doc: corrupt piece table")
        (fc,) = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * index + 2)
        if fc & _PCD_COMPRESSED:
            start = (fc & ~_PCD_COMPRESSED) // 2
            raw = word[start : start + chars]
            if len(raw) != chars:
                raise Unscannable("doc: piece outside the text stream")
            yield raw.decode("cp1252", "replace")
        else:
            raw = word[fc : fc + 2 * chars]
            if len(raw) != 2 * chars:
                raise Unscannable("doc: piece outside the text stream")
            yield raw.decode("utf-16-le", "replace")


def _read_word(ole: olefile.OleFileIO, out: Extract) -> None:
    word = _stream(ole, _WORD)
    tables = {name: _stream(ole, name) for name in ("0Table", "1Table") if ole.exists(name)}
    text = word_text(word, tables)
    if text.strip():
        member = out.member("document", "text/plain")
        member.write(text)
        member.close()


# --------------------------------------------------------------------------- PowerPoint

_PPT_TEXT_CHARS: Final = 0x0FA0  # TextCharsAtom: UTF-16LE
_PPT_TEXT_BYTES: Final = 0x0FA8  # TextBytesAtom: the low bytes of UTF-16 code units
_PPT_CSTRING: Final = 0x0FBA  # CString: names, comments, hyperlink targets
_PPT_CRYPT_SESSION: Final = 0x2F14  # CryptSession10Container ([MS-PPT] §2.3.7)
_PPT_CONTROLS: Final = str.maketrans({"\r": "\n", "\x0b": "\n"})


def powerpoint_text(stream: bytes) -> Iterator[str]:
    """Every text atom of a "PowerPoint Document" stream, in stream order.

    Containers (``recVer`` 0xF) are entered by reading on inside them, so the
    walk is flat and needs no recursion.

    Raises:
        Unscannable: encrypted, a record running past the stream, or more
            than :data:`MAX_PPT_RECORDS` records.
    """
    pos = 0
    records = 0
    while pos + 8 <= len(stream):
        version, kind, length = struct.unpack_from("<HHI", stream, pos)
        pos += 8
        records += 1
        if records > MAX_PPT_RECORDS:
            raise Unscannable(f"ppt: more than {MAX_PPT_RECORDS} records")
        if kind == _PPT_CRYPT_SESSION:
            raise Unscannable("ole: encrypted content")
        if version & 0x0F == 0x0F:
            continue
        if pos + length > len(stream):
            raise Unscannable("ppt: record past the end of its stream")
        if kind in (_PPT_TEXT_CHARS, _PPT_CSTRING):
            yield stream[pos : pos + length].decode("utf-16-le", "replace").translate(_PPT_CONTROLS)
        elif kind == _PPT_TEXT_BYTES:
            yield stream[pos : pos + length].decode("latin-1").translate(_PPT_CONTROLS)
        pos += length


def _read_powerpoint(ole: olefile.OleFileIO, out: Extract) -> None:
    text = "\n".join(powerpoint_text(_stream(ole, _POWERPOINT)))
    if text.strip():
        member = out.member("presentation", "text/plain")
        member.write(text + "\n")
        member.close()


# --------------------------------------------------------------------------- Excel

_XLS_FILEPASS: Final = 0x002F
_XLS_BOF: Final = 0x0809
_XLS_DIMENSIONS: Final = 0x0200
#: BIFF8 sheet limits ([MS-XLS] §2.5.53 ColU, §2.5.228 RwU): 65,536 rows, 256 columns.
_XLS_ROWS: Final = 65_536
_XLS_COLUMNS: Final = 256
#: BIFF8 cell records whose first fields are row and column ([MS-XLS] §2.4).
_XLS_CELLS: Final = frozenset((0x0006, 0x0203, 0x027E, 0x00FD, 0x0204, 0x0205, 0x0201, 0x00D6))
_XLS_MULTI: Final = frozenset((0x00BD, 0x00BE))  # MulRk, MulBlank: row, first col … last col


def check_workbook(stream: bytes) -> None:
    """Walk a BIFF8 workbook stream's records before calamine loads it.

    Raises:
        Unscannable: encrypted (``FILEPASS``), or sheets whose used ranges
            together exceed :data:`MAX_XLS_CELLS`, or too many records.
    """
    pos = 0
    records = 0
    cells = 0
    rows = cols = -1
    while pos + 4 <= len(stream):
        kind, length = struct.unpack_from("<HH", stream, pos)
        body = pos + 4
        pos = body + length
        records += 1
        if records > MAX_XLS_RECORDS:
            raise Unscannable(f"xls: more than {MAX_XLS_RECORDS} records")
        if kind == _XLS_FILEPASS:
            raise Unscannable("ole: encrypted content")
        if kind == _XLS_DIMENSIONS and pos <= len(stream):
            _check_dimensions(stream[body:pos])
        if kind == _XLS_BOF:
            cells += (rows + 1) * (cols + 1)
            rows = cols = -1
        elif kind in _XLS_CELLS and length >= 4 and pos <= len(stream):
            row, col = struct.unpack_from("<HH", stream, body)
            rows, cols = max(rows, row), max(cols, col)
        elif kind in _XLS_MULTI and length >= 6 and pos <= len(stream):
            row, _ = struct.unpack_from("<HH", stream, body)
            (last,) = struct.unpack_from("<H", stream, pos - 2)
            rows, cols = max(rows, row), max(cols, last)
        if cells + (rows + 1) * (cols + 1) > MAX_XLS_CELLS:
            raise Unscannable(f"xls: sheets of more than {MAX_XLS_CELLS} cells")


def _check_dimensions(record: bytes) -> None:
    """Refuse a DIMENSIONS record that calamine would turn into a huge reservation.

    calamine reserves ``(rwMac - rwMic) x (colMac - colMic)`` cells from it,
    with unsigned arithmetic that wraps when the last row or column is
    before the first; a reservation it cannot make aborts the process.

    Raises:
        Unscannable: the used range is outside BIFF8's sheet, inverted, or
            larger than :data:`MAX_XLS_CELLS`.
    """
    if len(record) == 14:
        first_row, last_row, first_col, last_col = struct.unpack_from("<IIHH", record)
    elif len(record) == 10:
        first_row, last_row, first_col, last_col = struct.unpack_from("<HHHH", record)
    else:
        return  # calamine refuses other lengths itself
    if first_col > 0xFF or last_col < first_col:
        first_col = 0  # as calamine reads it
    if last_row < 1 or last_col < 1:
        return  # an empty sheet: calamine reserves one cell
    rows = last_row - first_row
    cols = last_col - first_col
    if (
        rows < 1
        or cols < 1
        or last_row > _XLS_ROWS
        or last_col > _XLS_COLUMNS
        or rows * cols > MAX_XLS_CELLS
    ):
        raise Unscannable("xls: sheet dimensions out of range")


def cell_text(value: object) -> str:
    """A calamine cell value as the matcher should see it."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e17:
            return str(int(value))
        return repr(value)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    return str(value)


def _read_excel(ole: olefile.OleFileIO, out: Extract) -> None:
    """Render every sheet with calamine, from a compound file rebuilt around the workbook.

    calamine's own compound-file layer trusts the file: a FAT loop in a
    chain makes it read (and allocate) forever, and a DIFAT loop never ends.
    So calamine is never given the upload: the workbook stream, read by
    olefile (which bounds chains by the declared size) and checked by
    :func:`check_workbook`, is packed into a fresh compound file of one
    stream, and that is what calamine parses.
    """
    name = next(n for n in _EXCEL if ole.exists(n))
    workbook = _stream(ole, name)
    check_workbook(workbook)
    clean = io.BytesIO(compound_file({name: workbook}))
    del workbook
    try:
        book = python_calamine.CalamineWorkbook.from_filelike(clean)
    except python_calamine.PasswordError:
        raise Unscannable("ole: encrypted content") from None
    with book:
        for sheet_name in book.sheet_names:
            sheet = book.get_sheet_by_name(sheet_name)
            member = out.member(f"sheet {sheet_name}", "text/csv")
            for row in sheet.iter_rows():
                cells = [cell_text(value) for value in row]
                if any(cells):
                    member.write(csv_line(cells))
            member.close()


# --------------------------------------------------------------------------- writing

_ENDOFCHAIN: Final = 0xFFFFFFFE
_FREESECT: Final = 0xFFFFFFFF
_FATSECT: Final = 0xFFFFFFFD
_NOSTREAM: Final = 0xFFFFFFFF
_SECTOR: Final = 512
#: Streams shorter than this live in the mini stream ([MS-CFB] §2.2); the
#: writer pads every stream to it, so it needs no mini FAT.
_MINI_CUTOFF: Final = 4096
_DIFAT_IN_HEADER: Final = 109


def compound_file(streams: dict[str, bytes]) -> bytes:
    """A version 3 compound file ([MS-CFB]) holding ``streams`` at its root.

    Minimal and exact: every stream in one contiguous chain of 512-byte
    sectors (padded with zeros to the 4,096-byte mini-stream cutoff), one
    directory chain, the FAT described by the header's DIFAT (at most 109
    FAT sectors: ~7 GiB of streams). Used to hand calamine a file whose
    structure we made, and by tests to build Word and PowerPoint files.
    """
    names = sorted(streams, key=lambda n: (len(n), n.upper()))  # [MS-CFB] §2.6.4
    fat: list[int] = []
    body = bytearray()
    placed = {}
    for name in names:
        blob = streams[name].ljust(_MINI_CUTOFF, b"\0")
        count = -(-len(blob) // _SECTOR)
        placed[name] = (len(fat), len(blob))
        fat.extend(range(len(fat) + 1, len(fat) + count))
        fat.append(_ENDOFCHAIN)
        body += blob.ljust(count * _SECTOR, b"\0")
    entries = [_entry("Root Entry", 5, 1 if names else _NOSTREAM, _ENDOFCHAIN, 0)]
    for index, name in enumerate(names, 1):
        entries.append(_entry(name, 2, _NOSTREAM, *placed[name], right=index + 1))
    if len(entries) > 1:
        entries[-1] = _entry(names[-1], 2, _NOSTREAM, *placed[names[-1]])
    while len(entries) % (_SECTOR // 128):
        entries.append(_entry("", 0, _NOSTREAM, 0, 0))
    directory = len(fat)
    sectors = len(entries) // (_SECTOR // 128)
    fat.extend(range(directory + 1, directory + sectors))
    fat.append(_ENDOFCHAIN)
    body += b"".join(entries)
    fats = 1
    while len(fat) + fats > 128 * fats:
        fats += 1
    if fats > _DIFAT_IN_HEADER:
        raise ValueError("streams too large for a header-only DIFAT")
    first_fat = len(fat)
    fat.extend([_FATSECT] * fats)
    fat.extend([_FREESECT] * (128 * fats - len(fat)))
    difat = [*range(first_fat, first_fat + fats)] + [_FREESECT] * (_DIFAT_IN_HEADER - fats)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        OLE_MAGIC,
        bytes(16),
        0x3E,  # minor version
        3,  # major version: 512-byte sectors
        0xFFFE,  # byte order
        9,  # sector shift
        6,  # mini sector shift
        bytes(6),
        0,  # directory sectors (0 in version 3)
        fats,
        directory,
        0,  # transaction signature
        _MINI_CUTOFF,
        _ENDOFCHAIN,  # no mini FAT
        0,
        _ENDOFCHAIN,  # no DIFAT sectors
        0,
    )
    header += struct.pack(f"<{_DIFAT_IN_HEADER}I", *difat)
    return header + bytes(body) + struct.pack(f"<{len(fat)}I", *fat)


def _entry(
    name: str, kind: int, child: int, start: int, size: int, *, right: int = _NOSTREAM
) -> bytes:
    """One 128-byte directory entry ([MS-CFB] §2.6.1), black, no left sibling."""
    raw = name.encode("utf-16-le") + b"\0\0" if name else b""
    return (
        raw.ljust(64, b"\0")
        + struct.pack("<HBBIII", len(raw), kind, 1, _NOSTREAM, right, child)
        + bytes(36)
        + struct.pack("<IQ", start, size)
    )


# --------------------------------------------------------------------------- dispatch


def read_ole(source: RandomAccess, out: Extract) -> None:
    """Render a legacy Office compound file: its properties, then its content.

    Raises:
        Unscannable: encrypted, corrupt, of an unknown kind (not Word, Excel or
            PowerPoint), or past a bound of this module.
    """
    if source.size > MAX_OLE_BYTES:
        raise Unscannable(f"ole: compound file over {MAX_OLE_BYTES >> 20} MiB")
    try:
        _read(source, out)
    except Unscannable:
        raise
    except _CORRUPT:
        raise Unscannable("ole: corrupt compound file") from None
    except python_calamine.CalamineError:
        raise Unscannable("xls: corrupt workbook") from None
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise Unscannable("xls: corrupt workbook") from None


def _read(source: RandomAccess, out: Extract) -> None:
    with olefile.OleFileIO(AccessFile(source), raise_defects=olefile.DEFECT_INCORRECT) as ole:
        if any(ole.exists(name) for name in _ENCRYPTED):
            raise Unscannable("ole: encrypted content")
        if ole.exists(_WORD):
            kind = _read_word
        elif ole.exists(_POWERPOINT):
            kind = _read_powerpoint
        elif any(ole.exists(name) for name in _EXCEL):
            kind = None
        else:
            raise Unscannable("ole: compound file of an unknown kind")
        _properties(ole, out)
        if kind is None:
            _read_excel(ole, out)
        else:
            kind(ole, out)


# --------------------------------------------------------------------------- sniffing

_DIRECTORY_ENTRY: Final = 128


def ole_streams(prefix: bytes) -> frozenset[str]:
    """Names of the stream entries of a compound file's directory found in ``prefix``.

    Directory sectors are sector-aligned, so their 128-byte entries sit at
    128-byte boundaries of the file ([MS-CFB] §2.6.1: a UTF-16 name of at
    most 32 code units, its byte length, object type 2 for a stream).
    """
    names = set()
    for pos in range(512, len(prefix) - _DIRECTORY_ENTRY + 1, _DIRECTORY_ENTRY):
        (length,) = struct.unpack_from("<H", prefix, pos + 64)
        if 2 <= length <= 64 and length % 2 == 0 and prefix[pos + 66] == 2:
            raw = prefix[pos : pos + length - 2]
            if prefix[pos + length - 2 : pos + length] == b"\x00\x00":
                names.add(raw.decode("utf-16-le", "replace"))
    return frozenset(names)


#: Any compound file (the fallback when its directory is not in the prefix).
sniff_ole: Final = Magic(OLE_MAGIC)


def sniff_doc(prefix: bytes) -> bool:
    """A compound file with a WordDocument stream in its first directory sectors."""
    return prefix.startswith(OLE_MAGIC) and _WORD in ole_streams(prefix)


def sniff_xls(prefix: bytes) -> bool:
    """A compound file with a Workbook (BIFF8) or Book (BIFF5) stream."""
    return prefix.startswith(OLE_MAGIC) and not ole_streams(prefix).isdisjoint(_EXCEL)


def sniff_ppt(prefix: bytes) -> bool:
    """A compound file with a "PowerPoint Document" stream."""
    return prefix.startswith(OLE_MAGIC) and _POWERPOINT in ole_streams(prefix)
