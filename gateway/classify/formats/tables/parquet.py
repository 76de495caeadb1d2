"""Parquet: the footer and page headers read and bounded here, then pyarrow's batches.

pyarrow is not hardened against hostile files everywhere, so the metadata it
would trust is read here first: the footer (Thrift compact) and every page
header, which bound page sizes, each row group's decoded bytes and the rows
per batch. The page headers are noted as the file streams in
(:class:`_PageScout`, the format's scout), so the walk after the upload reads
only what the notes do not hold. The file is then read a bounded batch at a time (from
:data:`PREFETCH_MIN_BYTES` on, the next batch decoded on a worker thread
while one is rendered).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract, RandomAccess, read_ranges, scout_notes
from gateway.classify.formats.isolation import isolated
from gateway.classify.formats.prefetch import prefetched
from gateway.classify.formats.tables import common as tables_common
from gateway.classify.formats.tables.common import (
    BATCH_ROWS,
    MAX_BATCH_TEXT_BYTES,
    MAX_COLUMNS,
    MAX_NESTING,
    _arrow_file,
    _ArrowTable,
    _Guard,
    _metadata_lines,
    _Render,
    load_arrow,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    from gateway.classify.formats.tables.common import np, pa, pq

#: Parquet files at least this large are decoded a batch ahead on a worker
#: thread (:func:`~gateway.classify.formats.prefetch.prefetched`) while the
#: batch before is rendered; a smaller one is done before a thread has started.
PREFETCH_MIN_BYTES: Final = 1 << 20

#: Parquet: bytes read per call by the page reader (pyarrow's buffered stream);
#: column chunks are streamed in pieces of this size, not read whole.
PARQUET_BUFFER_BYTES: Final = 1 << 20
#: Parquet: most row groups (pyarrow writes 1 Mi rows per group; 100 000
#: groups is far past any honest file and bounds metadata work).
MAX_PARQUET_ROW_GROUPS: Final = 100_000
#: Parquet: largest Thrift string / container in the footer (pyarrow's defaults
#: are 100 MB and 1 M; a footer's strings are names and statistics).
PARQUET_THRIFT_STRING_BYTES: Final = 16 << 20
PARQUET_THRIFT_CONTAINER_ITEMS: Final = 1 << 20
#: Parquet: largest uncompressed page (pyarrow and parquet-mr write 1 MiB data
#: pages; dictionary pages are bounded by 1 MiB by default too). A page header
#: claiming more is a decompression bomb: the page is decompressed whole.
MAX_PARQUET_PAGE_BYTES: Final = 64 << 20
#: Parquet: most bytes of decompressed pages held at once (one current page per
#: column being read).
MAX_PARQUET_PAGES_IN_FLIGHT_BYTES: Final = 512 << 20
#: Parquet: most pages whose headers are checked (a 1 MiB page per column per
#: row group: a 2 GB file has a few thousand).
MAX_PARQUET_PAGES: Final = 1 << 20

#: Parquet: largest footer (Thrift metadata); the footer is parsed whole.
MAX_PARQUET_FOOTER_BYTES: Final = 64 << 20
#: Parquet: a page header is read in windows that grow from
#: :data:`_PARQUET_HEADER_READ` up to this size (statistics in a header hold
#: a page's min and max values; writers' headers are a few dozen bytes).
_PARQUET_HEADER_MAX_BYTES: Final = 16 << 20
_PARQUET_HEADER_READ: Final = 1024
#: Page headers the scout notes as a file streams in (:class:`_PageScout`; 48
#: bytes each: 768 KiB). The benchmark's 65 MB file has 566 pages, a 2 GB one
#: about 17,000 (pyarrow ends a page at 20,000 rows or 1 MiB); the walk reads
#: the headers past the bound itself.
_SCOUT_MAX_PAGES: Final = 1 << 14
#: Bytes of page headers the scout hands to the Python parser (where the
#: compiled one, ``_rows.page_header``, does not decide, or was not built) before
#: it stops: ~0.1-0.3 s of the gateway's CPU at most. The compiled parser decides
#: every header writers write; without it, a few thousand headers of ~50 bytes.
_SCOUT_PYTHON_BYTES: Final = 256 << 10
#: One note: offset, then what :func:`_page_header` gave there.
_NOTE: Final = struct.Struct("<6q")
#: Column chunks whose pages are walked side by side, one header of each per
#: step (:func:`_check_parquet_pages`): a step's reads are at most this many
#: :data:`_PARQUET_HEADER_READ` windows (256 KiB).
_WALKS_AT_ONCE: Final = 256
#: Bytes each decoded value may take besides the page's own bytes (an int64
#: or a dictionary index, plus validity and offsets), for the row-group bound.
_PARQUET_BYTES_PER_VALUE: Final = 16
#: Parquet: most decoded bytes a row group may hold (uncompressed page bytes
#: plus :data:`_PARQUET_BYTES_PER_VALUE` per value, from the page headers).
#: A batch never holds more than its row group; honest row groups (1 Mi rows
#: in pyarrow, 128 MB compressed in Spark) stay well below.
MAX_PARQUET_ROW_GROUP_BYTES: Final = 2 << 30


class _Thrift:
    """Just enough of the Thrift compact protocol to read a Parquet page header."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise EOFError
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > MAX_NESTING:
            raise ValueError("thrift nesting")
        if kind in (1, 2):
            return
        if kind == 3:
            self.byte()
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.pos += 8
        elif kind == 8:
            length = self.varint()
            self.pos += length
        elif kind in (9, 10):
            size, elem = self.list_header()
            if elem in (1, 2):  # booleans in a list take a byte each
                self.pos += size
            for _ in range(0 if elem in (1, 2) else size):
                if self.pos > len(self.data):
                    raise EOFError
                self.skip(elem, depth + 1)
        elif kind == 11:
            size = self.varint()
            # Every entry takes a byte at least (a boolean key or value, one byte
            # in a map): a count past what is left is a lie, and a loop over it
            # would not end (a 12-byte header claiming 2^56 entries spun forever).
            if size > len(self.data) - self.pos:
                raise EOFError
            if size:
                types = self.byte()
                for _ in range(size):
                    if self.pos > len(self.data):
                        raise EOFError
                    self.item(types >> 4, depth + 1)
                    self.item(types & 0x0F, depth + 1)
        elif kind == 12:
            self.struct(lambda _fid, ftype: self.skip(ftype, depth + 1))
        else:
            raise ValueError("thrift type")
        if self.pos > len(self.data):
            raise EOFError

    def item(self, kind: int, depth: int) -> None:
        """Skip a map's key or value (a boolean takes a byte there, not a field header's bits)."""
        if kind in (1, 2):
            self.pos += 1
            if self.pos > len(self.data):
                raise EOFError
        else:
            self.skip(kind, depth)

    def list_header(self) -> tuple[int, int]:
        """(element count, element type) of a list or set."""
        head = self.byte()
        size = head >> 4
        if size == 15:
            size = self.varint()
        if size > len(self.data) - self.pos:  # every element takes at least a byte
            raise EOFError
        return size, head & 0x0F

    def string(self) -> bytes:
        length = self.varint()
        if self.pos + length > len(self.data):
            raise EOFError
        self.pos += length
        return self.data[self.pos - length : self.pos]

    def fields(self, handlers: dict[int, Callable[[int], None]]) -> None:
        """Read a struct, giving the fields in ``handlers`` their type; skip the others."""
        self.struct(lambda fid, kind: handlers[fid](kind) if fid in handlers else self.skip(kind))

    def items(self, each: Callable[[int], None]) -> None:
        """Read a list, calling ``each`` with the element type once per element."""
        size, elem = self.list_header()
        for _ in range(size):
            each(elem)

    def struct(self, on_field: Callable[[int, int], None]) -> None:
        fid = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, kind = head >> 4, head & 0x0F
            fid = fid + delta if delta else self.zigzag()
            on_field(fid, kind)


def _page_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(header bytes, page type, uncompressed size, compressed size, values) of a page header.

    The compiled reader (``_rows.page_header``) reads the headers writers
    write, ~30 times faster; where it does not decide (a header cut short,
    malformed, or holding a number past 64 bits) this module's parser reads
    it and raises what it raises.

    Raises:
        EOFError: the header runs past ``data``.
        ValueError, IndexError: it is malformed.
    """
    got = _page_header_compiled(data)
    return got if got is not None else _page_header_py(data)


def _page_header_compiled(data: bytes) -> tuple[int, int, int, int, int] | None:
    """:func:`_page_header` by the compiled reader; None where it does not decide (or was
    not built)."""
    rows = tables_common._rows
    if rows is None:
        return None
    got: tuple[int, int, int, int, int] | None = rows.page_header(data, MAX_NESTING)
    return got


def _page_header_py(data: bytes) -> tuple[int, int, int, int, int]:
    """:func:`_page_header` in Python (the reference the compiled reader is tested against)."""
    reader = _Thrift(data)
    fields = {1: 0, 2: 0, 3: 0}
    values = [0]

    def sub_header(fid: int, kind: int) -> None:
        if fid == 1 and kind == 5:  # num_values, first field of every page kind's header
            values[0] = reader.zigzag()
        else:
            reader.skip(kind)

    def on_field(fid: int, kind: int) -> None:
        if fid in fields and kind == 5:
            fields[fid] = reader.zigzag()
        elif fid in (5, 7, 8) and kind == 12:
            reader.struct(sub_header)
        else:
            reader.skip(kind)

    reader.struct(on_field)
    return reader.pos, fields[1], fields[2], fields[3], values[0]


def _read_page_header(
    source: RandomAccess, pos: int, render: _Render, window: int = _PARQUET_HEADER_READ
) -> tuple[int, int, int, int, int]:
    while True:
        data = source.read_at(pos, window)
        try:
            return _page_header(data)
        except EOFError:
            if len(data) < window or window >= _PARQUET_HEADER_MAX_BYTES:
                raise render.fail("corrupt page header") from None
            window *= 4
        except (ValueError, IndexError):
            raise render.fail("corrupt page header") from None


class _PageScout:
    """Parquet's page headers, noted as the file streams in (``Format.scout``).

    Writers put a file's pages back to back from byte 4: a column chunk is its
    pages (header, then body) and the chunks follow each other. The scout
    parses the header at byte 4, steps over its page to the next header, and so
    on, noting each, until a header does not parse (the pages ended, or a
    writer put something between them) or :data:`_SCOUT_MAX_PAGES`.

    The walk (:func:`_check_parquet_pages`) still goes where the footer says;
    where it arrives at a noted offset it takes the note instead of asking for
    the bytes after the upload. A note is what :func:`_page_header` gives for
    the :data:`_PARQUET_HEADER_READ` bytes at that offset (fewer at the end of
    the file), exactly what the walk reads there first, so the plan and every
    refusal are the same with or without notes. On the benchmark's 65 MB file
    the walk took ~45 ms in a reader process before the first row (a round
    trip per step, a 64 KiB spool chunk decrypted per header); the scout's
    work happens during the upload.
    """

    __slots__ = ("_done", "_head", "_notes", "_pos", "_seen", "_slow")

    def __init__(self) -> None:
        self._seen = 0  # bytes fed so far
        self._pos = 4  # where the next header starts
        self._head = bytearray()  # its first bytes, when they began in an earlier piece
        self._notes = bytearray()
        self._slow = 0  # header bytes read by the Python parser
        self._done = False

    def feed(self, data: bytes) -> None:
        """The file's next bytes.

        A header is read once, when all of the walk's first read of it has
        arrived (a client trickling bytes does not make it read again and
        again). ``_head`` holds the bytes from the next header up to this
        piece when they began in an earlier one (fewer than a read).
        """
        start = self._seen
        self._seen += len(data)
        while not self._done and self._pos < self._seen:
            at = self._pos - start
            if at < 0:
                head = bytes(self._head)
                window = head + data[: _PARQUET_HEADER_READ - len(head)]
            else:
                head = b""
                window = data[at : at + _PARQUET_HEADER_READ]
            if len(window) < _PARQUET_HEADER_READ:
                self._head = bytearray(window)  # goes on in the next piece
                return
            pos = self._pos
            if not self._note(window):
                return
            # A short page may end before this piece: its successor's first bytes
            # are still the held ones.
            skipped = self._pos - pos
            self._head = bytearray(head[skipped:]) if self._pos < start else bytearray()

    def notes(self) -> bytes:
        """The notes (:data:`_NOTE` each); the file has ended."""
        while self._head and not self._done:
            # What the walk reads at the end of the file: fewer bytes than a read.
            head, pos = bytes(self._head), self._pos
            if not self._note(head):
                break
            self._head = bytearray(head[self._pos - pos :])
        self._stop()
        return bytes(self._notes)

    def _note(self, window: bytes) -> bool:
        """Note the header at the next offset from ``window`` (what the walk reads there
        first); False when the scout stopped."""
        sizes = _page_header_compiled(window)
        try:
            if sizes is None:
                # This module's parser reads a byte per Python step: a file of
                # headers the compiled one leaves to it must not cost the
                # gateway's process more than a bounded amount.
                self._slow += len(window)
                if self._slow > _SCOUT_PYTHON_BYTES:
                    raise ValueError("the scout's budget for the Python parser is spent")
                sizes = _page_header_py(window)
            header, kind, unc, comp, values = sizes
            self._notes += _NOTE.pack(self._pos, header, kind, unc, comp, values)
        except (EOFError, ValueError, IndexError, struct.error):
            # Not a page header (the pages ended), or one longer than the walk's
            # first read (the walk reads further itself): the walk reads the rest.
            self._stop()
            return False
        if comp < 0 or len(self._notes) >= _SCOUT_MAX_PAGES * _NOTE.size:
            self._stop()
        self._pos += header + max(comp, 0)
        return True

    def _stop(self) -> None:
        self._done = True
        self._head.clear()


def _noted_pages(source: RandomAccess) -> dict[int, tuple[int, int, int, int, int]]:
    """The scout's notes (:class:`_PageScout`) by offset (empty when there are none)."""
    notes = scout_notes(source)
    if len(notes) % _NOTE.size:
        return {}
    return {
        pos: (header, kind, unc, comp, values)
        for pos, header, kind, unc, comp, values in _NOTE.iter_unpack(notes)
    }


_PARQUET_DICTIONARY_PAGE: Final = 2


@dataclass
class _ParquetPlan:
    """What the page walk found: rows per batch for each row group, and the
    string columns to read as dictionaries (those whose longest value is unknown)."""

    batch_rows: list[int] = field(default_factory=list)
    dictionary_columns: set[str] = field(default_factory=set)


def _longest_value(page: bytes, count: int) -> int:
    """The longest value of a PLAIN-encoded BYTE_ARRAY dictionary page.

    Each value is a 4-byte length and its bytes, so finding the lengths is a
    walk from one to the next. Identifier columns usually hold values of one
    length (sample ids, Resident IDs, phone numbers as text): when the first
    value's length is found at every multiple of its stride, that *is* the
    walk, checked in one vectorised comparison; otherwise the walk runs in
    Python (~0.15 µs a value).
    """
    if count > 0 and len(page) >= 4:
        first = int.from_bytes(page[:4], "little")
        stride = 4 + first
        if count * stride <= len(page):
            lengths = np.ndarray((count,), dtype="<u4", buffer=page, strides=(stride,))
            if bool((lengths == first).all()):
                return first
    pos = longest = 0
    unpack = struct.Struct("<I").unpack_from
    for _ in range(count):
        (length,) = unpack(page, pos)
        pos += 4 + length
        if length > longest:
            longest = length
    if pos > len(page):
        raise ValueError("dictionary values past the page")
    return longest


@dataclass
class _ParquetChunk:
    """What the footer says of one column chunk (ColumnMetaData, parquet.thrift)."""

    path: str = ""
    physical_type: int = -1
    codec: int = -1
    num_values: int = 0
    total_compressed_size: int = 0
    data_page_offset: int = 0
    dictionary_page_offset: int = 0
    encrypted: bool = False
    #: ``statistics.null_count``; None when the writer left it out.
    null_count: int | None = None


@dataclass
class _ParquetFooter:
    """The parts of a Parquet footer the bounds need, parsed here.

    pyarrow's metadata accessors (``row_group(i).column(j)``) terminate the
    process on some inconsistent footers (a C++ exception not turned into a
    Python one, found by this module's hypothesis test), so the footer is
    read here and pyarrow only reads pages.
    """

    row_groups: list[list[_ParquetChunk]] = field(default_factory=list)
    metadata: dict[bytes, bytes] = field(default_factory=dict)
    encrypted: bool = False
    num_rows: int | None = None
    group_rows: list[int] = field(default_factory=list)


_PARQUET_BYTE_ARRAY: Final = 6
#: Parquet codec numbers (parquet.thrift CompressionCodec) read by pyarrow's
#: Codec as the file stores them; LZO and the deprecated Hadoop LZ4 are not.
_PARQUET_CODEC_NAMES: Final[dict[int, str | None]] = {
    0: None,
    1: "snappy",
    2: "gzip",
    4: "brotli",
    6: "zstd",
    7: "lz4_raw",
}


def _parquet_footer(data: bytes, render: _Render) -> _ParquetFooter:
    """Row groups, column chunks and key/value metadata of a FileMetaData (Thrift compact)."""
    reader = _Thrift(data)
    footer = _ParquetFooter()

    def int_field(target: _ParquetChunk, name: str) -> Callable[[int], None]:
        return lambda _kind: setattr(target, name, reader.zigzag())

    def column_meta(chunk: _ParquetChunk) -> None:
        def path(_kind: int) -> None:
            parts: list[str] = []
            reader.items(lambda _e: parts.append(reader.string().decode("utf-8", "replace")))
            chunk.path = ".".join(parts)

        def statistics(_kind: int) -> None:
            reader.fields({3: int_field(chunk, "null_count")})

        reader.fields(
            {
                1: int_field(chunk, "physical_type"),
                3: path,
                4: int_field(chunk, "codec"),
                5: int_field(chunk, "num_values"),
                7: int_field(chunk, "total_compressed_size"),
                9: int_field(chunk, "data_page_offset"),
                11: int_field(chunk, "dictionary_page_offset"),
                12: statistics,
            }
        )

    def column_chunk(_kind: int) -> None:
        chunk = _ParquetChunk()

        def encrypted(kind: int) -> None:
            chunk.encrypted = True
            reader.skip(kind)

        reader.fields({3: lambda _k: column_meta(chunk), 8: encrypted, 9: encrypted})
        footer.row_groups[-1].append(chunk)
        if len(footer.row_groups[-1]) > MAX_COLUMNS:
            raise render.fail(f"more than {MAX_COLUMNS} columns")

    def row_group(_kind: int) -> None:
        footer.row_groups.append([])
        footer.group_rows.append(0)
        if len(footer.row_groups) > MAX_PARQUET_ROW_GROUPS:
            raise render.fail(f"more than {MAX_PARQUET_ROW_GROUPS} row groups")

        def rows(_kind: int) -> None:
            footer.group_rows[-1] = reader.zigzag()

        reader.fields({1: lambda _k: reader.items(column_chunk), 3: rows})

    def file_rows(_kind: int) -> None:
        footer.num_rows = reader.zigzag()

    def key_value(_kind: int) -> None:
        pair = [b"", b""]

        def value(index: int) -> Callable[[int], None]:
            return lambda _k: pair.__setitem__(index, reader.string())

        reader.fields({1: value(0), 2: value(1)})
        footer.metadata[pair[0]] = pair[1]

    def encryption(kind: int) -> None:
        footer.encrypted = True
        reader.skip(kind)

    reader.fields(
        {
            3: file_rows,
            4: lambda _k: reader.items(row_group),
            5: lambda _k: reader.items(key_value),
            8: encryption,
        }
    )
    # Rows the file declares that no row group holds are rows no reader would
    # show: an emptied row-group list hid every page (a hostile-file review).
    if footer.num_rows is not None and footer.num_rows != sum(footer.group_rows):
        raise render.fail("the footer's row count disagrees with its row groups")
    return footer


def _dictionary_longest(
    source: RandomAccess, column: _ParquetChunk, at: int, sizes: tuple[int, int, int, int]
) -> int | None:
    """Longest value in a string column chunk's dictionary page (None: codec not read here)."""
    header, unc, comp, values = sizes
    if column.codec not in _PARQUET_CODEC_NAMES:
        return None
    codec = _PARQUET_CODEC_NAMES[column.codec]
    raw = source.read_at(at + header, comp)
    if codec is None:
        page = raw
    else:
        page = pa.Codec(codec).decompress(raw, decompressed_size=unc).to_pybytes()
    return _longest_value(page, values)


@dataclass
class _PageWalk:
    """One column chunk's pages, walked header by header (:func:`_check_parquet_pages`)."""

    column: _ParquetChunk
    group: int
    pos: int
    end: int
    strings: bool
    longest_value: int = 0
    chunk_values: int = 0
    largest: int = 0
    value_bytes: int = 0


def _page_walks(footer: _ParquetFooter, size: int, render: _Render) -> list[_PageWalk]:
    """A walk per column chunk, its extent checked against the file."""
    walks: list[_PageWalk] = []
    for group_index, group in enumerate(footer.row_groups):
        for column in group:
            if column.encrypted:
                raise render.fail("encrypted")
            if column.num_values == 0 and column.total_compressed_size == 0:
                continue  # no page stored: nothing to walk
            # The chunk starts at its first page: the dictionary page, if any.
            # In an empty row group (a writer given an empty batch) pyarrow
            # stores only an empty dictionary page and a data page offset of 0.
            start = column.data_page_offset
            if column.dictionary_page_offset > 0 and (
                column.dictionary_page_offset < start or (start == 0 and column.num_values == 0)
            ):
                start = column.dictionary_page_offset
            end = start + column.total_compressed_size
            if start < 4 or column.total_compressed_size < 0 or end > size:
                raise render.fail("column chunk outside the file")
            strings = column.physical_type == _PARQUET_BYTE_ARRAY
            walks.append(_PageWalk(column, group_index, start, end, strings))
    return walks


def _check_parquet_pages(
    source: RandomAccess, footer: _ParquetFooter, render: _Render
) -> _ParquetPlan:
    """Walk every page header: bound page sizes and each row group's decoded bytes.

    pyarrow decompresses a page whole into a buffer of the size its header
    claims, and expands a dictionary-encoded string column to one value per
    row; the footer's own sizes are not checked against the page headers.
    Reading the headers first costs one small read per page, plus the
    dictionary page of each string column chunk, whose longest value sets how
    many rows a batch may hold (reading such a column as an Arrow dictionary
    instead costs a hash per value: twice the decoding time on ID columns).

    The column chunks are walked side by side, :data:`_WALKS_AT_ONCE` at a
    time: each step asks for the next header of every one of them together
    (:func:`~gateway.classify.formats.base.read_ranges`), so a reader process
    waits once per step, not once per page (the ~290 headers of the
    benchmark's 65 MB file took a fifth of a second one by one). A header the
    scout noted as the file streamed in (:class:`_PageScout`) is not read at
    all: the note is what reading it gives.
    """
    plan = _ParquetPlan()
    walks = _page_walks(footer, source.size, render)
    noted = _noted_pages(source)
    decoded = [0] * len(footer.row_groups)
    pages = 0
    for first in range(0, len(walks), _WALKS_AT_ONCE):
        active = [w for w in walks[first : first + _WALKS_AT_ONCE] if w.pos < w.end]
        while active:
            unread = [(w.pos, _PARQUET_HEADER_READ) for w in active if w.pos not in noted]
            heads = iter(read_ranges(source, unread) if unread else ())
            for walk in active:
                pages += 1
                if pages > MAX_PARQUET_PAGES:
                    raise render.fail(f"more than {MAX_PARQUET_PAGES} pages")
                sizes = noted.get(walk.pos)
                if sizes is None:
                    sizes = _page_header_in(next(heads), source, walk.pos, render)
                decoded[walk.group] += _walk_page(source, walk, sizes, plan, render)
                if decoded[walk.group] > MAX_PARQUET_ROW_GROUP_BYTES:
                    raise render.fail(
                        f"a row group over {MAX_PARQUET_ROW_GROUP_BYTES >> 20} MiB decoded"
                    )
            active = [w for w in active if w.pos < w.end]
    groups: list[list[_PageWalk]] = [[] for _ in footer.row_groups]
    for walk in walks:  # one pass: a file of 100,000 row groups is not walked 100,000 times
        groups[walk.group].append(walk)
    for group_index, group in enumerate(groups):
        in_flight = sum(w.largest for w in group)
        row_bytes = 1
        for walk in group:
            # The dictionary expanded to every value.
            decoded[group_index] += walk.chunk_values * walk.longest_value
            row_bytes += walk.longest_value
            # Plain-encoded values take their pages' bytes: a batch of 32 Ki rows
            # of 2,000-byte strings in 8 columns would decode to 512 MiB (a 50 KB
            # zstd file reached 1.1 GB RSS), so the rows per batch follow them too.
            if walk.chunk_values:
                row_bytes += walk.value_bytes // walk.chunk_values
        if decoded[group_index] > MAX_PARQUET_ROW_GROUP_BYTES:
            raise render.fail(f"a row group over {MAX_PARQUET_ROW_GROUP_BYTES >> 20} MiB decoded")
        if in_flight > MAX_PARQUET_PAGES_IN_FLIGHT_BYTES:
            raise render.fail("pages of a row group too large to read together")
        plan.batch_rows.append(max(1, min(BATCH_ROWS, MAX_BATCH_TEXT_BYTES // row_bytes)))
    return plan


def _page_header_in(
    head: bytes, source: RandomAccess, pos: int, render: _Render
) -> tuple[int, int, int, int, int]:
    """The page header at ``pos`` from its first bytes ``head`` (read further if longer)."""
    try:
        return _page_header(head)
    except EOFError:
        if len(head) < _PARQUET_HEADER_READ:
            raise render.fail("corrupt page header") from None
    except (ValueError, IndexError):
        raise render.fail("corrupt page header") from None
    return _read_page_header(source, pos, render, _PARQUET_HEADER_READ * 4)


def _walk_page(
    source: RandomAccess,
    walk: _PageWalk,
    sizes: tuple[int, int, int, int, int],
    plan: _ParquetPlan,
    render: _Render,
) -> int:
    """Account one page of ``walk`` and step past it; the bytes it decodes to."""
    header, kind, unc, comp, values = sizes
    if unc < 0 or comp < 0 or values < 0:
        raise render.fail("corrupt page header")
    if unc > MAX_PARQUET_PAGE_BYTES:
        raise render.fail(f"a page over {MAX_PARQUET_PAGE_BYTES >> 20} MiB")
    if kind == _PARQUET_DICTIONARY_PAGE and walk.strings:
        longest = _dictionary_longest(source, walk.column, walk.pos, (header, unc, comp, values))
        if longest is None:
            plan.dictionary_columns.add(walk.column.path)
        else:
            walk.longest_value = max(walk.longest_value, longest)
    else:
        walk.chunk_values += values
        walk.value_bytes += unc
    walk.largest = max(walk.largest, unc)
    walk.pos += header + comp
    return unc + _PARQUET_BYTES_PER_VALUE * values


def read_parquet(source: RandomAccess, out: Extract) -> None:
    """Render a Parquet file in a reader process (:func:`read_parquet_inline` there)."""
    isolated(read_parquet_inline, source, out, "parquet", prepare=load_arrow)


def read_parquet_inline(source: RandomAccess, out: Extract) -> None:
    """Render a Parquet file: one ``table`` member, read a bounded batch at a time."""
    render = _Render("parquet", out, source.size)
    head = source.read_at(0, 4)
    tail = source.read_at(max(0, source.size - 8), 8)
    if head == b"PARE" or tail[4:] == b"PARE":
        raise render.fail("encrypted")
    if head != b"PAR1" or len(tail) < 8 or tail[4:] != b"PAR1":
        raise render.fail("truncated file")
    footer = int.from_bytes(tail[:4], "little")
    if footer > MAX_PARQUET_FOOTER_BYTES or footer + 12 > source.size:
        raise render.fail("corrupt footer length")
    options: dict[str, Any] = {
        "buffer_size": PARQUET_BUFFER_BYTES,
        "pre_buffer": False,
        "thrift_string_size_limit": PARQUET_THRIFT_STRING_BYTES,
        "thrift_container_size_limit": PARQUET_THRIFT_CONTAINER_ITEMS,
        "schema_depth_limit": MAX_NESTING * 3,
    }
    try:
        parsed = _parquet_footer(source.read_at(source.size - 8 - footer, footer), render)
        if parsed.encrypted:
            raise render.fail("encrypted")
        plan = _check_parquet_pages(source, parsed, render)
    except (
        EOFError,
        ValueError,
        IndexError,
        OSError,
        OverflowError,
        struct.error,
        pa.ArrowException,
    ):
        raise render.fail("corrupt footer or page") from None
    with _Guard(render):
        reader = pq.ParquetFile(
            _arrow_file(source), read_dictionary=sorted(plan.dictionary_columns) or None, **options
        )
        if len(plan.batch_rows) != reader.num_row_groups:
            raise render.fail("corrupt footer")
        schema = reader.schema_arrow
        _metadata_lines(render, parsed.metadata, schema)
        # Float columns are read like any other: a whole-number float may be an
        # identifier (_integral_floats), which the footer's counts cannot tell.
        table = _ArrowTable(render, schema)

        def batches() -> Generator[pa.RecordBatch, None, None]:
            for group, rows in enumerate(plan.batch_rows):
                yield from reader.iter_batches(
                    batch_size=rows, row_groups=[group], use_threads=False
                )

        # The next batch is decoded (GIL released) while this one is rendered.
        ahead = prefetched(batches()) if source.size >= PREFETCH_MIN_BYTES else batches()
        with contextlib.closing(ahead):
            for batch in ahead:
                table.add(batch)
        table.close()
    render.finish()


#: A plain footer's magic, or an encrypted one's.
_sniff_parquet: Final = Magic(b"PAR1", b"PARE")


PARQUET: Final = register(
    Format(
        "parquet",
        "application/vnd.apache.parquet",
        _sniff_parquet,
        random=read_parquet,
        scout=_PageScout,
    )
)
