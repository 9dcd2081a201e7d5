"""Remix mode and Custom Zoom through the fake Discord, with the real bot and a real worker: the box opens with the
prompt prefilled, each box has an id of its own, a submit after a bot restart still works, an edited prompt makes a
grid with the new words, a bad edit gets the parser's error privately and queues nothing, and Custom Zoom with
``--zoom 1.5`` shows 1.5 times as much."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
import redis

from bot.modals import PROMPT_FIELD, PromptModal, submitted_values
from shared import defaults, messages
from shared.discord_wire import buttons
from shared.discord_wire.buttons import ButtonAction, ButtonRef
from shared.jobs.spec import JobKind, SourceImage
from shared.keys import Keys
from shared.settings import Settings
from shared.stores import images as image_store
from tests.discord_harness import (
    MEMBER,
    OTHER,
    answered,
    click_and_get_result,
    final_message,
    job_of_waiting,
    stop,
    wait_finished,
)
from tests.fake_discord import FakeDiscord, InteractionRecord

pytestmark = pytest.mark.slow


def job_count(conn: redis.Redis) -> int:
    return len(list(conn.scan_iter(Keys.job("*"))))


def opened_box(fake: FakeDiscord, message_id: int, label: str, user_id: int) -> InteractionRecord:
    click = answered(fake, fake.click(message_id, fake.button_id(message_id, label), user_id=user_id))
    assert click.response_type == 9, click.response  # a modal
    return click


async def test_a_long_prompt_is_cut_to_the_box_with_a_note() -> None:
    ref = ButtonRef(ButtonAction.VARY, "abc123", 2)
    box = PromptModal(ref, "x" * 5000)
    payload = box.to_dict()
    (text_input,) = [c for row in payload["components"] for c in row.get("components", [row.get("component")])]
    assert len(text_input["value"]) == defaults.DISCORD_TEXT_INPUT_MAX == text_input["max_length"]
    assert text_input["label"] == messages.MODAL_LABEL_PROMPT_CUT and len(text_input["label"]) <= 45
    assert buttons.parse_modal_custom_id(payload["custom_id"]) == ref
    assert PromptModal(ref, "x").custom_id != box.custom_id  # each box its own id
    submitted = {"components": [{"type": 18, "component": {"type": 4, "custom_id": PROMPT_FIELD, "value": "a cat"}}]}
    assert submitted_values(submitted) == {PROMPT_FIELD: "a cat"}


def test_remix_and_custom_zoom(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bot = start_bot()
    fake.wait_connected()
    on = answered(fake, fake.slash("prefer remix", {}, user_id=MEMBER))
    assert on.ephemeral and on.content == messages.REMIX_ON
    assert answered(fake, fake.slash("settings", {"remix": True}, user_id=OTHER)).ephemeral
    record = answered(fake, fake.slash("imagine", {"prompt": "a red circle --seed 7"}, user_id=MEMBER))
    assert record.response_message_id is not None
    grid_id = job_of_waiting(redis_conn, settings, record.response_message_id)
    start_worker(env=fake.env(), name="remix")
    grid = final_message(fake, grid_id)
    wait_finished(redis_conn, grid_id)

    # With Remix on, V2 opens a box with the prompt prefilled; two members' boxes have ids of their own.
    mine = opened_box(fake, int(grid["id"]), "V2", MEMBER)
    theirs = opened_box(fake, int(grid["id"]), "V2", OTHER)
    box = mine.response["data"]
    (field,) = [c for row in box["components"] for c in row.get("components", [row.get("component")])]
    assert (box["title"], field["value"]) == ("Remix", "a red circle --seed 7")
    assert box["custom_id"] != theirs.response["data"]["custom_id"]
    assert buttons.parse_modal_custom_id(box["custom_id"]) == ButtonRef(ButtonAction.VARY, grid_id, 2)
    before = job_count(redis_conn)

    # The bot restarts while the boxes are open: the submits still work (handled from their custom_id).
    stop(bot)
    start_bot()
    fake.wait_connected(identifies=2)

    # A bad edit: the parser's error, privately; nothing queued.
    bad = answered(fake, fake.submit_modal(theirs, {PROMPT_FIELD: "a cat --ar 0:1"}, user_id=OTHER))
    assert bad.ephemeral and "--ar" in bad.content and bad.content.startswith("Sorry, I can't read that prompt")
    assert job_count(redis_conn) == before

    # An edited prompt: a grid of variations of image 2 with the new words, footnoted as remixed.
    edited = answered(fake, fake.submit_modal(mine, {PROMPT_FIELD: "a blue square --seed 7"}, user_id=MEMBER))
    assert not edited.ephemeral and "(Waiting to start)" in edited.content and "a blue square" in edited.content
    assert edited.response_message_id is not None
    remix_id = job_of_waiting(redis_conn, settings, edited.response_message_id)
    remixed = final_message(fake, remix_id)
    assert remixed["content"].startswith("**a blue square --seed 7** - Variations (Strong) by <@4242>")
    assert remixed["content"].endswith(f"\n{messages.REMIXED_NOTE}")
    wait_finished(redis_conn, remix_id)
    spec = image_store.get_record(redis_conn, settings, remix_id).spec
    assert (spec.kind, spec.source, spec.parts) == (
        JobKind.VARIATION,
        SourceImage(grid_id, 1),
        (("a blue square", 1.0),),
    )

    # Custom Zoom under an upscale (a box whatever the Remix mode) with --zoom 1.5: 1.5 times the field of view.
    off = answered(fake, fake.slash("prefer remix", {}, user_id=MEMBER))
    assert off.content == messages.REMIX_OFF
    up_id, upscale = click_and_get_result(fake, redis_conn, settings, int(grid["id"]), "U1")
    wait_finished(redis_conn, up_id)
    zoom_box = opened_box(fake, int(upscale["id"]), "Custom Zoom", MEMBER)
    (zoom_field,) = [c for row in zoom_box.response["data"]["components"] for c in row.get("components", [])]
    assert zoom_field["value"] == "a red circle --seed 7 --zoom 2"
    zoomed = answered(
        fake, fake.submit_modal(zoom_box, {PROMPT_FIELD: "a red circle --seed 7 --zoom 1.5"}, user_id=MEMBER)
    )
    assert zoomed.response_message_id is not None and not zoomed.ephemeral
    zoom_id = job_of_waiting(redis_conn, settings, zoomed.response_message_id)
    zoom_message = final_message(fake, zoom_id)
    assert "- Zoom Out 1.5x by <@4242>" in zoom_message["content"]
    wait_finished(redis_conn, zoom_id)
    zoom_spec = image_store.get_record(redis_conn, settings, zoom_id).spec
    assert zoom_spec.kind is JobKind.OUTPAINT and zoom_spec.source == SourceImage(grid_id, 0)
    assert zoom_spec.source_box is not None
    x0, y0, x1, y1 = zoom_spec.source_box
    assert (1 / (x1 - x0), 1 / (y1 - y0)) == pytest.approx((1.5, 1.5), abs=1e-4)  # the canvas shows 1.5x as much
    assert (zoom_spec.width, zoom_spec.height) == (spec.width, spec.height)
    too_far = opened_box(fake, int(upscale["id"]), "Custom Zoom", MEMBER)
    refused = answered(fake, fake.submit_modal(too_far, {PROMPT_FIELD: "a red circle --zoom 3"}, user_id=MEMBER))
    assert refused.ephemeral and "--zoom must be a number from 1 to 2, got '3'" in refused.content
    assert not fake.refused_bodies
