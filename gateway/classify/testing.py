"""Valid identifiers for tests and benchmarks (STYLE.md: ship the helpers users test with).

Every generator returns a value that passes the classifier's validators
(check characters, province codes, Luhn), drawn from ``rng`` so that a seeded
test or benchmark is reproducible. None is a real person's identifier except
by chance, as with any random valid number.
"""

from __future__ import annotations

import random

from gateway.classify import validators as V


def resident_id(rng: random.Random) -> str:
    """A Mainland Resident Identity Card number (GB 11643 check character)."""
    province = rng.choice(sorted(V.PROVINCE_CODES)).decode()
    body = (
        f"{province}{rng.randint(0, 9999):04d}{rng.randint(1950, 2010)}"
        f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    )
    return body + chr(V.mod11_2_check_char(body.encode()))


def cn_mobile(rng: random.Random) -> str:
    """A Mainland mobile number, 11 digits (``1[3-9]`` + 9)."""
    return f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}"


def hkid(rng: random.Random) -> str:
    """A Hong Kong Identity Card number with its bracketed check digit."""
    letter = chr(rng.randint(65, 90))
    digits = f"{rng.randint(0, 999_999):06d}"
    check = chr(V.hkid_check_char(letter.encode(), digits.encode()))
    return f"{letter}{digits}({check})"


def bank_card(rng: random.Random) -> str:
    """A 16-digit payment card number passing Luhn, grouped by four."""
    body = rng.choice(("4", "62", "51", "35")) + "".join(str(rng.randint(0, 9)) for _ in range(13))
    body = body[:15]
    for check in "0123456789":
        if V.luhn_ok((body + check).encode()):
            digits = body + check
            return " ".join(digits[i : i + 4] for i in range(0, 16, 4))
    raise AssertionError("unreachable: one Luhn digit always fits")


def uscc(rng: random.Random) -> str:
    """A Unified Social Credit Code (GB 32100 check character)."""
    alphabet = V.USCC_ALPHABET.decode()
    body = "91" + f"{rng.randint(110000, 659999)}" + "".join(rng.choice(alphabet) for _ in range(9))
    return body + chr(V.uscc_check_char(body.encode()))
