"""Property (issue 13): identifiers are found through any stack of encodings, at any chunking.

For text with identifiers planted in it and any stack of up to three of the
encodings the classifier decodes (hypothesis picks them and their order: e.g.
percent-encode, then base64, then JSON-escape), the scan of the encoded bytes,
cut into chunks anywhere, finds the same labels and counts as the scan of the
plain text.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify import DetectorSet
from gateway.classify.formats.testing import label_counts
from gateway.classify.testing import ENCODINGS, bank_card, cn_mobile, hkid, resident_id, scan_chunks

DETECTORS = DetectorSet.build()

WORDS = ("patient", "visit", "record", "note", "the", "clinic", "seen", "on", "Monday", "病人")


def identifier(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return resident_id(rng)
    if kind == 1:
        return cn_mobile(rng)
    if kind == 2:
        return hkid(rng)
    if kind == 3:
        return bank_card(rng)
    if kind == 4:
        return f"user{rng.randrange(1000)}@mail.example.com"
    return f"+852 {rng.randint(2000, 9999)} {rng.randint(0, 9999):04d}"


@st.composite
def planted_text(draw: st.DrawFn) -> str:
    """A few lines of words with identifiers among them (plain text, not a table)."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        for _ in range(rng.randint(0, 2)):
            words.insert(rng.randrange(len(words) + 1), identifier(rng))
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


def encode(text: str, stack: list[str]) -> bytes:
    """``text`` through the encodings of ``stack``, innermost first."""
    for name in stack:
        text = ENCODINGS[name](text)
    return text.encode()


def scan(chunks: list[bytes]) -> dict[str, int]:
    return label_counts(scan_chunks(DETECTORS, chunks))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks) if b > a]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    text=planted_text(),
    stack=st.lists(st.sampled_from(sorted(ENCODINGS)), min_size=1, max_size=3),
    points=st.lists(st.integers(0, 1 << 20), max_size=12),
)
def test_identifiers_are_found_through_any_stack_of_encodings(
    text: str, stack: list[str], points: list[int]
) -> None:
    expected = scan([text.encode()])
    data = encode(text, stack)
    assert scan(cut(data, points)) == expected, stack


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=planted_text(),
    stack=st.lists(st.sampled_from(sorted(ENCODINGS)), min_size=1, max_size=2),
)
def test_one_byte_chunks_find_the_same(text: str, stack: list[str]) -> None:
    data = encode(text, stack)
    assert scan([data[i : i + 1] for i in range(len(data))]) == scan([data])
