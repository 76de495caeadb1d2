"""``gateway bench``: performance measurements with their own generated data (SPEC §9)."""

from __future__ import annotations

import argparse

from gateway.bench import classify, proxy, stages


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and its sub-commands."""
    bench = subparsers.add_parser("bench", help="measure throughput, latency and memory")
    commands = bench.add_subparsers(dest="bench_command", metavar="COMMAND")
    commands.required = True
    classify.add_parser(commands)
    proxy.add_parser(commands)
    stages.add_parser(commands)
