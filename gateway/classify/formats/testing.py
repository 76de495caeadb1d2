"""Helpers for testing format readers (used by the project's tests; shipped for users')."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.classify.formats.base import BytesAccess, Extract, RandomReader, StreamReader


@dataclass
class RecordedMember:
    """One text member a reader opened: its name, type and whole text."""

    name: str
    content_type: str
    parts: list[str] = field(default_factory=list)
    closed: bool = False

    def write(self, text: str) -> None:
        """Append text (refused after close: a reader bug)."""
        if self.closed:
            raise AssertionError(f"member {self.name!r} written after close")
        self.parts.append(text)

    def close(self) -> None:
        """End the member."""
        self.closed = True

    @property
    def text(self) -> str:
        """Everything written."""
        return "".join(self.parts)


@dataclass
class RecordedNested:
    """One nested member a reader handed back: its name and bytes."""

    name: str
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def write(self, data: bytes) -> None:
        """Append bytes (refused after close: a reader bug)."""
        if self.closed:
            raise AssertionError(f"nested member {self.name!r} written after close")
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
        opened = RecordedMember(name, content_type)
        self.members.append(opened)
        return opened

    def nested(self, name: str) -> RecordedNested:
        """Open and record a nested member."""
        opened = RecordedNested(name)
        self.nested_members.append(opened)
        return opened

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
