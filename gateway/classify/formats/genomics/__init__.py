"""Genomics readers: BAM, BCF and CRAM (issue 12; SPEC §3.1 ``sensitive.genetic``).

The text genomic formats (SAM, VCF) are already counted by the matcher: one
``sensitive.genetic`` finding per SAM alignment line and per VCF data line
(``gateway.classify.detectors.GENOMIC_TYPES``). The binary formats are made to
count the same way by rendering them as that text:

* **BAM** (SAMv1 §4.2): BGZF blocks (RFC 1952 gzip members with a ``BC``
  extra field, each at most 64 KiB inflated) holding the header text, the
  reference list and length-prefixed alignment records. Each record becomes
  one SAM line (QNAME, FLAG, RNAME, POS, MAPQ, CIGAR, mate fields, the bases,
  and the text aux tags) in a ``text/x-sam`` member, after the header lines.
  Qualities are not rendered, numeric tags and arrays are counted as numeric
  values, sequences are cut at
  :data:`~gateway.classify.formats.genomics.bam.MAX_RENDERED_BASES`.
* **BCF** (VCFv4.3 §6): BGZF again; the header is VCF text (rendered as is,
  with the sample names), each record becomes a VCF data line (CHROM, POS, ID,
  REF, ALT, QUAL, FILTER, INFO) in a ``text/x-vcf`` member. Per-sample
  genotype data is skipped unread.
* **CRAM** (CRAM 2.1/3.x): the SAM header is rendered; the records are
  counted from the container headers (one ``sensitive.genetic`` finding each)
  but not decoded. Decoding them needs the reference sequence and a dozen
  entropy codecs; htslib (pysam) would fetch missing references over the
  network and cannot read a non-seekable stream in memory, so it is not used.

Both readers accept the uncompressed stream too (``BAM\\1``/``BCF\\2`` at
offset 0), which is what a decoder that already inflated the gzip members
hands on.

Where the header says which organism the data comes from (reference assembly
names, ``@SQ SP:`` species, NCBI taxon ids, the length of chromosome 1) the
readers report ``organism`` and ``assembly`` attributes from a fixed
vocabulary (:func:`organism_from_header` does the same for SAM/VCF text).

Modules: :mod:`.common` (BGZF, header lines, bounds), :mod:`.organism`,
:mod:`.bam`, :mod:`.bcf`, :mod:`.cram`.
"""

from __future__ import annotations

from typing import Final

from gateway.classify.formats import Format, register
from gateway.classify.formats.genomics.bam import BamReader
from gateway.classify.formats.genomics.bcf import BcfReader
from gateway.classify.formats.genomics.common import bgzf_starts_with
from gateway.classify.formats.genomics.cram import CramReader
from gateway.classify.formats.genomics.organism import OrganismEvidence, organism_from_header

__all__ = [
    "BAM",
    "BCF",
    "CRAM",
    "BamReader",
    "BcfReader",
    "CramReader",
    "OrganismEvidence",
    "organism_from_header",
]


def _sniff_bam(prefix: bytes) -> bool:
    return prefix.startswith(b"BAM\x01") or bgzf_starts_with(prefix, b"BAM\x01")


def _sniff_bcf(prefix: bytes) -> bool:
    return prefix.startswith(b"BCF\x02") or bgzf_starts_with(prefix, b"BCF\x02")


def _sniff_cram(prefix: bytes) -> bool:
    return prefix.startswith(b"CRAM") and len(prefix) > 4 and prefix[4] in (1, 2, 3, 4)


#: Above the gzip container (BAM and BCF are gzip members that only these
#: readers understand) and any pass-through registration.
GENOMICS_PRIORITY: Final = 20
#: What BAM and BCF start with: their magic's ``B``, or a BGZF block's gzip magic.
_BAM_OR_BGZF: Final = b"B\x1f"

BAM: Final = register(
    Format(
        "bam",
        "application/x-bam",
        _sniff_bam,
        stream=BamReader,
        priority=GENOMICS_PRIORITY,
        leads=_BAM_OR_BGZF,
    )
)
BCF: Final = register(
    Format(
        "bcf",
        "application/x-bcf",
        _sniff_bcf,
        stream=BcfReader,
        priority=GENOMICS_PRIORITY,
        leads=_BAM_OR_BGZF,
    )
)
CRAM: Final = register(
    Format(
        "cram",
        "application/x-cram",
        _sniff_cram,
        stream=CramReader,
        priority=GENOMICS_PRIORITY,
        leads=b"C",
    )
)
