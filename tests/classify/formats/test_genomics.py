"""Genomics readers (gateway/classify/formats/genomics/): BAM, BCF and CRAM made by pysam.

Every format: records counted as ``sensitive.genetic`` one per record (as the
text formats are), planted identifiers in headers and tags found, the
organism and assembly reported from the header, clean files holding nothing
identifier-shaped, corrupt and hostile variants (truncated, lying lengths,
BGZF bombs, lying CRAM record counts) unscannable, and a hypothesis test per
reader that mutates valid files and accepts only success or ``Unscannable``.
"""

from __future__ import annotations

import array
import contextlib
import gzip
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pysam
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bench.classify import _person
from gateway.classify import DetectorSet
from gateway.classify.formats import identify
from gateway.classify.formats.base import Extract, StreamReader, Unscannable
from gateway.classify.formats.genomics import (
    BamReader,
    BcfReader,
    CramReader,
    OrganismEvidence,
    organism_from_header,
)
from gateway.classify.formats.genomics.common import BGZF_MAX_RATIO, Bgzf
from gateway.classify.formats.testing import RecordingExtract, label_counts, read_stream, scan_bytes
from gateway.classify.summary import ScanSummary

DETECTORS = DetectorSet.build()
RNG = random.Random(31)
PEOPLE = [_person(RNG, n) for n in range(3)]
RESIDENT_ID, MOBILE, _EMAIL, HKID = PEOPLE[0][:4]
READS = 40
REFERENCE = "".join(random.Random(5).choice("ACGT") for _ in range(3000))

HUMAN_HEADER: dict[str, Any] = {
    "HD": {"VN": "1.6", "SO": "coordinate"},
    "SQ": [
        {"SN": "chr1", "LN": 3000, "AS": "GRCh38", "SP": "Homo sapiens"},
        {"SN": "chr2", "LN": 3000, "AS": "GRCh38", "SP": "Homo sapiens"},
    ],
    "RG": [{"ID": "rg1", "SM": f"donor {RESIDENT_ID}", "PL": "ILLUMINA"}],
    "CO": [f"contact mobile {MOBILE}"],
}
BACTERIAL_HEADER: dict[str, Any] = {
    "HD": {"VN": "1.6", "SO": "coordinate"},
    "SQ": [{"SN": "NC_000913.3", "LN": 3000, "AS": "ASM584v2", "SP": "Escherichia coli K-12"}],
    "RG": [{"ID": "rg1", "SM": "isolate-7"}],
}


def scan(data: bytes, chunk: int = 0) -> ScanSummary:
    """Through the whole decoder, in ``chunk``-byte pieces (whole when 0)."""
    return scan_bytes(DETECTORS, data, chunk)


counts = label_counts


def write_alignments(
    path: Path, mode: str, header: dict[str, Any], planted: bool, **kw: Any
) -> bytes:
    """READS alignments on chr1/contig 0, one carrying a planted CO:Z tag."""
    with pysam.AlignmentFile(str(path), mode, header=header, **kw) as f:
        for i in range(READS):
            a = pysam.AlignedSegment(f.header)
            pos = i * 50
            a.query_name = f"A00123:8:H7KJ:1:{1101 + i}:{i * 7}:{i * 13}"
            a.query_sequence = REFERENCE[pos : pos + 100]
            a.flag = 99 if i % 2 else 0
            a.reference_id = 0
            a.reference_start = pos
            a.mapping_quality = 60
            a.cigartuples = [(0, 100)]
            a.query_qualities = pysam.qualitystring_to_array("F" * 100)
            a.set_tag("RG", "rg1")
            a.set_tag("NM", 0)
            a.set_tag("ML", array.array("B", [1, 2, 3]))
            if planted and i == 3:
                a.set_tag("CO", f"patient {HKID}")
            f.write(a)
    return path.read_bytes()


def write_variants(path: Path, planted: bool, assembly: str = "GRCh38") -> bytes:
    header = pysam.VariantHeader()
    header.add_line(f"##reference={assembly}")
    header.contigs.add("chr1", length=248956422 if assembly == "GRCh38" else 4641652)
    header.add_meta(
        "INFO", items=[("ID", "DP"), ("Number", "1"), ("Type", "Integer"), ("Description", "d")]
    )
    header.add_meta(
        "INFO", items=[("ID", "NOTE"), ("Number", "1"), ("Type", "String"), ("Description", "n")]
    )
    header.add_meta(
        "INFO", items=[("ID", "AF"), ("Number", "A"), ("Type", "Float"), ("Description", "f")]
    )
    header.add_meta(
        "FORMAT", items=[("ID", "GT"), ("Number", "1"), ("Type", "String"), ("Description", "g")]
    )
    header.add_sample(RESIDENT_ID if planted else "sample01")
    header.add_sample("sample02")
    with pysam.VariantFile(str(path), "wb", header=header) as f:
        for i in range(READS):
            rec = f.new_record(
                contig="chr1", start=1000 + i * 10, alleles=("A", "G", "T"), id=f"rs{100 + i}"
            )
            rec.info["DP"] = 10 + i
            rec.info["AF"] = (0.25, 0.5)
            rec.info["NOTE"] = f"tel {MOBILE}" if planted and i == 5 else "ok"
            rec.qual = 30.5
            rec.filter.add("PASS")
            rec.samples[0]["GT"] = (0, 1)
            rec.samples[1]["GT"] = (1, 1)
            f.write(rec)
    return path.read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every test file, written once by pysam (htslib)."""
    tmp = tmp_path_factory.mktemp("genomics")
    fasta = tmp / "ref.fa"
    fasta.write_text(
        ">chr1\n" + REFERENCE + "\n>chr2\n" + REFERENCE + "\n>NC_000913.3\n" + REFERENCE + "\n"
    )
    pysam.faidx(str(fasta))
    ref = {"reference_filename": str(fasta)}
    return {
        "bam": write_alignments(tmp / "a.bam", "wb", HUMAN_HEADER, planted=True),
        "bam_clean": write_alignments(tmp / "b.bam", "wb", BACTERIAL_HEADER, planted=False),
        "cram": write_alignments(tmp / "a.cram", "wc", HUMAN_HEADER, planted=True, **ref),
        "cram_clean": write_alignments(tmp / "b.cram", "wc", BACTERIAL_HEADER, False, **ref),
        "cram21": write_alignments(
            tmp / "c.cram", "wc", HUMAN_HEADER, True, format_options=[b"version=2.1"], **ref
        ),
        "bcf": write_variants(tmp / "a.bcf", planted=True),
        "bcf_clean": write_variants(tmp / "b.bcf", planted=False, assembly="ASM584v2"),
    }


def read(
    reader: Callable[[Extract], StreamReader], data: bytes, chunk: int = 0
) -> RecordingExtract:
    return read_stream(reader, data, chunk)


# -- BAM ------------------------------------------------------------------------------------------


def test_bam_records_become_sam_lines(files: dict[str, bytes]) -> None:
    out = read(BamReader, files["bam"])
    [member] = out.members
    assert (member.name, member.content_type, member.closed) == ("alignments", "text/x-sam", True)
    lines = member.text.splitlines()
    header = [line for line in lines if line.startswith("@")]
    records = [line.split("\t") for line in lines if not line.startswith("@")]
    assert len(records) == READS
    assert f"@RG\tID:rg1\tSM:donor {RESIDENT_ID}\tPL:ILLUMINA" in header
    first = records[0]
    assert first[:6] == ["A00123:8:H7KJ:1:1101:0:0", "0", "chr1", "1", "60", "100M"]
    assert first[9] == REFERENCE[:100]  # the bases, decoded from 4-bit codes
    assert "RG:Z:rg1" in first[11:]
    assert f"CO:Z:patient {HKID}" in records[3]
    assert records[1][6:9] == ["*", "0", "0"]  # no mate
    assert out.attributes == {"organism": "Homo sapiens", "assembly": "GRCh38"}
    assert out.numeric_values == READS * 4  # NM:i and the three ML:B values per read


def test_bam_any_chunking_and_uncompressed_stream_agree(files: dict[str, bytes]) -> None:
    whole = read(BamReader, files["bam"])
    for chunk in (1, 7, 4096):
        assert read(BamReader, files["bam"], chunk).text == whole.text
    raw = gzip.decompress(files["bam"])  # what a decoder that inflated the gzip members hands on
    assert raw.startswith(b"BAM\x01")
    assert read(BamReader, raw, 1000).text == whole.text


def test_bam_through_the_decoder(files: dict[str, bytes]) -> None:
    summary = scan(files["bam"], chunk=333)
    assert summary.content.type == "application/x-bam"
    assert summary.content.attributes == {"assembly": "GRCh38", "organism": "Homo sapiens"}
    found = counts(summary)
    assert found["sensitive.genetic"] == READS
    assert summary.labels["sensitive.genetic"].distinct == READS
    assert found["pii.cn_resident_id"] == 1
    assert found["pii.cn_phone"] == 1
    assert found["pii.hk_id"] == 1
    assert summary.unscannable == ()


def test_clean_bacterial_bam(files: dict[str, bytes]) -> None:
    summary = scan(files["bam_clean"])
    assert counts(summary) == {"sensitive.genetic": READS}
    assert summary.content.attributes == {"assembly": "ASM584v2", "organism": "Escherichia coli"}


def test_bam_read_names_never_make_header_lines_or_extra_records() -> None:
    """A read named "@x" or holding a newline is still one record line."""
    body = _bam_header("") + _bam_record(b"@evil\nname", seq="ACGT")
    out = read(BamReader, body)
    lines = out.text.splitlines()
    assert len(lines) == 2  # the @SQ line rendered from the binary list, one record
    assert lines[1].startswith("_evil name\t")


def _bam_header(text: str, refs: tuple[tuple[str, int], ...] = (("chr1", 1000),)) -> bytes:
    parts = [b"BAM\x01", struct.pack("<i", len(text)), text.encode(), struct.pack("<i", len(refs))]
    for name, length in refs:
        parts += [
            struct.pack("<i", len(name) + 1),
            name.encode() + b"\0",
            struct.pack("<i", length),
        ]
    return b"".join(parts)


def _bam_record(name: bytes, seq: str = "", aux: bytes = b"", size: int | None = None) -> bytes:
    codes = "=ACMGRSVTWYHKDBN"
    packed = bytes(
        codes.index(seq[i]) << 4 | (codes.index(seq[i + 1]) if i + 1 < len(seq) else 0)
        for i in range(0, len(seq), 2)
    )
    fixed = struct.pack("<iiBBHHHiiii", 0, 10, len(name) + 1, 30, 0, 0, 4, len(seq), -1, -1, 0)
    body = fixed + name + b"\0" + packed + b"\xff" * len(seq) + aux
    return struct.pack("<i", len(body) if size is None else size) + body


def bgzf_block(payload: bytes, isize: int | None = None, crc: int | None = None) -> bytes:
    """One BGZF block (SAMv1 §4.1) holding ``payload``."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = deflater.compress(payload) + deflater.flush()
    head = b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x06\0BC\x02\0" + struct.pack("<H", 25 + len(data))
    tail = struct.pack(
        "<II", zlib.crc32(payload) if crc is None else crc, len(payload) if isize is None else isize
    )
    return head + data + tail


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"BAM\x01\xff\xff\xff\x7f", "bam: header text length out of range"),
        (b"BAM\x02" + b"\0" * 8, "bam: bad magic"),
        (_bam_header("@HD\tVN:1.6\n")[:-3], "bam: truncated"),
        (_bam_header("") + _bam_record(b"r1", size=1 << 30), "bam: record length out of range"),
        (_bam_header("") + _bam_record(b"r1", seq="ACGT", size=40), "bam: corrupt record"),
        (_bam_header("") + _bam_record(b"r1", aux=b"XXZabc"), "bam: unterminated aux string"),
        (
            _bam_header("") + _bam_record(b"r1", aux=b"XXB" + b"i\xff\xff\xff\x7f"),
            "bam: corrupt aux array",
        ),
        (_bam_header("") + _bam_record(b"r1", aux=b"XXq1"), "bam: unknown aux type"),
        (b"BAM\x01" + struct.pack("<ii", 0, -5), "bam: reference count out of range"),
        (bgzf_block(_bam_header("")) + b"\x1f\x8b\x08\x04", "bam: truncated BGZF block"),
        (bgzf_block(_bam_header(""), crc=0), "bam: BGZF block fails its CRC"),
        (bgzf_block(_bam_header(""), isize=1 << 20), "bam: BGZF block larger than 65536 bytes"),
        (bgzf_block(b"\0" * 200_000, isize=65536), "bam: corrupt BGZF block"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 20, "bam: not a BGZF block"),
    ],
)
def test_bad_bam_is_unscannable(data: bytes, reason: str) -> None:
    with pytest.raises(Unscannable) as caught:
        read(BamReader, data)
    assert caught.value.reason == reason


def test_bgzf_bomb_is_bounded_per_block_and_in_total() -> None:
    out: list[int] = []
    bgzf = Bgzf(lambda data: out.append(len(data)), "bam")
    block = bgzf_block(b"\0" * 65536)  # ~100 bytes that inflate 65536: 650:1
    with pytest.raises(Unscannable) as caught:
        bgzf.feed(block * 1000)
    assert caught.value.reason == f"bam: expands more than {BGZF_MAX_RATIO}:1"
    assert sum(out) < (1 << 20) + BGZF_MAX_RATIO * len(block) * len(out) + 65536
    assert len(out) < 40  # stopped after the grace, not after the 1000 blocks


# -- BCF ------------------------------------------------------------------------------------------


def test_bcf_records_become_vcf_lines(files: dict[str, bytes]) -> None:
    out = read(BcfReader, files["bcf"])
    [member] = out.members
    assert (member.name, member.content_type) == ("variants", "text/x-vcf")
    lines = member.text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    records = [line.split("\t") for line in lines if not line.startswith("#")]
    assert header[0] == "##fileformat=VCFv4.2"
    assert header[-1].endswith(f"FORMAT\t{RESIDENT_ID}\tsample02")  # sample names are scanned
    assert len(records) == READS
    assert records[0][:7] == ["chr1", "1001", "rs100", "A", "G,T", "30.5", "PASS"]
    assert records[0][7] == "DP=10;AF=0.25,0.5;NOTE=ok"
    assert f"NOTE=tel {MOBILE}" in records[5][7]
    assert out.attributes == {"organism": "Homo sapiens", "assembly": "GRCh38"}
    for chunk in (1, 13):
        assert read(BcfReader, files["bcf"], chunk).text == out.text
    assert read(BcfReader, gzip.decompress(files["bcf"]), 50).text == out.text


def test_bcf_through_the_decoder(files: dict[str, bytes]) -> None:
    summary = scan(files["bcf"], chunk=100)
    assert summary.content.type == "application/x-bcf"
    found = counts(summary)
    assert found["sensitive.genetic"] == READS
    assert found["pii.cn_resident_id"] == 1
    assert found["pii.cn_phone"] == 1
    clean = scan(files["bcf_clean"])
    assert counts(clean) == {"sensitive.genetic": READS}
    assert clean.content.attributes == {"assembly": "ASM584v2", "organism": "Escherichia coli"}


def _bcf(header: str, records: bytes = b"") -> bytes:
    text = header.encode() + b"\0"
    return b"BCF\x02\x02" + struct.pack("<I", len(text)) + text + records


_VCF_HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=chr1>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"BCF\x02\x02\xff\xff\xff\xff", "bcf: header text length out of range"),
        (_bcf(_VCF_HEADER)[:-4], "bcf: truncated"),
        (_bcf(_VCF_HEADER, struct.pack("<II", 1 << 30, 0)), "bcf: record length out of range"),
        (
            _bcf(_VCF_HEADER, struct.pack("<IIiiifHHI", 24, 0, 5, 1, 1, 0.0, 0, 0, 0)),
            "bcf: record on an undeclared contig",
        ),
        (
            _bcf(_VCF_HEADER, struct.pack("<IIiiifHHI", 25, 0, 0, 1, 1, 0.0, 0, 1, 0) + b"\x17"),
            "bcf: corrupt record",
        ),
        (
            _bcf(
                _VCF_HEADER,
                struct.pack("<IIiiifHHI", 28, 0, 0, 1, 1, 0.0, 1, 0, 0) + b"\x07\x11\x09\x00",
            ),
            "bcf: reference to an undeclared header ID",
        ),
    ],
)
def test_bad_bcf_is_unscannable(data: bytes, reason: str) -> None:
    with pytest.raises(Unscannable) as caught:
        read(BcfReader, data)
    assert caught.value.reason == reason


def test_bcf_genotypes_are_skipped_as_they_stream() -> None:
    """Per-sample data is not buffered: a record with 1 MB of genotypes streams past."""
    shared = struct.pack("<iiifHHI", 0, 99, 1, 0.0, 0, 1, 0) + b"\x07\x17A\x00"
    record = struct.pack("<II", len(shared), 1 << 20) + shared + b"\0" * (1 << 20)
    data = _bcf(_VCF_HEADER, record * 3)
    out = RecordingExtract()
    reader = BcfReader(out)
    for i in range(0, len(data), 65536):
        reader.feed(data[i : i + 65536])
        assert len(reader._buf) < 65536 + 64
    reader.finish()
    assert out.text.splitlines()[-1] == "chr1\t100\t.\tA\t.\t0\t.\t."


# -- CRAM -----------------------------------------------------------------------------------------


def test_cram_header_rendered_and_records_counted(files: dict[str, bytes]) -> None:
    out = read(CramReader, files["cram"])
    [member] = out.members
    assert (member.name, member.content_type) == ("alignments", "text/x-sam")
    assert f"SM:donor {RESIDENT_ID}" in member.text
    assert all(line.startswith("@") for line in member.text.splitlines())  # records not decoded
    assert out.finding_counts() == {"sensitive.genetic": READS}
    assert len({value for _, value in out.findings}) == READS
    assert out.attributes == {"organism": "Homo sapiens", "assembly": "GRCh38"}
    for chunk in (1, 97):
        chunked = read(CramReader, files["cram"], chunk)
        assert (chunked.text, chunked.findings) == (out.text, out.findings)


def test_cram_2_1(files: dict[str, bytes]) -> None:
    assert files["cram21"].startswith(b"CRAM\x02\x01")
    out = read(CramReader, files["cram21"], 50)
    assert f"SM:donor {RESIDENT_ID}" in out.text
    assert out.finding_counts() == {"sensitive.genetic": READS}


def test_cram_through_the_decoder(files: dict[str, bytes]) -> None:
    summary = scan(files["cram"], chunk=64)
    assert summary.content.type == "application/x-cram"
    found = counts(summary)
    assert found["sensitive.genetic"] == READS
    assert found["pii.cn_resident_id"] == 1
    assert found["pii.cn_phone"] == 1
    assert "pii.hk_id" not in found  # in a read's tag: CRAM records are not decoded (documented)
    clean = scan(files["cram_clean"])
    assert counts(clean) == {"sensitive.genetic": READS}
    assert clean.content.attributes["organism"] == "Escherichia coli"


def _itf8(value: int) -> bytes:
    if value < 0x80:
        return bytes([value])
    if value < 0x4000:
        return bytes([0x80 | value >> 8, value & 0xFF])
    return bytes(
        [
            0xF0 | (value >> 28) & 0x0F,
            value >> 20 & 0xFF,
            value >> 12 & 0xFF,
            value >> 4 & 0xFF,
            value & 0x0F,
        ]
    )


def _container(length: int, records: int, crc: bool = True) -> bytes:
    head = struct.pack("<i", length) + _itf8(0) + _itf8(1) + _itf8(100) + _itf8(records)
    head += b"\0\0" + _itf8(1) + _itf8(0)  # counter, bases (LTF8 0), blocks, no landmarks
    return head + (struct.pack("<I", zlib.crc32(head)) if crc else b"\0\0\0\0")


def test_cram_container_lying_about_its_records_is_unscannable(files: dict[str, bytes]) -> None:
    good = files["cram"]
    header_end = _first_container_end(good)
    lying = good[:header_end] + _container(10, 1 << 20) + b"\0" * 10
    with pytest.raises(Unscannable) as caught:
        read(CramReader, lying)
    assert caught.value.reason == "cram: container claims more records than it can hold"
    corrupt = good[:header_end] + _container(10, 1, crc=False) + b"\0" * 10
    with pytest.raises(Unscannable) as caught:
        read(CramReader, corrupt)
    assert caught.value.reason == "cram: container header fails its CRC"
    with pytest.raises(Unscannable, match="cram: truncated"):
        read(CramReader, good[:-5])
    with pytest.raises(Unscannable, match="cram: unsupported version"):
        read(CramReader, b"CRAM\x01\x00" + b"\0" * 40)


def _first_container_end(data: bytes) -> int:
    """End of the file header container of a CRAM 3 file (test helper: pysam's layout)."""
    from gateway.classify.formats.genomics.cram import _cram_container

    got = _cram_container(bytearray(data), 26, 3)
    assert got is not None
    fields, size = got
    return 26 + size + fields[0]


# -- organism -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("@SQ\tSN:chr1\tLN:248956422\n", {"assembly": "GRCh38", "organism": "Homo sapiens"}),
        ("@SQ\tSN:1\tLN:249250621\n", {"assembly": "GRCh37", "organism": "Homo sapiens"}),
        ("@SQ\tSN:chr1\tLN:248387328\n", {"assembly": "T2T-CHM13", "organism": "Homo sapiens"}),
        ("@SQ\tSN:NC_000001.11\tLN:5\n", {"assembly": "GRCh38", "organism": "Homo sapiens"}),
        (
            "@PG\tID:bwa\tCL:bwa mem /ref/hg19.fa r1.fq\n",
            {"assembly": "GRCh37", "organism": "Homo sapiens"},
        ),
        ("@SQ\tSN:c1\tLN:5\tSP:Mus musculus\n", {"organism": "Mus musculus"}),
        ("@SQ\tSN:c1\tLN:5\tSP:Some unknown beetle\n", {"organism": "other"}),
        ("@CO\tNCBI taxon 9606 donor\n", {"organism": "Homo sapiens"}),
        ("@CO\ttaxid:562\n", {"organism": "Escherichia coli"}),
        (
            "@SQ\tSN:chr1\tLN:5\tSP:Escherichia coli\n@SQ\tSN:x\tLN:5\tSP:Homo sapiens\n",
            {"organism": "Homo sapiens"},  # any human evidence wins
        ),
        (
            "##reference=file:///data/Homo_sapiens_assembly38.fasta\n",
            {"assembly": "GRCh38", "organism": "Homo sapiens"},
        ),
        (
            '##contig=<ID=1,length=249250621,assembly=b37,species="Homo sapiens">\n',
            {"assembly": "GRCh37", "organism": "Homo sapiens"},
        ),
        (
            "##contig=<ID=NC_045512.2,length=29903,assembly=ASM985889v3>\n",
            {"assembly": "ASM985889v3", "organism": "SARS-CoV-2"},
        ),
        ("@SQ\tSN:ctg1\tLN:5000\n@CO\tplate B37 well hg\n", {}),
    ],
)
def test_organism_from_header(header: str, expected: dict[str, str]) -> None:
    assert organism_from_header(header + "r1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\t*\n") == expected


def test_organism_vocabulary_is_fixed() -> None:
    """Whatever a header says, the attributes come from the vocabulary."""
    evidence = OrganismEvidence()
    evidence.add_line("@SQ\tSN:c\tLN:1\tSP:<script>13812345678</script>")
    assert evidence.result() == {"organism": "other"}
    evidence.add_line("@SQ\tSN:chr1\tLN:" + "9" * 5000)  # no 5000-digit int() (ValueError)
    evidence.add_line("@SQ\tSN:chr1\tLN:²")
    for _ in range(10_000):
        evidence.add_line("@CO\ttaxid:562 taxid:1 hg19")  # repeats keep constant memory
    assert evidence.result() == {"assembly": "GRCh37", "organism": "Homo sapiens"}


def test_bcf_dictionary_index_is_bounded() -> None:
    header = '##fileformat=VCFv4.2\n##INFO=<ID=X,Number=1,Type=String,Description="x",IDX='
    with pytest.raises(Unscannable, match="bcf: dictionary index over"):
        read(BcfReader, _bcf(header + "999999999>\n#CHROM\n"))
    huge = _bcf(header + "9" * 5000 + ">\n##contig=<ID=chr1>\n#CHROM\n")
    assert "##INFO" in read(BcfReader, huge).text  # an IDX of 5000 digits is no IDX


# -- sniffing and hostile mutations ---------------------------------------------------------------


def test_sniffers(files: dict[str, bytes]) -> None:
    for name in ("bam", "bcf", "cram"):
        fmt = identify(files[name][:65536])
        assert fmt is not None
        assert fmt.name == name
    vcf_gz = gzip.compress(b"##fileformat=VCFv4.2\n")
    fmt = identify(vcf_gz)
    assert fmt is None or fmt.name not in ("bam", "bcf")


def mutate(original: bytes, data: st.DataObject) -> bytes:
    """Flip, overwrite, cut or insert bytes: what a corrupt or hostile copy looks like."""
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        action = data.draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        if action == "flip" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "word":
            mutated[at : at + 4] = data.draw(
                st.sampled_from([b"\xff" * 4, b"\0" * 4, b"\x7f\xff\xff\xff"])
            )
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(mutated)


def ok_or_unscannable(reader: Callable[[Extract], StreamReader], data: bytes, chunk: int) -> None:
    with contextlib.suppress(Unscannable):
        read(reader, data, chunk)


_READERS: dict[str, Callable[[Extract], StreamReader]] = {
    "bam": BamReader,
    "bcf": BcfReader,
    "cram": CramReader,
    "cram21": CramReader,
}


@pytest.mark.parametrize("name", ["bam", "bcf", "cram", "cram21"])
@given(data=st.data())
def test_mutations_never_crash(files: dict[str, bytes], name: str, data: st.DataObject) -> None:
    original = files[name]
    if name in ("bam", "bcf") and data.draw(st.booleans()):
        original = gzip.decompress(original)  # mutate the records, not only the BGZF framing
    ok_or_unscannable(_READERS[name], mutate(original, data), data.draw(st.sampled_from([0, 61])))


def test_header_naming_no_organism_reports_unknown() -> None:
    """``organism: unknown`` rather than nothing, so it shows beside a named organism."""
    bam = read(BamReader, _bam_header("@HD\tVN:1.6\n"))
    assert bam.attributes == {"organism": "unknown"}
    bcf = read(BcfReader, _bcf(_VCF_HEADER))
    assert bcf.attributes == {"organism": "unknown"}
    named = read(BamReader, _bam_header("", (("chr1", 248956422),)))
    assert named.attributes == {"organism": "Homo sapiens", "assembly": "GRCh38"}


def test_attribute_vocabulary_covers_what_readers_report() -> None:
    """Every value the rules can produce is in the vocabulary policies are checked against."""
    from gateway.classify.attributes import VOCABULARY

    samples = [
        "@SQ\tSN:chr1\tLN:248956422",
        "@SQ\tSN:c\tLN:5\tSP:Some unknown beetle",
        "@CO\ttaxid:2697049 rn7 TAIR10 dm6",
        '##contig=<ID=x,assembly=mm10,species="zebrafish">',
    ]
    for line in samples:
        evidence = OrganismEvidence()
        evidence.add_line(line)
        for key, value in evidence.result().items():
            assert value in VOCABULARY[key], (key, value)
