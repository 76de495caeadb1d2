"""age X25519 keys, key files, and the gateway's Ed25519 signing key.

Recipients are ``age1…`` (Bech32, HRP ``age``, lowercase) and identities
``AGE-SECRET-KEY-1…`` (HRP ``AGE-SECRET-KEY-``, uppercase), exactly as
``age-keygen`` writes them (C2SP age, "The X25519 recipient type"), so keys
move freely between the gateway and age, rage or pyrage. Identity files are
the age format too: one key per line, ``#`` comments and blank lines ignored.

Private key files are created with mode 0600 and never overwritten silently.
No error message here ever contains key material: a bad line is named by its
file and line number only.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gateway.crypto import bech32
from gateway.crypto.errors import AgeHeaderError, KeyFormatError
from gateway.crypto.header import FILE_KEY_SIZE, Stanza, b64decode, b64encode, hkdf_sha256
from gateway.errors import ConfigError

#: Bech32 HRP of X25519 recipients (spec).
RECIPIENT_HRP = "age"
#: Bech32 HRP of X25519 identities (spec); identities are written uppercase.
IDENTITY_HRP = "AGE-SECRET-KEY-"
#: First argument of an X25519 recipient stanza.
X25519_STANZA_TYPE = "X25519"
#: HKDF info for the X25519 wrap key (spec).
X25519_INFO = b"age-encryption.org/v1/X25519"
#: X25519 scalars, points and shared secrets are 32 bytes (RFC 7748).
X25519_KEY_SIZE = 32
#: A wrapped file key: 16 bytes plus the 16-byte Poly1305 tag. The spec demands
#: this length check before decrypting (partitioning-oracle mitigation).
WRAPPED_KEY_SIZE = FILE_KEY_SIZE + 16
#: Key files are a few lines; refuse anything bigger than this before reading
#: it (a recipients file for a route lists a handful of keys, 1 MiB is ample).
MAX_KEY_FILE_SIZE = 1 << 20
#: Owner read/write only, like age-keygen, ssh-keygen and the TLS keys.
PRIVATE_FILE_MODE = 0o600

_ZERO_NONCE = bytes(12)


def _decode_key(text: str, hrp: str, kind: str, expected: str) -> bytes:
    """The 32 key bytes of a bech32 age key string; the message never repeats the input."""
    try:
        found, data = bech32.decode(text.strip())
    except bech32.Bech32Error as exc:
        raise KeyFormatError(f"invalid age {kind}: {exc}") from None
    if found != hrp:
        raise KeyFormatError(f"invalid age {kind}: expected {expected}")
    if len(data) != X25519_KEY_SIZE:
        raise KeyFormatError(f"invalid age {kind}: wrong key length")
    return data


class Recipient(Protocol):
    """Anything that can wrap a file key into a stanza (age's ``Recipient``)."""

    def wrap(self, file_key: bytes) -> Stanza:
        """Return a stanza from which the matching identity recovers ``file_key``."""
        ...


class Identity(Protocol):
    """Anything that can try to unwrap a stanza (age's ``Identity``)."""

    def unwrap(self, stanza: Stanza) -> bytes | None:
        """Return the file key, or ``None`` if the stanza is not for this identity."""
        ...


@dataclass(frozen=True, slots=True)
class X25519Recipient:
    """An age X25519 recipient (public key).

    Attributes:
        public_key: the 32-byte X25519 public key.
    """

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != X25519_KEY_SIZE:
            raise KeyFormatError("an X25519 public key is 32 bytes")

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        """Parse an ``age1…`` recipient string.

        Raises:
            KeyFormatError: not a valid lowercase ``age1…`` X25519 recipient.
        """
        return cls(_decode_key(text, RECIPIENT_HRP, "recipient", "a lowercase age1… X25519 key"))

    def encode(self) -> str:
        """The ``age1…`` string."""
        return bech32.encode(RECIPIENT_HRP, self.public_key)

    def __str__(self) -> str:
        return self.encode()

    def fingerprint(self) -> str:
        """Hex SHA-256 of the 32-byte public key: what audit records name."""
        return sha256(self.public_key).hexdigest()

    def wrap(self, file_key: bytes) -> Stanza:
        """Wrap ``file_key`` for this recipient under a fresh ephemeral key (spec)."""
        if len(file_key) != FILE_KEY_SIZE:
            raise ValueError(f"the file key must be {FILE_KEY_SIZE} bytes")
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public_key))
        wrap_key = hkdf_sha256(shared, share + self.public_key, X25519_INFO)
        body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        return Stanza((X25519_STANZA_TYPE, b64encode(share)), body)


class X25519Identity:
    """An age X25519 identity (private key); its repr never shows the secret.

    Args:
        secret: the 32 secret bytes as encoded in ``AGE-SECRET-KEY-1…``.
    """

    __slots__ = ("_private", "_secret", "recipient")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != X25519_KEY_SIZE:
            raise KeyFormatError("an X25519 identity is 32 bytes")
        self._secret = bytes(secret)
        self._private = X25519PrivateKey.from_private_bytes(self._secret)
        #: The matching public recipient.
        self.recipient = X25519Recipient(self._private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> X25519Identity:
        """A new identity from the operating system's CSPRNG."""
        return cls(os.urandom(X25519_KEY_SIZE))

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        """Parse an ``AGE-SECRET-KEY-1…`` string (uppercase, as age writes it).

        Raises:
            KeyFormatError: not a valid X25519 identity (the message omits the input).
        """
        return cls(_decode_key(text, IDENTITY_HRP, "identity", "an uppercase AGE-SECRET-KEY-1…"))

    def encode(self) -> str:
        """The ``AGE-SECRET-KEY-1…`` string (secret: write it only to a 0600 file)."""
        return bech32.encode(IDENTITY_HRP, self._secret)

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient.encode()!r})"

    def unwrap(self, stanza: Stanza) -> bytes | None:
        """Recover the file key from an X25519 stanza addressed to this identity.

        Returns:
            The 16-byte file key, or ``None`` for a stanza of another type or
            for another recipient.

        Raises:
            AgeHeaderError: a malformed X25519 stanza (wrong argument count,
                non-canonical or wrong-size share or body, low-order share).
        """
        if stanza.args[0] != X25519_STANZA_TYPE:
            return None
        if len(stanza.args) != 2:
            raise AgeHeaderError("age header: an X25519 stanza must have exactly one share")
        share = b64decode(stanza.args[1], what="an X25519 share")
        if len(share) != X25519_KEY_SIZE:
            raise AgeHeaderError("age header: an X25519 share must be 32 bytes")
        if len(stanza.body) != WRAPPED_KEY_SIZE:
            raise AgeHeaderError("age header: an X25519 stanza body must be 32 bytes")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            # OpenSSL refuses an all-zero shared secret (low-order share); so does the spec.
            raise AgeHeaderError("age header: an X25519 share is a low-order point") from None
        if shared == bytes(X25519_KEY_SIZE):
            raise AgeHeaderError("age header: an X25519 share is a low-order point")
        wrap_key = hkdf_sha256(shared, share + self.recipient.public_key, X25519_INFO)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
        except InvalidTag:
            return None


def identity_file_text(identity: X25519Identity, *, now: dt.datetime | None = None) -> str:
    """The identity file as age-keygen writes it: two comment lines, then the key."""
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    return (
        f"# created: {created}\n# public key: {identity.recipient.encode()}\n{identity.encode()}\n"
    )


def parse_identities(text: str, source: str) -> list[X25519Identity]:
    """Parse an age identity file's text; ``source`` names it in errors.

    Raises:
        KeyFormatError: ``source:line`` of the first bad line, or no identity.
    """
    identities: list[X25519Identity] = []
    for lineno, line in _key_lines(text):
        try:
            identities.append(X25519Identity.parse(line))
        except KeyFormatError:
            raise KeyFormatError(
                f"{source}:{lineno}: not an age X25519 identity (AGE-SECRET-KEY-1…)"
            ) from None
    if not identities:
        raise KeyFormatError(f"{source}: no age identity in the file")
    return identities


def parse_recipients(text: str, source: str) -> list[X25519Recipient]:
    """Parse an age recipients file's text (``age1…`` per line); ``source`` names it.

    Raises:
        KeyFormatError: ``source:line`` of the first bad line, or no recipient.
    """
    recipients: list[X25519Recipient] = []
    for lineno, line in _key_lines(text):
        try:
            recipients.append(X25519Recipient.parse(line))
        except KeyFormatError as exc:
            raise KeyFormatError(f"{source}:{lineno}: {exc.detail}") from None
    if not recipients:
        raise KeyFormatError(f"{source}: no age recipient in the file")
    return recipients


def load_identities(path: Path | str) -> list[X25519Identity]:
    """Read an age identity file.

    Raises:
        ConfigError: the file cannot be read or is not an identity file.
    """
    return parse_identities(_read_key_file(Path(path)), str(path))


def load_recipients(path: Path | str) -> list[X25519Recipient]:
    """Read an age recipients file.

    Raises:
        ConfigError: the file cannot be read or is not a recipients file.
    """
    return parse_recipients(_read_key_file(Path(path)), str(path))


def read_private_file(path: Path | str, *, max_bytes: int, what: str) -> bytes:
    """Read a secret (a key, a password), refusing a file group or others may read.

    Args:
        path: the file.
        max_bytes: anything larger is not such a file (and is not read).
        what: what the file is, for the messages ("key file").

    Raises:
        ConfigError: missing, unreadable, not a regular file, too large, or
            readable by group or others.
    """
    target = Path(path)
    try:
        info = target.stat()
        # A FIFO or a device would block the read or never end; a directory
        # is a mistake. Symbolic links are followed (Kubernetes mounts secrets so).
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{target}: not a {what} (not a regular file)")
        if info.st_size > max_bytes:
            raise ConfigError(f"{target}: not a {what} (over {max_bytes} bytes)")
        data = target.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read {what}: {exc.strerror}") from exc
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{target}: {what} is accessible by group or others (mode {mode:04o}); run chmod 600"
        )
    return data


def write_private_file(path: Path | str, data: bytes, *, overwrite: bool = False) -> None:
    """Write a secret to ``path`` with mode 0600, atomically.

    The data goes to a temporary file in the same directory (created 0600, so
    the secret is never readable by others, not even briefly) and is renamed
    into place; without ``overwrite`` an existing file is refused.

    Raises:
        ConfigError: the file exists (and ``overwrite`` is false) or cannot be written.
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise ConfigError(f"{target}: already exists; refusing to overwrite it")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp_name, target)
        else:
            # link() fails if the target appeared meanwhile: no silent overwrite.
            os.link(tmp_name, target)
            os.unlink(tmp_name)
    except FileExistsError:
        os.unlink(tmp_name)
        raise ConfigError(f"{target}: already exists; refusing to overwrite it") from None
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ConfigError(f"{target}: cannot write: {exc.strerror}") from None


def load_or_create_ed25519(path: Path | str) -> Ed25519PrivateKey:
    """Load the Ed25519 private key at ``path`` (PKCS#8 PEM), creating it if absent.

    This is the gateway's audit signing key (checkpoints are C2SP signed notes,
    SPEC §7). A new key is written with mode 0600; parent directories are
    created with mode 0700.

    Raises:
        ConfigError: the file exists but is not an unencrypted Ed25519 PEM key,
            or cannot be read or written.
    """
    target = Path(path)
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"{target.parent}: cannot create: {exc.strerror}") from None
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_private_file(target, pem)
            return key
        except ConfigError:
            if not target.exists():
                raise
            # Another process created it first: use theirs.
    try:
        loaded = serialization.load_pem_private_key(target.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{target}: not an unencrypted PEM private key") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{target}: not an Ed25519 private key")
    return loaded


def _key_lines(text: str) -> list[tuple[int, str]]:
    lines = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((lineno, line))
    return lines


def read_small_file(
    path: Path, limit: int, what: str, too_large: type[ConfigError] = ConfigError
) -> bytes:
    """Read a key or certificate file that must not exceed ``limit`` bytes.

    Reads at most ``limit + 1`` bytes, so a wrong path (a disk image, a log)
    costs nothing and is refused with a message naming the file.

    Raises:
        ConfigError: unreadable; ``too_large`` when over ``limit`` bytes.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise too_large(f"{path}: larger than {limit} bytes; not {what}")
    return data


def _read_key_file(path: Path) -> str:
    data = read_small_file(path, MAX_KEY_FILE_SIZE, "a key file", KeyFormatError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not a text key file (invalid UTF-8)") from None
