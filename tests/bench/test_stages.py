"""``gateway bench stages``: every stage is measured, and the ceiling follows from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.bench.stages import StagesBench, render, run
from gateway.cli import main


def test_every_stage_is_measured_and_the_ceiling_is_their_sum(tmp_path: Path) -> None:
    result = run(size_mb=2, cores=2, directory=tmp_path, samples=20)
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
    assert line["durability"]["samples"] == 20
    assert line["durability"]["directory"] == str(tmp_path)
    assert line["target_p99_extra_ms"] == 5.0
    text = render(result, as_json=False)
    assert "ceiling on 2 cores" in text
    assert "SHA-256 of the ciphertext" in text
    assert f"replayed 20 times in {tmp_path}" in text


def test_a_missing_durability_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["bench", "stages", "--dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "not a directory" in err


@pytest.mark.parametrize("flag", ["--size-mb", "--cores", "--samples"])
def test_sizes_below_one_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "stages", flag, "0"]) == 2
    assert flag in capsys.readouterr().err


def test_a_directory_that_cannot_be_written_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # /proc takes no new directories, even from root; the replay comes first.
    assert main(["bench", "stages", "--dir", "/proc", "--size-mb", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot replay the durability path in /proc" in err
    assert "Traceback" not in err
