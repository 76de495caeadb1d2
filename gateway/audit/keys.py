"""Ed25519 checkpoint-signing key files and verifier keys.

The private key is a PEM PKCS#8 file created with mode 0600 (never
overwritten), written by the crypto package's key-file helpers so that every
gateway key file has one format; a key file readable by group or others is
refused when loading, as ssh does. The public half is shared as a C2SP
verifier key string, which is all a regulator needs (:class:`~gateway.audit.note.NoteVerifier`).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from gateway.audit.note import NoteError, NoteVerifier
from gateway.crypto.keys import load_or_create_ed25519, read_private_file, write_private_file
from gateway.errors import ConfigError

#: A PEM Ed25519 key is ~120 bytes; anything much larger is not a key file.
MAX_KEY_FILE_BYTES = 64 * 1024


def create_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Create a new Ed25519 key at ``path`` (mode 0600); never overwrite one.

    The file is written by :func:`gateway.crypto.keys.write_private_file`
    (atomic, 0600 from the start), the same format as
    :func:`gateway.crypto.keys.load_or_create_ed25519`.

    Raises:
        ConfigError: the file exists or cannot be written.
    """
    key = Ed25519PrivateKey.generate()
    write_private_file(
        Path(path), key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    return key


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an Ed25519 PEM PKCS#8 key, refusing files others can read.

    Raises:
        ConfigError: missing, unreadable, too open, or not an Ed25519 key.
    """
    target = Path(path)
    data = read_private_file(target, max_bytes=MAX_KEY_FILE_BYTES, what="key file")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{target}: not an unencrypted PEM PKCS#8 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{target}: not an Ed25519 key")
    return key


def load_or_create_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the key at ``path``, creating it first if the file does not exist.

    Creation is :func:`gateway.crypto.keys.load_or_create_ed25519` (one key
    file format across the gateway); loading adds the permission check.
    """
    load_or_create_ed25519(Path(path))
    return load_signing_key(path)


def load_verifier(spec: str) -> NoteVerifier:
    """A verifier key from its string form, or from a file holding that string.

    Raises:
        ConfigError: neither a valid verifier key nor a readable file with one.
    """
    text = spec.strip()
    if not Path(text).exists() and text.count("+") >= 2:
        try:
            return NoteVerifier.parse(text)
        except NoteError as exc:
            raise ConfigError(f"invalid verifier key: {exc}") from exc
    target = Path(spec)
    try:
        if target.stat().st_size > MAX_KEY_FILE_BYTES:
            raise ConfigError(f"{target}: not a verifier key file")
        content = target.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{target}: not a verifier key and not a readable key file") from exc
    try:
        return NoteVerifier.parse(content)
    except NoteError as exc:
        raise ConfigError(f"{target}: {exc}") from exc
