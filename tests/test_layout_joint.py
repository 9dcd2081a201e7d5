"""The layout bias on joint attention (``worker.layout_joint``), measured on the tiny FLUX.1 dev, Chroma and FLUX.2
klein pipelines: an all-zero bias is exactly no bias, a bias changes the denoised latents, only the conditional
transformer calls are biased (FLUX.1's true CFG, Chroma's and klein base's CFG run separate negative calls), and the
families without a joint bias (SD3.5, Qwen-Image, Z-Image) run such prompts unbiased, saying so in their capabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from shared.families import family_info
from shared.jobs.spec import JobKind, JobSpec
from worker.engine import Engine
from worker.layout_attention import LayoutBias, RowLayout
from worker.layout_joint import JointLayout, JointLayoutProcessor

pytestmark = pytest.mark.usefixtures("single_thread")

JOINT = ("flux-dev", "chroma", "flux2-klein")
"""Families whose joint attention takes the layout bias."""

UNBIASED = ("sd3", "qwenimage", "zimage")
"""Transformer families without it (see worker/layout_joint.py for why)."""

PROMPT = "a red cat to the left of a blue dog"


@pytest.fixture
def engines(family_engine: Callable[[str], Engine]) -> Callable[[str], Engine]:
    return family_engine


def spec_of(text: str = PROMPT, **fields: object) -> JobSpec:
    return JobSpec.for_prompt(text, seed=5, width=32, height=32, steps=2, images=1, **fields)  # type: ignore[arg-type]


def denoised(engine: Engine, spec: JobSpec, layout: JointLayout | None) -> torch.Tensor:
    """The pipeline's final latents for ``spec`` with ``layout`` in its attention kwargs (None: without)."""
    cond = engine.encode_prompt(spec)
    kwargs, _ = engine.condition_images(spec, cond, 1)
    latents = engine.family.latents_argument(engine.prepare_latents(spec, engine.generators(spec.seeds)))
    extra = {engine.family.layout_kwarg: {"layout": layout}} if layout is not None else {}
    out = engine.pipes.text2img(
        **kwargs,
        **extra,
        latents=latents,
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.steps,
        generator=engine.generators(spec.seeds),
        output_type="latent",
    )
    return out.images


def joint_layout(engine: Engine, spec: JobSpec, row: RowLayout, strength: float) -> JointLayout:
    cond = engine.encode_prompt(spec)
    kwargs, _ = engine.condition_images(spec, cond, 1)
    height, width = engine.family.token_grid(engine.latent_shape(spec.width, spec.height))
    return JointLayout(LayoutBias((row,), height, width, strength), kwargs["prompt_embeds"])


@pytest.mark.parametrize("name", JOINT)
def test_zero_bias_is_no_bias_and_a_bias_changes_the_latents(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    assert engine.layout_strength > 0
    processors = engine.family.denoiser_of(engine.pipes.text2img).attn_processors.values()
    assert all(isinstance(processor, JointLayoutProcessor) for processor in processors)
    spec = spec_of()
    row, placed = engine.prepare_layout(spec)
    assert [item["phrase"] for item in placed] == ["a red cat", "a blue dog"]
    assert all(positions for _, positions in row)  # the token map found both phrases' tokens
    plain = denoised(engine, spec, None)
    zero_row: RowLayout = tuple((box, ()) for box, _ in row)  # the mask path with an all-zero bias
    zero = denoised(engine, spec, joint_layout(engine, spec, zero_row, 2.0))
    biased_layout = joint_layout(engine, spec, row, 2.0)
    biased = denoised(engine, spec, biased_layout)
    assert torch.allclose(zero, plain, atol=1e-6, rtol=0), float((zero - plain).abs().max())
    assert float((biased - plain).abs().mean()) > 1e-3
    assert biased_layout.biased_calls == spec.steps  # one conditional call per step


@pytest.mark.parametrize("name", JOINT)
def test_only_the_conditional_pass_is_biased(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    result = engine.generate(spec_of(negative=("blur",)))
    # two transformer calls per step (true CFG on FLUX.1 with --no, real CFG on Chroma and klein base)
    assert result.notes["layout_calls"] == {"biased": 2, "unbiased": 2}
    assert [item["phrase"] for item in result.notes["layout"]] == ["a red cat", "a blue dog"]


def test_flux_without_a_negative_biases_its_one_pass(engines: Callable[[str], Engine]) -> None:
    result = engines("flux-dev").generate(spec_of())
    assert result.notes["layout_calls"] == {"biased": 2, "unbiased": 0}


@pytest.mark.parametrize("name", UNBIASED)
def test_families_without_a_joint_bias_run_place_phrases_unbiased(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    assert engine.layout_strength == 0 and not family_info(name).capabilities.layout
    result = engine.generate(spec_of())
    assert "layout" not in result.notes and "layout_calls" not in result.notes


def test_klein_inpaint_sibling_leaves_its_reference_tokens_unbiased(engines: Callable[[str], Engine]) -> None:
    """FLUX.2 klein's variations run its inpaint pipeline, whose sequence is [text, image, reference image]: the bias
    covers the generated image's tokens only."""
    engine = engines("flux2-klein")
    grid = engine.generate(spec_of())
    varied = engine.generate(
        spec_of().replace(kind=JobKind.VARIATION, strength=0.7),
        source=grid.images[0],
    )
    assert varied.notes["layout_calls"]["biased"] >= 1 and len(varied.images) == 1
