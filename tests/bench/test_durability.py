"""The durability path: a 1 KB transfer's fsyncs, replayed in sequence on one disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.bench.durability import durability_path


def test_the_durability_path_is_several_syncs_in_sequence(tmp_path: Path) -> None:
    durability = durability_path(tmp_path, samples=30)
    assert durability.samples == 30
    assert 0 < durability.record_p50_ms <= durability.record_p99_ms
    assert 0 < durability.path_p50_ms <= durability.path_p99_ms
    # Three records and a directory fsync one after the other: never faster than one record.
    assert durability.path_p50_ms > durability.record_p50_ms
    # It cleans up after itself: the logs and the inbox lived in a temporary directory.
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durability_path(tmp_path / "nowhere", samples=3)
    assert list(tmp_path.iterdir()) == []
