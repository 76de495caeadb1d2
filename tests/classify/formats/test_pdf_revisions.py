"""What a PDF holds beyond its latest revision (gateway/classify/formats/documents/pdf.py).

PDFium shows the latest revision only. An incremental update leaves every
earlier revision in the file (a page whose identifier was "removed" by the
update, a deleted page), recovered by cutting the file at an earlier
``%%EOF``; objects no cross-reference entry reaches, or entries marked free,
travel too. The files here are made by fpdf2 and by PDFium's own incremental
save (pypdfium2), then updated by hand the way ISO 32000-1 §7.5.6 describes:
new objects, a cross-reference section with ``/Prev``, a trailer,
``startxref`` and ``%%EOF`` appended. The linearized file is built by hand
after Annex F (qpdf, when installed, makes a real one too).
"""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from fpdf import FPDF

from gateway.classify.detectors import DetectorSet
from gateway.classify.formats.base import Unscannable
from gateway.classify.formats.documents import pdf
from gateway.classify.formats.testing import label_counts, read_random, scan_bytes
from gateway.classify.summary import ScanSummary
from gateway.classify.testing import cn_mobile, resident_id

DETECTORS = DetectorSet.build()
RNG = random.Random(2026)
PHONE = cn_mobile(RNG)
RID = resident_id(RNG)
PHONE_LABEL = "pii.cn_phone"
RID_LABEL = "pii.cn_resident_id"


def scan(data: bytes) -> ScanSummary:
    return scan_bytes(DETECTORS, data)


def found(data: bytes) -> dict[str, int]:
    """Findings per label when the file is scanned as the egress scans it."""
    summary = scan(data)
    assert not summary.unscannable, summary.unscannable
    return label_counts(summary)


def members(data: bytes) -> list[str]:
    return [m.name for m in read_random(pdf.read_pdf, data).members]


def reason(call: Callable[[], object]) -> str | None:
    try:
        call()
    except Unscannable as exc:
        return exc.reason
    return None


# --------------------------------------------------------------------------- writers


def fpdf_file(pages: list[str], *, compress: bool = True) -> bytes:
    """A PDF made by fpdf2: object 1 the page tree, 2 the catalog, then each page
    and its content stream (3 and 4, 5 and 6 …), Helvetica as /F1."""
    doc = FPDF()
    doc.set_compression(compress)
    doc.set_font("helvetica", size=11)
    for text in pages:
        doc.add_page()
        doc.multi_cell(0, 6, text)
    return bytes(doc.output())


def content(text: str) -> bytes:
    """A Flate content stream object drawing ``text`` with the page's /F1."""
    data = zlib.compress(b"BT /F1 11 Tf 31 800 Td (%s) Tj ET" % text.encode())
    return b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def update(
    base: bytes,
    objects: dict[int, bytes],
    *,
    free: tuple[int, ...] = (),
    prev: int | None = None,
    startxref: int | None = None,
) -> bytes:
    """``base`` with an incremental update appended (ISO 32000-1 §7.5.6): the
    objects, a cross-reference section for them (``free`` ones marked free),
    a trailer whose ``/Prev`` is the previous section, ``startxref``, ``%%EOF``."""
    last = int(re.findall(rb"startxref\s+(\d+)", base)[-1])
    size = max(int(n) for n in re.findall(rb"/Size (\d+)", base))
    root = re.findall(rb"/Root (\d+ \d+ R)", base)[-1]
    info = re.findall(rb"/Info (\d+ \d+ R)", base)
    out = bytearray(base if base.endswith(b"\n") else base + b"\n")
    offsets = {}
    for number, body in sorted(objects.items()):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 1\n0000000000 65535 f \n"
    for number in sorted(set(offsets) | set(free)):
        if number in free:
            out += b"%d 1\n0000000000 00001 f \n" % number
        else:
            out += b"%d 1\n%010d 00000 n \n" % (number, offsets[number])
    size = max([size] + [n + 1 for n in offsets])
    out += b"trailer\n<< /Size %d /Root %s%s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        size,
        root,
        b" /Info " + info[-1] if info else b"",
        last if prev is None else prev,
        xref if startxref is None else startxref,
    )
    return bytes(out)


def body_pdf(
    objects: list[bytes], *, hidden: dict[int, bytes] | None = None, free: tuple[int, ...] = ()
) -> bytes:
    """A PDF from numbered object bodies (1 the catalog), with objects ``hidden``
    written in the body but left out of the cross-reference (or, when in
    ``free``, listed as free)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    every = {n: body for n, body in enumerate(objects, 1)} | (hidden or {})
    for number, body in every.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    size = max(every) + 1
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        if number in offsets and number not in (hidden or {}):
            out += b"%010d 00000 n \n" % offsets[number]
        else:
            out += b"0000000000 00001 f \n" if number in free else b"0000000000 00000 f \n"
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def one_page(text: str) -> list[bytes]:
    """Catalog, page tree, page, content (4), font (5)."""
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        content(text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]


def objstm_pdf(first: bytes, second: bytes, *, name_second: bool, comment: bytes = b"") -> bytes:
    """One page (objects 1-5), objects 6 and 7 in object stream 8 (``comment``
    in its header, as qpdf's QDF mode writes), and a cross-reference stream (9)
    naming 6, and 7 too when ``name_second``."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number, body in enumerate(one_page("Nothing to see."), 1):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    head = b"6 0 %s\n7 %d " % (comment, len(first) + 1)
    packed = head + first + b" " + second
    offsets[8] = len(out)
    out += (
        b"8 0 obj\n"
        + stream(
            b"/Type /ObjStm /N 2 /First %d /Filter /FlateDecode" % len(head), zlib.compress(packed)
        )
        + b"\nendobj\n"
    )
    offsets[9] = len(out)
    rows = [b"\x00\x00\x00\x00\x00\xff"]
    rows += [b"\x01" + offsets[n].to_bytes(4, "big") + b"\x00" for n in range(1, 6)]
    rows += [b"\x02" + (8).to_bytes(4, "big") + b"\x00"]  # 6: stream 8, index 0
    rows += [b"\x02" + (8).to_bytes(4, "big") + b"\x01" if name_second else bytes(6)]
    rows += [b"\x01" + offsets[n].to_bytes(4, "big") + b"\x00" for n in (8, 9)]
    out += b"9 0 obj\n" + stream(b"/Type /XRef /Size 10 /W [1 4 1] /Root 1 0 R", b"".join(rows))
    out += b"\nendobj\nstartxref\n%d\n%%%%EOF\n" % offsets[9]
    return bytes(out)


def stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n" % (dictionary, len(data)) + data + b"\nendstream"


# --------------------------------------------------------------------------- earlier revisions


CASE = fpdf_file([f"Patient mobile {PHONE}, ID {RID}.", "Page two: lab values only."])
#: The update replaces page 1's content stream (object 4) with clean text.
REDACTED = update(CASE, {4: content("Patient contact withheld.")})


class TestEarlierRevisions:
    def test_the_writer_makes_what_we_think(self) -> None:
        doc = pdfium.PdfDocument(REDACTED)
        assert doc[0].get_textpage().get_text_range() == "Patient contact withheld."
        assert len(doc) == 2
        first = pdfium.PdfDocument(REDACTED[: REDACTED.index(b"%%EOF") + 6])
        assert PHONE in first[0].get_textpage().get_text_range()  # what a recipient recovers

    def test_text_replaced_by_an_update_is_found(self) -> None:
        assert found(REDACTED) == {PHONE_LABEL: 1, RID_LABEL: 1}
        assert members(REDACTED) == ["page 1", "page 2", "revision 1 page 1"]

    def test_a_page_deleted_by_an_update_is_found(self) -> None:
        deleted = update(
            CASE,
            {1: b"<< /Type /Pages /Kids [5 0 R] /Count 1 /MediaBox [0 0 595.28 841.89] >>"},
            free=(3, 4),
        )
        assert len(pdfium.PdfDocument(deleted)) == 1
        assert found(deleted) == {PHONE_LABEL: 1, RID_LABEL: 1}
        assert "revision 1 page 1" in members(deleted)

    def test_pdfiums_own_incremental_save(self) -> None:
        """A real tool's update: PDFium removes the page's text and saves incrementally."""
        doc = pdfium.PdfDocument(CASE)
        page = doc[0]
        for obj in list(page.get_objects()):
            page.remove_obj(obj)
        page.gen_content()
        saved = io.BytesIO()
        doc.save(saved, flags=pdfium_c.FPDF_INCREMENTAL)
        edited = saved.getvalue()
        assert edited.startswith(CASE)
        assert PHONE not in pdfium.PdfDocument(edited)[0].get_textpage().get_text_range()
        assert found(edited) == {PHONE_LABEL: 1, RID_LABEL: 1}

    def test_pdfium_deleting_a_page(self) -> None:
        doc = pdfium.PdfDocument(CASE)
        del doc[0]
        saved = io.BytesIO()
        doc.save(saved, flags=pdfium_c.FPDF_INCREMENTAL)
        assert found(saved.getvalue()) == {PHONE_LABEL: 1, RID_LABEL: 1}

    def test_each_of_several_revisions(self) -> None:
        second = resident_id(RNG)
        one = update(CASE, {4: content(f"ID {second} only")})
        two = update(one, {4: content("nothing left")})
        assert found(two) == {PHONE_LABEL: 1, RID_LABEL: 2}
        names = members(two)
        assert {"revision 1 page 1", "revision 2 page 1"} <= set(names)

    def test_metadata_of_an_earlier_revision(self) -> None:
        base = update(CASE, {10: b"<< /Title (Case %s) >>" % RID.encode()})
        scrubbed = update(base, {10: b"<< /Title (Case) >>"})
        assert found(scrubbed) == {RID_LABEL: 2, PHONE_LABEL: 1}  # page 1 and the old title
        assert "revision 2 metadata" in members(scrubbed)

    def test_a_clean_document_with_revisions_has_no_findings(self) -> None:
        clean = fpdf_file(["Absorbance 0.413 at 450 nm, plate 7.", "Well B03 repeated."])
        edited = update(update(clean, {4: content("Absorbance 0.415")}), {4: content("0.416")})
        summary = scan(edited)
        assert not summary.unscannable
        assert label_counts(summary) == {}

    def test_unchanged_pages_count_once(self) -> None:
        """A signature-like update (a comment added to page 2) leaves page 1 as it
        was: its identifiers are not counted once per revision."""
        annotated = update(
            CASE,
            {
                5: b"<< /Type /Page /Parent 1 0 R /Resources 9 0 R /Contents 6 0 R "
                b"/Annots [11 0 R] >>",
                11: b"<< /Type /Annot /Subtype /Text /Rect [50 50 70 70] "
                b"/Contents (Reviewed, no change) >>",
            },
        )
        assert found(annotated) == {PHONE_LABEL: 1, RID_LABEL: 1}
        assert not [name for name in members(annotated) if name.startswith("revision")]

    def test_a_changed_page_is_reported_whole(self) -> None:
        """The page's text changed elsewhere: the old page is reported again, so its
        unchanged identifier counts twice, as one distinct value."""
        edited = update(CASE, {4: content(f"Patient mobile {PHONE}, ID {RID}, seen again.")})
        summary = scan(edited)
        assert summary.labels[PHONE_LABEL].count == 2
        assert summary.labels[PHONE_LABEL].distinct == 1
        assert summary.subjects == 1

    def test_an_update_that_only_adds_objects_is_not_read_again(self) -> None:
        """Word ends its files with an empty update; a revision the next one only
        adds to is not opened again (the next one shows all of it)."""
        empty = update(CASE, {})
        assert members(empty) == ["page 1", "page 2"]
        added = update(CASE, {11: b"(unused)"})
        assert members(added)[:2] == ["page 1", "page 2"]
        assert not [name for name in members(added) if name.startswith("revision")]

    def test_pages_of_all_revisions_count_against_the_bound(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(pdf, "MAX_PDF_PAGES", 3)
        assert reason(lambda: read_random(pdf.read_pdf, CASE)) is None
        assert reason(lambda: read_random(pdf.read_pdf, update(CASE, {}))) is None
        assert reason(lambda: read_random(pdf.read_pdf, REDACTED)) == "pdf: more than 3 pages"

    def test_revisions_are_bounded(self) -> None:
        doc = CASE
        for i in range(pdf.MAX_PDF_REVISIONS - 1):
            doc = update(doc, {4: content(f"edit {i}")})
        out = read_random(pdf.read_pdf, doc)
        assert PHONE in out.text
        doc = update(doc, {4: content("one too many")})
        assert reason(lambda: read_random(pdf.read_pdf, doc)) == (
            f"pdf: more than {pdf.MAX_PDF_REVISIONS} revisions"
        )

    def test_an_encrypted_earlier_revision(self) -> None:
        doc = FPDF()
        doc.set_font("helvetica", size=11)
        doc.add_page()
        doc.multi_cell(0, 6, f"ID {RID}")
        doc.set_encryption(owner_password="owner", user_password="")
        locked = bytes(doc.output())
        assert reason(lambda: read_random(pdf.read_pdf, update(locked, {}))) == "pdf: encrypted"


# --------------------------------------------------------------------------- linearized files


def linearized(first: str, rest: list[str]) -> bytes:
    """A linearized PDF built after ISO 32000-1 Annex F: header, linearization
    dictionary, first-page cross-reference section and trailer (its /Prev the
    main section, ``startxref 0``, ``%%EOF``), catalog, hint stream, the first
    page, the other pages, then the main section, its ``startxref`` pointing
    at the first-page section."""
    others = len(rest)
    # objects of the other pages: 1..2n (page, content); then the first-page part
    lin = 2 * others + 1
    catalog, tree, hint, page, contents, font = range(lin + 1, lin + 7)
    size = font + 1
    kids = b" ".join(b"%d 0 R" % n for n in [page] + [1 + 2 * i for i in range(others)])

    def page_dict(contents_number: int) -> bytes:
        return (
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (tree, contents_number, font)
        )

    def build(params: dict[str, int]) -> tuple[bytes, dict[str, int]]:
        out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        offsets: dict[int, int] = {}

        def obj(number: int, body: bytes) -> None:
            offsets[number] = len(out)
            out.extend(b"%d 0 obj\n" % number + body + b"\nendobj\n")

        obj(
            lin,
            b"<< /Linearized 1 /L %010d /H [%010d %010d] /O %d /E %010d /N %d /T %010d >>"
            % (params["L"], params["H0"], params["H1"], page, params["E"], others + 1, params["T"]),
        )
        first_xref = len(out)
        out += b"xref\n%d %d\n" % (lin, size - lin)
        out += b"".join(b"%010d 00000 n \n" % params.get(f"o{n}", 0) for n in range(lin, size))
        out += b"trailer\n<< /Size %d /Root %d 0 R /Prev %010d >>\nstartxref\n0\n%%%%EOF\n" % (
            size,
            catalog,
            params["main"],
        )
        obj(catalog, b"<< /Type /Catalog /Pages %d 0 R >>" % tree)
        hint_at = len(out)
        obj(hint, stream(b"/S 4", bytes(16)))
        hint_len = len(out) - hint_at
        obj(page, page_dict(contents))
        obj(contents, content(first))
        obj(font, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
        obj(tree, b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, others + 1))
        end_first = len(out)
        for i, text in enumerate(rest):
            obj(1 + 2 * i, page_dict(2 + 2 * i))
            obj(2 + 2 * i, content(text))
        main = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % lin
        out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, lin))
        out += b"trailer\n<< /Size %d >>\nstartxref\n%d\n%%%%EOF\n" % (lin, first_xref)
        placed = {f"o{n}": offsets[n] for n in range(lin, size)}
        placed |= {"L": len(out), "H0": hint_at, "H1": hint_len, "E": end_first}
        placed |= {"T": main + len(b"xref\n0 %d\n" % lin) - 1, "main": main}
        return bytes(out), placed

    params = {"L": 0, "H0": 0, "H1": 0, "E": 0, "T": 0, "main": 0}
    _, params = build(params)
    again, check = build(params)
    assert check == params  # fixed-width numbers: one more pass settles every offset
    return again


class TestLinearized:
    def test_the_first_page_section_is_not_a_revision(self) -> None:
        data = linearized(f"ID {RID}", ["page two", f"call {PHONE}"])
        assert data.count(b"%%EOF") == 2
        assert len(pdfium.PdfDocument(data)) == 3
        out = read_random(pdf.read_pdf, data)
        assert [m.name for m in out.members] == ["page 1", "page 2", "page 3"]
        assert found(data) == {RID_LABEL: 1, PHONE_LABEL: 1}

    def test_an_update_to_a_linearized_file(self) -> None:
        data = linearized(f"ID {RID}", ["page two"])
        first_page = int(re.search(rb"/O (\d+)", data).group(1))  # type: ignore[union-attr]
        first_contents = first_page + 1
        edited = update(data, {first_contents: content("withheld")})
        assert RID not in pdfium.PdfDocument(edited)[0].get_textpage().get_text_range()
        names = members(edited)
        assert "revision 1 page 1" in names
        assert not [n for n in names if n.startswith("revision 2")]
        assert found(edited) == {RID_LABEL: 1}

    @pytest.mark.skipif(shutil.which("qpdf") is None, reason="qpdf not installed")
    def test_qpdf_linearized_files(self, tmp_path: Path) -> None:
        source = tmp_path / "in.pdf"
        source.write_bytes(fpdf_file([f"ID {RID}", "page two", f"call {PHONE}"]))
        for extra in ([], ["--object-streams=generate"]):
            target = tmp_path / "out.pdf"
            subprocess.run(["qpdf", "--linearize", *extra, source, target], check=True)
            data = target.read_bytes()
            assert b"/Linearized" in data[:1024]
            assert members(data) == ["page 1", "page 2", "page 3"]
            assert found(data) == {RID_LABEL: 1, PHONE_LABEL: 1}
            contents = int(re.search(rb"/Contents (\d+) 0 R", data).group(1))  # type: ignore[union-attr]
            edited = update(data, {contents: content("withheld")})
            assert found(edited) == {RID_LABEL: 1, PHONE_LABEL: 1}

    @pytest.mark.skipif(shutil.which("qpdf") is None, reason="qpdf not installed")
    def test_qpdf_rewrites_leave_nothing_unreferenced(self, tmp_path: Path) -> None:
        """qpdf's modes (object streams, QDF with its comments, uncompressed): the
        same pages, nothing reported as unreferenced."""
        source = tmp_path / "in.pdf"
        source.write_bytes(REDACTED)
        for mode in (["--object-streams=generate"], ["--qdf"], ["--stream-data=uncompress"]):
            target = tmp_path / "out.pdf"
            subprocess.run(["qpdf", *mode, source, target], check=True)
            names = members(target.read_bytes())
            assert names[:2] == ["page 1", "page 2"]
            assert not [n for n in names if n.startswith(("unreferenced", "revision"))]


# --------------------------------------------------------------------------- unreferenced objects


class TestUnreferencedObjects:
    def test_an_orphan_content_stream(self) -> None:
        kerned = zlib.compress(
            b"BT /F1 11 Tf 72 700 Td [(%s) -20 (%s)] TJ ET"
            % (PHONE[:4].encode(), PHONE[4:].encode())
        )
        data = body_pdf(
            one_page("Nothing to see."),
            hidden={6: stream(b"/Filter /FlateDecode", kerned)},
        )
        assert PHONE not in pdfium.PdfDocument(data)[0].get_textpage().get_text_range()
        assert found(data) == {PHONE_LABEL: 1}
        assert "unreferenced object 6" in members(data)

    def test_an_object_marked_free(self) -> None:
        data = body_pdf(
            one_page("Nothing to see."),
            hidden={6: b"<< /Note (%s) >>" % RID.encode()},
            free=(6,),
        )
        assert found(data) == {RID_LABEL: 1}

    def test_a_string_with_escapes_and_utf16(self) -> None:
        octal = b"".join(b"\\%03o" % c for c in RID.encode())
        utf16 = b"<FEFF" + PHONE.encode("utf-16-be").hex().encode() + b">"
        data = body_pdf(
            one_page("Nothing to see."),
            hidden={6: b"[(%s) %s]" % (octal, utf16)},
        )
        assert found(data) == {RID_LABEL: 1, PHONE_LABEL: 1}

    def test_an_object_left_out_of_an_object_stream(self) -> None:
        """Objects 6 and 7 sit in object stream 8; the cross-reference stream names 6 only."""
        data = objstm_pdf(b"<< /Kind /Fine >>", b"(%s)" % RID.encode(), name_second=False)
        assert len(pdfium.PdfDocument(data)) == 1
        assert found(data) == {RID_LABEL: 1}
        assert "unreferenced object 7" in members(data)
        named = objstm_pdf(b"<< /Kind /Fine >>", b"(clean)", name_second=True)
        assert members(named) == ["page 1"]
        commented = objstm_pdf(
            b"<< /Kind /Fine >>", b"(clean)", name_second=True, comment=b"% object 16, index 20"
        )
        assert members(commented) == ["page 1"]

    def test_an_orphan_embedded_file(self) -> None:
        csv = f"name,mobile\nLi,{PHONE}\n".encode()
        data = body_pdf(
            one_page("Nothing to see."),
            hidden={6: stream(b"/Type /EmbeddedFile /Filter /FlateDecode", zlib.compress(csv))},
        )
        out = read_random(pdf.read_pdf, data)
        assert [bytes(n.data) for n in out.nested_members] == [csv]
        assert found(data) == {PHONE_LABEL: 1}

    def test_orphan_embedded_files_count_against_the_attachment_bound(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(pdf, "MAX_PDF_ATTACHMENTS", 1)
        csv = stream(b"/Type /EmbeddedFile", b"id\n1\n")
        one = body_pdf(one_page("Nothing to see."), hidden={6: csv})
        assert reason(lambda: read_random(pdf.read_pdf, one)) is None
        two = body_pdf(one_page("Nothing to see."), hidden={6: csv, 7: csv})
        assert reason(lambda: read_random(pdf.read_pdf, two)) == "pdf: more than 1 embedded files"

    def test_an_orphan_with_a_filter_not_read_is_unscannable(self) -> None:
        data = body_pdf(
            one_page("Nothing to see."),
            hidden={6: stream(b"/Filter /FooDecode", b"\x01\x02\x03 opaque")},
        )
        assert reason(lambda: read_random(pdf.read_pdf, data)) == (
            "pdf: an unreferenced stream has a filter not read"
        )

    def test_an_orphan_image_is_skipped_like_any_image(self) -> None:
        image = stream(
            b"/Type /XObject /Subtype /Image /Width 4 /Height 4 /BitsPerComponent 8 "
            b"/ColorSpace /DeviceGray /Filter /DCTDecode",
            bytes(64),
        )
        data = body_pdf(one_page("Nothing to see."), hidden={6: image})
        assert found(data) == {}

    def test_text_between_objects(self) -> None:
        data = body_pdf(one_page("Nothing to see."))
        at = data.index(b"3 0 obj")
        data = data[:at] + b"% call " + PHONE.encode() + b"\n" + data[at:]
        data = _fix_offsets(data)
        assert found(data) == {PHONE_LABEL: 1}
        assert "outside objects" in members(data)

    def test_a_string_in_the_trailer(self) -> None:
        data = body_pdf(one_page("Nothing to see."))
        data = data.replace(b"/Root 1 0 R >>", b"/Root 1 0 R /Note (%s) >>" % RID.encode())
        assert found(data) == {RID_LABEL: 1}

    def test_a_stream_no_header_claims(self) -> None:
        """An object glued to the byte before it is no object to the walk (nor to
        PDFium); its compressed stream is still decoded, not rendered as noise."""
        loose = b"x9 0 obj\n" + stream(
            b"/Filter /FlateDecode", zlib.compress(b"(%s) Tj" % PHONE.encode())
        )
        base = body_pdf(one_page("Nothing to see."))
        at = base.index(b"3 0 obj")
        data = _fix_offsets(base[:at] + loose + b"\nendobj\n" + base[at:])
        assert found(data) == {PHONE_LABEL: 1}
        opaque = loose.replace(b"/FlateDecode", b"/FooDecode")
        data = _fix_offsets(base[:at] + opaque + b"\nendobj\n" + base[at:])
        assert reason(lambda: read_random(pdf.read_pdf, data)) == (
            "pdf: an unreferenced stream has a filter not read"
        )

    def test_unreferenced_objects_are_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pdf, "MAX_PDF_UNREFERENCED", 10)
        hidden = {n: b"(note %d)" % n for n in range(6, 16)}
        assert (
            reason(lambda: read_random(pdf.read_pdf, body_pdf(one_page("x"), hidden=hidden)))
            is None
        )
        hidden[16] = b"(one too many)"
        assert reason(
            lambda: read_random(pdf.read_pdf, body_pdf(one_page("x"), hidden=hidden))
        ) == ("pdf: more than 10 unreferenced objects")

    def test_text_after_the_last_eof(self) -> None:
        data = body_pdf(one_page("Nothing to see.")) + b"ID " + RID.encode() + b"\n"
        assert found(data) == {RID_LABEL: 1}

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(fpdf_file(["clean page", "another"]), id="fpdf2"),
            pytest.param(fpdf_file(["clean page"], compress=False), id="fpdf2-plain"),
            pytest.param(body_pdf(one_page("clean")), id="hand-written"),
        ],
    )
    def test_clean_files_have_nothing_unreferenced(self, data: bytes) -> None:
        names = members(data)
        assert not [n for n in names if n.startswith(("unreferenced", "outside", "revision"))]

    def test_the_benchmark_file_has_nothing_unreferenced(self) -> None:
        from gateway.bench.formats import pdf_file

        names = members(pdf_file(300_000))
        assert not [n for n in names if n.startswith(("unreferenced", "outside", "revision"))]


def _fix_offsets(data: bytes) -> bytes:
    """Rewrite the cross-reference table of a one-section file after bytes moved."""
    head, _, _ = data.partition(b"xref\n")
    offsets = {int(m.group(1)): m.start() for m in re.finditer(rb"(?m)^(\d+) 0 obj", head)}
    size = max(offsets) + 1
    table = b"xref\n0 %d\n0000000000 65535 f \n" % size
    table += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, size))
    return (
        head
        + table
        + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (
            size,
            len(head),
        )
    )


# --------------------------------------------------------------------------- hostile structure


class TestHostileStructure:
    """Crafted cross-reference structure: the latest revision's result or
    unscannable, never another exception or a hang."""

    def test_a_prev_loop(self) -> None:
        # the latest section names itself as the previous one
        last = int(re.findall(rb"startxref\s+(\d+)", REDACTED)[-1])
        prev = re.findall(rb"/Prev \d+", REDACTED)[-1]
        self_loop = REDACTED[:last] + REDACTED[last:].replace(prev, b"/Prev %d" % last)
        assert reason(lambda: read_random(pdf.read_pdf, self_loop)) is None
        assert found(self_loop)[PHONE_LABEL] >= 1  # revision 1 is still there
        # two sections naming each other: the first trailer gets a /Prev of the
        # update's section, written over a placeholder of the same width
        base = CASE.replace(b"trailer\n<<\n", b"trailer\n<<\n/Prev 0000000000\n", 1)
        cycle = update(base, {4: content("withheld")})
        second = int(re.findall(rb"startxref\s+(\d+)", cycle)[-1])
        cycle = cycle.replace(b"/Prev 0000000000", b"/Prev %010d" % second, 1)
        assert reason(lambda: read_random(pdf.read_pdf, cycle)) is None
        assert found(cycle)[PHONE_LABEL] >= 1

    def test_ten_thousand_eof_markers(self) -> None:
        bare = REDACTED + b"%%EOF\n" * 10_000
        assert found(bare) == {PHONE_LABEL: 1, RID_LABEL: 1}
        marked = REDACTED + b"startxref\n9\n%%EOF\n" * 10_000
        assert reason(lambda: read_random(pdf.read_pdf, marked)) == (
            f"pdf: more than {pdf.MAX_PDF_REVISIONS} revisions"
        )

    def test_eof_markers_inside_a_stream_are_not_revisions(self) -> None:
        text = b"startxref\n9\n%%EOF\n" * 100
        embedded = b"<< /Type /EmbeddedFile /Length %d >>\nstream\n" % len(text) + text
        data = body_pdf([*one_page("Nothing to see."), embedded + b"\nendstream"])
        assert reason(lambda: read_random(pdf.read_pdf, data)) is None

    def test_startxref_past_the_end(self) -> None:
        latest = REDACTED[: REDACTED.rindex(b"startxref")] + b"startxref\n99999999\n%%EOF\n"
        assert reason(lambda: read_random(pdf.read_pdf, latest)) is None
        earlier = update(CASE, {}, startxref=99_999_999)
        earlier = update(earlier, {4: content("withheld")})
        assert reason(lambda: read_random(pdf.read_pdf, earlier)) is None
        assert found(earlier)[PHONE_LABEL] >= 1

    def test_a_prev_past_the_end_and_garbage_sections(self) -> None:
        broken = update(CASE, {4: content("withheld")}, prev=10**12)
        assert reason(lambda: read_random(pdf.read_pdf, broken)) is None
        assert found(broken) == {PHONE_LABEL: 1, RID_LABEL: 1}

    def test_objects_that_never_end(self) -> None:
        data = body_pdf(one_page("Nothing to see."), hidden={6: b"(unterminated " + b"x" * 5000})
        assert reason(lambda: read_random(pdf.read_pdf, data)) is None
        many = REDACTED + b"1 0 obj (" * 2000
        read_random_or_unscannable(many)

    def test_huge_entry_counts(self) -> None:
        data = CASE.replace(b"xref\n0 11\n", b"xref\n0 99999999\n", 1)
        read_random_or_unscannable(data)


def read_random_or_unscannable(data: bytes) -> None:
    """Read ``data``: anything but Unscannable fails the test."""
    reason(lambda: read_random(pdf.read_pdf, data))
