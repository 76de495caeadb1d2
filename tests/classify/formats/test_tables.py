"""Table readers (gateway/classify/formats/tables/): files made by each format's own writer.

Every format gets: planted identifiers in string and integer columns found as
cells of their own (and counted by the real matcher), the same file without
them holding nothing identifier-shaped, corrupt variants unscannable, and a
hypothesis test that mutates valid files and accepts only success or
``Unscannable``.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import random
import re
import sqlite3
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify.detectors import DetectorSet
from gateway.classify.formats import identify
from gateway.classify.formats import tables as T
from gateway.classify.formats.base import MAX_CELL_CHARS, BytesAccess, Unscannable
from gateway.classify.formats.tables import arrow as T_arrow
from gateway.classify.formats.tables import avro as T_avro
from gateway.classify.formats.tables import common as T_common
from gateway.classify.formats.tables import parquet as T_parquet
from gateway.classify.formats.tables import sqlite as T_sqlite
from gateway.classify.formats.testing import (
    RecordingExtract,
    label_counts,
    read_random,
    read_stream,
    scan_bytes,
)
from gateway.classify.matcher import TextMatcher
from gateway.classify.testing import cn_mobile, resident_id

TODAY = dt.date(2026, 11, 25)
DETECTORS = DetectorSet.build()
ROWS = 40


def mobile(rng: random.Random) -> int:
    """A Mainland mobile number as an integer (13812345678)."""
    return int(cn_mobile(rng))


RNG = random.Random(12)
IDS = [resident_id(RNG) for _ in range(ROWS)]
PHONES = [mobile(RNG) for _ in range(ROWS)]
CLEAN_IDS = [f"S{i:05d}" for i in range(ROWS)]
CLEAN_COUNTS = list(range(ROWS))
DIAGNOSES = ["J45.0", "E11.9", "I10", "K21.0"] * (ROWS // 4)


def patients(planted: bool = True) -> pa.Table:
    """A small cohort table: IDs and phones (or clean stand-ins), a diagnosis, floats, dates."""
    return pa.table(
        {
            "resident_id": IDS if planted else CLEAN_IDS,
            "mobile": pa.array(PHONES if planted else CLEAN_COUNTS, pa.int64()),
            "diagnosis": DIAGNOSES,
            "weight_kg": [60.0 + i / 10 for i in range(ROWS)],
            "visit": [dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(ROWS)],
            "fee": [decimal.Decimal("12.50")] * ROWS,
        }
    )


# -- writers -------------------------------------------------------------------


def parquet_bytes(table: pa.Table, **kw: object) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kw)
    return sink.getvalue()


def arrow_file_bytes(table: pa.Table, **kw: object) -> bytes:
    sink = io.BytesIO()
    with ipc.new_file(sink, table.schema, **kw) as writer:
        writer.write_table(table, max_chunksize=15)
    return sink.getvalue()


def arrow_stream_bytes(table: pa.Table, **kw: object) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema, **kw) as writer:
        writer.write_table(table, max_chunksize=15)
    return sink.getvalue()


def feather_bytes(table: pa.Table, version: int = 2) -> bytes:
    sink = io.BytesIO()
    if version == 1:
        table = table.drop_columns(["visit", "fee"])  # v1 predates these types in pyarrow's writer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Feather v1 is deprecated: still sent
        feather.write_feather(table, sink, version=version)
    return sink.getvalue()


def orc_bytes(table: pa.Table, compression: str = "uncompressed") -> bytes:
    sink = io.BytesIO()
    orc.write_table(table, sink, compression=compression)
    return sink.getvalue()


AVRO_SCHEMA = {
    "type": "record",
    "name": "Patient",
    "fields": [
        {"name": "resident_id", "type": "string"},
        {"name": "mobile", "type": "long"},
        {"name": "diagnosis", "type": ["null", "string"]},
        {"name": "weight_kg", "type": "double"},
        {"name": "visit", "type": {"type": "int", "logicalType": "date"}},
        {
            "name": "fee",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
        },
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [{"name": "city", "type": "string"}],
            },
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}


def avro_bytes(table: pa.Table, codec: str = "null") -> bytes:
    records = [
        {**row, "address": {"city": "Shenzhen"}, "tags": ["cohort", "a"]}
        for row in table.to_pylist()
    ]
    sink = io.BytesIO()
    fastavro.writer(sink, AVRO_SCHEMA, records, codec=codec, sync_interval=200)
    return sink.getvalue()


def sqlite_bytes(tmp_path: Path, table: pa.Table, *, encoding: str = "UTF-8") -> bytes:
    path = tmp_path / f"cohort-{encoding}.db"
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA encoding = '{encoding}'")
    con.execute(
        "CREATE TABLE patients (id INTEGER PRIMARY KEY, resident_id TEXT, mobile INTEGER,"
        " diagnosis TEXT, weight_kg REAL, visit TEXT, fee TEXT)"
    )
    con.executemany(
        "INSERT INTO patients (resident_id, mobile, diagnosis, weight_kg, visit, fee)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                r["resident_id"],
                r["mobile"],
                r["diagnosis"],
                r["weight_kg"],
                str(r["visit"]),
                str(r["fee"]),
            )
            for r in table.to_pylist()
        ],
    )
    con.commit()
    con.close()
    return path.read_bytes()


# -- helpers ---------------------------------------------------------------------


def rows_of(out: RecordingExtract, name: str = "table") -> list[list[str]]:
    """The CSV rows of the member called ``name``."""
    (member,) = [m for m in out.members if m.name == name]
    assert member.content_type == "text/csv"
    assert member.closed
    return list(csv.reader(io.StringIO(member.text)))


def labels(out: RecordingExtract) -> dict[str, int]:
    """Findings per label when the reader's members are scanned by the real matcher."""
    matcher = TextMatcher(DETECTORS, b"k" * 32, today=TODAY)
    for member in out.members:
        matcher.begin_member(member.content_type)
        matcher.text(member.text.encode())
        matcher.end_member()
    return {label: stats.count for label, stats in matcher.result().labels.items()}


def assert_planted(out: RecordingExtract, name: str = "table") -> None:
    rows = rows_of(out, name)
    header = rows[0]
    assert "resident_id" in header
    assert "mobile" in header
    assert "diagnosis" in header
    ids = {row[header.index("resident_id")] for row in rows[1:]}
    phones = {row[header.index("mobile")] for row in rows[1:]}
    assert ids == set(IDS)
    assert phones == {str(p) for p in PHONES}
    found = labels(out)
    assert found.get("pii.cn_resident_id") == ROWS
    assert found.get("pii.cn_phone") == ROWS
    assert found.get("sensitive.health") == ROWS


def assert_clean(out: RecordingExtract) -> None:
    text = out.text
    assert not re.search(r"\d{11}", text), "no identifier-shaped digit runs"
    found = labels(out)
    assert not {k for k in found if k.startswith("pii.")}


# -- Parquet ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd", "gzip"])
@pytest.mark.parametrize("dictionary", [True, False])
def test_parquet_planted_and_clean(compression: str, dictionary: bool) -> None:
    kw = {"compression": compression, "use_dictionary": dictionary}
    out = read_random(T.read_parquet, parquet_bytes(patients(), **kw))
    assert_planted(out)
    assert out.numeric_values == ROWS  # weight_kg counted; its cells are empty
    rows = rows_of(out)
    assert {row[rows[0].index("weight_kg")] for row in rows[1:]} == {""}
    assert rows[1][rows[0].index("visit")] == "2025-01-01"
    assert rows[1][rows[0].index("fee")] == "12.50"
    assert_clean(read_random(T.read_parquet, parquet_bytes(patients(False), **kw)))


def test_whole_number_floats_of_identifier_size_are_rendered() -> None:
    """pandas stores an integer column with a gap as float64: 13812345678.0 is a phone number.

    Whole numbers of 8 digits or more are rendered as their digits; other
    floats (measurements, small whole numbers) stay unrendered and counted.
    """
    phones = [float(p) for p in PHONES]
    phones[3] = float("nan")
    table = pa.table(
        {
            "mobile": pa.array(phones, pa.float64()),
            "weight": pa.array([60.5, None, 71.0, 1e30] * (ROWS // 4), pa.float64()),
        }
    )
    for data, reader in (
        (parquet_bytes(table, row_group_size=15), T.read_parquet),
        (parquet_bytes(table, use_dictionary=False), T.read_parquet),
    ):
        out = read_random(reader, data)
        rows = rows_of(out)
        assert rows[0] == ["mobile", "weight"]
        rendered = [r[0] for r in rows[1:]]
        assert rendered == [str(p) if i != 3 else "" for i, p in enumerate(PHONES)]
        assert {r[1] for r in rows[1:]} == {""}  # 60.5, 71.0, 1e30 and nulls: nothing
        assert out.numeric_values == 2 * ROWS - ROWS // 4  # NaN is a value, null is not


@pytest.mark.parametrize(
    "columns",
    [
        {"resident_id": pa.array([], pa.string()), "mobile": pa.array([], pa.int64())},
        {"weight_kg": pa.array([], pa.float64())},
    ],
)
def test_an_empty_parquet_table_is_read(columns: dict[str, pa.Array]) -> None:
    """A table of no rows: pyarrow stores an empty dictionary page and no data page."""
    out = read_random(T.read_parquet, parquet_bytes(pa.table(columns)))
    assert labels(out) == {}


def test_empty_row_groups_between_real_ones() -> None:
    """A writer given an empty batch (a filter that kept nothing) writes an empty
    row group: the file is read, and the rows of the other groups are all there."""
    table = patients()
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table.slice(0, 0))
        writer.write_table(table.slice(0, ROWS // 2))
        writer.write_table(table.slice(0, 0))
        writer.write_table(table.slice(ROWS // 2))
        writer.write_table(table.slice(0, 0))
    assert pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.num_row_groups == 5
    assert_planted(read_random(T.read_parquet, sink.getvalue()))


@pytest.mark.parametrize("offset", [-9, -1, 0, 3])
@pytest.mark.parametrize("writer", ["parquet", "arrow", "orc", "avro", "sqlite"])
def test_an_identifier_across_a_long_cells_cut_is_found(
    writer: str, offset: int, tmp_path: Path
) -> None:
    """A cell longer than MAX_CELL_CHARS is rendered in pieces; an identifier
    placed where a piece ends is whole in the next one (the pieces overlap)."""
    start = MAX_CELL_CHARS + offset
    cell = "y" * (start - 1) + " " + IDS[0] + " " + "z" * 50_000
    table = pa.table({"note": [cell, "short"]})
    if writer == "avro":
        schema = {"type": "record", "name": "n", "fields": [{"name": "note", "type": "string"}]}
        sink = io.BytesIO()
        fastavro.writer(sink, schema, table.to_pylist())
        data = sink.getvalue()
    elif writer == "sqlite":
        path = tmp_path / "notes.db"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (note TEXT)")
            db.executemany("INSERT INTO notes VALUES (?)", [(cell,), ("short",)])
        db.close()
        data = path.read_bytes()
    else:
        data = {"parquet": parquet_bytes, "arrow": arrow_file_bytes, "orc": orc_bytes}[writer](
            table
        )
    summary = scan_bytes(DETECTORS, data)
    assert {k: v.count for k, v in summary.labels.items()} == {"pii.cn_resident_id": 1}
    assert not summary.unscannable


def _database(path: Path, *statements: str, rows: list[tuple[object, ...]] = ()) -> bytes:
    """A SQLite file made by ``sqlite3``: ``statements``, then ``rows`` into the last table."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            db.execute(statement)
        for row in rows:
            db.execute(f"INSERT INTO docs VALUES ({','.join('?' * len(row))})", row)
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("module", ["fts5", "fts4", "fts3"])
def test_sqlite_full_text_tables_are_read(module: str, tmp_path: Path) -> None:
    """A full-text table's index blobs are index structure; its text (in its
    content table) is scanned as any table's."""
    create = f"CREATE VIRTUAL TABLE docs USING {module}(title, body)"
    notes = [("visit", f"patient {IDS[i]} called from {PHONES[i]}") for i in range(5)]
    planted = scan_bytes(DETECTORS, _database(tmp_path / "p.db", create, rows=notes))
    assert label_counts(planted) == {"pii.cn_resident_id": 5, "pii.cn_phone": 5}
    assert not planted.unscannable
    clean = [("visit", f"sample {CLEAN_IDS[i]} logged") for i in range(5)]
    summary = scan_bytes(DETECTORS, _database(tmp_path / "c.db", create, rows=clean))
    assert (label_counts(summary), summary.unscannable) == ({}, ())


def test_sqlite_rtree_and_external_content_full_text(tmp_path: Path) -> None:
    data = _database(
        tmp_path / "e.db",
        "CREATE VIRTUAL TABLE sites USING rtree(id, lat0, lat1, lon0, lon1)",
        "INSERT INTO sites VALUES (1, 22.5, 22.6, 113.9, 114.0)",
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT)",
        "CREATE VIRTUAL TABLE docs_fts USING fts5(body, content='docs', content_rowid='id')",
        rows=[(1, f"call {PHONES[0]}")],
    )
    summary = scan_bytes(DETECTORS, data)
    assert (label_counts(summary), summary.unscannable) == ({"pii.cn_phone": 1}, ())


@pytest.mark.parametrize(
    "create",
    [
        "CREATE VIRTUAL TABLE docs USING fts5(title, body)",
        "CREATE VIRTUAL TABLE docs USING fts4(title, body)",
        "CREATE VIRTUAL TABLE docs USING rtree(id, x0, x1, +title, +body)",
        "CREATE TABLE docs (title, body)",
    ],
)
def test_an_opaque_value_in_a_virtual_tables_column_is_refused_as_in_any_table(
    create: str, tmp_path: Path
) -> None:
    """A full-text table's content table and an R*Tree's auxiliary columns hold the
    values put in: an opaque blob there is refused as in a plain table, not counted
    as index structure."""
    row: tuple[object, ...] = ("visit", bytes(range(256)) * 4)
    if "rtree" in create:
        row = (1, 0.0, 1.0, *row)
    summary = scan_bytes(DETECTORS, _database(tmp_path / "b.db", create, rows=[row]))
    assert summary.unscannable == ("sqlite: binary cells that are neither text nor a file",)


def test_a_contentless_full_text_index_is_unscannable(tmp_path: Path) -> None:
    """Its text is only in the index structures, which are not read."""
    data = _database(
        tmp_path / "x.db",
        "CREATE VIRTUAL TABLE docs USING fts5(body, content='')",
        rows=[(f"patient {IDS[0]}",)],
    )
    summary = scan_bytes(DETECTORS, data)
    assert summary.unscannable == (
        "sqlite: a contentless fts5 index (its text is only in the index)",
    )


@pytest.mark.parametrize("view", [pa.ListViewArray, pa.LargeListViewArray])
def test_arrow_list_views_including_shared_and_reordered_values(view: type) -> None:
    """List views may point anywhere into their values, overlapping and out of order."""
    values = pa.array([IDS[0], IDS[1], IDS[2], "x"])
    width = pa.int64() if view is pa.LargeListViewArray else pa.int32()
    tags = view.from_arrays(  # type: ignore[attr-defined]
        pa.array([2, 0, 0, 1], width), pa.array([2, 1, 0, 2], width), values
    )
    table = pa.table({"tags": tags, "n": [1, 2, 3, 4]})
    for data in (arrow_file_bytes(table), arrow_stream_bytes(table)):
        out = read_random(T_arrow.read_arrow_file_inline, data) if data[:6] == b"ARROW1" else None
        summary = scan_bytes(DETECTORS, data)
        assert not summary.unscannable
        assert label_counts(summary) == {"pii.cn_resident_id": 4}
        if out is not None:
            assert rows_of(out)[1:] == [
                [f"{IDS[2]} x", "1"],
                [IDS[0], "2"],
                ["", "3"],
                [f"{IDS[1]} {IDS[2]}", "4"],
            ]


def test_parquet_nested_values_and_quoting() -> None:
    table = pa.table(
        {
            "visit": [{"clinic": "Futian", "phone": PHONES[0]}, None],
            "contacts": [[IDS[0], IDS[1]], []],
            "notes": ['said "hello", left', "line\nbreak"],
            "tags": pa.array([[("k", IDS[2])], None], pa.map_(pa.string(), pa.string())),
            "when": [dt.datetime(2025, 3, 4, 5, 6, 7), None],
            "ok": [True, False],
        }
    )
    rows = rows_of(read_random(T.read_parquet, parquet_bytes(table)))
    assert rows[0] == ["visit.clinic", "visit.phone", "contacts", "notes", "tags", "when", "ok"]
    assert rows[1] == [
        "Futian",
        str(PHONES[0]),
        f"{IDS[0]} {IDS[1]}",
        'said "hello", left',
        f"k {IDS[2]}",
        "2025-03-04",  # a timestamp renders as its date (test_timestamps_render_as_dates)
        "true",
    ]
    assert rows[2] == ["", "", "", "line\nbreak", "", "", "false"]


UNITS = ["s", "ms", "us", "ns"]


@pytest.mark.parametrize("unit", UNITS)
def test_timestamps_render_as_dates(unit: str) -> None:
    """A timestamp renders as its ISO date, in the column's time zone; nulls stay empty."""
    late = dt.datetime(2025, 3, 4, 23, 30, 59, 123456)
    table = pa.table(
        {
            "naive": pa.array([late, None], pa.timestamp(unit)),
            "utc": pa.array([late, None], pa.timestamp(unit, tz="UTC")),
            # 23:30 UTC is 07:30 the next day in Shenzhen: the local date is rendered.
            "local": pa.array([late, None], pa.timestamp(unit, tz="UTC")).cast(
                pa.timestamp(unit, tz="Asia/Shanghai")
            ),
        }
    )
    rows = rows_of(read_random(T.read_parquet, parquet_bytes(table)))
    assert rows == [["naive", "utc", "local"], ["2025-03-04"] * 2 + ["2025-03-05"], ["", "", ""]]


def test_timestamps_out_of_range_render_their_digits() -> None:
    """A stored value whose date has no four-digit year renders as the integer stored."""
    digits = [int(i) for i in IDS if i.isdigit()][:3]  # Resident IDs stored as milliseconds
    assert len(digits) == 3
    values = [*digits, -(10**15), 0]
    table = pa.table({"at": pa.array(values, pa.timestamp("ms"))})
    out = read_random(T.read_parquet, parquet_bytes(table))
    rows = rows_of(out)
    assert [r[0] for r in rows[1:]] == [*(str(d) for d in digits), str(-(10**15)), "1970-01-01"]
    assert labels(out) == {"pii.cn_resident_id": 3}


def test_timestamp_columns_beside_identifiers_keep_exact_counts() -> None:
    """The planted table with timestamps of every unit: each identifier still counts once."""
    base = dt.datetime(2025, 1, 1, 8, 30, 15, 250000)
    table = patients()
    for unit in UNITS:
        stamps = [base + dt.timedelta(hours=7 * i, microseconds=i) for i in range(ROWS)]
        table = table.append_column(f"seen_{unit}", pa.array(stamps, pa.timestamp(unit, tz="UTC")))
    out = read_random(T.read_parquet, parquet_bytes(table))
    assert_planted(out)
    assert rows_of(out)[2][-1] == "2025-01-01"  # 15:30 UTC
    assert_clean(read_random(T.read_parquet, parquet_bytes(patients(False))))


@given(
    st.lists(st.integers(-719_162, 2_932_896) | st.none(), max_size=80),
    st.integers(0, 40),
    st.integers(0, 5),
)
def test_dates_rendered_once_per_day_are_the_cast(
    days: list[int | None], spread: int, skip: int
) -> None:
    """Rendering each day of a batch's range once and taking gives Arrow's own cast."""
    narrow = [None if d is None else 20_000 + d % (spread + 1) for d in days]
    for values in (days, narrow):
        dates = pa.array(values, pa.int32()).view(pa.date32()).slice(min(skip, len(values)))
        assert T_common._date_text(dates).equals(pc.cast(dates, pa.string()))


#: Hosts of timestamp text in the property test below: an identifier in the
#: cell before or after, or a diagnosis column whose codes follow the time.
_AROUND = st.sampled_from(IDS + [str(p) for p in PHONES] + ["J45.0", "tel", "", "22.5"])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.integers(-(1 << 63) + 1, (1 << 63) - 1)
        | st.sampled_from([int(i) for i in IDS if i.isdigit()] + PHONES)  # digits stored
        | st.none(),
        min_size=1,
        max_size=20,
    ),
    unit=st.sampled_from(UNITS),
    tz=st.sampled_from([None, "UTC", "Asia/Shanghai", "America/St_Johns"]),
    before=st.lists(_AROUND, min_size=20, max_size=20),
    after=st.lists(_AROUND, min_size=20, max_size=20),
)
def test_timestamp_dates_find_what_full_timestamps_find(
    values: list[int | None], unit: str, tz: str | None, before: list[str], after: list[str]
) -> None:
    """Soundness of the date rule: the findings are those of the full ISO date-time.

    Any int64 value of any unit and time zone, between cells that hold
    identifiers, hotwords and codes: what the matcher finds in the rendered
    table equals what it finds when the time of day is written out as Arrow
    prints it. (A value outside the years 1-9999 is its digits in both.)
    """
    n = len(values)
    typ = pa.timestamp(unit, tz=tz)
    stamps = pa.array(values, pa.int64()).cast(typ)
    table = pa.table({"diagnosis_note": before[:n], "at": stamps, "contact": after[:n]})
    out = read_random(T.read_arrow_file, arrow_file_bytes(table))  # Parquet has no seconds
    full = pc.cast(stamps, pa.string()).to_pylist()
    per_day = 86_400 * 1000 ** UNITS.index(unit)
    lines = ["diagnosis_note,at,contact"]
    for b, value, text, a in zip(before, values, full, after, strict=False):
        if value is not None and not -719_161 <= value // per_day <= 2_932_895:
            text = str(value)  # 0001-01-02 .. 9999-12-30
        lines.append(f"{b},{text or ''},{a}")
    reference = RecordingExtract()
    member = reference.member("table", "text/csv")
    member.write("\n".join(lines) + "\n")
    member.close()
    assert labels(out) == labels(reference)


_CELL_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(
    st.integers(1, 4).flatmap(
        lambda width: st.lists(
            st.lists(_CELL_TEXT | st.none(), min_size=width, max_size=width), max_size=12
        )
    ),
    st.booleans(),
)
def test_batch_text_writer_and_joins_agree(rows: list[list[str | None]], ints: bool) -> None:
    """Arrow's CSV writer (plain cells) and the element-wise joins give the same lines."""
    width = len(rows[0]) if rows else 1
    columns = [pa.array([r[i] for r in rows], pa.string()) for i in range(width)]
    if ints:
        columns.append(pa.array(range(len(rows)), pa.int64()).cast(pa.string()))
    cells = [T_common._cells(c, quote=True) for c in columns]
    joined = T_common._joined_text([c for c, _ in cells])
    assert T_common._batch_text([(c, True) for c in columns]) == joined
    if all(plain for _, plain in cells):
        assert T_common._written_text([c for c, _ in cells]) == joined
    expected = [[v or "" for v in r] + ([str(n)] if ints else []) for n, r in enumerate(rows)]
    parsed = [row or [""] for row in csv.reader(io.StringIO(joined, newline=""))]  # "" is []
    assert parsed == expected


@given(
    st.lists(_CELL_TEXT | st.none(), min_size=1, max_size=16),
    st.integers(0, 16),
    st.integers(0, 16),
)
def test_cells_of_a_slice_are_its_own(values: list[str | None], start: int, length: int) -> None:
    """A slice is quoted by what its own cells hold, not by its parent's buffer."""
    whole = pa.array(values, pa.string())
    part = whole.slice(start, length)
    alone = pa.array(part.to_pylist(), pa.string())
    assert T_common._cell_data(part) == T_common._cell_data(alone)
    cells, plain = T_common._cells(part, quote=True)
    alone_cells, alone_plain = T_common._cells(alone, quote=True)
    assert plain == alone_plain
    assert cells.to_pylist() == alone_cells.to_pylist()


def test_slice_of_quoted_batch_is_plain() -> None:
    """Cells that need quoting outside a slice leave the slice plain (Arrow's CSV writer)."""
    whole = pa.array(["a,b", 'say "x"', "plain", "cells"], pa.string())
    cells, plain = T_common._cells(whole.slice(2, 2), quote=True)
    assert plain
    assert cells.to_pylist() == ["plain", "cells"]
    assert not T_common._cells(whole.slice(0, 3), quote=True)[1]


def _plain_page(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


@given(st.lists(st.binary(max_size=40), max_size=60), st.integers(0, 3), st.booleans())
def test_longest_dictionary_value(values: list[bytes], extra: int, same: bool) -> None:
    """The longest value of a PLAIN page, by the vectorised path (one length) or the walk."""
    if same and values:
        values = [v.ljust(len(values[0]), b"x")[: len(values[0])] for v in values]
    page = _plain_page(values) + bytes(extra)  # a page may end in padding
    assert T_parquet._longest_value(page, len(values)) == max(map(len, values), default=0)


def test_longest_dictionary_value_past_the_page() -> None:
    page = _plain_page([b"abc", b"def"])
    with pytest.raises((ValueError, struct.error)):
        T_parquet._longest_value(page, 3)  # a lying count
    with pytest.raises((ValueError, struct.error)):
        T_parquet._longest_value(page[:-1], 2)  # the last value cut short
    # One length at every stride: the vectorised path reads exactly the walk.
    assert T_parquet._longest_value(_plain_page([b"ab", b"cd", b"ef"]), 3) == 2
    assert T_parquet._longest_value(_plain_page([b"ab", b"cd", b"efg"]), 3) == 3


def test_parquet_binary_cells_text_zip_and_opaque() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ids.txt", "\n".join(IDS))
    table = pa.table({"blob": [IDS[0].encode(), archive.getvalue(), None]})
    out = read_random(T.read_parquet, parquet_bytes(table))
    assert rows_of(out)[1] == [IDS[0]]
    (nested,) = out.nested_members
    assert bytes(nested.data) == archive.getvalue()
    assert nested.closed
    opaque = pa.table({"blob": [b"\x00\x00\x00\x03\x37\x48\xf0\xce"]})  # a packed int64
    with pytest.raises(Unscannable, match="parquet: binary cells that are neither text nor a file"):
        read_random(T.read_parquet, parquet_bytes(opaque))


def test_nested_file_splits_the_table_member_and_repeats_its_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decoder reads one member at a time: after a nested file, rows go on under the header."""
    monkeypatch.setattr(T_common, "_WRITE_CHUNK_BYTES", 1)
    monkeypatch.setattr(T_common, "BATCH_ROWS", 2)
    monkeypatch.setattr(T_parquet, "BATCH_ROWS", 2)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "x")
    blobs = [b"text"] * 6
    blobs[3] = archive.getvalue()
    table = pa.table({"diagnosis": DIAGNOSES[:6], "blob": blobs})
    out = read_random(T_parquet.read_parquet_inline, parquet_bytes(table))
    members = [m for m in out.members if m.name == "table"]
    assert len(members) == 2
    rows = []
    for member in members:
        assert member.closed
        lines = list(csv.reader(io.StringIO(member.text)))
        assert lines[0] == ["diagnosis", "blob"]
        rows += lines[1:]
    assert [r[0] for r in rows] == DIAGNOSES[:6]
    assert len(out.nested_members) == 1


def test_parquet_encrypted_footer() -> None:
    data = bytearray(parquet_bytes(patients()))
    data[:4] = data[-4:] = b"PARE"
    with pytest.raises(Unscannable, match="parquet: encrypted"):
        read_random(T.read_parquet, bytes(data))


def test_parquet_dictionary_bomb_is_unscannable() -> None:
    """One 1 MiB value referenced by 5,000 rows: 5 GB of text from a file of a few KB."""
    column = pa.DictionaryArray.from_arrays(
        pa.array([0] * 5000, pa.int32()), pa.array(["x" * (1 << 20)])
    )
    data = parquet_bytes(pa.table({"s": column}), compression="zstd")
    assert len(data) < 100_000
    with pytest.raises(Unscannable, match="parquet: a row group over"):
        read_random(T.read_parquet, data)


def test_parquet_too_many_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T_common, "MAX_COLUMNS", 5)
    monkeypatch.setattr(T_parquet, "MAX_COLUMNS", 5)
    with pytest.raises(Unscannable, match="parquet: more than 5 columns"):
        read_random(T_parquet.read_parquet_inline, parquet_bytes(patients()))


def test_parquet_large_row_groups_read_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T_common, "MAX_BATCH_TEXT_BYTES", 4096)
    monkeypatch.setattr(T_parquet, "MAX_BATCH_TEXT_BYTES", 4096)
    table = pa.table({"id": [IDS[i % ROWS] for i in range(5000)], "n": list(range(5000))})
    rows = rows_of(
        read_random(T_parquet.read_parquet_inline, parquet_bytes(table, row_group_size=2500))
    )
    assert len(rows) == 5001
    assert rows[4999][0] == IDS[4998 % ROWS]


# -- Arrow IPC, Feather, ORC -----------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_arrow_file_planted_and_clean(compression: str | None) -> None:
    options = ipc.IpcWriteOptions(compression=compression)
    out = read_random(T.read_arrow_file, arrow_file_bytes(patients(), options=options))
    assert_planted(out)
    clean = arrow_file_bytes(patients(False), options=options)
    assert_clean(read_random(T.read_arrow_file, clean))


def test_arrow_ids_back_to_back_are_cells() -> None:
    """Issue 12's leak: IDs stored with no separator in the values buffer read as one digit run."""
    table = pa.table({"id_number": pa.array(IDS, pa.large_string())})
    raw = arrow_file_bytes(table)
    assert "".join(IDS[:3]).encode() in raw
    out = read_random(T.read_arrow_file, raw)
    assert [row[0] for row in rows_of(out)[1:]] == IDS
    assert labels(out)["pii.cn_resident_id"] == ROWS


def test_arrow_dictionary_columns() -> None:
    table = pa.table({"diagnosis": pa.array(DIAGNOSES).dictionary_encode(), "id": IDS})
    for data in (arrow_file_bytes(table), arrow_stream_bytes(table)):
        fmt = identify(data)
        assert fmt is not None
        assert fmt.random is not None
        out = read_random(fmt.random, data)
        rows = rows_of(out)
        assert [r[0] for r in rows[1:]] == DIAGNOSES


@pytest.mark.parametrize("chunk", [0, 1, 7, 4096])
def test_arrow_stream_planted_any_chunking(chunk: int) -> None:
    data = arrow_stream_bytes(patients())
    out = read_stream(T.ArrowStreamReader, data, chunk=chunk)
    assert_planted(out)
    assert out.members[0].text == read_stream(T.ArrowStreamReader, data).members[0].text


def test_arrow_stream_clean_and_compressed() -> None:
    options = ipc.IpcWriteOptions(compression="zstd")
    assert_planted(
        read_stream(T.ArrowStreamReader, arrow_stream_bytes(patients(), options=options))
    )
    assert_clean(read_stream(T.ArrowStreamReader, arrow_stream_bytes(patients(False))))


def test_arrow_stream_truncated() -> None:
    data = arrow_stream_bytes(patients())
    with pytest.raises(Unscannable, match="arrow stream: truncated"):
        read_stream(T.ArrowStreamReader, data[: len(data) // 2])
    with pytest.raises(Unscannable, match="arrow stream: ended before its schema"):
        read_stream(T.ArrowStreamReader, data[:6])


def test_feather_v2_read_and_v1_refused() -> None:
    assert_planted(read_random(T.read_arrow_file, feather_bytes(patients())))
    v1 = feather_bytes(patients(), version=1)
    fmt = identify(v1)
    assert fmt is not None
    assert fmt.name == "feather"
    with pytest.raises(Unscannable, match="feather: legacy v1 file not read"):
        read_random(T.read_feather_v1, v1)


def test_orc_planted_and_clean() -> None:
    assert_planted(read_random(T.read_orc, orc_bytes(patients())))
    assert_clean(read_random(T.read_orc, orc_bytes(patients(False))))


# -- Avro --------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
def test_avro_planted_and_clean(codec: str) -> None:
    out = read_stream(T.AvroReader, avro_bytes(patients(), codec))
    assert_planted(out)
    rows = rows_of(out)
    assert rows[0] == ["resident_id", "mobile", "diagnosis", "visit", "fee", "address.city", "tags"]
    assert rows[1][3:] == ["2025-01-01", "12.50", "Shenzhen", "cohort a"]
    assert out.numeric_values == ROWS
    assert_clean(read_stream(T.AvroReader, avro_bytes(patients(False), codec)))


@pytest.mark.parametrize("chunk", [1, 13, 1000])
def test_avro_any_chunking(chunk: int) -> None:
    data = avro_bytes(patients(), "deflate")
    whole = read_stream(T.AvroReader, data)
    assert read_stream(T.AvroReader, data, chunk=chunk).text == whole.text


def test_avro_snappy_and_zstandard_blocks() -> None:
    """Codecs fastavro writes only with optional libraries: the blocks are made here."""
    block = b"some rendered bytes" * 10
    assert T_avro._avro_inflate("zstandard", zstandard.ZstdCompressor().compress(block)) == block
    compressed = pa.Codec("snappy").compress(block, asbytes=True)
    framed = compressed + zlib.crc32(block).to_bytes(4, "big")
    assert T_avro._avro_inflate("snappy", framed) == block
    with pytest.raises(Unscannable):
        T_avro._avro_inflate("snappy", compressed + b"\0\0\0\0")


def test_avro_deflate_bomb_and_truncation() -> None:
    bomb = zlib.compressobj(9, 8, -15)
    raw = bomb.compress(bytes(T_avro.MAX_AVRO_BLOCK_BYTES + 10)) + bomb.flush()
    with pytest.raises(Unscannable, match="avro: a block over"):
        T_avro._avro_inflate("deflate", raw)
    data = avro_bytes(patients())
    with pytest.raises(Unscannable, match="avro: truncated block"):
        read_stream(T.AvroReader, data[:-5])
    with pytest.raises(Unscannable, match="avro: truncated header"):
        read_stream(T.AvroReader, data[:20])


def test_avro_zero_size_array_items_refused() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}],
    }
    sink = io.BytesIO()
    fastavro.writer(sink, schema, [{"a": [None]}])
    with pytest.raises(Unscannable, match="avro: arrays of zero-size items"):
        read_stream(T.AvroReader, sink.getvalue())


# -- SQLite ------------------------------------------------------------------------------


def test_sqlite_planted_and_clean(tmp_path: Path) -> None:
    out = read_random(T.read_sqlite, sqlite_bytes(tmp_path, patients()))
    assert [m.name for m in out.members] == ["table sqlite_schema", "table patients"]
    assert_planted(out, "table patients")
    rows = rows_of(out, "table patients")
    assert rows[0] == ["id", "resident_id", "mobile", "diagnosis", "weight_kg", "visit", "fee"]
    assert rows[1][0] == "1"  # the INTEGER PRIMARY KEY is the rowid
    # SQLite stores integral REAL values (60.0) as integers on disk: those render as digits
    assert out.numeric_values == ROWS - ROWS // 10
    assert_clean(read_random(T.read_sqlite, sqlite_bytes(tmp_path, patients(False))))


@pytest.mark.parametrize("encoding", ["UTF-16le", "UTF-16be"])
def test_sqlite_utf16(tmp_path: Path, encoding: str) -> None:
    out = read_random(T.read_sqlite, sqlite_bytes(tmp_path, patients(), encoding=encoding))
    assert_planted(out, "table patients")


def test_sqlite_overflow_without_rowid_blobs_and_rowids(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", IDS[0])
    path = tmp_path / "x.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT, scan BLOB)")
    long_text = ("filler " * 3000) + IDS[1]
    con.execute("INSERT INTO notes VALUES (?, ?)", (long_text, archive.getvalue()))
    con.execute("INSERT INTO notes (rowid, body) VALUES (?, 'x')", (PHONES[0],))
    con.execute(
        'CREATE TABLE "contact list" ("the id" TEXT, n INTEGER, v TEXT AS (n * 2) VIRTUAL,'
        ' PRIMARY KEY (n, "the id")) WITHOUT ROWID'
    )
    con.executemany(
        'INSERT INTO "contact list" ("the id", n) VALUES (?, ?)',
        [(i, k) for k, i in enumerate(IDS)],
    )
    con.commit()
    con.close()
    out = read_random(T.read_sqlite, path.read_bytes())
    notes = rows_of(out, "table notes")
    assert notes[0] == ["rowid", "body", "scan"]
    assert notes[1][1].endswith(IDS[1])
    assert len(notes[1][1]) > 20_000  # stored across overflow pages
    assert notes[2][:2] == [str(PHONES[0]), "x"]
    assert bytes(out.nested_members[0].data) == archive.getvalue()
    contacts = rows_of(out, "table contact list")
    assert contacts[0] == ["n", "the id"]
    assert sorted(r[1] for r in contacts[1:]) == sorted(IDS)


def test_sqlite_page_cycle_is_unscannable(tmp_path: Path) -> None:
    path = tmp_path / "cycle.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE a (x)")
    con.execute("CREATE TABLE b (y)")
    con.execute("INSERT INTO a VALUES (1)")
    con.commit()
    con.execute("PRAGMA writable_schema = ON")
    con.execute(
        "UPDATE sqlite_schema SET rootpage ="
        " (SELECT rootpage FROM sqlite_schema WHERE name = 'a') WHERE name = 'b'"
    )
    con.commit()
    con.close()
    with pytest.raises(Unscannable, match="sqlite: page referenced twice"):
        read_random(T.read_sqlite, path.read_bytes())


def test_sqlite_table_sql_parsing() -> None:
    parsed = T_sqlite._sqlite_table(
        "CREATE TABLE t ( [a b] INTEGER PRIMARY KEY, `c` VARCHAR(10) DEFAULT 'x,y',"
        " d CHECK (d > 0), e AS (d + 1) STORED, f AS (d * 2), CONSTRAINT k UNIQUE (c) )"
    )
    assert parsed is not None
    assert parsed.names == ["a b", "c", "d", "e"]
    assert parsed.alias == 0
    desc = T_sqlite._sqlite_table("CREATE TABLE t (a INTEGER PRIMARY KEY DESC, b)")
    assert desc is not None
    assert desc.names == ["rowid", "a", "b"]
    assert desc.alias is None
    assert T_sqlite._sqlite_table("CREATE TABLE t AS SELECT 1") is None


# -- registry, bounds, hostile input -------------------------------------------------------------


def test_registry_sniffs_each_format(tmp_path: Path) -> None:
    cases = {
        "parquet": parquet_bytes(patients()),
        "arrow": arrow_file_bytes(patients()),
        "arrow-stream": arrow_stream_bytes(patients()),
        "feather": feather_bytes(patients(), version=1),
        "orc": orc_bytes(patients()),
        "avro": avro_bytes(patients()),
        "sqlite": sqlite_bytes(tmp_path, patients()),
    }
    types = {
        "parquet": "application/vnd.apache.parquet",
        "arrow": "application/vnd.apache.arrow.file",
        "arrow-stream": "application/vnd.apache.arrow.stream",
        "feather": "application/x-feather",
        "orc": "application/vnd.apache.orc",
        "avro": "application/avro",
        "sqlite": "application/vnd.sqlite3",
    }
    for name, data in cases.items():
        fmt = identify(data[:65536])
        assert fmt is not None
        assert fmt.name == name
        assert fmt.media_type == types[name]
    assert not T_arrow._sniff_arrow_stream(b"\xff\xff\xff\xff" + bytes(60))


def test_render_ratio_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T_common, "RENDER_GRACE_BYTES", 100)
    monkeypatch.setattr(T_common, "RENDER_RATIO", 1)
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array(["y" * 100]))
    with pytest.raises(Unscannable, match="rendered text over 1:1"):
        read_random(T_parquet.read_parquet_inline, parquet_bytes(pa.table({"s": column})))


def _reader(name: str) -> Callable[[bytes], RecordingExtract]:
    if name == "arrow-stream":
        return lambda data: read_stream(T.ArrowStreamReader, data, chunk=97)
    if name == "avro":
        return lambda data: read_stream(T.AvroReader, data, chunk=97)
    fmt = {
        "parquet": T.read_parquet,
        "arrow": T.read_arrow_file,
        "orc": T.read_orc,
        "sqlite": T.read_sqlite,
    }[name]
    return lambda data: read_random(fmt, data)


_SMALL = patients().slice(0, 6)


def _sqlite_valid() -> bytes:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, rid TEXT, note TEXT)")
    con.executemany("INSERT INTO p (rid, note) VALUES (?, ?)", [(i, "n" * 700) for i in IDS[:8]])
    con.commit()
    data = con.serialize()
    con.close()
    return bytes(data)


#: Valid files to mutate: name -> (format, bytes).
_VALID: dict[str, tuple[str, bytes]] = {
    "parquet": ("parquet", parquet_bytes(_SMALL, compression="snappy")),
    "parquet-zstd": ("parquet", parquet_bytes(_SMALL, compression="zstd", use_dictionary=False)),
    "arrow": ("arrow", arrow_file_bytes(_SMALL)),
    "arrow-lz4": (
        "arrow",
        arrow_file_bytes(_SMALL, options=ipc.IpcWriteOptions(compression="lz4")),
    ),
    "arrow-stream": ("arrow-stream", arrow_stream_bytes(_SMALL)),
    "orc": ("orc", orc_bytes(_SMALL)),
    "orc-zlib": ("orc", orc_bytes(_SMALL, compression="zlib")),
    "avro": ("avro", avro_bytes(_SMALL, "deflate")),
    "sqlite": ("sqlite", _sqlite_valid()),
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file, then truncated, bit-flipped, or with 4 bytes overwritten (lying lengths)."""
    name, valid = _VALID[draw(st.sampled_from(sorted(_VALID)))]
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "int"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(data)]))
            data[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
    return name, bytes(data)


@settings(
    max_examples=max(150, settings().max_examples),  # the `deep` profile runs more
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_mutated_files_are_read_or_unscannable(case: tuple[str, bytes]) -> None:
    name, data = case
    reason = ""
    try:
        _reader(name)(data)
    except Unscannable as exc:
        reason = exc.reason
    assert reason == "" or reason.split(":")[0] in {
        "parquet",
        "arrow",
        "arrow stream",
        "orc",
        "avro",
        "sqlite",
    }


def test_whole_number_floats_in_avro_and_sqlite_are_rendered(tmp_path: Path) -> None:
    """The row-by-row readers apply the same rule as the Arrow ones."""
    schema = {
        "type": "record",
        "name": "r",
        "fields": [{"name": "id", "type": "string"}, {"name": "mobile", "type": "double"}],
    }
    sink = io.BytesIO()
    fastavro.writer(
        sink, schema, [{"id": f"r{i}", "mobile": float(p)} for i, p in enumerate(PHONES)]
    )
    avro = read_stream(T.AvroReader, sink.getvalue())
    path = tmp_path / "floats.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id TEXT, mobile REAL, weight REAL)")
    con.executemany(
        "INSERT INTO t VALUES (?, ?, ?)", [(f"r{i}", float(p), 60.5) for i, p in enumerate(PHONES)]
    )
    con.commit()
    con.close()
    for out in (avro, read_random(T.read_sqlite, path.read_bytes())):
        for phone in PHONES:
            assert f"{phone}" in out.text
        assert "60.5" not in out.text


def _footer(data: bytes) -> T_parquet._ParquetFooter:
    size = int.from_bytes(data[-8:-4], "little")
    return T_parquet._parquet_footer(
        data[-8 - size : -8], T_common._Render("parquet", RecordingExtract())
    )


def test_plain_encoded_wide_values_shrink_the_batches() -> None:
    """Rows per batch follow the bytes of plain-encoded pages, not only dictionaries."""
    wide = pa.array(["a" * 2000] * 4096)
    data = parquet_bytes(
        pa.table({f"c{i}": wide for i in range(4)}), use_dictionary=False, compression="zstd"
    )
    render = T_common._Render("parquet", RecordingExtract())
    plan = T_parquet._check_parquet_pages(BytesAccess(data), _footer(data), render)
    assert plan.batch_rows == [T_common.MAX_BATCH_TEXT_BYTES // (4 * 2004 + 1)]


def test_a_footer_whose_row_count_disagrees_with_its_row_groups_is_unscannable() -> None:
    """Rows declared that no row group holds are rows no reader would show."""
    data = parquet_bytes(pa.table({"resident_id": IDS}))
    size = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - size
    footer = data[start:-8]
    # FileMetaData field 3 (num_rows, i64) follows the schema list: header 0x16,
    # the zigzag varint of ROWS (one byte for 40 rows), then field 4's list (0x19).
    declared = bytes([0x16, ROWS * 2, 0x19])
    assert footer.count(declared) == 1
    lying = data[:start] + footer.replace(declared, bytes([0x16, ROWS * 2 + 2, 0x19])) + data[-8:]
    with pytest.raises(Unscannable, match="row count disagrees"):
        read_random(T.read_parquet, lying)
    assert IDS[0] in read_random(T.read_parquet, data).text  # the control reads


# -- metadata ----------------------------------------------------------------------


def _described(described: bool) -> tuple[pa.Table, list[str]]:
    """A clean table whose field metadata (descriptions a writer attaches) names people."""
    rng = random.Random(11)
    ids = [resident_id(rng) for _ in range(3)]

    def meta(key: str, text: str) -> dict[str, str] | None:
        return {key: text} if described else None

    schema = pa.schema(
        [
            pa.field("visit", pa.int32(), metadata=meta("description", f"first seen: {ids[0]}")),
            pa.field(
                "lab",
                pa.struct(
                    [pa.field("assay", pa.string(), metadata=meta("contact", f"owner {ids[1]}"))]
                ),
            ),
            pa.field(
                "tags",
                pa.list_(pa.field("item", pa.string(), metadata=meta("note", f"by {ids[2]}"))),
            ),
        ]
    )
    table = pa.table(
        {"visit": [1, 2], "lab": [{"assay": "ELISA"}, {"assay": "PCR"}], "tags": [["a"], ["b"]]},
        schema=schema,
    )
    return table, ids


@pytest.mark.parametrize("kind", ["parquet", "arrow", "arrow-stream"])
def test_field_metadata_is_read(kind: str) -> None:
    write = {
        "parquet": parquet_bytes,
        "arrow": arrow_file_bytes,
        "arrow-stream": arrow_stream_bytes,
    }
    table, ids = _described(True)
    summary = scan_bytes(DETECTORS, write[kind](table))
    assert len(set(ids)) == 3
    assert label_counts(summary).get("pii.cn_resident_id") == 3
    bare, _ = _described(False)
    assert "pii.cn_resident_id" not in label_counts(scan_bytes(DETECTORS, write[kind](bare)))


def test_metadata_past_its_bound_is_unscannable_not_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T_common, "MAX_METADATA_CHARS", 100)
    pad = "p" * 200 + resident_id(random.Random(3))
    table = pa.table({"x": [1]}).replace_schema_metadata({"pad": pad})
    with pytest.raises(Unscannable, match="metadata over"):
        read_random(T_parquet.read_parquet_inline, parquet_bytes(table))


class _SteppingAccess(BytesAccess):
    """A source that reads ranges together, as a reader process's view of the spool does."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.steps = 0
        self.ranges = 0

    def read_many(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        self.steps += 1
        self.ranges += len(ranges)
        return [self.read_at(offset, length) for offset, length in ranges]


def test_page_headers_of_all_column_chunks_are_read_together() -> None:
    """The walk asks for one header of every column chunk per step: a reader process
    waits about once per page of its longest column chunk, not once per page; the plan
    is the one read a range at a time."""
    rng = random.Random(5)
    table = pa.table(
        {
            "resident_id": [resident_id(rng) for _ in range(6000)],
            "count": pa.array(range(6000), pa.int64()),
            "site": [rng.choice(["Futian", "Sha Tin"]) for _ in range(6000)],
        }
    )
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        row_group_size=2000,
        data_page_size=1024,
        write_batch_size=64,
        use_dictionary=["site"],
    )
    data = sink.getvalue()
    footer = _footer(data)
    render = T_common._Render("parquet", RecordingExtract())
    one_by_one = T_parquet._check_parquet_pages(BytesAccess(data), footer, render)
    stepping = _SteppingAccess(data)
    together = T_parquet._check_parquet_pages(stepping, footer, render)
    assert together == one_by_one
    pages = stepping.ranges
    assert pages > 9 * 4  # 3 columns x 3 row groups, several pages each
    assert stepping.steps * 4 <= pages
