"""Documents and e-mail readers (gateway/classify/formats/documents).

Every file is made by its field's own writer library (fpdf2, python-docx,
openpyxl, XlsxWriter, python-pptx, odfpy, xlwt, the stdlib's email), with
identifiers planted in the places those formats hide them. Word ``.doc`` and
PowerPoint ``.ppt`` have no Python writer: their streams are built here from
the published specifications ([MS-DOC], [MS-PPT], [MS-OLEPS]) and packed into
a real compound file by a small [MS-CFB] writer, then read back through
olefile like any upload.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import random
import struct
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage

import docx
import openpyxl
import pptx
import pytest
import xlsxwriter
import xlwt
from fpdf import FPDF
from hypothesis import given, settings
from hypothesis import strategies as st
from odf.opendocument import OpenDocumentSpreadsheet, OpenDocumentText
from odf.table import Table, TableCell, TableRow
from odf.text import P, Span

from gateway.classify import Scanner
from gateway.classify import validators as V
from gateway.classify.detectors import DetectorSet
from gateway.classify.formats import identify
from gateway.classify.formats.base import MAX_CELL_CHARS, BytesAccess, Unscannable
from gateway.classify.formats.documents import DOCX, mail, office_xml, ole, pdf
from gateway.classify.formats.testing import RecordingExtract, read_random, read_stream
from gateway.classify.matcher import TextMatcher

DETECTORS = DetectorSet.build()
SECRET = b"documents-test-secret-0123456789"
TODAY = dt.date(2026, 11, 25)
RNG = random.Random(12)


def resident_id(rng: random.Random = RNG) -> str:
    """A valid Mainland Resident ID (region, birth date, sequence, ISO 7064 check)."""
    body = f"110105{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body += f"{rng.randint(0, 999):03d}"
    return body + chr(V.mod11_2_check_char(body.encode()))


def phone(rng: random.Random = RNG) -> str:
    """A Mainland mobile number."""
    return f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}"


RID = resident_id()
RID2 = resident_id()
PHONE = phone()
PHONE2 = phone()


def labels(*outs: RecordingExtract) -> Counter[str]:
    """Findings per label when the members are scanned by the real matcher."""
    matcher = TextMatcher(DETECTORS, SECRET, today=TODAY)
    for out in outs:
        for member in out.members:
            matcher.begin_member(member.content_type)
            matcher.text(member.text.encode())
            matcher.end_member()
    return Counter({label: stats.count for label, stats in matcher.result().labels.items()})


def rejects(call: Callable[[], object]) -> str | None:
    """Run a reader; the unscannable reason, or None when it read the input.

    Anything but :class:`Unscannable` propagates and fails the test.
    """
    try:
        call()
    except Unscannable as exc:
        reason = exc.reason
    else:
        return None
    assert ":" in reason  # "<format>: <what>"
    return reason


# --------------------------------------------------------------------------- PDF


def make_pdf(*, lines: list[str], title: str = "", compress: bool = True, **kw: object) -> bytes:
    doc = FPDF()
    doc.set_compression(compress)
    if title:
        doc.set_title(title)
        doc.set_author("Dr. Chan")
    doc.set_font("helvetica", size=11)
    for page in lines:
        doc.add_page()
        doc.multi_cell(0, 6, page)
    if "note" in kw:
        doc.text_annotation(20, 20, str(kw["note"]))
    if "attachment" in kw:
        doc.embed_file(basename="ids.csv", bytes=kw["attachment"])  # type: ignore[arg-type]
    if "password" in kw:
        doc.set_encryption(owner_password="owner", user_password=kw["password"])  # type: ignore[arg-type]
    return bytes(doc.output())


REPORT = make_pdf(
    lines=[f"Visit summary. Contact {PHONE} for results.", "Page two: nothing personal."],
    title=f"Case {RID}",
    note=f"call back {PHONE2}",
    attachment=f"id,phone\n{RID2},{PHONE}\n".encode(),
)


class TestPdf:
    def test_pages_metadata_annotations_and_attachments(self) -> None:
        assert identify(REPORT[:65536]).name == "pdf"  # type: ignore[union-attr]
        out = read_random(pdf.read_pdf, REPORT)
        names = [m.name for m in out.members]
        assert names == ["metadata", "page 1", "page 2"]
        assert all(m.content_type == "text/plain" and m.closed for m in out.members)
        assert f"Title: Case {RID}" in out.members[0].text
        assert PHONE in out.members[1].text
        assert PHONE2 in out.members[2].text  # the comment on the last page
        assert labels(out) == {"pii.cn_resident_id": 1, "pii.cn_phone": 2}
        [attached] = out.nested_members
        assert attached.name == "ids.csv"
        assert attached.closed
        assert bytes(attached.data) == f"id,phone\n{RID2},{PHONE}\n".encode()

    def test_uncompressed_pdf_reads_the_same(self) -> None:
        plain = make_pdf(lines=[f"ID {RID}"], compress=False)
        assert b"/FlateDecode" not in plain
        assert labels(read_random(pdf.read_pdf, plain)) == {"pii.cn_resident_id": 1}

    def test_clean_pdf_has_no_findings(self) -> None:
        clean = make_pdf(lines=["Absorbance 0.413 at 450 nm, plate 7, well B03."] * 3, title="QC")
        out = read_random(pdf.read_pdf, clean)
        assert len(out.members) == 4
        assert not out.nested_members
        assert labels(out) == {}

    @pytest.mark.parametrize("password", ["user-secret", ""])
    def test_encrypted_pdf_is_unscannable(self, password: str) -> None:
        # with a user password it cannot be opened; without one it opens but
        # its streams are ciphertext the bomb check cannot measure
        locked = make_pdf(lines=[f"ID {RID}"], password=password)
        assert rejects(lambda: read_random(pdf.read_pdf, locked)) == "pdf: encrypted"

    def test_form_field_values_are_read(self) -> None:
        out = read_random(pdf.read_pdf, form_pdf(f"{RID}"))
        assert RID in out.text
        assert labels(out) == {"pii.cn_resident_id": 1}

    def test_hidden_text_is_read(self) -> None:
        # drawn above the page, and in render mode 3 (invisible): still there
        content = b"BT /F1 12 Tf 72 700 Td (visible) Tj ET BT /F1 12 Tf 72 2000 Td (%s) Tj ET "
        content += b"BT /F1 12 Tf 3 Tr 72 600 Td (%s) Tj ET"
        doc = raw_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                b"/Resources << /Font << /F1 5 0 R >> >> >>",
                stream(b"", content % (RID.encode(), PHONE.encode())),
                b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            ]
        )
        out = read_random(pdf.read_pdf, doc)
        assert labels(out) == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}

    def test_reads_lazily(self) -> None:
        big = make_pdf(lines=[f"line {i} " * 200 for i in range(60)])
        reads: list[int] = []

        class Counting(BytesAccess):
            def read_at(self, offset: int, length: int) -> bytes:
                reads.append(length)
                return super().read_at(offset, length)

        out = RecordingExtract()
        with pytest.MonkeyPatch.context() as patch:  # PDFium's own reads only
            patch.setattr(pdf, "check_streams", lambda source: None)
            pdf.read_pdf(Counting(big), out)
        assert len(out.members) == 60
        assert max(reads) < len(big) // 4

    def test_corrupt_pdf_is_unscannable(self) -> None:
        assert rejects(lambda: read_random(pdf.read_pdf, REPORT[: len(REPORT) // 3])) is not None
        assert rejects(lambda: read_random(pdf.read_pdf, b"%PDF-1.7\n" + bytes(500))) is not None

    def test_sniff(self) -> None:
        assert pdf.sniff_pdf(REPORT)
        assert pdf.sniff_pdf(b"junk\n" + REPORT)  # PDFium accepts a header within 1 KiB
        assert not pdf.sniff_pdf(b"How to make a %PDF-1.4 file by hand\nfirst, ...")


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF from numbered object bodies (object 1 is the catalog), with a valid xref."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n" % (dictionary, len(data)) + data + b"\nendstream"


def page_pdf(content: bytes, dictionary: bytes = b"") -> bytes:
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            stream(dictionary, content),
        ]
    )


def form_pdf(value: str) -> bytes:
    """An AcroForm text field whose value is ``value`` (no writer here makes forms)."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] >> >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Annots [4 0 R] >>",
            b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (patient_id) /V (%s) "
            b"/Rect [50 700 300 720] /P 3 0 R >>" % value.encode(),
        ]
    )


class TestPdfBombs:
    @pytest.fixture(autouse=True)
    def _small_bounds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pdf, "MAX_PDF_STREAM_BYTES", 1 << 20)
        monkeypatch.setattr(pdf, "MAX_PDF_DECODED_BYTES", 3 << 20)

    def test_content_stream_within_bounds_is_read(self) -> None:
        text = b"BT /F1 12 Tf 72 700 Td (Hello) Tj ET "
        good = page_pdf(zlib.compress(text), b"/Filter /FlateDecode")
        assert rejects(lambda: read_random(pdf.read_pdf, good)) is None

    def test_flate_bomb_is_refused_before_pdfium(self) -> None:
        bomb = page_pdf(zlib.compress(b" " * (2 << 20), 9), b"/Filter /FlateDecode")
        assert len(bomb) < 10_000
        assert (
            rejects(lambda: read_random(pdf.read_pdf, bomb)) == "pdf: a stream decodes past 1 MiB"
        )

    def test_chained_flate_bomb_is_refused(self) -> None:
        inner = zlib.compress(b" " * (2 << 20), 9)
        bomb = page_pdf(zlib.compress(inner, 9), b"/Filter [/FlateDecode /FlateDecode]")
        assert (
            rejects(lambda: read_random(pdf.read_pdf, bomb)) == "pdf: a stream decodes past 1 MiB"
        )

    def test_ascii85_wrapped_bomb_is_refused(self) -> None:
        data = base64.a85encode(zlib.compress(b" " * (2 << 20), 9)) + b"~>"
        bomb = page_pdf(data, b"/Filter [/A#53CII85Decode /FlateDecode]")
        assert (
            rejects(lambda: read_random(pdf.read_pdf, bomb)) == "pdf: a stream decodes past 1 MiB"
        )

    def test_many_streams_are_refused_together(self) -> None:
        streams = [
            stream(b"/Filter /FlateDecode", zlib.compress(b" " * (900 << 10))) for _ in range(4)
        ]
        bomb = raw_pdf([b"<< /Type /Catalog >>", *streams])
        assert rejects(lambda: read_random(pdf.read_pdf, bomb)) == "pdf: streams decode past 3 MiB"

    def test_image_streams_are_not_decoded(self) -> None:
        image = stream(
            b"/Type /XObject /Subtype /Image /Width 2048 /Height 1024 /BitsPerComponent 8 "
            b"/ColorSpace /DeviceGray /Filter /FlateDecode",
            zlib.compress(bytes(2 << 20)),
        )
        doc = raw_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                b"/Resources << /XObject << /Im0 5 0 R >> >> >>",
                stream(b"", b"q 100 0 0 50 0 0 cm /Im0 Do Q"),
                image,
            ]
        )
        assert rejects(lambda: read_random(pdf.read_pdf, doc)) is None

    def test_lzw_streams_are_refused(self) -> None:
        doc = page_pdf(b"\x80\x0b\x60\x50\x22\x0c\x0c\x85\x01", b"/Filter /LZWDecode")
        assert rejects(lambda: read_random(pdf.read_pdf, doc)) == (
            "pdf: LZW or RunLength stream not inspected"
        )


# --------------------------------------------------------------------------- OOXML / ODF


def package_parts(data: bytes, chunk: int = 0) -> dict[str, tuple[str, RecordingExtract]]:
    """Each zip member a registered streaming reader recognises: (format, what it read)."""
    parts = {}
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        for name in package.namelist():
            body = package.read(name)
            fmt = identify(body[:65536])
            if (
                fmt is not None
                and fmt.stream is not None
                and fmt.name.endswith(("-part", "properties"))
            ):
                parts[name] = (fmt.name, read_stream(fmt.stream, body, chunk))
    return parts


def split_runs_docx(identifier: str, *, table_phone: str = "", title: str = "") -> bytes:
    document = docx.Document()
    paragraph = document.add_paragraph("Patient ID: ")
    # Word splits runs at every formatting change: the ID spans three runs
    paragraph.add_run(identifier[:4])
    paragraph.add_run(identifier[4:10]).bold = True
    paragraph.add_run(identifier[10:]).italic = True
    if table_phone:
        table = document.add_table(rows=2, cols=2)
        table.cell(0, 0).text = "name"
        table.cell(0, 1).text = "phone"
        table.cell(1, 0).text = "Li Wei"
        table.cell(1, 1).text = table_phone
    if title:
        document.core_properties.title = title
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


class TestOfficeOpenXml:
    def test_docx_runs_are_joined(self) -> None:
        data = split_runs_docx(RID, table_phone=PHONE, title=f"Referral {RID2}")
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            raw = package.read("word/document.xml").decode()
        assert RID not in raw  # what the matcher saw before: the ID in pieces
        parts = package_parts(data)
        fmt, body = parts["word/document.xml"]
        assert fmt == "docx-part"
        assert f"Patient ID: {RID}\n" in body.text
        assert labels(body) == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}
        fmt, props = parts["docProps/core.xml"]
        assert fmt == "ooxml-properties"
        assert f"Referral {RID2}\n" in props.text
        assert labels(*(out for _, out in parts.values())) == {
            "pii.cn_resident_id": 2,
            "pii.cn_phone": 1,
        }

    def test_docx_comments_are_read(self) -> None:
        document = docx.Document()
        paragraph = document.add_paragraph("Consent form.")
        document.add_comment(paragraph.runs, text=f"Mother's phone {PHONE}", author="nurse")
        buffer = io.BytesIO()
        document.save(buffer)
        parts = package_parts(buffer.getvalue())
        fmt, comments = parts["word/comments.xml"]
        assert fmt == "docx-part"
        assert PHONE in comments.text
        assert labels(comments) == {"pii.cn_phone": 1}

    def test_clean_docx_has_no_findings(self) -> None:
        document = docx.Document()
        document.add_paragraph("Results: OD600 0.82, 0.79 and 0.91 after 16 h at 37 °C.")
        buffer = io.BytesIO()
        document.save(buffer)
        parts = package_parts(buffer.getvalue())
        assert "word/document.xml" in parts
        assert labels(*(out for _, out in parts.values())) == {}

    def test_xlsx_numeric_cells_and_header(self) -> None:
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(["name", "phone", "resident_id", "dose_mg"])
        sheet.append(["Li", int(PHONE), RID, 12.5])
        sheet.append(["Chan", int(PHONE2), RID2, 0.25])
        buffer = io.BytesIO()
        book.save(buffer)
        parts = package_parts(buffer.getvalue())
        fmt, sheet_out = parts["xl/worksheets/sheet1.xml"]
        assert fmt == "xlsx-part"
        [member] = sheet_out.members
        assert member.content_type == "text/csv"
        assert member.text == (
            f"name,phone,resident_id,dose_mg\nLi,{PHONE},{RID},12.5\nChan,{PHONE2},{RID2},0.25\n"
        )
        assert labels(sheet_out) == {"pii.cn_phone": 2, "pii.cn_resident_id": 2}

    def test_xlsx_shared_strings_and_comments(self) -> None:
        buffer = io.BytesIO()
        book = xlsxwriter.Workbook(buffer, {"in_memory": True})
        sheet = book.add_worksheet("cohort")
        sheet.write_row(0, 0, ["subject", "id"])
        sheet.write_row(1, 0, ["S-001", RID])
        sheet.write_number(2, 1, int(PHONE))
        sheet.write_comment(1, 1, f"verify with {PHONE2}")
        book.close()
        parts = package_parts(buffer.getvalue())
        _, strings = parts["xl/sharedStrings.xml"]
        assert strings.text.splitlines() == ["subject", "id", "S-001", RID]
        _, cells = parts["xl/worksheets/sheet1.xml"]
        # shared strings render empty in the sheet: their text is in sharedStrings.xml
        assert cells.members[0].text == f",\n,\n,{PHONE}\n"  # header and row 2: shared
        _, comments = parts["xl/comments1.xml"]
        assert PHONE2 in comments.text
        assert labels(*(out for _, out in parts.values())) == {
            "pii.cn_resident_id": 1,
            "pii.cn_phone": 2,
        }

    def test_xlsx_sheet_notes(self) -> None:
        """What a sheet shows, prints or evaluates outside its cells' values."""
        buffer = io.BytesIO()
        book = xlsxwriter.Workbook(buffer, {"in_memory": True})
        sheet = book.add_worksheet("cohort")
        sheet.write_row(0, 0, ["subject", "checked"])
        sheet.write_formula(1, 1, f'=LEN("{RID}")', None, 18)  # only its result is a value
        # The ID in a print header, cut in two by a bold code; a phone in the footer.
        sheet.set_header(f"&L&B{RID[:6]}&B{RID[6:]}&RPage &P of &N")
        sheet.set_footer(f"&Cward line {PHONE}")
        sheet.data_validation(
            "A2:A9",
            {
                "validate": "list",
                "source": [RID2, "S-002"],
                "input_title": "Subject",
                "input_message": f"ask {PHONE2}",
            },
        )
        sheet.conditional_format("B2:B9", {"type": "formula", "criteria": f'=$A2="{RID2}"'})
        sheet.write_url(2, 0, "https://lab.example/s1", string="S-001", tip=f"owner {PHONE}")
        book.close()
        parts = package_parts(buffer.getvalue())
        _, out = parts["xl/worksheets/sheet1.xml"]
        table, notes = out.members
        assert (table.content_type, notes.content_type) == ("text/csv", "text/plain")
        assert table.text.splitlines()[1] == ",18"
        lines = notes.text.splitlines()
        assert f'LEN("{RID}")' in lines
        assert RID in lines
        assert "Page  of" in lines
        assert f"ward line {PHONE}" in lines
        assert f'"{RID2},S-002"' in lines
        assert f"ask {PHONE2}" in lines
        assert f'$A2="{RID2}"' in lines
        assert f"owner {PHONE}" in lines
        assert labels(out) == {"pii.cn_resident_id": 4, "pii.cn_phone": 3}
        # The rows come first and whole: the notes do not split the table.
        assert [m.name for m in out.members] == ["worksheet", "worksheet notes"]

    @pytest.mark.parametrize("back", [90, 110, 130])
    def test_a_long_formula_is_read_in_overlapping_pieces(self, back: int) -> None:
        """A formula past MAX_CELL_CHARS is held in pieces that overlap as a cut
        cell's do: an e-mail address whose long domain straddles the cut is whole
        in the next piece (the overlap is longer than any address)."""
        email = "ward@" + "k" * 60 + "." + "m7" * 40 + ".example.com"
        start = MAX_CELL_CHARS - back  # the cut falls inside the domain
        filler = ("1+" * (start // 2 + 1))[: start - len('LEN("')]
        body = f'<c r="A1"><f>{filler}LEN("{email}")</f><v>1</v></c>'
        xml = (
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f'<sheetData><row r="1">{body}</row></sheetData></worksheet>'
        ).encode()
        out = read_stream(office_xml.make_xml_reader, xml, 16)  # the cut within 16 chars
        assert labels(out)["pii.email"] == 1

    def test_pptx_runs_are_joined(self) -> None:
        deck = pptx.Presentation()
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = "Enrolment"
        paragraph = slide.placeholders[1].text_frame.paragraphs[0]
        for piece in (f"ID {RID[:6]}", RID[6:12], RID[12:]):
            paragraph.add_run().text = piece
        slide.notes_slide.notes_text_frame.text = f"call {PHONE}"
        buffer = io.BytesIO()
        deck.save(buffer)
        parts = package_parts(buffer.getvalue())
        fmt, text = parts["ppt/slides/slide1.xml"]
        assert fmt == "pptx-part"
        assert f"ID {RID}\n" in text.text
        _, notes = parts["ppt/notesSlides/notesSlide1.xml"]
        assert PHONE in notes.text
        assert labels(text, notes) == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}

    def test_numbers_as_typed(self) -> None:
        assert office_xml.number_text("1.3812345678E+10") == "13812345678"
        assert office_xml.number_text("13812345678.0") == "13812345678"
        assert office_xml.number_text("0.25") == "0.25"
        assert office_xml.number_text("1E+999999999") == "1E+999999999"
        assert office_xml.number_text("NaN") == "NaN"

    def test_root_is_found_by_namespace_not_prefix(self) -> None:
        part = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- made by hand -->\n'
            b'<x:document xmlns:x="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            b"<x:body><x:p><x:r><x:t>1101</x:t></x:r><x:r><x:t>"
            + RID[4:].encode()
            + b"</x:t></x:r></x:p></x:body></x:document>"
        )
        assert office_xml.sniff_word(part)
        assert not office_xml.sniff_sheet(part)
        assert not office_xml.sniff_word(
            b"<w:styles xmlns:w='" + sorted(office_xml.W_NS)[0].encode() + b"'/>"
        )
        out = read_stream(office_xml.make_xml_reader, part.replace(b"1101", RID[:4].encode()))
        assert out.text == RID + "\n"


def odt(identifier: str) -> bytes:
    document = OpenDocumentText()
    paragraph = P(text="Patient ")
    paragraph.addElement(Span(text=identifier[:8]))
    paragraph.addText(identifier[8:])
    document.text.addElement(paragraph)
    document.text.addElement(P(text=f"Tel {PHONE}"))
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def ods(rows: list[tuple[str, str]], repeat: int = 1) -> bytes:
    document = OpenDocumentSpreadsheet()
    table = Table(name="patients")
    for index, (name, number) in enumerate([("name", "phone"), *rows]):
        row = TableRow(numberrowsrepeated=repeat) if index and repeat > 1 else TableRow()
        cell = TableCell(valuetype="string")
        cell.addElement(P(text=name))
        row.addElement(cell)
        if index:
            cell = TableCell(valuetype="float", value=number)
            cell.addElement(P(text="1.38E+10"))  # the display format hides the digits
        else:
            cell = TableCell(valuetype="string")
            cell.addElement(P(text=number))
        row.addElement(cell)
        table.addElement(row)
    document.spreadsheet.addElement(table)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


class TestOpenDocument:
    def test_odt_spans_are_joined(self) -> None:
        parts = package_parts(odt(RID))
        fmt, content = parts["content.xml"]
        assert fmt == "odt-part"
        assert identify(zipfile.ZipFile(io.BytesIO(odt(RID))).read("content.xml")).media_type == (  # type: ignore[union-attr]
            "application/vnd.oasis.opendocument.text"
        )
        assert f"Patient {RID}\n" in content.text
        assert labels(content) == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}

    def test_ods_table_renders_stored_values(self) -> None:
        parts = package_parts(ods([("Li", PHONE), ("Chan", PHONE2)]))
        fmt, content = parts["content.xml"]
        assert fmt == "ods-part"
        [table] = content.members
        assert (table.name, table.content_type) == ("table patients", "text/csv")
        assert table.text == f"name,phone\nLi,{PHONE}\nChan,{PHONE2}\n"
        assert labels(content) == {"pii.cn_phone": 2}

    def test_ods_repeated_rows_are_repeated_within_bounds(self) -> None:
        _, content = package_parts(ods([("Li", PHONE)], repeat=3))["content.xml"]
        assert content.members[0].text.count(PHONE) == 3

    def test_ods_cell_annotations_and_sub_tables_stay_in_their_cell(self) -> None:
        office = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
        table = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
        text = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
        dc = "http://purl.org/dc/elements/1.1/"
        content = (
            f'<office:document-content xmlns:office="{office}" xmlns:table="{table}" '
            f'xmlns:text="{text}" xmlns:dc="{dc}"><office:body><office:spreadsheet>'
            '<table:table table:name="t"><table:table-row>'
            f"<table:table-cell><text:p>{PHONE}</text:p><office:annotation>"
            "<dc:creator>Ann</dc:creator><dc:date>2024-01-02T03:04:05</dc:date>"
            "<text:p>checked</text:p></office:annotation></table:table-cell>"
            "<table:table-cell><table:table><table:table-row><table:table-cell>"
            f"<text:p>{RID}</text:p></table:table-cell></table:table-row></table:table>"
            "</table:table-cell><table:table-cell><text:p>last</text:p></table:table-cell>"
            "</table:table-row></table:table></office:spreadsheet></office:body>"
            "</office:document-content>"
        ).encode()
        out = read_stream(office_xml.make_xml_reader, content, chunk=5)
        [member] = out.members
        assert member.text == (f'"{PHONE}\nAnn\n2024-01-02T03:04:05\nchecked",{RID},last\n')
        assert labels(out) == {"pii.cn_phone": 1, "pii.cn_resident_id": 1}

    def test_ods_repetition_bomb_is_refused(self) -> None:
        _, content = package_parts(ods([], repeat=1))["content.xml"]
        with zipfile.ZipFile(io.BytesIO(ods([("Li", PHONE)], repeat=2))) as package:
            xml = package.read("content.xml")
        bomb = xml.replace(b'number-rows-repeated="2"', b'number-rows-repeated="999999999"')
        assert bomb != xml
        assert content is not None
        assert rejects(lambda: read_stream(office_xml.make_xml_reader, bomb)) == (
            f"ods: more than {office_xml.MAX_REPEATED_CELLS} repeated cells"
        )


W_DOC = (
    b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    b"<w:body>%s</w:body></w:document>"
)


class TestHostileXml:
    def test_billion_laughs_is_refused(self) -> None:
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "1101">'
            + b"".join(b'<!ENTITY l%d "&l%d;&l%d;">' % (i, i - 1, i - 1) for i in range(1, 30))
            + b']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            b"<w:body><w:p><w:r><w:t>&l29;</w:t></w:r></w:p></w:body></w:document>"
        )
        assert office_xml.sniff_word(laughs)  # found behind its DOCTYPE, so not read raw
        assert rejects(lambda: read_stream(office_xml.make_xml_reader, laughs)) == (
            "xml: document type declaration refused"
        )

    def test_entity_hiding_an_identifier_is_refused(self) -> None:
        hidden = b'<!DOCTYPE x [<!ENTITY a "%s">]>' % RID[:6].encode() + W_DOC % (
            b"<w:p><w:r><w:t>&a;" + RID[6:].encode() + b"</w:t></w:r></w:p>"
        )
        assert rejects(lambda: read_stream(office_xml.make_xml_reader, hidden, 3)) is not None

    def test_deep_nesting_is_refused(self) -> None:
        deep = W_DOC % (b"<w:sdt>" * 300 + b"</w:sdt>" * 300)
        assert rejects(lambda: read_stream(office_xml.make_xml_reader, deep)) == (
            "xml: elements nested more than 256 deep"
        )

    def test_truncated_part_is_unscannable(self) -> None:
        part = W_DOC % b"<w:p><w:r><w:t>text</w:t></w:r></w:p>"
        assert rejects(lambda: read_stream(office_xml.make_xml_reader, part[:-20])) == (
            "xml: malformed document"
        )

    @given(cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=8))
    def test_same_text_for_every_chunking(self, cuts: list[int]) -> None:
        with zipfile.ZipFile(io.BytesIO(split_runs_docx(RID, table_phone=PHONE))) as package:
            part = package.read("word/document.xml")
        whole = read_stream(office_xml.make_xml_reader, part).text
        out = RecordingExtract()
        reader = office_xml.make_xml_reader(out)
        start = 0
        for cut in sorted(cuts):
            reader.feed(part[start:cut])
            start = max(start, cut)
        reader.feed(part[start:])
        reader.finish()
        assert out.text == whole


# --------------------------------------------------------------------------- legacy Office

cfb = ole.compound_file


def word_streams(
    pieces: list[tuple[str, bool]], *, encrypted: bool = False, nfib: int = 0xC1
) -> dict[str, bytes]:
    """A WordDocument stream and its 1Table, per [MS-DOC] §2.5 (FIB) and §2.9.38 (Clx).

    Each piece is (text, compressed): compressed pieces are cp1252 bytes at
    ``fc / 2`` with fCompressed set, the others UTF-16LE at ``fc``.
    """
    text_at = 0x800
    text = bytearray()
    cps = [0]
    fcs = []
    for piece, compressed in pieces:
        offset = text_at + len(text)
        if compressed:
            text += piece.encode("cp1252")
            fcs.append(offset * 2 | 0x40000000)
        else:
            text += piece.encode("utf-16-le")
            fcs.append(offset)
        cps.append(cps[-1] + len(piece))
    plc = struct.pack(f"<{len(cps)}I", *cps) + b"".join(struct.pack("<HIH", 0, fc, 0) for fc in fcs)
    clx = b"\x01" + struct.pack("<h", 2) + b"\x00\x00" + b"\x02" + struct.pack("<I", len(plc)) + plc
    fib = bytearray(text_at)
    flags = 0x0200 | (0x0100 if encrypted else 0)  # fWhichTblStm: 1Table; fEncrypted
    struct.pack_into("<HHHHHH", fib, 0, 0xA5EC, nfib, 0, 0x0409, 0, flags)
    struct.pack_into("<H", fib, 32, 14)  # csw, then FibRgW97
    struct.pack_into("<H", fib, 62, 22)  # cslw, then FibRgLw97
    struct.pack_into("<i", fib, 64 + 12, cps[-1])  # ccpText
    struct.pack_into("<H", fib, 152, 0x5D)  # cbRgFcLcb of Word 97
    struct.pack_into("<II", fib, 154 + 8 * 33, 16, len(clx))  # fcClx, lcbClx
    return {"WordDocument": bytes(fib) + bytes(text), "1Table": bytes(16) + clx}


def summary_information(title: str, author: str) -> bytes:
    """A SummaryInformation property set ([MS-OLEPS] §2.21), UTF-8 code page."""
    values = [struct.pack("<HHh", 2, 0, 65001 - 65536) + b"\0\0"]  # PIDSI_CODEPAGE, VT_I2
    for text in (title, author):
        raw = text.encode() + b"\0"
        raw += b"\0" * (-len(raw) % 4)
        values.append(struct.pack("<II", 0x1E, len(raw)) + raw)  # VT_LPSTR
    ids = (1, 2, 4)  # codepage, title, author
    table_size = 8 + 8 * len(ids)
    offsets = []
    position = table_size
    for value in values:
        offsets.append(position)
        position += len(value)
    section = struct.pack("<II", position, len(ids))
    section += b"".join(struct.pack("<II", i, o) for i, o in zip(ids, offsets, strict=True))
    section += b"".join(values)
    fmtid = uuid.UUID("f29f85e0-4ff9-1068-ab91-08002b27b3d9").bytes_le
    return struct.pack("<HHI16sI16sI", 0xFFFE, 0, 0x00020006, bytes(16), 1, fmtid, 48) + section


def record(kind: int, body: bytes, container: bool = False) -> bytes:
    """A PowerPoint record ([MS-PPT] §2.3.1 RecordHeader)."""
    return struct.pack("<HHI", 0x0F if container else 0, kind, len(body)) + body


def powerpoint_stream(*texts: str, encrypted: bool = False) -> bytes:
    atoms = record(0x0F9F, struct.pack("<I", 1))  # TextHeaderAtom
    for index, text in enumerate(texts):
        if index % 2:
            atoms += record(0x0FA8, text.encode("latin-1"))  # TextBytesAtom
        else:
            atoms += record(0x0FA0, text.replace("\n", "\r").encode("utf-16-le"))  # TextCharsAtom
    body = record(0x0FF0, atoms, container=True)  # SlideListWithTextContainer
    if encrypted:
        body += record(0x2F14, record(0x2F15, bytes(8)), container=True)
    return record(0x03E8, body, container=True)  # DocumentContainer


def xls(rows: list[list[object]]) -> bytes:
    book = xlwt.Workbook()
    sheet = book.add_sheet("visits")
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            sheet.write(r, c, value)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


WORD_DOC = cfb(
    {
        **word_streams(
            [(f"Referral.\rPatient ID {RID[:9]}", True), (f"{RID[9:]}，电话 {PHONE}\r", False)]
        ),
        "\x05SummaryInformation": summary_information(f"病历 {RID2}", "陈医生"),
    }
)


class TestLegacyOffice:
    def test_xls_sheet_as_csv(self) -> None:
        data = xls(
            [["name", "phone", "id"], ["Li", int(PHONE), RID], ["Chan", float(PHONE2), RID2]]
        )
        assert identify(data[:65536]).name == "xls"  # type: ignore[union-attr]
        out = read_random(ole.read_ole, data)
        [sheet] = out.members
        assert (sheet.name, sheet.content_type) == ("sheet visits", "text/csv")
        assert sheet.text == f"name,phone,id\nLi,{PHONE},{RID}\nChan,{PHONE2},{RID2}\n"
        assert labels(out) == {"pii.cn_phone": 2, "pii.cn_resident_id": 2}

    def test_clean_xls_has_no_findings(self) -> None:
        out = read_random(ole.read_ole, xls([["well", "od"], ["A01", 0.412], ["A02", 1.5]]))
        assert out.members[0].text == "well,od\nA01,0.412\nA02,1.5\n"
        assert labels(out) == {}

    def test_xls_encrypted_and_oversized_are_refused(self) -> None:
        bof = struct.pack("<HH", 0x0809, 16) + bytes(16)
        filepass = struct.pack("<HH", 0x002F, 6) + bytes(6)
        locked = cfb({"Workbook": bof + filepass})
        assert rejects(lambda: read_random(ole.read_ole, locked)) == "ole: encrypted content"
        corner = struct.pack("<HHHHHd", 0x0203, 14, 65535, 255, 0, 1.0)
        assert rejects(lambda: ole.check_workbook(bof + corner)) == (
            f"xls: sheets of more than {ole.MAX_XLS_CELLS} cells"
        )

    @pytest.mark.parametrize(
        "dimensions",
        [
            struct.pack("<IIHHH", 0x92000000, 0xB0C88F97, 0x59D2, 0x7FDF, 0),  # found by fuzzing
            struct.pack("<IIHHH", 5, 3, 0, 2, 0),  # last row before the first: wraps in calamine
            struct.pack("<IIHHH", 0, 65536, 0, 256, 0),  # a whole BIFF8 sheet: 16 Mi cells
        ],
    )
    def test_xls_dimensions_that_calamine_would_reserve(self, dimensions: bytes) -> None:
        # calamine reserves the DIMENSIONS range; a reservation it cannot make
        # aborts the process, so the record is checked first
        bof = struct.pack("<HH", 0x0809, 16) + bytes(16)
        stream = bof + struct.pack("<HH", 0x0200, 14) + dimensions
        assert rejects(lambda: read_random(ole.read_ole, cfb({"Workbook": stream}))) == (
            "xls: sheet dimensions out of range"
        )

    @pytest.mark.parametrize("loop", ["directory", "stream", "difat"])
    def test_xls_chain_loops_never_reach_calamine(self, loop: str) -> None:
        # calamine follows compound-file chains without loop detection (it
        # allocates until the process dies); it only ever sees a rebuilt file
        data = bytearray(XLS)
        directory, first_fat = struct.unpack_from("<I", data, 48)[0], data[76]
        fat = 512 + first_fat * 512
        if loop == "directory":
            struct.pack_into("<I", data, fat + 4 * directory, directory)
        elif loop == "stream":
            struct.pack_into("<I", data, fat, 0)
        else:
            struct.pack_into("<II", data, 68, first_fat, 1)
        rejects(lambda: read_random(ole.read_ole, bytes(data)))

    def test_doc_piece_table_and_summary_information(self) -> None:
        assert identify(WORD_DOC[:65536]).name == "doc"  # type: ignore[union-attr]
        out = read_random(ole.read_ole, WORD_DOC)
        assert [m.name for m in out.members] == ["properties", "document"]
        assert out.members[0].text == f"title: 病历 {RID2}\nauthor: 陈医生\n"
        assert out.members[1].text == f"Referral.\nPatient ID {RID}，电话 {PHONE}\n"
        assert labels(out) == {"pii.cn_resident_id": 2, "pii.cn_phone": 1}

    def test_word_text_control_characters(self) -> None:
        streams = word_streams([("a\x07b\x07\x07\r\x13 HYPERLINK x \x14link\x15\x0bend\r", True)])
        text = ole.word_text(streams["WordDocument"], {"1Table": streams["1Table"]})
        assert text == "a\tb\t\t\n  HYPERLINK x  link \nend\n"

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"encrypted": True}, "ole: encrypted content"),
            ({"nfib": 0x68}, "doc: Word 95 or older format not inspected"),
        ],
    )
    def test_doc_refusals(self, change: dict[str, object], reason: str) -> None:
        streams = word_streams([("text", True)], **change)  # type: ignore[arg-type]
        assert rejects(lambda: read_random(ole.read_ole, cfb(streams))) == reason

    def test_doc_piece_outside_its_stream(self) -> None:
        streams = word_streams([("text", False)])
        word = streams["WordDocument"][:-4]
        assert rejects(lambda: ole.word_text(word, {"1Table": streams["1Table"]})) == (
            "doc: piece outside the text stream"
        )
        assert rejects(lambda: ole.word_text(streams["WordDocument"], {})) == (
            "doc: table stream missing"
        )

    def test_ppt_text_atoms(self) -> None:
        data = cfb({"PowerPoint Document": powerpoint_stream(f"张三\n{RID}", f"tel {PHONE}")})
        assert identify(data[:65536]).name == "ppt"  # type: ignore[union-attr]
        out = read_random(ole.read_ole, data)
        assert out.members[0].text == f"张三\n{RID}\ntel {PHONE}\n"
        assert labels(out) == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}

    def test_ppt_encrypted(self) -> None:
        data = cfb({"PowerPoint Document": powerpoint_stream("x", encrypted=True)})
        assert rejects(lambda: read_random(ole.read_ole, data)) == "ole: encrypted content"

    def test_ppt_record_past_its_stream(self) -> None:
        broken = record(0x0FA0, b"ab\x00c")[:-2]
        assert rejects(lambda: list(ole.powerpoint_text(broken))) == (
            "ppt: record past the end of its stream"
        )

    def test_encrypted_ooxml_and_unknown_compound_files(self) -> None:
        locked = cfb({"EncryptionInfo": b"\x04\x00\x04\x00", "EncryptedPackage": b"\x10" * 64})
        assert identify(locked[:65536]).name == "ole"  # type: ignore[union-attr]
        assert rejects(lambda: read_random(ole.read_ole, locked)) == "ole: encrypted content"
        other = cfb({"__properties_version1.0": b"\0" * 32})
        assert rejects(lambda: read_random(ole.read_ole, other)) == (
            "ole: compound file of an unknown kind"
        )

    def test_corrupt_compound_file(self) -> None:
        assert rejects(lambda: read_random(ole.read_ole, WORD_DOC[:3000])) is not None
        assert rejects(lambda: read_random(ole.read_ole, ole.OLE_MAGIC + bytes(600))) is not None


# --------------------------------------------------------------------------- e-mail


def fixed_boundaries(message: EmailMessage) -> None:
    """Replace the writer's random boundaries (19 random digits, which are now
    and then a valid card number) with fixed words."""
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"boundary-{'abcdefgh'[index % 8]}-part")


def make_email() -> bytes:
    message = EmailMessage()
    message["From"] = "陈大文 <chan@example.hk>"
    message["To"] = "lab@example.cn"
    message["Subject"] = "placeholder"
    message["Message-ID"] = "<1@example.hk>"
    message.set_content(f"Please call {PHONE}.\n", cte="quoted-printable")
    message.add_alternative(f"<p>Please call <b>{PHONE}</b>.</p>", subtype="html", charset="gb2312")
    message.add_attachment(
        f"id,phone\n{RID2},{PHONE2}\n".encode(), maintype="text", subtype="csv", filename="名单.csv"
    )
    message.add_attachment(REPORT, maintype="application", subtype="pdf", filename="report.pdf")
    fixed_boundaries(message)
    # As Chinese mail clients write it: the whole subject as one RFC 2047 word
    subject = base64.b64encode(f"转介 {RID}".encode("gb2312"))
    return bytes(message).replace(
        b"Subject: placeholder", b"Subject: =?GB2312?B?" + subject + b"?="
    )


MAIL = make_email()


class TestEmail:
    def test_headers_parts_and_attachments(self) -> None:
        assert b"=?GB2312?B?" in MAIL
        assert RID.encode() not in MAIL
        assert identify(MAIL[:65536]).name == "email"  # type: ignore[union-attr]
        out = read_stream(mail.make_email_reader, MAIL)
        headers, text, html = out.members
        assert headers.name == "headers"
        assert f"Subject: 转介 {RID}\n" in headers.text
        assert "From: 陈大文 <chan@example.hk>\n" in headers.text
        assert (text.content_type, text.text) == ("text/plain", f"Please call {PHONE}.\n")
        assert html.content_type == "text/html"
        assert PHONE in html.text
        # From, To and the Message-ID (an addr-spec) are e-mail addresses
        assert labels(out) == {"pii.cn_resident_id": 1, "pii.cn_phone": 2, "pii.email": 3}
        csv, report = out.nested_members
        assert (csv.name, bytes(csv.data)) == ("名单.csv", f"id,phone\n{RID2},{PHONE2}\n".encode())
        assert (report.name, bytes(report.data)) == ("report.pdf", REPORT)
        assert all(n.closed for n in out.nested_members)

    @given(cuts=st.lists(st.integers(min_value=1, max_value=len(MAIL)), max_size=10))
    def test_same_result_for_every_chunking(self, cuts: list[int]) -> None:
        whole = read_stream(mail.make_email_reader, MAIL)
        out = RecordingExtract()
        reader = mail.make_email_reader(out)
        start = 0
        for cut in sorted(set(cuts)):
            reader.feed(MAIL[start:cut])
            start = cut
        reader.feed(MAIL[start:])
        reader.finish()
        assert [(m.name, m.text) for m in out.members] == [(m.name, m.text) for m in whole.members]
        assert [bytes(n.data) for n in out.nested_members] == [
            bytes(n.data) for n in whole.nested_members
        ]

    def test_attached_message_headers(self) -> None:
        inner = EmailMessage()
        inner["From"] = "a@example.cn"
        inner["Subject"] = f"ID {RID}"
        inner.set_content("see subject")
        outer = EmailMessage()
        outer["From"] = "b@example.hk"
        outer["Subject"] = "Fwd"
        outer.set_content("forwarding")
        outer.add_attachment(inner)
        fixed_boundaries(outer)
        out = read_stream(mail.make_email_reader, bytes(outer), chunk=64)
        assert [m.name for m in out.members] == [
            "headers",
            "body",
            "attached message headers",
            "body",
        ]
        assert labels(out) == {"pii.cn_resident_id": 1, "pii.email": 2}

    def test_deeply_nested_mime_is_refused(self) -> None:
        depth = 200
        head = b"From: a@example.cn\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        body = b""
        for level in range(depth):
            body += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (
                level,
                level,
            )
        body += b"Content-Type: text/plain\r\n\r\nhi\r\n"
        body += b"".join(b"--b%d--\r\n" % level for level in reversed(range(depth)))
        assert rejects(lambda: read_stream(mail.make_email_reader, head + body)) == (
            f"email: more than {mail.MAX_MIME_CONTAINERS} MIME containers"
        )

    def test_size_bound(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(mail, "MAX_EMAIL_BYTES", 1024)
        assert rejects(lambda: read_stream(mail.make_email_reader, MAIL, chunk=1000)) == (
            "email: message over 0 MiB"
        )

    @pytest.mark.parametrize(
        "text",
        [
            b"name,phone\nLi,13812345678\nChan,13912345678\n",
            b"From: the desk of the director\nWe met on Monday.\n\nRegards\n",
            b"Subject: minutes\nDate: today\n\nno mail header here\n",
            b"From: a@b.c\nTo: d@e.f\nSubject: never ends",
        ],
    )
    def test_sniff_rejects_text(self, text: bytes) -> None:
        assert not mail.sniff_email(text)

    def test_sniff_accepts_mbox_and_received_first(self) -> None:
        assert mail.sniff_email(b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n" + MAIL)
        assert mail.sniff_email(b"Received: from x\n\tby y; Mon, 1 Jan 2024\nFrom: a@b.c\n\nhi")


#: A token Python's email package could draw that is also a valid card number.
CARD_LIKE_TOKEN = "3429188471858335990"


def test_pythons_random_boundary_is_not_a_card_number() -> None:
    """Python's generator draws 19 random digits for each boundary: one in ten
    passes the Luhn check. Rendered as they are, they made a clean mail a card."""
    message = EmailMessage()
    message["Subject"] = "plate readings"
    message.set_content("All wells within range.\n")
    message.add_attachment(b"well,od\nA1,0.42\n", maintype="text", subtype="csv")
    message.set_boundary(f"==============={CARD_LIKE_TOKEN}==")
    data = bytes(message)
    assert CARD_LIKE_TOKEN.encode() in data
    assert scan(data)[1:] == ({}, ())
    # Any other boundary is the sender's free choice, and is scanned as it is.
    message.set_boundary(f"frame-{CARD_LIKE_TOKEN}-{RID}")
    assert scan(bytes(message))[1] == {"pii.cn_resident_id": 1, "pii.bank_card": 1}


def test_generated_boundaries_of_many_mails_find_nothing() -> None:
    clean = 0
    for n in range(40):
        message = EmailMessage()
        message["Subject"] = f"batch {n}"
        message.set_content("Samples logged on arrival.\n")
        message.add_attachment(b"id,count\nS1,12\n", maintype="text", subtype="csv")
        clean += scan(bytes(message))[1:] == ({}, ())
    assert clean == 40


# --------------------------------------------------------------------------- through the scanner


def scan(data: bytes, chunk: int = 65536) -> tuple[str, dict[str, int], tuple[str, ...]]:
    """The whole classifier on ``data`` (random access from memory, as from the spool)."""
    scanner = Scanner(DETECTORS, SECRET, today=TODAY)
    for start in range(0, len(data), chunk):
        scanner.feed(data[start : start + chunk])
    summary = scanner.finish(BytesAccess(data))
    counts = {label: stats.count for label, stats in summary.labels.items()}
    return summary.content.type, counts, summary.unscannable


class TestScanner:
    def test_pdf_with_an_embedded_pdf(self) -> None:
        inner = make_pdf(lines=[f"inner {RID}"])
        outer = FPDF()
        outer.add_page()
        outer.set_font("helvetica", size=11)
        outer.cell(0, 10, f"outer {PHONE}")
        outer.embed_file(basename="inner.pdf", bytes=inner)
        kind, counts, unscannable = scan(bytes(outer.output()))
        assert kind == "application/pdf"
        assert counts == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}
        assert unscannable == ()

    def test_docx_split_runs(self) -> None:
        kind, counts, _ = scan(split_runs_docx(RID, table_phone=PHONE), chunk=1000)
        assert counts == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}
        # The package's main part names it, whatever part is largest (its theme).
        assert kind == DOCX

    def test_a_package_is_named_by_its_main_part(self) -> None:
        """python-docx's default package holds 780 KB of styles and 1.6 KB of text:
        the type is still the Word document's, not the largest part's (text/plain)."""
        document = docx.Document()
        document.add_paragraph(f"Patient {RID}")
        buffer = io.BytesIO()
        document.save(buffer)
        kind, counts, _ = scan(buffer.getvalue())
        assert kind == DOCX
        assert counts == {"pii.cn_resident_id": 1}

    def test_legacy_files(self) -> None:
        assert scan(XLS)[:2] == ("application/vnd.ms-excel", {"pii.cn_phone": 1})
        assert scan(WORD_DOC)[:2] == (
            "application/msword",
            {"pii.cn_resident_id": 2, "pii.cn_phone": 1},
        )

    def test_email_with_attachments(self) -> None:
        kind, counts, _ = scan(MAIL, chunk=777)
        assert kind == "message/rfc822"
        # subject, the CSV attachment, and the PDF attachment's title and embedded CSV
        assert counts["pii.cn_resident_id"] == 4

    def test_encrypted_pdf(self) -> None:
        _, counts, unscannable = scan(make_pdf(lines=[f"ID {RID}"], password="pw"))
        assert unscannable == ("pdf: encrypted",)
        assert counts == {"content.unscannable": 1}


# --------------------------------------------------------------------------- hostile input


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    """``data`` with bytes overwritten at (position, value) pairs, then cut at ``cut``."""
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out[: max(1, cut % (len(out) + 1))])


EDITS = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=12)
CUT = st.integers(min_value=0)
MUTATIONS = settings(max_examples=40, deadline=None)

ODT_CONTENT = zipfile.ZipFile(io.BytesIO(odt(RID))).read("content.xml")
XLS = xls([["name", "phone"], ["Li", int(PHONE)]])
PPT = cfb({"PowerPoint Document": powerpoint_stream("a", "b")})


class TestMutations:
    """Mutated valid files: read, or unscannable; never another exception or a hang."""

    @MUTATIONS
    @given(edits=EDITS, cut=CUT)
    def test_pdf(self, edits: list[tuple[int, int]], cut: int) -> None:
        rejects(lambda: read_random(pdf.read_pdf, mutate(REPORT, edits, cut)))

    @MUTATIONS
    @given(edits=EDITS, cut=CUT)
    def test_odf_xml(self, edits: list[tuple[int, int]], cut: int) -> None:
        rejects(lambda: read_stream(office_xml.make_xml_reader, mutate(ODT_CONTENT, edits, cut)))

    @MUTATIONS
    @given(edits=EDITS, cut=CUT)
    def test_xls(self, edits: list[tuple[int, int]], cut: int) -> None:
        rejects(lambda: read_random(ole.read_ole, mutate(XLS, edits, cut)))

    @MUTATIONS
    @given(edits=EDITS, cut=CUT)
    def test_doc(self, edits: list[tuple[int, int]], cut: int) -> None:
        rejects(lambda: read_random(ole.read_ole, mutate(WORD_DOC, edits, cut)))

    @MUTATIONS
    @given(edits=EDITS, cut=CUT)
    def test_ppt(self, edits: list[tuple[int, int]], cut: int) -> None:
        rejects(lambda: read_random(ole.read_ole, mutate(PPT, edits, cut)))

    @MUTATIONS
    @given(edits=EDITS, cut=CUT)
    def test_email(self, edits: list[tuple[int, int]], cut: int) -> None:
        rejects(lambda: read_stream(mail.make_email_reader, mutate(MAIL, edits, cut), 997))

    @MUTATIONS
    @given(data=st.binary(max_size=2048))
    def test_sniffers_never_raise(self, data: bytes) -> None:
        for sniff in (
            pdf.sniff_pdf,
            ole.sniff_doc,
            ole.sniff_xls,
            ole.sniff_ppt,
            office_xml.sniff_word,
            office_xml.sniff_sheet,
            office_xml.odf_kind,
            mail.sniff_email,
        ):
            sniff(ole.OLE_MAGIC + data)
            sniff(data)


def _flate_bomb_pdf(decoy: bytes) -> bytes:
    """One page whose content stream inflates to 80 MiB, its dictionary carrying ``decoy``."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"BT /F1 12 Tf 72 700 Td (hello) Tj ET\n")]
    block = b" " * (1 << 20)
    parts += [compressor.compress(block) for _ in range(80)]
    data = b"".join(parts) + compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode %s >>\nstream\n" % (len(data), decoy)
        + data
        + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


@pytest.mark.parametrize(
    "decoy",
    [
        b"",
        b"/Note (/Subtype /Image)",
        b"/Extra << /Subtype /Image >>",
        b"/List [/Subtype /Image]",
        b"/Note (a \\) /Subtype /Image)",
    ],
)
def test_a_content_stream_disguised_as_an_image_is_still_measured(decoy: bytes) -> None:
    """``/Subtype /Image`` counts only as the stream dictionary's own key: a Flate
    bomb whose dictionary mentions it elsewhere is measured and refused."""
    with pytest.raises(Unscannable, match="decodes past"):
        read_random(pdf.read_pdf, _flate_bomb_pdf(decoy))


def _padded_docx(padding: bytes) -> bytes:
    """A python-docx document whose ``word/document.xml`` prolog is padded after its declaration."""
    document = docx.Document()
    paragraph = document.add_paragraph()
    paragraph.add_run(RID[:9])
    paragraph.add_run(RID[9:]).bold = True  # the ID split across two runs, as Word does
    original = io.BytesIO()
    document.save(original)
    rebuilt = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(original.getvalue())) as source,
        zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                declaration, _, rest = data.partition(b"?>")
                data = declaration + b"?>" + padding + rest
            target.writestr(item, data)
    return rebuilt.getvalue()


@pytest.mark.parametrize(
    ("padding", "found"),
    [
        (b" " * 40_000, True),
        (b"<!--" + b"x" * 40_000 + b"-->", True),
        (b" " * 100_000, False),
        (b"<!--" + b"x" * 100_000 + b"-->", False),
    ],
    ids=["40k-spaces", "40k-comment", "100k-spaces", "100k-comment"],
)
def test_a_padded_prolog_does_not_hide_a_word_part(padding: bytes, found: bool) -> None:
    """The part is read when its root is within the sniffed prefix, unscannable past it."""
    _, counts, unscannable = scan(_padded_docx(padding))
    if found:
        assert counts == {"pii.cn_resident_id": 1}
    else:
        assert "xml: root element beyond the first 64 KiB" in " ".join(unscannable)
        assert counts.get("content.unscannable") == 1
