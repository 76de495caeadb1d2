"""Helpers for tests and benchmarks (STYLE.md: ship the helpers users test with).

**Identifiers.** Every generator returns a value that passes the
classifier's validators (check characters, province codes, Luhn), drawn from
``rng`` so that a seeded test or benchmark is reproducible. None is a real
person's identifier except by chance, as with any random valid number.

**Encoders.** The encodings text travels in, as a sender's tools write them,
for checking that a detector still finds its values through them (the
classifier decodes them: ``gateway.classify.decode.transforms``). Each takes
text (or bytes) and returns the encoded form; they stack, innermost first
(:data:`ENCODINGS` names each, as text to text)::

    body = json_document(base64_lines(form_urlencode(text).encode()))

**Chunking.** The classifier's result must not depend on how its input is
cut into chunks (SPEC §3). :func:`chunked` cuts bytes at random points,
:func:`every_split` at every point, and :func:`assert_chunk_invariant`
checks a scan function gives one result for all of them. Anyone writing a
custom detector can use them with their own values::

    from gateway.classify import DetectorSet
    from gateway.classify.formats.testing import label_counts

    detectors = DetectorSet.build(custom=[my_detector])
    body = html_decimal_refs("project code PRJ-123456").encode()

    def scan(chunks: list[bytes]) -> dict[str, int]:
        return label_counts(scan_chunks(detectors, chunks))

    assert scan([body]) == {"custom.project": 1}
    assert_chunk_invariant(scan, body)
"""

from __future__ import annotations

import base64
import binascii
import html.entities
import json
import random
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

from gateway.classify import validators as V
from gateway.classify.decode.core import ScanLimits
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.formats.base import BytesAccess
from gateway.classify.summary import ScanSummary


def resident_id(rng: random.Random) -> str:
    """A Mainland Resident Identity Card number (GB 11643 check character)."""
    province = rng.choice(sorted(V.PROVINCE_CODES)).decode()
    body = (
        f"{province}{rng.randint(0, 9999):04d}{rng.randint(1950, 2010)}"
        f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    )
    return body + chr(V.mod11_2_check_char(body.encode()))


def cn_mobile(rng: random.Random) -> str:
    """A Mainland mobile number, 11 digits (``1[3-9]`` + 9)."""
    return f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}"


def hkid(rng: random.Random) -> str:
    """A Hong Kong Identity Card number with its bracketed check digit."""
    letter = chr(rng.randint(65, 90))
    digits = f"{rng.randint(0, 999_999):06d}"
    check = chr(V.hkid_check_char(letter.encode(), digits.encode()))
    return f"{letter}{digits}({check})"


def bank_card(rng: random.Random) -> str:
    """A 16-digit payment card number passing Luhn, grouped by four."""
    body = rng.choice(("4", "62", "51", "35")) + "".join(str(rng.randint(0, 9)) for _ in range(13))
    body = body[:15]
    for check in "0123456789":
        if V.luhn_ok((body + check).encode()):
            digits = body + check
            return " ".join(digits[i : i + 4] for i in range(0, 16, 4))
    raise AssertionError("unreachable: one Luhn digit always fits")


def uscc(rng: random.Random) -> str:
    """A Unified Social Credit Code (GB 32100 check character)."""
    alphabet = V.USCC_ALPHABET.decode()
    body = "91" + f"{rng.randint(110000, 659999)}" + "".join(rng.choice(alphabet) for _ in range(9))
    return body + chr(V.uscc_check_char(body.encode()))


# --------------------------------------------------------------------------- encoders


def assay_csv(seed: int = 14, *, rows: int = 20_000, mobile: bool = False) -> bytes:
    """A lab's assay table whose IDs are random digits (issue 14's example): an 11-digit
    ``sample_id`` and a 16-digit ``barcode`` with a card prefix, which pass the phone and
    card checks at the chance rate; with ``mobile``, a column of real Mainland mobile
    numbers, which are personal data."""
    rng = random.Random(seed)
    lines = ["sample_id,barcode,chrom,pos,depth,af" + (",mobile" if mobile else "")]
    for _ in range(rows):
        line = (
            f"{rng.randint(10**10, 10**11 - 1)},62{rng.randint(10**13, 10**14 - 1)},"
            f"chr{rng.randint(1, 22)},{rng.randint(1, 10**8)},{rng.randint(5, 500)},"
            f"{rng.random():.4f}"
        )
        lines.append(line + (f",{cn_mobile(rng)}" if mobile else ""))
    return ("\n".join(lines) + "\n").encode()


def json_escape_all(text: str) -> str:
    """Every character of ``text`` as a JSON ``\\uXXXX`` escape (astral ones as a
    surrogate pair), without quotes: what a JSON writer that escapes everything emits."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


def json_document(text: str) -> str:
    """``text`` as the one string of a JSON document (``{"text": "…"}``), escaped as
    ``json.dumps`` does (quotes, backslashes, controls; non-ASCII as ``\\uXXXX``)."""
    return json.dumps({"text": text})


def json_escaped_document(text: str) -> str:
    """``text`` as the one string of a JSON document, every character escaped."""
    return '{"text": "' + json_escape_all(text) + '"}'


def html_decimal_refs(text: str) -> str:
    """Every character of ``text`` as a decimal character reference (``&#49;``)."""
    return "".join(f"&#{ord(char)};" for char in text)


def html_hex_refs(text: str) -> str:
    """Every character of ``text`` as a hex character reference (``&#x31;``)."""
    return "".join(f"&#x{ord(char):x};" for char in text)


#: The HTML5 name of each character that has one (the shortest, e.g. ``&lpar;``).
_ENTITY_OF: dict[str, str] = {}
for _name, _char in sorted(html.entities.html5.items(), key=lambda item: len(item[0])):
    if _name.endswith(";") and len(_char) == 1:
        _ENTITY_OF.setdefault(_char, _name)


def html_named_refs(text: str) -> str:
    """``text`` with every character that has an HTML5 name written as it
    (``&lpar;``, ``&period;``, ``&colon;`` …), the others as decimal references."""
    return "".join(
        f"&{_ENTITY_OF[char]}" if char in _ENTITY_OF else f"&#{ord(char)};" for char in text
    )


def percent_encode_all(text: str) -> str:
    """Every byte of ``text``'s UTF-8 as a percent escape (``%31``), RFC 3986 §2.1."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


def form_urlencode(text: str, name: str = "data") -> str:
    """``text`` as the value of one field of an ``application/x-www-form-urlencoded``
    body, every byte percent-encoded: ``data=%31%31…``."""
    return f"{name}={percent_encode_all(text)}"


def base64_lines(data: bytes, width: int = 76) -> str:
    """Standard base64 of ``data`` in lines of ``width`` characters (MIME: 76, PEM: 64),
    each ended by a newline."""
    encoded = base64.b64encode(data).decode()
    return "".join(encoded[i : i + width] + "\n" for i in range(0, len(encoded), width))


def base64_url(data: bytes) -> str:
    """URL-safe base64 of ``data`` without padding (RFC 4648 §5, as JWTs use it)."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hex_encode(data: bytes) -> str:
    """Lower-case hex of ``data``, one run."""
    return binascii.hexlify(data).decode()


#: Every encoder above by name, as text in and encoded text out (the bytes
#: encoders take the text's UTF-8), for stacking them: the encodings a sender's
#: tools write, innermost applied first.
ENCODINGS: Final[dict[str, Callable[[str], str]]] = {
    "json-escape-all": json_escape_all,
    "json-document": json_document,
    "json-escaped-document": json_escaped_document,
    "html-decimal": html_decimal_refs,
    "html-hex": html_hex_refs,
    "html-named": html_named_refs,
    "form-urlencoded": form_urlencode,
    "base64": lambda text: base64.b64encode(text.encode()).decode(),
    "base64-mime": lambda text: base64_lines(text.encode(), 76),
    "base64-pem": lambda text: base64_lines(text.encode(), 64),
    "base64-url": lambda text: base64_url(text.encode()),
    "hex": lambda text: hex_encode(text.encode()),
}


# --------------------------------------------------------------------------- chunking

T = TypeVar("T")


def chunked(data: bytes, rng: random.Random, max_chunks: int = 16) -> list[bytes]:
    """``data`` cut at up to ``max_chunks - 1`` random points (1-byte pieces included)."""
    if len(data) < 2:
        return [data]
    cuts = sorted(
        rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, max_chunks - 1)))
    )
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def scan_chunks(
    detectors: DetectorSet, chunks: list[bytes], limits: ScanLimits | None = None
) -> ScanSummary:
    """Scan ``chunks`` as one input (under ``limits``, the defaults when None), fed one by
    one as the egress feeds them, then finished with random access to the whole (a
    footer-indexed format is read)."""
    with Scanner(detectors, b"k" * 32, limits or ScanLimits()) as scanner:
        for chunk in chunks:
            scanner.feed(chunk)
        return scanner.finish(BytesAccess(b"".join(chunks)))


def every_split(data: bytes) -> Iterator[list[bytes]]:
    """``data`` cut in two at every point: ``[data[:i], data[i:]]`` for each ``i``."""
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def assert_chunk_invariant(
    scan: Callable[[list[bytes]], T],
    data: bytes,
    *,
    rng: random.Random | None = None,
    random_cuts: int = 8,
    max_every_split: int = 4096,
) -> T:
    """Check that ``scan`` gives one result for ``data`` however it is chunked.

    ``scan`` takes the chunks and returns something comparable (label counts, a
    summary without its timing). It is run on the whole input, on one-byte
    chunks, on ``random_cuts`` random cuttings and, for inputs of at most
    ``max_every_split`` bytes, on every cut in two.

    Returns:
        the result on the whole input.

    Raises:
        AssertionError: naming the cutting that gave another result.
    """
    rng = rng or random.Random(len(data))
    whole = scan([data])
    cuttings: list[list[bytes]] = [[data[i : i + 1] for i in range(len(data))]]
    cuttings += [chunked(data, rng) for _ in range(random_cuts)]
    if len(data) <= max_every_split:
        cuttings += list(every_split(data))
    for chunks in cuttings:
        result = scan(chunks)
        if result != whole:
            sizes = [len(chunk) for chunk in chunks][:20]
            raise AssertionError(
                f"chunked as {sizes}{'…' if len(chunks) > 20 else ''}: {result!r} != {whole!r}"
            )
    return whole
