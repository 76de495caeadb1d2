"""The encrypted spool: age payload at rest, readable by standard age, swept at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pyrage
import pytest

from gateway.crypto.age import build_header
from gateway.crypto.errors import PayloadError
from gateway.crypto.keys import X25519Identity
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
    spool.hold(info, build_header(info.file_key, [identity.recipient]), {"transfer_id": "t_held"})
    (spool.held / "t_half.payload").write_bytes(b"no header, no metadata")
    assert spool.sweep() == 2
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
