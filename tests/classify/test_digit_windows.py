"""The digit database scanned around its cores (issue 17) gives what scanning every byte gave.

The old formulation streamed every pattern over every byte; the matcher with its
compiled core streams the literal database and scans the digit database only in
the windows ``_native.digit_windows`` opens around the digit cores. These tests
hold the new formulation to the old one on number-rich text (lab notes, CSV of
measurements) with identifiers planted in it, cut at random points and inside
digit runs: the same Hyperscan hits, in the same order, and the same findings.
"""

from __future__ import annotations

import itertools
import random
import re

import hyperscan
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bench.classify import generate
from gateway.classify import _native, matcher
from gateway.classify import detectors as D
from gateway.classify.detectors import DetectorSet
from gateway.classify.matcher import TAIL_BYTES, DigitScan
from gateway.classify.testing import bank_card, cn_mobile, hkid, resident_id, uscc
from tests.classify.test_native import POOL, SIMD, _simd, scan_cut

BUILTIN = DetectorSet.build()
#: A core as detectors.py defines it, for the reference search below.
CORE = re.compile(
    rb"(?=([0-9]{%d}|[0-9][%s][0-9]{%d}|%s))"
    % (
        D.DIGIT_CORE_RUN,
        re.escape(D.DIGIT_CORE_SEPARATORS),
        D.DIGIT_CORE_GROUP,
        b"|".join(D.DIGIT_CORE_WORDS),
    )
)


def _old_hits(data: bytes) -> list[int]:
    """Every built-in pattern streamed over every byte, in one database (the old way).

    Which database a pattern is in never changed its hits, so one database of
    them all is the old formulation whichever side a pattern was on.
    """
    ids = list(range(BUILTIN.genetic_run_id))
    db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
    db.compile(
        expressions=[BUILTIN.specs[i].expr for i in ids],
        ids=ids,
        flags=[BUILTIN.specs[i].flags for i in ids],
    )
    hits: list[int] = []

    def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
        hits.append(end << 20 | pid)

    with db.stream(match_event_handler=on_match) as stream:
        stream.scan(data, scratch=hyperscan.Scratch(db))
    return sorted(hits)


def _new_hits(data: bytes, cuts: list[int]) -> list[int]:
    """The literal database streamed and the digit database over windows, fed in pieces.

    The tail is what the matcher keeps: the last TAIL_BYTES of the text before
    each piece.
    """
    digit, literal = BUILTIN.databases("text/plain")
    block = BUILTIN.digit_windows_database()
    digits = DigitScan(block, hyperscan.Scratch(block), digit, hyperscan.Scratch(digit))
    literal_scratch = hyperscan.Scratch(literal)
    hits: list[int] = []

    def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
        hits.append(end << 20 | pid)

    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    with literal.stream(match_event_handler=on_match) as stream:
        for a, b in itertools.pairwise(bounds):
            piece = data[a:b]
            stream.scan(piece, scratch=literal_scratch)
            digits.scan(piece, data[max(0, a - TAIL_BYTES) : a], a, hits)
    digits.close()
    return sorted(hits)


def _identifiers(rng: random.Random) -> list[str]:
    """Identifiers of every digit-database shape, as people write them."""
    mobile = cn_mobile(rng)
    card = bank_card(rng)
    return [
        resident_id(rng),
        mobile,
        f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
        f"+86 {mobile[:3]} {mobile[3:7]} {mobile[7:]}",
        card,
        card.replace(" ", "-"),
        card.replace(" ", ""),
        f"{card} 123",
        uscc(rng),
        hkid(rng),
        hkid(rng).replace("(", "").replace(")", ""),
        f"passport E{rng.randint(10_000_000, 99_999_999)}",
        f"No.{resident_id(rng)}",
        f"Tel.{mobile}",
        f"tel: {rng.randint(2000, 9999)} {rng.randint(0, 9999):04d}",
        f"+852 {rng.randint(2000, 9999)} {rng.randint(0, 9999):04d}",
        "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
        # The widest matches: a loose grouped number after an abbreviation.
        "acct.1234 123456 123456 123456 12345",
        "Card.4111-111111-111111-111111-1",
        f"ID.{resident_id(rng)[:17]}X",
    ]


def _number_rich(seed: int, size: int = 60_000) -> tuple[bytes, list[int]]:
    """Lab notes with identifiers planted every few hundred bytes, and cuts inside
    their digit runs (and some anywhere)."""
    rng = random.Random(seed)
    notes = generate("science", size, seed=seed).decode(errors="ignore")
    parts: list[str] = []
    at = 0
    while at < len(notes):
        step = rng.randint(40, 600)
        parts.append(notes[at : at + step])
        parts.append(rng.choice(["", " ", ",", "\n", "(", "：", "n = "]))
        parts.append(rng.choice(_identifiers(rng) + POOL))
        parts.append(rng.choice(["", " ", ".", ")", "\n", "。", "7", "-"]))
        at += step
    data = "".join(parts).encode()
    digits = [m.start() + rng.randint(1, 5) for m in re.finditer(rb"[0-9]{6}", data)]
    cuts = rng.sample(digits, min(len(digits), 60)) + rng.sample(range(len(data)), 30)
    return data, cuts


@pytest.mark.parametrize("skip", [D.DIGIT_SKIP, 0])
@pytest.mark.parametrize("seed", range(6))
def test_number_rich_text_gives_the_old_hits(
    seed: int, skip: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no skip, each window is exactly the reach around its cores.
    monkeypatch.setattr(D, "DIGIT_SKIP", skip)
    data, cuts = _number_rich(seed)
    old = _old_hits(data)
    assert len(old) > 50  # the planted identifiers were seen
    assert _new_hits(data, cuts) == old
    assert _new_hits(data, []) == old
    assert _new_hits(data, list(range(0, len(data), 7))) == old  # pieces smaller than a core


@pytest.mark.parametrize("kind", ["science", "numeric", "pii", "prose", "json"])
def test_bench_data_gives_the_old_hits(kind: str) -> None:
    data = generate(kind, 400_000, seed=3)
    cuts = list(range(0, len(data), 65_536)) + list(range(11, len(data), 4099))
    assert _new_hits(data, cuts) == _old_hits(data)


@pytest.mark.parametrize("seed", range(4))
def test_dense_and_sparse_pieces_in_turn_give_the_old_hits(seed: int) -> None:
    # Dense text is streamed, sparse text scanned in windows: the stream misses
    # the sparse pieces and reads the tail again before the next dense one.
    rng = random.Random(seed)
    parts = [
        generate(kind, rng.randint(300, 40_000), seed=seed + i)
        for i, kind in enumerate(["pii", "science", "numeric", "science", "pii", "prose"] * 2)
    ]
    data = b"".join(parts)
    bounds = list(itertools.accumulate(len(p) for p in parts))
    cuts = [c + rng.randint(-70, 70) for c in bounds] + rng.sample(range(len(data)), 20)
    old = _old_hits(data)
    assert len(old) > 100
    assert _new_hits(data, cuts) == old
    assert _new_hits(data, bounds) == old


@pytest.mark.parametrize("seed", range(4))
def test_number_rich_text_gives_the_reference_findings(seed: int) -> None:
    # The matcher with its compiled core (windows) against the Python
    # reference, which streams the digit database over every byte.
    data, cuts = _number_rich(100 + seed, 30_000)
    reference = scan_cut(BUILTIN, data, [], native=False)
    assert reference.labels  # identifiers were found
    assert scan_cut(BUILTIN, data, cuts, native=True) == reference
    assert scan_cut(BUILTIN, data, [], native=True) == reference


@settings(max_examples=200, deadline=None)
@given(
    notes=st.integers(0, 10_000),
    planted=st.lists(st.sampled_from(POOL), max_size=12),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_planted_identifiers_anywhere_give_the_reference_findings(
    notes: int, planted: list[str], cuts: list[int]
) -> None:
    rng = random.Random(notes)
    text = generate("science", 2500, seed=notes).decode(errors="ignore")
    for value in planted:
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice(["", " "]) + value + rng.choice(["", " "]) + text[at:]
    data = text.encode()
    reference = scan_cut(BUILTIN, data, [], native=False)
    assert scan_cut(BUILTIN, data, cuts, native=True) == reference
    assert _new_hits(data, cuts) == _old_hits(data)


@pytest.mark.parametrize(
    "text",
    [
        b"AKIAABCDEFGHIJKLMNOP and more",
        b"ASIA2345ABCD6789EFGH",
        b"13812345678 first",
        b"x AKIAABCDEFGHIJKLMNOP",
        b"4111 1111 1111 1111",
    ],
)
def test_identifiers_at_a_members_start_and_end_at_any_cut(text: bytes) -> None:
    # The first bytes of a member have the shortest seam (the framing's "\n" only).
    reference = scan_cut(BUILTIN, text, [], native=False)
    assert reference.labels
    for cut in range(len(text) + 1):
        assert scan_cut(BUILTIN, text, [cut], native=True) == reference
        assert _new_hits(b"\n" + text, [cut + 1]) == _old_hits(b"\n" + text)


def test_science_text_opens_no_window() -> None:
    # The point of the cores: lab notes' numbers ("12.5 mg/L", "n = 248",
    # "2019–2023", "2024-05-09") hold none, so the digit database is not run.
    data = generate("science", 1_000_000)
    assert _native.digit_windows(data, b"", D.DIGIT_REACH, D.DIGIT_SKIP, 0) == []


def _record_span(
    _pid: int, start: int, end: int, _flags: int, spans: list[tuple[int, int]]
) -> None:
    spans.append((start, end))


def test_every_digit_pattern_fits_the_reach_and_holds_a_core() -> None:
    # Each digit-database pattern on its own, with its leftmost start: the match
    # is no wider than DIGIT_REACH and holds a core.
    rng = random.Random(4)
    text = " ".join(
        rng.choice(_identifiers(rng) + POOL) + rng.choice(["", " ", ".", "-", "\n"])
        for _ in range(3000)
    ).encode()
    digit = [i for i, s in enumerate(BUILTIN.specs) if s.database == D.DB_DIGIT]
    assert digit
    seen = 0
    for pid in digit:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(
            expressions=[BUILTIN.specs[pid].expr], ids=[pid], flags=[hyperscan.HS_FLAG_SOM_LEFTMOST]
        )
        spans: list[tuple[int, int]] = []
        db.scan(text, match_event_handler=_record_span, context=spans)
        for start, end in spans:
            assert end - start <= D.DIGIT_REACH
            assert CORE.search(text, start, end) is not None
        seen += len(spans)
    assert seen > 1000


def _core_ends(text: bytes) -> list[int]:
    return [m.end(1) - 1 for m in CORE.finditer(text)]


_PIECES = st.one_of(
    st.sampled_from([b" ", b"-", b".", b",", b"a", b"X", b"\n", b"\xc2\xb0", b"\xe5\xb9\xb4"]),
    st.builds(lambda n: b"7" * n, st.integers(1, 12)),
    st.builds(lambda n: b"1234 " * n, st.integers(1, 3)),
    st.builds(lambda n: b"x" * n, st.integers(1, 90)),
    st.sampled_from([b"AKIA", b"ASIA", b"AKI", b"A", b"KIA", b"ASIAKIA"]),
)


@pytest.mark.parametrize("simd", SIMD)
@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(_PIECES, max_size=80),
    tail_pieces=st.lists(_PIECES, max_size=20),
    reach=st.sampled_from([D.DIGIT_CORE_RUN, 7, 40, D.DIGIT_REACH, 200]),
    skip=st.sampled_from([0, 1, 30, D.DIGIT_SKIP]),
)
def test_windows_hold_every_core_window(
    simd: str, pieces: list[bytes], tail_pieces: list[bytes], reach: int, skip: int
) -> None:
    data, tail = b"".join(pieces), b"".join(tail_pieces)
    with _simd(simd):
        flat = _native.digit_windows(data, tail, reach, skip, 0)
        dense = _native.digit_windows(data, tail, reach, skip, 100)
    t = min(reach, len(tail))
    windows = list(zip(flat[::2], flat[1::2], strict=True))
    previous = -t - 1
    for a, b in windows:  # sorted, apart, inside the text
        assert previous < a < b <= len(data)
        previous = b
    assert not windows or windows[0][0] >= -t
    for e in _core_ends(tail[len(tail) - t :] + data):
        e -= t
        need = (max(-t, e + 1 - reach), min(len(data), e + 1 + reach))
        assert any(a <= need[0] and need[1] <= b for a, b in windows), (e, need, windows)
    # Nothing but cores opens a window.
    if not _core_ends(tail[len(tail) - t :] + data):
        assert windows == []
    # Stopping early for dense text gives the whole text, or the same windows.
    assert dense in (flat, [-t, len(data)])
    if dense != flat:
        assert sum(b - a for a, b in windows) >= 100


def test_digit_windows_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        _native.digit_windows("text", b"", 64, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reach"):
        _native.digit_windows(b"123456", b"", D.DIGIT_CORE_RUN - 1, 0, 0)
    with pytest.raises(ValueError, match="reach"):
        _native.digit_windows(b"123456", b"", _native.DIGIT_REACH_MAX + 1, 0, 0)
    with pytest.raises(ValueError, match="skip"):
        _native.digit_windows(b"123456", b"", 64, -1, 0)
    with pytest.raises(ValueError, match="dense"):
        _native.digit_windows(b"123456", b"", 64, 0, -1)


def test_a_core_built_for_other_cores_fails_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "DIGIT_CORE_RUN", D.DIGIT_CORE_RUN + 1)
    with pytest.raises(ImportError, match="other digit cores"):
        matcher._check_native_digits()
    monkeypatch.setattr(matcher, "_native", object())
    with pytest.raises(ImportError, match="out of date"):
        matcher._check_native_digits()


def test_the_windows_database_is_compiled_up_front_only_for_the_compiled_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With the compiled core, the first transfer does not wait for it; without
    # it, nothing ever scans it, so it is not compiled at all.
    assert "digit-windows" in BUILTIN._variants
    monkeypatch.setattr(D, "NATIVE_BUILT", False)
    python_only = DetectorSet.build()
    assert "digit-windows" not in python_only._variants
    data = b"tel. " + cn_mobile(random.Random(3)).encode() + b" sample 12.5 mg/L"
    found = scan_cut(python_only, data, [], native=False)
    assert found.labels  # the mobile number
    assert found == scan_cut(BUILTIN, data, [], native=True)
