"""Layouts: place phrases read from prompts, token positions, the attention bias, and their effect on real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

from shared.defaults import DEFAULT_MODEL, PROJECT_ROOT
from shared.jobs.spec import JobSpec
from tests.tiny_models import build_tiny_sdxl
from training.detector import detect, largest_of
from training.scenes import REGION_PHRASES, RELATION_TEMPLATES
from worker.engine import Engine
from worker.layout import LEFT_HALF, RIGHT_HALF, parse_layout
from worker.layout_attention import LayoutAttnProcessor, LayoutBias, install
from worker.shapes_pipeline import ShapesPipeline
from worker.text import TextEncoding

SHIPPED = str(PROJECT_ROOT / DEFAULT_MODEL)


def centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


# --- reading place phrases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1])
def test_every_training_relation_template_puts_its_objects_in_order(axis: int) -> None:
    for template in RELATION_TEMPLATES[axis]:
        prompt = template.format(a="a red circle", b="a blue square")
        layout = parse_layout(prompt)
        assert layout is not None, prompt
        boxes = {placed.phrase: placed.box for placed in layout.phrases}
        assert set(boxes) == {"a red circle", "a blue square"}, prompt
        first, second = centre(boxes["a red circle"]), centre(boxes["a blue square"])
        assert first[axis] < second[axis], f"{prompt}: {boxes}"


def test_every_region_phrase_boxes_its_cell_of_the_3x3_grid_when_two_objects_name_places() -> None:
    for region, phrases in enumerate(REGION_PHRASES):
        row, column = divmod(region, 3)
        for phrase in phrases:
            layout = parse_layout(f"a green star {phrase} and a blue square in the bottom right")
            assert layout is not None, phrase
            first, second = layout.phrases
            assert (first.phrase, second.phrase) == ("a green star", "a blue square")
            assert first.box == pytest.approx((column / 3, row / 3, (column + 1) / 3, (row + 1) / 3)), phrase
            assert second.box == pytest.approx((2 / 3, 2 / 3, 1.0, 1.0))
            # One object with a place is left to the model (worker.layout says why).
            assert parse_layout(f"a green star {phrase}") is None


def test_phrases_end_at_the_clause_and_words_must_be_whole() -> None:
    layout = parse_layout("A Lighthouse Left Of an old barn, oil painting, dusk")
    assert layout is not None
    assert [(p.phrase, p.box) for p in layout.phrases] == [("A Lighthouse", LEFT_HALF), ("an old barn", RIGHT_HALF)]
    assert layout.text[layout.phrases[1].start : layout.phrases[1].end] == "an old barn"
    assert parse_layout("a leftover sandwich") is None
    assert parse_layout("a lighthouse at dusk") is None
    assert parse_layout("above") is None  # no phrase on either side
    assert parse_layout("a red circle left of") is None


# --- token positions ---------------------------------------------------------------------------------------------


def test_phrase_positions_point_at_the_phrase_tokens_in_every_window() -> None:
    pipe = ShapesPipeline.from_pretrained(SHIPPED)
    text = TextEncoding.from_pipeline(pipe, model_key="shapes")
    prompt = "a red circle to the left of a blue square"
    layout = parse_layout(prompt)
    assert layout is not None
    tokens = text.tokenize(prompt).tokens  # [CLS] ... [SEP]
    spans = [[tokens[i] for i in text.phrase_positions(prompt, p.start, p.end)] for p in layout.phrases]
    assert spans == [["a", "red", "circle"], ["a", "blue", "square"]]
    # Past the first window (30 content tokens), positions skip the [SEP] and the next [CLS].
    long = "word " * 29 + "a red circle"
    start = long.index("a red")
    assert text.phrase_positions(long, start, len(long)) == (30, 33, 34)


# --- the attention bias ------------------------------------------------------------------------------------------


def test_bias_is_plus_in_the_box_minus_outside_and_only_on_conditional_rows() -> None:
    layout = LayoutBias(rows=(((LEFT_HALF, (1, 2)),), ()), height=8, width=6, strength=2.0)
    bias = layout.bias(batch=4, queries=48, tokens=5, device=torch.device("cpu"), dtype=torch.float32)
    assert bias.shape == (4, 1, 48, 5)
    assert not bias[:2].any()  # unconditional rows
    assert not bias[3].any()  # the second image names no place
    grid = bias[2, 0].view(8, 6, 5)
    assert (grid[:, :3, 1:3] == 2.0).all() and (grid[:, 3:, 1:3] == -2.0).all()
    assert not grid[..., [0, 3, 4]].any()  # tokens outside every phrase
    # Attention levels of odd-sized latents round up when halving: 8x6 -> 4x3 -> 2x2.
    assert layout.grid(12) == (4, 3) and layout.grid(4) == (2, 2)
    with pytest.raises(ValueError, match="no level of 8x6 latents has 10 query pixels"):
        layout.grid(10)
    with pytest.raises(ValueError, match="layout has 2 rows, the attention batch has 3"):
        layout.bias(batch=3, queries=48, tokens=5, device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(ValueError, match="layout strength must be a finite number >= 0, got -1"):
        LayoutBias(rows=(), height=8, width=8, strength=-1)


def test_without_a_layout_the_processor_computes_what_diffusers_computes(tiny_model: Path) -> None:
    pipe: StableDiffusionPipeline = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    unet = pipe.unet
    unet.set_attn_processor(AttnProcessor2_0())
    sample = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = unet(sample, 10, encoder_hidden_states=states).sample
        assert install(unet)
        assert all(isinstance(p, LayoutAttnProcessor) for p in unet.attn_processors.values())
        same = unet(sample, 10, encoder_hidden_states=states).sample
        off = LayoutBias(rows=(((LEFT_HALF, (1, 2)),),), height=16, width=16, strength=0.0)
        still = unet(sample, 10, encoder_hidden_states=states, cross_attention_kwargs={"layout": off}).sample
        on = LayoutBias(rows=(((LEFT_HALF, (1, 2)),),), height=16, width=16, strength=2.0)
        steered = unet(sample, 10, encoder_hidden_states=states, cross_attention_kwargs={"layout": on}).sample
    assert torch.equal(plain, same) and torch.equal(plain, still)
    assert torch.equal(steered[0], plain[0])  # the unconditional row
    assert not torch.allclose(steered[1], plain[1])


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_engine_steers_tiny_sd_and_sdxl_pipelines(
    family: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tiny_model if family == "sd" else build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    engine = Engine.load(str(folder), "cpu", "float32")
    assert engine.layout_strength == 2.0
    spec = JobSpec.for_prompt(
        "a red circle above a blue square", seed=3, width=64, height=64, steps=3, guidance=5.0, owner="test"
    )
    steered = engine.generate(spec)
    assert [item["phrase"] for item in steered.notes["layout"]] == ["a red circle", "a blue square"]
    engine.enable_layout(0.0)
    alone = engine.generate(spec)
    assert "layout" not in alone.notes
    difference = [
        np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean()
        for a, b in zip(steered.images, alone.images, strict=True)
    ]
    assert min(difference) > 0.5, difference  # mean grey levels per pixel


# --- on the shipped model, through the engine --------------------------------------------------------------------

RELATION_PROMPTS = (
    ("a red circle to the left of a blue square", "red", "blue", 0),
    ("a blue square to the right of a red circle", "red", "blue", 0),
    ("a yellow star above a green triangle", "yellow", "green", 1),
    ("a green triangle below a yellow star", "yellow", "green", 1),
)
"""Prompts, the colour that must come first (left or top), the other colour, and the axis (0: x, 1: y)."""


def relations_right(engine: Engine) -> tuple[int, list[object]]:
    right, layouts = 0, []
    for prompt, first, second, axis in RELATION_PROMPTS:
        spec = JobSpec.for_prompt(prompt, seed=11, width=64, height=64, steps=20, guidance=1.5, owner="test")
        generation = engine.generate(spec)
        layouts.append(generation.notes.get("layout"))
        for image in generation.images:
            found = detect(image)
            a, b = largest_of(found, first), largest_of(found, second)
            right += a is not None and b is not None and (a.x < b.x if axis == 0 else a.y < b.y)
    return right, layouts


def test_layout_puts_the_shipped_models_objects_where_the_prompt_says() -> None:
    engine = Engine.load(SHIPPED, "cpu", "float32")
    assert engine.layout_strength == 2.0
    steered, layouts = relations_right(engine)
    assert layouts[0] == [
        {"phrase": "a red circle", "box": [0.0, 0.0, 0.5, 1.0]},
        {"phrase": "a blue square", "box": [0.5, 0.0, 1.0, 1.0]},
    ]
    assert engine.prepare_for_device()["attention"] == "sdpa (layout processor)"  # a second call keeps layouts
    assert not engine.enable_layout(0.0)
    alone, no_layouts = relations_right(engine)
    assert no_layouts == [None] * 4
    # 16 images each; measured 13 with the layout and 8 without.
    assert steered >= 12 and steered >= alone + 3, (steered, alone)
