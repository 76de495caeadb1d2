"""``gateway audit``: verify, prove, check receipts, query, export, make keys.

Everything here works offline on a log directory (a copy is fine, so is a
live log: it only ever grows). ``verify``, ``check-receipt`` need nothing but
the gateway's public verifier key; that is the regulator's path (docs/audit.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.errors import AuditIntegrityError
from gateway.audit.keys import create_signing_key, load_signing_key, load_verifier
from gateway.audit.log import AuditLog, record_matches
from gateway.audit.merkle import (
    ProofError,
    inclusion_proof,
    leaf_hash,
    range_proof,
    verify_inclusion,
    verify_range,
)
from gateway.audit.note import Checkpoint, NoteError, NoteSigner, NoteVerifier
from gateway.audit.receipt import (
    BUNDLE_FORMAT,
    Bundle,
    Receipt,
    ReceiptError,
    verify_bundle,
    verify_receipt,
)
from gateway.audit.records import RecordError, format_time, parse_canonical, transfer_record
from gateway.audit.retention import DEFAULT_RETENTION, MIN_RETENTION, prune
from gateway.audit.storage import INDEX_DIR, LogReader, StoredCheckpoint
from gateway.audit.transfers import read_index
from gateway.audit.verify import verify_log
from gateway.cli import EXIT_FINDING, EXIT_OK
from gateway.errors import ConfigError, NotFound
from gateway.server.config import AuditConfig, load_settings

#: Where ``gateway serve`` keeps its audit log unless configured otherwise;
#: ``GATEWAY_AUDIT_DIR`` overrides it for these commands.
DEFAULT_AUDIT_DIR = "var/audit"
#: Key name used by ``keygen``/``pubkey`` when none is given: the server's default
#: audit origin (gateway.server.config), which it also uses as the key name.
DEFAULT_KEY_NAME = "hksz-gateway.local/audit"
#: Times without an offset are Hong Kong / Shenzhen time (UTC+8), like the ledger's years.
LOCAL_OFFSET = timezone(timedelta(hours=8))
#: SPEC §9: 256 concurrent transfers; 20k records is a few seconds of that load.
BENCH_WRITERS = 256
BENCH_RECORDS = 20_000
#: Receipts and bundles are JSON documents; a bundle of a year of records is
#: large, but a file beyond 4 GiB is not something we produced.
MAX_DOCUMENT_BYTES = 4 * 1024**3


def _default_dir() -> str:
    return os.environ.get("GATEWAY_AUDIT_DIR", DEFAULT_AUDIT_DIR)


def _time_arg(text: str) -> str:
    """Parse --since/--until into the records' sortable time string."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or 2026-01-31T09:00Z)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=LOCAL_OFFSET)
    return format_time(moment.astimezone(UTC))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway audit`` and its sub-commands."""
    parser = subparsers.add_parser(
        "audit",
        help="verify and query the transparency audit log",
        description="Verify, query and export the gateway's transparency audit log.",
    )
    sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("verify", help="recompute the tree and check every signed checkpoint")
    p.add_argument("directory", nargs="?", metavar="DIR", help=f"as --dir ({_DIR_HELP})")
    p.add_argument("--dir", dest="dir_option", default=None, metavar="DIR", help=_DIR_HELP)
    p.add_argument("--key", required=True, action="append", metavar="PUB", help=_KEY_HELP)
    p.add_argument(
        "--witness-key",
        action="append",
        default=[],
        metavar="PUB",
        help="the other park's witness verifier key (repeatable; with --witnessed)",
    )
    p.add_argument(
        "--witnessed",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="the witness's store of this log's co-signed checkpoints "
        "(<witness_dir>/<origin>.jsonl, or one note); the records must reproduce each",
    )
    p.set_defaults(handler=_verify)

    p = sub.add_parser("prove", help="print the receipt of a transfer's record")
    p.add_argument("transfer_id", metavar="TRANSFER_ID")
    p.add_argument("--dir", default=None, metavar="DIR", help=_DIR_HELP)
    p.add_argument("--all", action="store_true", help="every record of the transfer (a list)")
    p.set_defaults(handler=_prove)

    p = sub.add_parser("check-receipt", help="verify a receipt or export bundle offline")
    p.add_argument("file", metavar="FILE", help="receipt or bundle JSON ('-' for stdin)")
    p.add_argument("--key", required=True, action="append", metavar="PUB", help=_KEY_HELP)
    p.set_defaults(handler=_check_receipt)

    p = sub.add_parser("query", help="list records by time, sender, route, decision")
    p.add_argument("--dir", default=None, metavar="DIR", help=_DIR_HELP)
    p.add_argument("--since", type=_time_arg, help=_TIME_HELP)
    p.add_argument("--until", type=_time_arg, help=_TIME_HELP)
    p.add_argument("--sender")
    p.add_argument("--route")
    p.add_argument("--decision", choices=("allow", "block", "review"))
    p.add_argument("--event", help="state change: allowed, blocked, delivered, aborted, …")
    p.add_argument("--transfer-id", help="only this transfer's records (uses the gateway's index)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PUB",
        help="verify the log first (as `verify`) and warn when it does not verify; "
        + _KEY_HELP.split(", ", 1)[1],
    )
    p.set_defaults(handler=_query)

    p = sub.add_parser("export", help="write a self-contained bundle for a regulator")
    p.add_argument("--dir", default=None, metavar="DIR", help=_DIR_HELP)
    p.add_argument("--since", type=_time_arg, required=True, help=_TIME_HELP)
    p.add_argument("--until", type=_time_arg, required=True, help=_TIME_HELP)
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE")
    p.set_defaults(handler=_export)

    p = sub.add_parser("keygen", help="create a checkpoint-signing key, print its verifier key")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="new key file (0600)")
    _key_name_args(p)
    p.set_defaults(handler=_keygen)

    p = sub.add_parser("prune", help="delete segments whose every record is past retention")
    p.add_argument("directory", nargs="?", metavar="DIR", help=f"as --dir ({_DIR_HELP})")
    p.add_argument("--dir", dest="dir_option", default=None, metavar="DIR", help=_DIR_HELP)
    p.add_argument(
        "--retention-days",
        type=int,
        default=DEFAULT_RETENTION.days,
        help=f"keep at least this long (default and minimum {MIN_RETENTION.days}, PIPL Art. 56)",
    )
    p.set_defaults(handler=_prune)

    p = sub.add_parser("bench", help="measure durable audit records/s under concurrent writers")
    p.add_argument("--writers", type=int, default=BENCH_WRITERS)
    p.add_argument("--records", type=int, default=BENCH_RECORDS)
    p.add_argument("--dir", default=None, metavar="DIR", help="where to write (a temp dir)")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync (to see its cost)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_bench)

    p = sub.add_parser("pubkey", help="print the verifier key of an existing signing key")
    p.add_argument(
        "keyfile",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="the signing key (default: the configuration's audit.signing_key)",
    )
    _key_name_args(p)
    p.set_defaults(handler=_pubkey)


_KEY_HELP = "verifier key <name>+<keyid>+<base64>, or a file holding it (repeatable)"
_DIR_HELP = f"audit log directory (default: $GATEWAY_AUDIT_DIR or {DEFAULT_AUDIT_DIR})"


def _key_name_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the gateway's configuration: its audit.origin names the key",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="key name (default: the configured audit.origin, which a verifier "
        f"matches against the checkpoints; without a configuration {DEFAULT_KEY_NAME})",
    )


def _configured_audit(args: argparse.Namespace) -> AuditConfig:
    """The audit section of ``--config`` (or of the environment's GATEWAY_… settings)."""
    return load_settings(args.config).audit


def _named_dir(args: argparse.Namespace) -> str:
    """The audit directory of verify and prune: positional, ``--dir`` (as every audit
    command takes it), or the default."""
    return str(args.directory or args.dir_option or _default_dir())


_TIME_HELP = "ISO 8601 date or time; without an offset it is UTC+8 (HK/SZ time)"


def _verifiers(specs: list[str]) -> list[NoteVerifier]:
    return [load_verifier(spec) for spec in specs]


def _verify(args: argparse.Namespace) -> int:
    args.directory = _named_dir(args)
    if bool(args.witness_key) != bool(args.witnessed):
        raise ConfigError("--witness-key and --witnessed go together")
    result = verify_log(
        args.directory,
        _verifiers(args.key),
        witness_keys=_verifiers(args.witness_key),
        witnessed=args.witnessed,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not result.ok:
        first = result.first_bad_index
        head = f"first bad index {first}" if first is not None else "bad checkpoint"
        print(f"{args.directory}: verification FAILED: {head}")
        for problem in result.problems:
            print(f"  {problem.message}")
        if result.suppressed:
            print(f"  … and {result.suppressed} more")
        return EXIT_FINDING
    latest = result.latest
    assert latest is not None  # ok implies a verified checkpoint
    print(
        f"{args.directory}: ok: {result.records} records, {result.checkpoints} checkpoints "
        f"verified; latest {latest.origin} size {latest.size} root "
        f"{base64.b64encode(latest.root_hash).decode('ascii')}"
    )
    if args.witnessed:
        witnessed = result.witnessed_latest
        if witnessed is None:
            print(f"warning: no co-signed checkpoint in {', '.join(map(str, args.witnessed))}")
        else:
            print(
                f"witnessed: {result.witnessed} co-signed checkpoints reproduced; the latest "
                f"covers {witnessed.size} of the {result.records} records"
            )
    return EXIT_OK


def _latest_checkpoint(reader: LogReader) -> tuple[StoredCheckpoint, Checkpoint] | None:
    latest = reader.latest_checkpoint()
    if latest is None:
        return None
    return latest, latest.checkpoint()


def _receipt(
    reader: LogReader, index: int, data: bytes, latest: tuple[StoredCheckpoint, Checkpoint] | None
) -> Receipt:
    leaf = leaf_hash(data)
    if latest is None or index >= latest[1].size:
        return Receipt(index, leaf, data)
    stored, checkpoint = latest
    proof = inclusion_proof(index, checkpoint.size, reader.subtree)
    try:  # never hand out a receipt that cannot verify
        verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root_hash)
    except ProofError as exc:
        raise AuditIntegrityError(
            f"{reader.directory}: record {index} does not match the latest checkpoint; "
            "run `gateway audit verify`"
        ) from exc
    return Receipt(index, leaf, data, checkpoint.size, tuple(proof), stored.note)


def _transfer_records(reader: LogReader, transfer_id: str) -> list[tuple[int, bytes]]:
    """The records of one transfer, in log order.

    Uses the gateway's transfer index (a few page reads) for the records it
    covers and reads only the newer ones; every hit is re-read and checked to
    carry the id. Without a usable index, or if it names a record of another
    transfer, every segment is scanned: the index is a cache, never evidence.
    """
    hit = read_index(reader.directory / INDEX_DIR, transfer_id, lambda i: reader.stored_hash(0, i))
    if hit is not None:
        candidates, covered = hit
        first_kept = reader.segments[0][0] if reader.segments else 0
        found: list[tuple[int, bytes]] = []
        for index in candidates:
            if index < first_kept:
                continue  # pruned after its retention: nothing left to prove
            try:
                data = reader.record(index)
            except (NotFound, AuditIntegrityError):
                break
            if not record_matches(data, transfer_id):
                break
            found.append((index, data))
        else:
            found.extend(
                (index, data)
                for index, data in reader.records_from(covered)
                if record_matches(data, transfer_id)
            )
            return found
    return [
        (index, line.data)
        for index, line in reader.iter_lines()
        if line.complete and record_matches(line.data, transfer_id)
    ]


def _prove(args: argparse.Namespace) -> int:
    reader = LogReader(args.dir or _default_dir())
    latest = _latest_checkpoint(reader)
    matches = _transfer_records(reader, args.transfer_id)
    if not matches:
        print(
            f"gateway: {reader.directory}: no record of transfer {args.transfer_id!r}",
            file=sys.stderr,
        )
        return EXIT_FINDING
    receipts = [_receipt(reader, index, data, latest) for index, data in matches]
    if any(not r.checkpointed for r in receipts):
        print(
            "warning: a record is not yet covered by a checkpoint (one follows within "
            "10 s while the gateway runs); its receipt has no inclusion proof",
            file=sys.stderr,
        )
    document: Any = [r.to_json() for r in receipts] if args.all else receipts[-1].to_json()
    print(json.dumps(document, ensure_ascii=False, indent=2))
    return EXIT_OK


def _read_document(name: str) -> Any:
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            path = Path(name)
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                raise ConfigError(f"{name}: larger than any receipt or bundle")
            text = path.read_text("utf-8")
        return json.loads(text)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{name}: not a JSON receipt or bundle: {exc}") from exc


def _check_receipt(args: argparse.Namespace) -> int:
    verifiers = _verifiers(args.key)
    document = _read_document(args.file)
    try:
        if isinstance(document, dict) and document.get("format") == BUNDLE_FORMAT:
            bundle = Bundle.from_json(document)
            checkpoint = verify_bundle(bundle, verifiers)
            end = bundle.start + len(bundle.records)
            print(
                f"{args.file}: ok: records {bundle.start}..{end - 1} ({len(bundle.records)}) "
                f"are positions {bundle.start}..{end - 1} of {checkpoint.origin} "
                f"(checkpoint size {checkpoint.size}), none left out"
            )
            return EXIT_OK
        items = document if isinstance(document, list) else [document]
        for item in items:
            receipt = Receipt.from_json(item)
            checkpoint = verify_receipt(receipt, verifiers)
            print(
                f"{args.file}: ok: record {receipt.index} is in {checkpoint.origin} "
                f"(checkpoint size {checkpoint.size})"
            )
    except ReceiptError as exc:
        print(f"{args.file}: verification FAILED: {exc}")
        return EXIT_FINDING
    return EXIT_OK


def _records(
    reader: LogReader, transfer_id: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    lines: Iterator[tuple[int, Path, bytes]]
    if transfer_id is not None:
        lines = (
            (index, reader.segment_of(index), data)
            for index, data in _transfer_records(reader, transfer_id)
        )
    else:
        lines = _complete_lines(reader)
    for index, segment, data in lines:
        try:
            yield index, parse_canonical(data)
        except RecordError as exc:
            raise AuditIntegrityError(
                f"{segment}: record {index} is damaged ({exc}); run `gateway audit verify`"
            ) from exc


def _complete_lines(reader: LogReader) -> Iterator[tuple[int, Path, bytes]]:
    for index, line in reader.iter_lines():
        if not line.complete:
            return  # a write in progress or a torn tail
        yield index, line.segment, line.data


#: The columns of ``audit query``'s table (the record's fields; ``-`` where absent).
QUERY_FIELDS = (
    "time",
    "event",
    "decision",
    "route",
    "sender",
    "transfer_id",
    "rule",
    "policy_version",
)


def _query_trust(directory: str, keys: list[str]) -> None:
    """Say on stderr whether the records about to be listed are the signed ones."""
    if not keys:
        print(
            f"note: {directory}: records listed unverified; --key checks them against "
            "the signed checkpoints first",
            file=sys.stderr,
        )
        return
    result = verify_log(directory, _verifiers(keys))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.ok:
        return
    first = result.first_bad_index
    where = f"from record {first}" if first is not None else "its checkpoints"
    print(
        f"warning: {directory}: the log does NOT verify ({where}): "
        f"{result.problems[0].message}; the records below may not be what was signed "
        "(`gateway audit verify` lists every problem)",
        file=sys.stderr,
    )


def _query(args: argparse.Namespace) -> int:
    directory = args.dir or _default_dir()
    reader = LogReader(directory)
    _query_trust(directory, args.key)
    wanted = {
        key: value
        for key, value in (
            ("sender", args.sender),
            ("route", args.route),
            ("decision", args.decision),
            ("event", args.event),
        )
        if value is not None
    }
    if not args.json:
        print("index\t" + "\t".join(QUERY_FIELDS))
    for index, record in _records(reader, args.transfer_id):
        stamp = record.get("time")
        if not isinstance(stamp, str):
            continue
        if (args.since and stamp < args.since) or (args.until and stamp >= args.until):
            continue
        if any(record.get(key) != value for key, value in wanted.items()):
            continue
        if args.json:
            print(json.dumps({"index": index, "record": record}, ensure_ascii=False))
        else:
            print(f"{index}\t" + "\t".join(str(record.get(f, "-")) for f in QUERY_FIELDS))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    if args.since >= args.until:
        raise ConfigError("--since must be before --until")
    reader = LogReader(args.dir or _default_dir())
    latest = _latest_checkpoint(reader)
    if latest is None:
        raise NotFound(f"{reader.directory}: the log has no checkpoint yet")
    stored, checkpoint = latest
    start: int | None = None
    end = 0
    for index, record in _records(reader):
        if index >= checkpoint.size:
            break
        stamp = record.get("time")
        if isinstance(stamp, str) and args.since <= stamp < args.until:
            if start is None:
                start = index
            end = index + 1
    if start is None:
        start = end = 0
    records: list[bytes] = []
    for index, line in reader.iter_lines():
        if index >= end:
            break
        if index >= start:
            records.append(line.data)
    left, right = range_proof(start, end, checkpoint.size, reader.subtree)
    bundle = Bundle(start, tuple(records), tuple(left), tuple(right), stored.note)
    try:  # never write a bundle that does not verify (the regulator adds the signature check)
        verify_range(
            start, map(leaf_hash, records), left, right, checkpoint.size, checkpoint.root_hash
        )
    except ProofError as exc:
        raise AuditIntegrityError(
            f"{reader.directory}: records {start}..{end - 1} do not match the latest "
            "checkpoint; run `gateway audit verify`"
        ) from exc
    output = Path(args.output)
    try:
        output.write_text(json.dumps(bundle.to_json(), ensure_ascii=False) + "\n", "utf-8")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write: {exc.strerror}") from exc
    print(
        f"{output}: records {start}..{end - 1} ({len(records)}) against checkpoint size "
        f"{checkpoint.size}; verify with `gateway audit check-receipt {output} --key PUB`"
    )
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    args.directory = _named_dir(args)
    pruned = prune(args.directory, timedelta(days=args.retention_days))
    for seg in pruned:
        print(
            f"pruned records {seg.first}..{seg.first + seg.count - 1} "
            f"(newest {seg.newest}, sha256 {seg.sha256})"
        )
    if not pruned:
        print(f"{args.directory}: nothing is past the {args.retention_days}-day retention")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    name = args.name or _configured_audit(args).origin
    try:
        signer_name = NoteSigner(name, Ed25519PrivateKey.generate()).name
    except NoteError as exc:  # checked before a key file is written
        raise ConfigError(f"--name: {exc}") from exc
    key = create_signing_key(args.output)
    print(NoteSigner(signer_name, key).verifier)
    return EXIT_OK


def _pubkey(args: argparse.Namespace) -> int:
    audit = _configured_audit(args)
    name = args.name or audit.origin
    keyfile = args.keyfile or audit.signing_key
    try:
        print(NoteSigner(name, load_signing_key(keyfile)).verifier)
    except NoteError as exc:
        raise ConfigError(str(exc)) from exc
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    if args.writers < 1 or args.records < args.writers:
        raise ConfigError("--records must be at least --writers, and --writers at least 1")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="audit-bench-") as directory:
        result = asyncio.run(
            _bench_run(Path(directory), args.writers, args.records, fsync=not args.no_fsync)
        )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"audit: {result['records']} records from {result['writers']} concurrent writers "
            f"in {result['seconds']:.2f} s = {result['records_per_second']:.0f} records/s "
            f"({result['batches']} group commits, fsync {'on' if result['fsync'] else 'off'}; "
            f"append latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms)"
        )
    return EXIT_OK


async def _bench_run(directory: Path, writers: int, total: int, *, fsync: bool) -> dict[str, Any]:
    signer = NoteSigner(DEFAULT_KEY_NAME, Ed25519PrivateKey.generate())
    log = await AuditLog.open(directory, signer, origin=DEFAULT_KEY_NAME, fsync=fsync)
    latencies: list[float] = []
    per_writer = total // writers

    async def writer(w: int) -> None:
        for n in range(per_writer):
            rec = transfer_record(
                event="allowed",
                transfer_id=f"bench-{w}-{n}",
                sender=f"lab-{w % 16}",
                organisation=f"org-{w % 4}",
                route="sz-to-hk",
                direction="sz->hk",
                decision="allow",
                rule="gba-standard-contract",
                reason="GBA Standard Contract route between registered parties",
                policy_version="0" * 64,
                size=1024,
                ciphertext_bytes=1300,
                ciphertext_sha256="1" * 64,
                recipient_key="2" * 64,
                upstream_status=201,
                timings_us={"classify": 150, "total": 900},
            )
            started = time.perf_counter()
            await log.append(rec)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
        seconds = time.perf_counter() - started
    finally:
        await log.close()
    latencies.sort()
    records = per_writer * writers
    return {
        "records": records,
        "writers": writers,
        "seconds": seconds,
        "records_per_second": records / seconds,
        "batches": log.fsyncs,
        "fsync": fsync,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }
