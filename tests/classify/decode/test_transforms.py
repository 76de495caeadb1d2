"""Text transforms (issue 13): JSON escapes, character references, percent-encoding,
base64 and hex runs, each decoded where its marker is, nested under the decoder's limits.

Two levels: the decoder with a recording sink (what text reaches the matcher, in
which members, with which layers and unscannable reasons) and the whole scan
(labels and counts). Every input small enough is checked at every split point.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import html
import html.entities
import json
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.classify import DetectorSet, ScanLimits
from gateway.classify import charset as cs
from gateway.classify.decode import NAME_TYPE, Decoder, transforms
from gateway.classify.decode.text import sniff_text_type
from gateway.classify.decode.transforms import (
    BASE64,
    CHAR_REF_DIGITS,
    CHAR_REFS,
    DEFER_FLUSH_BYTES,
    HEAD_BYTES,
    HEX,
    JSON_ESCAPES,
    LONG_RUN_CHARS,
    MARKUP,
    MARKUP_ASIDE_BYTES,
    PERCENT,
    RUN_MIN_CHARS,
)
from gateway.classify.formats.testing import label_counts
from gateway.classify.summary import ContentInfo, ScanSummary
from gateway.classify.testing import (
    ENCODINGS,
    assert_chunk_invariant,
    bank_card,
    base64_lines,
    base64_url,
    cn_mobile,
    form_urlencode,
    hex_encode,
    hkid,
    html_decimal_refs,
    html_hex_refs,
    html_named_refs,
    json_escape_all,
    json_escaped_document,
    percent_encode_all,
    resident_id,
    scan_chunks,
)
from tests.classify.test_decode import make_zip

DETECTORS = DetectorSet.build()
RNG = random.Random(13)
IDS = [resident_id(RNG) for _ in range(3)]
PHONE = cn_mobile(RNG)
CARD = bank_card(RNG)
HKID = hkid(RNG)
PLAIN = "".join(f"patient {i} id {x}\n" for i, x in enumerate(IDS))


# --------------------------------------------------------------------------- helpers


@dataclass
class Recorder:
    """A TextSink keeping members (type, text), names apart, and unscannable reasons."""

    members: list[tuple[str, bytes]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    _type: str | None = None
    _text: bytearray = field(default_factory=bytearray)

    def begin_member(self, content_type: str) -> None:
        assert self._type is None, "begin_member inside a member"
        self._type, self._text = content_type, bytearray()

    def text(self, data: bytes) -> None:
        assert self._type is not None, "text outside a member"
        self._text += data

    def end_member(self) -> None:
        assert self._type is not None, "end_member without begin_member"
        if self._type != NAME_TYPE:
            self.members.append((self._type, bytes(self._text)))
        self._type = None

    def unscannable(self, reason: str) -> None:
        self.reasons.append(reason)

    def finding(self, label: str, value: bytes) -> None:
        raise AssertionError("no reader findings expected")


def decode(chunks: list[bytes], limits: ScanLimits | None = None) -> tuple[ContentInfo, Recorder]:
    sink = Recorder()
    decoder = Decoder(sink, limits or ScanLimits())
    for chunk in chunks:
        decoder.feed(chunk)
    info = decoder.finish()
    assert sink._type is None, "member left open"
    return info, sink


def events(chunks: list[bytes]) -> tuple[ContentInfo, list[tuple[str, bytes]], list[str]]:
    info, sink = decode(chunks)
    return info, sink.members, sink.reasons


def scan(data: bytes, limits: ScanLimits | None = None) -> ScanSummary:
    return scan_chunks(DETECTORS, [data], limits)


def counts(data: bytes) -> dict[str, int]:
    """Label counts, the same at every chunking (checked)."""
    return assert_chunk_invariant(
        lambda chunks: label_counts(scan_chunks(DETECTORS, chunks)),
        data,
        random_cuts=4,
        max_every_split=600,
    )


def invariant(data: bytes) -> tuple[ContentInfo, list[tuple[str, bytes]], list[str]]:
    """The decoder's sink calls, the same at every chunking (checked)."""
    return assert_chunk_invariant(events, data, random_cuts=6, max_every_split=2000)


def one_member(data: bytes, layers: tuple[str, ...]) -> tuple[str, bytes]:
    """The one member (type, text) ``data`` decodes to at every chunking, its text
    ``layers`` deep and nothing unscannable (checked)."""
    info, members, reasons = invariant(data)
    assert reasons == []
    assert info.layers == layers
    assert len(members) == 1, members
    return members[0]


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("text", "media_type"),
    [
        (b"<!DOCTYPE html>\n<html><body>x</body></html>", "text/html"),
        (b"  <HTML lang=en><p>x</p></HTML>", "text/html"),
        (b'<?xml version="1.0"?>\n<records><r>1</r></records>', "application/xml"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (b'<svg width="1" height="1"></svg>', "image/svg+xml"),
        (b"name=%E5%BC%A0&id=110101", "application/x-www-form-urlencoded"),
        (b"q=a+b\r\n", "application/x-www-form-urlencoded"),
        (b"QUJDRA==", "text/plain"),  # a line of base64, not a form with an empty field
        (b"x=", "text/plain"),
        (b"a = b and c", "text/plain"),
        (b"<p>a paragraph</p>", "text/plain"),
    ],
)
def test_markup_and_form_bodies_are_sniffed(text: bytes, media_type: str) -> None:
    assert sniff_text_type(text, complete=True) == media_type


# --------------------------------------------------------------------------- JSON escapes


def test_json_unicode_escapes_are_decoded_in_a_json_member() -> None:
    data = json.dumps({"rows": [json_escape_all(x) for x in IDS]}).replace("\\\\", "\\").encode()
    assert one_member(data, (JSON_ESCAPES,)) == (
        "application/json",
        json.dumps({"rows": IDS}).encode(),
    )
    assert counts(data) == {"pii.cn_resident_id": 3}


def test_json_escapes_with_cjk_surrogate_pairs_and_simple_escapes() -> None:
    record = {"name": "张三😀", "note": 'line one\nSECRET\n"quoted"', "url": "a/b"}
    data = json.dumps(record).replace("/", "\\/").encode()  # PHP writes \/ too
    _, members, _ = invariant(data)
    text = members[0][1].decode()
    assert text == '{"name": "张三😀", "note": "line one\nSECRET\n"quoted"", "url": "a/b"}'
    assert counts(data) == {"marking.hk_classified": 1}


def test_backslashes_pair_as_a_json_parser_pairs_them() -> None:
    # An escaped backslash, then \u0031: a backslash and "1".
    _, members, _ = invariant(b'{"a": "x\\\\\\u0031y"}')
    assert members == [("application/json", b'{"a": "x\\1y"}')]
    # A string holding a JSON document (its escapes escaped) is decoded again.
    inner = json.dumps({"id": json_escape_all(IDS[0])}).replace("\\\\", "\\")
    info, members, _ = invariant(json.dumps({"payload": inner}).encode())
    assert members == [("application/json", f'{{"payload": "{{"id": "{IDS[0]}"}}"}}'.encode())]
    assert info.layers == (JSON_ESCAPES, JSON_ESCAPES)


def test_json_lines_are_json() -> None:
    lines = "".join(
        json.dumps({"id": json_escape_all(x)}).replace("\\\\", "\\") + "\n" for x in IDS
    )
    assert counts(lines.encode()) == {"pii.cn_resident_id": 3}


def test_json_escapes_in_any_text() -> None:
    # A log line holding a JSON document: its \n and \u escapes are decoded too.
    body = json.dumps({"note": f"seen\n{IDS[0]}", "name": "张三"})
    data = f"INFO request body: {body}\n".encode()
    assert one_member(data, (JSON_ESCAPES,)) == (
        "text/plain",
        f'INFO request body: {{"note": "seen\n{IDS[0]}", "name": "张三"}}\n'.encode(),
    )
    assert counts(data) == {"pii.cn_resident_id": 1}


def test_a_backslash_too_deep_to_decode_is_no_unscannable_unless_it_is_unicode() -> None:
    path = b"copied C:\\new\\table to D:\\backup\n"
    limits = ScanLimits(max_depth=1)
    _, sink = decode([make_zip([("log.txt", path)])], limits)
    assert sink.reasons == []  # a Windows path, as likely as an escape: passed over
    escaped_id = f"id {json_escape_all(IDS[0])}\n".encode()
    _, sink = decode([make_zip([("log.txt", path + escaped_id)])], limits)
    assert sink.reasons == [f"{JSON_ESCAPES}: nested deeper than 1 layers"]


def test_json_without_escapes_passes_untouched() -> None:
    data = json.dumps({"id": IDS[0], "note": "plain"}).encode()
    assert one_member(data, ()) == ("application/json", data)
    assert counts(data) == {"pii.cn_resident_id": 1}


# --------------------------------------------------------------------------- character references


@pytest.mark.parametrize("encode", [html_decimal_refs, html_hex_refs, html_named_refs])
def test_character_references_in_html(encode: object) -> None:
    body = "<br>".join(encode(x) for x in IDS)  # type: ignore[operator]
    data = f"<html><body>{body}</body></html>".encode()
    assert one_member(data, (CHAR_REFS,)) == (
        "text/html",
        f"<html><body>{'<br>'.join(IDS)}</body></html>".encode(),
    )
    assert counts(data) == {"pii.cn_resident_id": 3}


def page(body: str) -> bytes:
    return f"<!DOCTYPE html>\n<html><body>\n{body}\n</body></html>\n".encode()


def test_inline_tags_inside_an_identifier_are_read_as_a_browser_shows_it() -> None:
    """Rich-text editors wrap parts of a word in tags; a browser shows one word."""
    rid, other = IDS[0], IDS[1]
    body = (
        f"<p>ID <b>{rid[:6]}</b><span class='x'>{rid[6:]}</span></p>\n"
        f"<p>{other[:4]}<!-- keep -->{other[4:10]}<i></i>{other[10:]}</p>\n"
        f"<p>call {PHONE[:3]}-<font color=red>{PHONE[3:7]}</font>-{PHONE[7:]}</p>"
    )
    kind, text = one_member(page(body), (MARKUP,))
    assert kind == "text/html"
    assert f"ID <b>{rid}</span></p>".encode() in text  # the tags outside the word stay
    assert other.encode() in text
    assert counts(page(body)) == {"pii.cn_resident_id": 2, "pii.cn_phone": 1}


def test_removed_tags_keep_their_attributes_and_comments_as_text() -> None:
    rid = IDS[0]
    body = (
        f'<p>{rid[:9]}<a title="{PHONE}" href="#">{rid[9:]}</a> and {rid[:3]}<!-- {IDS[2]} -->x</p>'
    )
    _, text = one_member(page(body), (MARKUP,))
    assert text.count(PHONE.encode()) == 1
    assert text.count(IDS[2].encode()) == 1
    # Written after the line the word was on, never inside a word.
    assert text.index(PHONE.encode()) > text.index(f"{rid}</a>".encode())
    assert counts(page(body)) == {"pii.cn_resident_id": 2, "pii.cn_phone": 1}


@pytest.mark.parametrize(
    "body",
    [
        "<td>{a}</td><td>{b}</td>",  # cells: separate for a browser too
        "{a}<div>{b}</div>",  # a block element breaks the line
        "{a}<br>{b}",
        "{a} <b>{b}</b>",  # white space
        "{a}<x-note>{b}</x-note>",  # an element the list does not know
        "{a}<b{b}",  # no tag at all
    ],
)
def test_tags_that_separate_words_stay(body: str) -> None:
    rid = IDS[0]
    data = page(body.format(a=rid[:8], b=rid[8:]))
    info, members, _ = invariant(data)
    assert MARKUP not in info.layers
    assert members == [("text/html", data)]
    assert counts(data) == {}


def test_only_html_members_are_joined() -> None:
    rid = IDS[0]
    text = f"note {rid[:8]}<b>{rid[8:]}</b>\n".encode()
    assert counts(text) == {}
    assert counts(page(text.decode())) == {"pii.cn_resident_id": 1}


def test_an_html_member_without_such_tags_has_no_markup_layer() -> None:
    data = page("<p>All wells <b>within</b> range.</p>")
    info, members, reasons = invariant(data)
    assert (info.layers, reasons) == ((), [])
    assert members == [("text/html", data)]


def test_attributes_inside_words_past_their_bound_are_unscannable() -> None:
    tag = "<span title='" + "x" * 200 + "'>"
    words = " ".join(f"a{tag}b" for _ in range(MARKUP_ASIDE_BYTES // 200 + 2))
    summary = scan(page(words))
    assert summary.unscannable == (
        f"{MARKUP}: over {MARKUP_ASIDE_BYTES >> 10} KiB of attributes inside words",
    )


def test_a_run_inside_html_is_as_deep_whether_or_not_a_tag_was_joined_before_it() -> None:
    """The markup stage nests nothing: a base64 run in an HTML page is one layer
    deep at every chunking, also when the page's only joined tag comes after it
    (counting the stage made the run too deep, or not, by where a chunk ended)."""
    lines = "".join(f"<p>line {i} of the ward report</p>\n" for i in range(2600))
    run = base64.b64encode(b"patient 11010519491231002X called back\n" * 8).decode()
    data = page(lines + run + "\n<p>ok</p>\n<p>ID 440305<b>19850612</b>1237</p>\n")
    cut = data.index(b"440305<b>")
    limits = ScanLimits(max_depth=1)
    seen = set()
    for chunks in ([data], [data[:cut], data[cut:]], [data[: cut + 8], data[cut + 8 :]]):
        info, sink = decode(chunks, limits)
        seen.add((info.layers, tuple(t for t, _ in sink.members), tuple(sink.reasons)))
    assert seen == {((MARKUP,), ("text/html", "text/plain"), ())}


def test_attributes_past_their_bound_are_reported_once_at_every_chunking() -> None:
    lines = "".join(f"<p>line {i}</p>\n" for i in range(5000))
    tag = "<span title='" + "x" * 200 + "'>"
    words = " ".join(f"a{tag}b" for _ in range(3 * (MARKUP_ASIDE_BYTES // 200 + 2)))
    data = page(lines + words)  # ~300 KB: the bound is passed in more than one chunk
    reason = f"{MARKUP}: over {MARKUP_ASIDE_BYTES >> 10} KiB of attributes inside words"
    for size in (len(data), 200_000, 65_536):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert scan_chunks(DETECTORS, chunks).unscannable == (reason,)


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            [
                "4403",
                "0519",
                "8506",
                "<b>",
                "</b>",
                "<span a='1'>",
                "</span>",
                "<!-- c -->",
                "<!--",
                "-->",
                "<div>",
                " ",
                "\n",
                "x",
                "<",
                ">",
                "&#49;",
                "<i",
                "'",
            ]
        ),
        max_size=40,
    )
)
def test_joining_is_the_same_at_every_chunking(pieces: list[str]) -> None:
    invariant(page("".join(pieces)))


def test_character_references_in_a_spreadsheet_export_sniffed_as_text() -> None:
    # Excel's "save as web page" cells, cut from their document: no <html> to sniff.
    rows = "".join(f"<td>{html_decimal_refs(x)}</td>\n" for x in IDS)
    assert counts(rows.encode()) == {"pii.cn_resident_id": 3}


def test_named_references_that_stand_in_identifiers() -> None:
    grouped = PHONE[:3] + "&hyphen;" + PHONE[3:7] + "&hyphen;" + PHONE[7:]
    spaced = PHONE[:3] + "&nbsp;" + PHONE[3:7] + "&nbsp" + PHONE[7:]  # legacy: no ";"
    hk = HKID[0] + HKID[1:7] + "&lpar;" + HKID[8] + "&rpar;"
    fullwidth = "".join(f"&#{0xFF10 + int(d)};" for d in IDS[0][:-1]) + IDS[0][-1]
    data = f"<p>tel {grouped}</p><p>{spaced}</p><p>{hk}</p><p>{fullwidth}</p>".encode()
    assert counts(data) == {"pii.cn_phone": 2, "pii.hk_id": 1, "pii.cn_resident_id": 1}


#: Code points for references decoded as browsers decode them: ASCII punctuation
#: (no ``&``, ``%`` or ``\\``, which would start another transform in the
#: decoded text), letters and CJK, private use, and the ones HTML5 replaces or
#: drops (NUL, CR, C1 controls, surrogates, noncharacters, past U+10FFFF). No
#: spaces or dashes: the stage folds those (checked elsewhere).
_REF_CODE_POINTS = st.one_of(
    st.sampled_from([*b"!\"#'()*,./:;<=>?@[]^`{|}~"]),
    st.integers(0xC0, 0x1FFF),
    st.integers(0x3000, 0x9FFF),
    st.integers(0xE000, 0xFDCF),
    st.sampled_from([0, 9, 10, 13, 0x80, 0x9F, 0xD800, 0xDFFF, 0xFDD0, 0xFFFE, 0x10FFFF, 0x110000]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_REF_CODE_POINTS, st.sampled_from(["dec;", "dec ", "hex;", "named"])),
        min_size=1,
        max_size=12,
    )
)
def test_references_decode_as_a_browser_decodes_them(refs: list[tuple[int, str]]) -> None:
    # Runs of decimal references with their semicolons (how exporters write
    # non-ASCII text) take a faster path than the others: both give what
    # html.unescape gives, code point by code point, replaced or dropped alike.
    named = {ord(c): name for name, c in html.entities.html5.items() if len(c) == 1}
    written = "".join(
        (f"&{named[cp]}" if form == "named" and cp in named and named[cp].endswith(";") else "")
        or (f"&#x{cp:X};" if form == "hex;" else f"&#{cp}{form[-1]}")
        for cp, form in refs
    )
    data = f"<html><body>{written}</body></html>".encode()
    expected = html.unescape(written).encode("utf-8", "replace")
    (member,) = events([data])[1]
    assert member == (
        "text/html",
        cs.fold(f"<html><body>{expected.decode()}</body></html>".encode()),
    )


def test_ampersands_that_are_no_reference_leave_the_text_as_it_is() -> None:
    data = b"R&D budget, AT&T and P&G; a && b; &unknown; 5 &lt 6\n"
    assert one_member(data, ()) == ("text/plain", data)


def test_an_overlong_numeric_reference_is_unscannable() -> None:
    ref = "&#" + "0" * (CHAR_REF_DIGITS + 1) + "49;"
    _, members, reasons = invariant(f"<p>{ref}</p>".encode())
    assert reasons == [f"{CHAR_REFS}: character reference over {CHAR_REF_DIGITS} digits"]
    assert members[0][1] == f"<p>{ref}</p>".encode()  # left as it was: never a silent pass


# --------------------------------------------------------------------------- percent-encoding


def test_a_form_body_is_decoded_with_plus_as_space() -> None:
    phone = f"{PHONE[:3]}+{PHONE[3:7]}+{PHONE[7:]}"
    data = f"name=%E5%BC%A0%E4%B8%89&id={percent_encode_all(IDS[0])}&tel={phone}".encode()
    assert one_member(data, (PERCENT,)) == (
        "application/x-www-form-urlencoded",
        f"name=张三&id={IDS[0]}&tel={PHONE[:3]} {PHONE[3:7]} {PHONE[7:]}".encode(),
    )
    assert counts(data) == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}


def test_query_strings_in_a_log_are_decoded() -> None:
    lines = "".join(
        f'10.0.0.{i} - - "GET /api/patients?id={percent_encode_all(x)}&v=2 HTTP/1.1" 200\n'
        for i, x in enumerate(IDS)
    )
    assert counts(lines.encode()) == {"pii.cn_resident_id": 3}


def test_percent_signs_in_prose_are_left_alone() -> None:
    data = b"Growth was 12.5% in 2024 and 15%20 in error; 100% sure.\n"
    assert one_member(data, ()) == ("text/plain", data)


def test_an_escaped_control_byte_never_eats_a_raw_identifier() -> None:
    rng = random.Random(4)
    ident = next(x for x in iter(lambda: resident_id(rng), "") if x.startswith("1"))
    data = f"ratio=15%{ident} done\n".encode()  # "%11"…"%15": a control byte
    assert counts(data) == {"pii.cn_resident_id": 1}


def test_partly_encoded_values_are_decoded() -> None:
    # Some encoders escape more than they must: digits among raw digits.
    fields = "&".join(f"id={x.replace('1', '%31')}" for x in IDS)
    assert counts(fields.encode()) == {"pii.cn_resident_id": 3}


# --------------------------------------------------------------------------- base64 and hex


@pytest.mark.parametrize("encoding", ["base64", "base64-mime", "base64-pem", "base64-url", "hex"])
def test_encoded_runs_are_decoded_as_nested_members(encoding: str) -> None:
    blob = ENCODINGS[encoding](PLAIN)
    data = json.dumps({"attachment": blob, "id": 7}).encode()
    _, members, reasons = invariant(data)
    assert (("text/plain", PLAIN.encode())) in members
    assert reasons == []
    assert counts(data) == {"pii.cn_resident_id": 3}
    assert counts(blob.encode()) == {"pii.cn_resident_id": 3}  # a bare encoded file too


def test_a_run_names_its_layer_and_a_zip_inside_is_opened() -> None:
    data = json.dumps({"file": base64.b64encode(make_zip([("ids.txt", PLAIN.encode())])).decode()})
    summary = scan(data.encode())
    assert label_counts(summary) == {"pii.cn_resident_id": 3}
    _, sink = decode([data.encode()])
    assert ("text/plain", PLAIN.encode()) in sink.members
    assert summary.content.type == "application/json"


def test_base64_in_json_in_a_zip_member_is_three_layers() -> None:
    inner = json.dumps({"blob": base64.b64encode(PLAIN.encode()).decode()}).replace("/", "\\/")
    summary = scan(make_zip([("export.json", inner.encode())]))
    assert label_counts(summary) == {"pii.cn_resident_id": 3}
    # The largest member describes the input: the decoded text, three layers deep.
    packed = base64.b64encode(gzip.compress((PLAIN * 50).encode(), mtime=0))
    info, _ = decode([make_zip([("plain.txt", packed)])])
    assert info.layers == ("zip", BASE64, "gzip")


def test_a_png_thumbnail_in_json_stays_clean() -> None:
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    data = json.dumps({"thumb": base64.b64encode(png * 1).decode(), "name": "x"}).encode()
    summary = scan(data)
    assert label_counts(summary) == {}
    assert summary.unscannable == ()


def test_binary_noise_in_runs_is_dropped() -> None:
    rng = random.Random(5)
    tokens = {
        "key": base64.b64encode(rng.randbytes(32)).decode(),
        "signature": base64.b64encode(rng.randbytes(256)).decode(),
        "sha256": hex_encode(rng.randbytes(32)),
        "uuid": "123e4567-e89b-42d3-a456-426614174000",
        "words": "internationalization-and-localization",
        "number": "12345678901234567890123",
    }
    data = json.dumps(tokens).encode()
    _, members, reasons = invariant(data)
    assert members == [("application/json", data)]
    assert reasons == []


def test_binary_no_reader_understands_is_noise_at_any_size() -> None:
    # Raw, such bytes are unscannable (issue 12); encoded in text they are a value
    # of that text (a hex dump of random bytes, a ciphertext field, an executable).
    blob = random.Random(6).randbytes(200_000)
    elf = b"\x7fELF" + bytes(range(256)) * 8
    for data in (
        json.dumps({"payload": base64.b64encode(blob).decode()}).encode(),
        json.dumps({"tool": base64.b64encode(elf).decode()}).encode(),
        hex_encode(blob).encode(),
    ):
        summary = scan(data)
        assert summary.unscannable == ()
        assert label_counts(summary) == {}


def test_encrypted_content_in_a_run_is_unscannable() -> None:
    age = b"age-encryption.org/v1\n-> X25519 abc\n--- def\n" + random.Random(7).randbytes(200)
    summary = scan(json.dumps({"secret": base64.b64encode(age).decode()}).encode())
    assert summary.unscannable == ("age: encrypted content",)


def test_an_identifier_is_counted_once_raw_or_encoded() -> None:
    data = f"raw {IDS[0]} and encoded {base64.b64encode(IDS[0].encode()).decode()}\n".encode()
    summary = scan(data)
    assert summary.labels["pii.cn_resident_id"].count == 2  # two occurrences
    assert summary.labels["pii.cn_resident_id"].distinct == 1
    # An identifier's own digits are no run to decode (it would be found twice).
    assert counts(f"id {IDS[0]} card {CARD.replace(' ', '')}\n".encode()) == {
        "pii.cn_resident_id": 1,
        "pii.bank_card": 1,
    }


def test_a_short_unpadded_run_is_decoded_to_its_last_character() -> None:
    # base64url without padding (a JWT's claims): the run's last, partial quantum
    # completes the last character, so the run is text and read, however short.
    for text in (f"{IDS[0]} 张三", f"{IDS[0]} 张三\n"):
        run = base64_url(text.encode())
        assert len(run) % 4 != 0  # a partial quantum at the end
        assert len(run) < 64  # a short run
        assert counts(json.dumps({"token": run}).encode()) == {"pii.cn_resident_id": 1}


def test_a_base64_column_past_the_head_of_a_csv_is_decoded() -> None:
    rows = [f"{i},{base64.b64encode(f'id {IDS[i % 3]}'.encode()).decode()}\n" for i in range(4000)]
    data = ("n,payload\n" + "".join(rows)).encode()
    assert len(data) > 2 * HEAD_BYTES
    assert label_counts(scan(data)) == {"pii.cn_resident_id": 4000}


@pytest.fixture(params=["core", "hyperscan"])
def run_search(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the compiled core's run search and with Hyperscan's."""
    if request.param == "hyperscan":
        monkeypatch.setattr(transforms, "_next_run", None)
    else:
        assert transforms._next_run is not None, "the compiled core is not built"
    return str(request.param)


FILLER = b"the quick brown fox jumps over the lazy dog, 12.5% of 2024 & R&D " * (
    2 * HEAD_BYTES // 64
)


@pytest.mark.usefixtures("run_search")
@pytest.mark.parametrize("encoding", ["base64", "base64-mime", "base64-pem", "base64-url", "hex"])
def test_a_long_run_deep_in_prose_is_decoded(encoding: str) -> None:
    # Past the head of prose, a table or a log, runs of LONG_RUN_CHARS are still
    # searched: a blob of identifiers after 128 KiB of text is found.
    blob = ENCODINGS[encoding](PLAIN).encode()
    assert len(FILLER) > 2 * HEAD_BYTES
    late = FILLER + blob + b"\n" + FILLER[:1000]
    assert label_counts(scan(late)) == {"pii.cn_resident_id": 3}
    invariant(late)
    # Hex of a list of numbers is all digits: a long digit run.
    numbers = FILLER + hex_encode(" ".join(IDS).encode()).encode() + b" end\n"
    assert label_counts(scan(numbers)) == {"pii.cn_resident_id": 3}


@pytest.mark.usefixtures("run_search")
def test_a_short_run_deep_in_prose_is_not_decoded() -> None:
    # The documented limit: under LONG_RUN_CHARS past the head, a run is a token.
    short = base64.b64encode(f"id {IDS[0]}".encode())
    assert RUN_MIN_CHARS <= len(short) < LONG_RUN_CHARS
    assert label_counts(scan(FILLER + short + b"\n")) == {}
    assert label_counts(scan(short + b"\n" + FILLER)) == {"pii.cn_resident_id": 1}


@pytest.mark.usefixtures("run_search")
@pytest.mark.parametrize("offset", [-40, -5, 0, 3, 17, 60])
def test_runs_at_the_end_of_the_head(offset: int) -> None:
    # A run that starts in the head is searched as short; one that starts past it
    # as long, whatever the chunking.
    pad = b"x " * ((HEAD_BYTES + offset) // 2) + b"x" * ((HEAD_BYTES + offset) % 2)
    assert len(pad) == HEAD_BYTES + offset
    short = base64.b64encode(f"id {IDS[0]}".encode())
    long = base64.b64encode(PLAIN.encode())
    for run, found in ((short, {"pii.cn_resident_id": 1} if offset < 0 else {}), (long, None)):
        data = pad + b" " + run + b" tail\n" + FILLER[:300]
        expected = found if found is not None else {"pii.cn_resident_id": 3}
        assert label_counts(scan(data)) == expected, (offset, run[:10])
        for cut in range(HEAD_BYTES - 80, HEAD_BYTES + 200, 37):
            assert label_counts(scan_chunks(DETECTORS, [data[:cut], data[cut:]])) == expected


def _late_log(rng: random.Random) -> bytes:
    """A log past its head: lines with digests, signatures and ids (noise) and, among
    them, base64 of text, of gzip, of a zip and of a PNG, as lines and wrapped blocks."""
    blobs = [
        lambda: hashlib.sha256(rng.randbytes(8)).hexdigest(),
        lambda: hashlib.sha512(rng.randbytes(8)).hexdigest(),
        lambda: "sha512-" + base64.b64encode(hashlib.sha512(rng.randbytes(8)).digest()).decode(),
        lambda: base64.b64encode(rng.randbytes(rng.randint(48, 300))).decode(),
        lambda: base64_url(rng.randbytes(rng.randint(48, 200))),
        lambda: base64.b64encode(
            f"ticket {rng.random()} id {rng.choice(IDS)} ok".encode()
        ).decode(),
        lambda: base64.b64encode(gzip.compress(PLAIN.encode(), mtime=0)).decode(),
        lambda: base64.b64encode(make_zip([("a.txt", PLAIN.encode())])).decode(),
        lambda: base64_lines(PLAIN.encode() * 2, 76),
        lambda: base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(60)).decode(),
        lambda: hex_encode(f"note {rng.choice(IDS)}".encode()),
    ]
    ends = [" ok", "", "=", " ="]
    lines = [
        f"2025-03-0{rng.randint(1, 9)}T10:00:00Z pulled {rng.choice(blobs)()}{rng.choice(ends)}"
        for _ in range(40)
    ]
    return FILLER[: HEAD_BYTES + 100] + "\n".join(lines).encode() + b"\n"


@pytest.mark.parametrize("seed", range(8))
def test_the_core_passes_over_only_noise_past_the_head(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the head the core decides digests and signatures are noise without
    # the state machine; it must never pass over what the state machine (all of
    # it in Python where the core is not built) would decode.
    data = _late_log(random.Random(seed))
    assert transforms._next_run is not None, "the compiled core is not built"
    core = invariant(data)
    assert len(core[1]) > 1  # the text, gzip and zip blobs were decoded
    monkeypatch.setattr(transforms, "_next_run", None)
    assert invariant(data) == core


def test_a_lockfile_costs_no_decode_and_hides_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # An npm lockfile: an integrity digest (sha512, base64) per package, passed over
    # by the core; a field among them holding base64 of text is still decoded, and
    # the members are the Python state machine's.
    packages = {
        f"node_modules/p{i}": {
            "version": f"1.{i}.0",
            "integrity": "sha512-"
            + base64.b64encode(hashlib.sha512(str(i).encode()).digest()).decode(),
        }
        for i in range(300)
    }
    packages["node_modules/p150"]["note"] = base64.b64encode(PLAIN.encode()).decode()
    data = json.dumps({"lockfileVersion": 3, "packages": packages}, indent=2).encode()
    core = invariant(data)
    assert core[1][1:] == [("text/plain", PLAIN.encode())]
    assert label_counts(scan(data)) == {"pii.cn_resident_id": 3}
    monkeypatch.setattr(transforms, "_next_run", None)
    assert invariant(data) == core


@pytest.mark.parametrize("seed", range(6))
def test_the_core_and_hyperscan_find_the_same_runs(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run search is the compiled core's where it is built, Hyperscan's where
    # not: the same members, in the same order, at every chunking.
    rng = random.Random(seed)
    pieces = [
        lambda: base64.b64encode(PLAIN.encode()).decode(),
        lambda: base64_lines(PLAIN.encode(), 76),
        lambda: hex_encode(IDS[0].encode()),
        lambda: base64.b64encode(f"id {rng.choice(IDS)}".encode()).decode(),  # 28 characters
        lambda: base64_url(f"{rng.choice(IDS)} 张三".encode()),
        lambda: "".join(rng.choice("0123456789") for _ in range(rng.randint(15, 40))),
        lambda: "".join(rng.choice("ABCdef012+/") for _ in range(rng.randint(10, 70))),
        lambda: str(uuid_like(rng)),
        lambda: "the quick brown fox " * rng.randint(1, 5),
    ]
    text = "".join(rng.choice(pieces)() + rng.choice([" ", "\n", ",", '"']) for _ in range(60))
    data = json.dumps({"log": text}).encode() if seed % 2 else text.encode()
    assert transforms._next_run is not None, "the compiled core is not built"
    core = invariant(data)
    monkeypatch.setattr(transforms, "_next_run", None)
    assert invariant(data) == core


def uuid_like(rng: random.Random) -> str:
    return "-".join(
        "".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)
    )


def test_hex_of_numbers_is_decoded_but_random_digits_are_not() -> None:
    assert counts(f"h={hex_encode(IDS[0].encode())}\n".encode()) == {"pii.cn_resident_id": 1}
    rng = random.Random(8)
    digits = "".join(str(rng.randint(0, 9)) for _ in range(40))
    _, members, _ = invariant(f'{{"n": "{digits}"}}'.encode())
    assert len(members) == 1


def test_many_runs_flush_at_a_run_end_without_losing_any() -> None:
    record = base64.b64encode((PLAIN * 30).encode()).decode()
    lines = [json.dumps({"i": i, "blob": record}) + "\n" for i in range(400)]
    data = "".join(lines).encode()
    assert 400 * len(PLAIN) * 30 > DEFER_FLUSH_BYTES
    summary = scan(data)
    assert summary.labels["pii.cn_resident_id"].count == 400 * 30 * 3
    assert summary.unscannable == ()
    # The same whatever the chunking.
    chunks = [data[i : i + 7777] for i in range(0, len(data), 7777)]
    assert label_counts(scan_chunks(DETECTORS, chunks)) == label_counts(summary)


# --------------------------------------------------------------------------- limits


def test_nesting_past_the_depth_limit_is_unscannable() -> None:
    data = PLAIN.encode()
    for _ in range(5):
        data = base64.b64encode(data)
    summary = scan(data)
    assert summary.unscannable == ("base64: nested deeper than 4 layers",)
    # In-place stages are layers too: a form field in a zip member, depth 1.
    body = form_urlencode(html_decimal_refs(IDS[0])).encode()
    summary = scan(make_zip([("form.txt", body)]), ScanLimits(max_depth=2))
    assert summary.unscannable == ("char-refs: nested deeper than 2 layers",)


def test_a_run_past_the_nested_member_bound_is_unscannable() -> None:
    data = base64.b64encode((PLAIN * 200).encode())
    summary = scan(data, ScanLimits(max_nested_random_bytes=4096))
    assert summary.unscannable == ("base64: run over 4 KiB",)


def test_decoded_runs_count_against_the_expansion_cap() -> None:
    data = base64.b64encode((PLAIN * 200).encode())
    summary = scan(data, ScanLimits(max_expanded_bytes=4096))
    assert summary.unscannable == ("base64: expanded size over 4 KiB",)


# --------------------------------------------------------------------------- chunk invariance


def test_every_transform_at_every_split_point() -> None:
    blob = base64_lines(f"id {IDS[1]}\n".encode(), 32)
    data = (
        f'{{"a": "{json_escape_all(IDS[0])}", "b": "{html_hex_refs(PHONE)}", '
        f'"c": "q={percent_encode_all(HKID)}", "d": "{blob}"}}'
    ).encode()
    assert len(data) < 2000
    assert counts(data) == {"pii.cn_resident_id": 2, "pii.cn_phone": 1, "pii.hk_id": 1}
    invariant(data)


def test_decoded_layers_are_recorded_in_order() -> None:
    data = json_escaped_document(form_urlencode(html_decimal_refs(IDS[0]))).encode()
    assert one_member(data, (JSON_ESCAPES, PERCENT, CHAR_REFS)) == (
        "application/json",
        f'{{"text": "data={IDS[0]}"}}'.encode(),
    )
    hexed = binascii.hexlify(base64.b64encode(PLAIN.encode()))
    info, _ = decode([hexed])
    assert info.type == "text/plain"
    assert label_counts(scan(hexed)) == {"pii.cn_resident_id": 3}
    # Runs nested in runs: the largest member (the gzip's text) names them in order.
    packed = binascii.hexlify(base64.b64encode(gzip.compress((PLAIN * 50).encode(), mtime=0)))
    info, _ = decode([packed])
    assert info.layers == (HEX, BASE64, "gzip")


def test_random_bytes_of_every_kind_never_crash_and_stay_chunk_invariant() -> None:
    rng = random.Random(9)
    alphabet = b'&#x;%=\\u0123456789abcdefABCDEF+/=-_\n\r "{}[]<>'
    for _ in range(30):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        assert_chunk_invariant(events, data, rng=rng, random_cuts=3, max_every_split=300)
    data = b"{" + bytes(rng.choice(alphabet) for _ in range(500))
    assert_chunk_invariant(events, data, rng=rng, random_cuts=3, max_every_split=600)
