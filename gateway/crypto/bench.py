"""Throughput of the age streaming objects beside ChaCha20-Poly1305 alone.

``python -m gateway.crypto.bench [--mib N] [--step-kib K] [--json]`` streams
N MiB (1 GiB by default) of generated data through
:class:`~gateway.crypto.age.AgeEncryptor` and
:class:`~gateway.crypto.age.AgeDecryptor` in K KiB calls (64 by default), and through bare
ChaCha20-Poly1305 on the same 64 KiB chunks, in one process run, and prints
MB/s (10^6 bytes per second) and the ratios. The ciphertext is decrypted as it
is produced, so memory stays flat; each side's time is measured around its
own calls only, and the two sides alternate call by call.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gateway.crypto.age import AgeDecryptor, AgeEncryptor
from gateway.crypto.keys import X25519Identity
from gateway.crypto.stream import CHUNK_SIZE

#: Default bytes per update/feed call: one age chunk, what the CLI reads per
#: step (cli.crypto.READ_SIZE). Larger steps make each call return one large
#: ``bytes`` whose fresh allocation (above glibc's mmap threshold) can
#: page-fault on every call; ``--step-kib 1024`` shows that cost.
STEP = CHUNK_SIZE
#: Default volume: 1 GiB, long enough that per-file set-up (X25519, HKDF) vanishes.
DEFAULT_MIB = 1024


@dataclass(frozen=True, slots=True)
class CryptoBench:
    """MB/s of each path over the same plaintext volume."""

    bytes: int
    step: int
    age_encrypt_mb_s: float
    age_decrypt_mb_s: float
    chacha_encrypt_mb_s: float
    chacha_decrypt_mb_s: float

    @property
    def encrypt_ratio(self) -> float:
        """age encryption speed as a fraction of bare ChaCha20-Poly1305."""
        return self.age_encrypt_mb_s / self.chacha_encrypt_mb_s

    @property
    def decrypt_ratio(self) -> float:
        """age decryption speed as a fraction of bare ChaCha20-Poly1305."""
        return self.age_decrypt_mb_s / self.chacha_decrypt_mb_s


def run_benchmark(total: int = DEFAULT_MIB << 20, step: int = STEP) -> CryptoBench:
    """Measure the four paths over ``total`` bytes (rounded down to whole steps).

    Args:
        total: plaintext volume.
        step: bytes per ``update``/``feed`` call (a multiple of 64 KiB).

    The age step and the bare ChaCha20-Poly1305 step alternate call by call,
    so that load from other processes on a shared machine hits both sides
    alike and the ratios stay meaningful even when the absolute numbers move.
    """
    if step <= 0 or step % CHUNK_SIZE:
        raise ValueError("step must be a positive multiple of 64 KiB")
    steps = max(total // step, 1)
    block = os.urandom(step)
    view = memoryview(block)
    identity = X25519Identity.generate()
    enc = AgeEncryptor([identity.recipient])
    dec = AgeDecryptor([identity])
    aead = ChaCha20Poly1305(os.urandom(32))
    clock = time.perf_counter
    t_enc = t_dec = c_enc = c_dec = 0.0
    counter = 0
    dec.feed(enc.header())
    for _ in range(steps):
        start = clock()
        ciphertext = enc.update(block)
        middle = clock()
        dec.feed(ciphertext)
        t_enc += middle - start
        t_dec += clock() - middle
        for pos in range(0, step, CHUNK_SIZE):
            nonce = counter.to_bytes(11, "big") + b"\x00"
            counter += 1
            start = clock()
            sealed = aead.encrypt(nonce, view[pos : pos + CHUNK_SIZE], None)
            middle = clock()
            aead.decrypt(nonce, sealed, None)
            c_enc += middle - start
            c_dec += clock() - middle
    start = clock()
    ciphertext = enc.finish()
    middle = clock()
    dec.feed(ciphertext)
    dec.finish()
    t_enc += middle - start
    t_dec += clock() - middle
    volume = steps * step
    return CryptoBench(
        bytes=volume,
        step=step,
        age_encrypt_mb_s=volume / t_enc / 1e6,
        age_decrypt_mb_s=volume / t_dec / 1e6,
        chacha_encrypt_mb_s=volume / c_enc / 1e6,
        chacha_decrypt_mb_s=volume / c_dec / 1e6,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the result (text, or one JSON object)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.crypto.bench")
    parser.add_argument("--mib", type=int, default=DEFAULT_MIB, help="volume in MiB")
    parser.add_argument(
        "--step-kib", type=int, default=STEP >> 10, help="KiB per call (multiple of 64)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run_benchmark(args.mib << 20, args.step_kib << 10)
    if args.json:
        fields = asdict(result) | {
            "encrypt_ratio": result.encrypt_ratio,
            "decrypt_ratio": result.decrypt_ratio,
        }
        print(json.dumps(fields))
        return 0
    print(
        f"volume: {result.bytes / (1 << 20):.0f} MiB, 64 KiB chunks, "
        f"{result.step >> 10} KiB per call"
    )
    print(f"age encrypt        {result.age_encrypt_mb_s:8.0f} MB/s")
    print(f"ChaCha20-Poly1305  {result.chacha_encrypt_mb_s:8.0f} MB/s  (encrypt alone)")
    print(f"age decrypt        {result.age_decrypt_mb_s:8.0f} MB/s")
    print(f"ChaCha20-Poly1305  {result.chacha_decrypt_mb_s:8.0f} MB/s  (decrypt alone)")
    print(
        f"ratio age/ChaCha   encrypt {result.encrypt_ratio:.2f}, decrypt {result.decrypt_ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
