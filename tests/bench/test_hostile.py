"""The hostile-decoder phase of ``gateway bench proxy`` runs end to end on small sizes."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest
import zstandard

from gateway.bench.hostile import (
    UNBOUNDED_BUDGET,
    XZ_DICTIONARY,
    HostileRun,
    hostile_payloads,
    hostile_phase,
    render_runs,
)
from gateway.bench.proxy import ProxyBench, gateway_pair, render
from gateway.classify.decode import LAYER_BUFFER_BYTES, ZSTD_STATE_BYTES, xz_dictionary
from gateway.cli import main

MIB = 1 << 20
#: One ``--long=27`` zstd layer: the budget of the small run admits one at a time.
ZSTD_LONG_LAYER = LAYER_BUFFER_BYTES + ZSTD_STATE_BYTES + (1 << 27)


def test_payloads_declare_the_worst_case_windows() -> None:
    zst, xz = hostile_payloads(8 * MIB)
    assert zstandard.get_frame_parameters(zst).window_size == 1 << 27
    assert xz_dictionary(xz) == XZ_DICTIONARY
    text = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(zst).read()
    assert text == lzma.decompress(xz)
    assert len(text) == 8 * MIB
    # Compressible, but under the classifier's 100:1 ratio limit.
    assert 10 < len(text) / len(zst) < 100
    assert 5 < len(text) / len(xz) < 100


async def test_phase_runs_with_and_without_the_budget(tmp_path: Path) -> None:
    budget = ZSTD_LONG_LAYER + 8 * MIB
    headers = {"Authorization": "Bearer bench-token"}
    runs = await hostile_phase(gateway_pair, tmp_path, 4, budget, headers, output_bytes=32 * MIB)
    assert [run.budget_mb for run in runs] == [round(budget / MIB, 1), UNBOUNDED_BUDGET / MIB]
    for run in runs:
        assert isinstance(run, HostileRun)
        assert (run.uploads, run.completed, run.errors) == (4, 4, 0)
        assert run.rss_peak_mb >= run.rss_start_mb > 0
        assert run.ok()
    # The budget held; without one, a zstd and an xz window were reserved at once.
    assert 0 < runs[0].reserved_peak_mb <= runs[0].budget_mb
    lines = render_runs(runs)
    assert "decoder budget" in lines[0]
    assert "no budget" in lines[1]


def test_results_carry_the_runs_in_text_and_json() -> None:
    run = HostileRun(1024.0, 64, 64, 100, 0, 30.0, 200.0, 1300.0, 1020.0)
    result = ProxyBench(
        **{name: 1 for name in ProxyBench.__dataclass_fields__ if name != "hostile"},
        hostile=(run,),
    )
    line = json.loads(render(result, as_json=True))
    assert line["hostile"][0]["rss_peak_mb"] == 1300.0
    assert "64 hostile" in render(result, as_json=False)


@pytest.mark.parametrize(
    ("flag", "value"), [("--hostile-decoders", "-1"), ("--decoder-memory-mb", "0")]
)
def test_bad_hostile_options_are_refused(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "proxy", flag, value]) == 2
    _, err = capsys.readouterr()
    assert flag in err
    assert "Traceback" not in err
