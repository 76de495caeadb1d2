"""Check digits and date checks, run only on Hyperscan candidates.

Every function takes the candidate as ASCII ``bytes`` exactly as the pattern
matched it (no separators unless stated) and answers ``True`` or ``False``; none
raises on malformed input, because a candidate that is not what it looks like
is simply not a finding. The work is table-driven: the matcher calls these for
every candidate that survives Hyperscan, so they must stay in the microsecond
range.

Custom detectors name a validator from :data:`REGISTRY` (``validator: luhn``
in a policy's YAML).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Final

# --- Mainland Resident Identity Card (GB 11643-1999) -------------------------

#: First two digits of a GB/T 2260 address code: the 31 provincial-level
#: divisions, Taiwan (71), Hong Kong (81) and Macao (82), plus 83, which the
#: Residence Permit for Hong Kong, Macao and Taiwan Residents (2018) uses in the
#: same 18-character GB 11643 format for Taiwan residents.
PROVINCE_CODES: Final[frozenset[bytes]] = frozenset(
    c.encode()
    for c in (  # noqa: SIM905 - the GB/T 2260 codes as one readable table
        "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
        "50 51 52 53 54 61 62 63 64 65 71 81 82 83"
    ).split()
)

#: Oldest birth year accepted (SPEC §3.1: "valid birth date YYYYMMDD (1900..today)").
MIN_BIRTH_YEAR: Final = 1900

#: ISO 7064 MOD 11-2 weights for the 17 body digits (REGULATIONS.md) are
#: 2^(17-i) mod 11. Read as a base-13 numeral, the body is Σ d_i·13^(16-i), and
#: 13 ≡ 2 (mod 11), so twice that numeral is the weighted sum mod 11: one C-level
#: ``int()`` instead of 17 Python multiplications (the validators run on every
#: new candidate, SPEC §9).
_MOD11_2_BASE: Final = 13
#: Σ mod 11 = 0…10 → check character (REGULATIONS.md).
_MOD11_2_CHECK: Final = b"10X98765432"

#: China Standard Time: both parks live in UTC+8, so "today" is their today.
_CST: Final = _dt.timezone(_dt.timedelta(hours=8))


def today_cst() -> _dt.date:
    """Today's date in UTC+8, the calendar the birth-date check uses."""
    return _dt.datetime.now(_CST).date()


@lru_cache(maxsize=2)
def birth_dates(today: _dt.date) -> frozenset[bytes]:
    """Every valid ``YYYYMMDD`` from 1900-01-01 to ``today`` (about 46,000 entries).

    A set lookup is faster than parsing a date per candidate, and it encodes
    month lengths and leap years once. Cached per day.
    """
    start = _dt.date(MIN_BIRTH_YEAR, 1, 1)
    one_day = _dt.timedelta(days=1)
    out: set[bytes] = set()
    day = start
    while day <= today:
        out.add(b"%04d%02d%02d" % (day.year, day.month, day.day))
        day += one_day
    return frozenset(out)


def mod11_2_check_char(body: bytes) -> int:
    """The ISO 7064 MOD 11-2 check character (as a byte value) of 17 ASCII digits."""
    return _MOD11_2_CHECK[2 * int(body, _MOD11_2_BASE) % 11]


def resident_id_shape(value: bytes, dates: frozenset[bytes] | None = None) -> bool:
    """Everything of a Resident ID but its check character: 18 characters, the
    first 17 digits, a province code and a birth date (``dates`` as in
    :func:`is_resident_id`). One such value in 11 has the right check character
    by chance (:mod:`gateway.classify.chance`)."""
    return (
        len(value) == 18
        and value[:17].isdigit()
        and value[:2] in PROVINCE_CODES
        and value[6:14] in (dates if dates is not None else birth_dates(today_cst()))
    )


def is_resident_id(value: bytes, dates: frozenset[bytes] | None = None) -> bool:
    """True for a valid 18-character Resident ID (province, birth date, check char).

    Args:
        value: the 18 characters; the check character may be ``x`` or ``X``.
        dates: the valid birth dates (``birth_dates(today)``); the matcher
            passes the set it captured at the start of the scan so one scan
            sees one "today".
    """
    if not resident_id_shape(value, dates):
        return False
    check = value[17]
    if check == 0x78:  # "x": written lower-case by hand now and then
        check = 0x58
    return mod11_2_check_char(value[:17]) == check


# --- Hong Kong Identity Card --------------------------------------------------

#: Value of a missing first letter (REGULATIONS.md: "missing first letter = 36 (space)").
HKID_SPACE_VALUE: Final = 36


def hkid_check_char(letters: bytes, digits: bytes) -> int:
    """The HKID check character (byte value ``0``-``9`` or ``A``).

    Args:
        letters: one or two upper-case letters.
        digits: the six digits.
    """
    if len(letters) == 1:
        first, second = HKID_SPACE_VALUE, letters[0] - 55  # "A" (65) = 10
    else:
        first, second = letters[0] - 55, letters[1] - 55
    total = 9 * first + 8 * second
    weight = 7
    for c in digits:
        total += weight * (c - 48)
        weight -= 1
    r = total % 11
    if r == 0:
        return 0x30
    if r == 1:
        return 0x41
    return 0x30 + 11 - r


def is_hkid(value: bytes) -> bool:
    """True for ``A1234563`` / ``AB9876543`` style HKIDs (no brackets) with a valid check."""
    n = len(value)
    if n not in (8, 9):
        return False
    letters, digits, check = value[: n - 7], value[n - 7 : n - 1], value[n - 1]
    if not (letters.isalpha() and letters.isupper() and digits.isdigit()):
        return False
    return hkid_check_char(letters, digits) == check


# --- Payment cards -----------------------------------------------------------

#: Luhn: ``bytes.translate`` table from an ASCII digit d to the ASCII digit of
#: the digit sum of 2·d (0→0, 5→1, 9→9 …).
_LUHN_DOUBLE: Final = bytes(
    48 + (2 * (c - 48)) // 10 + (2 * (c - 48)) % 10 if 48 <= c <= 57 else c for c in range(256)
)
#: 11 ≡ 1 (mod 10): a digit string read as a base-11 numeral is congruent to its
#: digit sum mod 10, which is the Luhn total once the doubled digits are mapped.
_LUHN_BASE: Final = 11


def luhn_ok(digits: bytes) -> bool:
    """True when the ASCII digit string passes the Luhn (mod 10) check."""
    if not digits.isdigit():
        return False
    mapped = digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLE)
    return int(mapped, _LUHN_BASE) % 10 == 0


#: Shortest and longest payment card number (SPEC §3.1: "15–19 digit").
CARD_MIN_DIGITS: Final = 15
CARD_MAX_DIGITS: Final = 19


def card_iin_ok(digits: bytes) -> bool:
    """True for a known IIN prefix (SPEC §3.1).

    UnionPay 62, Visa 4, Mastercard 51–55 and 2221–2720, Amex 34/37, JCB 35.
    """
    first = digits[:1]
    if first == b"4":
        return True
    two = digits[:2]
    if two in _IIN_TWO:
        return True
    if first == b"2":
        four = int(digits[:4])
        return 2221 <= four <= 2720
    return False


_IIN_TWO: Final = frozenset((b"62", b"51", b"52", b"53", b"54", b"55", b"34", b"37", b"35"))


def bank_card_shape(digits: bytes) -> bool:
    """Everything of a card number but Luhn: 15–19 ASCII digits with a known IIN
    prefix. One such value in 10 passes Luhn by chance."""
    # Digits first: a custom detector's match may hold letters ("2x21…"),
    # which card_iin_ok would hand to int().
    return (
        CARD_MIN_DIGITS <= len(digits) <= CARD_MAX_DIGITS
        and digits.isdigit()
        and card_iin_ok(digits)
    )


def is_bank_card(digits: bytes) -> bool:
    """True for 15–19 ASCII digits with a known IIN prefix that pass Luhn."""
    return bank_card_shape(digits) and luhn_ok(digits)


# --- Unified Social Credit Code (GB 32100-2015) ------------------------------

#: The 31 code characters (GB 32100: digits and upper-case letters without I O S V Z).
USCC_ALPHABET: Final = b"0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE: Final = tuple(USCC_ALPHABET.find(bytes((c,))) for c in range(256))
#: Python's digits for the values 0-30 (``int()`` reads "U" as 30).
_NUMERAL_DIGITS: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTU"
#: ``bytes.translate`` table: a code character -> the numeral digit of its value,
#: any other byte -> "!" (which ``int()`` rejects, see :func:`is_uscc`).
_USCC_TABLE: Final = bytes(_NUMERAL_DIGITS[v] if v >= 0 else 0x21 for v in _USCC_VALUE)
#: GB 32100 weights are 3^i mod 31 for the 17 body characters. Reversed and read
#: as a base-34 numeral the body is Σ v_i·34^i, and 34 ≡ 3 (mod 31): the
#: weighted sum mod 31 in one C-level ``int()``.
_USCC_BASE: Final = 34


def uscc_shape(value: bytes) -> bool:
    """Everything of a USCC but its check character: 18 code characters, the six
    of the region code digits. One such value in 31 has the right check
    character by chance."""
    return len(value) == 18 and value[2:8].isdigit() and 0x21 not in value.translate(_USCC_TABLE)


def is_uscc(value: bytes) -> bool:
    """True for an 18-character Unified Social Credit Code with a valid check char."""
    if not uscc_shape(value):
        return False
    numeral = value.translate(_USCC_TABLE)
    total = int(numeral[16::-1], _USCC_BASE)
    return _USCC_VALUE[value[17]] == (31 - total % 31) % 31


def uscc_check_char(body: bytes) -> int:
    """The GB 32100 check character (byte value) for the first 17 characters."""
    total = int(body[:17].translate(_USCC_TABLE)[::-1], _USCC_BASE)
    return USCC_ALPHABET[(31 - total % 31) % 31]


# --- ISO 7064 MOD 97-10 (IBAN-style references) ------------------------------


def mod97_ok(value: bytes) -> bool:
    """ISO 7064 MOD 97-10 as used by IBAN: move 4 chars to the end, letters A=10…Z=35.

    Offered to custom detectors (bank account references between the parks).
    """
    text = value.replace(b" ", b"").upper()
    if len(text) < 5 or not text.isalnum():
        return False
    moved = text[4:] + text[:4]
    number = "".join(str(c - 55) if c >= 65 else chr(c) for c in moved)
    return int(number) % 97 == 1


# --- Registry for custom detectors -------------------------------------------


def _resident_id(value: bytes) -> bool:
    return is_resident_id(value)


def _hkid_any(value: bytes) -> bool:
    return is_hkid(value.replace(b"(", b"").replace(b")", b""))


def _bank_card(value: bytes) -> bool:
    return is_bank_card(value.replace(b" ", b"").replace(b"-", b""))


def _luhn(value: bytes) -> bool:
    return luhn_ok(value.replace(b" ", b"").replace(b"-", b""))


#: Validators a custom detector may name (``validator:`` in policy YAML).
REGISTRY: Final[Mapping[str, Callable[[bytes], bool]]] = MappingProxyType(
    {
        "luhn": _luhn,
        "bank_card": _bank_card,
        "cn_resident_id": _resident_id,
        "hkid": _hkid_any,
        "uscc": is_uscc,
        "mod97": mod97_ok,
    }
)


def get_validator(name: str) -> Callable[[bytes], bool]:
    """Look up a validator by name.

    Raises:
        KeyError: naming the unknown validator and the known ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown validator {name!r} (known: {known})") from None
