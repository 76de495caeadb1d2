"""The age STREAM payload layer: 64 KiB ChaCha20-Poly1305 chunks (C2SP age, "Payload").

Each chunk is sealed under the payload key (HKDF-SHA-256 of the file key with
the 16-byte payload nonce as salt, info ``payload``) with a 12-byte nonce: an
11-byte big-endian chunk counter and a flag byte, 0x01 on the final chunk.
The final chunk may be shorter than 64 KiB and is empty only when the whole
plaintext is empty. The flag and the counter are what make truncation,
reordering and splicing detectable.

Both objects are sans-I/O and hold at most one chunk between calls: the
encryptor cannot seal a full chunk until it knows whether more follows (a full
chunk may be the final one), and the decryptor holds an incomplete chunk until
the rest arrives or the input ends (only then is a short chunk known final).
The proxy's encrypted spool uses this layer directly with a per-transfer file
key and nonce.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gateway.crypto.errors import (
    ChunkAuthError,
    EmptyLastChunk,
    PayloadError,
    TrailingData,
    TruncatedPayload,
)
from gateway.crypto.header import FILE_KEY_SIZE, hkdf_sha256

#: Plaintext bytes per chunk, fixed by the spec.
CHUNK_SIZE = 64 * 1024
#: Poly1305 tag appended to every chunk (RFC 8439).
TAG_SIZE = 16
#: A full chunk on the wire.
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
#: The payload starts with a 16-byte nonce from a CSPRNG (spec: "Payload").
PAYLOAD_NONCE_SIZE = 16
#: The chunk counter is 11 bytes big-endian; past this the nonce would repeat.
MAX_CHUNKS = 1 << 88

_TRAILING = "age payload: data follows the final chunk"
_LAST = b"\x01"
_NOT_LAST = b"\x00"


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    """Derive the payload key: HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload")."""
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError(f"the file key must be {FILE_KEY_SIZE} bytes")
    if len(nonce) != PAYLOAD_NONCE_SIZE:
        raise ValueError(f"the payload nonce must be {PAYLOAD_NONCE_SIZE} bytes")
    return hkdf_sha256(file_key, nonce, b"payload")


def _chunk_nonce(counter: int, flag: bytes) -> bytes:
    if counter >= MAX_CHUNKS:
        raise PayloadError("age payload exceeds the STREAM chunk counter")
    return counter.to_bytes(11, "big") + flag


def chunk_nonce(counter: int, *, last: bool) -> bytes:
    """The 12-byte nonce of chunk ``counter``: its 11-byte big-endian counter and the flag byte.

    For readers that open chunks out of order (the spool's random-access view,
    :mod:`gateway.server.spool_view`); the sequential classes below use the same rule.
    """
    return _chunk_nonce(counter, _LAST if last else _NOT_LAST)


class StreamEncryptor:
    """Seal plaintext into STREAM chunks; the payload nonce itself is not emitted.

    Args:
        file_key: the 16-byte file key.
        nonce: the 16-byte payload nonce (fresh per file).
    """

    __slots__ = ("_aead", "_buf", "_counter", "_finished")

    def __init__(self, file_key: bytes, nonce: bytes) -> None:
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._buf = bytearray()
        self._counter = 0
        self._finished = False

    def update(self, data: bytes) -> bytes:
        """Take plaintext; return the chunks now known not to be final."""
        if self._finished:
            raise RuntimeError("StreamEncryptor already finished")
        buf = self._buf
        if len(buf) + len(data) <= CHUNK_SIZE:
            buf += data
            return b""
        out = []
        pos = 0
        with memoryview(data) as view:
            if buf:
                # Complete the held chunk; more data follows it, so it is not final.
                pos = CHUNK_SIZE - len(buf)
                buf += view[:pos]
                out.append(self._seal(buf))
                buf.clear()
            # Seal straight from the caller's buffer: no copy of the plaintext.
            while len(view) - pos > CHUNK_SIZE:
                out.append(self._seal(view[pos : pos + CHUNK_SIZE]))
                pos += CHUNK_SIZE
            buf += view[pos:]
        return b"".join(out)

    def _seal(self, chunk: bytes | bytearray | memoryview) -> bytes:
        sealed = self._aead.encrypt(_chunk_nonce(self._counter, _NOT_LAST), chunk, None)
        self._counter += 1
        return sealed

    def finish(self) -> bytes:
        """Seal and return the final chunk (empty only if all plaintext was empty)."""
        if self._finished:
            raise RuntimeError("StreamEncryptor already finished")
        self._finished = True
        final = self._aead.encrypt(_chunk_nonce(self._counter, _LAST), bytes(self._buf), None)
        self._buf = bytearray()
        return final


class StreamDecryptor:
    """Open STREAM chunks, releasing plaintext only for verified chunks.

    A full-size chunk is opened as soon as it is complete: first as a
    non-final chunk, then (if that fails) as a full-size final chunk, as the
    reference implementation does; a shorter tail is held until more bytes or
    :meth:`finish` show whether it is the final chunk. When a failure follows
    chunks that verified in the same :meth:`feed`, that call returns their
    plaintext and the next call raises, so the caller always receives exactly
    the plaintext that authenticated before the failure (the test kit's
    ``payload`` hash) and never a byte that did not.

    Args:
        file_key: the 16-byte file key.
        nonce: the 16-byte payload nonce read from the file.
    """

    __slots__ = (
        "_aead",
        "_buf",
        "_counter",
        "_error",
        "_failed",
        "_final_seen",
        "_finished",
        "plaintext_bytes",
    )

    def __init__(self, file_key: bytes, nonce: bytes) -> None:
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._buf = bytearray()
        self._counter = 0
        self._error: PayloadError | None = None
        self._failed = False
        self._final_seen = False
        self._finished = False
        #: Plaintext bytes released so far.
        self.plaintext_bytes = 0

    @property
    def chunks(self) -> int:
        """Chunks verified and released so far."""
        return self._counter

    def feed(self, data: bytes) -> bytes:
        """Take ciphertext; return the plaintext of every chunk verified so far.

        Raises:
            ChunkAuthError: a chunk is altered or reordered.
            TrailingData: bytes follow a valid final chunk.
        """
        self._check_usable()
        if self._final_seen:
            if data:
                self._failed = True
                raise TrailingData(_TRAILING)
            return b""
        buf = self._buf
        if len(buf) + len(data) < ENCRYPTED_CHUNK_SIZE:
            buf += data
            return b""
        out: list[bytes] = []
        pos = 0
        final = False
        try:
            with memoryview(data) as view:
                if buf:
                    # Complete the held partial chunk from the new bytes.
                    pos = ENCRYPTED_CHUNK_SIZE - len(buf)
                    buf += view[:pos]
                    final = self._open_full(buf, out)
                    buf.clear()
                # Open straight from the caller's buffer: no copy of the ciphertext.
                while not final and len(view) - pos >= ENCRYPTED_CHUNK_SIZE:
                    final = self._open_full(view[pos : pos + ENCRYPTED_CHUNK_SIZE], out)
                    pos += ENCRYPTED_CHUNK_SIZE
                if final and len(view) > pos:
                    raise TrailingData(_TRAILING)
                buf += view[pos:]
        except PayloadError as exc:
            self._buf = bytearray()
            if not out:
                self._failed = True
                raise
            # Release what verified in this call; the error surfaces on the next call.
            self._error = exc
        plaintext = b"".join(out)
        self.plaintext_bytes += len(plaintext)
        return plaintext

    def finish(self) -> bytes:
        """Verify and return the final chunk, if not already seen.

        Raises:
            TruncatedPayload: the stream ends without a final chunk.
            ChunkAuthError: the last chunk does not authenticate.
            EmptyLastChunk: an empty final chunk after non-empty chunks.
        """
        self._check_usable()
        self._finished = True
        if self._final_seen:
            return b""
        rest = bytes(self._buf)
        self._buf = bytearray()
        try:
            plaintext = self._open_short_final(rest)
        except PayloadError:
            self._failed = True
            raise
        self.plaintext_bytes += len(plaintext)
        return plaintext

    def _check_usable(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._failed = True
            raise error
        if self._failed:
            raise PayloadError("age payload already failed verification")
        if self._finished:
            raise RuntimeError("StreamDecryptor already finished")

    def _open_full(self, chunk: bytes | bytearray | memoryview, out: list[bytes]) -> bool:
        """Open a full-size chunk into ``out``; return whether it was the final one."""
        final = False
        try:
            plaintext = self._aead.decrypt(_chunk_nonce(self._counter, _NOT_LAST), chunk, None)
        except InvalidTag:
            try:
                plaintext = self._aead.decrypt(_chunk_nonce(self._counter, _LAST), chunk, None)
            except InvalidTag:
                raise ChunkAuthError(
                    f"age payload: chunk {self._counter} fails authentication "
                    "(altered, reordered or from another file)"
                ) from None
            final = self._final_seen = True
        self._counter += 1
        out.append(plaintext)
        return final

    def _open_short_final(self, chunk: bytes) -> bytes:
        if not chunk:
            if self._counter == 0:
                raise TruncatedPayload("age payload is empty: it has no chunks")
            raise TruncatedPayload(
                f"age payload truncated: no final chunk after chunk {self._counter - 1}"
            )
        if len(chunk) < TAG_SIZE:
            raise TruncatedPayload(f"age payload truncated inside chunk {self._counter}")
        if len(chunk) == TAG_SIZE and self._counter > 0:
            raise EmptyLastChunk("age payload: the final chunk is empty after non-empty chunks")
        try:
            plaintext = self._aead.decrypt(_chunk_nonce(self._counter, _LAST), chunk, None)
        except InvalidTag:
            raise ChunkAuthError(
                f"age payload: final chunk {self._counter} fails authentication "
                "(altered, truncated or reordered)"
            ) from None
        self._counter += 1
        return plaintext
