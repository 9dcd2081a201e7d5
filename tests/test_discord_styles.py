"""Community styles and references through the fake Discord, with the real bot, a real worker and a real Redis: an
``sref`` attachment (the shipped model's caption references, and a tiny IP-Adapter on a ``--v`` alias), /blend of
three attachments, a ``--draft`` grid and its Enhance button, an unknown ``--lora`` refused privately, star reactions
followed by ``--p``, /settings showing and clearing the profile, /loras with autocomplete, and /shorten whose buttons
imagine its shorter prompts."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from diffusers import StableDiffusionPipeline
from PIL import Image, ImageDraw

from shared.jobs.spec import JobSpec
from shared.keys import Keys
from shared.queue.client import all_queues
from shared.settings import Settings
from shared.stores import images as image_store
from shared.stores import profiles
from tests.conftest import SHIPPED_MODEL
from tests.discord_harness import (
    MEMBER,
    OTHER,
    answered,
    click_and_get_result,
    final_message,
    job_of_waiting,
    wait_finished,
)
from tests.fake_discord import EPHEMERAL, FakeDiscord
from tests.tiny_adapters import build_ip_adapter, build_lora
from worker.shapes_pipeline import ShapesPipeline

pytestmark = pytest.mark.slow

SHORTEN_PROMPT = "a very very beautiful photograph of a red circle, highly detailed, trending"


def shape_png(colour: tuple[int, int, int], shape: str) -> bytes:
    """One shape on a light 64 px background, as the shipped model's data draws them."""
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    box = (18, 18, 46, 46)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(32, 16), (48, 46), (16, 46)], fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def styles_env(discord_env: dict[str, str], tiny_model: Path, tmp_path: Path) -> dict[str, str]:
    """The shipped model with a LoRA, and a ``--v tiny`` alias (the tiny SD model) with a LoRA and a tiny IP-Adapter."""
    shapes = ShapesPipeline.from_pretrained(str(SHIPPED_MODEL))
    tiny = StableDiffusionPipeline.from_pretrained(tiny_model)
    ip_weights, ip_encoder = build_ip_adapter(tiny, tmp_path / "ip")
    loras = {
        "crisp": {
            "file": str(build_lora(shapes, tmp_path / "crisp.safetensors", seed=5, gain=1.0)),
            "families": ["shapes"],
            "weight": 0.8,
            "description": "sharper edges",
        },
        "ink": {"file": str(build_lora(tiny, tmp_path / "ink.safetensors", seed=6)), "families": ["sd"]},
    }
    # The harness starts the bot with ``discord_env`` itself, so the additions go into that dict.
    discord_env.update(
        {
            "MODEL": str(SHIPPED_MODEL),
            "GUIDANCE": "1.5",
            "MODEL_ALIASES": json.dumps({"tiny": str(tiny_model)}),
            "LORAS": json.dumps(loras),
            "IP_ADAPTERS": json.dumps({str(tiny_model): {"file": str(ip_weights), "image_encoder": str(ip_encoder)}}),
        }
    )
    return discord_env


def spec_of(conn: redis.Redis, settings: Settings, job_id: str) -> JobSpec:
    wait_finished(conn, job_id)
    return image_store.get_record(conn, settings, job_id).spec


def test_references_blend_draft_loras_personalization_and_shorten_through_discord(  # noqa: PLR0917 - pytest fixtures
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    styles_env: dict[str, str],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    start_bot()
    fake.wait_connected()
    assert {"blend", "shorten", "loras"} <= set(fake.commands)
    worker_env = {**fake.env(), **styles_env, "UNSAFE_TEST_ONLY_ALLOW_HTTP_LOOPBACK": "true", "OMP_NUM_THREADS": "1"}
    start_worker(env=worker_env, name="styles")

    # An unknown --lora: a private error naming it, nothing queued.
    unknown = answered(fake, fake.slash("imagine", {"prompt": "a fox --lora nosuch"}, user_id=MEMBER))
    assert unknown.ephemeral and "unknown LoRA 'nosuch'" in unknown.content and "crisp" in unknown.content
    assert sum(queue.count for queue in all_queues(redis_conn, settings)) == 0
    assert not list(redis_conn.scan_iter(Keys.job("*")))

    # /loras lists what fits the default model; the lora option autocompletes.
    listing = answered(fake, fake.slash("loras", {}, user_id=MEMBER))
    assert listing.ephemeral and "`crisp` (shapes; weight 0.8) - sharper edges" in listing.content
    assert "`ink`" not in listing.content
    data = fake.slash_payload("imagine", {"prompt": "a fox", "lora": "cr"}, user_id=MEMBER)["data"]
    data["options"][1]["focused"] = True
    completion = answered(fake, fake._send_interaction(fake._interaction(4, data, MEMBER)))
    assert completion.response_type == 8
    assert [choice["value"] for choice in completion.response["data"]["choices"]] == ["crisp"]

    # /imagine with an sref attachment: the style reference's captions condition the shipped model.
    red = fake.upload("red.png", shape_png((220, 30, 30), "circle"))
    record = answered(fake, fake.slash("imagine", {"prompt": "a shape --seed 3", "sref": red}, user_id=MEMBER))
    assert not record.ephemeral and "--sref http" in record.content
    assert record.response_message_id is not None
    sref_job = job_of_waiting(redis_conn, settings, record.response_message_id)
    sref_message = final_message(fake, sref_job)
    assert len(fake.buttons(int(sref_message["id"]))) == 9
    sref_spec = spec_of(redis_conn, settings, sref_job)
    assert [(ref.kind, ref.urls) for ref in sref_spec.references] == [("style", (red["url"],))]
    captions = image_store.get_record(redis_conn, settings, sref_job).notes["reference_captions"]
    assert all("red circle" in caption for caption, _ in captions), captions

    # The same through a real IP-Adapter: --v tiny has one configured.
    blue = fake.upload("blue.png", shape_png((30, 30, 220), "square"))
    tiny = answered(fake, fake.slash("imagine", {"prompt": "a hen --seed 4 --v tiny", "sref": blue}, user_id=OTHER))
    assert tiny.response_message_id is not None
    tiny_job = job_of_waiting(redis_conn, settings, tiny.response_message_id)
    final_message(fake, tiny_job)
    wait_finished(redis_conn, tiny_job)
    tiny_notes = image_store.get_record(redis_conn, settings, tiny_job).notes
    assert tiny_notes["ip_adapter_scales"] == {"style": 0.6} and tiny_notes["references"][0]["images"] == 1

    # /blend of three attachments, landscape: one grid from the images' embeddings.
    green = fake.upload("green.png", shape_png((30, 200, 30), "triangle"))
    blend = answered(
        fake,
        fake.slash(
            "blend", {"image1": red, "image2": blue, "image3": green, "dimensions": "landscape"}, user_id=MEMBER
        ),
    )
    assert blend.content.startswith("**/blend of red.png, blue.png, green.png (landscape)** - <@4242>"), blend.content
    assert blend.response_message_id is not None
    blend_job = job_of_waiting(redis_conn, settings, blend.response_message_id)
    final_message(fake, blend_job)
    blend_record = image_store.get_record(redis_conn, settings, blend_job)
    wait_finished(redis_conn, blend_job)
    assert blend_record.size[0] > blend_record.size[1]
    assert blend_record.spec.references[0].urls == (red["url"], blue["url"], green["url"])
    assert blend_record.notes["references"][0]["images"] == 3 and blend_record.notes["reference_captions"]

    # --draft with a LoRA: fewer steps, an Enhance button that re-runs the same seeds at full quality.
    draft = answered(fake, fake.slash("imagine", {"prompt": "a green star --draft --seed 9 --lora crisp:0.5"}))
    assert draft.response_message_id is not None
    draft_job = job_of_waiting(redis_conn, settings, draft.response_message_id)
    draft_message = final_message(fake, draft_job)
    labels = [button.get("label") or "re-roll" for button in fake.buttons(int(draft_message["id"]))]
    assert labels[-1] == "Enhance" and len(labels) == 10
    draft_spec = spec_of(redis_conn, settings, draft_job)
    assert draft_spec.draft and draft_spec.loras == (("crisp", 0.5),) and draft_spec.steps < settings.steps
    assert image_store.get_record(redis_conn, settings, draft_job).notes["loras"] == [["crisp", 0.5]]
    enhanced_job, enhanced = click_and_get_result(fake, redis_conn, settings, int(draft_message["id"]), "Enhance")
    enhanced_spec = spec_of(redis_conn, settings, enhanced_job)
    assert enhanced_spec.seeds == draft_spec.seeds == (9, 10, 11, 12)
    assert not enhanced_spec.draft and enhanced_spec.steps == settings.steps and "--draft" not in enhanced_spec.prompt
    assert enhanced_spec.loras == (("crisp", 0.5),) and len(fake.buttons(int(enhanced["id"]))) == 9

    # Stars on two results build a profile; --p then conditions on it; /settings shows it and clears it.
    assert "Profile (--p): none yet" in answered(fake, fake.slash("settings", {}, user_id=MEMBER)).content
    fake.react(int(sref_message["id"]), "\N{WHITE MEDIUM STAR}", user_id=MEMBER)
    fake.react(int(enhanced["id"]), "\N{GLOWING STAR}", user_id=MEMBER)
    fake.wait_for(lambda: profiles.count(redis_conn, settings, str(MEMBER)) == 8 or None, 30, "8 liked images")
    personal = answered(fake, fake.slash("imagine", {"prompt": "a shape --p --seed 5"}, user_id=MEMBER))
    assert personal.response_message_id is not None
    personal_job = job_of_waiting(redis_conn, settings, personal.response_message_id)
    final_message(fake, personal_job)
    wait_finished(redis_conn, personal_job)
    personal_record = image_store.get_record(redis_conn, settings, personal_job)
    assert [(ref.kind, ref.code) for ref in personal_record.spec.references] == [("profile", str(MEMBER))]
    assert personal_record.notes["references"][0]["profile_images"] == 8
    shown = answered(fake, fake.slash("settings", {}, user_id=MEMBER))
    code = profiles.code_of(redis_conn, settings, str(MEMBER))
    assert f"Profile (--p): 8 liked image(s); share it as `--p {code}`" in shown.content
    cleared = answered(fake, fake.slash("settings", {"clear_profile": True}, user_id=MEMBER))
    assert "Your profile is cleared (8 liked image(s) forgotten)" in cleared.content
    refused = answered(fake, fake.slash("imagine", {"prompt": "a shape --p"}, user_id=MEMBER))
    assert refused.ephemeral and "you have no profile yet" in refused.content

    # An off-list --quality is rounded and the member told privately.
    rounded = answered(fake, fake.slash("imagine", {"prompt": "a dot --q 3 --seed 1"}, user_id=OTHER))
    note = fake.wait_for(
        lambda: [
            m
            for m in fake.channel_messages()
            if m.get("interaction_token") == rounded.token and int(m.get("flags") or 0) & EPHEMERAL
        ],
        30,
        "the --quality note",
    )[0]
    assert "--q 3 is not offered; rounded to the nearest allowed value, 4" in note["content"]

    # /shorten: bold words that carry weight, struck filler, buttons that imagine the shorter prompts.
    short = answered(fake, fake.slash("shorten", {"prompt": SHORTEN_PROMPT + " --seed 2"}, user_id=MEMBER))
    assert short.response_message_id is not None
    short_job = job_of_waiting(redis_conn, settings, short.response_message_id)
    short_message = final_message(fake, short_job)
    lines = short_message["content"].splitlines()
    assert "**red**" in lines[1] and "~~very~~" in lines[1], lines
    options = image_store.get_record(redis_conn, settings, short_job).notes["shortened"]
    assert [button["label"] for button in fake.buttons(int(short_message["id"]))] == [
        str(n) for n in range(1, len(options) + 1)
    ]
    _, picked = click_and_get_result(fake, redis_conn, settings, int(short_message["id"]), "1", user_id=OTHER)
    assert picked["content"].startswith(f"**{options[0]}** - <@{OTHER}>") and "--seed 2" in options[0]
    assert len(fake.buttons(int(picked["id"]))) == 9
