"""age X25519 keys, key files, private-file writing and the Ed25519 signing key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from gateway.crypto.errors import AgeHeaderError, KeyFormatError
from gateway.crypto.header import Stanza, b64encode
from gateway.crypto.keys import (
    X25519Identity,
    X25519Recipient,
    identity_file_text,
    load_identities,
    load_or_create_ed25519,
    load_recipients,
    parse_identities,
    parse_recipients,
    write_private_file,
)
from gateway.errors import ConfigError

# The example key pair of the C2SP age spec, "The X25519 recipient type".
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
FILE_KEY = bytes(range(16))


def test_spec_example_identity_gives_spec_recipient() -> None:
    identity = X25519Identity.parse(SPEC_IDENTITY)
    assert identity.recipient.encode() == SPEC_RECIPIENT
    assert identity.encode() == SPEC_IDENTITY
    assert X25519Recipient.parse(SPEC_RECIPIENT) == identity.recipient


def test_generated_identity_round_trips_and_hides_its_secret() -> None:
    identity = X25519Identity.generate()
    secret = identity.encode()
    assert secret.startswith("AGE-SECRET-KEY-1")
    assert secret.isupper()
    assert X25519Identity.parse(secret).recipient == identity.recipient
    assert secret not in repr(identity)
    assert identity.recipient.encode() in repr(identity)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (SPEC_IDENTITY.lower(), "identity"),  # age writes secret keys uppercase only
        (SPEC_RECIPIENT.upper(), "recipient"),
        (SPEC_RECIPIENT, "identity"),  # a recipient is not an identity
        (SPEC_IDENTITY, "recipient"),
        (SPEC_RECIPIENT[:-1] + ("q" if SPEC_RECIPIENT[-1] != "q" else "p"), "recipient"),
        ("age1" + "q" * 10, "recipient"),
    ],
)
def test_malformed_keys_are_refused_without_echo(text: str, kind: str) -> None:
    parse = X25519Identity.parse if kind == "identity" else X25519Recipient.parse
    with pytest.raises(KeyFormatError) as info:
        parse(text)
    assert text not in info.value.detail


def test_wrong_length_key_is_refused() -> None:
    from gateway.crypto import bech32

    with pytest.raises(KeyFormatError, match="length"):
        X25519Recipient.parse(bech32.encode("age", bytes(31)))


def test_wrap_then_unwrap_and_foreign_stanzas() -> None:
    identity = X25519Identity.generate()
    stanza = identity.recipient.wrap(FILE_KEY)
    assert stanza.args[0] == "X25519"
    assert len(stanza.body) == 32
    assert identity.unwrap(stanza) == FILE_KEY
    assert X25519Identity.generate().unwrap(stanza) is None  # another recipient's stanza
    assert identity.unwrap(Stanza(("scrypt", "abc", "10"), stanza.body)) is None
    # Every wrap uses a fresh ephemeral share.
    assert identity.recipient.wrap(FILE_KEY).args[1] != stanza.args[1]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: Stanza((*s.args, "extra"), s.body),
        lambda s: Stanza(s.args[:1], s.body),
        lambda s: Stanza((s.args[0], b64encode(bytes(31))), s.body),
        lambda s: Stanza(s.args, s.body + b"\x00"),
        lambda s: Stanza((s.args[0], b64encode(bytes(32))), s.body),  # all-zero (low-order) share
    ],
)
def test_malformed_x25519_stanza_is_a_header_error(mutate) -> None:  # type: ignore[no-untyped-def]
    identity = X25519Identity.generate()
    with pytest.raises(AgeHeaderError):
        identity.unwrap(mutate(identity.recipient.wrap(FILE_KEY)))


def test_fingerprint_is_sha256_of_public_key() -> None:
    import hashlib

    recipient = X25519Recipient.parse(SPEC_RECIPIENT)
    assert recipient.fingerprint() == hashlib.sha256(recipient.public_key).hexdigest()


def test_identity_file_text_parses_back_and_names_the_recipient() -> None:
    identity = X25519Identity.generate()
    text = identity_file_text(identity)
    assert f"# public key: {identity.recipient.encode()}" in text
    (parsed,) = parse_identities(text, "id.txt")
    assert parsed.recipient == identity.recipient


def test_identity_file_errors_name_file_and_line_but_not_the_key() -> None:
    good = X25519Identity.generate().encode()
    bad = good[:-1] + ("Q" if good[-1] != "Q" else "P")
    with pytest.raises(KeyFormatError) as info:
        parse_identities(f"# comment\n\n{good}\n{bad}\n", "keys/id.txt")
    assert info.value.detail.startswith("keys/id.txt:4:")
    assert bad not in info.value.detail
    assert good not in info.value.detail
    with pytest.raises(KeyFormatError, match="no age identity"):
        parse_identities("# only a comment\n", "empty.txt")


def test_recipients_file_and_loading(tmp_path: Path) -> None:
    a, b = X25519Identity.generate(), X25519Identity.generate()
    path = tmp_path / "recipients.txt"
    path.write_text(f"# team\n{a.recipient}\n  {b.recipient}  \n")
    assert load_recipients(path) == [a.recipient, b.recipient]
    with pytest.raises(KeyFormatError, match=r"r.txt:2:"):
        parse_recipients(f"{a.recipient}\nnot-a-key\n", "r.txt")
    with pytest.raises(ConfigError, match="cannot read"):
        load_identities(tmp_path / "missing.txt")
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KeyFormatError, match="UTF-8"):
        load_identities(binary)


def test_write_private_file_is_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private_file(path, b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_private_file(path, b"two")
    assert path.read_bytes() == b"one"
    write_private_file(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["secret"]  # no temp files left


def test_load_or_create_ed25519(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.key"
    key = load_or_create_ed25519(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_ed25519(path)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert again.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    other = tmp_path / "ec.key"
    other.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="not an Ed25519"):
        load_or_create_ed25519(other)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        load_or_create_ed25519(garbage)
