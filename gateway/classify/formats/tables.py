"""Table formats: Parquet, Arrow IPC (file, stream, Feather), ORC, Avro and SQLite (issue 12).

Every table is rendered as one ``text/csv`` member: a header row of column
names, then one line per row, one cell per value (see
:func:`gateway.classify.formats.base.csv_line`). What each value becomes:

* integers as decimal digits, decimals as their exact decimal text, booleans
  as ``true``/``false``, dates as ISO dates, times and timestamps as ISO
  date-times (a space between date and time, as Arrow prints them), strings as
  they are;
* floating-point columns are *counted* (:meth:`Extract.numeric`) and not
  rendered: a float cannot hold an identifier, and skipping them is the
  largest single saving on scientific tables;
* struct columns become one column per leaf (``visit.clinic``); list and map
  cells hold their leaf values separated by spaces;
* binary cells that are UTF-8 text (no control characters) are rendered as
  text; binary cells that start like a file (zip, gzip, PDF, an image, any
  format of the registry) are handed back to the decoder as nested members,
  which it decodes like any member (:data:`MAX_NESTED_CELLS` at most); any
  other binary cell is opaque bytes that could hide binary-encoded numbers, so
  the table is rendered and then reported unscannable ("<format>: binary
  cells that are neither text nor a file"). Columns typed as UUIDs render as
  canonical UUID text.

Arrow-based formats are rendered a record batch at a time with the Arrow
compute kernels (cast to string, join element-wise), never a Python loop per
cell; file metadata (key/value pairs, names of columns not rendered) goes to
a ``text/plain`` member named ``metadata``.

Readers and why each library:

* Parquet, Arrow IPC file (Feather v2), ORC — random access through
  ``pyarrow`` (the reference implementation, already a dependency; the file
  object is :class:`~gateway.classify.formats.base.AccessFile`). pyarrow is
  not hardened against hostile files everywhere, so the metadata it would
  trust is read and bounded here first: Parquet footers and page headers
  (Thrift compact), Arrow IPC message framing and footer blocks
  (FlatBuffers), the ORC postscript and type tree (protobuf). Batches read
  from Arrow IPC are fully validated before a kernel touches them.
* Feather v1 (legacy) — recognised and refused: pyarrow's v1 reader crashes
  on mutated files, and v1 has been deprecated since 2020.
* Arrow IPC stream — a :class:`StreamReader`: messages are framed here and
  pyarrow decodes a record batch once all its bytes have arrived, so nothing
  is buffered beyond one batch and its dictionaries.
* Avro object container files — a :class:`StreamReader`: the container
  (header, blocks, sync markers, codecs) is parsed here with bounded
  decompression, records are decoded by ``fastavro``'s schemaless reader.
* SQLite — a small reader of the documented file format
  (https://www.sqlite.org/fileformat.html: b-tree pages, overflow chains,
  record format) over the random-access view, because Python's ``sqlite3``
  reads only files or whole in-memory images. Every table is read, including
  ``sqlite_schema`` itself (its SQL text can hold values).
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import io
import itertools
import json
import lzma
import re
import struct
import uuid
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import zstandard

from gateway.classify.formats import SNIFF_PREFIX_BYTES, Format, identify, register
from gateway.classify.formats.base import (
    MAX_CELL_CHARS,
    AccessFile,
    Extract,
    LazyModule,
    RandomAccess,
    TextOut,
    Unscannable,
    csv_cell,
    csv_line,
)
from gateway.classify.formats.prefetch import prefetched


def _system_pool(_: object) -> None:
    """Give Arrow the C library's allocator, once, before it allocates anything here.

    Arrow's default allocator in the pyarrow wheels (mimalloc) keeps what it
    frees in per-thread heaps: a 256 MB Parquet upload through the egress
    raised the process's peak RSS by 140-155 MB while Arrow had ~22 MiB live;
    with the C library's allocator, by 90-120 MB, at the same speed (``gateway
    bench proxy --parquet-mb``, issue 12; SPEC §9 memory target). This
    module's readers are the gateway's only users of Arrow.
    """
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())


# The libraries load when a file of a table format arrives (LazyModule: ~60 MB
# of RSS that a gateway without such files does not carry).
if TYPE_CHECKING:
    import fastavro
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    import pyarrow.dataset as pa_dataset
    import pyarrow.ipc as pa_ipc
    import pyarrow.orc as pa_orc
    import pyarrow.parquet as pq
else:
    fastavro = LazyModule("fastavro")
    np = LazyModule("numpy")
    pa = LazyModule("pyarrow", _system_pool)
    pc = LazyModule("pyarrow.compute", _system_pool)
    pa_csv = LazyModule("pyarrow.csv", _system_pool)
    pa_dataset = LazyModule("pyarrow.dataset", _system_pool)
    pa_ipc = LazyModule("pyarrow.ipc", _system_pool)
    pa_orc = LazyModule("pyarrow.orc", _system_pool)
    pq = LazyModule("pyarrow.parquet", _system_pool)

# -- bounds ------------------------------------------------------------------

#: Rows rendered per Arrow record batch: 32 Ki rows of a dozen columns is a
#: few MB of text, enough to amortise the per-batch kernel calls (64 Ki rows
#: was no faster on the benchmark Parquet file and held 20 MiB more at peak).
BATCH_ROWS: Final = 32 << 10
#: Most rendered text held for one batch. A batch whose text would be larger
#: (dictionary cells that repeat a long value) is rendered in slices.
MAX_BATCH_TEXT_BYTES: Final = 32 << 20
#: Most rendered text of one row: a row is rendered whole.
MAX_ROW_TEXT_BYTES: Final = 256 << 20
#: Most columns (leaves) a table may have. Wide genomics matrices reach a few
#: thousand; past this, per-batch overhead and memory per column dominate.
MAX_COLUMNS: Final = 10_000
#: Deepest nesting of struct/list types rendered (Parquet's own default
#: schema depth limit is 1000; real schemas nest a handful of levels).
MAX_NESTING: Final = 32
#: Rendered text may be at most this many times the file's bytes, past
#: :data:`RENDER_GRACE_CHARS`: the "sustained ratio > 100:1" rule of SPEC §3.1,
#: which dictionary and run-length encodings could otherwise be used to bypass
#: (one long value referenced by every row).
RENDER_RATIO: Final = 100
#: Rendered text allowed before :data:`RENDER_RATIO` applies, so small, very
#: repetitive tables stay scannable.
RENDER_GRACE_CHARS: Final = 64 << 20
#: Binary cells handed back to the decoder as nested files per table file: an
#: image column of a few hundred photos is common; a million nested members is
#: a way to exhaust the decoder.
MAX_NESTED_CELLS: Final = 1000
#: Largest binary cell handed back as a nested member; the decoder's own limits
#: apply beyond, but the cell is held in memory once here.
MAX_NESTED_CELL_BYTES: Final = 64 << 20
#: Key/value metadata rendered per file (pandas and Spark write a few KiB).
MAX_METADATA_CHARS: Final = 1 << 20

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

#: Arrow IPC: largest message metadata (a schema of MAX_COLUMNS fields is a
#: few MB of flatbuffer).
MAX_IPC_METADATA_BYTES: Final = 16 << 20
#: Arrow IPC: largest message body, and most bytes a message's buffers may
#: decompress to. A record batch is read whole; writers batch at 64 Ki to 1 Mi
#: rows, tens of MB.
MAX_IPC_MESSAGE_BYTES: Final = 256 << 20
#: Arrow IPC: most record batches or dictionary batches in a file footer.
MAX_IPC_BLOCKS: Final = 1 << 20
#: Arrow IPC: most buffers in one record batch (three per column at most, but
#: nested types add a few).
MAX_IPC_BUFFERS: Final = 8 * MAX_COLUMNS

#: ORC: largest compression block (the ORC writer default is 256 KiB); each
#: stream decompresses into blocks of this size.
MAX_ORC_COMPRESSION_BLOCK_BYTES: Final = 16 << 20
#: ORC: most stripes (default stripe size 64 MiB).
MAX_ORC_STRIPES: Final = 100_000

#: Avro: largest container header (schema and metadata).
MAX_AVRO_HEADER_BYTES: Final = 4 << 20
#: Avro: largest block, compressed and decompressed (writers flush at 16 to
#: 64 KiB by default; 64 MiB is generous for huge records).
MAX_AVRO_BLOCK_BYTES: Final = 64 << 20
#: Avro: most records in one block (a record of null fields takes no bytes, so
#: the count bounds the decoding loop).
MAX_AVRO_BLOCK_RECORDS: Final = 1 << 20

#: SQLite: most pages read (the database's own limit is 2^32-2; 16 Mi pages of
#: 4 KiB is 64 GiB, past anything a transfer holds).
MAX_SQLITE_PAGES: Final = 1 << 24
#: SQLite: largest record (SQLITE_MAX_LENGTH defaults to 1e9; identifiers live
#: in far smaller rows, and a record is held whole while it is rendered).
MAX_SQLITE_RECORD_BYTES: Final = 64 << 20
#: SQLite: most tables (schema rows) read.
MAX_SQLITE_TABLES: Final = 10_000
#: Rendered text gathered before it is written to the member.
_WRITE_CHUNK_CHARS: Final = 1 << 20

# -- common: the file being rendered ----------------------------------------

#: Control characters that make a binary cell "not text" (tab, LF and CR are
#: text). A run of packed small integers is valid UTF-8 but full of these.
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_RE2: Final = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"
_QUOTE_RE2: Final = '[,"\\r\\n]'

#: Leading bytes of files handed to the decoder when found in a binary cell
#: (besides every format of the registry): containers and documents.
_FILE_MAGICS: Final = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b",
    b"\x28\xb5\x2f\xfd",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"%PDF-",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF8",
    b"II*\x00",
    b"MM\x00*",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\xef\xbb\xbf",
)


def _looks_like_file(value: bytes) -> bool:
    """True when a binary cell starts like a file the decoder may read."""
    if value.startswith(_FILE_MAGICS) or value[257:262] == b"ustar":
        return True
    return identify(value[:SNIFF_PREFIX_BYTES]) is not None


class _Render:
    """What one file's reader has rendered so far, and the bounds on it.

    Args:
        fmt: the format's name, the prefix of every unscannable reason.
        out: where members go.
        file_bytes: bytes of the file (a streaming reader adds what it is fed).
    """

    def __init__(self, fmt: str, out: Extract, file_bytes: int = 0) -> None:
        self.fmt = fmt
        self.out = out
        self.file_bytes = file_bytes
        self.rendered = 0
        self.nested = 0
        self.opaque = 0
        self.numeric = 0
        self.metadata: list[str] = []
        self._metadata_chars = 0
        self.active: _Table | None = None  # the table whose member is open

    def fail(self, what: str) -> Unscannable:
        """An :class:`Unscannable` naming this format."""
        return Unscannable(f"{self.fmt}: {what}")

    def write(self, member: TextOut, text: str) -> None:
        """Write rendered text, enforcing :data:`RENDER_RATIO`."""
        self.rendered += len(text)
        if self.rendered > RENDER_GRACE_CHARS and self.rendered > RENDER_RATIO * max(
            self.file_bytes, 1
        ):
            raise self.fail(f"rendered text over {RENDER_RATIO}:1 of the file")
        member.write(text)

    def note(self, line: str) -> None:
        """Add a line to the ``metadata`` member (bounded by :data:`MAX_METADATA_CHARS`)."""
        if self._metadata_chars < MAX_METADATA_CHARS:
            line = line[: MAX_METADATA_CHARS - self._metadata_chars]
            self._metadata_chars += len(line)
            self.metadata.append(line)

    def binary(self, value: bytes | None, where: str) -> str:
        """One binary cell as text: itself when UTF-8 text, else handed over or counted."""
        if not value:
            return ""
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if not _CONTROL_RE.search(text):
                return text
        if _looks_like_file(value):
            self.nested += 1
            if self.nested > MAX_NESTED_CELLS:
                raise self.fail(f"more than {MAX_NESTED_CELLS} files in binary cells")
            if len(value) > MAX_NESTED_CELL_BYTES:
                raise self.fail("a file in a binary cell is too large")
            if self.active is not None:
                self.active.suspend()
            nested = self.out.nested(where)
            nested.write(value)
            nested.close()
            return ""
        self.opaque += 1
        return ""

    def finish(self) -> None:
        """Report counts and metadata; unscannable when opaque binary cells were seen."""
        if self.numeric:
            self.out.numeric(self.numeric)
        if self.metadata:
            member = self.out.member("metadata", "text/plain")
            member.write("".join(self.metadata))
            member.close()
        if self.opaque:
            raise self.fail("binary cells that are neither text nor a file")


class _Table:
    """One table's ``text/csv`` member: opened when text is first written, its header first.

    The decoder's matcher reads one member at a time, so a nested member (a
    file found in a binary cell) ends the table's member; the table then goes
    on in a new member of the same name that starts with the header row again,
    so the column rules still apply to the rows after it. Text is gathered and
    written in pieces of :data:`_WRITE_CHUNK_CHARS`, always whole rows.
    """

    def __init__(self, render: _Render, name: str, header: str = "") -> None:
        self.render = render
        self.name = name
        self.header = header
        self.parts: list[str] = []
        self.size = 0
        self.member: TextOut | None = None

    def add(self, text: str) -> None:
        """Whole rows of rendered text."""
        self.parts.append(text)
        self.size += len(text)
        if self.size >= _WRITE_CHUNK_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        text = "".join(self.parts)
        self.parts.clear()
        self.size = 0
        if self.member is None:
            self.render.active = self
            self.member = self.render.out.member(self.name, "text/csv")
            text = self.header + text
        self.render.write(self.member, text)

    def suspend(self) -> None:
        """End the member now (a nested member opens); later rows start a new one."""
        self.flush()
        if self.member is not None:
            self.member.close()
            self.member = None

    def close(self) -> None:
        """Write what is left (the header alone for an empty table) and end the member."""
        if self.member is None and not self.parts:
            self.parts.append("")
        self.flush()
        if self.member is not None:
            self.member.close()
            self.member = None
        if self.render.active is self:
            self.render.active = None


def _metadata_lines(render: _Render, pairs: dict[bytes, bytes] | None) -> None:
    """File key/value metadata as ``key: value`` lines (binary schemas left out)."""
    for key, value in (pairs or {}).items():
        if key == b"ARROW:schema":  # base64 of the flatbuffer schema already rendered
            continue
        render.note(key.decode("utf-8", "replace") + ": " + value.decode("utf-8", "replace") + "\n")


# -- Arrow: vectorised rendering ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One rendered column: its header name and the path of struct fields to it."""

    name: str
    path: tuple[int, ...]


def _leaves(schema: pa.Schema, render: _Render) -> tuple[list[_Leaf], list[_Leaf]]:
    """The columns of a table, structs flattened to their leaves: (rendered, floating point)."""
    leaves: list[_Leaf] = []
    floats: list[_Leaf] = []
    stack: list[tuple[str, pa.DataType, tuple[int, ...], int]] = [
        (f.name, f.type, (i,), 1) for i, f in reversed(list(enumerate(schema)))
    ]
    while stack:
        name, typ, path, depth = stack.pop()
        if depth > MAX_NESTING:
            raise render.fail(f"types nested deeper than {MAX_NESTING}")
        if isinstance(typ, pa.BaseExtensionType) and not _is_uuid(typ):
            typ = typ.storage_type
        if pa.types.is_struct(typ):
            children = [(typ.field(j), j) for j in range(typ.num_fields)]
            stack.extend(
                (f"{name}.{child.name}", child.type, (*path, j), depth + 1)
                for child, j in reversed(children)
            )
            continue
        # Float columns are rendered too, but only their whole numbers of
        # identifier size (_integral_floats); the rest of them is counted.
        leaves.append(_Leaf(name, path))
        if len(leaves) + len(floats) > MAX_COLUMNS:
            raise render.fail(f"more than {MAX_COLUMNS} columns")
    return leaves, floats


def _is_uuid(typ: pa.DataType) -> bool:
    return isinstance(typ, pa.BaseExtensionType) and typ.extension_name == "arrow.uuid"


def _is_list(typ: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(typ)
        or pa.types.is_large_list(typ)
        or pa.types.is_fixed_size_list(typ)
        or pa.types.is_list_view(typ)
        or pa.types.is_large_list_view(typ)
    )


def _all_float(typ: pa.DataType) -> bool:
    """True when every leaf value of ``typ`` is floating point (nothing to render)."""
    if pa.types.is_floating(typ):
        return True
    if pa.types.is_dictionary(typ):
        return _all_float(typ.value_type)
    if _is_list(typ):
        return _all_float(typ.value_type)
    return False


def _column(batch: pa.RecordBatch, leaf: _Leaf) -> pa.Array:
    """The array of one leaf (struct children taken with the parent's nulls applied)."""
    arr = batch.column(leaf.path[0])
    for j in leaf.path[1:]:
        if isinstance(arr.type, pa.BaseExtensionType):
            arr = arr.storage
        arr = pc.struct_field(arr, [j])
    return arr


def _count(arr: pa.Array) -> int:
    """Values in ``arr`` that are not null (leaf values, for lists of numbers)."""
    while True:
        typ = arr.type
        if isinstance(typ, pa.BaseExtensionType):
            arr = arr.storage
        elif pa.types.is_dictionary(typ):
            arr = arr.indices
        elif _is_list(typ):
            arr = arr.flatten()
        else:
            return int(len(arr) - arr.null_count)


#: Smallest magnitude of a whole-number float that is rendered, as its digits:
#: the shortest digit identifier (a Hong Kong phone number, 8 digits) is above
#: it. pandas stores an integer column with a missing value as float64, so a
#: column of mobile numbers with one gap arrives as 13812345678.0: counted as a
#: float, it would pass unseen. Other floats (measurements) stay unrendered.
INTEGRAL_FLOAT_MIN: Final = 1e7
#: Largest magnitude cast to a 64-bit integer (below 2**63, where the cast stops).
_INTEGRAL_FLOAT_MAX: Final = 9.0e18


def _integral_float(value: float) -> str:
    """One float as :func:`_integral_floats` renders it ("" unless a whole number of that size)."""
    if value.is_integer() and INTEGRAL_FLOAT_MIN <= abs(value) < _INTEGRAL_FLOAT_MAX:
        return str(int(value))
    return ""


def _integral_floats(arr: pa.Array) -> pa.Array:
    """A float array as strings: whole numbers of identifier size as digits, others null."""
    values = pc.cast(arr, pa.float64())
    bounds = pc.min_max(values)  # one pass; measurements rarely reach 10**7
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (low > -INTEGRAL_FLOAT_MIN and high < INTEGRAL_FLOAT_MIN):
        return pa.nulls(len(arr), pa.string())
    size = pc.abs(values)
    keep = pc.and_(
        pc.equal(pc.floor(values), values),
        pc.and_(pc.greater_equal(size, INTEGRAL_FLOAT_MIN), pc.less(size, _INTEGRAL_FLOAT_MAX)),
    )
    whole = pc.if_else(keep, values, pa.scalar(None, pa.float64()))
    return pc.cast(pc.cast(whole, pa.int64()), pa.string())


def _text(arr: pa.Array, render: _Render, where: str, depth: int = 0) -> pa.Array | None:
    """``arr`` as a string array of the same length (nulls allowed), or None for floats."""
    if depth > MAX_NESTING:
        raise render.fail(f"types nested deeper than {MAX_NESTING}")
    typ = arr.type
    if isinstance(typ, pa.BaseExtensionType):
        if _is_uuid(typ):
            return _uuid_text(arr.storage)
        return _text(arr.storage, render, where, depth + 1)
    if pa.types.is_dictionary(typ):
        values = _text(arr.dictionary, render, where, depth + 1)
        if values is None:
            render.numeric += _count(arr)
            return None
        if depth == 0:  # expanded slice by slice, once its size is known (_slices)
            return pa.DictionaryArray.from_arrays(arr.indices, values)
        return pc.take(values, arr.indices)
    if pa.types.is_floating(typ):
        render.numeric += _count(arr)
        return _integral_floats(arr)
    if pa.types.is_null(typ):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_string(typ):
        return arr
    if pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return arr.cast(pa.string())
    if (
        pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
        or pa.types.is_binary_view(typ)
        or pa.types.is_fixed_size_binary(typ)
    ):
        return _binary_text(arr, render, where)
    if pa.types.is_struct(typ):
        parts = [
            _text(pc.struct_field(arr, [j]), render, where, depth + 1)
            for j in range(typ.num_fields)
        ]
        kept = [p for p in parts if p is not None]
        if not kept:
            return None
        return pc.binary_join_element_wise(*kept, _lit(" "), null_handling="skip")
    if pa.types.is_map(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _list_text(arr, arr.offsets, arr.values, render, where, depth)
    if pa.types.is_fixed_size_list(typ):
        size = typ.list_size
        offsets = pa.array(np.arange(0, (len(arr) + 1) * size, size, dtype=np.int64))
        return _list_text(arr, offsets, arr.flatten(), render, where, depth)
    if pa.types.is_list_view(typ) or pa.types.is_large_list_view(typ):
        return _text(arr.cast(pa.large_list(typ.value_field)), render, where, depth + 1)
    if pa.types.is_timestamp(typ):
        return _timestamp_text(arr)
    try:
        return pc.cast(arr, pa.string())
    except pa.ArrowNotImplementedError:
        return pa.array([_py_text(v, render, where) for v in arr.to_pylist()], pa.string())


def _list_text(
    arr: pa.Array,
    offsets: pa.Array,
    values: pa.Array,
    render: _Render,
    where: str,
    depth: int,
) -> pa.Array | None:
    """List cells as their leaf values joined by spaces (floats counted, not rendered)."""
    rendered = _text(values, render, where, depth + 1)
    if rendered is None:
        render.numeric += max(0, len(values) - values.null_count)
        return None
    rendered = pc.fill_null(rendered, _lit(""))
    if pa.types.is_int64(offsets.type):
        lists = pa.LargeListArray.from_arrays(offsets, rendered)
    else:
        lists = pa.ListArray.from_arrays(offsets, rendered)
    joined = pc.binary_join(lists, _lit(" "))
    if arr.null_count:
        joined = pc.if_else(arr.is_null(), pa.scalar(None, pa.string()), joined)
    return joined


#: Units of a timestamp per day, by Arrow's time unit.
_UNITS_PER_DAY: Final = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400 * 10**9}
#: Days from 1970-01-01 to 0001-01-02 and to 9999-12-30: timestamps in this
#: range have a date of four-digit year whatever their time zone (a day of
#: margin at each end for the offset).
_FIRST_DAY: Final = -719_161
_LAST_DAY: Final = 2_932_895
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


def _timestamp_text(arr: pa.Array) -> pa.Array:
    """Timestamps as their ISO date (``2025-03-04``); the time of day is not rendered.

    A timestamp holds no identifier in its time of day: rendered, that is
    ``HH:MM:SS.ffffff`` (digit groups of at most six, between ``:`` and
    ``.``), which no detector matches (SPEC §3.1: the identifiers are runs of
    8 to 19 digits or letters and digits; a coordinate needs a three-digit
    longitude). Leaving it out keeps every finding (distances to a hotword
    only shrink) while the text of a timestamp column shrinks from 26-31
    characters a value to 10, and a column with a time zone skips the
    conversion of every value to local time (a cast 25x slower than the
    date's). The date stays, in the column's time zone (a birth date stored
    as a timestamp still reads as that date). A value whose date is not in
    the years 1-9999 renders as its stored integer, so digits put there
    (Arrow would print ``<value out of range: …>`` for the full timestamp)
    are still seen as digits.
    """
    per_day = _UNITS_PER_DAY[arr.type.unit]
    low, high = _FIRST_DAY * per_day, _LAST_DAY * per_day
    if low <= _INT64_MIN and high >= _INT64_MAX:  # nanoseconds: every value is in range
        return _date_text(pc.cast(arr, pa.date32()))
    raw = pc.cast(arr, pa.int64())
    inside = pc.and_(pc.greater_equal(raw, low), pc.less_equal(raw, high))
    if pc.all(inside).as_py() is not False:  # all in range, or all null
        return _date_text(pc.cast(arr, pa.date32()))
    dates = _date_text(pc.cast(pc.if_else(inside, arr, pa.scalar(0, arr.type)), pa.date32()))
    return pc.if_else(inside, dates, pc.cast(raw, pa.string()))


def _date_text(dates: pa.Array) -> pa.Array:
    """``date32`` values as ISO dates: each day of their range rendered once, then taken.

    A batch of timestamps usually spans far fewer days than it has rows, and
    a ``take`` of 10-byte strings costs a third of rendering each value.
    """
    days = dates.view(pa.int32())
    bounds = pc.min_max(days)
    first, last = bounds["min"].as_py(), bounds["max"].as_py()
    if first is None or last - first >= len(days) // 2:
        return pc.cast(dates, pa.string())
    names = pc.cast(
        pa.array(np.arange(first, last + 1, dtype=np.int32)).view(pa.date32()), pa.string()
    )
    return pc.take(names, pc.subtract(days, pa.scalar(first, pa.int32())))


def _uuid_text(storage: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else str(uuid.UUID(bytes=v)) for v in storage.to_pylist()],
        pa.string(),
    )


def _binary_text(arr: pa.Array, render: _Render, where: str) -> pa.Array:
    """Binary cells: text when every one is UTF-8 text, else cell by cell."""
    try:
        text = arr.cast(pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        text = None
    if text is not None and not pc.any(pc.match_substring_regex(text, _CONTROL_RE2)).as_py():
        return text
    cells = [render.binary(v, where) for v in arr.cast(pa.binary()).to_pylist()]
    return pa.array(cells, pa.string())


def _py_text(value: object, render: _Render, where: str) -> str:
    """One value Arrow cannot cast, as text: leaves of nested values joined by spaces."""
    out: list[str] = []
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise render.fail(f"values nested deeper than {MAX_NESTING}")
        if item is None:
            continue
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in reversed(item))
        else:
            text = _scalar_text(item, render, where)
            if text:
                out.append(text)
    return " ".join(out)


def _scalar_text(value: object, render: _Render, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        render.numeric += 1
        return _integral_float(value)
    if isinstance(value, bytes):
        return render.binary(value, where)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return value
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return str(isoformat())
    return str(value)


# Scalars made once: a Python str argument is converted on every kernel call.
@functools.cache
def _lit(text: str) -> pa.Scalar:
    """An Arrow string scalar, built once (Arrow itself loads with the first table)."""
    return pa.scalar(text, pa.string())


def _cells(arr: pa.Array, quote: bool) -> tuple[pa.Array, bool]:
    """String cells as RFC 4180 cells: quoted where needed, long ones cut (base.csv_cell).

    Also whether the cells are *plain*: hold no separator, quote or line break
    (``quote`` False: the column's type never renders one), so that they are
    written as they are.
    """
    if arr.null_count:
        arr = pc.fill_null(arr, _lit(""))
    if len(arr) and pc.max(pc.binary_length(arr)).as_py() > MAX_CELL_CHARS:
        return pa.array([csv_cell(v) for v in arr.to_pylist()], pa.string()), False
    if quote:
        data = arr.buffers()[2]
        raw = b"" if data is None else data.to_pybytes()
        if any(c in raw for c in (b",", b'"', b"\n", b"\r")):
            needs = pc.match_substring_regex(arr, _QUOTE_RE2)
            quoted = pc.binary_join_element_wise(
                _lit(""), pc.replace_substring(arr, '"', '""'), _lit(""), _lit('"')
            )
            return pc.if_else(needs, quoted, arr), False
    return arr, True


#: Cells written by Arrow's CSV writer as they are (no quoting: they are
#: plain, or already quoted by :func:`_cells`), one line per row.
@functools.cache
def _csv_as_is() -> pa_csv.WriteOptions:
    """Arrow's CSV writer options for cells written as they are (built once)."""
    return pa_csv.WriteOptions(include_header=False, batch_size=BATCH_ROWS, quoting_style="none")


def _batch_text(columns: Sequence[tuple[pa.Array, bool]]) -> str:
    """Rows of rendered columns as CSV lines (no Python per cell).

    When every cell is plain, Arrow's CSV writer (C++, a third of the time of
    two element-wise joins, the second one to end each line) writes the
    lines; otherwise (quoted or cut cells, which its ``none`` quoting style
    refuses) they are joined element-wise. Both give the same text.
    """
    cells = [_cells(arr, quote) for arr, quote in columns]
    if all(plain for _, plain in cells):
        return _written_text([arr for arr, _ in cells])
    return _joined_text([arr for arr, _ in cells])


def _written_text(cells: Sequence[pa.Array]) -> str:
    """Plain cells as CSV lines, by Arrow's CSV writer."""
    if not len(cells[0]):
        return ""
    sink = pa.BufferOutputStream()
    batch = pa.RecordBatch.from_arrays(list(cells), names=[str(i) for i in range(len(cells))])
    pa_csv.write_csv(batch, sink, _csv_as_is())
    return str(memoryview(sink.getvalue()), "utf-8")


def _joined_text(cells: Sequence[pa.Array]) -> str:
    """Cells as CSV lines, by element-wise joins (cells already quoted where needed)."""
    last = pc.binary_join_element_wise(cells[-1], _lit("\n"), _lit(""))
    lines = last if len(cells) == 1 else pc.binary_join_element_wise(*cells[:-1], last, _lit(","))
    if not len(lines):
        return ""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    data = lines.buffers()[2]
    if data is None or end <= start:
        return ""
    return str(memoryview(data)[start:end], "utf-8")


def _cell_bytes(arr: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Bytes of each rendered cell, a dictionary column's without expanding it."""
    if pa.types.is_dictionary(arr.type):
        lengths = pc.take(pc.binary_length(arr.dictionary), arr.indices)
    else:
        lengths = pc.binary_length(arr)
    return np.asarray(pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _slices(columns: Sequence[pa.Array], rows: int, render: _Render) -> list[tuple[int, int]]:
    """Row ranges whose rendered text stays under :data:`MAX_BATCH_TEXT_BYTES` each."""
    lengths = np.ones(rows, dtype=np.int64) * len(columns)  # separators and newline
    for arr in columns:
        lengths += _cell_bytes(arr)
    if int(lengths.sum()) <= MAX_BATCH_TEXT_BYTES:
        return [(0, rows)]
    if int(lengths.max()) > MAX_ROW_TEXT_BYTES:
        raise render.fail(f"a row over {MAX_ROW_TEXT_BYTES >> 20} MiB of text")
    ends = np.cumsum(lengths)
    slices = []
    start = 0
    while start < rows:
        before = int(ends[start - 1]) if start else 0
        end = int(np.searchsorted(ends, before + MAX_BATCH_TEXT_BYTES, side="right"))
        end = max(end, start + 1)
        slices.append((start, end))
        start = end
    return slices


def _expanded(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return pc.take(arr.dictionary, arr.indices)
    return arr


class _ArrowTable:
    """One Arrow-schema table being rendered batch by batch into a ``text/csv`` member."""

    def __init__(
        self,
        render: _Render,
        schema: pa.Schema,
        name: str = "table",
        read: Sequence[int] | None = None,
    ) -> None:
        """``read``: the top-level fields the batches hold, in order (None: all).

        A float field left out is counted by the caller; only floats may be.
        """
        if len(schema) > MAX_COLUMNS:
            raise render.fail(f"more than {MAX_COLUMNS} columns")
        self.render = render
        self.name = name
        self.leaves, self.floats = _leaves(schema, render)
        if read is not None:
            at = {index: position for position, index in enumerate(read)}
            self.leaves = [_Leaf(f.name, (at[f.path[0]], *f.path[1:])) for f in self.leaves]
            self.floats = [
                _Leaf(f.name, (at[f.path[0]], *f.path[1:])) for f in self.floats if f.path[0] in at
            ]
        self.table = _Table(render, name, csv_line(leaf.name for leaf in self.leaves))
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Render ``batch`` (sliced to :data:`BATCH_ROWS` rows at a time)."""
        for start in range(0, max(batch.num_rows, 1), BATCH_ROWS):
            part = batch.slice(start, BATCH_ROWS)
            if part.num_rows:
                self._add(part)

    def _add(self, batch: pa.RecordBatch) -> None:
        for leaf in self.floats:
            self.render.numeric += _count(_column(batch, leaf))
        self._render_rows(batch)

    def _render_rows(self, batch: pa.RecordBatch) -> None:
        columns: list[tuple[pa.Array, bool]] = []
        for leaf in self.leaves:
            arr = _column(batch, leaf)
            text = _text(arr, self.render, f"{self.name} column {leaf.name}")
            if text is None:
                text = pa.nulls(len(arr), pa.string())
            quote = not _never_quoted(arr.type)
            columns.append((text, quote))
        if not columns:
            self.rows += batch.num_rows
            return
        for start, end in _slices([c for c, _ in columns], batch.num_rows, self.render):
            part = [(_expanded(c.slice(start, end - start)), q) for c, q in columns]
            self.table.add(_batch_text(part))
        self.rows += batch.num_rows

    def close(self) -> None:
        """Flush and end the member."""
        self.table.close()


def _never_quoted(typ: pa.DataType) -> bool:
    """Types whose text never holds a separator, a quote or a line break."""
    return bool(
        pa.types.is_integer(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_decimal(typ)
        or pa.types.is_temporal(typ)
        or pa.types.is_floating(typ)
    )


def _arrow_errors(render: _Render) -> Callable[[BaseException], Unscannable]:
    def convert(exc: BaseException) -> Unscannable:
        if isinstance(exc, Unscannable):
            return exc
        text = str(exc).lower()
        if "encrypt" in text or "decrypt" in text:
            return render.fail("encrypted")
        if isinstance(exc, MemoryError):
            return render.fail("out of memory")
        return render.fail("corrupt file")

    return convert


class _Guard:
    """``with _Guard(render):`` — any error of a third-party reader becomes :class:`Unscannable`.

    The libraries parse hostile input and raise whatever their parsers raise
    (``ArrowInvalid``, ``OSError``, ``ValueError``, ``IndexError``, fastavro's
    own errors ...): all of them mean "this file cannot be read".
    """

    def __init__(self, render: _Render) -> None:
        self.convert = _arrow_errors(render)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, Unscannable):
            raise self.convert(exc) from None


def _arrow_file(source: RandomAccess) -> pa.PythonFile:
    return pa.PythonFile(AccessFile(source), mode="r")


# -- Parquet -----------------------------------------------------------------

#: Parquet: largest footer (Thrift metadata); the footer is parsed whole.
MAX_PARQUET_FOOTER_BYTES: Final = 64 << 20
#: Parquet: a page header is read in windows that double up to this size
#: (statistics in a header hold a page's min and max values).
_PARQUET_HEADER_MAX_BYTES: Final = 16 << 20
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
            if size:
                types = self.byte()
                for _ in range(size):
                    if self.pos > len(self.data):
                        raise EOFError
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == 12:
            self.struct(lambda _fid, ftype: self.skip(ftype, depth + 1))
        else:
            raise ValueError("thrift type")
        if self.pos > len(self.data):
            raise EOFError

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
    """(header bytes, page type, uncompressed size, compressed size, values) of a page header."""
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
    source: RandomAccess, pos: int, render: _Render
) -> tuple[int, int, int, int, int]:
    window = 1024
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
    """
    plan = _ParquetPlan()
    pages = 0
    for group in footer.row_groups:
        decoded = in_flight = 0
        row_bytes = 1
        for column in group:
            if column.encrypted:
                raise render.fail("encrypted")
            start = column.data_page_offset
            if 0 < column.dictionary_page_offset < start:
                start = column.dictionary_page_offset
            end = start + column.total_compressed_size
            if start < 4 or column.total_compressed_size < 0 or end > source.size:
                raise render.fail("column chunk outside the file")
            strings = column.physical_type == _PARQUET_BYTE_ARRAY
            longest_value = chunk_values = largest = value_bytes = 0
            pos = start
            while pos < end:
                pages += 1
                if pages > MAX_PARQUET_PAGES:
                    raise render.fail(f"more than {MAX_PARQUET_PAGES} pages")
                header, kind, unc, comp, values = _read_page_header(source, pos, render)
                if unc < 0 or comp < 0 or values < 0:
                    raise render.fail("corrupt page header")
                if unc > MAX_PARQUET_PAGE_BYTES:
                    raise render.fail(f"a page over {MAX_PARQUET_PAGE_BYTES >> 20} MiB")
                if kind == _PARQUET_DICTIONARY_PAGE and strings:
                    longest = _dictionary_longest(source, column, pos, (header, unc, comp, values))
                    if longest is None:
                        plan.dictionary_columns.add(column.path)
                    else:
                        longest_value = max(longest_value, longest)
                else:
                    chunk_values += values
                    value_bytes += unc
                largest = max(largest, unc)
                decoded += unc + _PARQUET_BYTES_PER_VALUE * values
                pos += header + comp
            in_flight += largest
            decoded += chunk_values * longest_value  # the dictionary expanded to every value
            row_bytes += longest_value
            # Plain-encoded values take their pages' bytes: a batch of 32 Ki rows
            # of 2,000-byte strings in 8 columns would decode to 512 MiB (a 50 KB
            # zstd file reached 1.1 GB RSS), so the rows per batch follow them too.
            if chunk_values:
                row_bytes += value_bytes // chunk_values
            if decoded > MAX_PARQUET_ROW_GROUP_BYTES:
                raise render.fail(
                    f"a row group over {MAX_PARQUET_ROW_GROUP_BYTES >> 20} MiB decoded"
                )
        if in_flight > MAX_PARQUET_PAGES_IN_FLIGHT_BYTES:
            raise render.fail("pages of a row group too large to read together")
        plan.batch_rows.append(max(1, min(BATCH_ROWS, MAX_BATCH_TEXT_BYTES // row_bytes)))
    return plan


def read_parquet(source: RandomAccess, out: Extract) -> None:
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
        _metadata_lines(render, parsed.metadata)
        schema = reader.schema_arrow
        # Float columns are read like any other: a whole-number float may be an
        # identifier (_integral_floats), which the footer's counts cannot tell.
        counted: list[int] = []
        floats = 0
        read = sorted(set(range(len(schema))) - set(counted))
        table = _ArrowTable(render, schema, read=read if counted else None)
        render.numeric += floats
        columns = [schema.names[i] for i in read] if counted else None

        def batches() -> Generator[pa.RecordBatch, None, None]:
            for group, rows in enumerate(plan.batch_rows):
                yield from reader.iter_batches(
                    batch_size=rows, row_groups=[group], columns=columns, use_threads=False
                )

        # The next batch is decoded (GIL released) while this one is rendered.
        ahead = prefetched(batches()) if source.size >= PREFETCH_MIN_BYTES else batches()
        with contextlib.closing(ahead):
            for batch in ahead:
                table.add(batch)
        table.close()
    render.finish()


def _sniff_parquet(prefix: bytes) -> bool:
    return prefix[:4] in (b"PAR1", b"PARE")


# -- Arrow IPC: message framing ----------------------------------------------

_CONTINUATION: Final = b"\xff\xff\xff\xff"
_ARROW_MAGIC: Final = b"ARROW1"
_HEADER_SCHEMA: Final = 1
_HEADER_DICTIONARY: Final = 2
_HEADER_RECORD_BATCH: Final = 3


class _Flat:
    """Just enough of the FlatBuffers wire format to read Arrow IPC metadata."""

    def __init__(self, data: bytes, render: _Render) -> None:
        self.data = data
        self.render = render

    def _get(self, fmt: str, pos: int) -> int:
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise self.render.fail("corrupt metadata")
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def root(self) -> int:
        return self._get("<I", 0)

    def _field(self, table: int, index: int) -> int | None:
        vtable = table - self._get("<i", table)
        size = self._get("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > size:
            return None
        offset = self._get("<H", vtable + slot)
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self._field(table, index)
        return default if pos is None else self._get(fmt, pos)

    def table(self, table: int, index: int) -> int | None:
        pos = self._field(table, index)
        return None if pos is None else pos + self._get("<I", pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, number of elements); (0, 0) when absent."""
        pos = self._field(table, index)
        if pos is None:
            return 0, 0
        start = pos + self._get("<I", pos)
        return start + 4, self._get("<I", start)


@dataclass(frozen=True, slots=True)
class _Message:
    """One framed IPC message: where its metadata and body are, and what it holds."""

    kind: int
    metadata: bytes
    body_length: int
    batch: int | None  # flatbuffer position of its RecordBatch table


def _parse_message(metadata: bytes, render: _Render) -> _Message:
    flat = _Flat(metadata, render)
    root = flat.root()
    kind = flat.scalar(root, 1, "<B")
    body = flat.scalar(root, 3, "<q")
    if body < 0 or body > MAX_IPC_MESSAGE_BYTES:
        raise render.fail(f"a message over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
    header = flat.table(root, 2)
    batch = None
    if kind == _HEADER_RECORD_BATCH:
        batch = header
    elif kind == _HEADER_DICTIONARY and header is not None:
        batch = flat.table(header, 1)
    elif kind != _HEADER_SCHEMA:
        raise render.fail("unsupported message")
    return _Message(kind, metadata, body, batch)


def _decoded_bytes(
    message: _Message, read_body: Callable[[int, int], bytes], render: _Render
) -> int:
    """Bytes a message's buffers take once decompressed (its body length when uncompressed)."""
    if message.batch is None:
        return message.body_length
    flat = _Flat(message.metadata, render)
    if flat.table(message.batch, 3) is None:  # no BodyCompression
        return message.body_length
    start, count = flat.vector(message.batch, 2)
    if count > MAX_IPC_BUFFERS:
        raise render.fail(f"more than {MAX_IPC_BUFFERS} buffers in a batch")
    total = 0
    for i in range(count):
        offset = flat._get("<q", start + 16 * i)
        length = flat._get("<q", start + 16 * i + 8)
        if offset < 0 or length < 0 or offset + length > message.body_length:
            raise render.fail("corrupt buffer")
        if length >= 8:
            prefix = read_body(offset, 8)
            if len(prefix) < 8:
                raise render.fail("truncated body")
            declared = int.from_bytes(prefix, "little", signed=True)
            total += length if declared == -1 else declared
        else:
            total += length
        if total > MAX_IPC_MESSAGE_BYTES:
            raise render.fail(f"a batch over {MAX_IPC_MESSAGE_BYTES >> 20} MiB decompressed")
    return total


def _message_prefix(data: bytes) -> tuple[int, int] | None:
    """(prefix bytes, metadata length) of the message framed at ``data``; None when short.

    Arrow writes a continuation marker then the length; streams written before
    Arrow 0.15 have the length alone.
    """
    if len(data) < 4:
        return None
    if data[:4] == _CONTINUATION:
        if len(data) < 8:
            return None
        return 8, int.from_bytes(data[4:8], "little", signed=True)
    return 4, int.from_bytes(data[:4], "little", signed=True)


def _sniff_ipc_message(data: bytes) -> bool:
    """True when ``data`` starts with an IPC message holding a schema (a stream's first)."""
    if data[:4] != _CONTINUATION or len(data) < 16:
        return False
    length = int.from_bytes(data[4:8], "little", signed=True)
    if length < 8 or length > MAX_IPC_METADATA_BYTES or length % 8:
        return False
    try:
        message = _parse_message(data[8 : 8 + length], _Render("arrow", _NoExtract()))
    except Unscannable:
        return False
    flat = _Flat(message.metadata, _Render("arrow", _NoExtract()))
    try:
        version = flat.scalar(flat.root(), 0, "<h")
    except Unscannable:
        return False
    return message.kind == _HEADER_SCHEMA and 0 <= version <= 4


class _NoExtract:
    """An Extract for sniffing, which never receives anything."""

    def member(self, name: str, content_type: str) -> TextOut:
        raise AssertionError("sniffing opens no member")

    def nested(self, name: str) -> Any:
        raise AssertionError("sniffing opens no member")

    def finding(self, label: str, value: bytes) -> None:
        raise AssertionError("sniffing reports nothing")

    def attribute(self, key: str, value: str) -> None:
        raise AssertionError("sniffing reports nothing")

    def numeric(self, values: int) -> None:
        raise AssertionError("sniffing reports nothing")


def _validated(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` after a full validation: IPC bodies are taken as they are, and the
    compute kernels trust offsets and lengths (an offset past a buffer reads
    out of bounds)."""
    batch.validate(full=True)
    return batch


# -- Arrow IPC file and Feather ------------------------------------------------


def _ipc_blocks(
    flat: _Flat, footer: int, index: int, render: _Render
) -> list[tuple[int, int, int]]:
    start, count = flat.vector(footer, index)
    if count > MAX_IPC_BLOCKS:
        raise render.fail(f"more than {MAX_IPC_BLOCKS} batches")
    blocks = []
    for i in range(count):
        pos = start + 24 * i
        blocks.append((flat._get("<q", pos), flat._get("<i", pos + 8), flat._get("<q", pos + 16)))
    return blocks


def _check_ipc_block(source: RandomAccess, block: tuple[int, int, int], render: _Render) -> int:
    """Bound one footer block's message; return the bytes it decodes to."""
    offset, meta_length, body_length = block
    if (
        offset < 8
        or meta_length < 8
        or meta_length > MAX_IPC_METADATA_BYTES
        or body_length < 0
        or body_length > MAX_IPC_MESSAGE_BYTES
        or offset + meta_length + body_length > source.size
    ):
        raise render.fail("corrupt footer block")
    framed = source.read_at(offset, meta_length)
    prefix = _message_prefix(framed)
    if prefix is None or prefix[1] < 0 or prefix[0] + prefix[1] > meta_length:
        raise render.fail("corrupt message")
    message = _parse_message(framed[prefix[0] : prefix[0] + prefix[1]], render)
    body_start = offset + meta_length
    return _decoded_bytes(message, lambda o, n: source.read_at(body_start + o, n), render)


def read_arrow_file(source: RandomAccess, out: Extract) -> None:
    """Render an Arrow IPC file (Feather v2): the batches its footer lists, one at a time."""
    render = _Render("arrow", out, source.size)
    size = source.size
    if (
        size < 18
        or source.read_at(0, 6) != _ARROW_MAGIC
        or source.read_at(size - 6, 6) != _ARROW_MAGIC
    ):
        raise render.fail("truncated file")
    footer_length = int.from_bytes(source.read_at(size - 10, 4), "little", signed=True)
    if footer_length <= 0 or footer_length > min(MAX_IPC_METADATA_BYTES, size - 18):
        raise render.fail("corrupt footer length")
    flat = _Flat(source.read_at(size - 10 - footer_length, footer_length), render)
    footer = flat.root()
    dictionaries = sum(
        _check_ipc_block(source, b, render) for b in _ipc_blocks(flat, footer, 2, render)
    )
    if dictionaries > MAX_IPC_MESSAGE_BYTES:
        raise render.fail(f"dictionaries over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
    batches = _ipc_blocks(flat, footer, 3, render)
    for block in batches:
        _check_ipc_block(source, block, render)
    with _Guard(render):
        reader = pa_ipc.open_file(_arrow_file(source))
        if reader.num_record_batches != len(batches):
            raise render.fail("corrupt footer")
        _metadata_lines(render, reader.schema.metadata)
        table = _ArrowTable(render, reader.schema)
        for i in range(reader.num_record_batches):
            table.add(_validated(reader.get_batch(i)))
        table.close()
    render.finish()


def _sniff_arrow_file(prefix: bytes) -> bool:
    return prefix[:8] == _ARROW_MAGIC + b"\x00\x00"


def read_feather_v1(source: RandomAccess, out: Extract) -> None:
    """Refuse a legacy Feather (v1) file: named, never read.

    pyarrow's v1 reader is not hardened against hostile files (a mutated file
    crashes the process, found by this module's hypothesis test), and no
    other maintained reader exists; Feather v1 is deprecated since Arrow 0.17
    (2020), and rewriting the file as Feather v2 (Arrow IPC) makes it readable.
    """
    raise Unscannable("feather: legacy v1 file not read (rewrite it as Feather v2)")


def _sniff_feather_v1(prefix: bytes) -> bool:
    return prefix[:4] == b"FEA1"


# -- Arrow IPC stream ----------------------------------------------------------


class _Feed(io.RawIOBase):
    """The bytes of framed messages, read by pyarrow's stream reader.

    pyarrow reads a message exactly (marker, length, metadata, body), and is
    only asked for the next batch once every byte of it has been framed, so a
    read never runs past what was fed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self.data[self.pos : self.pos + len(view)]
        view[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def compact(self, keep_from: int) -> int:
        """Drop bytes before ``keep_from`` (all read); return how many were dropped."""
        drop = min(keep_from, self.pos)
        if drop:
            del self.data[:drop]
            self.pos -= drop
        return drop


class ArrowStreamReader:
    """Render an Arrow IPC stream front to back, a record batch at a time.

    Messages are framed here (marker, metadata length, flatbuffer metadata,
    body length from the metadata), bounded, and checked for compressed sizes;
    once a record batch message is complete, pyarrow decodes it together with
    the dictionary batches before it. Memory is one batch and its dictionaries.
    """

    def __init__(self, out: Extract) -> None:
        self.render = _Render("arrow stream", out)
        self.feed_buffer = _Feed()
        self.scan = 0  # offset in the buffer of the next message to frame
        self.reader: Any = None
        self.table: _ArrowTable | None = None
        self.ended = False
        self.dictionaries = 0
        self.failed: Unscannable | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the stream."""
        if self.failed is not None:
            raise self.failed
        self.render.file_bytes += len(data)
        if self.ended:
            return  # bytes after the end-of-stream marker are not part of the stream
        self.feed_buffer.data += data
        try:
            self._frame()
        except Unscannable as exc:
            self.failed = exc
            raise

    def _frame(self) -> None:
        buffer = self.feed_buffer.data
        while not self.ended:
            prefix = _message_prefix(bytes(buffer[self.scan : self.scan + 8]))
            if prefix is None:
                break
            prefix_bytes, meta_length = prefix
            if meta_length == 0:
                self.ended = True
                break
            if meta_length < 0 or meta_length > MAX_IPC_METADATA_BYTES:
                raise self.render.fail("corrupt message length")
            meta_start = self.scan + prefix_bytes
            if len(buffer) < meta_start + meta_length:
                break
            message = _parse_message(
                bytes(buffer[meta_start : meta_start + meta_length]), self.render
            )
            body_start = meta_start + meta_length
            if len(buffer) < body_start + message.body_length:
                if len(buffer) - self.feed_buffer.pos > 2 * MAX_IPC_MESSAGE_BYTES:
                    raise self.render.fail("a batch and its dictionaries are too large")
                break

            def read_body(offset: int, length: int, start: int = body_start) -> bytes:
                return bytes(buffer[start + offset : start + offset + length])

            decoded = _decoded_bytes(message, read_body, self.render)
            if decoded > MAX_IPC_MESSAGE_BYTES:
                raise self.render.fail(f"a message over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
            self.scan = body_start + message.body_length
            if message.kind == _HEADER_DICTIONARY:
                self.dictionaries += decoded
                if self.dictionaries > MAX_IPC_MESSAGE_BYTES:
                    raise self.render.fail(f"dictionaries over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
            if self.scan - self.feed_buffer.pos > 2 * MAX_IPC_MESSAGE_BYTES:
                raise self.render.fail("a batch and its dictionaries are too large")
            self._message(message)
        dropped = self.feed_buffer.compact(self.scan)
        self.scan -= dropped

    def _message(self, message: _Message) -> None:
        with _Guard(self.render):
            if self.reader is None:
                if message.kind != _HEADER_SCHEMA:
                    raise self.render.fail("stream does not start with a schema")
                self.reader = pa_ipc.open_stream(pa.PythonFile(self.feed_buffer, mode="r"))
                _metadata_lines(self.render, self.reader.schema.metadata)
                self.table = _ArrowTable(self.render, self.reader.schema)
            elif message.kind == _HEADER_RECORD_BATCH:
                assert self.table is not None
                self.table.add(_validated(self.reader.read_next_batch()))
            elif message.kind == _HEADER_SCHEMA:
                raise self.render.fail("a second schema")

    def finish(self) -> None:
        """The stream ended: it must have had a schema and no partial message."""
        if self.failed is not None:
            raise self.failed
        if self.reader is None:
            raise self.render.fail("ended before its schema")
        if not self.ended and self.scan < len(self.feed_buffer.data):
            raise self.render.fail("truncated message")
        assert self.table is not None
        self.table.close()
        self.render.finish()


def _sniff_arrow_stream(prefix: bytes) -> bool:
    return _sniff_ipc_message(prefix)


# -- ORC -------------------------------------------------------------------------


#: ORC: largest postscript + footer read to check the schema (the footer lists
#: stripes and types; a few MB even for wide files).
MAX_ORC_FOOTER_BYTES: Final = 16 << 20
#: ORC type kinds (orc_proto.proto Type.Kind) and their child counts: the
#: last kind ORC defines, and the widest decimal Arrow can hold.
_ORC_LAST_KIND: Final = 18
_ORC_DECIMAL: Final = 14
_ORC_COMPOUND: Final = {10: 1, 11: 2, 12: None, 13: None}  # list, map, struct, union
_ORC_MAX_DECIMAL_PRECISION: Final = 38


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message (varints and byte strings)."""
    pos = 0
    while pos < len(data):
        key, pos = _protobuf_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _protobuf_varint(data, pos)
        elif wire == 2:
            length, pos = _protobuf_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        else:
            raise ValueError("wire type")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def _protobuf_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _orc_inflate(kind: int, block_size: int, data: bytes) -> bytes:
    """An ORC metadata stream decompressed (3-byte chunk headers, ORC spec "Compression")."""
    if kind == 0:
        return data
    out = bytearray()
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise ValueError("truncated chunk header")
        header = int.from_bytes(data[pos : pos + 3], "little")
        pos += 3
        length = header >> 1
        chunk = data[pos : pos + length]
        pos += length
        if len(chunk) < length:
            raise ValueError("truncated chunk")
        if header & 1:
            out += chunk
        elif kind == 1:
            inflater = zlib.decompressobj(-15)
            out += inflater.decompress(chunk, block_size + 1)
        elif kind == 5:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(chunk)) as reader:
                out += reader.read(block_size + 1)
        elif kind == 2:
            size, _ = _snappy_length(chunk)
            if size > block_size:
                raise ValueError("chunk over the block size")
            out += pa.Codec("snappy").decompress(chunk, decompressed_size=size).to_pybytes()
        else:  # LZO, LZ4: not decompressed here
            raise ValueError("codec")
        if len(out) > MAX_ORC_FOOTER_BYTES:
            raise ValueError("footer too large")
    return bytes(out)


def _check_orc_tail(source: RandomAccess, render: _Render) -> None:
    """Check the footer's type tree before pyarrow converts it.

    The Arrow ORC adapter aborts the process on some schemas it cannot map
    (a decimal precision over 38, found by this module's hypothesis test), so
    the types are read and checked here first: kinds ORC defines, children
    after their parent and inside the list, decimal precision and scale.
    """
    size = source.size
    if size < 5 or source.read_at(0, 3) != b"ORC":
        raise render.fail("truncated file")
    ps_length = source.read_at(size - 1, 1)[0]
    if ps_length + 1 > size:
        raise render.fail("corrupt postscript")
    postscript = dict(
        (n, v) for n, _, v in _protobuf_fields(source.read_at(size - 1 - ps_length, ps_length))
    )
    footer_length = postscript.get(1, 0)
    kind = postscript.get(2, 0)
    block = postscript.get(3, 256 << 10)
    if not isinstance(footer_length, int) or not isinstance(kind, int):
        raise render.fail("corrupt postscript")
    if not isinstance(block, int) or block > MAX_ORC_COMPRESSION_BLOCK_BYTES:
        raise render.fail("compression blocks too large")
    if footer_length > MAX_ORC_FOOTER_BYTES or footer_length + ps_length + 1 > size:
        raise render.fail("corrupt footer length")
    if kind in (3, 4):  # LZO, LZ4 footers: checked by pyarrow alone
        return
    raw = source.read_at(size - 1 - ps_length - footer_length, footer_length)
    types: list[tuple[int, list[int], int, int]] = []  # kind, children, precision, scale
    stripes = 0
    for number, _wire, value in _protobuf_fields(_orc_inflate(kind, block, raw)):
        if number == 3:
            stripes += 1
        elif number == 4 and isinstance(value, bytes):
            types.append(_orc_type(value))
            if len(types) > MAX_COLUMNS:
                raise render.fail(f"more than {MAX_COLUMNS} columns")
    if stripes > MAX_ORC_STRIPES:
        raise render.fail(f"more than {MAX_ORC_STRIPES} stripes")
    for index, (type_kind, children, precision, scale) in enumerate(types):
        if type_kind > _ORC_LAST_KIND:
            raise render.fail("corrupt schema")
        if type_kind in _ORC_COMPOUND:
            expected = _ORC_COMPOUND[type_kind]
            if expected is not None and len(children) != expected:
                raise render.fail("corrupt schema")
        elif children:
            raise render.fail("corrupt schema")
        if any(c <= index or c >= len(types) for c in children):
            raise render.fail("corrupt schema")
        if type_kind == _ORC_DECIMAL and (
            precision > _ORC_MAX_DECIMAL_PRECISION or (scale > max(precision, 0) and precision != 0)
        ):
            raise render.fail("corrupt schema (decimal precision)")


def _orc_type(data: bytes) -> tuple[int, list[int], int, int]:
    kind = precision = scale = 0
    children: list[int] = []
    for number, wire, value in _protobuf_fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, int):
            children.append(value)
        elif number == 2 and isinstance(value, bytes) and wire == 2:  # packed
            pos = 0
            while pos < len(value):
                child, pos = _protobuf_varint(value, pos)
                children.append(child)
        elif number == 5 and isinstance(value, int):
            precision = value
        elif number == 6 and isinstance(value, int):
            scale = value
    return kind, children, precision, scale


def read_orc(source: RandomAccess, out: Extract) -> None:
    """Render an ORC file through pyarrow's batch reader (bounded rows per batch).

    ORC compresses each stream in blocks of at most the file's compression
    block size, which the reader decompresses one at a time; the block size
    and the stripe count are bounded before reading.
    """
    render = _Render("orc", out, source.size)
    if source.size < 4:
        raise render.fail("truncated file")
    try:
        _check_orc_tail(source, render)
    except (ValueError, OSError, zlib.error, zstandard.ZstdError, pa.ArrowException):
        raise render.fail("corrupt footer") from None
    with _Guard(render):
        meta = pa_orc.ORCFile(_arrow_file(source))
        if meta.compression_size > MAX_ORC_COMPRESSION_BLOCK_BYTES:
            raise render.fail("compression blocks too large")
        if meta.nstripes > MAX_ORC_STRIPES:
            raise render.fail(f"more than {MAX_ORC_STRIPES} stripes")
        schema = meta.schema
        _metadata_lines(render, meta.metadata)
        table = _ArrowTable(render, schema)
        fragment = pa_dataset.OrcFileFormat().make_fragment(_arrow_file(source))
        for batch in fragment.to_batches(batch_size=BATCH_ROWS, use_threads=False):
            table.add(_validated(batch))
        table.close()
    render.finish()


def _sniff_orc(prefix: bytes) -> bool:
    return prefix[:3] == b"ORC"


# -- Avro object container files --------------------------------------------------

_AVRO_MAGIC: Final = b"Obj\x01"
_AVRO_SYNC_BYTES: Final = 16
#: Memory the xz decompressor may use (as the decoder's xz layer).
_AVRO_XZ_MEMLIMIT: Final = 72 << 20


class _NeedMore(Exception):
    """The buffer ends inside the item being parsed: wait for more bytes."""


def _avro_long(buffer: bytes | bytearray, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Avro ``long``) at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        if pos >= len(buffer):
            raise _NeedMore
        b = buffer[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise Unscannable("avro: corrupt length")


def _avro_header(buffer: bytearray) -> tuple[dict[str, bytes], bytes, int]:
    """(metadata, sync marker, header bytes) of a container header; _NeedMore when short."""
    if len(buffer) >= 4 and buffer[:4] != _AVRO_MAGIC:
        raise Unscannable("avro: not an object container file")
    pos = 4
    metadata: dict[str, bytes] = {}
    while True:
        count, pos = _avro_long(buffer, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _avro_long(buffer, pos)  # byte size of the block, not needed
        for _ in range(count):
            parts = []
            for _kv in range(2):
                length, pos = _avro_long(buffer, pos)
                if length < 0 or pos + length > MAX_AVRO_HEADER_BYTES:
                    raise Unscannable("avro: corrupt header")
                if pos + length > len(buffer):
                    raise _NeedMore
                parts.append(bytes(buffer[pos : pos + length]))
                pos += length
            metadata[parts[0].decode("utf-8", "replace")] = parts[1]
            if len(metadata) > MAX_COLUMNS:
                raise Unscannable("avro: corrupt header")
    if pos + _AVRO_SYNC_BYTES > len(buffer):
        raise _NeedMore
    return metadata, bytes(buffer[pos : pos + _AVRO_SYNC_BYTES]), pos + _AVRO_SYNC_BYTES


def _avro_inflate(codec: str, data: bytes) -> bytes:
    """One block's data decompressed, at most :data:`MAX_AVRO_BLOCK_BYTES`."""
    limit = MAX_AVRO_BLOCK_BYTES + 1
    if codec == "null":
        out = data
    elif codec == "deflate":
        out = zlib.decompressobj(-15).decompress(data, limit)
    elif codec == "snappy":
        size, _ = _snappy_length(data)
        if size >= limit or len(data) < 4:
            raise Unscannable("avro: block too large")
        out = pa.Codec("snappy").decompress(data[:-4], decompressed_size=size).to_pybytes()
        if zlib.crc32(out) != int.from_bytes(data[-4:], "big"):
            raise Unscannable("avro: corrupt block")
    elif codec == "zstandard":
        with zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data), read_across_frames=True
        ) as r:
            out = r.read(limit)
    elif codec == "bzip2":
        out = bz2.BZ2Decompressor().decompress(data, limit)
    elif codec == "xz":
        out = lzma.LZMADecompressor(memlimit=_AVRO_XZ_MEMLIMIT).decompress(data, limit)
    else:
        raise Unscannable("avro: unknown codec")
    if len(out) >= limit:
        raise Unscannable(f"avro: a block over {MAX_AVRO_BLOCK_BYTES >> 20} MiB")
    return out


def _snappy_length(data: bytes) -> tuple[int, int]:
    """The uncompressed length that starts a raw snappy block (a little-endian varint)."""
    shift = result = 0
    for pos, b in enumerate(data[:5]):
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos + 1
        shift += 7
    raise Unscannable("avro: corrupt block")


def _avro_min_size(schema: Any, names: dict[str, Any], seen: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a datum of ``schema`` takes (0 for null, empty records, fixed(0))."""
    if isinstance(schema, str):
        if schema == "null":
            return 0
        if schema in names and schema not in seen:
            return _avro_min_size(names[schema], names, seen | {schema})
        return 1
    if isinstance(schema, list):
        return 1  # the branch index
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record" or kind == "error":
            return sum(_avro_min_size(f.get("type"), names, seen) for f in schema.get("fields", []))
        if kind == "fixed":
            return int(schema.get("size", 1))
        if isinstance(kind, str | list | dict) and kind not in ("array", "map", "enum"):
            return _avro_min_size(kind, names, seen)
    return 1


def _avro_check_schema(schema: Any, render: _Render) -> None:
    """Refuse arrays of zero-size items: their count alone would drive the decoding loop."""
    names: dict[str, Any] = {}
    stack: list[tuple[Any, int]] = [(schema, 0)]
    nodes: list[Any] = []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING * 4:
            raise render.fail(f"schema nested deeper than {MAX_NESTING * 4}")
        nodes.append(node)
        if isinstance(node, list):
            stack.extend((n, depth + 1) for n in node)
        elif isinstance(node, dict):
            if "name" in node and node.get("type") in ("record", "error", "enum", "fixed"):
                name = str(node["name"])
                names[name] = node
                if "namespace" in node:
                    names[f"{node['namespace']}.{name}"] = node
            for key in ("type", "items", "values"):
                if key in node and not isinstance(node[key], str):
                    stack.append((node[key], depth + 1))
            stack.extend(
                (f.get("type"), depth + 1) for f in node.get("fields", []) if isinstance(f, dict)
            )
    for node in nodes:
        if (
            isinstance(node, dict)
            and node.get("type") == "array"
            and _avro_min_size(node.get("items"), names) == 0
        ):
            raise render.fail("arrays of zero-size items")


@dataclass(frozen=True, slots=True)
class _AvroColumn:
    name: str
    path: tuple[str, ...]
    numeric: bool


def _avro_columns(schema: Any, named: dict[str, Any], render: _Render) -> list[_AvroColumn]:
    """Columns of an Avro table: record fields, nested records flattened to their leaves.

    A record type nested in itself (a linked list, a tree) is flattened once;
    its deeper levels are one column whose cells hold their leaf values.
    """

    def resolve(node: Any) -> Any:
        if isinstance(node, str) and node in named:
            return named[node]
        if isinstance(node, list):
            branches = [b for b in node if b != "null"]
            if len(branches) == 1:
                return resolve(branches[0])
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list | str):
            if node.get("type") not in _AVRO_COMPLEX and node["type"] in named:
                return resolve(node["type"])
            if isinstance(node.get("type"), dict | list):
                return resolve(node["type"])
        return node

    top = resolve(schema)
    if not (isinstance(top, dict) and top.get("type") in ("record", "error")):
        return [_AvroColumn("value", (), False)]
    columns: list[_AvroColumn] = []

    def walk(record: dict[str, Any], path: tuple[str, ...], open_records: tuple[int, ...]) -> None:
        for f in record.get("fields", []):
            if not isinstance(f, dict):
                raise render.fail("corrupt schema")
            name = str(f.get("name"))
            typ = resolve(f.get("type"))
            if (
                isinstance(typ, dict)
                and typ.get("type") in ("record", "error")
                and id(typ) not in open_records
                and len(path) < MAX_NESTING
            ):
                walk(typ, (*path, name), (*open_records, id(typ)))
                continue
            kind = typ.get("type") if isinstance(typ, dict) else typ
            columns.append(
                _AvroColumn(".".join((*path, name)), (*path, name), kind in ("float", "double"))
            )
            if len(columns) > MAX_COLUMNS:
                raise render.fail(f"more than {MAX_COLUMNS} columns")

    walk(top, (), (id(top),))
    return columns


_AVRO_COMPLEX: Final = frozenset({"record", "error", "enum", "array", "map", "fixed"})


class AvroReader:
    """Render an Avro object container file front to back, a block at a time.

    The container (header, blocks, sync markers, codecs) is parsed here with
    bounded decompression; fastavro's schemaless reader decodes the records of
    a complete block. Nothing is buffered beyond one block.
    """

    def __init__(self, out: Extract) -> None:
        self.render = _Render("avro", out)
        self.buffer = bytearray()
        self.header: tuple[Any, str, bytes] | None = None
        self.columns: list[_AvroColumn] = []
        self.table: _Table | None = None
        self.failed: Unscannable | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the file."""
        if self.failed is not None:
            raise self.failed
        self.render.file_bytes += len(data)
        self.buffer += data
        try:
            self._parse()
        except Unscannable as exc:
            self.failed = exc
            raise

    def _parse(self) -> None:
        if self.header is None:
            try:
                metadata, sync, used = _avro_header(self.buffer)
            except _NeedMore:
                if len(self.buffer) > MAX_AVRO_HEADER_BYTES:
                    raise self.render.fail("header too large") from None
                return
            del self.buffer[:used]
            self._start(metadata, sync)
        while True:
            try:
                count, pos = _avro_long(self.buffer, 0)
                size, pos = _avro_long(self.buffer, pos)
            except _NeedMore:
                return
            if count < 0 or size < 0 or count > MAX_AVRO_BLOCK_RECORDS:
                raise self.render.fail("corrupt block")
            if size > MAX_AVRO_BLOCK_BYTES:
                raise self.render.fail(f"a block over {MAX_AVRO_BLOCK_BYTES >> 20} MiB")
            end = pos + size + _AVRO_SYNC_BYTES
            if len(self.buffer) < end:
                return
            assert self.header is not None
            if self.buffer[end - _AVRO_SYNC_BYTES : end] != self.header[2]:
                raise self.render.fail("corrupt block (sync marker)")
            block = bytes(self.buffer[pos : pos + size])
            del self.buffer[:end]
            self._block(count, block)

    def _start(self, metadata: dict[str, bytes], sync: bytes) -> None:
        codec = metadata.get("avro.codec", b"null").decode("utf-8", "replace") or "null"
        with _Guard(self.render):
            schema = json.loads(metadata.get("avro.schema", b"null"))
            _avro_check_schema(schema, self.render)
            parsed = fastavro.parse_schema(schema)
            named: dict[str, Any] = {}
            _collect_avro_names(schema, named)
            self.columns = _avro_columns(schema, named, self.render)
        self.header = (parsed, codec, sync)
        _metadata_lines(self.render, {k.encode(): v for k, v in metadata.items()})
        self.table = _Table(
            self.render, "table", csv_line(c.name for c in self.columns if not c.numeric)
        )
        for c in self.columns:
            if c.numeric:
                self.render.note(f"column not rendered (floating point): {c.name}\n")

    def _block(self, count: int, block: bytes) -> None:
        assert self.header is not None
        assert self.table is not None
        parsed, codec, _ = self.header
        lines: list[str] = []
        with _Guard(self.render):
            stream = io.BytesIO(_avro_inflate(codec, block))
            for _ in range(count):
                record = fastavro.schemaless_reader(
                    stream, parsed, None, handle_unicode_errors="replace"
                )
                lines.append(csv_line(self._row(record)))
        self.table.add("".join(lines))

    def _row(self, record: Any) -> list[str]:
        cells = []
        wholes: list[str] = []
        for column in self.columns:
            value = record
            for key in column.path:
                value = value.get(key) if isinstance(value, dict) else None
            if column.numeric:
                if value is not None:
                    self.render.numeric += 1
                    if isinstance(value, float) and (whole := _integral_float(value)):
                        wholes.append(whole)
                continue
            cells.append(_py_text(value, self.render, f"table column {column.name}"))
        # Whole-number floats of identifier size go after the rendered columns
        # (a float column has no header cell), so no other cell moves.
        return cells + wholes

    def finish(self) -> None:
        """The file ended: it must end on a block boundary."""
        if self.failed is not None:
            raise self.failed
        if self.header is None:
            raise self.render.fail("truncated header")
        if self.buffer:
            raise self.render.fail("truncated block")
        assert self.table is not None
        self.table.close()
        self.render.finish()


def _collect_avro_names(schema: Any, named: dict[str, Any]) -> None:
    """Named types of a schema by short and full name (for resolving references)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "name" in node and node.get("type") in ("record", "error", "enum", "fixed"):
                named.setdefault(str(node["name"]), node)
                if "namespace" in node:
                    named.setdefault(f"{node['namespace']}.{node['name']}", node)
            for key in ("type", "items", "values"):
                if isinstance(node.get(key), dict | list):
                    stack.append(node[key])
            stack.extend(f.get("type") for f in node.get("fields", []) if isinstance(f, dict))


def _sniff_avro(prefix: bytes) -> bool:
    return prefix[:4] == _AVRO_MAGIC


# -- SQLite ----------------------------------------------------------------------

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_SQLITE_ENCODINGS: Final = {0: "utf-8", 1: "utf-8", 2: "utf-16-le", 3: "utf-16-be"}
#: Bytes of an integer by record serial type 1..6 (fileformat.html §2.1).
_SQLITE_INT_BYTES: Final = (0, 1, 2, 3, 4, 6, 8)
_SQLITE_SCHEMA_COLUMNS: Final = ("type", "name", "tbl_name", "rootpage", "sql")


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


def _sqlite_cell(value: object, render: _Render, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return render.binary(value, where)
    render.numeric += 1
    return ""


def _sqlite_rows(db: _SqliteFile, root: int, sql: str, table: _Table) -> None:
    """Render the rows of one table (columns named by position when the SQL is not understood)."""
    render = db.render
    parsed = _sqlite_table(sql)
    layout = parsed or _SqliteTable(["rowid"], None, True, False)
    table.header = csv_line(layout.names)
    lines: list[str] = []
    for rowid, payload in db.cells(root, not layout.without_rowid):
        values = db.record(payload)
        cells = [_sqlite_cell(v, render, table.name) for v in values]
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
    for _, payload in db.cells(1, table=True):
        values = db.record(payload)
        schema.add(csv_line(_sqlite_cell(v, render, schema.name) for v in values))
        kind, name, _tbl, root, sql = (*values, None, None, None, None, None)[:5]
        if kind == "table" and isinstance(root, int) and root > 0:
            tables.append((str(name), root, sql if isinstance(sql, str) else ""))
            if len(tables) > MAX_SQLITE_TABLES:
                raise render.fail(f"more than {MAX_SQLITE_TABLES} tables")
    schema.close()
    for name, root, sql in tables:
        table = _Table(render, f"table {name}")
        _sqlite_rows(db, root, sql, table)
        table.close()
    render.finish()


def _sniff_sqlite(prefix: bytes) -> bool:
    return prefix[:16] == _SQLITE_MAGIC


# -- registry ----------------------------------------------------------------------

PARQUET: Final = register(
    Format(
        "parquet",
        "application/vnd.apache.parquet",
        _sniff_parquet,
        random=read_parquet,
        run_ahead=True,
    )
)
ARROW_FILE: Final = register(
    Format(
        "arrow",
        "application/vnd.apache.arrow.file",
        _sniff_arrow_file,
        random=read_arrow_file,
        run_ahead=True,
    )
)
ARROW_STREAM: Final = register(
    Format(
        "arrow-stream",
        "application/vnd.apache.arrow.stream",
        _sniff_arrow_stream,
        stream=ArrowStreamReader,
    )
)
FEATHER_V1: Final = register(
    Format("feather", "application/x-feather", _sniff_feather_v1, random=read_feather_v1)
)
ORC: Final = register(
    Format("orc", "application/vnd.apache.orc", _sniff_orc, random=read_orc, run_ahead=True)
)
AVRO: Final = register(Format("avro", "application/avro", _sniff_avro, stream=AvroReader))
SQLITE: Final = register(
    Format("sqlite", "application/vnd.sqlite3", _sniff_sqlite, random=read_sqlite)
)
