"""The chance test's arithmetic: rates, binomial tails, header words, verdicts."""

from __future__ import annotations

import datetime as _dt
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.classify import chance as C
from gateway.classify import labels as L
from gateway.classify import validators as V

TODAY = _dt.date(2026, 12, 7)
DATES = V.birth_dates(TODAY)


# --------------------------------------------------------------------------- the rates, counted


def test_phone_rates_are_the_share_of_eleven_digit_numbers_that_validate() -> None:
    # The first four digits decide both phone readings; the rest is free. Count
    # every prefix of a number (first digit 1-9), as the matcher reads the run.
    prefixes = [f"{i:04d}" for i in range(1000, 10000)]
    cn = sum(p[0] == "1" and p[1] >= "3" for p in prefixes)
    hk = sum(p[:3] == "852" and p[3] >= "2" for p in prefixes)
    assert Fraction(cn, len(prefixes)) == C.RATES[L.CN_PHONE] == Fraction(7, 90)
    assert Fraction(hk, len(prefixes)) == C.RATES[L.HK_PHONE] == Fraction(8, 9000)


def test_one_last_digit_in_ten_passes_luhn_for_any_card_shape() -> None:
    rng = random.Random(1)
    for length in range(15, 20):
        for _ in range(50):
            prefix = rng.choice(("4", "62", "51", "35", "2221"))
            body = prefix + "".join(
                rng.choice("0123456789") for _ in range(length - 1 - len(prefix))
            )
            values = [(body + d).encode() for d in "0123456789"]
            assert all(V.bank_card_shape(v) for v in values)
            assert sum(V.is_bank_card(v) for v in values) == 1
    assert C.RATES[L.BANK_CARD] == Fraction(1, 10)


def test_one_check_character_in_eleven_makes_a_resident_id() -> None:
    rng = random.Random(2)
    provinces = sorted(V.PROVINCE_CODES)
    for _ in range(200):
        body = (
            rng.choice(provinces).decode()
            + f"{rng.randint(0, 9999):04d}"
            + f"{rng.randint(1950, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            + f"{rng.randint(0, 999):03d}"
        )
        values = [(body + c).encode() for c in "0123456789X"]
        assert all(V.resident_id_shape(v, DATES) for v in values)
        assert sum(V.is_resident_id(v, DATES) for v in values) == 1
    # Random final digits (no X): right when the check is a digit (10 in 11), and
    # that digit (1 in 10).
    bodies = [
        (
            rng.choice(provinces).decode()
            + f"{rng.randint(0, 9999):04d}19{rng.randint(50, 99)}0101{rng.randint(0, 999):03d}"
        ).encode()
        for _ in range(4000)
    ]
    digit_checks = sum(V.mod11_2_check_char(body) != ord("X") for body in bodies)
    assert abs(digit_checks / 4000 / 10 - 1 / 11) < 0.003
    assert C.RATES[L.CN_RESIDENT_ID] == Fraction(1, 11)


def test_one_check_character_in_thirty_one_makes_a_uscc() -> None:
    rng = random.Random(3)
    alphabet = V.USCC_ALPHABET.decode()
    for _ in range(100):
        body = "".join(rng.choice(alphabet) for _ in range(2))
        body += f"{rng.randint(0, 999999):06d}" + "".join(rng.choice(alphabet) for _ in range(9))
        values = [(body + c).encode() for c in alphabet]
        assert all(V.uscc_shape(v) for v in values)
        assert sum(V.is_uscc(v) for v in values) == 1
    assert C.RATES[L.CN_USCC] == Fraction(1, 31)


def test_the_rates_are_the_core_order() -> None:
    assert set(C.RATES) == set(C.CHANCE_LABELS)
    assert C.CHANCE_LABELS == (L.CN_RESIDENT_ID, L.CN_USCC, L.BANK_CARD, L.CN_PHONE, L.HK_PHONE)


# --------------------------------------------------------------------------- tails


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 80),
    p=st.sampled_from([1 / 11, 1 / 31, 0.1, 7 / 90, 8 / 9000, 0.5]),
    x=st.integers(-2, 90),
)
def test_tails_are_the_exact_binomial_sums(n: int, p: float, x: int) -> None:
    def pmf(k: int) -> float:
        return math.comb(n, k) * p**k * (1 - p) ** (n - k)

    upper = sum(pmf(k) for k in range(max(0, x), n + 1))
    lower = sum(pmf(k) for k in range(0, min(n, x) + 1))
    assert C.upper_tail(n, p, x) == pytest.approx(upper, rel=1e-9, abs=1e-300)
    assert C.lower_tail(n, p, x) == pytest.approx(lower, rel=1e-9, abs=1e-300)


def test_tails_of_a_million_values_stay_finite_and_ordered() -> None:
    p = 7 / 90
    n = 1_000_000
    mean = n * p
    assert C.upper_tail(n, p, int(mean)) == pytest.approx(0.5, abs=0.01)
    assert C.upper_tail(n, p, int(mean + 6 * 268)) < 1e-8
    assert C.lower_tail(n, p, int(mean - 6 * 268)) < 1e-8
    assert C.upper_tail(n, p, int(mean + 40 * 268)) < 1e-100


def test_the_stated_power_for_one_hundred_phones_among_ten_thousand() -> None:
    # The docstring's arithmetic: threshold 871 for 10,100 values; 100 + Bin(10,000, 7/90)
    # reaches it in about 61 % of columns, 150 in about 98 %.
    p = float(C.RATES[L.CN_PHONE])
    threshold = next(x for x in range(780, 1000) if C.upper_tail(10_100, p, x) < C.LEVEL)
    assert threshold == 871
    assert C.upper_tail(10_000, p, threshold - 100) == pytest.approx(0.61, abs=0.01)
    threshold_150 = next(x for x in range(780, 1000) if C.upper_tail(10_150, p, x) < C.LEVEL)
    assert C.upper_tail(10_000, p, threshold_150 - 150) == pytest.approx(0.98, abs=0.01)


# --------------------------------------------------------------------------- header words


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ("phone", L.CN_PHONE),
        ("Phone Number", L.CN_PHONE),
        ("phoneNumber", L.CN_PHONE),
        ("mobile_no", L.CN_PHONE),
        ("tel", L.HK_PHONE),
        ("联系电话", L.CN_PHONE),
        ("手机号码", L.CN_PHONE),
        ("card_no", L.BANK_CARD),
        ("银行卡号", L.BANK_CARD),
        ("身份证号", L.CN_RESIDENT_ID),
        ("ID Card", L.CN_RESIDENT_ID),
        ("统一社会信用代码", L.CN_USCC),
    ],
)
def test_headers_that_name_a_label(header: str, label: str) -> None:
    assert C.names_label(header, C.HEADER_WORDS[label])


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ("sample_id", L.CN_PHONE),
        ("hotel", L.CN_PHONE),
        ("intel_score", L.CN_PHONE),
        ("cell_count", L.CN_PHONE),
        ("cardinality", L.BANK_CARD),
        ("barcode", L.BANK_CARD),
        ("device", L.CN_PHONE),
        ("accession", L.CN_RESIDENT_ID),
        ("", L.CN_PHONE),
    ],
)
def test_headers_that_do_not(header: str, label: str) -> None:
    assert not C.names_label(header, C.HEADER_WORDS[label])


def test_a_header_that_could_hold_a_value_is_never_shown() -> None:
    for header in ("13812345678", "a@b.co", "id 1101", "x" * 30):
        assert C.shown_header(header) == C.WITHHELD
    assert C.shown_header("sample_id") == "sample_id"
    assert C.shown_header("chr1") == "chr1"


# --------------------------------------------------------------------------- verdicts


def _raw(
    counts: dict[int, tuple[int, int, int]], table: int = 0, column: int = 0, source: int = 0
) -> C.RawProfile:
    per = [counts.get(ch, (0, 0, 0)) for ch in range(len(C.CHANCE_LABELS))]
    return (source, table, column, per)


CN = C.CHANCE_LABELS.index(L.CN_PHONE)


def test_a_column_at_the_chance_rate_is_set_aside() -> None:
    (d,) = C.decide([_raw({CN: (10_000, 10_000, 778)})], [("sample_id",)])
    assert d.aside
    assert d.profile.verdict == C.CHANCE
    assert d.profile.expected == pytest.approx(777.8, abs=0.1)


@pytest.mark.parametrize(
    ("counts", "header", "verdict"),
    [
        ((10_000, 10_000, 900), "sample_id", C.EXCESS),  # 4.6 sd above chance
        ((10_000, 10_000, 650), "sample_id", C.DEFICIT),  # padded with non-validating values
        ((99, 99, 8), "sample_id", C.FEW),  # too small to tell one real number from chance
        ((10_000, 10_000, 778), "mobile", C.NAMED),
        ((10_000, 100, 100), "sample_id", C.EXCESS),  # every shaped value validates
    ],
)
def test_columns_whose_findings_count(
    counts: tuple[int, int, int], header: str, verdict: str
) -> None:
    (d,) = C.decide([_raw({CN: counts})], [(header,)])
    assert not d.aside
    assert d.profile.verdict == verdict


def test_columns_without_findings_are_not_decided() -> None:
    assert C.decide([_raw({CN: (10_000, 10_000, 0)})], [("x",)]) == []


def test_real_numbers_spread_over_many_columns_show_over_all_of_them() -> None:
    # Each column: 500 values, chance 38.9 +- 6; 8 real numbers more is 1.3 sd (chance).
    # Twenty such columns: 160 more than 778 +- 27, six standard deviations.
    raw = [_raw({CN: (500, 500, 47)}, column=i, source=i) for i in range(20)]
    alone = C.decide(raw[:1], [("",)])
    assert alone[0].aside
    together = C.decide(raw, [tuple("" for _ in range(20))])
    assert all(d.profile.verdict == C.EXCESS_OVERALL for d in together)
    assert not any(d.aside for d in together)


def test_policy_header_words_name_a_column() -> None:
    words = {**C.HEADER_WORDS, L.CN_PHONE: (*C.HEADER_WORDS[L.CN_PHONE], "handy")}
    (d,) = C.decide([_raw({CN: (10_000, 10_000, 778)})], [("Handy",)], words)
    assert d.profile.verdict == C.NAMED


def test_a_profile_round_trips_through_json() -> None:
    (d,) = C.decide([_raw({CN: (10_000, 10_000, 778)})], [("sample_id",)])
    again = C.ColumnProfile.from_json(d.profile.to_json())
    assert again.to_json() == d.profile.to_json()
    assert again.rate == Fraction(7, 90)


def test_at_most_so_many_profiles_are_reported() -> None:
    raw = [_raw({CN: (10_000, 10_000, 700 + i)}, column=i, source=i) for i in range(100)]
    shown = C.reported(C.decide(raw, [()]))
    assert len(shown) == C.MAX_REPORTED
    assert shown[0].valid == 799
