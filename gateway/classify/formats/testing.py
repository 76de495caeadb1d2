"""Helpers for testing format readers (used by the project's tests; shipped for users')."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gateway.classify import formats as _registry
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.formats import Format, register, unregister
from gateway.classify.formats.base import BytesAccess, Extract, RandomReader, StreamReader
from gateway.classify.summary import ScanSummary


@dataclass
class RecordedMember:
    """One text member a reader opened: its name, type and whole text."""

    name: str
    content_type: str
    parts: list[str] = field(default_factory=list)
    closed: bool = False

    def write(self, text: str | bytes) -> None:
        """Append text or its UTF-8 (refused after close: a reader bug)."""
        if self.closed:
            raise AssertionError(f"member {self.name!r} written after close")
        self.parts.append(text if isinstance(text, str) else text.decode("utf-8", "surrogatepass"))

    def close(self) -> None:
        """End the member."""
        self.closed = True

    @property
    def text(self) -> str:
        """Everything written."""
        return "".join(self.parts)


@dataclass
class RecordedNested:
    """One nested member a reader handed back: its name and bytes.

    Like the decoder, it ends when the reader opens another member (text or
    nested): the decoder decodes one nested member at a time, so writing to
    it after that is a reader bug here as there.
    """

    name: str
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False
    superseded: bool = False

    def write(self, data: bytes) -> None:
        """Append bytes (refused after close or after another member opened: a reader bug)."""
        if self.closed:
            raise AssertionError(f"nested member {self.name!r} written after close")
        if self.superseded:
            raise AssertionError(f"nested member {self.name!r} written after another member opened")
        self.data += data

    def close(self) -> None:
        """End the nested member."""
        self.closed = True


@dataclass
class RecordingExtract:
    """An :class:`~gateway.classify.formats.base.Extract` that keeps everything, for tests."""

    members: list[RecordedMember] = field(default_factory=list)
    nested_members: list[RecordedNested] = field(default_factory=list)
    findings: list[tuple[str, bytes]] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    numeric_values: int = 0

    def member(self, name: str, content_type: str) -> RecordedMember:
        """Open and record a text member."""
        self._supersede()
        opened = RecordedMember(name, content_type)
        self.members.append(opened)
        return opened

    def nested(self, name: str) -> RecordedNested:
        """Open and record a nested member."""
        self._supersede()
        opened = RecordedNested(name)
        self.nested_members.append(opened)
        return opened

    def _supersede(self) -> None:
        if self.nested_members and not self.nested_members[-1].closed:
            self.nested_members[-1].superseded = True

    def finding(self, label: str, value: bytes) -> None:
        """Record a direct finding."""
        self.findings.append((label, value))

    def attribute(self, key: str, value: str) -> None:
        """Record an attribute."""
        self.attributes[key] = value

    def numeric(self, values: int) -> None:
        """Count numbers seen and not rendered."""
        self.numeric_values += values

    @property
    def text(self) -> str:
        """All members' text, one after the other (newline between members)."""
        return "\n".join(m.text for m in self.members)

    def finding_counts(self) -> Counter[str]:
        """Direct findings per label."""
        return Counter(label for label, _ in self.findings)


def read_random(reader: RandomReader, data: bytes) -> RecordingExtract:
    """Run a random-access reader over ``data`` and return what it reported."""
    out = RecordingExtract()
    reader(BytesAccess(data), out)
    return out


def read_stream(
    make: Callable[[Extract], StreamReader], data: bytes, chunk: int = 0
) -> RecordingExtract:
    """Feed ``data`` to a streaming reader built by ``make(out)`` (in ``chunk``-byte pieces,
    whole when 0) and return what it reported."""
    out = RecordingExtract()
    reader = make(out)
    if chunk <= 0:
        reader.feed(data)
    else:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
    reader.finish()
    return out


@contextmanager
def registered(*stand_ins: Format) -> Iterator[tuple[Format, ...]]:
    """Register ``stand_ins`` (test-only formats) for the block, and remove them after."""
    done: list[Format] = []
    try:
        for fmt in stand_ins:
            done.append(register(fmt))
        yield stand_ins
    finally:
        for fmt in done:
            unregister(fmt.name)


@contextmanager
def only_formats(*names: str) -> Iterator[None]:
    """Within the block the registry holds only the formats ``names`` (and what the block
    registers); the family modules are not loaded. Restored exactly afterwards.

    For tests of the decoder itself, whose expectations must not change when a
    family module registers a reader (a PDF reader replaces the raw fallback).
    A family module first imported inside the block registers into the
    isolated registry and is lost afterwards: import families before.
    """
    registry = _registry._REGISTRY
    saved, loaded = dict(registry), _registry._loaded
    registry.clear()
    registry.update({name: saved[name] for name in names if name in saved})
    _registry.changed()
    _registry._loaded = True
    try:
        yield
    finally:
        registry.clear()
        registry.update(saved)
        _registry.changed()
        _registry._loaded = loaded


def scan_bytes(detectors: DetectorSet, data: bytes, chunk: int = 0) -> ScanSummary:
    """Scan ``data`` as the egress does: fed in ``chunk``-byte pieces (whole when 0),
    then finished with random access to it (a footer-indexed format is read)."""
    with Scanner(detectors, secret=b"k" * 32) as scanner:
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            scanner.feed(data[i : i + step])
        return scanner.finish(BytesAccess(data))


def label_counts(summary: ScanSummary) -> dict[str, int]:
    """Findings per label of a summary."""
    return {label: stats.count for label, stats in summary.labels.items()}
