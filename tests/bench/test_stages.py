"""``gateway bench stages``: every stage is measured, and the ceiling follows from them."""

from __future__ import annotations

import json

import pytest

from gateway.bench.stages import StagesBench, render, run
from gateway.cli import main


def test_every_stage_is_measured_and_the_ceiling_is_their_sum() -> None:
    result = run(size_mb=2, cores=2)
    assert isinstance(result, StagesBench)
    sides = {stage.side for stage in result.stages}
    assert sides == {"egress", "twin"}
    assert len(result.stages) == 10
    assert all(stage.cpu_s_per_gb > 0 for stage in result.stages)
    assert result.relay_cpu_s_per_gb > 0
    assert result.passthrough_mb_s > 0
    work = sum(stage.cpu_s_per_gb for stage in result.stages) + result.relay_cpu_s_per_gb
    assert result.work_cpu_s_per_gb == pytest.approx(work, abs=0.001)
    assert result.ceiling_mb_s == pytest.approx(2 / work * 1000, rel=0.01)
    assert result.ceiling_ratio == pytest.approx(
        result.ceiling_mb_s / result.passthrough_mb_s, rel=0.01
    )
    line = json.loads(render(result, as_json=True))
    assert line["ceiling_ratio"] == result.ceiling_ratio
    assert line["target_ratio"] == 0.5
    text = render(result, as_json=False)
    assert "ceiling on 2 cores" in text
    assert "SHA-256 of the ciphertext" in text


@pytest.mark.parametrize("flag", ["--size-mb", "--cores"])
def test_sizes_below_one_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "stages", flag, "0"]) == 2
    assert flag in capsys.readouterr().err
