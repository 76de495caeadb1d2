"""Load a policy directory: parse, validate, merge, check, compile.

Merge rules (documented for compliance officers in docs/policies.md):

* The policy set is every ``*.yaml``/``*.yml`` file directly in the directory,
  except test files (``*_test.yaml``), read in file-name order (so
  ``00-base.yaml`` comes before ``30-export.yaml``). A single file may be given
  instead of a directory.
* ``rules`` are concatenated in that order; within a file they keep their order.
* ``categories``, ``detectors``, ``senders`` and ``routes`` are merged by name;
  the same name declared in two files is an error naming both places (a pack
  never silently redefines another's category).
* ``name``, ``default`` and ``ledger`` may be set by at most one file. Without
  a ``default``, a transfer no rule matches is blocked; without ``ledger``, the
  ledger counts ``sz->hk`` transfers only (the 2024 Provisions count exports).

Every problem is collected (not just the first) and reported as
``file:line:col: message``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from gateway.classify.attributes import VOCABULARY as ATTRIBUTE_VOCABULARY
from gateway.classify.chance import CHANCE_LABELS
from gateway.classify.detectors import CustomDetector, DetectorError, DetectorSet
from gateway.classify.labels import BUILTIN_LABELS, CUSTOM_PREFIX, is_known_label
from gateway.classify.validators import REGISTRY as VALIDATORS
from gateway.errors import ConfigError
from gateway.policy.engine import (
    LEDGER_CATEGORIES,
    CompiledPolicy,
    CompiledRule,
    Route,
    Sender,
    compile_rule,
)
from gateway.policy.model import (
    DEFAULT_LEDGER_DIRECTIONS,
    CategoryAdd,
    ChanceSpec,
    DefaultSpec,
    DetectorSpec,
    LedgerSpec,
    ListFile,
    OrganisationSpec,
    PolicyFile,
    RecipientFile,
    RouteSpec,
    RuleSpec,
    SenderSpec,
    canonical,
    check_age_recipient,
    check_name,
    glob_to_regex,
    is_glob,
)
from gateway.policy.reach import Reach, covers, sender_matches
from gateway.policy.source import (
    Document,
    Path_,
    PolicyIssue,
    PolicyLoadError,
    Position,
    display_name,
    read_yaml,
)

#: Test-case files live next to the policy (like OPA's ``*_test.rego``).
TEST_SUFFIXES: Final = ("_test.yaml", "_test.yml")
POLICY_SUFFIXES: Final = (".yaml", ".yml")
#: A recipient file holds one ``age1…`` line and perhaps comments; 4 KiB is generous.
MAX_RECIPIENT_FILE_BYTES = 4096
#: A directory with more files than this is not a policy set (a wrong path, most likely).
MAX_POLICY_FILES = 256
#: The reason of the implicit default (SPEC §4: block unless set otherwise).
DEFAULT_REASON: Final = "No rule of the policy allows this transfer (default deny)."


class PolicyIOError(ConfigError):
    """The policy path cannot be read (missing, not a directory of YAML, permissions)."""

    slug = "policy-unreadable"
    title = "Policy unreadable"


def policy_files(path: Path) -> list[Path]:
    """The files of the policy set at ``path``, in merge order.

    Raises:
        PolicyIOError: the path does not exist or holds no policy file.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PolicyIOError(f"{display_name(path)}: no such policy file or directory")
    try:
        files = sorted(
            p
            for p in path.iterdir()
            if p.name.endswith(POLICY_SUFFIXES)
            and not p.name.endswith(TEST_SUFFIXES)
            and not p.name.startswith(".")
            and p.is_file()
        )
    except OSError as exc:
        raise PolicyIOError(f"{display_name(path)}: cannot list: {exc.strerror}") from exc
    if not files:
        raise PolicyIOError(f"{display_name(path)}: no *.yaml policy files")
    if len(files) > MAX_POLICY_FILES:
        raise PolicyIOError(f"{display_name(path)}: more than {MAX_POLICY_FILES} policy files")
    return files


def case_files(path: Path) -> list[Path]:
    """The test-case files next to the policy at ``path`` (``*_test.yaml``)."""
    directory = path if path.is_dir() else path.parent
    try:
        return sorted(
            p for p in directory.iterdir() if p.name.endswith(TEST_SUFFIXES) and p.is_file()
        )
    except OSError as exc:
        raise PolicyIOError(f"{display_name(directory)}: cannot list: {exc.strerror}") from exc


# ---------------------------------------------------------------------------
# pydantic errors -> file:line:col


_TYPE_MESSAGES: Final[Mapping[str, str]] = {
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "dict_type": "expected a mapping of 'key: value' lines",
    "model_type": "expected a mapping of 'key: value' lines",
    "model_attributes_type": "expected a mapping of 'key: value' lines",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_too_short": "expected a non-empty string",
}


#: Tags of tagged unions in the schemas (a name, or a mapping describing the thing);
#: pydantic puts them in error locations, where they mean nothing to the reader.
UNION_TAGS: Final = ("<name>", "<description>")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Annotated and Optional removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _expected_keys(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys allowed at ``loc`` (for "unknown key … expected one of …")."""
    candidates: list[Any] = [root]
    for step in loc:
        following: list[Any] = []
        for cand in candidates:
            for concrete in _unwrap(cand):
                origin = typing.get_origin(concrete)
                args = typing.get_args(concrete)
                if isinstance(concrete, type) and issubclass(concrete, BaseModel):
                    info = concrete.model_fields.get(str(step))
                    if info is not None:
                        following.append(info.annotation)
                elif origin in (dict, Mapping) and args:
                    following.append(args[1])
                elif origin in (tuple, list) and args and isinstance(step, int):
                    following.append(args[0])
        candidates = following
    keys: list[str] = []
    for cand in candidates:
        for concrete in _unwrap(cand):
            if isinstance(concrete, type) and issubclass(concrete, BaseModel):
                keys.extend(k for k in concrete.model_fields if k not in keys)
    return keys


def _loc_text(loc: Sequence[str | int]) -> str:
    """``rules[3].when.labels.count["pii.*"]``: where in the file, as a path."""
    out = ""
    for step in loc:
        if isinstance(step, int):
            out += f"[{step}]"
        elif step.replace("_", "").isalnum():
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step, ensure_ascii=False)}]"
    return out


def validation_issues(
    doc: Document, exc: ValidationError, root: type[BaseModel]
) -> list[PolicyIssue]:
    """Turn pydantic's errors into positioned, plain-language issues."""
    issues: list[PolicyIssue] = []
    for err in exc.errors(include_url=False):
        raw_loc = err["loc"]
        on_key = "[key]" in raw_loc
        loc: list[str | int] = [s for s in raw_loc if s != "[key]" and s not in UNION_TAGS]
        kind = err["type"]
        if kind == "extra_forbidden":
            expected = _expected_keys(root, loc[:-1])
            hint = f" (expected one of: {', '.join(expected)})" if expected else ""
            message = f"unknown key {loc[-1]!r}{_did_you_mean(str(loc[-1]), expected)}{hint}"
            position = doc.at(tuple(loc), key=True)
        elif kind == "missing":
            message = f"missing required key {loc[-1]!r}"
            position = doc.at(tuple(loc[:-1]), key=True)
        else:
            if kind == "literal_error":
                message = f"expected {err.get('ctx', {}).get('expected', 'another value')}"
                message += f", got {_kind(err.get('input'))}"
                if isinstance(err.get("input"), str):
                    message = message.removesuffix("text") + repr(err["input"][:40])
            elif kind in ("value_error", "assertion_error"):
                message = str(err["msg"]).removeprefix("Value error, ")
            elif kind in _TYPE_MESSAGES:
                message = f"{_TYPE_MESSAGES[kind]}, got {_kind(err.get('input'))}"
            else:
                message = str(err["msg"])
            position = doc.at(tuple(loc), key=on_key)
        where = _loc_text(loc)
        issues.append(PolicyIssue(position, f"{where}: {message}" if where else message))
    return issues


# ---------------------------------------------------------------------------
# Merging


@dataclass(frozen=True, slots=True)
class _Origin:
    doc: Document
    path: Path_

    def at(self, *sub: str | int, key: bool = False) -> Position:
        return self.doc.at((*self.path, *sub), key=key)


@dataclass(slots=True)
class _Merged:
    name: tuple[str, _Origin] | None = None
    description: str | None = None
    categories: dict[str, tuple[tuple[str, ...], _Origin]] = field(default_factory=dict)
    detectors: dict[str, tuple[DetectorSpec, _Origin]] = field(default_factory=dict)
    senders: dict[str, tuple[SenderSpec, _Origin]] = field(default_factory=dict)
    organisations: dict[str, tuple[OrganisationSpec, _Origin]] = field(default_factory=dict)
    routes: dict[str, tuple[RouteSpec, _Origin]] = field(default_factory=dict)
    rules: list[tuple[RuleSpec, _Origin]] = field(default_factory=list)
    default: tuple[DefaultSpec, _Origin] | None = None
    ledger: tuple[LedgerSpec, _Origin] | None = None
    chance: tuple[ChanceSpec, _Origin] | None = None
    lists: dict[str, tuple[tuple[str, ...] | ListFile, _Origin]] = field(default_factory=dict)
    category_adds: list[tuple[str, CategoryAdd, _Origin]] = field(default_factory=list)


#: The conditions whose values may name a list (``"@NAME"``).
LIST_FIELDS = ("route", "sender", "team", "organisation")
#: The largest list file read.
MAX_LIST_FILE_BYTES = 1 << 20


def _resolve_lists(
    merged: _Merged, issues: list[PolicyIssue]
) -> tuple[dict[str, tuple[str, ...]], list[Path]]:
    """Read the named lists and put their values in place of every ``"@NAME"`` in the rules.

    Returns:
        The lists' values by name, and the list files read (watched for changes).
    """
    resolved: dict[str, tuple[str, ...]] = {}
    files: list[Path] = []
    for name, (spec, origin) in merged.lists.items():
        if isinstance(spec, ListFile):
            path = (origin.doc.directory / spec.file).resolve()
            files.append(path)
            resolved[name] = _read_list(path, spec.file, origin, issues)
        else:
            resolved[name] = spec
    rules: list[tuple[RuleSpec, _Origin]] = []
    for rule, origin in merged.rules:
        update: dict[str, tuple[str, ...]] = {}
        for field_name in LIST_FIELDS:
            values = getattr(rule.when, field_name)
            if not values or not any(v.startswith("@") for v in values):
                continue
            expanded: list[str] = []
            for i, value in enumerate(values):
                if not value.startswith("@"):
                    expanded.append(value)
                elif value[1:] in resolved:
                    expanded.extend(resolved[value[1:]])
                else:
                    known = ", ".join(sorted(resolved)) or "none"
                    issues.append(
                        PolicyIssue(
                            _item_position(origin, ("when", field_name), i),
                            f"when.{field_name}: no list {value[1:]!r} is declared "
                            f"(lists: {known})",
                        )
                    )
            update[field_name] = tuple(dict.fromkeys(expanded))
        if update:
            rule = rule.model_copy(update={"when": rule.when.model_copy(update=update)})
        rules.append((rule, origin))
    merged.rules = rules
    return resolved, files


def _read_list(
    path: Path, name: str, origin: _Origin, issues: list[PolicyIssue]
) -> tuple[str, ...]:
    position = origin.at("file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_LIST_FILE_BYTES + 1)
    except OSError as exc:
        issues.append(PolicyIssue(position, f"list file {name!r}: {exc.strerror or exc}"))
        return ()
    if len(raw) > MAX_LIST_FILE_BYTES:
        issues.append(PolicyIssue(position, f"list file {name!r} is larger than 1 MiB"))
        return ()
    values: list[str] = []
    for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            values.append(check_name(text))
        except ValueError as exc:
            where = Position(display_name(path), number, 1)
            issues.append(PolicyIssue(where, f"list {name!r}: {exc}"))
    return tuple(values)


def _item_position(origin: _Origin, path: tuple[str, ...], index: int) -> Position:
    doc_path = (*origin.path, *path, index)
    if doc_path in origin.doc.values:
        return origin.doc.values[doc_path]
    return origin.at(*path)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``, did you mean 'x'?`` for the nearest of ``choices`` to a misspelt ``word``, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge_named(
    kind: str,
    target: dict[str, tuple[Any, _Origin]],
    items: Mapping[str, Any],
    doc: Document,
    section: str,
    issues: list[PolicyIssue],
) -> None:
    for name, value in items.items():
        origin = _Origin(doc, (section, name))
        if name in target:
            first = target[name][1].at(key=True)
            issues.append(
                PolicyIssue(origin.at(key=True), f"{kind} {name!r} is already defined at {first}")
            )
            continue
        target[name] = (value, origin)


def _merge(files: Sequence[tuple[Document, PolicyFile]], issues: list[PolicyIssue]) -> _Merged:
    merged = _Merged()
    for doc, pf in files:
        if pf.name is not None:
            origin = _Origin(doc, ("name",))
            if merged.name is not None:
                first = merged.name[1].at()
                issues.append(PolicyIssue(origin.at(), f"'name' is already set at {first}"))
            else:
                merged.name = (pf.name, origin)
        if pf.description is not None and merged.description is None:
            merged.description = pf.description
        declared = {k: v for k, v in pf.categories.items() if not isinstance(v, CategoryAdd)}
        _merge_named("category", merged.categories, declared, doc, "categories", issues)
        merged.category_adds.extend(
            (name, spec, _Origin(doc, ("categories", name, "add")))
            for name, spec in pf.categories.items()
            if isinstance(spec, CategoryAdd)
        )
        _merge_named("detector", merged.detectors, pf.detectors, doc, "detectors", issues)
        _merge_named("sender", merged.senders, pf.senders, doc, "senders", issues)
        _merge_named(
            "organisation", merged.organisations, pf.organisations, doc, "organisations", issues
        )
        _merge_named("route", merged.routes, pf.routes, doc, "routes", issues)
        _merge_named("list", merged.lists, pf.lists, doc, "lists", issues)
        merged.rules.extend((rule, _Origin(doc, ("rules", i))) for i, rule in enumerate(pf.rules))
        for section in ("default", "ledger", "chance"):
            value = getattr(pf, section)
            if value is None:
                continue
            origin = _Origin(doc, (section,))
            already = getattr(merged, section)
            if already is not None:
                first = already[1].at(key=True)
                issues.append(
                    PolicyIssue(origin.at(key=True), f"{section!r} is already set at {first}")
                )
                continue
            setattr(merged, section, (value, origin))
            if section == "chance":
                _check_chance(value, origin, issues)
    return merged


def _check_chance(spec: ChanceSpec, origin: _Origin, issues: list[PolicyIssue]) -> None:
    """Every label ``chance`` names is one the column test applies to."""
    tested = ", ".join(CHANCE_LABELS)
    for label in spec.headers:
        if label not in CHANCE_LABELS:
            issues.append(
                PolicyIssue(
                    origin.at("headers", label, key=True),
                    f"chance.headers: {label!r} is not tested against chance; "
                    f"expected one of {tested}",
                )
            )
    for i, glob in enumerate(spec.count or ()):
        regex = glob_to_regex(glob)
        if not any(regex.fullmatch(label) for label in CHANCE_LABELS):
            issues.append(
                PolicyIssue(
                    origin.at("count", i),
                    f"chance.count: {glob!r} matches no label tested against chance; "
                    f"expected one of {tested}",
                )
            )


# ---------------------------------------------------------------------------
# Whole-set checks


class _Checker:
    """Checks that need the merged set: names, labels, reachability, keys."""

    def __init__(self, merged: _Merged, issues: list[PolicyIssue]) -> None:
        self.m = merged
        self.issues = issues
        self.labels = (*BUILTIN_LABELS, *merged.detectors)
        self.teams = {s.team for s, _ in merged.senders.values()}
        self.organisations = {s.organisation for s, _ in merged.senders.values()}
        self.listed: set[str] = set()

    def error(self, position: Position, message: str) -> None:
        self.issues.append(PolicyIssue(position, message))

    def check_detectors(self) -> None:
        for label, (_, origin) in self.m.detectors.items():
            if not label.startswith(CUSTOM_PREFIX) or not is_known_label(label):
                self.error(
                    origin.at(key=True),
                    f"detector label {label!r} must be 'custom.' followed by letters, "
                    "digits or '_-.'",
                )
            spec = self.m.detectors[label][0]
            if spec.validator is not None and spec.validator not in VALIDATORS:
                self.error(
                    origin.at("validator"),
                    f"unknown validator {spec.validator!r} "
                    f"(known: {', '.join(sorted(VALIDATORS))})",
                )

    def label_glob(self, glob: str, position: Position, where: str) -> None:
        regex = glob_to_regex(glob)
        if not any(regex.fullmatch(label) for label in self.labels):
            kind = "label glob" if is_glob(glob) else "label"
            self.error(
                position,
                f"{where}: unknown {kind} {glob!r}{_did_you_mean(glob, self.labels)}: matches "
                "no built-in label (SPEC §3.1) and no declared custom detector",
            )

    def check_categories(self) -> None:
        for name, (globs, origin) in self.m.categories.items():
            for i, glob in enumerate(globs):
                at = self._item(origin, (), i)
                self.label_glob(glob, at, f"categories.{name}")
        for name, spec, origin in self.m.category_adds:
            if name not in self.m.categories:
                self.error(
                    origin.at(),
                    f"categories.{name}.add: no category {name!r} is declared to add to",
                )
                continue
            for i, glob in enumerate(spec.add):
                self.label_glob(glob, self._item(origin, (), i), f"categories.{name}.add")
            globs, first = self.m.categories[name]
            self.m.categories[name] = (tuple(dict.fromkeys((*globs, *spec.add))), first)

    def check_rules(self) -> list[CompiledRule]:
        compiled: list[CompiledRule] = []
        seen: dict[str, _Origin] = {}
        catch_all: tuple[str, _Origin] | None = None
        for rule, origin in self.m.rules:
            if rule.id in seen:
                self.error(
                    origin.at("id"),
                    f"duplicate rule id {rule.id!r} (first at {seen[rule.id].at('id')})",
                )
            else:
                seen[rule.id] = origin
            self.check_when(rule, origin)
            without = (rule.then.without or ()) if rule.then is not None else None
            for i, glob in enumerate(without or ()):
                at = self._item(origin, ("then", "without"), i)
                self.label_glob(glob, at, "then.without")
            built = compile_rule(
                rule.id,
                rule.action,
                rule.reason,
                rule.encrypt,
                rule.mode,
                rule.when,
                without,
                rule.approvals or 1,
            )
            if catch_all is not None:
                self.error(
                    origin.at("id"),
                    f"rule {rule.id!r} is unreachable: rule {catch_all[0]!r} at "
                    f"{catch_all[1].at('id')} matches every transfer before it",
                )
            elif built.catch_all and rule.mode == "enforce" and rule.then is None:
                catch_all = (rule.id, origin)
            compiled.append(built)
        return compiled

    def check_when(self, rule: RuleSpec, origin: _Origin) -> None:
        when = rule.when
        for name, values, declared in (
            ("route", when.route, set(self.m.routes)),
            ("sender", when.sender, set(self.m.senders)),
            ("team", when.team, self.teams),
            ("organisation", when.organisation, self.organisations),
        ):
            for i, value in enumerate(values or ()):
                # A named list may name organisations (a white list) before they send.
                if not is_glob(value) and value not in declared and value not in self.listed:
                    self.error(
                        self._item(origin, ("when", name), i),
                        f"when.{name}: {value!r} is not a declared {name}"
                        + (f" (declared: {', '.join(sorted(declared))})" if declared else ""),
                    )
        if when.labels is not None:
            spec = when.labels
            for group in ("any", "all", "none"):
                items: tuple[str, ...] = getattr(spec, group) or ()
                for i, glob in enumerate(items):
                    at = self._item(origin, ("when", "labels", group), i)
                    self.label_glob(glob, at, f"when.labels.{group}")
            for measure in ("count", "distinct"):
                for key in getattr(spec, measure) or {}:
                    at = origin.at("when", "labels", measure, key, key=True)
                    self.label_glob(key, at, f"when.labels.{measure}")
        for kind in ("labels", "categories"):
            self._contradiction(rule, origin, kind)
        if when.categories is not None:
            spec = when.categories
            for group in ("any", "all", "none"):
                items = getattr(spec, group) or ()
                for i, name in enumerate(items):
                    at = self._item(origin, ("when", "categories", group), i)
                    self.category(name, at, f"when.categories.{group}")
            for measure in ("count", "distinct"):
                for key in getattr(spec, measure) or {}:
                    at = origin.at("when", "categories", measure, key, key=True)
                    self.category(key, at, f"when.categories.{measure}")
        for key, condition in (when.attributes or {}).items():
            vocabulary = ATTRIBUTE_VOCABULARY.get(key)
            if vocabulary is None:
                self.error(
                    origin.at("when", "attributes", key, key=True),
                    f"when.attributes: unknown attribute {key!r} "
                    f"(known: {', '.join(sorted(ATTRIBUTE_VOCABULARY))})",
                )
                continue
            for group in ("any", "all", "none"):
                for i, glob in enumerate(getattr(condition, group) or ()):
                    at = self._item(origin, ("when", "attributes", key, group), i)
                    self.attribute_value(
                        key, glob, vocabulary, at, f"when.attributes.{key}.{group}"
                    )
        for category in when.ledger or {}:
            at = origin.at("when", "ledger", category, key=True)
            if category not in LEDGER_CATEGORIES:
                self.error(
                    at,
                    f"when.ledger: the ledger counts only {', '.join(LEDGER_CATEGORIES)}, "
                    f"not {category!r}",
                )
            elif category not in self.m.categories:
                self.error(at, f"when.ledger: category {category!r} is not declared")

    def _contradiction(self, rule: RuleSpec, origin: _Origin, kind: str) -> None:
        """A name both required (``any``/``all``) and excluded (``none``): the rule never fires."""
        spec = getattr(rule.when, kind)
        if spec is None or not spec.none:
            return
        excluded = set(spec.none)
        for group in ("any", "all"):
            for i, name in enumerate(getattr(spec, group) or ()):
                if name in excluded and (group == "all" or len(getattr(spec, group)) == 1):
                    self.error(
                        self._item(origin, ("when", kind, group), i),
                        f"rule {rule.id!r} can never fire: when.{kind}.{group} requires "
                        f"{name!r} and when.{kind}.none excludes it",
                    )

    @staticmethod
    def _item(origin: _Origin, path: tuple[str, ...], index: int) -> Position:
        # `route: sz-lab` (a scalar) has no element 0 in the document; its value does.
        doc_path = (*origin.path, *path, index)
        if doc_path in origin.doc.values:
            return origin.doc.values[doc_path]
        return origin.at(*path)

    def attribute_value(
        self, key: str, glob: str, vocabulary: frozenset[str], position: Position, where: str
    ) -> None:
        """A value (or glob) of an attribute condition must name a value readers report.

        A misspelt value would silently never match, and in a ``none`` list
        that lets through what the officer meant to stop.
        """
        regex = glob_to_regex(glob)
        if any(regex.fullmatch(value) for value in vocabulary):
            return
        kind = "glob" if is_glob(glob) else "value"
        folded = [v for v in vocabulary if v.casefold() == glob.casefold()]
        hint = f" (did you mean {folded[0]!r}?)" if folded else ""
        known = ", ".join(sorted(vocabulary))
        self.error(
            position,
            f"{where}: {kind} {glob!r} matches no {key} the classifier reports{hint} "
            f"(known: {known})",
        )

    def category(self, name: str, position: Position, where: str) -> None:
        if name not in self.m.categories:
            declared = ", ".join(sorted(self.m.categories)) or "none declared"
            self.error(position, f"{where}: unknown category {name!r} (declared: {declared})")


def _read_recipient(
    spec: RecipientFile, origin: _Origin, require: bool, issues: list[PolicyIssue]
) -> tuple[str | None, Path]:
    path = (origin.doc.directory / spec.file).resolve()
    position = origin.at("recipient")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RECIPIENT_FILE_BYTES + 1)
    except FileNotFoundError:
        message = f"recipient file {spec.file!r} does not exist (resolved: {display_name(path)})"
        issues.append(PolicyIssue(position, message, warning=not require))
        return None, path
    except OSError as exc:
        issues.append(PolicyIssue(position, f"recipient file {spec.file!r}: {exc.strerror}"))
        return None, path
    if len(raw) > MAX_RECIPIENT_FILE_BYTES:
        issues.append(PolicyIssue(position, f"recipient file {spec.file!r} is too large"))
        return None, path
    lines = [
        line.strip()
        for line in raw.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if len(lines) != 1:
        issues.append(
            PolicyIssue(position, f"recipient file {spec.file!r}: expected exactly one age1… line")
        )
        return None, path
    try:
        return check_age_recipient(lines[0]), path
    except ValueError as exc:
        issues.append(PolicyIssue(position, f"recipient file {spec.file!r}: {exc}"))
        return None, path


def _routes(
    merged: _Merged, require_keys: bool, issues: list[PolicyIssue]
) -> tuple[dict[str, Route], set[str], list[Path], dict[str, Any]]:
    """Resolve recipients; return routes, names with a pending key file, key files, canon."""
    routes: dict[str, Route] = {}
    pending: set[str] = set()
    key_files: list[Path] = []
    canon: dict[str, Any] = {}
    for name, (spec, origin) in merged.routes.items():
        recipient: str | None
        if isinstance(spec.recipient, RecipientFile):
            before = len(issues)
            recipient, path = _read_recipient(spec.recipient, origin, require_keys, issues)
            key_files.append(path)
            if recipient is None and all(i.warning for i in issues[before:]):
                pending.add(name)
        else:
            recipient = spec.recipient
        if spec.encrypt == "envelope" and spec.recipient is None:
            issues.append(
                PolicyIssue(
                    origin.at(key=True),
                    f"route {name!r} encrypts with 'envelope' by default but has no recipient: "
                    "give recipient (age1… or {file: path}) or set encrypt: tls",
                )
            )
        routes[name] = Route(
            name,
            spec.direction,
            spec.destination,
            recipient,
            spec.legal_basis,
            spec.encrypt,
            spec.chance or "test",
            spec.park,
            bool(spec.recipient_gba_registered),
        )
        entry = canonical(spec)
        if entry.get("chance") == "test":
            del entry["chance"]  # the default written out is the same policy
        if recipient is not None:
            entry["recipient"] = recipient
        canon[name] = entry
    return routes, pending, key_files, canon


def _check_shadowed(
    merged: _Merged,
    compiled: Sequence[CompiledRule],
    routes: Mapping[str, Route],
    issues: list[PolicyIssue],
) -> None:
    """A rule an earlier deciding rule always pre-empts can never decide (:mod:`.reach`).

    A warning, not an error: whether it holds depends on the declared routes,
    senders and lists as well as the rules, and a white-list edit must not
    make a reload fail. ``policy check --strict`` fails on it.
    """
    senders = {ident: (spec.team, spec.organisation) for ident, (spec, _) in merged.senders.items()}
    deciders: list[tuple[Reach, str, _Origin]] = []
    for (spec, origin), rule in zip(merged.rules, compiled, strict=True):
        reach = Reach(
            spec.when,
            frozenset(name for name, route in routes.items() if rule.route_filter(route)),
            frozenset(
                ident
                for ident, (team, organisation) in senders.items()
                if sender_matches(spec.when, ident, team, organisation)
            ),
        )
        # A rule no declared route or sender reaches is a pack's rule for
        # another deployment, not a mistake; it cannot be shown shadowed.
        if reach.routes and reach.senders:
            for broad, broad_id, broad_origin in deciders:
                if covers(broad, reach):
                    issues.append(
                        PolicyIssue(
                            origin.at("id"),
                            f"rule {spec.id!r} can never decide: rule {broad_id!r} at "
                            f"{broad_origin.at('id')} comes first and matches every "
                            "transfer it matches (move it before that rule, or narrow "
                            "the earlier one)",
                            warning=True,
                        )
                    )
                    break
        if spec.mode != "enforce" or rule.catch_all:
            continue  # shadow rules decide nothing; a catch-all is reported as such
        if spec.then is not None:
            # The rules after a `then` judge a transfer without its then.without
            # labels, the earlier ones with them: no comparison across it.
            deciders.clear()
        else:
            deciders.append((reach, spec.id, origin))


def _check_envelope(
    merged: _Merged,
    compiled: Sequence[CompiledRule],
    routes: Mapping[str, Route],
    pending: set[str],
    issues: list[PolicyIssue],
) -> None:
    """A rule demanding ``encrypt: envelope`` needs a recipient on every route it applies to."""
    keyless = [r for r in routes.values() if r.recipient is None and r.name not in pending]
    for (spec, origin), rule in zip(merged.rules, compiled, strict=True):
        if spec.encrypt != "envelope":
            continue
        missing = sorted(r.name for r in keyless if rule.route_filter(r))
        if missing:
            issues.append(
                PolicyIssue(
                    origin.at("encrypt"),
                    f"rule {spec.id!r} requires encrypt: envelope but route(s) "
                    f"{', '.join(missing)} have no recipient key",
                )
            )
    if merged.default is not None and merged.default[0].encrypt == "envelope" and keyless:
        names = ", ".join(sorted(r.name for r in keyless))
        issues.append(
            PolicyIssue(
                merged.default[1].at("encrypt"),
                f"default requires encrypt: envelope but route(s) {names} have no recipient key",
            )
        )


def _build_detectors(merged: _Merged, issues: list[PolicyIssue]) -> DetectorSet | None:
    """Compile the detector set (built-ins + this policy's custom detectors) once."""
    customs: list[CustomDetector] = []
    for label, (spec, origin) in merged.detectors.items():
        try:
            customs.append(
                CustomDetector(
                    label=label,
                    patterns=spec.patterns,
                    keywords=spec.keywords,
                    hotwords=spec.hotwords,
                    window=spec.window,
                    validator=spec.validator,
                    case_sensitive=spec.case_sensitive,
                    personal=spec.personal,
                    boundary=spec.boundary,
                )
            )
        except DetectorError as exc:
            issues.append(_detector_issue(origin, exc))
    if any(not i.warning for i in issues):
        return None
    try:
        return _detector_set(tuple(customs))
    except DetectorError as exc:
        found = merged.detectors.get(exc.label)
        if found is None:  # pragma: no cover - the classifier names a declared detector
            issues.append(PolicyIssue(Position("(detectors)"), str(exc)))
        else:
            issues.append(_detector_issue(found[1], exc))
        return None


#: Detector sets kept for reuse: a reload that leaves the custom detectors unchanged
#: (the usual case: a rule edit) skips the Hyperscan compile. A handful covers
#: flip-flopping between versions; each set is a few MB of compiled database.
DETECTOR_CACHE_SIZE = 4


@functools.lru_cache(maxsize=DETECTOR_CACHE_SIZE)
def _detector_set(customs: tuple[CustomDetector, ...]) -> DetectorSet:
    """The immutable detector set for ``customs`` (shared by versions that agree on them)."""
    return DetectorSet.build(custom=customs)


def _detector_issue(origin: _Origin, exc: DetectorError) -> PolicyIssue:
    if exc.field == "label":
        return PolicyIssue(origin.at(key=True), str(exc))
    sub: tuple[str | int, ...] = (exc.field,) if exc.index is None else (exc.field, exc.index)
    return PolicyIssue(origin.at(*sub), str(exc))


def version_of(content: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the merged policy (sorted keys, no whitespace).

    Formatting, comments and the split into files do not change the version;
    any change of meaning (a rule, an order, a recipient key) does.
    """
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_documents(
    files: Iterable[Path],
) -> tuple[list[tuple[Document, PolicyFile]], list[PolicyIssue]]:
    """Parse and validate each file on its own."""
    issues: list[PolicyIssue] = []
    parsed: list[tuple[Document, PolicyFile]] = []
    for path in files:
        try:
            doc, found = read_yaml(path)
        except OSError as exc:
            issues.append(PolicyIssue(Position(display_name(path)), f"cannot read: {exc.strerror}"))
            continue
        issues.extend(found)
        if found:
            continue
        data = doc.data if doc.data is not None else {}
        if not isinstance(data, dict):
            issues.append(
                PolicyIssue(doc.at(()), f"expected a mapping at the top level, got {_kind(data)}")
            )
            continue
        try:
            parsed.append((doc, PolicyFile.model_validate(data)))
        except ValidationError as exc:
            issues.extend(validation_issues(doc, exc, PolicyFile))
    return parsed, issues


def load_policy(path: Path | str, *, require_keys: bool = True) -> CompiledPolicy:
    """Load, validate and compile the policy set at ``path`` (a directory or one file).

    Args:
        path: the policy directory (or a single YAML file).
        require_keys: a recipient ``{file: …}`` that does not exist is an error
            (the server, which must encrypt); with False it is a warning and the
            route has no recipient yet (``policy check``/``test`` on a machine
            where ``make run`` has not generated the demo keys).

    Raises:
        PolicyIOError: the path cannot be read.
        PolicyLoadError: the policy is invalid; ``.errors`` has every problem.
    """
    root = Path(path)
    files = policy_files(root)
    parsed, issues = load_documents(files)
    if any(not i.warning for i in issues):
        raise PolicyLoadError(issues)
    merged = _merge(parsed, issues)
    resolved, list_files = _resolve_lists(merged, issues)
    checker = _Checker(merged, issues)
    checker.listed = {value for values in resolved.values() for value in values}
    checker.check_detectors()
    checker.check_categories()
    compiled = checker.check_rules()
    routes, pending, key_files, route_canon = _routes(merged, require_keys, issues)
    _check_envelope(merged, compiled, routes, pending, issues)
    _check_shadowed(merged, compiled, routes, issues)
    if any(not i.warning for i in issues):
        raise PolicyLoadError(issues)
    detectors = _build_detectors(merged, issues)
    if detectors is None or any(not i.warning for i in issues):
        raise PolicyLoadError(issues)

    name = merged.name[0] if merged.name else (root.name if root.is_dir() else root.stem)
    default_spec = merged.default[0] if merged.default else None
    ledger_directions = frozenset(
        merged.ledger[0].directions if merged.ledger else DEFAULT_LEDGER_DIRECTIONS
    )
    content: dict[str, Any] = {
        # An undeclared name (the directory's) is not content: moving the directory
        # must not change the version.
        "name": merged.name[0] if merged.name else None,
        "categories": {k: list(v) for k, (v, _) in merged.categories.items()},
        "detectors": {k: canonical(v) for k, (v, _) in merged.detectors.items()},
        "senders": {k: canonical(v) for k, (v, _) in merged.senders.items()},
        **(
            {"organisations": {k: canonical(v) for k, (v, _) in merged.organisations.items()}}
            if merged.organisations
            else {}
        ),
        "routes": route_canon,
        "rules": [canonical(rule) for rule, _ in merged.rules],
        "default": canonical(default_spec) if default_spec else None,
        # The effective value, so writing the default out does not change the version.
        "ledger": {"directions": sorted(ledger_directions)},
    }
    if resolved:
        content["lists"] = {name: list(values) for name, values in sorted(resolved.items())}
    organisation_gba = {k: v.gba_registered for k, (v, _) in merged.organisations.items()}
    chance_spec = merged.chance[0] if merged.chance else None
    if chance_spec is not None:
        # Only what changes a verdict: an empty section is no section.
        chance_canon = {k: v for k, v in canonical(chance_spec).items() if v}
        if chance_canon:
            content["chance"] = chance_canon
    return CompiledPolicy(
        name=name,
        version=version_of(content),
        routes=routes,
        senders={
            ident: Sender(
                ident, spec.team, spec.organisation, organisation_gba.get(spec.organisation, False)
            )
            for ident, (spec, _) in merged.senders.items()
        },
        categories={k: v for k, (v, _) in merged.categories.items()},
        detectors=detectors,
        rules=compiled,
        default_action=default_spec.action if default_spec else "block",
        default_reason=default_spec.reason if default_spec else DEFAULT_REASON,
        default_encrypt=default_spec.encrypt if default_spec else None,
        ledger_directions=ledger_directions,
        chance_count=(chance_spec.count or ()) if chance_spec else (),
        chance_headers=chance_spec.headers if chance_spec else {},
        gba_organisations=frozenset(k for k, v in organisation_gba.items() if v),
        sources=(*files, *key_files, *list_files),
        content=content,
        warnings=[i for i in issues if i.warning],
    )
