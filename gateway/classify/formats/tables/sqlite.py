"""SQLite: a small reader of the documented file format over random access.

https://www.sqlite.org/fileformat.html: b-tree pages, overflow chains, record
format. Python's ``sqlite3`` reads only files or whole in-memory images, so
the database is read here page by page, each page at most once. Every table
is read, including ``sqlite_schema`` itself (its SQL text can hold values).
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract, RandomAccess, Unscannable, csv_line
from gateway.classify.formats.tables.common import MAX_COLUMNS, _Render, _Table

#: SQLite: most pages read (the database's own limit is 2^32-2; 16 Mi pages of
#: 4 KiB is 64 GiB, past anything a transfer holds).
MAX_SQLITE_PAGES: Final = 1 << 24
#: SQLite: largest record (SQLITE_MAX_LENGTH defaults to 1e9; identifiers live
#: in far smaller rows, and a record is held whole while it is rendered).
MAX_SQLITE_RECORD_BYTES: Final = 64 << 20
#: SQLite: most tables (schema rows) read.
MAX_SQLITE_TABLES: Final = 10_000

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_SQLITE_ENCODINGS: Final = {0: "utf-8", 1: "utf-8", 2: "utf-16-le", 3: "utf-16-be"}
#: Bytes of an integer by record serial type 1..6 (fileformat.html §2.1).
_SQLITE_INT_BYTES: Final = (0, 1, 2, 3, 4, 6, 8)
_SQLITE_SCHEMA_COLUMNS: Final = ("type", "name", "tbl_name", "rootpage", "sql")
#: The tables a virtual table module keeps its index structures in
#: (``<name>_<suffix>``): full-text indexes (FTS3/4/5) and R*Trees. Their
#: binary cells are term lists and doclists, varint sizes and tree nodes of
#: coordinates, not content, so a binary cell there that is not text is
#: counted, not refused as opaque. The tables holding a virtual table's values
#: are not listed and are read as any table: a full-text table's content table
#: (``_content``, or the external table it names) and an R*Tree's ``_rowid``
#: (its ``+`` auxiliary columns). Geopoly's ``_rowid`` is listed: its first
#: auxiliary column is the polygon's binary shape (coordinates).
_FTS34: Final = ("segments", "segdir", "docsize", "stat")
_RTREE: Final = ("node", "parent")
_SHADOW_TABLES: Final = {
    "fts5": ("data", "idx", "docsize", "config"),
    "fts4": _FTS34,
    "fts3": _FTS34,
    "rtree": _RTREE,
    "rtree_i32": _RTREE,
    "geopoly": (*_RTREE, "rowid"),
}
#: ``CREATE VIRTUAL TABLE name USING module(arguments)``: the module and its
#: arguments (the name is the schema row's own).
_VIRTUAL: Final = re.compile(
    r"\s*CREATE\s+VIRTUAL\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?:\"(?:[^\"]|\"\")+\"|`[^`]+`|\[[^\]]+\]|'(?:[^']|'')+'|[\w$]+)"
    r"\s+USING\s+(\w+)\s*(?:\((.*)\))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
#: A full-text table without content of its own (``content=''``): its text is
#: only in the index structures, which are not read.
_CONTENTLESS: Final = re.compile(r"(?:^|,)\s*content\s*=\s*(?:''|\"\")\s*(?:,|$)", re.IGNORECASE)


class _Float:
    """A REAL value: counted, not rendered."""


_REAL: Final = _Float()


def _sqlite_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A SQLite varint (big-endian, 1 to 9 bytes) at ``pos``: (value, next position)."""
    result = 0
    for _ in range(8):
        if pos >= len(data):
            raise Unscannable("sqlite: corrupt varint")
        b = data[pos]
        pos += 1
        result = (result << 7) | (b & 0x7F)
        if b < 0x80:
            return result, pos
    if pos >= len(data):
        raise Unscannable("sqlite: corrupt varint")
    return (result << 8) | data[pos], pos + 1


class _SqliteFile:
    """The b-trees of a SQLite database, read page by page through a :class:`RandomAccess`.

    Every page is read at most once: each page belongs to one b-tree, overflow
    chain or free list, so a page reached twice is a cycle or a forgery and
    the file is unscannable.
    """

    def __init__(self, source: RandomAccess, render: _Render) -> None:
        self.source = source
        self.render = render
        head = source.read_at(0, 100)
        if len(head) < 100 or head[:16] != _SQLITE_MAGIC:
            raise render.fail("truncated header")
        page_size = int.from_bytes(head[16:18], "big")
        if page_size == 1:
            page_size = 65536
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            raise render.fail("corrupt page size")
        self.page_size = page_size
        self.usable = page_size - head[20]
        if self.usable < 480:
            raise render.fail("corrupt reserved space")
        encoding = int.from_bytes(head[56:60], "big")
        if encoding not in _SQLITE_ENCODINGS:
            raise render.fail("corrupt text encoding")
        self.encoding = _SQLITE_ENCODINGS[encoding]
        self.pages = source.size // page_size
        if self.pages > MAX_SQLITE_PAGES:
            raise render.fail(f"more than {MAX_SQLITE_PAGES} pages")
        self.seen = bytearray(self.pages + 1)

    def page(self, number: int) -> bytes:
        """Page ``number`` (1-based), refused when out of range or read before."""
        if not 1 <= number <= self.pages:
            raise self.render.fail("page number out of range")
        if self.seen[number]:
            raise self.render.fail("page referenced twice")
        self.seen[number] = 1
        return self.source.read_at((number - 1) * self.page_size, self.page_size)

    def cells(self, root: int, table: bool) -> Iterator[tuple[int, bytes]]:
        """(rowid, record) of every entry of the b-tree at ``root``, in key order.

        ``table`` is a rowid table's b-tree; otherwise an index b-tree (how
        WITHOUT ROWID tables are stored), whose interior cells hold entries too.
        """
        stack: list[int | tuple[int, bytes]] = [root]
        fail = self.render.fail
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                yield item
                continue
            page = self.page(item)
            hdr = 100 if item == 1 else 0
            if len(page) < hdr + 12:
                raise fail("truncated page")
            kind = page[hdr]
            if kind not in ((5, 13) if table else (2, 10)):
                raise fail("corrupt b-tree page")
            count = int.from_bytes(page[hdr + 3 : hdr + 5], "big")
            interior = kind in (2, 5)
            start = hdr + (12 if interior else 8)
            if start + 2 * count > self.usable:
                raise fail("corrupt cell count")
            pointers = struct.unpack_from(f">{count}H", page, start)
            if interior:
                children: list[int | tuple[int, bytes]] = []
                for p in pointers:
                    if p + 4 > self.usable:
                        raise fail("corrupt cell pointer")
                    children.append(int.from_bytes(page[p : p + 4], "big"))
                    if kind == 2:
                        size, q = _sqlite_varint(page, p + 4)
                        children.append((0, self.payload(page, q, size, table=False)))
                children.append(int.from_bytes(page[hdr + 8 : hdr + 12], "big"))
                stack.extend(reversed(children))
                continue
            for p in pointers:
                if p >= self.usable:
                    raise fail("corrupt cell pointer")
                size, q = _sqlite_varint(page, p)
                rowid = 0
                if table:
                    rowid, q = _sqlite_varint(page, q)
                    if rowid >= 1 << 63:
                        rowid -= 1 << 64
                yield rowid, self.payload(page, q, size, table)

    def payload(self, page: bytes, pos: int, size: int, table: bool) -> bytes:
        """A cell's payload: its local part, then its overflow chain (fileformat.html §1.6)."""
        if size > MAX_SQLITE_RECORD_BYTES:
            raise self.render.fail(f"a record over {MAX_SQLITE_RECORD_BYTES >> 20} MiB")
        usable = self.usable
        most = usable - 35 if table else (usable - 12) * 64 // 255 - 23
        if size <= most:
            local = size
        else:
            least = (usable - 12) * 32 // 255 - 23
            local = least + (size - least) % (usable - 4)
            if local > most:
                local = least
        if pos + local > usable:
            raise self.render.fail("corrupt cell")
        if local == size:
            return page[pos : pos + size]
        if pos + local + 4 > usable:
            raise self.render.fail("corrupt cell")
        parts = [page[pos : pos + local]]
        remaining = size - local
        following = int.from_bytes(page[pos + local : pos + local + 4], "big")
        while remaining > 0:
            if following == 0:
                raise self.render.fail("overflow chain ends early")
            overflow = self.page(following)
            following = int.from_bytes(overflow[:4], "big")
            chunk = overflow[4 : 4 + min(usable - 4, remaining)]
            if not chunk:
                raise self.render.fail("truncated overflow page")
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    def record(self, payload: bytes) -> list[object]:
        """The values of a record (fileformat.html §2.1): int, str, bytes, None or REAL."""
        header, pos = _sqlite_varint(payload, 0)
        if header > len(payload) or header < pos:
            raise self.render.fail("corrupt record header")
        types = []
        while pos < header:
            serial, pos = _sqlite_varint(payload, pos)
            types.append(serial)
        if len(types) > MAX_COLUMNS:
            raise self.render.fail(f"more than {MAX_COLUMNS} columns")
        body = header
        values: list[object] = []
        for serial in types:
            if serial == 0:
                values.append(None)
            elif serial <= 6:
                n = _SQLITE_INT_BYTES[serial]
                values.append(int.from_bytes(payload[body : body + n], "big", signed=True))
                body += n
            elif serial == 7:
                values.append(_REAL)
                body += 8
            elif serial in (8, 9):
                values.append(serial - 8)
            elif serial in (10, 11):
                raise self.render.fail("corrupt record (reserved serial type)")
            else:
                n = (serial - 12) // 2
                raw = payload[body : body + n]
                values.append(raw if serial % 2 == 0 else raw.decode(self.encoding, "replace"))
                body += n
            if body > len(payload):
                raise self.render.fail("corrupt record (values past its end)")
        return values


_SQL_TOKEN: Final = re.compile(
    r"""\s+|--[^\n]*|/\*.*?(?:\*/|\Z)
    |"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?|'(?:[^']|'')*'?
    |[^\s"`\[',()]+|.""",
    re.S | re.X,
)
_SQL_COLUMN_END: Final = frozenset(
    {
        "CONSTRAINT",
        "PRIMARY",
        "NOT",
        "NULL",
        "UNIQUE",
        "CHECK",
        "DEFAULT",
        "COLLATE",
        "REFERENCES",
        "GENERATED",
        "AS",
    }
)
_SQL_TABLE_CONSTRAINT: Final = frozenset({"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"})


def _sql_name(token: str) -> str:
    """An SQL identifier token without its quotes."""
    if len(token) >= 2 and token[0] in "\"`'[":
        inner = token[1:-1]
        return inner if token[0] == "[" else inner.replace(token[0] * 2, token[0])
    return token


@dataclass
class _SqliteTable:
    """How a table's records map to its columns."""

    names: list[str]  # header, in record order (plus a leading "rowid" when shown)
    alias: int | None  # index in ``names`` of an INTEGER PRIMARY KEY (rowid alias)
    rowid_column: bool  # True when "rowid" leads the header
    without_rowid: bool


def _sqlite_table(sql: str) -> _SqliteTable | None:
    """Column names of a ``CREATE TABLE`` statement in stored order, or None if unparsed.

    Virtual generated columns are not stored in records and are left out; a
    WITHOUT ROWID table stores its primary key columns first.
    """
    tokens = [t for t in _SQL_TOKEN.findall(sql) if t.strip() and not t.startswith(("--", "/*"))]
    try:
        start = tokens.index("(")
    except ValueError:
        return None
    definitions: list[list[tuple[str, int]]] = [[]]
    depth = 0
    end = None
    for i in range(start + 1, len(tokens)):
        word = tokens[i]
        if word == ")" and depth == 0:
            end = i
            break
        if word == "," and depth == 0:
            definitions.append([])
            continue
        depth += (word == "(") - (word == ")")
        definitions[-1].append((word, depth if word != "(" else depth - 1))
    if end is None:
        return None
    tail = [t.upper() for t in tokens[end + 1 :]]
    without_rowid = any(pair == ("WITHOUT", "ROWID") for pair in itertools.pairwise(tail))
    columns: list[tuple[str, str, bool, bool]] = []  # name, type, primary key, desc
    primary: list[str] = []
    for definition in definitions:
        if not definition:
            continue
        top = [t.upper() for t, d in definition if d == 0]
        if top[0] in _SQL_TABLE_CONSTRAINT:
            if "PRIMARY" in top:
                at = (
                    [t for t, _ in definition].index("(")
                    if "(" in [t for t, _ in definition]
                    else -1
                )
                if at >= 0:
                    names: list[str] = []
                    expect = True
                    for word, d in definition[at + 1 :]:
                        if word == ")" and d == 0:
                            break
                        if word == "," and d == 1:
                            expect = True
                        elif expect and d == 1:
                            names.append(_sql_name(word))
                            expect = False
                    primary = names
            continue
        name = _sql_name(definition[0][0])
        type_words = []
        for word in top[1:]:
            if word in _SQL_COLUMN_END or word == "(":
                break
            type_words.append(word)
        if "AS" in top and "STORED" not in top:
            continue  # a virtual generated column: computed, not stored
        key = "PRIMARY" in top
        desc = (
            key and top.index("PRIMARY") + 2 < len(top) and top[top.index("PRIMARY") + 2] == "DESC"
        )
        columns.append((name, " ".join(type_words), key, desc))
        if key:
            primary = [name]
    if not columns:
        return None
    names = [c[0] for c in columns]
    if without_rowid:
        lowered = [n.lower() for n in names]
        first = [names[lowered.index(p.lower())] for p in primary if p.lower() in lowered]
        rest = [n for n in names if n not in first]
        return _SqliteTable(first + rest, None, False, True)
    alias = None
    if len(primary) == 1:
        for i, (name, typ, key, desc) in enumerate(columns):
            if name.lower() == primary[0].lower() and typ == "INTEGER" and not (key and desc):
                alias = i
    if alias is not None:
        return _SqliteTable(names, alias, False, False)
    return _SqliteTable(["rowid", *names], None, True, False)


def _sqlite_cell(value: object, render: _Render, where: str, index: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return render.binary(value, where, structure=index)
    render.numeric += 1
    return ""


def _shadow_tables(sql: str, name: str) -> list[str]:
    """The shadow tables of a ``CREATE VIRTUAL TABLE`` of a known module (lower case).

    Raises:
        Unscannable: a full-text table without content of its own.
    """
    found = _VIRTUAL.match(sql)
    if found is None:
        return []
    module = found.group(1).lower()
    suffixes = _SHADOW_TABLES.get(module, ())
    if suffixes and module.startswith("fts") and _CONTENTLESS.search(found.group(2) or ""):
        raise Unscannable(f"sqlite: a contentless {module} index (its text is only in the index)")
    return [f"{name.lower()}_{suffix}" for suffix in suffixes]


def _sqlite_rows(db: _SqliteFile, root: int, sql: str, table: _Table, index: bool = False) -> None:
    """Render the rows of one table (columns named by position when the SQL is not understood).

    ``index``: a virtual table's shadow table (its binary cells are index structures).
    """
    render = db.render
    parsed = _sqlite_table(sql)
    layout = parsed or _SqliteTable(["rowid"], None, True, False)
    table.header = csv_line(layout.names)
    lines: list[str] = []
    for rowid, payload in db.cells(root, not layout.without_rowid):
        values = db.record(payload)
        cells = [_sqlite_cell(v, render, table.name, index) for v in values]
        if layout.alias is not None and layout.alias < len(cells) and values[layout.alias] is None:
            cells[layout.alias] = str(rowid)
        if layout.rowid_column:
            cells.insert(0, str(rowid))
        if parsed is None and table.member is None and not table.parts and not lines:
            table.header = csv_line(["rowid", *(f"column{i}" for i in range(1, len(values) + 1))])
        lines.append(csv_line(cells))
        if len(lines) >= 1024:
            table.add("".join(lines))
            lines.clear()
    if lines:
        table.add("".join(lines))


def read_sqlite(source: RandomAccess, out: Extract) -> None:
    """Render a SQLite database: ``sqlite_schema`` and every table, one member each."""
    render = _Render("sqlite", out, source.size)
    db = _SqliteFile(source, render)
    schema = _Table(render, "table sqlite_schema", csv_line(_SQLITE_SCHEMA_COLUMNS))
    tables: list[tuple[str, int, str]] = []
    shadows: set[str] = set()
    for _, payload in db.cells(1, table=True):
        values = db.record(payload)
        schema.add(csv_line(_sqlite_cell(v, render, schema.name) for v in values))
        kind, name, _tbl, root, sql = (*values, None, None, None, None, None)[:5]
        if kind == "table" and isinstance(root, int) and root > 0:
            tables.append((str(name), root, sql if isinstance(sql, str) else ""))
            if len(tables) > MAX_SQLITE_TABLES:
                raise render.fail(f"more than {MAX_SQLITE_TABLES} tables")
        elif kind == "table" and root == 0 and isinstance(sql, str):
            shadows.update(_shadow_tables(sql, str(name)))
    schema.close()
    for name, root, sql in tables:
        table = _Table(render, f"table {name}")
        _sqlite_rows(db, root, sql, table, name.lower() in shadows)
        table.close()
    render.finish()


_sniff_sqlite: Final = Magic(_SQLITE_MAGIC)


SQLITE: Final = register(
    Format(
        "sqlite",
        "application/vnd.sqlite3",
        _sniff_sqlite,
        random=read_sqlite,
    )
)
