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


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("family", ["flux-dev", "sd3", "zimage"])
def test_gpu_bench_family_runs_at_tiny_size_on_the_cpu(capsys: pytest.CaptureFixture[str], family: str) -> None:
    bench = load_bench()
    rows = bench.main(
        ["--family", family, "--tiny", "--device", "cpu", "--steps", "2", "--batches", "1,2", "--repeats", "1"]
    )
    printed = capsys.readouterr().out
    assert f"model={family}-tiny" in printed and "size=32" in printed
    assert [row.batch for row in rows] == [1, 2]
    for row in rows:
        assert row.images_per_s > 0 and row.denoise_s > 0 and row.decode_s > 0 and row.encode_s > 0
        assert row.peak_fraction is None  # no known peak for a CPU
    # the denoiser's FLOPs per step are counted on its own calls: twice the images, twice the FLOPs
    assert rows[1].step_gflops == pytest.approx(2 * rows[0].step_gflops, rel=0.05)


def test_gpu_bench_real_size_configs_match_the_published_models(capsys: pytest.CaptureFixture[str]) -> None:
    """Every family's released architecture, built on the meta device: the denoiser's parameters within 1% of the
    published size, and the engine's family, image sibling and text adapter accept the real-size pipeline."""
    import torch

    from bench.family_configs import PUBLISHED_DENOISER_PARAMS, pipeline
    from worker.engine.families import family_for
    from worker.text import TextEncoding

    assert load_bench().main(["--family", "all", "--dry-run"]) == []
    totals = [line for line in capsys.readouterr().out.splitlines() if " total " in line]
    assert len(totals) == len(PUBLISHED_DENOISER_PARAMS)
    for line in totals:
        ratio = float(line.split("(denoiser ")[1].split(" x")[0])
        assert 0.99 <= ratio <= 1.01, line
    for name in ("flux-dev", "flux2-klein", "qwenimage"):
        pipe = pipeline(name, "meta", torch.bfloat16)
        family = family_for(pipe)
        assert family.latent_shape(pipe, 1024, 1024)[1:] in ((128, 128), (64, 64))
        assert type(family.load_image_sibling(pipe)).__name__.startswith(type(pipe).__name__.removesuffix("Pipeline"))
        assert TextEncoding.from_pipeline(pipe, model_key=name).window == 512
