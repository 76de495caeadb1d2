"""The age header: serialisation, strict parsing, incremental parsing, the MAC."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.errors import AgeHeaderError, HeaderMacError
from gateway.crypto.header import (
    MAX_HEADER_SIZE,
    HeaderParser,
    Stanza,
    b64decode,
    b64encode,
    encode_header,
    parse_header,
)

FILE_KEY = b"YELLOW SUBMARINE"
STANZAS = (
    Stanza(("X25519", "TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc"), bytes(range(32))),
    Stanza(("example.com/grease", "a!b", "~"), b""),
    Stanza(("full",), bytes(48)),  # exactly one 64-column line, then an empty final line
    Stanza(("long",), bytes(range(100))),
)


def test_encode_then_parse_round_trips() -> None:
    data = encode_header(STANZAS, FILE_KEY)
    header = parse_header(data)
    assert header.stanzas == STANZAS
    assert header.size == len(data)
    header.verify_mac(FILE_KEY)


def test_mac_is_hmac_sha256_under_hkdf_header_key() -> None:
    data = encode_header(STANZAS, FILE_KEY)
    mac_input, _, mac_line = data.rpartition(b" ")
    assert mac_input.endswith(b"\n---")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"header").derive(FILE_KEY)
    assert b64decode(mac_line.strip(), what="mac") == hmac.digest(key, mac_input, "sha256")


def test_body_layout_64_columns_with_final_short_line() -> None:
    text = encode_header(STANZAS, FILE_KEY).decode()
    lines = text.split("\n")
    full = lines.index("-> full")
    assert len(lines[full + 1]) == 64
    assert lines[full + 2] == ""
    empty = lines.index("-> example.com/grease a!b ~")
    assert lines[empty + 1] == ""


def test_wrong_file_key_is_a_mac_error() -> None:
    header = parse_header(encode_header(STANZAS, FILE_KEY))
    with pytest.raises(HeaderMacError):
        header.verify_mac(b"x" * 16)


def test_incremental_parse_byte_by_byte_gives_leftover() -> None:
    data = encode_header(STANZAS, FILE_KEY) + b"PAYLOAD"
    parser = HeaderParser()
    result = None
    for i in range(len(data)):
        result = parser.feed(data[i : i + 1])
        if result is not None:
            break
    assert result is not None
    assert result.stanzas == STANZAS
    assert parser.leftover + data[i + 1 :] == b"PAYLOAD"


def test_incremental_parse_whole_gives_leftover() -> None:
    data = encode_header(STANZAS, FILE_KEY) + b"PAYLOAD"
    parser = HeaderParser()
    assert parser.feed(data) is not None
    assert parser.leftover == b"PAYLOAD"


def test_not_an_age_file_is_refused_at_the_first_byte() -> None:
    with pytest.raises(AgeHeaderError, match="not an age file"):
        HeaderParser().feed(b"P")


def test_header_size_is_bounded() -> None:
    parser = HeaderParser()
    parser.feed(b"age-encryption.org/v1\n-> big ")
    with pytest.raises(AgeHeaderError, match="longer than"):
        parser.feed(b"a" * MAX_HEADER_SIZE)


def test_incomplete_header_fails_at_finish() -> None:
    parser = HeaderParser()
    parser.feed(b"age-encryption.org/v1\n-> X25519 abc\n")
    with pytest.raises(AgeHeaderError, match="ends inside"):
        parser.finish()
    with pytest.raises(AgeHeaderError, match="incomplete"):
        parse_header(b"age-encryption.org/v1\n")
    with pytest.raises(AgeHeaderError, match="after the age header"):
        parse_header(encode_header(STANZAS, FILE_KEY) + b"x")


def _with_line(old: bytes, new: bytes) -> bytes:
    data = encode_header(STANZAS, FILE_KEY)
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"age-encryption.org/v2\n", "unsupported"),
        (_with_line(b"age-encryption.org/v1\n", b"age-encryption.org/v1\r\n"), "unsupported"),
        (_with_line(b"-> full\n", b"-> full \n"), "argument"),
        (_with_line(b"-> full\n", b"->full\n"), "expected a stanza"),
        (_with_line(b"-> full\n", b"->\n"), "argument"),
        (_with_line(b"-> full\n", b"-> f\xc3\xa9\n"), "argument"),
        (_with_line(b"-> full\n", b"-> full\r\n"), "argument"),
        (b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n", "no recipient"),
        (_with_line(b"---", b"--- "), "MAC line"),
    ],
)
def test_strict_header_rules(data: bytes, message: str) -> None:
    with pytest.raises(AgeHeaderError, match=message):
        parse_header(data)


def test_body_line_rules() -> None:
    base = b"age-encryption.org/v1\n-> t\n"
    end = b"--- " + b"A" * 43 + b"\n"
    with pytest.raises(AgeHeaderError, match="longer than 64"):
        parse_header(base + b"A" * 65 + b"\n\n" + end)
    with pytest.raises(AgeHeaderError, match="base64"):
        parse_header(base + b"AAA=\n" + end)  # padding is forbidden
    with pytest.raises(AgeHeaderError, match="base64"):
        parse_header(base + end)  # the MAC line is not a body line: missing body


@pytest.mark.parametrize(
    ("text", "ok"),
    [("", True), ("AA", True), ("AB", False), ("AAA", True), ("AAB", False), ("A", False)],
)
def test_base64_must_be_canonical(text: str, ok: bool) -> None:
    if ok:
        assert b64encode(b64decode(text, what="x")) == text
    else:
        with pytest.raises(AgeHeaderError):
            b64decode(text, what="x")


def test_stanza_encode_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="argument"):
        Stanza((), b"").encode()
    with pytest.raises(ValueError, match="VCHAR"):
        Stanza(("a b",), b"").encode()
