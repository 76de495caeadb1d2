"""A process that appends to an audit log as fast as it can until killed.

Run by ``test_storage.py`` (``python -m tests.audit.crash_writer DIR KEY``):
64 concurrent appenders; after each append returns (durable), it prints
``<index> <transfer id>`` so the test knows exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.audit.keys import load_signing_key
from gateway.audit.log import AuditLog
from gateway.audit.note import NoteSigner
from tests.audit.conftest import ORIGIN, record

WRITERS = 64


async def main(directory: str, key: str) -> None:
    signer = NoteSigner(ORIGIN, load_signing_key(key))
    log = await AuditLog.open(
        directory, signer, origin=ORIGIN, checkpoint_every=300, segment_max_bytes=48 * 1024
    )
    start = log.size

    async def writer(w: int) -> None:
        n = 0
        while True:
            i = start + 1_000_000 * (w + 1) + n
            receipt = await log.append(record(i, pad="x" * (i % 97)))
            sys.stdout.write(f"{receipt.index} t-{i}\n")
            sys.stdout.flush()
            n += 1

    print("ready", flush=True)
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
