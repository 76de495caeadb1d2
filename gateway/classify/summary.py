"""The result of one scan (SPEC §3.2): counts and keyed hashes, never values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class LabelStats:
    """Findings of one label.

    Attributes:
        count: number of findings.
        distinct: number of distinct values (by keyed hash).
    """

    count: int
    distinct: int


@dataclass(frozen=True, slots=True)
class ContentInfo:
    """What the scanner recognised the bytes as.

    Attributes:
        type: media type of the innermost content (``text/csv``,
            ``application/zip`` …).
        charset: detected text encoding, ``None`` for binary content.
        layers: container and compression layers opened, outermost first
            (``("gzip", "tar")``).
    """

    type: str
    charset: str | None
    layers: tuple[str, ...] = ()


def _empty_digests() -> Mapping[str, frozenset[bytes]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """Everything the classifier learned from one stream of bytes.

    Attributes:
        size: number of input bytes fed (before decoding); ``bytes`` in JSON.
        sha256: hex SHA-256 of the input bytes.
        content: detected type, charset and layers.
        labels: findings per label; labels with zero findings are absent.
        subjects: the largest ``distinct`` among ``pii.*`` labels, a lower
            bound on the number of people in the data.
        unscannable: one short reason per layer the classifier could not see
            through (``"zip: encrypted member"``). Mirrors the
            ``content.unscannable`` label count.
        seconds: wall time spent in the scanner.
        digests: per label, the keyed hashes (HMAC-SHA-256 with the gateway
            secret, truncated to 16 bytes) of the distinct values found. The
            ledger unions these per organisation and year. Exact up to a
            bound per label (and a total bound for all labels); beyond it
            ``distinct_capped`` is set and ``distinct``/``subjects`` are lower
            bounds, and the policy engine uses finding counts instead.
        distinct_capped: True when a distinct-value bound was reached.
    """

    size: int
    sha256: str
    content: ContentInfo
    labels: Mapping[str, LabelStats]
    subjects: int
    unscannable: tuple[str, ...] = ()
    seconds: float = 0.0
    digests: Mapping[str, frozenset[bytes]] = field(default_factory=_empty_digests)
    distinct_capped: bool = False

    def count(self, label: str) -> int:
        """Findings of ``label`` (0 when absent)."""
        stats = self.labels.get(label)
        return stats.count if stats else 0

    def to_json(self, path: str | None = None) -> dict[str, Any]:
        """The SPEC §3.2 JSON object (``path`` first when given); no digests."""
        out: dict[str, Any] = {}
        if path is not None:
            out["path"] = path
        out["bytes"] = self.size
        out["sha256"] = self.sha256
        out["content"] = {
            "type": self.content.type,
            "charset": self.content.charset,
            "layers": list(self.content.layers),
        }
        out["labels"] = {
            label: {"count": s.count, "distinct": s.distinct}
            for label, s in sorted(self.labels.items())
        }
        out["subjects"] = self.subjects
        out["unscannable"] = list(self.unscannable)
        out["seconds"] = round(self.seconds, 6)
        return out
