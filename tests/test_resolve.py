"""``build_jobs``: the documented mapping of prompt parameters to job specs, and ``model_info`` on real configs."""

from __future__ import annotations

import json
import logging
import math
import random
import re
from pathlib import Path

import pytest

from shared import defaults
from shared.jobs.spec import Delivery, JobSpec
from shared.model_info import native_resolution, size_multiple, vae_scale
from shared.prompt.parser import PromptError, parse
from shared.prompt.resolve import build_jobs, guidance_for, image_size, steps_for, strength_for
from shared.settings import Settings

log = logging.getLogger(__name__)


def write_model(folder: Path, *, sample_size: object, down_blocks: int, vae_levels: int | None) -> Path:
    """A diffusers-layout folder with only the configs ``model_info`` reads (weights are irrelevant to sizing)."""
    (folder / "unet").mkdir(parents=True)
    unet = {"_class_name": "UNet2DModel", "sample_size": sample_size, "down_block_types": ["DownBlock2D"] * down_blocks}
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    if vae_levels is not None:
        (folder / "vae").mkdir()
        vae = {"_class_name": "AutoencoderKL", "block_out_channels": [8] * vae_levels}
        (folder / "vae" / "config.json").write_text(json.dumps(vae))
    return folder


@pytest.fixture
def pixel_model(tmp_path: Path) -> Path:
    """A pixel-space model like the shipped one: native 64 px, three UNet levels (size multiple 4)."""
    return write_model(tmp_path / "pixel", sample_size=64, down_blocks=3, vae_levels=None)


@pytest.fixture
def latent_model(tmp_path: Path) -> Path:
    """An SD-1.5-shaped latent model: UNet sample 64, VAE scale 8 (native 512), four UNet levels (multiple 64)."""
    return write_model(tmp_path / "latent", sample_size=64, down_blocks=4, vae_levels=4)


@pytest.fixture
def cfg(pixel_model: Path, latent_model: Path) -> Settings:
    settings = Settings(
        model=str(pixel_model), lanes=("turbo", "fast", "relax"), default_lane="fast", steps=20, guidance=7.5
    )
    # model_copy replaces the aliases; passing them to Settings() would deep-merge them with config/imagine.toml's.
    return settings.model_copy(update={"model_aliases": {"6": str(latent_model), "niji": str(pixel_model)}})


def jobs(text: str, settings: Settings, **kwargs: object) -> list[JobSpec]:
    return build_jobs(parse(text), settings=settings, owner="u1", rng=random.Random(0), **kwargs)  # type: ignore[arg-type]


def one_job(text: str, settings: Settings, **kwargs: object) -> JobSpec:
    specs = jobs(text, settings, **kwargs)
    assert len(specs) == 1
    return specs[0]


# --- model_info -----------------------------------------------------------------------------------------------------


def test_model_info_pixel_and_latent_models(pixel_model: Path, latent_model: Path) -> None:
    assert (native_resolution(str(pixel_model)), size_multiple(str(pixel_model)), vae_scale(str(pixel_model))) == (
        64,
        4,
        1,
    )
    assert (native_resolution(str(latent_model)), size_multiple(str(latent_model))) == (512, 64)


def test_model_info_defaults_for_ids_without_local_config(tmp_path: Path) -> None:
    assert native_resolution("runwayml/stable-diffusion-v1-5") == defaults.DEFAULT_NATIVE_RESOLUTION == 512
    assert native_resolution("stabilityai/stable-diffusion-XL-base-1.0") == defaults.DEFAULT_NATIVE_RESOLUTION_XL
    assert size_multiple("stabilityai/sdxl-turbo") == defaults.DEFAULT_SIZE_MULTIPLE == 64
    assert native_resolution(str(tmp_path / "missing")) == 512


def test_model_info_rectangular_sample_size_and_bad_configs(tmp_path: Path) -> None:
    rect = write_model(tmp_path / "rect", sample_size=[32, 128], down_blocks=2, vae_levels=2)
    assert native_resolution(str(rect)) == 64 * 2
    bad = write_model(tmp_path / "bad", sample_size="big", down_blocks=2, vae_levels=None)
    with pytest.raises(ValueError, match="sample_size must be a positive int or \\[h, w\\], got 'big'"):
        native_resolution(str(bad))
    broken = write_model(tmp_path / "broken", sample_size=8, down_blocks=2, vae_levels=None)
    (broken / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not readable JSON"):
        size_multiple(str(broken))


def test_model_info_agrees_with_diffusers_on_a_saved_pipeline(tiny_model: Path) -> None:
    """Cross-check against diffusers' own vae_scale_factor on the tiny SD pipeline saved by save_pretrained."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    assert native_resolution(str(tiny_model)) == pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    levels = len(pipe.unet.config.down_block_types)
    assert size_multiple(str(tiny_model)) == pipe.vae_scale_factor * 2 ** (levels - 1) == 4


# --- --ar -----------------------------------------------------------------------------------------------------------


def test_ar_2_1_is_exactly_twice_as_wide(cfg: Settings) -> None:
    spec = one_job("a cat --ar 2:1", cfg)
    assert spec.width == 2 * spec.height
    assert (spec.width, spec.height) == (88, 44)
    tall = one_job("a cat --ar 1:2", cfg)
    assert (tall.width, tall.height) == (44, 88)


def test_ar_uses_the_version_models_native_budget(cfg: Settings) -> None:
    square = one_job("a cat", cfg)
    assert (square.width, square.height) == (64, 64)
    latent = one_job("a cat --ar 2:1 --v 6", cfg)
    assert (latent.width, latent.height) == (768, 384)
    assert latent.width == 2 * latent.height


@pytest.mark.parametrize(("native", "multiple"), [(64, 4), (32, 4), (512, 8), (512, 64), (1024, 8), (1024, 64)])
def test_image_size_rule_over_every_small_ratio(native: int, multiple: int) -> None:
    budget = native * native
    for w in range(1, 17):
        for h in range(1, 17):
            if max(w, h) > defaults.MAX_ASPECT_RATIO * min(w, h):
                continue
            width, height = image_size((w, h), native, multiple)
            assert width % multiple == 0 and height % multiple == 0 and width >= multiple and height >= multiple
            g = math.gcd(w, h)
            a = native / (multiple * math.sqrt(w * h / g / g))
            exact = [
                (k * w // g * multiple, k * h // g * multiple) for k in {max(1, math.floor(a)), max(1, math.ceil(a))}
            ]
            near = [s for s in exact if abs(s[0] * s[1] / budget - 1) <= defaults.ASPECT_EXACT_AREA_TOLERANCE]
            if near:
                assert width * h == height * w, (w, h, width, height)
                assert abs(width * height / budget - 1) <= defaults.ASPECT_EXACT_AREA_TOLERANCE
            else:
                # Nearest multiples: each side within half a multiple of the ideal.
                assert abs(width - native * math.sqrt(w / h)) <= multiple / 2 + 1e-9 or width == multiple
                assert abs(height - native * math.sqrt(h / w)) <= multiple / 2 + 1e-9 or height == multiple
            if w == h:
                assert width == height


def test_image_size_falls_back_to_nearest_multiples_for_fine_ratios() -> None:
    assert image_size((16, 9), 64, 4) == (84, 48)
    assert image_size((2, 1), 64, 4) == (88, 44)
    assert image_size((32, 18), 64, 4) == image_size((16, 9), 64, 4)


# --- steps, guidance, strength --------------------------------------------------------------------------------------


def test_quality_scales_steps(cfg: Settings) -> None:
    assert one_job("a cat", cfg).steps == 20
    assert one_job("a cat --quality .5", cfg).steps == 10
    assert one_job("a cat --q .25", cfg).steps == 5
    assert one_job("a cat --q 2", cfg).steps == 40
    assert steps_for(0.25, 1) == 1
    assert steps_for(0.25, 10) == 3  # 2.5 rounds half up


def test_stylize_guidance_mapping_is_documented_and_monotone(cfg: Settings) -> None:
    assert guidance_for(0, None, 7.5) == 7.5 * defaults.STYLIZE_0_GUIDANCE_FACTOR == 3.0
    assert guidance_for(100, None, 7.5) == 7.5
    assert guidance_for(1000, None, 7.5) == 7.5 * defaults.STYLIZE_MAX_GUIDANCE_FACTOR == 15.0
    assert guidance_for(50, None, 7.5) == 5.25
    values = [guidance_for(s, None, 7.5) for s in range(0, 1001)]
    assert values == sorted(values)
    # the curve scales with the model's base guidance (the shipped model's is 2; 0.8 at stylize 0 is raised to 1)
    assert [guidance_for(s, None, 2.0) for s in (0, 100, 1000)] == [defaults.MIN_GUIDANCE, 2.0, 4.0]
    assert one_job("a cat --s 1000", cfg).guidance == 15.0
    assert one_job("a cat", cfg).guidance == cfg.guidance


def test_style_raw_lowers_guidance(cfg: Settings) -> None:
    plain = one_job("a cat --s 250", cfg)
    raw = one_job("a cat --s 250 --style raw", cfg)
    assert raw.guidance == round(plain.guidance * defaults.RAW_STYLE_GUIDANCE_FACTOR, 4) < plain.guidance
    assert guidance_for(0, "raw", 7.5) == 2.1
    assert guidance_for(0, "raw", 1.0) == defaults.MIN_GUIDANCE


def test_image_weight_maps_to_strength(cfg: Settings) -> None:
    assert [strength_for(iw, True) for iw in (0.0, 1.0, 2.0, 3.0)] == [1.0, 0.75, 0.5, 0.25]
    assert strength_for(2.0, False) == 1.0
    spec = one_job("https://x.io/a.png a cat --iw 2", cfg)
    assert (spec.image_urls, spec.strength, spec.extra["iw"]) == (("https://x.io/a.png",), 0.5, 2.0)
    assert one_job("a cat", cfg).strength == 1.0


def test_chaos_weird_tile_stop_no_and_parts(cfg: Settings) -> None:
    spec = one_job("castle::2 fog::-.5 --chaos 40 --weird 750 --tile --stop 80 --no birds, boats", cfg)
    assert (spec.chaos, spec.weird, spec.tile, spec.stop) == (0.4, 0.25, True, 80)
    assert spec.negative == ("birds", "boats")
    assert spec.parts == (("castle", 2.0), ("fog", -0.5))
    plain = one_job("a cat", cfg)
    assert (plain.chaos, plain.weird, plain.tile, plain.stop, plain.negative) == (0.0, 0.0, False, 100, ())


# --- seeds ----------------------------------------------------------------------------------------------------------


def test_seed_derives_one_seed_per_image(cfg: Settings) -> None:
    assert one_job("a cat --seed 123", cfg).seeds == (123, 124, 125, 126)
    assert one_job(f"a cat --seed {defaults.MAX_SEED}", cfg).seeds == (defaults.MAX_SEED, 0, 1, 2)


def test_random_seed_comes_from_rng(cfg: Settings) -> None:
    expected = random.Random(0).randint(0, defaults.MAX_SEED)
    spec = one_job("a cat", cfg)
    assert spec.seeds[0] == expected and spec.extra["seed"] == expected and spec.extra["seed_given"] is False
    other = build_jobs(parse("a cat"), settings=cfg, owner="u1", rng=random.Random(1))[0]
    assert other.seeds != spec.seeds


def test_repeat_makes_jobs_with_seeds_four_apart_and_fresh_ids(cfg: Settings) -> None:
    specs = jobs("a cat --seed 10 --r 3", cfg)
    assert [s.seeds[0] for s in specs] == [10, 14, 18]
    assert [s.extra["repeat_index"] for s in specs] == [0, 1, 2]
    assert len({s.job_id for s in specs}) == 3
    assert all(s.prompt == "a cat --seed 10 --repeat 3" for s in specs)
    unseeded = jobs("a cat --r 2", cfg)
    assert unseeded[1].seeds[0] == (unseeded[0].seeds[0] + 4) % (defaults.MAX_SEED + 1)


def test_permutations_times_repeat_and_the_job_cap(cfg: Settings) -> None:
    specs = jobs("a {red, blue} cat --r 2", cfg)
    assert [s.positive_prompt for s in specs] == ["a red cat", "a red cat", "a blue cat", "a blue cat"]
    assert len({s.job_id for s in specs}) == 4
    with pytest.raises(PromptError, match=r"makes 80 jobs .* at most 40 are allowed"):
        jobs("a {red, blue} cat --r 40", cfg)


# --- lanes and model aliases ----------------------------------------------------------------------------------------


def test_lanes(cfg: Settings) -> None:
    assert one_job("a cat", cfg).lane == "fast"
    assert one_job("a cat", cfg, lane="relax").lane == "relax"
    assert one_job("a cat --turbo", cfg, lane="relax").lane == "turbo"
    assert one_job("a cat --relax", cfg).lane == "relax"
    narrow = cfg.model_copy(update={"lanes": ("fast", "relax")})
    with pytest.raises(PromptError, match="--turbo is not available here; lanes served: fast, relax"):
        one_job("a cat --turbo", narrow)
    with pytest.raises(PromptError, match="lane 'turbo' \\(your default\\) is not served here"):
        one_job("a cat", narrow, lane="turbo")


def test_version_aliases_pick_the_model(cfg: Settings, latent_model: Path, pixel_model: Path) -> None:
    assert one_job("a cat", cfg).model == cfg.model  # the configured model it was sized for, recorded
    assert one_job("a cat --v 6", cfg).model == str(latent_model)
    assert one_job("a cat --niji", cfg).model == str(pixel_model)
    with pytest.raises(PromptError, match=re.escape("--v: unknown model version '5.2'; known versions: 6, niji")):
        one_job("a cat --v 5.2", cfg)
    with pytest.raises(PromptError, match=re.escape("--niji: unknown model version 'niji 6'; known versions: 6, niji")):
        one_job("a cat --niji 6", cfg)
    bare = cfg.model_copy(update={"model_aliases": {}})
    with pytest.raises(PromptError, match="known versions: none are configured"):
        one_job("a cat --v 6", bare)


# --- the record -----------------------------------------------------------------------------------------------------


def test_spec_records_canonical_prompt_and_resolved_parameters(cfg: Settings) -> None:
    delivery = Delivery(kind="discord", channel_id="42")
    spec = one_job("A  cat —ar 3:2 --s 50 --c 5 --q .5 --w 9 --style raw --v 6 --seed 77", cfg, delivery=delivery)
    assert spec.prompt == "A cat --ar 3:2 --chaos 5 --quality 0.5 --seed 77 --stylize 50 --style raw --weird 9 --v 6"
    assert spec.extra == {
        "stylize": 50,
        "quality": 0.5,
        "chaos": 5,
        "weird": 9,
        "iw": 1.0,
        "style": "raw",
        "version": "6",
        "aspect_ratio": [3, 2],
        "seed": 77,
        "seed_given": True,
        "repeat_index": 0,
    }
    assert (spec.owner, spec.delivery, spec.kind.value) == ("u1", delivery, "grid")
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
