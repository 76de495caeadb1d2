"""Bech32 (BIP-173) encoding for age keys, written from the BIP.

age encodes X25519 recipients (``age1…``) and identities
(``AGE-SECRET-KEY-1…``) as Bech32 with the original BIP-173 checksum constant
(not Bech32m) and, per the C2SP age spec, without BIP-173's 90-character
length limit. A string is all lowercase or all uppercase; the checksum is
always computed over the lowercase form.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The BIP-173 data-part alphabet: 32 characters, index = 5-bit value.
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
#: BIP-173 checksum generator coefficients (the BCH code of the spec).
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
#: Bech32 (not Bech32m) XORs the polymod with 1; age uses Bech32.
_BECH32_CONST = 1
#: Six 5-bit checksum characters end every Bech32 string (BIP-173).
CHECKSUM_LENGTH = 6
#: BIP-173: the human-readable part is 1 to 83 characters in the range 33-126.
MAX_HRP_LENGTH = 83
#: Bound on the whole string: age drops BIP-173's 90-character limit, but a
#: parser still needs one. The longest age key encoding (an ML-KEM-768 hybrid
#: tagged recipient, 1249 bytes) is about 2,010 characters; 8 KiB is ample.
MAX_LENGTH = 8192


class Bech32Error(ValueError):
    """The string is not valid Bech32; the message never echoes the input."""


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, *, pad: bool) -> bytes:
    """Regroup bits (BIP-173 reference ``convertbits``), strict on padding."""
    acc = 0
    bits = 0
    out = bytearray()
    max_value = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or (acc << (to_bits - bits)) & max_value:
        # BIP-173: an incomplete final group must be at most 4 bits, all zero.
        raise Bech32Error("invalid padding in the data part")
    return bytes(out)


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under the human-readable part ``hrp``.

    The result has the case of ``hrp``: age identities use an uppercase HRP
    and so come out all uppercase, recipients all lowercase.

    Raises:
        Bech32Error: the HRP is empty, too long, of mixed case or has
            characters outside 33-126.
    """
    _check_hrp(hrp)
    upper = hrp.isupper()
    lower_hrp = hrp.lower()
    values = list(_convert_bits(data, 8, 5, pad=True))
    polymod = _polymod([*_hrp_expand(lower_hrp), *values, 0, 0, 0, 0, 0, 0]) ^ _BECH32_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(CHECKSUM_LENGTH)]
    text = lower_hrp + "1" + "".join(CHARSET[v] for v in values + checksum)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string into ``(hrp, data)``; ``hrp`` keeps the input's case.

    Raises:
        Bech32Error: mixed case, bad characters, missing separator, wrong
            checksum or non-zero padding.
    """
    if len(text) > MAX_LENGTH:
        raise Bech32Error(f"longer than {MAX_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("character outside the printable ASCII range")
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed upper and lower case")
    pos = text.rfind("1")
    if pos < 1:
        raise Bech32Error("missing human-readable part or separator")
    if len(text) - pos - 1 < CHECKSUM_LENGTH:
        raise Bech32Error("too short for a checksum")
    hrp = text[:pos]
    _check_hrp(hrp)
    lower = text.lower()
    try:
        values = [_CHARSET_INDEX[c] for c in lower[pos + 1 :]]
    except KeyError:
        raise Bech32Error("character outside the Bech32 alphabet") from None
    if _polymod([*_hrp_expand(lower[:pos]), *values]) != _BECH32_CONST:
        raise Bech32Error("checksum mismatch")
    return hrp, _convert_bits(values[:-CHECKSUM_LENGTH], 5, 8, pad=False)


def _check_hrp(hrp: str) -> None:
    if not 1 <= len(hrp) <= MAX_HRP_LENGTH:
        raise Bech32Error(f"human-readable part must be 1 to {MAX_HRP_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise Bech32Error("human-readable part has a character outside 33-126")
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise Bech32Error("mixed upper and lower case")
