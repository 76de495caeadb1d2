"""The STREAM payload layer on its own: known answers, chunking, failures."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from gateway.crypto.errors import (
    ChunkAuthError,
    EmptyLastChunk,
    PayloadError,
    TrailingData,
    TruncatedPayload,
)
from gateway.crypto.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    StreamDecryptor,
    StreamEncryptor,
    payload_key,
)

FILE_KEY = b"YELLOW SUBMARINE"
NONCE = bytes(range(16))


def _key() -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=NONCE, info=b"payload").derive(FILE_KEY)


def _encrypt(plaintext: bytes, pieces: list[int] | None = None) -> bytes:
    enc = StreamEncryptor(FILE_KEY, NONCE)
    out = []
    pos = 0
    for size in pieces or []:
        out.append(enc.update(plaintext[pos : pos + size]))
        pos += size
    out.append(enc.update(plaintext[pos:]))
    out.append(enc.finish())
    return b"".join(out)


def _decrypt(ciphertext: bytes, piece: int | None = None) -> tuple[bytes, PayloadError | None]:
    """Return (plaintext released, error or None), feeding in ``piece``-byte steps."""
    dec = StreamDecryptor(FILE_KEY, NONCE)
    out = []
    step = piece or max(len(ciphertext), 1)
    try:
        for pos in range(0, len(ciphertext), step):
            out.append(dec.feed(ciphertext[pos : pos + step]))
        out.append(dec.finish())
    except PayloadError as exc:
        return b"".join(out), exc
    return b"".join(out), None


def test_known_answer_against_raw_chacha20poly1305() -> None:
    plaintext = os.urandom(CHUNK_SIZE + 10)
    aead = ChaCha20Poly1305(_key())
    expected = aead.encrypt(bytes(11) + b"\x00", plaintext[:CHUNK_SIZE], None) + aead.encrypt(
        (1).to_bytes(11, "big") + b"\x01", plaintext[CHUNK_SIZE:], None
    )
    assert payload_key(FILE_KEY, NONCE) == _key()
    assert _encrypt(plaintext) == expected


@pytest.mark.parametrize(
    ("size", "chunks", "last_len"),
    [
        (0, 1, 0),
        (1, 1, 1),
        (CHUNK_SIZE - 1, 1, CHUNK_SIZE - 1),
        (CHUNK_SIZE, 1, CHUNK_SIZE),  # a full final chunk, never an empty one after it
        (CHUNK_SIZE + 1, 2, 1),
        (3 * CHUNK_SIZE, 3, CHUNK_SIZE),
    ],
)
def test_chunk_layout(size: int, chunks: int, last_len: int) -> None:
    ciphertext = _encrypt(os.urandom(size))
    assert len(ciphertext) == (chunks - 1) * ENCRYPTED_CHUNK_SIZE + last_len + 16


def test_encryptor_emits_only_complete_chunks_and_holds_at_most_one() -> None:
    enc = StreamEncryptor(FILE_KEY, NONCE)
    assert enc.update(b"a" * CHUNK_SIZE) == b""  # might be the final chunk: held
    assert len(enc.update(b"b")) == ENCRYPTED_CHUNK_SIZE
    assert len(enc.update(b"c" * (2 * CHUNK_SIZE))) == 2 * ENCRYPTED_CHUNK_SIZE
    assert len(enc.finish()) == 1 + 16


@given(
    size=st.integers(min_value=0, max_value=4 * CHUNK_SIZE + 3),
    cuts=st.lists(st.integers(min_value=0, max_value=3 * CHUNK_SIZE), max_size=8),
    piece=st.integers(min_value=1, max_value=2 * ENCRYPTED_CHUNK_SIZE),
)
def test_any_chunking_gives_identical_ciphertext_and_plaintext(
    size: int, cuts: list[int], piece: int
) -> None:
    plaintext = random.Random(size).randbytes(size)
    reference = _encrypt(plaintext)
    assert _encrypt(plaintext, cuts) == reference
    assert _decrypt(reference, piece) == (plaintext, None)


def test_decryptor_releases_full_chunks_as_soon_as_they_verify() -> None:
    plaintext = os.urandom(2 * CHUNK_SIZE + 5)
    ciphertext = _encrypt(plaintext)
    dec = StreamDecryptor(FILE_KEY, NONCE)
    assert dec.feed(ciphertext[: ENCRYPTED_CHUNK_SIZE - 1]) == b""
    assert (
        dec.feed(ciphertext[ENCRYPTED_CHUNK_SIZE - 1 : ENCRYPTED_CHUNK_SIZE])
        == plaintext[:CHUNK_SIZE]
    )
    assert dec.chunks == 1
    rest = dec.feed(ciphertext[ENCRYPTED_CHUNK_SIZE:]) + dec.finish()
    assert rest == plaintext[CHUNK_SIZE:]
    assert dec.plaintext_bytes == len(plaintext)


def test_truncation_at_every_chunk_boundary() -> None:
    plaintext = os.urandom(3 * CHUNK_SIZE + 100)
    ciphertext = _encrypt(plaintext)
    for k in range(4):
        released, error = _decrypt(ciphertext[: k * ENCRYPTED_CHUNK_SIZE])
        assert isinstance(error, TruncatedPayload), k
        assert released == plaintext[: k * CHUNK_SIZE]


def test_truncation_inside_the_last_chunk_and_inside_a_tag() -> None:
    plaintext = os.urandom(CHUNK_SIZE + 100)
    ciphertext = _encrypt(plaintext)
    released, error = _decrypt(ciphertext[:-1])
    assert isinstance(error, ChunkAuthError)
    assert released == plaintext[:CHUNK_SIZE]
    released, error = _decrypt(ciphertext[: ENCRYPTED_CHUNK_SIZE + 5])
    assert isinstance(error, TruncatedPayload)
    assert released == plaintext[:CHUNK_SIZE]


def test_flipped_byte_in_each_chunk() -> None:
    plaintext = os.urandom(3 * CHUNK_SIZE + 100)
    ciphertext = _encrypt(plaintext)
    # (offset of the flipped byte, chunks that verify before it): body, tag, final chunk.
    cases = [(0, 0), (ENCRYPTED_CHUNK_SIZE + 7, 1), (3 * ENCRYPTED_CHUNK_SIZE - 1, 2)]
    cases.append((3 * ENCRYPTED_CHUNK_SIZE + 115, 3))
    for offset, good in cases:
        damaged = bytearray(ciphertext)
        damaged[offset] ^= 0x01
        for piece in (None, 4096):
            released, error = _decrypt(bytes(damaged), piece)
            assert isinstance(error, ChunkAuthError)
            assert released == plaintext[: good * CHUNK_SIZE]


def test_reordered_and_dropped_chunks() -> None:
    plaintext = os.urandom(3 * CHUNK_SIZE + 100)
    c = _encrypt(plaintext)
    chunks = [c[i : i + ENCRYPTED_CHUNK_SIZE] for i in range(0, len(c), ENCRYPTED_CHUNK_SIZE)]
    swapped = chunks[1] + chunks[0] + b"".join(chunks[2:])
    released, error = _decrypt(swapped)
    assert isinstance(error, ChunkAuthError)
    assert released == b""
    dropped = chunks[0] + b"".join(chunks[2:])
    released, error = _decrypt(dropped)
    assert isinstance(error, ChunkAuthError)
    assert released == plaintext[:CHUNK_SIZE]


@pytest.mark.parametrize("size", [100, CHUNK_SIZE, 2 * CHUNK_SIZE + 1])
@pytest.mark.parametrize("extra", [b"\x00", os.urandom(ENCRYPTED_CHUNK_SIZE + 3)])
def test_trailing_data_after_the_final_chunk(size: int, extra: bytes) -> None:
    plaintext = os.urandom(size)
    ciphertext = _encrypt(plaintext) + extra
    for piece in (None, 1000):
        released, error = _decrypt(ciphertext, piece)
        assert isinstance(error, (TrailingData, ChunkAuthError)), error
        if size % CHUNK_SIZE == 0:
            # A full final chunk verifies as final and is released, then the junk is refused.
            assert isinstance(error, TrailingData)
            assert released == plaintext
        else:
            assert plaintext.startswith(released)


def test_empty_final_chunk_only_for_empty_payload() -> None:
    assert _decrypt(_encrypt(b"")) == (b"", None)
    plaintext = os.urandom(CHUNK_SIZE)
    aead = ChaCha20Poly1305(_key())
    forged = aead.encrypt(bytes(12), plaintext, None) + aead.encrypt(
        (1).to_bytes(11, "big") + b"\x01", b"", None
    )
    released, error = _decrypt(forged)
    assert isinstance(error, EmptyLastChunk)
    assert released == plaintext


def test_no_chunks_at_all() -> None:
    released, error = _decrypt(b"")
    assert isinstance(error, TruncatedPayload)
    assert released == b""


def test_failed_decryptor_refuses_further_input() -> None:
    dec = StreamDecryptor(FILE_KEY, NONCE)
    with pytest.raises(ChunkAuthError):
        dec.feed(os.urandom(ENCRYPTED_CHUNK_SIZE))
    with pytest.raises(PayloadError):
        dec.feed(b"x")
    with pytest.raises(PayloadError):
        dec.finish()


def test_key_and_nonce_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="file key"):
        StreamEncryptor(b"short", NONCE)
    with pytest.raises(ValueError, match="nonce"):
        StreamDecryptor(FILE_KEY, b"short")
