"""Cheap previews: the latent->RGB projection, the reporter's throttle, and the preview bench on the tiny model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shared.jobs.spec import JobSpec
from worker.preview import SD_LATENT_RGB, latents_to_preview
from worker.publisher import JobResult
from worker.tasks import ProgressReporter

ROOT = Path(__file__).resolve().parents[1]


class Collecting:
    """A publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.previews: list[tuple[float, Image.Image | None]] = []

    def progress(self, spec: JobSpec, fraction: float, preview: Image.Image | None) -> None:
        self.previews.append((fraction, preview))

    def publish(self, result: JobResult) -> dict[str, Any]:
        return {}

    def failed(self, spec: JobSpec, message: str) -> None:
        raise AssertionError(message)


def spec() -> JobSpec:
    return JobSpec.for_prompt("x", seed=1, width=32, height=32, steps=5, guidance=5.0, job_id="p1", owner="t")


def test_pixel_space_latents_are_shown_as_they_are_in_a_two_by_two_grid() -> None:
    latents = torch.full((4, 3, 8, 8), -1.0)
    latents[1] = 1.0  # top-right image white
    image = latents_to_preview(latents)
    assert image.size == (16, 16)
    pixels = np.asarray(image)
    assert (pixels[:8, 8:] == 255).all() and (pixels[:8, :8] == 0).all() and (pixels[8:] == 0).all()


def test_vae_latents_are_projected_to_rgb_and_capped_in_size() -> None:
    latents = torch.zeros(4, 4, 128, 96)
    latents[:, 0] = 2.0
    image = latents_to_preview(latents, max_side=64)
    assert max(image.size) == 64 and image.size[0] < image.size[1]  # 2 x 96 wide, 2 x 128 high, scaled down
    expected = ((2.0 * SD_LATENT_RGB[0]).clamp(-1, 1) + 1) * 127.5  # the projection of channel 0 alone
    assert np.allclose(np.asarray(image).reshape(-1, 3).mean(axis=0), expected.numpy(), atol=1.5)


def test_reporter_previews_every_step_but_the_last_at_zero_throttle_and_once_when_throttled() -> None:
    latents = torch.zeros(4, 3, 8, 8)
    every = Collecting()
    reporter = ProgressReporter(None, every, spec(), every_s=0.0)
    for step in range(1, 6):
        reporter(step, 5, latents)
    assert [fraction for fraction, _ in every.previews] == [0.2, 0.4, 0.6, 0.8]
    assert all(isinstance(preview, Image.Image) for _, preview in every.previews)

    throttled = Collecting()
    reporter = ProgressReporter(None, throttled, spec(), every_s=3600.0)
    for step in range(1, 6):
        reporter(step, 5, latents)
    assert len(throttled.previews) == 1 and throttled.previews[0][0] == 0.2  # the first step shows at once


@pytest.mark.parametrize("steps", [3])
def test_preview_bench_runs_on_the_tiny_model(steps: int, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = importlib.util.spec_from_file_location("bench_preview", ROOT / "bench" / "preview.py")
    assert loaded is not None and loaded.loader is not None
    bench = importlib.util.module_from_spec(loaded)
    sys.modules["bench_preview"] = bench
    loaded.loader.exec_module(bench)
    figures = bench.main(["--model", "tiny", "--steps", str(steps), "--rounds", "1", "--device", "cpu"])
    assert figures.previews_per_job == steps - 1
    assert 0 < figures.first_preview_s < figures.with_previews_s
    assert figures.preview_ms > 0 and figures.full_decode_ms > 0 and 0 < figures.in_job_fraction < 1
    assert "slowdown" in capsys.readouterr().out
