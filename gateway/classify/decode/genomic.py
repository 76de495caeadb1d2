"""Organism and assembly of text genomic members, from their header lines (issue 12).

The BAM, BCF and CRAM readers report ``organism`` and ``assembly`` from their
headers (:mod:`gateway.classify.formats.genomics.organism`); text SAM, VCF and
FASTA members get the same attributes here, from the same rules, while they
stream to the matcher. Only header lines are read, within bounds, and nothing
is buffered but the current header line:

* **SAM** (SAMv1 §1.3): the ``@`` lines at the top; the first line that is
  not one ends the header.
* **VCF** (VCFv4.3 §1.4): the ``##`` meta lines at the top (the ``#CHROM``
  line holds sample names, free text, and is skipped); the first line not
  starting with ``#`` ends the header.
* **FASTA**: each record has its own header (``>`` line), so the file names a
  non-human organism only if *every* header names one (its own fields by the
  same rules, or a binomial species name opening the description, as in NCBI
  headers: ``>NC_000913.3 Escherichia coli str. K-12 …``). One header naming
  none, or more headers than :data:`MAX_FASTA_HEADERS`, makes it ``unknown``.
* **FASTQ** headers are read names from the sequencer and never name the
  species: a FASTQ member is always ``organism: unknown``.

A member that names no organism reports ``organism: unknown`` (not nothing),
so that in an archive holding a bacterial VCF and an unlabelled human one the
transfer reads ``Escherichia coli; unknown``. A header cut off by a bound is
``unknown`` too unless what was read names a human: human evidence could
follow, and a policy that treats unknown as human then fails closed.
Every decision depends on the bytes only, never on how they were chunked.
"""

from __future__ import annotations

from typing import Final

from gateway.classify.decode.core import Context
from gateway.classify.decode.readers import MAX_ATTRIBUTE_VALUES, MAX_ATTRIBUTES
from gateway.classify.formats.genomics.organism import (
    HUMAN,
    OTHER_ORGANISM,
    UNKNOWN_ORGANISM,
    OrganismEvidence,
    species_name,
)

#: Header bytes and lines of a text SAM/VCF member read for organism
#: evidence. The header of a GRCh38 alignment or call set (3,366 contigs with
#: alts, decoys and HLA, plus read groups, programs and INFO/FORMAT lines) is
#: some 4,000 lines, well under 1 MiB. A line costs 15-40 µs of regular
#: expressions, so the bounds keep the work on a hostile header to ~0.3 s per
#: member. A longer header (a draft assembly with 100,000 scaffolds) is
#: ``unknown`` unless what was read names a human.
MAX_TEXT_HEADER_BYTES: Final = 4 << 20
MAX_TEXT_HEADER_LINES: Final = 8192
#: FASTA headers read. A bacterial genome with its plasmids has a handful, a
#: draft assembly hundreds; a FASTA of reads or amplicons has millions and is
#: ``unknown`` past this many (its headers rarely name a species anyway). The
#: same number of ``>`` inside lines (none in a well-formed FASTA) makes it
#: ``unknown`` too: each costs a step of Python.
MAX_FASTA_HEADERS: Final = 1024
#: Bytes of one FASTA header kept (the rest of the line is skipped): NCBI
#: headers are under 200 bytes, and the organism comes first.
MAX_FASTA_HEADER_BYTES: Final = 1024

_NEWLINE: Final = 0x0A


def _text(line: bytes | bytearray) -> str:
    return bytes(line).decode("utf-8", "replace").rstrip("\r")


class HeaderEvidence:
    """Organism evidence from the header block at the top of a SAM or VCF member.

    Fed the member's normalised UTF-8 in any chunking; :attr:`done` once the
    header ended or its bound was reached (the caller then stops feeding).
    """

    __slots__ = ("_evidence", "_line", "_lines", "_mark", "_meta", "_used", "done", "truncated")

    def __init__(self, mark: bytes, meta: bytes) -> None:
        """``mark``: the header lines' first byte; ``meta``: the prefix of lines read."""
        self._mark = mark[0]
        self._meta = meta
        self._evidence = OrganismEvidence()
        # The header line begun and not ended; empty at the start of a line.
        self._line = bytearray()
        self._used = 0
        self._lines = 0
        self.done = False
        self.truncated = False

    def feed(self, data: bytes) -> None:
        """The member's next bytes."""
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if not self._line:
                first = data[pos]
                if first == _NEWLINE:  # an empty line: not a header line, not an end
                    pos += 1
                    self._used += 1
                    continue
                if first != self._mark:
                    self.done = True  # the first record: the header is over
                    return
                self._lines += 1
                if self._lines > MAX_TEXT_HEADER_LINES:
                    self.done = self.truncated = True
                    return
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if self._used + len(self._line) + stop - pos > MAX_TEXT_HEADER_BYTES:
                self.done = self.truncated = True
                return
            self._line += data[pos:stop]
            if newline < 0:
                return
            self._used += len(self._line) + 1
            self._add(self._line)
            self._line.clear()
            pos = newline + 1

    def close(self) -> None:
        """The member ended (a last header line without a line break counts)."""
        if self._line and not self.done:
            self._add(self._line)
            self._line.clear()
        self.done = True

    def result(self) -> list[tuple[str, str]]:
        """``organism`` and ``assembly`` as named; ``unknown`` too when none is named
        or the header was cut off before naming a human."""
        found = sorted(self._evidence.result().items())
        organism = dict(found).get("organism")
        if organism is None or (self.truncated and organism != HUMAN):
            found.append(("organism", UNKNOWN_ORGANISM))
        return found

    def _add(self, line: bytes | bytearray) -> None:
        if line.startswith(self._meta):
            self._evidence.add_line(_text(line))


class FastaEvidence:
    """Organism evidence from every record header of a FASTA member (see the module doc)."""

    __slots__ = (
        "_evidence",
        "_header",
        "_headers",
        "_inner",
        "_line_start",
        "_organisms",
        "done",
    )

    def __init__(self) -> None:
        self._evidence = OrganismEvidence()  # all headers: the assembly, human wins
        self._organisms: set[str] = set()
        self._headers = 0
        self._inner = 0  # '>' seen inside lines
        # The header line being read (without its ">"), or None between headers.
        self._header: bytearray | None = None
        self._line_start = True
        self.done = False  # True once the member is unknown whatever follows

    def feed(self, data: bytes) -> None:
        """The member's next bytes."""
        pos, end = 0, len(data)
        while pos < end and not self.done:
            header = self._header
            if header is not None:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline
                room = MAX_FASTA_HEADER_BYTES - len(header)
                if room > 0:
                    header += data[pos : min(stop, pos + room)]
                if newline < 0:
                    return
                self._record(header)
                self._header = None
                pos = newline + 1
                self._line_start = True
            else:
                # '>' only ever opens a header line (bases and qualities hold
                # none), so a one-byte search skips the sequence at memchr speed.
                found = data.find(b">", pos)
                while found >= 0 and not (
                    data[found - 1] == _NEWLINE if found else self._line_start
                ):
                    self._inner += 1
                    if self._inner > MAX_FASTA_HEADERS:
                        self.done = True
                        return
                    found = data.find(b">", found + 1)
                if found < 0:
                    self._line_start = data[end - 1] == _NEWLINE
                    return
                self._header = bytearray()
                pos = found + 1

    def close(self) -> None:
        """The member ended (a last header without a line break counts)."""
        if self._header is not None and not self.done:
            self._record(self._header)
            self._header = None

    def result(self) -> list[tuple[str, str]]:
        """``organism`` (each one named, ``Homo sapiens`` alone if any, else
        ``unknown``) and ``assembly`` if named."""
        assembly = self._evidence.result().get("assembly")
        found = [] if assembly is None else [("assembly", assembly)]
        if self.done or not self._headers:
            organisms = {UNKNOWN_ORGANISM}
        elif HUMAN in self._organisms:
            organisms = {HUMAN}
        else:
            organisms = self._organisms
        return found + [("organism", organism) for organism in sorted(organisms)]

    def _record(self, raw: bytearray) -> None:
        self._headers += 1
        if self._headers > MAX_FASTA_HEADERS:
            self.done = True
            return
        line = ">" + _text(raw)
        self._evidence.add_line(line)
        own = OrganismEvidence()
        own.add_line(line)
        organism = own.result().get("organism")
        if organism is None:
            organism = _leading_species(line)
        if organism is None:
            self.done = True  # this record names no organism: the member is unknown
            return
        self._organisms.add(organism)


def _leading_species(header: str) -> str | None:
    """A binomial species name opening a FASTA description (``>ID Genus species …``).

    Only a two-word name counts (``Escherichia coli``, ``Severe acute …``): a
    single common word (``mouse``, ``human``) opening free text is not a
    statement of the organism (``mouse_xenograft_of_human_tumour``).
    """
    parts = header[1:].split(None, 1)
    if len(parts) < 2:
        return None
    description = parts[1]
    words = description.replace("_", " ").split()
    if len(words) < 2 or species_name(words[0]) != OTHER_ORGANISM:
        return None
    organism = species_name(" ".join(words[:2]))
    return None if organism == OTHER_ORGANISM else organism


def report(ctx: Context, found: list[tuple[str, str]]) -> None:
    """Add ``found`` to the scan's attributes, bounded as the readers' are."""
    attributes = ctx.attributes
    for key, value in found:
        values = attributes.get(key)
        if values is None:
            if len(attributes) >= MAX_ATTRIBUTES:
                continue
            values = attributes[key] = []
        if value not in values and len(values) < MAX_ATTRIBUTE_VALUES:
            values.append(value)


class NoEvidence:
    """A FASTQ member: read names never name the species, so it is ``unknown``."""

    __slots__ = ()

    done: Final = True

    def feed(self, data: bytes) -> None:
        """Nothing to read."""

    def close(self) -> None:
        """Nothing to finish."""

    def result(self) -> list[tuple[str, str]]:
        """``organism: unknown``."""
        return [("organism", UNKNOWN_ORGANISM)]


#: What collects a text genomic member's organism evidence.
Evidence = HeaderEvidence | FastaEvidence | NoEvidence
