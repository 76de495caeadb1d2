"""The crypto benchmark runs end to end and reports sane numbers."""

from __future__ import annotations

import json

import pytest

from gateway.crypto.bench import STEP, main, run_benchmark


def test_step_must_be_whole_chunks() -> None:
    with pytest.raises(ValueError, match="64 KiB"):
        run_benchmark(1 << 20, step=1000)


def test_run_benchmark_small_volume() -> None:
    result = run_benchmark(4 * STEP)
    assert result.bytes == 4 * STEP
    assert result.step == STEP
    for value in (
        result.age_encrypt_mb_s,
        result.age_decrypt_mb_s,
        result.chacha_encrypt_mb_s,
        result.chacha_decrypt_mb_s,
    ):
        assert value > 0
    # Ratios are reported, not asserted: on a shared 2-core machine a few MiB of
    # timing is too noisy for a bound; the numbers live in docs/encryption.md.
    assert result.encrypt_ratio == result.age_encrypt_mb_s / result.chacha_encrypt_mb_s
    assert result.decrypt_ratio == result.age_decrypt_mb_s / result.chacha_decrypt_mb_s


def test_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mib", "2", "--step-kib", "128", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == 2 << 20
    assert report["step"] == 128 << 10
    assert {"encrypt_ratio", "decrypt_ratio", "age_encrypt_mb_s"} <= set(report)
