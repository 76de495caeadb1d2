"""Text members: the media type of text from its first bytes, and the member itself.

Text is sniffed after charset normalisation (UTF-8), on the same bounded
prefix whatever the chunking. The genomic types let the matcher count one
finding per record (SPEC §3.1 ``sensitive.genetic``).
"""

from __future__ import annotations

import csv
import io
import re
from typing import Final

from gateway.classify import charset as cs
from gateway.classify.decode import genomic
from gateway.classify.decode.core import Context
from gateway.classify.summary import ContentInfo

TEXT_PLAIN: Final = "text/plain"
TEXT_CSV: Final = "text/csv"
TEXT_TSV: Final = "text/tab-separated-values"
APPLICATION_JSON: Final = "application/json"
TEXT_FASTA: Final = "text/x-fasta"
TEXT_FASTQ: Final = "text/x-fastq"
TEXT_VCF: Final = "text/x-vcf"
TEXT_SAM: Final = "text/x-sam"
TEXT_HTML: Final = "text/html"
APPLICATION_XML: Final = "application/xml"
IMAGE_SVG: Final = "image/svg+xml"
APPLICATION_FORM: Final = "application/x-www-form-urlencoded"

#: A nucleotide sequence line of FASTA/FASTQ: IUPAC nucleotide codes
#: (NC-IUB 1984: ACGTU, N and the ambiguity codes RYKMSWBDHV) and gaps.
_NUCLEOTIDE_LINE: Final = re.compile(rb"[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.\-]+")
#: An amino-acid sequence line: by convention upper case (FASTA format,
#: NCBI BLAST help), with stop ``*`` and gaps.
_PROTEIN_LINE: Final = re.compile(rb"[A-Z*\-]+")
_ACGTUN: Final = b"ACGTUNacgtun"
_GAPS: Final = b".-"
#: Share of the sniffed sequence letters that must be plain bases (ACGTUN):
#: ambiguity codes are a few per cent of real reads and assemblies, while
#: English words made only of IUPAC letters ("Thanks", "hands") are not.
_NUCLEOTIDE_SHARE: Final = 0.9
TEXT_FASTA_PROTEIN: Final = "text/x-fasta-protein"
_SAM_HEADER: Final = re.compile(rb"@(?:HD|SQ|RG|PG|CO)\t")
#: SAM alignment lines have 11 mandatory tab-separated fields (SAMv1 §1.4).
_SAM_FIELDS: Final = 11
#: Markup, from its first bytes (after a BOM and white space): an HTML document
#: (WHATWG HTML §13.1: the DOCTYPE, or the html element itself), an XML
#: document (its declaration, ``<?xml``), or an SVG image (its root element,
#: with or without a declaration before it).
_HTML_START: Final = re.compile(rb"<!doctype\s+html|<html[\s>]", re.IGNORECASE)
_XML_START: Final = re.compile(rb"<\?xml[\s?]")
_SVG_ROOT: Final = re.compile(rb"<svg[\s>]")
#: An ``application/x-www-form-urlencoded`` body (WHATWG URL §5): one line of
#: ``name=value`` pairs joined by ``&``, nothing in them that the encoding
#: would have escaped (white space, quotes, angle brackets), names of at most
#: 128 characters, a first value that is not only ``=`` and some value that is
#: not empty (a line of base64 ending in ``=`` or ``==`` is no form).
_FORM: Final = re.compile(
    rb"[^\s&=\"'<>]{1,128}=(?:[^\s&=\"'<>][^\s&\"'<>]*)?(?:&[^\s&=\"'<>]+=?[^\s&\"'<>]*)*"
)
#: A form holds a value (``QUJDRA=`` is base64, not a form with an empty field).
_FORM_VALUE: Final = re.compile(rb"=[^&=]")
#: Lines looked at to call a member CSV/TSV; two agreeing lines are required.
_CSV_SNIFF_LINES: Final = 10
_CSV_MIN_LINES: Final = 2


def _nucleotides(lines: list[bytes]) -> bool:
    """Whether ``lines`` are nucleotide sequence lines, mostly plain bases."""
    if not lines or not all(_NUCLEOTIDE_LINE.fullmatch(line) for line in lines):
        return False
    letters = b"".join(lines).translate(None, _GAPS)
    others = len(letters.translate(None, _ACGTUN))
    return others <= (1 - _NUCLEOTIDE_SHARE) * len(letters)


def _fasta_kind(lines: list[bytes]) -> str | None:
    """FASTA (nucleotide), protein FASTA or neither, from the sniffed lines.

    ``lines[0]`` is the first header; every other non-empty line that is not a
    header (``>``) or comment (``;``) must be a sequence line, the first one
    right after the header.
    """
    if not lines[1] or lines[1].startswith((b">", b";")):
        return None
    sequence = [line for line in lines[1:] if line and not line.startswith((b">", b";"))]
    if _nucleotides(sequence):
        return TEXT_FASTA
    if all(_PROTEIN_LINE.fullmatch(line) for line in sequence):
        return TEXT_FASTA_PROTEIN
    return None


def _delimited(lines: list[bytes], delimiter: str) -> bool:
    """Whether ``lines`` are rows of one table: at least four in five of them have
    the same number of fields (two or more), and the others fewer (ragged rows, a
    spreadsheet's export leaving trailing cells out)."""
    text = "\n".join(line.decode("utf-8", "replace") for line in lines)
    try:
        widths = [len(row) for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    except csv.Error:  # a lone CR inside a line ("a,b\rc"): not a table we can tell
        return False
    if not widths:
        return False
    width = max(widths)
    full = widths.count(width)
    return width > 1 and full * 5 >= len(widths) * 4


def _markup_or_form(text: bytes, head: bytes, complete: bool) -> str | None:
    """HTML, XML, SVG or a form body, from the first bytes (``head``: without the white
    space before them); None for anything else."""
    if head[:1] == b"<":
        if _HTML_START.match(head):
            return TEXT_HTML
        if _XML_START.match(head):
            return IMAGE_SVG if _SVG_ROOT.search(head, 0, 4096) else APPLICATION_XML
        if _SVG_ROOT.match(head):
            return IMAGE_SVG
        return None
    body = text.rstrip(b"\r\n") if complete else text
    if b"=" in body[:256] and _FORM.fullmatch(body) and _FORM_VALUE.search(body):
        return APPLICATION_FORM
    return None


def sniff_text_type(text: bytes, complete: bool) -> str:
    """The media type of a text member, from its normalised first bytes.

    Args:
        text: the member's first bytes as normalised UTF-8.
        complete: True when ``text`` is the whole member (its last line is
            then complete too).

    Returns:
        ``text/x-vcf``, ``text/x-sam``, ``text/x-fasta``, ``text/x-fastq``,
        ``text/x-fasta-protein``, ``application/json``, ``text/html``,
        ``application/xml``, ``image/svg+xml``,
        ``application/x-www-form-urlencoded``, ``text/csv``,
        ``text/tab-separated-values`` or ``text/plain``. The genetic types let
        the detection core count one finding per record (SPEC §3.1
        ``sensitive.genetic``), so they require nucleotide sequence lines; a
        protein FASTA gets its own type, which the matcher scans as plain text.
    """
    if text.startswith(b"##fileformat=VCF"):
        return TEXT_VCF
    if _SAM_HEADER.match(text):
        return TEXT_SAM
    lines = text.split(b"\n", _CSV_SNIFF_LINES + 1)
    if not complete or len(lines) > _CSV_SNIFF_LINES:
        lines = lines[:-1]  # the last piece may be a cut line
    lines = [line.removesuffix(b"\r") for line in lines]
    if text.startswith(b">") and len(lines) >= 2:
        kind = _fasta_kind(lines)
        if kind is not None:
            return kind
    if (
        text.startswith(b"@")
        and len(lines) >= 3
        and _nucleotides([lines[1]])
        and lines[2].startswith(b"+")
    ):
        return TEXT_FASTQ
    head = text.lstrip(b" \t\r\n")
    if head[:1] in (b"{", b"["):
        return APPLICATION_JSON
    markup = _markup_or_form(text, head, complete)
    if markup is not None:
        return markup
    if lines:
        fields = lines[0].split(b"\t")
        if len(fields) >= _SAM_FIELDS and fields[1].isdigit() and fields[3].isdigit():
            return TEXT_SAM
    rows = [line for line in lines if line]
    if len(rows) >= _CSV_MIN_LINES:
        for delimiter, media_type in ((",", TEXT_CSV), ("\t", TEXT_TSV), (";", TEXT_CSV)):
            if delimiter.encode() in rows[0] and _delimited(rows, delimiter):
                return media_type
    return TEXT_PLAIN


def _organism_evidence(media_type: str) -> genomic.Evidence | None:
    """What reads a genomic member's organism from its headers (:mod:`.genomic`)."""
    if media_type == TEXT_SAM:
        return genomic.HeaderEvidence(b"@", b"@")
    if media_type == TEXT_VCF:
        return genomic.HeaderEvidence(b"#", b"##")
    if media_type == TEXT_FASTA:
        return genomic.FastaEvidence()
    if media_type == TEXT_FASTQ:
        return genomic.NoEvidence()
    return None


class TextMember:
    """A text member: normalised to UTF-8 and passed to the sink.

    A SAM, VCF, FASTA or FASTQ member also reports its ``organism`` and
    ``assembly`` attributes from its header lines (:mod:`.genomic`).
    """

    __slots__ = (
        "_charset",
        "_ctx",
        "_evidence",
        "_layers",
        "_normaliser",
        "_size",
        "_text",
        "_type",
    )

    def __init__(
        self,
        ctx: Context,
        layers: tuple[str, ...],
        charset: str,
        normaliser: cs.Normaliser,
        head: bytes,
        complete: bool,
    ) -> None:
        self._ctx = ctx
        self._layers = layers
        self._charset = charset
        self._normaliser = normaliser
        self._type = sniff_text_type(head, complete)
        self._text = ctx.sink.text
        self._size = len(head)
        self._evidence = _organism_evidence(self._type)
        ctx.sink.begin_member(self._type)
        if head:
            self._text(head)
            if self._evidence is not None:
                self._evidence.feed(head)

    def feed(self, data: bytes) -> None:
        """Normalise the member's next bytes and pass them to the sink."""
        out = self._normaliser.feed(data)
        if out:
            self._size += len(out)
            self._text(out)
            evidence = self._evidence
            if evidence is not None and not evidence.done:
                evidence.feed(out)

    def close(self) -> None:
        """End the member: what the normaliser held back, then the sink's end."""
        out = self._normaliser.flush()
        evidence = self._evidence
        if out:
            self._size += len(out)
            self._text(out)
            if evidence is not None and not evidence.done:
                evidence.feed(out)
        sink = self._ctx.sink
        sink.end_member()
        if evidence is not None:
            evidence.close()
            genomic.report(self._ctx, evidence.result())
        # The in-place transforms its text went through are layers too (decode.transforms).
        stages: tuple[str, ...] = getattr(sink, "last_stages", ())
        layers = (*self._layers, *stages) if stages else self._layers
        self._ctx.member_done(ContentInfo(self._type, self._charset, layers), self._size)
