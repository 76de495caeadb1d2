"""Which organism and reference assembly a genomic header names (issue 12).

Human genetic resources (REGULATIONS.md, HGR) are regulated; bacterial or
plant sequence is not. Where a SAM/BAM/CRAM or VCF/BCF header says which
organism the data comes from, the readers report it as the ``organism`` and
``assembly`` attributes, from a fixed vocabulary (never free text from the
file), so that a compliance officer can write a policy on them. A header
that names no organism reports ``organism: unknown``: in an archive holding
a bacterial VCF and an unlabelled human one, the transfer's ``organism`` is
``Escherichia coli; unknown``, never just ``Escherichia coli``.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.classify.formats.base import Extract

#: Longest header line kept whole for the organism rules; longer lines are
#: still rendered, in pieces (an @PG command line can be long, not 1 MiB).
MAX_HEADER_LINE: Final = 1 << 20

#: Reference assemblies by the names files use for them (UCSC, GRC, GATK
#: bundle, 1000 Genomes, NCBI): canonical name and organism.
_ASSEMBLIES: Final[dict[str, tuple[str, str]]] = {
    "grch38": ("GRCh38", "Homo sapiens"),
    "hg38": ("GRCh38", "Homo sapiens"),
    "hs38": ("GRCh38", "Homo sapiens"),
    "hs38dh": ("GRCh38", "Homo sapiens"),
    "homo_sapiens_assembly38": ("GRCh38", "Homo sapiens"),
    "grch37": ("GRCh37", "Homo sapiens"),
    "hg19": ("GRCh37", "Homo sapiens"),
    "hs37": ("GRCh37", "Homo sapiens"),
    "hs37d5": ("GRCh37", "Homo sapiens"),
    "human_g1k_v37": ("GRCh37", "Homo sapiens"),
    "homo_sapiens_assembly19": ("GRCh37", "Homo sapiens"),
    "ncbi36": ("NCBI36", "Homo sapiens"),
    "hg18": ("NCBI36", "Homo sapiens"),
    "t2t-chm13": ("T2T-CHM13", "Homo sapiens"),
    "t2t_chm13": ("T2T-CHM13", "Homo sapiens"),
    "t2t-chm13v2.0": ("T2T-CHM13", "Homo sapiens"),
    "chm13": ("T2T-CHM13", "Homo sapiens"),
    "chm13v2.0": ("T2T-CHM13", "Homo sapiens"),
    "chm13v1.1": ("T2T-CHM13", "Homo sapiens"),
    "grcm39": ("GRCm39", "Mus musculus"),
    "mm39": ("GRCm39", "Mus musculus"),
    "grcm38": ("GRCm38", "Mus musculus"),
    "mm10": ("GRCm38", "Mus musculus"),
    "mratbn7.2": ("mRatBN7.2", "Rattus norvegicus"),
    "rn7": ("mRatBN7.2", "Rattus norvegicus"),
    "grcz11": ("GRCz11", "Danio rerio"),
    "danrer11": ("GRCz11", "Danio rerio"),
    "bdgp6": ("BDGP6", "Drosophila melanogaster"),
    "dm6": ("BDGP6", "Drosophila melanogaster"),
    "wbcel235": ("WBcel235", "Caenorhabditis elegans"),
    "ce11": ("WBcel235", "Caenorhabditis elegans"),
    "r64": ("R64", "Saccharomyces cerevisiae"),
    "saccer3": ("R64", "Saccharomyces cerevisiae"),
    "tair10": ("TAIR10", "Arabidopsis thaliana"),
    "asm584v2": ("ASM584v2", "Escherichia coli"),
    "asm985889v3": ("ASM985889v3", "SARS-CoV-2"),
}
_ASSEMBLY_RE: Final = re.compile(
    r"(?<![A-Za-z0-9])("
    + "|".join(re.escape(k) for k in sorted(_ASSEMBLIES, key=len, reverse=True))
    + r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
#: Species as files spell them (``@SQ SP:``, VCF ``species=``), lower case,
#: first two words; anything else maps to ``other``.
_SPECIES: Final[dict[str, str]] = {
    "homo sapiens": "Homo sapiens",
    "human": "Homo sapiens",
    "h. sapiens": "Homo sapiens",
    "mus musculus": "Mus musculus",
    "mouse": "Mus musculus",
    "rattus norvegicus": "Rattus norvegicus",
    "rat": "Rattus norvegicus",
    "macaca mulatta": "Macaca mulatta",
    "macaca fascicularis": "Macaca fascicularis",
    "danio rerio": "Danio rerio",
    "zebrafish": "Danio rerio",
    "drosophila melanogaster": "Drosophila melanogaster",
    "caenorhabditis elegans": "Caenorhabditis elegans",
    "saccharomyces cerevisiae": "Saccharomyces cerevisiae",
    "escherichia coli": "Escherichia coli",
    "e. coli": "Escherichia coli",
    "mycobacterium tuberculosis": "Mycobacterium tuberculosis",
    "staphylococcus aureus": "Staphylococcus aureus",
    "plasmodium falciparum": "Plasmodium falciparum",
    "arabidopsis thaliana": "Arabidopsis thaliana",
    "oryza sativa": "Oryza sativa",
    "zea mays": "Zea mays",
    "triticum aestivum": "Triticum aestivum",
    "sus scrofa": "Sus scrofa",
    "bos taurus": "Bos taurus",
    "gallus gallus": "Gallus gallus",
    "sars-cov-2": "SARS-CoV-2",
    "severe acute": "SARS-CoV-2",
}
#: NCBI Taxonomy ids of the same organisms.
_TAXA: Final[dict[int, str]] = {
    9606: "Homo sapiens",
    10090: "Mus musculus",
    10116: "Rattus norvegicus",
    9544: "Macaca mulatta",
    9541: "Macaca fascicularis",
    7955: "Danio rerio",
    7227: "Drosophila melanogaster",
    6239: "Caenorhabditis elegans",
    4932: "Saccharomyces cerevisiae",
    559292: "Saccharomyces cerevisiae",
    562: "Escherichia coli",
    511145: "Escherichia coli",
    83333: "Escherichia coli",
    1773: "Mycobacterium tuberculosis",
    1280: "Staphylococcus aureus",
    5833: "Plasmodium falciparum",
    3702: "Arabidopsis thaliana",
    4530: "Oryza sativa",
    39947: "Oryza sativa",
    4577: "Zea mays",
    4565: "Triticum aestivum",
    9823: "Sus scrofa",
    9913: "Bos taurus",
    9031: "Gallus gallus",
    2697049: "SARS-CoV-2",
}
#: What a policy sees for a species the vocabulary does not name.
OTHER_ORGANISM: Final = "other"
#: What a policy sees for genomic data whose header names no organism.
UNKNOWN_ORGANISM: Final = "unknown"
HUMAN: Final = "Homo sapiens"
#: Every ``organism`` value the readers report (the fixed vocabulary).
ORGANISMS: Final[frozenset[str]] = frozenset(
    {
        HUMAN,
        OTHER_ORGANISM,
        UNKNOWN_ORGANISM,
        *_SPECIES.values(),
        *_TAXA.values(),
        *(organism for _, organism in _ASSEMBLIES.values()),
    }
)
#: Every ``assembly`` value the readers report.
ASSEMBLIES: Final[frozenset[str]] = frozenset(name for name, _ in _ASSEMBLIES.values())
_HUMAN_NAME_RE: Final = re.compile(r"(?<![A-Za-z])homo[ _]sapiens(?![A-Za-z])", re.IGNORECASE)
_TAXON_RE: Final = re.compile(
    r"(?<![A-Za-z])(?:taxon(?:omy)?(?:[ _]?id)?|taxid|tax_id|ncbitaxon)"
    r"[\s:=_/\"']{0,3}([0-9]{1,8})",
    re.IGNORECASE,
)
_SPECIES_RE: Final = re.compile(
    r"(?:^@SQ\t(?:[^\n]*\t)?SP:([^\t\n]*)|[<,]species=\"?([^\",>\n]*))", re.IGNORECASE
)
_SAM_SQ_RE: Final = re.compile(r"^@SQ\t")
_SAM_FIELD_RE: Final = re.compile(r"\t(SN|LN|AS):([^\t\n]*)")
_VCF_CONTIG_RE: Final = re.compile(r"^##contig=<(.*)>\s*$", re.IGNORECASE)
_VCF_KEY_RE: Final = re.compile(r"(?:^|,)(ID|length|assembly)=\"?([^\",]*)", re.IGNORECASE)
#: The length of chromosome 1 tells the assembly when nothing names it (many
#: aligners write @SQ lines with only SN and LN).
_CHR1_LENGTHS: Final[dict[int, str]] = {
    248956422: "grch38",
    249250621: "grch37",
    248387328: "t2t-chm13",
    247249719: "ncbi36",
    195154279: "grcm39",
    195471971: "grcm38",
}
_CHR1_NAMES: Final = frozenset(("1", "chr1"))
#: Accessions of chromosome 1 (RefSeq, GenBank) naming the assembly.
_CHR1_ACCESSIONS: Final[dict[str, str]] = {
    "nc_000001.11": "grch38",
    "cm000663.2": "grch38",
    "nc_000001.10": "grch37",
    "cm000663.1": "grch37",
    "nc_060925.1": "t2t-chm13",
    "cp068277.2": "t2t-chm13",
}


class OrganismEvidence:
    """What a genomic header says about its organism and assembly, line by line.

    Three kinds of evidence, strongest first: the identity of chromosome 1
    (its length or accession), an assembly or species named in a field made
    for it (``@SQ AS:``/``SP:``, VCF ``assembly=``/``species=``), and an
    assembly name, ``Homo sapiens`` or an NCBI taxon id anywhere in the
    header (a reference path, an ``@PG`` command line). Human evidence of any
    kind wins: a human sample aligned with bacterial spike-ins is human
    genetic data.
    """

    __slots__ = ("_assemblies", "_human", "_organisms", "_other")

    def __init__(self) -> None:
        # The first value found at each strength (0 the strongest): constant
        # memory whatever the header repeats.
        self._assemblies: list[str | None] = [None, None, None]
        self._organisms: list[str | None] = [None, None, None]
        self._human = False
        self._other = False

    def add_reference(self, name: str, length: int) -> None:
        """A reference sequence (contig) and its length, from any format."""
        key = name.lower()
        assembly = _CHR1_ACCESSIONS.get(key)
        if assembly is None and key in _CHR1_NAMES:
            assembly = _CHR1_LENGTHS.get(length)
        if assembly is not None:
            self._assembly(assembly, 0)

    def add_line(self, line: str) -> None:
        """One header line (SAM ``@`` line or VCF ``##`` line)."""
        if len(line) > MAX_HEADER_LINE:
            line = line[:MAX_HEADER_LINE]
        if _SAM_SQ_RE.match(line):
            fields = dict(_SAM_FIELD_RE.findall(line))
            self._reference(fields.get("SN"), fields.get("LN"))
            if "AS" in fields:
                self._named_assembly(fields["AS"])
        elif (contig := _VCF_CONTIG_RE.match(line)) is not None:
            fields = {k.lower(): v for k, v in _VCF_KEY_RE.findall(contig.group(1))}
            self._reference(fields.get("id"), fields.get("length"))
            if "assembly" in fields:
                self._named_assembly(fields["assembly"])
        for match in _SPECIES_RE.finditer(line):
            species = (match.group(1) or match.group(2) or "").strip()
            if species:
                self._organism(species_name(species), 1)
        for match in _ASSEMBLY_RE.finditer(line):
            self._assembly(match.group(1).lower(), 2)
        if _HUMAN_NAME_RE.search(line):
            self._organism(HUMAN, 2)
        for match in _TAXON_RE.finditer(line):
            self._organism(_TAXA.get(int(match.group(1)), OTHER_ORGANISM), 2)

    def result(self) -> dict[str, str]:
        """``organism`` and ``assembly`` where the evidence names them."""
        found: dict[str, str] = {}
        assembly = next((a for a in self._assemblies if a is not None), None)
        if assembly is not None:
            found["assembly"] = assembly
        organism = next((o for o in self._organisms if o is not None), None)
        if self._human:
            found["organism"] = HUMAN
        elif organism is not None:
            found["organism"] = organism
        elif self._other:
            found["organism"] = OTHER_ORGANISM
        return found

    def report(self, out: Extract) -> None:
        """Report the result as attributes; no organism named is ``organism: unknown``.

        ``unknown`` is reported (rather than nothing) so that genomic data
        naming no organism still shows beside data that names one in the
        same transfer: a policy treating unknown as human then fails closed.
        """
        found = self.result()
        found.setdefault("organism", UNKNOWN_ORGANISM)
        for key, value in sorted(found.items()):
            out.attribute(key, value)

    def _reference(self, name: str | None, length: str | None) -> None:
        if name is not None:
            digits = length is not None and length.isascii() and length.isdigit()
            value = int(length) if digits and length is not None and len(length) <= 12 else -1
            self.add_reference(name, value)

    def _named_assembly(self, value: str) -> None:
        match = _ASSEMBLY_RE.search(value)
        if match is not None:
            self._assembly(match.group(1).lower(), 1)

    def _assembly(self, key: str, strength: int) -> None:
        canonical, organism = _ASSEMBLIES[key]
        if self._assemblies[strength] is None:
            self._assemblies[strength] = canonical
        self._organism(organism, strength)

    def _organism(self, organism: str, strength: int) -> None:
        if organism == HUMAN:
            self._human = True
        elif organism == OTHER_ORGANISM:
            self._other = True
        elif self._organisms[strength] is None:
            self._organisms[strength] = organism


def species_name(text: str) -> str:
    """A species as a file spells it, mapped to the fixed vocabulary (``other`` if unknown)."""
    words = re.sub(r"[\s_]+", " ", text.strip().lower()).split(" ")
    for n in (2, 1):
        key = " ".join(words[:n])
        if key in _SPECIES:
            return _SPECIES[key]
    return OTHER_ORGANISM


def organism_from_header(text: str) -> dict[str, str]:
    """``organism``/``assembly`` attributes stated by a SAM or VCF header.

    For the decoder's text SAM/VCF members: pass the header lines (``@...``
    or ``##...``; data lines are ignored). Values come from a fixed
    vocabulary (``Homo sapiens``, ``GRCh38``, ``other`` …), never from the
    file's text.
    """
    evidence = OrganismEvidence()
    for line in text.splitlines():
        if line.startswith(("@", "##")):
            evidence.add_line(line)
    return evidence.result()
