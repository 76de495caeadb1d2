"""Helpers for the policy tests: policies written to real files, summaries built by hand."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from gateway.classify.summary import ContentInfo, LabelStats, ScanSummary

WritePolicy = Callable[..., Path]


@pytest.fixture
def write_policy(tmp_path: Path) -> WritePolicy:
    """Write ``{file name: YAML text}`` into a fresh policy directory and return it."""
    counter = iter(range(1000))

    def write(files: Mapping[str, str] | None = None, **named: str) -> Path:
        directory = tmp_path / f"policy{next(counter)}"
        directory.mkdir()
        for name, text in {**(files or {}), **named}.items():
            (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return directory

    return write


def make_summary(
    labels: Mapping[str, tuple[int, int]] | None = None,
    *,
    size: int = 100,
    content_type: str = "text/plain",
    unscannable: tuple[str, ...] = (),
    digests: Mapping[str, frozenset[bytes]] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> ScanSummary:
    """A scan summary with ``{label: (count, distinct)}``; digests default to distinct fakes."""
    stats = {label: LabelStats(c, d) for label, (c, d) in (labels or {}).items()}
    if digests is None:
        digests = {
            label: frozenset(f"{label}:{i}".encode() for i in range(d))
            for label, (_, d) in (labels or {}).items()
        }
    subjects = max((s.distinct for k, s in stats.items() if k.startswith("pii.")), default=0)
    return ScanSummary(
        size=size,
        sha256="0" * 64,
        content=ContentInfo(content_type, "utf-8", attributes=dict(attributes or {})),
        labels=stats,
        subjects=subjects,
        unscannable=unscannable,
        digests=digests,
    )
