"""E-mail (RFC 5322 / MIME, ``.eml``): headers, text parts and attachments.

Parsed with the standard library's ``email.parser.BytesFeedParser`` (the
incremental parser: fed as the member streams, the same result for every
chunking). What the matcher gets:

* each message's headers (the top one and every attached ``message/rfc822``)
  as a ``text/plain`` member, RFC 2047 encoded words decoded
  (``=?GB2312?B?…?=`` in a Subject is how Chinese mail clients write it);
* each inline text part decoded from its transfer encoding (base64,
  quoted-printable) and charset, as a member of its own (``text/plain``;
  ``text/html`` keeps its type);
* every other part, and any part sent as an attachment, handed back to the
  decoder under its file name with its decoded bytes, so a zipped CSV or a
  PDF attached to a mail is sniffed and read like any member.

The feed parser keeps the message in memory and re-examines every line at
every open multipart level, so the message size, the number of multipart
containers (nesting) and parts, and the header bytes are bounded.
"""

from __future__ import annotations

import re
from email.errors import MessageError
from email.header import decode_header
from email.message import Message
from email.parser import BytesFeedParser
from typing import Final

from gateway.classify.formats.base import Extract, Unscannable

#: Largest message parsed (it is held in memory while parsed). Mail systems
#: cap messages well below: Gmail 25 MB, Outlook.com 20-34 MB, Exchange
#: Online's default 35 MB (its maximum is 150 MB), encoding included.
MAX_EMAIL_BYTES: Final = 64 << 20
#: Multipart containers and attached messages. The feed parser examines each
#: line once per open container, so this bounds nesting (and the cost of a
#: "deeply nested MIME" bomb); a forwarded thread with attachments has ~10.
MAX_MIME_CONTAINERS: Final = 64
#: Leaf parts rendered or handed back.
MAX_MIME_PARTS: Final = 1000
#: Header bytes of one message or part. DKIM/ARC-signed mail carries 10-20 KiB.
MAX_HEADER_BYTES: Final = 1 << 20

#: Marks of a multipart container or an attached message, counted as the
#: bytes stream past (case-insensitive; a mention in a body only counts
#: towards a generous bound).
_CONTAINER: Final = re.compile(rb"boundary[ \t]{0,8}=|message/(?:rfc822|global)", re.IGNORECASE)
_TAIL: Final = 32

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


class EmailReader:
    """A :class:`~gateway.classify.formats.base.StreamReader` for one message."""

    def __init__(self, out: Extract) -> None:
        self._out = out
        self._parser = BytesFeedParser()
        self._size = 0
        self._containers = 0
        self._tail = b""
        self._parts = 0
        self._failed = False

    def feed(self, data: bytes) -> None:
        """The next bytes of the message."""
        if self._failed:
            return
        self._size += len(data)
        if self._size > MAX_EMAIL_BYTES:
            self._failed = True
            raise Unscannable(f"email: message over {MAX_EMAIL_BYTES >> 20} MiB")
        window = self._tail + data
        # Count marks that end inside the new bytes (one in the carried tail
        # was counted with the chunk it ended in).
        self._containers += sum(1 for m in _CONTAINER.finditer(window) if m.end() > len(self._tail))
        self._tail = window[-_TAIL:]
        if self._containers > MAX_MIME_CONTAINERS:
            self._failed = True
            raise Unscannable(f"email: more than {MAX_MIME_CONTAINERS} MIME containers")
        try:
            self._parser.feed(data)
        except (RecursionError, MemoryError, ValueError, MessageError):
            self._failed = True
            raise Unscannable("email: unreadable message") from None

    def finish(self) -> None:
        """The message ended: render it."""
        if self._failed:
            return
        try:
            message = self._parser.close()
            self._message(message, "headers")
        except (RecursionError, MemoryError, ValueError, LookupError, TypeError, MessageError):
            raise Unscannable("email: unreadable message") from None

    def _headers(self, part: Message, name: str, render: bool) -> None:
        items = part.items()
        if sum(len(k) + len(str(v)) for k, v in items) > MAX_HEADER_BYTES:
            raise Unscannable("email: headers over 1 MiB")
        if render and items:
            member = self._out.member(name, "text/plain")
            member.write("".join(f"{_clean(key)}: {header_text(value)}\n" for key, value in items))
            member.close()

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
            for sub in payload:
                if isinstance(sub, Message):
                    self._headers(sub, "", render=False)
                    self._part(sub)
            return
        self._parts += 1
        if self._parts > MAX_MIME_PARTS:
            raise Unscannable(f"email: more than {MAX_MIME_PARTS} parts")
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or not data:
            return
        filename = part.get_filename()
        disposition = (part.get_content_disposition() or "").lower()
        if part.get_content_maintype() == "text" and not filename and disposition != "attachment":
            subtype = part.get_content_subtype()
            member = self._out.member("body", "text/html" if subtype == "html" else "text/plain")
            member.write(_decode(data, part.get_content_charset()))
            member.close()
            return
        nested = self._out.nested(header_text(filename) if filename else f"part {self._parts}")
        nested.write(data)
        nested.close()


def make_email_reader(out: Extract) -> EmailReader:
    """Factory registered for ``message/rfc822``."""
    return EmailReader(out)


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
