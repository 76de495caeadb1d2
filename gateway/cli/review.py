"""``gateway review list|show|approve|reject``: a compliance officer's view of held transfers.

Talks to a running egress gateway's review API (``GET /v1/reviews``,
``GET /v1/reviews/{id}``, ``POST /v1/reviews/{id}/approve|reject``) with an
officer's bearer token: ``--url``/``--token`` or ``$GATEWAY_URL``/
``$GATEWAY_TOKEN``. A readable table by default, the API's JSON with
``--json``. Exit 0 on success, 1 when the gateway refused the decision
(409: the policy in force blocks it, or it is being decided), 2 on a usage,
connection or authorisation error.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any, Final

from gateway.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE

URL_ENV: Final = "GATEWAY_URL"
TOKEN_ENV: Final = "GATEWAY_TOKEN"  # noqa: S105 - the variable's name, not a token
DEFAULT_URL: Final = "http://127.0.0.1:8080"
#: Seconds to wait for the gateway (an approval forwards the transfer first).
TIMEOUT_SECONDS: Final = 120


class Refused(Exception):
    """The gateway answered with a problem (its status and detail)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway review``."""
    group = subparsers.add_parser("review", help="held transfers, for compliance officers")
    commands = group.add_subparsers(dest="review_command", metavar="COMMAND")
    commands.required = True
    parsers = {
        "list": commands.add_parser("list", help="reviews, oldest first"),
        "show": commands.add_parser("show", help="one open review and what deciding it would do"),
        "approve": commands.add_parser("approve", help="approve a held transfer (it is delivered)"),
        "reject": commands.add_parser("reject", help="reject a held transfer (it is deleted)"),
    }
    parsers["list"].add_argument(
        "--state", choices=("pending", "approved", "rejected", "expired"), default="pending"
    )
    parsers["list"].add_argument("--limit", type=int, default=50, metavar="N")
    parsers["list"].add_argument("--offset", type=int, default=0, metavar="K")
    for name in ("show", "approve", "reject"):
        parsers[name].add_argument("id", help="the transfer id (t_…)")
    for name in ("approve", "reject"):
        parsers[name].add_argument(
            "--comment",
            required=True,
            help="why (recorded with your name; a rejection's is told to the sender)",
        )
        parsers[name].add_argument("--reference", help="the filing or ticket it refers to")
    for name, parser in parsers.items():
        parser.add_argument(
            "--url",
            default=os.environ.get(URL_ENV, DEFAULT_URL),
            help=f"the egress gateway (default: ${URL_ENV} or {DEFAULT_URL})",
        )
        parser.add_argument(
            "--token", default=os.environ.get(TOKEN_ENV), help=f"officer token (or ${TOKEN_ENV})"
        )
        parser.add_argument("--ca", metavar="FILE", help="CA bundle for an https:// gateway")
        parser.add_argument("--json", action="store_true", help="the API's JSON")
        parser.set_defaults(handler=_main, review_action=name)


def call_gateway(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    # The scheme is checked in _main: http or https only.
    request = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)  # noqa: S310
    request.add_header("Authorization", f"Bearer {args.token}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=args.ca) if args.url.startswith("https:") else None
    try:
        with urllib.request.urlopen(  # noqa: S310 - http(s) only, see _main
            request, timeout=TIMEOUT_SECONDS, context=context
        ) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            detail = str(problem.get("detail") or problem.get("title") or exc.reason)
        except ValueError:
            detail = str(exc.reason)
        raise Refused(exc.code, detail) from None


def _main(args: argparse.Namespace) -> int:
    err = sys.stderr
    if not args.token:
        print(f"gateway review: give an officer token (--token or ${TOKEN_ENV})", file=err)
        return EXIT_USAGE
    if not args.url.startswith(("http://", "https://")):
        print("gateway review: --url must be http:// or https://", file=err)
        return EXIT_USAGE
    action = args.review_action
    try:
        if action == "list":
            query = f"?state={args.state}&limit={args.limit}&offset={args.offset}"
            result = call_gateway(args, "GET", "/v1/reviews" + query)
        elif action == "show":
            result = call_gateway(args, "GET", f"/v1/reviews/{args.id}")
        else:
            body = {"comment": args.comment}
            if args.reference:
                body["reference"] = args.reference
            result = call_gateway(args, "POST", f"/v1/reviews/{args.id}/{action}", body)
    except Refused as exc:
        print(f"gateway review {action}: {exc.status}: {exc.detail}", file=err)
        return EXIT_FINDING if exc.status == 409 else EXIT_USAGE
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"gateway review {action}: cannot reach {args.url}: {reason}", file=err)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    elif action == "list":
        _print_list(result)
    elif action == "show":
        _print_review(result)
    elif action == "approve" and result.get("approvals"):
        print(f"{args.id}: approval {result['approvals']} recorded; {result['next']}")
    elif action == "approve":
        upstream = result.get("upstream_status")
        print(f"{args.id}: approved and delivered (destination answered {upstream})")
    else:
        print(f"{args.id}: {result.get('state', 'rejected')}: {result.get('reason')}")
    return EXIT_OK


def _labels(labels: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{label} {s['count']}" for label, s in sorted(labels.items())) or "none"


def _print_list(result: dict[str, Any]) -> None:
    rows = result.get("reviews", [])
    print(
        f"{result['total']} {result['state']} review(s); "
        f"showing {len(rows)} from {result['offset']}"
    )
    for row in rows:
        waited = (
            f"  waiting {row['waiting_seconds'] / 3600:.1f} h" if "waiting_seconds" in row else ""
        )
        print(
            f"{row['transfer_id']}  {row['organisation']}/{row['sender']}  {row['route']}  "
            f"{row['bytes']} bytes  rule {row['rule']}  labels {_labels(row['labels'])}{waited}"
        )


def _print_review(review: dict[str, Any]) -> None:
    name = review["path"] if review.get("path") else "(name withheld)"
    print(f"transfer: {review['transfer_id']} {name}")
    print(f"from:     {review['sender']} ({review['organisation']}) on route {review['route']}")
    print(f"content:  {review['bytes']} bytes, sha256 {review['sha256']}")
    print(f"labels:   {_labels(review['labels'])}; subjects {review['subjects']}")
    held = review["held_by"]
    print(f"held by:  {held['rule']}: {held['reason']}")
    if "waiting_seconds" in review:
        print(f"waiting:  {review['waiting_seconds'] / 3600:.1f} h")
    for category, position in review.get("ledger", {}).items():
        print(
            f"ledger:   {category} {position['current']:,} this year, "
            f"{position['projected']:,} with this transfer"
        )
    for line in review.get("lines", []):
        print(
            f"line:     {line['category']} {line['people']:,}: "
            f"rule {line['rule']} ({line['action']})"
        )
    now = review["now"]
    print(f"now:      the policy in force would {now['action'].upper()} by {now['rule']}")
    for step in now["trace"]:
        if step["matched"]:
            mark = " -> decides" if step["decided"] else f" ({step['mode']})"
            print(f"  match:  {step['rule']} [{step['action']}]{mark}")
