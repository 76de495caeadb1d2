"""Bare ``multipart/*`` bodies (issue 13): a browser form upload, ``curl -F``,
``requests.post(files=...)``, and the MIME hardening of the e-mail reader they share.

A form body starts with its first boundary line and has no top-level headers
(the boundary travels in the HTTP ``Content-Type``, which the classifier does
not see). Bodies are built by hand as browsers and curl write them, so that
each test controls the boundary, the part headers and the transfer encoding;
one is made by urllib3 (what ``requests`` sends).
"""

from __future__ import annotations

import base64
import io
import random
import time
import tracemalloc
import zipfile
from collections.abc import Callable

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.classify.detectors import DetectorSet
from gateway.classify.formats import identify
from gateway.classify.formats.base import Unscannable
from gateway.classify.formats.documents import mail
from gateway.classify.formats.testing import RecordingExtract, label_counts, read_stream, scan_bytes
from gateway.classify.testing import cn_mobile, hkid, resident_id

DETECTORS = DetectorSet.build()
RNG = random.Random(13)
RID, RID2, RID3, RID4 = (resident_id(RNG) for _ in range(4))
MOBILE = cn_mobile(RNG)
HKID = hkid(RNG)

FORM = "multipart/form-data"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ID = "pii.cn_resident_id"
PHONE = "pii.cn_phone"
UNSCANNABLE = "content.unscannable"
#: As Chrome writes it.
BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


def field(
    name: str,
    value: bytes | str,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    cte: str | None = None,
    extra: bytes = b"",
) -> bytes:
    """One part as browsers write it: Content-Disposition, then the optional headers."""
    head = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    lines = [head.encode()]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}".encode())
    if cte is not None:
        lines.append(f"Content-Transfer-Encoding: {cte}".encode())
    body = value.encode() if isinstance(value, str) else value
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n" + body


def form(*parts: bytes, boundary: bytes = BOUNDARY, close: bool = True) -> bytes:
    """A multipart body: each part after its delimiter line, then the close delimiter."""
    out = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


def scan(data: bytes, chunk: int = 0) -> tuple[str, dict[str, int], tuple[str, ...]]:
    """The whole classifier: the content type, findings per label, unscannable reasons."""
    summary = scan_bytes(DETECTORS, data, chunk)
    return summary.content.type, label_counts(summary), summary.unscannable


def read(data: bytes, chunk: int = 0) -> RecordingExtract:
    """The form reader alone."""
    return read_stream(mail.make_form_data_reader, data, chunk)


def rejects(call: Callable[[], object]) -> str | None:
    """The unscannable reason of ``call``, or None when it read its input."""
    try:
        call()
    except Unscannable as exc:
        reason = exc.reason
    else:
        return None
    assert ":" in reason  # "<format>: <what>"
    return reason


def xlsx(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------- what is found


class TestFormUploads:
    def test_text_field_with_an_id_and_a_mobile(self) -> None:
        body = form(
            field("name", "陈大文"),
            field("note", f"Patient {RID}, mobile {MOBILE}.\r\n"),
        )
        assert scan(body) == (FORM, {ID: 1, PHONE: 1}, ())

    def test_csv_file_part(self) -> None:
        csv = f"id,phone\n{RID},{MOBILE}\n{RID2},\n".encode()
        body = form(field("upload", csv, filename="cohort.csv", content_type="text/csv"))
        assert scan(body) == (FORM, {ID: 2, PHONE: 1}, ())

    def test_base64_part(self) -> None:
        encoded = base64.encodebytes(f"身份证 {RID}\n香港身份证 {HKID}\n".encode())
        body = form(field("doc", encoded, filename="ids.txt", cte="base64"))
        assert RID.encode() not in body
        kind, counts, unscannable = scan(body)
        assert (kind, counts[ID], unscannable) == (FORM, 1, ())
        assert counts["pii.hk_id"] == 1

    def test_quoted_printable_part(self) -> None:
        # A soft line break inside the number and its last digits as =XX escapes.
        qp = RID[:8].encode() + b"=\r\n" + b"".join(b"=%02X" % c for c in RID[8:].encode())
        body = form(field("note", b"ID " + qp, content_type="text/plain", cte="quoted-printable"))
        assert RID.encode() not in body
        assert scan(body) == (FORM, {ID: 1}, ())

    @pytest.mark.parametrize(
        ("filename", "media", "make", "kind"),
        [
            (
                "ids.zip",
                "application/zip",
                lambda: zipped("in/ids.csv", f"id\n{RID}\n".encode()),
                FORM,
            ),
            # A spreadsheet's main part names the input, wherever it is (Format.names_container).
            ("ids.xlsx", "application/octet-stream", lambda: xlsx([["id"], [RID], [RID2]]), XLSX),
        ],
        ids=["zip", "xlsx"],
    )
    def test_a_file_part_is_opened_by_its_own_reader(
        self, filename: str, media: str, make: Callable[[], bytes], kind: str
    ) -> None:
        data = make()
        body = form(field("file", data, filename=filename, content_type=media))
        found = scan(body)
        assert found[0] == kind
        assert found[1][ID] >= 1
        assert found[2] == ()
        # the same bytes sent in base64, without a file name or type (a text field that is binary)
        assert scan(form(field("file", base64.encodebytes(data), cte="base64"))) == found

    def test_file_name_holding_an_id(self) -> None:
        body = form(field("scan", b"\x89PNG\r\n\x1a\n" + bytes(64), filename=f"{RID}.png"))
        kind, counts, _ = scan(body)
        assert (kind, counts.get(ID)) == (FORM, 1)

    @pytest.mark.parametrize(
        ("disposition", "rendered"),
        [
            # RFC 2231 / RFC 5987, as urllib3 1.x wrote non-ASCII names
            (
                "form-data; name=\"f\"; filename*=UTF-8''%E5%BC%A0%E4%B8%89_{rid}.txt",
                "张三_{rid}.txt",
            ),
            # percent-encoded (RFC 7578 section 4.2), digits included
            ('form-data; name="f"; filename="{pct}.txt"', "{rid}.txt"),
            # raw UTF-8, as browsers write it
            ('form-data; name="f"; filename="张三_{rid}.txt"', "张三_{rid}.txt"),
            # RFC 2047, as some mail-minded clients write it
            ('form-data; name="f"; filename="=?UTF-8?B?{b64}?="', "张三 {rid}.txt"),
        ],
        ids=["rfc2231", "percent", "raw-utf8", "rfc2047"],
    )
    def test_encoded_file_names_are_decoded(self, disposition: str, rendered: str) -> None:
        pct = "".join(f"%{c:02X}" for c in RID.encode())
        b64 = base64.b64encode(f"张三 {RID}.txt".encode()).decode()
        head = disposition.format(rid=RID, pct=pct, b64=b64)
        body = form(f"Content-Disposition: {head}\r\n\r\nno identifier here".encode())
        assert scan(body) == (FORM, {ID: 1}, ())
        assert rendered.format(rid=RID) in read(body).text

    def test_field_name_holding_an_id(self) -> None:
        body = form(field(f"patient[{RID}]", "yes"))
        assert scan(body) == (FORM, {ID: 1}, ())

    def test_clean_form(self) -> None:
        body = form(
            field("title", "Cohort summary"),
            field("minutes", b"Minutes of the meeting.\n", filename="m.txt"),
            field("data", b"a,b\n1,2\n", filename="d.csv", content_type="text/csv"),
        )
        assert scan(body) == (FORM, {}, ())

    def test_requests_style_body(self) -> None:
        filepost = pytest.importorskip("urllib3.filepost")
        body, content_type = filepost.encode_multipart_formdata(
            {
                "comment": f"call {MOBILE}",
                "file": ("名单.csv", f"id\n{RID}\n".encode(), "text/csv"),
                "archive": ("a.zip", zipped("x.txt", RID2.encode()), "application/zip"),
            }
        )
        assert content_type.startswith("multipart/form-data; boundary=")
        assert scan(body, chunk=4096) == (FORM, {ID: 2, PHONE: 1}, ())

    def test_lf_line_ends_transport_padding_and_a_leading_crlf(self) -> None:
        body = form(field("note", f"ID {RID}"), field("x", "y")).replace(b"\r\n", b"\n")
        body = body.replace(b"--" + BOUNDARY + b"\n", b"--" + BOUNDARY + b" \t\n", 1)
        assert scan(b"\r\n" + body) == (FORM, {ID: 1}, ())

    def test_multipart_mixed_body(self) -> None:
        """A MIME body whose parts name only their type (a Drive/GCS upload, a batch)."""
        body = form(
            b'Content-Type: application/json\r\n\r\n{"name": "cohort.csv"}',
            b"Content-Type: text/csv\r\n\r\nid\n" + RID.encode(),
            boundary=b"foo_bar_baz",
        )
        assert scan(body) == ("multipart/mixed", {ID: 1}, ())

    def test_a_file_of_a_form_within_a_mixed_part(self) -> None:
        """RFC 2388's several files of one field: a multipart/mixed part."""
        inner = (
            b'--inner\r\nContent-Disposition: file; filename="a.csv"\r\n\r\nid\n'
            + RID.encode()
            + b'\r\n--inner\r\nContent-Disposition: file; filename="'
            + RID2.encode()
            + b'.txt"\r\n\r\nclean\r\n--inner--'
        )
        body = form(field("files", inner, content_type="multipart/mixed; boundary=inner"))
        assert scan(body) == (FORM, {ID: 2}, ())

    def test_charset_field(self) -> None:
        """RFC 7578 section 4.6: ``_charset_`` is the default charset of the text fields."""
        body = form(
            field("_charset_", "GBK"),
            field("name", "张三 ".encode("gbk") + RID.encode()),
        )
        out = read(body)
        assert f"张三 {RID}" in out.text
        assert scan(body) == (FORM, {ID: 1}, ())

    def test_undeclared_big5_field(self) -> None:
        body = form(field("name", "陳大文 ".encode("big5") + RID.encode()))
        assert f"陳大文 {RID}" in read(body).text

    def test_what_lies_outside_the_parts_is_scanned(self) -> None:
        body = form(field("a", "b")) + f"epilogue {RID}\r\n".encode()
        assert scan(body) == (FORM, {ID: 1}, ())

    def test_other_part_headers_are_scanned(self) -> None:
        body = form(field("a", "b", extra=f"X-Patient: {RID}\r\n".encode()))
        assert scan(body) == (FORM, {ID: 1}, ())


class TestTransferEncodingEvasions:
    """What a server that ignores the transfer encoding (most do: RFC 7578
    deprecates it) would store is scanned, as well as what the decoding gives."""

    def test_invalid_base64_is_scanned_as_sent(self) -> None:
        body = form(field("note", f"ID {RID}!", cte="base64"))
        kind, counts, _ = scan(body)
        assert (kind, counts[ID]) == (FORM, 1)

    def test_base64_one_character_too_long_is_still_decoded(self) -> None:
        """The standard library gives up on 4n+1 characters; lenient decoders drop the last."""
        encoded = base64.b64encode(f"ID: {RID}.\n".encode()) + b"Q"  # 32 + 1 characters
        body = form(field("f", encoded, filename="a.txt", cte="base64"))
        assert read(body).nested_members[0].data == f"ID: {RID}.\n".encode()
        kind, counts, _ = scan(body)
        # Not clean, so also scanned as sent, where the text transforms may decode it again.
        assert (kind, counts[ID] >= 1) == (FORM, True)

    @pytest.mark.parametrize("cte", ["base64 ", "BASE64", "base64 (why not)", "\tbase64"])
    def test_a_sloppy_encoding_name_is_decoded(self, cte: str) -> None:
        encoded = base64.b64encode(f"ID {RID}".encode())
        body = form(field("note", encoded, cte=cte))
        assert scan(body) == (FORM, {ID: 1}, ())


class TestLayout:
    def test_members(self) -> None:
        body = form(
            field("note", "hello"),
            field("f", b"a,b\n", filename="a.csv", content_type="text/csv"),
        )
        out = read(body)
        assert [(m.name, m.content_type) for m in out.members] == [
            ("part headers", "text/plain"),
            ("part 1", "text/plain"),
        ]
        assert out.members[0].text == (
            'Content-Disposition: form-data; name="note"\n'
            'Content-Disposition: form-data; name="f"; filename="a.csv"\n'
            "Content-Type: text/csv\n"
        )
        assert out.members[1].text == "hello"
        assert [(n.name, bytes(n.data), n.closed) for n in out.nested_members] == [
            ("part 2", b"a,b\n", True)
        ]

    @pytest.mark.parametrize(
        ("prefix", "kind"),
        [
            # curl 8 -F
            (
                b"--------------------------d74496d66958873e\r\n"
                b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\n'
                b"Content-Type: text/csv\r\n\r\nid\n",
                "form-data",
            ),
            # Firefox
            (
                b"-----------------------------geckoformboundary5f2c\r\n"
                b'Content-Disposition: form-data; name="q"\r\n\r\nx',
                "form-data",
            ),
            # a folded header, LF line ends
            (b"--b\nContent-Disposition: form-data;\n\tname=x\n\nvalue", "form-data"),
            # Google Drive multipart upload, a batch request
            (b"--foo_bar_baz\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}", "mixed"),
            (b"--batch_1\r\nContent-Type: application/http\r\nContent-ID: 1\r\n\r\nGET /", "mixed"),
            (b"--b\r\nContent-Disposition: attachment; filename=a\r\n\r\n", "mixed"),
            # not multipart
            (b"--b\r\nContent-Disposition: form-data; name=x\r\n", None),  # header block unended
            (b"--b\r\n Content-Type: text/plain\r\n\r\n", None),  # continuation first
            (b"--b\r\nContent-Disposition: nonsense\r\n\r\n", None),
            (b"--\r\nContent-Type: text/plain\r\n\r\n", None),  # no boundary
            (b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n", None),  # two line breaks first
            (b"-- b \r\nContent-Type: text/plain\r\n\r\n", "mixed"),  # inner blank: allowed
        ],
    )
    def test_sniff(self, prefix: bytes, kind: str | None) -> None:
        assert mail.multipart_kind(prefix) == kind
        fmt = identify(prefix)
        assert (fmt.name if fmt else None) == {"form-data": "form-data", "mixed": "multipart"}.get(
            kind or ""
        )


# --------------------------------------------------------------------------- what is not multipart


@pytest.mark.parametrize(
    "text",
    [
        b"---\n\nA paragraph after a rule. ID {rid}\n",  # Markdown horizontal rule
        b"---\ntitle: notes\nlayout: post\n---\nID {rid}\n",  # YAML front matter
        b"-- Table: patients\n-- id {rid}\nSELECT 1;\n",  # SQL comments
        b"-- \nDr Chan\nID {rid}\n",  # signature separator
        b"--boundary\nThis is prose, not a header: ID {rid}\n\nmore\n",
        b"--b\r\nSubject: not a part header\r\n\r\nID {rid}\r\n",
        b"--b\r\nContent-Type: not a media type\r\n\r\nID {rid}\r\n",
        b"--b\r\n\r\nno part headers at all {rid}\r\n--b--\r\n",
    ],
    ids=[
        "markdown-rule",
        "front-matter",
        "sql",
        "signature",
        "prose",
        "other-header",
        "bad-type",
        "no-headers",
    ],
)
def test_text_starting_with_dashes_stays_text(text: bytes) -> None:
    data = text.replace(b"{rid}", RID.encode())
    assert identify(data) is None
    assert scan(data) == ("text/plain", {ID: 1}, ())


# --------------------------------------------------------------------------- chunking


def test_same_summary_for_every_chunking() -> None:
    body = form(
        field("note", f"ID {RID} mobile {MOBILE}"),
        field("doc", base64.encodebytes(f"{RID2}\n".encode()), filename="a.txt", cte="base64"),
        field("z", zipped("b.csv", f"id\n{RID3}\n".encode()), filename="b.zip"),
        field(f"patient[{RID4}]", "y"),
    )
    for chunk in (1, 7, 4096):
        assert scan(body, chunk) == (FORM, {ID: 4, PHONE: 1}, ())


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=8))
def test_same_members_for_every_chunking(cuts: list[int]) -> None:
    body = form(field("note", f"ID {RID}"), field("f", b"\x00\x01" * 100, filename="b.bin"))
    whole = read(body)
    out = RecordingExtract()
    reader = mail.make_form_data_reader(out)
    start = 0
    for cut in sorted(set(cuts)):
        reader.feed(body[start:cut])
        start = cut
    reader.feed(body[start:])
    reader.finish()
    assert [(m.name, m.text) for m in out.members] == [(m.name, m.text) for m in whole.members]
    assert [bytes(n.data) for n in out.nested_members] == [
        bytes(n.data) for n in whole.nested_members
    ]


# --------------------------------------------------------------------------- hostile bodies


class TestHostile:
    def test_no_closing_boundary(self) -> None:
        body = form(field("a", "b"), field("note", f"ID {RID}"), close=False)
        assert scan(body[:-2]) == (FORM, {ID: 1}, ())

    def test_truncated_in_a_base64_part(self) -> None:
        encoded = base64.encodebytes(f"ID {RID}\n".encode() + b"lorem ipsum " * 30)
        body = form(field("a", f"ID {RID2}"), field("f", encoded, filename="x", cte="base64"))
        kind, counts, _ = scan(body[: len(body) - 200])
        assert (kind, counts[ID]) == (FORM, 2)

    def test_ten_thousand_empty_parts(self) -> None:
        body = form(field("a", RID), *[field("e", b"") for _ in range(10_000)])
        started = time.monotonic()
        assert scan(body) == (FORM, {UNSCANNABLE: 1}, ("form-data: more than 1000 parts",))
        assert time.monotonic() - started < 10

    def test_many_parts_stop_the_parser_early(self) -> None:
        """The bound holds while the parser runs, not after it built every part."""
        body = b"--b\r\n" + b"\r\n--b\r\n" * 200_000
        tracemalloc.start()
        try:  # fed as the decoder feeds a reader: 64 KiB blocks
            reason = rejects(lambda: read(body, 65536))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reason == "form-data: more than 1000 parts"
        assert peak < 16 << 20

    @pytest.mark.parametrize("length", [71, 200, 998])
    def test_a_long_boundary_is_still_read(self, length: int) -> None:
        """RFC 2046 caps boundaries at 70 characters; servers do not (Python's email,
        Go, busboy, Werkzeug up to 201): a longer one must not hide an encoded part."""
        boundary = (b"'()+_,-./:=? x" * 100)[: length - 1] + b"Z"
        encoded = base64.b64encode(f"ID {RID}".encode())
        body = form(field("f", encoded, cte="base64"), boundary=boundary)
        assert scan(body) == (FORM, {ID: 1}, ())

    def test_a_boundary_longer_than_a_line_is_text(self) -> None:
        body = form(field("note", f"ID {RID}"), boundary=b"x" * 2000)
        assert scan(body) == ("text/plain", {ID: 1}, ())

    @pytest.mark.parametrize("boundary", [b'"quoted"', b"<angle>", b"back\\slash", b"semi;colon"])
    def test_boundaries_the_header_syntax_would_alter(self, boundary: bytes) -> None:
        body = form(field("note", base64.b64encode(RID.encode()), cte="base64"), boundary=boundary)
        assert scan(body) == (FORM, {ID: 1}, ())

    def test_nested_multipart_a_hundred_deep(self) -> None:
        inner = b"ID " + RID.encode()
        for level in range(100):
            inner = (
                b"--n%d\r\nContent-Type: multipart/mixed; boundary=n%d\r\n\r\n" % (level, level + 1)
                + inner
                + b"\r\n--n%d--" % level
            )
        body = form(field("deep", inner, content_type="multipart/mixed; boundary=n0"))
        started = time.monotonic()
        assert scan(body) == (
            FORM,
            {UNSCANNABLE: 1},
            ("form-data: more than 64 MIME containers",),
        )
        assert time.monotonic() - started < 10

    def test_message_parts_nested_past_the_recursion_limit(self) -> None:
        inner = b"Content-Type: message/x-unknown\r\n\r\n" * 5000 + RID.encode()
        body = form(field("m", inner, content_type="message/x-unknown"))
        kind, counts, unscannable = scan(body)
        assert kind == FORM
        assert unscannable == () or counts[UNSCANNABLE] == 1

    def test_delivery_status_blocks_are_bounded(self) -> None:
        """A delivery-status part is one object per header block to the parser."""
        blocks = b"a: b\r\n\r\n" * 200_000
        body = form(field("dsn", blocks, content_type="message/delivery-status"))
        started = time.monotonic()
        assert scan(body)[2] == ("form-data: more than 1000 parts",)
        assert time.monotonic() - started < 10

    @pytest.mark.parametrize("quoted", [True, False])
    def test_parameter_parsing_is_bounded(self, quoted: bool) -> None:
        """The standard library parses MIME parameters in quadratic time (60,000
        semicolons: seconds; the header fits the sniffed prefix)."""
        junk = b";" * 60_000
        value = b'x="' + junk + b'"' if quoted else junk
        body = form(
            b'Content-Disposition: form-data; name="a"; ' + value + b"\r\n\r\n" + RID.encode()
        )
        started = time.monotonic()
        kind, counts, unscannable = scan(body)
        assert time.monotonic() - started < 10
        assert (kind, counts) == (FORM, {UNSCANNABLE: 1})
        assert unscannable == ("form-data: a MIME header over 16 KiB or 64 parameters",)

    def test_size_bound(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(mail, "MAX_EMAIL_BYTES", 1 << 20)
        body = form(field("big", b"x" * (2 << 20), filename="big.bin"))
        assert scan(body, chunk=65536) == (FORM, {UNSCANNABLE: 1}, ("form-data: body over 1 MiB",))

    def test_the_first_line_is_bounded(self) -> None:
        assert rejects(lambda: read(b"--" + b"x" * 5000)) == "form-data: no boundary line"
        assert rejects(lambda: read(b"--abc")) == "form-data: no boundary line"
        assert rejects(lambda: read(b"not multipart\r\n")) == "form-data: no boundary line"


EDITS = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=12)
SAMPLE = form(
    field("note", f"ID {RID}"),
    field("doc", base64.encodebytes(RID2.encode()), filename="a.txt", cte="base64"),
    field("qp", b"a=3Db=\r\nc", cte="quoted-printable"),
    field(
        "files",
        b"--i\r\nContent-Type: text/plain\r\n\r\nx\r\n--i--",
        content_type="multipart/mixed; boundary=i",
    ),
)


@settings(max_examples=60, deadline=None)
@given(edits=EDITS, cut=st.integers(min_value=0))
def test_mutated_forms_are_read_or_unscannable(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SAMPLE)
    for position, value in edits:
        data[position % len(data)] = value
    mutated = bytes(data[: max(1, cut % (len(data) + 1))])
    rejects(lambda: read(mutated, 97))
    identify(mutated)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=512))
def test_sniffers_never_raise(data: bytes) -> None:
    for prefix in (data, b"--b\r\n" + data, b"--b\r\nContent-Type: text/plain\r\n" + data):
        mail.sniff_form_data(prefix)
        mail.sniff_multipart(prefix)


# --------------------------------------------------------------------------- the e-mail reader


def test_email_preamble_and_epilogue_are_scanned() -> None:
    message = (
        b"From: a@example.cn\r\nTo: b@example.hk\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"preamble " + RID.encode() + b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b--\r\nepilogue " + RID2.encode() + b"\r\n"
    )
    kind, counts, _ = scan(message)
    assert (kind, counts[ID]) == ("message/rfc822", 2)


def test_email_raw_utf8_headers_are_decoded() -> None:
    """RFC 6532 mail carries UTF-8 headers unencoded."""
    message = f"From: 陈大文 <a@example.cn>\r\nSubject: 转介 {RID}\r\n\r\nhi\r\n".encode()
    out = read_stream(mail.make_email_reader, message)
    assert f"Subject: 转介 {RID}\n" in out.members[0].text
    assert "From: 陈大文 <a@example.cn>\n" in out.members[0].text


def test_email_parameter_parsing_is_bounded() -> None:
    message = (
        b'From: a@example.cn\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; x="'
        + b";" * 400_000
        + b'"; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n'
    )
    started = time.monotonic()
    assert rejects(lambda: read_stream(mail.make_email_reader, message)) == (
        "email: a MIME header over 16 KiB or 64 parameters"
    )
    assert time.monotonic() - started < 10
