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
import os
import sys
from collections.abc import Callable, Sequence

# numpy's OpenBLAS starts a thread per core that spins after any linear-algebra
# call; the gateway does none worth a thread and needs its cores for transfers.
# Set before a command's module imports numpy (the readers and the benchmark do).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from gateway import __version__
from gateway.errors import GatewayError

#: Command-group modules under ``gateway.cli`` and the commands each registers,
#: in the order ``--help`` lists them. Only the module of the command being run is
#: imported (the server and benchmark modules pull in aiohttp, Hyperscan and
#: pydantic models, which would otherwise slow every ``gateway`` call down).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "scan": ("scan",),
    "policy": ("policy", "explain"),
    "serve": ("serve", "demo"),
    "crypto": ("keys", "encrypt", "decrypt", "certs"),
    "audit": ("audit",),
    "ledger": ("ledger",),
    "review": ("review",),
    "config": ("config",),
    "bench": ("bench",),
}

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message (its default too), kept explicit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The command-group modules needed to parse ``argv``: one, or all for help and errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    words = [arg for arg in args if not arg.startswith("-")]
    if not words and "--version" in args:
        return ()
    if words:
        for module, commands in COMMAND_MODULES.items():
            if words[0] in commands:
                return (module,)
    return tuple(COMMAND_MODULES)


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the ``gateway`` argument parser with the given command groups (default: all)."""
    parser = _Parser(
        prog="gateway",
        description="hksz-gateway: cross-boundary data-flow compliance gateway",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES if modules is None else modules:
        module = importlib.import_module(f"gateway.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gateway`` command and return its exit code."""
    parser = build_parser(_modules_for(argv))
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
