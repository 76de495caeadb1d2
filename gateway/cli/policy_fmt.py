"""``gateway policy fmt``: policy and test files in their canonical layout, like ``opa fmt``.

::

    gateway policy fmt [PATH ...]             rewrite in place (default: policies/)
    gateway policy fmt --check [--diff] ...   change nothing: list (and diff) the files
                                              that are not canonical, for CI
    gateway policy fmt -                      standard input to standard output

A directory means its ``*.yaml``/``*.yml`` files (policy and ``*_test.yaml``
alike, not its sub-directories), as ``policy check`` reads it. The layout is
:mod:`gateway.policy.fmt`'s; a file is rewritten only when its formatted text
parses to the same data and keeps every comment, through a temporary file
renamed over it (same mode), so the running gateway's reload never sees half
a file.

Exit codes (:mod:`gateway.cli`): 0 every file canonical (or rewritten); 1 a
file not canonical under ``--check``, or one that does not parse or cannot be
formatted safely (``file:line:col: message`` on stderr, the file untouched);
2 a path that cannot be read or written. Every file is processed either way.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from gateway.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE
from gateway.policy.source import (
    MAX_POLICY_FILE_BYTES,
    PolicyIssue,
    PolicyLoadError,
    Position,
    display_name,
)

#: What ``policy check`` reads from a directory (gateway.policy.loader.POLICY_SUFFIXES).
YAML_SUFFIXES = (".yaml", ".yml")
#: The name of standard input in messages.
STDIN_NAME = "<stdin>"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_dir: Path) -> None:
    """Add ``policy fmt`` (``default_dir``: what the other ``policy`` commands default to)."""
    fmt = sub.add_parser(
        "fmt",
        help="rewrite policy and test files in the canonical layout (--check for CI)",
        description="Rewrite policy and test files in the canonical layout: key order, "
        "indentation, whitespace; comments and scalar styles are kept. With --check, "
        "change nothing and exit 1 if a file is not canonical.",
    )
    fmt.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help=f"files or directories (default {default_dir}); - reads stdin, writes stdout",
    )
    fmt.add_argument(
        "--check",
        action="store_true",
        help="change nothing; list the files that are not canonical and exit 1",
    )
    fmt.add_argument(
        "--diff", action="store_true", help="also print what would change (implies --check)"
    )
    fmt.set_defaults(handler=_fmt, fmt_default=default_dir)


class _PathError(Exception):
    """A path that cannot be read, listed or written as asked (exit 2; the message names it)."""


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise _PathError(f"{display_name(path)}: no such file or directory")
    try:
        files = sorted(
            p
            for p in path.iterdir()
            if p.name.endswith(YAML_SUFFIXES) and not p.name.startswith(".") and p.is_file()
        )
    except OSError as exc:
        raise _PathError(f"{display_name(path)}: cannot list: {exc.strerror}") from exc
    if not files:
        raise _PathError(f"{display_name(path)}: no *.yaml files")
    return files


def _read(stream: BinaryIO, name: str) -> str:
    """The text of a policy file, bounded and UTF-8 (as gateway.policy.source.read_yaml)."""
    raw = stream.read(MAX_POLICY_FILE_BYTES + 1)
    if len(raw) > MAX_POLICY_FILE_BYTES:
        issue = PolicyIssue(Position(name, 1, 1), f"larger than {MAX_POLICY_FILE_BYTES} bytes")
        raise PolicyLoadError([issue])
    try:
        return str(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        issue = PolicyIssue(Position(name, line, col), "not valid UTF-8 text")
        raise PolicyLoadError([issue]) from exc


def _diff(old: str, new: str, name: str) -> Iterable[str]:
    for line in difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=name,
        tofile=f"{name} (formatted)",
    ):
        yield line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"


def _write(path: Path, text: str, read: str) -> None:
    """Replace ``path``'s content by ``text`` atomically, keeping its mode (and owner if we may).

    Raises:
        OSError: the file could not be written; it is as it was.
        _PathError: the file changed since it was read (someone saved it): left as saved.
    """
    target = path.resolve()  # through a symbolic link: the link stays a link
    mode = target.stat()
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".fmt")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, stat.S_IMODE(mode.st_mode))
        with contextlib.suppress(OSError):  # another user's file, formatted by root
            os.chown(temp, mode.st_uid, mode.st_gid)
        with target.open("rb") as fh:
            if _read(fh, display_name(path)) != read:
                raise _PathError(f"{display_name(path)}: changed while formatting; left as saved")
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _format(text: str, name: str) -> str | None:
    """The canonical text, or None after printing why there is none."""
    from gateway.policy.fmt import format_text  # ruamel.yaml only for this command

    try:
        return format_text(text, name)
    except PolicyLoadError as exc:
        for issue in exc.errors:
            print(issue, file=sys.stderr)
        print(f"{name}: left unchanged", file=sys.stderr)
        return None


def _one(path: Path, *, check: bool, diff: bool) -> int:
    name = display_name(path)
    try:
        with path.open("rb") as fh:
            text = _read(fh, name)
    except PolicyLoadError as exc:
        for issue in exc.errors:
            print(issue, file=sys.stderr)
        return EXIT_FINDING
    except OSError as exc:
        print(f"gateway policy fmt: {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    out = _format(text, name)
    if out is None:
        return EXIT_FINDING
    if out == text:
        return EXIT_OK
    if check:
        print(f"{name}: not in canonical layout (gateway policy fmt {name} rewrites it)")
        if diff:
            sys.stdout.writelines(_diff(text, out, name))
        return EXIT_FINDING
    try:
        _write(path, out, text)
    except _PathError as exc:
        print(f"gateway policy fmt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gateway policy fmt: {name}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"formatted {name}")
    return EXIT_OK


def _stdin(*, check: bool, diff: bool) -> int:
    try:
        text = _read(sys.stdin.buffer, STDIN_NAME)
    except PolicyLoadError as exc:
        for issue in exc.errors:
            print(issue, file=sys.stderr)
        return EXIT_FINDING
    out = _format(text, STDIN_NAME)
    if out is None:
        return EXIT_FINDING
    if not check:
        sys.stdout.write(out)
        return EXIT_OK
    if out == text:
        return EXIT_OK
    print(f"{STDIN_NAME}: not in canonical layout")
    if diff:
        sys.stdout.writelines(_diff(text, out, STDIN_NAME))
    return EXIT_FINDING


def _fmt(args: argparse.Namespace) -> int:
    check = args.check or args.diff
    codes: list[int] = []
    for raw in args.paths or [str(args.fmt_default)]:
        if raw == "-":
            codes.append(_stdin(check=check, diff=args.diff))
            continue
        try:
            files = _files(Path(raw))
        except _PathError as exc:
            print(f"gateway policy fmt: {exc}", file=sys.stderr)
            codes.append(EXIT_USAGE)
            continue
        codes.extend(_one(file, check=check, diff=args.diff) for file in files)
    return max(codes, default=EXIT_OK)
