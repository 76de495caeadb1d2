"""Arrow IPC: the file format (Feather v2), the stream format, and legacy Feather v1.

Message framing (continuation marker, metadata length, FlatBuffers metadata,
body) and file footer blocks are read and bounded here, compressed buffer
sizes included, before pyarrow decodes a record batch; every batch is fully
validated before a compute kernel touches it. The stream reader frames
messages as bytes arrive and holds one batch and its dictionaries. Feather v1
is recognised and refused (pyarrow's v1 reader crashes on mutated files).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.classify.formats import Format, Magic, register
from gateway.classify.formats.base import Extract, RandomAccess, TextOut, Unscannable
from gateway.classify.formats.isolation import isolated
from gateway.classify.formats.tables.common import (
    MAX_COLUMNS,
    _arrow_file,
    _ArrowTable,
    _Guard,
    _metadata_lines,
    _Render,
    _validated,
    load_arrow,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.ipc as pa_ipc
else:
    from gateway.classify.formats.tables.common import pa, pa_ipc

#: Arrow IPC: largest message metadata (a schema of MAX_COLUMNS fields is a
#: few MB of flatbuffer).
MAX_IPC_METADATA_BYTES: Final = 16 << 20
#: Arrow IPC: largest message body, and most bytes a message's buffers may
#: decompress to. A record batch is read whole; writers batch at 64 Ki to 1 Mi
#: rows, tens of MB.
MAX_IPC_MESSAGE_BYTES: Final = 256 << 20
#: Arrow IPC: most record batches or dictionary batches in a file footer.
MAX_IPC_BLOCKS: Final = 1 << 20
#: Arrow IPC: most buffers in one record batch (three per column at most, but
#: nested types add a few).
MAX_IPC_BUFFERS: Final = 8 * MAX_COLUMNS

# -- Arrow IPC: message framing ----------------------------------------------

_CONTINUATION: Final = b"\xff\xff\xff\xff"
_ARROW_MAGIC: Final = b"ARROW1"
_HEADER_SCHEMA: Final = 1
_HEADER_DICTIONARY: Final = 2
_HEADER_RECORD_BATCH: Final = 3


class _Flat:
    """Just enough of the FlatBuffers wire format to read Arrow IPC metadata."""

    def __init__(self, data: bytes, render: _Render) -> None:
        self.data = data
        self.render = render

    def _get(self, fmt: str, pos: int) -> int:
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise self.render.fail("corrupt metadata")
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def root(self) -> int:
        return self._get("<I", 0)

    def _field(self, table: int, index: int) -> int | None:
        vtable = table - self._get("<i", table)
        size = self._get("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > size:
            return None
        offset = self._get("<H", vtable + slot)
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self._field(table, index)
        return default if pos is None else self._get(fmt, pos)

    def table(self, table: int, index: int) -> int | None:
        pos = self._field(table, index)
        return None if pos is None else pos + self._get("<I", pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, number of elements); (0, 0) when absent."""
        pos = self._field(table, index)
        if pos is None:
            return 0, 0
        start = pos + self._get("<I", pos)
        return start + 4, self._get("<I", start)


@dataclass(frozen=True, slots=True)
class _Message:
    """One framed IPC message: where its metadata and body are, and what it holds."""

    kind: int
    metadata: bytes
    body_length: int
    batch: int | None  # flatbuffer position of its RecordBatch table


def _parse_message(metadata: bytes, render: _Render) -> _Message:
    flat = _Flat(metadata, render)
    root = flat.root()
    kind = flat.scalar(root, 1, "<B")
    body = flat.scalar(root, 3, "<q")
    if body < 0 or body > MAX_IPC_MESSAGE_BYTES:
        raise render.fail(f"a message over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
    header = flat.table(root, 2)
    batch = None
    if kind == _HEADER_RECORD_BATCH:
        batch = header
    elif kind == _HEADER_DICTIONARY and header is not None:
        batch = flat.table(header, 1)
    elif kind != _HEADER_SCHEMA:
        raise render.fail("unsupported message")
    return _Message(kind, metadata, body, batch)


def _decoded_bytes(
    message: _Message, read_body: Callable[[int, int], bytes], render: _Render
) -> int:
    """Bytes a message's buffers take once decompressed (its body length when uncompressed)."""
    if message.batch is None:
        return message.body_length
    flat = _Flat(message.metadata, render)
    if flat.table(message.batch, 3) is None:  # no BodyCompression
        return message.body_length
    start, count = flat.vector(message.batch, 2)
    if count > MAX_IPC_BUFFERS:
        raise render.fail(f"more than {MAX_IPC_BUFFERS} buffers in a batch")
    total = 0
    for i in range(count):
        offset = flat._get("<q", start + 16 * i)
        length = flat._get("<q", start + 16 * i + 8)
        if offset < 0 or length < 0 or offset + length > message.body_length:
            raise render.fail("corrupt buffer")
        if length >= 8:
            prefix = read_body(offset, 8)
            if len(prefix) < 8:
                raise render.fail("truncated body")
            declared = int.from_bytes(prefix, "little", signed=True)
            total += length if declared == -1 else declared
        else:
            total += length
        if total > MAX_IPC_MESSAGE_BYTES:
            raise render.fail(f"a batch over {MAX_IPC_MESSAGE_BYTES >> 20} MiB decompressed")
    return total


def _message_prefix(data: bytes) -> tuple[int, int] | None:
    """(prefix bytes, metadata length) of the message framed at ``data``; None when short.

    Arrow writes a continuation marker then the length; streams written before
    Arrow 0.15 have the length alone.
    """
    if len(data) < 4:
        return None
    if data[:4] == _CONTINUATION:
        if len(data) < 8:
            return None
        return 8, int.from_bytes(data[4:8], "little", signed=True)
    return 4, int.from_bytes(data[:4], "little", signed=True)


def _sniff_ipc_message(data: bytes) -> bool:
    """True when ``data`` starts with an IPC message holding a schema (a stream's first)."""
    if data[:4] != _CONTINUATION or len(data) < 16:
        return False
    length = int.from_bytes(data[4:8], "little", signed=True)
    if length < 8 or length > MAX_IPC_METADATA_BYTES or length % 8:
        return False
    try:
        message = _parse_message(data[8 : 8 + length], _Render("arrow", _NoExtract()))
    except Unscannable:
        return False
    flat = _Flat(message.metadata, _Render("arrow", _NoExtract()))
    try:
        version = flat.scalar(flat.root(), 0, "<h")
    except Unscannable:
        return False
    return message.kind == _HEADER_SCHEMA and 0 <= version <= 4


class _NoExtract:
    """An Extract for sniffing, which never receives anything."""

    def member(self, name: str, content_type: str) -> TextOut:
        raise AssertionError("sniffing opens no member")

    def nested(self, name: str) -> Any:
        raise AssertionError("sniffing opens no member")

    def finding(self, label: str, value: bytes) -> None:
        raise AssertionError("sniffing reports nothing")

    def attribute(self, key: str, value: str) -> None:
        raise AssertionError("sniffing reports nothing")

    def numeric(self, values: int) -> None:
        raise AssertionError("sniffing reports nothing")


# -- Arrow IPC file and Feather ------------------------------------------------


def _ipc_blocks(
    flat: _Flat, footer: int, index: int, render: _Render
) -> list[tuple[int, int, int]]:
    start, count = flat.vector(footer, index)
    if count > MAX_IPC_BLOCKS:
        raise render.fail(f"more than {MAX_IPC_BLOCKS} batches")
    blocks = []
    for i in range(count):
        pos = start + 24 * i
        blocks.append((flat._get("<q", pos), flat._get("<i", pos + 8), flat._get("<q", pos + 16)))
    return blocks


def _check_ipc_block(source: RandomAccess, block: tuple[int, int, int], render: _Render) -> int:
    """Bound one footer block's message; return the bytes it decodes to."""
    offset, meta_length, body_length = block
    if (
        offset < 8
        or meta_length < 8
        or meta_length > MAX_IPC_METADATA_BYTES
        or body_length < 0
        or body_length > MAX_IPC_MESSAGE_BYTES
        or offset + meta_length + body_length > source.size
    ):
        raise render.fail("corrupt footer block")
    framed = source.read_at(offset, meta_length)
    prefix = _message_prefix(framed)
    if prefix is None or prefix[1] < 0 or prefix[0] + prefix[1] > meta_length:
        raise render.fail("corrupt message")
    message = _parse_message(framed[prefix[0] : prefix[0] + prefix[1]], render)
    body_start = offset + meta_length
    return _decoded_bytes(message, lambda o, n: source.read_at(body_start + o, n), render)


def read_arrow_file(source: RandomAccess, out: Extract) -> None:
    """Render an Arrow IPC file in a reader process (:func:`read_arrow_file_inline` there)."""
    isolated(read_arrow_file_inline, source, out, "arrow", prepare=load_arrow)


def read_arrow_file_inline(source: RandomAccess, out: Extract) -> None:
    """Render an Arrow IPC file (Feather v2): the batches its footer lists, one at a time."""
    render = _Render("arrow", out, source.size)
    size = source.size
    if (
        size < 18
        or source.read_at(0, 6) != _ARROW_MAGIC
        or source.read_at(size - 6, 6) != _ARROW_MAGIC
    ):
        raise render.fail("truncated file")
    footer_length = int.from_bytes(source.read_at(size - 10, 4), "little", signed=True)
    if footer_length <= 0 or footer_length > min(MAX_IPC_METADATA_BYTES, size - 18):
        raise render.fail("corrupt footer length")
    flat = _Flat(source.read_at(size - 10 - footer_length, footer_length), render)
    footer = flat.root()
    dictionaries = sum(
        _check_ipc_block(source, b, render) for b in _ipc_blocks(flat, footer, 2, render)
    )
    if dictionaries > MAX_IPC_MESSAGE_BYTES:
        raise render.fail(f"dictionaries over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
    batches = _ipc_blocks(flat, footer, 3, render)
    for block in batches:
        _check_ipc_block(source, block, render)
    with _Guard(render):
        reader = pa_ipc.open_file(_arrow_file(source))
        if reader.num_record_batches != len(batches):
            raise render.fail("corrupt footer")
        _metadata_lines(render, reader.schema.metadata, reader.schema)
        table = _ArrowTable(render, reader.schema)
        for i in range(reader.num_record_batches):
            table.add(_validated(reader.get_batch(i)))
        table.close()
    render.finish()


_sniff_arrow_file: Final = Magic(_ARROW_MAGIC + b"\x00\x00")


def read_feather_v1(source: RandomAccess, out: Extract) -> None:
    """Refuse a legacy Feather (v1) file: named, never read.

    pyarrow's v1 reader is not hardened against hostile files (a mutated file
    crashes the process, found by this module's hypothesis test), and no
    other maintained reader exists; Feather v1 is deprecated since Arrow 0.17
    (2020), and rewriting the file as Feather v2 (Arrow IPC) makes it readable.
    """
    raise Unscannable("feather: legacy v1 file not read (rewrite it as Feather v2)")


_sniff_feather_v1: Final = Magic(b"FEA1")


# -- Arrow IPC stream ----------------------------------------------------------


class _Feed(io.RawIOBase):
    """The bytes of framed messages, read by pyarrow's stream reader.

    pyarrow reads a message exactly (marker, length, metadata, body), and is
    only asked for the next batch once every byte of it has been framed, so a
    read never runs past what was fed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self.data[self.pos : self.pos + len(view)]
        view[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def compact(self, keep_from: int) -> int:
        """Drop bytes before ``keep_from`` (all read); return how many were dropped."""
        drop = min(keep_from, self.pos)
        if drop:
            del self.data[:drop]
            self.pos -= drop
        return drop


class ArrowStreamReader:
    """Render an Arrow IPC stream front to back, a record batch at a time.

    Messages are framed here (marker, metadata length, flatbuffer metadata,
    body length from the metadata), bounded, and checked for compressed sizes;
    once a record batch message is complete, pyarrow decodes it together with
    the dictionary batches before it. Memory is one batch and its dictionaries.
    """

    def __init__(self, out: Extract) -> None:
        self.render = _Render("arrow stream", out)
        self.feed_buffer = _Feed()
        self.scan = 0  # offset in the buffer of the next message to frame
        self.reader: Any = None
        self.table: _ArrowTable | None = None
        self.ended = False
        self.dictionaries = 0
        self.failed: Unscannable | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the stream."""
        if self.failed is not None:
            raise self.failed
        self.render.file_bytes += len(data)
        if self.ended:
            return  # bytes after the end-of-stream marker are not part of the stream
        self.feed_buffer.data += data
        try:
            self._frame()
        except Unscannable as exc:
            self.failed = exc
            raise

    def _frame(self) -> None:
        buffer = self.feed_buffer.data
        while not self.ended:
            prefix = _message_prefix(bytes(buffer[self.scan : self.scan + 8]))
            if prefix is None:
                break
            prefix_bytes, meta_length = prefix
            if meta_length == 0:
                self.ended = True
                break
            if meta_length < 0 or meta_length > MAX_IPC_METADATA_BYTES:
                raise self.render.fail("corrupt message length")
            meta_start = self.scan + prefix_bytes
            if len(buffer) < meta_start + meta_length:
                break
            message = _parse_message(
                bytes(buffer[meta_start : meta_start + meta_length]), self.render
            )
            body_start = meta_start + meta_length
            if len(buffer) < body_start + message.body_length:
                if len(buffer) - self.feed_buffer.pos > 2 * MAX_IPC_MESSAGE_BYTES:
                    raise self.render.fail("a batch and its dictionaries are too large")
                break

            def read_body(offset: int, length: int, start: int = body_start) -> bytes:
                return bytes(buffer[start + offset : start + offset + length])

            decoded = _decoded_bytes(message, read_body, self.render)
            if decoded > MAX_IPC_MESSAGE_BYTES:
                raise self.render.fail(f"a message over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
            self.scan = body_start + message.body_length
            if message.kind == _HEADER_DICTIONARY:
                self.dictionaries += decoded
                if self.dictionaries > MAX_IPC_MESSAGE_BYTES:
                    raise self.render.fail(f"dictionaries over {MAX_IPC_MESSAGE_BYTES >> 20} MiB")
            if self.scan - self.feed_buffer.pos > 2 * MAX_IPC_MESSAGE_BYTES:
                raise self.render.fail("a batch and its dictionaries are too large")
            self._message(message)
        dropped = self.feed_buffer.compact(self.scan)
        self.scan -= dropped

    def _message(self, message: _Message) -> None:
        with _Guard(self.render):
            if self.reader is None:
                if message.kind != _HEADER_SCHEMA:
                    raise self.render.fail("stream does not start with a schema")
                self.reader = pa_ipc.open_stream(pa.PythonFile(self.feed_buffer, mode="r"))
                _metadata_lines(self.render, self.reader.schema.metadata, self.reader.schema)
                self.table = _ArrowTable(self.render, self.reader.schema)
            elif message.kind == _HEADER_RECORD_BATCH:
                assert self.table is not None
                self.table.add(_validated(self.reader.read_next_batch()))
            elif message.kind == _HEADER_SCHEMA:
                raise self.render.fail("a second schema")

    def finish(self) -> None:
        """The stream ended: it must have had a schema and no partial message."""
        if self.failed is not None:
            raise self.failed
        if self.reader is None:
            raise self.render.fail("ended before its schema")
        if not self.ended and self.scan < len(self.feed_buffer.data):
            raise self.render.fail("truncated message")
        assert self.table is not None
        self.table.close()
        self.render.finish()


#: Bytes of an Arrow IPC stream handed to :class:`ArrowStreamReader` per step
#: when it is read from a random-access view.
STREAM_STEP_BYTES: Final = 1 << 20


def read_arrow_stream(source: RandomAccess, out: Extract) -> None:
    """Render an Arrow IPC stream in a reader process (:func:`read_arrow_stream_inline` there).

    The stream's layout would allow reading it as it arrives, but pyarrow then
    runs in the gateway's own process; it is read after the upload instead,
    from the spool, like the other Arrow formats.
    """
    isolated(read_arrow_stream_inline, source, out, "arrow stream", prepare=load_arrow)


def read_arrow_stream_inline(source: RandomAccess, out: Extract) -> None:
    """Render an Arrow IPC stream front to back from a random-access view."""
    reader = ArrowStreamReader(out)
    for offset in range(0, source.size, STREAM_STEP_BYTES):
        reader.feed(source.read_at(offset, STREAM_STEP_BYTES))
    reader.finish()


def _sniff_arrow_stream(prefix: bytes) -> bool:
    return _sniff_ipc_message(prefix)


ARROW_FILE: Final = register(
    Format(
        "arrow",
        "application/vnd.apache.arrow.file",
        _sniff_arrow_file,
        random=read_arrow_file,
    )
)
ARROW_STREAM: Final = register(
    Format(
        "arrow-stream",
        "application/vnd.apache.arrow.stream",
        _sniff_arrow_stream,
        random=read_arrow_stream,
        leads=_CONTINUATION[:1],
    )
)
FEATHER_V1: Final = register(
    Format("feather", "application/x-feather", _sniff_feather_v1, random=read_feather_v1)
)
