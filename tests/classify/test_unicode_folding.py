"""Issue 13: format characters dropped, digits and compatibility forms folded before matching.

Identifiers pasted from word processors carry zero-width spaces or soft
hyphens between their digits; digits of other scripts and mathematical,
circled or superscript forms spell identifiers a person reads as ordinary
digits. Each is found with the same labels and counts as its plain spelling,
whole, at every chunk size and at hypothesis-chosen cuts (inside multi-byte
characters too), while Chinese prose and clean text with invisible characters
are seen exactly as before.
"""

from __future__ import annotations

import io
import random
import sys
import threading
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify import charset as cs
from gateway.classify.detectors import CustomDetector, DetectorSet
from gateway.classify.formats.testing import label_counts, scan_bytes
from gateway.classify.testing import bank_card, cn_mobile, hkid, resident_id, scan_chunks
from tests.classify.test_charset import normalise

DETECTORS = DetectorSet.build()

RID = "pii.cn_resident_id"
CN_PHONE = "pii.cn_phone"
HK_ID = "pii.hk_id"
CARD = "pii.bank_card"
HK_PHONE = "pii.hk_phone"

#: One identifier of each kind the issue names, with the label it is found as.
KINDS: dict[str, tuple[Callable[[random.Random], str], str]] = {
    "resident_id": (resident_id, RID),
    "cn_mobile": (cn_mobile, CN_PHONE),
    "hkid": (hkid, HK_ID),
    "bank_card": (bank_card, CARD),
}

#: Invisible format characters seen between digits in the wild (Cf): 2-, 3-
#: and 4-byte UTF-8 (the tag space is plane 14).
SEPARATORS = {
    "ZWSP U+200B": "\u200b",
    "ZWNJ U+200C": "\u200c",
    "ZWJ U+200D": "\u200d",
    "WJ U+2060": "\u2060",
    "SHY U+00AD": "\u00ad",
    "BOM U+FEFF": "\ufeff",
    "RLO U+202E": "\u202e",
    "MVS U+180E": "\u180e",
    "TAG SPACE U+E0020": "\U000e0020",
    "ZWSP+SHY+WJ": "\u200b\u00ad\u2060",
}


def _from(zero: int) -> tuple[str, ...]:
    return tuple(chr(zero + d) for d in range(10))


#: Digits 0-9 in another spelling; every one folds to the ASCII digit.
DIGIT_FORMS: dict[str, tuple[str, ...]] = {
    "arabic-indic": _from(0x0660),
    "extended-arabic-indic": _from(0x06F0),
    "devanagari": _from(0x0966),
    "bengali": _from(0x09E6),
    "thai": _from(0x0E50),
    "myanmar": _from(0x1040),
    "mathematical-bold": _from(0x1D7CE),
    "mathematical-double-struck": _from(0x1D7D8),
    "mathematical-monospace": _from(0x1D7F6),
    "circled": ("\u24ea", *(chr(0x2460 + d) for d in range(9))),
    "negative-circled": ("\u24ff", *(chr(0x2776 + d) for d in range(9))),
    "superscript": tuple("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"),
    "subscript": _from(0x2080),
    "keycap": tuple(f"{d}\ufe0f\u20e3" for d in range(10)),
}

#: What stands for the space that groups a card's digits: no-break and
#: typographic spaces, which NFKC makes a space (the ideographic space U+3000
#: was folded before issue 13: test_charset.py).
SPACE_FORMS = ("\u00a0", "\u2007", "\u2009", "\u202f")

#: Prose around the identifiers: no digits, no identifier-like runs.
FILLER = ("联系人资料", "请核对以下信息", "the record below", "备注", "see attached", "患者")

CHINESE_PROSE = (
    "名字：张三。他说：“今天天气很好……”——《深港科技创新合作区》·第三期、"
    "温度约二十五度（摄氏）！会议纪要已发出，请查收；谢谢。\n"
)


def scan(text: str, chunk: int = 0, detectors: DetectorSet = DETECTORS) -> dict[str, int]:
    return label_counts(scan_bytes(detectors, text.encode(), chunk))


def scan_pieces(data: bytes, cuts: list[int]) -> dict[str, int]:
    """Scan ``data`` fed in the pieces between ``cuts`` (any byte offsets, empty pieces too)."""
    bounds = [0, *sorted(cuts), len(data)]
    return label_counts(scan_chunks(DETECTORS, [data[a:b] for a, b in pairwise(bounds)]))


def planted(kind: str, seed: int = 13) -> tuple[str, str]:
    generate, label = KINDS[kind]
    return generate(random.Random(f"{kind}:{seed}")), label


def respell_digits(value: str, forms: tuple[str, ...]) -> str:
    return "".join(forms[int(c)] if c.isdigit() else c for c in value)


def assert_found_as_plain(plain: str, disguised: str, label: str) -> None:
    """``disguised`` is found as ``plain`` is, whole and at every cut size."""
    assert scan(plain) == {label: 1}
    for chunk in (0, 1, 2, 3, 5, 4096):
        assert scan(disguised, chunk) == {label: 1}, chunk


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("separator", list(SEPARATORS.values()), ids=list(SEPARATORS))
def test_format_characters_between_every_character(kind: str, separator: str) -> None:
    value, label = planted(kind)
    assert_found_as_plain(f"联系人 {value}\n", f"联系人 {separator.join(value)}\n", label)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("forms", list(DIGIT_FORMS.values()), ids=list(DIGIT_FORMS))
def test_digits_of_other_scripts_and_forms(kind: str, forms: tuple[str, ...]) -> None:
    value, label = planted(kind)
    assert_found_as_plain(f"ID {value}\n", f"ID {respell_digits(value, forms)}\n", label)


def test_mathematical_and_enclosed_letters_fold_in_an_hkid() -> None:
    value, label = planted("hkid")
    letter = value[0]
    bold = chr(0x1D400 + ord(letter) - ord("A"))  # MATHEMATICAL BOLD CAPITAL A …
    circled = chr(0x24B6 + ord(letter) - ord("A"))  # CIRCLED LATIN CAPITAL LETTER A …
    digits = respell_digits(value[1:], DIGIT_FORMS["mathematical-bold"])
    for spelled in (bold + digits, circled + value[1:], bold + "\u200b".join(value[1:])):
        assert_found_as_plain(f"HKID {value}\n", f"HKID {spelled}\n", label)


@pytest.mark.parametrize("space", SPACE_FORMS, ids=[f"U+{ord(s):04X}" for s in SPACE_FORMS])
def test_no_break_and_typographic_spaces_group_a_card(space: str) -> None:
    value, label = planted("bank_card")
    assert " " in value
    assert_found_as_plain(f"card {value}\n", f"card {value.replace(' ', space)}\n", label)


@pytest.mark.parametrize(
    "hotword",
    [
        "\u2f3f機",  # KANGXI RADICAL HAND: what PDF text extraction gives for 手
        "\u2121",  # TELEPHONE SIGN, NFKC "TEL"
        "手\u200b機",
    ],
    ids=["kangxi-radical", "telephone-sign", "zwsp-inside"],
)
def test_hotwords_spelled_with_compatibility_forms(hotword: str) -> None:
    number = "9876 5432"
    assert scan(f"手機 {number}\n") == {HK_PHONE: 1}
    assert scan(f"{hotword} {number}\n") == {HK_PHONE: 1}


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    kinds=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=4),
    data=st.data(),
)
def test_disguised_identifiers_are_found_at_any_cuts(
    seed: int, kinds: list[str], data: st.DataObject
) -> None:
    rng = random.Random(seed)
    separators = list(SEPARATORS.values())
    forms = list(DIGIT_FORMS.values())
    plain_lines: list[str] = []
    disguised_lines: list[str] = []
    for kind in kinds:
        generate, _ = KINDS[kind]
        value = generate(rng)
        filler = rng.choice(FILLER)
        plain_lines.append(f"{filler} {value}\n")
        spelled: list[str] = []
        for char in value:
            if char.isdigit() and rng.random() < 0.6:
                char = rng.choice(forms)[int(char)]
            elif char == " " and rng.random() < 0.5:
                char = rng.choice((*SPACE_FORMS, "\u3000"))
            spelled.append(char)
            if rng.random() < 0.4:
                spelled.append(rng.choice(separators))
        noisy_filler = "".join(
            c + (rng.choice(separators) if rng.random() < 0.2 else "") for c in filler
        )
        disguised_lines.append(f"{noisy_filler} {''.join(spelled)}\n")
    expected = dict(Counter(KINDS[kind][1] for kind in kinds))
    plain = "".join(plain_lines).encode()
    disguised = "".join(disguised_lines).encode()
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(disguised)), max_size=12))
    assert scan_pieces(plain, []) == expected
    assert scan_pieces(disguised, cuts) == expected


def test_chinese_prose_passes_unchanged() -> None:
    data = CHINESE_PROSE.encode()
    # Only the full-width punctuation folds, as it always has.
    assert cs.fold(data) == cs.fold_fullwidth(data)
    normaliser = cs.Normaliser(cs.UTF8)
    assert normaliser.feed(data) + normaliser.flush() == cs.fold_fullwidth(data)
    assert "……" in cs.fold(data).decode()
    table = cs.folding_table()
    # Unified ideographs (BMP, extension A and B), CJK punctuation, kana and
    # the half-width forms stay as they are.
    kept = (
        range(0x4E00, 0xA000),
        range(0x3400, 0x4DC0),
        range(0x20000, 0x2A6E0),
        range(0x3001, 0x3100),
        range(0xFF61, 0xFFF0),
    )
    assert not [hex(cp) for block in kept for cp in block if cp in table]
    for char in "“”‘’—…·《》「」、。℃¥":
        assert ord(char) not in table, char


def test_chinese_name_and_id_are_found_exactly_as_before() -> None:
    names = DetectorSet.build([CustomDetector(label="custom.name", keywords=("张三", "陳大文"))])
    rid, _ = planted("resident_id")
    mobile, _ = planted("cn_mobile")
    text = f"{CHINESE_PROSE}姓名：张三，身份证号码：{rid}，电话：{mobile}\n姓名：陳大文\n"
    expected = {"custom.name": 3, RID: 1, CN_PHONE: 1}  # 张三 is in the prose too
    for chunk in (0, 1, 7, 4096):
        assert scan(text, chunk, names) == expected
    assert scan(CHINESE_PROSE) == {}


def test_clean_text_full_of_format_characters_has_no_finding() -> None:
    english = (
        "The com\u00admit\u00adtee met on Mon\u00adday.\u200b The \u200eréunion\u200f took"
        " place\u2060in\ufeffroom 12 in \u0662\u0660\u0662\u0664 (٢٠٢٤).\n"
    )
    emoji = "Team \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f \U0001f44d\U0001f3fd\n"
    bidi = "\u202bמסמך\u202c \u2067تقرير\u2069 \u202a\u202d2024\u202c\n"
    chinese = "\u200b".join(CHINESE_PROSE) + "共⑶项，第①条、第②条。\n"
    text = (english + emoji + bidi + chinese) * 20
    assert scan(text) == {}
    assert scan(text, 3) == {}


# -- the fold itself -------------------------------------------------------------


def test_folding_table_is_derived_from_unicodedata() -> None:
    table = cs.folding_table()
    every = range(0x80, sys.maxunicode + 1)
    cf = [cp for cp in every if unicodedata.category(chr(cp)) == "Cf"]
    nd = [cp for cp in every if unicodedata.category(chr(cp)) == "Nd"]
    assert all(table[cp] == "" for cp in cf)
    assert all(table[cp] == str(unicodedata.decimal(chr(cp))) for cp in nd)
    assert len(nd) > 600  # every script's digits, not a hand list
    for cp, replacement in table.items():
        assert cp >= 0x80
        assert (
            replacement == ""
            or replacement.isascii()
            or (len(replacement) == 1 and unicodedata.name(replacement).startswith("CJK UNIFIED"))
        ), hex(cp)
    folded = {
        "\u00ad": "",
        "\u200b": "",
        "\U000e0041": "",  # TAG LATIN CAPITAL LETTER A
        "\u20e3": "",  # COMBINING ENCLOSING KEYCAP
        "\ufe0f": "",  # VARIATION SELECTOR-16
        "\U0001d7cf": "1",  # MATHEMATICAL BOLD DIGIT ONE
        "\U0001d400": "A",  # MATHEMATICAL BOLD CAPITAL A
        "\u2460": "1",
        "\u2473": "20",
        "\u2474": "(1)",
        "\u2776": "1",  # DINGBAT NEGATIVE CIRCLED DIGIT ONE (no NFKC mapping)
        "\u00b9": "1",
        "\u2082": "2",
        "\u00a0": " ",
        "\u2121": "TEL",
        "\u212a": "K",  # KELVIN SIGN
        "\ufb01": "fi",
        "\u2f3f": "手",  # KANGXI RADICAL HAND
        "\uf9fe": "茶",  # CJK COMPATIBILITY IDEOGRAPH-F9FE
        "\uff11": "1",  # full-width, folded natively
        "\u3000": " ",
    }
    for char, replacement in folded.items():
        assert table[ord(char)] == replacement, f"U+{ord(char):04X}"
    # Kept: NFKC punctuation runs, non-ASCII NFKC results, symbols that are not
    # digits, circled ideographs, and the invisible characters of other kinds.
    for char in "…‥‼½℃㊀㊙㈠\u2028\u3164":
        assert ord(char) not in table, f"U+{ord(char):04X}"


def test_nothing_outside_the_searched_ranges_is_folded() -> None:
    searched = [range(start, stop) for start, stop in cs._SEARCHED_RANGES]
    for cp in range(0x80, sys.maxunicode + 1):
        if any(cp in block for block in searched):
            continue
        if unicodedata.category(chr(cp)) in ("Cn", "Co"):
            continue
        assert cs._replacement(chr(cp)) is None, hex(cp)


def reference(data: bytes) -> bytes:
    """Character by character from ``unicodedata`` (no table, no Hyperscan)."""
    out = []
    for char in data.decode("utf-8", "surrogateescape"):
        replacement = (
            None if char.isascii() or "\udc80" <= char <= "\udcff" else cs._replacement(char)
        )
        if 0xFF01 <= ord(char) <= 0xFF5E or char == "\u3000":
            replacement = unicodedata.normalize("NFKC", char)
        out.append(char if replacement is None else replacement)
    return "".join(out).encode("utf-8", "surrogateescape")


#: Characters around and among the folded ones: 2-, 3- and 4-byte targets, the
#: full-width block, CJK, kept neighbours, and bytes that are not UTF-8.
PIECES = [
    "a",
    "1",
    " ",
    "\u00ad",
    "\u00a0",
    "\u00b2",
    "\u00e9",
    "\u0661",
    "\u06f5",
    "\u0967",
    "\u200b",
    "\u2060",
    "\u2026",
    "\u2460",
    "\u3000",
    "\u3001",
    "\u3251",
    "\u33a1",
    "\uff11",
    "\uff0c",
    "\ufeff",
    "\ufe0f",
    "中",
    "\U0001d7ce",
    "\U0001f600",
    "\U000e0020",
    "\U0002f800",
]
RAW = st.sampled_from([b"\xe2\x80", b"\xf0\x9d", b"\x80", b"\xff", b"\xed\xa0\x80"])


@given(parts=st.lists(st.one_of(st.sampled_from(PIECES).map(str.encode), RAW), max_size=40))
def test_fold_matches_the_character_by_character_reference(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert cs.fold(data) == reference(data) == cs.fold_py(data)


@given(
    text=st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_normaliser_is_chunk_invariant_inside_any_character(text: str, cuts: list[int]) -> None:
    data = text.encode()
    expected = reference(data)
    assert normalise(data, cs.UTF8, [c for c in cuts if c <= len(data)]) == expected


def test_every_cut_of_two_three_and_four_byte_characters() -> None:
    data = "x\u00ad1\u200b2\U0001d7d1\U000e0020\u0664ё中\u3000\uff15".encode()
    expected = "x1234ё中 5".encode()
    for cut in range(len(data) + 1):
        assert normalise(data, cs.UTF8, [cut]) == expected, cut
    assert normalise(data, cs.UTF8, list(range(len(data)))) == expected


def test_a_cut_character_at_member_end_passes_through() -> None:
    for tail in (b"\xc2", b"\xe2\x80", b"\xf0\x9d\x9f"):
        assert normalise(b"ab" + tail, cs.UTF8, [2]) == b"ab" + tail
        assert normalise(b"ab" + tail, cs.UTF8) == b"ab" + tail


@pytest.mark.parametrize(
    ("codec", "charset"),
    [("utf-16-le", cs.UTF16LE), ("utf-16-be", cs.UTF16BE), ("gb18030", cs.GB18030)],
)
def test_transcoded_text_is_folded_too(codec: str, charset: str) -> None:
    text = "电话：\u0661\u0663\u0668\u200b1234\u00ad5678，身份证 ①②"
    data = text.encode(codec)
    expected = "电话:138" + "12345678,身份证 12"
    for cut in range(0, len(data) + 1, 3):
        assert normalise(data, charset, [cut]) == expected.encode(), cut


def test_large_and_dense_input_across_windows() -> None:
    window = cs._FOLD_WINDOW_BYTES
    rng = random.Random(5)
    sparse = "".join(
        rng.choice(["abc ", "中文", "\u200b", "\U0001d7cf", "\u3001"]) for _ in range(window)
    )
    dense = "\u200b" * (window // 2) + "\u0661\u200c" * (window // 4) + "x"
    for text in (sparse, dense, "中" * window + "\u00ad" + "\U0001d7cf" * window):
        data = text.encode()
        assert len(data) > window
        assert cs.fold(data) == cs.fold_py(data)
        for cut in (window - 1, window + 1, len(data) // 2):
            assert normalise(data, cs.UTF8, [cut]) == cs.fold_py(data)


def fold_without_core(data: bytes) -> bytes:
    """:func:`cs.fold` as it runs where the compiled core is not built (Hyperscan)."""
    saved = cs._fold_native
    cs._fold_native = None
    try:
        return cs.fold(data)
    finally:
        cs._fold_native = saved


def test_every_entry_of_the_table_folds_between_neighbours() -> None:
    # Each entry once, between ASCII, CJK and a lone continuation byte, so that
    # every code point's lookup (the compiled core's index) is exercised.
    table = cs.folding_table()
    for cp, replacement in table.items():
        data = f"a{chr(cp)}中{chr(cp)}".encode() + b"\x80"
        expected = f"a{replacement}中{replacement}".encode() + b"\x80"
        assert cs.fold(data) == expected == fold_without_core(data), hex(cp)


#: Byte strings that are not UTF-8 next to folded characters: overlong forms,
#: encoded surrogates, past U+10FFFF, lone continuation and lead bytes, and
#: folded characters cut short.
NOT_UTF8 = [
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",
    b"\xe0\x82\xad",  # U+00AD (dropped when it is UTF-8) in an overlong form
    b"\xf0\x82\x80\x8b",  # U+200B likewise
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xbf",
    b"\xe2\x80",
    b"\xef\xbc",
    b"\xf0\x9d\x9f",
]


@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from(PIECES).map(str.encode),
            st.sampled_from(NOT_UTF8),
            st.binary(max_size=6),
            st.sampled_from(sorted(cs.folding_table())).map(lambda cp: chr(cp).encode()),
        ),
        max_size=40,
    )
)
def test_fold_of_any_bytes_matches_the_reference(parts: list[bytes]) -> None:
    # Any bytes: characters decode strictly as Python's UTF-8 decoder does, and
    # what is not UTF-8 passes through unchanged (never swallowing a folded
    # character after it).
    data = b"".join(parts)
    assert cs.fold(data) == cs.fold_py(data) == fold_without_core(data)


def test_expanding_replacements_fit() -> None:
    # A replacement may be longer than its character (U+2177 SMALL ROMAN NUMERAL
    # EIGHT is "viii"): dense text of the longest ones, at every length.
    table = cs.folding_table()
    longest = sorted(table, key=lambda cp: len(chr(cp).encode()) - len(table[cp].encode()))[:8]
    for count in range(1, 40):
        text = "".join(chr(longest[i % len(longest)]) for i in range(count))
        assert cs.fold(text.encode()) == "".join(table[ord(c)] for c in text).encode()


def test_text_with_nothing_to_fold_passes_as_the_same_object() -> None:
    for data in (b"plain ascii " * 1000, "姓名张三身份证号码。".encode() * 100):
        assert cs.fold(data) is data
        assert cs.Normaliser(cs.UTF8).feed(data) is data


def test_threads_fold_at_once() -> None:
    # Each thread has its own Hyperscan scratch: scans may run in parallel.
    texts = [("\u200b".join(f"{i:06d}中\U0001d7cf") * 5000).encode() for i in range(6)]
    expected = [cs.fold_py(text) for text in texts]
    results: dict[int, list[bytes]] = {}

    def work(index: int) -> None:
        results[index] = [cs.fold(texts[index]) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, folded in results.items():
        assert folded == [expected[index]] * 5
    assert len(results) == len(texts)


_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.mark.parametrize(
    "spell", [lambda x: "\u200b".join(x), lambda x: x.translate(_ARABIC_INDIC)]
)
def test_archive_member_names_are_folded_like_text(spell: Callable[[str], str]) -> None:
    """A zip member named after a person's ID is read as a name, folded like any text."""
    ident = resident_id(random.Random(21))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"scan {spell(ident)}.txt", b"clean")
    assert label_counts(scan_bytes(DETECTORS, archive.getvalue())).get("pii.cn_resident_id") == 1
