"""Evaluation of the shipped model: held-out prompt adherence (judged by ``training.detector``), multi-prompt blend,
negative prompt, contrastive retrieval, and CPU sampling time. ``bench/adherence.py`` prints its table.

Held-out prompts: 50 one-object prompts "a <colour> <shape> <region phrase>" whose (colour, shape, region) triple was
never rendered in training, and 50 two-object prompts "a <c0> <s0> to the left of / above a <c1> <s1>" whose tuple was
never rendered in training (``training.scenes`` documents the rule); both drawn with a fixed seed.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.detector import Detection, detect, largest_of, red_fraction
from training.scenes import (
    COLOURS,
    HELD_OUT_ONE,
    HELD_OUT_TWO,
    REGIONS,
    SHAPES,
    captions,
    one_object_prompt,
    render,
    sample_scenes,
    two_object_prompt,
)
from worker.layout_attention import LayoutBias, install, prompt_layout
from worker.shapes_pipeline import ShapesPipeline
from worker.text import TextEncoding

log = logging.getLogger(__name__)

EVAL_SEED = 7
"""Seed of the prompt draw and of the per-image generators (image k of a prompt uses seed EVAL_SEED * 1000 + k)."""


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt and what the detector must find."""

    prompt: str
    colours: tuple[str, ...]
    shapes: tuple[str, ...]
    region: int = -1  # one-object prompts
    axis: int = -1  # two-object prompts: 0 = first left of second, 1 = first above second


def held_out_prompts(n_one: int = 50, n_two: int = 50, seed: int = EVAL_SEED) -> list[EvalPrompt]:
    """``n_one`` one-object then ``n_two`` two-object prompts, all from held-out combinations."""
    rng = random.Random(seed)
    ones = [tuple(int(v) for v in idx) for idx in torch.nonzero(HELD_OUT_ONE)]
    twos = [tuple(int(v) for v in idx) for idx in torch.nonzero(HELD_OUT_TWO)]
    if n_one > len(ones) or n_two > len(twos):
        raise ValueError(f"asked for {n_one}/{n_two} held-out prompts, there are {len(ones)}/{len(twos)}")
    prompts = [
        EvalPrompt(one_object_prompt(c, s, r), (COLOURS[c],), (SHAPES[s],), region=r)
        for c, s, r in rng.sample(ones, n_one)
    ]
    prompts += [
        EvalPrompt(two_object_prompt(c0, s0, a, c1, s1), (COLOURS[c0], COLOURS[c1]), (SHAPES[s0], SHAPES[s1]), axis=a)
        for c0, s0, a, c1, s1 in rng.sample(twos, n_two)
    ]
    return prompts


def judge(item: EvalPrompt, found: list[Detection]) -> dict[str, bool]:
    """Per-image verdicts for one prompt."""
    if len(item.colours) == 1:
        top = found[0] if found else None
        region_ok = False
        if top is not None:
            col, row = min(int(top.x * 3), 2), min(int(top.y * 3), 2)
            region_ok = REGIONS[3 * row + col] == REGIONS[item.region]
        colour_ok = top is not None and top.colour == item.colours[0]
        shape_ok = top is not None and top.shape == item.shapes[0]
        return {
            "colour": colour_ok,
            "shape": shape_ok,
            "colour_and_shape": colour_ok and shape_ok,
            "region": region_ok,
            "one_object": len(found) == 1,
        }
    a, b = largest_of(found, item.colours[0]), largest_of(found, item.colours[1])
    both = a is not None and b is not None
    relation = False
    shapes = False
    if a is not None and b is not None:
        relation = a.x < b.x if item.axis == 0 else a.y < b.y
        shapes = a.shape == item.shapes[0] and b.shape == item.shapes[1]
    return {"both_colours": both, "relation": relation, "both_shapes": shapes}


@dataclass(frozen=True)
class Steering:
    """Layouts as the engine applies them (``Engine.prepare_layout``): prompts that name places get the attention
    bias of ``worker.layout_attention`` at ``strength``."""

    encoding: TextEncoding
    strength: float

    @classmethod
    def of(cls, pipe: ShapesPipeline, strength: float) -> Steering | None:
        """None when ``strength`` is 0 (the model alone)."""
        if strength == 0:
            return None
        if not install(pipe.unet):
            raise ValueError("the pipeline's UNet runs custom attention processors; layouts cannot be applied")
        return cls(TextEncoding.from_pipeline(pipe, model_key=str(pipe.model_folder), cache_size=0), strength)

    def kwargs(self, prompt: str, n: int, size: int) -> dict[str, Any]:
        row, _ = prompt_layout(self.encoding, prompt)
        if not row:
            return {}
        return {"cross_attention_kwargs": {"layout": LayoutBias((row,) * n, size, size, self.strength)}}


def generate(
    pipe: ShapesPipeline,
    prompt: str | None,
    n: int,
    steps: int,
    guidance: float,
    *,
    seed: int = EVAL_SEED,
    steering: Steering | None = None,
    **kwargs: Any,
) -> list[Any]:
    """``n`` images of one prompt, image k from its own generator seeded ``seed * 1000 + k``; with ``steering``,
    the prompt's layout as the engine would apply it."""
    gens = [torch.Generator().manual_seed(seed * 1000 + k) for k in range(n)]
    if prompt is not None:
        kwargs["prompt"] = [prompt] * n
        if steering is not None:
            kwargs.update(steering.kwargs(prompt, n, int(pipe.unet.config.sample_size)))
    return list(pipe(generator=gens, num_inference_steps=steps, guidance_scale=guidance, **kwargs).images)


def adherence(  # noqa: PLR0917 (the evaluation knobs, in the order bench passes them)
    pipe: ShapesPipeline,
    prompts: list[EvalPrompt],
    images_per_prompt: int,
    steps: int,
    guidance: float,
    steering: Steering | None = None,
) -> tuple[dict[str, float], dict[str, float], list[tuple[EvalPrompt, Any]]]:
    """(one-object rates, two-object rates, generated (prompt, image) pairs)."""
    one: dict[str, list[bool]] = {}
    two: dict[str, list[bool]] = {}
    pairs = []
    for k, item in enumerate(prompts):
        for image in generate(pipe, item.prompt, images_per_prompt, steps, guidance, steering=steering):
            verdict = judge(item, detect(image))
            target = one if len(item.colours) == 1 else two
            for key, ok in verdict.items():
                target.setdefault(key, []).append(ok)
            pairs.append((item, image))
        if (k + 1) % 10 == 0:
            log.info("adherence: %d/%d prompts", k + 1, len(prompts))
    return (
        {k: float(np.mean(v)) for k, v in one.items()},
        {k: float(np.mean(v)) for k, v in two.items()},
        pairs,
    )


def blend_embeds(pipe: ShapesPipeline, parts: list[tuple[str, float]]) -> torch.Tensor:
    """The engine's multi-prompt conditioning of ``parts`` (``worker.text``, parts side by side): (1, T, D)."""
    encoding = TextEncoding.from_pipeline(pipe, model_key=str(pipe.model_folder), cache_size=0)
    return encoding.encode(parts, []).prompt_embeds


def has(found: list[Detection], colour: str, shape: str) -> bool:
    return any(d.colour == colour and d.shape == shape for d in found)


def blend_check(pipe: ShapesPipeline, n: int, steps: int, guidance: float) -> dict[str, float]:
    """Share of images with both a red circle and a blue square: blend vs each single prompt."""
    out: dict[str, float] = {}
    blend = blend_embeds(pipe, [("a red circle", 1.0), ("a blue square", 1.0)]).repeat(n, 1, 1)
    cases: dict[str, dict[str, Any]] = {
        "a red circle": {"prompt": "a red circle"},
        "a blue square": {"prompt": "a blue square"},
        "a red circle::1 a blue square::1": {"prompt": None, "prompt_embeds": blend},
    }
    for name, kw in cases.items():
        prompt = kw.pop("prompt")
        images = generate(pipe, prompt, n, steps, guidance, **kw)
        found = [detect(im) for im in images]
        out[name] = float(np.mean([has(f, "red", "circle") and has(f, "blue", "square") for f in found]))
        out[name + " (red and blue present)"] = float(
            np.mean([largest_of(f, "red") is not None and largest_of(f, "blue") is not None for f in found])
        )
    return out


def bare_check(pipe: ShapesPipeline, n: int, steps: int, guidance: float) -> dict[str, float]:
    """The bare prompts ``a <colour> <shape>`` (every pair, ``n`` images each): exactly one object, and its colour and
    shape right. Not held out (every pair is seen in training); this is what a member types first."""
    one, right = [], []
    for colour in COLOURS:
        for shape in SHAPES:
            prompt = f"{_article_of(colour)} {colour} {shape}"
            for image in generate(pipe, prompt, n, steps, guidance):
                found = detect(image)
                one.append(len(found) == 1)
                right.append(bool(found) and found[0].colour == colour and found[0].shape == shape)
    return {"one_object": float(np.mean(one)), "colour_and_shape": float(np.mean(right))}


def _article_of(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def negative_check(pipe: ShapesPipeline, n: int, steps: int, guidance: float) -> dict[str, float]:
    """Mean fraction of red pixels: `a red circle` vs `a red circle --no red` (negative prompt "red")."""
    plain = generate(pipe, "a red circle", n, steps, guidance)
    negated = generate(pipe, "a red circle", n, steps, guidance, negative_prompt="red")
    return {
        "a red circle": float(np.mean([red_fraction(i) for i in plain])),
        "a red circle --no red": float(np.mean([red_fraction(i) for i in negated])),
    }


@torch.inference_mode()
def retrieval(pipe: ShapesPipeline, pairs: list[tuple[EvalPrompt, Any]], n_rendered: int = 500) -> dict[str, float]:
    """Top-1 accuracy of the alignment scorer picking the right caption among 10 (the true one + 9 others)."""
    from worker.alignment import ShapesAlignmentScorer

    scorer = ShapesAlignmentScorer.from_folder(pipe.model_folder, pipe.text_encoder, pipe.tokenizer)
    rng = random.Random(EVAL_SEED)
    gen = torch.Generator().manual_seed(EVAL_SEED)
    scenes = sample_scenes(n_rendered, gen, "cpu", held_out=True)
    texts = captions(scenes, rng)
    pixels = render(scenes, int(scorer.model.config["image_size"]))
    img = scorer.model.encode_image(pixels)
    txt = torch.cat([scorer.text_vectors(texts[i : i + 100]) for i in range(0, len(texts), 100)])
    hits = []
    for i in range(n_rendered):
        others = rng.sample([j for j in range(n_rendered) if j != i], 9)
        candidates = torch.stack([txt[i]] + [txt[j] for j in others])
        hits.append(int((candidates @ img[i]).argmax()) == 0)
    out = {"rendered held-out scenes, own captions": float(np.mean(hits))}
    prompts = sorted({p.prompt for p, _ in pairs})
    prompt_vec = dict(zip(prompts, scorer.text_vectors(prompts), strict=True))
    gen_img = scorer.image_vectors([im for _, im in pairs])
    hits = []
    for (item, _), vec in zip(pairs, gen_img, strict=True):
        distractors = rng.sample([p for p in prompts if p != item.prompt], min(9, len(prompts) - 1))
        candidates = torch.stack([prompt_vec[item.prompt]] + [prompt_vec[p] for p in distractors])
        hits.append(int((candidates @ vec).argmax()) == 0)
    out["generated images, eval prompts"] = float(np.mean(hits))
    return out


def timing(pipe: ShapesPipeline, steps: int, guidance: float, repeats: int = 3) -> dict[str, float]:
    """Seconds for 4 images x ``steps`` steps with guidance (median of ``repeats``), on the pipeline's device."""
    generate(pipe, "a red circle", 4, 2, guidance)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate(pipe, "a red circle to the left of a blue square", 4, steps, guidance)
        seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds), "min_seconds": min(seconds), "threads": torch.get_num_threads()}


def run_all(  # noqa: PLR0917 (bench/adherence.py passes its arguments in order)
    model: str,
    images_per_prompt: int = 4,
    steps: int = 20,
    guidance: float = 7.5,
    device: str = "cpu",
    layout_strength: float = 0.0,
) -> dict[str, Any]:
    """Every measurement of the model card, as one dict; held-out adherence with layouts at ``layout_strength``
    (0: the model alone)."""
    pipe = ShapesPipeline.from_pretrained(model).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = held_out_prompts()
    steering = Steering.of(pipe, layout_strength)
    one, two, pairs = adherence(pipe, prompts, images_per_prompt, steps, guidance, steering)
    result: dict[str, Any] = {
        "model": model,
        "images_per_prompt": images_per_prompt,
        "steps": steps,
        "guidance": guidance,
        "layout_strength": layout_strength,
        "one_object": one,
        "two_object": two,
        "blend": blend_check(pipe, 32, steps, guidance),
        "negative": negative_check(pipe, 16, steps, guidance),
        "bare": bare_check(pipe, 2, steps, guidance),
        "retrieval": retrieval(pipe, pairs),
        "timing": timing(pipe, steps, guidance),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0,
        "cpu_count": os.cpu_count(),
    }
    return result
