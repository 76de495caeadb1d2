"""BCF (VCFv4.3 §6): header rendered as VCF text, records as VCF data lines."""

from __future__ import annotations

import re
import struct
from typing import Final

from gateway.classify.formats.base import Extract, TextOut, Unscannable
from gateway.classify.formats.genomics.common import (
    MAX_HEADER_BYTES,
    MAX_RECORD_BYTES,
    MAX_REFERENCES,
    U32,
    VCF_TYPE,
    BgzfOrRaw,
    HeaderLines,
    ReferenceNames,
    clean,
    utf8,
)
from gateway.classify.formats.genomics.organism import OrganismEvidence

#: BCF record shared part: CHROM, POS, rlen, QUAL, n_info, n_allele,
#: n_fmt_sample (VCFv4.3 §6.3.1).
_BCF_SHARED = struct.Struct("<iiifHHI")

_VCF_META_RE: Final = re.compile(r"^##(INFO|FILTER|FORMAT|contig)=<(.*)>\s*$", re.IGNORECASE)
_VCF_ID_RE: Final = re.compile(r"(?:^|,)ID=([^,>]*)")
_VCF_IDX_RE: Final = re.compile(r"(?:^|,)IDX=([0-9]{1,9})(?:,|$)")
#: Typed-value sentinels (VCFv4.3 §6.3.3): missing and end-of-vector, by type.
_INT_TYPES: Final[dict[int, tuple[str, int, int, int]]] = {
    1: ("b", 1, -128, -127),
    2: ("h", 2, -32768, -32767),
    3: ("i", 4, -(1 << 31), -(1 << 31) + 1),
}
_FLOAT_MISSING: Final = 0x7F800001
_FLOAT_END: Final = 0x7F800002


class _Typed:
    """Typed values of a BCF record's shared part (VCFv4.3 §6.3.3), bounded by its end."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytearray, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def header(self) -> tuple[int, int]:
        """(type, count) of the next value."""
        if self.pos >= self.end:
            raise Unscannable("bcf: corrupt record")
        descriptor = self.buf[self.pos]
        self.pos += 1
        kind, count = descriptor & 15, descriptor >> 4
        if count == 15:
            size_kind, size_count = self.header()
            if size_kind not in _INT_TYPES or size_count != 1:
                raise Unscannable("bcf: corrupt record")
            count = self._ints(size_kind, 1)[0]
        if count < 0 or (kind not in _INT_TYPES and kind not in (0, 5, 7)):
            raise Unscannable("bcf: corrupt record")
        return kind, count

    def _ints(self, kind: int, count: int) -> tuple[int, ...]:
        code, width, _, _ = _INT_TYPES[kind]
        if self.end - self.pos < count * width:
            raise Unscannable("bcf: corrupt record")
        values = struct.unpack_from(f"<{count}{code}", self.buf, self.pos)
        self.pos += count * width
        return values

    def ints(self) -> list[int]:
        """An integer vector without missing values (FILTER, INFO keys)."""
        kind, count = self.header()
        if kind == 0:
            return []
        if kind not in _INT_TYPES:
            raise Unscannable("bcf: corrupt record")
        _, _, missing, end = _INT_TYPES[kind]
        return [v for v in self._ints(kind, count) if v not in (missing, end)]

    def text(self) -> str:
        """The next value rendered as VCF text ("." when missing)."""
        return self.value(*self.header())

    def value(self, kind: int, count: int) -> str:
        """A value whose header was read, rendered as VCF text."""
        if kind == 0 or count == 0:
            return ""
        if kind == 7:
            if self.end - self.pos < count:
                raise Unscannable("bcf: corrupt record")
            raw = self.buf[self.pos : self.pos + count]
            self.pos += count
            return clean(utf8(raw.rstrip(b"\x00")))
        if kind == 5:
            if self.end - self.pos < 4 * count:
                raise Unscannable("bcf: corrupt record")
            bits = struct.unpack_from(f"<{count}I", self.buf, self.pos)
            floats = struct.unpack_from(f"<{count}f", self.buf, self.pos)
            self.pos += 4 * count
            shown = []
            for b, f in zip(bits, floats, strict=True):
                if b == _FLOAT_END:
                    break
                shown.append("." if b == _FLOAT_MISSING else f"{f:g}")
            return ",".join(shown) or "."
        _, _, missing, end = _INT_TYPES[kind]
        shown = []
        for v in self._ints(kind, count):
            if v == end:
                break
            shown.append("." if v == missing else str(v))
        return ",".join(shown) or "."


class BcfReader:
    """Streaming BCF reader: header and records as VCF text (a StreamReader)."""

    __slots__ = (
        "_buf",
        "_container",
        "_contigs",
        "_evidence",
        "_header",
        "_member",
        "_seen",
        "_skip",
        "_state",
        "_strings",
        "_text_left",
        "out",
    )

    def __init__(self, out: Extract) -> None:
        self.out = out
        self._container = BgzfOrRaw(self._data, "bcf")
        self._buf = bytearray()
        self._state = "magic"
        self._text_left = 0
        self._skip = 0
        self._contigs = ReferenceNames()
        self._strings = ReferenceNames()
        self._strings.add(b"PASS", "bcf")
        self._seen: dict[tuple[bool, str], int] = {(False, "PASS"): 0}
        self._evidence = OrganismEvidence()
        self._member: TextOut | None = None
        self._header: HeaderLines | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        self._container.feed(data)

    def finish(self) -> None:
        """The member ended: everything must have been complete."""
        self._container.finish()
        if self._state != "records" or self._buf or self._skip:
            raise Unscannable("bcf: truncated")
        self._open().close()

    def _open(self) -> TextOut:
        if self._member is None:
            self._member = self.out.member("variants", VCF_TYPE)
        return self._member

    def _dictionary(self, line: str) -> None:
        """Build the string and contig dictionaries from a header line (VCFv4.3 §6.2.1)."""
        match = _VCF_META_RE.match(line)
        if match is None:
            return
        ident = _VCF_ID_RE.search(match.group(2))
        if ident is None:
            return
        contig = match.group(1).lower() == "contig"
        name = ident.group(1)
        key = (contig, name)
        names = self._contigs if contig else self._strings
        idx = _VCF_IDX_RE.search(match.group(2))
        if key in self._seen:
            return
        index = int(idx.group(1)) if idx is not None else len(names)
        names.set(index, name.encode(), "bcf")
        self._seen[key] = index
        if len(self._seen) > MAX_REFERENCES:
            raise Unscannable(f"bcf: more than {MAX_REFERENCES} header dictionary entries")

    def _data(self, data: bytes) -> None:
        buf = self._buf
        if self._skip:
            take = min(self._skip, len(data))
            self._skip -= take
            data = data[take:]
        buf += data
        pos = 0
        while True:
            if self._state == "records":
                pos = self._records(buf, pos)
                break
            if self._state == "magic":
                if len(buf) - pos < 9:
                    break
                if buf[pos : pos + 4] != b"BCF\x02":
                    raise Unscannable("bcf: bad magic")
                (self._text_left,) = U32.unpack_from(buf, pos + 5)
                if self._text_left > MAX_HEADER_BYTES:
                    raise Unscannable("bcf: header text length out of range")
                pos += 9
                self._header = HeaderLines(
                    self._open(), "#", "##", self._evidence, self._dictionary
                )
                self._state = "text"
            elif self._state == "text":
                take = min(self._text_left, len(buf) - pos)
                assert self._header is not None
                self._header.feed(memoryview(buf)[pos : pos + take])
                pos += take
                self._text_left -= take
                if self._text_left:
                    break
                self._header.end()
                self._evidence.report(self.out)
                self._state = "records"
        del buf[:pos]

    def _records(self, buf: bytearray, pos: int) -> int:
        lines: list[str] = []
        end = len(buf)
        while end - pos >= 8:
            shared, indiv = struct.unpack_from("<II", buf, pos)
            if not 24 <= shared <= MAX_RECORD_BYTES:
                raise Unscannable("bcf: record length out of range")
            if end - pos < 8 + shared:
                break
            lines.append(self._record(buf, pos + 8, pos + 8 + shared))
            pos += 8 + shared
            skipped = min(indiv, end - pos)
            pos += skipped
            if skipped < indiv:
                self._skip = indiv - skipped  # genotypes: skipped as they arrive
                break
        if lines:
            self._open().write("".join(lines))
        return pos

    def _record(self, buf: bytearray, pos: int, end: int) -> str:
        chrom, at, _rlen, qual, n_info, n_allele, _fmt = _BCF_SHARED.unpack_from(buf, pos)
        if not 0 <= chrom < len(self._contigs):
            raise Unscannable("bcf: record on an undeclared contig")
        values = _Typed(buf, pos + 24, end)
        ident = values.text() or "."
        alleles = [values.text() for _ in range(n_allele)]
        filters = ";".join(self._string(i) for i in values.ints()) or "."
        info = []
        for _ in range(n_info):
            keys = values.ints()
            if len(keys) != 1:
                raise Unscannable("bcf: corrupt INFO key")
            key = self._string(keys[0])
            kind, count = values.header()
            shown = values.value(kind, count)
            info.append(f"{key}={shown}" if shown else key)
        qual_bits = U32.unpack_from(buf, pos + 12)[0]
        shown_qual = "." if qual_bits == _FLOAT_MISSING else f"{qual:g}"
        name = self._contigs.get(chrom)
        if name[0] == "#":
            name = "_" + name[1:]  # never a header line
        ref = alleles[0] if alleles else "."
        alt = ",".join(alleles[1:]) or "."
        return (
            f"{name}\t{at + 1}\t{ident}\t{ref or '.'}\t{alt}\t{shown_qual}\t{filters}\t"
            f"{';'.join(info) or '.'}\n"
        )

    def _string(self, index: int) -> str:
        if not 0 <= index < len(self._strings):
            raise Unscannable("bcf: reference to an undeclared header ID")
        return self._strings.get(index)
