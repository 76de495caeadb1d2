"""YAML reading that remembers where every value came from.

Compliance officers fix policies from error messages alone, so every problem
is reported as ``file:line:col: message``. PyYAML's composer gives nodes with
start marks; this module turns a node tree into plain Python values and keeps
a map from each value's path (``("rules", 3, "when")``) to its position, so
that pydantic's error locations and the loader's own checks can be mapped
back to the text.

Only the YAML a policy needs is accepted: one document, string keys, the
standard scalar tags. Duplicate keys (which PyYAML silently overwrites) and
explicit tags such as ``!!python/object`` are errors, never surprises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.errors import ConfigError

#: A policy file is a few kilobytes of hand-written YAML; 1 MiB leaves room for
#: large sender lists while refusing to parse something that is plainly not a policy.
MAX_POLICY_FILE_BYTES = 1 << 20
#: Nesting deeper than this is not a policy (the model is 6 levels deep); the bound
#: also stops recursive aliases (``a: &x [*x]``).
MAX_DEPTH = 32
#: Values produced from one file, aliases expanded. Bounds "billion laughs"
#: alias bombs, which would otherwise expand exponentially.
MAX_VALUES = 100_000

# libyaml's parser when PyYAML was built with it (marks are the same, 10x faster).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: A value's position inside a document: mapping keys and sequence indices.
Path_ = tuple[str | int, ...]

_STANDARD_TAGS = frozenset(
    {
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:map",
        "tag:yaml.org,2002:seq",
    }
)
# C0 controls and DEL, except tab, newline and carriage return (YAML's own whitespace).
_BAD_CHARS = frozenset(chr(c) for c in (*range(0x20), 0x7F)) - {"\t", "\n", "\r"}
# A timestamp-looking scalar (``2024-03-22``) stays the string the officer wrote.
_STRING_TAGS = frozenset({"tag:yaml.org,2002:timestamp"})


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in a policy file (1-based line and column, like compilers print).

    Attributes:
        file: the file as given to the loader (relative paths stay relative).
        line: 1-based line.
        col: 1-based column.
    """

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True, order=True)
class PolicyIssue:
    """One problem found while loading a policy, with where it is.

    Attributes:
        position: file, line and column.
        message: what is wrong and what was expected; never file contents
            beyond the offending key or a short token.
        warning: True for a problem that does not stop loading (for example
            a recipient key file that does not exist yet on this machine).
    """

    position: Position
    message: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.position}: {prefix}{self.message}"


class PolicyLoadError(ConfigError):
    """The policy set is invalid; ``errors`` lists every problem found.

    Attributes:
        errors: every error, sorted by file, line and column.
    """

    slug = "policy-invalid"
    title = "Invalid policy"

    def __init__(self, errors: Iterable[PolicyIssue]) -> None:
        self.errors: list[PolicyIssue] = sorted(errors)
        if not self.errors:
            raise ValueError("PolicyLoadError needs at least one issue")
        first = str(self.errors[0])
        more = len(self.errors) - 1
        super().__init__(first if more == 0 else f"{first} (and {more} more)")


@dataclass(slots=True)
class Document:
    """One parsed YAML file: its data and the position of every value and key.

    Attributes:
        file: the file name used in messages.
        data: the plain Python value of the document (``None`` if empty).
        values: path -> position of the value at that path.
        keys: path -> position of the mapping key naming that path.
        origin: the file on disk (relative references resolve against its
            directory), None for text parsed from memory.
    """

    file: str
    data: Any
    values: dict[Path_, Position]
    keys: dict[Path_, Position]
    origin: Path | None = None

    @property
    def directory(self) -> Path:
        """The directory that relative paths in this document are relative to."""
        return (self.origin if self.origin is not None else Path(self.file)).parent

    def at(self, path: Path_, *, key: bool = False) -> Position:
        """The position of ``path``, or of its nearest ancestor that has one.

        Args:
            path: where the problem is.
            key: prefer the key's position (for unknown or duplicate keys).
        """
        probe = tuple(path)
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return Position(self.file, 1, 1)
            probe = probe[:-1]


class _Builder:
    """Turns a composed node tree into Python values, recording positions."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[Path_, Position] = {}
        self.keys: dict[Path_, Position] = {}
        self.issues: list[PolicyIssue] = []
        self._count = 0
        self._constructor = yaml.SafeLoader("")

    def pos(self, node: Node) -> Position:
        mark = node.start_mark
        return Position(self.file, mark.line + 1, mark.column + 1)

    def build(self, node: Node, path: Path_, depth: int) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise _TooBig(self.pos(node), f"more than {MAX_VALUES} values (alias expansion?)")
        if depth > MAX_DEPTH:
            raise _TooBig(self.pos(node), f"nested deeper than {MAX_DEPTH} levels")
        self.values[path] = self.pos(node)
        if node.tag not in _STANDARD_TAGS and node.tag not in _STRING_TAGS:
            self.issues.append(
                PolicyIssue(self.pos(node), f"unsupported YAML tag {node.tag!r}; use plain values")
            )
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        raise _TooBig(self.pos(node), "unexpected YAML node")  # pragma: no cover - PyYAML's set

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag in _STRING_TAGS or node.tag == "tag:yaml.org,2002:str":
            return self._text(node)
        try:
            return self._constructor.construct_object(node, deep=True)
        # KeyError: PyYAML's bool constructor on a tagged non-boolean (`!!bool maybe`).
        except (ConstructorError, ValueError, OverflowError, KeyError):
            self.issues.append(PolicyIssue(self.pos(node), "malformed scalar value"))
            return None

    def _text(self, node: ScalarNode) -> str:
        # Escapes such as "\0" or "\ud800" can smuggle characters no policy needs into a
        # string, and lone surrogates cannot even be encoded; refuse them where they are.
        text = str(node.value)
        if any(c in _BAD_CHARS or "\ud800" <= c <= "\udfff" for c in text):
            self.issues.append(
                PolicyIssue(self.pos(node), "control characters or invalid Unicode in a string")
            )
            return ""
        return text

    def _mapping(self, node: MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.issues.append(
                    PolicyIssue(self.pos(key_node), "YAML merge keys ('<<') are not supported")
                )
                continue
            if not isinstance(key_node, ScalarNode):
                self.issues.append(PolicyIssue(self.pos(key_node), "a key must be a plain string"))
                continue
            key = self._text(key_node)
            if key in out:
                first = self.keys[(*path, key)]
                self.issues.append(
                    PolicyIssue(
                        self.pos(key_node),
                        f"duplicate key {key!r} (first at line {first.line})",
                    )
                )
                continue
            self.keys[(*path, key)] = self.pos(key_node)
            out[key] = self.build(value_node, (*path, key), depth + 1)
        return out


class _TooBig(Exception):
    def __init__(self, position: Position, message: str) -> None:
        super().__init__(message)
        self.issue = PolicyIssue(position, message)


def display_name(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when inside it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:  # outside the working directory: absolute is clearer than ../../
        return str(path)


#: An unquoted comparison as a mapping value (``subjects: >= 100``): YAML reads ``>`` as
#: a folded block and ``<`` … as text, so comparisons must be quoted.
_BARE_COMPARISON = re.compile(r":\s*[<>=!]=?\s*[0-9]")


def _yaml_hint(text: str, line: int) -> str:
    """What probably went wrong on (or just before) ``line`` (0-based), in words."""
    lines = text.splitlines()
    near = lines[max(0, line - 1) : line + 1]
    if any("\t" in candidate[: len(candidate) - len(candidate.lstrip())] for candidate in near):
        return " (hint: a tab in the indentation; YAML indents with spaces only)"
    if any(_BARE_COMPARISON.search(candidate) for candidate in near):
        return ' (hint: quote comparisons, e.g. subjects: ">= 100")'
    return ""


def parse_yaml(text: str, file: str) -> tuple[Document, list[PolicyIssue]]:
    """Parse one YAML document, keeping positions.

    Args:
        text: the file's text.
        file: the name used in positions.

    Returns:
        The document (data ``None`` when empty or unparsable) and the issues found.
    """
    builder = _Builder(file)
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = _yaml_hint(text, mark.line if mark else 0)
        return Document(file, None, {}, {}), [
            PolicyIssue(where, f"YAML syntax error: {problem}{hint}")
        ]
    except yaml.YAMLError as exc:  # reader errors (control characters) carry an offset
        offset = getattr(exc, "position", 0)
        offset = offset if isinstance(offset, int) else 0
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        where = Position(file, line, col)
        message = "YAML syntax error: character not allowed in YAML text"
        return Document(file, None, {}, {}), [PolicyIssue(where, message)]
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        return Document(file, None, {(): Position(file, 1, 1)}, {}), []
    if len(nodes) > 1:
        where = builder.pos(nodes[1])
        return Document(file, None, {}, {}), [
            PolicyIssue(where, "one YAML document per file expected (found '---' separators)")
        ]
    try:
        data = builder.build(nodes[0], (), 0)
    except _TooBig as exc:
        return Document(file, None, {}, {}), [exc.issue]
    except RecursionError:
        return Document(file, None, {}, {}), [
            PolicyIssue(Position(file, 1, 1), f"nested deeper than {MAX_DEPTH} levels")
        ]
    return Document(file, data, builder.values, builder.keys), builder.issues


def read_yaml(path: Path) -> tuple[Document, list[PolicyIssue]]:
    """Read and parse one policy or test file (bounded size, UTF-8).

    Raises:
        OSError: the file cannot be read (the caller reports it with the path).
    """
    name = display_name(path)
    with path.open("rb") as fh:
        raw = fh.read(MAX_POLICY_FILE_BYTES + 1)
    if len(raw) > MAX_POLICY_FILE_BYTES:
        issue = PolicyIssue(Position(name, 1, 1), f"larger than {MAX_POLICY_FILE_BYTES} bytes")
        return Document(name, None, {}, {}), [issue]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        issue = PolicyIssue(Position(name, line, col), "not valid UTF-8 text")
        return Document(name, None, {}, {}), [issue]
    doc, issues = parse_yaml(text, name)
    doc.origin = path
    return doc, issues
