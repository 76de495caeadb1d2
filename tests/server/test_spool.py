"""The encrypted spool: age payload at rest, readable by standard age, swept at start-up."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pyrage
import pytest

from gateway.crypto.age import build_header
from gateway.crypto.errors import NoIdentityMatch, PayloadError
from gateway.crypto.keys import X25519Identity
from gateway.errors import Unavailable
from gateway.server.spool import SpoolDir, SpoolFull, iter_payload, iter_plaintext


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 300_000])
def test_spool_is_an_age_payload_for_any_recipient(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    spool = SpoolDir(tmp_path, 0)
    writer = spool.new_writer("t_a")
    for i in range(0, size, 7000):
        writer.write(data[i : i + 7000])
    info = writer.finish()
    at_rest = info.path.read_bytes()
    assert info.plaintext_bytes == size
    assert info.payload_bytes == len(at_rest)
    if size >= 64:
        assert data[:64] not in at_rest
    # Header for a recipient chosen after the fact + the spool = a standard age file.
    identity = X25519Identity.generate()
    header = build_header(info.file_key, [identity.recipient])
    envelope = header + b"".join(iter_payload(info.path))
    assert pyrage.decrypt(envelope, [pyrage.x25519.Identity.from_str(identity.encode())]) == data
    assert b"".join(iter_plaintext(info.path, info.file_key)) == data


def test_altered_spool_is_refused(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    writer = spool.new_writer("t_b")
    writer.write(os.urandom(200_000))
    info = writer.finish()
    raw = bytearray(info.path.read_bytes())
    raw[100] ^= 1
    info.path.write_bytes(bytes(raw))
    with pytest.raises(PayloadError):
        b"".join(iter_plaintext(info.path, info.file_key))


def test_sweep_keeps_only_complete_held_reviews(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    orphan = spool.new_writer("t_orphan")
    orphan.write(b"x")
    orphan.finish()
    writer = spool.new_writer("t_held")
    writer.write(b"held data")
    info = writer.finish()
    identity = X25519Identity.generate()
    header = build_header(info.file_key, [identity.recipient])
    spool.hold(info, header, {"transfer_id": "t_held"}, identity.recipient)
    (spool.held / "t_half.payload").write_bytes(b"no header, no metadata")
    # A write a crash interrupted (an older version's plaintext metadata among them).
    (spool.held / "t_held.json.tmp").write_bytes(b'{"path": "interrupted.csv"}')
    assert spool.sweep() == 3
    assert spool.held_ids() == ["t_held"]
    assert not (tmp_path / "t_orphan.payload").exists()
    spool.release("t_held")
    assert spool.held_ids() == []


def test_low_disk_fails_closed(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 1 << 62)
    with pytest.raises(SpoolFull):
        spool.check_space()
    SpoolDir(tmp_path, 0).check_space()


def test_discard_removes_the_file(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    writer = spool.new_writer("t_c")
    writer.write(b"abc" * 50_000)
    writer.discard()
    assert not writer.path.exists()


#: A memory bound for the tests below: a little over one 64 KiB STREAM chunk.
MEMORY = 70_000


@pytest.mark.parametrize("size", [0, 1, 65_536, MEMORY - 16 - 32, MEMORY, 300_000])
def test_small_payload_stays_in_memory_large_one_spills(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    spool = SpoolDir(tmp_path, 0)
    writer = spool.new_writer("t_m", memory_bytes=MEMORY)
    assert not writer.path.exists()  # nothing touches the disk up front
    for i in range(0, size, 7000):
        writer.write(data[i : i + 7000])
    info = writer.finish()
    spilled = info.payload_bytes > MEMORY
    assert (info.payload is None) == spilled
    assert writer.path.exists() == spilled
    payload = b"".join(info.payload_blocks())
    assert len(payload) == info.payload_bytes
    if spilled:
        assert payload == writer.path.read_bytes()
    if size >= 64:
        assert data[:64] not in payload
    identity = X25519Identity.generate()
    header = build_header(info.file_key, [identity.recipient])
    assert pyrage.decrypt(
        header + payload, [pyrage.x25519.Identity.from_str(identity.encode())]
    ) == (data)
    assert b"".join(info.plaintext_blocks()) == data


def test_altered_memory_spool_is_refused(tmp_path: Path) -> None:
    writer = SpoolDir(tmp_path, 0).new_writer("t_n", memory_bytes=MEMORY)
    writer.write(os.urandom(1000))
    info = writer.finish()
    assert info.payload is not None
    raw = bytearray(info.payload)
    raw[40] ^= 1
    with pytest.raises(PayloadError):
        b"".join(replace(info, payload=bytes(raw)).plaintext_blocks())


def test_memory_spool_is_held_on_disk(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    writer = spool.new_writer("t_h", memory_bytes=MEMORY)
    writer.write(b"held data")
    info = writer.finish()
    identity = X25519Identity.generate()
    header = build_header(info.file_key, [identity.recipient])
    held = spool.hold(info, header, {"transfer_id": "t_h"}, identity.recipient)
    assert held.payload is None
    assert spool.held_ids() == ["t_h"]
    path, stored_header, meta = spool.held_parts("t_h", identity)
    assert path == held.path
    assert stored_header == header
    assert meta == {"transfer_id": "t_h"}
    assert path.read_bytes() == info.payload
    assert b"".join(iter_plaintext(path, info.file_key)) == b"held data"
    assert [p.name for p in spool.held.iterdir() if p.name.endswith(".tmp")] == []
    assert spool.sweep() == 0  # complete: kept


def test_a_spill_that_cannot_create_its_file_fails_closed(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    writer = spool.new_writer("t_x", memory_bytes=MEMORY)
    # Another file holds the name already (never the spool's to delete).
    writer.path.write_bytes(b"not ours")
    writer.write(b"small")
    with pytest.raises(Unavailable):
        writer.write(os.urandom(200_000))
    writer.discard()
    assert writer.path.read_bytes() == b"not ours"
    spilled = spool.new_writer("t_y", memory_bytes=MEMORY)
    spilled.write(os.urandom(200_000))
    spilled.discard()
    assert not spilled.path.exists()


#: A held review's metadata names the file, here one holding a Resident ID.
HELD_META = {"transfer_id": "t_named", "path": "scan_11010519491231002X.csv", "route": "sz-lab"}


def _held_named(spool: SpoolDir, identity: X25519Identity) -> None:
    writer = spool.new_writer("t_named")
    writer.write(b"held data")
    info = writer.finish()
    header = build_header(info.file_key, [identity.recipient])
    spool.hold(info, header, HELD_META, identity.recipient)


def test_held_metadata_is_an_age_file_to_the_spool_key(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    identity = X25519Identity.generate()
    _held_named(spool, identity)
    sealed = (spool.held / "t_named.meta.age").read_bytes()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"11010519491231002" not in path.read_bytes(), path
    # A standard age file: the spool identity opens it, nothing else does.
    plain = pyrage.decrypt(sealed, [pyrage.x25519.Identity.from_str(identity.encode())])
    assert json.loads(plain) == HELD_META
    assert spool.held_parts("t_named", identity)[2] == HELD_META
    with pytest.raises(NoIdentityMatch):
        spool.held_parts("t_named", X25519Identity.generate())


def test_plaintext_metadata_of_an_older_version_is_restored_then_sealed(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path, 0)
    identity = X25519Identity.generate()
    _held_named(spool, identity)
    # As an older version held it: the same metadata as JSON in clear.
    (spool.held / "t_named.meta.age").unlink()
    (spool.held / "t_named.json").write_text(json.dumps(HELD_META), encoding="utf-8")
    assert spool.sweep() == 0  # still a complete held review
    assert spool.held_ids() == ["t_named"]
    assert spool.held_parts("t_named", identity)[2] == HELD_META
    assert sorted(p.name for p in spool.held.iterdir()) == [
        "t_named.header",
        "t_named.meta.age",
        "t_named.payload",
    ]
    assert b"11010519491231002" not in (spool.held / "t_named.meta.age").read_bytes()
    assert spool.held_parts("t_named", identity)[2] == HELD_META
    # A crash between sealing and deleting the plaintext: the sealed file wins.
    (spool.held / "t_named.json").write_text(json.dumps(HELD_META), encoding="utf-8")
    assert spool.held_parts("t_named", identity)[2] == HELD_META
    assert not (spool.held / "t_named.json").exists()
    spool.release("t_named")
    assert list(spool.held.iterdir()) == []


def test_replicas_find_each_other_s_held_reviews_under_a_shared_root(tmp_path: Path) -> None:
    """Each replica holds under ``<held_root>/<instance>``; another finds, reads and
    releases it there, and its own sweep never touches another replica's."""
    identity = X25519Identity.generate()
    root = tmp_path / "held"
    first = SpoolDir(tmp_path / "a", 0, held_root=root, instance="hk-0")
    second = SpoolDir(tmp_path / "b", 0, held_root=root, instance="hk-1")
    writer = first.new_writer("t_shared")
    writer.write(b"x" * 100_000)
    info = writer.finish()
    header = build_header(info.file_key, [identity.recipient])
    held = first.hold(info, header, {"transfer_id": "t_shared"}, identity.recipient)
    assert held.path.parent == root / "hk-0"
    assert second.held_ids() == []  # not its own
    assert second.locate("t_shared") == root / "hk-0"
    assert second.locate("t_missing") is None
    assert second.locate("../hk-0/t_shared") is None  # no path walking
    path, _, meta = second.held_parts("t_shared", identity)
    assert (path, meta) == (held.path, {"transfer_id": "t_shared"})
    assert second.sweep() == 0
    assert first.is_held("t_shared")
    second.release("t_shared")  # its own files only: nothing is searched
    assert first.is_held("t_shared")
    second.release("t_shared", second.locate("t_shared"))
    assert not first.is_held("t_shared")
    assert list((root / "hk-0").iterdir()) == []


def test_a_held_directory_on_another_file_system_is_written_by_copying(tmp_path: Path) -> None:
    """rename(2) cannot cross file systems (EXDEV): the spool is copied, synced, then deleted."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's directory")
    root = shm / f"hksz-held-{os.getpid()}-{tmp_path.name}"
    try:
        spool = SpoolDir(tmp_path, 0, held_root=root, instance="hk-0")
        writer = spool.new_writer("t_far")
        data = os.urandom(300_000)
        writer.write(data)
        info = writer.finish()
        identity = X25519Identity.generate()
        header = build_header(info.file_key, [identity.recipient])
        held = spool.hold(info, header, {}, identity.recipient)
        assert held.path == root / "hk-0" / "t_far.payload"
        assert not info.path.exists()
        assert b"".join(iter_plaintext(held.path, info.file_key)) == data
        assert [p.name for p in held.path.parent.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
