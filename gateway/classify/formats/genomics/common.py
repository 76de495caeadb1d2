"""What the genomics readers share: BGZF, header lines, reference names, bounds."""

from __future__ import annotations

import codecs
import struct
import zlib
from array import array
from collections.abc import Callable
from typing import Final

from gateway.classify.formats.base import TextOut, Unscannable
from gateway.classify.formats.genomics.organism import MAX_HEADER_LINE, OrganismEvidence

#: BGZF blocks inflate to at most 64 KiB (SAMv1 §4.1: ISIZE < 2^16 + 1).
BGZF_MAX_BLOCK: Final = 1 << 16
#: Sustained expansion ratio past which a BGZF stream is a bomb (SPEC §3.1:
#: "ratio > 100:1 sustained"). Real BAM inflates 3-5x, BCF of many samples
#: 10-30x; one block of zeros alone reaches ~1000x, hence the grace below.
BGZF_MAX_RATIO: Final = 100
#: Inflated bytes allowed before the ratio applies (a header block of a few
#: bytes on the wire may well inflate 1000x).
BGZF_RATIO_GRACE: Final = 1 << 20
#: Longest BAM/BCF record buffered (block_size / l_shared). Ultra-long
#: nanopore reads reach ~4 Mb: 4 Mb of 4-bit bases plus one quality byte per
#: base is 6 MB, plus tags; 16 MiB bounds the buffer with room to spare.
MAX_RECORD_BYTES: Final = 16 << 20
#: Longest header text (BAM l_text, BCF l_text, CRAM header block). It is
#: streamed into the member line by line, so this bounds time, not memory:
#: a draft assembly with a million @SQ lines is ~60 MB.
MAX_HEADER_BYTES: Final = 256 << 20
#: References (contigs) in a BAM reference list or BCF contig dictionary.
#: Names are kept (for RNAME/CHROM) in one byte string with an offset table,
#: so memory is their bytes plus 8 per reference.
MAX_REFERENCES: Final = 1 << 22
#: Bytes of reference names kept in total (GRCh38 with alts and decoys: 40 KB).
MAX_REFERENCE_NAME_BYTES: Final = 64 << 20
#: Characters of one rendered string value (read name, aux tag, INFO value).
MAX_RENDERED_VALUE: Final = 64 << 10

U32: Final = struct.Struct("<I")
I32: Final = struct.Struct("<i")
SAM_TYPE: Final = "text/x-sam"
VCF_TYPE: Final = "text/x-vcf"

#: Tabs and line breaks in file-chosen strings become spaces: one value must
#: stay one field of one line (a newline in a read name would make a record).
_UNSAFE: Final = str.maketrans("\t\n\r", "   ")


def clean(text: str, limit: int = MAX_RENDERED_VALUE) -> str:
    """A file-chosen string made safe for one tab-separated field of one line."""
    if len(text) > limit:
        text = text[:limit]
    if "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_UNSAFE)
    return text


def utf8(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "replace")


class HeaderLines:
    """A header's text streamed into a member, one sanitised line at a time.

    Lines that do not start with the format's header mark (``@``, ``#``) are
    made comments, so that no header line counts as a record. Each complete
    line also goes to the organism evidence and ``on_line``.
    """

    __slots__ = (
        "_decoder",
        "_evidence",
        "_mark",
        "_on_line",
        "_out",
        "_partial",
        "_partial_chars",
        "_prefix",
    )

    def __init__(
        self,
        out: TextOut,
        mark: str,
        prefix: str,
        evidence: OrganismEvidence,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self._out = out
        self._mark = mark
        self._prefix = prefix
        self._evidence = evidence
        self._on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # The line begun and not ended, in pieces (joined once: a long line
        # arriving in small pieces costs linear time).
        self._partial: list[str] = []
        self._partial_chars = 0

    def feed(self, data: bytes | bytearray | memoryview, final: bool = False) -> None:
        text = self._decoder.decode(bytes(data), final)
        if "\x00" in text:
            text = text.replace("\x00", "")
        if "\n" not in text and not final:
            self._partial.append(text)
            self._partial_chars += len(text)
            if self._partial_chars > MAX_HEADER_LINE:
                self._lines(["".join(self._partial)])  # one huge line: rendered in pieces
                self._partial, self._partial_chars = [], 0
            return
        lines = ("".join(self._partial) + text).split("\n")
        rest = lines.pop()
        self._partial, self._partial_chars = ([rest], len(rest)) if rest else ([], 0)
        if final and rest:
            lines.append(rest)
            self._partial, self._partial_chars = [], 0
        self._lines(lines)

    def _lines(self, lines: list[str]) -> None:
        rendered = []
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                continue
            if not line.startswith(self._mark):
                line = self._prefix + line
            self._evidence.add_line(line)
            if self._on_line is not None:
                self._on_line(line)
            rendered.append(line)
        if rendered:
            self._out.write("\n".join(rendered) + "\n")

    def end(self) -> None:
        self.feed(b"", final=True)


class ReferenceNames:
    """Reference names in one byte string with an offset table (bounded)."""

    __slots__ = ("_blob", "_cache", "_ends")

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("Q")  # 8 bytes per reference
        self._cache: tuple[int, str] = (-2, "*")

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, name: bytes, what: str) -> None:
        if len(self._ends) >= MAX_REFERENCES:
            raise Unscannable(f"{what}: more than {MAX_REFERENCES} references")
        if len(self._blob) + len(name) > MAX_REFERENCE_NAME_BYTES:
            raise Unscannable(f"{what}: reference names over {MAX_REFERENCE_NAME_BYTES} bytes")
        self._blob += name
        self._ends.append(len(self._blob))

    def set(self, index: int, name: bytes, what: str) -> None:
        """Name ``index`` (a VCF ``IDX=``), filling any gap with empty names."""
        if index >= MAX_REFERENCES:
            raise Unscannable(f"{what}: dictionary index over {MAX_REFERENCES}")
        if len(self._ends) < index:
            self._ends.extend(array("Q", [len(self._blob)]) * (index - len(self._ends)))
        if len(self._ends) == index:
            self.add(name, what)

    def get(self, index: int) -> str:
        if index == self._cache[0]:
            return self._cache[1]
        if index < 0:
            name = "*"
        else:
            start = self._ends[index - 1] if index else 0
            name = clean(utf8(self._blob[start : self._ends[index]])) or "*"
        self._cache = (index, name)
        return name


class Bgzf:
    """Inflates a BGZF stream (SAMv1 §4.1) fed in any chunking, block by block.

    Every block is checked (gzip header with the ``BC`` field, inflated size
    and CRC-32 against its trailer) and bounded: at most
    :data:`BGZF_MAX_BLOCK` bytes out of one block, and at most
    :data:`BGZF_MAX_RATIO` times the bytes in, past a grace, over the stream.
    """

    __slots__ = ("_buf", "_emit", "_in", "_out", "_what")

    def __init__(self, emit: Callable[[bytes], None], what: str) -> None:
        self._emit = emit
        self._what = what
        self._buf = bytearray()
        self._in = 0
        self._out = 0

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        what = self._what
        while len(buf) - pos >= 18:
            if buf[pos : pos + 4] != b"\x1f\x8b\x08\x04":
                raise Unscannable(f"{what}: not a BGZF block")
            xlen = buf[pos + 10] | buf[pos + 11] << 8
            if len(buf) - pos < 12 + xlen:
                break
            bsize = _bgzf_bsize(buf[pos + 12 : pos + 12 + xlen])
            if bsize < 0 or bsize + 1 < 12 + xlen + 8:
                raise Unscannable(f"{what}: BGZF block without a valid BC field")
            end = pos + bsize + 1
            if end > len(buf):
                break
            self._block(bytes(buf[pos + 12 + xlen : end]), what)
            pos = end
        del buf[:pos]

    def finish(self) -> None:
        if self._buf:
            raise Unscannable(f"{self._what}: truncated BGZF block")

    def _block(self, block: bytes, what: str) -> None:
        crc, isize = struct.unpack_from("<II", block, len(block) - 8)
        if isize > BGZF_MAX_BLOCK:
            raise Unscannable(f"{what}: BGZF block larger than {BGZF_MAX_BLOCK} bytes")
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(block[:-8], BGZF_MAX_BLOCK + 1)
        except zlib.error:
            raise Unscannable(f"{what}: corrupt BGZF block") from None
        if len(data) != isize or not inflater.eof or inflater.unused_data:
            raise Unscannable(f"{what}: corrupt BGZF block")
        if zlib.crc32(data) != crc:
            raise Unscannable(f"{what}: BGZF block fails its CRC")
        self._in += len(block) + 18
        self._out += isize
        if self._out > BGZF_RATIO_GRACE + BGZF_MAX_RATIO * self._in:
            raise Unscannable(f"{what}: expands more than {BGZF_MAX_RATIO}:1")
        if data:
            self._emit(data)


def _bgzf_bsize(extra: bytes | bytearray) -> int:
    """BSIZE from a gzip extra field's ``BC`` subfield; -1 without one."""
    pos = 0
    while pos + 4 <= len(extra):
        slen = extra[pos + 2] | extra[pos + 3] << 8
        if extra[pos : pos + 2] == b"BC" and slen == 2 and pos + 6 <= len(extra):
            return int(extra[pos + 4] | extra[pos + 5] << 8)
        pos += 4 + slen
    return -1


def is_bgzf(prefix: bytes) -> bool:
    """True when ``prefix`` starts with a BGZF block header."""
    if len(prefix) < 18 or not prefix.startswith(b"\x1f\x8b\x08\x04"):
        return False
    xlen = prefix[10] | prefix[11] << 8
    return _bgzf_bsize(prefix[12 : 12 + xlen]) >= 0


def bgzf_starts_with(prefix: bytes, magic: bytes) -> bool:
    """True when ``prefix`` is BGZF whose inflated content starts with ``magic``."""
    if not is_bgzf(prefix):
        return False
    xlen = prefix[10] | prefix[11] << 8
    try:
        head = zlib.decompressobj(-15).decompress(prefix[12 + xlen :], len(magic))
    except zlib.error:
        return False
    return head == magic


class BgzfOrRaw:
    """A BGZF-or-raw stream: inflates BGZF, passes raw bytes straight on."""

    __slots__ = ("_bgzf", "_mode", "_parse", "_what")

    def __init__(self, parse: Callable[[bytes], None], what: str) -> None:
        self._parse = parse
        self._what = what
        self._mode = ""
        self._bgzf = Bgzf(parse, what)

    def feed(self, data: bytes) -> None:
        if not self._mode:
            if not data:
                return
            self._mode = "bgzf" if data[0] == 0x1F else "raw"
        if self._mode == "bgzf":
            self._bgzf.feed(data)
        else:
            self._parse(data)

    def finish(self) -> None:
        if self._mode == "bgzf":
            self._bgzf.finish()
