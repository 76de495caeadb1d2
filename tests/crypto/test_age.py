"""Whole age files: round trips, any chunking, interop with pyrage, tampering."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import pyrage
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.crypto.age import (
    AgeDecryptor,
    AgeEncryptor,
    build_header,
    generate_file_key,
    unwrap_file_key,
)
from gateway.crypto.errors import (
    AgeError,
    AgeHeaderError,
    ChunkAuthError,
    HeaderMacError,
    NoIdentityMatch,
    TrailingData,
    TruncatedPayload,
)
from gateway.crypto.header import HeaderParser, Stanza, encode_header, parse_header
from gateway.crypto.keys import X25519Identity, X25519Recipient
from gateway.crypto.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE

MIB = 1 << 20
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * MIB + 17]
IDENTITY = X25519Identity.generate()


def header_size(data: bytes) -> int:
    header = HeaderParser().feed(data)
    assert header is not None
    return header.size


def encrypt(
    plaintext: bytes,
    recipients: Sequence[X25519Recipient] = (IDENTITY.recipient,),
    pieces: Sequence[int] = (),
) -> bytes:
    enc = AgeEncryptor(list(recipients))
    out = [enc.header()]
    pos = 0
    for size in pieces:
        out.append(enc.update(plaintext[pos : pos + size]))
        pos += size
    out.append(enc.update(plaintext[pos:]))
    out.append(enc.finish())
    return b"".join(out)


def decrypt(
    data: bytes, identities: Sequence[X25519Identity] = (IDENTITY,), piece: int | None = None
) -> tuple[bytes, AgeError | None]:
    """(plaintext released, error or None), feeding ``piece``-byte steps."""
    dec = AgeDecryptor(list(identities))
    out = []
    step = piece or max(len(data), 1)
    try:
        for pos in range(0, len(data), step):
            out.append(dec.feed(data[pos : pos + step]))
        out.append(dec.finish())
    except AgeError as exc:
        return b"".join(out), exc
    return b"".join(out), None


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size: int) -> None:
    plaintext = os.urandom(size)
    assert decrypt(encrypt(plaintext)) == (plaintext, None)


@given(
    size=st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 5),
    cuts=st.lists(st.integers(min_value=0, max_value=2 * CHUNK_SIZE), max_size=6),
    piece=st.integers(min_value=1, max_value=3 * ENCRYPTED_CHUNK_SIZE),
)
def test_round_trip_with_random_chunking(size: int, cuts: list[int], piece: int) -> None:
    plaintext = random.Random(size).randbytes(size)
    assert decrypt(encrypt(plaintext, pieces=cuts), piece=piece) == (plaintext, None)


def test_header_is_available_first_and_last_and_payload_starts_with_nonce() -> None:
    enc = AgeEncryptor([IDENTITY.recipient])
    header = enc.header()
    first = enc.update(b"x" * 10)
    assert len(first) == 16  # only the payload nonce: the chunk may still be the final one
    rest = enc.finish()
    assert enc.header() == header
    assert enc.ciphertext_bytes == len(first) + len(rest)
    # Pipelined mode: payload bytes first, header last; reassembled it is a standard file.
    assert decrypt(header + first + rest) == (b"x" * 10, None)


def test_empty_plaintext_has_one_empty_final_chunk() -> None:
    data = encrypt(b"")
    assert len(data) - header_size(data) == 16 + 16


def test_multiple_recipients_each_decrypt() -> None:
    identities = [X25519Identity.generate() for _ in range(3)]
    plaintext = os.urandom(CHUNK_SIZE + 3)
    data = encrypt(plaintext, [i.recipient for i in identities])
    for identity in identities:
        assert decrypt(data, [identity]) == (plaintext, None)
    released, error = decrypt(data, [X25519Identity.generate()])
    assert isinstance(error, NoIdentityMatch)
    assert released == b""


def test_caller_chosen_file_key_and_header_helpers() -> None:
    file_key = generate_file_key()
    enc = AgeEncryptor([IDENTITY.recipient], file_key=file_key)
    header = parse_header(enc.header())
    assert unwrap_file_key(header, [IDENTITY]) == file_key
    assert parse_header(build_header(file_key, [IDENTITY.recipient])).stanzas[0].args[0] == "X25519"
    with pytest.raises(ValueError, match="recipient"):
        build_header(file_key, [])
    with pytest.raises(ValueError, match="16 bytes"):
        build_header(b"short", [IDENTITY.recipient])


def test_scrypt_stanza_must_stand_alone() -> None:
    file_key = generate_file_key()
    stanzas = [IDENTITY.recipient.wrap(file_key), Stanza(("scrypt", "c2FsdA", "10"), bytes(32))]
    with pytest.raises(AgeHeaderError, match="scrypt"):
        unwrap_file_key(parse_header(encode_header(stanzas, file_key)), [IDENTITY])


# --- interoperability with an independent implementation (rage, via pyrage) -----------


@pytest.mark.parametrize("size", SIZES)
def test_pyrage_decrypts_what_we_encrypt(size: int) -> None:
    plaintext = os.urandom(size)
    identity = pyrage.x25519.Identity.from_str(IDENTITY.encode())
    assert pyrage.decrypt(encrypt(plaintext), [identity]) == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_what_pyrage_encrypts(size: int) -> None:
    plaintext = os.urandom(size)
    recipient = pyrage.x25519.Recipient.from_str(IDENTITY.recipient.encode())
    assert decrypt(pyrage.encrypt(plaintext, [recipient]), piece=40_000) == (plaintext, None)


def test_multiple_recipients_interop_both_ways() -> None:
    ours = [X25519Identity.generate() for _ in range(3)]
    theirs = [pyrage.x25519.Identity.from_str(i.encode()) for i in ours]
    plaintext = os.urandom(2 * CHUNK_SIZE)
    data = encrypt(plaintext, [i.recipient for i in ours])
    for identity in theirs:
        assert pyrage.decrypt(data, [identity]) == plaintext
    data = pyrage.encrypt(plaintext, [i.to_public() for i in theirs])
    for mine in ours:
        assert decrypt(data, [mine]) == (plaintext, None)


def test_keys_interoperate() -> None:
    theirs = pyrage.x25519.Identity.generate()
    mine = X25519Identity.parse(str(theirs))
    assert mine.recipient.encode() == str(theirs.to_public())


# --- tampering: every region of the file --------------------------------------------


PLAINTEXT = os.urandom(3 * CHUNK_SIZE + 100)
FILE = encrypt(PLAINTEXT)
HEADER_SIZE = header_size(FILE)


def _replace(offset: int, new: bytes) -> bytes:
    return FILE[:offset] + new + FILE[offset + len(new) :]


def _other_b64(char: int) -> bytes:
    return b"B" if char != ord("B") else b"C"


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("version", AgeHeaderError),
        ("share", (NoIdentityMatch, AgeHeaderError)),
        ("body", NoIdentityMatch),
        ("mac", HeaderMacError),
        ("nonce", ChunkAuthError),
    ],
)
def test_flip_in_header_regions(region: str, expected: type | tuple[type, ...]) -> None:
    text = FILE[:HEADER_SIZE]
    offset = {
        "version": 4,
        "share": text.index(b"X25519 ") + 8,
        "body": text.index(b"\n", text.index(b"X25519 ")) + 1,
        "mac": text.index(b"--- ") + 4,
        "nonce": HEADER_SIZE + 3,
    }[region]
    damaged = _replace(offset, _other_b64(FILE[offset]))
    released, error = decrypt(damaged)
    assert isinstance(error, expected)
    assert released == b""


@pytest.mark.parametrize("chunk", range(4))
def test_flip_in_each_chunk_releases_only_verified_plaintext(chunk: int) -> None:
    offset = HEADER_SIZE + 16 + chunk * ENCRYPTED_CHUNK_SIZE + 50
    damaged = _replace(offset, bytes([FILE[offset] ^ 0x80]))
    for piece in (None, 7_919):
        released, error = decrypt(damaged, piece=piece)
        assert isinstance(error, ChunkAuthError)
        assert released == PLAINTEXT[: chunk * CHUNK_SIZE]


@pytest.mark.parametrize("chunks", range(4))
def test_truncation_at_each_chunk_boundary(chunks: int) -> None:
    released, error = decrypt(FILE[: HEADER_SIZE + 16 + chunks * ENCRYPTED_CHUNK_SIZE])
    assert isinstance(error, TruncatedPayload)
    assert released == PLAINTEXT[: chunks * CHUNK_SIZE]


@pytest.mark.parametrize("cut", [0, 10, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 15])
def test_truncation_inside_header_or_nonce(cut: int) -> None:
    released, error = decrypt(FILE[:cut])
    assert isinstance(error, AgeHeaderError)
    assert released == b""


def test_reordered_chunks() -> None:
    start = HEADER_SIZE + 16
    first = FILE[start : start + ENCRYPTED_CHUNK_SIZE]
    second = FILE[start + ENCRYPTED_CHUNK_SIZE : start + 2 * ENCRYPTED_CHUNK_SIZE]
    swapped = FILE[:start] + second + first + FILE[start + 2 * ENCRYPTED_CHUNK_SIZE :]
    released, error = decrypt(swapped)
    assert isinstance(error, ChunkAuthError)
    assert released == b""


def test_trailing_data() -> None:
    released, error = decrypt(FILE + b"\n")
    assert isinstance(error, AgeError)
    assert PLAINTEXT.startswith(released)
    exact = encrypt(PLAINTEXT[: 2 * CHUNK_SIZE])
    released, error = decrypt(exact + b"junk")
    assert isinstance(error, TrailingData)
    assert released == PLAINTEXT[: 2 * CHUNK_SIZE]


def test_failed_decryptor_refuses_further_input() -> None:
    dec = AgeDecryptor([X25519Identity.generate()])
    with pytest.raises(NoIdentityMatch):
        dec.feed(FILE)
    with pytest.raises(AgeError, match="already failed"):
        dec.feed(b"")
    with pytest.raises(AgeError, match="already failed"):
        dec.finish()


def test_garbage_is_refused_early() -> None:
    dec = AgeDecryptor([IDENTITY])
    with pytest.raises(AgeHeaderError, match="not an age file"):
        dec.feed(b"PK\x03\x04 a zip file")
