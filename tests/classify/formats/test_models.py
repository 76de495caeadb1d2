"""Model checkpoints: safetensors, GGUF, pickle, PyTorch zip, ONNX (formats/models.py).

Files come from each format's own writer (safetensors, gguf, onnx, pickle; a
PyTorch checkpoint is laid out as ``torch.save`` writes it) with identifiers
from the project's generators; readers run directly (exact text, chunk
invariance, bounds) and through the whole decoder (labels).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import pickle
import random
import struct
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import onnx
import pytest
import safetensors.numpy as safetensors_numpy
from hypothesis import given
from hypothesis import strategies as st

from gateway.bench.classify import _person
from gateway.classify import DetectorSet, Scanner
from gateway.classify.formats import identify, models
from gateway.classify.formats.base import BytesAccess, Unscannable
from gateway.classify.formats.testing import read_random, read_stream

DETECTORS = DetectorSet.build()
RNG = random.Random(7)
PEOPLE = [_person(RNG, n) for n in range(30)]
IDS = [p[0] for p in PEOPLE]
PHONES = [int(p[1]) for p in PEOPLE]


def scan(data: bytes, chunk: int = 0) -> tuple[str, dict[str, int], tuple[str, ...], int]:
    """Through the whole decoder: (content type, label counts, unscannable reasons, numbers)."""
    with Scanner(DETECTORS, secret=b"k" * 32) as scanner:
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            scanner.feed(data[i : i + step])
        summary = scanner.finish(BytesAccess(data))
    counts = {label: stats.count for label, stats in summary.labels.items()}
    return summary.content.type, counts, summary.unscannable, summary.numeric_values


def mutate(original: bytes, data: st.DataObject) -> bytes:
    """Flip, overwrite, cut or insert bytes: what a corrupt or hostile copy looks like."""
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        action = data.draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        if action == "flip" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "word":
            mutated[at : at + 8] = data.draw(st.sampled_from([b"\xff" * 8, b"\0" * 8, b"\x7f" * 8]))
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(mutated)


def ok_or_unscannable(run: Any, *args: Any) -> None:
    with contextlib.suppress(Unscannable):
        run(*args)


# -- safetensors ---------------------------------------------------------------------------------


def safetensors_file(clean: bool = False) -> bytes:
    tensors = {
        "embed.weight": np.ones((4, 8), dtype=np.float32),
        "position_ids": np.arange(16, dtype=np.int64),
        "quant": np.zeros(10, dtype=np.int32),
    }
    metadata = {"format": "pt", "trained_by": "lab 7"}
    if not clean:
        tensors["cohort.phones"] = np.array(PHONES[:10], dtype=np.int64)
        metadata["contact"] = f"owner {IDS[0]} tel {PHONES[10]}"
    return safetensors_numpy.save(tensors, metadata=metadata)


def test_safetensors_header_metadata_and_int64_tensors() -> None:
    data = safetensors_file()
    assert identify(data[: 64 << 10]).name == "safetensors"  # type: ignore[union-attr]
    texts = {}
    for chunk in (0, 1, 13, 4096):
        out = read_stream(models.safetensors_reader, data, chunk)
        texts[chunk] = [(m.name, m.text) for m in out.members]
        assert out.numeric_values == 32 + 10
    assert len({repr(t) for t in texts.values()}) == 1  # chunk invariance
    members = dict(texts[0])
    assert f"contact: owner {IDS[0]} tel {PHONES[10]}" in members["header"]
    assert "embed.weight F32 [4, 8]" in members["header"]
    assert members["tensor cohort.phones"].splitlines()[1:] == [str(p) for p in PHONES[:10]]
    assert members["tensor position_ids"].splitlines()[1:] == [str(i) for i in range(16)]
    kind, labels, unscannable, _ = scan(data, chunk=100)
    assert (kind, labels, unscannable) == (
        "application/vnd.safetensors",
        {"pii.cn_phone": 11, "pii.cn_resident_id": 1},
        (),
    )


def test_safetensors_clean_file_has_no_findings() -> None:
    assert scan(safetensors_file(clean=True))[1:3] == ({}, ())


def _raw_safetensors(header: object, payload: bytes = b"", length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + payload


@pytest.mark.parametrize(
    "data",
    [
        safetensors_file()[:-1],  # truncated payload
        safetensors_file() + b"\0",  # bytes after the tensors
        _raw_safetensors(
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"", 1 << 40
        ),
        _raw_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
        _raw_safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        _raw_safetensors({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        _raw_safetensors({"__metadata__": {"k": 1}}),
        _raw_safetensors([1, 2]),
        struct.pack("<Q", 40) + b"{" * 40,
        struct.pack("<Q", 100_000) + b"[" * 100_000,
        _raw_safetensors(
            {
                "a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]},
                "b": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
        ),
    ],
)
def test_safetensors_bad_files_are_unscannable(data: bytes) -> None:
    with pytest.raises(Unscannable):
        read_stream(models.safetensors_reader, data)


@given(st.data())
def test_safetensors_mutations_never_crash(data: st.DataObject) -> None:
    mutated = mutate(safetensors_file(), data)
    ok_or_unscannable(
        read_stream, models.safetensors_reader, mutated, data.draw(st.sampled_from([0, 7]))
    )


# -- GGUF ----------------------------------------------------------------------------------------


def gguf_file(tmp_path: Path, clean: bool = False, big_endian: bool = False) -> bytes:
    path = tmp_path / f"model-{clean}-{big_endian}.gguf"
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_string("general.name", "tiny model")
    writer.add_uint32("llama.context_length", 128)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    tokens = ["<s>", "</s>", "138", "1234", "hello"]
    if not clean:
        writer.add_string("general.author", f"contact {PHONES[0]}, id {IDS[0]}")
        tokens.append(IDS[1])
    writer.add_token_list(tokens)
    writer.add_array("tokenizer.ggml.token_type", [1] * len(tokens))
    writer.add_tensor("token_embd.weight", np.ones((len(tokens), 8), dtype=np.float32))
    writer.add_tensor("ids", np.array(PHONES[:5] if not clean else [1, 2], dtype=np.int64))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def test_gguf_metadata_vocab_and_tensors(tmp_path: Path) -> None:
    data = gguf_file(tmp_path)
    assert identify(data[:64]).name == "gguf"  # type: ignore[union-attr]
    results = [read_stream(models.gguf_reader, data, chunk) for chunk in (0, 1, 31)]
    assert len({repr([(m.name, m.text) for m in r.members]) for r in results}) == 1
    out = results[0]
    members = {m.name: m.text for m in out.members}
    assert f"general.author: contact {PHONES[0]}, id {IDS[0]}" in members["metadata"]
    assert f"\n{IDS[1]}\n" in members["metadata"]  # a vocabulary entry, on its own line
    assert "token_embd.weight 0 [8, 6]" in members["tensors"]
    assert members["tensor ids"].splitlines()[1:] == [str(p) for p in PHONES[:5]]
    assert out.numeric_values == 48 + 1
    kind, labels, unscannable, _ = scan(data)
    assert (kind, labels, unscannable) == (
        "application/x-gguf",
        {"pii.cn_phone": 6, "pii.cn_resident_id": 2},
        (),
    )


def test_gguf_big_endian_and_clean(tmp_path: Path) -> None:
    out = read_stream(models.gguf_reader, gguf_file(tmp_path, big_endian=True))
    assert {m.name: m.text for m in out.members}["tensor ids"].splitlines()[1] == str(PHONES[0])
    assert scan(gguf_file(tmp_path, clean=True))[1:3] == ({}, ())


def _gguf_head(version: int = 3, tensors: int = 0, kvs: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def _gguf_string(text: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(text) if length is None else length) + text


@pytest.mark.parametrize(
    "data",
    [
        _gguf_head(version=1),
        _gguf_head(kvs=1 << 40),
        _gguf_head(tensors=1 << 40),
        _gguf_head() + _gguf_string(b"k", 1 << 50),
        _gguf_head() + _gguf_string(b"k") + struct.pack("<I", 99),
        _gguf_head() + _gguf_string(b"k") + struct.pack("<IIQ", 9, 8, 1 << 40),
        _gguf_head() + _gguf_string(b"k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 10,
        _gguf_head() + _gguf_string(b"general.alignment") + struct.pack("<II", 4, 3),
        _gguf_head() + _gguf_string(b"k") + struct.pack("<I", 8) + _gguf_string(b"abc", 10),
    ],
)
def test_gguf_bad_files_are_unscannable(data: bytes) -> None:
    with pytest.raises(Unscannable):
        read_stream(models.gguf_reader, data)


def test_gguf_truncated_and_padded(tmp_path: Path) -> None:
    data = gguf_file(tmp_path)
    for bad in (data[:-33], data[:100], data + b"\1", data + b"\0" * 64):
        with pytest.raises(Unscannable):
            read_stream(models.gguf_reader, bad)


@given(st.data())
def test_gguf_mutations_never_crash(data: st.DataObject) -> None:
    ok_or_unscannable(read_stream, models.gguf_reader, mutate(_GGUF_SAMPLE, data), 0)


# -- pickle and PyTorch checkpoints -------------------------------------------------------------


class _StorageRef:
    def __init__(self, key: str, cls: type, values: np.ndarray) -> None:
        self.key, self.cls, self.values = key, cls, values


class _FakeTorch:
    """Stand-ins for ``torch.FloatStorage`` & co. so that ``pickle`` writes the globals
    ``torch.save`` writes (the tests never import torch; the reader never imports anything)."""

    def __init__(self) -> None:
        self.torch = types.ModuleType("torch")
        self.utils = types.ModuleType("torch._utils")
        for name in ("FloatStorage", "LongStorage"):
            cls = type(name, (), {"__module__": "torch"})
            setattr(self.torch, name, cls)

        def _rebuild_tensor_v2(*args: object) -> None:
            raise AssertionError("never called")

        _rebuild_tensor_v2.__module__ = "torch._utils"
        _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
        self.utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]

    def tensor(self, key: str, values: np.ndarray) -> object:
        cls = self.torch.LongStorage if values.dtype == np.int64 else self.torch.FloatStorage
        ref = _StorageRef(key, cls, values)
        rebuild = self.utils._rebuild_tensor_v2

        class Tensor:
            def __reduce__(self) -> tuple[object, ...]:
                args = (ref, 0, values.shape, (1,), False, collections.OrderedDict())
                return (rebuild, args)

        return Tensor()


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _StorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.values.size)
        return None


def torch_checkpoint(monkeypatch: pytest.MonkeyPatch, clean: bool = False) -> tuple[bytes, bytes]:
    """A zip laid out as ``torch.save`` writes it, and its data.pkl."""
    fake = _FakeTorch()
    monkeypatch.setitem(sys.modules, "torch", fake.torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake.utils)
    storages = {"0": np.ones(6, dtype=np.float32), "1": np.arange(4, dtype=np.int64)}
    state: dict[str, object] = {
        "model": collections.OrderedDict(
            [
                ("fc.weight", fake.tensor("0", storages["0"])),
                ("steps", fake.tensor("1", storages["1"])),
            ]
        ),
        "epoch": 3,
        "note": "fine-tuned on plate reader data",
    }
    if not clean:
        storages["2"] = np.array(PHONES[:4], dtype=np.int64)
        state["model"]["cohort_phones"] = fake.tensor("2", storages["2"])  # type: ignore[index]
        state["owner"] = {"name": "张三", "rid": IDS[0], "mobile": PHONES[5]}
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(state)
    pkl = buf.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ckpt/data.pkl", pkl)
        zf.writestr("ckpt/.format_version", "1")
        zf.writestr("ckpt/byteorder", "little")
        for key, values in storages.items():
            zf.writestr(f"ckpt/data/{key}", values.tobytes())
        zf.writestr("ckpt/version", "3\n")
        zf.writestr("ckpt/.data/serialization_id", "1234567890")
    return archive.getvalue(), pkl


def test_pickle_opcodes_are_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    _, pkl = torch_checkpoint(monkeypatch)
    assert identify(pkl[:64]).name == "pickle"  # type: ignore[union-attr]
    outs = [read_stream(models.pickle_reader, pkl, chunk) for chunk in (0, 1, 5)]
    assert len({o.text for o in outs}) == 1
    lines = outs[0].text.splitlines()
    assert "torch._utils._rebuild_tensor_v2" in lines
    assert "torch.LongStorage" in lines
    assert {IDS[0], str(PHONES[5]), "张三", "fc.weight", "cohort_phones"} <= set(lines)


def test_pytorch_checkpoint_through_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = torch_checkpoint(monkeypatch)
    assert identify(data[: 64 << 10]).name == "pytorch"  # type: ignore[union-attr]
    out = read_random(models.read_pytorch, data)
    members = {m.name: m.text for m in out.members}
    assert members["storage 2"].splitlines()[1:] == [str(p) for p in PHONES[:4]]
    assert members["storage 1"].splitlines()[1:] == ["0", "1", "2", "3"]
    assert out.numeric_values == 6
    assert {n.name for n in out.nested_members} == {
        "ckpt/.format_version", "ckpt/byteorder", "ckpt/version", "ckpt/.data/serialization_id",
    }  # fmt: skip
    kind, labels, unscannable, numbers = scan(data, chunk=4096)
    assert (kind, labels, unscannable, numbers) == (
        "application/x-pytorch",
        {"pii.cn_phone": 5, "pii.cn_resident_id": 1},
        (),
        6,
    )
    clean, _ = torch_checkpoint(monkeypatch, clean=True)
    assert scan(clean)[1:3] == ({}, ())


def test_pytorch_storage_of_the_wrong_size_is_unscannable(monkeypatch: pytest.MonkeyPatch) -> None:
    _, pkl = torch_checkpoint(monkeypatch)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ckpt/data.pkl", pkl)
        zf.writestr("ckpt/data/2", b"\0" * 12)
    with pytest.raises(Unscannable, match="storage size"):
        read_random(models.read_pytorch, archive.getvalue())


def test_pickle_is_never_executed_nor_imported() -> None:
    hostile = b"\x80\x02cgateway_never_imported_module\nboom\nq\x00X\x03\x00\x00\x00argq\x01\x85R."
    out = read_stream(models.pickle_reader, hostile)
    assert "gateway_never_imported_module.boom" in out.text
    assert "gateway_never_imported_module" not in sys.modules


def test_pickle_recursive_and_memo_tricks() -> None:
    loop: list[object] = []
    loop.append(loop)
    for value in (loop, {"self": loop}):
        read_stream(models.pickle_reader, pickle.dumps(value, protocol=4))
    # 50000 nested lists (pickle.loads would recurse; the walk is linear)
    read_stream(models.pickle_reader, b"\x80\x02" + b"(" * 50_000 + b"l" * 50_000 + b".")
    # GET of entries never PUT, PUT over and over, a memo index far away
    tricks = b"\x80\x02" + b"h\x09j\xff\xff\xff\xff" + b"K\x01r\xff\xff\xff\xff" * 1000 + b"."
    read_stream(models.pickle_reader, tricks)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02X\xff\xff\xff\x7fabc.",  # a string longer than the bound
        b"\x80\x04\x8d" + struct.pack("<Q", 1 << 60) + b"x.",
        b"\x80\x02X\x10\x00\x00\x00abc",  # cut inside a string
        b"\x80\x02K\x01",  # no STOP
        b"\x80\x02K\x01.junk",  # bytes after STOP
        b"\x80\x02\xff.",  # not an opcode
        b"\x80\x02c" + b"m" * 70_000 + b"\nname\n.",  # a GLOBAL line too long
        b"\x80\x02Ixyz\n.",  # a malformed INT
    ],
)
def test_pickle_bad_inputs_are_unscannable(data: bytes) -> None:
    with pytest.raises(Unscannable):
        read_stream(models.pickle_reader, data)


def test_pickle_binary_bytes_go_back_to_the_decoder() -> None:
    data = pickle.dumps({"buf": np.array(PHONES[:3]).tobytes(), "txt": b"hello"}, protocol=4)
    out = read_stream(models.pickle_reader, data)
    assert [bytes(n.data) for n in out.nested_members] == [np.array(PHONES[:3]).tobytes()]
    assert "hello" in out.text.splitlines()


@given(st.data())
def test_pickle_mutations_never_crash(data: st.DataObject) -> None:
    ok_or_unscannable(read_stream, models.pickle_reader, mutate(_PICKLE_SAMPLE, data), 0)


@given(st.data())
def test_pytorch_zip_mutations_never_crash(data: st.DataObject) -> None:
    ok_or_unscannable(read_random, models.read_pytorch, mutate(_PYTORCH_SAMPLE, data))


# -- ONNX ----------------------------------------------------------------------------------------


def onnx_model(clean: bool = False) -> bytes:
    helper, tensor_proto = onnx.helper, onnx.TensorProto
    node = onnx.helper.make_node(
        "Gather", ["table", "x"], ["y"], name="lookup", doc_string="row lookup"
    )
    initializers = [
        helper.make_tensor("table", tensor_proto.FLOAT, [2, 3], [0.5] * 6),
        helper.make_tensor("vocab", tensor_proto.STRING, [2], [b"alpha", b"beta"]),
        helper.make_tensor("steps", tensor_proto.INT64, [3], [1, 2, -3]),
    ]
    props = {"license": "apache-2.0"}
    if not clean:
        initializers.append(
            helper.make_tensor("names", tensor_proto.STRING, [2], [IDS[0].encode(), b"x"])
        )
        raw = np.array(PHONES[:3], dtype="<i8").tobytes()
        initializers.append(helper.make_tensor("phones", tensor_proto.INT64, [3], raw, raw=True))
        props["owner"] = f"tel {PHONES[3]}"
    graph = helper.make_graph(
        [node],
        "graph",
        [helper.make_tensor_value_info("x", tensor_proto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", tensor_proto.FLOAT, ["batch", 3])],
        initializer=initializers,
    )
    model = helper.make_model(graph, producer_name="lab-exporter", doc_string="tiny model")
    helper.set_model_props(model, props)
    return bytes(model.SerializeToString())


def test_onnx_strings_and_int64_tensors() -> None:
    data = onnx_model()
    assert identify(data[: 64 << 10]).name == "onnx"  # type: ignore[union-attr]
    out = read_random(models.read_onnx, data)
    lines = out.text.splitlines()
    assert {"lab-exporter", "tiny model", "lookup", "row lookup", "alpha", IDS[0]} <= set(lines)
    assert f"owner: tel {PHONES[3]}" in lines
    assert {str(p) for p in PHONES[:3]} <= set(lines)
    assert "-3" in lines
    assert out.numeric_values == 6
    kind, labels, unscannable, _ = scan(data)
    assert (kind, labels, unscannable) == (
        "application/onnx",
        {"pii.cn_phone": 4, "pii.cn_resident_id": 1},
        (),
    )
    assert scan(onnx_model(clean=True))[1:3] == ({}, ())


def test_onnx_sniffing_is_strict() -> None:
    assert models.sniff_onnx(onnx_model())
    for other in (
        b"\x08\x07hello",
        b"\x08\x01\x12\xff\xff",
        b"plain text",
        b"\x08\x00\x12\x01a",
        b"",
    ):
        assert not models.sniff_onnx(other)


def _field(number: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_onnx_deep_nesting_and_lying_lengths_are_unscannable() -> None:
    inner = _field(2, b"g")  # GraphProto.name
    for _ in range(60):  # graph -> node -> attribute -> graph -> ...
        inner = _field(1, _field(5, _field(6, inner)))
    deep = b"\x08\x08" + _field(7, inner)
    with pytest.raises(Unscannable, match="nested deeper"):
        read_random(models.read_onnx, deep)
    model = onnx_model()
    with pytest.raises(Unscannable):
        read_random(models.read_onnx, model[:-5])
    with pytest.raises(Unscannable):
        read_random(models.read_onnx, b"\x08\x08\x12\xff\xff\xff\xff\x0fabc")


@given(st.data())
def test_onnx_mutations_never_crash(data: st.DataObject) -> None:
    ok_or_unscannable(read_random, models.read_onnx, mutate(_ONNX_SAMPLE, data))


def test_sniffers_do_not_claim_each_others_files(tmp_path: Path) -> None:
    samples = {
        "safetensors": safetensors_file(),
        "gguf": _GGUF_SAMPLE,
        "pickle": _PICKLE_SAMPLE,
        "pytorch": _PYTORCH_SAMPLE,
        "onnx": _ONNX_SAMPLE,
    }
    for name, data in samples.items():
        fmt = identify(data[: 64 << 10])
        assert fmt is not None
        assert fmt.name == name


def _samples() -> tuple[bytes, bytes, bytes]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        archive, pkl = torch_checkpoint(monkeypatch)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        gguf_bytes = gguf_file(Path(tmp))
    return archive, pkl, gguf_bytes


_PYTORCH_SAMPLE, _PICKLE_SAMPLE, _GGUF_SAMPLE = _samples()
_ONNX_SAMPLE = onnx_model()
