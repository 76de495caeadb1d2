"""Text inside binary bytes, as ``strings`` finds it: runs of printable characters.

Vendors keep text in binary structures the readers cannot parse field by
field: DICOM private elements (Siemens CSA headers, GE and Philips blocks)
and a printer driver's private ``DEVMODE`` bytes (job names, user names,
paths). :func:`printable_runs` gives the detectors that text, in UTF-8 and in
UTF-16LE.
"""

from __future__ import annotations

import re
from typing import Final

#: Shortest run of text taken from binary bytes, in bytes of UTF-8 (four
#: ASCII characters, as ``strings``; two CJK characters, a hotword such as
#: 电话) or in ASCII characters of UTF-16LE: shorter runs in binary data are
#: mostly noise, and every identifier the detectors know is longer.
MIN_RUN: Final = 4

#: Bytes as :func:`printable_runs` splits them (``bytes.split`` splits at ASCII
#: white space): a control character is a separator (a space); the space and
#: the tab (as ``strings`` has it: ``name\t=\tvalue``) are characters of the
#: run (``\x1f`` until the runs are joined and it is a space: :data:`_UNSPLIT`).
_SPLIT: Final = bytes(
    0x1F if b in (0x09, 0x20) else 0x20 if b < 0x20 or b == 0x7F else b for b in range(256)
)
_UNSPLIT: Final = bytes(0x20 if b == 0x1F else b for b in range(256))
#: C1 control characters (U+0080-009F) in UTF-8: not text.
_C1_CONTROLS: Final = re.compile(rb"\xc2[\x80-\x9f]")
#: Non-ASCII bytes as 0x80, ASCII as NUL: where the stretches of non-ASCII are.
_HIGH_MARKS: Final = bytes(0x80 if b >= 0x80 else 0 for b in range(256))
#: Bytes marked for finding UTF-16LE text: a printable ASCII byte is ``a``, a
#: NUL ``z``, any other ``x``; ``azazazaz`` is four ASCII characters in UTF-16LE.
_UTF16_MARKS: Final = bytes(
    0x61 if 0x20 <= b <= 0x7E else 0x7A if b == 0 else 0x78 for b in range(256)
)
_UTF16_CORE: Final = b"az" * MIN_RUN
#: UTF-16LE characters a run holds around its ASCII core: ASCII, CJK symbols
#: and kana (U+3000-30FF), CJK ideographs (U+4E00-9FFF), full-width forms
#: (U+FF00-FFFF) - the hotwords 电话, 手機, 护照 and a full-width colon.
_UTF16_AFTER: Final = re.compile(rb"(?:[\x20-\x7e]\x00|[\x00-\xff][\x30\x4e-\x9f\xff])*")
#: The same, over the value's bytes reversed (each character's bytes swapped).
_UTF16_BEFORE: Final = re.compile(rb"(?:\x00[\x20-\x7e]|[\x30\x4e-\x9f\xff][\x00-\xff])*")


def printable_runs(value: bytes) -> str:
    """The text in binary bytes, as the detectors read it: its runs of printable
    characters (:data:`MIN_RUN`), separated by spaces.

    Read as UTF-8 (ASCII and valid UTF-8 sequences, tabs as spaces; an
    invalid byte or another control character ends a run), then as UTF-16LE,
    which Windows software writes (DICOM modalities, printer drivers): runs of
    four ASCII characters or more, with the CJK characters next to them (a
    Chinese hotword before a number).
    """
    text = value if value.isascii() else _utf8_kept(value)
    runs = [run for run in text.translate(_SPLIT).split() if len(run) >= MIN_RUN]
    found = b" ".join(runs).translate(_UNSPLIT).decode("utf-8", "replace")
    wide = _utf16_runs(value) if b"\0" in value else []
    return " ".join([found, *wide] if found else wide)


def _utf8_kept(value: bytes) -> bytes:
    """``value`` with its valid UTF-8 sequences kept and every invalid byte (or C1
    control character) a NUL: what separates runs.

    A value of a few stretches of non-ASCII bytes in ASCII (a CSA header's
    binary numbers) has only those decoded: the same result, as ASCII bytes
    end any sequence, without decoding and encoding the whole value.
    """
    marks = value.translate(_HIGH_MARKS)
    if marks.count(0x80) * 256 > len(value):
        valid = value.decode("utf-8", "replace").encode().replace(b"\xef\xbf\xbd", b"\0")
        return _C1_CONTROLS.sub(b"\0", valid)
    parts: list[bytes] = []
    at = 0
    start = marks.find(0x80)
    while start >= 0:
        end = marks.find(0, start)
        end = len(value) if end < 0 else end
        parts += (value[at:start], _utf8_kept(value[start:end]))
        at = end
        start = marks.find(0x80, end)
    parts.append(value[at:])
    return b"".join(parts)


def _utf16_runs(value: bytes) -> list[str]:
    """UTF-16LE runs of ``value`` (at either byte alignment), in order of their cores."""
    marks = value.translate(_UTF16_MARKS)
    reverse = b""
    runs = []
    at = marks.find(_UTF16_CORE)
    while at >= 0:
        reverse = reverse or value[::-1]
        after = _UTF16_AFTER.match(value, at)
        before = _UTF16_BEFORE.match(reverse, len(value) - at)
        assert after is not None  # "*" matches the empty string
        assert before is not None
        start = at - (before.end() - before.start())
        runs.append(value[start : after.end()].decode("utf-16-le", "replace"))
        at = marks.find(_UTF16_CORE, after.end())
    return runs
