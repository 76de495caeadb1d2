"""Organism and assembly of text SAM/VCF/FASTA/FASTQ members, from their header lines.

The decoder reports the same ``organism``/``assembly`` attributes for text
genomic members as the BAM/BCF readers do (gateway/classify/decode/genomic.py):
header lines only, bounded, the same for every chunking, and ``unknown`` for
genomic data that names no organism.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.classify.decode import Decoder, genomic
from gateway.classify.engine import Scanner
from gateway.classify.labels import BUILTIN_LABELS
from gateway.policy.cases import OFFLINE_SECRET

VCF_COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
HUMAN_VCF = (
    "##fileformat=VCFv4.2\n"
    '##FILTER=<ID=PASS,Description="All filters passed">\n'
    "##contig=<ID=chr1,length=248956422>\n"
    "##contig=<ID=chr2,length=242193529>\n"
    + VCF_COLUMNS
    + "chr1\t10177\trs367896724\tA\tAC\t100\tPASS\t.\n"
)
ECOLI_VCF = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=NC_000913.3,length=4641652,assembly=ASM584v2>\n"
    + VCF_COLUMNS
    + "NC_000913.3\t336\t.\tC\tT\t50\tPASS\t.\n"
)
BARE_VCF = "##fileformat=VCFv4.2\n" + VCF_COLUMNS + "chr1\t10177\t.\tA\tAC\t100\tPASS\t.\n"
HUMAN_SAM = (
    "@HD\tVN:1.6\tSO:coordinate\n"
    "@SQ\tSN:chr1\tLN:248956422\n"
    "@RG\tID:rg1\tSM:donor\n"
    "r1\t0\tchr1\t10001\t60\t4M\t*\t0\t0\tACGT\t*\n"
)
ECOLI_SAM = (
    "@HD\tVN:1.6\n"
    "@SQ\tSN:U00096.3\tLN:4641652\tSP:Escherichia coli\n"
    "r1\t0\tU00096.3\t1\t60\t4M\t*\t0\t0\tAGCT\t*\n"
)
BASES = "AGCTTTTCATTCTGACTGCAACGGGCAATATGTCTCTGTGTGGATTAAAAAAAGAGTGTCTGATAGCAGC\n"
ECOLI_FASTA = ">NC_000913.3 Escherichia coli str. K-12 substr. MG1655, complete genome\n" + BASES


class Sink:
    """A TextSink that keeps nothing: these tests look at ContentInfo only."""

    def begin_member(self, content_type: str) -> None:
        pass

    def text(self, data: bytes) -> None:
        pass

    def end_member(self) -> None:
        pass

    def unscannable(self, reason: str) -> None:
        pass

    def finding(self, label: str, value: bytes) -> None:
        pass


def attributes(data: bytes, chunk: int = 0) -> dict[str, str]:
    decoder = Decoder(Sink())
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        decoder.feed(data[i : i + step])
    return dict(decoder.finish().attributes)


def test_human_grch38_sam_header() -> None:
    assert attributes(HUMAN_SAM.encode()) == {"assembly": "GRCh38", "organism": "Homo sapiens"}


def test_human_vcf_header() -> None:
    assert attributes(HUMAN_VCF.encode()) == {"assembly": "GRCh38", "organism": "Homo sapiens"}


def test_ecoli_vcf_and_sam_headers() -> None:
    assert attributes(ECOLI_VCF.encode()) == {
        "assembly": "ASM584v2",
        "organism": "Escherichia coli",
    }
    assert attributes(ECOLI_SAM.encode()) == {"organism": "Escherichia coli"}


@pytest.mark.parametrize(
    "text",
    [
        BARE_VCF,
        "@HD\tVN:1.6\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\t*\n",
        "r1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\t*\n",  # headerless SAM
        "@r1\nACGTACGT\n+\nIIIIIIII\n",  # FASTQ: read names never name the species
        ">participant_017 chr1 fragment, cohort B\n" + BASES,
    ],
)
def test_genomic_data_naming_no_organism_is_unknown(text: str) -> None:
    assert attributes(text.encode()) == {"organism": "unknown"}


def test_other_text_has_no_attributes() -> None:
    assert attributes(b"name,phone\nalice,13812345678\nbob,13912345678\n") == {}
    assert attributes(b"plain text about Homo sapiens and GRCh38\n") == {}


def test_records_and_sample_names_are_not_read() -> None:
    """Only header lines count: a record or the #CHROM line naming a human says nothing."""
    vcf = BARE_VCF.replace("\t.\n", "\tNOTE=Homo_sapiens_GRCh38\n")
    vcf = vcf.replace("INFO\n", "INFO\tFORMAT\tHomo_sapiens_GRCh38\n")
    assert attributes(vcf.encode()) == {"organism": "unknown"}
    sam = "@HD\tVN:1.6\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\t*\tCO:Z:taxon 9606 GRCh38\n"
    assert attributes(sam.encode()) == {"organism": "unknown"}
    # A header line after the first record is no header line.
    late = ECOLI_SAM + "@CO\tGRCh38 taxon 9606\n"
    assert attributes(late.encode()) == {"organism": "Escherichia coli"}


def test_fasta_every_header_must_name_the_organism() -> None:
    assert attributes(ECOLI_FASTA.encode()) == {"organism": "Escherichia coli"}
    plasmid = ">NZ_CP009072.1 Escherichia coli ATCC 25922 plasmid\n" + BASES
    assert attributes((ECOLI_FASTA + plasmid).encode()) == {"organism": "Escherichia coli"}
    unnamed = ">contig_2 length=70\n" + BASES
    assert attributes((ECOLI_FASTA + unnamed).encode()) == {"organism": "unknown"}
    aureus = ">NC_007795.1 Staphylococcus aureus subsp. aureus NCTC 8325\n" + BASES
    assert attributes((ECOLI_FASTA + aureus).encode()) == {
        "organism": "Escherichia coli; Staphylococcus aureus"
    }
    human = ">NC_000001.11 Homo sapiens chromosome 1, GRCh38.p14 Primary Assembly\n" + BASES
    assert attributes((ECOLI_FASTA + human).encode()) == {
        "assembly": "GRCh38",
        "organism": "Homo sapiens",
    }


def test_fasta_single_common_word_is_no_statement() -> None:
    """``mouse`` opening free text is not the organism (a human xenograft in a mouse)."""
    xenograft = ">s1 mouse_xenograft_of_human_tumour\n" + BASES
    assert attributes(xenograft.encode()) == {"organism": "unknown"}


def test_fasta_past_the_header_bound_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genomic, "MAX_FASTA_HEADERS", 2)
    two = ECOLI_FASTA * 2
    assert attributes(two.encode()) == {"organism": "Escherichia coli"}
    assert attributes((two + ECOLI_FASTA).encode()) == {"organism": "unknown"}


def test_sam_vcf_header_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut off: unknown (human evidence could follow), unless what was read names a human."""
    filler = "".join(f'##INFO=<ID=K{i},Number=1,Type=Integer,Description="k">\n' for i in range(50))
    assert len(filler) > 2000
    monkeypatch.setattr(genomic, "MAX_TEXT_HEADER_BYTES", 2000)
    ecoli_first = ECOLI_VCF.replace(VCF_COLUMNS, filler + VCF_COLUMNS)
    assert attributes(ecoli_first.encode()) == {
        "assembly": "ASM584v2",
        "organism": "Escherichia coli; unknown",
    }
    human_first = HUMAN_VCF.replace(VCF_COLUMNS, filler + VCF_COLUMNS)
    assert attributes(human_first.encode()) == {"assembly": "GRCh38", "organism": "Homo sapiens"}
    human_late = BARE_VCF.replace(VCF_COLUMNS, filler + "##reference=GRCh38\n" + VCF_COLUMNS)
    assert attributes(human_late.encode()) == {"organism": "unknown"}


def test_header_line_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genomic, "MAX_TEXT_HEADER_LINES", 3)
    comments = "@CO\tx\n" * 3
    ecoli = ECOLI_SAM.replace("\nr1\t", "\n" + comments + "r1\t")
    assert attributes(ecoli.encode()) == {"organism": "Escherichia coli; unknown"}
    assert attributes(ECOLI_SAM.encode()) == {"organism": "Escherichia coli"}  # 2 lines
    human = HUMAN_SAM.replace("\nr1\t", "\n" + comments + "r1\t")
    assert attributes(human.encode()) == {"assembly": "GRCh38", "organism": "Homo sapiens"}


def test_fasta_with_many_inner_marks_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A '>' inside a line is no header, but each costs a step: past the bound, unknown."""
    monkeypatch.setattr(genomic, "MAX_FASTA_HEADERS", 2)
    two = ECOLI_FASTA + "; moved a>b>c\n" + BASES
    assert attributes(two.encode()) == {"organism": "Escherichia coli"}
    three = ECOLI_FASTA + "; moved a>b>c>d\n" + BASES
    assert attributes(three.encode()) == {"organism": "unknown"}


def test_header_bound_falls_at_the_same_byte_whatever_the_chunking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line crossing the bound is never read, even when it arrives byte by byte."""
    monkeypatch.setattr(genomic, "MAX_TEXT_HEADER_BYTES", 100)
    head = "##fileformat=VCFv4.2\n##source=" + "x" * 60 + "\n"
    data = (head + "##reference=GRCh38\n" + VCF_COLUMNS).encode()
    assert len(head) < 100 < len(head) + len("##reference=GRCh38")
    results = []
    for step in (len(data), 1, 7):
        evidence = genomic.HeaderEvidence(b"#", b"##")
        for i in range(0, len(data), step):
            if not evidence.done:
                evidence.feed(data[i : i + step])
        evidence.close()
        results.append(evidence.result())
    assert results == [[("organism", "unknown")]] * 3


def test_archive_with_a_named_and_an_unnamed_member_keeps_both() -> None:
    """An E. coli VCF beside a VCF naming no organism must not read as E. coli alone."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ecoli.vcf", ECOLI_VCF)
        zf.writestr("cohort.vcf", BARE_VCF)
        zf.writestr("README.txt", "variant calls\n")
    assert attributes(buf.getvalue()) == {
        "assembly": "ASM584v2",
        "organism": "Escherichia coli; unknown",
    }


def test_gzipped_vcf_and_utf16_sam() -> None:
    assert attributes(gzip.compress(HUMAN_VCF.encode()))["organism"] == "Homo sapiens"
    assert attributes(ECOLI_SAM.encode("utf-16"))["organism"] == "Escherichia coli"


def _long_header(kind: str) -> bytes:
    """A header longer than the sniffed prefix (64 KiB), chromosome 1 last."""
    if kind == "vcf":
        contigs = "".join(f"##contig=<ID=scaffold_{i},length={1000 + i}>\n" for i in range(3000))
        return (
            "##fileformat=VCFv4.2\n"
            + contigs
            + "##contig=<ID=chr1,length=248956422>\n"
            + VCF_COLUMNS
            + "chr1\t1\t.\tA\tG\t1\tPASS\t.\n"
        ).encode()
    sq = "".join(f"@SQ\tSN:scaffold_{i}\tLN:{1000 + i}\n" for i in range(3000))
    return (
        "@HD\tVN:1.6\n" + sq + "@SQ\tSN:1\tLN:249250621\nr1\t0\t1\t1\t60\t4M\t*\t0\t0\tACGT\t*\n"
    ).encode()


@pytest.mark.parametrize("kind", ["vcf", "sam"])
def test_long_header_is_read_past_the_sniffed_prefix(kind: str) -> None:
    data = _long_header(kind)
    assert len(data) > 64 << 10
    whole = attributes(data)
    assert whole["organism"] == "Homo sapiens"
    assert whole["assembly"] == ("GRCh38" if kind == "vcf" else "GRCh37")


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["vcf", "sam", "fasta"]),
    chunk=st.integers(min_value=1, max_value=70_000),
)
def test_any_chunking_gives_the_same_attributes(kind: str, chunk: int) -> None:
    if kind == "fasta":
        records = [ECOLI_FASTA] * 40 + [">contig_x unplaced\n" + BASES] + [ECOLI_FASTA] * 5
        data = ("".join(records) + BASES * 1500).encode()
        expected = {"organism": "unknown"}
    else:
        data = _long_header(kind)
        expected = attributes(data)
    assert attributes(data, chunk) == expected


def _collectors() -> list[tuple[bytes, genomic.Evidence, list[tuple[str, str]]]]:
    """Inputs whose every byte boundary matters: '>' and '@' inside lines, CRLF, no last newline."""
    fasta = (
        ECOLI_FASTA
        + "; moved >contig_y to run 2\n"  # a '>' inside a line is no header
        + ">NZ_CP009072.1 Escherichia coli plasmid p1 A>G\r\n"
        + BASES.rstrip("\n")
    )
    vcf = ECOLI_VCF.replace("##contig", '##INFO=<ID=X,Description="a>b @c">\n##contig')
    sam = "@HD\tVN:1.6\r\n\n@SQ\tSN:U00096.3\tLN:4641652\tSP:Escherichia coli\r\n@CO\ta@b"
    return [
        (fasta.encode(), genomic.FastaEvidence(), [("organism", "Escherichia coli")]),
        (
            vcf.encode(),
            genomic.HeaderEvidence(b"#", b"##"),
            [("assembly", "ASM584v2"), ("organism", "Escherichia coli")],
        ),
        (sam.encode(), genomic.HeaderEvidence(b"@", b"@"), [("organism", "Escherichia coli")]),
    ]


@pytest.mark.parametrize("case", range(3))
def test_every_split_point_and_byte_by_byte_give_the_same_evidence(case: int) -> None:
    data, whole, expected = _collectors()[case]
    whole.feed(data)
    whole.close()
    assert whole.result() == expected
    for split in range(len(data) + 1):
        evidence = _collectors()[case][1]
        for piece in (data[:split], data[split:]):
            if piece and not evidence.done:
                evidence.feed(piece)
        evidence.close()
        assert evidence.result() == expected, split
    evidence = _collectors()[case][1]
    for i in range(len(data)):
        if not evidence.done:
            evidence.feed(data[i : i + 1])
    evidence.close()
    assert evidence.result() == expected


def test_scanner_summary_and_genetic_findings() -> None:
    """Through the scanner: the attributes reach ContentInfo; findings are unchanged."""
    from gateway.classify.detectors import DetectorSet

    assert "sensitive.genetic" in BUILTIN_LABELS
    scanner = Scanner(DetectorSet.build(), secret=OFFLINE_SECRET)
    scanner.feed(ECOLI_VCF.encode())
    summary = scanner.finish()
    found: Mapping[str, str] = summary.content.attributes
    assert dict(found) == {"assembly": "ASM584v2", "organism": "Escherichia coli"}
    assert summary.count("sensitive.genetic") == 1
    assert summary.to_json()["content"]["attributes"] == dict(found)
