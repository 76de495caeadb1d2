"""What the table readers share: their libraries, the common bounds, and rendering.

:class:`_Render` is what one file's reader has rendered so far and the bounds
on it; :class:`_Table` is one table's ``text/csv`` member; :class:`_ArrowTable`
renders Arrow record batches into one with the compute kernels (what each
value becomes: :mod:`gateway.classify.formats.tables`). The names keep their
leading underscore: they are shared by the package's format modules, not an API.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from gateway.classify.formats import SNIFF_PREFIX_BYTES, identify
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

try:
    from gateway.classify.formats.tables import _rows as _built_rows
except ImportError:  # pragma: no cover - a source tree whose extension was not built
    _built_rows = None  # type: ignore[assignment]
#: The compiled renderer (``_rows.c``); None: Arrow's kernels render every batch.
_rows: ModuleType | None = _built_rows


def _system_pool(_: object) -> None:
    """Give Arrow the C library's allocator, once, before it allocates anything here.

    Arrow's default allocator in the pyarrow wheels (mimalloc) keeps what it
    frees in per-thread heaps: a 256 MB Parquet upload through the egress
    raised the process's peak RSS by 140-155 MB while Arrow had ~22 MiB live;
    with the C library's allocator, by 90-120 MB, at the same speed (``gateway
    bench proxy --parquet-mb``, issue 12; SPEC §9 memory target). The
    table readers are the gateway's only users of Arrow.
    """
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())


# The libraries load when a file of a table format arrives (LazyModule: ~60 MB
# of RSS that a gateway without such files does not carry). One handle per
# library, here: the format modules import theirs from this module (and, for
# the type checker, the library itself).
if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
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


def load_arrow() -> None:
    """Import Arrow's modules (in the reader zygote, once, before it forks a reader process).

    The table readers that use Arrow run in reader processes
    (:mod:`gateway.classify.formats.isolation`): the gateway's own process
    never loads pyarrow (~90 MB of RSS, and a C++ library whose readers have
    crashed on mutated files).
    """
    # Arrow's default allocator (mimalloc in the wheels) reserves ~1 GiB of
    # address space at its first allocation, which a reader process's address
    # space limit (isolation.ISOLATED_MAX_MEMORY) would refuse; chosen before
    # the import, it is never set up (_system_pool alone comes too late).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if not TYPE_CHECKING:
        for handle in (pa, pc, pa_csv, pa_dataset, pa_ipc, pa_orc, pq):
            handle._load()


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
#: Rendered text (bytes of UTF-8) may be at most this many times the file's bytes, past
#: :data:`RENDER_GRACE_BYTES`: the "sustained ratio > 100:1" rule of SPEC §3.1,
#: which dictionary and run-length encodings could otherwise be used to bypass
#: (one long value referenced by every row).
RENDER_RATIO: Final = 100
#: Rendered text allowed before :data:`RENDER_RATIO` applies, so small, very
#: repetitive tables stay scannable.
RENDER_GRACE_BYTES: Final = 64 << 20
#: Binary cells handed back to the decoder as nested files per table file: an
#: image column of a few hundred photos is common; a million nested members is
#: a way to exhaust the decoder.
MAX_NESTED_CELLS: Final = 1000
#: Largest binary cell handed back as a nested member; the decoder's own limits
#: apply beyond, but the cell is held in memory once here.
MAX_NESTED_CELL_BYTES: Final = 64 << 20
#: Key/value metadata rendered per file. pandas and Spark write a few KiB,
#: pandas about 150 bytes per column (2 MB at the widest tables read here);
#: past this the file is unscannable, never partly read.
MAX_METADATA_CHARS: Final = 16 << 20
#: Rendered text (bytes of UTF-8) gathered before it is written to the member.
_WRITE_CHUNK_BYTES: Final = 1 << 20

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

    def write(self, member: TextOut, text: bytes) -> None:
        """Write rendered text (UTF-8), enforcing :data:`RENDER_RATIO`."""
        self.rendered += len(text)
        if self.rendered > RENDER_GRACE_BYTES and self.rendered > RENDER_RATIO * max(
            self.file_bytes, 1
        ):
            raise self.fail(f"rendered text over {RENDER_RATIO}:1 of the file")
        member.write(text)

    def note(self, line: str) -> None:
        """Add a line to the ``metadata`` member (bounded by :data:`MAX_METADATA_CHARS`)."""
        self._metadata_chars += len(line)
        if self._metadata_chars > MAX_METADATA_CHARS:
            raise self.fail(f"key/value metadata over {MAX_METADATA_CHARS >> 20} Mi characters")
        self.metadata.append(line)

    def binary(self, value: bytes | None, where: str, structure: bool = False) -> str:
        """One binary cell as text: itself when UTF-8 text, else handed over or counted.

        ``structure``: the cell is a known index structure (a SQLite full-text
        index's doclists, an R*Tree node), not content: when it is neither text
        nor a file it is counted as numbers are, not refused as opaque.
        """
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
        if structure:
            self.numeric += 1
        else:
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


def _utf8(text: str) -> bytes:
    """A str as the bytes :class:`TextOut` takes (a lone surrogate as ``surrogatepass``
    writes it, as a reader process sends a str)."""
    return text.encode("utf-8", "surrogatepass")


class _Table:
    """One table's ``text/csv`` member: opened when text is first written, its header first.

    The decoder's matcher reads one member at a time, so a nested member (a
    file found in a binary cell) ends the table's member; the table then goes
    on in a new member of the same name that starts with the header row again,
    so the column rules still apply to the rows after it. Text is gathered and
    written in pieces of :data:`_WRITE_CHUNK_BYTES`, always whole rows, as UTF-8
    (what the compiled renderer writes: no decoding and encoding again on the
    way to the matcher).
    """

    def __init__(self, render: _Render, name: str, header: str = "") -> None:
        self.render = render
        self.name = name
        self.header = header
        self.parts: list[bytes] = []
        self.size = 0
        self.member: TextOut | None = None

    def add(self, text: str | bytes) -> None:
        """Whole rows of rendered text (a str, or its UTF-8)."""
        data = _utf8(text) if isinstance(text, str) else text
        self.parts.append(data)
        self.size += len(data)
        if self.size >= _WRITE_CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        if self.member is None:
            self.render.active = self
            self.member = self.render.out.member(self.name, "text/csv")
            data = _utf8(self.header) + data
        self.render.write(self.member, data)

    def suspend(self) -> None:
        """End the member now (a nested member opens); later rows start a new one."""
        self.flush()
        if self.member is not None:
            self.member.close()
            self.member = None

    def close(self) -> None:
        """Write what is left (the header alone for an empty table) and end the member."""
        if self.member is None and not self.parts:
            self.parts.append(b"")
        self.flush()
        if self.member is not None:
            self.member.close()
            self.member = None
        if self.render.active is self:
            self.render.active = None


def _metadata_lines(
    render: _Render, pairs: dict[bytes, bytes] | None, schema: pa.Schema | None = None
) -> None:
    """File key/value metadata as ``key: value`` lines, then each field's as ``field key: value``.

    ``ARROW:schema`` (base64 of the flatbuffer schema) is left out: what it
    holds is read from ``schema``: field names are the table's header, and
    field metadata (a column's description, a data dictionary entry: free
    text a writer attaches to any field, nested ones too) is rendered here.
    """
    for key, value in (pairs or {}).items():
        if key == b"ARROW:schema":
            continue
        render.note(key.decode("utf-8", "replace") + ": " + value.decode("utf-8", "replace") + "\n")
    if schema is None:
        return
    stack: list[tuple[str, pa.Field, int]] = [(f.name, f, 1) for f in reversed(list(schema))]
    while stack:
        name, field, depth = stack.pop()
        if depth > MAX_NESTING:
            raise render.fail(f"types nested deeper than {MAX_NESTING}")
        for key, value in (field.metadata or {}).items():
            render.note(
                f"{name} {key.decode('utf-8', 'replace')}: {value.decode('utf-8', 'replace')}\n"
            )
        typ = field.type
        if isinstance(typ, pa.BaseExtensionType):
            typ = typ.storage_type
        stack.extend(
            (f"{name}.{typ.field(j).name}", typ.field(j), depth + 1)
            for j in reversed(range(typ.num_fields))
        )


# -- Arrow: vectorised rendering ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One rendered column: its header name and the path of struct fields to it."""

    name: str
    path: tuple[int, ...]


def _leaves(schema: pa.Schema, render: _Render) -> list[_Leaf]:
    """The columns of a table, structs flattened to their leaves."""
    leaves: list[_Leaf] = []
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
        if len(leaves) > MAX_COLUMNS:
            raise render.fail(f"more than {MAX_COLUMNS} columns")
    return leaves


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
    bounds = _bounds(values)  # measurements rarely reach 10**7
    if bounds is None or (bounds[0] > -INTEGRAL_FLOAT_MIN and bounds[1] < INTEGRAL_FLOAT_MIN):
        return pa.nulls(len(arr), pa.string())
    size = pc.abs(values)
    keep = pc.and_(
        pc.equal(pc.floor(values), values),
        pc.and_(pc.greater_equal(size, INTEGRAL_FLOAT_MIN), pc.less(size, _INTEGRAL_FLOAT_MAX)),
    )
    whole = pc.if_else(keep, values, pa.scalar(None, pa.float64()))
    return pc.cast(pc.cast(whole, pa.int64()), pa.string())


def _text(arr: pa.Array, render: _Render, where: str, depth: int = 0) -> pa.Array | None:
    """``arr`` as a string array of the same length (nulls allowed).

    None when nothing in it renders (a struct without fields); floats render
    as :func:`_integral_floats` and are counted.
    """
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
        # Views may share and reorder values: their cells' values in order, and
        # offsets from the cells' lengths (a cast to a list gave pyarrow 26 an
        # offsets buffer one entry short for large list views).
        lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int64()).to_numpy()
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())
        return _list_text(arr, offsets, pc.list_flatten(arr), render, where, depth)
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
    """List cells as their leaf values joined by spaces."""
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
    dates = _timestamp_dates(arr)
    if dates is not None:
        return _date_text(dates)
    per_day = _UNITS_PER_DAY[arr.type.unit]
    low, high = _FIRST_DAY * per_day, _LAST_DAY * per_day
    raw = pc.cast(arr, pa.int64())
    inside = pc.and_(pc.greater_equal(raw, _int64(low)), pc.less_equal(raw, _int64(high)))
    dates = _date_text(pc.cast(pc.if_else(inside, arr, pa.scalar(0, arr.type)), pa.date32()))
    return pc.if_else(inside, dates, pc.cast(raw, pa.string()))


def _timestamp_dates(arr: pa.Array) -> pa.Array | None:
    """Timestamps' dates (``date32``, in their time zone) when every one is in the years
    1-9999 or null; None when some are not (:func:`_timestamp_text` renders those)."""
    per_day = _UNITS_PER_DAY[arr.type.unit]
    low, high = _FIRST_DAY * per_day, _LAST_DAY * per_day
    if low <= _INT64_MIN and high >= _INT64_MAX:  # nanoseconds: every value is in range
        return pc.cast(arr, pa.date32())
    bounds = _bounds(pc.cast(arr, pa.int64()))
    if bounds is None or (low <= bounds[0] and bounds[1] <= high):  # all null, or all in range
        return pc.cast(arr, pa.date32())
    return None


def _bounds(arr: pa.Array) -> tuple[Any, Any] | None:
    """The least and greatest value of a numeric array as Python numbers (None: no value).

    NaN when a float value is NaN (then no range check passes). Without nulls
    numpy reads the values in place (SIMD: a fifteenth of Arrow's ``min_max``,
    measured on 32 Ki doubles).
    """
    if not len(arr):
        return None
    if not arr.null_count:
        values = arr.to_numpy(zero_copy_only=True)
        return values.min().item(), values.max().item()
    bounds = pc.min_max(arr)
    low = bounds["min"].as_py()
    return None if low is None else (low, bounds["max"].as_py())


@functools.cache
def _int64(value: int) -> pa.Scalar:
    """An Arrow int64 scalar, built once (a Python int argument is converted on every
    kernel call, and the conversion looks for ``dateutil`` on disk each time)."""
    return pa.scalar(value, pa.int64())


def _date_text(dates: pa.Array) -> pa.Array:
    """``date32`` values as ISO dates: each day of their range rendered once, then taken.

    A batch of timestamps usually spans far fewer days than it has rows, and
    a ``take`` of 10-byte strings costs a third of rendering each value.
    """
    days = dates.view(pa.int32())
    bounds = _bounds(days)
    if bounds is None or bounds[1] - bounds[0] >= len(days) // 2:
        return pc.cast(dates, pa.string())
    first, last = bounds
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
    if arr.null_count == len(arr):
        return _empty_cells(len(arr)), True  # a column of floats that are measurements
    if arr.null_count:
        arr = pc.fill_null(arr, _lit(""))
    if len(arr) and pc.max(pc.binary_length(arr)).as_py() > MAX_CELL_CHARS:
        return pa.array([csv_cell(v) for v in arr.to_pylist()], pa.string()), False
    if quote:
        raw = _cell_data(arr)
        if any(c in raw for c in (b",", b'"', b"\n", b"\r")):
            needs = pc.match_substring_regex(arr, _QUOTE_RE2)
            quoted = pc.binary_join_element_wise(
                _lit(""), pc.replace_substring(arr, '"', '""'), _lit(""), _lit('"')
            )
            return pc.if_else(needs, quoted, arr), False
    return arr, True


@functools.lru_cache(maxsize=4)
def _empty_cells(count: int) -> pa.Array:
    """``count`` empty strings (built once per batch size: Arrow arrays are immutable)."""
    offsets = pa.py_buffer(np.zeros(count + 1, dtype=np.int32).tobytes())
    return pa.StringArray.from_buffers(count, offsets, pa.py_buffer(b""))


def _cell_data(arr: pa.Array) -> bytes:
    """The bytes of a string array's cells, back to back: only this slice's.

    A slice shares its parent's data buffer; the offsets say which part of it
    is this slice's (copying the whole buffer made each slice of a large
    batch cost as much as the batch).
    """
    data = arr.buffers()[2]
    if data is None or not len(arr):
        return b""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)
    start, end = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    return bytes(memoryview(data)[start:end])


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


def _compiled_column(rows: ModuleType, arr: pa.Array, render: _Render) -> tuple[object, ...] | None:
    """``arr`` as a column :mod:`._rows` reads in place (None: its type is not one of those).

    Floats are counted here, as :func:`_text` counts them.
    """
    typ = arr.type
    validity = arr.buffers()[0] if arr.null_count else None
    if pa.types.is_integer(typ):
        signed = int(pa.types.is_signed_integer(typ))
        width = typ.bit_width // 8
        return (rows.INT, len(arr), arr.offset, validity, arr.buffers()[1], width, signed)
    if pa.types.is_float32(typ) or pa.types.is_float64(typ):
        render.numeric += _count(arr)
        return (rows.FLOAT, len(arr), arr.offset, validity, arr.buffers()[1], typ.bit_width // 8)
    if pa.types.is_timestamp(typ):
        dates = _timestamp_dates(arr)
        return None if dates is None else _compiled_column(rows, dates, render)
    if pa.types.is_date32(typ):
        bounds = _bounds(arr.view(pa.int32()))
        if bounds is not None and (bounds[0] < rows.FIRST_DAY or bounds[1] > rows.LAST_DAY):
            return None  # Arrow's cast renders years past 9999 (and before 1) its own way
        return (rows.DATE, len(arr), arr.offset, validity, arr.buffers()[1])
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _string_column(rows, arr, True)
    return None


def _string_array(arr: pa.Array) -> pa.Array:
    """A string-like array as ``string`` or ``large_string`` (the layouts :mod:`._rows` reads)."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    return arr.cast(pa.string())


def _string_column(rows: ModuleType, arr: pa.Array, quote: bool) -> tuple[object, ...]:
    """A ``string`` or ``large_string`` array as a :mod:`._rows` column."""
    validity, offsets, chars = arr.buffers()
    return (
        rows.STR,
        len(arr),
        arr.offset,
        validity if arr.null_count else None,
        offsets,
        8 if pa.types.is_large_string(arr.type) else 4,
        chars,
        int(quote),
    )


def _plain_text(arr: pa.Array) -> pa.Array:
    """A column :func:`_compiled_column` reads in place, as :func:`_text` renders it
    (without counting its floats again)."""
    typ = arr.type
    if pa.types.is_floating(typ):
        return _integral_floats(arr)
    if pa.types.is_timestamp(typ):
        return _timestamp_text(arr)
    if pa.types.is_string(typ):
        return arr
    return pc.cast(arr, pa.string())


def _expanded(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return pc.take(arr.dictionary, arr.indices)
    return arr


class _ArrowTable:
    """One Arrow-schema table being rendered batch by batch into a ``text/csv`` member."""

    def __init__(self, render: _Render, schema: pa.Schema, name: str = "table") -> None:
        if len(schema) > MAX_COLUMNS:
            raise render.fail(f"more than {MAX_COLUMNS} columns")
        self.render = render
        self.name = name
        self.leaves = _leaves(schema, render)
        self.table = _Table(render, name, csv_line(leaf.name for leaf in self.leaves))

    def add(self, batch: pa.RecordBatch) -> None:
        """Render ``batch`` (sliced to :data:`BATCH_ROWS` rows at a time)."""
        for start in range(0, batch.num_rows, BATCH_ROWS):
            self._render_rows(batch.slice(start, BATCH_ROWS))

    def _render_rows(self, batch: pa.RecordBatch) -> None:
        if not self.leaves:
            return
        rows = _rows
        if rows is None:
            self._render_text(self._texts(batch), 0)
            return
        columns = [self._compiled(rows, _column(batch, leaf), leaf) for leaf in self.leaves]
        start, count = 0, batch.num_rows
        while start < count:
            try:
                written = rows.render_rows(
                    [spec for spec, _, _ in columns],
                    start,
                    count,
                    MAX_BATCH_TEXT_BYTES,
                    MAX_CELL_CHARS,
                    MAX_ROW_TEXT_BYTES,
                )
            except OverflowError:
                too_long = f"a row over {MAX_ROW_TEXT_BYTES >> 20} MiB of text"
                raise self.render.fail(too_long) from None
            except ValueError:
                raise self.render.fail("column data out of bounds") from None
            if written is None:  # a cell to cut (csv_cell): the rest of the batch as before
                texts = [
                    (_plain_text(arr) if text is None else text, not _never_quoted(arr.type))
                    for _, arr, text in columns
                ]
                self._render_text(texts, start)
                return
            data, start = written
            if not data.isascii():
                data.decode("utf-8")  # Parquet's strings are not validated: as Arrow's path did
            self.table.add(data)

    def _texts(self, batch: pa.RecordBatch) -> list[tuple[pa.Array, bool]]:
        """Each column as strings (:func:`_text`), and whether its cells may need quoting."""
        columns: list[tuple[pa.Array, bool]] = []
        for leaf in self.leaves:
            arr = _column(batch, leaf)
            text = _text(arr, self.render, f"{self.name} column {leaf.name}")
            if text is None:
                text = pa.nulls(len(arr), pa.string())
            columns.append((text, not _never_quoted(arr.type)))
        return columns

    def _render_text(self, columns: list[tuple[pa.Array, bool]], first: int) -> None:
        """Rows ``first`` onwards of string columns, by Arrow's kernels and CSV writer."""
        if first:
            columns = [(c.slice(first), q) for c, q in columns]
        for start, end in _slices([c for c, _ in columns], len(columns[0][0]), self.render):
            part = [(_expanded(c.slice(start, end - start)), q) for c, q in columns]
            self.table.add(_batch_text(part))

    def _compiled(
        self, rows: ModuleType, arr: pa.Array, leaf: _Leaf
    ) -> tuple[tuple[object, ...], pa.Array, Any]:
        """A column for the compiled renderer (:mod:`._rows`), the column, and its strings
        when they had to be made here (None: :func:`_plain_text` makes them if needed).

        Integers, floats, dates, timestamps of the years 1-9999, strings and
        dictionaries are read in place; any other type is rendered by
        :func:`_text` first (its counts and nested files happen once, here).
        """
        spec = _compiled_column(rows, arr, self.render)
        if spec is not None:
            return spec, arr, None
        where = f"{self.name} column {leaf.name}"
        if pa.types.is_dictionary(arr.type):
            values = _text(arr.dictionary, self.render, where, 1)
            if values is None:
                self.render.numeric += _count(arr)
                return (rows.EMPTY,), arr, pa.nulls(len(arr), pa.string())
            values = _string_array(values)
            text = pa.DictionaryArray.from_arrays(arr.indices, values)
            indices = arr.indices
            return (
                (
                    rows.DICT,
                    len(indices),
                    indices.offset,
                    indices.buffers()[0] if indices.null_count else None,
                    indices.buffers()[1],
                    indices.type.bit_width // 8,
                    int(pa.types.is_signed_integer(indices.type)),
                    _string_column(rows, values, True),
                ),
                arr,
                text,
            )
        text = _text(arr, self.render, where)
        if text is None:
            return (rows.EMPTY,), arr, pa.nulls(len(arr), pa.string())
        text = _string_array(text)
        return _string_column(rows, text, not _never_quoted(arr.type)), arr, text

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


def _validated(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` after a full validation: IPC bodies are taken as they are, and the
    compute kernels trust offsets and lengths (an offset past a buffer reads
    out of bounds)."""
    batch.validate(full=True)
    return batch


# Raw snappy blocks: Avro's snappy codec and ORC's snappy-compressed footers.
def _snappy_length(data: bytes) -> tuple[int, int]:
    """The uncompressed length that starts a raw snappy block (a little-endian varint)."""
    shift = result = 0
    for pos, b in enumerate(data[:5]):
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos + 1
        shift += 7
    raise Unscannable("avro: corrupt block")
