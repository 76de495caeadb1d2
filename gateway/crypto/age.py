"""age v1 files, streamed: :class:`AgeEncryptor` and :class:`AgeDecryptor` (C2SP age).

An age file is a text header that wraps a random 16-byte file key for each
recipient and carries an HMAC over itself, then the binary payload: a 16-byte
nonce and STREAM chunks (:mod:`gateway.crypto.stream`). Both objects are
sans-I/O like the classifier: the caller moves the bytes, the objects hold at
most one 64 KiB chunk, so memory is constant whatever the file size.

The encryptor's header is available at any time and independent of the
payload; the proxy's pipelined mode sends the payload first and the header,
the only thing that makes it decryptable, last and only after an allow verdict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gateway.crypto.errors import AgeError, AgeHeaderError, NoIdentityMatch
from gateway.crypto.header import FILE_KEY_SIZE, Header, HeaderParser, encode_header
from gateway.crypto.keys import Identity, Recipient
from gateway.crypto.stream import PAYLOAD_NONCE_SIZE, StreamDecryptor, StreamEncryptor

#: Stanza type of the passphrase recipient, which the spec says must stand alone.
SCRYPT_STANZA_TYPE = "scrypt"


def generate_file_key() -> bytes:
    """A fresh 16-byte file key from the OS CSPRNG (never reuse one across files)."""
    return os.urandom(FILE_KEY_SIZE)


def build_header(file_key: bytes, recipients: Sequence[Recipient]) -> bytes:
    """The complete header (stanzas and MAC) wrapping ``file_key`` for ``recipients``."""
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError(f"the file key must be {FILE_KEY_SIZE} bytes")
    if not recipients:
        raise ValueError("at least one recipient is required")
    return encode_header([recipient.wrap(file_key) for recipient in recipients], file_key)


def unwrap_file_key(header: Header, identities: Sequence[Identity]) -> bytes:
    """Recover the file key with the first identity that matches, then check the MAC.

    Raises:
        AgeHeaderError: a malformed stanza, or scrypt mixed with other stanzas.
        NoIdentityMatch: no identity unwraps any stanza.
        HeaderMacError: the file key was found but the header MAC is wrong.
    """
    if len(header.stanzas) > 1 and any(s.args[0] == SCRYPT_STANZA_TYPE for s in header.stanzas):
        raise AgeHeaderError("age header: an scrypt stanza must be the only stanza")
    for stanza in header.stanzas:
        for identity in identities:
            file_key = identity.unwrap(stanza)
            if file_key is not None:
                header.verify_mac(file_key)
                return file_key
    raise NoIdentityMatch("no identity matches any recipient of this age file")


class AgeEncryptor:
    """Encrypt one age file incrementally.

    ``header()`` may be called at any time; ``update``/``finish`` return the
    payload (the first non-empty return starts with the 16-byte payload nonce).
    The complete file is ``header() + update(...) + ... + finish()``.

    Args:
        recipients: who can decrypt (at least one).
        file_key: a caller-chosen 16-byte file key (the spool keeps its own);
            fresh random when omitted. Never reuse one across files.
    """

    __slots__ = ("_header", "_nonce", "_nonce_pending", "_stream", "ciphertext_bytes")

    def __init__(self, recipients: Sequence[Recipient], *, file_key: bytes | None = None) -> None:
        key = generate_file_key() if file_key is None else bytes(file_key)
        self._header = build_header(key, recipients)
        self._nonce = os.urandom(PAYLOAD_NONCE_SIZE)
        self._stream = StreamEncryptor(key, self._nonce)
        self._nonce_pending = True
        #: Payload bytes returned so far (nonce included, header excluded).
        self.ciphertext_bytes = 0

    def header(self) -> bytes:
        """The complete header, MAC line included."""
        return self._header

    def update(self, data: bytes) -> bytes:
        """Take plaintext; return the payload bytes that are now final."""
        return self._emit(self._stream.update(data))

    def finish(self) -> bytes:
        """Return the rest of the payload, ending with the final chunk."""
        return self._emit(self._stream.finish())

    def _emit(self, out: bytes) -> bytes:
        if self._nonce_pending:
            self._nonce_pending = False
            out = self._nonce + out
        self.ciphertext_bytes += len(out)
        return out


class AgeDecryptor:
    """Decrypt one age file incrementally, releasing only verified plaintext.

    ``feed`` returns plaintext of every chunk verified so far (a full chunk is
    held until it is known not to be the final one); ``finish`` verifies the
    final chunk. After any error the object refuses further input.

    Args:
        identities: the identities to try, in order.
    """

    __slots__ = (
        "_failed",
        "_file_key",
        "_identities",
        "_nonce_buf",
        "_parser",
        "_stream",
        "header",
    )

    def __init__(self, identities: Sequence[Identity]) -> None:
        if not identities:
            raise ValueError("at least one identity is required")
        self._identities = tuple(identities)
        self._parser = HeaderParser()
        self._nonce_buf = b""
        self._file_key = b""
        self._stream: StreamDecryptor | None = None
        self._failed = False
        #: The parsed header, once complete and authenticated.
        self.header: Header | None = None

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the file; return newly verified plaintext.

        Raises:
            AgeError: the matching subclass for a header, identity, MAC or
                payload failure.
        """
        if self._failed:
            raise AgeError("age decryption already failed")
        try:
            return self._feed(data)
        except AgeError:
            self._failed = True
            raise

    def finish(self) -> bytes:
        """Signal the end of the file; return the final chunk's plaintext.

        Raises:
            AgeHeaderError: the file ends in the header or the payload nonce.
            PayloadError: truncated, altered, or an empty final chunk.
        """
        if self._failed:
            raise AgeError("age decryption already failed")
        try:
            if self.header is None:
                self._parser.finish()
            if self._stream is None:
                raise AgeHeaderError("age file ends before the payload nonce")
            return self._stream.finish()
        except AgeError:
            self._failed = True
            raise

    def _feed(self, data: bytes) -> bytes:
        if self._stream is not None:
            return self._stream.feed(data)
        if self.header is None:
            header = self._parser.feed(data)
            if header is None:
                return b""
            file_key = unwrap_file_key(header, self._identities)
            self.header = header
            self._file_key = file_key
            data = self._parser.leftover
        self._nonce_buf += data
        if len(self._nonce_buf) < PAYLOAD_NONCE_SIZE:
            return b""
        nonce, rest = self._nonce_buf[:PAYLOAD_NONCE_SIZE], self._nonce_buf[PAYLOAD_NONCE_SIZE:]
        self._nonce_buf = b""
        self._stream = StreamDecryptor(self._file_key, nonce)
        self._file_key = b""
        return self._stream.feed(rest)
