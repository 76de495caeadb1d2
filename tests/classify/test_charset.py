"""Charset detection, transcoding to UTF-8 and full-width folding."""

from __future__ import annotations

import codecs
import random
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify import charset as cs

CHINESE_SIMPLIFIED = (
    "姓名：张三，身份证号码：110101199003077777，电话：13812345678，地址：深圳市南山区科技园。\n"
)
CHINESE_TRADITIONAL = (
    "姓名：陳大文，身份證號碼：A123456(3)，電話：98765432，地址：香港九龍彌敦道。\n"
)

#: The whole full-width ASCII block U+FF01-FF5E and what NFKC makes of it.
FULLWIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
FOLDED = "".join(chr(c) for c in range(0x21, 0x7F))
#: Neighbours of the folded block and other CJK punctuation, which stay: U+FF00
#: (unassigned), white parentheses U+FF5F-FF60, half-width forms from U+FF61,
#: and the CJK symbols block apart from U+3000.
NOT_FOLDED = "\uff00\uff5f\uff60\uff61\uff64\uffe0\u3001\u3002\u3003「」\u3001\u3100"


def normalise(data: bytes, charset: str, cuts: list[int] | None = None) -> bytes:
    normaliser = cs.Normaliser(charset)
    out = []
    start = 0
    for cut in sorted(cuts or []):
        out.append(normaliser.feed(data[start:cut]))
        start = cut
    out.append(normaliser.feed(data[start:]))
    out.append(normaliser.flush())
    return b"".join(out)


@pytest.mark.parametrize(
    ("data", "charset", "bom"),
    [
        (codecs.BOM_UTF8 + b"abc", cs.UTF8, 3),
        (codecs.BOM_UTF16_LE + "abc".encode("utf-16-le"), cs.UTF16LE, 2),
        (codecs.BOM_UTF16_BE + "abc".encode("utf-16-be"), cs.UTF16BE, 2),
        (codecs.BOM_UTF32_LE + "abc".encode("utf-32-le"), cs.UTF32LE, 4),
        (codecs.BOM_UTF32_BE + "abc".encode("utf-32-be"), cs.UTF32BE, 4),
    ],
)
def test_bom_decides_charset(data: bytes, charset: str, bom: int) -> None:
    assert cs.detect(data, complete=True) == cs.Detection(charset, bom)


@pytest.mark.parametrize(
    ("text", "codec", "charset"),
    [
        ("id,phone\n1,13812345678\n", "utf-16-le", cs.UTF16LE),
        ("id,phone\n1,13812345678\n", "utf-16-be", cs.UTF16BE),
        (CHINESE_SIMPLIFIED, "utf-16-le", cs.UTF16LE),
        (CHINESE_TRADITIONAL, "utf-16-be", cs.UTF16BE),
    ],
)
def test_utf16_without_bom_detected_by_nul_pattern(text: str, codec: str, charset: str) -> None:
    assert cs.detect(text.encode(codec), complete=True) == cs.Detection(charset)


def test_utf16_detection_tolerates_a_cut_last_unit() -> None:
    data = (CHINESE_SIMPLIFIED * 10).encode("utf-16-le")
    assert cs.detect(data[:101], complete=False).charset == cs.UTF16LE


def test_array_of_small_integers_is_not_utf16() -> None:
    data = b"".join(i.to_bytes(2, "little") for i in range(1, 20)) * 50
    assert cs.detect(data, complete=True).charset is None


@pytest.mark.parametrize(
    "text", ["plain ascii, 123\n", "naïve café — UTF-8 ✓\n", CHINESE_SIMPLIFIED]
)
def test_utf8_and_ascii(text: str) -> None:
    assert cs.detect(text.encode(), complete=True) == cs.Detection(cs.UTF8)


def test_utf8_cut_inside_a_character_is_still_utf8_when_incomplete() -> None:
    data = CHINESE_SIMPLIFIED.encode()
    assert cs.detect(data[:4], complete=False).charset == cs.UTF8
    assert cs.detect(data[:4], complete=True).charset != cs.UTF8


@pytest.mark.parametrize("codec", ["gbk", "gb18030", "gb2312"])
def test_simplified_chinese_in_gb_encodings(codec: str) -> None:
    data = (CHINESE_SIMPLIFIED * 3).encode(codec)
    assert cs.detect(data, complete=True).charset == cs.GB18030


def test_gb18030_four_byte_characters() -> None:
    text = "罕见字：㐀㐁𠀀，" + CHINESE_SIMPLIFIED
    data = text.encode("gb18030")
    assert cs.detect(data, complete=True).charset == cs.GB18030
    assert normalise(data, cs.GB18030) == cs.fold_fullwidth(text.encode())
    assert normalise(data, cs.GB18030).startswith("罕见字:㐀㐁𠀀,".encode())


@pytest.mark.parametrize("codec", ["big5", "big5hkscs"])
def test_traditional_chinese_in_big5(codec: str) -> None:
    data = (CHINESE_TRADITIONAL * 3).encode(codec)
    assert cs.detect(data, complete=True).charset == cs.BIG5


def test_short_gbk_and_big5_phrases_are_told_apart() -> None:
    assert cs.detect("身份证号码".encode("gbk"), complete=True).charset == cs.GB18030
    assert cs.detect("身份證號碼".encode("big5"), complete=True).charset == cs.BIG5


@pytest.mark.parametrize(
    ("text", "codec", "charset"),
    [
        ("限閱文件\n附件\n", "big5", cs.BIG5),
        ("限閱文件\n", "big5", cs.BIG5),
        ("機密\n", "big5", cs.BIG5),
        ("附件清單\n", "big5", cs.BIG5),
        ("限阅文件\n附件\n", "gbk", cs.GB18030),
        ("机密★\n", "gbk", cs.GB18030),
        ("绝密\n", "gbk", cs.GB18030),
    ],
)
def test_markings_keep_their_charset(text: str, codec: str, charset: str) -> None:
    data = text.encode(codec)
    assert cs.detect(data, complete=True).charset == charset
    assert normalise(data, charset) == text.encode()


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(
    "text",
    [
        "身份證號碼１２３４５６７８",
        "電話：９８７６５４３２",
        "限閱文件",
        "姓名：张三，身份证号码：１１０１０１１９９００３０７７７７",
        "一二三四五六七八九十",  # U+4E00 holds a NUL byte, without the NUL pattern
    ],
)
def test_utf16_without_bom_or_nul_pattern(text: str, codec: str) -> None:
    data = text.encode(codec)
    charset = cs.UTF16LE if codec == "utf-16-le" else cs.UTF16BE
    assert cs.detect(data, complete=True) == cs.Detection(charset)
    assert normalise(data, charset) == cs.fold_fullwidth(text.encode())


def test_random_binary_is_not_taken_for_utf16() -> None:
    rng = random.Random(7)
    for size in (64, 256, 4096, 65536):
        for _ in range(50):
            data = rng.randbytes(size)
            assert cs.detect(data, complete=True).charset not in (cs.UTF16LE, cs.UTF16BE)


def test_ascii_is_never_read_as_utf16_cjk() -> None:
    # "abcd" is U+6261 U+6463 as UTF-16LE: valid UTF-8 is decided first.
    assert cs.detect(b"abcdefgh" * 10, complete=True).charset == cs.UTF8


def test_western_text_that_is_not_utf8_is_windows_1252() -> None:
    data = "Zoë's café, 10 €\n".encode("cp1252") * 3
    assert cs.detect(data, complete=True).charset == cs.WINDOWS1252
    assert normalise(data, cs.WINDOWS1252) == "Zoë's café, 10 €\n".encode() * 3


@pytest.mark.parametrize(
    "data",
    [bytes(range(256)) * 4, b"\x00" * 100, b"abc\x00def", bytes([1, 2, 3, 4, 5, 6, 7, 8]) * 10],
)
def test_binary(data: bytes) -> None:
    assert cs.detect(data, complete=True) == cs.Detection(None)


def test_empty_prefix_is_utf8() -> None:
    assert cs.detect(b"", complete=True).charset == cs.UTF8


def test_fullwidth_block_folds_to_ascii() -> None:
    assert cs.fold_fullwidth(FULLWIDTH.encode()) == FOLDED.encode()
    assert cs.fold_fullwidth(NOT_FOLDED.encode()) == NOT_FOLDED.encode()
    mixed = "电话：１３８１２３４５６７８，ＩＤ：Ａ１２３４５６（３），ｅｍａｉｌ"
    assert cs.fold_fullwidth(mixed.encode()).decode() == "电话:13812345678,ID:A123456(3),email"


def test_folding_agrees_with_nfkc_on_the_folded_characters() -> None:
    for char in [*FULLWIDTH, "\u3000"]:
        assert cs.fold_fullwidth(char.encode()) == unicodedata.normalize("NFKC", char).encode()


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("坐标：22.54321，114.05678", "坐标:22.54321,114.05678"),
        ("身份證 Ａ１２３４５６（３）", "身份證 A123456(3)"),
        ("机密\u3000★", "机密 ★"),
        ("\u3000機密\u3000\n", " 機密 \n"),
        ("abc＠example.com", "abc@example.com"),
    ],
)
def test_fullwidth_punctuation_and_ideographic_space_fold(text: str, folded: str) -> None:
    data = text.encode()
    for cut in range(len(data) + 1):
        assert normalise(data, cs.UTF8, [cut]) == folded.encode(), cut
    for codec, charset in (("utf-16-le", cs.UTF16LE), ("gb18030", cs.GB18030)):
        assert normalise(text.encode(codec), charset) == folded.encode()


def test_ideographic_space_lead_bytes_at_member_end_are_kept() -> None:
    assert normalise(b"abc\xe3\x80", cs.UTF8, [4]) == b"abc\xe3\x80"
    assert normalise(b"\xe3\x80\x80\xe3", cs.UTF8, [1, 2]) == b" \xe3"


def test_fullwidth_folding_across_every_chunk_split() -> None:
    data = ("x１y" + FULLWIDTH + "，Ｚ\u3000。").encode()
    expected = ("x1y" + FOLDED + ",Z 。").encode()
    for cut in range(len(data) + 1):
        assert normalise(data, cs.UTF8, [cut]) == expected, cut
    assert normalise(data, cs.UTF8, list(range(len(data)))) == expected


def test_fullwidth_lead_at_member_end_is_kept() -> None:
    # A member that ends in a cut sequence keeps its bytes (nothing to fold).
    assert normalise(b"abc\xef\xbc", cs.UTF8) == b"abc\xef\xbc"
    assert normalise(b"abc\xef", cs.UTF8, [3]) == b"abc\xef"


def test_utf8_without_fullwidth_passes_through_as_the_same_object() -> None:
    normaliser = cs.Normaliser(cs.UTF8)
    chunk = (
        b"plain ascii " * 1000
        + CHINESE_SIMPLIFIED.replace("，", ",").replace("：", ":").replace("。", ".").encode()
    )
    assert normaliser.feed(chunk) is chunk
    # CJK with nothing to fold (no full-width form, no ideographic space, no
    # character of cs.folding_table(): test_unicode_folding.py).
    cjk = "姓名张三身份证号码电话地址深圳市南山区".encode() * 100
    assert normaliser.feed(cjk) is cjk


@pytest.mark.parametrize(
    ("codec", "charset"),
    [
        ("utf-16-le", cs.UTF16LE),
        ("utf-16-be", cs.UTF16BE),
        ("gb18030", cs.GB18030),
        ("big5hkscs", cs.BIG5),
    ],
)
def test_transcoding_folds_fullwidth_and_survives_splits(codec: str, charset: str) -> None:
    body = CHINESE_SIMPLIFIED if charset == cs.GB18030 else CHINESE_TRADITIONAL
    text = "號：１３８１２３４５６７８ Ａｂｃ " + body
    data = text.encode(codec)
    expected = cs.fold_fullwidth(text.encode())
    assert "號:13812345678 Abc ".encode() in expected
    for cut in range(len(data) + 1):
        assert normalise(data, charset, [cut]) == expected, cut
    assert normalise(data, charset, list(range(len(data)))) == expected


def test_invalid_bytes_become_replacement_characters() -> None:
    data = "abc".encode("utf-16-le") + b"\x00\xd8" + "def".encode("utf-16-le")
    assert normalise(data, cs.UTF16LE) == "abc\ufffddef".encode()


TEXTS = st.text(
    # Characters every tested codec can encode (Big5 has no simplified forms).
    alphabet=st.sampled_from(list("ab1,\n 三中國號碼：，\u3000＠（）") + list(FULLWIDTH[15:27])),
    max_size=60,
)


@given(text=TEXTS, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
@pytest.mark.parametrize(
    ("codec", "charset"),
    [
        ("utf-8", cs.UTF8),
        ("utf-16-le", cs.UTF16LE),
        ("gb18030", cs.GB18030),
        ("big5hkscs", cs.BIG5),
    ],
)
def test_normaliser_is_chunk_invariant(
    codec: str, charset: str, text: str, cuts: list[int]
) -> None:
    data = text.encode(codec)
    cuts = [c for c in cuts if c <= len(data)]
    assert normalise(data, charset, cuts) == normalise(data, charset)
    assert normalise(data, charset) == cs.fold_fullwidth(data.decode(codec).encode())
