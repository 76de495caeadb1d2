"""ORC: the postscript and type tree checked here (protobuf), then pyarrow's batches.

The Arrow ORC adapter aborts the process on some schemas it cannot map, so
the footer's types are read and checked first, with the compression block
size and the stripe count bounded; the file is then read in batches of
bounded rows.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import zstandard

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract, RandomAccess
from gateway.classify.formats.isolation import isolated
from gateway.classify.formats.tables.common import (
    BATCH_ROWS,
    MAX_COLUMNS,
    _arrow_file,
    _ArrowTable,
    _Guard,
    _metadata_lines,
    _Render,
    _snappy_length,
    _validated,
    load_arrow,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pa_dataset
    import pyarrow.orc as pa_orc
else:
    from gateway.classify.formats.tables.common import pa, pa_dataset, pa_orc

#: ORC: largest compression block (the ORC writer default is 256 KiB); each
#: stream decompresses into blocks of this size.
MAX_ORC_COMPRESSION_BLOCK_BYTES: Final = 16 << 20
#: ORC: most stripes (default stripe size 64 MiB).
MAX_ORC_STRIPES: Final = 100_000

#: ORC: largest postscript + footer read to check the schema (the footer lists
#: stripes and types; a few MB even for wide files).
MAX_ORC_FOOTER_BYTES: Final = 16 << 20
#: ORC type kinds (orc_proto.proto Type.Kind) and their child counts: the
#: last kind ORC defines, and the widest decimal Arrow can hold.
_ORC_LAST_KIND: Final = 18
_ORC_DECIMAL: Final = 14
_ORC_COMPOUND: Final = {10: 1, 11: 2, 12: None, 13: None}  # list, map, struct, union
_ORC_MAX_DECIMAL_PRECISION: Final = 38


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message (varints and byte strings)."""
    pos = 0
    while pos < len(data):
        key, pos = _protobuf_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _protobuf_varint(data, pos)
        elif wire == 2:
            length, pos = _protobuf_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        else:
            raise ValueError("wire type")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def _protobuf_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _orc_inflate(kind: int, block_size: int, data: bytes) -> bytes:
    """An ORC metadata stream decompressed (3-byte chunk headers, ORC spec "Compression")."""
    if kind == 0:
        return data
    out = bytearray()
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise ValueError("truncated chunk header")
        header = int.from_bytes(data[pos : pos + 3], "little")
        pos += 3
        length = header >> 1
        chunk = data[pos : pos + length]
        pos += length
        if len(chunk) < length:
            raise ValueError("truncated chunk")
        if header & 1:
            out += chunk
        elif kind == 1:
            inflater = zlib.decompressobj(-15)
            out += inflater.decompress(chunk, block_size + 1)
        elif kind == 5:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(chunk)) as reader:
                out += reader.read(block_size + 1)
        elif kind == 2:
            size, _ = _snappy_length(chunk)
            if size > block_size:
                raise ValueError("chunk over the block size")
            out += pa.Codec("snappy").decompress(chunk, decompressed_size=size).to_pybytes()
        else:  # LZO, LZ4: not decompressed here
            raise ValueError("codec")
        if len(out) > MAX_ORC_FOOTER_BYTES:
            raise ValueError("footer too large")
    return bytes(out)


def _check_orc_tail(source: RandomAccess, render: _Render) -> None:
    """Check the footer's type tree before pyarrow converts it.

    The Arrow ORC adapter aborts the process on some schemas it cannot map
    (a decimal precision over 38, found by this module's hypothesis test), so
    the types are read and checked here first: kinds ORC defines, children
    after their parent and inside the list, decimal precision and scale.
    """
    size = source.size
    if size < 5 or source.read_at(0, 3) != b"ORC":
        raise render.fail("truncated file")
    ps_length = source.read_at(size - 1, 1)[0]
    if ps_length + 1 > size:
        raise render.fail("corrupt postscript")
    postscript = dict(
        (n, v) for n, _, v in _protobuf_fields(source.read_at(size - 1 - ps_length, ps_length))
    )
    footer_length = postscript.get(1, 0)
    kind = postscript.get(2, 0)
    block = postscript.get(3, 256 << 10)
    if not isinstance(footer_length, int) or not isinstance(kind, int):
        raise render.fail("corrupt postscript")
    if not isinstance(block, int) or block > MAX_ORC_COMPRESSION_BLOCK_BYTES:
        raise render.fail("compression blocks too large")
    if footer_length > MAX_ORC_FOOTER_BYTES or footer_length + ps_length + 1 > size:
        raise render.fail("corrupt footer length")
    if kind in (3, 4):  # LZO, LZ4 footers: checked by pyarrow alone
        return
    raw = source.read_at(size - 1 - ps_length - footer_length, footer_length)
    types: list[tuple[int, list[int], int, int]] = []  # kind, children, precision, scale
    stripes = 0
    for number, _wire, value in _protobuf_fields(_orc_inflate(kind, block, raw)):
        if number == 3:
            stripes += 1
        elif number == 4 and isinstance(value, bytes):
            types.append(_orc_type(value))
            if len(types) > MAX_COLUMNS:
                raise render.fail(f"more than {MAX_COLUMNS} columns")
    if stripes > MAX_ORC_STRIPES:
        raise render.fail(f"more than {MAX_ORC_STRIPES} stripes")
    for index, (type_kind, children, precision, scale) in enumerate(types):
        if type_kind > _ORC_LAST_KIND:
            raise render.fail("corrupt schema")
        if type_kind in _ORC_COMPOUND:
            expected = _ORC_COMPOUND[type_kind]
            if expected is not None and len(children) != expected:
                raise render.fail("corrupt schema")
        elif children:
            raise render.fail("corrupt schema")
        if any(c <= index or c >= len(types) for c in children):
            raise render.fail("corrupt schema")
        if type_kind == _ORC_DECIMAL and (
            precision > _ORC_MAX_DECIMAL_PRECISION or (scale > max(precision, 0) and precision != 0)
        ):
            raise render.fail("corrupt schema (decimal precision)")


def _orc_type(data: bytes) -> tuple[int, list[int], int, int]:
    kind = precision = scale = 0
    children: list[int] = []
    for number, wire, value in _protobuf_fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, int):
            children.append(value)
        elif number == 2 and isinstance(value, bytes) and wire == 2:  # packed
            pos = 0
            while pos < len(value):
                child, pos = _protobuf_varint(value, pos)
                children.append(child)
        elif number == 5 and isinstance(value, int):
            precision = value
        elif number == 6 and isinstance(value, int):
            scale = value
    return kind, children, precision, scale


def read_orc(source: RandomAccess, out: Extract) -> None:
    """Render an ORC file in a reader process (:func:`read_orc_inline` there)."""
    isolated(read_orc_inline, source, out, "orc", prepare=load_arrow)


def read_orc_inline(source: RandomAccess, out: Extract) -> None:
    """Render an ORC file through pyarrow's batch reader (bounded rows per batch).

    ORC compresses each stream in blocks of at most the file's compression
    block size, which the reader decompresses one at a time; the block size
    and the stripe count are bounded before reading.
    """
    render = _Render("orc", out, source.size)
    if source.size < 4:
        raise render.fail("truncated file")
    try:
        _check_orc_tail(source, render)
    except (ValueError, OSError, zlib.error, zstandard.ZstdError, pa.ArrowException):
        raise render.fail("corrupt footer") from None
    with _Guard(render):
        meta = pa_orc.ORCFile(_arrow_file(source))
        if meta.compression_size > MAX_ORC_COMPRESSION_BLOCK_BYTES:
            raise render.fail("compression blocks too large")
        if meta.nstripes > MAX_ORC_STRIPES:
            raise render.fail(f"more than {MAX_ORC_STRIPES} stripes")
        schema = meta.schema
        _metadata_lines(render, meta.metadata, meta.schema)
        table = _ArrowTable(render, schema)
        fragment = pa_dataset.OrcFileFormat().make_fragment(_arrow_file(source))
        for batch in fragment.to_batches(batch_size=BATCH_ROWS, use_threads=False):
            table.add(_validated(batch))
        table.close()
    render.finish()


_sniff_orc: Final = Magic(b"ORC")


ORC: Final = register(Format("orc", "application/vnd.apache.orc", _sniff_orc, random=read_orc))
