"""The tiny pipelines of tests/tiny_families.py: each loads offline with ``DiffusionPipeline.from_pretrained``, runs
text-to-image deterministically at the asked size, encodes prompts to the shapes docs/notes-model-families.md gives,
and its img2img/inpaint siblings run through ``from_pipe`` (or fail as documented); SmolLM2 as a Z-Image text encoder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)

from tests.tiny_families import (
    FAMILIES,
    FLUX2_LATENT_CHANNELS,
    LATENT_CHANNELS,
    SMOLLM2_HIDDEN,
)

log = logging.getLogger(__name__)

PROMPT = "a red cat on a blue mat"
"""The prompt of every run."""

HEIGHT, WIDTH = 32, 48
"""Output size asked for: not square, to catch a swapped axis; multiples of 4 (vae_scale_factor 2 x patch 2)."""

PACKED = {"flux-dev", "flux-schnell", "flux2-klein", "qwenimage", "chroma"}
"""Families whose callback latents are packed 2x2 patches (B, seq, 4C); the others hand (B, C, h, w)."""

Loader = Callable[[str], Any]


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Loader:
    """Build a family into tmp, load it with ``DiffusionPipeline.from_pretrained`` (once per module), return it."""
    pipes: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in pipes:
            family = FAMILIES[name]
            folder = family.build(tmp_path_factory.mktemp(name) / name)
            pipe = DiffusionPipeline.from_pretrained(folder)
            pipe.set_progress_bar_config(disable=True)
            pipes[name] = pipe
        return pipes[name]

    return get


def _run(pipe: Any, name: str, seed: int = 0, **extra: Any) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """A 2-step text-to-image run; returns the images (B, H, W, 3) and the latent shapes seen by the step callback."""
    seen: list[tuple[int, ...]] = []

    def on_step(_pipe: Any, _step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        seen.append(tuple(kwargs["latents"].shape))
        return kwargs

    images = pipe(
        prompt=PROMPT,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        callback_on_step_end=on_step,
        **{**FAMILIES[name].call_kwargs, **extra},
    ).images
    return images, seen


@pytest.mark.parametrize("name", list(FAMILIES))
def test_text_to_image_size_determinism_and_latents(load: Loader, name: str) -> None:
    pipe = load(name)
    assert type(pipe) is FAMILIES[name].pipeline
    assert pipe.vae_scale_factor * 2 == FAMILIES[name].size_multiple
    first, seen = _run(pipe, name)
    again, _ = _run(pipe, name)
    other, _ = _run(pipe, name, seed=1)
    assert first.shape == (1, HEIGHT, WIDTH, 3)
    assert np.isfinite(first).all()
    assert np.array_equal(first, again), "the same seed must give the same pixels"
    assert not np.array_equal(first, other), "another seed must give other pixels"
    channels = FLUX2_LATENT_CHANNELS if name == "flux2-klein" else LATENT_CHANNELS
    h, w = HEIGHT // pipe.vae_scale_factor, WIDTH // pipe.vae_scale_factor
    expected = (1, (h // 2) * (w // 2), 4 * channels) if name in PACKED else (1, channels, h, w)
    assert seen == [expected, expected]


def _shapes(value: Any) -> Any:
    """Tensor shapes (lists kept as lists, None kept) of what ``encode_prompt`` returned."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, list | tuple):
        return [_shapes(item) for item in value]
    return value


def test_flux_encode_prompt(load: Loader) -> None:
    for name in ("flux-dev", "flux-schnell"):
        pipe = load(name)
        embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None)
        # T5 padded to max_sequence_length 512 (no mask), CLIP pooler_output, all-zero text ids.
        assert _shapes([embeds, pooled, text_ids]) == [(1, 512, 32), (1, 32), (512, 3)]
        assert not text_ids.any()
        assert _shapes(pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=64)) == [
            (1, 64, 32),
            (1, 32),
            (64, 3),
        ]
    assert load("flux-dev").transformer.config.guidance_embeds
    assert not load("flux-schnell").transformer.config.guidance_embeds


def test_flux2_klein_encode_prompt_stacks_layers_9_18_27(load: Loader) -> None:
    pipe = load("flux2-klein")
    embeds, text_ids = pipe.encode_prompt(PROMPT)
    assert _shapes([embeds, text_ids]) == [(1, 512, 48), (1, 512, 4)]
    assert text_ids.dtype == torch.int64
    assert torch.equal(text_ids[0, :, 3], torch.arange(512)), "the 4th coordinate of text ids is the token position"
    text = pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    tokens = pipe.tokenizer(text, return_tensors="pt", padding="max_length", max_length=512)
    with torch.no_grad():
        hidden = pipe.text_encoder(**tokens, output_hidden_states=True).hidden_states
    assert torch.allclose(embeds, torch.cat([hidden[9], hidden[18], hidden[27]], dim=-1), atol=1e-6)


def test_sd3_encode_prompt(load: Loader) -> None:
    pipe = load("sd3")
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, None, None)
    # CLIP-L and CLIP-G penultimate states side by side (32 + 32), zero-padded to T5's 96, then 77 + 256 tokens.
    assert _shapes([embeds, negative, pooled, negative_pooled]) == [(1, 333, 96), (1, 333, 96), (1, 64), (1, 64)]
    assert not embeds[:, :77, 64:].any()
    assert embeds[:, 77:].abs().sum() > 0


def test_qwenimage_encode_prompt_drops_the_template(load: Loader) -> None:
    pipe = load("qwenimage")
    template = pipe.prompt_template_encode
    prefix = template.split("{}")[0]
    assert len(pipe.tokenizer(prefix).input_ids) == pipe.prompt_template_encode_start_idx == 34
    count = len(pipe.tokenizer(template.format(PROMPT)).input_ids) - 34
    embeds, mask = pipe.encode_prompt(PROMPT)
    assert _shapes([embeds, mask]) == [(1, count, 16), None], "one prompt: no padding, so no mask"
    short = len(pipe.tokenizer(template.format("cat")).input_ids) - 34
    embeds, mask = pipe.encode_prompt([PROMPT, "cat"])
    assert _shapes([embeds, mask]) == [(2, count, 16), (2, count)]
    assert mask.sum(dim=1).tolist() == [count, short]
    assert not embeds[1, short:].any(), "padding rows are zeros"


def test_zimage_encode_prompt_is_a_list_of_unpadded_states(load: Loader) -> None:
    pipe = load("zimage")

    def count(text: str) -> int:
        messages = [{"role": "user", "content": text}]
        rendered = pipe.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        assert "<think>" not in rendered, "Z-Image keeps thinking on: no empty think block"
        return len(pipe.tokenizer(rendered).input_ids)

    positive, negative = pipe.encode_prompt(PROMPT)
    assert _shapes([positive, negative]) == [[(count(PROMPT), 16)], [(count(""), 16)]]
    positive, negative = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert _shapes([positive, negative]) == [[(count(PROMPT), 16)], []]


def test_chroma_encode_prompt_keeps_one_pad_token(load: Loader) -> None:
    pipe = load("chroma")
    embeds, text_ids, mask, negative, negative_ids, negative_mask = pipe.encode_prompt(PROMPT)
    assert _shapes([embeds, text_ids, mask, negative, negative_ids, negative_mask]) == [
        (1, 512, 32),
        (512, 3),
        (1, 512),
        (1, 512, 32),
        (512, 3),
        (1, 512),
    ]
    tokens = len(pipe.tokenizer(PROMPT).input_ids)  # words and </s>
    assert mask.dtype == torch.float32
    assert mask.sum().item() == tokens + 1 and negative_mask.sum().item() == 2


def test_chroma_float_mask_does_not_mask_padding(load: Loader) -> None:
    """ChromaPipeline hands the transformer a 0/1 float mask, which SDPA adds to the logits instead of masking
    (diffusers issue 13619): changing the text states under the mask changes the output. A bool mask masks."""
    pipe = load("chroma")
    embeds, text_ids, mask, *_ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=32)
    changed = embeds.clone()
    changed[0, ~mask[0].bool()] = torch.randn(int((~mask[0].bool()).sum()), embeds.shape[-1]) * 5
    latents = torch.randn(1, 64, 4 * LATENT_CHANNELS, generator=torch.Generator().manual_seed(0))
    image_ids = pipe._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)

    def denoise(states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return pipe.transformer(
                hidden_states=latents,
                timestep=torch.tensor([0.5]),
                encoder_hidden_states=states,
                txt_ids=text_ids,
                img_ids=image_ids,
                attention_mask=pipe._prepare_attention_mask(1, 64, states.dtype, text_mask),
                return_dict=False,
            )[0]

    assert not torch.equal(denoise(embeds, mask), denoise(changed, mask))
    assert torch.equal(denoise(embeds, mask.bool()), denoise(changed, mask.bool()))


SIBLINGS: list[tuple[str, str, tuple[type[Exception], str] | None]] = [
    *[
        (name, sibling, None)
        for name, family in FAMILIES.items()
        for sibling in family.siblings
        if sibling != "ChromaInpaintPipeline"
    ],
    *[(name, "AutoPipelineForImage2Image", None) for name in ("flux-dev", "flux2-klein", "sd3", "qwenimage", "zimage")],
    *[(name, "AutoPipelineForInpainting", None) for name in ("flux-dev", "sd3", "qwenimage", "zimage")],
    ("flux2-klein", "AutoPipelineForInpainting", (ValueError, "can't find a pipeline linked to Flux2KleinPipeline")),
    ("chroma", "AutoPipelineForImage2Image", (ValueError, "can't find a pipeline linked to ChromaPipeline")),
    ("chroma", "AutoPipelineForInpainting", (ValueError, "can't find a pipeline linked to ChromaPipeline")),
    ("chroma", "ChromaInpaintPipeline", (AttributeError, "guidance_embeds")),
]
"""(family, img2img/inpaint class, expected failure or None): what ``from_pipe`` gives and whether a run works."""

AUTO = {
    "AutoPipelineForImage2Image": AutoPipelineForImage2Image,
    "AutoPipelineForInpainting": AutoPipelineForInpainting,
    "AutoPipelineForText2Image": AutoPipelineForText2Image,
}
"""The Auto classes by name."""


@pytest.mark.parametrize(("name", "target", "failure"), SIBLINGS, ids=[f"{n}-{t}" for n, t, _ in SIBLINGS])
def test_sibling_from_pipe(load: Loader, name: str, target: str, failure: tuple[type[Exception], str] | None) -> None:
    pipe = load(name)
    cls = AUTO.get(target) or getattr(diffusers, target)
    rng = np.random.default_rng(0)
    # FLUX.2's image processor refuses references under 64 px.
    side = 64 if name == "flux2-klein" else 32
    image = PIL.Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    mask = PIL.Image.fromarray(np.pad(np.full((side // 2, side // 2), 255, np.uint8), side // 4))

    def run() -> np.ndarray:
        sibling = cls.from_pipe(pipe)
        sibling.set_progress_bar_config(disable=True)
        kwargs: dict[str, Any] = {"image": image, **FAMILIES[name].call_kwargs}
        if "Inpaint" in type(sibling).__name__:
            kwargs["mask_image"] = mask
        if type(sibling) is not FAMILIES[name].pipeline:
            kwargs["strength"] = 0.5  # 4 steps x 0.5: 2 denoising steps
        return sibling(
            prompt=PROMPT,
            height=side,
            width=side,
            num_inference_steps=4 if "strength" in kwargs else 2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            **kwargs,
        ).images

    if failure is not None:
        with pytest.raises(failure[0], match=re.escape(failure[1])):
            run()
        return
    images = run()
    assert images.shape == (1, side, side, 3)
    assert np.isfinite(images).all()


def test_every_family_is_in_the_text_to_image_auto_map(load: Loader) -> None:
    for name, family in FAMILIES.items():
        assert type(AutoPipelineForText2Image.from_pipe(load(name))) is family.pipeline


# --- SmolLM2-135M-Instruct (real weights) as a Z-Image text encoder ---------------------------------------------------

SMOLLM_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
"""The system message SmolLM2's chat template adds when the messages have none."""


def test_smollm_chat_template_renders_a_user_message(zimage_smollm: Any) -> None:
    rendered = zimage_smollm.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert rendered == f"{SMOLLM_SYSTEM}<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"


def test_smollm_offsets_map_back_to_the_words(zimage_smollm: Any) -> None:
    tokenizer = zimage_smollm.tokenizer
    text = "a red cat on a blue mat, photorealistic"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
    start = rendered.index(text)
    encoded = tokenizer(rendered, return_offsets_mapping=True)
    spans = []
    for first, last in encoded["offset_mapping"]:
        # Byte-level BPE offsets include the leading space of "Ġred"; drop it.
        lead = len(rendered[first:last]) - len(rendered[first:last].lstrip())
        spans.append((first + lead - start, last - start))
    for word in re.finditer(r"\w+", text):
        inside = [(s, e) for s, e in spans if s < word.end() and e > word.start()]
        assert all(word.start() <= s and e <= word.end() for s, e in inside), f"a token crosses {word.group()!r}"
        assert "".join(text[s:e] for s, e in inside) == word.group()
    words = [text[s:e] for s, e in spans if s >= 0 and e <= len(text) and text[s:e].strip()]
    assert words[:7] == ["a", "red", "cat", "on", "a", "blue", "mat"]


def test_zimage_smollm_encode_prompt_is_llama_hidden_states_minus_2(zimage_smollm: Any) -> None:
    pipe = zimage_smollm
    assert type(pipe.text_encoder) is transformers.LlamaModel

    def ids(text: str) -> torch.Tensor:
        rendered = pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        return pipe.tokenizer(rendered, return_tensors="pt").input_ids

    positive, negative = pipe.encode_prompt(PROMPT, max_sequence_length=64)
    assert _shapes([positive, negative]) == [
        [(ids(PROMPT).shape[1], SMOLLM2_HIDDEN)],
        [(ids("").shape[1], SMOLLM2_HIDDEN)],
    ]
    with torch.no_grad():
        direct = pipe.text_encoder(input_ids=ids(PROMPT), output_hidden_states=True).hidden_states[-2][0]
    # The pipeline pads to max_sequence_length with a mask; right padding leaves a causal model's states unchanged.
    assert torch.allclose(positive[0], direct, atol=1e-4)


def test_zimage_smollm_runs(zimage_smollm: Any) -> None:
    def run() -> np.ndarray:
        return zimage_smollm(
            prompt=PROMPT,
            height=HEIGHT,
            width=WIDTH,
            num_inference_steps=2,
            guidance_scale=0.0,
            max_sequence_length=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images

    first = run()
    assert first.shape == (1, HEIGHT, WIDTH, 3)
    assert np.array_equal(first, run())
