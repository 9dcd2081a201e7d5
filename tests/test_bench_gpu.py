"""``python -m bench.gpu`` runs end to end on the CPU with the tiny model and prints its table."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest


def load_bench() -> ModuleType:
    return importlib.import_module("bench.gpu")


def test_gpu_bench_runs_on_cpu_with_the_tiny_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bench = load_bench()
    out = tmp_path / "rows.json"
    rows = bench.main(
        ["--model", "tiny", "--device", "cpu", "--steps", "2", "--batches", "1,2", "--repeats", "1", "--json", str(out)]
    )
    printed = capsys.readouterr().out
    assert "model=tiny" in printed and "img/s" in printed and "GFLOP/step" in printed
    assert [row.batch for row in rows] == [1, 2]
    for row in rows:
        assert row.images_per_s > 0 and row.denoise_s > 0 and row.decode_s > 0
        assert 0 < row.denoiser_fraction <= 1
        assert row.peak_fraction is None  # no known peak for a CPU
    # FLOPs per step come from the denoiser's config: the CFG batch doubles with the images
    assert rows[1].step_gflops == pytest.approx(2 * rows[0].step_gflops, rel=1e-6)
    assert out.exists() and '"rows"' in out.read_text()


def test_gpu_bench_refuses_bad_batches() -> None:
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--model", "tiny", "--device", "cpu", "--batches", "0"])
