"""Scanner: the sans-I/O API, hashing, and chunk invariance (SPEC §3)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import json
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify import labels as L
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import HASH_BATCH_BYTES, Scanner
from gateway.classify.matcher import TAIL_BYTES
from gateway.classify.summary import LabelStats, ScanSummary

# Every expectation holds for the compiled core and the Python reference.
pytestmark = pytest.mark.usefixtures("matcher_core")

SECRET = b"e" * 32
TODAY = dt.date(2026, 11, 25)
DETECTORS = DetectorSet.build()

#: Valid identifiers and near-misses, planted into filler text by the property test.
PLANTS = [
    "11010519491231002X",
    "110105194912310021",
    "91350100M000100Y43",
    "4111 1111 1111 1111",
    "4111111111111112",
    "+86 138 1234 5678",
    "13812345678",
    "138123456789",
    "tel: 2345 6789",
    "23456789",
    "(852) 9123 4567",
    "chan@example.com",
    "user@localhost",
    "passport E12345678",
    "E12345678",
    "A123456(3)",
    "A123456(4)",
    "AB9876543",
    "diagnosis: J45.9",
    "J45.9",
    "22.54321, 114.05678",
    "39.90420, 116.40739",
    "AKIAIOSFODNN7EXAMPLE",
    "机密★",
    "\nTOP SECRET\n",
    "ACGT" * 16,
    "ACGT" * 14,
    "permit H1234567801",
    "0.13812345678",
    "電話 2345-6789",
]
FILLER = st.sampled_from([" ", "\n", ",", "x", "1", "。", "\t", "ab ", "-", "."])


def scan_chunks(chunks: list[bytes], detectors: DetectorSet = DETECTORS) -> ScanSummary:
    scanner = Scanner(detectors, SECRET, today=TODAY)
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish()


def without_seconds(summary: ScanSummary) -> ScanSummary:
    return dataclasses.replace(summary, seconds=0.0)


def test_summary_fields() -> None:
    data = b"id 11010519491231002X, phone 13812345678 and 13812345678\n"
    summary = scan_chunks([data])
    assert summary.size == len(data)
    assert summary.sha256 == hashlib.sha256(data).hexdigest()
    assert summary.count(L.CN_RESIDENT_ID) == 1
    assert summary.labels[L.CN_PHONE].count == 2
    assert summary.labels[L.CN_PHONE].distinct == 1
    assert summary.subjects == 1
    assert summary.seconds > 0
    assert not summary.distinct_capped
    assert set(summary.digests) == set(summary.labels)
    assert summary.content.type == "text/plain"


def test_no_matched_value_in_json() -> None:
    summary = scan_chunks([b"11010519491231002X 13812345678 chan@example.com"])
    text = json.dumps(summary.to_json("p"))
    for value in ("11010519491231002X", "13812345678", "chan@example.com", "12345678"):
        assert value not in text


def test_empty_input() -> None:
    summary = scan_chunks([])
    assert summary.size == 0
    assert summary.sha256 == hashlib.sha256(b"").hexdigest()
    assert summary.labels == {}
    assert summary.subjects == 0


def test_large_chunks_are_hashed_on_the_helper_thread_correctly() -> None:
    block = (b"x" * 1000 + b" 13812345678\n") * 100
    chunks = [block * 12, b"tail", block * 8]
    assert len(chunks[0]) >= HASH_BATCH_BYTES
    summary = scan_chunks(chunks)
    assert summary.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert summary.labels[L.CN_PHONE].count == 2000
    small = scan_chunks(
        [b"".join(chunks)[i : i + 999] for i in range(0, len(b"".join(chunks)), 999)]
    )
    assert without_seconds(small) == without_seconds(summary)


def test_proxy_sized_chunks_are_hashed_in_order_across_batches() -> None:
    # 64 KiB chunks (what the proxy feeds) fill several batches, with a
    # partial one left for finish(); the digest must be that of the whole input.
    data = bytes(range(256)) * (3 * HASH_BATCH_BYTES // 256) + b"rest"
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    assert scan_chunks(chunks).sha256 == hashlib.sha256(data).hexdigest()


def test_feed_after_finish_and_double_finish_raise() -> None:
    scanner = Scanner(DETECTORS, SECRET)
    scanner.feed(b"abc")
    scanner.finish()
    with pytest.raises(RuntimeError):
        scanner.feed(b"x")
    with pytest.raises(RuntimeError):
        scanner.finish()


def test_abandoned_scanner_can_be_closed() -> None:
    with Scanner(DETECTORS, SECRET) as scanner:
        scanner.feed(b"x" * (HASH_BATCH_BYTES + 1))
    with pytest.raises(RuntimeError):
        scanner.feed(b"more")


def test_context_buffer_stays_bounded() -> None:
    scanner = Scanner(DETECTORS, SECRET)
    for _ in range(20):
        scanner.feed(b"13812345678 lorem ipsum " * 20_000)
        assert len(scanner._matcher._tail) <= TAIL_BYTES
    assert scanner.finish().labels[L.CN_PHONE].count == 400_000


def test_every_unit_case_whole_equals_byte_by_byte() -> None:
    data = "\n".join(PLANTS).encode()
    whole = scan_chunks([data])
    bytewise = scan_chunks([data[i : i + 1] for i in range(len(data))])
    assert without_seconds(whole) == without_seconds(bytewise)
    assert len(whole.labels) >= 12


@given(
    parts=st.lists(st.tuples(st.lists(FILLER, max_size=4), st.sampled_from(PLANTS)), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=25),
)
def test_chunk_invariance(parts: list[tuple[list[str], str]], cuts: list[int]) -> None:
    data = "".join("".join(f) + p for f, p in parts).encode()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    whole = scan_chunks([data])
    assert without_seconds(scan_chunks(chunks)) == without_seconds(whole)


@given(
    text=st.text(
        alphabet=st.sampled_from(list("0123456789 -+.()ACGTEHXabtel@:,\n電話★")), max_size=200
    )
)
def test_chunk_invariance_on_arbitrary_text(text: str) -> None:
    data = text.encode()
    whole = scan_chunks([data])
    bytewise = scan_chunks([data[i : i + 1] for i in range(len(data))])
    assert without_seconds(bytewise) == without_seconds(whole)


def test_huge_chunks_are_scanned_in_slices_with_the_same_result() -> None:
    rows = b"patient,diagnosis\n" + b"p1,J45.9 13812345678\n" * 40_000  # ~840 KB
    whole = scan_chunks([rows])
    assert whole.labels[L.HEALTH].count == 40_000
    assert whole.labels[L.CN_PHONE].count == 40_000
    pieces = scan_chunks([rows[i : i + 7777] for i in range(0, len(rows), 7777)])
    assert without_seconds(pieces) == without_seconds(whole)


def test_abandoned_scanners_release_their_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from gateway.classify.matcher import TextMatcher

    closed: list[bool] = []
    original = TextMatcher.close

    def recording_close(self: TextMatcher) -> None:
        closed.append(self._stream is not None)
        original(self)

    monkeypatch.setattr(TextMatcher, "close", recording_close)
    matcher = TextMatcher(DETECTORS, SECRET)
    matcher.begin_member("text/plain")
    matcher.text(b"13812345678 ")
    del matcher
    gc.collect()
    assert closed == [True]  # the open Hyperscan stream was closed on collection
    with Scanner(DETECTORS, SECRET) as explicit:
        explicit.feed(b"x")
    assert explicit._matcher._stream is None


def test_armor_in_utf16_text_is_seen_after_decoding() -> None:
    # The charset is decoded before matching, so armor written in UTF-16 (a
    # Windows editor's "Unicode" text) is found as well as in UTF-8.
    text = "備註\n-----BEGIN PGP MESSAGE-----\n\nhQEMA5xyz\n-----END PGP MESSAGE-----\n"
    summary = scan_chunks([b"\xff\xfe" + text.encode("utf-16-le")])
    assert summary.unscannable == ("pgp: encrypted content",)


def test_identifiers_in_archive_member_names_are_counted() -> None:
    # A folder of scanned ID cards named by ID number: the pictures hold no
    # text, the names do.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("scans/11010519491231002X.jpg", b"\xff\xd8\xff\xe0" + bytes(300))
        archive.writestr("scans/11010519491231002X_back.jpg", b"\xff\xd8\xff\xe0" + bytes(300))
        archive.writestr("contacts/陈大文 13812345678.txt", b"see file name\n")
    summary = scan_chunks([out.getvalue()])
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=2, distinct=1)
    assert summary.labels[L.CN_PHONE] == LabelStats(count=1, distinct=1)
    assert summary.subjects == 1
    assert summary.content.layers == ("zip",)


def test_the_inputs_own_name_is_scanned_when_given() -> None:
    scanner = Scanner(DETECTORS, SECRET, today=TODAY)
    scanner.scan_name("scans/11010519491231002X.jpg")
    scanner.feed(b"\xff\xd8\xff\xe0" + bytes(300))
    summary = scanner.finish()
    assert summary.labels[L.CN_RESIDENT_ID] == LabelStats(count=1, distinct=1)
    assert summary.size == 304  # the name is no part of the content's size or hash
    assert summary.sha256 == hashlib.sha256(b"\xff\xd8\xff\xe0" + bytes(300)).hexdigest()
    assert summary.content.type == "image/jpeg"


@pytest.mark.parametrize(
    ("name", "may_hold_a_value"),
    [
        ("scans/11010519491231002X.jpg", True),
        ("scan_１１０１０５１９４９１２３１００２Ｘ.jpg", True),  # full-width, folded
        ("li.wei@example.edu.cn.txt", True),
        ("plate_reader_2024-11-25.csv", False),
        ("r" * 5000 + ".csv", True),  # longer than the part scanned: not known clean
        # In a name a full stop before a digit separates words.
        ("scan.11010519491231002X.csv", True),
        ("patient.13812345678.dcm", True),
        ("release_v1.13812345678", False),  # a decimal: 1.138… is no phone
        # Base64 and hex of an identifier, as a file name's token.
        ("scan_MTEwMTA1MTk0OTEyMzEwMDJY.csv", True),
        ("scan_3131303130353139343931323331303032.csv", False),  # 17 bytes: no ID
        ("scan_313130313035313934393132333130303258.csv", True),
        ("SampleSheetForProjectAlpha_2024.csv", False),
        ("sha256_9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.txt", False),
    ],
)
def test_scan_name_says_whether_the_name_may_hold_a_value(
    name: str, may_hold_a_value: bool
) -> None:
    # The status API echoes a transfer's name only when this is False.
    scanner = Scanner(DETECTORS, SECRET, today=TODAY)
    assert scanner.scan_name(name) is may_hold_a_value
    scanner.feed(b"tel 13812345678\n")  # the body's findings are not the name's
    assert L.CN_PHONE in scanner.finish().labels


def test_a_name_after_the_content_started_is_refused() -> None:
    scanner = Scanner(DETECTORS, SECRET, today=TODAY)
    scanner.feed(b"text 13812345678 ")
    with pytest.raises(RuntimeError, match="before the first feed"):
        scanner.scan_name("a.txt")
    assert scanner.finish().labels[L.CN_PHONE].count == 1
