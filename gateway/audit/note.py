"""C2SP signed notes with Ed25519, and C2SP tlog-checkpoints (no I/O).

A signed note (https://c2sp.org/signed-note) is UTF-8 text ending in a
newline, a blank line, then one or more signature lines
``— <key name> <base64(key id || signature)>``. The Ed25519 signature covers
the text including its final newline. The key id is the first 4 bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)``; a verifier key is shared
as ``<name>+<hex key id>+<base64(0x01 || public key)>``.

A checkpoint (https://c2sp.org/tlog-checkpoint) is the note text
``<origin>\\n<tree size>\\n<base64 root hash>\\n`` plus optional extension
lines. The twin gateway witnesses a checkpoint by adding its own signature
line to the same note (:func:`cosign_note`); :func:`open_note` verifies a
note against several keys and reports which of them signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.merkle import HASH_SIZE, MAX_TREE_SIZE

#: C2SP signed-note signature type byte for Ed25519.
ED25519_TYPE = b"\x01"
#: Key id length (C2SP signed-note: a uint32, big-endian).
KEY_ID_SIZE = 4
#: Ed25519 signatures are 64 bytes (RFC 8032).
ED25519_SIGNATURE_SIZE = 64
#: Go's sumdb/note rejects notes with more than 100 signatures; so do we.
MAX_SIGNATURES = 100
#: Checkpoints are a few hundred bytes; 1 MiB bounds parsing of hostile input.
MAX_NOTE_BYTES = 1024 * 1024
#: Signature line prefix: U+2014 EM DASH and a space.
SIGNATURE_PREFIX = "\u2014 "

_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,19}")


class NoteError(ValueError):
    """A note or checkpoint is malformed or its signatures do not verify."""


def _check_key_name(name: str) -> str:
    # C2SP: non-empty, no Unicode spaces, no plus signs.
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteError(f"invalid key name {name!r}: non-empty, no spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """The C2SP key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public_key).digest()
    return digest[:KEY_ID_SIZE]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """One Ed25519 public key under a name, as a note verifier.

    Attributes:
        name: the key name (for checkpoints: usually the log origin).
        key_id: the 4-byte C2SP key id.
        public_key: the raw 32-byte Ed25519 public key.
    """

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        """A verifier for a raw 32-byte Ed25519 public key."""
        Ed25519PublicKey.from_public_bytes(public_key)
        return cls(_check_key_name(name), key_id(name, public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string ``<name>+<hex key id>+<base64(0x01 || key)>``.

        Raises:
            NoteError: malformed, not Ed25519, or the key id does not match.
        """
        parts = vkey.strip().split("+", 2)  # base64 may itself contain '+'
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_key_name(name)
        raw = _b64decode(b64, "verifier key")
        if len(raw) != 1 + 32 or raw[:1] != ED25519_TYPE:
            raise NoteError("verifier key is not an Ed25519 key (type 0x01, 32 bytes)")
        public_key = raw[1:]
        if hex_id.lower() != key_id(name, public_key).hex() or len(hex_id) != 2 * KEY_ID_SIZE:
            raise NoteError("verifier key id does not match its name and key")
        return cls.from_public_key(name, public_key)

    def __str__(self) -> str:
        encoded = base64.b64encode(ED25519_TYPE + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """An Ed25519 private key under a name, signing C2SP notes.

    Args:
        name: the key name that appears on signature lines.
        private_key: the Ed25519 key (see :mod:`gateway.audit.keys` for files).
    """

    __slots__ = ("_key", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = _check_key_name(name)
        self._key = private_key
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = NoteVerifier.from_public_key(name, raw)

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key id."""
        return self.verifier.key_id

    def signature_line(self, text: str) -> str:
        """The signature line (with newline) of this key over note ``text``."""
        signature = self._key.sign(text.encode("utf-8"))
        encoded = base64.b64encode(self.key_id + signature).decode("ascii")
        return f"{SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True, slots=True)
class Signature:
    """One parsed signature line of a note."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note whose signatures were checked.

    Attributes:
        text: the signed text (ends in a newline).
        signers: names of the given verifiers whose signatures verified.
        signatures: every signature line, known or not, in note order.
    """

    text: str
    signers: frozenset[str]
    signatures: tuple[Signature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n") or text.startswith("\n") or "\n\n" in text:
        raise NoteError("note text must be non-empty lines, each ending in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` with each signer, giving a complete signed note."""
    _check_text(text)
    if not signers:
        raise NoteError("a signed note needs at least one signature")
    return text + "\n" + "".join(signer.signature_line(text) for signer in signers)


def parse_note(note: str) -> tuple[str, tuple[Signature, ...]]:
    """Split a signed note into its text and signature lines (unverified).

    Raises:
        NoteError: not a syntactically valid signed note.
    """
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteError(f"note is over {MAX_NOTE_BYTES} bytes")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise NoteError("note does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    signatures: list[Signature] = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("signature line does not start with an em dash and a space")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise NoteError("signature line is not '— <name> <base64>'")
        name, encoded = fields
        _check_key_name(name)
        raw = _b64decode(encoded, "signature")
        if len(raw) <= KEY_ID_SIZE:
            raise NoteError("signature is too short")
        signatures.append(Signature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:]))
    return text, tuple(signatures)


def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
    """Verify a note against known keys, like Go's ``note.Open``.

    Signatures by unknown keys are ignored (they may be other witnesses). A
    signature by a known key that does not verify rejects the whole note.

    Raises:
        NoteError: malformed, a known key's signature is bad, or no known key
            signed the note.
    """
    text, signatures = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = text.encode("utf-8")
    signers: set[str] = set()
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if len(sig.signature) != ED25519_SIGNATURE_SIZE or not verifier.verify(
            message, sig.signature
        ):
            raise NoteError(f"signature by {sig.name} does not verify")
        signers.add(sig.name)
    if not signers:
        raise NoteError("note is not signed by any trusted key")
    return VerifiedNote(text, frozenset(signers), signatures)


def cosign_note(note: str, witness: NoteSigner) -> str:
    """Add ``witness``'s signature line to a signed note (witness co-signing).

    The caller verifies the note (and its consistency with what it witnessed
    before) first; this only appends a signature over the same text. A note
    the witness already signed is returned unchanged.
    """
    text, signatures = parse_note(note)
    if any(s.name == witness.name and s.key_id == witness.key_id for s in signatures):
        return note
    if len(signatures) >= MAX_SIGNATURES:
        raise NoteError(f"note already has {MAX_SIGNATURES} signatures")
    return note + witness.signature_line(text)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body.

    Attributes:
        origin: the log's unique identity (first line).
        size: number of records in the tree.
        root_hash: the RFC 9162 root hash of those records.
        extensions: optional extra lines (without newlines).
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        """The note text of this checkpoint."""
        if not self.origin or any(c.isspace() and c != " " for c in self.origin):
            raise NoteError("checkpoint origin must be one non-empty line")
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root_hash).decode("ascii"),
            *self.extensions,
        ]
        text = "\n".join(lines) + "\n"
        _check_text(text)
        return text

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text (already verified, or about to be).

        Raises:
            NoteError: not a checkpoint.
        """
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash line")
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL_RE.fullmatch(size_line) or int(size_line) > MAX_TREE_SIZE:
            raise NoteError("checkpoint tree size is not a decimal 64-bit integer")
        root = _b64decode(root_line, "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise NoteError("checkpoint root hash is not 32 bytes")
        return cls(origin, int(size_line), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note."""
    return sign_note(checkpoint.to_text(), [signer])


def open_checkpoint(
    note: str, verifiers: Iterable[NoteVerifier]
) -> tuple[Checkpoint, VerifiedNote]:
    """Verify a signed checkpoint note and parse its body.

    Raises:
        NoteError: bad signature or not a checkpoint.
    """
    verified = open_note(note, verifiers)
    return Checkpoint.parse(verified.text), verified
