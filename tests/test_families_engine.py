"""The engine on every model family: a matrix of real runs through ``Engine.load(<saved folder>)`` (the path
``MODEL=<folder>`` takes) on tiny pipelines built from configs (``tests/tiny_families.py``, ``tests/tiny_models.py``).

Cells per family: a grid of 4 whose seeds reproduce the same pixels (alone and in the grid); ``--ar 2:1``; ``::``
weights; ``--no`` applied or reported; a 300-word prompt (CLIP: 77-token windows; T5/LLMs: cut at the family's
limit and reported); V1, Upscale (Creative) and a pan (the kept region kept in latent space); batched equals alone.
2 denoising steps, 32 px images and text sequences cut at ``FAMILY_TEXT_LENGTH`` tokens (``tests/conftest.py``,
through ``Engine.load(text_max_length=)``; the T5/LLM pipelines pad to 512 otherwise, which triples the tiny
transformers' work) keep every cell short. The pipelines' own limits are exercised by ``tests/test_families_cli.py``
through ``MODEL=<folder>``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from shared.discord_wire.results import result_message
from shared.families import ALL_CAPABILITIES, Capabilities
from shared.jobs import mask as masks
from shared.jobs.followups import inpaint_spec, pan_spec, upscale_spec, variation_spec
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobKind, JobSpec
from shared.model_info import model_family, native_resolution, size_multiple
from shared.prompt.parser import parse
from shared.prompt.resolve import image_size
from worker.engine import Engine, Generation
from worker.engine.families import FAMILIES as ENGINE_FAMILIES
from worker.upscaler import LanczosUpscaler

pytestmark = pytest.mark.usefixtures("single_thread")

MATRIX = ("sd", "sdxl", "flux-dev", "flux-schnell", "flux2-klein", "sd3", "qwenimage", "zimage", "chroma")
"""The families of the matrix (issue 16's done-when list), by ``shared.families`` name."""

NEGATIVE_IGNORED = ("flux2-klein-distilled", "zimage")
"""Families that cannot take ``--no`` (step- or guidance-distilled without a negative pass): reported, not applied."""

SIZE = 32
"""Width and height of the matrix's square images (a multiple of every tiny family's size multiple, 4)."""

STEPS = 2


@pytest.fixture
def engines(family_engine: Callable[[str], Engine]) -> Callable[[str], Engine]:
    """``engines(name)``: the family's tiny pipeline loaded from its saved folder (``tests/conftest.py``)."""
    return family_engine


def grid_spec(prompt: str = "a red cat on a blue mat", *, seed: int = 7, images: int = 4, **fields: Any) -> JobSpec:
    return JobSpec.for_prompt(prompt, seed=seed, width=SIZE, height=SIZE, steps=STEPS, images=images, **fields)


def from_text(text: str, **fields: Any) -> JobSpec:
    """A spec whose parts and ``--no`` come from the prompt parser, as the intake makes them."""
    prompt = parse(text)[0]
    spec = grid_spec(prompt.parts[0][0], **fields)
    return spec.replace(parts=prompt.parts, negative=prompt.negative, prompt=prompt.to_text())


def pixels(generation: Generation) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in generation.images])


def test_every_matrix_family_is_detected_from_its_saved_folder(engines: Callable[[str], Engine]) -> None:
    for name in MATRIX:
        engine = engines(name)
        assert engine.family.name == name
        assert model_family(engine.model_ref) is not None and model_family(engine.model_ref).name == name  # type: ignore[union-attr]
        assert engine.describe()["capabilities"] == ENGINE_FAMILIES[name].capabilities.to_dict()


@pytest.mark.parametrize("name", MATRIX)
def test_grid_of_four_seeds_reproduce_alone_and_again(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    spec = grid_spec()
    seen: list[tuple[int, ...]] = []

    def progress(done: int, total: int, latents: torch.Tensor | None) -> None:
        assert latents is not None
        seen.append(tuple(latents.shape))

    grid = engine.generate(spec, on_progress=progress)
    assert [image.size for image in grid.images] == [(SIZE, SIZE)] * 4
    assert grid.seeds == spec.seeds and grid.notes["steps_run"] == STEPS
    # progress previews get unpacked latents (4, C, h, w) whatever the family's loop layout
    channels, height, width = engine.latent_shape(SIZE, SIZE)
    assert seen == [(4, channels, height, width)] * STEPS
    again = engine.generate(spec)
    assert np.array_equal(pixels(grid), pixels(again))
    alone = engine.generate(spec.replace(seeds=spec.seeds[2:3]))
    assert np.abs(pixels(alone)[0] - pixels(grid)[2]).max() <= 1, "image 3 alone differs from image 3 of its grid"
    assert np.abs(pixels(grid)[0] - pixels(grid)[1]).max() > 10  # different seeds, different images


@pytest.mark.parametrize("name", MATRIX)
def test_aspect_ratio_2_to_1(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    multiple = size_multiple(engine.model_ref)
    width, height = image_size((2, 1), SIZE, multiple)
    assert width == 2 * height and width % multiple == 0
    result = engine.generate(grid_spec(images=1).replace(width=width, height=height))
    assert result.images[0].size == (width, height)


@pytest.mark.parametrize("name", MATRIX)
def test_weighted_parts(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    weighted = engine.generate(from_text("a red cat::2 a blue dog::1", images=1))
    plain = engine.generate(from_text("a red cat", images=1))
    other = engine.generate(from_text("a red cat::1 a blue dog::2", images=1))
    assert len(weighted.notes["tokens"]) == 3  # two parts and the (empty) negative
    assert np.abs(pixels(weighted) - pixels(plain)).max() > 0
    assert np.abs(pixels(weighted) - pixels(other)).max() > 0  # the weights themselves matter


@pytest.mark.parametrize("name", (*MATRIX, "flux2-klein-distilled"))
def test_negative_prompt_applied_or_reported(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    plain = engine.generate(from_text("a red cat", images=1))
    negative = engine.generate(from_text("a red cat --no blur", images=1))
    record = JobRecord(job_id="n", spec=from_text("a red cat --no blur"), engine=engine.describe())
    line, _ = result_message(record.spec, negative.notes, (SIZE, SIZE), record.engine)
    if name in NEGATIVE_IGNORED:
        assert negative.notes["ignored"] == ["--no"] and negative.notes["negative"] == "off"
        assert np.array_equal(pixels(negative), pixels(plain))
        assert "--no ignored" in line
    else:
        assert "ignored" not in negative.notes and negative.notes["negative"] in ("cfg", "true_cfg")
        assert np.abs(pixels(negative) - pixels(plain)).max() > 0
        assert "ignored" not in line


LONG_PROMPT = " ".join(["a small red circle above a large blue square with soft shadows"] * 25)
"""300 words."""


@pytest.mark.parametrize("name", MATRIX)
def test_300_word_prompt(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    assert len(LONG_PROMPT.split()) == 300
    result = engine.generate(grid_spec(LONG_PROMPT, images=1))
    report = result.notes["tokens"][0]
    record = JobRecord(job_id="l", spec=grid_spec(LONG_PROMPT), engine=engine.describe())
    line, _ = result_message(record.spec, result.notes, (SIZE, SIZE), record.engine)
    if name in ("sd", "sdxl"):  # CLIP: the prompt is encoded in 77-token windows, nothing cut
        assert report["chunks"] > 1 and not report["truncated"] and "truncated" not in result.notes
        assert "Prompt cut" not in line
    else:  # T5 / LLM: one window up to the pipeline's limit; the rest is cut and the member told
        assert report["truncated"] and report["dropped"] > 0 and result.notes["truncated"] is True
        assert "Prompt cut" in line


@pytest.mark.parametrize("name", MATRIX)
def test_variation_creative_upscale_and_pan(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    grid = grid_spec(job_id="matrixgrid")
    source = engine.generate(grid.replace(seeds=grid.seeds[:1])).images[0]
    record = JobRecord(job_id=grid.job_id, spec=grid, engine=engine.describe())
    capabilities = ENGINE_FAMILIES[name].capabilities
    _, buttons = result_message(grid, {}, (SIZE, SIZE), record.engine)
    labels = [item.get("label") for row in buttons for item in row["components"]]
    assert ("V1" in labels) == capabilities.variations

    varied = engine.generate(variation_spec(record, 0, "7", rng=random.Random(1)), source=source)
    assert [image.size for image in varied.images] == [(SIZE, SIZE)] * 4

    upscale = upscale_spec(record, 0, "7", "creative")
    creative = engine.generate(upscale, source=source, upscaler=LanczosUpscaler(2))
    assert creative.images[0].size == (2 * SIZE, 2 * SIZE) and creative.notes["mode"] == "creative"
    assert "creative_denoise_s" in creative.timings

    upscaled = JobRecord(job_id=upscale.job_id, spec=upscale, engine=engine.describe())
    pan = pan_spec(upscaled, 0, "7", "right", native=SIZE, multiple=size_multiple(engine.model_ref))
    steps: list[torch.Tensor] = []

    def progress(done: int, total: int, latents: torch.Tensor | None) -> None:
        assert latents is not None
        steps.append(latents)

    panned = engine.generate(pan, source=source, on_progress=progress)
    assert [image.size for image in panned.images] == [(pan.width, pan.height)] * 4
    # in latent space the kept region ends as the source's latents exactly; the rest is painted, per image
    _, known, keep = engine.prepare_outpaint(pan, source)
    final = steps[-1]
    kept = keep.bool().expand_as(final)
    assert torch.allclose(final[kept], known.expand_as(final)[kept], atol=1e-5)
    assert float((final - known).abs()[~kept].mean()) > 0.1
    assert not torch.equal(final[0][~kept[0]], final[1][~kept[1]])


@pytest.mark.parametrize("name", MATRIX)
def test_vary_region_keeps_the_unmasked_pixels(engines: Callable[[str], Engine], name: str) -> None:
    """Vary (Region) on every family: the image sibling with the kept latents outside the mask
    (``worker.engine.inpaint``), then the source's own pixels composited back outside it."""
    engine = engines(name)
    grid = grid_spec(job_id="regiongrid")
    source = engine.generate(grid.replace(seeds=grid.seeds[:1])).images[0]
    record = JobRecord(job_id=grid.job_id, spec=grid, engine=engine.describe())
    mask = Image.new("1", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=1)  # the middle 16x16 repainted
    spec = inpaint_spec(record, 0, "7", masks.encode(mask), rng=random.Random(3))
    result = engine.generate(spec.replace(seeds=spec.seeds[:2]), source=source)
    inside = np.asarray(mask, dtype=bool)
    original = np.asarray(source, dtype=np.int16)
    for image in result.images:
        painted = np.asarray(image, dtype=np.int16)
        assert np.array_equal(painted[~inside], original[~inside])
        assert np.abs(painted[inside] - original[inside]).max() > 0
    assert result.notes["inpaint"]["mask_coverage"] == pytest.approx(0.25)


@pytest.mark.parametrize("name", MATRIX)
def test_batched_equals_alone(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    specs = [
        grid_spec("a red cat", seed=3, images=2, guidance=4.0),
        grid_spec("two blue dogs on grass", seed=11, images=2, guidance=4.0, negative=("yellow",)),
        grid_spec("a star", seed=5, images=1, guidance=4.0, chaos=0.5, weird=0.3),
    ]
    if engine.batch_recipe is None:  # SDXL: its jobs run alone (no batch recipe)
        assert name == "sdxl"
        return
    batched = engine.generate_batch(specs)
    for index, (together, spec) in enumerate(zip(batched, specs, strict=True)):
        assert isinstance(together, Generation)
        alone = engine.generate(spec)
        difference = np.abs(pixels(together) - pixels(alone)).max()
        assert difference <= 2, f"job {index}: batched pixels differ from alone by up to {difference}"
        assert together.notes.get("ignored") == alone.notes.get("ignored")


@pytest.mark.parametrize("name", MATRIX)
def test_stop_decodes_the_clean_estimate_and_tile_is_applied_or_reported(
    engines: Callable[[str], Engine], name: str
) -> None:
    engine = engines(name)
    full = engine.generate(grid_spec(images=1).replace(steps=4))
    stopped = engine.generate(grid_spec(images=1).replace(steps=4, stop=50))
    assert stopped.notes["steps_run"] == 2 and stopped.notes["stopped_at_step"] == 2
    assert stopped.notes["stop_decoded"] == "x0 estimate"  # flow matching: sample - sigma * velocity
    assert np.abs(pixels(stopped) - pixels(full)).max() > 0
    tiled = engine.generate(grid_spec(images=1).replace(tile=True))
    if ENGINE_FAMILIES[name].capabilities.tile:
        assert "ignored" not in tiled.notes
    else:
        plain = engine.generate(grid_spec(images=1))
        assert tiled.notes["ignored"] == ["--tile"] and np.array_equal(pixels(tiled), pixels(plain))


@pytest.mark.parametrize("name", MATRIX)
def test_reroll_skips_the_text_encoder(engines: Callable[[str], Engine], name: str) -> None:
    engine = engines(name)
    pipe = engine.pipes.text2img
    encoders = [getattr(pipe, attr, None) for attr in ("text_encoder", "text_encoder_2", "text_encoder_3")]
    calls: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_: calls.append("encoder"))
        for module in encoders
        if isinstance(module, torch.nn.Module)
    ]
    try:
        first = engine.generate(from_text("a green owl at dusk --no rain", images=1, seed=21))
        assert calls, "the first grid of a new prompt runs the text encoder"
        calls.clear()
        reroll = engine.generate(from_text("a green owl at dusk --no rain", images=1, seed=22))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [] and reroll.notes["text_cache_hit"] is True
    assert first.seeds != reroll.seeds


def test_family_names_from_configs_and_the_refusal_line() -> None:
    from shared.families import UnknownFamily, capabilities_of, family_name

    assert family_name("FluxPipeline", {"guidance_embeds": True}) == "flux-dev"
    assert family_name("FluxPipeline", {"guidance_embeds": False}) == "flux-schnell"
    assert family_name("Flux2KleinPipeline", {}, {"is_distilled": True}) == "flux2-klein-distilled"
    assert family_name("Flux2KleinPipeline", {}, {"is_distilled": False}) == "flux2-klein"
    with pytest.raises(UnknownFamily, match=r"^pipeline SanaPipeline is not supported; supported: .*ChromaPipeline"):
        family_name("SanaPipeline")
    assert capabilities_of({"family": "chroma"}).tile is False
    assert capabilities_of({"capabilities": {"variations": False}}).variations is False
    assert capabilities_of(None) == ALL_CAPABILITIES


def test_pack_and_unpack_mirror_diffusers_own_helpers() -> None:
    """The families' ``pack``/``unpack`` (written after diffusers' private static helpers) equal those helpers."""
    from diffusers import ChromaPipeline, Flux2KleinPipeline, FluxPipeline, QwenImagePipeline

    latents = torch.randn(2, 16, 6, 10, generator=torch.Generator().manual_seed(0))  # (B, C, h, w)
    for name, pipeline in (("flux-dev", FluxPipeline), ("chroma", ChromaPipeline), ("qwenimage", QwenImagePipeline)):
        family = ENGINE_FAMILIES[name]
        packed = family.pack(latents)
        assert torch.equal(packed, pipeline._pack_latents(latents, 2, 16, 6, 10))
        # the pipelines' unpack takes pixel sizes: latent sizes x the VAE scale (8 on the released models)
        theirs = pipeline._unpack_latents(packed, 6 * 8, 10 * 8, 8).reshape(latents.shape)  # Qwen: (B, C, 1, h, w)
        assert torch.equal(family.unpack(packed, 6, 10), theirs) and torch.equal(family.unpack(packed, 6, 10), latents)
    klein = ENGINE_FAMILIES["flux2-klein"]
    patchified = torch.randn(2, 128, 3, 5, generator=torch.Generator().manual_seed(1))
    packed = klein.pack(patchified)
    assert torch.equal(packed, Flux2KleinPipeline._pack_latents(patchified))
    ids = Flux2KleinPipeline._prepare_latent_ids(patchified)
    assert torch.equal(klein.unpack(packed, 3, 5), Flux2KleinPipeline._unpack_latents_with_ids(packed, ids))


def test_buttons_follow_the_capabilities() -> None:
    grid = grid_spec(job_id="caps")
    none = Capabilities(variations=False, outpaint=False, inpaint=False, negative=False, tile=False, layout=False)
    _, every = result_message(grid, {}, (SIZE, SIZE), {"capabilities": ALL_CAPABILITIES.to_dict()})
    _, fewer = result_message(grid, {}, (SIZE, SIZE), {"capabilities": none.to_dict()})
    assert len(every) == 2 and len(fewer) == 1  # no V row
    upscale = grid.replace(kind=JobKind.UPSCALE, job_id="capsu")
    _, full = result_message(upscale, {}, (SIZE, 2 * SIZE), {"family": "flux-dev"})
    _, bare = result_message(upscale, {}, (SIZE, 2 * SIZE), {"capabilities": none.to_dict()})
    assert [len(row["components"]) for row in full] == [5, 4, 4]  # Vary (Region) and Make Square with inpaint+outpaint
    assert [[item["label"] for item in row["components"]] for row in bare] == [["Upscale (Subtle)"]]
    # an older record without family info keeps every button
    _, old = result_message(upscale, {}, (SIZE, 2 * SIZE), {})
    assert old == full


def test_sizes_of_transformer_folders_come_from_their_configs(engines: Callable[[str], Engine]) -> None:
    """``shared.model_info`` (no torch) agrees with the loaded pipelines on the size rules of each family."""
    for name in MATRIX[2:]:
        engine = engines(name)
        pipe = engine.pipes.text2img
        assert size_multiple(engine.model_ref) == engine.family.size_multiple(pipe)
        default = 1024 * pipe.vae_scale_factor // 8  # 128 latent pixels (SD3: its transformer's sample size 16)
        expected = 16 * pipe.vae_scale_factor if name == "sd3" else default
        assert native_resolution(engine.model_ref) == expected


def test_a_source_image_sized_off_the_grid_is_resized(engines: Callable[[str], Engine]) -> None:
    engine = engines("flux-dev")
    grid = grid_spec(job_id="odd")
    record = JobRecord(job_id=grid.job_id, spec=grid)
    varied = engine.generate(variation_spec(record, 0, "7"), source=Image.new("RGB", (50, 30), "red"))
    assert [image.size for image in varied.images] == [(SIZE, SIZE)] * 4
