"""Why an age envelope or a key was refused, one class per failure kind.

The classes follow the outcomes of the C2SP age test kit (``header failure``,
``no match``, ``HMAC failure``, ``payload failure``) so that callers (the
ingress, the CLI, the tests) can tell them apart. Every envelope error is the
sender's fault (HTTP 400 hint): the envelope came from the other side. The
messages name the failing part of the file, never key material or payload bytes.
"""

from __future__ import annotations

from gateway.errors import ClientError, ConfigError


class AgeError(ClientError):
    """An age file could not be decrypted."""

    slug = "invalid-envelope"
    title = "Invalid age envelope"


class AgeHeaderError(AgeError):
    """The header is malformed (spec: ``header failure``), or the payload nonce is missing."""

    slug = "invalid-envelope-header"


class NoIdentityMatch(AgeError):
    """None of the identities can unwrap any recipient stanza (spec: ``no match``)."""

    slug = "no-matching-identity"


class HeaderMacError(AgeError):
    """The header MAC does not verify: the header was altered (spec: ``HMAC failure``)."""

    slug = "envelope-header-mac"


class PayloadError(AgeError):
    """The STREAM payload is not intact (spec: ``payload failure``)."""

    slug = "invalid-envelope-payload"


class TruncatedPayload(PayloadError):
    """The payload ends before a valid final chunk."""


class ChunkAuthError(PayloadError):
    """A chunk fails authentication: altered, reordered, or a final chunk out of place."""


class TrailingData(PayloadError):
    """Bytes follow the final chunk."""


class EmptyLastChunk(PayloadError):
    """The final chunk is empty although the payload is not (forbidden by the spec)."""


class KeyFormatError(ConfigError):
    """An age recipient or identity, or a key file, is malformed."""
