"""The age v1 header: recipient stanzas and the header MAC (C2SP age, "Header").

The header is text: a version line, one or more stanzas (an ``-> `` argument
line and a base64 body wrapped at 64 columns that ends with a shorter, possibly
empty, line) and the ``---`` line carrying the HMAC-SHA-256 of everything
before it. Parsing is strict where the spec says MUST: canonical unpadded
base64, 64-column body lines, no CR, one final short line per stanza, and a
MAC line of exactly ``--- `` plus 43 base64 characters.

:class:`HeaderParser` is incremental (sans-I/O): it takes bytes as they arrive
and says when the header is complete, holding at most :data:`MAX_HEADER_SIZE`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.errors import AgeHeaderError, HeaderMacError

#: The only version line this implementation reads and writes.
VERSION_LINE = b"age-encryption.org/v1"
#: Every age version line starts with this (spec: "Version line").
VERSION_PREFIX = b"age-encryption.org/"
#: Stanza bodies wrap at 64 base64 columns (spec ABNF ``full-line``).
BODY_COLUMNS = 64
#: The MAC is HMAC-SHA-256: 32 bytes, 43 unpadded base64 characters.
MAC_SIZE = 32
#: The file key is 128 bits (spec: "File key").
FILE_KEY_SIZE = 16
#: Bound on the header held while parsing. An X25519 stanza is about 100 bytes
#: and a post-quantum hybrid one about 1.6 KB, so 1 MiB fits thousands of
#: recipients, far beyond any route; anything longer is refused, not buffered.
MAX_HEADER_SIZE = 1 << 20

_MAC_LINE_PREFIX = b"--- "
_END_MARK = b"---"
_ARG_PREFIX = b"-> "
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
#: VCHAR (RFC 5234): the characters allowed in a stanza argument.
_VCHAR = frozenset(range(33, 127))


@dataclass(frozen=True, slots=True)
class Stanza:
    """One recipient stanza: its arguments (first one is the type) and raw body."""

    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        """Serialise as an argument line and a body wrapped at 64 columns."""
        if not self.args:
            raise ValueError("a stanza needs at least one argument")
        for arg in self.args:
            if not arg or any(ord(c) not in _VCHAR for c in arg):
                raise ValueError("stanza arguments must be non-empty VCHAR strings")
        text = b64encode(self.body).encode("ascii")
        lines = [text[i : i + BODY_COLUMNS] for i in range(0, len(text), BODY_COLUMNS)]
        if not lines or len(lines[-1]) == BODY_COLUMNS:
            lines.append(b"")  # the body always ends with a short (maybe empty) line
        arg_line = _ARG_PREFIX + " ".join(self.args).encode("ascii")
        return b"\n".join([arg_line, *lines]) + b"\n"


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header.

    Attributes:
        stanzas: the recipient stanzas, in file order.
        mac: the 32-byte header MAC as written in the file.
        mac_input: the header bytes the MAC covers (up to and including ``---``).
        size: length in bytes of the whole header, MAC line included.
    """

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    size: int

    def verify_mac(self, file_key: bytes) -> None:
        """Check the MAC with ``file_key``.

        Raises:
            HeaderMacError: the header was altered or the file key is wrong.
        """
        expected = header_mac(file_key, self.mac_input)
        if not hmac.compare_digest(expected, self.mac):
            raise HeaderMacError("age header MAC does not verify: the header was altered")


def b64encode(data: bytes) -> str:
    """Canonical unpadded standard base64 (RFC 4648 §4), as age writes it."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes, *, what: str) -> bytes:
    """Decode canonical unpadded base64, rejecting padding and non-canonical bits.

    Raises:
        AgeHeaderError: naming ``what`` (never echoing the input).
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if len(raw) % 4 == 1 or any(c not in _B64_CHARS for c in raw):
        raise AgeHeaderError(f"age header: {what} is not valid unpadded base64")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise AgeHeaderError(f"age header: {what} is not valid unpadded base64") from None
    if b64encode(data).encode("ascii") != raw:
        raise AgeHeaderError(f"age header: {what} is not canonical base64")
    return data


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 with 32 bytes of output, as every age key derivation uses."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    """HMAC-SHA-256 of the header under HKDF(file key, salt = empty, info = "header")."""
    key = hkdf_sha256(file_key, b"", b"header")
    return hmac.new(key, mac_input, "sha256").digest()


def encode_header(stanzas: tuple[Stanza, ...] | list[Stanza], file_key: bytes) -> bytes:
    """Serialise a complete header (version, stanzas, MAC line) for ``file_key``."""
    if not stanzas:
        raise ValueError("an age header needs at least one recipient stanza")
    mac_input = VERSION_LINE + b"\n" + b"".join(s.encode() for s in stanzas) + _END_MARK
    mac = header_mac(file_key, mac_input)
    return mac_input + b" " + b64encode(mac).encode("ascii") + b"\n"


def parse_header(data: bytes) -> Header:
    """Parse a complete header that is exactly ``data`` (nothing may follow).

    Raises:
        AgeHeaderError: malformed, incomplete, or followed by extra bytes.
    """
    parser = HeaderParser()
    header = parser.feed(data)
    if header is None:
        raise AgeHeaderError("age header is incomplete")
    if parser.leftover:
        raise AgeHeaderError("unexpected bytes after the age header")
    return header


class HeaderParser:
    """Incremental header parser: feed bytes until :meth:`feed` returns the header.

    After completion, :attr:`leftover` holds the bytes that followed the header
    in the last feed (the start of the payload).
    """

    __slots__ = (
        "_args",
        "_body_lines",
        "_buf",
        "_done",
        "_line_start",
        "_stanzas",
        "_state",
        "leftover",
    )

    _VERSION, _STANZA_OR_END, _BODY = range(3)

    def __init__(self) -> None:
        self._buf = bytearray()
        self._line_start = 0
        self._state = self._VERSION
        self._stanzas: list[Stanza] = []
        self._args: tuple[str, ...] = ()
        self._body_lines: list[bytes] = []
        self._done = False
        self.leftover = b""

    def feed(self, data: bytes) -> Header | None:
        """Take the next bytes; return the header once its MAC line is complete.

        Raises:
            AgeHeaderError: the bytes so far cannot start a valid v1 header.
        """
        if self._done:
            raise RuntimeError("header already complete")
        start = len(self._buf)
        self._buf += data
        if self._state == self._VERSION and self._line_start == 0:
            seen = bytes(self._buf[: len(VERSION_PREFIX)])
            if not VERSION_PREFIX.startswith(seen) and not seen.startswith(VERSION_PREFIX):
                raise AgeHeaderError("not an age file: the version line is missing")
        search_from = max(start, self._line_start)
        while True:
            end = self._buf.find(b"\n", search_from)
            if end < 0:
                break
            line = bytes(self._buf[self._line_start : end])
            line_start = self._line_start
            self._line_start = end + 1
            search_from = self._line_start
            header = self._line(line, line_start)
            if header is not None:
                self._done = True
                self.leftover = bytes(self._buf[self._line_start :])
                self._buf = bytearray()
                return header
        if len(self._buf) > MAX_HEADER_SIZE:
            raise AgeHeaderError(f"age header is longer than {MAX_HEADER_SIZE} bytes")
        return None

    def finish(self) -> None:
        """Signal end of input before the header completed.

        Raises:
            AgeHeaderError: always (the file ends inside the header).
        """
        if not self._done:
            raise AgeHeaderError("file ends inside the age header")

    def _line(self, line: bytes, line_start: int) -> Header | None:
        if self._state == self._VERSION:
            if line != VERSION_LINE:
                if line.startswith(VERSION_PREFIX):
                    raise AgeHeaderError("unsupported age version (only v1 is supported)")
                raise AgeHeaderError("not an age file: the version line is missing")
            self._state = self._STANZA_OR_END
            return None
        if self._state == self._BODY:
            if len(line) > BODY_COLUMNS:
                raise AgeHeaderError("age header: a stanza body line is longer than 64 columns")
            self._body_lines.append(line)
            if len(line) < BODY_COLUMNS:
                body = b64decode(b"".join(self._body_lines), what="a stanza body")
                self._stanzas.append(Stanza(self._args, body))
                self._state = self._STANZA_OR_END
            return None
        # _STANZA_OR_END: "---" can only be the MAC line ("->" starts a stanza).
        if line.startswith(_END_MARK):
            return self._end(line, line_start)
        if line == b"->" or line.startswith(_ARG_PREFIX):
            parts = line[len(_ARG_PREFIX) :].split(b" ") if line != b"->" else [b""]
            if any(not p or any(c not in _VCHAR for c in p) for p in parts):
                raise AgeHeaderError("age header: a stanza has an empty or invalid argument")
            self._args = tuple(p.decode("ascii") for p in parts)
            self._body_lines = []
            self._state = self._BODY
            return None
        raise AgeHeaderError("age header: expected a stanza or the MAC line")

    def _end(self, line: bytes, line_start: int) -> Header:
        if not self._stanzas:
            raise AgeHeaderError("age header has no recipient stanza")
        encoded = line[len(_MAC_LINE_PREFIX) :]
        if not line.startswith(_MAC_LINE_PREFIX) or len(encoded) != 43:
            raise AgeHeaderError("age header: malformed MAC line")
        mac = b64decode(encoded, what="the header MAC")
        mac_input = bytes(self._buf[: line_start + len(_END_MARK)])
        return Header(
            stanzas=tuple(self._stanzas),
            mac=mac,
            mac_input=mac_input,
            size=line_start + len(line) + 1,
        )
