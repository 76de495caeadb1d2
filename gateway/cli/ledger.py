"""``gateway ledger show``: this year's exports against the 2024 Provisions.

A compliance officer asks "how many people's data has each organisation sent
abroad since 1 January, and how far is that from needing a standard contract
or a CAC security assessment?". This command answers from the same ledger the
gateway decides with, read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from gateway.cli import EXIT_USAGE
from gateway.errors import GatewayError
from gateway.ledger import DEFAULT_LEDGER_URL, LedgerTotal, ledger_year, open_ledger, redact_url
from gateway.ledger.report import MECHANISM_TEXT, ThresholdStatus, assess
from gateway.policy.source import PolicyLoadError

#: Environment variable that also configures ``gateway serve`` (pydantic-settings prefix).
LEDGER_URL_ENV = "GATEWAY_LEDGER_URL"
#: Share of a threshold at which a row is flagged ``near``; the same 90 % the
#: ledger alert in deploy/prometheus/alerts.yml fires at.
NEAR_FRACTION = 0.9

_HEADER = (
    "ORGANISATION",
    "CATEGORY",
    "IDENTIFIERS",
    "THRESHOLD",
    "USED",
    "REMAINING",
    "STATUS",
    "REQUIRED AT THRESHOLD",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway ledger show``."""
    group = subparsers.add_parser("ledger", help="the yearly export ledger")
    commands = group.add_subparsers(dest="ledger_command", metavar="COMMAND")
    commands.required = True
    show = commands.add_parser(
        "show",
        help="distinct subjects exported this year against the 2024 Provisions thresholds",
        description=(
            "Print each organisation's distinct subjects exported in a calendar year"
            " (UTC+8) per category, against the 100,000 / 1,000,000 (personal) and"
            " 10,000 (sensitive) thresholds of the 2024 Provisions."
        ),
    )
    show.add_argument("--org", metavar="ORG", help="only this sender organisation")
    show.add_argument(
        "--year", type=int, metavar="Y", help="calendar year (default: the current one, UTC+8)"
    )
    show.add_argument(
        "--ledger",
        metavar="URL",
        default=os.environ.get(LEDGER_URL_ENV, DEFAULT_LEDGER_URL),
        help=f"ledger URL or SQLite path (default: ${LEDGER_URL_ENV} or {DEFAULT_LEDGER_URL})",
    )
    show.add_argument(
        "--policy",
        metavar="DIR",
        help="also show the lines this policy's rules draw (its own, lower caps included)",
    )
    show.add_argument("--json", action="store_true", help="one JSON document on stdout")
    show.set_defaults(handler=_show)


async def _read(url: str, year: int, organisation: str | None) -> list[LedgerTotal]:
    ledger = await open_ledger(url, create=False)
    try:
        return await ledger.totals(year=year, organisation=organisation)
    finally:
        await ledger.close()


def _status(status: ThresholdStatus) -> str:
    if status.reached:
        return "REACHED"
    return "near" if status.fraction >= NEAR_FRACTION else "ok"


#: One yearly line of the policy in force: (category, people, rule id, action).
PolicyLine = tuple[str, int, str, str]


def _policy_lines(policy_dir: str | None) -> list[PolicyLine]:
    """The lines the policy's rules draw, or none without ``--policy``.

    Raises:
        GatewayError: the policy cannot be loaded (its errors, with positions).
    """
    if policy_dir is None:
        return []
    from gateway.policy import load_policy  # only with --policy

    try:
        policy = load_policy(policy_dir, require_keys=False)
    except OSError as exc:
        raise GatewayError(f"{policy_dir}: {exc.strerror or exc}") from None
    except PolicyLoadError as exc:
        raise GatewayError("\n".join(str(e) for e in exc.errors)) from None
    return [(c, n, rule, str(action)) for c, n, rule, action in policy.ledger_lines()]


def _statuses(total: LedgerTotal, lines: list[PolicyLine]) -> list[ThresholdStatus]:
    """The statutory thresholds and the policy's own lines for ``total``, lowest first.

    A policy line at a statutory number names its rule beside the mechanism.
    """
    statutory = assess(total)
    out = list(statutory)
    for category, people, rule, action in lines:
        if category != total.category:
            continue
        mechanism = f"rule {rule} ({action})"
        same = [
            i for i, s in enumerate(out) if s.threshold == people and s.mechanism in MECHANISM_TEXT
        ]
        if same:
            s = out[same[0]]
            out[same[0]] = ThresholdStatus(
                s.category, f"{MECHANISM_TEXT[s.mechanism]}: {mechanism}", s.threshold, s.subjects
            )
        else:
            out.append(ThresholdStatus(category, mechanism, people, total.subjects))
    return sorted(out, key=lambda s: s.threshold)


def _as_json(
    url: str, year: int, totals: list[LedgerTotal], lines: list[PolicyLine]
) -> dict[str, Any]:
    return {
        "ledger": redact_url(url),
        "year": year,
        "totals": [
            {
                "organisation": total.organisation,
                "category": total.category,
                "subjects": total.subjects,
                "thresholds": [
                    {
                        "mechanism": s.mechanism,
                        "threshold": s.threshold,
                        "reached": s.reached,
                        "remaining": s.remaining,
                        "fraction": round(s.fraction, 6),
                    }
                    for s in _statuses(total, lines)
                ],
            }
            for total in totals
        ],
    }


def _rows(totals: list[LedgerTotal], lines: list[PolicyLine]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for total in totals:
        statuses = _statuses(total, lines)
        if not statuses:
            rows.append(
                (total.organisation, total.category, f"{total.subjects:,}", "-", "-", "-", "-", "-")
            )
        for s in statuses:
            rows.append(
                (
                    total.organisation,
                    total.category,
                    f"{total.subjects:,}",
                    f"{s.threshold:,}",
                    f"{s.fraction:.1%}",
                    f"{s.remaining:,}",
                    _status(s),
                    MECHANISM_TEXT.get(s.mechanism, s.mechanism),
                )
            )
    return rows


def _print_table(rows: list[tuple[str, ...]]) -> None:
    table = [_HEADER, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADER))]
    numeric = {2, 3, 4, 5}
    for row in table:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        print("  ".join(cells).rstrip())


def _show(args: argparse.Namespace) -> int:
    year = args.year if args.year is not None else ledger_year()
    try:
        lines = _policy_lines(args.policy)
    except GatewayError as exc:
        print(f"gateway ledger show: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    totals = asyncio.run(_read(args.ledger, year, args.org))
    if args.json:
        json.dump(_as_json(args.ledger, year, totals, lines), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    print(
        f"ledger {redact_url(args.ledger)}: calendar year {year} (UTC+8). IDENTIFIERS are the "
        "distinct identifying values exported (keyed hashes); one person with two "
        "identifiers counts twice, so they bound the people from above, as the "
        "thresholds are judged"
    )
    if not totals:
        who = f" for {args.org}" if args.org else ""
        print(f"no subjects recorded{who} in {year}")
        return 0
    _print_table(_rows(totals, lines))
    return 0
