"""Check digits and date tables, against independent re-implementations and known numbers."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from gateway.classify import validators as V

# The weights and check characters exactly as REGULATIONS.md states them.
GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
GB11643_CHECK = "10X98765432"


def reference_resident_check(body: str) -> str:
    return GB11643_CHECK[sum(int(d) * w for d, w in zip(body, GB11643_WEIGHTS, strict=True)) % 11]


def reference_hkid_check(letters: str, digits: str) -> str:
    values = [36] if len(letters) == 1 else []
    values += [ord(c) - 55 for c in letters]
    values += [int(d) for d in digits]
    r = sum(v * w for v, w in zip(values, range(9, 1, -1), strict=True)) % 11
    return "0" if r == 0 else "A" if r == 1 else str(11 - r)


def test_published_resident_id_example_is_valid() -> None:
    assert V.is_resident_id(b"11010519491231002X")
    assert V.is_resident_id(b"11010519491231002x")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"110105194912310021", "wrong check character"),
        (b"990105194912310020", "99 is no province"),
        (b"440524188001010014", "born before 1900"),
        (b"110105194902300020", "30 February"),
        (b"11010519491231002", "17 characters"),
        (b"1101051949123100AX", "letters in the body"),
    ],
)
def test_resident_id_near_misses(value: bytes, why: str) -> None:
    assert not V.is_resident_id(value), why


def test_resident_id_check_matches_reference_on_random_bodies() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        body = "11" + "".join(rng.choice("0123456789") for _ in range(15))
        assert chr(V.mod11_2_check_char(body.encode())) == reference_resident_check(body)


def test_birth_date_table_knows_calendars_and_today() -> None:
    today = dt.date(2026, 11, 25)
    dates = V.birth_dates(today)
    assert b"20000229" in dates  # leap year
    assert b"19000229" not in dates  # 1900 was not
    assert b"19000101" in dates
    assert b"18991231" not in dates
    assert b"20261125" in dates
    assert b"20261126" not in dates  # tomorrow
    body = "110105" + "20261126" + "001"
    assert not V.is_resident_id((body + reference_resident_check(body)).encode(), dates)


def test_hkid_check_matches_reference_and_spec_examples() -> None:
    assert V.is_hkid(b"A1234563")  # SPEC: A123456(3)
    assert not V.is_hkid(b"A1234564")
    # SPEC shows AB987654(2) as a format example; by the REGULATIONS algorithm its check is 3.
    assert reference_hkid_check("AB", "987654") == "3"
    assert V.is_hkid(b"AB9876543")
    assert not V.is_hkid(b"AB9876542")
    rng = random.Random(3)
    seen_a = False
    for _ in range(3000):
        letters = "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 2))
        )
        digits = "".join(rng.choice("0123456789") for _ in range(6))
        check = reference_hkid_check(letters, digits)
        seen_a = seen_a or check == "A"
        assert chr(V.hkid_check_char(letters.encode(), digits.encode())) == check
        assert V.is_hkid((letters + digits + check).encode())
    assert seen_a, "the check value 10 ('A') must have been exercised"


def test_hkid_rejects_lower_case_and_bad_shapes() -> None:
    assert not V.is_hkid(b"a1234563")
    assert not V.is_hkid(b"A123456")
    assert not V.is_hkid(b"ABC1234563")


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        (b"4111111111111111", True),  # Visa test number
        (b"5555555555554444", True),  # Mastercard
        (b"2221000000000009", True),  # Mastercard 2-series lower bound
        (b"2720990000000007", True),  # upper bound
        (b"2721000000000005", False),  # just above the 2-series range
        (b"378282246310005", True),  # Amex, 15 digits
        (b"3530111333300000", True),  # JCB
        (b"6212345678901265", True),  # UnionPay
        (b"6011111111111117", False),  # Discover: not a listed IIN
        (b"4111111111111112", False),  # Luhn fails
        (b"41111111111111", False),  # 14 digits
        (b"41111111111111111111", False),  # 20 digits
    ],
)
def test_bank_card(digits: bytes, ok: bool) -> None:
    assert V.is_bank_card(digits) is ok


def test_luhn_matches_reference() -> None:
    def reference(s: str) -> bool:
        total = 0
        for i, c in enumerate(reversed(s)):
            d = int(c) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    rng = random.Random(5)
    for _ in range(3000):
        s = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19)))
        assert V.luhn_ok(s.encode()) is reference(s)
    assert not V.luhn_ok(b"4111 1111")


def test_uscc() -> None:
    assert V.is_uscc(b"91350100M000100Y43")
    assert not V.is_uscc(b"91350100M000100Y44")
    assert not V.is_uscc(b"91350100M0001O0Y43")  # O is not in the alphabet
    body = b"91440300MA5ABCDE1"
    assert V.is_uscc(body + bytes([V.uscc_check_char(body)]))


def test_mod97_iban() -> None:
    assert V.mod97_ok(b"GB82WEST12345698765432")
    assert not V.mod97_ok(b"GB82WEST12345698765433")


def test_registry() -> None:
    assert V.get_validator("luhn")(b"4111-1111-1111-1111")
    assert V.get_validator("hkid")(b"A123456(3)")
    with pytest.raises(KeyError, match="unknown validator 'nope'"):
        V.get_validator("nope")
