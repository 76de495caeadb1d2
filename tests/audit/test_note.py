"""C2SP signed notes, checkpoints and witness co-signing."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    cosign_note,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)

# The example key of the C2SP signed-note spec and Go's golang.org/x/mod/sumdb/note.
SPEC_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SPEC_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIu"
    "GUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def signer(name: str = "gw.example/sz") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def test_spec_example_note_verifies() -> None:
    verifier = NoteVerifier.parse(SPEC_VKEY)
    assert str(verifier) == SPEC_VKEY
    note = open_note(SPEC_NOTE, [verifier])
    assert note.signers == {"PeterNeumann"}
    assert note.text.startswith("If you think")
    tampered = SPEC_NOTE.replace("answer", "answers")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [verifier])


def test_key_id_and_verifier_key_format() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    s = NoteSigner("gw.example/sz", key)
    expected_id = hashlib.sha256(b"gw.example/sz\n\x01" + raw).digest()[:4]
    assert key_id("gw.example/sz", raw) == expected_id == s.key_id
    name, hex_id, b64 = str(s.verifier).split("+", 2)
    assert (name, hex_id) == ("gw.example/sz", expected_id.hex())
    assert base64.b64decode(b64) == b"\x01" + raw
    assert NoteVerifier.parse(str(s.verifier)) == s.verifier


@pytest.mark.parametrize(
    "vkey",
    [
        "name+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+c74f20a3+AhpjZ2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong type
        "PeterNeumann+c74f20a3",
        "bad name+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+!!!",
    ],
)
def test_malformed_verifier_keys(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.parse(vkey)


def test_checkpoint_format_is_c2sp_tlog_checkpoint() -> None:
    cp = Checkpoint("gw.example/sz", 12, bytes(range(32)))
    text = cp.to_text()
    assert text == f"gw.example/sz\n12\n{base64.b64encode(bytes(range(32))).decode()}\n"
    assert Checkpoint.parse(text) == cp
    s = signer()
    note = sign_checkpoint(cp, s)
    lines = note.split("\n")
    assert lines[3] == ""
    assert lines[4].startswith("— gw.example/sz ")
    raw = base64.b64decode(lines[4].split(" ")[2])
    assert raw[:4] == s.key_id
    assert len(raw) == 4 + 64
    parsed, verified = open_checkpoint(note, [s.verifier])
    assert parsed == cp
    assert verified.signers == {"gw.example/sz"}


@pytest.mark.parametrize(
    "text",
    ["o\n-1\nAAAA\n", "o\n01\n" + "A" * 44 + "\n", "o\n5\nAAAA\n", "o\n5\n", "o\n5\nAA==\nx"],
)
def test_bad_checkpoints(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_witness_cosigning_and_multi_key_verification() -> None:
    log_key, twin_key, stranger = signer("gw.example/sz"), signer("gw.example/hk"), signer("x")
    note = sign_checkpoint(Checkpoint("gw.example/sz", 3, b"\x07" * 32), log_key)
    cosigned = cosign_note(note, twin_key)
    assert cosign_note(cosigned, twin_key) == cosigned  # idempotent
    verified = open_note(cosigned, [log_key.verifier, twin_key.verifier])
    assert verified.signers == {"gw.example/sz", "gw.example/hk"}
    assert len(verified.signatures) == 2
    # Unknown signers are ignored; a note signed only by them is refused.
    assert open_note(cosigned, [log_key.verifier]).signers == {"gw.example/sz"}
    with pytest.raises(NoteError, match="trusted"):
        open_note(cosigned, [stranger.verifier])
    # A known key with a bad signature rejects the whole note.
    text, _ = parse_note(cosigned)
    forged = cosigned.replace(text, text.replace("\n3\n", "\n4\n"))
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [twin_key.verifier])


@pytest.mark.parametrize(
    "note",
    [
        "text\n— a AAAAAAAA\n",  # no blank line
        "text\n\n-- a AAAAAAAA\n",  # not an em dash
        "text\n\n— a AAAA\n",  # signature too short
        "text\n\n— a b c\n",
        "text\x01\n\n— a AAAAAAAA\n",  # control character
        "text\n\n— a AAAAAAAA",  # no final newline
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(NoteError):
        parse_note(note)


def test_sign_note_refuses_bad_text() -> None:
    with pytest.raises(NoteError):
        sign_note("no newline", [signer()])
    with pytest.raises(NoteError):
        sign_note("a\n\nb\n", [signer()])
    with pytest.raises(NoteError):
        sign_note("a\n", [])
