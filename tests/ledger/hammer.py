"""One gateway replica's worth of ledger traffic, run as its own OS process.

``python -m tests.ledger.hammer URL --proc N …`` does ``--rounds`` transactions
on one organisation-year, each counting then adding an overlapping, seeded
subset of a shared universe of subjects, exactly like the server's decide step.
Inside each transaction it checks that the ``projected`` count equals the total
after ``add``: if another process could slip an update in between (a
check-then-add race), the two differ. It prints one JSON line:
``{"mismatches": n, "deadlocks": n, "start": t0, "end": t1}``.

Processes meet at a barrier (a ready file each, in ``--barrier DIR``) so that
they really run at the same time; the test checks their spans overlap.

``--unlocked`` replaces the PostgreSQL advisory lock with nothing, so the test
suite can show that this harness does catch the race it is looking for.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.errors import Unavailable
from gateway.ledger import Ledger, PostgresLedger, open_ledger
from gateway.ledger.postgres import DEFAULT_SCHEMA

ORG = "hammer-org"
YEAR = 2026
#: Seconds to wait at the barrier for the other processes to start.
BARRIER_TIMEOUT_S = 60.0


def subject_ids(proc: int, round_: int, batch: int, universe: int) -> list[int]:
    """The subjects process ``proc`` sends in ``round_`` (the test recomputes them)."""
    return random.Random(f"{proc}:{round_}").sample(range(universe), batch)


def digest(subject: int) -> bytes:
    """A 16-byte keyed-hash stand-in for one subject."""
    return hashlib.sha256(b"hammer-%d" % subject).digest()[:16]


class UnlockedPostgresLedger(PostgresLedger):
    """A deliberately broken ledger: no cross-process lock (harness self-test)."""

    async def _take_lock(self, conn: Any, organisation: str, year: int) -> None:
        return None


async def _open(url: str, schema: str, unlocked: bool) -> Ledger:
    if unlocked:
        return await UnlockedPostgresLedger(url, schema=schema).open()
    return await open_ledger(url)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ledger = await _open(args.url, args.schema, args.unlocked)
    barrier = Path(args.barrier)
    (barrier / f"ready-{args.proc}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(await asyncio.to_thread(lambda: list(barrier.glob("ready-*")))) < args.procs:
        if time.monotonic() > deadline:
            raise SystemExit("barrier timeout: the other processes did not start")
        await asyncio.sleep(0.005)
    mismatches = deadlocks = 0
    start = time.time()
    try:
        for round_ in range(args.rounds):
            batch = [digest(s) for s in subject_ids(args.proc, round_, args.batch, args.universe)]
            try:
                async with ledger.transaction(ORG, YEAR) as tx:
                    count = await tx.count("personal", batch)
                    if args.pause:
                        await asyncio.sleep(args.pause)
                    total = await tx.add("personal", batch)
                    if total != count.projected:
                        mismatches += 1
            except Unavailable:
                # Unserialised writers of overlapping rows can also deadlock; that
                # too shows the lock is missing. With the lock, it is a failure.
                if not args.unlocked:
                    raise
                deadlocks += 1
    finally:
        await ledger.close()
    return {
        "mismatches": mismatches,
        "deadlocks": deadlocks,
        "start": start,
        "end": time.time(),
    }


#: The repository root, so that ``-m tests.ledger.hammer`` resolves in the child.
ROOT = Path(__file__).resolve().parents[2]
#: Seconds a hammer run may take before the test gives up on it.
RUN_TIMEOUT_S = 120.0


def hammer(url: str, barrier: Path, procs: int = 2, **options: Any) -> list[dict[str, Any]]:
    """Run ``procs`` hammer processes against ``url`` at once; their JSON results.

    ``options`` become command-line flags (``rounds=40`` -> ``--rounds 40``;
    ``unlocked=True`` -> ``--unlocked``).
    """
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False):
            flags += [flag, str(value)]
    children = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.ledger.hammer", url),
                *("--proc", str(n), "--procs", str(procs), "--barrier", str(barrier)),
                *flags,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(procs)
    ]
    outputs: list[tuple[int, str, str]] = []
    try:
        for child in children:
            out, err = child.communicate(timeout=RUN_TIMEOUT_S)
            outputs.append((child.returncode, out, err))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    failed = [(n, code, err.strip()[-2000:]) for n, (code, _, err) in enumerate(outputs) if code]
    if failed:
        raise AssertionError(f"hammer processes failed (proc, exit code, stderr): {failed}")
    return [json.loads(out) for _, out, _ in outputs]


def expected_union(procs: int, rounds: int, batch: int, universe: int) -> int:
    """How many distinct subjects all processes sent together."""
    return len(
        {
            s
            for proc in range(procs)
            for round_ in range(rounds)
            for s in subject_ids(proc, round_, batch, universe)
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--proc", type=int, required=True)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--barrier", required=True)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--universe", type=int, default=3000)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--schema", default=DEFAULT_SCHEMA)
    parser.add_argument("--unlocked", action="store_true")
    result = asyncio.run(run(parser.parse_args()))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
