"""The canonical layout of policy and test files (``gateway policy fmt``), like ``opa fmt``.

Officers edit the packs by hand and review each other's changes as diffs; with
one layout for every file, a diff shows a change of meaning and nothing else.
Canonical means:

* the layout of the shipped packs: mappings indented by 2, a block sequence
  indented under its key (``rules:`` then ``  - id: …``), full-line comments
  indented like the line they describe, LF line endings, no trailing
  whitespace and no tabs outside the text of a string, one final newline;
* the known sections in a fixed order (:data:`KEY_ORDERS`): a policy file's
  top level, each rule and the default; a test file's cases and their
  expectations. Unknown keys follow the known ones, in the order written;
* everything else as written: comments, blank lines, scalar styles (plain,
  quoted, ``>``, ``|``) and where a folded string breaks its lines, flow
  (``{any: [...]}``) or block collections, the spelling of numbers and
  booleans (``True``, ``0x1F`` and ``1_000`` stay as they are).

Formatting never changes meaning: the result is parsed again by the loader's
own reader (:func:`gateway.policy.source.parse_yaml`) and must give exactly
the data of the input (types, values, and the order of every mapping except
those the canonical order sorts), keep every comment, and be a fixed point of
formatting; otherwise :class:`~gateway.policy.source.PolicyLoadError` names
the place and nothing is returned.

Why ruamel.yaml: PyYAML, which the loader uses, drops comments when it writes
YAML, and the packs' comments carry the legal citations. ruamel.yaml's
round-trip mode keeps comments, quoting and flow styles; this module makes its
output canonical (key order, comment indentation, whitespace) and checks it.
Sans-I/O: text in, text out; the command does the file work.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.representer import RoundTripRepresenter
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.policy.source import (
    Document,
    Path_,
    PolicyIssue,
    PolicyLoadError,
    Position,
    parse_yaml,
)

#: The fixed key orders, by where they apply (a path pattern; ``None`` is any list index).
#: Every field of the models is named (tests/policy/test_fmt.py checks it against
#: ``PolicyFile``, ``RuleSpec``, ``DefaultSpec``, ``Case`` and ``Expect``).
KEY_ORDERS: Final[Mapping[tuple[str | None, ...], tuple[str, ...]]] = {
    # A policy file: what the rules refer to, the set-wide settings, then the rules
    # and what happens when none matches (the order of 30-export.yaml and 10-hgr.yaml).
    # ``cases`` is a test file's one section.
    (): (
        "name",
        "description",
        "categories",
        "detectors",
        "senders",
        "organisations",
        "lists",
        "routes",
        "ledger",
        "chance",
        "rules",
        "default",
        "cases",
    ),
    # What a rule does (its action with the action's modifiers), why, when, and what
    # it hands on: the order of the shipped packs and of docs/policies.md.
    ("rules", None): ("id", "action", "encrypt", "mode", "approvals", "reason", "when", "then"),
    ("default",): ("action", "encrypt", "reason"),
    ("cases", None): ("name", "route", "sender", "text", "file", "ledger", "expect"),
    ("cases", None, "expect"): ("action", "rule", "encrypt", "shadow"),
}

# libyaml's parser when PyYAML was built with it, as gateway.policy.source (same marks).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Lines are never wrapped: a long reason stays on the line it was written on.
_NO_WRAP = 1 << 30
#: Plain scalars of these types are written back as written (:class:`_Verbatim`).
_TAGS_KEPT_AS_WRITTEN = tuple(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp")
)
#: Tabs outside strings become spaces up to the next multiple of this (terminals' default).
_TAB_STOP = 8


def order_at(path: Path_) -> tuple[str, ...] | None:
    """The fixed key order of the mapping at ``path``, or None if its order is the writer's."""
    for pattern, order in KEY_ORDERS.items():
        if len(pattern) == len(path) and all(
            isinstance(step, int) if want is None else step == want
            for want, step in zip(pattern, path, strict=True)
        ):
            return order
    return None


def canonical_keys(
    keys: list[Any], order: tuple[str, ...], name: Callable[[Any], object] = str
) -> list[Any]:
    """``keys`` in canonical order: the known ones as ``order`` says, then the rest as given.

    Args:
        keys: the keys as written.
        order: the known keys in their order.
        name: what a key says (the text of a key object).
    """
    known = [key for want in order for key in keys if name(key) == want]
    return known + [key for key in keys if key not in known]


# ---------------------------------------------------------------------------
# ruamel.yaml, taught to keep plain scalars as written


class _Verbatim(str):
    """A non-string scalar kept as written (``True``, ``0x1F``, ``2024-03-22``, ``!!float "5"``).

    ruamel.yaml reads YAML 1.2 and writes values back in its own spelling; the
    loader reads YAML 1.1 (PyYAML). Writing the text back as it was keeps both
    the officer's spelling and the value the loader sees.
    """

    tag: str
    style: str | None

    def __new__(cls, text: str, tag: str, style: str | None) -> _Verbatim:
        self = super().__new__(cls, text)
        self.tag = tag
        self.style = style
        return self


class _Constructor(RoundTripConstructor):
    def construct_verbatim(self, node: Any) -> Any:
        tag = str(node.tag)
        if node.anchor is None and (node.style is not None or node.value != ""):
            return _Verbatim(node.value, tag, node.style)
        # ``key:`` with nothing (ruamel.yaml writes it back as it was), or an anchor to keep.
        return RoundTripConstructor.yaml_constructors[tag](self, node)


for _tag in _TAGS_KEPT_AS_WRITTEN:
    _Constructor.add_constructor(_tag, _Constructor.construct_verbatim)


class _Representer(RoundTripRepresenter):
    def represent_verbatim(self, data: _Verbatim) -> Any:
        # The serializer writes the tag only where the text alone would not resolve to it
        # (``!!float 5`` stays tagged, ``5`` stays plain).
        return self.represent_scalar(data.tag, str(data), style=data.style)


_Representer.add_representer(_Verbatim, _Representer.represent_verbatim)


def _round_trip() -> YAML:
    rt = YAML(typ="rt")
    rt.Constructor = _Constructor
    rt.Representer = _Representer
    rt.preserve_quotes = True
    rt.width = _NO_WRAP
    # Mappings by 2; a block sequence's dash 2 in from its key, its items 2 after the dash.
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


# ---------------------------------------------------------------------------
# The text around the values: scalar spans, comments, line kinds


@functools.lru_cache(maxsize=8)
def _scalar_spans(text: str) -> tuple[tuple[int, int, yaml.ScalarToken], ...]:
    """Where each scalar's text is (start, end offsets): never touched by the layout."""
    return tuple(
        (token.start_mark.index, token.end_mark.index, token)
        for token in yaml.scan(text, Loader=_LOADER)
        if isinstance(token, yaml.ScalarToken)
    )


def _comments(text: str) -> Iterator[tuple[int, str]]:
    """Every comment as (offset of its ``#``, its words: tabs and spacing may change).

    A ``#`` starts a comment at the start of a line or after whitespace, outside
    a scalar (YAML 1.2 §6.6); spans are the scalars of ``text``.
    """
    spans = iter(_scalar_spans(text))
    span = next(spans, None)
    offset = 0
    for line in text.split("\n"):
        at = line.find("#")
        while at >= 0:
            index = offset + at
            while span is not None and span[1] <= index:
                span = next(spans, None)
            inside = span is not None and span[0] <= index < span[1]
            if not inside and (at == 0 or line[at - 1] in " \t"):
                yield index, " ".join(line[at:].split())
                break
            at = line.find("#", at + 1)
        offset += len(line) + 1


def _flow_spans(text: str) -> list[tuple[int, int]]:
    """Where each outermost flow collection (``[…]``, ``{…}``) is (start, end offsets)."""
    spans: list[tuple[int, int]] = []
    depth = 0
    start = 0
    for token in yaml.scan(text, Loader=_LOADER):
        if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
            if depth == 0:
                start = token.start_mark.index
            depth += 1
        elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken):
            depth -= 1
            if depth == 0:
                spans.append((start, token.end_mark.index))
    return spans


def _kinds(text: str, lines: list[str]) -> list[str]:
    """Per line: ``B`` blank, ``C`` a comment alone, ``S`` inside a multi-line scalar, ``X`` other.

    A blank line inside a block scalar counts as blank, except in a ``|+``/``>+``
    scalar whose value ends with blank lines (they are its content and stay with it).
    """
    kinds = [
        "B" if not line.strip() else "C" if line.lstrip().startswith("#") else "X" for line in lines
    ]
    for _, _, token in _scalar_spans(text):
        first, last = token.start_mark.line, token.end_mark.line
        if token.end_mark.column == 0:
            last -= 1
        keeps = token.style in ("|", ">") and token.value.endswith("\n\n")
        for number in range(first + 1, min(last, len(lines) - 1) + 1):
            if lines[number].strip() or keeps:
                kinds[number] = "S"
    return kinds


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# ---------------------------------------------------------------------------
# Comment places


def _line_comments(text: str) -> list[tuple[int, int, str, str]]:
    """The comments after content on a line: (line, column, the space before, words)."""
    lines = text.split("\n")
    line_starts = list(itertools.accumulate((len(line) + 1 for line in lines), initial=0))
    out: list[tuple[int, int, str, str]] = []
    for offset, words in _comments(text):
        number = bisect.bisect(line_starts, offset) - 1
        column = offset - line_starts[number]
        before = lines[number][:column]
        if before.strip():
            out.append((number, column, before[len(before.rstrip()) :], words))
    return out


def _keep_comment_gaps(lines: list[str], dumped: str, text: str) -> None:
    """Put the space written between a value and its comment back (``value   # why``).

    ruamel.yaml keeps such a comment's column; when the layout moves the value,
    the space the officer wrote is what keeps the comment readable (and a column
    of them aligned).
    """
    old, new = _line_comments(text), _line_comments(dumped)
    if [w for *_, w in old] != [w for *_, w in new]:
        return  # not one to one: leave ruamel.yaml's columns
    for (_, _, gap, _), (number, column, _, _) in zip(old, new, strict=True):
        line = lines[number]
        lines[number] = line[:column].rstrip() + gap + line[column:]


# ---------------------------------------------------------------------------
# Comment indentation


def _starts(root: Node | None) -> dict[Path_, tuple[int, int]]:
    """Where each block mapping entry (its key) and block sequence item (its dash) starts.

    Returns:
        path -> (0-based line, column).
    """
    out: dict[Path_, tuple[int, int]] = {}

    def walk(node: Node, path: Path_) -> None:
        if isinstance(node, MappingNode) and not node.flow_style:
            for key, value in node.value:
                step = key.value if isinstance(key, ScalarNode) else repr(key.start_mark)
                out[(*path, step)] = (key.start_mark.line, key.start_mark.column)
                walk(value, (*path, step))
        elif isinstance(node, SequenceNode) and not node.flow_style:
            for index, item in enumerate(node.value):
                out[(*path, index)] = (item.start_mark.line, node.start_mark.column)
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return out


def _reindent_comments(
    lines: list[str], kinds: list[str], old: Mapping[Path_, tuple[int, int]], new: Node | None
) -> None:
    """Indent each full-line comment like the line it describes, in the new layout.

    ruamel.yaml keeps a comment's column as written. When the layout changes, a
    comment follows the next line if it was not indented deeper than that line;
    otherwise it stays level with the block it was level with (the deepest of
    the blocks around it whose column it had, or more): a commented-out last
    condition stays in its ``when``.
    """
    starts = _starts(new)
    by_line: dict[int, list[Path_]] = {}
    for path, (line, _) in starts.items():
        if path in old:
            by_line.setdefault(line, []).append(path)
    marked = sorted(by_line)

    def pair(path: Path_) -> tuple[int, int]:
        """(column as written, column now) of what starts at ``path``."""
        return old[path][1], starts[path][1]

    for number, kind in enumerate(kinds):
        if kind != "C":
            continue
        column = _indent(lines[number])
        at = bisect.bisect(marked, number)
        levels: list[tuple[int, int]] = []
        if at > 0:  # the blocks open on the line before: its deepest path and their parents
            deepest = max(by_line[marked[at - 1]], key=len)
            levels = [pair(deepest[:i]) for i in range(1, len(deepest) + 1)]
        if at < len(marked):
            following = min((pair(p) for p in by_line[marked[at]]), key=lambda p: p[1])
            if column <= following[0]:
                levels = [following]
            else:
                levels.append(following)
        level = max((p for p in levels if p[0] <= column), default=min(levels, default=None))
        if level is not None and level[1] != column:
            lines[number] = " " * level[1] + lines[number].lstrip(" ")


# ---------------------------------------------------------------------------
# Key order


def _key_name(key: Any) -> object:
    """What a key of a loaded mapping says (``!!str id`` is ``id`` too)."""
    if isinstance(key, TaggedScalar) and str(key.tag) == "tag:yaml.org,2002:str":
        return str(key.value)
    return str(key) if isinstance(key, str) else key


def _reorder_flow(node: Any, path: Path_) -> None:
    """Sort the flow mappings (``expect: {rule: r, action: block}``) that have a fixed order."""
    if isinstance(node, CommentedMap):
        order = order_at(path)
        if order is not None and node.fa.flow_style():
            for key in canonical_keys(list(node), order, _key_name):
                node.move_to_end(key)
        for key, value in node.items():
            name = _key_name(key)
            _reorder_flow(value, (*path, name if isinstance(name, str) else repr(name)))
    elif isinstance(node, CommentedSeq):
        for index, value in enumerate(node):
            _reorder_flow(value, (*path, index))


def _ordered_maps(root: Node | None) -> list[tuple[MappingNode, tuple[str, ...]]]:
    """The block mappings with a fixed key order, each before the mappings it is inside."""
    found: list[tuple[MappingNode, tuple[str, ...]]] = []

    def walk(node: Node, path: Path_) -> None:
        if isinstance(node, MappingNode) and not node.flow_style:
            order = order_at(path)
            if order is not None:
                found.append((node, order))
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    walk(value, (*path, key.value))
        elif isinstance(node, SequenceNode) and not node.flow_style:
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return found[::-1]


def _reorder_block(
    lines: list[str], kinds: list[str], node: MappingNode, order: tuple[str, ...]
) -> None:
    """Sort one block mapping's entries by moving their lines.

    An entry is its key's line, the lines of its value, the comments right
    after them indented deeper than the key, and the comments and blank lines
    above the key (for the first key those stay where they are: above a
    mapping in a list they are the item's, at the top of the file its header).
    Lines move whole, so comments stay beside what they describe.
    """
    keys = [key for key, _ in node.value]
    if not keys or not all(
        isinstance(k, ScalarNode) and k.start_mark.line == k.end_mark.line for k in keys
    ):
        return  # a key over lines (``? …``) names none of the known sections
    column = keys[0].start_mark.column
    starts = [key.start_mark.line for key in keys]
    if any(k.start_mark.column != column for k in keys) or starts != sorted(set(starts)):
        return
    if any(lines[n][:column].strip() for n in starts[1:]):
        return
    names = [str(k.value) for k in keys]
    wanted = canonical_keys(names, order)
    if wanted == names:
        return
    # The mapping ends before the first line of content that is not indented deeper.
    limit = next(
        (
            n
            for n in range(starts[-1] + 1, len(lines))
            if kinds[n] == "X" and _indent(lines[n]) <= column
        ),
        len(lines),
    )
    blocks: dict[str, list[int]] = {}
    lead = starts[0]
    for index, (name, start) in enumerate(zip(names, starts, strict=True)):
        stop = starts[index + 1] if index + 1 < len(starts) else limit
        end = max(n for n in range(start, stop) if kinds[n] in ("S", "X"))
        while end + 1 < stop and kinds[end + 1] == "C" and _indent(lines[end + 1]) > column:
            end += 1
        blocks[name] = list(range(lead, end + 1))
        lead = end + 1
    region = range(starts[0], lead)
    # Comments above a key describe it, wherever it goes: level with it (a comment
    # indented deeper was the last entry's only while it followed that entry).
    for name, start in zip(names, starts, strict=True):
        for n in blocks[name]:
            if n < start and kinds[n] == "C":
                lines[n] = " " * column + lines[n].lstrip(" ")
    # The first line may carry the list item's dash (``  - id: …``): it goes to the
    # new first key, and comments that move above that key move out to the dash.
    prefix = lines[starts[0]][:column]
    lines[starts[0]] = " " * column + lines[starts[0]][column:]
    moved = [n for name in wanted for n in blocks[name]]
    new_lines = [lines[n] for n in moved]
    new_kinds = [kinds[n] for n in moved]
    head = starts[names.index(wanted[0])] - blocks[wanted[0]][0]
    if prefix.strip():
        for n in range(head):
            if new_kinds[n] == "C":
                new_lines[n] = " " * _indent(prefix) + new_lines[n].lstrip(" ")
    new_lines[head] = prefix + new_lines[head][column:]
    lines[region.start : region.stop] = new_lines
    kinds[region.start : region.stop] = new_kinds


# ---------------------------------------------------------------------------
# Whitespace


def _tidy(text: str) -> str:
    """No trailing whitespace, no tabs and no trailing blank lines outside scalars; one final LF.

    Inside a scalar (a ``|`` block's trailing spaces, a tab in a quoted
    string) whitespace is the string's content and stays.
    """
    spans = _scalar_spans(text)  # in order, none inside another
    starts = [start for start, _, _ in spans]

    def protected(index: int) -> bool:
        at = bisect.bisect(starts, index) - 1
        return at >= 0 and index < spans[at][1]

    out: list[str] = []
    offset = 0
    for line in text.split("\n"):
        chars = list(line)
        column = 0
        for at, char in enumerate(line):
            if char == "\t" and not protected(offset + at):
                chars[at] = " " * (_TAB_STOP - column % _TAB_STOP)
            column += len(chars[at])
        cut = len(line.rstrip(" \t"))
        fixed = "".join(chars[:cut]) + (
            "".join(chars[cut:]) if cut < len(line) and protected(offset + cut) else ""
        )
        out.append(fixed)
        offset += len(line) + 1
    last_content = max((end for _, end, _ in spans), default=0)
    while out and not out[-1] and offset - 1 > last_content:
        offset -= len(out.pop()) + 1
    return "\n".join(out).rstrip("\n") + "\n" if any(out) else ""


# ---------------------------------------------------------------------------
# Formatting and its checks


def _split_markers(text: str) -> tuple[str, str, str]:
    """``text`` as (before ``---``, the document, from ``...`` on).

    ruamel.yaml drops the comments above a ``---`` and below a ``...`` (and
    below a document that is one flow collection); they are kept as written,
    around the formatted document.
    """
    lines = text.splitlines(keepends=True)
    first, last = 0, len(lines)
    depth = 0
    root: yaml.Token | None = None  # the first token of the root node
    for token in yaml.scan(text, Loader=_LOADER):
        if isinstance(token, yaml.DocumentStartToken):
            first = token.start_mark.line
        elif isinstance(token, yaml.DocumentEndToken):
            last = min(last, token.start_mark.line)
        elif isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
            root = root or token
            depth += 1
        elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken):
            depth -= 1
            if depth == 0 and isinstance(
                root, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken
            ):
                # ... and the comments below a document that is one [ ] or { }.
                last = min(last, token.end_mark.line + 1)
        elif not isinstance(token, yaml.StreamStartToken | yaml.DirectiveToken):
            root = root or token
    return "".join(lines[:first]), "".join(lines[first:last]), "".join(lines[last:])


def _cannot(file: str) -> PolicyLoadError:
    problem = "ruamel.yaml cannot lay this file out (it fails on it or writes what it cannot read)"
    return PolicyLoadError([PolicyIssue(Position(file, 1, 1), f"{problem} {_BUG}")])


def _one_pass(text: str, file: str) -> str:
    """Format once (no checks): ``text`` has LF line breaks and parses."""
    head, body, tail = _split_markers(text)
    rt = _round_trip()
    rt.explicit_start = body.startswith("---")
    try:
        data = rt.load(body)
        if data is None:  # nothing but comments
            return _tidy(text)
        _reorder_flow(data, ())
        buffer = io.StringIO()
        rt.dump(data, buffer)
    except MarkedYAMLError as exc:  # it reads some YAML otherwise than PyYAML
        mark = exc.problem_mark or exc.context_mark
        where = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyLoadError([PolicyIssue(where, f"YAML syntax error: {problem}")]) from exc
    except Exception as exc:  # its own bugs too (an IndexError on '# c\n[]')
        raise _cannot(file) from exc
    dumped = buffer.getvalue()
    if tail.startswith("...") and dumped.endswith("\n...\n"):
        dumped = dumped[:-4]  # it ends a document with a |+ block by `...` itself
    lines = dumped.split("\n")
    try:
        new = yaml.compose(dumped, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise _cannot(file) from exc
    _keep_comment_gaps(lines, dumped, body)
    kinds = _kinds(dumped, lines)
    _reindent_comments(lines, kinds, _starts(yaml.compose(body, Loader=_LOADER)), new)
    for node, order in _ordered_maps(new):
        _reorder_block(lines, kinds, node, order)
    return _tidy(head + "\n".join(lines) + tail)


def _first_difference(old: Any, new: Any, path: Path_ = ()) -> Path_ | None:
    """Where two parsed documents differ (types, values, key order outside :data:`KEY_ORDERS`)."""
    if type(old) is not type(new):
        return path
    if isinstance(old, dict):
        same_keys = set(old) == set(new) if order_at(path) else list(old) == list(new)
        if not same_keys:
            return path
        for key in old:
            where = _first_difference(old[key], new[key], (*path, key))
            if where is not None:
                return where
        return None
    if isinstance(old, list):
        if len(old) != len(new):
            return path
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            where = _first_difference(a, b, (*path, index))
            if where is not None:
                return where
        return None
    # repr: NaN equals NaN, and -0.0 differs from 0.0.
    return None if repr(old) == repr(new) else path


_BUG = "(a bug in gateway policy fmt: please report it with the file)"


def _position(text: str, offset: int, file: str) -> Position:
    line = text.count("\n", 0, offset) + 1
    return Position(file, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


def _lost_comment(text: str, offset: int, file: str) -> PolicyIssue:
    # ruamel.yaml drops (or misplaces) a comment between the brackets of a flow collection.
    return PolicyIssue(
        _position(text, offset, file),
        "formatting would lose this comment: a comment inside [ ] or { } that span "
        "lines is not kept; move it above them",
    )


def _checked_pass(text: str, original: str, before: Document, file: str) -> str:
    """One pass over ``text``, checked against the ``original`` file and its data."""
    out = _one_pass(text, file)
    after, issues = parse_yaml(out, file)
    where = _first_difference(before.data, after.data) if not issues else ()
    if where is not None:
        raise PolicyLoadError(
            [PolicyIssue(before.at(where), f"formatting would change this value {_BUG}")]
        )
    kept = Counter(comment for _, comment in _comments(out))
    for offset, comment in _comments(original):
        if kept[comment] <= 0:
            # ruamel.yaml drops some comments it does not expect, e.g. below `- - []`.
            lost = _position(original, offset, file)
            problem = "formatting would lose this comment: ruamel.yaml drops it here"
            raise PolicyLoadError([PolicyIssue(lost, f"{problem}; move it {_BUG}")])
        kept[comment] -= 1
    return out


def format_text(text: str, file: str) -> str:
    """The canonical form of a policy or test file.

    Args:
        text: the file's text.
        file: its name in messages.

    Returns:
        The canonical text (equal to ``text`` when it is canonical already).

    Raises:
        PolicyLoadError: the text does not parse (file:line:col of the problem),
            or formatting it would change its data, lose a comment or not settle;
            then the file must be left as it is.
    """
    # YAML reads CRLF, CR and LF as one line break (YAML 1.2 §5.4), in scalars too.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    before, issues = parse_yaml(text, file)
    errors = [issue for issue in issues if not issue.warning]
    if errors:
        raise PolicyLoadError(errors)
    flows = _flow_spans(text)  # in order, none inside another
    for offset, _ in _comments(text):
        at = bisect.bisect(flows, (offset,)) - 1
        if at >= 0 and offset < flows[at][1]:
            raise PolicyLoadError([_lost_comment(text, offset, file)])
    out = _checked_pass(text, text, before, file)
    if _checked_pass(out, text, before, file) != out:
        raise PolicyLoadError(
            [PolicyIssue(Position(file, 1, 1), f"formatting does not settle {_BUG}")]
        )
    return out
