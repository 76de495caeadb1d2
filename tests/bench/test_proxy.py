"""``gateway bench proxy`` runs end to end on small sizes and reports every measurement."""

from __future__ import annotations

import json

import pytest

from gateway.bench.proxy import ProxyBench, render, run_async
from gateway.cli import main


async def test_small_run_measures_everything() -> None:
    result = await run_async(2, 3, samples=20, concurrent=16, parquet_mb=3)
    assert isinstance(result, ProxyBench)
    assert result.baseline_mb_s > 0
    assert result.gateway_mb_s > 0
    assert result.ratio > 0
    assert result.gateway_p50_ms > 0
    # CPU time is read for each process (the gateway does more per GB than a relay).
    assert result.baseline_cpu_s_per_gb > 0
    assert result.egress_cpu_s_per_gb > 0
    assert result.twin_cpu_s_per_gb > 0
    assert result.gateway_cpu_s_per_gb > result.baseline_cpu_s_per_gb
    # And per 1 KB transfer: the egress and the twin each work on every one.
    assert result.egress_cpu_ms_per_small > 0
    assert result.twin_cpu_ms_per_small > 0
    assert result.baseline_cpu_ms_per_small > 0
    assert "CPU ms per transfer" in render(result, as_json=False)
    # The disk's part: the durability points replayed where the gateways ran.
    assert result.durability_p99_ms >= result.durability_p50_ms > 0
    assert "durability points" in render(result, as_json=False)
    # The floor: the same 1 KB transfers through their data path alone.
    assert result.floor_p99_ms >= result.floor_p50_ms > 0
    assert result.floor_egress_cpu_ms_per_small > 0
    assert result.floor_twin_cpu_ms_per_small > 0
    assert result.floor_p99_concurrent_ms > 0
    assert result.floor_per_s_concurrent > 0
    assert "floor p50/p99" in render(result, as_json=False)
    # 64 clients at once: every transfer answered, the rates measured.
    assert result.gateway_p99_concurrent_ms >= result.gateway_p50_concurrent_ms > 0
    assert result.baseline_per_s_concurrent > 0
    assert result.gateway_per_s_concurrent > 0
    assert result.concurrent == 16
    # Every concurrent transfer was allowed, delivered and has both audit records.
    assert result.concurrent_errors == 0
    assert result.audit_records_missing == 0
    assert result.rss_peak_mb >= result.rss_start_mb > 0
    # The Parquet table went through both gateways, read from the spool (not unscannable).
    assert result.parquet_file_bytes > 2_000_000
    assert result.parquet_mb_s > 0
    assert result.parquet_rss_peak_mb >= result.parquet_rss_start_mb > 0
    assert "parquet transfer 3 MB" in render(result, as_json=False)
    line = json.loads(render(result, as_json=True))
    assert line["concurrent"] == 16
    assert line["gateway_cpu_s_per_gb"] == result.gateway_cpu_s_per_gb
    assert "64 clients at once" in render(result, as_json=False)
    assert isinstance(line["ok"], bool)
    assert "ratio" in render(result, as_json=False)


def test_a_negative_parquet_size_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "proxy", "--parquet-mb", "-1"]) == 2
    assert "--parquet-mb" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--size-mb", "--large-mb"])
def test_sizes_below_one_mb_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "proxy", flag, "0"]) == 2
    _, err = capsys.readouterr()
    assert flag in err
    assert "Traceback" not in err


def test_the_small_transfer_is_whole_utf8_text() -> None:
    """Cut at a character boundary: the bench's prose holds Chinese, and 1,024 bytes
    cut through a character would be taken for Windows-1252, as no real file is."""
    from gateway.bench.classify import generate
    from gateway.bench.durability import SMALL_BYTES
    from gateway.bench.proxy import BLOCK, small_text
    from gateway.classify.charset import UTF8, detect

    block = generate("prose", BLOCK)
    assert detect(block[:SMALL_BYTES], complete=True).charset != UTF8  # the trap
    small = small_text(block, SMALL_BYTES)
    assert len(small) == SMALL_BYTES
    assert detect(small, complete=True).charset == UTF8
