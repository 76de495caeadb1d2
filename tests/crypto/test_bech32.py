"""Bech32 codec: BIP-173 test vectors, strictness, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.crypto import bech32

# BIP-173 "Test vectors": valid Bech32 strings (checksum level).
BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",  # exactly 90 characters
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

# BIP-173 invalid strings, and what is wrong with each.
BIP173_INVALID = [
    ("\x201nwldj5", "HRP character out of range"),
    ("\x7f1axkwrx", "HRP character out of range"),
    ("pzry9x0s0muk", "no separator character"),
    ("1pzry9x0s0muk", "empty HRP"),
    ("x1b4n0q5v", "invalid data character"),
    ("li1dgmt3", "too short checksum"),
    ("de1lg7wt\xff", "invalid character in checksum"),
    ("A1G7SGD8", "checksum calculated with uppercase form of HRP"),
    ("10a06t8", "empty HRP"),
    ("1qzzfhee", "empty HRP"),
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bip173_valid_strings_decode_and_reencode(text: str) -> None:
    hrp, data = bech32.decode(text)
    assert hrp == text[: text.rfind("1")]
    assert bech32.encode(hrp, data) == text


@pytest.mark.parametrize(("text", "why"), BIP173_INVALID)
def test_bip173_invalid_strings_are_refused(text: str, why: str) -> None:
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(text)


def test_mixed_case_is_refused() -> None:
    with pytest.raises(bech32.Bech32Error, match="mixed"):
        bech32.decode("A12uEL5L")


def test_a_flipped_character_breaks_the_checksum() -> None:
    text = bech32.encode("age", bytes(range(32)))
    flipped = text[:10] + ("q" if text[10] != "q" else "p") + text[11:]
    with pytest.raises(bech32.Bech32Error, match="checksum"):
        bech32.decode(flipped)


def test_nonzero_padding_bits_are_refused() -> None:
    # 1 byte = 8 bits -> two 5-bit groups with 2 padding bits; set them to 1.
    values = [0b00000, 0b00011]
    chk = bech32._polymod([*bech32._hrp_expand("x"), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(chk >> 5 * (5 - i)) & 31 for i in range(6)]
    text = "x1" + "".join(bech32.CHARSET[v] for v in values + checksum)
    with pytest.raises(bech32.Bech32Error, match="padding"):
        bech32.decode(text)


def test_no_90_character_limit_but_a_bound() -> None:
    long_text = bech32.encode("age", bytes(1000))
    assert len(long_text) > 90
    assert bech32.decode(long_text) == ("age", bytes(1000))
    with pytest.raises(bech32.Bech32Error, match="longer"):
        bech32.decode("a1" + "q" * bech32.MAX_LENGTH)


@given(
    hrp=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20
    ).map(str.lower),
    data=st.binary(max_size=64),
    upper=st.booleans(),
)
def test_round_trip(hrp: str, data: bytes, upper: bool) -> None:
    hrp = hrp.upper() if upper else hrp
    text = bech32.encode(hrp, data)
    assert bech32.decode(text) == (hrp, data)
    # The output takes the HRP's case (an HRP without letters gives lowercase).
    assert text == (text.upper() if hrp.isupper() else text.lower())
