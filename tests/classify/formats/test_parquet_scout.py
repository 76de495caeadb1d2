"""Parquet's page headers, noted as the file streams in (``_PageScout``), and read by the
compiled reader (``_rows.page_header``) where it decides.

The walk that bounds pages before pyarrow reads them (``_check_parquet_pages``)
must reach the same plan, and refuse the same files for the same reasons,
whether it reads a header after the upload or takes the scout's note of it.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import random
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify.detectors import DetectorSet
from gateway.classify.formats import isolation
from gateway.classify.formats.base import (
    BytesAccess,
    RandomAccess,
    ScoutedAccess,
    Unscannable,
    scout_notes,
)
from gateway.classify.formats.tables import common as T_common
from gateway.classify.formats.tables import parquet as T_parquet
from gateway.classify.formats.testing import RecordingExtract, label_counts, scan_bytes
from gateway.classify.testing import resident_id

DETECTORS = DetectorSet.build()


def _table(rows: int, seed: int = 3) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "resident_id": [resident_id(rng) if i % 97 == 0 else f"S{i:07d}" for i in range(rows)],
            "count": pa.array([rng.randrange(10**9) for _ in range(rows)], pa.int64()),
            "site": [rng.choice(["Futian", "Sha Tin", "Qianhai"]) for _ in range(rows)],
            "weight": [rng.random() * 90 for _ in range(rows)],
        }
    )


def _parquet(table: pa.Table, **options: object) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)  # type: ignore[arg-type]
    return sink.getvalue()


#: Files as writers make them: page versions, codecs, dictionaries, statistics,
#: page indexes, small pages (many headers) and several row groups.
WRITER_OPTIONS: tuple[dict[str, object], ...] = (
    {},
    {"compression": "zstd", "data_page_version": "2.0"},
    {"compression": "gzip", "use_dictionary": False, "write_statistics": False},
    {"compression": "none", "write_page_index": True, "row_group_size": 700},
    {"data_page_size": 512, "write_batch_size": 64, "row_group_size": 1000},
    {"compression": "brotli", "use_dictionary": ["site"], "data_page_version": "2.0"},
)


@functools.cache
def _files() -> tuple[bytes, ...]:
    return tuple(_parquet(_table(3000), **options) for options in WRITER_OPTIONS)


@pytest.fixture(scope="module")
def files() -> tuple[bytes, ...]:
    return _files()


def _scouted(data: bytes, cuts: list[int] | None = None) -> bytes:
    scout = T_parquet._PageScout()
    edges = [0, *sorted(cuts or []), len(data)]
    for a, b in itertools.pairwise(edges):
        scout.feed(data[a:b])
    return scout.notes()


def _footer(data: bytes) -> T_parquet._ParquetFooter:
    size = int.from_bytes(data[-8:-4], "little")
    return T_parquet._parquet_footer(
        data[-8 - size : -8], T_common._Render("parquet", RecordingExtract())
    )


def _plan(source: RandomAccess, data: bytes) -> object:
    """The walk's plan over ``source``, or why it refused the file (as the reader does:
    a codec's error is "corrupt footer or page")."""
    render = T_common._Render("parquet", RecordingExtract(), len(data))
    try:
        return T_parquet._check_parquet_pages(source, _footer(data), render)
    except Unscannable as exc:
        return exc.reason
    except (EOFError, ValueError, IndexError, OSError, OverflowError, struct.error) as exc:
        return type(exc)


class _Counting(BytesAccess):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[tuple[int, int]] = []

    @property
    def reads(self) -> int:
        return len(self.asked)

    def read_at(self, offset: int, length: int) -> bytes:
        self.asked.append((offset, length))
        return super().read_at(offset, length)


# -- the scout ------------------------------------------------------------------------


def test_the_walk_takes_the_notes_and_reaches_the_same_plan(files: tuple[bytes, ...]) -> None:
    for data in files:
        notes = _scouted(data)
        noted = T_parquet._noted_pages(ScoutedAccess(BytesAccess(data), notes))
        plain, scouted = _Counting(data), _Counting(data)
        assert _plan(ScoutedAccess(scouted, notes), data) == _plan(plain, data)
        headers = [read for read in plain.asked if read[0] in noted]
        # Every header was noted: what is still read is the string columns'
        # dictionary pages (the longest value sets the batch), one per chunk.
        assert len(headers) >= 2 * pq.ParquetFile(io.BytesIO(data)).num_row_groups
        assert sorted(scouted.asked) == sorted(r for r in plain.asked if r not in headers)
        assert scouted.reads <= 2 * pq.ParquetFile(io.BytesIO(data)).num_row_groups


def test_notes_are_what_the_walk_reads_at_each_page(files: tuple[bytes, ...]) -> None:
    for data in files:
        for pos, *sizes in T_parquet._NOTE.iter_unpack(_scouted(data)):
            assert tuple(sizes) == T_parquet._page_header_py(data[pos : pos + 1024])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_notes_do_not_depend_on_how_the_file_was_cut(data: st.DataObject) -> None:
    file = _files()[data.draw(st.integers(0, len(WRITER_OPTIONS) - 1))]
    cuts = data.draw(st.lists(st.integers(1, len(file) - 1), max_size=40))
    small = data.draw(st.lists(st.integers(1, 600), max_size=20))  # cuts inside headers
    assert _scouted(file, [*cuts, *small]) == _scouted(file)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_get_the_same_plan_or_refusal_with_notes(data: st.DataObject) -> None:
    """Noted or read, a header means the same: a lying or broken file is refused for the
    same reason, and the scout never raises or loops on what it is fed."""
    file = bytearray(_files()[data.draw(st.integers(0, len(WRITER_OPTIONS) - 1))])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(4, len(file) - 9))  # keep the magic and the footer's length
        file[at] = data.draw(st.integers(0, 255))
    mutated = bytes(file)
    try:
        _footer(mutated)
    except Exception:  # the footer is read before the walk; not this test's
        return
    notes = _scouted(mutated, [data.draw(st.integers(1, len(mutated) - 1))])
    assert _plan(ScoutedAccess(BytesAccess(mutated), notes), mutated) == _plan(
        BytesAccess(mutated), mutated
    )


def test_a_trickled_file_has_each_header_read_once(
    files: tuple[bytes, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fed a byte at a time, the scout reads a header once all of the walk's first read
    of it is there, not at every byte."""
    data = files[4]  # small pages: headers close together
    expected = _scouted(data)
    calls = []
    real = T_parquet._page_header_py

    def counting(window: bytes) -> tuple[int, int, int, int, int]:
        calls.append(len(window))
        return real(window)

    monkeypatch.setattr(T_common, "_rows", None)  # every header read by the Python parser
    monkeypatch.setattr(T_parquet, "_page_header_py", counting)
    scout = T_parquet._PageScout()
    for i in range(len(data)):
        scout.feed(data[i : i + 1])
    notes = scout.notes()
    assert notes == expected
    pages = len(notes) // T_parquet._NOTE.size
    assert pages > 50
    assert len(calls) <= pages + 1  # the last try is the one that stops it


def test_headers_only_python_reads_cost_a_bounded_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers the compiled parser leaves to Python (a number past 64 bits in a field the
    walk skips) are read by Python for at most its budget, then the scout stops: a file
    of thousands of them does not hold the gateway's process."""
    # The sizes (fields 1-3: a data page, 0 bytes uncompressed and compressed), then
    # field 9 (i64, skipped) holding ten varint bytes whose value is past 64 bits.
    lying = bytes([0x15, 0x00, 0x15, 0x00, 0x15, 0x00, 0x66]) + bytes([0xFF] * 9) + b"\x7f\x00"
    assert T_parquet._page_header_py(lying) == (len(lying), 0, 0, 0, 0)
    if T_common._rows is not None:
        assert T_common._rows.page_header(lying, T_common.MAX_NESTING) is None
    body = b"PAR1" + lying * 5000 + b"\x00" * 2000
    monkeypatch.setattr(T_parquet, "_SCOUT_PYTHON_BYTES", 64 << 10)
    scout = T_parquet._PageScout()
    for i in range(0, len(body), 1 << 16):
        scout.feed(body[i : i + (1 << 16)])
    pages = len(scout.notes()) // T_parquet._NOTE.size
    assert 0 < pages <= (64 << 10) // 1024 + 1


def test_the_scout_stops_at_its_bound_and_the_walk_reads_the_rest(
    files: tuple[bytes, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = files[4]  # small pages: many headers
    everything = _scouted(data)
    monkeypatch.setattr(T_parquet, "_SCOUT_MAX_PAGES", 5)
    few = _scouted(data)
    assert len(few) == 5 * T_parquet._NOTE.size < len(everything)
    assert _plan(ScoutedAccess(BytesAccess(data), few), data) == _plan(BytesAccess(data), data)


def test_a_file_of_many_row_groups_gets_a_plan_per_group() -> None:
    """Each row group's bounds come from its own column chunks (grouped in one pass)."""
    rng = random.Random(9)
    table = pa.table(
        {
            "resident_id": [resident_id(rng) for _ in range(1500)],
            "note": ["x" * (1 + i % 7 * 300) for i in range(1500)],
        }
    )
    data = _parquet(table, row_group_size=3, use_dictionary=False)
    assert pq.ParquetFile(io.BytesIO(data)).num_row_groups == 500
    plan = _plan(BytesAccess(data), data)
    assert plan == _plan(ScoutedAccess(BytesAccess(data), _scouted(data)), data)
    assert isinstance(plan, T_parquet._ParquetPlan)
    assert len(plan.batch_rows) == 500
    assert len(set(plan.batch_rows)) > 1  # the wide notes' groups take fewer rows a batch


def test_the_scout_gives_up_where_the_pages_stop_and_on_junk() -> None:
    scout = T_parquet._PageScout()
    scout.feed(b"PAR1" + b"\xff" * 5000)
    assert scout.notes() == b""
    data = _parquet(_table(100))
    scout = T_parquet._PageScout()
    scout.feed(data[:10])  # cut inside its first header: nothing to note
    assert scout.notes() == b""


def test_scanning_a_parquet_file_reads_its_headers_from_the_notes() -> None:
    """Through the scanner (as the egress scans a transfer), the reader gets the notes:
    it asks the spool for the dictionary pages only, and finds what it found before."""
    data = _parquet(_table(6000), data_page_size=1024, write_batch_size=64, row_group_size=2000)

    class Spool(_Counting):
        pass

    from gateway.classify.engine import Scanner

    spool = Spool(data)
    with Scanner(DETECTORS, secret=b"k" * 32) as scanner:
        for i in range(0, len(data), 4096):
            scanner.feed(data[i : i + 4096])
        summary = scanner.finish(spool)
    pages = len(T_parquet._noted_pages(ScoutedAccess(spool, _scouted(data))))
    assert pages > 60
    assert label_counts(summary) == label_counts(scan_bytes(DETECTORS, data))
    assert label_counts(summary)["pii.cn_resident_id"] == 62
    # Without notes the walk reads each header (pages) before pyarrow's reads.
    without = _Counting(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(T_parquet._PageScout, "notes", lambda _self: b"")
        with Scanner(DETECTORS, secret=b"k" * 32) as scanner:
            scanner.feed(data)
            scanner.finish(without)
    assert without.reads - spool.reads >= pages


def _report_notes(source: RandomAccess, out: RecordingExtract) -> None:
    out.attribute("notes", scout_notes(source).hex())
    out.attribute("read", source.read_at(0, 4).hex())


@pytest.mark.parametrize("size", [0, 48, 3 << 20])
def test_notes_reach_a_reader_process_before_its_reads(size: int) -> None:
    notes = os.urandom(size)
    out = RecordingExtract()
    source = ScoutedAccess(BytesAccess(b"PAR1" + b"\x00" * 100), notes)
    isolation.isolated(_report_notes, source, out, "x")  # type: ignore[arg-type]
    assert out.attributes == {"notes": notes.hex(), "read": b"PAR1".hex()}


def test_notes_past_their_bound_are_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "MAX_SCOUT_NOTES_BYTES", 100)
    out = RecordingExtract()
    source = ScoutedAccess(BytesAccess(b"PAR1"), b"n" * 101)
    isolation.isolated(_report_notes, source, out, "x")  # type: ignore[arg-type]
    assert out.attributes["notes"] == ""


# -- the page-header readers ---------------------------------------------------------------


def _windows(files: tuple[bytes, ...]) -> list[bytes]:
    return [
        data[pos : pos + 1024]
        for data in files
        for pos, *_ in T_parquet._NOTE.iter_unpack(_scouted(data))
    ]


needs_compiled = pytest.mark.skipif(
    T_common._rows is None, reason="the table renderer was not built"
)


@needs_compiled
def test_the_compiled_reader_decides_every_header_writers_write(files: tuple[bytes, ...]) -> None:
    rows = T_common._rows
    assert rows is not None
    windows = _windows(files)
    assert len(windows) > 200
    for window in windows:
        assert rows.page_header(window, T_common.MAX_NESTING) == T_parquet._page_header_py(window)


def _python(window: bytes) -> object:
    try:
        return T_parquet._page_header_py(window)
    except (EOFError, ValueError, IndexError) as exc:
        return type(exc)


@needs_compiled
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_compiled_reader_agrees_wherever_it_decides(data: st.DataObject) -> None:
    rows = T_common._rows
    assert rows is not None
    windows = _windows(_files()[:3])
    window = bytearray(windows[data.draw(st.integers(0, len(windows) - 1))])
    window = window[: data.draw(st.integers(1, len(window)))]
    for _ in range(data.draw(st.integers(0, 5))):
        window[data.draw(st.integers(0, len(window) - 1))] = data.draw(st.integers(0, 255))
    got = rows.page_header(bytes(window), T_common.MAX_NESTING)
    if got is not None:
        assert got == _python(bytes(window))


@needs_compiled
@given(st.binary(max_size=200))
def test_the_compiled_reader_agrees_on_any_bytes(window: bytes) -> None:
    rows = T_common._rows
    assert rows is not None
    got = rows.page_header(window, T_common.MAX_NESTING)
    if got is not None:
        assert got == _python(window)


def test_a_map_claiming_more_entries_than_bytes_left_ends_the_parse() -> None:
    """A 13-byte header whose map claims 2^56 boolean pairs: each skipped pair read
    nothing, and the parser looped until the end of time (now in the gateway's process,
    since the scout reads headers there)."""
    claim = bytes([0x4B]) + bytes([0x80] * 8) + bytes([0x01, 0x11, 0x00])  # field 4: map
    with pytest.raises(EOFError):
        T_parquet._page_header_py(claim)
    with pytest.raises(EOFError):
        T_parquet._page_header(claim)
    honest = bytes([0x4B, 0x02, 0x11, 0x01, 0x00, 0x00, 0x01, 0x00])  # two bool pairs
    assert T_parquet._page_header_py(honest) == (8, 0, 0, 0, 0)
    if T_common._rows is not None:
        assert T_common._rows.page_header(claim, T_common.MAX_NESTING) is None
        assert T_common._rows.page_header(honest, T_common.MAX_NESTING) == (8, 0, 0, 0, 0)
    scout = T_parquet._PageScout()
    scout.feed(b"PAR1" + claim + b"\x00" * 2000)
    assert scout.notes() == b""


def test_a_footer_with_such_a_map_is_refused_at_once() -> None:
    data = _parquet(_table(50))
    size = int.from_bytes(data[-8:-4], "little")
    # An unknown field (id 100, long form) holding the lying map, before the real ones.
    lie = bytes([0x0B, 0xC8, 0x01]) + bytes([0x80] * 8) + bytes([0x01, 0x11])
    footer = lie + data[-8 - size : -8]
    hostile = data[: -8 - size] + footer + struct.pack("<I", len(footer)) + b"PAR1"
    with pytest.raises(Unscannable, match="corrupt footer"):
        T_parquet.read_parquet_inline(BytesAccess(hostile), RecordingExtract())
