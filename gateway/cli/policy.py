"""``gateway policy check|test`` and ``gateway explain``: tools for compliance officers.

Exit codes (SPEC §4, like compilers and ``opa test``): 0 valid / all cases pass,
1 invalid policy or a failed case, 2 usage or I/O error. Errors are printed
as ``file:line:col: message`` lines on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TextIO
from xml.etree import ElementTree

from gateway.classify.chance import CHANCE
from gateway.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE, policy_fmt
from gateway.errors import GatewayError
from gateway.policy import archive
from gateway.policy.cases import CaseReport, offline_ledger, run_cases, scan_path
from gateway.policy.engine import CompiledPolicy, Decision, TransferContext
from gateway.policy.loader import PolicyIOError, load_policy
from gateway.policy.source import PolicyIssue, PolicyLoadError

#: Where the shipped policy set lives (SPEC §2: top-level ``policies/``).
DEFAULT_POLICY_DIR = Path("policies")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``policy check``, ``policy test`` and ``explain``."""
    group = subparsers.add_parser(
        "policy", help="check and test policy sets", description="Check and test policy sets."
    )
    sub = group.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    sub.required = True

    check = sub.add_parser(
        "check",
        help="validate a policy set and print its version",
        description="Validate a policy set; print its version, or every error as "
        "file:line:col: message (exit 1).",
    )
    check.add_argument("dir", nargs="?", type=Path, default=DEFAULT_POLICY_DIR, metavar="DIR")
    check.add_argument(
        "--strict",
        action="store_true",
        help="warnings fail too (exit 1), e.g. a rule an earlier one always pre-empts",
    )
    check.set_defaults(handler=_check)

    show = sub.add_parser(
        "show",
        help="the archived content of a policy version (the rules behind a decision)",
        description="Print a version from the policy archive beside an audit log; "
        "the file must hash to its name.",
    )
    show.add_argument("version", metavar="VERSION", help="a version, or 8+ of its hex digits")
    show.add_argument(
        "--audit", type=Path, required=True, metavar="DIR", help="the audit directory"
    )
    show.set_defaults(handler=_show)
    diff = sub.add_parser(
        "diff",
        help="what changed between two archived policy versions",
        description="A unified diff of two versions from the policy archive.",
    )
    diff.add_argument("old", metavar="A")
    diff.add_argument("new", metavar="B")
    diff.add_argument(
        "--audit", type=Path, required=True, metavar="DIR", help="the audit directory"
    )
    diff.set_defaults(handler=_diff)

    status = sub.add_parser(
        "status",
        help="which version a gateway enforces, and whether these files are it",
        description="Ask a running egress gateway (GET /v1/policy, officer token) which "
        "version is in force and whether its files load; compare with DIR. Exit 0 when "
        "the gateway enforces DIR's version, 1 otherwise.",
    )
    status.add_argument("dir", nargs="?", type=Path, default=DEFAULT_POLICY_DIR, metavar="DIR")
    status.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"))
    status.add_argument("--token", default=os.environ.get("GATEWAY_TOKEN"))
    status.add_argument("--ca", metavar="FILE", help="CA bundle for an https:// gateway")
    status.set_defaults(handler=_status)

    test = sub.add_parser(
        "test",
        help="run the policy's test cases (*_test.yaml)",
        description="Run the test cases next to the policy; exit 1 if any fails.",
    )
    test.add_argument("dir", nargs="?", type=Path, default=DEFAULT_POLICY_DIR, metavar="DIR")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.add_argument(
        "--run", metavar="PATTERN", help="only the cases whose name matches this regex (search)"
    )
    test.add_argument(
        "--format",
        choices=("text", "json", "junit"),
        default="text",
        help="text (default), one JSON document, or JUnit XML for CI",
    )
    test.set_defaults(handler=_test)
    policy_fmt.register(sub, DEFAULT_POLICY_DIR)

    explain = subparsers.add_parser(
        "explain",
        help="scan a file and show the rule-by-rule decision",
        description="Scan FILE and show which rules were considered and why, and the decision.",
    )
    explain.add_argument("file", type=Path, metavar="FILE")
    explain.add_argument("--route", required=True, help="route name")
    explain.add_argument("--sender", required=True, help="sender identity")
    explain.add_argument("--policy", type=Path, default=DEFAULT_POLICY_DIR, metavar="DIR")
    explain.add_argument(
        "--ledger",
        action="append",
        default=[],
        metavar="CATEGORY=N",
        help="the organisation's subjects so far this year (default 0), e.g. personal=95000",
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(handler=_explain)


def _print_issues(issues: list[PolicyIssue], out: TextIO) -> None:
    for issue in issues:
        print(issue, file=out)


def _load(path: Path) -> CompiledPolicy | int:
    try:
        policy = load_policy(path, require_keys=False)
    except PolicyLoadError as exc:
        _print_issues(exc.errors, sys.stderr)
        errors = sum(1 for i in exc.errors if not i.warning)
        print(f"{path}: invalid policy ({errors} error{'s' * (errors != 1)})", file=sys.stderr)
        return EXIT_FINDING
    _print_issues(list(policy.warnings), sys.stderr)
    return policy


def _check(args: argparse.Namespace) -> int:
    loaded = _load(args.dir)
    if isinstance(loaded, int):
        return loaded
    policy = loaded
    shadow = sum(1 for r in policy.rules if r.mode == "shadow")
    print(f"{args.dir}: ok, policy {policy.name} version {policy.version}")
    print(
        f"  {len(policy.categories)} categories, {len(policy.routes)} routes, "
        f"{len(policy.senders)} senders, {len(policy.rules)} rules ({shadow} shadow), "
        f"default {policy.default_action}"
    )
    if args.strict and policy.warnings:
        count = len(policy.warnings)
        print(f"{args.dir}: {count} warning{'s' * (count != 1)} (--strict)", file=sys.stderr)
        return EXIT_FINDING
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from gateway.cli.review import Refused, call_gateway  # urllib, only for this command

    if not args.token:
        print(
            "gateway policy status: give an officer token (--token or $GATEWAY_TOKEN)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        live = call_gateway(args, "GET", "/v1/policy")
    except Refused as exc:
        print(f"gateway policy status: {exc.status}: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gateway policy status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"in force: {live['name']} version {live['version']} ({live['rules']} rules)")
    if not live["files_load"]:
        print(
            f"REJECTED: the gateway's policy files do not load ({live['errors']} errors, "
            f"files sha256 {live['rejected_sha256']}); the version above stays in force"
        )
    try:
        local = load_policy(args.dir, require_keys=False).version
    except (PolicyLoadError, PolicyIOError):
        print(f"{args.dir}: does not load (gateway policy check {args.dir})")
        return EXIT_FINDING
    same = local == live["version"]
    print(f"{args.dir}: version {local} ({'in force' if same else 'NOT in force'})")
    return EXIT_OK if same and live["files_load"] else EXIT_FINDING


def _show(args: argparse.Namespace) -> int:
    try:
        content = archive.read_version(archive.archive_dir(args.audit), args.version)
    except GatewayError as exc:
        print(f"gateway policy show: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(archive.show(content))
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    try:
        lines = archive.diff(archive.archive_dir(args.audit), args.old, args.new)
    except GatewayError as exc:
        print(f"gateway policy diff: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.writelines(lines)
    return EXIT_FINDING if lines else EXIT_OK


def _test(args: argparse.Namespace) -> int:
    select = None
    if args.run is not None:
        try:
            pattern = re.compile(args.run)
        except re.error as exc:
            print(f"gateway policy test: --run: not a regex: {exc}", file=sys.stderr)
            return EXIT_USAGE
        select = lambda name: pattern.search(name) is not None  # noqa: E731
    try:
        report = run_cases(args.dir, select)
    except PolicyLoadError as exc:
        _print_issues(exc.errors, sys.stderr)
        print(f"{args.dir}: invalid policy or test file", file=sys.stderr)
        return EXIT_FINDING
    _print_issues(list(report.policy.warnings), sys.stderr)
    failed = EXIT_FINDING if report.failed or not report.results else EXIT_OK
    if args.format == "json":
        print(json.dumps(_report_json(report), ensure_ascii=False))
        return failed
    if args.format == "junit":
        print(_report_junit(report))
        return failed
    code = _print_report(report, verbose=args.verbose)
    uncovered = report.uncovered()
    if uncovered and select is None:
        print(f"not exercised: {', '.join(uncovered)} (no case is decided by them)")
    return code


def _report_json(report: CaseReport) -> dict[str, object]:
    return {
        "policy": report.policy.name,
        "version": report.policy.version,
        "passed": len(report.results) - len(report.failed),
        "failed": len(report.failed),
        "cases": [
            {
                "name": r.name,
                "position": str(r.position),
                "passed": r.passed,
                "expected": r.expected,
                "actual": r.actual,
                "error": r.error,
            }
            for r in report.results
        ],
        "uncovered": list(report.uncovered()),
    }


def _report_junit(report: CaseReport) -> str:
    """The cases as one JUnit XML test suite (what CI systems read)."""
    suite = ElementTree.Element(
        "testsuite",
        name=f"policy {report.policy.name}",
        tests=str(len(report.results)),
        failures=str(len(report.failed)),
    )
    for r in report.results:
        case = ElementTree.SubElement(
            suite, "testcase", name=r.name, classname=str(r.position).rsplit(":", 2)[0]
        )
        if not r.passed:
            failure = ElementTree.SubElement(case, "failure", message=f"{r.position}: {r.name}")
            failure.text = "\n".join(r.diff())
    return ElementTree.tostring(suite, encoding="unicode")


def _print_report(report: CaseReport, *, verbose: bool) -> int:
    if not report.results:
        print("no test cases found (write *_test.yaml files next to the policy)", file=sys.stderr)
        return EXIT_FINDING
    for result in report.results:
        if result.passed and not verbose:
            continue
        status = "PASS" if result.passed else "FAIL"
        print(f"{status}: {result.position}: {result.name}")
        if not result.passed:
            for line in result.diff():
                print(line)
    failed = len(report.failed)
    total = len(report.results)
    print("-" * 40)
    print(f"PASS: {total - failed}/{total}" + (f"\nFAIL: {failed}/{total}" if failed else ""))
    print(f"policy {report.policy.name} version {report.policy.version}")
    return EXIT_FINDING if failed else EXIT_OK


def _ledger_args(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        category, sep, number = value.partition("=")
        if not sep or not number.strip().isdigit():
            raise GatewayError(f"--ledger expects CATEGORY=N, got {value!r}")
        out[category.strip()] = int(number)
    return out


def _explain(args: argparse.Namespace) -> int:
    loaded = _load(args.policy)
    if isinstance(loaded, int):
        return loaded
    policy = loaded
    try:
        current = _ledger_args(args.ledger)
        unknown = sorted(set(current) - policy.ledger_categories)
        if unknown:
            tracked = ", ".join(sorted(policy.ledger_categories)) or "none"
            raise GatewayError(f"--ledger: {unknown[0]!r} is not tracked (tracked: {tracked})")
        if args.route not in policy.routes:
            # The officer's own argument: named here, never by the server.
            raise GatewayError(f"unknown route {args.route!r}")
        context = policy.context(args.route, args.sender)
    except GatewayError as exc:
        print(f"gateway explain: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = scan_path(policy, args.file)
    except OSError as exc:
        print(f"gateway explain: {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    summary = policy.with_chance(summary, context.route)  # chance: count on the route or label
    counts = offline_ledger(policy, summary, current, context.route.direction)
    decision = policy.evaluate(context, summary, counts)
    adds = {c: count.projected - count.current for c, count in sorted(counts.items())}
    if args.json:
        out = {
            "path": str(args.file),
            "summary": summary.to_json(str(args.file)),
            "route": context.route.name,
            "sender": context.sender.id,
            "ledger_adds": adds,
            "decision": decision.to_json(),
        }
        print(json.dumps(out, ensure_ascii=False))
        return EXIT_OK
    _print_explain(args.file, policy, context, decision, summary.to_json(), adds)
    return EXIT_OK


def _print_columns(summary_json: dict[str, object]) -> None:
    """The chance-level findings set aside and the column profiles behind them."""
    chance = summary_json.get("chance")
    if isinstance(chance, dict):
        for label, count in chance.items():
            print(f"chance:  {label} {count} set aside (table columns of random digits)")
    columns = summary_json.get("columns")
    if not isinstance(columns, list):
        return
    for p in columns:
        header = f" {p['header']!r}" if p["header"] else ""
        kept = "set aside" if p["verdict"] == CHANCE else f"counted: {p['verdict']}"
        print(
            f"column:  table {p['table']} column {p['column']}{header} {p['label']}: "
            f"{p['valid']} valid of {p['shaped']} shaped ({p['candidates']} values), "
            f"chance {p['expected']} at {p['rate']}, "
            f"P(>=) {p['p_excess']:.3g} P(<=) {p['p_deficit']:.3g} -> {kept}"
        )


def _print_explain(
    path: Path,
    policy: CompiledPolicy,
    context: TransferContext,
    decision: Decision,
    summary_json: dict[str, object],
    adds: dict[str, int],
) -> None:
    route, sender = context.route, context.sender
    content = summary_json["content"]
    assert isinstance(content, dict)
    layers = " > ".join(content["layers"]) or "none"
    print(f"file:    {path} ({summary_json['bytes']} bytes, sha256 {summary_json['sha256']})")
    print(f"content: {content['type']} charset {content['charset']} layers {layers}")
    attributes = content.get("attributes")
    if attributes:
        facts = "  ".join(f"{key}={value}" for key, value in sorted(attributes.items()))
        print(f"attrs:   {facts}")
    labels = summary_json["labels"]
    assert isinstance(labels, dict)
    if labels:
        for label, stats in labels.items():
            print(f"label:   {label} count {stats['count']} distinct {stats['distinct']}")
    else:
        print("label:   none found")
    print(f"subjects: {summary_json['subjects']} (the largest distinct count of one person label)")
    if adds:
        # What the yearly ledger counts: every distinct identifier as a person.
        added = ", ".join(f"{n:,} {category}" for category, n in adds.items())
        print(
            f"ledger:  this transfer adds {added} "
            "(distinct identifiers: a person with two counts twice)"
        )
    _print_columns(summary_json)
    basis = route.legal_basis or "none"
    park = f", park {route.park}" if route.park else ""
    print(f"route:   {route.name} ({route.direction}, legal basis {basis}{park})")
    print(f"sender:  {sender.id} (team {sender.team}, organisation {sender.organisation})")
    print(f"policy:  {policy.name} version {policy.version}")
    print("trace:")
    for line in decision.trace_lines():
        print(line)
    encrypt = f" (encrypt: {decision.encrypt})" if decision.encrypt else ""
    print(f"decision: {decision.action.upper()} by {decision.rule}{encrypt}")
    print(f"reason:   {decision.reason}")
    if decision.shadow_matches:
        print(f"shadow:   {', '.join(decision.shadow_matches)} would have matched")
    if decision.combined:
        print(f"combined: {', '.join(decision.combined)} (then): the stricter decision won")
