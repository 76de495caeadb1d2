"""A text member the CSV sniffer cannot parse is text, never a failed scan."""

from __future__ import annotations

import pytest

from gateway.classify import DetectorSet
from gateway.classify.formats.testing import label_counts, scan_bytes

DETECTORS = DetectorSet.build()


@pytest.mark.parametrize("body", [b"a,b\rc,d\ne,f\n", b"x\ty\rz\n1\t2\n", b"\r,\n,\r\n"])
def test_a_lone_carriage_return_in_a_line_is_plain_text(body: bytes) -> None:
    summary = scan_bytes(DETECTORS, body)
    assert summary.content.type == "text/plain"
    assert not summary.unscannable


def test_its_identifiers_are_still_found() -> None:
    body = b"id,phone\r13812345678,x\nname,13912345678\n"
    assert label_counts(scan_bytes(DETECTORS, body)).get("pii.cn_phone") == 2
