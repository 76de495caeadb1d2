"""The ``gateway`` command: one entry point, one module per command group.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which
adds its sub-commands and sets ``handler`` (a callable taking the parsed
namespace and returning the exit code) as the parser default.

Exit codes follow the spec: 0 success, 1 a finding the user asked about
(invalid policy, failed verification, failed policy test), 2 usage or I/O
error. A :class:`~gateway.errors.GatewayError` is printed as one line on stderr,
never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.errors import GatewayError

#: Command-group modules under ``gateway.cli``, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "scan",
    "policy",
    "serve",
    "crypto",
    "audit",
    "ledger",
    "bench",
)

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message (its default too), kept explicit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``gateway`` argument parser."""
    parser = _Parser(
        prog="gateway",
        description="hksz-gateway: cross-boundary data-flow compliance gateway",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"gateway.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gateway`` command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except GatewayError as exc:
        print(f"gateway: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gateway scan … | head`: the reader went away; that is not our error.
        return EXIT_OK
