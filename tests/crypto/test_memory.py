"""Constant memory: a multi-GB age round trip in a fresh process stays flat.

The stream is generated, encrypted and decrypted on the fly (never stored);
the peak RSS after 2 GiB must stay within a small margin of the peak after
the first few MiB, which would not hold if anything grew with the input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

#: 2 GiB: well beyond any buffer, still ~10 s on one core for encrypt + decrypt.
TOTAL = 2 << 30
#: Allowed RSS growth between warm-up and the end: a few chunks and read
#: buffers, far below what buffering the stream would need (GiBs).
MAX_GROWTH = 32 << 20

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, zlib
    from gateway.crypto.age import AgeDecryptor, AgeEncryptor
    from gateway.crypto.keys import X25519Identity

    def peak_rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    total = int(sys.argv[1])
    block = os.urandom(1 << 20)
    identity = X25519Identity.generate()
    enc = AgeEncryptor([identity.recipient])
    dec = AgeDecryptor([identity])
    # Adler-32 and a byte count check the round trip cheaply; the AEAD tags
    # already authenticate every chunk.
    sent = received = 1
    count = 0
    def take(data):
        global received, count
        received = zlib.adler32(data, received)
        count += len(data)
    take(dec.feed(enc.header()))
    warm = None
    for i in range(total // len(block)):
        sent = zlib.adler32(block, sent)
        take(dec.feed(enc.update(block)))
        if i == 8:
            warm = peak_rss()
    take(dec.feed(enc.finish()))
    take(dec.finish())
    print(json.dumps({"warm": warm, "end": peak_rss(),
                      "same": sent == received and count == total}))
    """
)


@pytest.mark.slow
def test_two_gib_round_trip_in_constant_memory() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TOTAL)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["same"]
    assert report["end"] - report["warm"] < MAX_GROWTH, report
