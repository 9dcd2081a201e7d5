"""Prompt parameters have a visible effect on what the engine generates (tiny SD pipeline, real diffusers code path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.jobs.spec import JobSpec
from shared.prompt.parser import parse
from shared.prompt.resolve import build_jobs
from shared.settings import Settings
from worker.engine import Engine
from worker.engine.hooks import tiling


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(str(tiny_model), device="cpu", dtype="float32")


@pytest.fixture
def model_settings(tiny_model: Path) -> Settings:
    return Settings(model=str(tiny_model), steps=8)


def spec_for(text: str, settings: Settings) -> JobSpec:
    (spec,) = build_jobs(parse(text), settings=settings, owner="test")
    return spec


def pixels(engine: Engine, spec: JobSpec) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.float64) for image in engine.generate(spec).images]


def test_aspect_ratio_2_to_1_gives_a_2_to_1_image(engine: Engine, model_settings: Settings) -> None:
    spec = spec_for("a lighthouse --ar 2:1 --seed 1", model_settings)
    image = engine.generate(spec).images[0]
    assert image.width == 2 * image.height
    assert (image.width, image.height) == (spec.width, spec.height)


def test_quality_half_runs_half_the_steps(engine: Engine, model_settings: Settings) -> None:
    full = engine.generate(spec_for("a lighthouse --seed 1", model_settings))
    half = engine.generate(spec_for("a lighthouse --seed 1 --q .5", model_settings))
    assert full.notes["steps_run"] == 8
    assert half.notes["steps_run"] == 4


def test_stop_runs_part_of_the_schedule_and_returns_a_less_finished_image(
    engine: Engine, model_settings: Settings
) -> None:
    full = pixels(engine, spec_for("a lighthouse --seed 5", model_settings))
    stopped = engine.generate(spec_for("a lighthouse --seed 5 --stop 50", model_settings))
    assert stopped.notes["steps_run"] == 4
    assert stopped.notes["stop_decoded"] == "x0 estimate"
    late = pixels(engine, spec_for("a lighthouse --seed 5 --stop 90", model_settings))
    early = [np.asarray(image, dtype=np.float64) for image in stopped.images]
    # The later the stop, the closer the result to the finished image: --stop 50 is the less finished one.
    distance_early = np.mean([np.abs(e - f).mean() for e, f in zip(early, full, strict=True)])
    distance_late = np.mean([np.abs(e - f).mean() for e, f in zip(late, full, strict=True)])
    assert distance_early > distance_late


def test_seed_is_reproducible_and_each_image_can_be_made_alone(engine: Engine, model_settings: Settings) -> None:
    spec = spec_for("a lighthouse --seed 42", model_settings)
    first, second = pixels(engine, spec), pixels(engine, spec)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    alone = pixels(engine, spec.replace(seeds=spec.seeds[2:3]))
    assert np.abs(alone[0] - first[2]).max() <= 2.0  # batch-size-dependent float rounding at most


def edge_and_interior_differences(image: np.ndarray) -> tuple[float, float]:
    """Mean |difference| across the wrap seams (left/right, top/bottom) and between interior neighbours."""
    seam = (np.abs(image[:, 0] - image[:, -1]).mean() + np.abs(image[0] - image[-1]).mean()) / 2
    interior = (np.abs(np.diff(image, axis=1)).mean() + np.abs(np.diff(image, axis=0)).mean()) / 2
    return float(seam), float(interior)


def test_tile_images_wrap_without_a_seam(engine: Engine, model_settings: Settings) -> None:
    tiled = pixels(engine, spec_for("a pattern --tile --seed 3", model_settings))
    for image in tiled:
        seam, interior = edge_and_interior_differences(image)
        assert seam <= 1.5 * interior, f"seam {seam:.1f} vs interior {interior:.1f}"


def test_tile_makes_the_image_a_function_on_a_torus(engine: Engine, model_settings: Settings) -> None:
    """With --tile, shifting the starting latents circularly shifts the image by the same amount: the image has no
    border at all, so its left edge continues its right edge exactly. Without --tile the borders break this."""
    pipe = engine.pipes.text2img
    spec = spec_for("a pattern --seed 3", model_settings)
    cond = engine.encode_prompt(spec).as_pipeline_kwargs(with_negative=True)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(latents, shifts=(2, 6), dims=(2, 3))  # multiples of the UNet's downsampling (2)
    scale = engine.pipes.text2img.vae_scale_factor

    def run(start: torch.Tensor) -> np.ndarray:
        out = pipe(latents=start, num_inference_steps=3, guidance_scale=5.0, output_type="np", **cond)
        return np.asarray(out.images[0], dtype=np.float64)

    with tiling(engine.family, pipe, True):
        base, moved = run(latents), run(shifted)
    assert np.abs(np.roll(base, (2 * scale, 6 * scale), axis=(0, 1)) - moved).max() < 1e-4
    plain_base, plain_moved = run(latents), run(shifted)
    assert np.abs(np.roll(plain_base, (2 * scale, 6 * scale), axis=(0, 1)) - plain_moved).max() > 1e-2


def test_chaos_and_weird_change_the_images_and_stay_reproducible(engine: Engine, model_settings: Settings) -> None:
    plain = pixels(engine, spec_for("a lighthouse --seed 9", model_settings))
    chaos = pixels(engine, spec_for("a lighthouse --seed 9 --chaos 80", model_settings))
    weird = pixels(engine, spec_for("a lighthouse --seed 9 --weird 2000", model_settings))
    assert not np.array_equal(plain[0], chaos[0])
    assert not np.array_equal(plain[0], weird[0])
    again = pixels(engine, spec_for("a lighthouse --seed 9 --chaos 80", model_settings))
    assert all(np.array_equal(a, b) for a, b in zip(chaos, again, strict=True))


def test_negative_prompt_changes_the_conditioning(engine: Engine, model_settings: Settings) -> None:
    plain = pixels(engine, spec_for("a lighthouse --seed 11", model_settings))
    negative = pixels(engine, spec_for("a lighthouse --seed 11 --no fog", model_settings))
    assert not np.array_equal(plain[0], negative[0])
