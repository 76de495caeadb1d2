"""Policy test cases (``gateway policy test``), like ``opa test`` for Rego.

Test files sit next to the policy and end in ``_test.yaml``. Each case names
a sample (a file path relative to the test file, or inline ``text``), a sender
and a route (declared names, or ad-hoc ``{organisation: …}`` / ``{direction: …,
legal_basis: …}`` descriptions for packs that must be tested without a
deployment's routes), an optional ledger state (the sender organisation's
subjects so far this year, per category) and the expected action and rule.
The sample is scanned by the real classifier with the policy's detector set,
so a case proves the whole chain from bytes to verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from gateway.classify.summary import ScanSummary
from gateway.ledger.base import LedgerCount
from gateway.policy.engine import CompiledPolicy, Decision, Route, Sender, TransferContext
from gateway.policy.loader import UNION_TAGS, case_files, load_policy, validation_issues
from gateway.policy.model import (
    LEGAL_BASES,
    Action,
    Direction,
    EncryptMode,
    Identity,
    Name,
    Park,
    check_identity,
    check_name,
    check_rule_id,
)
from gateway.policy.source import Document, PolicyIssue, PolicyLoadError, Position, read_yaml

#: Bytes read from a sample per ``feed()``: large enough to amortise the call,
#: small enough that memory stays flat for GB-sized files (the scanner keeps no copy).
SCAN_CHUNK_BYTES = 1 << 20
#: The keyed-hash secret of ``policy test`` and ``explain``. Distinct counts do not
#: depend on the key, and these digests never reach a ledger, so a fixed key is right.
OFFLINE_SECRET: Final = hashlib.sha256(b"hksz-gateway offline policy evaluation").digest()
#: An ad-hoc route in a test case delivers nowhere; this URL can never resolve (RFC 6761).
TEST_DESTINATION: Final = "https://policy-test.invalid/"


def scan_bytes_iter(
    policy: CompiledPolicy, chunks: Sequence[bytes] | Any, name: str | None = None
) -> ScanSummary:
    """Scan an iterable of byte chunks with the policy's detector set.

    Args:
        policy: whose detector set to use.
        chunks: the content.
        name: the transfer's name, scanned as the proxy scans a transfer's path.
    """
    from gateway.classify.engine import Scanner  # the scanner only when scanning

    scanner = Scanner(policy.detectors, secret=OFFLINE_SECRET, chance_words=policy.chance_words)
    if name:
        scanner.scan_name(name)
    for chunk in chunks:
        scanner.feed(chunk)
    summary: ScanSummary = scanner.finish()
    return summary


def scan_path(policy: CompiledPolicy, path: Path) -> ScanSummary:
    """Scan a file in bounded memory, with its file name as the transfer's name.

    Raises:
        OSError: the file cannot be read.
    """

    from gateway.classify.engine import Scanner
    from gateway.classify.formats.files import file_access

    scanner = Scanner(policy.detectors, secret=OFFLINE_SECRET, chance_words=policy.chance_words)
    try:
        scanner.scan_name(path.name)
        with path.open("rb") as fh:
            while chunk := fh.read(SCAN_CHUNK_BYTES):
                scanner.feed(chunk)
            # A footer-indexed sample (Parquet, HDF5, PDF) is read in place.
            summary: ScanSummary = scanner.finish(file_access(fh))
    finally:
        scanner.close()
    return summary


def offline_ledger(
    policy: CompiledPolicy,
    summary: ScanSummary,
    current: Mapping[str, int],
    direction: Direction | None = None,
) -> dict[str, LedgerCount]:
    """Ledger counts as a fresh ledger holding ``current`` subjects would give.

    The starting subjects are distinct from everyone in the sample, so the
    projection is ``current + this transfer's distinct subjects``; for a
    ``direction`` the ledger does not count, it is ``current``. Like the
    server's counts, these come from the digests: the upper bound used when
    the classifier's cap was reached is the engine's business.
    """
    digests = policy.ledger_digests(summary, direction)
    return {
        category: LedgerCount(current.get(category, 0), current.get(category, 0) + len(found))
        for category, found in digests.items()
    }


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdHocRoute(_Model):
    """A route described in a test case instead of named."""

    name: Name = "test-route"
    direction: Direction
    legal_basis: str | None = None
    encrypt: EncryptMode = "envelope"
    park: Park | None = None
    recipient_gba_registered: bool = False

    @model_validator(mode="after")
    def _basis(self) -> AdHocRoute:
        if self.legal_basis is not None and self.legal_basis not in LEGAL_BASES:
            raise ValueError(f"unknown legal basis; expected one of {', '.join(LEGAL_BASES)}")
        return self


class AdHocSender(_Model):
    """A sender described in a test case instead of named."""

    id: Identity = "test-sender"
    team: Name = "test-team"
    organisation: Name
    #: Unset: as the policy's ``organisations`` says.
    gba_registered: bool | None = None


class Expect(_Model):
    """What the case expects: the action, and optionally the deciding rule
    (``rule: default`` when no rule should match), the encryption and the
    shadow rules that match (all of them; ``[]``: none)."""

    action: Action
    rule: Annotated[str, BeforeValidator(lambda v: check_rule_id(v, allow_default=True))] | None = (
        None
    )
    encrypt: EncryptMode | None = None
    shadow: tuple[Annotated[str, BeforeValidator(check_rule_id)], ...] | None = None


def _by_shape(value: object) -> str:
    # A mapping describes an ad-hoc route or sender; anything else is a declared name.
    return UNION_TAGS[1] if isinstance(value, dict | AdHocRoute | AdHocSender) else UNION_TAGS[0]


RouteRef = Annotated[
    Annotated[str, BeforeValidator(check_name), Tag(UNION_TAGS[0])]
    | Annotated[AdHocRoute, Tag(UNION_TAGS[1])],
    Discriminator(_by_shape),
]
SenderRef = Annotated[
    Annotated[str, BeforeValidator(check_identity), Tag(UNION_TAGS[0])]
    | Annotated[AdHocSender, Tag(UNION_TAGS[1])],
    Discriminator(_by_shape),
]


class Case(_Model):
    """One test case."""

    name: str = Field(min_length=1)
    route: RouteRef
    sender: SenderRef
    text: str | None = None
    file: str | None = None
    ledger: dict[str, Annotated[int, Field(ge=0)]] = {}
    expect: Expect

    @model_validator(mode="after")
    def _one_sample(self) -> Case:
        if (self.text is None) == (self.file is None):
            raise ValueError("give the sample as exactly one of 'text' or 'file'")
        return self


class CaseFile(_Model):
    """A ``*_test.yaml`` file."""

    cases: tuple[Case, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case.

    Attributes:
        name: the case's name.
        position: where the case is written.
        passed: actual matched expected.
        expected: the expected fields.
        actual: the same fields as decided.
        decision: the full decision (for the trace), None if the case errored.
        error: why the case could not run (bad sample path, unknown route).
    """

    name: str
    position: Position
    passed: bool
    expected: Mapping[str, str | None]
    actual: Mapping[str, str | None]
    decision: Decision | None = None
    error: str | None = None

    def diff(self) -> list[str]:
        """Expected versus actual, one line per field, ``-``/``+`` where they
        differ; for a failed case also the trace of the rules that matched and
        of the rule expected, with the numbers that decided each condition."""
        if self.error is not None:
            return [f"  error: {self.error}"]
        lines: list[str] = []
        for key, want in self.expected.items():
            got = self.actual.get(key)
            if want == got:
                lines.append(f"    {key}: {want}")
            else:
                lines.append(f"  - {key}: {want}")
                lines.append(f"  + {key}: {got}")
        if not self.passed and self.decision is not None:
            wanted = {self.expected.get("rule") or ""}
            shown = {t.rule for t in self.decision.trace if t.matched} | wanted
            lines.append("  trace (the rules that matched, and the one expected):")
            lines += self.decision.trace_lines(shown | {self.decision.rule})
        return lines


@dataclass(frozen=True, slots=True)
class CaseReport:
    """All cases of a policy directory."""

    policy: CompiledPolicy
    results: tuple[CaseResult, ...]
    files: tuple[str, ...]

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        """The cases that did not pass."""
        return tuple(r for r in self.results if not r.passed)

    def uncovered(self) -> tuple[str, ...]:
        """The enforced rules (and the default) that decide no case: untested rules."""
        decided = {r.decision.rule for r in self.results if r.decision is not None}
        rules = [rule.id for rule in self.policy.rules if rule.mode == "enforce"]
        return tuple(rule for rule in (*rules, "default") if rule not in decided)


def _resolve(policy: CompiledPolicy, case: Case) -> tuple[TransferContext | None, str | None]:
    if isinstance(case.route, AdHocRoute):
        spec = case.route
        route: Route | None = Route(
            spec.name,
            spec.direction,
            TEST_DESTINATION,
            None,
            spec.legal_basis,
            spec.encrypt,
            park=spec.park,
            recipient_gba_registered=spec.recipient_gba_registered,
        )
    else:
        route = policy.routes.get(case.route)
        if route is None:
            return None, f"route {case.route!r} is not declared in the policy"
    if isinstance(case.sender, AdHocSender):
        s = case.sender
        gba = s.gba_registered
        if gba is None:
            gba = s.organisation in policy.gba_organisations
        sender: Sender | None = Sender(s.id, s.team, s.organisation, gba)
    else:
        sender = policy.senders.get(case.sender)
        if sender is None:
            return None, f"sender {case.sender!r} is not declared in the policy"
    assert route is not None
    assert sender is not None
    return TransferContext(route, sender), None


def run_case(policy: CompiledPolicy, case: Case, base: Path, position: Position) -> CaseResult:
    """Scan the case's sample, evaluate and compare."""
    expected: dict[str, str | None] = {"action": case.expect.action}
    if case.expect.rule is not None:
        expected["rule"] = case.expect.rule
    if case.expect.encrypt is not None:
        expected["encrypt"] = case.expect.encrypt
    if case.expect.shadow is not None:
        expected["shadow"] = ", ".join(sorted(case.expect.shadow)) or "none"
    context, error = _resolve(policy, case)
    unknown = sorted(set(case.ledger) - set(policy.ledger_categories))
    if unknown:
        error = f"ledger category {unknown[0]!r} is not tracked by this policy"
    if context is None or error is not None:
        return CaseResult(case.name, position, False, expected, {}, None, error)
    if case.text is not None:
        summary = scan_bytes_iter(policy, [case.text.encode("utf-8")])
    else:
        assert case.file is not None
        sample = base / case.file
        try:
            summary = scan_path(policy, sample)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return CaseResult(
                case.name, position, False, expected, {}, None, f"sample {case.file}: {reason}"
            )
    summary = policy.with_chance(summary, context.route)
    counts = offline_ledger(policy, summary, case.ledger, context.route.direction)
    decision = policy.evaluate(context, summary, counts)
    actual: dict[str, str | None] = {"action": decision.action}
    if "rule" in expected:
        actual["rule"] = decision.rule
    if "encrypt" in expected:
        actual["encrypt"] = decision.encrypt
    if "shadow" in expected:
        actual["shadow"] = ", ".join(sorted(decision.shadow_matches)) or "none"
    return CaseResult(case.name, position, actual == expected, expected, actual, decision)


def load_cases(path: Path) -> tuple[list[tuple[Document, CaseFile]], list[PolicyIssue]]:
    """Parse and validate the test files next to the policy at ``path``."""
    issues: list[PolicyIssue] = []
    out: list[tuple[Document, CaseFile]] = []
    for file in case_files(path):
        try:
            doc, found = read_yaml(file)
        except OSError as exc:
            issues.append(PolicyIssue(Position(str(file)), f"cannot read: {exc.strerror}"))
            continue
        issues.extend(found)
        if found:
            continue
        try:
            out.append((doc, CaseFile.model_validate(doc.data)))
        except ValidationError as exc:
            issues.extend(validation_issues(doc, exc, CaseFile))
    return out, issues


def run_cases(path: Path, select: Callable[[str], bool] | None = None) -> CaseReport:
    """Load the policy at ``path`` and run every test case next to it (or those
    whose name ``select`` accepts).

    Recipient key files need not exist (they are deployment material).

    Raises:
        PolicyIOError: the policy cannot be read.
        PolicyLoadError: the policy or a test file is invalid.
    """
    policy = load_policy(path, require_keys=False)
    files, issues = load_cases(path)
    if issues:
        raise PolicyLoadError(issues)
    results: list[CaseResult] = []
    for doc, case_file in files:
        base = doc.directory
        for i, case in enumerate(case_file.cases):
            if select is None or select(case.name):
                results.append(run_case(policy, case, base, doc.at(("cases", i))))
    return CaseReport(policy, tuple(results), tuple(doc.file for doc, _ in files))
