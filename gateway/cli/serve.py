"""``gateway serve`` and ``gateway demo``: run the gateway.

``gateway serve --config FILE`` runs what the file configures (egress,
ingress or both). Without ``--config`` it runs the embedded defaults, which
are the demo's: both parks on loopback with the shipped policies, a file audit
log and a SQLite ledger. ``gateway demo`` (what ``make run`` calls) does the
same and prints the commands to push the sample files.

SIGINT/SIGTERM drain in-flight transfers and stop; SIGHUP reloads the policy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli import EXIT_OK
from gateway.obs.logging import configure_logging
from gateway.server.config import load_settings
from gateway.server.demo import DEMO_DIR, ParkUrls, instructions, prepare_demo
from gateway.server.runner import serve_forever


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``demo``."""
    serve = subparsers.add_parser(
        "serve",
        help="run the gateway (egress, ingress or both)",
        description="Run the gateway. Without --config: both demo parks on loopback.",
    )
    serve.add_argument("--config", type=Path, help="TOML or YAML configuration file")
    serve.add_argument(
        "--instance",
        metavar="NAME",
        help="this replica's stable name (default $GATEWAY_INSTANCE, else the host name): "
        "it replaces {instance} in the audit directory and origin, spools and witness store",
    )
    _logging_args(serve)
    serve.set_defaults(handler=_serve)

    demo = subparsers.add_parser(
        "demo",
        help="run both parks on loopback with the shipped policies (make run)",
        description="Create dev keys and configs under var/demo if missing, then run "
        "both directions: the HK egress on :8080 to the SZ ingress on :9443, and the "
        "SZ egress on :9080 to the HK ingress on :8443.",
    )
    demo.add_argument("--dir", type=Path, default=DEMO_DIR, help="demo state (default var/demo)")
    demo.add_argument("--policy", type=Path, default=Path("policies"), help="policy directory")
    demo.add_argument(
        "--samples", type=Path, default=Path("samples"), help="sample files to suggest"
    )
    _logging_args(demo, default_format="console")
    demo.set_defaults(handler=_demo)


def _logging_args(parser: argparse.ArgumentParser, default_format: str = "json") -> None:
    parser.add_argument(
        "--log-format", choices=("json", "console"), default=default_format, help="log lines"
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")


def _run(settings: list[Any], announce: Any = None) -> int:
    # SIGINT is handled inside serve_forever; this covers Ctrl-C during start-up.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(settings, announce=announce))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    # JSON logs go to stdout, where platforms collect them (issue 7); stderr
    # keeps only the one-line fatal error of gateway.cli.
    configure_logging(args.log_format, args.log_level, stream=sys.stdout)
    if args.instance is not None:
        os.environ["GATEWAY_INSTANCE"] = (
            args.instance
        )  # wins over the file, as the environment does
    if args.config is None:
        demo = prepare_demo()
        return _run(demo.settings())
    return _run([load_settings(args.config)])


def _demo(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, args.log_level, stream=sys.stderr)
    demo = prepare_demo(args.dir, args.policy)

    def announce(gateways: list[Any]) -> None:
        parks = {g.services.settings.name: ParkUrls(g.egress_url, g.ingress_url) for g in gateways}
        print(instructions(demo, parks["hk"], parks["sz"], args.samples), flush=True)

    return _run(demo.settings(), announce)
