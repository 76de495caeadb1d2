"""Model checkpoints (issue 12): safetensors, GGUF, pickle (PyTorch data.pkl), PyTorch zip, ONNX.

What a checkpoint says about people is in its *text*: metadata (``__metadata__``
of safetensors, GGUF key/value pairs, ONNX ``metadata_props`` and doc
strings), tensor and node names, the strings and integers of a pickled
state dict. Weights are numbers: they are **counted** through
:meth:`Extract.numeric` and skipped without being buffered. One exception, by
design: **64-bit integer tensors are rendered** like NumPy integer arrays (one
decimal cell per value). A Mainland mobile number or a Resident ID number
needs 64 bits as an integer, so an ``I64`` tensor is exactly where a file
could carry identifiers as binary numbers; real checkpoints keep only small
ones (position ids, step counters), and no quantisation scheme packs weights
into 64-bit integers. Everything narrower (``I8``..``I32``, quantised blocks)
is counted.

Readers:

* **safetensors** (``application/vnd.safetensors``, the type Hugging Face
  registers for the format): 8-byte little-endian header length, a JSON header
  (at most :data:`SAFETENSORS_MAX_HEADER_BYTES`), then the tensors, which
  must tile the rest of the file exactly (the format forbids holes).
* **GGUF** (``application/x-gguf``), versions 2 and 3, either byte order:
  every metadata key and value (strings, string arrays such as the tokenizer
  vocabulary, integers) and every tensor name, type and shape.
* **pickle** (``application/x-python-pickle``, protocol 2-5, how PyTorch's
  ``data.pkl`` is written): the opcodes are *walked*, never executed: no
  object is built and nothing is imported. Strings, integers and global names
  (``torch._utils._rebuild_tensor_v2``) are rendered; text-like bytes too,
  other bytes are handed back to the decoder as nested members (a pickled
  NumPy array's buffer is binary numbers that raw scanning would not see).
* **PyTorch zip checkpoints** (``application/x-pytorch``): ``torch.save``
  writes a zip whose first member is ``<name>/data.pkl``. When the decoder asks
  the registry before opening a zip, this reader takes the whole archive:
  ``data.pkl`` is walked as above, which tells the dtype and size of every
  storage ``<name>/data/<key>``; storages are counted (``LongStorage``
  rendered), every other member is handed back as a nested member. Through
  the plain zip layer instead, ``data.pkl`` is still read by the pickle reader.
* **ONNX** (``application/onnx``): the protobuf wire format is walked with a
  schema of the ONNX messages that hold text (model, graph, node, attribute,
  tensor, value info, function, training info): producer, domain, doc
  strings, names, ``metadata_props``, string attributes and string tensors;
  ``INT64``/``UINT64`` tensors are rendered, other tensors counted. Sniffing
  protobuf is weak, so a member is taken for ONNX only when its first fields
  parse as a ``ModelProto`` starting with ``ir_version``.

Every reader here is bounded by the named constants below and raises
:class:`Unscannable` on a corrupt or hostile file.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.classify.formats import Format, register
from gateway.classify.formats.arrays import (
    CHUNK_BYTES,
    Budget,
    TableWriter,
    decode_bytes,
    value_text,
)
from gateway.classify.formats.base import (
    AccessFile,
    Extract,
    LazyModule,
    RandomAccess,
    TextOut,
    Unscannable,
    csv_cell,
)

# numpy loads when a checkpoint with integer tensors arrives (LazyModule: the
# registry imports this module at the first scan).
if TYPE_CHECKING:
    import numpy as np
else:
    np = LazyModule("numpy")

# -- bounds ----------------------------------------------------------------------

#: A safetensors JSON header. The format's own reference implementation refuses
#: headers over 100 MB; real ones are a few hundred bytes per tensor (a 70B
#: model shard with ~700 tensors has ~100 KB), and the header is buffered whole.
SAFETENSORS_MAX_HEADER_BYTES: Final = 16 << 20
#: Tensors in one file (safetensors, GGUF). The largest models have a few
#: thousand; this is what keeps the segment table small.
MAX_TENSORS: Final = 1 << 20
#: GGUF metadata key/value pairs (llama.cpp files carry 20-60).
GGUF_MAX_KV: Final = 1 << 16
#: One GGUF metadata string (chat templates run to tens of KiB).
GGUF_MAX_STRING: Final = 16 << 20
#: Elements of one GGUF metadata array: the largest tokenizer vocabularies are
#: about 256k tokens (with as many merges); 16x that is a hostile file.
GGUF_MAX_ARRAY: Final = 1 << 22
#: Nesting of GGUF arrays of arrays (the format allows it; nobody uses more than one level).
GGUF_MAX_NESTING: Final = 4
#: GGUF ``general.alignment``: a power of two; llama.cpp uses 32.
GGUF_MAX_ALIGNMENT: Final = 1 << 20
#: Total text rendered from one file's metadata (strings, names): 16 vocabularies' worth.
MAX_METADATA_BYTES: Final = 256 << 20
#: Opcodes walked in one pickle. A ``data.pkl`` has ~30 per tensor (a 1000-tensor
#: model: ~30k); at about 1 us each this bound is ~4 s.
PICKLE_MAX_OPCODES: Final = 1 << 22
#: One pickled string, bytes or long integer, buffered whole.
PICKLE_MAX_STRING: Final = 16 << 20
#: A protocol-0 style text line (``GLOBAL module\\nname\\n``, ``INT``): module paths are short.
PICKLE_MAX_LINE: Final = 64 << 10
#: Memo entries kept while walking a pickle (only short scalars are kept: the
#: walk uses the memo to recognise PyTorch storage ids, never to build objects).
PICKLE_MAX_MEMO: Final = 1 << 16
#: Binary ``bytes`` constants handed back as nested members, per pickle.
PICKLE_MAX_BLOBS: Final = 1024
#: Members of a PyTorch zip checkpoint (one per tensor storage).
PYTORCH_MAX_MEMBERS: Final = 1 << 17
#: Expansion of a compressed PyTorch zip member (SPEC §3.1: ratio 100:1).
PYTORCH_MAX_RATIO: Final = 100
#: Protobuf fields walked in one ONNX file (a large graph has ~1e5 nodes of ~10 fields).
ONNX_MAX_FIELDS: Final = 1 << 23
#: Message nesting walked in ONNX (subgraphs of If/Loop nest a few levels).
ONNX_MAX_DEPTH: Final = 64
#: One ONNX string field read whole (doc strings are short; longer is cut into cells).
ONNX_MAX_STRING: Final = 16 << 20

SAFETENSORS_MEDIA_TYPE: Final = "application/vnd.safetensors"
GGUF_MEDIA_TYPE: Final = "application/x-gguf"
PICKLE_MEDIA_TYPE: Final = "application/x-python-pickle"
PYTORCH_MEDIA_TYPE: Final = "application/x-pytorch"
ONNX_MEDIA_TYPE: Final = "application/onnx"


# -- a pull parser for streamed formats ------------------------------------------------

_READ: Final = 0  # exactly n bytes
_SKIP: Final = 1  # drop n bytes (tensor payloads: never buffered)
_TAIL: Final = 2  # the rest of the member, at most n bytes (sent at finish)

#: What a format's step generator yields: (request, n); it is sent bytes (or b"").
Steps = Generator[tuple[int, int], bytes, None]


class PullReader:
    """A :class:`StreamReader` driving a generator that asks for bytes.

    The format's parser is written front to back as a generator yielding
    ``(request, n)``; this driver answers from what has been fed. The parser
    sees the same requests and answers for every chunking of the input
    (chunk invariance), and the buffer holds at most one request's bytes
    (skipped payload is dropped as it arrives).
    """

    def __init__(self, fmt: str, steps: Steps) -> None:
        self._fmt = fmt
        self._steps = steps
        self._buf = bytearray()
        self._request: tuple[int, int] | None = steps.send(None)  # type: ignore[arg-type]
        self._done = False

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        view = memoryview(data)
        buf = self._buf
        while not self._done:
            assert self._request is not None
            kind, n = self._request
            if kind == _SKIP:
                take = min(n, len(buf))
                del buf[:take]
                skip = min(n - take, view.nbytes)
                view = view[skip:]
                left = n - take - skip
                if left:
                    self._request = (_SKIP, left)
                    return
                self._answer(b"")
            elif kind == _READ:
                if not buf and view.nbytes >= n:  # the common case: no copy through the buffer
                    answer = bytes(view[:n])
                    view = view[n:]
                    self._answer(answer)
                    continue
                if len(buf) < n:
                    take = min(n - len(buf), view.nbytes)
                    buf += view[:take]
                    view = view[take:]
                    if len(buf) < n:
                        return
                answer = bytes(buf[:n])
                del buf[:n]
                self._answer(answer)
            else:  # _TAIL: kept until finish
                buf += view
                if len(buf) > n:
                    raise Unscannable(f"{self._fmt}: bytes after the end")
                return
        if view.nbytes or buf:
            raise Unscannable(f"{self._fmt}: bytes after the end")

    def finish(self) -> None:
        """The member ended: the parser must have finished (a tail gets what is left)."""
        if not self._done and self._request is not None and self._request[0] == _TAIL:
            tail = bytes(self._buf)
            self._buf.clear()
            self._answer(tail)
        if not self._done:
            raise Unscannable(f"{self._fmt}: truncated")

    def _answer(self, data: bytes) -> None:
        try:
            self._request = self._steps.send(data)
        except StopIteration:
            self._request = None
            self._done = True


def _read(n: int) -> tuple[int, int]:
    return (_READ, n)


def _unpack(fmt: str, data: bytes) -> Any:
    return struct.unpack(fmt, data)[0]


class _Text:
    """A text member opened on first write, bounded by :data:`MAX_METADATA_BYTES` per file."""

    def __init__(self, out: Extract, name: str, fmt: str, content_type: str = "text/plain") -> None:
        self._out = out
        self._name = name
        self._fmt = fmt
        self._type = content_type
        self._member: TextOut | None = None
        self.written = 0

    def line(self, text: str) -> None:
        """Write one line (a newline is added)."""
        if self._member is None:
            self._member = self._out.member(self._name, self._type)
        self.written += len(text) + 1
        if self.written > MAX_METADATA_BYTES:
            raise Unscannable(f"{self._fmt}: more than {MAX_METADATA_BYTES} bytes of metadata")
        self._member.write(text + "\n")

    def close(self) -> None:
        """End the member (if it was opened)."""
        if self._member is not None:
            self._member.close()
            self._member = None


# -- tensor payloads --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One tensor's bytes in the payload.

    Attributes:
        begin: offset from the payload start.
        end: offset just past its last byte.
        name: the tensor's name (a header cell when rendered).
        values: elements (counted through ``Extract.numeric`` when not rendered).
        render: the numpy dtype to render the tensor as (64-bit integers), or None.
    """

    begin: int
    end: int
    name: str
    values: int
    render: np.dtype[Any] | None = None


def _payload(out: Extract, fmt: str, segments: list[Segment], budget: Budget, tail: int) -> Steps:
    """Walk the tensor payload: count or render each segment; gaps (padding) must be zeros.

    ``tail``: zero padding the payload may end with (GGUF pads its last tensor).
    """
    position = 0
    for seg in sorted(segments, key=lambda s: (s.begin, s.end)):
        if seg.begin < position:
            raise Unscannable(f"{fmt}: tensors overlap")
        while position < seg.begin:
            gap = yield _read(min(CHUNK_BYTES, seg.begin - position))
            if gap.strip(b"\0"):
                raise Unscannable(f"{fmt}: data between tensors")
            position += len(gap)
        if seg.render is None:
            if seg.end > seg.begin:
                yield (_SKIP, seg.end - seg.begin)
            out.numeric(seg.values)
        else:
            member = out.member(f"tensor {seg.name}", "text/csv")
            try:
                table = TableWriter(member, [seg.name], 1, budget, fmt)
                step = CHUNK_BYTES - CHUNK_BYTES % seg.render.itemsize
                done = seg.begin
                while done < seg.end:
                    block = yield _read(min(step, seg.end - done))
                    table.flat(np.frombuffer(block, dtype=seg.render), 0)
                    done += len(block)
            finally:
                member.close()
        position = seg.end
    rest = yield (_TAIL, tail)
    if rest.strip(b"\0"):
        raise Unscannable(f"{fmt}: bytes after the tensors")


# -- safetensors --------------------------------------------------------------------------

#: Element size in bits per safetensors dtype (safetensors ``Dtype::bitsize``).
_SAFETENSORS_BITS: Final = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "I64": 64, "U64": 64, "F64": 64,
}  # fmt: skip
#: The safetensors dtypes rendered, as numpy type strings (numpy loads when one
#: arrives: a checkpoint of floats is counted without it).
_SAFETENSORS_RENDER: Final = {"I64": "<i8", "U64": "<u8"}


def sniff_safetensors(prefix: bytes) -> bool:
    """A plausible header length, then a JSON object of tensors (or an empty one)."""
    if len(prefix) < 10:
        return False
    length = int.from_bytes(prefix[:8], "little")
    if not 2 <= length <= SAFETENSORS_MAX_HEADER_BYTES or prefix[8:9] != b"{":
        return False
    body = prefix[9 : 8 + length].lstrip(b" \t\r\n")
    if body and not body.startswith((b'"', b"}")):
        return False
    if 8 + length <= len(prefix):  # the whole header is here: it must be JSON
        try:
            return isinstance(json.loads(prefix[8 : 8 + length]), dict)
        except (ValueError, RecursionError):
            return False
    return True


def _safetensors_steps(out: Extract) -> Steps:
    length = _unpack("<Q", (yield _read(8)))
    if length > SAFETENSORS_MAX_HEADER_BYTES:
        raise Unscannable(f"safetensors: header longer than {SAFETENSORS_MAX_HEADER_BYTES} bytes")
    raw = yield _read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Unscannable("safetensors: header is not JSON") from exc
    if not isinstance(header, dict):
        raise Unscannable("safetensors: header is not a JSON object")
    text = _Text(out, "header", "safetensors")
    try:
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise Unscannable("safetensors: __metadata__ is not an object")
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise Unscannable("safetensors: __metadata__ value is not a string")
            text.line(f"{key}: {value}")
        if len(header) > MAX_TENSORS:
            raise Unscannable(f"safetensors: more than {MAX_TENSORS} tensors")
        segments = []
        for name, info in header.items():
            segments.append(_safetensors_segment(name, info))
            text.line(f"{name} {info['dtype']} {info['shape']}")
    finally:
        text.close()
    if sum(s.end - s.begin for s in segments) != max((s.end for s in segments), default=0):
        raise Unscannable("safetensors: tensors do not tile the payload")
    yield from _payload(out, "safetensors", segments, Budget("safetensors"), 0)


def _safetensors_segment(name: str, info: Any) -> Segment:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise Unscannable("safetensors: malformed tensor entry")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    bits = _SAFETENSORS_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        raise Unscannable("safetensors: unknown dtype")
    if not isinstance(shape, list) or not all(_count(n) for n in shape):
        raise Unscannable("safetensors: malformed shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(n) for n in offsets)):
        raise Unscannable("safetensors: malformed data_offsets")
    values = 1
    for n in shape:
        values *= n
    begin, end = offsets
    if end < begin or (end - begin) * 8 != values * bits:
        raise Unscannable("safetensors: tensor size does not match its shape")
    render = _SAFETENSORS_RENDER.get(dtype)
    return Segment(begin, end, name, values, None if render is None else np.dtype(render))


def _count(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def safetensors_reader(out: Extract) -> PullReader:
    """A streaming safetensors reader."""
    return PullReader("safetensors", _safetensors_steps(out))


# -- GGUF ----------------------------------------------------------------------------------

_GGUF_MAGIC: Final = b"GGUF"
#: Fixed-size GGUF value types: struct code (without byte order) and whether rendered as text.
_GGUF_SCALARS: Final = {
    0: ("B", True), 1: ("b", True), 2: ("H", True), 3: ("h", True), 4: ("I", True),
    5: ("i", True), 6: ("f", False), 7: ("?", True), 10: ("Q", True), 11: ("q", True),
    12: ("d", False),
}  # fmt: skip
_GGUF_STRING: Final = 8
_GGUF_ARRAY: Final = 9
#: ggml tensor types: (elements per block, bytes per block), as gguf-py's GGML_QUANT_SIZES.
_GGML_SIZES: Final = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56),
    30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
_GGML_I64: Final = 27
#: ggml's GGML_MAX_DIMS.
_GGML_MAX_DIMS: Final = 4


def sniff_gguf(prefix: bytes) -> bool:
    """``GGUF`` then version 2 or 3 (either byte order)."""
    return prefix[:4] == _GGUF_MAGIC and prefix[4:8] in (
        b"\x02\0\0\0", b"\x03\0\0\0", b"\0\0\0\x02", b"\0\0\0\x03",
    )  # fmt: skip


def _gguf_steps(out: Extract) -> Steps:
    head = yield _read(24)
    if head[:4] != _GGUF_MAGIC:
        raise Unscannable("gguf: bad magic")
    order = "<" if head[4:8] in (b"\x02\0\0\0", b"\x03\0\0\0") else ">"
    version = _unpack(order + "I", head[4:8])
    if version not in (2, 3):
        raise Unscannable("gguf: version not 2 or 3")
    tensors, kvs = struct.unpack(order + "QQ", head[8:24])
    if tensors > MAX_TENSORS:
        raise Unscannable(f"gguf: more than {MAX_TENSORS} tensors")
    if kvs > GGUF_MAX_KV:
        raise Unscannable(f"gguf: more than {GGUF_MAX_KV} metadata keys")
    position = 24
    alignment = 32
    text = _Text(out, "metadata", "gguf")
    try:
        for _ in range(kvs):
            key, used = yield from _gguf_string(order)
            kind = _unpack(order + "I", (yield _read(4)))
            value, size = yield from _gguf_value(out, text, order, kind, key, 0)
            position += used + 4 + size
            if key == "general.alignment":
                if not isinstance(value, int) or value <= 0 or value & (value - 1):
                    raise Unscannable("gguf: alignment is not a power of two")
                if value > GGUF_MAX_ALIGNMENT:
                    raise Unscannable(f"gguf: alignment above {GGUF_MAX_ALIGNMENT}")
                alignment = value
    finally:
        text.close()
    names = _Text(out, "tensors", "gguf")
    segments: list[Segment] = []
    try:
        for _ in range(tensors):
            name, used = yield from _gguf_string(order)
            dims_count = _unpack(order + "I", (yield _read(4)))
            if dims_count > _GGML_MAX_DIMS:
                raise Unscannable(f"gguf: tensor with more than {_GGML_MAX_DIMS} dimensions")
            dims = struct.unpack(f"{order}{dims_count}Q", (yield _read(8 * dims_count)))
            kind, offset = struct.unpack(order + "IQ", (yield _read(12)))
            position += used + 4 + 8 * dims_count + 12
            segments.append(_gguf_segment(name, dims, kind, offset, alignment, order))
            names.line(f"{name} {kind} {list(dims)}")
    finally:
        names.close()
    padding = -position % alignment
    pad = yield _read(padding)
    if pad.strip(b"\0"):
        raise Unscannable("gguf: data between the header and the tensors")
    yield from _payload(out, "gguf", segments, Budget("gguf"), alignment - 1)


def _gguf_segment(
    name: str, dims: Sequence[int], kind: int, offset: int, alignment: int, order: str
) -> Segment:
    sizes = _GGML_SIZES.get(kind)
    if sizes is None:
        raise Unscannable("gguf: unknown tensor type")
    if offset % alignment:
        raise Unscannable("gguf: misaligned tensor")
    block, block_bytes = sizes
    values = 1
    for n in dims:
        values *= n
    if values % block:
        raise Unscannable("gguf: tensor size is not a whole number of blocks")
    render = np.dtype(order + "i8") if kind == _GGML_I64 else None
    return Segment(offset, offset + values // block * block_bytes, name, values, render)


def _gguf_string(order: str) -> Generator[tuple[int, int], bytes, tuple[str, int]]:
    length = _unpack(order + "Q", (yield _read(8)))
    if length > GGUF_MAX_STRING:
        raise Unscannable(f"gguf: string longer than {GGUF_MAX_STRING} bytes")
    return decode_bytes((yield _read(length))), 8 + length


def _gguf_value(
    out: Extract, text: _Text, order: str, kind: int, key: str, depth: int
) -> Generator[tuple[int, int], bytes, tuple[object, int]]:
    """Read one metadata value, render it under ``key``; (the value if scalar, bytes used)."""
    if kind in _GGUF_SCALARS:
        code, rendered = _GGUF_SCALARS[kind]
        size = struct.calcsize(code)
        value = _unpack(order + code, (yield _read(size)))
        if rendered:
            text.line(f"{key}: {int(value)}" if key else str(int(value)))
        else:
            out.numeric(1)
        return value, size
    if kind == _GGUF_STRING:
        value, size = yield from _gguf_string(order)
        text.line(f"{key}: {value}" if key else value)
        return value, size
    if kind != _GGUF_ARRAY:
        raise Unscannable("gguf: unknown value type")
    if depth >= GGUF_MAX_NESTING:
        raise Unscannable(f"gguf: arrays nested deeper than {GGUF_MAX_NESTING}")
    element, count = struct.unpack(order + "IQ", (yield _read(12)))
    if count > GGUF_MAX_ARRAY:
        raise Unscannable(f"gguf: array of more than {GGUF_MAX_ARRAY} values")
    used = 12
    text.line(f"{key}:")
    if element in _GGUF_SCALARS:
        code, rendered = _GGUF_SCALARS[element]
        dtype = np.dtype(order + code) if code != "?" else np.dtype(np.bool_)
        per = max(1, CHUNK_BYTES // dtype.itemsize)
        for start in range(0, count, per):
            n = min(per, count - start)
            block = np.frombuffer((yield _read(n * dtype.itemsize)), dtype=dtype)
            if rendered:
                text.line(value_text(block, 0, 1).rstrip("\n"))
            else:
                out.numeric(n)
        return None, used + count * dtype.itemsize
    for _ in range(count):
        _, size = yield from _gguf_value(out, text, order, element, "", depth + 1)
        used += size
    return None, used


def gguf_reader(out: Extract) -> PullReader:
    """A streaming GGUF reader."""
    return PullReader("gguf", _gguf_steps(out))


# -- pickle (opcodes walked, never executed) ------------------------------------------------

_NO_ARG: Final = 0
_FIXED: Final = 1  # struct code
_SIZED: Final = 2  # length (struct code) then that many bytes
_LINES: Final = 3  # newline-terminated text arguments (count)

#: Every opcode of protocols 0-5 (pickletools.opcodes): how its argument is stored
#: and what it is (``str``, ``bytes``, ``int``, ``float``, ``global``, ``put``, ``get``,
#: ``persid``, ``proto``, ``stop`` or ``-``).
_OPCODES: Final[dict[int, tuple[int, str, str]]] = {
    ord("I"): (_LINES, "1", "int"), ord("J"): (_FIXED, "<i", "int"),
    ord("K"): (_FIXED, "<B", "int"), ord("M"): (_FIXED, "<H", "int"),
    ord("L"): (_LINES, "1", "int"), 0x8A: (_SIZED, "<B", "long"), 0x8B: (_SIZED, "<i", "long"),
    ord("S"): (_LINES, "1", "str"), ord("T"): (_SIZED, "<i", "bytes"),
    ord("U"): (_SIZED, "<B", "bytes"), ord("B"): (_SIZED, "<I", "bytes"),
    ord("C"): (_SIZED, "<B", "bytes"), 0x8E: (_SIZED, "<Q", "bytes"), 0x96: (_SIZED, "<Q", "bytes"),
    0x97: (_NO_ARG, "", "-"), 0x98: (_NO_ARG, "", "-"), ord("N"): (_NO_ARG, "", "-"),
    0x88: (_NO_ARG, "", "-"), 0x89: (_NO_ARG, "", "-"), ord("V"): (_LINES, "1", "str"),
    0x8C: (_SIZED, "<B", "str"), ord("X"): (_SIZED, "<I", "str"), 0x8D: (_SIZED, "<Q", "str"),
    ord("F"): (_LINES, "1", "float"), ord("G"): (_FIXED, ">d", "float"),
    ord("g"): (_LINES, "1", "get"), ord("h"): (_FIXED, "<B", "get"),
    ord("j"): (_FIXED, "<I", "get"), ord("p"): (_LINES, "1", "put"),
    ord("q"): (_FIXED, "<B", "put"), ord("r"): (_FIXED, "<I", "put"),
    0x94: (_NO_ARG, "", "memoize"), 0x82: (_FIXED, "<B", "-"), 0x83: (_FIXED, "<H", "-"),
    0x84: (_FIXED, "<i", "-"), ord("c"): (_LINES, "2", "global"),
    ord("i"): (_LINES, "2", "global"), 0x93: (_NO_ARG, "", "stack_global"),
    0x80: (_FIXED, "<B", "proto"), ord("."): (_NO_ARG, "", "stop"), 0x95: (_FIXED, "<Q", "-"),
    ord("P"): (_LINES, "1", "persid"), ord("Q"): (_NO_ARG, "", "persid"),
}  # fmt: skip
for _code in b"]ael)t\x85\x86\x87}dsu\x8f\x90\x9102(1Rbo\x81\x92":
    _OPCODES[_code] = (_NO_ARG, "", "-")

#: Storage classes PyTorch pickles: element size and whether rendered (64-bit integers).
TORCH_STORAGES: Final = {
    "DoubleStorage": (8, None), "FloatStorage": (4, None), "HalfStorage": (2, None),
    "BFloat16Storage": (2, None), "LongStorage": (8, "i8"), "IntStorage": (4, None),
    "ShortStorage": (2, None), "CharStorage": (1, None), "ByteStorage": (1, None),
    "BoolStorage": (1, None), "ComplexFloatStorage": (8, None), "ComplexDoubleStorage": (16, None),
    "QInt8Storage": (1, None), "QUInt8Storage": (1, None), "QInt32Storage": (4, None),
    "QUInt4x2Storage": (1, None), "QUInt2x4Storage": (1, None), "UntypedStorage": (1, None),
    "UInt16Storage": (2, None), "UInt32Storage": (4, None), "UInt64Storage": (8, "u8"),
    "Float8_e5m2Storage": (1, None), "Float8_e4m3fnStorage": (1, None),
    "Float8_e5m2fnuzStorage": (1, None), "Float8_e4m3fnuzStorage": (1, None),
}  # fmt: skip


def sniff_pickle(prefix: bytes) -> bool:
    """The PROTO opcode with protocol 2-5 (PyTorch writes 2), then a known opcode."""
    return (
        len(prefix) >= 3
        and prefix[0] == 0x80
        and 2 <= prefix[1] <= 5
        and prefix[2] in _OPCODES
        and prefix[2] != ord(".")
    )


@dataclass
class PickleFacts:
    """What a walk learnt beyond text: the PyTorch storages the pickle refers to."""

    storages: dict[str, tuple[str, int]]  # key -> (storage class, elements)


#: Bytes of each fixed-size argument or length prefix, by struct code.
_ARG_BYTES: Final = {code: struct.calcsize(code) for code in ("<B", "<H", "<i", "<I", "<Q", ">d")}


class PickleWalker:
    """A streaming pickle opcode walker (a :class:`StreamReader`).

    Resumable over any chunking: each ``feed`` walks every opcode whose
    argument is complete and keeps the rest (at most one argument, bounded by
    :data:`PICKLE_MAX_STRING`) for the next. Nothing is ever built or imported.

    Args:
        out: where the text goes.
        facts: filled with the PyTorch storages the pickle refers to.
    """

    def __init__(self, out: Extract, facts: PickleFacts | None = None) -> None:
        self._out = out
        self.facts = facts if facts is not None else PickleFacts({})
        self._text = _Text(out, "pickle", "pickle")
        self._buf = bytearray()
        self._opcodes = 0
        self._memo: dict[int, object] = {}
        self._recent: list[object] = []  # the last scalars pushed (PyTorch storage ids)
        self._last: object = None
        self._blobs = 0
        self._stopped = False

    def feed(self, data: bytes) -> None:
        """The next bytes of the pickle."""
        try:
            if self._stopped:
                if data:
                    raise Unscannable("pickle: bytes after the end")
                return
            self._buf += data
            done = self._walk(self._buf)
            del self._buf[:done]
            if self._buf and self._ended():
                raise Unscannable("pickle: bytes after the end")
        except Unscannable:
            self._text.close()
            raise

    def _ended(self) -> bool:
        """Whether STOP was walked."""
        return self._stopped

    def finish(self) -> None:
        """The pickle ended: it must have ended with STOP."""
        self._text.close()
        if not self._stopped:
            raise Unscannable("pickle: truncated")

    def _walk(self, buf: bytearray) -> int:
        """Walk complete opcodes of ``buf``; the offset of the first one not walked."""
        pos, end = 0, len(buf)
        while pos < end:
            spec = _OPCODES.get(buf[pos])
            if spec is None:
                raise Unscannable("pickle: unknown opcode")
            how, arg, what = spec
            at = pos + 1
            value: object = None
            if how == _FIXED:
                size = _ARG_BYTES[arg]
                if at + size > end:
                    break
                value = struct.unpack_from(arg, buf, at)[0]
                at += size
            elif how == _SIZED:
                size = _ARG_BYTES[arg]
                if at + size > end:
                    break
                length = struct.unpack_from(arg, buf, at)[0]
                if length < 0 or length > PICKLE_MAX_STRING:
                    raise Unscannable(f"pickle: value longer than {PICKLE_MAX_STRING} bytes")
                at += size
                if at + length > end:
                    break
                value = bytes(buf[at : at + length])
                at += length
            elif how == _LINES:
                lines: list[str] = []
                for _ in range(int(arg)):
                    newline = buf.find(b"\n", at, at + PICKLE_MAX_LINE + 1)
                    if newline < 0:
                        if end - at > PICKLE_MAX_LINE:
                            raise Unscannable(f"pickle: text line over {PICKLE_MAX_LINE} bytes")
                        break
                    lines.append(buf[at:newline].decode("latin-1"))
                    at = newline + 1
                if len(lines) < int(arg):
                    break
                value = lines
            pos = at
            self._opcodes += 1
            if self._opcodes > PICKLE_MAX_OPCODES:
                raise Unscannable(f"pickle: more than {PICKLE_MAX_OPCODES} opcodes")
            if what == "stop":
                self._stopped = True
                break
            self._step(what, value)
        return pos

    def _step(self, what: str, value: object) -> None:
        """Account for one walked opcode."""
        self._last = _pickle_value(self._out, self._text, what, value, self._memo, self._last)
        if what == "bytes" and isinstance(self._last, _Blob):
            self._blobs += 1
            if self._blobs > PICKLE_MAX_BLOBS:
                raise Unscannable(f"pickle: more than {PICKLE_MAX_BLOBS} binary values")
        if what in ("str", "bytes", "int", "long", "global", "stack_global", "get"):
            self._recent = [*self._recent[-5:], self._last]
        elif what == "persid":
            _torch_storage(self._recent, self.facts)
            self._recent = []
        elif what not in ("put", "memoize", "-"):
            self._recent = []


class _Blob:
    """A binary ``bytes`` value handed to the decoder (a marker in the memo)."""


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


def _pickle_value(
    out: Extract, text: _Text, what: str, value: object, memo: dict[int, object], last: object
) -> object:
    """Render one opcode's value; returns the scalar now on top of the stack (or None)."""
    if what == "str":
        if isinstance(value, list):  # protocol 0 UNICODE / STRING: escaped text
            raw = value[0]
            if len(raw) >= 2 and raw[0] in "'\"" and raw[-1] == raw[0]:  # STRING is repr-quoted
                raw = raw[1:-1]
            string = raw.encode("latin-1").decode("raw_unicode_escape", errors="replace")
        else:
            assert isinstance(value, bytes)
            string = value.decode("utf-8", errors="replace")
        text.line(csv_cell(string))
        return string
    if what == "bytes":
        assert isinstance(value, bytes)
        if _texty(value):
            string = decode_bytes(value)
            text.line(csv_cell(string))
            return string
        nested = out.nested("pickled bytes")
        nested.write(value)
        nested.close()
        return _Blob()
    if what in ("int", "long"):
        if isinstance(value, list):
            number = value[0].rstrip("L")
            try:
                integer: int = int(number, 0) if number[:2] in ("0x", "0X") else int(number)
            except ValueError as exc:
                if number in ("00", "01"):  # protocol 0 False/True
                    return None
                raise Unscannable("pickle: malformed integer") from exc
        elif what == "long":
            assert isinstance(value, bytes)
            if len(value) > 64:  # a long integer past 512 bits is no identifier
                text.line(value.hex())
                return None
            integer = int.from_bytes(value, "little", signed=True)
        else:
            assert isinstance(value, int)
            integer = value
        text.line(str(integer))
        return integer
    if what == "float":
        out.numeric(1)
        return None
    if what == "global":
        assert isinstance(value, list)
        text.line(f"{value[0]}.{value[1]}")
        return _Global(value[0], value[1])
    if what == "stack_global":
        return None  # its two strings were just rendered; PyTorch (protocol 2) uses GLOBAL
    if what == "put" or what == "memoize":
        index = len(memo) if what == "memoize" else _memo_index(value)
        if len(memo) < PICKLE_MAX_MEMO and _small(last):
            memo[index] = last
        return last
    if what == "get":
        return memo.get(_memo_index(value))
    return None


def _small(value: object) -> bool:
    """A memo value worth keeping (for recognising PyTorch storage ids): short scalars."""
    return isinstance(value, (int, _Global)) or (isinstance(value, str) and len(value) <= 64)


def _memo_index(value: object) -> int:
    if isinstance(value, list):
        try:
            return int(value[0])
        except ValueError as exc:
            raise Unscannable("pickle: malformed memo index") from exc
    assert isinstance(value, int)
    return value


def _texty(value: bytes) -> bool:
    """Bytes that are text: valid UTF-8 (or GB18030) without control characters but whitespace."""
    if not value:
        return True
    try:
        string = value.decode("utf-8")
    except UnicodeDecodeError:
        try:
            string = value.decode("gb18030")
        except UnicodeDecodeError:
            return False
    return all(c >= " " or c in "\t\r\n" for c in string)


def _torch_storage(recent: list[object], facts: PickleFacts) -> None:
    """Record a PyTorch persistent id ``('storage', torch.XStorage, key, location, numel)``."""
    if len(recent) < 5:
        return
    tag, cls, key, _location, numel = recent[-5:]
    if (
        tag == "storage"
        and isinstance(cls, _Global)
        and cls.module == "torch"
        and isinstance(key, str)
        and isinstance(numel, int)
        and len(facts.storages) < PYTORCH_MAX_MEMBERS
    ):
        facts.storages[key] = (cls.name, numel)


def pickle_reader(out: Extract) -> PickleWalker:
    """A streaming pickle opcode walker."""
    return PickleWalker(out)


# -- PyTorch zip checkpoints ---------------------------------------------------------------------


def sniff_pytorch(prefix: bytes) -> bool:
    """A zip whose first member is ``<archive>/data.pkl`` (``torch.save`` since 1.6)."""
    if prefix[:4] != b"PK\x03\x04" or len(prefix) < 30:
        return False
    name_length = int.from_bytes(prefix[26:28], "little")
    name = prefix[30 : 30 + name_length]
    return len(name) == name_length and (name == b"data.pkl" or name.endswith(b"/data.pkl"))


def read_pytorch(source: RandomAccess, out: Extract) -> None:
    """Read a PyTorch zip checkpoint: walk ``data.pkl``, count storages, pass other members on.

    Raises:
        Unscannable: not a readable zip, no ``data.pkl``, a storage of the wrong
            size, or a bound reached.
    """
    try:
        archive = zipfile.ZipFile(AccessFile(source))
        infos = archive.infolist()
    except Unscannable:
        raise
    except Exception as exc:  # zipfile raises BadZipFile, OSError, ValueError, ...
        raise Unscannable("pytorch: not a readable zip") from exc
    if len(infos) > PYTORCH_MAX_MEMBERS:
        raise Unscannable(f"pytorch: more than {PYTORCH_MAX_MEMBERS} members")
    pickles = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
    if not pickles:
        raise Unscannable("pytorch: no data.pkl")
    root = pickles[0].filename[: -len("data.pkl")]
    facts = PickleFacts({})
    try:
        _stream_member(archive, pickles[0], PickleWalker(out, facts))
        byteorder = "<"
        budget = Budget("pytorch")
        for info in infos:
            if info is pickles[0] or info.is_dir():
                continue
            key = info.filename[len(root) + len("data/") :]
            if info.filename.startswith(root + "data/") and key in facts.storages:
                _storage(archive, info, key, facts.storages[key], byteorder, out, budget)
                continue
            if info.filename == root + "byteorder" and info.file_size <= 16:
                byteorder = ">" if _member_bytes(archive, info).strip() == b"big" else "<"
            nested = out.nested(info.filename)
            try:
                with _open(archive, info) as stream:
                    while piece := stream.read(CHUNK_BYTES):
                        nested.write(piece)
            finally:
                nested.close()
    except Unscannable:
        raise
    except Exception as exc:  # zipfile: bad CRC, unsupported compression, encryption, ...
        raise Unscannable("pytorch: corrupt member") from exc


def _open(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    """Open a member, refusing one that would expand more than :data:`PYTORCH_MAX_RATIO`."""
    if info.flag_bits & 0x1:
        raise Unscannable("pytorch: encrypted member")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > PYTORCH_MAX_RATIO * max(
        info.compress_size, 1 << 16
    ):
        raise Unscannable(f"pytorch: member expands more than {PYTORCH_MAX_RATIO}:1")
    return archive.open(info)


def _member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with _open(archive, info) as stream:
        data: bytes = stream.read(info.file_size + 1)
        return data


def _stream_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, reader: PickleWalker) -> None:
    with _open(archive, info) as stream:
        while piece := stream.read(CHUNK_BYTES):
            reader.feed(piece)
    reader.finish()


def _storage(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    key: str,
    storage: tuple[str, int],
    byteorder: str,
    out: Extract,
    budget: Budget,
) -> None:
    """One tensor storage: counted, or rendered when it holds 64-bit integers."""
    cls, values = storage
    size, render = TORCH_STORAGES.get(cls, (1, None))
    if cls in TORCH_STORAGES and values * size != info.file_size:
        raise Unscannable("pytorch: storage size does not match its pickle")
    if render is None:
        out.numeric(values if cls in TORCH_STORAGES else info.file_size)
        return
    dtype = np.dtype(byteorder + render)
    member = out.member(f"storage {key}", "text/csv")
    try:
        table = TableWriter(member, [f"storage {key}"], 1, budget, "pytorch")
        with _open(archive, info) as stream:
            pending = b""
            while piece := stream.read(CHUNK_BYTES):
                pending += piece
                usable = len(pending) - len(pending) % dtype.itemsize
                table.flat(np.frombuffer(pending[:usable], dtype=dtype), 0)
                pending = pending[usable:]
    finally:
        member.close()


# -- ONNX (protobuf wire format) ------------------------------------------------------------------

# Field kinds of the schema: text, bytes-as-text, submessage, int64 varint, packed ints,
# packed 32/64-bit floats, tensor payload bytes.
_STR, _MSG, _INT, _PACKED_INT, _PACKED_F32, _PACKED_F64, _RAW, _SKIPPED = range(8)
_Schema = dict[int, tuple[int, str]]

_ENTRY: Final[_Schema] = {1: (_STR, ""), 2: (_STR, "")}
_OPSET: Final[_Schema] = {1: (_STR, ""), 2: (_INT, "")}
_DIMENSION: Final[_Schema] = {1: (_INT, ""), 2: (_STR, ""), 3: (_STR, "")}
_SHAPE: Final[_Schema] = {1: (_MSG, "dimension")}
_TYPE_TENSOR: Final[_Schema] = {1: (_INT, ""), 2: (_MSG, "shape")}
_TYPE_SEQUENCE: Final[_Schema] = {1: (_MSG, "type")}
_TYPE_MAP: Final[_Schema] = {1: (_INT, ""), 2: (_MSG, "type")}
_TYPE: Final[_Schema] = {
    1: (_MSG, "type_tensor"), 4: (_MSG, "type_sequence"), 5: (_MSG, "type_map"),
    8: (_MSG, "type_tensor"), 9: (_MSG, "type_sequence"), 6: (_STR, ""),
}  # fmt: skip
_VALUE_INFO: Final[_Schema] = {1: (_STR, ""), 2: (_MSG, "type"), 3: (_STR, ""), 4: (_MSG, "entry")}
_TENSOR: Final[_Schema] = {
    1: (_PACKED_INT, "dims"), 2: (_INT, "data_type"), 3: (_SKIPPED, ""), 4: (_PACKED_F32, ""),
    5: (_PACKED_INT, "int32_data"), 6: (_STR, ""), 7: (_PACKED_INT, "int64_data"), 8: (_STR, ""),
    9: (_RAW, ""), 10: (_PACKED_F64, ""), 11: (_PACKED_INT, "uint64_data"), 12: (_STR, ""),
    13: (_MSG, "entry"), 14: (_INT, ""), 16: (_MSG, "entry"),
}  # fmt: skip
_SPARSE: Final[_Schema] = {1: (_MSG, "tensor"), 2: (_MSG, "tensor"), 3: (_PACKED_INT, "dims")}
_ATTRIBUTE: Final[_Schema] = {
    1: (_STR, ""), 21: (_STR, ""), 13: (_STR, ""), 20: (_INT, ""), 2: (_PACKED_F32, ""),
    3: (_INT, ""), 4: (_STR, ""), 5: (_MSG, "tensor"), 6: (_MSG, "graph"), 22: (_MSG, "sparse"),
    14: (_MSG, "type"), 7: (_PACKED_F32, ""), 8: (_PACKED_INT, "ints"), 9: (_STR, ""),
    10: (_MSG, "tensor"), 11: (_MSG, "graph"), 23: (_MSG, "sparse"), 15: (_MSG, "type"),
}  # fmt: skip
_NODE: Final[_Schema] = {
    1: (_STR, ""), 2: (_STR, ""), 3: (_STR, ""), 4: (_STR, ""), 7: (_STR, ""),
    5: (_MSG, "attribute"), 6: (_STR, ""), 8: (_STR, ""), 9: (_MSG, "entry"),
}  # fmt: skip
_ANNOTATION: Final[_Schema] = {1: (_STR, ""), 2: (_MSG, "entry")}
_GRAPH: Final[_Schema] = {
    1: (_MSG, "node"), 2: (_STR, ""), 5: (_MSG, "tensor"), 15: (_MSG, "sparse"),
    10: (_STR, ""), 11: (_MSG, "value_info"), 12: (_MSG, "value_info"),
    13: (_MSG, "value_info"), 14: (_MSG, "annotation"), 16: (_MSG, "entry"),
}  # fmt: skip
_TRAINING: Final[_Schema] = {
    1: (_MSG, "graph"), 2: (_MSG, "graph"), 3: (_MSG, "entry"), 4: (_MSG, "entry"),
}  # fmt: skip
_FUNCTION: Final[_Schema] = {
    1: (_STR, ""), 4: (_STR, ""), 5: (_STR, ""), 6: (_STR, ""), 11: (_MSG, "attribute"),
    7: (_MSG, "node"), 8: (_STR, ""), 9: (_MSG, "opset"), 10: (_STR, ""), 13: (_STR, ""),
    12: (_MSG, "value_info"), 14: (_MSG, "entry"),
}  # fmt: skip
_MODEL: Final[_Schema] = {
    1: (_INT, ""), 2: (_STR, ""), 3: (_STR, ""), 4: (_STR, ""), 5: (_INT, ""), 6: (_STR, ""),
    7: (_MSG, "graph"), 8: (_MSG, "opset"), 14: (_MSG, "entry"), 20: (_MSG, "training"),
    25: (_MSG, "function"),
}  # fmt: skip
_SCHEMAS: Final[dict[str, _Schema]] = {
    "model": _MODEL, "graph": _GRAPH, "node": _NODE, "attribute": _ATTRIBUTE,
    "tensor": _TENSOR, "sparse": _SPARSE, "value_info": _VALUE_INFO, "type": _TYPE,
    "type_tensor": _TYPE_TENSOR, "type_sequence": _TYPE_SEQUENCE, "type_map": _TYPE_MAP,
    "shape": _SHAPE, "dimension": _DIMENSION, "entry": _ENTRY, "opset": _OPSET,
    "annotation": _ANNOTATION, "training": _TRAINING, "function": _FUNCTION,
}  # fmt: skip
#: Wire type each schema kind must arrive with (packed fields also accept one unpacked value).
_WIRE_TYPES: Final = {
    _STR: (2,), _MSG: (2,), _INT: (0,), _PACKED_INT: (0, 2), _PACKED_F32: (5, 2),
    _PACKED_F64: (1, 2), _RAW: (2,), _SKIPPED: (2,),
}  # fmt: skip
#: ONNX TensorProto.DataType: element bytes of raw_data, and the 64-bit integer types rendered.
_ONNX_SIZES: Final = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8,
    15: 16, 16: 2,
}  # fmt: skip
_ONNX_INT64: Final = {7: "<i8", 13: "<u8"}
#: ModelProto fields a file may start with after ir_version (tag bytes, as protobuf writes them).
_MODEL_TAGS: Final = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, next position). Raises IndexError when cut."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def sniff_onnx(prefix: bytes) -> bool:
    """``ir_version`` (field 1, a small varint) first, then at least one more ModelProto
    field, every field in the prefix well formed (a field may run past the prefix)."""
    if prefix[:1] != b"\x08":
        return False
    try:
        version, pos = _varint(prefix, 1)
    except (IndexError, ValueError):
        return False
    if not 1 <= version <= 64 or pos >= len(prefix) or prefix[pos] not in _MODEL_TAGS:
        return False
    fields = 1
    while pos < len(prefix) and fields < 16:
        try:
            key, pos = _varint(prefix, pos)
            number, wire = key >> 3, key & 7
            spec = _MODEL.get(number)
            if spec is None or wire not in _WIRE_TYPES[spec[0]]:
                return False
            if wire == 0:
                _, pos = _varint(prefix, pos)
            else:
                length, pos = _varint(prefix, pos)
                if spec[0] == _STR and pos + length <= len(prefix):
                    prefix[pos : pos + length].decode("utf-8")
                pos += length
        except IndexError:  # cut by the end of the prefix
            break
        except (ValueError, UnicodeDecodeError):
            return False
        fields += 1
    return fields >= 2


class _Cursor:
    """Buffered reads of a :class:`RandomAccess` (one 64 KiB window)."""

    WINDOW: Final = 64 << 10

    def __init__(self, source: RandomAccess) -> None:
        self._source = source
        self._start = 0
        self._data = b""

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (must be inside the member)."""
        if offset + length > self._source.size:
            raise Unscannable("onnx: field runs past the end")
        if length > self.WINDOW:
            return self._source.read_at(offset, length)
        if not (self._start <= offset and offset + length <= self._start + len(self._data)):
            self._start = offset
            self._data = self._source.read_at(offset, self.WINDOW)
        at = offset - self._start
        return self._data[at : at + length]

    def varint(self, offset: int, end: int) -> tuple[int, int]:
        """A varint at ``offset`` within ``[offset, end)``."""
        head = self.read(offset, min(10, end - offset))
        try:
            value, used = _varint(head, 0)
        except (IndexError, ValueError) as exc:
            raise Unscannable("onnx: malformed varint") from exc
        return value, offset + used


class _OnnxWalk:
    def __init__(self, source: RandomAccess, out: Extract) -> None:
        self._cursor = _Cursor(source)
        self._out = out
        self._text = _Text(out, "onnx", "onnx")
        self._fields = 0
        self._budget = Budget("onnx")

    def run(self, size: int) -> None:
        try:
            self._message("model", 0, size, 0)
        finally:
            self._text.close()

    def _message(self, kind: str, start: int, end: int, depth: int) -> dict[str, Any]:
        """Walk one message; returns the tensor facts gathered (dims, data type, payloads)."""
        if depth > ONNX_MAX_DEPTH:
            raise Unscannable(f"onnx: messages nested deeper than {ONNX_MAX_DEPTH}")
        schema = _SCHEMAS[kind]
        facts: dict[str, Any] = {"dims": [], "raw": [], "int64": [], "count": 0}
        strings: list[str] = []
        pos = start
        while pos < end:
            self._fields += 1
            if self._fields > ONNX_MAX_FIELDS:
                raise Unscannable(f"onnx: more than {ONNX_MAX_FIELDS} fields")
            key, pos = self._cursor.varint(pos, end)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = self._cursor.varint(pos, end)
                spec = schema.get(number)
                if spec is not None and spec[0] == _PACKED_INT:
                    _tensor_ints(facts, spec[1], [value])
                elif spec is not None and spec[0] == _INT:
                    facts[f"int{number}"] = value
                    if kind in ("attribute", "model"):
                        self._text.line(str(value))
                continue
            if wire in (1, 5):
                pos += 8 if wire == 1 else 4
                if kind in ("tensor", "attribute"):
                    self._out.numeric(1)
                continue
            if wire != 2:
                raise Unscannable("onnx: unsupported wire type")
            length, pos = self._cursor.varint(pos, end)
            field_end = pos + length
            if field_end > end:
                raise Unscannable("onnx: field runs past its message")
            spec = schema.get(number)
            if spec is not None:
                self._field(kind, spec, pos, field_end, depth, facts, strings)
            pos = field_end
        if pos != end:
            raise Unscannable("onnx: field runs past its message")
        if kind == "entry" and strings:
            self._text.line(": ".join(strings))
        elif kind == "tensor":
            self._tensor(facts)
        return facts

    def _field(
        self,
        kind: str,
        spec: tuple[int, str],
        start: int,
        end: int,
        depth: int,
        facts: dict[str, Any],
        strings: list[str],
    ) -> None:
        what, sub = spec
        if what == _MSG:
            self._message(sub, start, end, depth + 1)
        elif what == _STR:
            if end - start > ONNX_MAX_STRING:
                raise Unscannable(f"onnx: string longer than {ONNX_MAX_STRING} bytes")
            string = decode_bytes(self._cursor.read(start, end - start))
            if kind == "entry":
                strings.append(string)
            else:
                self._text.line(csv_cell(string))
        elif what == _PACKED_INT:
            _tensor_ints(facts, sub, self._packed_varints(start, end))
        elif what in (_PACKED_F32, _PACKED_F64):
            self._out.numeric((end - start) // (4 if what == _PACKED_F32 else 8))
        elif what == _RAW:
            facts["raw"].append((start, end))

    def _packed_varints(self, start: int, end: int) -> list[int]:
        values = []
        pos = start
        while pos < end:
            value, pos = self._cursor.varint(pos, end)
            values.append(value)
            self._fields += 1
            if self._fields > ONNX_MAX_FIELDS:
                raise Unscannable(f"onnx: more than {ONNX_MAX_FIELDS} fields")
        if pos != end:
            raise Unscannable("onnx: packed field runs past its end")
        return values

    def _tensor(self, facts: dict[str, Any]) -> None:
        """A tensor's payload: 64-bit integers rendered one per line, the rest counted."""
        data_type = facts.get("int2", 0)
        for values in facts["int64"]:
            if data_type == 13:  # UINT64: the varints are the values
                block = np.array(values, dtype=np.uint64)
            else:  # int64 varints are two's complement in 64 bits (protobuf encoding)
                block = np.array(values, dtype=np.uint64).view(np.int64)
            self._render(block)
        self._out.numeric(facts["count"])
        render = _ONNX_INT64.get(data_type)
        for start, end in facts["raw"]:
            if render is None:
                self._out.numeric((end - start) // _ONNX_SIZES.get(data_type, 1))
                continue
            if (end - start) % 8:
                raise Unscannable("onnx: raw_data is not whole 64-bit values")
            for chunk in range(start, end, CHUNK_BYTES):
                raw = self._cursor.read(chunk, min(CHUNK_BYTES, end - chunk))
                self._render(np.frombuffer(raw, dtype=render))

    def _render(self, values: np.ndarray[Any, Any]) -> None:
        if len(values):
            self._budget.spend(len(values))
            self._text.line(value_text(values, 0, 1).rstrip("\n"))


def _tensor_ints(facts: dict[str, Any], field: str, values: list[int]) -> None:
    """Collect a TensorProto's (or attribute's) integer fields: dims, 64-bit data, int32 data."""
    if field == "dims":
        facts["dims"].extend(values)
    elif field in ("int64_data", "uint64_data", "ints"):
        facts["int64"].append([v & ((1 << 64) - 1) for v in values])
    elif field == "int32_data":
        facts["count"] += len(values)


def read_onnx(source: RandomAccess, out: Extract) -> None:
    """Read an ONNX model's text (names, doc strings, metadata, string tensors).

    Raises:
        Unscannable: not a well-formed ModelProto, or a bound was reached.
    """
    try:
        _OnnxWalk(source, out).run(source.size)
    except Unscannable:
        raise
    except RecursionError as exc:
        raise Unscannable("onnx: messages nested too deep") from exc


register(
    Format("safetensors", SAFETENSORS_MEDIA_TYPE, sniff_safetensors, stream=safetensors_reader)
)
register(Format("gguf", GGUF_MEDIA_TYPE, sniff_gguf, stream=gguf_reader, leads=_GGUF_MAGIC[:1]))
register(
    Format(
        "pytorch", PYTORCH_MEDIA_TYPE, sniff_pytorch, random=read_pytorch, priority=10, leads=b"P"
    )
)
# Pickle's PROTO opcode; ONNX's first field, ir_version (field 1, varint: tag 0x08).
register(Format("pickle", PICKLE_MEDIA_TYPE, sniff_pickle, stream=pickle_reader, leads=b"\x80"))
register(Format("onnx", ONNX_MEDIA_TYPE, sniff_onnx, random=read_onnx, priority=-10, leads=b"\x08"))

__all__ = [
    "PickleFacts",
    "PickleWalker",
    "PullReader",
    "Segment",
    "gguf_reader",
    "pickle_reader",
    "read_onnx",
    "read_pytorch",
    "safetensors_reader",
    "sniff_gguf",
    "sniff_onnx",
    "sniff_pickle",
    "sniff_pytorch",
    "sniff_safetensors",
]
