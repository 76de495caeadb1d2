"""The C2SP age test kit (CCTV vectors) from ``../shared/age-testkit/``.

Each vector's outcome must match ``expect`` and the plaintext released before
any failure must hash to ``payload``. The vectors are read in place, never
copied into the repository; the module is skipped where the folder is absent
(a user's clone).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.crypto.age import AgeDecryptor
from gateway.crypto.errors import (
    AgeError,
    AgeHeaderError,
    HeaderMacError,
    NoIdentityMatch,
    PayloadError,
)
from gateway.crypto.keys import X25519Identity

TESTKIT = Path(__file__).resolve().parents[2].parent / "shared" / "age-testkit"
#: Test-kit families for features the gateway does not implement, and why.
UNSUPPORTED = {
    "scrypt": "passphrase (scrypt) recipients are not implemented: routes use X25519 keys",
    "armor": "ASCII armor is not implemented: envelopes travel as binary age files",
    "hybrid": "post-quantum hybrid recipients are not implemented (SPEC §6: X25519)",
}
KNOWN_KEYS = {
    "expect",
    "payload",
    "identity",
    "passphrase",
    "armored",
    "file key",
    "comment",
    "compressed",
}
OUTCOMES: list[tuple[type[AgeError], str]] = [
    (AgeHeaderError, "header failure"),
    (NoIdentityMatch, "no match"),
    (HeaderMacError, "HMAC failure"),
    (PayloadError, "payload failure"),
]

pytestmark = pytest.mark.skipif(
    not TESTKIT.is_dir(),
    reason=f"age test kit not present at {TESTKIT} (not shipped with the repo)",
)


@dataclass
class Vector:
    name: str
    meta: dict[str, str]
    identities: list[str]
    body: bytes


def _load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta: dict[str, str] = {}
    identities: list[str] = []
    for line in head.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        if key == "identity":
            identities.append(value)
        else:
            meta[key] = value
    if meta.get("compressed") == "zlib":
        body = zlib.decompress(body)
    return Vector(path.name, meta, identities, body)


def _names() -> list[str]:
    if not TESTKIT.is_dir():
        return []
    return sorted(p.name for p in TESTKIT.iterdir() if p.is_file() and p.name != "README.md")


def _run(vector: Vector, piece: int | None) -> tuple[str, bytes]:
    identities = [X25519Identity.parse(i) for i in vector.identities]
    # A vector without identities (e.g. "empty") fails before any key is used.
    dec = AgeDecryptor(identities or [X25519Identity.generate()])
    released: list[bytes] = []
    step = piece or max(len(vector.body), 1)
    try:
        for pos in range(0, len(vector.body), step):
            released.append(dec.feed(vector.body[pos : pos + step]))
        released.append(dec.finish())
    except AgeError as exc:
        outcome = next(name for cls, name in OUTCOMES if isinstance(exc, cls))
        return outcome, b"".join(released)
    return "success", b"".join(released)


@pytest.mark.parametrize("name", _names())
def test_vector(name: str) -> None:
    family = name.split("_", 1)[0]
    if family in UNSUPPORTED:
        pytest.skip(UNSUPPORTED[family])
    vector = _load(TESTKIT / name)
    if set(vector.meta) - KNOWN_KEYS:
        pytest.skip(f"unknown test-kit keys {sorted(set(vector.meta) - KNOWN_KEYS)}")
    # Whole, and in odd-sized pieces that straddle lines and chunk boundaries.
    for piece in (None, 1021):
        outcome, released = _run(vector, piece)
        assert outcome == vector.meta["expect"], (name, piece)
        if "payload" in vector.meta:
            assert hashlib.sha256(released).hexdigest() == vector.meta["payload"], (name, piece)


def test_the_kit_has_the_applicable_families() -> None:
    """Guard against a silently empty or renamed kit: every applicable family is there."""
    families = {n.split("_", 1)[0] for n in _names()}
    assert {"x25519", "stanza", "header", "hmac", "stream", "version", "empty"} <= families
