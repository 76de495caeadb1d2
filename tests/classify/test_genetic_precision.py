"""``sensitive.genetic`` outside the genomic formats: the token rule (issue 13).

A run of 60 bases counts only as a token of its own, as identifiers do (SPEC
§3.1 boundaries): not when a letter, digit or other base64 byte touches it, and
not when it is a line of a base64 block (PEM, MIME, wrapped JSON or XML) whose
neighbouring lines are base64. Zero bytes encode as ``AAAA…``, so base64 of
padded binary was counted as genetic data and blocked by the Human Genetic
Resources rules; every base64 and PEM test here failed before the rule.

Real sequences keep their counts: each case in :data:`SEQUENCES` expects the
count and distinct count the matcher gave before the rule (recorded on that
code), and :func:`token_rule` is an independent whole-text statement of the
rule that both cores are compared with, at any chunking.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.classify import detectors as D
from gateway.classify import labels as L
from gateway.classify.detectors import DetectorSet
from gateway.classify.formats.testing import label_counts, scan_bytes
from gateway.classify.matcher import GENETIC_PENDING_MAX
from tests.classify.test_native import scan_cut

BUILTIN = DetectorSet.build()
CORES = (True, False)  # the compiled core and the Python reference


def genetic(data: bytes | str, cuts: Iterable[int] = ()) -> tuple[int, int]:
    """(count, distinct) of sensitive.genetic: both cores, whole and cut, must agree."""
    raw = data.encode() if isinstance(data, str) else data
    cuts = list(cuts)
    results = [
        scan_cut(BUILTIN, raw, c, native=n, content_type="text/plain")
        for n in CORES
        for c in ([], cuts)
    ]
    assert all(r == results[0] for r in results), results
    stats = results[0].labels.get(L.GENETIC)
    return (stats.count, stats.distinct) if stats else (0, 0)


# -- the rule, stated on the whole text ----------------------------------------

#: The rule's bytes and bounds, as the issue states them (detectors.py holds the
#: ones the cores use; test_the_rule_tables_are_the_detectors_ones compares).
MIN_RUN = 60
SPACE_MAX = 64
BASES = b"ACGTNacgtn"
TOKEN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="
SPACE = b" \t\r"


def test_the_rule_tables_are_the_detectors_ones() -> None:
    assert (D.GENETIC_MIN_RUN, D.GENETIC_SPACE_MAX) == (MIN_RUN, SPACE_MAX)
    assert (D.GENETIC_BASES, set(D.GENETIC_TOKEN), D.GENETIC_SPACE) == (BASES, set(TOKEN), SPACE)
    assert (D.GENETIC_ESCAPE_BREAK, D.GENETIC_ESCAPE_SPACE, D.GENETIC_ESCAPE_TOKEN) == (
        b"n",
        b"tr",
        b"/",
    )


_BASE, _TOKEN, _SPACE, _BREAK, _OTHER = "base", "token", "space", "break", "other"


def _units(text: bytes) -> list[tuple[str, int]]:
    """The text as (class, byte) units: an escape ("\\n", "\\t", "\\r", "\\/") is one unit."""
    units = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == 0x5C and i + 1 < len(text) and text[i + 1] in b"ntr/":
            d = text[i + 1]
            units.append((_BREAK if d == 0x6E else _SPACE if d in b"tr" else _TOKEN, d))
            i += 2
            continue
        if c in BASES:
            units.append((_BASE, c))
        elif c in TOKEN:
            units.append((_TOKEN, c))
        elif c in SPACE:
            units.append((_SPACE, c))
        elif c == 0x0A:
            units.append((_BREAK, c))
        else:
            units.append((_OTHER, c))
        i += 1
    return units


def _evidence(span: list[tuple[str, int]], *, padding: bool) -> bool:
    """Whether a neighbouring line's token shows base64 (its first/last 60 units)."""
    if len(span) >= MIN_RUN:
        return any(cls == _TOKEN for cls, _ in span[:MIN_RUN])
    if not any(cls == _TOKEN for cls, _ in span):
        return False
    chars = bytes(c for _, c in span)
    armor = b"-----" in chars and re.search(rb"[A-Za-z]", chars) is not None
    padded = padding and chars.endswith(b"=") and chars.strip(b"=") != b""
    return armor or padded


def token_rule(text: bytes) -> tuple[int, int]:
    """(count, distinct) by the token rule, over the whole framed member at once."""
    hmax, least = SPACE_MAX, MIN_RUN
    lines: list[list[tuple[str, int]]] = [[]]
    for unit in _units(b"\n" + text + b"\n\n"):
        if unit[0] == _BREAK:
            lines.append([])
        else:
            lines[-1].append(unit)

    def segments(line: list[tuple[str, int]]) -> list[tuple[int, int]]:
        found, i = [], 0
        while i < len(line):
            if line[i][0] != _BASE:
                i += 1
                continue
            j = i
            while j < len(line) and line[j][0] == _BASE:
                j += 1
            if j - i >= least:
                found.append((i, j))
            i = j
        return found

    def blanks(units: list[tuple[str, int]]) -> bool:
        return len(units) <= hmax and all(cls == _SPACE for cls, _ in units)

    def lead(line: list[tuple[str, int]]) -> list[tuple[str, int]] | None:
        """The first token of a line after at most hmax blanks (None: no token there)."""
        k = 0
        while k < len(line) and line[k][0] == _SPACE:
            k += 1
        if k > hmax or k == len(line) or line[k][0] not in (_BASE, _TOKEN):
            return None
        end = k
        while end < len(line) and line[end][0] in (_BASE, _TOKEN):
            end += 1
        return line[k:end]

    def continues(n: int) -> bool:
        """Whether line n starts with a run of bases long enough to count (a next line)."""
        token = lead(lines[n]) if n < len(lines) else None
        return (
            token is not None and len(token) >= least and all(c == _BASE for c, _ in token[:least])
        )

    def top(n: int, start: int) -> bool:
        """Whether the run at lines[n][start:] begins clean (not glued, no base64 above)."""
        line = lines[n]
        if start and line[start - 1][0] in (_TOKEN, _BASE):
            return line[start - 1][1] == ord("=")
        if not blanks(line[:start]) or n == 0:
            return True
        above = lines[n - 1]
        k = len(above)
        while k and above[k - 1][0] == _SPACE:
            k -= 1
        if len(above) - k > hmax or not k or above[k - 1][0] not in (_BASE, _TOKEN):
            return True
        begin = k
        while begin and above[begin - 1][0] in (_BASE, _TOKEN):
            begin -= 1
        return not _evidence(above[begin:k][::-1], padding=False)

    def bottom(n: int, end: int) -> str:
        """'glue', 'clean' or 'next' (the next line continues the block) after a run."""
        line = lines[n]
        if end < len(line) and line[end][0] in (_TOKEN, _BASE):
            return "glue"
        if not blanks(line[end:]):
            return "clean"
        if continues(n + 1):
            return "next"
        token = lead(lines[n + 1]) if n + 1 < len(lines) else None
        return "glue" if token is not None and _evidence(token, padding=True) else "clean"

    count, values = 0, set()
    block: list[bytes] = []
    clean = True
    for n, line in enumerate(lines):
        for start, end in segments(line):
            if not block:
                clean = top(n, start)
            block.append(bytes(c for _, c in line[end - least : end]).upper())
            outcome = bottom(n, end)
            if outcome == "next":
                continue
            if clean and outcome == "clean":
                count += len(block)
                values.update(block)
            block = []
    return count, len(values)


# -- binary data and its base64 ----------------------------------------------------

_RNG = random.Random(1913)


def _png(width: int = 48, height: int = 40) -> bytes:
    """A real PNG: a transparent RGBA image, its IDAT deflated with stored blocks."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(4 * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Software\x00hksz test")
        + chunk(b"IDAT", zlib.compress(rows, 0))
        + chunk(b"IEND", b"")
    )


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("readme.txt", "thumbnails of the index case\n")
        z.writestr("blank.bin", bytes(1500))
        z.writestr("noise.bin", _RNG.randbytes(700))
    return out.getvalue()


def _gzip() -> bytes:
    return gzip.compress(bytes(2048) + b"tail of a sparse file\n", compresslevel=0, mtime=0)


PAYLOADS: dict[str, Callable[[], bytes]] = {
    "zero-padded": lambda: _RNG.randbytes(37) + bytes(2000),
    "random-with-zeros": lambda: _RNG.randbytes(900) + bytes(300) + _RNG.randbytes(900),
    "leading-zeros": lambda: bytes(600) + _RNG.randbytes(400),
    "png": _png,
    "zip": _zip,
    "gzip": _gzip,
}


def _wrap(text: str, width: int | None, sep: str = "\n") -> str:
    if width is None:
        return text
    return sep.join(text[i : i + width] for i in range(0, len(text), width))


ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "standard": lambda b: base64.b64encode(b).decode(),
    "url-safe": lambda b: base64.urlsafe_b64encode(b).decode(),
    "url-safe-unpadded": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    "mime-76": lambda b: base64.encodebytes(b).decode(),
    "pem-64": lambda b: _wrap(base64.b64encode(b).decode(), 64) + "\n",
}


def _json(text: str) -> str:
    return json.dumps({"name": "thumb.png", "size": 3, "data": text, "ok": True})


def _json_pretty(text: str) -> str:
    return json.dumps({"attachments": [{"name": "thumb.png", "data": text}]}, indent=2)


def _xml(text: str) -> str:
    return f'<?xml version="1.0"?>\n<doc>\n  <image type="base64">{text}</image>\n</doc>\n'


def _xml_indented(text: str) -> str:
    body = "\n".join("      " + line for line in text.strip("\n").split("\n"))
    return f'<doc>\n  <image encoding="base64">\n{body}\n  </image>\n</doc>\n'


def _pem(text: str) -> str:
    body = text.strip("\n")
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def _email(text: str) -> str:
    body = text.strip("\n").replace("\n", "\r\n")
    return (
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: thumbnail\r\n\r\n"
        f"Hi,\r\n\r\nthe thumbnail, as my client sent it:\r\n{body}\r\n\r\nBob\r\n"
    )


CONTAINERS: dict[str, Callable[[str], str]] = {
    "json": _json,
    "json-pretty": _json_pretty,
    "xml": _xml,
    "xml-indented": _xml_indented,
    "pem": _pem,
    "email": _email,
}


def _has_run(text: str | bytes) -> bool:
    """Whether the old rule (any run of 60 bases) sees genetic data in the text."""
    raw = text.encode() if isinstance(text, str) else text
    return re.search(rb"[ACGTNacgtn]{60}", raw) is not None


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_base64_of_binary_is_no_genetic_data(payload: str, encoding: str, container: str) -> None:
    text = CONTAINERS[container](ENCODINGS[encoding](PAYLOADS[payload]()))
    assert _has_run(text)  # what the old rule counted
    assert token_rule(text.encode()) == (0, 0)
    cuts = list(range(0, len(text), 997)) + list(range(5, len(text), 61))
    assert genetic(text, cuts) == (0, 0)


@pytest.mark.parametrize("width", [60, 64, 72, 76, 80, 100])
def test_pem_blocks_of_zero_bytes_are_no_genetic_data(width: int) -> None:
    # All-zero data: every line is "AAAA…"; the armor tells it from a sequence.
    for size in (1998, 2000, 2001):
        body = _wrap(base64.b64encode(bytes(size)).decode(), width)
        text = _pem(body)
        assert genetic(text, range(0, len(text), 173)) == (0, 0), size
        key = text.replace("CERTIFICATE", "PRIVATE KEY")
        assert genetic(key) == (0, 0), size


@pytest.mark.parametrize("sep", ["\n", "\\n", "\r\n"])
def test_padding_ends_a_block_of_zero_bytes(sep: str) -> None:
    # base64 of zero bytes alone, wrapped: its last line's padding shows it.
    for size in (1000, 1001):
        body = _wrap(base64.b64encode(bytes(size)).decode(), 76, sep)
        assert genetic(f'{{"data": "{body}"}}') == (0, 0), size


def test_the_issue_examples() -> None:
    thumb = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(3000)).decode()
    doc = json.dumps({"thumb": thumb}).encode()
    assert L.GENETIC not in label_counts(scan_bytes(BUILTIN, doc))
    pem = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(2000))
        + b"-----END CERTIFICATE-----\n"
    )
    assert L.GENETIC not in label_counts(scan_bytes(BUILTIN, pem))


def _distinguishable(text: str, wrapped: bool) -> bool:
    """Whether base64 text shows that it is not a run of bases.

    Base64 made only of base letters is one (of zero bytes: "AAAA…"). Wrapped,
    a block whose lines are all bases but for a last line under 60 bytes
    without padding is as much a wrapped sequence; both are left out.
    """
    lines = text.strip("\n").split("\n")
    body = "".join(lines if not wrapped or len(lines) == 1 else lines[:-1])
    last = lines[-1]
    shows = last.endswith("=") or (len(last) >= 60 and bool(last.strip("ACGTNacgtn")))
    return bool(body.strip("ACGTNacgtn")) or (wrapped and len(lines) > 1 and shows)


@given(
    data=st.binary(min_size=1, max_size=300),
    zeros=st.integers(45, 3000),
    leading=st.booleans(),
    alphabet=st.sampled_from(["standard", "url-safe", "url-safe-unpadded"]),
    width=st.one_of(st.none(), st.integers(60, 200)),
    container=st.sampled_from(sorted(CONTAINERS)),
    cuts=st.lists(st.integers(0, 6000), max_size=6),
)
def test_any_base64_of_zero_padded_binary_is_no_genetic_data(
    data: bytes,
    zeros: int,
    leading: bool,
    alphabet: str,
    width: int | None,
    container: str,
    cuts: list[int],
) -> None:
    binary = bytes(zeros) + data if leading else data + bytes(zeros)
    encoded = _wrap(ENCODINGS[alphabet](binary), width)
    assume(_has_run(encoded) and _distinguishable(encoded, width is not None))
    text = CONTAINERS[container](encoded)
    assert token_rule(text.encode()) == (0, 0)
    assert genetic(text, cuts) == (0, 0)


# -- real sequences keep their counts -----------------------------------------------


def _dna(rng: random.Random, n: int, alphabet: str = "ACGT") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_SEQ = random.Random(13)
S1, S2, S3 = _dna(_SEQ, 120), _dna(_SEQ, 75), _dna(_SEQ, 300)
WRAPPED = _dna(_SEQ, 250)

#: Sequences in plain text and the (count, distinct) the matcher gave for each
#: before the token rule (measured on that code, whole and cut, both cores).
SEQUENCES: dict[str, tuple[str, tuple[int, int]]] = {
    "prose": (f"The patient's amplicon was {S1} and it matched.\n", (1, 1)),
    "prose-end": (f"Sequence: {S2}.", (1, 1)),
    "csv": (f'id,name,sequence,qc\n1,alpha,{S1},pass\n2,beta,"{S2}",fail\n', (2, 2)),
    "tsv": (f"id\tsequence\n1\t{S3}\n", (1, 1)),
    "json": ('{"sample": "S1", "seq": "' + S1 + '", "qc": 0.98}', (1, 1)),
    "json-list": ('[\n  {"seq": "' + S2 + '"},\n  {"seq": "' + S3.lower() + '"}\n]\n', (2, 2)),
    "lower-case": (f"read: {S1.lower()}\n", (1, 1)),
    "mixed-case": (f"read: {S1[:50].lower()}{S1[50:]}\n", (1, 1)),
    "with-n": (f"contig: {S2}NNNNNNNNNN{S2}\n", (1, 1)),
    "wrapped-60": (f"Here is the sequence:\n{_wrap(WRAPPED, 60)}\nThanks,\nBob\n", (4, 4)),
    "wrapped-70": (f"Sequence\n{_wrap(WRAPPED, 70)}\n\nRegards\n", (3, 3)),
    "wrapped-80-crlf": (f"Sequence:\r\n{_wrap(WRAPPED, 80, chr(13) + chr(10))}\r\n", (3, 3)),
    "wrapped-indented": (
        "<pre>\n" + "\n".join("    " + s for s in _wrap(WRAPPED, 60).split("\n")) + "\n</pre>\n",
        (4, 4),
    ),
    "wrapped-then-a-word": (f"{_wrap(WRAPPED, 60)}\nThanks\n", (4, 4)),
    "wrapped-then-prose": (f"{_wrap(WRAPPED, 60)}\nThe above is from the index case.\n", (4, 4)),
    "fasta-in-text": (
        f">seq1 Homo sapiens\n{_wrap(WRAPPED, 60)}\n>seq2\n{_wrap(S3, 70)}\n",
        (8, 8),
    ),
    "html": (f"<p>Probe <code>{S1}</code></p>", (1, 1)),
    "chinese": (f"序列：{S1}。样本{S2}，结束", (2, 2)),
    "markdown": (f"```\n{_wrap(WRAPPED, 60)}\n```\n", (4, 4)),
    "query-string": (f"seq={S1}&id=4\n", (1, 1)),
    "json-escaped-lines": ('{"fasta": ">r1\\n' + _wrap(WRAPPED, 60, "\\n") + '\\n"}', (4, 4)),
    "quoted-lines": (f'"{S1}"\n"{S2}"\n', (2, 2)),
    "tab-indented": ("\t" + S1 + "\n", (1, 1)),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_sequences_keep_their_counts(name: str) -> None:
    text, before = SEQUENCES[name]
    raw = text.encode()
    assert token_rule(raw) == before
    assert genetic(raw, range(0, len(raw), 7)) == before
    assert genetic(raw, range(0, len(raw), 1)) == before


def test_sequences_are_found_through_the_decoder() -> None:
    for name in ("prose", "json", "csv", "wrapped-60", "json-escaped-lines"):
        text, (count, _) = SEQUENCES[name]
        found = label_counts(scan_bytes(BUILTIN, text.encode()))
        assert found.get(L.GENETIC) == count, name


@pytest.mark.parametrize(
    ("text", "counted"),
    [
        ("x" + "ACGT" * 15 + "y", False),  # inside a longer token
        ("1" + "ACGT" * 15, False),
        ("ACGT" * 15 + "_x", False),
        ("ACGT" * 15 + "=", False),  # padding ends a base64 token
        ("seq=" + "ACGT" * 15, True),  # "=" before a run does not join it
        ("x+" + "ACGT" * 15 + " ", False),
        ("ab/" + "ACGT" * 15, False),
        ("ab\\/" + "ACGT" * 15, False),  # JSON's escaped "/"
        ("5'-" + "ACGT" * 15 + "-3'", False),  # "-" is base64url's: a limit of the rule
        ('"\\t' + "ACGT" * 15 + '\\r\\n"', True),  # escaped blanks and line break
        ("(" + "ACGT" * 15 + ")", True),
        ("序列" + "ACGT" * 15 + "。", True),
    ],
)
def test_a_run_counts_only_as_a_token_of_its_own(text: str, counted: bool) -> None:
    expected = (1, 1) if counted else (0, 0)
    assert token_rule(text.encode()) == expected
    assert genetic(text) == expected


def test_base64_lines_next_to_a_sequence_decide_its_block() -> None:
    seq = _wrap(WRAPPED[:240], 60)  # four full lines
    b64 = _wrap(base64.b64encode(_RNG.randbytes(360)).decode(), 60)  # eight
    # A full base64 line right above or below makes the block base64 ...
    assert genetic(f"{b64}\n{seq}\n") == (0, 0)
    assert genetic(f"{seq}\n{b64}\n") == (0, 0)
    assert genetic(f"{b64}\n{seq}\n{b64}\n") == (0, 0)
    # ... a blank line between them does not, nor a shorter last line of the sequence.
    assert genetic(f"{b64}\n\n{seq}\n\n{b64}\n") == (4, 4)
    assert genetic(f"{seq}\nACGT\n{b64}\n") == (4, 4)
    # Short words, an armor-less dashed line, prose: no base64 evidence.
    assert genetic(f"Sequence\n{seq}\nThanks\n") == (4, 4)
    assert genetic(f"-----\n{seq}\n-----\n") == (4, 4)
    assert genetic(f"see NM_000546\n{seq}\nEnd of record\n") == (4, 4)


def test_a_block_of_base_lines_only_is_a_sequence() -> None:
    # Nothing tells base64 of zero bytes alone from a poly-A sequence: the
    # limit of the rule (documented in the module; not from real files).
    body = _wrap(base64.b64encode(bytes(900)).decode(), 76)
    assert body.strip("A\n") == ""
    assert genetic(f"<data>\n{body}\n</data>\n") == (16, 1)


def test_a_long_block_of_sequence_lines_counts_every_line() -> None:
    # More distinct lines than the matcher keeps pending: from there on they
    # count as they come, and the totals are the same.
    rng = random.Random(7)
    lines = [_dna(rng, 60) for _ in range(GENETIC_PENDING_MAX + 300)]
    text = ("Sequence:\n" + "\n".join(lines) + "\nEnd\n").encode()
    expected = (len(lines), len(set(lines)))
    assert token_rule(text) == expected
    assert genetic(text, range(0, len(text), 65_539)) == expected


def test_a_long_base64_block_of_zero_lines_counts_nothing() -> None:
    # Leading zero bytes: thousands of "AAAA…" lines before the first that shows base64.
    body = _wrap(base64.b64encode(bytes(300_000) + _RNG.randbytes(120)).decode(), 76)
    text = f"<data>\n{body}\n</data>\n"
    assert genetic(text, range(0, len(text), 100_003)) == (0, 0)


# -- chunk invariance and the reference rule ---------------------------------------

SPLIT_CASES = [
    "x " + "ACGT" * 15 + "x",  # a run, then a letter in the next chunk
    "x " + "ACGT" * 15 + " x",
    "AAAA" * 16 + "\nAAAA" * 2 + "B==\n",
    '{"d": "' + "\\n".join(["A" * 64] * 3) + '\\nAA=="}',
    '{"d": "' + "\\n".join([WRAPPED[:60]] * 3) + '"}',
    "seq:\r\n" + _wrap(WRAPPED, 60, "\r\n") + "\r\n-----END X-----\r\n",
    "   " + WRAPPED[:70] + "  \n  " + WRAPPED[70:140] + "\t\nab\\/cd\n",
    "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n" + "A" * 64 + "\n-----END CERTIFICATE-----\n",
]


@pytest.mark.parametrize("text", SPLIT_CASES)
def test_every_split_gives_the_same_result(text: str) -> None:
    raw = text.encode()
    expected = token_rule(raw)
    for native in CORES:
        for cuts in ([], *([cut] for cut in range(1, len(raw)))):
            result = scan_cut(BUILTIN, raw, cuts, native=native, content_type="text/plain")
            stats = result.labels.get(L.GENETIC)
            assert ((stats.count, stats.distinct) if stats else (0, 0)) == expected, cuts


_PIECES = [
    "ACGT" * 15,
    "acgtn" * 13,
    "A" * 64,
    "A" * 76,
    "AA==",
    "Thanks",
    "x",
    "=",
    "-",
    "-----BEGIN X-----",
    "\n",
    "\r\n",
    "\\n",
    "\\t",
    "\\/",
    "\\",
    " ",
    "  ",
    '"',
    ",",
    "iVBORw0KGgoAAAANSUhEUgAAADAAAAAoCAYAAAC",
]


@given(
    parts=st.lists(st.sampled_from(_PIECES), max_size=30),
    cuts=st.lists(st.integers(0, 2500), max_size=8),
)
def test_both_cores_follow_the_rule_at_any_cuts(parts: list[str], cuts: list[int]) -> None:
    raw = "".join(parts).encode()
    assert genetic(raw, cuts) == token_rule(raw)
