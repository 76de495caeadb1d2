"""BAM (SAMv1 §4.2): header and alignments rendered as SAM text."""

from __future__ import annotations

import struct
from binascii import hexlify
from typing import Final

from gateway.classify.formats.base import Extract, TextOut, Unscannable
from gateway.classify.formats.genomics.common import (
    I32,
    MAX_HEADER_BYTES,
    MAX_RECORD_BYTES,
    MAX_REFERENCES,
    SAM_TYPE,
    U32,
    BgzfOrRaw,
    HeaderLines,
    ReferenceNames,
    clean,
    utf8,
)
from gateway.classify.formats.genomics.organism import OrganismEvidence

#: Bases of a read rendered: enough to show the line is sequence data; bases
#: hold no identifiers and a 1 Mb read must not be a 1 MB line.
MAX_RENDERED_BASES: Final = 4096
#: Nucleotides of 4-bit BAM sequence codes (SAMv1 §4.2.3), applied to their hex digits.
_BAM_BASES: Final = bytes.maketrans(b"0123456789abcdef", b"=ACMGRSVTWYHKDBN")
#: CIGAR operation codes (SAMv1 §4.2.2); codes 9-15 are invalid, shown as "?".
_CIGAR_OPS: Final = "MIDNSHP=X???????"
#: BAM record after block_size: refID, pos, l_read_name, mapq, bin, n_cigar_op,
#: flag, l_seq, next_refID, next_pos, tlen (SAMv1 §4.2).
_BAM_RECORD = struct.Struct("<iiBBHHHiiii")


class BamReader:
    """Streaming BAM reader: header and alignments as SAM text (a StreamReader)."""

    __slots__ = (
        "_b_values",
        "_buf",
        "_container",
        "_evidence",
        "_header",
        "_member",
        "_names",
        "_refs_left",
        "_sq_lines",
        "_state",
        "_text_left",
        "out",
    )

    def __init__(self, out: Extract) -> None:
        self.out = out
        self._container = BgzfOrRaw(self._data, "bam")
        self._buf = bytearray()
        self._state = "magic"
        self._text_left = 0
        self._refs_left = 0
        self._names = ReferenceNames()
        self._evidence = OrganismEvidence()
        self._member: TextOut | None = None
        self._header: HeaderLines | None = None
        self._sq_lines = 0
        self._b_values = 0

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        self._container.feed(data)

    def finish(self) -> None:
        """The member ended: everything must have been complete."""
        self._container.finish()
        if self._state != "records" or self._buf:
            raise Unscannable("bam: truncated")
        if self._b_values:
            self.out.numeric(self._b_values)
        self._open().close()

    def _open(self) -> TextOut:
        if self._member is None:
            self._member = self.out.member("alignments", SAM_TYPE)
        return self._member

    def _count_sq(self, line: str) -> None:
        if line.startswith("@SQ\t"):
            self._sq_lines += 1

    def _data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while True:
            if self._state == "records":
                pos = self._records(buf, pos)
                break
            if self._state == "magic":
                if len(buf) - pos < 8:
                    break
                if buf[pos : pos + 4] != b"BAM\x01":
                    raise Unscannable("bam: bad magic")
                (self._text_left,) = I32.unpack_from(buf, pos + 4)
                if not 0 <= self._text_left <= MAX_HEADER_BYTES:
                    raise Unscannable("bam: header text length out of range")
                pos += 8
                self._header = HeaderLines(
                    self._open(), "@", "@CO\t", self._evidence, self._count_sq
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
                self._state = "n_ref"
            elif self._state == "n_ref":
                if len(buf) - pos < 4:
                    break
                (self._refs_left,) = I32.unpack_from(buf, pos)
                if not 0 <= self._refs_left <= MAX_REFERENCES:
                    raise Unscannable("bam: reference count out of range")
                pos += 4
                self._state = "refs"
            elif self._state == "refs":
                pos = self._references(buf, pos)
                if self._refs_left:
                    break
                self._evidence.report(self.out)
                self._state = "records"
        del buf[:pos]

    def _references(self, buf: bytearray, pos: int) -> int:
        rendered = []
        while self._refs_left and len(buf) - pos >= 4:
            (l_name,) = I32.unpack_from(buf, pos)
            if not 1 <= l_name <= MAX_RECORD_BYTES:
                raise Unscannable("bam: reference name length out of range")
            if len(buf) - pos < 8 + l_name:
                break
            name = bytes(buf[pos + 4 : pos + 3 + l_name])
            (l_ref,) = I32.unpack_from(buf, pos + 4 + l_name)
            self._names.add(name, "bam")
            self._evidence.add_reference(utf8(name), l_ref)
            if not self._sq_lines:
                rendered.append(f"@SQ\tSN:{clean(utf8(name))}\tLN:{l_ref}\n")
            pos += 8 + l_name
            self._refs_left -= 1
        if rendered:
            self._open().write("".join(rendered))
        return pos

    def _records(self, buf: bytearray, pos: int) -> int:
        lines: list[str] = []
        end = len(buf)
        names = self._names
        n_ref = len(names)
        last_ref, rname = -1, "*"
        while end - pos >= 4:
            (size,) = I32.unpack_from(buf, pos)
            if not 32 <= size <= MAX_RECORD_BYTES:
                raise Unscannable("bam: record length out of range")
            if end - pos < 4 + size:
                break
            start = pos + 4
            pos = start + size
            (ref, at, l_name, mapq, _bin, n_cigar, flag, l_seq, nref, npos, tlen) = (
                _BAM_RECORD.unpack_from(buf, start)
            )
            name_at = start + 32
            cigar_at = name_at + l_name
            seq_at = cigar_at + 4 * n_cigar
            qual_at = seq_at + (l_seq + 1) // 2
            aux_at = qual_at + l_seq
            if (
                l_name < 1
                or l_seq < 0
                or aux_at > pos
                or not -1 <= ref < n_ref
                or not -1 <= nref < n_ref
            ):
                raise Unscannable("bam: corrupt record")
            qname = buf[name_at : cigar_at - 1].decode("utf-8", "replace")
            if not qname:
                qname = "*"
            elif qname[0] == "@" or "\t" in qname or "\n" in qname or "\r" in qname:
                # Never a header line (QNAME excludes '@'), never two fields or lines.
                qname = clean("_" + qname[1:] if qname[0] == "@" else qname)
            if n_cigar == 1:
                (op,) = U32.unpack_from(buf, cigar_at)
                cigar = f"{op >> 4}{_CIGAR_OPS[op & 15]}"
            elif n_cigar:
                ops = struct.unpack_from(f"<{n_cigar}I", buf, cigar_at)
                cigar = "".join([f"{op >> 4}{_CIGAR_OPS[op & 15]}" for op in ops])
            else:
                cigar = "*"
            if l_seq:
                shown = min(l_seq, MAX_RENDERED_BASES)
                packed = buf[seq_at : seq_at + (shown + 1) // 2]
                seq = hexlify(packed).translate(_BAM_BASES)[:shown].decode("ascii")
            else:
                seq = "*"
            if ref != last_ref:
                last_ref, rname = ref, names.get(ref)
            rnext = "=" if nref == ref and ref >= 0 else names.get(nref)
            line = (
                f"{qname}\t{flag}\t{rname}\t{at + 1}\t{mapq}\t{cigar}\t{rnext}\t"
                f"{npos + 1}\t{tlen}\t{seq}\t*"
            )
            if aux_at < pos:
                line += self._aux(buf, aux_at, pos)
            lines.append(line)
        if lines:
            self._open().write("\n".join(lines) + "\n")
        return pos

    def _aux(self, buf: bytearray, pos: int, end: int) -> str:
        """The record's text aux tags as SAM text; numeric tags and arrays are counted.

        A number of at most 32 bits holds no identifier the detectors know
        (those have 8 digits or more *and* a prefix, a hotword or 11+ digits).
        """
        parts: list[str] = []
        numbers = 0
        while pos < end:
            if end - pos < 3:
                raise Unscannable("bam: corrupt aux field")
            kind = buf[pos + 2]
            size = _AUX_SIZES.get(kind)
            if size is not None:
                pos += 3 + size
                numbers += 1
            elif kind == 0x5A or kind == 0x48 or kind == 0x41:  # Z, H (NUL-terminated), A
                stop = pos + 4 if kind == 0x41 else buf.find(0, pos + 3, end)
                if stop < 0 or stop > end:
                    raise Unscannable("bam: unterminated aux string")
                tag = clean(buf[pos : pos + 2].decode("latin-1"))
                value = clean(utf8(buf[pos + 3 : stop]))
                parts.append(f"{tag}:{chr(kind)}:{value}")
                pos = stop if kind == 0x41 else stop + 1
            elif kind == 0x42:  # B: typed array
                if end - pos < 8:
                    raise Unscannable("bam: corrupt aux array")
                width = _AUX_SIZES.get(buf[pos + 3])
                (count,) = I32.unpack_from(buf, pos + 4)
                if width is None or count < 0 or end - pos - 8 < count * width:
                    raise Unscannable("bam: corrupt aux array")
                numbers += count
                pos += 8 + count * width
            else:
                raise Unscannable("bam: unknown aux type")
        if pos != end:
            raise Unscannable("bam: corrupt aux field")
        self._b_values += numbers
        return "\t" + "\t".join(parts) if parts else ""


#: Sizes of the numeric aux types (SAMv1 §4.2.4: c C s S i I f).
_AUX_SIZES: Final[dict[int, int]] = {
    ord("c"): 1,
    ord("C"): 1,
    ord("s"): 2,
    ord("S"): 2,
    ord("i"): 4,
    ord("I"): 4,
    ord("f"): 4,
}
