"""Encrypted content: binary formats whose text no reader can see (SPEC §3.1).

``openssl enc`` (``Salted__``), binary age v1 and binary OpenPGP messages are
registered as formats whose reader refuses them at once, whatever their size:
"<layer>: encrypted content". They are recognised by their first bytes
only, and outrank every other format (:data:`ENCRYPTED_PRIORITY`).

PGP and age ASCII armor is text: the matcher reports it wherever it starts in
a text member (``detectors.ARMOR_MARKERS``), and the rest of the member is
still scanned.
"""

from __future__ import annotations

from typing import Final

from gateway.classify.decode.binaries import refusing
from gateway.classify.formats import Format, Magic, register

#: Encrypted content is unscannable whatever else its first bytes look like:
#: above every reader's priority, so no sniffer that happens to accept the
#: same bytes can read ciphertext as its format.
ENCRYPTED_PRIORITY: Final = 100

#: OpenPGP packet tags (RFC 9580 §5): public-key and symmetric-key encrypted
#: session keys, which open every encrypted message, and the encrypted data
#: packets that follow them (SED, SEIPD, OCB/AEAD).
_PGP_PKESK, _PGP_SKESK = 1, 3
_PGP_DATA_TAGS: Final = frozenset((9, 18, 20))
#: Versions of those session-key packets (RFC 9580 §5.1, §5.3; v5 is the
#: LibrePGP variant).
_PGP_ESK_VERSIONS: Final[dict[int, frozenset[int]]] = {
    _PGP_PKESK: frozenset((3, 6)),
    _PGP_SKESK: frozenset((4, 5, 6)),
}
#: Session-key packets walked before giving up: one per recipient; 64 is more
#: than any real message carries and keeps the walk bounded.
_PGP_MAX_ESK: Final = 64


def _pgp_packet(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """The OpenPGP packet header at ``pos``: (tag, body start, body length).

    RFC 9580 §4.2: new-format headers (0xC0 | tag) with one-, two- or
    five-octet lengths, legacy headers (0x80 | tag << 2 | length type) with
    one-, two- or four-octet lengths. Partial and indeterminate lengths are
    returned as length -1 (only data packets use them).
    """
    if pos + 2 > len(data) or not data[pos] & 0x80:
        return None
    first = data[pos]
    if first & 0x40:
        tag, octet = first & 0x3F, data[pos + 1]
        if octet < 192:
            return tag, pos + 2, octet
        if octet < 224:
            if pos + 3 > len(data):
                return None
            return tag, pos + 3, ((octet - 192) << 8) + data[pos + 2] + 192
        if octet == 255:
            if pos + 6 > len(data):
                return None
            return tag, pos + 6, int.from_bytes(data[pos + 2 : pos + 6], "big")
        return tag, pos + 2, -1
    tag, length_type = (first >> 2) & 0x0F, first & 0x03
    if length_type == 3:
        return tag, pos + 1, -1
    size = (1, 2, 4)[length_type]
    if pos + 1 + size > len(data):
        return None
    return tag, pos + 1 + size, int.from_bytes(data[pos + 1 : pos + 1 + size], "big")


def _pgp_message(prefix: bytes) -> bool:
    """Whether ``prefix`` starts a binary OpenPGP encrypted message.

    One or more session-key packets of a known version, then an encrypted data
    packet (RFC 9580 §10.3, "Encrypted Message"): a walk of a few packet
    headers, specific enough that other binaries do not pass it by chance.
    """
    pos = 0
    for count in range(_PGP_MAX_ESK + 1):
        header = _pgp_packet(prefix, pos)
        if header is None:
            return False
        tag, body, length = header
        if count and tag in _PGP_DATA_TAGS:
            return True
        versions = _PGP_ESK_VERSIONS.get(tag)
        if versions is None or length < 1 or body >= len(prefix) or prefix[body] not in versions:
            return False
        pos = body + length
    return False


#: The encrypted formats: ``openssl enc`` with a salt, age v1 (C2SP age
#: spec) and OpenPGP (RFC 9580).
ENCRYPTED_FORMATS: Final = tuple(
    Format(
        name,
        media_type,
        sniff,
        stream=refusing(f"{name}: encrypted content"),
        priority=ENCRYPTED_PRIORITY,
    )
    for name, media_type, sniff in (
        ("openssl", "application/x-openssl-encrypted", Magic(b"Salted__")),
        ("age", "application/x-age-encrypted", Magic(b"age-encryption.org/v1\n")),
        ("pgp", "application/pgp-encrypted", _pgp_message),
    )
)
for _fmt in ENCRYPTED_FORMATS:
    register(_fmt)
