"""Text inside binary bytes (gateway.classify.formats.strings): DICOM private
values and printer drivers' private bytes are read with it."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from gateway.classify.formats.strings import MIN_RUN, printable_runs


def test_runs() -> None:
    """Runs of four bytes of UTF-8 (two CJK characters) or of four ASCII characters
    of UTF-16LE with the CJK ones next to them; anything else separates runs."""
    assert (
        printable_runs(b"\0\x01abc\0abcd\x7fefgh ij\x1fklmn\x0bab\tc") == "abcd efgh ij klmn ab c"
    )
    assert printable_runs("\0电话\0陈\0é".encode()) == "电话"
    assert printable_runs(b"Tel\xff\xfe1381\xc2\x852345678") == "1381 2345678"
    assert printable_runs(b"\xef\xbf\xbdabcd\xe4\xb8") == "abcd"  # U+FFFD, a cut sequence
    wide = "Tel 电话：91234567".encode("utf-16-le")
    # (电 and 话 read as UTF-8 are "5u" and U+074B: noise, but valid UTF-8)
    assert printable_runs(b"\x01" + wide + b"\0\0ab\0\0") == "5u\u074b Tel 电话：91234567"
    assert printable_runs("陈大文".encode("utf-16-le") + b"\0\0") == ""  # no ASCII core
    assert printable_runs(b"a\0b\0c\0") == ""


@given(
    before=st.binary(max_size=64),
    after=st.binary(max_size=64),
    wide=st.booleans(),
)
def test_a_delimited_run_is_found_anywhere(before: bytes, after: bytes, wide: bool) -> None:
    token = "tel 13812345678"
    planted = token.encode("utf-16-le") + b"\0\0" if wide else token.encode() + b"\0"
    text = printable_runs(before + b"\0\0" + planted + after)
    assert token in text
    assert "\n" not in text  # one line per element


def _utf8_runs(value: bytes) -> str:
    """printable_runs's reading of UTF-8, written plainly: decode, cut at control
    characters (C0 but the tab, DEL, C1) and U+FFFD, keep runs of 4 bytes."""
    text = value.decode("utf-8", "replace").replace("\t", " ")
    runs = re.split("[\x00-\x1f\x7f-\x9f\ufffd]+", text)
    return " ".join(run for run in runs if len(run.encode()) >= MIN_RUN)


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=8),
            st.text(max_size=8).map(str.encode),
            st.integers(0, 600).map(lambda n: b"A1 -" * n),  # mostly ASCII: decoded in parts
        ),
        max_size=40,
    )
    .map(b"".join)
    .filter(lambda value: b"\0" not in value)  # no UTF-16LE reading
)
def test_utf8_is_read_as_decoding_reads_it(value: bytes) -> None:
    assert printable_runs(value) == _utf8_runs(value)
