"""Signing key files and verifier keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gateway.audit.keys import (
    create_signing_key,
    load_or_create_signing_key,
    load_signing_key,
    load_verifier,
)
from gateway.audit.note import NoteSigner
from gateway.errors import ConfigError


def test_created_key_is_private_pem_pkcs8_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_signing_key(path)
    assert NoteSigner("n", again).verifier == NoteSigner("n", key).verifier


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    create_signing_key(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        create_signing_key(path)
    assert path.read_bytes() == before


def test_load_or_create_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = NoteSigner("n", load_or_create_signing_key(path)).verifier
    second = NoteSigner("n", load_or_create_signing_key(path)).verifier
    assert first == second


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    create_signing_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"audit.key.*chmod 600"):
        load_signing_key(path)


def test_wrong_key_types_and_garbage(tmp_path: Path) -> None:
    ec = tmp_path / "ec.key"
    ec.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    ec.chmod(0o600)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_signing_key(ec)
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    junk.chmod(0o600)
    with pytest.raises(ConfigError, match=r"junk.key: not an unencrypted PEM"):
        load_signing_key(junk)
    with pytest.raises(ConfigError, match=r"missing\.key"):
        load_signing_key(tmp_path / "missing.key")


def test_verifier_from_string_or_file(tmp_path: Path) -> None:
    s = NoteSigner("gw.example/sz", create_signing_key(tmp_path / "k"))
    vkey = str(s.verifier)
    assert load_verifier(vkey) == s.verifier
    pub = tmp_path / "audit.pub"
    pub.write_text(vkey + "\n")
    assert load_verifier(str(pub)) == s.verifier
    with pytest.raises(ConfigError):
        load_verifier(str(tmp_path / "nothing.pub"))
    with pytest.raises(ConfigError):
        load_verifier("a+b+c")
