"""Compiled policies and the pure evaluation of one transfer.

A policy version is compiled once into predicate objects (STYLE.md §6);
:meth:`CompiledPolicy.evaluate` then only compares numbers and matches short
names, with no I/O: the server reads the ledger inside its transaction and
passes the counts in. Rules are tried in order and the first matching
``enforce`` rule decides; ``shadow`` rules are evaluated and recorded in the
trace (like an admission controller's audit mode) but never decide. Every
rule considered is in the trace with each condition and why it held or not;
the trace names labels, categories and counts, never a matched value.

Counts of people err upwards. When the classifier reached its distinct-value
cap (``ScanSummary.distinct_capped``), ``distinct``, ``subjects`` and the
digests are lower bounds, so every condition on them uses an upper bound
instead: a label's findings bound its distinct values from above (each finding
is at most one new value). The trace says when such a bound was used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from gateway.classify.attributes import UNKNOWN, attribute_values
from gateway.classify.chance import HEADER_WORDS
from gateway.classify.detectors import DetectorSet
from gateway.classify.labels import UNSCANNABLE
from gateway.classify.summary import ScanSummary
from gateway.errors import NotFound, Unauthenticated
from gateway.ledger.base import LedgerCount
from gateway.policy.model import (
    DEFAULT_LEDGER_DIRECTIONS,
    NO_LEGAL_BASIS,
    NO_PARK,
    Action,
    AttributeCondition,
    ChanceMode,
    Direction,
    EncryptMode,
    Mode,
    PresenceCondition,
    Threshold,
    When,
    glob_to_regex,
)
from gateway.policy.source import PolicyIssue

#: The categories the ledger keeps per organisation and year (2024 Provisions:
#: personal information and sensitive personal information are counted separately).
LEDGER_CATEGORIES: Final = ("personal", "sensitive")
#: Built-in labels that identify a person; their distinct values are the subjects
#: counted. Custom detectors declared ``personal: true`` identify people too (the
#: detector set knows which: ``DetectorSet.personal``).
PERSON_PREFIX: Final = "pii."
#: The category a custom ``personal: true`` label belongs to even when the
#: category's globs do not name it: the classifier counts it as people, so the
#: rules and the ledger must too (otherwise such data would pass as "no
#: personal information").
PERSONAL_CATEGORY: Final = "personal"
#: Trace note for a number that is an upper bound (the classifier's cap was reached).
_UPPER_BOUND: Final = "upper bound: the classifier's distinct-value cap was reached"
#: The rule id reported when no rule matched.
DEFAULT_RULE: Final = "default"
#: How strict each action is: of a ``then`` rule's and the later rules', the stricter decides.
STRICTNESS: Final[Mapping[str, int]] = MappingProxyType({"allow": 0, "review": 1, "block": 2})


@dataclass(frozen=True, slots=True)
class Route:
    """A route in force.

    Attributes:
        name: the route name (``/v1/transfers/{route}/…``).
        direction: ``hk->sz`` or ``sz->hk`` (``sz->hk`` is export under Mainland law).
        destination: where allowed data is delivered (the twin's ingress URL).
        recipient: the age X25519 recipient (``age1…``) or None.
        legal_basis: the declared legal basis, or None.
        encrypt: the encryption used when a rule does not say.
        chance: ``test`` (chance-level findings in table columns are set
            aside) or ``count`` (they count on this route).
        park: the park of the Hetao zone the destination lies in
            (``hk-park``, ``sz-park``), or None.
        recipient_gba_registered: the recipient is registered in the GBA.
    """

    name: str
    direction: Direction
    destination: str
    recipient: str | None
    legal_basis: str | None
    encrypt: EncryptMode
    chance: ChanceMode = "test"
    park: str | None = None
    recipient_gba_registered: bool = False


@dataclass(frozen=True, slots=True)
class Sender:
    """A sender identity, the team and organisation it belongs to, and whether that
    organisation is GBA-registered (the policy's ``organisations``)."""

    id: str
    team: str
    organisation: str
    gba_registered: bool = False


@dataclass(frozen=True, slots=True)
class TransferContext:
    """Who sends, on which route: the non-content facts of a transfer."""

    route: Route
    sender: Sender


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """One condition of one rule, evaluated.

    Attributes:
        condition: the condition as written (``categories.none``).
        ok: whether it held.
        detail: why, in words, with label names and counts only.
    """

    condition: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule fared.

    Attributes:
        rule: the rule id.
        mode: ``enforce`` or ``shadow``.
        action: the rule's action.
        matched: all its conditions held.
        decided: this rule made the decision.
        conditions: each condition's result, in the fixed order of the
            condition table (route, direction, sender … unscannable).
    """

    rule: str
    mode: Mode
    action: Action
    matched: bool
    decided: bool
    conditions: tuple[ConditionResult, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (for ``gateway explain --json`` and audit records)."""
        return {
            "rule": self.rule,
            "mode": self.mode,
            "action": self.action,
            "matched": self.matched,
            "decided": self.decided,
            "conditions": [
                {"condition": c.condition, "ok": c.ok, "detail": c.detail} for c in self.conditions
            ],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one transfer.

    Attributes:
        action: ``allow``, ``block`` or ``review``.
        rule: the deciding rule id, or ``default``.
        reason: the human reason returned to the sender.
        encrypt: ``envelope`` or ``tls`` for allow and review; None for block.
        policy_version: the version of the policy that decided.
        trace: every rule considered, in order.
        shadow_matches: ids of shadow rules that matched (would have decided).
        combined: ids of the rules with ``then`` that matched: their action
            was weighed against the rest of the evaluation's, and the
            stricter one decided (``rule``).
        approvals: for a review, how many distinct officers must approve it.
    """

    action: Action
    rule: str
    reason: str
    encrypt: EncryptMode | None
    policy_version: str
    trace: tuple[RuleTrace, ...]
    shadow_matches: tuple[str, ...] = ()
    combined: tuple[str, ...] = ()
    approvals: int = 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form of the whole decision, trace included."""
        out: dict[str, Any] = {
            "action": self.action,
            "rule": self.rule,
            "reason": self.reason,
            "encrypt": self.encrypt,
            "policy_version": self.policy_version,
            "shadow_matches": list(self.shadow_matches),
        }
        if self.combined:
            out["combined"] = list(self.combined)
        out["trace"] = [t.to_json() for t in self.trace]
        return out

    def trace_lines(self, only: Collection[str] | None = None) -> list[str]:
        """The trace as ``explain`` prints it: each rule, then each condition
        with the numbers that decided it (``only``: just those rules)."""
        lines: list[str] = []
        for i, step in enumerate(self.trace, 1):
            if only is not None and step.rule not in only:
                continue
            verdict = "MATCH" if step.matched else "no match"
            tail = " -> decides" if step.decided else (" (shadow)" if step.mode == "shadow" else "")
            if step.matched and step.rule in self.combined and not step.decided:
                tail = " (then: weighed, the stricter later decision wins)"
            lines.append(f"  {i:2}. {step.rule} [{step.action}] {verdict}{tail}")
            lines += [
                f"        {'+' if cond.ok else '-'} {cond.condition}: {cond.detail}"
                for cond in step.conditions
            ]
        if self.rule == DEFAULT_RULE and (only is None or DEFAULT_RULE in only):
            lines.append(f"  --  default [{self.action}] (no rule matched)")
        return lines


class _Globs:
    """A compiled list of globs; matches if any glob matches the whole string."""

    __slots__ = ("_regex", "text")

    def __init__(self, globs: Sequence[str]) -> None:
        self.text = tuple(globs)
        self._regex = re.compile("|".join(f"(?:{glob_to_regex(g).pattern})" for g in globs))

    def __call__(self, value: str) -> bool:
        return self._regex.fullmatch(value) is not None

    def matches_everything(self) -> bool:
        return "*" in self.text

    def matches_nothing(self) -> bool:
        return not self.text

    def __str__(self) -> str:
        return ", ".join(self.text)


@dataclass(slots=True)
class _Facts:
    """What one evaluation knows, computed once and shared by all predicates."""

    context: TransferContext
    summary: ScanSummary
    ledger: Mapping[str, LedgerCount]
    label_categories: Callable[[str], frozenset[str]]
    #: Whether this transfer's direction is counted in the ledger.
    counted: bool = True
    #: Per ledger category, findings whose values were not hashed (cap reached):
    #: at most that many more people than the digests show.
    ledger_slack: Mapping[str, int] = field(default_factory=dict)
    #: ``summary.subjects``, or its upper bound when the cap was reached.
    subjects: int = 0
    #: Labels with findings, sorted (traces list them in a stable order).
    present: tuple[str, ...] = ()
    #: (kind, key) -> the present labels it covers, and its trace text; rules share keys.
    covered: dict[tuple[str, str], tuple[tuple[str, ...], str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.present = tuple(sorted(k for k, s in self.summary.labels.items() if s.count > 0))


Predicate = Callable[[_Facts], ConditionResult]


def _fmt(n: int) -> str:
    return f"{n:,}"


def _text_predicate(
    name: str, globs: _Globs, get: Callable[[TransferContext], str | None]
) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        value = get(facts.context)
        ok = value is not None and globs(value)
        shown = "(none)" if value is None else repr(value)
        verb = "matches" if ok else "does not match"
        return ConditionResult(name, ok, f"{name} {shown} {verb} [{globs}]")

    return check


def _legal_basis_predicate(allowed: tuple[str, ...]) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        basis = facts.context.route.legal_basis or NO_LEGAL_BASIS
        ok = basis in allowed
        verb = "is one of" if ok else "is not one of"
        listed = ", ".join(allowed)
        detail = f"route legal basis {basis!r} {verb} [{listed}]"
        return ConditionResult("legal_basis", ok, detail)

    return check


def _park_predicate(allowed: tuple[str, ...]) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        park = facts.context.route.park or NO_PARK
        ok = park in allowed
        verb = "is one of" if ok else "is not one of"
        detail = f"route destination park {park!r} {verb} [{', '.join(allowed)}]"
        return ConditionResult("park", ok, detail)

    return check


def _gba_predicate(expected: bool) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        sender, route = facts.context.sender, facts.context.route
        both = sender.gba_registered and route.recipient_gba_registered
        ok = both == expected
        detail = (
            f"organisation {sender.organisation!r} "
            f"{'is' if sender.gba_registered else 'is not'} GBA-registered, route "
            f"{route.name!r}'s recipient {'is' if route.recipient_gba_registered else 'is not'}"
        )
        return ConditionResult("gba_registered", ok, detail)

    return check


def _threshold_result(
    name: str, actual: int, threshold: Threshold, what: str, note: str = ""
) -> ConditionResult:
    ok = threshold.test(actual)
    shown = f"{_fmt(actual)} ({note})" if note else _fmt(actual)
    return ConditionResult(name, ok, f"{what} {shown} {threshold} is {str(ok).lower()}")


class _Presence:
    """``any``/``all``/``none``/``count``/``distinct`` over labels or categories.

    For labels, the condition's keys are globs over label ids; for categories
    they are category names and a label belongs to a category when one of the
    category's globs matches it.
    """

    def __init__(self, kind: str, spec: PresenceCondition) -> None:
        self.kind = kind
        self.spec = spec
        self._label_globs: dict[str, _Globs] = {}
        for key in self._keys(spec):
            self._label_globs[key] = _Globs([key])

    @staticmethod
    def _keys(spec: PresenceCondition) -> set[str]:
        keys: set[str] = set()
        for group in (spec.any, spec.all, spec.none):
            keys.update(group or ())
        keys.update(spec.count or {})
        keys.update(spec.distinct or {})
        return keys

    def _covered(self, facts: _Facts, key: str) -> tuple[tuple[str, ...], str]:
        """Labels present in the summary that ``key`` covers, and how the trace says it."""
        found = facts.covered.get((self.kind, key))
        if found is None:
            if self.kind == "labels":
                glob = self._label_globs[key]
                labels = tuple(label for label in facts.present if glob(label))
            else:
                labels = tuple(lb for lb in facts.present if key in facts.label_categories(lb))
            if labels:
                counts = ", ".join(f"{lb} ({_fmt(facts.summary.count(lb))})" for lb in labels)
                text = f"{key}: {counts}"
            else:
                text = f"{key}: absent"
            found = (labels, text)
            facts.covered[(self.kind, key)] = found
        return found

    def _present(self, facts: _Facts, key: str) -> tuple[str, ...]:
        return self._covered(facts, key)[0]

    def _describe(self, facts: _Facts, keys: Sequence[str]) -> str:
        return "; ".join(self._covered(facts, key)[1] for key in keys)

    def predicates(self) -> list[Predicate]:
        spec = self.spec
        out: list[Predicate] = []
        for group_name, group in (("any", spec.any), ("all", spec.all), ("none", spec.none)):
            if group is not None:
                out.append(self._group(group_name, group))
        for measure, mapping in (("count", spec.count), ("distinct", spec.distinct)):
            for key, threshold in (mapping or {}).items():
                out.append(self._measure(measure, key, threshold))
        return out

    def _group(self, group_name: str, keys: tuple[str, ...]) -> Predicate:
        name = f"{self.kind}.{group_name}"

        def check(facts: _Facts) -> ConditionResult:
            hits = [bool(self._present(facts, key)) for key in keys]
            if group_name == "any":
                ok = any(hits)
            elif group_name == "all":
                ok = all(hits)
            else:
                ok = not any(hits)
            return ConditionResult(name, ok, self._describe(facts, keys))

        return check

    def _measure(self, measure: str, key: str, threshold: Threshold) -> Predicate:
        name = f"{self.kind}.{measure}[{key}]"

        def check(facts: _Facts) -> ConditionResult:
            total = 0
            exact = True
            for label in self._present(facts, key):
                stats = facts.summary.labels[label]
                if measure == "count":
                    total += stats.count
                elif facts.summary.distinct_capped and stats.count > stats.distinct:
                    # Values past the cap were not told apart: each finding may be new.
                    total += stats.count
                    exact = False
                else:
                    total += stats.distinct
            what = "findings" if measure == "count" else "distinct values"
            note = "" if exact else _UPPER_BOUND
            return _threshold_result(name, total, threshold, f"{key} {what}", note)

        return check


def _ledger_predicate(category: str, which: str, threshold: Threshold) -> Predicate:
    name = f"ledger.{category}.{which}"

    def check(facts: _Facts) -> ConditionResult:
        count = facts.ledger.get(category)
        if count is None:
            raise ValueError(f"evaluate() needs the ledger count of category {category!r}")
        if which == "current":
            return _threshold_result(
                name, count.current, threshold, f"{category} subjects this year"
            )
        what = f"{category} subjects this year including this transfer"
        if not facts.counted:
            # Not an export under the policy's ledger: this transfer adds nobody.
            direction = facts.context.route.direction
            note = f"{direction} transfers are not counted"
            return _threshold_result(name, count.current, threshold, what, note)
        slack = facts.ledger_slack.get(category, 0)
        note = f"{_UPPER_BOUND}; {_fmt(slack)} findings not hashed" if slack else ""
        return _threshold_result(name, count.projected + slack, threshold, what, note)

    return check


def _subjects(threshold: Threshold) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        note = _UPPER_BOUND if facts.subjects > facts.summary.subjects else ""
        return _threshold_result("subjects", facts.subjects, threshold, "subjects", note)

    return check


def _size(threshold: Threshold) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        return _threshold_result("size", facts.summary.size, threshold, "bytes")

    return check


def _unscannable(expected: bool) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        layers = max(len(facts.summary.unscannable), facts.summary.count(UNSCANNABLE))
        actual = layers > 0
        detail = f"{layers} unscannable layer(s)" if actual else "everything was scanned"
        return ConditionResult("unscannable", actual == expected, detail)

    return check


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule turned into predicates.

    Attributes:
        id: the rule id.
        action: what the rule decides.
        reason: returned to the sender.
        encrypt: the rule's encryption, or None to use the route's.
        mode: ``enforce`` or ``shadow``.
        predicates: the conditions' predicates, in the fixed order of :class:`When`.
        route_filter: the conditions that depend only on the route, used to
            find which routes a rule can apply to.
        catch_all: the rule matches every transfer (no conditions, or only
            ``*`` globs); rules after an enforcing catch-all are unreachable.
        without: for a rule that does not end the evaluation (``then``), the
            labels the later rules judge the transfer without; None for a rule
            that decides.
        ledger_lines: the rule's ledger conditions (category, ``current`` or
            ``projected``, threshold), for ``gateway ledger show --policy``.
    """

    id: str
    action: Action
    reason: str
    encrypt: EncryptMode | None
    mode: Mode
    predicates: tuple[Predicate, ...]
    route_filter: Callable[[Route], bool]
    catch_all: bool
    without: _Globs | None = None
    ledger_lines: tuple[tuple[str, str, Threshold], ...] = ()
    approvals: int = 1


def compile_rule(
    rule_id: str,
    action: Action,
    reason: str,
    encrypt: EncryptMode | None,
    mode: Mode,
    when: When,
    without: Sequence[str] | None = None,
    approvals: int = 1,
) -> CompiledRule:
    """Compile one rule's conditions into predicates, in the order of :class:`When`."""
    preds: list[Predicate] = []
    route_checks: list[Callable[[Route], bool]] = []
    everything = True
    if when.route is not None:
        route_globs = _Globs(when.route)
        preds.append(_text_predicate("route", route_globs, lambda c: c.route.name))
        route_checks.append(lambda r: route_globs(r.name))
        everything &= route_globs.matches_everything()
    if when.direction is not None:
        direction = when.direction
        preds.append(_text_predicate("direction", _Globs([direction]), lambda c: c.route.direction))
        route_checks.append(lambda r: r.direction == direction)
        everything = False
    for name, globs_spec, getter in (
        ("sender", when.sender, lambda c: c.sender.id),
        ("team", when.team, lambda c: c.sender.team),
        ("organisation", when.organisation, lambda c: c.sender.organisation),
    ):
        if globs_spec is not None:
            globs = _Globs(globs_spec)
            preds.append(_text_predicate(name, globs, getter))
            everything &= globs.matches_everything()
    if when.legal_basis is not None:
        allowed = when.legal_basis
        preds.append(_legal_basis_predicate(allowed))
        route_checks.append(lambda r: (r.legal_basis or NO_LEGAL_BASIS) in allowed)
        everything = False
    for kind, presence in (("labels", when.labels), ("categories", when.categories)):
        if presence is not None:
            preds.extend(_Presence(kind, presence).predicates())
            everything = False
    if when.subjects is not None:
        preds.append(_subjects(when.subjects))
        everything = False
    for category, ledger in (when.ledger or {}).items():
        if ledger.current is not None:
            preds.append(_ledger_predicate(category, "current", ledger.current))
        if ledger.projected is not None:
            preds.append(_ledger_predicate(category, "projected", ledger.projected))
        everything = False
    if when.content_type is not None:
        content_globs = _Globs(when.content_type)
        preds.append(_content_type(content_globs))
        everything &= content_globs.matches_everything()
    for key, condition in (when.attributes or {}).items():
        attribute_preds, all_values = _attribute_predicates(key, condition)
        preds.extend(attribute_preds)
        everything &= all_values
    if when.size is not None:
        preds.append(_size(when.size))
        everything = False
    if when.unscannable is not None:
        preds.append(_unscannable(when.unscannable))
        everything = False
    if when.park is not None:
        parks = when.park
        preds.append(_park_predicate(parks))
        route_checks.append(lambda r: (r.park or NO_PARK) in parks)
        everything = False
    if when.gba_registered is not None:
        preds.append(_gba_predicate(when.gba_registered))
        everything = False

    def route_filter(route: Route) -> bool:
        return all(check(route) for check in route_checks)

    return CompiledRule(
        id=rule_id,
        action=action,
        reason=reason,
        encrypt=encrypt,
        mode=mode,
        predicates=tuple(preds),
        route_filter=route_filter,
        catch_all=everything,
        without=None if without is None else _Globs(without),
        ledger_lines=tuple(
            (category, which, threshold)
            for category, ledger in (when.ledger or {}).items()
            for which, threshold in (("current", ledger.current), ("projected", ledger.projected))
            if threshold is not None
        ),
        approvals=approvals,
    )


def _content_type(globs: _Globs) -> Predicate:
    def check(facts: _Facts) -> ConditionResult:
        value = facts.summary.content.type
        ok = globs(value)
        verb = "matches" if ok else "does not match"
        return ConditionResult("content_type", ok, f"content type {value!r} {verb} [{globs}]")

    return check


def _attribute_predicates(key: str, spec: AttributeCondition) -> tuple[list[Predicate], bool]:
    """Predicates for one attribute's ``any``/``all``/``none``, and whether they hold always.

    The values are ``ContentInfo.attributes[key]`` split at the separator, or
    ``unknown`` alone when the content does not state the attribute. Only an
    ``any`` with a ``*`` glob holds for every transfer.
    """
    out: list[Predicate] = []
    always = True
    for group, globs_spec in (("any", spec.any), ("all", spec.all), ("none", spec.none)):
        if globs_spec is not None:
            globs = [(glob, _Globs([glob])) for glob in globs_spec]
            out.append(_attribute_group(key, group, globs))
            always &= group == "any" and "*" in globs_spec
    return out, always


def _attribute_group(key: str, group: str, globs: list[tuple[str, _Globs]]) -> Predicate:
    name = f"attributes.{key}.{group}"
    listed = ", ".join(glob for glob, _ in globs)

    def check(facts: _Facts) -> ConditionResult:
        values = attribute_values(facts.summary.content.attributes, key)
        hits = [glob for glob, match in globs if any(match(v) for v in values)]
        if group == "any":
            ok = bool(hits)
        elif group == "all":
            ok = len(hits) == len(globs)
        else:
            ok = not hits
        if values == (UNKNOWN,) and key not in facts.summary.content.attributes:
            shown = f"{key} not stated ({UNKNOWN})"
        else:
            shown = f"{key} " + ", ".join(repr(v) for v in values)
        if not hits:
            found = f"matches none of [{listed}]"
        elif group == "all" and not ok:
            missed = ", ".join(glob for glob, _ in globs if glob not in hits)
            found = f"matches {', '.join(hits)}; nothing matches {missed}"
        else:
            found = f"matches {', '.join(hits)}"
        return ConditionResult(name, ok, f"{shown}: {found}")

    return check


class CompiledPolicy:
    """A validated policy set, compiled once per version; immutable and shared.

    Attributes:
        name: the policy set's name.
        version: hex SHA-256 of the canonical content.
        routes: route name -> :class:`Route`.
        senders: sender identity -> :class:`Sender`.
        categories: category -> label globs.
        detectors: the classifier's detector set for this version.
        rules: the compiled rules in order.
        default_action / default_reason / default_encrypt: the default block.
        ledger_categories: the ledger categories this policy declares.
        ledger_directions: the directions whose transfers the ledger counts
            (default ``sz->hk`` only: the 2024 Provisions count exports).
        sources: every file read to build this version (for the watcher).
        warnings: problems that did not stop loading.
    """

    def __init__(
        self,
        *,
        name: str,
        version: str,
        routes: Mapping[str, Route],
        senders: Mapping[str, Sender],
        categories: Mapping[str, tuple[str, ...]],
        detectors: DetectorSet,
        rules: Sequence[CompiledRule],
        default_action: Action,
        default_reason: str,
        default_encrypt: EncryptMode | None,
        ledger_directions: Collection[Direction] = DEFAULT_LEDGER_DIRECTIONS,
        chance_count: Sequence[str] = (),
        chance_headers: Mapping[str, Sequence[str]] | None = None,
        gba_organisations: Collection[str] = (),
        sources: Sequence[Path] = (),
        content: Mapping[str, Any] | None = None,
        warnings: Sequence[PolicyIssue] = (),
    ) -> None:
        self.name = name
        self.version = version
        self.routes: Mapping[str, Route] = MappingProxyType(dict(routes))
        self.senders: Mapping[str, Sender] = MappingProxyType(dict(senders))
        self.categories: Mapping[str, tuple[str, ...]] = MappingProxyType(dict(categories))
        self.detectors = detectors
        self.rules = tuple(rules)
        self.default_action: Action = default_action
        self.default_reason = default_reason
        self.default_encrypt: EncryptMode | None = default_encrypt
        self.sources = tuple(sources)
        #: The canonical content the version is the SHA-256 of (the policy archive keeps it).
        self.content: Mapping[str, Any] = MappingProxyType(dict(content or {}))
        self.warnings = tuple(warnings)
        self._category_globs = {c: _Globs(g) for c, g in self.categories.items()}
        self._label_cache: dict[str, frozenset[str]] = {}
        self.ledger_categories: frozenset[str] = frozenset(
            c for c in LEDGER_CATEGORIES if c in self.categories
        )
        self.ledger_directions: frozenset[Direction] = frozenset(ledger_directions)
        self._chance_count = _Globs(chance_count)
        #: Organisations the policy says are GBA-registered (``organisations``).
        self.gba_organisations: frozenset[str] = frozenset(gba_organisations)
        extra = chance_headers or {}
        #: Per chance-tested label, the header words that name it (built-in and this policy's).
        self.chance_words: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {
                label: (*words, *(w.lower() for w in extra.get(label, ())))
                for label, words in HEADER_WORDS.items()
            }
        )
        self._person_labels: frozenset[str] = frozenset(
            label
            for label, personal in zip(detectors.labels, detectors.personal, strict=True)
            if personal
        )

    def __repr__(self) -> str:
        return f"<CompiledPolicy {self.name} {self.version[:12]} rules={len(self.rules)}>"

    def context(self, route: str, sender: str) -> TransferContext:
        """The context of a transfer by route name and sender identity.

        Raises:
            NotFound: no such route (HTTP 404). The message does not name it: an
                unknown route is the client's text, which may hold an
                identifier (SPEC §3.2); a declared one is the officer's word.
            Unauthenticated: the identity is not a sender of this policy (HTTP 401).
        """
        found_route = self.routes.get(route)
        if found_route is None:
            raise NotFound("unknown route: no route of that name is declared in the policy")
        found_sender = self.senders.get(sender)
        if found_sender is None:
            raise Unauthenticated("sender identity is not declared in the policy")
        return TransferContext(found_route, found_sender)

    def is_person_label(self, label: str) -> bool:
        """Whether ``label``'s values identify people (built-in ``pii.*`` or ``personal: true``)."""
        return label.startswith(PERSON_PREFIX) or label in self._person_labels

    def categories_of(self, label: str) -> frozenset[str]:
        """The categories ``label`` belongs to (cached per label id).

        A category holds the labels its globs match; a custom ``personal: true``
        label is also in ``personal`` (when declared) without being named there.
        """
        cached = self._label_cache.get(label)
        if cached is None:
            found = {c for c, g in self._category_globs.items() if g(label)}
            if (
                PERSONAL_CATEGORY in self.categories
                and label in self._person_labels
                and not label.startswith(PERSON_PREFIX)
            ):
                found.add(PERSONAL_CATEGORY)
            cached = frozenset(found)
            # Bounded: labels come from this version's detector set (built-ins + custom).
            self._label_cache[label] = cached
        return cached

    def with_chance(self, summary: ScanSummary, route: Route) -> ScanSummary:
        """The summary this policy judges on ``route``: chance-level findings counted
        where the route (``chance: count``) or the label (``chance.count``) asks."""
        if route.chance == "count":
            return summary.counting_chance(lambda _label: True)
        if self._chance_count.matches_nothing():
            return summary
        return summary.counting_chance(self._chance_count)

    def ledger_lines(self) -> list[tuple[str, int, str, Action]]:
        """The yearly lines this policy's enforced rules draw: (category, the number
        of people at which the rule's condition starts to hold, rule id, action),
        lowest first. Only conditions that hold from a number upwards (``>=``,
        ``>``) are lines."""
        lines: list[tuple[str, int, str, Action]] = []
        for rule in self.rules:
            if rule.mode != "enforce":
                continue
            for category, _which, threshold in rule.ledger_lines:
                if threshold.op in (">=", ">"):
                    at = threshold.value + (threshold.op == ">")
                    lines.append((category, at, rule.id, rule.action))
        return sorted(lines, key=lambda line: (line[0], line[1], line[2]))

    def counts_in_ledger(self, direction: Direction) -> bool:
        """Whether allowed transfers in ``direction`` add their people to the ledger."""
        return direction in self.ledger_directions

    def _ledger_labels(self, summary: ScanSummary) -> dict[str, frozenset[str]]:
        """Per ledger category, the present labels whose values are its people."""
        present = [label for label, s in summary.labels.items() if s.count > 0]
        people = [label for label in present if self.is_person_label(label)]
        out: dict[str, frozenset[str]] = {}
        for category in self.ledger_categories:
            chosen = {label for label in people if category in self.categories_of(label)}
            if category == "sensitive" and any(
                category in self.categories_of(label) and not self.is_person_label(label)
                for label in present
            ):
                chosen.update(people)
            out[category] = frozenset(chosen)
        return out

    def ledger_digests(
        self, summary: ScanSummary, direction: Direction | None = None
    ) -> dict[str, frozenset[bytes]]:
        """Keyed hashes of the people in this transfer, per ledger category.

        A category's subjects are the distinct values of its person-identifying
        labels (built-in ``pii.*`` and custom ``personal: true``). If the
        transfer carries any ``sensitive`` finding that does not itself
        identify a person (a diagnosis, a genome, a location), the people
        identified in it are counted as sensitive subjects too: their records
        hold sensitive personal information. The union over labels may count
        one person twice (an ID number and a phone number), so the totals err
        towards the stricter threshold.

        Args:
            summary: the classifier's result.
            direction: the route's direction. A direction the policy's ledger
                does not count (by default anything but ``sz->hk``) gets every
                category with no digests: the server still reads the
                organisation's totals (rules may compare them) but records
                nothing. ``None`` (the call shape before directions existed)
                counts the transfer, the stricter reading.
        """
        if direction is not None and not self.counts_in_ledger(direction):
            return {category: frozenset() for category in self.ledger_categories}
        out: dict[str, frozenset[bytes]] = {}
        for category, labels in self._ledger_labels(summary).items():
            digests: set[bytes] = set()
            for label in labels:
                digests.update(summary.digests.get(label, frozenset()))
            out[category] = frozenset(digests)
        return out

    def _ledger_slack(self, summary: ScanSummary) -> dict[str, int]:
        """Per ledger category, findings whose values the digests do not hold.

        Zero unless the classifier's distinct-value cap was reached; then each
        such finding may be one more person than the digests show.
        """
        if not summary.distinct_capped:
            return {}
        out: dict[str, int] = {}
        for category, labels in self._ledger_labels(summary).items():
            out[category] = sum(
                max(0, summary.count(label) - len(summary.digests.get(label, frozenset())))
                for label in labels
            )
        return out

    def _subjects_bound(self, summary: ScanSummary) -> int:
        """``summary.subjects``, or its upper bound when the cap was reached.

        ``subjects`` is the largest distinct count among person labels; a
        label's findings bound its distinct values from above.
        """
        if not summary.distinct_capped:
            return summary.subjects
        counts = (s.count for label, s in summary.labels.items() if self.is_person_label(label))
        return max(summary.subjects, max(counts, default=0))

    def evaluate(
        self,
        context: TransferContext,
        summary: ScanSummary,
        ledger_counts: Mapping[str, LedgerCount] | None = None,
    ) -> Decision:
        """Decide one transfer; pure (no I/O, no clock, no randomness).

        When the classifier's distinct-value cap was reached, ``projected``
        ledger counts, ``subjects`` and ``distinct`` conditions use upper bounds
        (see the module docstring). For a direction the ledger does not count,
        ``projected`` is ``current``: the transfer adds nobody.

        Args:
            context: route and sender.
            summary: the classifier's result for the whole body.
            ledger_counts: per ledger category, the sender organisation's
                current and projected subjects this year (see
                :meth:`ledger_digests`). Needed when a rule has a ``ledger``
                condition; the ledger's transaction must still be open.

        Raises:
            ValueError: a rule needs a ledger count that was not given.
        """
        counts = ledger_counts or {}
        facts = self._facts(context, summary, counts)
        trace: list[RuleTrace] = []
        shadow: list[str] = []
        # Rules with `then` that matched: (trace index, rule). Each hands the
        # rest of the evaluation a summary without its `then.without` labels.
        held: list[tuple[int, CompiledRule]] = []
        final: tuple[int, CompiledRule] | None = None
        for rule in self.rules:
            results = tuple(p(facts) for p in rule.predicates)
            matched = all(r.ok for r in results)
            trace.append(RuleTrace(rule.id, rule.mode, rule.action, matched, False, results))
            if matched and rule.mode == "shadow":
                shadow.append(rule.id)
            if not matched or rule.mode != "enforce":
                continue
            if rule.without is None:
                final = (len(trace) - 1, rule)
                break
            held.append((len(trace) - 1, rule))
            summary = self._without(summary, rule.without)
            facts = self._facts(context, summary, counts)
        # The stricter decision wins (block over review over allow); on a tie,
        # the earlier rule. No deciding rule: the default stands in for it.
        outcomes: list[tuple[int | None, str, Action, str, EncryptMode | None, int]] = [
            (i, rule.id, rule.action, rule.reason, rule.encrypt, rule.approvals) for i, rule in held
        ]
        if final is not None:
            i, rule = final
            outcomes.append((i, rule.id, rule.action, rule.reason, rule.encrypt, rule.approvals))
        else:
            outcomes.append(
                (
                    None,
                    DEFAULT_RULE,
                    self.default_action,
                    self.default_reason,
                    self.default_encrypt,
                    1,
                )
            )
        index, rule_id, action, reason, encrypt, approvals = max(
            outcomes, key=lambda o: (STRICTNESS[o[2]], -outcomes.index(o))
        )
        if index is not None:
            trace[index] = replace(trace[index], decided=True)
        return Decision(
            action=action,
            rule=rule_id,
            reason=reason,
            encrypt=self._encrypt(action, encrypt, context.route),
            policy_version=self.version,
            trace=tuple(trace),
            shadow_matches=tuple(shadow),
            combined=tuple(rule.id for _, rule in held),
            approvals=approvals,
        )

    def _facts(
        self, context: TransferContext, summary: ScanSummary, counts: Mapping[str, LedgerCount]
    ) -> _Facts:
        return _Facts(
            context,
            summary,
            counts,
            self.categories_of,
            counted=self.counts_in_ledger(context.route.direction),
            ledger_slack=self._ledger_slack(summary),
            subjects=self._subjects_bound(summary),
        )

    def _without(self, summary: ScanSummary, labels: _Globs) -> ScanSummary:
        """The summary as if it held none of ``labels`` (for the rules after a ``then``).

        Their findings, distinct values and digests go; ``subjects`` is what
        the remaining person labels identify. The ledger counts the caller
        computed stay (they may only be higher: the stricter reading).
        """
        gone = {label for label in summary.labels if labels(label)}
        if not gone:
            return summary
        kept = {label: s for label, s in summary.labels.items() if label not in gone}
        subjects = summary.subjects
        if any(self.is_person_label(label) for label in gone):
            subjects = max(
                (s.distinct for label, s in kept.items() if self.is_person_label(label)),
                default=0,
            )
        return replace(
            summary,
            labels=MappingProxyType(kept),
            digests=MappingProxyType({k: v for k, v in summary.digests.items() if k not in gone}),
            subjects=subjects,
        )

    @staticmethod
    def _encrypt(action: Action, rule: EncryptMode | None, route: Route) -> EncryptMode | None:
        if action == "block":
            return None
        return rule if rule is not None else route.encrypt
