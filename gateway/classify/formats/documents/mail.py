"""E-mail (RFC 5322 / MIME, ``.eml``) and bare multipart bodies (form uploads): parts, attachments.

Parsed with the standard library's ``email.parser.BytesFeedParser`` (the
incremental parser: fed as the member streams, the same result for every
chunking). What the matcher gets from a message:

* each message's headers (the top one and every attached ``message/rfc822``)
  as a ``text/plain`` member, RFC 2047 encoded words decoded
  (``=?GB2312?B?…?=`` in a Subject is how Chinese mail clients write it) and
  raw 8-bit (RFC 6532 UTF-8, or GBK) read as text;
* each inline text part decoded from its transfer encoding (base64,
  quoted-printable) and charset, as a member of its own (``text/plain``;
  ``text/html`` keeps its type);
* every other part, and any part sent as an attachment, handed back to the
  decoder under its file name with its decoded bytes, so a zipped CSV or a
  PDF attached to a mail is sniffed and read like any member;
* the preamble and epilogue of each multipart (text outside every part,
  which a mail client hides and the transfer still carries).

A **bare multipart body** (issue 13) is what a browser, ``curl -F`` or
``requests.post(files=...)`` sends: ``--<boundary>`` and the first part's
headers, no top-level headers (the boundary is in the HTTP ``Content-Type``,
which the classifier does not see). :func:`multipart_kind` recognises one
from its first line and part headers; :class:`MultipartReader` reads it as a
message whose ``Content-Type: multipart/form-data`` (or ``multipart/mixed``)
header it writes itself, with the boundary of the first line. Then every
part's headers, decoded (RFC 2047 words, RFC 2231 ``filename*``,
percent-encoded names, raw UTF-8 or the form's ``_charset_``), go to one
``part headers`` member, so field names and file names are scanned once; a
text field is a member of its own (``part 3``), decoded from its declared
charset, the form's ``_charset_`` (RFC 7578 §4.6) or the charset the
decoder's detector finds; a file part, or a text field holding binary, is
handed back as a nested member (``part 4``) and read by its own reader.

Transfer encodings are decoded the way a lenient reader would (the encoding's
name with surrounding blanks, comments or capitals; base64 with characters
outside its alphabet, or one character too many): a part whose base64 is not
clean is also scanned **as sent** (``part 2 as sent``), since a form server
that ignores the encoding (RFC 7578 deprecates it; most do) stores those
bytes.

The feed parser keeps the message in memory and re-examines every line at
every open multipart level, so the message size, the number of multipart
containers (nesting) and parts, and the header bytes are bounded; the parts
while the parser runs (it builds one object per part, or per header block of
a delivery-status report, before anything is rendered). It also parses MIME
parameters in time quadratic in their number and length (CPython 3.11), so
``Content-Type`` and ``Content-Disposition`` are bounded too.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterator
from email.errors import MessageError
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesFeedParser
from email.policy import Compat32
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from gateway.classify import charset as cs
from gateway.classify.formats import SNIFF_PREFIX_BYTES
from gateway.classify.formats.base import Extract, TextOut, Unscannable

#: Largest message parsed (it is held in memory while parsed). Mail systems
#: cap messages well below: Gmail 25 MB, Outlook.com 20-34 MB, Exchange
#: Online's default 35 MB (its maximum is 150 MB), encoding included. Bare
#: multipart bodies (form uploads) have the same bound: past it they are
#: unscannable ("form-data: body over 64 MiB"), as a message is.
MAX_EMAIL_BYTES: Final = 64 << 20
#: Multipart containers and attached messages. The feed parser examines each
#: line once per open container, so this bounds nesting (and the cost of a
#: "deeply nested MIME" bomb); a forwarded thread with attachments has ~10.
MAX_MIME_CONTAINERS: Final = 64
#: Leaf parts rendered or handed back (Werkzeug's ``max_form_parts`` and
#: PHP's ``max_input_vars`` are 1,000 too).
MAX_MIME_PARTS: Final = 1000
#: Header bytes of one message or part. DKIM/ARC-signed mail carries 10-20 KiB.
MAX_HEADER_BYTES: Final = 1 << 20
#: Bytes and parameters (``;``) of one Content-Type or Content-Disposition
#: value: the standard library parses parameters in quadratic time (400,000
#: semicolons are minutes of CPU). A 255-character file name in RFC 2231
#: form is ~2.3 KB.
MAX_PARAM_HEADER_BYTES: Final = 16 << 10
MAX_HEADER_PARAMS: Final = 64
#: Longest boundary recognised on a bare multipart body: RFC 5322's line
#: length. RFC 2046 allows 70 characters, but servers read longer ones
#: (Python's email, Go, busboy; Werkzeug up to 201): a stricter sniffer would
#: let a client hide an encoded part behind a long boundary.
MAX_BOUNDARY_CHARS: Final = 998

#: Marks of a multipart container or an attached message, counted as the
#: bytes stream past (case-insensitive; a mention in a body only counts
#: towards a generous bound). ``boundary*=`` and ``boundary*0*=`` are RFC
#: 2231 forms the parser reads too.
_CONTAINER: Final = re.compile(
    rb"boundary[*0-9]{0,8}[ \t]{0,8}=|message/(?:rfc822|global)", re.IGNORECASE
)
_TAIL: Final = 32
#: The boundary Python's ``email`` package draws for every multipart: 15 ``=``,
#: a random 19-digit token, ``==``. Nineteen random digits pass a card number's
#: Luhn check one time in ten, so rendered as they are they made one clean
#: multipart mail in ~30 a "bank card". The token is rendered without its
#: digits; any other boundary (the only framing a sender picks freely) is
#: scanned as it is. All the pattern can then carry unseen is one 19-digit
#: number per multipart, in the exact place and form the library writes.
_PYTHON_BOUNDARY: Final = re.compile(r"(?<![=\w])={15}\d{19}==(?![=\w])")

#: Charsets mail clients announce, read as their supersets (GB2312 and GBK
#: mail routinely holds GB18030 characters; Big5 mail HKSCS ones).
_CHARSETS: Final = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "big5": "big5hkscs",
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
}
#: Headers whose parameters the standard library parses.
_PARAM_HEADERS: Final = frozenset(("content-type", "content-disposition"))
_CTE: Final = "content-transfer-encoding"
_COMMENT: Final = re.compile(r"\([^()]*\)")
_FOLD: Final = re.compile(r"\r?\n(?=[ \t])|[\r\n]")
_PERCENT: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_NOT_BASE64: Final = re.compile(rb"[^A-Za-z0-9+/]+")


def _framing(value: str) -> str:
    """A header value with Python's random boundary tokens rendered without their digits."""
    if "===============" not in value:
        return value
    return _PYTHON_BOUNDARY.sub("===============(random)==", value)


def _decode(data: bytes, charset: str | None) -> str:
    name = (charset or "utf-8").strip().lower()
    name = _CHARSETS.get(name, name)
    try:
        return data.decode(name, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _clean(text: str) -> str:
    """Undo the parser's surrogate escapes: raw 8-bit header bytes read as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _bytes_text(data: bytes, charset: str | None) -> str:
    """Raw 8-bit text: UTF-8 when it is, else ``charset`` (GB18030 when none: Chinese
    clients write GBK; it keeps ASCII, every identifier's digits, intact)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _decode(data, charset or "gb18030")


def _raw_text(value: str, charset: str | None) -> str:
    """A value as the parser holds it (raw bytes as surrogate escapes) read as text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _bytes_text(value.encode("utf-8", "surrogateescape"), charset)
    return value


def header_text(value: object) -> str:
    """A header value with its RFC 2047 encoded words decoded."""
    text = _clean(str(value))
    try:
        pieces = decode_header(text)
    except (ValueError, LookupError, AssertionError, MessageError):
        return text
    out = []
    for piece, charset in pieces:
        out.append(_decode(piece, charset) if isinstance(piece, bytes) else piece)
    return _clean("".join(out))


class _Refused(MessageError):
    """A bound reached inside the standard library's parser; the reader reports it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _check_params(value: str) -> None:
    """Refuse a parameter header the standard library would take too long to parse."""
    if len(value) > MAX_PARAM_HEADER_BYTES or value.count(";") > MAX_HEADER_PARAMS:
        raise _Refused(
            f"a MIME header over {MAX_PARAM_HEADER_BYTES >> 10} KiB"
            f" or {MAX_HEADER_PARAMS} parameters"
        )


class _BoundedPolicy(Compat32):
    """The parser's default policy, checking parameter headers before they are parsed."""

    def header_fetch_parse(self, name: str, value: str) -> str | Header:  # type: ignore[override]
        """The value as :class:`~email.policy.Compat32` gives it, once it is checked."""
        if name.lower() in _PARAM_HEADERS and isinstance(value, str):
            _check_params(value)
        return super().header_fetch_parse(name, value)


_POLICY: Final = _BoundedPolicy()


def _transfer_encoding(part: Message) -> str:
    """The part's transfer encoding as a lenient reader names it: ``" BASE64 (x)"`` is base64."""
    value = part.get(_CTE)
    if value is None:
        return ""
    return _COMMENT.sub("", str(value)).strip().lower()


def _as_sent(part: Message) -> bytes:
    """The part's body bytes as sent, whatever its transfer encoding says."""
    declared = next((str(v) for k, v in part.raw_items() if k.lower() == _CTE), None)
    if declared is None:
        data = part.get_payload(decode=True)
    else:
        part.replace_header(_CTE, "8bit")
        try:
            data = part.get_payload(decode=True)
        finally:
            part.replace_header(_CTE, declared)
    return data if isinstance(data, bytes) else b""


def _base64(raw: bytes) -> tuple[bytes, bytes | None]:
    """Base64 decoded as lenient decoders do, and ``raw`` itself unless it was clean.

    Clean: the alphabet, line breaks and blanks, at most two ``=`` at the end,
    the padding optional. Otherwise the characters outside the alphabet are
    dropped and a last lone character ignored (the standard library would
    give up on it and return the encoded text).
    """
    compact = raw.translate(None, b" \t\r\n")
    clean = _BASE64.fullmatch(compact) is not None
    letters = compact.rstrip(b"=") if clean else _NOT_BASE64.sub(b"", compact)
    clean = clean and len(letters) % 4 != 1
    letters = letters[: len(letters) - 1] if len(letters) % 4 == 1 else letters
    try:
        decoded = base64.b64decode(letters + b"=" * (-len(letters) % 4))
    except binascii.Error:  # pragma: no cover - the letters are of the alphabet, whole quads
        decoded = b""
    return decoded, None if clean else raw


def _payload(part: Message) -> tuple[bytes, bytes | None]:
    """A leaf part's body decoded from its transfer encoding, and its bytes as sent
    when the decoding had to drop some (None otherwise)."""
    encoding = _transfer_encoding(part)
    if encoding == "base64":
        return _base64(_as_sent(part))
    if encoding == "quoted-printable":
        return binascii.a2b_qp(_as_sent(part)), None
    data = part.get_payload(decode=True)  # 7bit, 8bit, binary as sent; uuencode decoded
    return (data if isinstance(data, bytes) else b""), None


def _inline_text(part: Message) -> bool:
    """Whether a leaf part is text to read as such: a text type, no file name, not
    sent as an attachment (anything else is handed back to the decoder)."""
    return (
        part.get_content_maintype() == "text"
        and not part.get_filename()
        and (part.get_content_disposition() or "").lower() != "attachment"
    )


def _subparts(part: Message) -> Iterator[Message]:
    """Every part below ``part``'s multipart containers (not inside attached messages)."""
    if part.is_multipart() and part.get_content_maintype() != "message":
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield sub
                yield from _subparts(sub)


class EmailReader:
    """A :class:`~gateway.classify.formats.base.StreamReader` for one message."""

    #: The format's name, which prefixes every unscannable reason.
    kind: str = "email"
    #: What one input is called in reasons.
    unit: str = "message"

    def __init__(self, out: Extract) -> None:
        self._out = out
        self._messages = 0
        self._parser = BytesFeedParser(self._new_message, policy=_POLICY)
        self._messages = 0  # the parser made one to try the factory
        self._size = 0
        self._containers = 0
        self._tail = b""
        self._parts = 0
        self._failed = False

    def _new_message(self, policy: Any = _POLICY) -> Message:
        """The parser's message factory: counts parts as they are made."""
        self._messages += 1
        if self._messages > MAX_MIME_PARTS + MAX_MIME_CONTAINERS + 1:
            raise _Refused(f"more than {MAX_MIME_PARTS} parts")
        return Message(policy)

    def _fail(self, reason: str) -> Unscannable:
        self._failed = True
        return Unscannable(f"{self.kind}: {reason}")

    def feed(self, data: bytes) -> None:
        """The next bytes of the message."""
        if self._failed:
            return
        self._size += len(data)
        if self._size > MAX_EMAIL_BYTES:
            raise self._fail(f"{self.unit} over {MAX_EMAIL_BYTES >> 20} MiB")
        self._push(data)

    def _push(self, data: bytes) -> None:
        """Count the container marks in ``data``, then parse it."""
        window = self._tail + data
        # Count marks that end inside the new bytes (one in the carried tail
        # was counted with the chunk it ended in).
        self._containers += sum(1 for m in _CONTAINER.finditer(window) if m.end() > len(self._tail))
        self._tail = window[-_TAIL:]
        if self._containers > MAX_MIME_CONTAINERS:
            raise self._fail(f"more than {MAX_MIME_CONTAINERS} MIME containers")
        try:
            self._parser.feed(data)
        except _Refused as exc:
            raise self._fail(exc.what) from None
        except (RecursionError, MemoryError, ValueError, MessageError):
            raise self._fail(f"unreadable {self.unit}") from None

    def finish(self) -> None:
        """The message ended: render it."""
        if self._failed:
            return
        try:
            message = self._close()
            self._render(message)
        except _Refused as exc:
            raise self._fail(exc.what) from None
        except (RecursionError, MemoryError, ValueError, LookupError, TypeError, MessageError):
            raise self._fail(f"unreadable {self.unit}") from None

    def _close(self) -> Message:
        return self._parser.close()

    def _render(self, message: Message) -> None:
        self._message(message, "headers")

    def _text(self, value: str) -> str:
        """A raw header value (or preamble) as text."""
        return _raw_text(value, None)

    def _header_items(self, part: Message) -> list[tuple[str, str]]:
        """A part's headers as the parser holds them (raw), bounded."""
        items = [(str(key), str(value)) for key, value in part.raw_items()]
        if sum(len(k) + len(v) for k, v in items) > MAX_HEADER_BYTES:
            raise self._fail("headers over 1 MiB")
        return items

    def _headers(self, part: Message, name: str, render: bool) -> None:
        items = self._header_items(part)
        if render and items:
            member = self._out.member(name, "text/plain")
            member.write(
                "".join(
                    f"{self._text(k)}: {_framing(header_text(self._text(v)))}\n" for k, v in items
                )
            )
            member.close()

    def _sub_headers(self, part: Message) -> None:
        """The headers of a part of a multipart (bounded; not rendered)."""
        self._headers(part, "", render=False)

    def _message(self, message: Message, name: str) -> None:
        self._headers(message, name, render=True)
        self._part(message)

    def _part(self, part: Message) -> None:
        if part.is_multipart():
            payload = part.get_payload()
            if part.get_content_maintype() == "message":
                for inner in payload:
                    if isinstance(inner, Message):
                        self._message(inner, "attached message headers")
                return
            self._outside(part.preamble, "preamble")
            for sub in payload:
                if isinstance(sub, Message):
                    self._sub_headers(sub)
                    self._part(sub)
            self._outside(part.epilogue, "epilogue")
            return
        self._parts += 1
        if self._parts > MAX_MIME_PARTS:
            raise self._fail(f"more than {MAX_MIME_PARTS} parts")
        data, as_sent = _payload(part)
        self._content(part, data, None)
        if as_sent is not None:
            self._content(part, as_sent, f"part {self._parts} as sent")

    def _outside(self, text: str | None, name: str) -> None:
        """Text before a multipart's first part or after its last, when there is any."""
        if text and not text.isspace():
            member = self._out.member(name, "text/plain")
            member.write(self._text(text))
            member.close()

    def _content(self, part: Message, data: bytes, name: str | None) -> None:
        """A leaf part's bytes: a text member, or a nested member (named ``name`` if given)."""
        if not data:
            return
        if _inline_text(part):
            self._text_member("body", part, _decode(data, part.get_content_charset()))
            return
        if name is None:
            filename = part.get_filename()
            name = header_text(filename) if filename else f"part {self._parts}"
        self._hand_back(name, data)

    def _text_member(self, name: str, part: Message, text: str) -> None:
        """A text part's text as a member (``text/html`` keeps its type)."""
        subtype = part.get_content_subtype()
        member = self._out.member(name, "text/html" if subtype == "html" else "text/plain")
        member.write(text)
        member.close()

    def _hand_back(self, name: str, data: bytes) -> None:
        """A part's bytes handed back to the decoder, read by their own reader."""
        nested = self._out.nested(name)
        nested.write(data)
        nested.close()


def make_email_reader(out: Extract) -> EmailReader:
    """Factory registered for ``message/rfc822``."""
    return EmailReader(out)


#: The first line of a bare multipart body: ``--`` and the boundary (printable
#: ASCII, not ending in a blank), transport padding, CRLF or LF; one line
#: break may come first (the delimiter is CRLF ``--boundary``).
_BOUNDARY_LINE: Final = re.compile(
    rb"(?:\r?\n)?--([ -~]{0,%d}[!-~])[ \t]{0,64}\r?\n" % (MAX_BOUNDARY_CHARS - 1)
)
_FIRST_LINE_BYTES: Final = 2 + 2 + MAX_BOUNDARY_CHARS + 64 + 2


class MultipartReader(EmailReader):
    """A bare ``multipart/*`` body (a form upload): read as a message whose
    Content-Type header, with the boundary of the body's first line, is written here.

    Args:
        out: where the parts go.
        kind: the format's name (``form-data``, ``multipart``).
        media_type: the Content-Type written (``multipart/form-data``).
    """

    unit = "body"

    def __init__(self, out: Extract, kind: str, media_type: str) -> None:
        super().__init__(out)
        self.kind = kind
        self._media_type = media_type.encode("ascii")
        #: The first bytes, until the boundary line is in; None after.
        self._head: bytearray | None = bytearray()
        #: The form's ``_charset_`` (RFC 7578 §4.6), the default of its text fields.
        self._charset: str | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the body."""
        if self._failed:
            return
        if self._head is None:
            super().feed(data)
            return
        self._head += data
        head = self._head
        start = 2 if head.startswith(b"\r\n") else 1 if head.startswith(b"\n") else 0
        if head.find(b"\n", start) < 0:
            if len(head) > _FIRST_LINE_BYTES:
                raise self._fail("no boundary line")
            return
        self._head = None
        match = _BOUNDARY_LINE.match(head)
        if match is None:
            raise self._fail("no boundary line")
        boundary = b"".join(b"%%%02X" % c for c in match.group(1))
        self._push(
            b"Content-Type: %s; boundary*=us-ascii''%s\r\n\r\n" % (self._media_type, boundary)
        )
        super().feed(bytes(head))

    def _close(self) -> Message:
        if self._head is not None:
            raise self._fail("no boundary line")
        return super()._close()

    def _render(self, message: Message) -> None:
        parts = list(_subparts(message))
        self._charset = self._form_charset(parts)
        names: TextOut | None = None
        for part in parts:
            lines = self._header_lines(part)
            if lines:
                if names is None:
                    names = self._out.member("part headers", "text/plain")
                names.write(lines)
        if names is not None:
            names.close()
        self._part(message)

    def _sub_headers(self, part: Message) -> None:
        """Rendered (and bounded) by :meth:`_render` before the parts."""

    def _form_charset(self, parts: list[Message]) -> str | None:
        """The value of the form's ``_charset_`` field, if it names a charset."""
        for part in parts:
            if part.is_multipart():
                continue
            if part.get_param("name", header="content-disposition") != "_charset_":
                continue
            data, _ = _payload(part)
            name = data.strip()[:40].decode("ascii", "replace")
            try:
                codecs.lookup(name)
            except LookupError:
                return None
            return name
        return None

    def _text(self, value: str) -> str:
        return _raw_text(value, self._charset)

    def _header_lines(self, part: Message) -> str:
        """A part's headers as text, their parameters decoded."""
        lines = []
        for key, value in self._header_items(part):
            text = _FOLD.sub("", self._text(value))
            text = self._params(key, text) if key.lower() in _PARAM_HEADERS else header_text(text)
            lines.append(f"{self._text(key)}: {_framing(text)}\n")
        return "".join(lines)

    def _params(self, key: str, value: str) -> str:
        """A Content-Type or Content-Disposition value with each parameter decoded:
        RFC 2231 (``filename*=UTF-8''…``), RFC 2047 words, percent-encoded names."""
        holder = Message(_POLICY)
        holder[key] = value
        rendered = []
        for index, (name, param) in enumerate(holder.get_params([], header=key)):
            raw: object = param
            text = self._rfc2231(raw) if isinstance(raw, tuple) else header_text(param)
            if name in ("name", "filename") and _PERCENT.search(text):
                text = _bytes_text(unquote_to_bytes(text), self._charset)
            rendered.append(name if index == 0 and not text else f'{name}="{text}"')
        return "; ".join(rendered)

    def _rfc2231(self, value: tuple[Any, ...]) -> str:
        """An RFC 2231 value (charset, language, text with each byte a character)."""
        charset, text = value[0], str(value[-1])
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:
            return text
        return _decode(data, charset) if charset else _bytes_text(data, self._charset)

    def _content(self, part: Message, data: bytes, name: str | None) -> None:
        """A text field as a member, anything else (or binary) handed back."""
        if not data:
            return
        name = name or f"part {self._parts}"
        text = self._field_text(part, data)
        if text is not None:
            self._text_member(name, part, text)
        else:
            self._hand_back(name, data)

    def _field_text(self, part: Message, data: bytes) -> str | None:
        """The text of a text field; None for a file, a non-text part or binary bytes."""
        if not _inline_text(part):
            return None
        charset = part.get_content_charset() or self._charset
        if charset is None:
            detection = cs.detect(data[:SNIFF_PREFIX_BYTES], len(data) <= SNIFF_PREFIX_BYTES)
            if detection.charset is None:
                return None
            data, charset = data[detection.bom :], detection.charset
        return _decode(data, charset)


def make_form_data_reader(out: Extract) -> MultipartReader:
    """Factory registered for ``multipart/form-data`` (a form upload)."""
    return MultipartReader(out, "form-data", "multipart/form-data")


def make_multipart_reader(out: Extract) -> MultipartReader:
    """Factory registered for other bare ``multipart/*`` bodies (read as ``multipart/mixed``)."""
    return MultipartReader(out, "multipart", "multipart/mixed")


# --------------------------------------------------------------------------- sniffing

_HEADER_LINE: Final = re.compile(rb"[!-9;-~]{1,76}:[ \t]?")
#: Headers that only mail has; at least one must be present.
_MAIL_HEADERS: Final = frozenset(
    (
        b"from",
        b"received",
        b"message-id",
        b"mime-version",
        b"return-path",
        b"delivered-to",
        b"dkim-signature",
        b"x-mailer",
    )
)
#: Headers common in mail; with the above, at least two distinct.
_COMMON_HEADERS: Final = _MAIL_HEADERS | frozenset(
    (b"to", b"cc", b"subject", b"date", b"reply-to", b"sender", b"content-type")
)


def sniff_email(prefix: bytes) -> bool:
    """An RFC 5322 header block: header and continuation lines only, up to a
    blank line inside ``prefix``, with a mail-only header (From, Received,
    Message-ID, MIME-Version …) among at least two typical ones.

    A CSV or prose file fails on its first line that is neither ``Name:
    value`` nor a continuation; an mbox ``From `` line may open the block.
    """
    if _HEADER_LINE.match(prefix) is None and not prefix.startswith(b"From "):
        return False  # most members fail on their first bytes
    end = re.search(rb"\r?\n\r?\n", prefix)
    if end is None:
        return False
    lines = prefix[: end.start()].split(b"\n")
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]
    seen: set[bytes] = set()
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if index == 0:
                return False
            continue
        header = _HEADER_LINE.match(line)
        if header is None:
            return False
        seen.add(line[: line.index(b":")].lower())
    return len(seen & _COMMON_HEADERS) >= 2 and not seen.isdisjoint(_MAIL_HEADERS)


#: Values of the first part's headers that make a body multipart.
_DISPOSITION: Final = re.compile(rb"(form-data|attachment|inline|file)[ \t]*(?:;|$)", re.IGNORECASE)
_MEDIA_TYPE: Final = re.compile(
    rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+/[-!#$%&'*+.^_`|~0-9A-Za-z]+[ \t]*(?:;|$)"
)
#: Header lines of the first part looked at.
_PART_HEADER_LINES: Final = 64


def multipart_kind(prefix: bytes) -> str | None:
    """``"form-data"`` or ``"mixed"`` when ``prefix`` starts a bare multipart body, else None.

    A bare multipart body starts with its boundary line (``--`` + 1 to
    :data:`MAX_BOUNDARY_CHARS` printable characters, transport padding, CRLF
    or LF), then the first part's header block: header and continuation
    lines up to a blank line inside ``prefix``, among them a Content-Disposition
    (``form-data``, ``attachment``, ``inline``, ``file``) or a Content-Type
    (``type/subtype``). ``form-data`` when the disposition says so.

    Text starting with ``--`` fails: a Markdown rule or a signature separator
    has no header block, a SQL comment's next line is not a header, YAML front
    matter ends with ``---`` rather than a blank line.
    """
    match = _BOUNDARY_LINE.match(prefix)
    if match is None:
        return None
    kind: str | None = None
    pos = match.end()
    for index in range(_PART_HEADER_LINES):
        end = prefix.find(b"\n", pos)
        if end < 0:
            return None
        line = prefix[pos:end]
        pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return kind
        if line[0] in b" \t":
            if index == 0:
                return None
            continue
        if _HEADER_LINE.match(line) is None:
            return None
        name, _, value = line.partition(b":")
        name, value = name.lower(), value.strip()
        if name == b"content-disposition":
            disposition = _DISPOSITION.match(value)
            if disposition is None:
                return None
            if disposition.group(1).lower() == b"form-data":
                kind = "form-data"
            kind = kind or "mixed"
        elif name == b"content-type":
            if _MEDIA_TYPE.match(value) is None:
                return None
            kind = kind or "mixed"
    return None


def sniff_form_data(prefix: bytes) -> bool:
    """A bare ``multipart/form-data`` body (see :func:`multipart_kind`)."""
    return multipart_kind(prefix) == "form-data"


def sniff_multipart(prefix: bytes) -> bool:
    """Another bare ``multipart/*`` body (see :func:`multipart_kind`)."""
    return multipart_kind(prefix) == "mixed"
