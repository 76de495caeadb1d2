"""The compiled table renderer (gateway/classify/formats/tables/_rows.c).

It must write exactly the text Arrow's kernels and CSV writer write for the
same batch (the matcher's findings depend on every separator), count the same
floats, hand over the same nested files, and refuse buffers that lie about
their lengths instead of reading past them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify.formats.base import Unscannable
from gateway.classify.formats.tables import _rows as R
from gateway.classify.formats.tables import common as T_common
from gateway.classify.formats.testing import RecordingExtract

# -- the same text as the Arrow path -------------------------------------------------------

_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(list('abcXYZ019 ,"\r\n-é中')), max_size=14),
    st.sampled_from(["13812345678", ""]),
)
_INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16()]
_INT_TYPES += [pa.uint32(), pa.uint64()]


def _ints(typ: pa.DataType) -> st.SearchStrategy[int]:
    bits = typ.bit_width
    if pa.types.is_signed_integer(typ):
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**19), 10**19).map(float),  # whole numbers around the bounds
    st.sampled_from([1e7, -1e7, 9e18, -9e18, 9e18 - 1024, 13812345678.0, 0.0, -0.0]),
)
#: Days from the year 1 to 9999 and past both ends (Arrow's cast renders those itself).
_DAYS = st.one_of(
    st.integers(-719_162, 2_932_896),
    st.integers(-800_000, 3_000_000),
    st.sampled_from([-719_163, -719_162, 2_932_896, 2_932_897, 0]),
)


@st.composite
def _columns(draw: st.DrawFn, rows: int) -> tuple[pa.Array, st.SearchStrategy[object]]:
    """One column of ``rows`` values of a type the renderer reads in place, or one it
    hands to :func:`T_common._text` first."""
    kind = draw(
        st.sampled_from(
            [
                "int",
                "float32",
                "float64",
                "date",
                "timestamp",
                "string",
                "large_string",
                "dictionary",
                "binary",
                "bool",
                "decimal",
                "struct",
                "list",
                "null",
            ]
        )
    )
    nulls = st.none() if draw(st.booleans()) else st.nothing()

    def values(strategy: st.SearchStrategy[object]) -> list[object]:
        return draw(st.lists(st.one_of(strategy, nulls), min_size=rows, max_size=rows))

    if kind == "int":
        typ = draw(st.sampled_from(_INT_TYPES))
        return pa.array(values(_ints(typ)), typ)
    if kind in ("float32", "float64"):
        typ = pa.float32() if kind == "float32" else pa.float64()
        return pa.array(values(_FLOATS), typ)
    if kind == "date":
        return pa.array(values(_DAYS), pa.int32()).view(pa.date32())
    if kind == "timestamp":
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        tz = draw(st.sampled_from([None, "UTC", "Asia/Shanghai", "America/Los_Angeles"]))
        raw = pa.array(values(st.integers(-(1 << 62), 1 << 62)), pa.int64())
        if unit != "ns" and draw(st.booleans()):  # mostly in range
            raw = pa.array(values(st.integers(-(10**9), 10**9)), pa.int64())
        return raw.cast(pa.timestamp(unit, tz))
    if kind == "string":
        return pa.array(values(_TEXT), pa.string())
    if kind == "large_string":
        return pa.array(values(_TEXT), pa.large_string())
    if kind == "dictionary":
        words = draw(st.lists(_TEXT, min_size=1, max_size=5))
        index = st.integers(0, len(words) - 1)
        itype = draw(st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64()]))
        return pa.DictionaryArray.from_arrays(pa.array(values(index), itype), pa.array(words))
    if kind == "binary":
        return pa.array(values(_TEXT.map(str.encode)), pa.binary())
    if kind == "bool":
        return pa.array(values(st.booleans()), pa.bool_())
    if kind == "decimal":
        amounts = st.integers(-(10**12), 10**12).map(lambda v: decimal.Decimal(v).scaleb(-2))
        return pa.array(values(amounts), pa.decimal128(16, 2))
    if kind == "struct":
        names = pa.array(values(_TEXT), pa.string())
        counts = pa.array(values(st.integers(0, 10**12)), pa.int64())
        return pa.StructArray.from_arrays([names, counts], ["name", "count"])
    if kind == "list":
        return pa.array(values(st.lists(st.integers(0, 10**11), max_size=3)), pa.list_(pa.int64()))
    return pa.nulls(rows)


@st.composite
def _batches(draw: st.DrawFn) -> pa.RecordBatch:
    """A batch of a few columns, sliced at a random row (its arrays then carry an offset)."""
    rows = draw(st.integers(1, 24))
    width = draw(st.integers(1, 5))
    arrays = [draw(_columns(rows)) for _ in range(width)]
    batch = pa.RecordBatch.from_arrays(arrays, names=[f"c{i}" for i in range(width)])
    start = draw(st.integers(0, rows - 1))
    return batch.slice(start, draw(st.integers(0, rows - start)))


def _rendered(batch: pa.RecordBatch, compiled: bool) -> tuple[list[tuple[str, str]], int, int]:
    """Members (name, text), floats counted and files handed over for ``batch``."""
    out = RecordingExtract()
    render = T_common._Render("parquet", out)
    with mock.patch.object(T_common, "_rows", R if compiled else None):
        table = T_common._ArrowTable(render, batch.schema)
        table.add(batch)
        table.close()
    return [(m.name, m.text) for m in out.members], render.numeric, len(out.nested_members)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_batches())
def test_compiled_rows_are_the_arrow_text(batch: pa.RecordBatch) -> None:
    assert _rendered(batch, compiled=True) == _rendered(batch, compiled=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_batches(), budget=st.integers(1, 200), cell=st.integers(0, 12))
def test_small_budgets_and_cells_to_cut_give_the_same_text(
    batch: pa.RecordBatch, budget: int, cell: int
) -> None:
    """Text split at a small budget, and a cell past the cell bound (rendered then by
    the Arrow path from that row on), still reads as the Arrow path's."""
    with (
        mock.patch.object(T_common, "MAX_BATCH_TEXT_BYTES", budget),
        mock.patch.object(T_common, "MAX_CELL_CHARS", cell),
    ):
        assert _rendered(batch, compiled=True) == _rendered(batch, compiled=False)


def test_a_file_in_a_binary_cell_is_handed_over_once() -> None:
    """Binary cells go through _text before the compiled renderer: the nested file is
    reported once and splits the table's member as on the Arrow path."""
    zipped = b"PK\x03\x04" + bytes(40)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([b"text", zipped, b"more"]), pa.array([1, 2, 3])], names=["blob", "n"]
    )
    compiled = _rendered(batch, compiled=True)
    assert compiled == _rendered(batch, compiled=False)
    assert compiled[2] == 1


def test_a_row_past_its_bound_is_unscannable() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array(["x" * 100, "y"])], names=["note"])
    out = RecordingExtract()
    render = T_common._Render("parquet", out)
    table = T_common._ArrowTable(render, batch.schema)
    bound = mock.patch.object(T_common, "MAX_ROW_TEXT_BYTES", 50)
    with bound, pytest.raises(Unscannable) as caught:
        table.add(batch)
    assert "a row over" in str(caught.value)


# -- the renderer on its own ---------------------------------------------------------------


def _strings(values: list[str | None]) -> tuple[object, ...]:
    arr = pa.array(values, pa.string())
    validity, offsets, chars = arr.buffers()
    return (R.STR, len(arr), 0, validity if arr.null_count else None, offsets, 4, chars, 1)


def _render(columns: list[tuple[object, ...]], rows: int, budget: int = 1 << 20) -> object:
    return R.render_rows(columns, 0, rows, budget, 64, 1 << 16)


def test_cells_rows_and_quoting() -> None:
    ints = pa.array([-5, None, 2**63 - 1], pa.int64())
    column = (R.INT, 3, 0, ints.buffers()[0], ints.buffers()[1], 8, 1)
    text, end = _render([column, _strings(["a,b", 'say "hi"', None])], 3)  # type: ignore[misc]
    assert text == b'-5,"a,b"\n,"say ""hi"""\n9223372036854775807,\n'
    assert end == 3


def test_the_budget_ends_the_text_at_a_row() -> None:
    column = _strings(["aaaa", "bbbb", "cccc"])
    assert _render([column], 3, budget=7) == (b"aaaa\n", 1)
    assert R.render_rows([column], 1, 3, 7, 64, 1 << 16) == (b"bbbb\n", 2)
    assert _render([column], 3, budget=0) == (b"aaaa\n", 1)  # one row at least


def test_a_cell_past_the_cell_bound_asks_for_the_arrow_path() -> None:
    assert _render([_strings(["short", "x" * 65])], 2) is None


def test_a_row_past_the_row_bound_overflows() -> None:
    with pytest.raises(OverflowError):
        R.render_rows([_strings(["x" * 60, "y"])], 0, 2, 1 << 20, 64, 32)


def test_offsets_past_the_characters_are_refused() -> None:
    offsets = struct.pack("<3i", 0, 4, 4096)
    column = (R.STR, 2, 0, None, offsets, 4, b"abcdefgh", 1)
    with pytest.raises(ValueError, match="out of bounds"):
        _render([column], 2)
    backwards = (R.STR, 2, 0, None, struct.pack("<3i", 0, 6, 2), 4, b"abcdefgh", 0)
    with pytest.raises(ValueError, match="out of bounds"):
        _render([backwards], 2)


def test_dictionary_indices_past_the_values_are_refused() -> None:
    values = _strings(["a", "b"])
    for index in (2, -1):
        indices = struct.pack("<2i", 0, index)
        with pytest.raises(ValueError, match="out of bounds"):
            _render([(R.DICT, 2, 0, None, indices, 4, 1, values)], 2)


@pytest.mark.parametrize(
    "column",
    [
        (R.INT, 3, 0, None, bytes(16), 8, 1),  # 3 values in 16 bytes
        (R.INT, 2, 1, None, bytes(16), 8, 1),  # the offset takes it past the end
        (R.FLOAT, 2, 0, None, bytes(8), 8),
        (R.DATE, 3, 0, None, bytes(8)),
        (R.STR, 2, 0, None, bytes(8), 4, b"", 1),  # 2 cells need 3 offsets
        (R.INT, 9, 0, b"\xff", bytes(72), 8, 1),  # 9 rows, 8 validity bits
        (R.INT, 1, 0, None, bytes(8), 3, 1),  # no such width
        (R.STR, 1, 0, None, bytes(8), 4, b""),  # a tuple too short
        (R.DICT, 1, 0, None, bytes(4), 4, 1, (R.INT, 1, 0, None, bytes(8), 8, 1)),
        (99,),
    ],
)
def test_short_buffers_and_bad_columns_are_refused(column: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="render_rows"):
        _render([column], 1)


def test_rows_past_a_column_are_refused() -> None:
    with pytest.raises(ValueError, match="shorter"):
        R.render_rows([_strings(["a"])], 0, 2, 1 << 20, 64, 1 << 16)


def test_dates_outside_the_years_1_to_9999_are_refused() -> None:
    for day in (R.FIRST_DAY - 1, R.LAST_DAY + 1):
        with pytest.raises(ValueError, match="out of bounds"):
            _render([(R.DATE, 1, 0, None, struct.pack("<i", day))], 1)
    first, last = struct.pack("<2i", R.FIRST_DAY, R.LAST_DAY)[:4], struct.pack("<i", R.LAST_DAY)
    assert _render([(R.DATE, 1, 0, None, first)], 1) == (b"0001-01-01\n", 1)
    assert _render([(R.DATE, 1, 0, None, last)], 1) == (b"9999-12-31\n", 1)


def test_the_bounds_agree_with_the_python_side() -> None:
    assert R.FLOAT_MIN == T_common.INTEGRAL_FLOAT_MIN
    assert R.FLOAT_MAX == T_common._INTEGRAL_FLOAT_MAX
    assert dt.date(1, 1, 1) + dt.timedelta(days=R.LAST_DAY - R.FIRST_DAY) == dt.date(9999, 12, 31)
    assert dt.date(1970, 1, 1) + dt.timedelta(days=R.FIRST_DAY) == dt.date(1, 1, 1)
