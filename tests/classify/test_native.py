"""The compiled matcher core (``_native.c``) against the Python reference matcher.

Both implementations must give the same ``MatchResult`` — counts, distinct
counts, keyed digests, subjects, the cap flag — for any text cut at any
points. The texts are built from identifiers in every accepted format, their
near-misses, hotwords and the kinds the core hands back to Python handlers,
joined by separators that make them touch, overlap and fuse.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import itertools
import random
import struct
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bench.classify import generate
from gateway.classify import _native, charset, matcher
from gateway.classify import detectors as D
from gateway.classify import labels as L
from gateway.classify import validators as V
from gateway.classify.decode.transforms import alphabet_run_py, find_any_py, find_lead_py
from gateway.classify.detectors import CustomDetector, DetectorSet
from gateway.classify.matcher import TAIL_BYTES, MatchResult, TextMatcher, genetic_runs_py

SECRET = b"n" * 32
TODAY = dt.date(2026, 11, 25)
BUILTIN = DetectorSet.build()
CUSTOM = DetectorSet.build(
    [
        CustomDetector(
            label="custom.staff_id",
            patterns=(r"ST-[0-9]{6}",),
            hotwords=("staff",),
            validator="luhn",
        ),
        CustomDetector(label="custom.project", keywords=("Falcon", "Heron"), case_sensitive=False),
    ]
)


def _resident_id(rng: random.Random, *, valid: bool = True) -> str:
    province = rng.choice(sorted(V.PROVINCE_CODES)).decode()
    day = rng.choice(
        ["19491231", "20000229", "19000101", "20261125", "19990230", "20261126", "19000229"]
    )
    body = f"{province}{rng.randint(0, 9999):04d}{day}{rng.randint(0, 999):03d}"
    check = chr(V.mod11_2_check_char(body.encode()))
    if not valid:
        check = "0" if check != "0" else "1"
    return body + (check.lower() if rng.random() < 0.3 else check)


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if V.luhn_ok((body + check).encode()):
            return body + check
    raise AssertionError("unreachable: one Luhn digit always fits")


def _hkid(rng: random.Random) -> str:
    letters = "".join(chr(rng.randint(65, 90)) for _ in range(rng.choice((1, 2))))
    digits = f"{rng.randint(0, 999_999):06d}"
    return letters + digits + chr(V.hkid_check_char(letters.encode(), digits.encode()))


def _uscc(rng: random.Random) -> str:
    alphabet = V.USCC_ALPHABET.decode()
    body = "91" + f"{rng.randint(110000, 659999)}" + "".join(rng.choice(alphabet) for _ in range(9))
    return body + chr(V.uscc_check_char(body.encode()))


def _pool() -> list[str]:
    rng = random.Random(7)
    cards = [
        _luhn_complete(prefix + "".join(str(rng.randint(0, 9)) for _ in range(n - len(prefix) - 1)))
        for prefix, n in (("4", 16), ("62", 19), ("51", 16), ("2221", 16), ("37", 15), ("35", 17))
    ]
    pool = [
        # Resident IDs, valid and not (check digit, dates, future), and lower-case x.
        *(_resident_id(rng) for _ in range(6)),
        *(_resident_id(rng, valid=False) for _ in range(3)),
        # Mainland phones in every accepted format and their near-misses.
        "13812345678",
        "12812345678",
        "+86 138 1234 5678",
        "+8613812345678",
        "008613812345678",
        "8613812345678",
        "138-1234-5678",
        "138 1234 5678 25",
        "0.13812345678",
        "Mob.13912345678",
        "Ref.13812345678",
        # Hong Kong phones: prefixes, hotwords, near-misses.
        "+852 2345 6789",
        "(852) 2345-6789",
        "(852)23456789",
        "852-23456789",
        "85223456789",
        "23456789",
        "12345678",
        "Tel: 2345 6789",
        "tel.98765432",
        "hotel 23456789",
        "電話 23456789",
        "phone",
        # Cards, grouped and not, with CVVs after them.
        *cards,
        *(" ".join(c[i : i + 4] for i in range(0, len(c), 4)) for c in cards),
        *("-".join(c[i : i + 4] for i in range(0, len(c), 4)) for c in cards),
        cards[0][:4] + " " + cards[0][4:8] + " " + cards[0][8:12] + " " + cards[0][12:] + " 123",
        cards[4][:4] + " " + cards[4][4:10] + " " + cards[4][10:],
        "4111 1111 1111 1112",
        # USCCs with letters and all digits.
        *(_uscc(rng) for _ in range(4)),
        "91350100M000100Y43",
        # HKIDs with and without brackets; passports and permits with hotwords.
        *(_hkid(rng) for _ in range(4)),
        *(h[:-1] + "(" + h[-1] + ")" for h in (_hkid(rng) for _ in range(3))),
        "A123456(3)",
        "A1234563",
        "passport E12345678",
        "Passport: K12345678",
        "護照 G12345678",
        "permit H1234567890",
        "回鄉證 H12345678",
        "passport permit H12345678",
        "通行证 C12345678",
        "passport EA1234567",
        "EI1234567",
        "V00000001",
        # E-mail addresses.
        "Patient.One@Mail.Example.COM",
        ".lead@example.org",
        "a@b.co",
        "x" * 70 + "@example.com",
        "user@sub.example.com.",
        # Kinds the core hands to Python handlers, and their hotwords.
        "diagnosis: J45.9",
        "ICD E11",
        "22.543210, 114.054321",
        "AKIAABCDEFGHIJKLMNOP",
        "staff ST-123455",
        "staff ST-123456",
        "falcon",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
        "Top Secret",
        # Filler that fuses with neighbours.
        "2026-01-01",
        "No.",
        "852",
        "86",
        "1",
        "X",
        "x",
        "1234",
        "12.5",
    ]
    return pool


POOL = _pool()
#: The five precedence labels (one pending group) and two labels with a group each.
LABEL_CHOICES = [BUILTIN.labels.index(label) for label in L.PRECEDENCE] + [
    BUILTIN.labels.index(L.EMAIL),
    BUILTIN.labels.index(L.HK_ID),
]
SEPARATORS = [
    " ",
    "  ",
    ",",
    "\n",
    "",
    ".",
    "-",
    "(",
    ")",
    "+",
    ":",
    "：",
    "\t",
    "a",
    "7",
    ";",
    '"',
]


def _pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (those inside it; repeats and order do not matter)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[i:j] for i, j in itertools.pairwise(bounds)]


def scan_cut(
    detectors: DetectorSet,
    data: bytes,
    cuts: Iterable[int],
    *,
    native: bool,
    content_type: str = "text/csv",
    **kw: int,
) -> MatchResult:
    """``data`` as one member, fed to a new matcher in the pieces between ``cuts``."""
    m = TextMatcher(detectors, SECRET, today=TODAY, native=native, **kw)
    m.begin_member(content_type)
    for piece in _pieces(data, cuts):
        m.text(piece)
    m.end_member()
    return m.result()


documents = st.lists(
    st.tuples(st.sampled_from(POOL), st.sampled_from(SEPARATORS)), min_size=1, max_size=40
).map(lambda parts: "".join(t + s for t, s in parts).encode())


@given(data=documents, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_text_and_cuts_give_the_reference_result(data: bytes, cuts: list[int]) -> None:
    reference = scan_cut(BUILTIN, data, [], native=False)
    assert scan_cut(BUILTIN, data, cuts, native=True) == reference
    assert scan_cut(BUILTIN, data, [], native=True) == reference


@given(data=documents, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_custom_detectors_interleave_with_the_native_kinds(data: bytes, cuts: list[int]) -> None:
    reference = scan_cut(CUSTOM, data, cuts, native=False)
    assert scan_cut(CUSTOM, data, cuts, native=True) == reference


@given(data=documents, per_label=st.integers(0, 4), total=st.integers(0, 8))
def test_distinct_bounds_cap_the_same_values(data: bytes, per_label: int, total: int) -> None:
    kw = {"max_distinct": per_label, "max_distinct_total": total}
    reference = scan_cut(BUILTIN, data, [], native=False, **kw)
    assert scan_cut(BUILTIN, data, [], native=True, **kw) == reference


def test_bench_pii_data_in_odd_chunks() -> None:
    data = generate("pii", 2 * 1024 * 1024, seed=5)
    reference = scan_cut(BUILTIN, data, list(range(0, len(data), 1 << 20)), native=False)
    assert reference.subjects > 1000
    odd = list(range(0, len(data), 77_777)) + list(range(5, len(data), TAIL_BYTES + 3))
    assert scan_cut(BUILTIN, data, odd, native=True) == reference


def test_hits_beyond_the_tail_use_the_chunk_as_their_window() -> None:
    # Identifiers just before and after TAIL_BYTES into a chunk: the two windows.
    filler = b"x " * (TAIL_BYTES // 2 - 12)
    data = filler + b" 13812345678 " + b"y" * 10 + b" 13912345678 \n" + filler + b"a@b.co\n"
    for cut in (0, 1, len(filler) - 3, len(filler) + 5, len(filler) + 30):
        cuts = [cut, cut + TAIL_BYTES - 5]
        reference = scan_cut(BUILTIN, data, cuts, native=False)
        assert scan_cut(BUILTIN, data, cuts, native=True) == reference


@given(
    value=st.text(alphabet="0123456789XxABCDEGHKMZ()", min_size=0, max_size=22),
    name=st.sampled_from(["cn_resident_id", "uscc", "bank_card", "hkid"]),
)
def test_native_validators_agree_with_the_python_ones(value: str, name: str) -> None:
    raw = value.encode()
    today = (TODAY.year, TODAY.month, TODAY.day)
    if name == "cn_resident_id":
        expected = V.is_resident_id(raw, V.birth_dates(TODAY))
    elif name == "hkid":
        expected = V.is_hkid(raw)
    elif name == "uscc":
        expected = V.is_uscc(raw)
    else:
        expected = V.is_bank_card(raw)
    assert _native.validate(name, raw, today) is expected


def test_native_validators_accept_valid_identifiers() -> None:
    rng = random.Random(3)
    today = (TODAY.year, TODAY.month, TODAY.day)
    for _ in range(500):
        rid = _resident_id(rng).encode()
        assert _native.validate("cn_resident_id", rid, today) is V.is_resident_id(
            rid, V.birth_dates(TODAY)
        )
        assert _native.validate("hkid", _hkid(rng).encode())
        assert _native.validate("uscc", _uscc(rng).encode())
    assert _native.validate("cn_resident_id", b"11010519491231002X", today)
    assert not _native.validate("cn_resident_id", b"110105202611260010", today)  # tomorrow
    assert _native.validate("bank_card", b"4111111111111111")
    assert not _native.validate("bank_card", b"4111111111111112")
    with pytest.raises(KeyError, match="unknown validator"):
        _native.validate("mod97", b"GB82WEST12345698765432")


def test_native_birth_dates_are_the_reference_calendar() -> None:
    # Every YYYYMMDD shape around the calendar's edges: month and day 0 and
    # past the end, leap years (1900 is none, 2000 is one), today and tomorrow.
    today = (TODAY.year, TODAY.month, TODAY.day)
    dates = V.birth_dates(TODAY)
    for year in (1899, 1900, 1904, 1999, 2000, 2023, 2024, 2025, 2026, 2027):
        for month in range(14):
            for day in range(33):
                body = f"110105{year:04d}{month:02d}{day:02d}001".encode()
                rid = body + bytes([V.mod11_2_check_char(body)])
                expected = V.is_resident_id(rid, dates)
                assert _native.validate("cn_resident_id", rid, today) is expected, rid


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["propose", "accept", "commit"]),
            st.sampled_from(LABEL_CHOICES),
            st.integers(0, 30),
            st.integers(1, 12),
            st.sampled_from([b"a", b"b", b"c"]),
        ),
        max_size=30,
    )
)
def test_pending_candidates_resolve_like_the_reference(
    steps: list[tuple[str, int, int, int, bytes]],
) -> None:
    # The precedence labels share one group and rank by SPEC order; others
    # have a group each. Overlap, rank and length decide which one is pending.
    native = TextMatcher(BUILTIN, SECRET, today=TODAY, native=True)
    python = TextMatcher(BUILTIN, SECRET, today=TODAY, native=False)
    for m in (native, python):
        m.begin_member("text/plain")
    for op, label, start, width, value in steps:
        if op == "propose":
            outcome = native._propose(label, start, start + width, value)
            assert outcome == python._propose(label, start, start + width, value)
        elif op == "accept":
            native._accept(label, value)
            python._accept(label, value)
        else:  # a member ends: its pending candidates count
            for m in (native, python):
                m.end_member()
                m.begin_member("text/plain")
    assert native.result() == python.result()


def test_is_bank_card_rejects_non_digits_without_raising() -> None:
    # A custom detector's match may hold letters; "2x…" once reached int() and raised.
    assert not V.is_bank_card(b"2x21000000000000")
    assert not _native.validate("bank_card", b"2x21000000000000")


def _core(detectors: DetectorSet = BUILTIN) -> TextMatcher:
    return TextMatcher(detectors, SECRET, today=TODAY, native=True)


def test_a_hit_outside_its_window_raises_instead_of_reading_past_it() -> None:
    m = _core()
    core = m._core
    handlers = m._handlers
    # Expression 0 is a native digit pattern; end offset 10**9 lies far past the 5-byte chunk.
    with pytest.raises(RuntimeError, match="outside its window"):
        core.process([10**9 << 20 | 0], b"hello", 0, b"", {}, handlers, m)
    with pytest.raises(RuntimeError, match="outside its window"):
        core.process([3 << 20 | len(handlers)], b"hello", 0, b"", {}, handlers, m)
    with pytest.raises(TypeError):
        core.process([], "text", 0, b"", {}, handlers, m)
    with pytest.raises(ValueError, match="one handler per expression"):
        core.process([], b"", 0, b"", {}, handlers[:-1], m)


def test_core_rejects_inconsistent_setup() -> None:
    good = {
        "ops": b"\x00",
        "spec_labels": [0],
        "spec_args": [0],
        "ranks": [0, 0],
        "groups": [1, 2],
        "labels": [0] * 9,
        "hotwords": [[(b"tel", True)], [], []],
        "today": (2026, 11, 25),
        "secret": SECRET,
        "max_distinct": 10,
        "max_total": 10,
        "tail_bytes": TAIL_BYTES,
    }
    _native.Core(**good)
    for key, bad in (
        ("ops", b"\x09"),
        ("spec_labels", [0, 1]),
        ("groups", [1, 5]),
        ("labels", [0] * 8),
        ("labels", [0] * 8 + [7]),
        ("hotwords", [[(b"x" * 33, True)], [], []]),
        ("hotwords", [[], []]),
        ("today", (2026, 13, 1)),
        ("tail_bytes", 0),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            _native.Core(**{**good, key: bad})
    core = _native.Core(**good)
    with pytest.raises(IndexError):
        core.accept(2, b"v")
    with pytest.raises(IndexError):
        core.propose(-1, 0, 1, b"v")
    with pytest.raises(IndexError):  # not cast to label 0
        core.accept(1 << 32, b"v")
    with pytest.raises(IndexError):
        core.digests(1 << 32, b"p")
    with pytest.raises(IndexError):
        core.values(2)


def test_python_handlers_raising_propagate_out_of_the_core() -> None:
    m = _core(CUSTOM)
    pid = next(i for i, s in enumerate(CUSTOM.specs) if s.kind == 16)  # a custom keyword

    def boom(*_args: int) -> None:
        raise ZeroDivisionError("handler failed")

    m._handlers[pid] = boom
    m.begin_member("text/plain")
    with pytest.raises(ZeroDivisionError, match="handler failed"):
        m.text(b"falcon and heron\n")
    m.close()


GENETIC_PID = BUILTIN.genetic_run_id


def _genetic_runs_agree(pieces: list[bytes], base: int = 0) -> list[int]:
    """Feed the pieces in order to the compiled and the reference token rule.

    Both get what the matcher gives them (the offset, the tail before the
    piece, the state the last piece returned); after every piece their hits
    and states must be equal. Returns the hits.
    """
    native_state = python_state = (0, 0, 0)
    text = b""
    found: list[int] = []
    for piece in pieces:
        offset, tail = base + len(text), text[-TAIL_BYTES:]
        native_hits: list[int] = []
        python_hits: list[int] = []
        native_state = _native.genetic_runs(
            piece, offset, tail, native_state, GENETIC_PID, native_hits
        )
        python_state = genetic_runs_py(piece, offset, tail, python_state, GENETIC_PID, python_hits)
        assert (native_hits, native_state) == (python_hits, python_state), (offset, piece[:80])
        found += native_hits
        text += piece
    return found


def _bases(parts: list[tuple[int, bytes]]) -> bytes:
    return b"".join(
        b"ACGTNacgtn"[i % 10 : i % 10 + 1] * n + brk for i, (n, brk) in enumerate(parts)
    )


#: What stands between runs of bases: letters, blanks, line breaks (escaped
#: too), base64's bytes and padding, PEM armor, quotes.
BREAKS = [
    b"x",
    b"\n",
    b" ",
    b"ACGT",
    b"u",
    b"\\n",
    b"\\",
    b"\\t",
    b"\\/",
    b"=",
    b"AA==",
    b"-",
    b"-----BEGIN X-----",
    b"\r\n",
    b"\t",
    b'"',
    b"/",
    b"Thanks",
    b"iVBORw0KGgoAAAANSUhEUgAAADAAAAAoCAYAAAC" * 2,
]

bases_and_breaks = st.lists(
    st.tuples(st.integers(0, 150), st.sampled_from(BREAKS)),
    max_size=12,
).map(_bases)


@given(
    data=bases_and_breaks,
    cuts=st.lists(st.integers(0, 2500), max_size=8),
    base=st.integers(0, 1 << 30),
)
def test_native_runs_of_bases_match_the_reference(data: bytes, cuts: list[int], base: int) -> None:
    _genetic_runs_agree([b"\n", *_pieces(data, cuts)], base)
    big = data * 20  # one piece over the reference's sampling threshold
    _genetic_runs_agree([b"\n", big, b"\n\n"], base)
    _genetic_runs_agree([b"\n", *_pieces(big, [c * 7 for c in cuts])], base)


@given(data=bases_and_breaks, cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_runs_of_bases_across_cuts_give_the_reference_result(data: bytes, cuts: list[int]) -> None:
    text = b"seq: " + data * 3 + b"\n"
    assert scan_cut(BUILTIN, text, cuts, native=True) == scan_cut(BUILTIN, text, [], native=False)


def test_runs_of_bases_at_every_edge_length() -> None:
    # Runs of 59/60/61 and twice that, carried in or not, with breaks of one or
    # two bytes: inside a token, alone on their lines, after an escape.
    lengths = (0, 1, 58, 59, 60, 61, 119, 120, 121)
    for run in (0, 1, 59, 60, 61):
        for a, b, c in itertools.product(lengths, repeat=3):
            for brk in (b"x", b"xy", b"\n", b" \r\n", b"\\n"):
                data = b"A" * a + brk + b"c" * b + brk + b"G" * c
                _genetic_runs_agree([b"\nT", b"A" * run, data, b"\n\n"])


def test_escapes_and_breaks_cut_anywhere() -> None:
    # Every cut, including between a backslash and its letter and right after a run.
    line = b"ACGT" * 15
    data = b'{"d": "\\t' + line + b"\\n" + line + b"\\r\\n" + line + b'=="}\n' + line + b"x\n"
    whole = _genetic_runs_agree([b"\n", data, b"\n\n"])
    for cut in range(1, len(data)):
        assert _genetic_runs_agree([b"\n", data[:cut], data[cut:], b"\n\n"]) == whole, cut


def test_genetic_runs_rejects_bad_arguments() -> None:
    hits: list[int] = []
    runs = _native.genetic_runs
    with pytest.raises(TypeError):
        runs(b"ACGT", 0, b"", [0, 0, 0], GENETIC_PID, hits)  # type: ignore[arg-type]
    after = 1 << 3  # a decision left open: it reads on from the position
    for offset, tail, state, pid in [
        (3, b"tail", (0, 0, 0), GENETIC_PID),  # offset < len(tail)
        (0, b"", (-1, 0, 0), GENETIC_PID),
        (0, b"", (0, 3 << 3, 0), GENETIC_PID),  # no such pending kind
        (100, b"x" * 10, (0, after, 89), GENETIC_PID),  # before the tail
        (100, b"x" * 10, (0, after, 101), GENETIC_PID),  # in this chunk
        (0, b"", (0, 0, 0), (1 << 20) - 2),  # pid + the other kinds
    ]:
        for genetic_runs in (runs, genetic_runs_py):
            with pytest.raises(ValueError, match="bad state, offset, tail or pid"):
                genetic_runs(b"ACGT", offset, tail, state, pid, hits)
    with pytest.raises(ValueError, match="bad tables"):
        _native.genetic_setup(b"\x00" * 255, b"\x04" * 256, 60, 64, (0, 1, 2, 3))
    with pytest.raises(ValueError, match="bad byte class"):
        _native.genetic_setup(b"\x00" * 256, b"\x04" * 256, 60, 64, (0, 1, 2, 3))
    assert hits == []
    assert _native.genetic_tables()[0] == matcher._G_CLASS  # left as it was


def test_the_core_runs_on_the_reference_tables() -> None:
    # One source: detectors.GENETIC_* -> matcher's tables -> the core at import.
    classes, escaped, least, blanks, kinds = _native.genetic_tables()
    assert (classes, escaped) == (matcher._G_CLASS, matcher._G_ESCAPED)
    assert (least, blanks) == (D.GENETIC_MIN_RUN, D.GENETIC_SPACE_MAX)
    assert kinds == (D.GENETIC_COUNT, D.GENETIC_PENDING, D.GENETIC_COMMIT, D.GENETIC_DROP)


def test_a_core_on_other_tables_fails_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stale:
        G_BASE, G_TOKEN, G_SPACE, G_BREAK, G_OTHER, G_ESCAPE = range(6)

        def genetic_setup(self, *tables: object) -> None:
            self.tables = tables

        def genetic_tables(self) -> tuple[object, ...]:
            return (*self.tables[:2], 59, *self.tables[3:])  # another minimum run

    monkeypatch.setattr(matcher, "_native", Stale())
    with pytest.raises(ImportError, match="other genetic tables"):
        matcher._setup_native_genetic()
    monkeypatch.setattr(matcher, "_native", object())  # no genetic_setup at all
    with pytest.raises(ImportError, match="out of date"):
        matcher._setup_native_genetic()


#: Pieces around the foldable characters: their neighbours in the full-width
#: block, cut sequences, other E3/EF characters and plain text.
FOLD_PIECES = [
    "１２３",
    "Ａｚ",
    "！",
    "～",
    "｟",
    "＠",
    "\u3000",
    "\u3001",
    "。",
    "\uff00",
    "\uff60",
    "中文",
    "abc ",
    "\n",
    "é",
]


@given(
    pieces=st.lists(st.sampled_from(FOLD_PIECES), max_size=40),
    cut=st.integers(0, 3),
    raw=st.binary(max_size=64),
)
def test_native_folding_matches_the_reference(pieces: list[str], cut: int, raw: bytes) -> None:
    charset.fold("\u200b".encode())  # the core has its table
    text = "".join(pieces).encode()
    for data in (text, text[: len(text) - cut], raw, raw + text, b"\xef\xbc" + text + b"\xe3\x80"):
        assert _native.fold(data) == charset.fold_py(data)
    plain = "nothing to fold here, 中文 only".encode() * 10
    assert _native.fold(plain) is plain


def test_text_may_arrive_as_any_bytes_like_object() -> None:
    data = b"tel 13812345678, a@b.co\n"
    expected = scan_cut(BUILTIN, data, [], native=False)
    for piece in (bytearray(data), memoryview(data)):
        m = TextMatcher(BUILTIN, SECRET, today=TODAY, native=True)
        m.begin_member("text/csv")
        m.text(piece)  # type: ignore[arg-type]
        m.end_member()
        assert m.result() == expected


def test_fold_setup_rejects_a_bad_table_and_keeps_the_one_it_had() -> None:
    # The table crosses from charset.py once; a malformed one is refused whole.
    charset.fold("\u200b".encode())  # the real table is in place
    point = struct.pack("=I", 0x200B)
    for points, offsets, blob in [
        (point, struct.pack("=I", 0), b""),  # offsets not one more than points
        (struct.pack("=I", 0x41), struct.pack("=2I", 0, 1), b"A"),  # ASCII
        (struct.pack("=I", 0xD800), struct.pack("=2I", 0, 0), b""),  # a surrogate
        (struct.pack("=I", 0x110000), struct.pack("=2I", 0, 0), b""),  # past Unicode
        (point * 2, struct.pack("=3I", 0, 0, 0), b""),  # repeated
        (point, struct.pack("=2I", 0, 5), b"ab"),  # past the blob
    ]:
        with pytest.raises(ValueError, match="fold_setup"):
            _native.fold_setup(points, offsets, blob)
    assert charset.fold("1\u200b2\u0663".encode()) == b"123"
    with pytest.raises(TypeError):
        _native.fold("text")  # type: ignore[arg-type]


def _simd_available(name: str) -> bool:
    previous = _native.simd()
    try:
        _native.simd(name)
    except ValueError:
        return False
    _native.simd(previous)
    return True


@contextlib.contextmanager
def _simd(name: str) -> Iterator[None]:
    previous = _native.simd()
    _native.simd(name)
    try:
        yield
    finally:
        _native.simd(previous)


def test_the_run_search_uses_the_widest_vector_code() -> None:
    assert _native.simd() == SIMD[0]
    with pytest.raises(ValueError, match="simd"):
        _native.simd("avx512")


_RUN_PIECES = st.one_of(
    st.sampled_from(
        [b"a", b"Z", b"7", b"+", b"/", b" ", b"-", b"_", b"=", b"\n", b"@", b"[", b"`"]
    ),
    st.sampled_from([b"{", b"\x80", b"\xff", b"\xe4\xb8\xad"]),
    st.builds(lambda c, n: c * n, st.sampled_from([b"A", b"9", b"q8", b"ab "]), st.integers(1, 90)),
)


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" * 2

#: The vector code the run search can use on this processor (each is checked).
SIMD = [name for name in ("avx2", "sse2") if _simd_available(name)]


@pytest.mark.parametrize("simd", SIMD)
@settings(max_examples=500, deadline=None)
@given(
    pieces=st.lists(_RUN_PIECES, max_size=60),
    bounds=st.tuples(st.integers(0, 400), st.integers(0, 400)),
    carry=st.tuples(st.integers(0, 80), st.integers(0, 80)),
    lengths=st.sampled_from([(16, 20), (64, 64), (1, 1), (2, 3), (5, 2), (33, 40), (100, 120)]),
)
def test_alphabet_run_matches_the_reference(
    simd: str,
    pieces: list[bytes],
    bounds: tuple[int, int],
    carry: tuple[int, int],
    lengths: tuple[int, int],
) -> None:
    # The core probes and looks 64 bytes at a time; the reference walks every
    # byte: the same report and the same counts where each stops.
    data = b"".join(pieces)
    start, stop = sorted(min(b, len(data)) for b in bounds)
    run, digits = max(carry), min(carry)
    expected = alphabet_run_py(data, start, stop, run, digits, *lengths)
    with _simd(simd):
        assert _native.alphabet_run(data, start, stop, run, digits, *lengths) == expected


@pytest.mark.parametrize("simd", SIMD)
@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(FOLD_PIECES),
            st.sampled_from(sorted(charset.folding_table())).map(chr),
            st.integers(1, 70).map(lambda n: "x" * n),
        ),
        max_size=40,
    ),
    raw=st.binary(max_size=80),
)
def test_native_folding_matches_the_reference_with_each_vector_code(
    simd: str, pieces: list[str], raw: bytes
) -> None:
    # The vector skip looks 32 bytes at a time for a byte that starts an entry;
    # long ASCII stretches put the characters at every place in a block.
    charset.fold("\u200b".encode())  # the core has its table
    text = "".join(pieces).encode()
    with _simd(simd):
        for data in (text, raw + text, text + raw, raw * 3):
            assert _native.fold(data) == charset.fold_py(data)


@pytest.mark.parametrize("simd", SIMD)
def test_fold_finds_each_lead_at_every_place_in_a_block(simd: str) -> None:
    # Each lead byte some entry starts with, at every offset of two 32-byte blocks,
    # among CJK text (leads that start no entry) and cut or invalid sequences.
    charset.fold("\u200b".encode())
    table = charset.folding_table()
    firsts: dict[int, int] = {}
    for cp in sorted(table):
        firsts.setdefault(chr(cp).encode()[0], cp)
    assert len(firsts) > 8  # two-, three- and four-byte leads
    fillers = (b"a", "中".encode(), b"\x80", b"\xe2\x80")
    with _simd(simd):
        for lead, cp in firsts.items():
            char = chr(cp).encode()
            for filler in fillers:
                for offset in range(0, 70):
                    data = (filler * 70)[:offset] + char + b"z" * 40
                    assert _native.fold(data) == charset.fold_py(data), (hex(lead), filler, offset)


@pytest.mark.parametrize("simd", SIMD)
@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"a", b"\\", b"&", b"=", b"%", b"\x80", b"x" * 40]), max_size=30
    ).map(b"".join),
    bounds=st.tuples(st.integers(0, 1300), st.integers(0, 1300)),
    chars=st.sampled_from([b"\\&=", b"&", b"%=", b"\x80a&=", b"z"]),
)
def test_find_any_matches_the_reference(
    simd: str, data: bytes, bounds: tuple[int, int], chars: bytes
) -> None:
    start, stop = sorted(min(b, len(data)) for b in bounds)
    with _simd(simd):
        assert _native.find_any(data, start, stop, chars) == find_any_py(data, start, stop, chars)


@pytest.mark.parametrize("simd", SIMD)
def test_find_any_at_every_place_in_a_block(simd: str) -> None:
    with _simd(simd):
        for at in range(100):
            for byte in b"\\&=":
                data = b"x" * at + bytes((byte,)) + b"y" * 40
                assert _native.find_any(data, 0, len(data), b"\\&=") == at
                assert _native.find_any(data, 0, at, b"\\&=") == -1
                assert _native.find_any(data, at + 1, len(data), b"\\&=") == -1
    with pytest.raises(ValueError, match="find_any"):
        _native.find_any(b"abc", 0, 4, b"&")
    with pytest.raises(ValueError, match="find_any"):
        _native.find_any(b"abc", 0, 3, b"abcde")
    with pytest.raises(TypeError):
        _native.find_any("abc", 0, 3, b"&")  # type: ignore[arg-type]


_HEX_FOLLOW = bytes(1 if chr(b) in "0123456789ABCDEFabcdef" else 0 for b in range(256))


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"a", b"%", b"%2", b"%4", b"% ", b"%%", b"7", b"\x80", b"x" * 40]),
        max_size=30,
    ).map(b"".join),
    bounds=st.tuples(st.integers(0, 1300), st.integers(0, 1300)),
    lead=st.sampled_from([b"%", b"a", b"7"]),
)
def test_find_lead_matches_the_reference(data: bytes, bounds: tuple[int, int], lead: bytes) -> None:
    start, stop = sorted(min(b, len(data)) for b in bounds)
    found = _native.find_lead(data, start, stop, lead, _HEX_FOLLOW)
    assert found == find_lead_py(data, start, stop, lead, _HEX_FOLLOW)


def test_find_lead_looks_past_the_stop_for_the_next_byte_only() -> None:
    # The lead must be before stop; the byte after it may be past stop, not past the data.
    assert _native.find_lead(b"x%4", 0, 2, b"%", _HEX_FOLLOW) == 1
    assert _native.find_lead(b"x%", 0, 2, b"%", _HEX_FOLLOW) == -1
    assert _native.find_lead(b"95% CI %z %a", 0, 12, b"%", _HEX_FOLLOW) == 10
    assert _native.find_lead(b"%a%a", 3, 1, b"%", _HEX_FOLLOW) == -1  # as bytes.find
    with pytest.raises(ValueError, match="find_lead"):
        _native.find_lead(b"abc", 0, 4, b"%", _HEX_FOLLOW)
    with pytest.raises(ValueError, match="find_lead"):
        _native.find_lead(b"abc", 0, 3, b"%%", _HEX_FOLLOW)
    with pytest.raises(ValueError, match="find_lead"):
        _native.find_lead(b"abc", 0, 3, b"%", b"\x01")
    with pytest.raises(TypeError):
        _native.find_lead("abc", 0, 3, b"%", _HEX_FOLLOW)  # type: ignore[arg-type]


def test_alphabet_run_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="alphabet_run"):
        _native.alphabet_run(b"abc", 2, 1, 0, 0, 16, 20)
    with pytest.raises(ValueError, match="alphabet_run"):
        _native.alphabet_run(b"abc", 0, 4, 0, 0, 16, 20)
    with pytest.raises(ValueError, match="alphabet_run"):
        _native.alphabet_run(b"abc", 0, 3, 1, 2, 16, 20)
    with pytest.raises(TypeError):
        _native.alphabet_run("abc", 0, 3, 0, 0, 16, 20)  # type: ignore[arg-type]


@pytest.mark.parametrize("simd", SIMD)
def test_alphabet_run_across_block_boundaries(simd: str) -> None:
    # Every placement of a run (letters, digits, digits then a letter, the whole
    # alphabet) against the core's 64-byte blocks, among characters just outside the
    # alphabet's ranges, with and without a run carried in.
    for lengths in ((16, 20), (64, 64), (33, 40)):
        for length in (15, 16, 17, 19, 20, 21, 33, 63, 64, 65, 100):
            bodies = (b"A" * length, b"7" * length, b"7" * (length - 1) + b"x", _ALPHABET[:length])
            for body, gap in itertools.product(
                bodies, (b" ", b"@", b"[", b"`", b"{", b"-", b"\x80")
            ):
                for lead in range(0, 140, 7):
                    data = gap * lead + body + gap * 70
                    for carry in (0, 5):
                        expected = alphabet_run_py(data, 0, len(data), carry, 0, *lengths)
                        with _simd(simd):
                            got = _native.alphabet_run(data, 0, len(data), carry, 0, *lengths)
                        assert got == expected, (lengths, length, body[-2:], lead, carry)


def _long_reports(data: bytes) -> list[int]:
    """Where next_run reports in ``data``, searching on after each report's line."""
    ends: list[int] = []
    at = 0
    while (end := _native.next_run(data, at, len(data), 0, 0, 64, 64)[0]) >= 0:
        ends.append(end)
        line_end = data.find(b"\n", end)
        at = len(data) if line_end < 0 else line_end
    return ends


def test_long_run_passes_over_digests_and_reports_encoded_text() -> None:
    # Past the head of a log the core decides digests and signatures are noise
    # alone; encoded text, a file's magic or a run it cannot decide is reported.
    digests = b"".join(
        b"layer sha256:%s integrity sha512-%s ok\n"
        % (
            hashlib.sha256(bytes([i])).hexdigest().encode(),
            base64.b64encode(hashlib.sha512(bytes([i])).digest()),
        )
        for i in range(200)
    )
    # The few whose first bytes look like a PGP packet or a magic number go on.
    assert len(_long_reports(digests)) <= 400 * 0.04
    text = base64.b64encode(b"patient 3 id 110101199003074514 and more words " * 3)
    for blob in (
        text,
        base64.b64encode(gzip.compress(bytes(range(256)), mtime=0)),
        base64.b64encode(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(60))),
    ):
        data = digests + b"blob " + blob + b" done\n"
        assert any(len(digests) < end <= len(data) for end in _long_reports(data))
    # Undecidable here: cut by the end of the data, or a line as wide as a wrapped block.
    cut = digests + b"x " + base64.b64encode(hashlib.sha512(b"z").digest())[:70]
    assert any(end > len(digests) for end in _long_reports(cut))
    wrapped = digests + base64.b64encode(hashlib.sha512(b"z").digest() * 2)[:76] + b"\n"
    assert any(end > len(digests) for end in _long_reports(wrapped))
    with pytest.raises(ValueError, match="next_run"):
        _native.next_run(b"abc", 0, 3, 0, 0, 65, 65)
