"""``gateway scan PATH... [--json] [--policy DIR] [--chunk-size N]`` (SPEC §3.2).

Classifies files (or stdin, ``-``) and prints one summary per path: a JSON
object per line with ``--json``, a readable table otherwise. Exit 0 when
every path was scanned, 2 on a usage or I/O error (the message names the
path). Distinct values are counted with keyed hashes: the key comes from
``$GATEWAY_SECRET`` (hex) or is generated for this run, so counts are exact
either way but digests are only comparable across runs with a fixed secret.
Nothing printed ever contains a matched value.

A file in a random-access format (Parquet, SQLite, HDF5 …: its index is at
the end) is read through
:class:`~gateway.classify.formats.files.FileAccess`, positioned reads of the file
the user named, as the proxy reads it from its spool. Standard input that
cannot seek (a pipe) offers no such view: such a format is then
``content.unscannable`` ("parquet: needs random access") and a note on
stderr says to give the file's path instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO, Final, TextIO

from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.formats.files import file_access
from gateway.classify.summary import ScanSummary
from gateway.cli import EXIT_OK, EXIT_USAGE

#: Default read size: large enough that per-chunk overhead vanishes, small
#: enough that one scan's buffers stay a few MB (SPEC §9 memory target).
DEFAULT_CHUNK_SIZE: Final = 1 << 20

#: Smallest and largest --chunk-size accepted (1 byte exercises chunk invariance;
#: 64 MiB bounds the read buffer).
MIN_CHUNK_SIZE: Final = 1
MAX_CHUNK_SIZE: Final = 64 << 20

#: Environment variable holding the distinct-count key as hex.
SECRET_ENV: Final = "GATEWAY_SECRET"  # noqa: S105 - a variable name, not a secret
#: Shortest accepted secret: 128 bits.
MIN_SECRET_BYTES: Final = 16


class ScanUsageError(Exception):
    """A problem with the command line or environment (exit 2)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway scan``."""
    parser = subparsers.add_parser(
        "scan",
        help="classify files and print what they contain (counts, never values)",
        description="Classify each PATH ('-' for stdin) with the built-in detectors "
        "(plus a policy's custom detectors) and print a summary per path. A file's "
        "base name is classified too, as the proxy classifies a transfer's name.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file to scan, '-' for stdin")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--policy", metavar="DIR", help="add the custom detectors of this policy directory"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"bytes per read (default {DEFAULT_CHUNK_SIZE})",
    )
    parser.set_defaults(handler=_main)


def _secret() -> bytes:
    raw = os.environ.get(SECRET_ENV)
    if raw is None:
        return os.urandom(32)
    try:
        secret = bytes.fromhex(raw.strip())
    except ValueError:
        raise ScanUsageError(f"${SECRET_ENV} is not hex") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ScanUsageError(f"${SECRET_ENV} must hold at least {MIN_SECRET_BYTES} bytes")
    return secret


def _detectors(policy_dir: str | None) -> tuple[DetectorSet, Mapping[str, Iterable[str]] | None]:
    """The detector set and the column test's header words (the policy's with ``--policy``)."""
    if policy_dir is None:
        return DetectorSet.build(), None
    # Imported here: the policy package is only needed with --policy.
    from gateway.policy import load_policy

    try:
        policy = load_policy(policy_dir, require_keys=False)
    except OSError as exc:
        raise ScanUsageError(f"{policy_dir}: {exc.strerror or exc}") from None
    return policy.detectors, policy.chance_words


#: What a reason says when a random-access format arrived where no view of
#: the whole input was available (the decoder's wording).
_NEEDS_RANDOM_ACCESS: Final = ": needs random access"


def _chunks(stream: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def scan_stream(
    stream: BinaryIO,
    detectors: DetectorSet,
    secret: bytes,
    chunk_size: int,
    name: str | None = None,
    chance_words: Mapping[str, Iterable[str]] | None = None,
) -> ScanSummary:
    """Scan everything readable from ``stream`` in ``chunk_size`` reads.

    ``name`` (a file's base name) is scanned too, as the proxy scans a
    transfer's path: ``110101199003077777.jpg`` names a person. A regular
    file is also the random-access view a footer-indexed format is read
    through (:class:`~gateway.classify.formats.files.FileAccess`).
    """
    scanner = Scanner(detectors, secret, chance_words=chance_words)
    try:
        if name:
            scanner.scan_name(name)
        for chunk in _chunks(stream, chunk_size):
            scanner.feed(chunk)
        return scanner.finish(file_access(stream))
    finally:
        scanner.close()


def _scan_path(
    path: str,
    detectors: DetectorSet,
    secret: bytes,
    chunk_size: int,
    chance_words: Mapping[str, Iterable[str]] | None,
) -> ScanSummary:
    if path == "-":
        return scan_stream(
            sys.stdin.buffer, detectors, secret, chunk_size, chance_words=chance_words
        )
    if os.path.isdir(path):
        raise OSError(21, "is a directory")
    with open(path, "rb") as stream:
        name = os.path.basename(path)
        return scan_stream(stream, detectors, secret, chunk_size, name, chance_words)


def format_table(path: str, summary: ScanSummary) -> str:
    """The human-readable block for one path."""
    content = summary.content
    layers = "+".join(content.layers) if content.layers else "-"
    lines = [
        f"{path}",
        f"  bytes {summary.size}  sha256 {summary.sha256}",
        f"  content {content.type}  charset {content.charset or '-'}  layers {layers}",
    ]
    if content.attributes:
        facts = "  ".join(f"{key}={value}" for key, value in sorted(content.attributes.items()))
        lines.append(f"  attributes {facts}")
    if summary.numeric_values:
        lines.append(f"  numeric values {summary.numeric_values} (counted, not scanned)")
    if summary.labels:
        width = max(len(label) for label in summary.labels)
        lines.append(f"  {'label'.ljust(width)}  {'count':>9}  {'distinct':>9}")
        for label, stats in sorted(summary.labels.items()):
            lines.append(f"  {label.ljust(width)}  {stats.count:>9}  {stats.distinct:>9}")
    else:
        lines.append("  no findings")
    capped = " (lower bound)" if summary.distinct_capped else ""
    lines.append(f"  subjects {summary.subjects}{capped}  seconds {summary.seconds:.3f}")
    for label, stats in sorted(summary.chance.items()):
        lines.append(f"  chance: {label} {stats.count} set aside (table columns of random digits)")
    for p in summary.columns:
        header = f" {p.header!r}" if p.header else ""
        lines.append(
            f"  column: table {p.table} column {p.column}{header} {p.label}: {p.valid} valid "
            f"of {p.shaped} (chance {p.expected:.1f} at {p.rate}) -> {p.verdict}"
        )
    for reason in summary.unscannable:
        lines.append(f"  unscannable: {reason}")
    return "\n".join(lines)


def _emit(out: TextIO, path: str, summary: ScanSummary, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(summary.to_json(path), ensure_ascii=False) + "\n")
    else:
        out.write(format_table(path, summary) + "\n")
    out.flush()


def _main(args: argparse.Namespace) -> int:
    err = sys.stderr
    if not MIN_CHUNK_SIZE <= args.chunk_size <= MAX_CHUNK_SIZE:
        print(
            f"gateway scan: --chunk-size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}",
            file=err,
        )
        return EXIT_USAGE
    try:
        secret = _secret()
        detectors, chance_words = _detectors(args.policy)
    except ScanUsageError as exc:
        print(f"gateway scan: {exc}", file=err)
        return EXIT_USAGE
    status = EXIT_OK
    for path in args.paths:
        try:
            summary = _scan_path(path, detectors, secret, args.chunk_size, chance_words)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            print(f"gateway scan: {path}: {reason}", file=err)
            status = EXIT_USAGE
            continue
        _emit(sys.stdout, path, summary, args.json)
        if any(reason.endswith(_NEEDS_RANDOM_ACCESS) for reason in summary.unscannable):
            print(
                f"gateway scan: {path}: this format is read by seeking; "
                "give the file's path instead of a pipe",
                file=err,
            )
    return status
