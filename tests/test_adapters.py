"""LoRAs and references on tiny pipelines built from configs (no download): a LoRA changes the output and ``:0``
equals no LoRA; hot-swapping keeps the same modules and gives the pixels of a fresh load; text-encoder LoRA parts
apply to their job only; a tiny IP-Adapter makes ``--sref`` change the output and ``--sw 0`` equals no reference; the
shipped model takes references through its caption bank; FLUX.1 takes LoRAs and an IP-Adapter through diffusers'
Flux loaders; /shorten weighs the words of a prompt on the shipped model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from PIL import Image, ImageDraw

from shared.adapter_config import IpAdapterEntry, LoraEntry
from shared.jobs.spec import JobSpec, Reference
from shared.prompt.parser import parse
from shared.prompt.resolve import build_jobs
from shared.settings import Settings
from tests.conftest import SHIPPED_MODEL
from tests.test_safe_fetch import LocalServer, send, server  # noqa: F401 - the fixture
from tests.tiny_adapters import build_ip_adapter, build_lora
from worker import shorten
from worker.adapters import EngineAdapters, adapters_of
from worker.adapters.ip_adapter import IpAdapter, SlotInput
from worker.adapters.lora import LoraSlots
from worker.engine import Engine, Generation

PROMPT = "a very very beautiful photograph of a red circle, highly detailed, trending"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread while this module runs: on the shared 2-core machine a second OpenMP thread made each tiny
    denoising step about 20x slower (spin-waits under load); the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapter_files(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three LoRAs for the tiny SD model (ranks 4 and 8, alpha != rank; ``te`` with a text-encoder part) and a tiny
    IP-Adapter with its image encoder."""
    folder = tmp_path_factory.mktemp("adapters")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model)
    ip_weights, ip_encoder = build_ip_adapter(pipe, folder / "ip")
    return {
        "ink": build_lora(pipe, folder / "ink.safetensors", rank=4, alpha=8, seed=1),
        "paper": build_lora(pipe, folder / "paper.safetensors", rank=8, alpha=4, seed=2, targets=("to_q", "to_v")),
        "te": build_lora(pipe, folder / "te.safetensors", rank=4, alpha=4, seed=3, text_encoder=True),
        "ip": ip_weights,
        "ip_encoder": ip_encoder,
    }


def lora_settings(settings: Settings, files: dict[str, Path], **update: Any) -> Settings:
    loras = {name: {"file": str(files[name]), "families": ["sd"]} for name in ("ink", "paper", "te")}
    return settings.model_copy(update={"loras": Settings(loras=loras).loras, "lora_max_per_job": 2, **update})


def spec(seed: int = 3, **changes: Any) -> JobSpec:
    return JobSpec.for_prompt("a red circle", seed=seed, width=32, height=32, steps=3).replace(**changes)


def pixels(generation: Generation) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in generation.images])


def run(engine: Engine, adapters: EngineAdapters, job: JobSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """A job through the adapters and the engine, as ``worker.tasks.run_one`` runs it."""
    with adapters.prepare(job) as prepared:
        generation = engine.generate(prepared.spec, call_kwargs=prepared.call_kwargs)
    return pixels(generation), {**generation.notes, **prepared.notes}


def module_ids(module: torch.nn.Module) -> dict[str, int]:
    return {name: id(child) for name, child in module.named_modules()} | {
        name: id(param) for name, param in module.named_parameters()
    }


def test_loras_change_the_output_hot_swap_in_place_and_match_a_fresh_load(
    tiny_model: Path, settings: Settings, adapter_files: dict[str, Path]
) -> None:
    config = lora_settings(settings, adapter_files)
    engine = Engine.load(str(tiny_model), "cpu", "float32")
    adapters = adapters_of(engine, config)
    base, _ = run(engine, adapters, spec())
    ink, notes = run(engine, adapters, spec(loras=(("ink", 1.0),)))
    assert np.abs(ink - base).max() > 10 and notes["hot_swapped"] == ["ink"]
    zero, _ = run(engine, adapters, spec(loras=(("ink", 0.0),)))
    assert np.array_equal(zero, base)  # --lora ink:0 is exactly no LoRA
    none, _ = run(engine, adapters, spec())
    assert np.array_equal(none, base)  # a job without LoRAs: every slot at weight 0
    unet = engine.pipes.text2img.unet
    before = module_ids(unet)
    paper, notes = run(engine, adapters, spec(loras=(("paper", 0.7),)))
    again, again_notes = run(engine, adapters, spec(loras=(("ink", 1.0),)))
    assert module_ids(unet) == before  # hot-swapped: the same modules and parameter tensors, nothing rebuilt
    assert notes["hot_swapped"] == ["paper"] and again_notes["hot_swapped"] == []  # ink kept its slot
    assert np.array_equal(again, ink)
    both, _ = run(engine, adapters, spec(loras=(("ink", 1.0), ("paper", 0.7))))
    assert not np.array_equal(both, ink) and not np.array_equal(both, paper)
    assert adapters.loras is not None and adapters.loras.files.reads == 3  # each file read once (the LRU)

    def fresh(name: str, weight: float) -> np.ndarray:
        alone = Engine.load(str(tiny_model), "cpu", "float32")
        alone.pipes.text2img.load_lora_weights(str(adapter_files[name]), adapter_name="fresh")
        alone.pipes.text2img.set_adapters(["fresh"], [weight])
        return pixels(alone.generate(spec()))

    assert np.abs(ink - fresh("ink", 1.0)).max() <= 1
    assert np.abs(paper - fresh("paper", 0.7)).max() <= 1


def test_a_text_encoder_lora_applies_to_its_job_only(
    tiny_model: Path, settings: Settings, adapter_files: dict[str, Path]
) -> None:
    engine = Engine.load(str(tiny_model), "cpu", "float32")
    adapters = adapters_of(engine, lora_settings(settings, adapter_files))
    encoder = engine.pipes.text2img.text_encoder
    weights = {name: param.detach().clone() for name, param in encoder.named_parameters()}
    base, _ = run(engine, adapters, spec())
    misses = engine.text.cache_info().misses
    with_te, notes = run(engine, adapters, spec(loras=(("te", 1.0),)))
    assert notes["text_encoder_loras"] == ["te"] and engine.text.cache_info().misses > misses
    assert np.abs(with_te - base).max() > 10
    assert all(torch.equal(param, weights[name]) for name, param in encoder.named_parameters())
    assert engine.text.model_key == str(tiny_model)
    after, after_notes = run(engine, adapters, spec())
    assert np.array_equal(after, base) and after_notes["text_cache_hit"]  # the plain encoding was kept
    again, again_notes = run(engine, adapters, spec(loras=(("te", 1.0),)))
    assert np.array_equal(again, with_te) and again_notes["text_cache_hit"]  # cached under the LoRA's own key


def reference_png(colour: tuple[int, int, int], shape: str = "circle") -> bytes:
    """A shape on a light background, as the shipped model's data draws them (64 px)."""
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)((18, 18, 46, 46), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_tiny_ip_adapter_makes_sref_change_the_output_and_sw_0_equals_no_reference(
    tiny_model: Path,
    settings: Settings,
    adapter_files: dict[str, Path],
    server: LocalServer,  # noqa: F811
) -> None:
    for name, colour in (("/red.png", (220, 30, 30)), ("/blue.png", (30, 30, 220)), ("/green.png", (30, 200, 30))):
        server.routes[name] = lambda handler, colour=colour: send(handler, reference_png(colour))
    red, blue, green = server.url("/red.png"), server.url("/blue.png"), server.url("/green.png")
    plain_engine = Engine.load(str(tiny_model), "cpu", "float32")
    plain = pixels(plain_engine.generate(spec()))
    config = settings.model_copy(
        update={
            "unsafe_test_only_allow_http_loopback": True,
            "ip_adapters": Settings(
                ip_adapters={
                    str(tiny_model): {
                        "file": str(adapter_files["ip"]),
                        "image_encoder": str(adapter_files["ip_encoder"]),
                        "style_blocks": {"up": {"block_1": [0.0, 1.0]}},
                    }
                }
            ).ip_adapters,
        }
    )
    engine = Engine.load(str(tiny_model), "cpu", "float32")
    adapters = adapters_of(engine, config)
    assert adapters.ip_adapter is not None and engine.layout_strength == 0.0
    base, _ = run(engine, adapters, spec())
    assert np.array_equal(base, plain)  # with the IP-Adapter loaded, a job without references is unchanged
    style, notes = run(engine, adapters, spec(references=(Reference("style", (red,), 0.6, "", "all"),)))
    assert np.abs(style - base).max() > 10
    assert notes["references"] == [{"kind": "style", "scale": 0.6, "blocks": "all", "images": 1}]
    off, _ = run(engine, adapters, spec(references=(Reference("style", (red,), 0.0, "", "all"),)))
    assert np.array_equal(off, base)  # --sw 0: no influence at all
    other, _ = run(engine, adapters, spec(references=(Reference("style", (blue,), 0.6, "", "all"),)))
    assert np.abs(other - style).max() > 5  # another image, another result
    style_blocks, notes = run(engine, adapters, spec(references=(Reference("style", (red,), 0.6, "", "style"),)))
    assert not np.array_equal(style_blocks, style)  # the style blocks only
    assert adapters.ip_adapter.set_scales({"style": SlotInput(torch.zeros(1, 16), 0.5, "style")})[0] == {
        "up": {"block_1": [0.0, 0.5]}
    }
    blend, notes = run(engine, adapters, spec(references=(Reference("blend", (red, blue, green), 1.0),)))
    assert np.abs(blend - base).max() > 10 and notes["references"][0]["images"] == 3
    code, _ = run(engine, adapters, spec(references=(Reference("style", (), 0.6, "1234", "all"),)))
    code_again, _ = run(engine, adapters, spec(references=(Reference("style", (), 0.6, "1234", "all"),)))
    assert np.array_equal(code, code_again) and np.abs(code - base).max() > 5  # a style code is reproducible
    variation = spec(references=(Reference("style", (red,), 0.6, "", "all"),)).replace(
        kind=spec().kind.VARIATION, strength=0.7
    )
    with adapters.prepare(variation) as prepared:
        source = Image.fromarray(style[0].astype(np.uint8))
        varied = engine.generate(prepared.spec, source=source, call_kwargs=prepared.call_kwargs)
    assert len(varied.images) == 4  # the image-to-image sibling takes references too
    assert server.requests.count("/red.png") >= 4  # fetched through the safe fetch each time
    # From the prompt language: --sref with its default weight changes the grid, --sw 0 is the plain prompt.
    prompts = {
        text: build_jobs(parse(text), settings=config, owner="1")[0]
        for text in ("a fox --seed 8", f"a fox --seed 8 --sref {red}", f"a fox --seed 8 --sref {red} --sw 0")
    }
    plain_fox, with_sref, sw_zero = (run(engine, adapters, job)[0] for job in prompts.values())
    assert np.abs(with_sref - plain_fox).max() > 10 and np.array_equal(sw_zero, plain_fox)


def test_the_shipped_model_takes_references_through_its_caption_bank(
    settings: Settings,
    server: LocalServer,  # noqa: F811
) -> None:
    server.routes["/red.png"] = lambda handler: send(handler, reference_png((220, 30, 30)))
    config = settings.model_copy(update={"model": str(SHIPPED_MODEL), "unsafe_test_only_allow_http_loopback": True})
    engine = Engine.load(str(SHIPPED_MODEL), "cpu", "float32")
    adapters = adapters_of(engine, config)
    job = JobSpec.for_prompt("a shape", seed=5, width=64, height=64, steps=8, guidance=1.5)
    base, _ = run(engine, adapters, job)
    style, notes = run(engine, adapters, job.replace(references=(Reference("style", (server.url("/red.png"),), 0.6),)))
    captions = [caption for caption, _ in notes["reference_captions"]]
    assert captions and all("red circle" in caption for caption in captions), captions
    assert np.abs(style - base).max() > 10
    off, _ = run(engine, adapters, job.replace(references=(Reference("style", (server.url("/red.png"),), 0.0),)))
    assert np.array_equal(off, base)
    # /shorten on the shipped model: the words that carry weight rank above the filler.
    result = shorten.run(engine, JobSpec.for_prompt(PROMPT, seed=0, width=64, height=64, steps=1))
    weights = dict(result.notes["word_weights"])
    assert min(weights["red"], weights["circle,"]) > max(weights["very"], weights["trending"]), weights
    marked = dict(result.notes["marked"])
    assert marked["red"] == "bold" and marked["very"] == "strike"
    options = result.notes["shortened"]
    assert 1 <= len(options) <= 5 and all("red circle" in option for option in options[:3]), options
    assert result.images[0].width == shorten.CHART_WIDTH


def test_flux_takes_loras_and_an_ip_adapter_through_its_loaders(tmp_path: Path) -> None:
    from tests.tiny_families import build_tiny_flux

    folder = build_tiny_flux(tmp_path / "flux")
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    files = {
        "a": build_lora(pipe, tmp_path / "a.safetensors", seed=1),
        "b": build_lora(pipe, tmp_path / "b.safetensors", seed=2, rank=8, alpha=4),
    }

    def image(target: Any, **kwargs: Any) -> np.ndarray:
        generator = torch.Generator().manual_seed(1)
        out = target("a red circle", num_inference_steps=2, generator=generator, height=32, width=32, **kwargs)
        return np.asarray(out.images[0], dtype=np.int16)

    base = image(pipe)
    slots = LoraSlots(
        pipe, {name: LoraEntry(file=str(path), families=("flux",)) for name, path in files.items()}, slots=2
    )
    slots.apply([("a", 1.0)])
    first = image(pipe)
    before = module_ids(pipe.transformer)
    slots.apply([("b", 1.0)])
    second = image(pipe)
    assert module_ids(pipe.transformer) == before and np.abs(first - base).max() > 0
    fresh = DiffusionPipeline.from_pretrained(folder)
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(str(files["b"]), adapter_name="fresh")
    assert np.abs(second - image(fresh)).max() <= 1
    slots.apply([])
    assert np.array_equal(image(pipe), base)
    weights, encoder = build_ip_adapter(pipe, tmp_path / "ip")
    ip = IpAdapter(pipe, IpAdapterEntry(file=str(weights), image_encoder=str(encoder)))
    vector = ip.embed([Image.open(io.BytesIO(reference_png((220, 30, 30))))])
    with_reference = image(pipe, **ip.pipeline_kwargs({"style": SlotInput(vector * 10, 1.0)}, 1, False))
    without = image(pipe, **ip.pipeline_kwargs({"style": SlotInput(vector * 10, 0.0)}, 1, False))
    assert np.abs(with_reference - base).max() > 0 and np.array_equal(without, base)


def test_sdxl_takes_loras_and_an_ip_adapter_with_style_blocks(
    settings: Settings,
    tmp_path: Path,
    server: LocalServer,  # noqa: F811
) -> None:
    from diffusers import StableDiffusionXLPipeline

    from tests.tiny_models import build_tiny_sdxl

    folder = build_tiny_sdxl(tmp_path / "sdxl")
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    weights, encoder = build_ip_adapter(pipe, tmp_path / "ip")
    lora = build_lora(pipe, tmp_path / "xl.safetensors", seed=4, text_encoder=True)
    server.routes["/red.png"] = lambda handler: send(handler, reference_png((220, 30, 30)))
    config = settings.model_copy(
        update={
            "model": str(folder),
            "unsafe_test_only_allow_http_loopback": True,
            "loras": Settings(loras={"xl": {"file": str(lora), "families": ["sdxl"]}}).loras,
            "ip_adapters": Settings(
                ip_adapters={
                    str(folder): {
                        "file": str(weights),
                        "image_encoder": str(encoder),
                        "style_blocks": {"up": {"block_0": [0.0, 1.0]}},
                    }
                }
            ).ip_adapters,
        }
    )
    engine = Engine.load(str(folder), "cpu", "float32")
    adapters = adapters_of(engine, config)
    base, _ = run(engine, adapters, spec())
    with_lora, notes = run(engine, adapters, spec(loras=(("xl", 1.0),)))
    assert np.abs(with_lora - base).max() > 5 and notes["text_encoder_loras"] == ["xl"]
    red = server.url("/red.png")
    style, notes = run(engine, adapters, spec(references=(Reference("style", (red,), 0.8, "", "style"),)))
    assert np.abs(style - base).max() > 5 and notes["ip_adapter_scales"] == {"style": 0.8}
    off, _ = run(engine, adapters, spec(references=(Reference("style", (red,), 0.0, "", "style"),)))
    assert np.array_equal(off, base)
