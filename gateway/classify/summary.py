"""The result of one scan (SPEC §3.2): counts and keyed hashes, never values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from gateway.classify.chance import CHANCE, COUNTED, ColumnProfile


@dataclass(frozen=True, slots=True)
class LabelStats:
    """Findings of one label.

    Attributes:
        count: number of findings.
        distinct: number of distinct values (by keyed hash).
    """

    count: int
    distinct: int


def _no_attributes() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ContentInfo:
    """What the scanner recognised the bytes as.

    Attributes:
        type: media type of the innermost content (``text/csv``,
            ``application/zip``, ``application/vnd.apache.parquet`` …).
        charset: detected text encoding, ``None`` for binary content.
        layers: container and compression layers opened, outermost first
            (``("gzip", "tar")``).
        attributes: facts format readers reported anywhere in the input, for
            policies to condition on (``organism``: ``Homo sapiens``); a
            key's several values are joined, sorted, by ``"; "``. Values come
            from the readers' fixed vocabularies, never free text of the file.
    """

    type: str
    charset: str | None
    layers: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=_no_attributes, hash=False)

    def to_json(self) -> dict[str, Any]:
        """The ``content`` object of the SPEC §3.2 JSON (``attributes`` only when any)."""
        out: dict[str, Any] = {
            "type": self.type,
            "charset": self.charset,
            "layers": list(self.layers),
        }
        if self.attributes:
            out["attributes"] = dict(sorted(self.attributes.items()))
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ContentInfo:
        """The inverse of :meth:`to_json`."""
        charset = obj.get("charset")
        return cls(
            type=str(obj["type"]),
            charset=None if charset is None else str(charset),
            layers=tuple(str(layer) for layer in obj.get("layers", ())),
            attributes=MappingProxyType(
                {str(k): str(v) for k, v in (obj.get("attributes") or {}).items()}
            ),
        )


def _empty_digests() -> Mapping[str, frozenset[bytes]]:
    return MappingProxyType({})


def _no_stats() -> Mapping[str, LabelStats]:
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
        numeric_values: numbers format readers saw and deliberately did not
            render (float columns and datasets, tensor payloads): counted,
            never scanned; ``numeric_values`` in JSON when not zero.
        chance: per label, findings set aside as chance-level: table columns
            whose hits come at the rate random digits give
            (:mod:`gateway.classify.chance`). They are in no count above, no
            ``distinct``, no ``subjects`` and no digest; ``chance`` in JSON
            (label -> count) when any.
        chance_digests: the keyed hashes of the values set aside, for a
            policy that counts them anyway (``chance: count``).
        columns: the column profiles with findings (the test's numbers);
            ``columns`` in JSON when any.
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
    numeric_values: int = 0
    chance: Mapping[str, LabelStats] = field(default_factory=_no_stats)
    chance_digests: Mapping[str, frozenset[bytes]] = field(default_factory=_empty_digests)
    columns: tuple[ColumnProfile, ...] = ()

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
        out["content"] = self.content.to_json()
        out["labels"] = {
            label: {"count": s.count, "distinct": s.distinct}
            for label, s in sorted(self.labels.items())
        }
        out["subjects"] = self.subjects
        out["unscannable"] = list(self.unscannable)
        if self.numeric_values:
            out["numeric_values"] = self.numeric_values
        if self.chance:
            out["chance"] = {label: s.count for label, s in sorted(self.chance.items())}
        if self.columns:
            out["columns"] = [profile.to_json() for profile in self.columns]
        out["seconds"] = round(self.seconds, 6)
        return out

    def counting_chance(self, labels: Callable[[str], bool]) -> ScanSummary:
        """This summary with the chance-level findings of ``labels`` counted after all.

        What a policy's ``chance: count`` asks for: those findings join the
        label's count, their values its distinct values and digests, and
        ``subjects`` grows with them (an upper bound when the values were not
        all kept).
        """
        chosen = {label: s for label, s in self.chance.items() if labels(label)}
        if not chosen:
            return self
        counts = dict(self.labels)
        digests = dict(self.digests)
        for label, aside in chosen.items():
            before = counts.get(label, LabelStats(0, 0))
            merged = digests.get(label, frozenset()) | self.chance_digests.get(label, frozenset())
            digests[label] = merged
            distinct = len(merged) if merged else before.distinct + aside.distinct
            counts[label] = LabelStats(before.count + aside.count, distinct)
        subjects = max(
            [self.subjects]
            + [counts[label].distinct for label in chosen if label.startswith("pii.")]
        )
        columns = tuple(
            replace(p, verdict=COUNTED) if p.verdict == CHANCE and p.label in chosen else p
            for p in self.columns
        )
        return replace(
            self,
            labels=MappingProxyType(counts),
            digests=MappingProxyType(digests),
            subjects=subjects,
            chance=MappingProxyType({k: v for k, v in self.chance.items() if k not in chosen}),
            columns=columns,
        )

    @classmethod
    def from_json(
        cls,
        obj: Mapping[str, Any],
        *,
        digests: Mapping[str, frozenset[bytes]] | None = None,
        distinct_capped: bool = False,
    ) -> ScanSummary:
        """The summary :meth:`to_json` wrote (which holds no digests: give them apart).

        Args:
            obj: the JSON object (``path`` is ignored).
            digests: the keyed hashes per label, kept beside the JSON (the
                held-review metadata); none when not given.
            distinct_capped: whether a distinct-value bound was reached.
        """
        return cls(
            size=int(obj["bytes"]),
            sha256=str(obj["sha256"]),
            content=ContentInfo.from_json(obj["content"]),
            labels=MappingProxyType(
                {
                    str(label): LabelStats(count=int(s["count"]), distinct=int(s["distinct"]))
                    for label, s in obj.get("labels", {}).items()
                }
            ),
            subjects=int(obj.get("subjects", 0)),
            unscannable=tuple(str(reason) for reason in obj.get("unscannable", ())),
            seconds=float(obj.get("seconds", 0.0)),
            digests=MappingProxyType(dict(digests or {})),
            distinct_capped=distinct_capped,
            numeric_values=int(obj.get("numeric_values", 0)),
            chance=MappingProxyType(
                {str(k): LabelStats(int(v), 0) for k, v in (obj.get("chance") or {}).items()}
            ),
            columns=_columns(obj.get("columns") or ()),
        )


def _columns(items: Any) -> tuple[ColumnProfile, ...]:
    return tuple(ColumnProfile.from_json(item) for item in items)
