"""Array formats (issue 12): HDF5, NetCDF-4 and NumPy ``.npy`` (``.npz`` through the zip layer).

Scientific arrays carry identifiers as *values*: a dataset of Mainland mobile
numbers stored as ``int64``, a column of Resident ID strings, a compound table
of patients. Fed raw, those bytes are binary numbers the matcher cannot see,
so every array is rendered as text the matcher already reads (SPEC §3.1):

* **integer and boolean arrays** as decimal digits, one cell per value (booleans
  as ``0``/``1``), vectorised with numpy: a chunk of values becomes one digit
  matrix, never a Python loop per value (:func:`int_text`);
* **string arrays** (fixed-width bytes and unicode, HDF5 variable-length
  strings) as the strings, RFC 4180-quoted where needed; bytes are UTF-8, or
  GB18030 when they are not valid UTF-8 (Mainland data written by legacy tools);
* **dates** (``datetime64``) as ISO 8601;
* **floating-point and complex arrays** are counted through
  :meth:`Extract.numeric` and never read: a measurement is not an identifier;
* **structured / compound** records as one row per record, one column per
  field, rendering the integer and string fields and counting the others.

Layout (``text/csv``, so a header naming ``diagnosis`` makes its column's
ICD-10 codes count): a header row, then a 1-D array as one column, an N-D
array as rows of its last axis (a row wider than :data:`MAX_COLUMNS` cells
is rendered as one column instead). A NumPy array stored in Fortran order is
rendered in its stored element order (the transpose of its logical shape):
a 2-D Fortran array's *columns* become the rendered rows. No identifier is
lost by this; only the pairing of cells into rows differs.

HDF5 and NetCDF-4 (a NetCDF-4 file *is* an HDF5 file) are read through h5py
on a random-access view of the member. The walk is bounded (objects, depth);
soft links are listed, not followed (their targets are reached through their
hard links); **external links, virtual datasets and datasets with external
raw storage are refused**: following them would make the HDF5 library open
files named by the upload on the gateway's own disk. The media type is
``application/x-netcdf`` when the file's first 64 KiB carry a NetCDF-4 marker
(the ``_NCProperties`` root attribute netCDF-C has written since 4.4.1, or the
``_Netcdf4Dimid`` / ``_Netcdf4Coordinates`` / ``_nc3_strict`` attributes of
older writers), else ``application/x-hdf5``; both are read the same way.
NetCDF ``char`` variables (HDF5 ``S1`` arrays) are read as strings along their
last axis, as netCDF defines them.

``.npy`` is streamed: the header is parsed with :func:`ast.literal_eval` on a
bounded string (never pickle: an object array is refused), then the array's
bytes are rendered chunk by chunk as they arrive. ``.npz`` is a zip of
``.npy`` members: the zip layer opens it and each member is sniffed as npy.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import operator
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from gateway.classify.formats import SNIFF_PREFIX_BYTES, Format, register
from gateway.classify.formats.base import (
    AccessFile,
    Extract,
    LazyModule,
    RandomAccess,
    TextOut,
    Unscannable,
    csv_cell,
    csv_line,
)
from gateway.classify.formats.isolation import isolated

# numpy loads when an array arrives (LazyModule: the registry imports this
# module at the first scan, and a gateway without arrays need not carry it).
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = LazyModule("numpy")

# -- bounds --------------------------------------------------------------------

#: Array bytes rendered per vectorised step: large enough that numpy's per-call
#: overhead is amortised (about 130k int64 values), small enough that the
#: digit matrix and masks of one step (about 3x the chunk) stay a few MiB.
CHUNK_BYTES: Final = 1 << 20
#: Values (cells) rendered per file. At the measured 15-25 M integer values/s
#: this is 10-20 s of rendering; it is also what stops a compressed HDF5
#: dataset of zeros (a 1000:1 "bomb") from becoming gigabytes of text. Floats
#: are counted, not rendered, and do not count against it.
MAX_VALUES: Final = 1 << 28
#: Widest row rendered as one CSV line; a wider last axis (an image, a long
#: vector) is rendered one value per line instead, so lines stay scannable.
MAX_COLUMNS: Final = 4096
#: Largest single element (a fixed-width string, a record): identifiers are
#: short, and one element is the smallest unit the reader can buffer.
MAX_ITEM_BYTES: Final = 1 << 20
#: Leaf fields of a structured / compound type (flattened through nesting and
#: sub-arrays); more is not a table anyone writes by hand.
MAX_FIELDS: Final = 1024
#: Length of an ``.npy`` header. NumPy's own ``np.load`` refuses headers over
#: 10000 bytes by default (``max_header_size``, NumPy 1.24) because
#: ``literal_eval`` of a large header is slow; same number, same reason.
NPY_MAX_HEADER_BYTES: Final = 10_000
#: Groups and datasets walked in one HDF5 file (netCDF files with thousands of
#: variables exist; tens of thousands of objects is a hostile or machine file).
HDF5_MAX_OBJECTS: Final = 20_000
#: Group nesting walked (real files nest a handful of levels).
HDF5_MAX_DEPTH: Final = 64
#: Attributes read in one HDF5 file, all objects together.
HDF5_MAX_ATTRIBUTES: Final = 100_000
#: Elements of one attribute. Compact HDF5 attributes are at most 64 KiB;
#: dense ones can be larger, and an attribute is read whole.
HDF5_MAX_ATTRIBUTE_VALUES: Final = 1 << 16
#: One HDF5 storage chunk, decompressed whole by the library to read any element
#: of it. HDF5 allows 4 GiB; h5py's own guessed chunks stay under 1 MiB.
HDF5_MAX_CHUNK_BYTES: Final = 64 << 20
#: One opaque element (``np.void``: how h5py users store a whole file in a
#: dataset), handed back to the decoder as a nested member.
HDF5_MAX_OPAQUE_BYTES: Final = 16 << 20
#: Opaque bytes handed back per file, all elements together (each nested member
#: is then sniffed and read under the decoder's own limits).
HDF5_MAX_OPAQUE_TOTAL: Final = 256 << 20
#: Longest NetCDF ``char`` row read as one string.
HDF5_MAX_CHAR_ROW: Final = 1 << 20

HDF5_MEDIA_TYPE: Final = "application/x-hdf5"
NETCDF_MEDIA_TYPE: Final = "application/x-netcdf"
NPY_MEDIA_TYPE: Final = "application/x-npy"

# -- rendering -----------------------------------------------------------------

_COMMA: Final = ord(",")
_NEWLINE: Final = ord("\n")
_MINUS: Final = ord("-")
_ZERO: Final = ord("0")
_GROUP: Final = 10**8  # digits are extracted 8 at a time in uint32 arithmetic
_RENDERED_KINDS: Final = frozenset("iubSUOM")
_NUMERIC_KINDS: Final = frozenset("fcm")


@functools.cache
def _pow10() -> npt.NDArray[np.uint64]:
    """10**0 .. 10**19 as uint64 (built once, when the first integers are rendered)."""
    return np.array([10**k for k in range(20)], dtype=np.uint64)


class Budget:
    """Values rendered so far in one file, against :data:`MAX_VALUES`."""

    def __init__(self, fmt: str, limit: int | None = None) -> None:
        self._fmt = fmt
        self._limit = MAX_VALUES if limit is None else limit
        self._left = self._limit

    def spend(self, values: int) -> None:
        """Account for ``values`` more rendered values.

        Raises:
            Unscannable: the file holds more than the limit.
        """
        self._left -= values
        if self._left < 0:
            raise Unscannable(f"{self._fmt}: more than {self._limit} values to render")


def separators(first: int, count: int, columns: int) -> npt.NDArray[np.uint8]:
    """The byte after each of ``count`` values whose first has flat index ``first``
    in rows of ``columns``: a comma inside a row, a newline at its end."""
    if columns <= 1:
        return np.full(count, _NEWLINE, dtype=np.uint8)
    position = (np.arange(count, dtype=np.int64) + first) % columns
    return np.where(position == columns - 1, _NEWLINE, _COMMA).astype(np.uint8)


def _magnitudes(
    values: npt.NDArray[Any],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_] | None]:
    """Absolute values as uint64 (exact for every int64, uint64 and bool) and the signs."""
    if values.dtype.kind == "b":
        return values.astype(np.uint64), None
    if values.dtype.kind == "u":
        return values.astype(np.uint64, copy=False), None
    signed = values.astype(np.int64, copy=False)
    negative = signed < 0
    if not negative.any():
        return signed.astype(np.uint64), None
    # ~v == -v - 1 never overflows (INT64_MIN included); add the 1 back unsigned.
    magnitude = np.where(negative, ~signed, signed).astype(np.uint64)
    magnitude += negative
    return magnitude, negative


def int_text(values: npt.NDArray[Any], seps: npt.NDArray[np.uint8]) -> str:
    """Integers (or booleans) as decimal text, each followed by its separator.

    Vectorised: the digits of every value go into one ``(n, width + 2)`` byte
    matrix (sign, digits, separator) by uint32 division eight digits at a time,
    and a mask drops each value's leading zeros (and the sign of non-negative
    values); the kept bytes in row order are the text. Byte order of the input
    does not matter (``astype`` converts it).
    """
    count = len(values)
    if count == 0:
        return ""
    magnitude, negative = _magnitudes(values)
    width = len(str(int(magnitude.max())))
    matrix = np.empty((count, width + 2), dtype=np.uint8)
    rest = magnitude
    for group in range((width + 7) // 8):
        if width > 8 * (group + 1):
            quotient = rest // np.uint64(_GROUP)
            digits = (rest - quotient * np.uint64(_GROUP)).astype(np.uint32)
            rest = quotient
        else:
            digits = rest.astype(np.uint32)
        for place in range(8 * group, min(8 * group + 8, width)):
            quotient32 = digits // np.uint32(10)
            matrix[:, width - place] = digits - quotient32 * np.uint32(10) + np.uint32(_ZERO)
            digits = quotient32
    matrix[:, 0] = _MINUS
    matrix[:, width + 1] = seps
    if negative is None and int(magnitude.min()) >= 10 ** (width - 1):
        # Every value has the same number of digits (a column of identifiers):
        # no mask, the rows minus the sign column are the text.
        return matrix[:, 1:].tobytes().decode("ascii")
    digit_count = np.ones(count, dtype=np.int8)
    pow10 = _pow10()
    for power in range(1, width):
        digit_count += magnitude >= pow10[power]
    keep = np.arange(width + 2, dtype=np.int8)[None, :] > (width - digit_count)[:, None]
    keep[:, 0] = False if negative is None else negative
    return matrix[keep].tobytes().decode("ascii")


def decode_bytes(value: bytes) -> str:
    """A byte string as text: UTF-8, or GB18030 (replacing what is neither)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("gb18030", errors="replace")


def _cell(value: object) -> str:
    """One non-numeric value (bytes, str, an HDF5 variable-length sequence) as cell text."""
    if isinstance(value, bytes):
        return csv_cell(decode_bytes(value))
    if isinstance(value, str):
        return csv_cell(value)
    if isinstance(value, np.ndarray):  # HDF5 variable-length sequence: its values, spaced
        flat = value.reshape(-1)
        if flat.dtype.kind in "iub":
            return int_text(flat, np.full(len(flat), ord(" "), dtype=np.uint8)).rstrip(" ")
        return csv_cell(" ".join(_cell(item) for item in flat.tolist()))
    return csv_cell(str(value))


def value_text(values: npt.NDArray[Any], first: int, columns: int) -> str:
    """Render values of one simple (non-structured) renderable dtype in row layout."""
    seps = separators(first, len(values), columns)
    kind = values.dtype.kind
    if kind in "iub":
        return int_text(values, seps)
    cells = np.datetime_as_string(values).tolist() if kind == "M" else values.tolist()
    ends = np.where(seps == _NEWLINE, "\n", ",").tolist()
    return "".join(map(operator.add, map(_cell, cells), ends))


def leaf_fields(
    dtype: np.dtype[Any], fmt: str, prefix: str = ""
) -> list[tuple[str, tuple[str, ...], np.dtype[Any], int]]:
    """The leaves of a structured dtype: (header name, field path, scalar dtype, values per record).

    Raises:
        Unscannable: more than :data:`MAX_FIELDS` leaves.
    """
    leaves: list[tuple[str, tuple[str, ...], np.dtype[Any], int]] = []
    stack: list[tuple[str, tuple[str, ...], np.dtype[Any]]] = [(prefix, (), dtype)]
    while stack:
        name, path, current = stack.pop()
        if current.names is None:
            base, shape = current.subdtype if current.subdtype else (current, ())
            if base.names is not None:
                raise Unscannable(f"{fmt}: sub-arrays of records not read")
            if _is_char(base) and shape and shape[-1] > 1:
                # A field of single characters (netCDF4 stores an S18 field of a
                # compound type so): strings along its last axis.
                base, shape = np.dtype(f"S{shape[-1]}"), shape[:-1]
            leaves.append((name, path, base, int(np.prod(shape, dtype=np.int64))))
        else:
            for field in reversed(current.names):
                child = current.fields[field][0]  # type: ignore[index]
                stack.append((f"{name}.{field}" if name else field, (*path, field), child))
        if len(leaves) + len(stack) > MAX_FIELDS:
            raise Unscannable(f"{fmt}: more than {MAX_FIELDS} fields")
    return leaves


class TableWriter:
    """Renders blocks of one array into a ``text/csv`` member (header row first).

    Args:
        out: the open member.
        header: the header cells.
        columns: cells per rendered row (1: one value per line).
        budget: the file's value budget.
        fmt: the format name, for unscannable reasons.
    """

    def __init__(
        self, out: TextOut, header: Sequence[str], columns: int, budget: Budget, fmt: str
    ) -> None:
        self._out = out
        self._columns = columns
        self._budget = budget
        self._fmt = fmt
        out.write(csv_line(header))

    def flat(self, values: npt.NDArray[Any], first: int) -> None:
        """Render ``values`` (simple dtype, C order) whose first has flat index ``first``."""
        self._budget.spend(len(values))
        self._out.write(value_text(values, first, self._columns))

    def records(
        self,
        records: npt.NDArray[Any],
        leaves: Sequence[tuple[str, tuple[str, ...], np.dtype[Any], int]],
    ) -> None:
        """Render structured ``records`` (1-D), one row each, the rendered ``leaves`` as columns."""
        if not leaves or len(records) == 0:
            return
        self._budget.spend(len(records) * sum(width for _, _, _, width in leaves))
        blocks: list[list[str]] = []
        for _, path, dtype, width in leaves:
            column: npt.NDArray[Any] = records
            for field in path:
                column = column[field]
            if _is_char(column.dtype) and dtype.itemsize > 1:  # characters as strings
                column = np.ascontiguousarray(column).view(dtype)
            text = value_text(column.reshape(-1), 0, width)
            blocks.append(text.split("\n")[:-1])
        self._out.write("".join(",".join(row) + "\n" for row in zip(*blocks, strict=True)))


def _is_char(dtype: np.dtype[Any]) -> bool:
    """A single byte character (netCDF's ``char``, NumPy's ``S1``)."""
    return dtype.kind == "S" and dtype.itemsize == 1


def kind_of(dtype: np.dtype[Any]) -> str:
    """How a simple dtype is read: ``render``, ``numeric``, ``opaque`` or ``skip``."""
    kind = dtype.kind
    if kind in _NUMERIC_KINDS:
        return "numeric"
    if kind in _RENDERED_KINDS:
        return "render"
    if kind == "V":
        return "opaque"
    return "skip"


# -- NumPy .npy ------------------------------------------------------------------

_NPY_MAGIC: Final = b"\x93NUMPY"
_NPY_KEYS: Final = frozenset({"descr", "fortran_order", "shape"})


def sniff_npy(prefix: bytes) -> bool:
    """NumPy format magic and a known version (1.0, 2.0, 3.0)."""
    return prefix[:6] == _NPY_MAGIC and prefix[6:8] in (b"\x01\x00", b"\x02\x00", b"\x03\x00")


def parse_npy_header(text: str) -> tuple[np.dtype[Any], tuple[int, ...], bool]:
    """The dtype, shape and Fortran flag of an ``.npy`` header dict literal.

    Raises:
        Unscannable: not a valid header, or an object (pickled) array.
    """
    if "\\" in text:
        # NumPy writes no escapes; refusing them keeps the parser's escape
        # warnings (a global, thread-unsafe setting to silence) out of the way.
        raise Unscannable("npy: header with escape sequences")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise Unscannable("npy: header is not a literal") from exc
    if not isinstance(header, dict) or set(header) != _NPY_KEYS:
        raise Unscannable("npy: header keys are not descr, fortran_order, shape")
    shape, fortran = header["shape"], header["fortran_order"]
    if not isinstance(fortran, bool):
        raise Unscannable("npy: fortran_order is not a boolean")
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise Unscannable("npy: shape is not a tuple of sizes")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception as exc:  # numpy raises ValueError, TypeError, ... on a bad descr
        raise Unscannable("npy: unknown dtype") from exc
    if dtype.hasobject:
        raise Unscannable("npy: object array (pickled) not read")
    return dtype, shape, fortran


class NpyReader:
    """Streams one ``.npy`` array: header first, then its values chunk by chunk.

    Memory: the header (at most :data:`NPY_MAX_HEADER_BYTES`), then less than one
    chunk of not yet rendered bytes. Float arrays are counted and their bytes
    dropped as they arrive.
    """

    def __init__(self, out: Extract) -> None:
        self._out = out
        self._head = bytearray()
        self._header_done = False
        self._pending = bytearray()
        self._expected = 0  # array bytes the header announces
        self._received = 0
        self._unit = 1  # bytes rendered together at least (one row or one record)
        self._step = 1  # bytes rendered per vectorised step (a multiple of _unit)
        self._dtype: np.dtype[Any] = np.dtype(np.uint8)
        self._mode = "skip"
        self._numeric_per_item = 0
        self._items = 0
        self._first = 0
        self._table: TableWriter | None = None
        self._member: TextOut | None = None
        self._leaves: list[tuple[str, tuple[str, ...], np.dtype[Any], int]] = []
        self._budget = Budget("npy")

    def feed(self, data: bytes) -> None:
        """The next bytes of the file."""
        if not self._header_done:
            self._head += data
            data = self._parse_header()
            if not self._header_done:
                return
        if not data:
            return
        self._received += len(data)
        if self._received > self._expected:
            raise Unscannable("npy: bytes after the array")
        if self._mode in ("numeric", "skip"):
            return
        self._pending += data
        self._drain(self._step)

    def _drain(self, least: int) -> None:
        """Render pending whole elements in steps, while at least ``least`` bytes are pending
        (a full step while streaming, so every step is large; one element at the end)."""
        usable = len(self._pending) - len(self._pending) % self._unit
        start = 0
        while usable - start >= least:
            end = min(usable, start + self._step)
            self._render(bytes(self._pending[start:end]))
            start = end
        del self._pending[:start]

    def finish(self) -> None:
        """The file ended: it must have held the whole array."""
        if not self._header_done:
            raise Unscannable("npy: truncated header")
        if self._received != self._expected:
            raise Unscannable("npy: truncated array")
        if self._mode in ("flat", "records"):
            self._drain(self._unit)
        if self._numeric_per_item:
            self._out.numeric(self._items * self._numeric_per_item)
        if self._member is not None:
            self._member.close()
            self._member = None

    def _parse_header(self) -> bytes:
        """Parse the header once it is complete; the array bytes after it, if any."""
        head = self._head
        if len(head) < 10:
            return b""
        if not sniff_npy(bytes(head[:8])):
            raise Unscannable("npy: bad magic or version")
        major = head[6]
        fixed = 10 if major == 1 else 12
        if len(head) < fixed:
            return b""
        length = int.from_bytes(head[8:fixed], "little")
        if length > NPY_MAX_HEADER_BYTES:
            raise Unscannable(f"npy: header longer than {NPY_MAX_HEADER_BYTES} bytes")
        if len(head) < fixed + length:
            return b""
        raw = bytes(head[fixed : fixed + length])
        rest = bytes(head[fixed + length :])
        self._head = bytearray()
        text = raw.decode("utf-8" if major >= 3 else "latin-1", errors="strict")
        dtype, shape, fortran = parse_npy_header(text)
        self._header_done = True
        self._setup(dtype, shape, fortran)
        return rest

    def _setup(self, dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool) -> None:
        """Decide how the array is read and open its member."""
        if dtype.itemsize > MAX_ITEM_BYTES:
            raise Unscannable(f"npy: elements larger than {MAX_ITEM_BYTES} bytes")
        if _is_char(dtype) and len(shape) >= 2 and not fortran and 1 < shape[-1] <= MAX_ITEM_BYTES:
            # An array of characters (a netCDF-style char array saved by NumPy):
            # strings along the last axis, as the HDF5 reader reads them.
            dtype, shape = np.dtype(f"S{shape[-1]}"), shape[:-1]
        items = 1
        for n in shape:
            items *= n
        self._items = items
        self._expected = items * dtype.itemsize
        self._dtype = dtype
        if fortran:
            shape = shape[::-1]  # rendered in stored order: the transpose
        if dtype.names is not None:
            leaves = leaf_fields(dtype, "npy")
            self._leaves = [leaf for leaf in leaves if kind_of(leaf[2]) == "render"]
            self._numeric_per_item = sum(w for _, _, d, w in leaves if kind_of(d) == "numeric")
            if any(kind_of(d) == "opaque" for _, _, d, _ in leaves):
                raise Unscannable("npy: raw void fields not read")
            if not self._leaves:
                self._mode = "numeric"
                return
            self._mode = "records"
            header = [
                f"{name}[{j}]" if width > 1 else name
                for name, _, _, width in self._leaves
                for j in range(width)
            ]
            self._unit = max(1, dtype.itemsize)
            self._open(header, 1)
        else:
            kind = kind_of(dtype)
            if kind == "numeric":
                self._mode, self._numeric_per_item = "numeric", 1
                return
            if kind != "render":
                raise Unscannable("npy: raw void array not read")
            self._mode = "flat"
            columns = shape[-1] if len(shape) >= 2 else 1
            if columns > MAX_COLUMNS or columns * dtype.itemsize > CHUNK_BYTES:
                columns = 1
            header = ["value"] if columns == 1 else [f"value[{j}]" for j in range(columns)]
            self._unit = max(1, dtype.itemsize)
            self._open(header, columns)
        self._step = max(self._unit, CHUNK_BYTES - CHUNK_BYTES % self._unit)

    def _open(self, header: list[str], columns: int) -> None:
        self._member = self._out.member("array", "text/csv")
        self._table = TableWriter(self._member, header, columns, self._budget, "npy")

    def _render(self, block: bytes) -> None:
        """Render whole elements (``block`` is a multiple of the element size)."""
        assert self._table is not None
        if self._dtype.itemsize == 0:
            return
        values = np.frombuffer(block, dtype=self._dtype)
        if self._mode == "records":
            self._table.records(values, self._leaves)
        else:
            self._table.flat(values, self._first)
            self._first += len(values)


register(Format("npy", NPY_MEDIA_TYPE, sniff_npy, stream=NpyReader, leads=_NPY_MAGIC[:1]))


# -- HDF5 and NetCDF-4 ----------------------------------------------------------

_HDF5_SIGNATURE: Final = b"\x89HDF\r\n\x1a\n"
#: NetCDF-4 markers: attribute names only netCDF-C (and netCDF4-python, h5netcdf) write.
_NETCDF4_MARKERS: Final = (
    b"_NCProperties",
    b"_Netcdf4Dimid",
    b"_Netcdf4Coordinates",
    b"_nc3_strict",
)


def _superblock_offsets() -> tuple[int, ...]:
    """Where an HDF5 superblock may start: 0, then 512, 1024, 2048 ... (a user block
    precedes it, HDF5 File Format Specification §II.A), within the sniff prefix."""
    offsets = [0]
    offset = 512
    while offset + len(_HDF5_SIGNATURE) <= SNIFF_PREFIX_BYTES:
        offsets.append(offset)
        offset *= 2
    return tuple(offsets)


_SUPERBLOCK_OFFSETS: Final = _superblock_offsets()


def sniff_hdf5(prefix: bytes) -> bool:
    """The HDF5 signature at offset 0 or at a power of two from 512."""
    for offset in _SUPERBLOCK_OFFSETS:
        if offset + len(_HDF5_SIGNATURE) > len(prefix):
            return False  # the offsets ascend: none further fits
        if prefix.startswith(_HDF5_SIGNATURE, offset):
            return True
    return False


def sniff_netcdf4(prefix: bytes) -> bool:
    """An HDF5 file whose first bytes hold a NetCDF-4 marker attribute name."""
    return sniff_hdf5(prefix) and any(marker in prefix for marker in _NETCDF4_MARKERS)


class _Hdf5Walk:
    """One bounded walk of an open HDF5 file, reporting into ``out``."""

    def __init__(self, out: Extract) -> None:
        import h5py

        self._h5py = h5py
        self._out = out
        self._budget = Budget("hdf5")
        self._objects = 0
        self._attributes = 0
        self._opaque_bytes = 0
        self._structure: TextOut | None = None
        self._attrs: TextOut | None = None

    def run(self, root: Any) -> None:
        """Walk from the root group: structure, attributes, datasets."""
        self._structure = self._out.member("structure", "text/plain")
        self._attrs = self._out.member("attributes", "text/plain")
        try:
            self._walk(root)
        finally:
            self._structure.close()
            self._attrs.close()

    def _walk(self, root: Any) -> None:
        h5py = self._h5py
        seen: set[Any] = {root.id}
        stack: list[tuple[Any, str, int]] = [(root, "/", 0)]
        self._attributes_of(root, "/")
        while stack:
            group, path, depth = stack.pop()
            if depth >= HDF5_MAX_DEPTH:
                raise Unscannable(f"hdf5: groups nested deeper than {HDF5_MAX_DEPTH}")
            for name in group:
                self._objects += 1
                if self._objects > HDF5_MAX_OBJECTS:
                    raise Unscannable(f"hdf5: more than {HDF5_MAX_OBJECTS} objects")
                child_path = path.rstrip("/") + "/" + name
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    raise Unscannable("hdf5: external link to another file (not followed)")
                if isinstance(link, h5py.SoftLink):
                    self._line(self._structure, f"{child_path} -> {link.path}")
                    continue
                if not isinstance(link, h5py.HardLink):
                    raise Unscannable("hdf5: user-defined link (not followed)")
                obj = group.get(name)
                if obj is None:
                    raise Unscannable("hdf5: dangling hard link")
                if obj.id in seen:  # a second hard link to an object already read
                    self._line(self._structure, f"{child_path} = (hard link)")
                    continue
                seen.add(obj.id)
                self._attributes_of(obj, child_path)
                if isinstance(obj, h5py.Group):
                    self._line(self._structure, f"{child_path}/")
                    stack.append((obj, child_path, depth + 1))
                elif isinstance(obj, h5py.Dataset):
                    self._line(self._structure, f"{child_path} {obj.dtype.str} {obj.shape}")
                    self._dataset(obj, child_path)
                else:  # a committed datatype: nothing to read
                    self._line(self._structure, f"{child_path} (datatype)")

    @staticmethod
    def _line(out: TextOut | None, text: str) -> None:
        assert out is not None
        out.write(text + "\n")

    # -- attributes ---------------------------------------------------------------

    def _attributes_of(self, obj: Any, path: str) -> None:
        h5py = self._h5py
        attrs = obj.attrs
        count = len(attrs)
        self._attributes += count
        if self._attributes > HDF5_MAX_ATTRIBUTES:
            raise Unscannable(f"hdf5: more than {HDF5_MAX_ATTRIBUTES} attributes")
        for name in attrs:
            attr_id = h5py.h5a.open(obj.id, name.encode("utf-8", "surrogateescape"))
            dtype = attr_id.dtype
            shape = attr_id.shape
            if shape is None:  # an empty (null dataspace) attribute
                self._line(self._attrs, f"{path}@{name}:")
                continue
            values = int(np.prod(shape, dtype=np.int64))
            if values > HDF5_MAX_ATTRIBUTE_VALUES:
                raise Unscannable(
                    f"hdf5: attribute with more than {HDF5_MAX_ATTRIBUTE_VALUES} values"
                )
            text = self._attribute_text(dtype, attrs[name], values)
            self._line(self._attrs, f"{path}@{name}: {text}")

    def _attribute_text(self, dtype: np.dtype[Any], value: Any, values: int) -> str:
        h5py = self._h5py
        if dtype.names is not None:
            leaves = leaf_fields(dtype, "hdf5")
            kinds = [hdf5_kind(h5py, d) for _, _, d, _ in leaves]
            self._out.numeric(
                values
                * sum(leaf[3] for leaf, k in zip(leaves, kinds, strict=True) if k == "numeric")
            )
            array = np.asarray(value)
            cells: list[str] = []
            for (_, path, _, _), kind in zip(leaves, kinds, strict=True):
                if kind != "render":
                    continue
                column: npt.NDArray[Any] = array
                for field in path:
                    column = column[field]
                cells.append(value_text(np.asarray(column).reshape(-1), 0, 1).rstrip("\n"))
            return ", ".join(cells).replace("\n", ", ")
        kind = hdf5_kind(h5py, dtype.subdtype[0] if dtype.subdtype else dtype)
        if kind == "numeric":
            self._out.numeric(values)
            return ""
        if kind != "render":
            return ""  # references, opaque bytes, float sequences: no text of their own
        if isinstance(value, (bytes, str)):
            return _cell(value)
        array = np.asarray(value)
        flat = array.reshape(-1)
        if _is_char(flat.dtype) and flat.size > 1:
            return _cell(flat.tobytes().rstrip(b"\0"))
        return value_text(flat, 0, 1).rstrip("\n").replace("\n", ", ")

    # -- datasets -----------------------------------------------------------------

    def _dataset(self, ds: Any, path: str) -> None:
        h5py = self._h5py
        if ds.is_virtual:
            raise Unscannable("hdf5: virtual dataset (source files not followed)")
        if ds.external:
            raise Unscannable("hdf5: dataset stored in external files (not followed)")
        shape = ds.shape
        if shape is None:  # null dataspace: no values
            return
        dtype = ds.dtype
        if dtype.itemsize > MAX_ITEM_BYTES:
            raise Unscannable(f"hdf5: elements larger than {MAX_ITEM_BYTES} bytes")
        base, sub = dtype.subdtype if dtype.subdtype else (dtype, ())
        size = int(np.prod(shape, dtype=np.int64)) * int(np.prod(sub, dtype=np.int64))
        if base.names is not None:
            leaves = leaf_fields(base, "hdf5")
            kinds = [hdf5_kind(h5py, d) for _, _, d, _ in leaves]
            rendered = [leaf for leaf, k in zip(leaves, kinds, strict=True) if k == "render"]
            numeric = sum(leaf[3] for leaf, k in zip(leaves, kinds, strict=True) if k == "numeric")
            self._out.numeric(size * numeric)
            if "opaque" in kinds:
                raise Unscannable("hdf5: opaque compound fields not read")
            if rendered and size:
                self._check_chunks(ds)
                self._records(ds, path, rendered)
            return
        kind = hdf5_kind(h5py, base)
        if kind == "numeric":
            self._out.numeric(size)
            return
        if kind == "skip" or size == 0:
            return
        self._check_chunks(ds)
        if kind == "opaque":
            self._opaque(ds, path)
            return
        self._values(ds, path, base, sub)

    @staticmethod
    def _check_chunks(ds: Any) -> None:
        chunks = ds.chunks
        if chunks is not None:
            chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * ds.dtype.itemsize
            if chunk_bytes > HDF5_MAX_CHUNK_BYTES:
                raise Unscannable(f"hdf5: storage chunks larger than {HDF5_MAX_CHUNK_BYTES} bytes")

    def _values(self, ds: Any, path: str, base: np.dtype[Any], sub: tuple[int, ...]) -> None:
        """A dataset of one simple renderable type (sub-array elements flattened), in row layout."""
        shape: tuple[int, ...] = tuple(ds.shape)
        chars = _is_char(base) and not sub and len(shape) >= 1
        if chars:  # netCDF char variable: strings along the last axis
            if shape[-1] > HDF5_MAX_CHAR_ROW:
                raise Unscannable(f"hdf5: character rows longer than {HDF5_MAX_CHAR_ROW}")
            walked, logical, item = shape[:-1], shape[:-1], max(1, shape[-1])
        else:
            walked, logical, item = shape, shape + sub, max(1, ds.dtype.itemsize)
        columns = logical[-1] if len(logical) >= 2 else 1
        if columns > MAX_COLUMNS or columns * max(1, base.itemsize) > CHUNK_BYTES:
            columns = 1
        header = [path] if columns == 1 else [f"{path}[{j}]" for j in range(columns)]
        member = self._out.member(f"dataset {path}", "text/csv")
        try:
            table = TableWriter(member, header, columns, self._budget, "hdf5")
            first = 0
            for index in _blocks(walked, max(1, CHUNK_BYTES // item)):
                if chars:
                    block = np.ascontiguousarray(ds[(*index, slice(None))])
                    width = block.shape[-1]
                    block = block.view(f"S{width}")[..., 0] if width else block[..., 0]
                else:
                    block = np.asarray(ds[index])
                flat = block.reshape(-1)
                table.flat(flat, first)
                first += len(flat)
        finally:
            member.close()

    def _records(
        self,
        ds: Any,
        path: str,
        leaves: list[tuple[str, tuple[str, ...], np.dtype[Any], int]],
    ) -> None:
        """A compound dataset: one row per record, its string/integer fields as columns."""
        header = [
            f"{path}.{name}[{j}]" if width > 1 else f"{path}.{name}"
            for name, _, _, width in leaves
            for j in range(width)
        ]
        member = self._out.member(f"dataset {path}", "text/csv")
        try:
            table = TableWriter(member, header, len(header), self._budget, "hdf5")
            step = max(1, CHUNK_BYTES // max(1, ds.dtype.itemsize))
            for index in _blocks(tuple(ds.shape), step):
                block = np.asarray(ds[index])
                table.records(block.reshape(-1), leaves)
        finally:
            member.close()

    def _opaque(self, ds: Any, path: str) -> None:
        """Opaque elements (``np.void``, often a whole file): nested members the decoder sniffs."""
        shape = tuple(ds.shape)
        size = ds.dtype.itemsize
        if size > HDF5_MAX_OPAQUE_BYTES:
            raise Unscannable(f"hdf5: opaque elements larger than {HDF5_MAX_OPAQUE_BYTES} bytes")
        step = max(1, CHUNK_BYTES // max(1, size))
        position = 0
        for index in _blocks(shape, step):
            block = np.asarray(ds[index]).reshape(-1)
            for element in block:
                self._opaque_bytes += size
                if self._opaque_bytes > HDF5_MAX_OPAQUE_TOTAL:
                    raise Unscannable(f"hdf5: more than {HDF5_MAX_OPAQUE_TOTAL} opaque bytes")
                name = f"dataset {path}" if not shape else f"dataset {path}[{position}]"
                nested = self._out.nested(name)
                nested.write(element.tobytes())
                nested.close()
                position += 1


def hdf5_kind(h5py: Any, dtype: np.dtype[Any]) -> str:
    """:func:`kind_of` for an h5py dtype: references (netCDF dimension lists) and
    variable-length sequences of non-integers are skipped (no text of their own)."""
    if h5py.check_ref_dtype(dtype) is not None:
        return "skip"
    if h5py.check_string_dtype(dtype) is not None:
        return "render"
    vlen = h5py.check_vlen_dtype(dtype)
    if vlen is not None:
        return "render" if np.dtype(vlen).kind in "iub" else "skip"
    return kind_of(dtype)


def _blocks(shape: tuple[int, ...], step_items: int) -> Iterator[tuple[int | slice, ...]]:
    """Index tuples that cover ``shape`` in C order, each at most ``step_items`` elements
    (or one element of the innermost axis), as HDF5 hyperslabs.

    The innermost axes that fit together in a step are read whole; the next
    axis out is sliced; the axes outside it are iterated one index at a time.
    """
    if not shape:
        yield ()
        return
    inner = 1
    axis = len(shape) - 1
    while axis > 0 and inner * shape[axis] <= step_items:
        inner *= shape[axis]
        axis -= 1
    stride = max(1, step_items // inner)
    for outer in np.ndindex(*shape[:axis]):
        for start in range(0, shape[axis], stride):
            yield (*(int(i) for i in outer), slice(start, min(shape[axis], start + stride)))


def read_hdf5_inline(source: RandomAccess, out: Extract) -> None:
    """Read an HDF5 / NetCDF-4 file in this process (see :func:`read_hdf5`).

    Raises:
        Unscannable: the file is corrupt, refers to other files, or a bound was reached.
    """
    import h5py

    try:
        handle = h5py.File(AccessFile(source), "r")
    except Unscannable:
        raise
    except Exception as exc:  # h5py raises OSError and others on a corrupt file
        raise Unscannable("hdf5: not a readable HDF5 file") from exc
    try:
        _Hdf5Walk(out).run(handle)
    except Unscannable:
        raise
    except RecursionError as exc:
        raise Unscannable("hdf5: nesting too deep") from exc
    except Exception as exc:  # corrupt object headers, chunks, heaps: h5py raises many kinds
        raise Unscannable("hdf5: corrupt file") from exc
    finally:
        with contextlib.suppress(Exception):  # closing a corrupt file may fail too
            handle.close()


def _load_h5py() -> None:
    """Import h5py (in the reader zygote, once, before it forks a reader process)."""
    import h5py  # noqa: F401


def read_hdf5(source: RandomAccess, out: Extract) -> None:
    """Read an HDF5 / NetCDF-4 file: object names, attributes, string and integer datasets.

    The HDF5 C library is not safe on hostile input: a mutated file can make
    it allocate gigabytes from one lying length, spin for seconds, or crash the
    process (found by this module's mutation tests; libhdf5 has a long CVE
    history). So the file is read in a reader process
    (:func:`gateway.classify.formats.isolation.isolated`) bounded in memory and
    time; a crash there is this member's ``Unscannable``, never the gateway's,
    and the gateway's process never loads libhdf5.

    Raises:
        Unscannable: the file is corrupt, refers to other files, a bound was
            reached, or the reader process failed.
    """
    isolated(read_hdf5_inline, source, out, "hdf5", prepare=_load_h5py)


register(Format("netcdf4", NETCDF_MEDIA_TYPE, sniff_netcdf4, random=read_hdf5, priority=1))
register(Format("hdf5", HDF5_MEDIA_TYPE, sniff_hdf5, random=read_hdf5))
