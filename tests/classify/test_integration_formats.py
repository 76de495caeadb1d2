"""The decoder and the format registry together, through the Scanner (issue 12).

Two stand-in formats are registered for these tests only: a streaming one
(``TOYS``) and a footer-indexed one (``TOYR``), both driven by a small script
of commands in the file, so each test states exactly what the reader reports.
They prove the decoder's side of the reader contract: how members are fed
(streaming, buffered when nested, deferred to ``finish(source)`` at the top),
what a reader's text, names, nested members, findings, attributes and numeric
counts become in the summary, and that a failing reader costs its member, not
the scan. Every expectation holds for the compiled matcher core and the
Python reference.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import itertools
import random
import struct
import tracemalloc
import zipfile
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify import labels as L
from gateway.classify.budget import DecoderBudget, DecoderBusy
from gateway.classify.decode import (
    BLOCK_BYTES,
    DECODER_FORMATS,
    FINDING_VALUE_MAX_BYTES,
    FORMAT_BUFFER_BYTES,
    LAYER_BUFFER_BYTES,
    RANDOM_BUFFER_STEP_BYTES,
    ScanLimits,
)
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.formats import Format
from gateway.classify.formats.base import (
    BinaryOut,
    BytesAccess,
    Extract,
    RandomAccess,
    TextOut,
    Unscannable,
)
from gateway.classify.formats.testing import only_formats, registered
from gateway.classify.matcher import KeyedHasher
from gateway.classify.summary import ContentInfo, LabelStats, ScanSummary

pytestmark = pytest.mark.usefixtures("matcher_core")

SECRET = b"f" * 32
TODAY = dt.date(2026, 11, 25)
DETECTORS = DetectorSet.build()
RESIDENT_ID = "11010519491231002X"
OTHER_ID = "440301198510120039"

STREAM_NAME = "test-toy-stream"
RANDOM_NAME = "test-toy-random"
STREAM_TYPE = "application/x-test-toy-stream"
RANDOM_TYPE = "application/x-test-toy-random"
STREAM_MAGIC = b"TOYS\n"
RANDOM_MAGIC = b"TOYR"
RANDOM_END = b"RYOT"


# --------------------------------------------------------------------------- the stand-ins


class Script:
    """Runs a stand-in file's commands, one line each, against an Extract.

    ``M name<TAB>type`` opens a text member, ``W text`` writes a line to the
    last one opened, ``C`` closes it, ``R`` writes to the member opened before
    the last one, ``B name<TAB>hex`` hands back a nested member, ``Z
    name<TAB>n`` a nested member of n bytes of ``a``, ``O name`` opens a nested
    member and keeps it open, ``P hex`` writes to that one, ``F
    label<TAB>value`` is a direct finding, ``A key<TAB>value`` an attribute,
    ``N n`` numeric values, ``U reason`` raises Unscannable, ``X`` raises a
    stray exception, ``S`` swallows every exception of later commands (a
    careless reader).
    """

    def __init__(self, out: Extract) -> None:
        self.out = out
        self.members: list[TextOut] = []
        self.open_nested: BinaryOut | None = None
        self.swallow = False

    def run(self, line: bytes) -> None:
        if not line:
            return
        if self.swallow:
            with contextlib.suppress(Exception):
                self._command(line)
            return
        self._command(line)

    def _command(self, line: bytes) -> None:
        op, _, arg = line.decode().partition(" ")
        first, _, second = arg.partition("\t")
        out = self.out
        if op == "M":
            self.members.append(out.member(first, second))
        elif op == "W":
            self.members[-1].write(arg + "\n")
        elif op == "R":
            self.members[-2].write(arg + "\n")
        elif op == "C":
            self.members[-1].close()
        elif op == "B":
            nested = out.nested(first)
            nested.write(bytes.fromhex(second))
            nested.close()
        elif op == "Z":
            nested = out.nested(first)
            for _ in range(int(second) // BLOCK_BYTES):
                nested.write(b"a" * BLOCK_BYTES)
            nested.close()
        elif op == "O":
            self.open_nested = out.nested(first)
        elif op == "P":
            assert self.open_nested is not None
            self.open_nested.write(bytes.fromhex(arg))
        elif op == "F":
            out.finding(first, second.encode())
        elif op == "A":
            out.attribute(first, second)
        elif op == "N":
            out.numeric(int(arg))
        elif op == "U":
            raise Unscannable(arg)
        elif op == "X":
            raise RuntimeError("a reader bug holding 11010519491231002X")
        elif op == "S":
            self.swallow = True
        else:
            raise AssertionError(f"unknown command {op!r}")


class ToyStream:
    """The streaming stand-in: the magic line, then one command per line."""

    def __init__(self, out: Extract) -> None:
        self.script = Script(out)
        self.buf = bytearray()
        self.magic = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, rest = bytes(self.buf).split(b"\n")
        self.buf = bytearray(rest)
        for line in lines:
            if not self.magic:
                self.magic = True  # the sniffer saw it
                continue
            self.script.run(line)

    def finish(self) -> None:
        if self.buf:
            self.script.run(bytes(self.buf))


def read_toy_random(source: RandomAccess, out: Extract) -> None:
    """The footer-indexed stand-in: the script's offset is in the last 12 bytes."""
    size = source.size
    if size < len(RANDOM_MAGIC) + 12:
        raise Unscannable(f"{RANDOM_NAME}: truncated")
    tail = source.read_at(size - 12, 12)
    if tail[8:] != RANDOM_END:
        raise Unscannable(f"{RANDOM_NAME}: no footer")
    offset = int.from_bytes(tail[:8], "little")
    if not len(RANDOM_MAGIC) <= offset <= size - 12:
        raise Unscannable(f"{RANDOM_NAME}: bad footer")
    script = Script(out)
    for line in source.read_at(offset, size - 12 - offset).split(b"\n"):
        script.run(line)


STAND_INS = (
    Format(STREAM_NAME, STREAM_TYPE, lambda p: p.startswith(STREAM_MAGIC), stream=ToyStream),
    Format(RANDOM_NAME, RANDOM_TYPE, lambda p: p.startswith(RANDOM_MAGIC), random=read_toy_random),
)


@pytest.fixture(autouse=True)
def stand_ins() -> Iterator[None]:
    """The decoder's own formats and the two stand-ins, nothing else."""
    with only_formats(*(fmt.name for fmt in DECODER_FORMATS)), registered(*STAND_INS):
        yield


def toy_stream(*commands: str) -> bytes:
    return STREAM_MAGIC + "".join(c + "\n" for c in commands).encode()


def toy_random(*commands: str, filler: bytes = b"\x00" * 100) -> bytes:
    body = RANDOM_MAGIC + filler
    script = "\n".join(commands).encode()
    return body + script + struct.pack("<Q", len(body)) + RANDOM_END


# --------------------------------------------------------------------------- helpers


def scan(
    data: bytes,
    chunks: list[bytes] | None = None,
    *,
    source: RandomAccess | None = None,
    give_source: bool = True,
    limits: ScanLimits | None = None,
    budget: DecoderBudget | None = None,
) -> ScanSummary:
    scanner = Scanner(DETECTORS, SECRET, limits or ScanLimits(), budget=budget, today=TODAY)
    with scanner:
        for chunk in chunks if chunks is not None else [data]:
            scanner.feed(chunk)
        if source is None and give_source:
            source = BytesAccess(data)
        return scanner.finish(source)


def comparable(summary: ScanSummary) -> tuple[object, ...]:
    result = summary.to_json()
    del result["seconds"]
    return result, dict(summary.digests), summary.distinct_capped


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def zipped(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


TABLE = (
    "M table patients\ttext/csv",
    "W name,id,diagnosis",
    f"W Chan,{RESIDENT_ID},J45.9",
    f"W Lee,{OTHER_ID},E11",
    "C",
)


# --------------------------------------------------------------------------- streaming formats


def test_a_streaming_format_is_read_and_its_text_scanned() -> None:
    summary = scan(toy_stream(*TABLE))
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=2, distinct=2)
    # The rendered table keeps its header: the diagnosis column's codes count.
    assert summary.labels[L.HEALTH] == LabelStats(count=2, distinct=2)
    assert summary.content == ContentInfo(STREAM_TYPE, None, ())
    assert summary.unscannable == ()


def test_a_members_name_is_scanned_as_a_name() -> None:
    summary = scan(toy_stream(f"M dataset /{RESIDENT_ID}\ttext/plain", "W nothing here", "C"))
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=1, distinct=1)


@given(
    points=st.lists(st.integers(min_value=0), max_size=12),
    container=st.sampled_from(["plain", "gzip", "zip"]),
)
def test_a_streaming_format_gives_the_same_summary_for_any_chunking(
    points: list[int], container: str
) -> None:
    payload = toy_stream(
        *TABLE,
        "N 7",
        "A organism\tHomo sapiens",
        f"F {L.HEALTH}\tpatient-1",
        "B scan.csv\t" + f"id\n{RESIDENT_ID}\n".encode().hex(),
        "M notes\ttext/plain",
        "W call 13812345678",
    )
    data = {
        "plain": payload,
        "gzip": gzip.compress(payload, mtime=0),
        "zip": zipped(("t.toys", payload)),
    }[container]
    whole = scan(data)
    assert comparable(scan(data, cut(data, points))) == comparable(whole)
    assert whole.labels[L.CN_PHONE].count == 1
    assert whole.numeric_values == 7


def test_a_streaming_format_is_fed_whatever_its_size_in_fixed_blocks() -> None:
    filler = [f"W {i:08d} filler" for i in range(30_000)]  # ~600 KB of commands
    data = toy_stream("M big\ttext/plain", *filler, f"W {RESIDENT_ID}", "C")
    assert len(data) > 8 * BLOCK_BYTES
    whole = scan(data)
    assert whole.labels[L.CN_RESIDENT_ID] == LabelStats(count=1, distinct=1)
    assert comparable(scan(data, cut(data, list(range(0, len(data), 1000))))) == comparable(whole)


# --------------------------------------------------------------------------- random-access formats


def test_a_nested_random_format_is_buffered_and_read() -> None:
    member = toy_random(*TABLE, filler=random.Random(3).randbytes(300_000))
    budget = DecoderBudget(1 << 30)
    summary = scan(zipped(("README.txt", b"see the table\n"), ("t.toyr", member)), budget=budget)
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=2, distinct=2)
    assert summary.content == ContentInfo(RANDOM_TYPE, None, ("zip",))
    assert summary.unscannable == ()
    # Reserved like a window (in steps), given back afterwards.
    steps = -(-len(member) // RANDOM_BUFFER_STEP_BYTES) * RANDOM_BUFFER_STEP_BYTES
    assert budget.peak >= steps + FORMAT_BUFFER_BYTES
    assert budget.reserved == 0


def test_a_nested_random_member_over_the_bound_is_unscannable() -> None:
    limits = ScanLimits(max_nested_random_bytes=1 << 20)
    member = toy_random(*TABLE, filler=bytes(1 << 20))
    budget = DecoderBudget(1 << 30)
    summary = scan(
        zipped(("t.toyr", member), ("b.csv", f"id\n{OTHER_ID}\n".encode())),
        limits=limits,
        budget=budget,
    )
    assert summary.unscannable == (f"{RANDOM_NAME}: nested member over 1 MiB",)
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=1, distinct=1)  # b.csv only
    assert budget.peak <= (1 << 20) + FORMAT_BUFFER_BYTES + 2 * LAYER_BUFFER_BYTES
    fits = toy_random(*TABLE, filler=bytes((1 << 20) - 200))
    assert scan(zipped(("t.toyr", fits)), limits=limits).unscannable == ()


def test_a_nested_random_member_over_the_scans_memory_cap_is_unscannable() -> None:
    limits = ScanLimits(max_decoder_bytes=2 << 20)
    summary = scan(zipped(("t.toyr", toy_random(*TABLE, filler=bytes(3 << 20)))), limits=limits)
    assert summary.unscannable == (f"{RANDOM_NAME}: decoder memory over 2 MiB",)


@given(points=st.lists(st.integers(min_value=0), max_size=12))
def test_a_top_level_random_format_is_read_at_finish_from_the_source(points: list[int]) -> None:
    data = toy_random(*TABLE, "A organism\tHomo sapiens", filler=bytes(200_000))
    whole = scan(data)
    assert whole.labels[L.CN_RESIDENT_ID] == LabelStats(count=2, distinct=2)
    assert whole.content.type == RANDOM_TYPE
    assert whole.size == len(data)
    assert comparable(scan(data, cut(data, points))) == comparable(whole)


def test_the_scanner_says_when_it_wants_random_access() -> None:
    data = toy_random(*TABLE, filler=bytes(200_000))
    with Scanner(DETECTORS, SECRET, today=TODAY) as scanner:
        scanner.feed(data[:10])
        assert scanner.wants_random_access  # provisional, on the bytes so far
        scanner.feed(data[10:])
        assert scanner.wants_random_access  # decided
        summary = scanner.finish(BytesAccess(data))
        assert not scanner.wants_random_access
    assert summary.labels[L.CN_RESIDENT_ID].count == 2
    with Scanner(DETECTORS, SECRET) as short:
        short.feed(toy_random(*TABLE))  # shorter than the sniff prefix: decided at finish
        assert short.wants_random_access
    for other in (toy_stream(*TABLE), b"id\n" + RESIDENT_ID.encode(), b""):
        with Scanner(DETECTORS, SECRET) as scanner:
            scanner.feed(other)
            assert not scanner.wants_random_access


def test_a_short_stream_is_chosen_once_and_again_only_when_it_grew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The egress asks wants_random_access before finish: a stream that did not grow
    since is decided by that answer, one that grew is chosen again (and rightly)."""
    from gateway.classify.decode import sniffer

    calls: list[bytes] = []
    real = sniffer.choose

    def counted(prefix: bytes, complete: bool) -> sniffer.Choice:
        calls.append(prefix)
        return real(prefix, complete)

    monkeypatch.setattr(sniffer, "choose", counted)
    text = b"id\n" + RESIDENT_ID.encode()
    with Scanner(DETECTORS, SECRET, today=TODAY) as scanner:
        scanner.feed(text)
        assert not scanner.wants_random_access
        summary = scanner.finish(BytesAccess(text))
    assert calls == [text]
    assert summary.labels[L.CN_RESIDENT_ID].count == 1
    calls.clear()
    table = toy_random(*TABLE)
    with Scanner(DETECTORS, SECRET, today=TODAY) as scanner:
        scanner.feed(text)
        assert not scanner.wants_random_access  # text so far
        scanner.feed(b"\n")
        summary = scanner.finish(BytesAccess(text + b"\n"))
    assert calls == [text, text + b"\n"]
    assert summary.labels[L.CN_RESIDENT_ID].count == 1
    calls.clear()
    with Scanner(DETECTORS, SECRET, today=TODAY) as scanner:
        scanner.feed(table[:3])
        scanner.wants_random_access  # noqa: B018 - asked on a prefix that is not yet a format
        scanner.feed(table[3:])
        summary = scanner.finish(BytesAccess(table))
    assert calls[-1] == table
    assert summary.content.type == RANDOM_TYPE
    assert summary.labels[L.CN_RESIDENT_ID].count == 2


def test_a_top_level_random_format_without_a_source_is_unscannable() -> None:
    data = toy_random(*TABLE, filler=bytes(100_000))
    summary = scan(data, give_source=False)
    assert summary.unscannable == (f"{RANDOM_NAME}: needs random access",)
    assert summary.labels == {L.UNSCANNABLE: LabelStats(count=1, distinct=1)}
    assert summary.size == len(data)
    assert summary.content == ContentInfo(RANDOM_TYPE, None, ())
    wrong = scan(data, source=BytesAccess(data[:-1]))
    assert wrong.unscannable == (f"{RANDOM_NAME}: random-access view does not match the input",)


def test_a_top_level_random_format_is_not_buffered() -> None:
    size = 32 << 20
    budget = DecoderBudget(1 << 30)
    chunk = bytes(1 << 16)
    scanner = Scanner(DETECTORS, SECRET, budget=budget)
    with scanner:
        tracemalloc.start()
        try:
            scanner.feed(RANDOM_MAGIC + chunk[4:])
            for _ in range(1, size >> 16):
                scanner.feed(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert scanner.wants_random_access
        assert budget.peak <= FORMAT_BUFFER_BYTES
        summary = scanner.finish()
    # The hash holds at most two batches of chunks; 32 MiB were fed.
    assert peak < 8 << 20
    assert summary.size == size
    assert summary.unscannable == (f"{RANDOM_NAME}: needs random access",)


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("make", [toy_stream, toy_random], ids=["stream", "random"])
def test_a_stray_exception_in_a_reader_makes_its_member_unreadable(make: object) -> None:
    assert callable(make)
    name = STREAM_NAME if make is toy_stream else RANDOM_NAME
    top = scan(make(*TABLE, "X"))
    assert top.unscannable == (f"{name}: unreadable",)
    assert top.labels[L.CN_RESIDENT_ID].count == 2  # what it reported before still counts
    nested = scan(zipped(("a", make("M a\ttext/plain", "X")), ("b.csv", RESIDENT_ID.encode())))
    assert nested.unscannable == (f"{name}: unreadable",)
    assert nested.labels[L.CN_RESIDENT_ID].count == 1  # the archive goes on
    assert RESIDENT_ID not in str(top.to_json())


def test_a_readers_unscannable_reason_is_reported_as_given() -> None:
    summary = scan(gzip.compress(toy_stream("U test-toy-stream: encrypted footer"), mtime=0))
    assert summary.unscannable == ("test-toy-stream: encrypted footer",)


def test_a_reader_that_swallows_its_failure_is_stopped_once() -> None:
    # The expansion cap trips inside a write: the reader catches it and goes
    # on; everything later is refused, and one reason stands for the member.
    limits = ScanLimits(max_expanded_bytes=1000)
    lines = [f"W {i:0100d}" for i in range(20)]
    summary = scan(toy_stream("S", "M a\ttext/plain", *lines, f"W {RESIDENT_ID}"), limits=limits)
    assert summary.unscannable == (f"{STREAM_NAME}: expanded size over 1000 bytes",)
    assert L.CN_RESIDENT_ID not in summary.labels


def test_a_corrupt_random_member_is_unscannable_and_others_are_read() -> None:
    good = toy_random(*TABLE)
    summary = scan(zipped(("bad.toyr", good[:-3]), ("good.toyr", good)))
    assert summary.unscannable == (f"{RANDOM_NAME}: no footer",)
    assert summary.labels[L.CN_RESIDENT_ID].count == 2


# --------------------------------------------------------------------------- what readers report


def test_direct_findings_are_counted_with_distinct_subjects() -> None:
    long_value = "p" * (FINDING_VALUE_MAX_BYTES + 1)
    summary = scan(
        toy_stream(
            f"F {L.HEALTH}\tpatient-1",
            f"F {L.HEALTH}\tpatient-1",
            f"F {L.HEALTH}\tpatient-2",
            f"F {L.HEALTH}\t{long_value}",
            f"F {L.HEALTH}\t{long_value}",
            f"F {L.CN_RESIDENT_ID}\t{RESIDENT_ID}",
            "M ids\ttext/plain",
            f"W {RESIDENT_ID} {OTHER_ID}",
        )
    )
    assert summary.labels[L.HEALTH] == LabelStats(count=5, distinct=3)
    # A direct finding and the matcher's own of the same value are one subject.
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=3, distinct=2)
    assert summary.subjects == 2
    hasher = KeyedHasher(SECRET)
    health = L.HEALTH.encode() + b"\0"
    assert hasher.digest(health + b"patient-1") in summary.digests[L.HEALTH]
    assert hasher.digest(health + long_value.encode()) not in summary.digests[L.HEALTH]
    assert "patient-1" not in str(summary.to_json())


def test_a_finding_of_an_unknown_label_is_a_reader_bug() -> None:
    for label in ("pii.no_such_label", L.UNSCANNABLE):
        summary = scan(toy_stream(f"F {label}\tx"))
        assert summary.unscannable == (f"{STREAM_NAME}: unreadable",)


def test_attributes_reach_the_content_info_and_its_json() -> None:
    summary = scan(
        zipped(
            ("a.toys", toy_stream("A organism\tHomo sapiens", "A assembly\tGRCh38")),
            ("b.toys", toy_stream("A organism\tEscherichia coli", "A organism\tHomo sapiens")),
            ("c.csv", b"big,file\n" * 1000),
        )
    )
    # Whichever member describes the input, the attributes are the scan's.
    assert summary.content.type == "text/csv"
    assert dict(summary.content.attributes) == {
        "assembly": "GRCh38",
        "organism": "Escherichia coli; Homo sapiens",
    }
    content = summary.to_json()["content"]
    assert content["attributes"] == {
        "assembly": "GRCh38",
        "organism": "Escherichia coli; Homo sapiens",
    }
    again = ScanSummary.from_json(summary.to_json(), digests=summary.digests)
    assert again.content == summary.content
    assert again.labels == summary.labels
    assert "attributes" not in scan(b"plain text\n").to_json()["content"]


def test_numeric_values_are_counted_not_scanned() -> None:
    summary = scan(toy_stream("N 1000", "N 24"))
    assert summary.numeric_values == 1024
    assert summary.to_json()["numeric_values"] == 1024
    assert ScanSummary.from_json(summary.to_json()).numeric_values == 1024
    assert "numeric_values" not in scan(b"text\n").to_json()


# --------------------------------------------------------------------------- nested members


def test_a_nested_member_is_decoded_one_layer_deeper() -> None:
    csv = f"name,id\nChan,{RESIDENT_ID}\n".encode() * 50
    attachment = gzip.compress(csv, mtime=0)
    summary = scan(
        toy_stream("M body\ttext/plain", "W hi", f"B {OTHER_ID}.csv.gz\t{attachment.hex()}")
    )
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=51, distinct=2)  # + the name
    assert summary.content == ContentInfo("text/csv", "utf-8", (STREAM_NAME, "gzip"))


def test_nested_members_are_under_the_depth_limit() -> None:
    attachment = f"id\n{RESIDENT_ID}\n".encode().hex()
    limits = ScanLimits(max_depth=1)
    inside = scan(gzip.compress(toy_stream(f"B a.csv\t{attachment}"), mtime=0), limits=limits)
    assert inside.unscannable == (f"{STREAM_NAME}: nested deeper than 1 layers",)
    assert L.CN_RESIDENT_ID not in inside.labels
    top = scan(toy_stream(f"B a.csv\t{attachment}"), limits=limits)
    assert top.unscannable == ()
    assert top.labels[L.CN_RESIDENT_ID].count == 1


def test_nested_members_are_under_the_expansion_ratio() -> None:
    summary = scan(toy_stream(f"Z a\t{64 << 20}", "M after\ttext/plain", f"W {RESIDENT_ID}"))
    assert summary.unscannable == (f"{STREAM_NAME}: expansion ratio over 100:1",)
    assert L.CN_RESIDENT_ID not in summary.labels  # the member stopped there
    small = scan(toy_stream(f"Z a\t{1 << 20}", "M after\ttext/plain", f"W {RESIDENT_ID}"))
    assert small.unscannable == ()  # within the grace


def test_writing_to_an_earlier_text_member_continues_it() -> None:
    summary = scan(
        toy_stream("M a\ttext/plain", "M b\ttext/plain", f"R {RESIDENT_ID}", f"W {OTHER_ID}")
    )
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=2, distinct=2)
    assert summary.unscannable == ()


def test_writing_to_a_nested_member_after_another_opened_is_a_reader_bug() -> None:
    summary = scan(toy_stream("O x.csv", "P 6869", "M b\ttext/plain", "P 6869"))
    assert summary.unscannable == (f"{STREAM_NAME}: unreadable",)


def test_decoder_busy_in_a_nested_member_stops_the_scan_even_if_the_reader_swallows_it() -> None:
    # Another transfer holds all but room for the stand-in's own buffers: the
    # gzip attachment's layer cannot reserve its buffers now (503, retry).
    budget = DecoderBudget(64 << 20)
    other = budget.account(64 << 20)
    assert other.reserve(budget.capacity - FORMAT_BUFFER_BYTES - LAYER_BUFFER_BYTES // 2, "x")
    attachment = gzip.compress(b"id\n" * 30_000, mtime=0)
    data = toy_stream("S", f"B a.gz\t{attachment.hex()}", "M after\ttext/plain", "W x")
    with pytest.raises(DecoderBusy):
        scan(data, budget=budget)
    other.close()
    assert budget.reserved == 0


# --------------------------------------------------------------------------- unknown binaries


def test_an_unknown_binary_is_unscannable_from_its_first_byte() -> None:
    phones = b"".join(struct.pack("<Q", 13812345678 + i) for i in range(2000))
    ascii_too = phones + b" 13812345678 " + RESIDENT_ID.encode()
    for data in (phones, ascii_too, b"\x00" + ascii_too[:200]):
        summary = scan(data)
        assert summary.unscannable == ("binary: unknown format",)
        assert summary.labels == {L.UNSCANNABLE: LabelStats(count=1, distinct=1)}
        assert summary.content == ContentInfo("application/octet-stream", None, ())
        assert summary.size == len(data)
