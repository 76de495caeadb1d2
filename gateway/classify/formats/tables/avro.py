"""Avro object container files, streamed a block at a time.

The container (header, blocks, sync markers, codecs) is parsed here with
bounded decompression; ``fastavro``'s schemaless reader decodes the records
of a complete block. Nothing is buffered beyond one block.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import zstandard

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract, Unscannable, csv_line
from gateway.classify.formats.tables.common import (
    MAX_COLUMNS,
    MAX_NESTING,
    _Guard,
    _integral_float,
    _metadata_lines,
    _py_text,
    _Render,
    _snappy_length,
    _Table,
)

if TYPE_CHECKING:
    import fastavro
    import pyarrow as pa
else:
    from gateway.classify.formats.tables.common import fastavro, pa

#: Avro: largest container header (schema and metadata).
MAX_AVRO_HEADER_BYTES: Final = 4 << 20
#: Avro: largest block, compressed and decompressed (writers flush at 16 to
#: 64 KiB by default; 64 MiB is generous for huge records).
MAX_AVRO_BLOCK_BYTES: Final = 64 << 20
#: Avro: most records in one block (a record of null fields takes no bytes, so
#: the count bounds the decoding loop).
MAX_AVRO_BLOCK_RECORDS: Final = 1 << 20

_AVRO_MAGIC: Final = b"Obj\x01"
_AVRO_SYNC_BYTES: Final = 16
#: Memory the xz decompressor may use (as the decoder's xz layer).
_AVRO_XZ_MEMLIMIT: Final = 72 << 20


class _NeedMore(Exception):
    """The buffer ends inside the item being parsed: wait for more bytes."""


def _avro_long(buffer: bytes | bytearray, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Avro ``long``) at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        if pos >= len(buffer):
            raise _NeedMore
        b = buffer[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise Unscannable("avro: corrupt length")


def _avro_header(buffer: bytearray) -> tuple[dict[str, bytes], bytes, int]:
    """(metadata, sync marker, header bytes) of a container header; _NeedMore when short."""
    if len(buffer) >= 4 and buffer[:4] != _AVRO_MAGIC:
        raise Unscannable("avro: not an object container file")
    pos = 4
    metadata: dict[str, bytes] = {}
    while True:
        count, pos = _avro_long(buffer, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _avro_long(buffer, pos)  # byte size of the block, not needed
        for _ in range(count):
            parts = []
            for _kv in range(2):
                length, pos = _avro_long(buffer, pos)
                if length < 0 or pos + length > MAX_AVRO_HEADER_BYTES:
                    raise Unscannable("avro: corrupt header")
                if pos + length > len(buffer):
                    raise _NeedMore
                parts.append(bytes(buffer[pos : pos + length]))
                pos += length
            metadata[parts[0].decode("utf-8", "replace")] = parts[1]
            if len(metadata) > MAX_COLUMNS:
                raise Unscannable("avro: corrupt header")
    if pos + _AVRO_SYNC_BYTES > len(buffer):
        raise _NeedMore
    return metadata, bytes(buffer[pos : pos + _AVRO_SYNC_BYTES]), pos + _AVRO_SYNC_BYTES


def _avro_inflate(codec: str, data: bytes) -> bytes:
    """One block's data decompressed, at most :data:`MAX_AVRO_BLOCK_BYTES`."""
    limit = MAX_AVRO_BLOCK_BYTES + 1
    if codec == "null":
        out = data
    elif codec == "deflate":
        out = zlib.decompressobj(-15).decompress(data, limit)
    elif codec == "snappy":
        size, _ = _snappy_length(data)
        if size >= limit or len(data) < 4:
            raise Unscannable("avro: block too large")
        out = pa.Codec("snappy").decompress(data[:-4], decompressed_size=size).to_pybytes()
        if zlib.crc32(out) != int.from_bytes(data[-4:], "big"):
            raise Unscannable("avro: corrupt block")
    elif codec == "zstandard":
        with zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data), read_across_frames=True
        ) as r:
            out = r.read(limit)
    elif codec == "bzip2":
        out = bz2.BZ2Decompressor().decompress(data, limit)
    elif codec == "xz":
        out = lzma.LZMADecompressor(memlimit=_AVRO_XZ_MEMLIMIT).decompress(data, limit)
    else:
        raise Unscannable("avro: unknown codec")
    if len(out) >= limit:
        raise Unscannable(f"avro: a block over {MAX_AVRO_BLOCK_BYTES >> 20} MiB")
    return out


def _avro_min_size(schema: Any, names: dict[str, Any], seen: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a datum of ``schema`` takes (0 for null, empty records, fixed(0))."""
    if isinstance(schema, str):
        if schema == "null":
            return 0
        if schema in names and schema not in seen:
            return _avro_min_size(names[schema], names, seen | {schema})
        return 1
    if isinstance(schema, list):
        return 1  # the branch index
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record" or kind == "error":
            return sum(_avro_min_size(f.get("type"), names, seen) for f in schema.get("fields", []))
        if kind == "fixed":
            return int(schema.get("size", 1))
        if isinstance(kind, str | list | dict) and kind not in ("array", "map", "enum"):
            return _avro_min_size(kind, names, seen)
    return 1


def _avro_check_schema(schema: Any, render: _Render) -> None:
    """Refuse arrays of zero-size items: their count alone would drive the decoding loop."""
    names: dict[str, Any] = {}
    stack: list[tuple[Any, int]] = [(schema, 0)]
    nodes: list[Any] = []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING * 4:
            raise render.fail(f"schema nested deeper than {MAX_NESTING * 4}")
        nodes.append(node)
        if isinstance(node, list):
            stack.extend((n, depth + 1) for n in node)
        elif isinstance(node, dict):
            if "name" in node and node.get("type") in ("record", "error", "enum", "fixed"):
                name = str(node["name"])
                names[name] = node
                if "namespace" in node:
                    names[f"{node['namespace']}.{name}"] = node
            for key in ("type", "items", "values"):
                if key in node and not isinstance(node[key], str):
                    stack.append((node[key], depth + 1))
            stack.extend(
                (f.get("type"), depth + 1) for f in node.get("fields", []) if isinstance(f, dict)
            )
    for node in nodes:
        if (
            isinstance(node, dict)
            and node.get("type") == "array"
            and _avro_min_size(node.get("items"), names) == 0
        ):
            raise render.fail("arrays of zero-size items")


@dataclass(frozen=True, slots=True)
class _AvroColumn:
    name: str
    path: tuple[str, ...]
    numeric: bool


def _avro_columns(schema: Any, named: dict[str, Any], render: _Render) -> list[_AvroColumn]:
    """Columns of an Avro table: record fields, nested records flattened to their leaves.

    A record type nested in itself (a linked list, a tree) is flattened once;
    its deeper levels are one column whose cells hold their leaf values.
    """

    def resolve(node: Any) -> Any:
        if isinstance(node, str) and node in named:
            return named[node]
        if isinstance(node, list):
            branches = [b for b in node if b != "null"]
            if len(branches) == 1:
                return resolve(branches[0])
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list | str):
            if node.get("type") not in _AVRO_COMPLEX and node["type"] in named:
                return resolve(node["type"])
            if isinstance(node.get("type"), dict | list):
                return resolve(node["type"])
        return node

    top = resolve(schema)
    if not (isinstance(top, dict) and top.get("type") in ("record", "error")):
        return [_AvroColumn("value", (), False)]
    columns: list[_AvroColumn] = []

    def walk(record: dict[str, Any], path: tuple[str, ...], open_records: tuple[int, ...]) -> None:
        for f in record.get("fields", []):
            if not isinstance(f, dict):
                raise render.fail("corrupt schema")
            name = str(f.get("name"))
            typ = resolve(f.get("type"))
            if (
                isinstance(typ, dict)
                and typ.get("type") in ("record", "error")
                and id(typ) not in open_records
                and len(path) < MAX_NESTING
            ):
                walk(typ, (*path, name), (*open_records, id(typ)))
                continue
            kind = typ.get("type") if isinstance(typ, dict) else typ
            columns.append(
                _AvroColumn(".".join((*path, name)), (*path, name), kind in ("float", "double"))
            )
            if len(columns) > MAX_COLUMNS:
                raise render.fail(f"more than {MAX_COLUMNS} columns")

    walk(top, (), (id(top),))
    return columns


_AVRO_COMPLEX: Final = frozenset({"record", "error", "enum", "array", "map", "fixed"})


class AvroReader:
    """Render an Avro object container file front to back, a block at a time.

    The container (header, blocks, sync markers, codecs) is parsed here with
    bounded decompression; fastavro's schemaless reader decodes the records of
    a complete block. Nothing is buffered beyond one block.
    """

    def __init__(self, out: Extract) -> None:
        self.render = _Render("avro", out)
        self.buffer = bytearray()
        self.header: tuple[Any, str, bytes] | None = None
        self.columns: list[_AvroColumn] = []
        self.table: _Table | None = None
        self.failed: Unscannable | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the file."""
        if self.failed is not None:
            raise self.failed
        self.render.file_bytes += len(data)
        self.buffer += data
        try:
            self._parse()
        except Unscannable as exc:
            self.failed = exc
            raise

    def _parse(self) -> None:
        if self.header is None:
            try:
                metadata, sync, used = _avro_header(self.buffer)
            except _NeedMore:
                if len(self.buffer) > MAX_AVRO_HEADER_BYTES:
                    raise self.render.fail("header too large") from None
                return
            del self.buffer[:used]
            self._start(metadata, sync)
        while True:
            try:
                count, pos = _avro_long(self.buffer, 0)
                size, pos = _avro_long(self.buffer, pos)
            except _NeedMore:
                return
            if count < 0 or size < 0 or count > MAX_AVRO_BLOCK_RECORDS:
                raise self.render.fail("corrupt block")
            if size > MAX_AVRO_BLOCK_BYTES:
                raise self.render.fail(f"a block over {MAX_AVRO_BLOCK_BYTES >> 20} MiB")
            end = pos + size + _AVRO_SYNC_BYTES
            if len(self.buffer) < end:
                return
            assert self.header is not None
            if self.buffer[end - _AVRO_SYNC_BYTES : end] != self.header[2]:
                raise self.render.fail("corrupt block (sync marker)")
            block = bytes(self.buffer[pos : pos + size])
            del self.buffer[:end]
            self._block(count, block)

    def _start(self, metadata: dict[str, bytes], sync: bytes) -> None:
        codec = metadata.get("avro.codec", b"null").decode("utf-8", "replace") or "null"
        with _Guard(self.render):
            schema = json.loads(metadata.get("avro.schema", b"null"))
            _avro_check_schema(schema, self.render)
            parsed = fastavro.parse_schema(schema)
            named: dict[str, Any] = {}
            _collect_avro_names(schema, named)
            self.columns = _avro_columns(schema, named, self.render)
        self.header = (parsed, codec, sync)
        _metadata_lines(self.render, {k.encode(): v for k, v in metadata.items()})
        self.table = _Table(
            self.render, "table", csv_line(c.name for c in self.columns if not c.numeric)
        )
        for c in self.columns:
            if c.numeric:
                self.render.note(f"column not rendered (floating point): {c.name}\n")

    def _block(self, count: int, block: bytes) -> None:
        assert self.header is not None
        assert self.table is not None
        parsed, codec, _ = self.header
        lines: list[str] = []
        with _Guard(self.render):
            stream = io.BytesIO(_avro_inflate(codec, block))
            for _ in range(count):
                record = fastavro.schemaless_reader(
                    stream, parsed, None, handle_unicode_errors="replace"
                )
                lines.append(csv_line(self._row(record)))
        self.table.add("".join(lines))

    def _row(self, record: Any) -> list[str]:
        cells = []
        wholes: list[str] = []
        for column in self.columns:
            value = record
            for key in column.path:
                value = value.get(key) if isinstance(value, dict) else None
            if column.numeric:
                if value is not None:
                    self.render.numeric += 1
                    if isinstance(value, float) and (whole := _integral_float(value)):
                        wholes.append(whole)
                continue
            cells.append(_py_text(value, self.render, f"table column {column.name}"))
        # Whole-number floats of identifier size go after the rendered columns
        # (a float column has no header cell), so no other cell moves.
        return cells + wholes

    def finish(self) -> None:
        """The file ended: it must end on a block boundary."""
        if self.failed is not None:
            raise self.failed
        if self.header is None:
            raise self.render.fail("truncated header")
        if self.buffer:
            raise self.render.fail("truncated block")
        assert self.table is not None
        self.table.close()
        self.render.finish()


def _collect_avro_names(schema: Any, named: dict[str, Any]) -> None:
    """Named types of a schema by short and full name (for resolving references)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "name" in node and node.get("type") in ("record", "error", "enum", "fixed"):
                named.setdefault(str(node["name"]), node)
                if "namespace" in node:
                    named.setdefault(f"{node['namespace']}.{node['name']}", node)
            for key in ("type", "items", "values"):
                if isinstance(node.get(key), dict | list):
                    stack.append(node[key])
            stack.extend(f.get("type") for f in node.get("fields", []) if isinstance(f, dict))


_sniff_avro: Final = Magic(_AVRO_MAGIC)


AVRO: Final = register(Format("avro", "application/avro", _sniff_avro, stream=AvroReader))
