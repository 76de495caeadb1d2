"""The decoder memory budget: reservations, release, admission (issue 11, finding 7).

Every decompressing layer reserves its window from the budget before it
allocates it; a scan that cannot get its window because others hold the budget
raises ``DecoderBusy`` (503), one whose window exceeds what any scan may hold
is unscannable. Inputs are fed whole, byte by byte and at random splits.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify.budget import DecoderAccount, DecoderBudget, DecoderBusy
from gateway.classify.decode import (
    BLOCK_BYTES,
    LAYER_BUFFER_BYTES,
    MAX_DECODER_BYTES,
    NAME_TYPE,
    STEP_BYTES,
    TAR_BUFFER_BYTES,
    XZ_STATE_BYTES,
    ZLIB_INFLATE_BYTES,
    ZSTD_STATE_BYTES,
    Decoder,
    ScanLimits,
    bz2_memory,
    xz_dictionary,
)
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.errors import Unavailable

MIB = 1 << 20
CSV = b"name,id,phone\nalice,110101199003077777,13812345678\nbob,440301199912310014,13900001111\n"
#: A zstd ``--long=27`` window, the largest libzstd decodes by default.
LONG_WINDOW = 1 << 27
#: What the decoder reserves for one ``--long=27`` zstd layer.
ZSTD_LONG_LAYER = LAYER_BUFFER_BYTES + ZSTD_STATE_BYTES + LONG_WINDOW
#: xz -9 (and -9e): a 64 MiB LZMA2 dictionary (xz(1), presets table).
XZ9_DICTIONARY = 64 * MIB
XZ9_LAYER = LAYER_BUFFER_BYTES + XZ_STATE_BYTES + XZ9_DICTIONARY
SECRET = b"b" * 32
DETECTORS = DetectorSet.build()


@dataclass
class Recorder:
    """A TextSink keeping members (texts joined, names apart) and unscannable reasons."""

    events: list[tuple[str, str] | tuple[str, str, bytes]] = field(default_factory=list)
    _type: str = ""
    _text: bytearray = field(default_factory=bytearray)

    def begin_member(self, content_type: str) -> None:
        self._type, self._text = content_type, bytearray()

    def text(self, data: bytes) -> None:
        self._text += data

    def end_member(self) -> None:
        if self._type != NAME_TYPE:
            self.events.append(("member", self._type, bytes(self._text)))

    def unscannable(self, reason: str) -> None:
        self.events.append(("unscannable", reason))

    @property
    def texts(self) -> list[bytes]:
        return [e[2] for e in self.events if len(e) == 3]

    @property
    def unscannables(self) -> list[str]:
        return [str(e[1]) for e in self.events if e[0] == "unscannable"]


def text_of(size: int, seed: int) -> bytes:
    """Random digits and separators: about 2:1 compressible, never a bomb."""
    table = bytes(b"0123456789,\n"[b % 12] for b in range(256))
    return random.Random(seed).randbytes(size).translate(table)


def zst_long(data: bytes, window_log: int = 27) -> bytes:
    """``zstd --long=27``-style: a streamed frame declaring a 2**window_log window."""
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=window_log)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return compressor.compress(data) + compressor.flush()


def xz9(data: bytes) -> bytes:
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)


def make_tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_zip(members: list[tuple[str, bytes]], method: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def decode(
    data: bytes,
    budget: DecoderBudget,
    chunks: list[bytes] | None = None,
    limits: ScanLimits | None = None,
) -> Recorder:
    sink = Recorder()
    decoder = Decoder(sink, limits or ScanLimits(), budget=budget)
    for chunk in chunks if chunks is not None else [data]:
        decoder.feed(chunk)
    decoder.finish()
    return sink


def chunks_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# --------------------------------------------------------------------------- the budget


def test_reserve_and_release_account_for_every_byte() -> None:
    refusals: list[int] = []
    budget = DecoderBudget(100, on_refusal=lambda: refusals.append(1))
    first, second = budget.account(80), budget.account(80)
    assert first.reserve(60, "zstd window")
    assert (budget.reserved, first.held) == (60, 60)
    with pytest.raises(DecoderBusy) as busy:
        second.reserve(50, "xz dictionary")
    assert busy.value.status == 503
    assert isinstance(busy.value, Unavailable)
    assert "xz dictionary" in busy.value.detail
    assert (budget.reserved, second.held, budget.refusals, refusals) == (60, 0, 1, [1])
    first.release(20)
    assert second.reserve(50, "xz dictionary")
    assert (budget.reserved, budget.peak) == (90, 90)
    first.release(1000)  # more than held: only what it holds
    assert (budget.reserved, first.held) == (50, 0)
    second.close()
    second.close()
    assert budget.reserved == 0
    with pytest.raises(RuntimeError):
        second.reserve(1, "zstd window")


def test_a_scan_over_its_cap_is_refused_without_touching_the_budget() -> None:
    budget = DecoderBudget(100)
    account = budget.account(1000)
    assert account.cap == 100  # never more than the whole budget
    assert account.reserve(0, "nothing")
    assert not account.reserve(101, "zstd window")
    assert (budget.reserved, budget.refusals) == (0, 0)
    small = DecoderBudget(1000).account(10)
    assert not small.reserve(11, "zstd window")
    with pytest.raises(ValueError, match="positive capacity"):
        DecoderBudget(0)


def test_close_from_another_thread_while_reserving_never_leaks() -> None:
    budget = DecoderBudget(1 << 40)
    for _ in range(200):
        account = budget.account(1 << 40)
        start = threading.Event()

        def reserve(account: DecoderAccount = account, start: threading.Event = start) -> None:
            start.wait()
            for _ in range(50):
                try:
                    account.reserve(10, "zstd window")
                except RuntimeError:
                    return

        thread = threading.Thread(target=reserve)
        thread.start()
        start.set()
        account.close()
        thread.join()
        assert budget.reserved == 0


# --------------------------------------------------------------------------- per layer


def peak_of(data: bytes) -> int:
    budget = DecoderBudget(1 << 40)
    sink = decode(data, budget)
    assert sink.unscannables == []
    assert budget.reserved == 0  # all given back at the end
    return budget.peak


def test_zstd_reserves_the_window_its_frame_header_declares() -> None:
    for window_log in (10, 17, 20, 27):
        data = zst_long(CSV, window_log)
        window = zstandard.get_frame_parameters(data).window_size
        assert window == 1 << window_log
        assert peak_of(data) == LAYER_BUFFER_BYTES + ZSTD_STATE_BYTES + window
    # Single-segment frames (content size known) declare the content size.
    data = zstandard.ZstdCompressor().compress(CSV)
    assert zstandard.get_frame_parameters(data).window_size == len(CSV)
    assert peak_of(data) == LAYER_BUFFER_BYTES + ZSTD_STATE_BYTES + len(CSV)


def test_the_zstd_reservation_covers_what_libzstd_allocates() -> None:
    decompressor = zstandard.ZstdDecompressor(max_window_size=LONG_WINDOW)
    writer = decompressor.stream_writer(io.BytesIO(), write_size=STEP_BYTES, closefd=False)
    writer.write(zst_long(text_of(1 << 20, seed=1)))
    assert decompressor.memory_size() > LONG_WINDOW
    assert decompressor.memory_size() <= ZSTD_STATE_BYTES + LONG_WINDOW


@pytest.mark.parametrize(
    ("preset", "dictionary"),
    [(0, 256 << 10), (1, MIB), (3, 4 * MIB), (6, 8 * MIB), (9, XZ9_DICTIONARY)],
)
def test_xz_reserves_its_first_block_dictionary(preset: int, dictionary: int) -> None:
    data = lzma.compress(CSV, preset=preset)
    assert xz_dictionary(data) == dictionary
    # The decompressor's memlimit is exactly that: the stream still decodes.
    assert peak_of(data) == LAYER_BUFFER_BYTES + XZ_STATE_BYTES + dictionary


def test_xz_concatenated_streams_reserve_the_largest_dictionary() -> None:
    data = lzma.compress(CSV, preset=0) + xz9(CSV)
    budget = DecoderBudget(1 << 40)
    sink = decode(data, budget)
    assert sink.texts == [CSV + CSV]
    assert budget.peak == XZ9_LAYER


def test_xz_stream_without_blocks_needs_no_dictionary() -> None:
    assert xz_dictionary(lzma.compress(b"")) == 0
    assert peak_of(lzma.compress(b"") + lzma.compress(CSV, preset=0)) == (
        LAYER_BUFFER_BYTES + XZ_STATE_BYTES + (256 << 10)
    )


def test_corrupt_xz_block_header_is_refused_before_any_reservation() -> None:
    data = bytearray(xz9(CSV))
    data[14] ^= 0xFF  # a byte of the first block header: its CRC-32 no longer holds
    budget = DecoderBudget(1 << 40)
    sink = decode(bytes(data), budget)
    assert sink.unscannables == ["xz: corrupt stream"]
    assert budget.peak == LAYER_BUFFER_BYTES


@pytest.mark.parametrize("level", [1, 5, 9])
def test_bz2_reserves_by_its_block_size(level: int) -> None:
    assert peak_of(bz2.compress(CSV, level)) == LAYER_BUFFER_BYTES + bz2_memory(level)
    assert bz2_memory(9) == 3_700_000  # bzip2 manual §2.6: 3700k to decompress -9


def test_gzip_zip_and_tar_reserve_their_buffers() -> None:
    assert peak_of(gzip.compress(CSV)) == LAYER_BUFFER_BYTES + ZLIB_INFLATE_BYTES
    deflated = make_zip([("a.csv", CSV)], zipfile.ZIP_DEFLATED)
    assert peak_of(deflated) == LAYER_BUFFER_BYTES + ZLIB_INFLATE_BYTES
    bzipped = make_zip([("a.csv", CSV)], zipfile.ZIP_BZIP2)
    assert peak_of(bzipped) == LAYER_BUFFER_BYTES + bz2_memory(9)
    assert peak_of(make_tar([("a.csv", CSV)])) == TAR_BUFFER_BYTES
    # Nested layers hold their reservations at once: tar inside xz -9.
    assert peak_of(xz9(make_tar([("a.csv", CSV)]))) == XZ9_LAYER + TAR_BUFFER_BYTES
    # Members one after another hold one window at a time.
    two = make_tar([("a.xz", xz9(CSV)), ("b.zst", zst_long(CSV))])
    assert peak_of(two) == TAR_BUFFER_BYTES + ZSTD_LONG_LAYER


# --------------------------------------------------------------------------- the admission rule


def test_window_larger_than_the_whole_budget_is_unscannable_not_busy() -> None:
    budget = DecoderBudget(64 * MIB)
    sink = decode(make_tar([("a.zst", zst_long(CSV)), ("b.csv", CSV)]), budget)
    assert sink.unscannables == ["zstd: decoder memory over 64 MiB"]
    assert sink.texts[-1] == CSV  # the next member is still scanned
    assert (budget.reserved, budget.refusals) == (0, 0)


def test_window_over_the_scan_cap_is_unscannable() -> None:
    sink = decode(xz9(CSV), DecoderBudget(1 << 30), limits=ScanLimits(max_decoder_bytes=32 * MIB))
    assert sink.unscannables == ["xz: decoder memory over 32 MiB"]
    # Two --long=27 windows nested pass the default per-scan cap (256 MiB):
    # the outer layer is read, the inner one is unscannable.
    assert 2 * ZSTD_LONG_LAYER > MAX_DECODER_BYTES
    inner = zst_long(CSV)
    sink = decode(zst_long(inner), DecoderBudget(1 << 40))
    assert sink.unscannables == ["zstd: decoder memory over 256 MiB"]


def test_window_held_by_other_scans_raises_busy_and_gives_everything_back() -> None:
    budget = DecoderBudget(ZSTD_LONG_LAYER + TAR_BUFFER_BYTES)
    other = budget.account(MAX_DECODER_BYTES)
    assert other.reserve(MIB, "zstd window")
    first = text_of(2 * BLOCK_BYTES, seed=6)  # past the sniff buffer: decided while fed
    data = make_tar([("a.csv", first), ("b.zst", zst_long(CSV))])
    sink = Recorder()
    decoder = Decoder(sink, budget=budget)
    with pytest.raises(DecoderBusy):
        decoder.feed(data)
    # The tar layer's buffers, reserved before, are given back with the rest.
    assert budget.reserved == MIB
    assert budget.refusals == 1
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")
    decoder.close()  # idempotent
    other.close()
    # Once the other scan ended, the same input is admitted.
    assert decode(data, budget).texts == [first, CSV]
    assert budget.reserved == 0


def test_busy_inside_a_zstd_output_callback_propagates() -> None:
    # The xz -9 layer opens while the outer zstd layer writes its output.
    data = zstandard.ZstdCompressor().compress(xz9(CSV))
    budget = DecoderBudget(XZ9_LAYER + 8 * MIB)  # both layers fit the scan's cap
    other = budget.account(MAX_DECODER_BYTES)
    assert other.reserve(XZ9_LAYER, "held")  # what is left fits the zstd layer only
    with pytest.raises(DecoderBusy):
        decode(data, budget)
    other.close()
    assert budget.reserved == 0
    assert decode(data, budget).texts == [CSV]


def test_short_input_opens_its_layer_in_finish_and_busy_still_releases() -> None:
    budget = DecoderBudget(ZSTD_LONG_LAYER)
    other = budget.account(MAX_DECODER_BYTES)
    assert other.reserve(MIB, "held")
    decoder = Decoder(Recorder(), budget=budget)
    decoder.feed(zst_long(CSV))  # shorter than a sniff buffer: decided at the end
    assert budget.reserved == MIB
    with pytest.raises(DecoderBusy):
        decoder.finish()
    assert budget.reserved == MIB


# --------------------------------------------------------------------------- aborts and the scanner


def test_aborting_a_scan_mid_stream_releases_everything() -> None:
    budget = DecoderBudget(1 << 30)
    payload = zst_long(text_of(4 * MIB, seed=2))
    data = xz9(make_tar([("a.zst", payload)]))
    scanner = Scanner(DETECTORS, SECRET, budget=budget)
    scanner.feed(data[: len(data) // 2])
    assert budget.reserved == XZ9_LAYER + TAR_BUFFER_BYTES + ZSTD_LONG_LAYER
    scanner.close()
    assert budget.reserved == 0
    scanner.close()
    assert budget.reserved == 0
    with pytest.raises(RuntimeError):
        scanner.feed(b"x")


def test_scanner_raises_busy_from_feed_and_finish_cleans_up() -> None:
    budget = DecoderBudget(ZSTD_LONG_LAYER)
    other = budget.account(MAX_DECODER_BYTES)
    assert other.reserve(MIB, "held")
    data = zst_long(text_of(1 * MIB, seed=3))
    with Scanner(DETECTORS, SECRET, budget=budget) as scanner, pytest.raises(DecoderBusy):
        scanner.feed(data)
    assert budget.reserved == MIB
    other.close()
    scanner = Scanner(DETECTORS, SECRET, budget=budget)
    scanner.feed(data)
    summary = scanner.finish()
    assert summary.unscannable == ()
    assert summary.content.layers == ("zstd",)
    assert budget.reserved == 0


def test_scanner_without_a_budget_has_a_generous_one_of_its_own() -> None:
    # `gateway scan`: only the per-scan cap applies, never DecoderBusy.
    scanners = [Scanner(DETECTORS, SECRET) for _ in range(8)]
    for scanner in scanners:
        scanner.feed(zst_long(text_of(MIB, seed=4)))
    for scanner in scanners:
        assert scanner.finish().unscannable == ()


def test_concurrent_scanners_never_exceed_the_budget() -> None:
    threads = 8
    admitted_at_once = 3
    budget = DecoderBudget(admitted_at_once * ZSTD_LONG_LAYER + MIB)
    data = zst_long(text_of(4 * BLOCK_BYTES, seed=5))
    assert len(data) > BLOCK_BYTES  # the first block, with the frame header, is fed at once
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        scanner = Scanner(DETECTORS, SECRET, budget=budget)
        try:
            scanner.feed(data[:BLOCK_BYTES])
        except DecoderBusy:
            outcome = "busy"
        else:
            outcome = "admitted"
        barrier.wait()  # every admitted scan holds its window at this point
        if outcome == "admitted":
            scanner.feed(data[BLOCK_BYTES:])
            assert scanner.finish().unscannable == ()
        scanner.close()
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["admitted"] * admitted_at_once + ["busy"] * (
        threads - admitted_at_once
    )
    assert budget.peak <= budget.capacity
    assert budget.refusals == threads - admitted_at_once
    assert budget.reserved == 0


def test_racing_scanners_see_either_the_full_result_or_busy() -> None:
    budget = DecoderBudget(2 * ZSTD_LONG_LAYER)
    data = make_tar([("a.zst", zst_long(CSV * 2000)), ("b.xz", xz9(CSV * 2000))])
    expected = decode(data, DecoderBudget(1 << 40)).events
    results: list[str] = []
    lock = threading.Lock()

    def run(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(10):
            cuts = sorted(rng.randrange(len(data)) for _ in range(8))
            try:
                events = decode(data, budget, chunks_at(data, cuts)).events
            except DecoderBusy:
                outcome = "busy"
            else:
                assert events == expected
                outcome = "done"
            with lock:
                results.append(outcome)

    workers = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 60
    assert "done" in results
    assert budget.peak <= budget.capacity
    assert budget.reserved == 0


# --------------------------------------------------------------------------- chunk invariance

NESTED = make_tar(
    [
        ("a.csv", CSV),
        ("b.csv.zst", zst_long(CSV * 3)),
        ("c.csv.xz", xz9(CSV * 3)),
        ("d.csv.bz2", bz2.compress(CSV, 9)),
        ("e.zip", make_zip([("f.csv", CSV), ("g.csv", CSV)], zipfile.ZIP_BZIP2)),
        ("h.csv.gz", gzip.compress(CSV, mtime=0)),
    ]
)
#: xz -9 around a tar holding a --long zstd member: 194 MiB of windows at once.
OUTER = xz9(NESTED)
WHOLE_BUDGET = DecoderBudget(1 << 40)
WHOLE = decode(OUTER, WHOLE_BUDGET).events


def test_nested_layers_decode_alike_with_and_without_a_shared_budget() -> None:
    assert decode(OUTER, DecoderBudget(MAX_DECODER_BYTES)).events == WHOLE
    assert [e[0] for e in WHOLE] == ["member"] * 7
    assert WHOLE_BUDGET.peak == XZ9_LAYER + TAR_BUFFER_BYTES + ZSTD_LONG_LAYER


def test_byte_by_byte_gives_the_same_result_and_reservations() -> None:
    data = OUTER
    budget = DecoderBudget(1 << 40)
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert decode(data, budget, chunks).events == WHOLE
    assert budget.peak == WHOLE_BUDGET.peak
    assert budget.reserved == 0


@given(st.lists(st.integers(min_value=1, max_value=len(OUTER) - 1), max_size=12))
def test_random_splits_give_the_same_result_and_reservations(cuts: list[int]) -> None:
    data = OUTER
    budget = DecoderBudget(1 << 40)
    assert decode(data, budget, chunks_at(data, cuts)).events == WHOLE
    assert budget.peak == WHOLE_BUDGET.peak
    assert budget.reserved == 0
