"""``gateway bench classify``: generated data, classifier and whole-path MB/s.

Kinds of data (SPEC §9, issues 2, 13 and 17), generated deterministically from a seed:

``prose``
    clean English and Chinese prose with years, percentages and amounts, no
    identifiers (target: classifier ≥ 1,000 MB/s, whole path ≥ 600 MB/s).
``science``
    scientific prose as people write lab notes and reports (issue 17): English
    and Chinese sentences where every few words is a measurement with decimals
    and units ("12.5 mg/L", "37.0 °C"), a count ("n = 248"), a statistic
    ("p < 0.001", "95% CI 1.12–1.87"), a year, a date or a range; no personal
    data (target: classifier ≥ 1,000 MB/s, whole path ≥ 600 MB/s).
``numeric``
    scientific CSV: sample ids, timestamps, floats printed the way analysis
    tools print them (fixed, exponent, full ``repr``) and integer read counts
    (≥ 300 / 250 MB/s).
``pii``
    PII-dense CSV of clinic visits: one identifier per ~200-byte row (Resident
    ID, phone, e-mail, HKID, card, USCC, HK phone), drawn from a population of
    :data:`PII_POPULATION` people, as in an event log where people recur
    (≥ 150 / 120 MB/s).
``json``
    JSON API output (issue 13): an array of records as ``json.dumps`` writes
    them, Chinese names and departments escaped as ``\\uXXXX``, ASCII fields
    (a request UUID, a timestamp, a score, a short note), an identifier in
    one record of :data:`JSON_ID_EVERY`. It measures the text transforms on
    the path they exist for: every string escape decoded, every run of 16
    base64 characters (the UUIDs) looked at. No SPEC target; reported.
``html``
    an HTML export of a visits table, as a CMS or an office suite's "save as
    HTML" writes it for an ASCII page: every Chinese character a decimal
    character reference (``&#24352;``), ``&nbsp;`` and ``&amp;`` in the
    cells, an identifier in one row of :data:`JSON_ID_EVERY`. It measures the
    character-reference transform on every cell. No target; reported.
``form``
    a request log of form posts: a line per request, its body
    ``application/x-www-form-urlencoded`` as browsers encode it (UTF-8 as
    ``%XX`` triples, spaces as ``+``), an identifier in one request of
    :data:`JSON_ID_EVERY`. It measures the percent-encoding transform. No
    target; reported.
``base64``
    JSON records carrying a base64 attachment each, as APIs embed files:
    alternately a small CSV of readings (an identifier in one of
    :data:`JSON_ID_EVERY`) and a PNG thumbnail (binary: decoded and dropped).
    It measures base64 runs decoded as nested members. No target; reported.

"Classifier" is the :class:`~gateway.classify.matcher.TextMatcher` fed the
text (Hyperscan, validation, counting, keyed hashing); "whole path" is
:class:`~gateway.classify.engine.Scanner` (SHA-256 + decode + classify) fed
:data:`CHUNK_BYTES` chunks, which is what ``gateway scan`` does (``--chunk-size
65536`` feeds what the proxy does). The baseline,
measured in the same run, is plain SHA-256 over the same bytes. "Engine" is
Hyperscan alone: the literal database streamed over the same text and the
digit database over the windows around the digit cores (as the matcher with
its compiled core scans them; without the core, both streamed), with a
callback that only records each hit, as the matcher's does. It is the ceiling for the
classifier in Python; the gap between it and the classifier is the per-hit
Python work (handlers, validation, counting).

Research files (``parquet``, ``pdf``, ``dicom``; issue 12) and form uploads
(``multipart``; issue 13) are measured by
:mod:`gateway.bench.formats` in MB/s of file bytes, in a table of their own
after the text kinds (``--kinds`` picks which run).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import struct
import sys
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

import hyperscan

from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.matcher import (
    NATIVE_AVAILABLE,
    SCAN_SLICE_BYTES,
    TAIL_BYTES,
    DigitScan,
    TextMatcher,
)
from gateway.classify.testing import bank_card, cn_mobile, hkid, resident_id, uscc

if TYPE_CHECKING:
    from gateway.bench import formats

#: Default chunk size fed to the scanner: what ``gateway scan`` reads per call.
#: ``--chunk-size 65536`` measures what the proxy feeds instead.
CHUNK_BYTES: Final = 1 << 20

#: Largest ``--chunk-size`` accepted (the largest ``gateway scan`` reads).
MAX_CHUNK_BYTES: Final = 64 << 20

#: People in the PII-dense data set; recurring, as in a visit or transaction log.
PII_POPULATION: Final = 20_000

#: One record in this many of the ``json``, ``html``, ``richtext``, ``form``
#: and ``base64`` kinds holds an identifier.
JSON_ID_EVERY: Final = 20

#: SPEC §9 and issue 2 targets, MB/s: (classifier alone, whole scan path). The
#: encoded-text kinds have none (issue 13 asks for their figures): 0 is always met.
TARGETS: Final[dict[str, tuple[float, float]]] = {
    "prose": (1000.0, 600.0),
    "science": (1000.0, 600.0),
    "numeric": (300.0, 250.0),
    "pii": (150.0, 120.0),
    "json": (0.0, 0.0),
    "html": (0.0, 0.0),
    "richtext": (0.0, 0.0),
    "form": (0.0, 0.0),
    "base64": (0.0, 0.0),
}

#: Default data size per kind (MB): large enough to dwarf per-scan set-up.
DEFAULT_SIZE_MB: Final = 64

#: The file kinds, measured by :mod:`gateway.bench.formats` (imported only when
#: one runs: it loads pyarrow, pydicom and PDFium, ~100 MB that ``gateway
#: bench proxy``'s memory measurement must not carry).
FILE_KINDS: Final = ("parquet", "pdf", "dicom", "multipart", "archive")
#: The text kinds (this module), one per target, and the file kinds (:mod:`gateway.bench.formats`).
TEXT_KINDS: Final = tuple(TARGETS)
KINDS: Final = (*TEXT_KINDS, *FILE_KINDS)

_MB: Final = 1_000_000

_WORDS: Final = (  # noqa: SIM905 - a sentence reads better than a list of words
    "the research team shared results with partners in the other park after review of "
    "methods data quality controls and the agreed schedule for joint publication while "
    "students prepared samples equipment and reports for the next phase of the project "
    "including budget travel training and open questions about licensing and storage "
    "innovation cooperation zone laboratory model simulation network battery material "
    "robotics semiconductor sensor imaging protein analysis platform software release"
).split()
_CJK: Final = (
    "科研团队",
    "合作区",
    "实验室",
    "数据质量",
    "深港科技创新",
    "联合发表",
    "研究成果",
    "项目进度",
    "创新平台",
    "人工智能",
    "新材料",
    "生物医药",
    "河套",
    "会议纪要",
)


def _prose(rng: random.Random, size: int) -> bytes:
    parts: list[str] = []
    total = 0
    while total < size:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(8, 20))]
        roll = rng.random()
        if roll < 0.2:
            sentence.insert(rng.randrange(len(sentence)), str(rng.randint(1990, 2026)))
        elif roll < 0.35:
            sentence.insert(rng.randrange(len(sentence)), f"{rng.uniform(0, 100):.1f}%")
        elif roll < 0.45:
            sentence.insert(rng.randrange(len(sentence)), f"HK${rng.randint(1, 999)},000")
        if rng.random() < 0.3:
            sentence.append("".join(rng.choice(_CJK) for _ in range(rng.randint(1, 4))) + "。")
        text = " ".join(sentence).capitalize() + (". " if rng.random() < 0.8 else ".\n\n")
        parts.append(text)
        total += len(text.encode())
    return "".join(parts).encode()[:size]


#: Units a measurement is written with in lab notes (SI and the customary ones).
_UNITS: Final = (
    "mg/L",
    "µg/mL",
    "ng/mL",
    "mmol/L",
    "µM",
    "nM",
    "mg/kg",
    "g",
    "mg",
    "kg",
    "mL",
    "µL",
    "L",
    "cm",
    "mm",
    "µm",
    "nm",
    "h",
    "min",
    "s",
    "ms",
    "Hz",
    "kHz",
    "MHz",
    "mV",
    "V",
    "mA",
    "W",
    "kPa",
    "MPa",
    "bar",
    "%",
    "rpm",
    "× g",
    "U/L",
    "IU/mL",
    "kDa",
    "bp",
    "GB",
)
#: Quantities a measurement is of.
_QUANTITIES: Final = (
    "concentration",
    "mean dose",
    "yield",
    "peak load",
    "flow rate",
    "median titre",
    "plasma level",
    "absorbance",
    "particle size",
    "film thickness",
    "voltage",
    "retention time",
    "body weight",
    "tumour volume",
    "signal",
    "uptake",
    "resistance",
)
_SCIENCE_CJK: Final = (
    "共纳入{n}例样本，平均值为{d}，标准差{s}。",
    "实验于{y}年{m}月完成，温度控制在{t}°C，湿度{p}%。",
    "结果显示浓度为{d} mg/L（95% CI {lo}–{hi}），P < 0.{z}。",
    "第{k}组随访{d}个月，有效率{p}%，较对照组提高{s}个百分点。",
    "样品在{t}°C下离心{k}分钟，转速{n} rpm，重复{k}次。",
    "{y}—{y2}年间共检测{n}份标本，阳性率{p}%。",
)


def _science(rng: random.Random, size: int) -> bytes:
    """Lab notes and reports: a measurement, count or statistic every few words."""

    def dec(lo: float, hi: float) -> str:
        return f"{rng.uniform(lo, hi):.{rng.choice((1, 1, 2, 2, 3, 4))}f}"

    def measurement() -> str:
        roll = rng.randrange(14)
        if roll == 0:
            return f"{dec(0, 500)} {rng.choice(_UNITS)}"
        if roll == 1:
            return f"{dec(-80, 120)} °C"
        if roll == 2:
            return f"n = {rng.randint(3, 12000)}"
        if roll == 3:
            return rng.choice(
                (f"p < 0.{'0' * rng.randint(0, 3)}1", f"p = {rng.random():.3f}", "P<0.05")
            )
        if roll == 4:
            lo = rng.uniform(0.2, 3)
            return f"95% CI {lo:.2f}–{lo + rng.uniform(0.05, 2):.2f}"
        if roll == 5:
            return f"{dec(0, 100)} ± {dec(0, 10)} {rng.choice(_UNITS)}"
        if roll == 6:
            return (
                f"({rng.randint(1950, 2026)})"
                if rng.random() < 0.5
                else str(rng.randint(1990, 2026))
            )
        if roll == 7:
            start = rng.randint(1995, 2022)
            return f"{start}–{start + rng.randint(1, 6)}"
        if roll == 8:
            return f"{rng.randint(1, 99)}-{rng.randint(100, 999)} {rng.choice(_UNITS)}"
        if roll == 9:
            what = rng.choice(("cells", "reads", "samples", "participants"))
            return f"{rng.randint(1, 999):,}{rng.choice(('', ',000'))} {what}"
        if roll == 10:
            return f"pH {dec(4, 9)}"
        if roll == 11:
            return f"{dec(1, 9)} × 10^{rng.randint(-9, 9)}"
        if roll == 12:
            return (
                f"{rng.uniform(0, 1):.2e}"
                if rng.random() < 0.5
                else f"r = {rng.uniform(-1, 1):.2f}"
            )
        return f"{2020 + rng.randint(0, 6)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"

    def chinese() -> str:
        y = rng.randint(2005, 2025)
        return rng.choice(_SCIENCE_CJK).format(
            n=rng.randint(12, 9999),
            d=dec(0, 300),
            s=dec(0, 20),
            y=y,
            y2=y + rng.randint(1, 5),
            m=rng.randint(1, 12),
            t=dec(4, 95),
            p=dec(0, 100),
            lo=f"{rng.uniform(0.5, 2):.2f}",
            hi=f"{rng.uniform(2, 4):.2f}",
            z=rng.choice(("001", "01", "05")),
            k=rng.randint(2, 30),
        )

    parts: list[str] = []
    total = 0
    while total < size:
        if rng.random() < 0.2:
            text = chinese() + ("\n" if rng.random() < 0.2 else "")
        else:
            words = [rng.choice(_QUANTITIES)]
            for _ in range(rng.randint(2, 5)):
                words.extend(rng.choice(_WORDS) for _ in range(rng.randint(2, 4)))
                words.append(measurement())
            sentence = " ".join(words)  # not capitalize(): it would lower "mg/L" and "°C"
            text = sentence[0].upper() + sentence[1:] + (". " if rng.random() < 0.85 else ".\n\n")
        parts.append(text)
        total += len(text.encode())
    return "".join(parts).encode()[:size]


def _numeric(rng: random.Random, size: int) -> bytes:
    rows = ["plate,well,timestamp,temperature_c,absorbance,concentration,ratio,read_count,depth\n"]
    total = len(rows[0])
    n = 0
    while total < size:
        n += 1
        row = (
            f"p{n // 96:05d},{'ABCDEFGH'[n % 8]}{n % 12 + 1:02d},"
            f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d},"
            f"{rng.uniform(-20, 40):.4f},{rng.random():.6f},{rng.uniform(0, 1e-3):.3e},"
            f"{rng.random()!r},{rng.randint(1, 999_999_999)},{rng.randint(0, 5000)}\n"
        )
        rows.append(row)
        total += len(row)
    return "".join(rows).encode()[:size]


def _person(rng: random.Random, n: int) -> tuple[str, ...]:
    return (
        resident_id(rng),
        cn_mobile(rng),
        f"patient{n}@mail{rng.randint(1, 50)}.example.com",
        hkid(rng),
        bank_card(rng),
        uscc(rng),
        f"+852 {rng.randint(2000, 9999)} {rng.randint(0, 9999):04d}",
    )


@lru_cache(maxsize=2)
def _population(seed: int) -> tuple[tuple[str, ...], ...]:
    """The people of the PII data set (cached: building them takes about a second)."""
    rng = random.Random(seed)
    return tuple(_person(rng, n) for n in range(PII_POPULATION))


def _pii(rng: random.Random, size: int) -> bytes:
    people = _population(rng.getrandbits(32))
    clinics = ("Futian", "Nanshan", "Lok Ma Chau", "Sha Tin", "Kowloon Tong", "Qianhai")
    header = "visit_id,date,clinic,amount_hkd,contact,notes\n"
    rows = [header]
    total = len(header)
    n = 0
    while total < size:
        n += 1
        ident = rng.choice(people)[n % 7]
        head = (
            f"V{n:08d},2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
            f"{rng.choice(clinics)},{rng.uniform(50, 5000):.2f},{ident},"
        )
        note: list[str] = []
        length = len(head)
        while length < 190:
            word = rng.choice(_WORDS)
            note.append(word)
            length += len(word) + 1
        row = head + " ".join(note) + "\n"
        rows.append(row)
        total += len(row)
    return "".join(rows).encode()[:size]


_SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁郑谢宋唐许韩冯邓曹彭曾"
_GIVEN: Final = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红娥玲芬燕"
_DEPARTMENTS: Final = (
    "生物医药研究所",
    "人工智能实验室",
    "新材料中心",
    "数据科学部",
    "深港合作办公室",
)


def _records(size: int, record: Callable[[int], str]) -> list[str]:
    """``record(1)``, ``record(2)`` … until they hold ``size`` characters with a
    separator after each."""
    records: list[str] = []
    total = 0
    while total < size:
        records.append(record(len(records) + 1))
        total += len(records[-1]) + 1
    return records


def _name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(2))


def _stamp(rng: random.Random) -> str:
    return (
        f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    )


def _json_api(rng: random.Random, size: int) -> bytes:
    """A JSON array of records as an API returns them (``json.dumps``: non-ASCII escaped)."""
    people = _population(rng.getrandbits(32))

    def record(n: int) -> str:
        fields: dict[str, object] = {
            "id": n,
            "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "name": _name(rng),
            "department": rng.choice(_DEPARTMENTS),
            "city": rng.choice(("Shenzhen", "Hong Kong", "Guangzhou")),
            "updated": _stamp(rng),
            "score": round(rng.random(), 4),
            "note": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))),
        }
        if n % JSON_ID_EVERY == 0:
            fields["contact"] = rng.choice(people)[n % 2]  # a Resident ID or a mobile
        return json.dumps(fields)

    return ("[" + ",".join(_records(size, record)) + "]").encode()[:size]


def _char_refs(text: str) -> str:
    """``text`` for an ASCII HTML page: every non-ASCII character a decimal reference."""
    return "".join(c if c < "\x80" else f"&#{ord(c)};" for c in text)


def _html_export(rng: random.Random, size: int) -> bytes:
    """An HTML table of visits as an exporter writes an ASCII page (non-ASCII as ``&#N;``)."""
    people = _population(rng.getrandbits(32))
    head = (
        '<!DOCTYPE html>\n<html><head><meta charset="us-ascii"><title>Visits</title></head>\n'
        "<body><table>\n<tr><th>No.</th><th>Name</th><th>Department</th><th>Updated</th>"
        "<th>Note</th><th>Contact</th></tr>\n"
    )

    def row(n: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 10))]
        note = " ".join(words).replace(" and ", " &amp; ", 1)
        contact = rng.choice(people)[n % 2] if n % JSON_ID_EVERY == 0 else "&nbsp;"
        return (
            f"<tr><td>{n}</td><td>{_char_refs(_name(rng))}</td>"
            f"<td>{_char_refs(rng.choice(_DEPARTMENTS))}</td><td>{_stamp(rng)}</td>"
            f"<td>{note}&nbsp;{_char_refs(rng.choice(_CJK))}</td><td>{contact}</td></tr>"
        )

    rows = "\n".join(_records(size - len(head), row))
    return (head + rows + "\n</table></body></html>\n").encode()[:size]


#: Inline formatting a rich-text editor wraps around parts of words.
_INLINE: Final = (("<b>", "</b>"), ("<i>", "</i>"), ('<span style="color:#c00">', "</span>"))


def _rich_text(rng: random.Random, size: int) -> bytes:
    """An HTML e-mail body or note from a rich-text editor: paragraphs whose words
    carry inline formatting, also inside a word ("<b>S</b>ample", "v<sub>2</sub>"),
    and identifiers split by it (the ``markup`` stage joins them)."""
    people = _population(rng.getrandbits(32))
    head = '<!DOCTYPE html>\n<html><body><div class="note">\n'

    def inside(word: str) -> str:
        if len(word) < 4:
            return word
        cut = rng.randint(1, len(word) - 1)
        opening, closing = rng.choice(_INLINE)
        return f"{word[:cut]}{opening}{word[cut:]}{closing}"

    def paragraph(n: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 20))]
        words = [inside(w) if rng.random() < 0.2 else w for w in words]
        if n % JSON_ID_EVERY == 0:
            words.append(inside(rng.choice(people)[n % 2]))
        return f"<p>{' '.join(words)}.</p>"

    rows = "\n".join(_records(size - len(head), paragraph))
    return (head + rows + "\n</div></body></html>\n").encode()[:size]


def _form_log(rng: random.Random, size: int) -> bytes:
    """A request log of form posts, each body URL-encoded as a browser encodes it."""
    people = _population(rng.getrandbits(32))

    def line(n: int) -> str:
        fields = {
            "name": _name(rng),
            "department": rng.choice(_DEPARTMENTS),
            "site": rng.choice(("Futian", "Lok Ma Chau", "Sha Tin")),
            "note": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))),
            "visit": _stamp(rng),
        }
        if n % JSON_ID_EVERY == 0:
            fields["contact"] = rng.choice(people)[n % 2]
        body = urllib.parse.urlencode(fields)  # UTF-8 as %XX, spaces as +
        return f"{_stamp(rng)} 10.8.{rng.randint(0, 255)}.{rng.randint(1, 254)} POST /visits {body}"

    return ("\n".join(_records(size, line)) + "\n").encode()[:size]


def _png(rng: random.Random, width: int = 32, height: int = 24) -> bytes:
    """A small RGB PNG thumbnail (a gradient with noise), as an image library writes one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(min(255, 4 * x + rng.randrange(48)) for x in range(width * 3))
        for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


def _base64_attachments(rng: random.Random, size: int) -> bytes:
    """JSON records each carrying a base64 attachment: a small CSV or a PNG thumbnail."""
    people = _population(rng.getrandbits(32))
    thumbnails = [base64.b64encode(_png(rng)).decode() for _ in range(16)]

    def record(n: int) -> str:
        if n % 2:
            rows = [
                f"{n}-{i},{_stamp(rng)},{rng.uniform(-20, 40):.3f},{rng.random():.5f}\n"
                for i in range(rng.randint(10, 30))
            ]
            if n % JSON_ID_EVERY == 1:
                rows.append(f"contact,{rng.choice(people)[n % 2]}\n")
            name, media = f"readings-{n}.csv", "text/csv"
            csv = "sample,time,temp_c,absorbance\n" + "".join(rows)
            attachment = base64.b64encode(csv.encode()).decode()
        else:
            name, media, attachment = f"thumb-{n}.png", "image/png", rng.choice(thumbnails)
        fields = {"id": n, "updated": _stamp(rng), "file": name, "type": media, "data": attachment}
        return json.dumps(fields)

    return ("[" + ",".join(_records(size, record)) + "]").encode()[:size]


#: Data generators by kind.
GENERATORS: Final[dict[str, Callable[[random.Random, int], bytes]]] = {
    "prose": _prose,
    "science": _science,
    "numeric": _numeric,
    "pii": _pii,
    "json": _json_api,
    "html": _html_export,
    "richtext": _rich_text,
    "form": _form_log,
    "base64": _base64_attachments,
}


def generate(kind: str, size: int, seed: int = 2) -> bytes:
    """``size`` bytes of generated data of ``kind`` (one of :data:`TEXT_KINDS`)."""
    return GENERATORS[kind](random.Random(f"{seed}:{kind}"), size)


@dataclass(frozen=True, slots=True)
class KindResult:
    """Best-of-N throughput for one kind of data.

    Attributes:
        kind: one of :data:`TEXT_KINDS`.
        size: bytes per run.
        classifier_mbps: best classifier-alone MB/s (1 MB = 10^6 bytes).
        classifier_runs: every classifier run's MB/s (spread on a shared machine).
        scan_mbps: best whole-path MB/s.
        scan_runs: every whole-path run's MB/s.
        sha256_mbps: baseline, plain SHA-256 MB/s in the same run.
        engine_mbps: Hyperscan alone (both databases, hits recorded, no handlers).
        engine_hits: hits the engine reported in one pass.
        findings: total findings in one scan (shows the classifier did its work).
        subjects: ``subjects`` of one scan.
        targets: the (classifier, whole path) targets.
    """

    kind: str
    size: int
    classifier_mbps: float
    classifier_runs: tuple[float, ...]
    scan_mbps: float
    scan_runs: tuple[float, ...]
    sha256_mbps: float
    engine_mbps: float
    engine_hits: int
    findings: int
    subjects: int
    targets: tuple[float, float]

    @property
    def passed(self) -> bool:
        """Both targets met."""
        return self.classifier_mbps >= self.targets[0] and self.scan_mbps >= self.targets[1]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (MB/s rounded to 0.1)."""
        return {
            "kind": self.kind,
            "bytes": self.size,
            "classifier_mbps": round(self.classifier_mbps, 1),
            "classifier_runs": [round(x, 1) for x in self.classifier_runs],
            "scan_mbps": round(self.scan_mbps, 1),
            "scan_runs": [round(x, 1) for x in self.scan_runs],
            "sha256_mbps": round(self.sha256_mbps, 1),
            "scan_vs_sha256": round(self.scan_mbps / self.sha256_mbps, 3),
            "engine_mbps": round(self.engine_mbps, 1),
            "engine_hits": self.engine_hits,
            "findings": self.findings,
            "subjects": self.subjects,
            "target_classifier_mbps": self.targets[0],
            "target_scan_mbps": self.targets[1],
            "passed": self.passed,
        }


def _classify_once(
    detectors: DetectorSet, secret: bytes, data: bytes, chunk: int = CHUNK_BYTES
) -> float:
    matcher = TextMatcher(detectors, secret)
    view = memoryview(data)
    started = time.perf_counter()
    matcher.begin_member("text/csv")
    for i in range(0, len(data), chunk):
        matcher.text(bytes(view[i : i + chunk]))
    matcher.end_member()
    matcher.result()
    return time.perf_counter() - started


def _scan_once(
    detectors: DetectorSet, secret: bytes, data: bytes, chunk: int = CHUNK_BYTES
) -> tuple[float, int, int]:
    scanner = Scanner(detectors, secret)
    view = memoryview(data)
    started = time.perf_counter()
    for i in range(0, len(data), chunk):
        scanner.feed(bytes(view[i : i + chunk]))
    summary = scanner.finish()
    elapsed = time.perf_counter() - started
    return elapsed, sum(s.count for s in summary.labels.values()), summary.subjects


def _engine_once(detectors: DetectorSet, data: bytes) -> tuple[float, int]:
    """Seconds for Hyperscan alone over ``data`` (both databases), and its hits."""
    hits: list[int] = []
    record = hits.append

    def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
        record(end << 20 | pid)

    view = memoryview(data)
    total = 0
    digit, literal = detectors.databases("text/csv")
    started = time.perf_counter()
    if NATIVE_AVAILABLE:
        # As the matcher with its compiled core: the digit database over the
        # windows around the digit cores (found by the core).
        block = detectors.digit_windows_database()
        scan = DigitScan(block, hyperscan.Scratch(block), digit, hyperscan.Scratch(digit))
        tail = b""
        for i in range(0, len(data), SCAN_SLICE_BYTES):
            piece = bytes(view[i : i + SCAN_SLICE_BYTES])
            scan.scan(piece, tail, i, hits)
            tail = piece[-TAIL_BYTES:]
            total += len(hits)
            hits.clear()
        scan.close()
        databases = [literal]
    else:
        databases = [digit, literal]
    for database in databases:
        scratch = hyperscan.Scratch(database)
        with database.stream(match_event_handler=on_match) as stream:
            for i in range(0, len(data), SCAN_SLICE_BYTES):
                stream.scan(bytes(view[i : i + SCAN_SLICE_BYTES]), scratch=scratch)
                total += len(hits)
                hits.clear()  # bounds the list, as the matcher's per-slice processing does
    return time.perf_counter() - started, total


def _sha256_once(data: bytes) -> float:
    view = memoryview(data)
    started = time.perf_counter()
    digest = hashlib.sha256()
    for i in range(0, len(data), CHUNK_BYTES):
        digest.update(view[i : i + CHUNK_BYTES])
    digest.hexdigest()
    return time.perf_counter() - started


def run(
    size_mb: float = DEFAULT_SIZE_MB,
    repeat: int = 3,
    kinds: tuple[str, ...] = TEXT_KINDS,
    detectors: DetectorSet | None = None,
    chunk: int = CHUNK_BYTES,
) -> list[KindResult]:
    """Generate each kind of data and measure it ``repeat`` times; best and spread.

    Slicing each ``chunk`` (a memcpy, as a reader's ``read()`` would do) is
    inside the measurement.
    """
    detectors = detectors or DetectorSet.build()
    secret = os.urandom(32)
    size = max(1, int(size_mb * _MB))
    results: list[KindResult] = []
    for kind in kinds:
        data = generate(kind, size)
        classify_runs = tuple(
            len(data) / _MB / _classify_once(detectors, secret, data, chunk) for _ in range(repeat)
        )
        scans = [_scan_once(detectors, secret, data, chunk) for _ in range(repeat)]
        scan_runs = tuple(len(data) / _MB / s[0] for s in scans)
        sha = max(len(data) / _MB / _sha256_once(data) for _ in range(repeat))
        engine = [_engine_once(detectors, data) for _ in range(repeat)]
        results.append(
            KindResult(
                kind=kind,
                size=len(data),
                classifier_mbps=max(classify_runs),
                classifier_runs=classify_runs,
                scan_mbps=max(scan_runs),
                scan_runs=scan_runs,
                sha256_mbps=sha,
                engine_mbps=max(len(data) / _MB / e[0] for e in engine),
                engine_hits=engine[0][1],
                findings=scans[0][1],
                subjects=scans[0][2],
                targets=TARGETS[kind],
            )
        )
    return results


def render(
    results: list[KindResult], as_json: bool, files: list[formats.FileResult] | None = None
) -> str:
    """The report: one JSON object, or a table with targets and the spread of runs.

    ``files`` (the research-file kinds) follow in a table of their own, and
    under ``"files"`` in the JSON object.
    """
    files = files or []
    passed = all(r.passed for r in results) and all(f.passed for f in files)
    if as_json:
        report: dict[str, object] = {
            "benchmark": "classify",
            "mb": "10^6 bytes",
            "cores": "one scanning thread (+ the SHA-256 helper thread in the scan path)",
            "matcher_core": _core_name(),
            "results": [r.to_json() for r in results],
            "passed": passed,
        }
        if files:
            report["files"] = [f.to_json() for f in files]
            report["files_mb"] = "10^6 bytes of the file (not of rendered text)"
        return json.dumps(report)
    lines: list[str] = []
    if results:
        lines.append(
            f"{'data':<8} {'classifier MB/s':>16} {'target':>7} {'scan MB/s':>10} {'target':>7} "
            f"{'sha256':>8} {'scan/sha':>8} {'engine':>7} {'hits':>8} {'findings':>9}"
            "  runs (classifier | scan)"
        )
    for r in results:
        runs = " ".join(f"{x:.0f}" for x in r.classifier_runs)
        scans = " ".join(f"{x:.0f}" for x in r.scan_runs)
        lines.append(
            f"{r.kind:<8} {r.classifier_mbps:>16.1f} {r.targets[0]:>7.0f} {r.scan_mbps:>10.1f} "
            f"{r.targets[1]:>7.0f} {r.sha256_mbps:>8.0f} {r.scan_mbps / r.sha256_mbps:>8.3f} "
            f"{r.engine_mbps:>7.0f} {r.engine_hits:>8} {r.findings:>9}  {runs} | {scans}"
        )
    if files:
        if lines:
            lines.append("")
        from gateway.bench import formats

        lines.extend(formats.render_lines(files))
    lines.append(f"matcher core: {_core_name()}")
    lines.append("all targets met" if passed else "targets NOT met")
    return "\n".join(lines)


def _core_name() -> str:
    if NATIVE_AVAILABLE:
        return "native (gateway/classify/_native.c)"
    return "python (the compiled core is not built: pip install -e .)"


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway bench classify`` to the bench group."""
    parser = bench_subparsers.add_parser(
        "classify",
        help="classifier and whole scan path MB/s on generated text and research files",
        description="Generates clean prose, scientific prose (lab notes full of measurements), "
        "numeric-heavy scientific CSV, PII-dense CSV, "
        "JSON API output with escaped strings, an HTML export with character references, "
        "rich-text HTML with inline tags inside words, a log of URL-encoded form posts and "
        "JSON with base64 attachments, and prints MB/s for "
        "the classifier alone and the whole scan path; then a Parquet table, a PDF report, a "
        "DICOM series and a multipart form upload, read as the egress reads them, in MB/s of "
        "file bytes (SPEC §9, issues 12 and 13).",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--size", type=float, default=DEFAULT_SIZE_MB, metavar="MB", help="data per kind (MB)"
    )
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per measurement")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_BYTES,
        metavar="N",
        help=f"bytes per feed (default {CHUNK_BYTES}; the proxy feeds 65536)",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        metavar="LIST",
        help=f"comma-separated kinds to measure (default: all of {','.join(KINDS)})",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if args.size <= 0 or args.repeat < 1:
        print("gateway bench classify: --size and --repeat must be positive", file=sys.stderr)
        return 2
    if not 1 <= args.chunk_size <= MAX_CHUNK_BYTES:
        print(
            f"gateway bench classify: --chunk-size must be 1 to {MAX_CHUNK_BYTES}", file=sys.stderr
        )
        return 2
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        print(
            f"gateway bench classify: --kinds takes some of {','.join(KINDS)}"
            + (f" (not {','.join(unknown)})" if unknown else ""),
            file=sys.stderr,
        )
        return 2
    detectors = DetectorSet.build()
    text = tuple(k for k in kinds if k in TEXT_KINDS)
    files = tuple(k for k in kinds if k in FILE_KINDS)
    results = run(args.size, args.repeat, text, detectors, args.chunk_size) if text else []
    measured: list[formats.FileResult] = []
    if files:
        from gateway.bench import formats  # pyarrow, pydicom, PDFium: only for file kinds

        measured = formats.run(
            args.size, args.repeat, files, detectors, args.chunk_size, _sha256_once
        )
    print(render(results, args.json, measured))
    return 0
