"""The current Midjourney parameter list (issue 17) in the prompt language and its resolution: held-out cases of every
new parameter parse and round-trip; LoRAs, references, --draft, --exp, niji styles and --sref random resolve as
docs/parameters.md says; what this server does not offer is a clear PromptError; cross-job batching keeps LoRA sets
apart. No model runs here."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared import defaults
from shared.adapters import adapter_family, reference_method, reference_scale
from shared.errors import PromptError
from shared.intake import Intake, Requester
from shared.jobs.spec import Delivery, JobSpec, Reference
from shared.prompt.parser import Prompt, parse
from shared.prompt.resolve import blend_job, build_jobs, draft_steps, exp_adjusted, steps_for
from shared.settings import Settings
from shared.stores import profiles
from tests.conftest import ROOT, SHIPPED_MODEL
from worker.batching import batch_key, claim_followers

URL = "https://cdn.discordapp.com/attachments/1/2/style.png"
URL2 = "https://media.discordapp.net/attachments/3/4/face.png?ex=1&hm=ab"

# Held-out cases: text -> the fields it must give (every parameter of issue 17, in the spellings members use).
HELD_OUT: list[tuple[str, dict[str, Any]]] = [
    ("a fox --draft", {"draft": True}),
    ("a fox —draft --ar 3:2", {"draft": True, "aspect_ratio": (3, 2)}),
    ("a fox --exp 25", {"experimental": 25}),
    ("a fox --EXP 100", {"experimental": 100}),
    ("a fox --p", {"personalize": ()}),
    ("a fox --personalize", {"personalize": ()}),
    ("a fox --p ab12cd34", {"personalize": ("ab12cd34",)}),
    ("a fox --p AB12CD34, zz99zz99", {"personalize": ("ab12cd34", "zz99zz99")}),
    (f"a fox --sref {URL}", {"style_refs": (URL,)}),
    (f"a fox --sref {URL} {URL2} --sw 250", {"style_refs": (URL, URL2), "style_weight": 250}),
    ("a fox --sref 0042", {"style_refs": ("42",)}),
    ("a fox --sref random", {"style_refs": ("random",)}),
    ("a fox --sref RANDOM --sv 4", {"style_refs": ("random",), "style_version": 4}),
    (f"a fox --sref {URL} --sw 0", {"style_refs": (URL,), "style_weight": 0}),
    (f"a fox --cref {URL2}", {"character_refs": (URL2,)}),
    (f"a fox --cref {URL} --cw 0", {"character_refs": (URL,), "character_weight": 0}),
    (f"a fox --oref {URL}", {"omni_refs": (URL,)}),
    (f"a fox --oref {URL} --ow 400", {"omni_refs": (URL,), "omni_weight": 400}),
    ("a fox --q 4", {"quality": 4.0}),
    ("a fox --quality 4", {"quality": 4.0}),
    ("a fox --lora watercolor", {"loras": (("watercolor", None),)}),
    ("a fox --lora Watercolor:0.8, ink:-0.5", {"loras": (("watercolor", 0.8), ("ink", -0.5))}),
    ("a fox --lora a1 --lora b2:1.5", {"loras": (("a1", None), ("b2", 1.5))}),
    ("a fox --style cute --niji 6", {"style": "cute", "version": "niji 6"}),
    ("a fox --style expressive --niji", {"style": "expressive", "version": "niji"}),
    ("a fox --style original --niji", {"style": "original"}),
    ("a fox --style scenic --niji", {"style": "scenic"}),
    ("a sign that says \\{hello\\}", {"text": "a sign that says {hello}"}),
]


@pytest.mark.parametrize(("text", "fields"), HELD_OUT)
def test_held_out_cases_parse_and_round_trip(text: str, fields: dict[str, Any]) -> None:
    (prompt,) = parse(text)
    for name, value in fields.items():
        assert getattr(prompt, name) == value, (name, text)
    assert parse(prompt.to_text()) == [prompt], prompt.to_text()


def test_every_new_parameter_round_trips_together() -> None:
    text = (
        f"castle {{at dawn\\, misty, at night}} --draft --exp 10 --p abcd1234 --sref {URL} 7 --sw 300 --sv 2 "
        f"--cref {URL2} --cw 60 --oref {URL} --ow 50 --lora ink:0.5 paper --q 4"
    )
    prompts = parse(text)
    assert [p.text for p in prompts] == ["castle at dawn, misty", "castle at night"]
    for prompt in prompts:
        assert parse(prompt.to_text()) == [prompt]
        assert "--sref" in prompt.to_text() and "--lora ink:0.5 paper" in prompt.to_text()


def test_escaped_braces_are_literal_inside_and_outside_permutations() -> None:
    assert [p.text for p in parse("a \\{b\\} {c\\}, d}")] == ["a {b} c}", "a {b} d"]
    (prompt,) = parse("a \\{x\\}")
    assert prompt.to_text() == "a \\{x\\}"


@pytest.mark.parametrize(
    ("given", "rounded"), [("3", 4.0), (".3", 0.25), (".8", 1.0), ("1.5", 2.0), ("100", 4.0), ("0", 0.25)]
)
def test_an_off_list_quality_is_rounded_to_the_nearest_allowed_value_with_a_note(given: str, rounded: float) -> None:
    (prompt,) = parse(f"a fox --q {given}")
    assert prompt.quality == rounded
    assert prompt.notes and f"--q {given} is not offered" in prompt.notes[0]
    assert parse(prompt.to_text()) == [prompt] and not parse(prompt.to_text())[0].notes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --sw 200", "--sw weighs a reference: give --sref"),
        ("a fox --cw 10", "--cw weighs a reference: give --cref"),
        ("a fox --ow 10", "--ow weighs a reference: give --oref"),
        ("a fox --sv 4", "--sv weighs a reference: give --sref"),
        ("a fox --sref nope", "--sref takes an image URL, a style code or random, got 'nope'"),
        (f"a fox --sref random {URL}", "--sref random stands alone"),
        (f"a fox --oref {URL} {URL2}", "--oref takes at most 1 value(s), got 2"),
        ("a fox --cref 123", "--cref takes an image URL, got '123'"),
        (f"a fox --sref {URL}::2", "--sref: per-image weights (url::2) are not offered here"),
        (f"a fox --sref {URL} --sw 1001", "--sw must be an integer from 0 to 1000, got 1001"),
        (f"a fox --oref {URL} --ow 0", "--ow must be an integer from 1 to 1000, got 0"),
        (f"a fox --sref {URL} --sv 7", "--sv must be an integer from 1 to 6, got 7"),
        ("a fox --exp 101", "--exp must be an integer from 0 to 100, got 101"),
        ("a fox --p x!", "--p codes are 4-32 lowercase letters or digits"),
        ("a fox --lora", "--lora needs a LoRA name"),
        ("a fox --lora Bad/Name", "--lora names are 1-64 lowercase letters"),
        ("a fox --lora ink --lora ink:2", "--lora ink is given twice"),
        ("a fox --draft now", "--draft takes no value"),
        ("a fox --q fast", "--q must be one of .25, .5, 1, 2, 4, got fast"),
        ("a fox --style kawaii", "--style must be one of raw, cute, expressive, original, scenic, got kawaii"),
    ],
)
def test_bad_reference_parameters_say_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


# --- resolution --------------------------------------------------------------------------------------------------


@pytest.fixture
def lora_settings(queue_settings: Settings, tiny_model: Path) -> Settings:
    """The tiny SD model with three configured LoRAs (files need not exist to build jobs) and a niji alias."""
    return queue_settings.model_copy(
        update={
            "model": str(tiny_model),
            "model_aliases": {"niji": str(tiny_model), "shapes": str(SHIPPED_MODEL)},
            "loras": Settings(
                loras={
                    "ink": {"file": "ink.safetensors", "families": ["sd"], "weight": 0.7, "triggers": ["ink wash"]},
                    "paper": {"file": "paper.safetensors", "families": ["sd", "sdxl"]},
                    "fast": {"file": "lcm.safetensors", "families": ["sd"]},
                    "xl": {"file": "xl.safetensors", "families": ["sdxl"]},
                }
            ).loras,
            "lora_max_per_job": 2,
            "draft_lora": "fast",
            "draft_lora_steps": 3,
            "draft_lora_guidance": 1.5,
        }
    )


def jobs(text: str, settings: Settings, **kwargs: Any) -> list[JobSpec]:
    return build_jobs(parse(text), settings=settings, owner="42", rng=random.Random(1), **kwargs)


def test_loras_resolve_to_configured_weights_with_trigger_words(lora_settings: Settings) -> None:
    (spec,) = jobs("a fox --lora ink, paper:1.5 --seed 3", lora_settings)
    assert spec.loras == (("ink", 0.7), ("paper", 1.5))
    assert spec.parts == (("a fox, ink wash", 1.0),)
    assert spec.extra["lora_triggers"] == ["ink wash"]
    assert JobSpec.from_dict(spec.to_dict()) == spec
    (zero,) = jobs("a fox --lora ink:0", lora_settings)
    assert zero.loras == (("ink", 0.0),) and zero.parts == (("a fox", 1.0),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --lora nosuch", "--lora: unknown LoRA 'nosuch'; LoRAs here: fast, ink, paper, xl"),
        ("a fox --lora xl", "--lora xl fits sdxl models"),
        ("a fox --lora ink:2.5", "--lora ink:2.5: the weight must be from -2 to 2"),
        ("a fox --lora ink paper fast", "--lora: at most 2 LoRA(s) per prompt here, got 3"),
    ],
)
def test_a_lora_that_cannot_be_used_is_refused_naming_it(lora_settings: Settings, text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jobs(text, lora_settings)


def test_draft_runs_fewer_steps_with_the_draft_lora_and_exp_adds_detail(lora_settings: Settings) -> None:
    full = lora_settings.model_copy(update={"draft_lora": "", "steps": 20})
    (plain,) = jobs("a fox", full)
    (draft,) = jobs("a fox --draft", full)
    assert (plain.steps, draft.steps, draft.draft, draft.extra["draft"]) == (20, 8, True, True)
    assert draft_steps(20) == 8 and draft_steps(1) == 1
    (with_lora,) = jobs("a fox --draft --lora ink", lora_settings)
    assert with_lora.loras == (("ink", 0.7), ("fast", 1.0))
    assert (with_lora.steps, with_lora.guidance) == (3, 1.5)
    (exp,) = jobs("a fox --exp 100", full)
    assert (exp.steps, exp.guidance) == exp_adjusted(20, plain.guidance, 100) == (30, round(plain.guidance * 1.5, 4))
    (four,) = jobs("a fox --q 4", full)
    assert four.steps == steps_for(4.0, 20) == 80


def test_niji_styles_add_their_words_with_niji_and_are_refused_without(lora_settings: Settings) -> None:
    (cute,) = jobs("a fox --style cute --niji", lora_settings)
    assert cute.parts == (("a fox", 1.0), (defaults.NIJI_STYLES["cute"], defaults.NIJI_STYLE_PART_WEIGHT))
    (original,) = jobs("a fox --style original --niji", lora_settings)
    assert original.parts == (("a fox", 1.0),)
    with pytest.raises(PromptError, match="--style scenic is a niji style: use it with --niji"):
        jobs("a fox --style scenic", lora_settings)


def test_references_need_an_adapter_and_map_weights_to_scales(lora_settings: Settings) -> None:
    with pytest.raises(PromptError, match=r"--sref needs an image adapter, and model .* has none: no IP-Adapter"):
        jobs(f"a fox --sref {URL}", lora_settings)
    with pytest.raises(PromptError, match=r"--p needs an image adapter"):
        jobs("a fox --p", lora_settings)
    assert adapter_family(str(SHIPPED_MODEL)) == "shapes"
    assert reference_method(lora_settings, "shapes") == "captions"
    (spec,) = jobs(
        f"a fox --v shapes --sref {URL} 99 --sw 400 --cref {URL2} --cw 50 --oref {URL} --ow 1", lora_settings
    )
    assert [(ref.kind, ref.urls, ref.code, ref.blocks) for ref in spec.references] == [
        ("style", (URL,), "", "style"),
        ("style", (), "99", "style"),
        ("character", (URL2,), "", "all"),
        ("omni", (URL,), "", "all"),
    ]
    assert [ref.scale for ref in spec.references] == [1.2, 1.2, 0.4, 0.08]
    assert reference_scale("style", 0) == 0.0 and reference_scale("style", 1000) == 1.8974
    assert reference_scale("omni", 1000) == defaults.REFERENCE_SCALE_MAX
    (every_block,) = jobs(f"a fox --v shapes --sref {URL} --sv 2", lora_settings)
    assert every_block.references[0].blocks == "all"
    assert batch_key(spec) is None


def test_sref_random_draws_a_code_written_into_the_prompt(lora_settings: Settings) -> None:
    first = build_jobs(parse("a fox --sref random --v shapes --r 2"), settings=lora_settings, owner="1")
    assert len({spec.references[0].code for spec in first}) == 1  # one style for the prompt and its repeats
    code = first[0].references[0].code
    assert code.isdigit() and f"--sref {code}" in first[0].prompt and "random" not in first[0].prompt
    again = build_jobs(parse(first[0].prompt), settings=lora_settings, owner="1")
    assert again[0].references[0].code == code


def test_p_uses_profiles_from_redis_and_refuses_without_one(lora_settings: Settings, redis_conn: redis.Redis) -> None:
    settings = lora_settings.model_copy(update={"model": str(SHIPPED_MODEL)})
    intake = Intake(redis_conn, settings)
    me, other = Requester("100"), Requester("200")
    with pytest.raises(PromptError, match="you have no profile yet"):
        intake.jobs_from_text("a fox --p", me, Delivery())
    profiles.like(redis_conn, settings, "100", "job1", range(4))
    assert profiles.count(redis_conn, settings, "100") == 4
    (mine,) = intake.jobs_from_text("a fox --p", me, Delivery())
    assert [(ref.kind, ref.code, ref.blocks) for ref in mine.references] == [("profile", "100", "style")]
    code = profiles.code_of(redis_conn, settings, "100")
    assert profiles.code_of(redis_conn, settings, "100") == code and len(code) == defaults.PROFILE_CODE_LENGTH
    (shared_profile,) = intake.jobs_from_text(f"a fox --p {code}", other, Delivery())
    assert shared_profile.references[0].code == "100"
    with pytest.raises(PromptError, match="that profile code is unknown"):
        intake.jobs_from_text("a fox --p zzzz9999", other, Delivery())
    assert profiles.clear(redis_conn, settings, "100") == 4
    with pytest.raises(PromptError, match="that profile has no liked images"):
        intake.jobs_from_text(f"a fox --p {code}", other, Delivery())


def test_blend_makes_one_grid_with_a_multi_image_reference(queue_settings: Settings) -> None:
    settings = queue_settings.model_copy(update={"model": str(SHIPPED_MODEL)})
    spec = blend_job([URL, URL2, URL], ["a.png", "b.png", "c.png"], "portrait", settings=settings, owner="7")
    assert spec.height > spec.width and spec.references == (
        Reference("blend", (URL, URL2, URL), reference_scale("blend", 100)),
    )
    assert spec.prompt == "/blend of a.png, b.png, c.png (portrait)"
    with pytest.raises(PromptError, match="/blend takes 2 to 5 images, got 1"):
        blend_job([URL], ["a.png"], "square", settings=settings, owner="7")


def test_two_jobs_with_different_lora_sets_are_not_batched_together(
    lora_settings: Settings, redis_conn: redis.Redis
) -> None:
    (leader,) = jobs("a fox --lora ink --seed 1", lora_settings)
    (same,) = jobs("a hen --lora ink --seed 2", lora_settings)
    (other,) = jobs("a cat --lora paper --seed 3", lora_settings)
    (none,) = jobs("a dog --seed 4", lora_settings)
    assert batch_key(leader) == batch_key(same) != batch_key(other) != batch_key(none)
    queue = Queue("imagine:fast", connection=redis_conn, serializer=JSONSerializer)
    for spec in (other, none, same):
        queue.enqueue("worker.tasks.run_job", spec.to_dict(), job_id=spec.job_id, meta={"spec": spec.to_dict()})
    claimed = claim_followers(redis_conn, [queue], leader, max_images=16, wait_s=0.0, serializer=JSONSerializer)
    assert [follower.spec.job_id for follower in claimed] == [same.job_id]
    assert queue.job_ids == [other.job_id, none.job_id]


def test_adapter_config_is_checked_when_settings_are_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="families must be a non-empty list of sd, sdxl"):
        Settings(loras={"x": {"file": "x.safetensors", "families": ["sd15"]}})
    with pytest.raises(ValueError, match="LoRA names must be 1-64 lowercase"):
        Settings(loras={"X Y": {"file": "x.safetensors", "families": ["sd"]}})
    with pytest.raises(ValueError, match="DRAFT_LORA must name a configured LoRA"):
        Settings(draft_lora="lcm")
    config = tmp_path / "imagine.toml"
    config.write_text(
        '[loras.ink]\nfile = "ink.safetensors"\nfamilies = ["sdxl"]\nweight = 0.8\ntriggers = ["ink"]\n'
        f'[ip_adapters."{ROOT}/m"]\nfile = "ip.safetensors"\nimage_encoder = "enc"\n'
    )
    import os

    os.environ["IMAGINE_CONFIG"] = str(config)
    try:
        loaded = Settings(redis_url=SecretStr(""))
    finally:
        del os.environ["IMAGINE_CONFIG"]
    assert loaded.loras["ink"].weight == 0.8 and loaded.ip_adapters[f"{ROOT}/m"].image_encoder == "enc"


def test_prompt_constructed_directly_checks_reference_fields() -> None:
    assert Prompt(text="a", style_refs=(URL,), style_weight=0).to_text() == f"a --sref {URL} --sw 0"
    with pytest.raises(PromptError, match="--sw weighs a reference"):
        Prompt(text="a", style_weight=50)
