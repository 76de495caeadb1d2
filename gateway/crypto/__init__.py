"""Encryption across the border: age v1 envelopes, keys, dev PKI and TLS contexts.

- :mod:`gateway.crypto.age`: :class:`AgeEncryptor` / :class:`AgeDecryptor`,
  sans-I/O and constant-memory, plus header helpers for the pipelined proxy.
- :mod:`gateway.crypto.stream`: the STREAM payload layer alone (the spool).
- :mod:`gateway.crypto.header`: the age header format and its MAC.
- :mod:`gateway.crypto.keys`: ``age1…`` recipients, ``AGE-SECRET-KEY-1…``
  identities, key files, the Ed25519 audit signing key.
- :mod:`gateway.crypto.certs`: the two parks' dev CAs and certificates.
- :mod:`gateway.crypto.intercept`: the interception CA, leaves minted per
  ``CONNECT`` host for ``HTTPS_PROXY`` clients.
- :mod:`gateway.crypto.tls`: ``ssl.SSLContext`` builders for (mutual) TLS.
- :mod:`gateway.crypto.errors`: why an envelope or key was refused.

See ``docs/encryption.md`` for the format choice and key handling.
"""

from __future__ import annotations

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
    EmptyLastChunk,
    HeaderMacError,
    KeyFormatError,
    NoIdentityMatch,
    PayloadError,
    TrailingData,
    TruncatedPayload,
)
from gateway.crypto.keys import X25519Identity, X25519Recipient

__all__ = [
    "AgeDecryptor",
    "AgeEncryptor",
    "AgeError",
    "AgeHeaderError",
    "ChunkAuthError",
    "EmptyLastChunk",
    "HeaderMacError",
    "KeyFormatError",
    "NoIdentityMatch",
    "PayloadError",
    "TrailingData",
    "TruncatedPayload",
    "X25519Identity",
    "X25519Recipient",
    "build_header",
    "generate_file_key",
    "unwrap_file_key",
]
