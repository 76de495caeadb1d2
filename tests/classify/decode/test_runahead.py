"""A reader run ahead on a worker thread (gateway/classify/decode/runahead.py).

What the scanning thread replays must be exactly what the reader reported, in
order; a failure on either side stops the other, and no thread is left.
"""

from __future__ import annotations

import io
import random
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify import DetectorSet, Scanner
from gateway.classify.decode import readers
from gateway.classify.decode.runahead import RUN_AHEAD_BYTES, run_ahead
from gateway.classify.formats.base import (
    BinaryOut,
    BytesAccess,
    Extract,
    RandomAccess,
    TextOut,
    Unscannable,
)
from gateway.classify.formats.tables import parquet
from gateway.classify.summary import ScanSummary
from gateway.classify.testing import cn_mobile, resident_id

DETECTORS = DetectorSet.build()


class Trace:
    """An Extract that logs every call on it and on what it returned, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()

    def _log(self, *call: Any) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(call)

    def member(self, name: str, content_type: str) -> TextOut:
        self._log("member", name, content_type)
        return _Out(self, name)

    def nested(self, name: str) -> BinaryOut:
        self._log("nested", name)
        return _Out(self, name)

    def finding(self, label: str, value: bytes) -> None:
        self._log("finding", label, value)

    def attribute(self, key: str, value: str) -> None:
        self._log("attribute", key, value)

    def numeric(self, values: int) -> None:
        self._log("numeric", values)


class _Out:
    def __init__(self, trace: Trace, name: str) -> None:
        self.trace = trace
        self.name = name

    def write(self, data: str | bytes) -> None:
        self.trace._log("write", self.name, data if isinstance(data, str) else bytes(data))

    def close(self) -> None:
        self.trace._log("close", self.name)


def busy_reader(source: RandomAccess, out: Extract) -> None:
    """Every kind of report: members written in turns, a nested member from a reused buffer."""
    header = source.read_at(0, 4)
    first = out.member("table", "text/csv")
    first.write("a,b\n")
    notes = out.member("notes", "text/plain")
    notes.write(header.decode())
    first.write("1,2\n")  # back to the first member
    buffer = bytearray(b"PK\x03\x04 first")
    nested = out.nested("cell")
    nested.write(buffer)  # type: ignore[arg-type]
    buffer[:] = b"overwritten"  # the reader reuses its buffer: what was written stays
    nested.write(bytes(buffer))
    nested.close()
    out.finding("sensitive.health", b"patient 1")
    out.attribute("organism", "Homo sapiens")
    out.numeric(7)
    first.close()
    notes.close()
    notes.close()  # idempotent on the real one; replayed all the same


def test_same_calls_in_the_same_order_from_another_thread() -> None:
    source = BytesAccess(b"HEAD and the rest")
    inline, ahead = Trace(), Trace()
    busy_reader(source, inline)
    seen: list[int] = []

    def reader(source: RandomAccess, out: Extract) -> None:
        seen.append(threading.get_ident())
        busy_reader(source, out)

    run_ahead(reader, source, ahead)
    assert ahead.calls == inline.calls
    assert ("write", "cell", b"PK\x03\x04 first") in ahead.calls
    assert seen != [threading.get_ident()]  # the reader ran on the worker thread,
    assert ahead.threads == {threading.get_ident()}  # its report was replayed on this one
    assert not _reader_threads()


def test_what_the_reader_raises_comes_after_what_it_reported() -> None:
    def reader(source: RandomAccess, out: Extract) -> None:
        member = out.member("table", "text/csv")
        for n in range(100):
            member.write(f"{n}\n")
        raise Unscannable("parquet: corrupt page")

    trace = Trace()
    with pytest.raises(Unscannable, match="parquet: corrupt page"):
        run_ahead(reader, BytesAccess(b""), trace)
    assert len(trace.calls) == 101
    assert not _reader_threads()


class FailingExtract(Trace):
    """Its fifth write fails, as the decoder's does past a limit."""

    def member(self, name: str, content_type: str) -> TextOut:
        super().member(name, content_type)
        return self

    def write(self, text: str) -> None:
        self._log("write", text)
        if len(self.calls) > 5:
            raise Unscannable("expanded size over 1 GiB")

    def close(self) -> None:
        self._log("close")


def test_a_failed_replay_stops_the_reader_and_its_thread() -> None:
    unwound: list[BaseException] = []
    reads = [0]

    def endless(source: RandomAccess, out: Extract) -> None:
        member = out.member("table", "text/csv")
        try:
            while True:
                source.read_at(0, 1)
                reads[0] += 1
                member.write("x" * 1000)
        except Unscannable as exc:
            unwound.append(exc)
            source.read_at(0, 1)  # and a read after the stop fails too

    with pytest.raises(Unscannable, match="expanded size over 1 GiB"):
        run_ahead(endless, BytesAccess(b"x"), FailingExtract())
    assert len(unwound) == 1
    assert not _reader_threads()
    assert reads[0] < RUN_AHEAD_BYTES // 1000 + 10  # it ran ahead a bounded amount only


def test_the_reader_runs_at_most_the_queue_ahead() -> None:
    piece = 256 << 10
    written = [0]
    ahead_when_blocked: list[int] = []
    release = threading.Event()

    class Slow(Trace):
        def member(self, name: str, content_type: str) -> TextOut:
            return self

        def write(self, text: str) -> None:
            if not ahead_when_blocked:
                time.sleep(0.3)  # the reader fills the queue meanwhile, then waits
                ahead_when_blocked.append(written[0])
                release.set()

        def close(self) -> None:
            pass

    def reader(source: RandomAccess, out: Extract) -> None:
        member = out.member("table", "text/csv")
        for _ in range(64):
            member.write("y" * piece)
            written[0] += 1

    run_ahead(reader, BytesAccess(b""), Slow())
    assert release.is_set()
    # One piece being replayed, the queue full, one piece waiting to be queued.
    assert ahead_when_blocked[0] <= RUN_AHEAD_BYTES // piece + 2
    assert written[0] == 64


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("gateway-reader", "gateway-prefetch")]


# -- through the scanner -----------------------------------------------------------------------


def _patients(rows: int, kind: str) -> bytes:
    rng = random.Random(5)
    table = pa.table(
        {
            "resident_id": [resident_id(rng) for _ in range(rows)],
            "mobile": pa.array([int(cn_mobile(rng)) for _ in range(rows)], pa.int64()),
            "diagnosis": ["J45.0", "E11.9", "I10", "K21.0"] * (rows // 4),
            "weight_kg": [60.0 + i / 10 for i in range(rows)],
            "seen": pa.array(range(rows), pa.timestamp("ms")),
        }
    )
    sink = io.BytesIO()
    if kind == "parquet":
        pq.write_table(table, sink, row_group_size=rows // 3)
    elif kind == "arrow":
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=rows // 3)
    else:
        orc.write_table(table, sink)
    return sink.getvalue()


def _scan(data: bytes) -> ScanSummary:
    with Scanner(DETECTORS, b"k" * 32) as scanner:
        scanner.feed(data)
        return scanner.finish(BytesAccess(data))


@pytest.mark.parametrize("kind", ["parquet", "arrow", "orc"])
def test_a_large_table_reads_the_same_run_ahead_or_in_line(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _patients(60_000, kind)
    assert len(data) > max(readers.RUN_AHEAD_MIN_BYTES, parquet.PREFETCH_MIN_BYTES)
    calls: list[str] = []
    real = run_ahead

    def spy(reader: Any, source: RandomAccess, out: Extract) -> None:
        calls.append("run_ahead")
        real(reader, source, out)

    monkeypatch.setattr(readers, "run_ahead", spy)
    ahead = _scan(data)
    assert calls == ["run_ahead"]
    monkeypatch.setattr(readers, "RUN_AHEAD_MIN_BYTES", 1 << 62)
    monkeypatch.setattr(parquet, "PREFETCH_MIN_BYTES", 1 << 62)
    inline = _scan(data)
    assert calls == ["run_ahead"]
    assert ahead.labels["pii.cn_resident_id"].count == 60_000
    assert ahead.labels["pii.cn_phone"].count == 60_000
    assert ahead.labels["sensitive.health"].count == 60_000
    assert ahead.numeric_values == 60_000
    assert ahead.to_json() | {"seconds": 0} == inline.to_json() | {"seconds": 0}
    assert ahead.digests == inline.digests
    assert not _reader_threads()


_SMALL_PARQUET = _patients(400, "parquet")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_give_the_same_summary_run_ahead_or_in_line(data: st.DataObject) -> None:
    """Whatever a damaged file makes the reader do (fail early, late, or not at all)."""
    mutated = bytearray(_SMALL_PARQUET)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] ^= 1 << data.draw(st.integers(0, 7))
    file = bytes(mutated)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readers, "RUN_AHEAD_MIN_BYTES", 0)
        patch.setattr(parquet, "PREFETCH_MIN_BYTES", 0)
        ahead = _scan(file)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readers, "RUN_AHEAD_MIN_BYTES", 1 << 62)
        patch.setattr(parquet, "PREFETCH_MIN_BYTES", 1 << 62)
        inline = _scan(file)
    assert ahead.to_json() | {"seconds": 0} == inline.to_json() | {"seconds": 0}
    assert not _reader_threads()
