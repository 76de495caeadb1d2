"""Archive layers: zip (read through its local headers) and tar, members streamed.

Each member is a stream of its own, sniffed and decoded one layer deeper;
its name is scanned first, as a text member of type ``NAME_TYPE``.
"""

from __future__ import annotations

import bisect
import bz2
import struct
import zlib
from array import array
from typing import Final

from gateway.classify.decode.compress import ZLIB_INFLATE_BYTES, bz2_memory
from gateway.classify.decode.core import NAME_MAX_BYTES, SNIFF_BYTES, Context, gather
from gateway.classify.decode.layers import Expanding, Layer

ZIP: Final = "zip"
TAR: Final = "tar"
#: Largest pax extended header we parse (tar 'x' members). POSIX sets no limit;
#: real ones are a few hundred bytes (long paths, sizes, xattrs); 1 MiB is a
#: generous bound on memory.
PAX_MAX_BYTES: Final = 1 << 20
_TAR_BLOCK: Final = 512
#: Fixed buffers of a tar layer: a header block, the largest pax header and
#: long name it collects, and its member's sniff buffer.
TAR_BUFFER_BYTES: Final = SNIFF_BYTES + PAX_MAX_BYTES + NAME_MAX_BYTES + _TAR_BLOCK
_ZERO_BLOCK: Final = bytes(_TAR_BLOCK)
#: Fixed part of a zip local file header after its 4-byte signature
#: (APPNOTE.TXT 4.3.7).
_ZIP_LOCAL_FIXED: Final = 26
_ZIP_LOCAL: Final = struct.Struct("<HHHHHIIIHH")
_ZIP_LOCAL_SIG: Final = b"PK\x03\x04"
_ZIP_EMPTY_SIG: Final = b"PK\x05\x06"
_ZIP_SPAN_SIG: Final = b"PK\x07\x08"
_ZIP_CENTRAL_SIG: Final = b"PK\x01\x02"
_ZIP_EOCD_SIG: Final = b"PK\x05\x06"
_ZIP64_EOCD_SIG: Final = b"PK\x06\x06"
_ZIP64_LOCATOR_SIG: Final = b"PK\x06\x07"
_ZIP_SIGNATURE_SIG: Final = b"PK\x05\x05"
_ZIP_ARCHIVE_EXTRA_SIG: Final = b"PK\x06\x08"
_ZIP_CENTRAL: Final = struct.Struct("<HHHHHHIIIHHHHHII")
#: Members of one zip checked against its central directory: 20 bytes each
#: (offset, compressed size, name CRC), 40 MiB at the bound. A dataset zipped
#: file by file holds tens of thousands; past this the zip is unscannable.
MAX_ZIP_MEMBERS: Final = 1 << 21
#: Records after the last member (APPNOTE 4.3.6), by signature: the size of
#: their fixed part after the signature. Each is walked, not scanned, so that
#: bytes appended after the end of the archive cannot hide there.
_ZIP_TAIL_FIXED: Final[dict[bytes, int]] = {
    _ZIP_CENTRAL_SIG: 42,
    _ZIP_EOCD_SIG: 18,
    _ZIP64_EOCD_SIG: 8,
    _ZIP64_LOCATOR_SIG: 16,
    _ZIP_SIGNATURE_SIG: 2,
    _ZIP_ARCHIVE_EXTRA_SIG: 4,
}


def _tar_checksum_ok(block: bytes) -> bool:
    field = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        expected = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if expected == unsigned:
        return True
    signed: int = sum(struct.unpack("148b", block[:148])) + sum(struct.unpack("356b", block[156:]))
    return expected == signed + 8 * 0x20


def is_tar(prefix: bytes) -> bool:
    """Whether ``prefix`` starts with a valid ustar header (magic and checksum)."""
    return (
        len(prefix) >= _TAR_BLOCK
        and prefix[257:262] == b"ustar"
        and _tar_checksum_ok(prefix[:_TAR_BLOCK])
    )


def _zip64(extra: bytes, *values: int) -> tuple[bool, tuple[int, ...]] | None:
    """``values`` (size, compressed size[, offset], as a header has them) with each
    0xFFFFFFFF replaced, in order, from the Zip64 extended information field of
    ``extra`` (APPNOTE 4.5.3), and whether there is one; None if it is too short."""
    pos, out, found = 0, values, False
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001:
            found = True
            wide = [v == 0xFFFFFFFF for v in values]
            field = extra[pos + 4 : pos + 4 + length]
            if len(field) < 8 * sum(wide):
                return None
            parsed = iter(struct.unpack_from(f"<{sum(wide)}Q", field))
            out = tuple(next(parsed) if w else v for v, w in zip(values, wide, strict=True))
        pos += 4 + length
    return found, out


class _Zip(Expanding):
    """Zip read through its local file headers (APPNOTE.TXT §4.3)."""

    name = ZIP
    media_type = "application/zip"
    __slots__ = (
        "_at",
        "_central",
        "_centrals",
        "_descriptor",
        "_hdr",
        "_inflater",
        "_local",
        "_member_at",
        "_members",
        "_method",
        "_name_crc",
        "_next",
        "_record",
        "_remaining",
        "_state",
        "_took",
        "_walked",
        "_want",
        "_zip64",
    )

    (
        _SIG,
        _LOCAL,
        _NAMES,
        _DATA,
        _SKIP,
        _DESC,
        _DESC_BODY,
        _TAIL,
        _TAIL_FIXED,
        _CENTRAL_VAR,
        _COMMENT,
        _DONE,
    ) = range(12)
    _STORED, _DEFLATED, _BZIP2 = 0, 8, 12

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._state = self._SIG
        self._want = 4
        self._hdr = bytearray()
        self._members = 0
        self._local: tuple[int, ...] = ()
        self._method = 0
        self._descriptor = False
        self._zip64 = False
        self._remaining: int | None = None
        self._inflater: zlib._Decompress | bz2.BZ2Decompressor | None = None
        self._next = self._SIG
        self._record = b""
        self._at = 0  # where the header just gathered ends
        self._member_at = 0
        # Every member the walk found, in order: where its local header is, its
        # compressed size, its name's CRC (the central directory must agree).
        self._walked = (array("Q"), array("Q"), array("L"))
        self._central: tuple[int, ...] = ()
        self._centrals = 0
        self._name_crc = 0
        self._took = 0  # compressed bytes of the member read so far (its ratio's base)

    def _block(self, data: bytes | memoryview) -> None:
        pos, end = 0, len(data)
        base = self._in - end  # Expanding counts each block in before handing it on
        while pos < end and not self._dead:
            state = self._state
            if state == self._DONE:
                if bytes(data[pos:]).count(0) != end - pos:
                    self._report("data after end of archive")
                    self._dead = True
                return
            if state == self._DATA:
                pos = self._member_data(data, pos)
            elif state == self._SKIP:
                assert self._remaining is not None
                step = min(self._remaining, end - pos)
                self._remaining -= step
                pos += step
                if not self._remaining:
                    self._state, self._want = self._next, 4
            else:
                pos, header = gather(self._hdr, self._want, data, pos, end)
                if header is not None:
                    self._at = base + pos
                    self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        state = self._state
        if state == self._SIG:
            if header == _ZIP_LOCAL_SIG:
                self._member_at = self._at - 4
                self._state, self._want = self._LOCAL, _ZIP_LOCAL_FIXED
            elif header in _ZIP_TAIL_FIXED:
                self._tail_record(header)
            elif header == _ZIP_SPAN_SIG and self._members == 0:
                pass  # split-archive marker before the first header
            else:
                self._fail("bad local header")
        elif state == self._LOCAL:
            self._local = _ZIP_LOCAL.unpack(header)
            name_len, extra_len = self._local[8], self._local[9]
            self._state, self._want = self._NAMES, name_len + extra_len
            if not self._want:
                self._on_header(b"")
        elif state == self._NAMES:
            self._start_member(header)
        elif state == self._TAIL:
            self._tail_record(header)
        elif state == self._TAIL_FIXED:
            self._tail_fixed(header)
        elif state == self._CENTRAL_VAR:
            self._check_central(header)
        elif state == self._COMMENT:
            self._ctx.member_name(header)  # the archive comment: unzip -l shows it
            self._state = self._DONE
        elif state == self._DESC:
            if header == _ZIP_SPAN_SIG:
                self._state, self._want = self._DESC_BODY, 20 if self._zip64 else 12
            else:  # signature omitted: these 4 bytes were the CRC-32
                self._state, self._want = self._DESC_BODY, 16 if self._zip64 else 8
                self._hdr += header  # keep alignment of the size fields below
                self._want += 4
        else:  # _DESC_BODY: crc, compressed size, uncompressed size
            size_format = "<Q" if self._zip64 else "<I"
            (compressed,) = struct.unpack_from(size_format, header, 4)
            if compressed != self._took:
                self._fail("bad data descriptor")
                return
            self._state, self._want = self._SIG, 4

    def _tail_record(self, signature: bytes) -> None:
        size = _ZIP_TAIL_FIXED.get(signature)
        if size is None:
            self._fail("bad central directory")
            return
        self._record = signature
        self._state, self._want = self._TAIL_FIXED, size

    def _tail_fixed(self, fixed: bytes) -> None:
        record, after = self._record, self._TAIL
        if record == _ZIP_CENTRAL_SIG:  # name, extra field and comment follow
            self._central = _ZIP_CENTRAL.unpack(fixed)
            self._state, self._want = self._CENTRAL_VAR, sum(self._central[9:12])
            if not self._want:
                self._check_central(b"")
            return
        if record == _ZIP_EOCD_SIG:  # the archive comment follows
            if self._centrals != len(self._walked[0]):
                self._fail("the central directory does not list the members the archive holds")
                return
            (length,) = struct.unpack_from("<H", fixed, 16)
            self._state, self._want = (self._COMMENT, length) if length else (self._DONE, 4)
            return
        if record == _ZIP64_EOCD_SIG:
            (skip,) = struct.unpack("<Q", fixed)
        elif record == _ZIP_SIGNATURE_SIG:
            (skip,) = struct.unpack("<H", fixed)
        elif record == _ZIP_ARCHIVE_EXTRA_SIG:
            (skip,) = struct.unpack("<I", fixed)
        else:  # zip64 locator: fixed size only
            skip = 0
        self._skip_then(skip, after)

    def _check_central(self, variable: bytes) -> None:
        """A central directory entry must name a member the walk found, where it found
        it, with the size it found: extractors go by the central directory, so a
        local header that lies about its size (hiding the next member in its
        data) or an entry pointing into a comment would hide a member from a
        walk of the local headers. Its comment (``unzip -l`` shows it) is scanned."""
        fields = self._central
        compressed, size, name_len, extra_len = fields[7], fields[8], fields[9], fields[10]
        offset = fields[15]
        name = variable[:name_len]
        extra = variable[name_len : name_len + extra_len]
        comment = variable[name_len + extra_len :]
        wide = _zip64(extra, size, compressed, offset)
        if wide is not None:  # else its raw values mismatch below
            size, compressed, offset = wide[1]
        offsets, sizes, names = self._walked
        at = bisect.bisect_left(offsets, offset)
        if (
            at == len(offsets)
            or offsets[at] != offset
            or sizes[at] != compressed
            or names[at] != zlib.crc32(name)
        ):
            self._fail("the central directory disagrees with the local headers")
            return
        self._centrals += 1
        if comment:
            self._ctx.member_name(comment)
        self._state, self._want = self._TAIL, 4

    def _skip_then(self, size: int, after: int) -> None:
        self._next = after
        if size:
            self._state, self._remaining = self._SKIP, size
        else:
            self._state, self._want = after, 4

    def _start_member(self, names: bytes) -> None:
        _version, flags, method, _time, _date, _crc, compressed, size, name_len, _ = self._local
        self._ctx.member_name(names[:name_len])  # an encrypted member's name is plain too
        self._name_crc = zlib.crc32(names[:name_len])
        if len(self._walked[0]) >= MAX_ZIP_MEMBERS:
            self._fail(f"more than {MAX_ZIP_MEMBERS} members")
            return
        wide = _zip64(names[name_len:], size, compressed)
        if wide is None:
            self._fail("bad zip64 extra field")
            return
        self._zip64, (size, compressed) = wide
        encrypted, self._descriptor = bool(flags & 0x01), bool(flags & 0x08)
        self._members += 1
        self._method = method
        self._out = self._took = 0
        if encrypted or method not in (self._STORED, self._DEFLATED, self._BZIP2):
            reason = "encrypted member" if encrypted else f"unsupported method {method}"
            if self._descriptor:
                self._fail(reason)  # no length to skip by: the rest is unreadable
                return
            self._report(reason)
            self._walk(compressed)
            self._skip_then(compressed, self._SIG)
            return
        if method == self._STORED and self._descriptor:
            self._fail("stored member with data descriptor")
            return
        # A bzip2 member's block size is in its data, not in the local header:
        # reserve for the largest (-9). Members are read one at a time, so the
        # reservation of the largest member so far covers every later one.
        codec = {self._DEFLATED: ZLIB_INFLATE_BYTES, self._BZIP2: bz2_memory(9)}.get(method, 0)
        if not self._reserve(self.buffers + codec, "zip member decompressor"):
            return
        self._open_child()
        self._state = self._DATA
        self._remaining = None if self._descriptor else compressed
        if method == self._DEFLATED:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        elif method == self._BZIP2:
            self._inflater = bz2.BZ2Decompressor()
        else:
            self._inflater = None
            if not compressed:
                self._end_member()

    def _member_data(self, data: bytes | memoryview, pos: int) -> int:
        end = len(data)
        if self._remaining is not None:
            end = min(end, pos + self._remaining)
        piece = data[pos:end]
        self._took += len(piece)  # counted before inflating: the ratio's base
        if self._inflater is None:  # STORED
            assert self._child is not None
            assert self._remaining is not None
            self._child.feed(bytes(piece))
            self._remaining -= len(piece)
            if not self._remaining:
                self._end_member()
            return end
        used = self._decompress_member(piece)
        if used is None:
            return len(data)
        if self._remaining is not None:
            self._remaining -= used
        return pos + used

    def _decompress_member(self, piece: bytes | memoryview) -> int | None:
        """Feed compressed member bytes; how many were used, None on failure."""
        d = self._inflater
        if isinstance(d, bz2.BZ2Decompressor):
            if not self._unpack(d, piece, "corrupt member"):
                return None
        else:
            assert d is not None
            if not self._inflate(d, piece):
                return None
        if not d.eof:
            if self._remaining is not None and len(piece) >= self._remaining:
                self._fail("corrupt member")
                return None
            return len(piece)
        used = len(piece) - len(d.unused_data)
        self._took -= len(d.unused_data)
        self._end_member()
        if self._descriptor:
            self._state, self._want = self._DESC, 4
        elif self._remaining is not None and used != self._remaining:
            self._fail("bad compressed size")
            return None
        return used

    def _walk(self, compressed: int) -> None:
        """The member just read (or skipped) took ``compressed`` bytes after its header."""
        offsets, sizes, names = self._walked
        offsets.append(self._member_at)
        sizes.append(compressed)
        names.append(self._name_crc)

    def _ratio_in(self) -> int:
        return self._took  # the member's own compressed bytes, not the archive's blocks

    def _end_member(self) -> None:
        self._walk(self._took)
        self._close_child()
        self._inflater = None
        self._state, self._want = self._SIG, 4

    def _drop_codec(self) -> None:
        self._inflater = None

    def _end(self) -> None:
        if self._state != self._DONE:
            self._fail("truncated archive")


class _Tar(Layer):
    """tar (v7, ustar, pax, GNU): 512-byte headers, members streamed."""

    name = TAR
    media_type = "application/x-tar"
    buffers = TAR_BUFFER_BYTES
    __slots__ = (
        "_global",
        "_hdr",
        "_long_name",
        "_pad",
        "_pax",
        "_pax_link",
        "_pax_path",
        "_pax_size",
        "_remaining",
        "_state",
        "_want",
    )

    _HEADER, _DATA, _SKIP, _PAX, _PAD, _END, _LONG_NAME = range(7)
    #: GNU long name: the next member's name is this member's data.
    _GNU_LONG_NAME: Final = ord("L")
    #: Members that carry data to scan: regular, contiguous, GNU multi-volume
    #: continuation; unknown type flags too (POSIX: treat as regular files).
    _NO_DATA: Final = frozenset(b"123456")
    _META: Final = frozenset(b"gLKV")

    def __init__(self, ctx: Context, depth: int, layers: tuple[str, ...]) -> None:
        super().__init__(ctx, depth, layers)
        self._state = self._HEADER
        self._want = _TAR_BLOCK
        self._hdr = bytearray()
        self._remaining = 0
        self._pad = 0
        self._pax = bytearray()
        self._pax_size: int | None = None
        # The next member's name from a pax "path" record or a GNU long name.
        self._pax_path: bytes | None = None
        self._pax_link: bytes | None = None
        self._long_name = bytearray()
        self._global = False  # the pax header being read is a global one

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._dead:
            state = self._state
            if state == self._END:
                if data.count(0, pos) != end - pos:
                    self._report("data after end of archive")
                    self._dead = True
                return
            if state == self._HEADER:
                pos, header = gather(self._hdr, _TAR_BLOCK, data, pos, end)
                if header is not None:
                    self._on_header(header)
                continue
            step = min(self._remaining, end - pos)
            if state == self._DATA:
                assert self._child is not None
                self._child.feed(data[pos : pos + step])
            elif state == self._PAX:
                self._pax += data[pos : pos + step]
            elif state == self._LONG_NAME:
                room = NAME_MAX_BYTES - len(self._long_name)
                self._long_name += data[pos : pos + min(step, max(room, 0))]
            self._remaining -= step
            pos += step
            if not self._remaining:
                self._after_body()

    def _after_body(self) -> None:
        if self._state == self._DATA:
            self._close_child()
        elif self._state == self._PAX:
            self._parse_pax(bytes(self._pax))
            self._pax.clear()
        elif self._state == self._LONG_NAME:
            self._pax_path = bytes(self._long_name).split(b"\0", 1)[0]
            self._long_name.clear()
        if self._state != self._PAD and self._pad:
            self._state, self._remaining = self._PAD, self._pad
        elif not self._dead:
            self._state = self._HEADER

    def _on_header(self, header: bytes) -> None:
        if header == _ZERO_BLOCK:
            self._state = self._END
            return
        if not _tar_checksum_ok(header):
            self._fail("bad header checksum")
            return
        size = _tar_number(header[124:136])
        if size is None:
            self._fail("bad header")
            return
        flag = header[156]
        if flag not in (ord("x"), *self._META) and self._pax_size is not None:
            size, self._pax_size = self._pax_size, None
        self._pad = -size % _TAR_BLOCK
        if flag == ord("S"):
            self._fail("GNU sparse member not supported")
            return
        if flag in self._NO_DATA:
            # Links, directories, devices: no data, but names an extraction
            # creates (and a link's target) are scanned as members' are.
            self._pad = 0
            self._ctx.member_name(self._take_name(header))
            self._ctx.member_name(self._take_link(header))
            return
        self._remaining = size
        if flag in (ord("x"), ord("g")):  # pax extended header, per member or global
            self._global = flag == ord("g")
            if size > PAX_MAX_BYTES:
                self._fail("oversized pax header")
                return
            self._state = self._PAX
        elif flag == self._GNU_LONG_NAME:
            self._state = self._LONG_NAME
        elif flag in self._META:
            self._state = self._SKIP
        else:
            self._ctx.member_name(self._take_name(header))
            link = self._take_link(header)  # a file has none; scanned if it claims one
            if link:
                self._ctx.member_name(link)
            self._open_child()
            self._state = self._DATA
        if not size:
            self._after_body()

    def _take_name(self, header: bytes) -> bytes:
        """The member's path: a preceding pax ``path`` or GNU long name, else the header's."""
        path, self._pax_path = self._pax_path, None
        if path is not None:
            return path
        name = header[0:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        return prefix + b"/" + name if prefix else name

    def _take_link(self, header: bytes) -> bytes:
        """The member's link target: a preceding pax ``linkpath``, else the header's."""
        link, self._pax_link = self._pax_link, None
        return link if link is not None else header[157:257].split(b"\0", 1)[0]

    def _parse_pax(self, records: bytes) -> None:
        pos = 0
        while pos < len(records):
            space = records.find(b" ", pos)
            try:
                length = int(records[pos:space])
            except ValueError:
                self._fail("bad pax header")
                return
            record = records[space + 1 : pos + length]
            key, _, value = record.rstrip(b"\n").partition(b"=")
            if key == b"path" and not self._global:
                self._pax_path = value
            elif key == b"linkpath" and not self._global:
                self._pax_link = value  # scanned with its member, instead of the header's
            elif key in (b"comment", b"linkpath", b"uname", b"gname") or key.startswith(
                b"SCHILY.xattr."
            ):
                self._ctx.member_name(value)  # text a listing or an extraction shows
            if key == b"size" and not self._global:
                try:
                    self._pax_size = int(value)
                except ValueError:
                    self._fail("bad pax header")
                    return
            if length <= 0:
                self._fail("bad pax header")
                return
            pos += length

    def close(self) -> None:
        if not self._dead and (self._hdr or self._state not in (self._HEADER, self._END)):
            self._fail("truncated archive")
        self._close_child()
        self._done()
        self._free()


def _tar_number(field: bytes) -> int | None:
    """A tar numeric field: octal text, or GNU base-256 when the top bit is set."""
    if field[0] & 0x80:
        if field[0] & 0x40:  # negative
            return None
        return int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def archive(prefix: bytes) -> str | None:
    """Name of the archive ``prefix`` starts, if it is one we open."""
    if prefix.startswith((_ZIP_LOCAL_SIG, _ZIP_EMPTY_SIG, _ZIP_SPAN_SIG + _ZIP_LOCAL_SIG)):
        return ZIP
    if is_tar(prefix):
        return TAR
    return None


#: The archive layers, by the name :func:`archive` gives.
ARCHIVES: Final[dict[str, type[Layer]]] = {
    ZIP: _Zip,
    TAR: _Tar,
}
