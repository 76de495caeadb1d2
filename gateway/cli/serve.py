"""``gateway`` sub-commands of the serve group (being built)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's sub-commands (none yet)."""
