"""Array formats: NumPy .npy/.npz, HDF5 and NetCDF-4 (gateway/classify/formats/arrays.py).

Files are made by each format's own writer (numpy, h5py, netCDF4) with
identifiers from the project's generators; readers are run directly (exact
rendering, chunk invariance, bounds) and through the whole decoder (labels).
"""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bench.classify import _person
from gateway.classify import DetectorSet
from gateway.classify.formats import arrays, identify
from gateway.classify.formats.base import BytesAccess, Unscannable
from gateway.classify.formats.testing import (
    RecordingExtract,
    label_counts,
    read_random,
    read_stream,
    scan_bytes,
)

DETECTORS = DetectorSet.build()
RNG = random.Random(12)
PEOPLE = [_person(RNG, n) for n in range(40)]
IDS = [p[0] for p in PEOPLE]  # Resident ID numbers
PHONES = [int(p[1]) for p in PEOPLE]  # Mainland mobile numbers, as integers


def npy(array: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def scan(data: bytes, chunk: int = 0) -> tuple[str, dict[str, int], tuple[str, ...], int]:
    """Through the whole decoder: (content type, label counts, unscannable reasons, numbers)."""
    summary = scan_bytes(DETECTORS, data, chunk)
    return summary.content.type, label_counts(summary), summary.unscannable, summary.numeric_values


def stream_ok_or_unscannable(data: bytes, chunk: int = 0) -> None:
    with contextlib.suppress(Unscannable):
        read_stream(arrays.NpyReader, data, chunk)


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "text"),
    [
        (np.array([0, -1, 7, -(2**63), 2**63 - 1], dtype=">i8"),
         "0\n-1\n7\n-9223372036854775808\n9223372036854775807\n"),
        (np.array([2**64 - 1, 10, 9], dtype=np.uint64), "18446744073709551615\n10\n9\n"),
        (np.array([13812345678, 13912345678]), "13812345678\n13912345678\n"),
        (np.array([True, False]), "1\n0\n"),
        (np.array([], dtype=np.int16), ""),
    ],
)  # fmt: skip
def test_int_text_matches_python(values: np.ndarray, text: str) -> None:
    assert arrays.int_text(values, arrays.separators(0, len(values), 1)) == text


def test_int_text_random_values_match_str() -> None:
    rng = np.random.default_rng(5)
    for dtype in (np.int8, np.uint8, np.int32, np.int64, np.uint64):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, 3000, dtype=dtype, endpoint=True)
        seps = arrays.separators(3, len(values), 7)
        expected = "".join(
            f"{v}{',' if (3 + i) % 7 != 6 else chr(10)}" for i, v in enumerate(values.tolist())
        )
        assert arrays.int_text(values, seps) == expected


@pytest.mark.parametrize(
    ("array", "text"),
    [
        (np.arange(6, dtype="<u2").reshape(2, 3), "value[0],value[1],value[2]\n0,1,2\n3,4,5\n"),
        # Fortran order: rendered in stored order, i.e. the transpose.
        (np.asfortranarray(np.arange(6).reshape(2, 3)), "value[0],value[1]\n0,3\n1,4\n2,5\n"),
        (np.array(["a,b", 'say "x"', "张三"]), 'value\n"a,b"\n"say ""x"""\n张三\n'),
        (np.array([b"ab", "电话".encode("gb18030")]), "value\nab\n电话\n"),
        (np.array(["2024-01-02", "NaT"], dtype="datetime64[D]"), "value\n2024-01-02\nNaT\n"),
        (np.int64(42), "value\n42\n"),
        (np.array([(1, b"x", 2.5, [3, 4])],
                  dtype=[("id", "<i8"), ("name", "S3"), ("v", "<f8"), ("pair", "<i2", (2,))]),
         "id,name,pair[0],pair[1]\n1,x,3,4\n"),
    ],
)  # fmt: skip
def test_npy_rendering(array: np.ndarray, text: str) -> None:
    data = npy(array)
    assert identify(data[:64]) is not None
    assert identify(data[:64]).name == "npy"  # type: ignore[union-attr]
    for chunk in (0, 1, 5, 64):
        out = read_stream(arrays.NpyReader, data, chunk)
        assert out.text == text
        assert all(m.closed and m.content_type == "text/csv" for m in out.members)


def test_npy_floats_are_counted_not_rendered() -> None:
    out = read_stream(arrays.NpyReader, npy(np.linspace(0, 1, 1000).reshape(10, 100)))
    assert out.members == []
    assert out.numeric_values == 1000
    out = read_stream(arrays.NpyReader, npy(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])))
    assert out.numeric_values == 3
    assert out.text == "b\n0\n0\n0\n"


def test_npy_wide_rows_become_one_column() -> None:
    wide = np.arange(arrays.MAX_COLUMNS + 1, dtype=np.int32).reshape(1, -1)
    out = read_stream(arrays.NpyReader, npy(wide))
    assert out.text.splitlines()[:3] == ["value", "0", "1"]


def test_npy_object_array_is_refused_never_unpickled() -> None:
    data = npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(Unscannable, match=r"^npy: object array \(pickled\) not read$"):
        read_stream(arrays.NpyReader, data)


# -- detection ---------------------------------------------------------------------------------


def test_npy_identifiers_detected_through_the_decoder() -> None:
    phones = npy(np.array(PHONES, dtype=np.int64))
    kind, labels, unscannable, _ = scan(phones)
    assert (kind, labels, unscannable) == ("application/x-npy", {"pii.cn_phone": 40}, ())
    ids = npy(np.array(IDS))  # unicode
    assert scan(ids, chunk=7)[1] == {"pii.cn_resident_id": 40}
    table = np.array(
        [(i, r.encode(), float(i)) for i, r in enumerate(IDS)],
        dtype=[("row", "<i4"), ("rid", "S18"), ("score", "<f8")],
    )
    assert scan(npy(table))[1] == {"pii.cn_resident_id": 40}


def test_npy_clean_files_have_no_findings() -> None:
    rng = np.random.default_rng(1)
    for array in (
        rng.integers(0, 100_000, 5000),
        rng.random((100, 10)),
        np.array([f"sample-{i}" for i in range(200)]),
    ):
        kind, labels, unscannable, _ = scan(npy(array))
        assert kind == "application/x-npy"
        assert labels == {}
        assert unscannable == ()


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_members_are_read_through_the_zip_layer(save: object) -> None:
    buf = io.BytesIO()
    save(  # type: ignore[operator]
        buf,
        phones=np.array(PHONES, dtype=">i8"),
        ids=np.array([r.encode() for r in IDS]),
        weights=np.ones((4, 4)),
    )
    kind, labels, unscannable, numbers = scan(buf.getvalue(), chunk=1000)
    assert labels == {"pii.cn_phone": 40, "pii.cn_resident_id": 40}
    assert unscannable == ()
    assert numbers == 16
    assert kind == "application/x-npy"


# -- bad input ---------------------------------------------------------------------------------


def test_npy_bad_inputs_are_unscannable() -> None:
    good = npy(np.arange(10))
    cases = {
        "truncated header": good[:20],
        "truncated array": good[:-3],
        "bytes after the array": good + b"\0",
        "bad version": good[:6] + b"\x09\x00" + good[8:],
        "header longer": b"\x93NUMPY\x02\x00" + (1 << 20).to_bytes(4, "little") + b"{",
        "not a literal": b"\x93NUMPY\x01\x00\x10\x00" + b"{'descr': f(x)}\n",
        "keys": b"\x93NUMPY\x01\x00\x10\x00" + b"{'descr': 1}   \n",
        "deep": b"\x93NUMPY\x01\x00\x58\x02" + b"(" * 300 + b")" * 300,
    }
    for name, data in cases.items():
        with pytest.raises(Unscannable):
            read_stream(arrays.NpyReader, data)
        assert name


def test_npy_value_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays, "MAX_VALUES", 100)
    with pytest.raises(Unscannable, match="more than 100 values"):
        read_stream(arrays.NpyReader, npy(np.arange(101)))


@given(
    st.sampled_from(
        [
            npy(np.array(PHONES[:8], dtype="<i8")),
            npy(np.array(IDS[:4])),
            npy(np.arange(12, dtype=">i2").reshape(3, 4)),
            npy(np.zeros(2, dtype=[("a", "<i8"), ("b", "S4"), ("c", "<f4")])),
        ]
    ),
    st.data(),
)
def test_npy_mutations_never_crash(original: bytes, data: st.DataObject) -> None:
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if action == "flip" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    stream_ok_or_unscannable(bytes(mutated), chunk=data.draw(st.sampled_from([0, 1, 9])))


# -- HDF5 and NetCDF-4 --------------------------------------------------------------------------


def hdf5(build: object, **kw: object) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w", **kw) as f:  # type: ignore[arg-type]
        build(f)  # type: ignore[operator]
    return buf.getvalue()


def _cohort(f: h5py.File) -> None:
    cohort = f.create_group("cohort")
    cohort["phones"] = np.array(PHONES[:20], dtype=np.int64)
    cohort.create_dataset("rid", data=IDS[20:], dtype=h5py.string_dtype())
    cohort["weights"] = np.ones((3, 3))
    cohort.attrs["contact"] = str(PHONES[39])
    cohort.attrs["count"] = 20


def test_hdf5_datasets_and_attributes_detected() -> None:
    data = hdf5(_cohort)
    kind, labels, unscannable, numbers = scan(data)
    assert kind == "application/x-hdf5"
    assert labels == {"pii.cn_phone": 21, "pii.cn_resident_id": 20}
    assert unscannable == ()
    assert numbers == 9


def test_hdf5_rendering() -> None:
    def build(f: h5py.File) -> None:
        f["m"] = np.arange(6, dtype="<i2").reshape(2, 3)
        f["c"] = np.array([(1, b"x", 2.5)], dtype=[("id", "<i8"), ("name", "S3"), ("v", "<f8")])
        f["chars"] = np.array([list("AB12"), list("CD34")], dtype="S1")  # netCDF char variable
        f.create_dataset("vs", data=["张三", "b,c"], dtype=h5py.string_dtype())
        f["blob"] = np.void(b"%PDF-1.4 embedded")
        f["g/x"] = np.array([5])
        f["g/alias"] = h5py.SoftLink("/m")
        f["g/loop"] = f["g"]  # a hard-link cycle
        f["g"].attrs["tags"] = np.array([b"a", b"bb"])

    out = read_random(arrays.read_hdf5, hdf5(build))
    texts = {m.name: m.text for m in out.members}
    assert texts["dataset /m"] == "/m[0],/m[1],/m[2]\n0,1,2\n3,4,5\n"
    assert texts["dataset /c"] == "/c.id,/c.name\n1,x\n"
    assert texts["dataset /chars"] == "/chars\nAB12\nCD34\n"
    assert texts["dataset /vs"] == '/vs\n张三\n"b,c"\n'
    assert texts["dataset /g/x"] == "/g/x\n5\n"
    assert "/g/alias -> /m" in texts["structure"]
    assert "/g@tags: a, bb" in texts["attributes"]
    assert [(n.name, bytes(n.data)) for n in out.nested_members] == [
        ("dataset /blob", b"%PDF-1.4 embedded")
    ]
    assert out.numeric_values == 1
    assert all(m.closed for m in out.members)


def test_netcdf_markers_choose_the_media_type() -> None:
    plain = hdf5(_cohort)
    assert identify(plain[: 64 << 10]).name == "hdf5"  # type: ignore[union-attr]

    def netcdf_like(f: h5py.File) -> None:
        f.attrs["_NCProperties"] = "version=2,netcdf=4.9.2,hdf5=1.14.3"
        _cohort(f)

    data = netcdf_like_bytes = hdf5(netcdf_like)
    assert identify(data[: 64 << 10]).name == "netcdf4"  # type: ignore[union-attr]
    assert scan(netcdf_like_bytes)[0] == "application/x-netcdf"


def test_true_netcdf4_file(tmp_path: Path) -> None:
    path = tmp_path / "cohort.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("person", 10)
        nc.createDimension("len", 18)
        nc.title = "cohort contact " + str(PHONES[0])
        phone = nc.createVariable("phone", "i8", ("person",))
        phone[:] = PHONES[1:11]
        rid = nc.createVariable("rid", str, ("person",))
        for i in range(10):
            rid[i] = IDS[i]
        chars = nc.createVariable("rid_chars", "S1", ("person", "len"))
        chars[:] = netCDF4.stringtochar(np.array(IDS[10:20], dtype="S18"))
        temp = nc.createVariable("temperature", "f4", ("person",))
        temp[:] = np.arange(10)
    data = path.read_bytes()
    kind, labels, unscannable, numbers = scan(data)
    assert kind == "application/x-netcdf"
    assert labels == {"pii.cn_phone": 11, "pii.cn_resident_id": 20}
    assert unscannable == ()
    assert numbers >= 10


PERSON = np.dtype([("rid", "S1", (18,)), ("mobile", "<i8"), ("score", "<f8")])


def _people(n: int) -> np.ndarray:
    """Records whose Resident ID is a field of 18 single characters."""
    records = np.zeros(n, PERSON)
    for i in range(n):
        records[i]["rid"] = np.frombuffer(IDS[i].encode(), "S1")
        records[i]["mobile"] = PHONES[i]
    return records


def test_netcdf_compound_with_a_string_field(tmp_path: Path) -> None:
    """netCDF4-python stores an S18 field of a compound type as 18 characters."""
    path = tmp_path / "people.nc"
    stored = np.dtype([("rid", "S18"), ("mobile", "<i8")])
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        person = nc.createCompoundType(stored, "person")
        nc.createDimension("n", 6)
        people = nc.createVariable("people", person, ("n",))
        people[:] = np.array([(IDS[i].encode(), PHONES[i]) for i in range(6)], dtype=stored)
    kind, labels, unscannable, _ = scan(path.read_bytes())
    assert (kind, unscannable) == ("application/x-netcdf", ())
    assert labels == {"pii.cn_resident_id": 6, "pii.cn_phone": 6}


def test_character_fields_and_arrays_are_strings() -> None:
    kind, labels, unscannable, numbers = scan(npy(_people(5)))
    assert (kind, labels, unscannable) == (
        "application/x-npy",
        {"pii.cn_resident_id": 5, "pii.cn_phone": 5},
        (),
    )
    assert numbers == 5  # the float field, counted
    out = read_stream(arrays.NpyReader, npy(_people(2)))
    assert out.members[0].text.splitlines() == [
        "rid,mobile",
        f"{IDS[0]},{PHONES[0]}",
        f"{IDS[1]},{PHONES[1]}",
    ]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["people"] = _people(4)
    assert scan(buffer.getvalue())[1] == {"pii.cn_resident_id": 4, "pii.cn_phone": 4}
    # A 2-D array of characters saved by NumPy: one string per row.
    chars = np.array([np.frombuffer(IDS[i].encode(), "S1") for i in range(3)])
    assert scan(npy(chars))[1] == {"pii.cn_resident_id": 3}
    # In Fortran order the characters of a string are not contiguous: cells.
    assert scan(npy(np.asfortranarray(chars)))[2] == ()


def test_hdf5_clean_file_has_no_findings() -> None:
    def build(f: h5py.File) -> None:
        f["counts"] = np.arange(1000, dtype=np.int32)
        f["names"] = np.array([f"well-{i}".encode() for i in range(96)])
        f["signal"] = np.random.default_rng(2).random((50, 50))
        f.attrs["instrument"] = "plate reader 3"

    kind, labels, unscannable, numbers = scan(hdf5(build))
    assert (kind, labels, unscannable, numbers) == ("application/x-hdf5", {}, (), 2500)


def test_hdf5_links_to_other_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Unscannable, match="external link"):
        read_random(
            arrays.read_hdf5,
            hdf5(lambda f: f.__setitem__("x", h5py.ExternalLink("/etc/passwd", "/"))),
        )

    def virtual(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(4,), dtype="i8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "src.h5"), "data", shape=(4,))
        f.create_virtual_dataset("v", layout)

    with pytest.raises(Unscannable, match="virtual dataset"):
        read_random(arrays.read_hdf5, hdf5(virtual))

    def external(f: h5py.File) -> None:
        f.create_dataset("e", shape=(4,), dtype="i8", external=[(str(tmp_path / "raw"), 0, 32)])

    with pytest.raises(Unscannable, match="external files"):
        read_random(arrays.read_hdf5, hdf5(external))


def test_hdf5_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bounds are the inline reader's (a patched constant does not reach the
    # reader zygote, a separate interpreter); the reader process is tested in
    # test_isolation.py.
    def many(f: h5py.File) -> None:
        for i in range(12):
            f[f"d{i}"] = np.array([i])

    monkeypatch.setattr(arrays, "HDF5_MAX_OBJECTS", 10)
    with pytest.raises(Unscannable, match="more than 10 objects"):
        read_random(arrays.read_hdf5_inline, hdf5(many))

    def deep(f: h5py.File) -> None:
        f.create_group("/".join("g" * 1 for _ in range(8)))

    monkeypatch.setattr(arrays, "HDF5_MAX_DEPTH", 4)
    with pytest.raises(Unscannable, match="deeper than 4"):
        read_random(arrays.read_hdf5_inline, hdf5(deep))

    def zeros(f: h5py.File) -> None:  # a compressed "bomb": 4 MB of zeros in a few KB
        f.create_dataset("z", shape=(4 << 20,), dtype="i1", chunks=(1 << 16,), compression="gzip")
        f["z"][:] = 0

    data = hdf5(zeros)
    assert len(data) < 200_000
    monkeypatch.setattr(arrays, "MAX_VALUES", 1 << 20)
    with pytest.raises(Unscannable, match="values to render"):
        read_random(arrays.read_hdf5_inline, data)

    def big_chunks(f: h5py.File) -> None:
        f.create_dataset("c", shape=(1 << 24,), dtype="i8", chunks=(1 << 24,), compression="gzip")

    with pytest.raises(Unscannable, match="storage chunks larger"):
        read_random(arrays.read_hdf5_inline, hdf5(big_chunks))


def test_hdf5_corrupt_files_are_unscannable() -> None:
    data = hdf5(_cohort)
    for bad in (data[:100], data[: len(data) // 2], b"\x89HDF\r\n\x1a\n" + b"\0" * 100):
        with pytest.raises(Unscannable):
            read_random(arrays.read_hdf5, bad)


_HDF5_SAMPLES = [
    hdf5(_cohort),
    hdf5(lambda f: f.create_dataset("s", data=IDS[:5], dtype=h5py.string_dtype())),
    hdf5(
        lambda f: f.create_dataset(
            "p", data=np.array(PHONES[:50]), chunks=(10,), compression="gzip"
        )
    ),
]


@given(st.sampled_from(_HDF5_SAMPLES), st.data())
def test_hdf5_mutations_never_crash(original: bytes, data: st.DataObject) -> None:
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        if data.draw(st.booleans()):
            mutated[at] = data.draw(st.integers(0, 255))
        else:
            width = data.draw(st.sampled_from([2, 4, 8]))
            mutated[at : at + width] = data.draw(st.binary(min_size=width, max_size=width))
    if data.draw(st.booleans()):
        del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
    with contextlib.suppress(Unscannable):
        arrays.read_hdf5(BytesAccess(bytes(mutated)), RecordingExtract())


@pytest.mark.parametrize("userblock", [512, 4096, 32768])
def test_hdf5_behind_a_user_block_is_recognised(userblock: int, tmp_path: Path) -> None:
    # h5py (HDF5's own library) writes the superblock after a user block of
    # this size; the file is HDF5 all the same, whatever the block holds.
    path = tmp_path / "behind.h5"
    with h5py.File(path, "w", userblock_size=userblock) as f:
        f["ids"] = np.array([b"lab run 7"])
    data = path.read_bytes()
    assert data[:userblock] == bytes(userblock)
    assert arrays.sniff_hdf5(data)
    assert identify(data[: 64 << 10]).name == "hdf5"  # type: ignore[union-attr]
    # Recognised as soon as the whole signature is in, not a byte before.
    assert arrays.sniff_hdf5(data[: userblock + 8])
    assert not arrays.sniff_hdf5(data[: userblock + 7])
