"""End to end through the fake Discord: the real bot process, a real worker and a real Redis."""

from __future__ import annotations

import io
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
import redis
from PIL import Image, ImageDraw

from shared.jobs.spec import JobKind, JobStatus, SourceImage
from shared.keys import Keys
from shared.queue.client import all_queues, job_state
from shared.settings import Settings
from shared.stores import images as image_store
from tests.conftest import ROOT
from tests.discord_harness import (
    MEMBER,
    OTHER,
    answered,
    click_and_get_result,
    final_message,
    job_of_waiting,
    log_of,
    png_size,
    stop,
    wait_finished,
)
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.slow

THIRD = 6161
"""A third member, for the describe picks."""


def test_imagine_buttons_restart_and_bad_prompt(  # noqa: PLR0917 - pytest fixtures
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    discord_env: dict[str, str],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bot = start_bot()
    fake.wait_connected()
    assert {"imagine", "settings", "info", "show", "cancel"} <= set(fake.commands)

    # A bad prompt: an ephemeral error, nothing enqueued.
    bad = answered(fake, fake.slash("imagine", {"prompt": "a cat --ar 0:1"}, user_id=MEMBER))
    assert bad.ephemeral and "--ar" in bad.content
    assert sum(queue.count for queue in all_queues(redis_conn, settings)) == 0
    assert not list(redis_conn.scan_iter("rq:job:*"))

    # /imagine -> public waiting message, one job queued.
    record = answered(fake, fake.slash("imagine", {"prompt": "a red circle --seed 7"}, user_id=MEMBER))
    assert not record.ephemeral
    assert record.content.startswith("**a red circle --seed 7** - <@4242> (Waiting to start)"), record.content
    waiting_id = record.response_message_id
    assert waiting_id is not None
    job_id = job_of_waiting(redis_conn, settings, waiting_id)

    worker = start_worker(env=fake.env(), name="discord")
    grid_message = final_message(fake, job_id)
    wait_finished(redis_conn, job_id)

    # At least one progress edit of the waiting message (percentage), which is then removed.
    versions = fake.message_history[waiting_id]
    assert any("%)" in version["content"] for version in versions[1:]), versions
    assert fake.messages[waiting_id].get("deleted")
    patches = fake.calls_to("PATCH", f"/channels/{fake.channel_id}/messages/{waiting_id}")
    assert patches and all(call.auth == f"Bot {fake.token}" for call in patches)

    # The final message: line, 2x2 grid PNG, 9 buttons.
    assert grid_message["content"] == f"**a red circle --seed 7** - <@{MEMBER}> (fast)"
    record_data = image_store.get_record(redis_conn, settings, job_id)
    width, height = record_data.size
    assert png_size(fake.attachment_bytes(int(grid_message["id"]))) == (2 * width, 2 * height)
    labels = [b.get("label") or "re-roll" for b in fake.buttons(int(grid_message["id"]))]
    assert labels == ["U1", "U2", "U3", "U4", "re-roll", "V1", "V2", "V3", "V4"]

    # U2 -> the second image alone, upscaled, with its four buttons; owned by the clicker.
    up_id, up_message = click_and_get_result(fake, redis_conn, settings, int(grid_message["id"]), "U2", user_id=OTHER)
    up_labels = [b.get("label") or b["emoji"]["name"] for b in fake.buttons(int(up_message["id"]))]
    upscale_row = ["Upscale (Subtle)", "Upscale (Creative)", "Vary (Subtle)", "Vary (Strong)", "Vary (Region)"]
    zoom_row = ["Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"]
    assert up_labels == [*upscale_row, *zoom_row, "\u2b05", "\u27a1", "\u2b06", "\u2b07"]
    assert f"<@{OTHER}>" in up_message["content"]
    up_size = png_size(fake.attachment_bytes(int(up_message["id"])))
    assert up_size[0] > width and up_size[1] > height
    wait_finished(redis_conn, up_id)
    assert image_store.get_record(redis_conn, settings, up_id).spec.source == SourceImage(job_id, 1)

    # Zoom Out 2x on the upscale -> a grid keeping grid image 2 at half size; the left arrow -> a wider grid.
    zoom_id, zoom_message = click_and_get_result(fake, redis_conn, settings, int(up_message["id"]), "Zoom Out 2x")
    assert f"- Zoom Out 2x by <@{MEMBER}>" in zoom_message["content"]
    assert png_size(fake.attachment_bytes(int(zoom_message["id"]))) == (2 * width, 2 * height)
    assert len(fake.buttons(int(zoom_message["id"]))) == 9
    wait_finished(redis_conn, zoom_id)
    zoom_spec = image_store.get_record(redis_conn, settings, zoom_id).spec
    assert (zoom_spec.kind, zoom_spec.source) == (JobKind.OUTPAINT, SourceImage(job_id, 1))
    pan_id, pan_message = click_and_get_result(fake, redis_conn, settings, int(up_message["id"]), "\u2b05")
    pan_width, pan_height = png_size(fake.attachment_bytes(int(pan_message["id"])))
    assert pan_width > pan_height and f"- Pan Left by <@{MEMBER}>" in pan_message["content"]
    wait_finished(redis_conn, pan_id)

    # V1 -> a new grid of variations of image 1.
    var_id, var_message = click_and_get_result(fake, redis_conn, settings, int(grid_message["id"]), "V1")
    assert png_size(fake.attachment_bytes(int(var_message["id"]))) == (2 * width, 2 * height)
    assert len(fake.buttons(int(var_message["id"]))) == 9
    wait_finished(redis_conn, var_id)

    # Re-roll -> a new grid with other seeds.
    reroll_id, reroll_message = click_and_get_result(fake, redis_conn, settings, int(grid_message["id"]), "re-roll")
    wait_finished(redis_conn, reroll_id)
    reroll_seeds = image_store.get_record(redis_conn, settings, reroll_id).seeds
    assert reroll_seeds != record_data.seeds
    assert reroll_message["content"].startswith("**a red circle --seed 7**")

    # Restart the bot: a button on the old message still works.
    stop(bot)
    start_bot()
    fake.wait_connected(identifies=2)
    again_id, _ = click_and_get_result(fake, redis_conn, settings, int(grid_message["id"]), "U4")
    wait_finished(redis_conn, again_id)
    assert image_store.get_record(redis_conn, settings, again_id).spec.source == SourceImage(job_id, 3)
    assert worker.poll() is None, log_of(worker)


def test_a_job_queued_past_the_interaction_token_is_still_delivered(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    start_bot()
    fake.wait_connected()
    record = answered(fake, fake.slash("imagine", {"prompt": "a blue square --seed 3"}, user_id=MEMBER))
    assert record.response_message_id is not None
    job_id = job_of_waiting(redis_conn, settings, record.response_message_id)

    # 15 minutes pass in the queue: Discord now rejects the interaction token.
    fake.expire_interaction_tokens()
    probe = urllib.request.Request(
        f"{fake.api_base}/webhooks/{fake.application_id}/{record.token}/messages/@original", method="GET"
    )
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(probe, timeout=10)
    assert rejected.value.code == 401
    expired_at = len(fake.calls)

    start_worker("--burst", env=fake.env(), name="late")
    message = final_message(fake, job_id)
    wait_finished(redis_conn, job_id)
    assert message["content"] == f"**a blue square --seed 3** - <@{MEMBER}> (fast)"
    assert fake.messages[record.response_message_id].get("deleted")
    later = fake.calls[expired_at:]
    assert not [call for call in later if record.token in call.path], "the worker used the interaction token"
    assert all(call.status < 400 for call in later), [(c.method, c.path, c.status) for c in later if c.status >= 400]

    # /show re-posts the result with working buttons; "Job record" gives the record in one click.
    show = answered(fake, fake.slash("show", {"job_id": job_id}, user_id=OTHER))
    reposted = fake.wait_for(
        lambda: [m for m in fake.channel_messages() if m.get("interaction_token") == show.token and m["attachments"]],
        30,
        "the /show message",
    )[0]
    assert len(fake.buttons(int(reposted["id"]))) == 9
    assert png_size(fake.attachment_bytes(int(reposted["id"]))) == png_size(fake.attachment_bytes(int(message["id"])))
    info = answered(fake, fake.message_command("Job record", int(message["id"]), user_id=OTHER))
    assert info.ephemeral and job_id in info.content and '"seeds"' in info.content
    seeds = list(image_store.get_record(redis_conn, settings, job_id).seeds)
    assert seeds == [3, 4, 5, 6]


def test_settings_info_cancel_and_malformed_payloads(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bot = start_bot()
    fake.wait_connected()

    saved = answered(fake, fake.slash("settings", {"aspect": "16:9", "stylize": "high", "suffix": "watercolor"}))
    assert saved.ephemeral and "16:9" in saved.content
    wide = answered(fake, fake.slash("imagine", {"prompt": "a fox"}, user_id=42))
    assert wide.response_message_id is not None
    wide_job = job_of_waiting(redis_conn, settings, wide.response_message_id)
    spec = job_state(redis_conn, wide_job).spec  # type: ignore[union-attr]
    assert spec.width > spec.height and spec.extra["stylize"] == 250
    assert spec.prompt.startswith("a fox watercolor")
    second = answered(fake, fake.slash("imagine", {"prompt": "a hen --ar 1:2"}, user_id=42))
    assert "#2 in the queue" in second.content
    assert second.response_message_id is not None
    second_job = job_of_waiting(redis_conn, settings, second.response_message_id)

    listing = answered(fake, fake.slash("info", {}, user_id=42))
    assert listing.ephemeral
    assert f"`{wide_job}` queued, #1" in listing.content and f"`{second_job}` queued, #2" in listing.content

    refused = answered(fake, fake.slash("cancel", {"job_id": wide_job}, user_id=OTHER))
    assert "not yours" in refused.content
    canceled = answered(fake, fake.slash("cancel", {}, user_id=42))
    assert second_job in canceled.content and "removed from the queue" in canceled.content
    fake.wait_for(
        lambda: "Cancelled." in fake.messages[second.response_message_id]["content"],  # type: ignore[index]
        30,
        "the waiting message to say Cancelled.",
    )
    assert job_state(redis_conn, second_job).status is JobStatus.CANCELED  # type: ignore[union-attr]

    # /prefer option: --name stands for a saved bundle; a bad one is refused naming it; unknown names list the options.
    saved_option = answered(fake, fake.slash("prefer option set", {"option": "wide", "value": "--ar 21:9 --c 20"}))
    assert saved_option.ephemeral and "`--wide` = `--ar 21:9 --c 20`" in saved_option.content
    bad_option = answered(fake, fake.slash("prefer option set", {"option": "ar", "value": "--tile"}))
    assert "Not saved" in bad_option.content and "built-in parameter --ar" in bad_option.content
    listed = answered(fake, fake.slash("prefer option list", {}))
    assert "`--wide`" in listed.content and "Suffix: `watercolor`" in listed.content
    with_option = answered(fake, fake.slash("imagine", {"prompt": "a heron --wide"}, user_id=42))
    assert with_option.response_message_id is not None
    option_spec = job_state(redis_conn, job_of_waiting(redis_conn, settings, with_option.response_message_id)).spec  # type: ignore[union-attr]
    assert option_spec.prompt.startswith("a heron watercolor") and option_spec.extra["chaos"] == 20
    assert option_spec.width / option_spec.height > 2
    typo = answered(fake, fake.slash("imagine", {"prompt": "a heron --wdie"}, user_id=42))
    assert typo.ephemeral and "unknown parameter --wdie" in typo.content and "Your options: --wide" in typo.content

    # /relax (a lane shortcut, one per lane) makes the member's next jobs go to that lane.
    assert {"turbo", "fast", "relax"} <= set(fake.commands)
    relaxed = answered(fake, fake.slash("relax", {}, user_id=42))
    assert relaxed.ephemeral and "lane: `relax`" in relaxed.content
    slow = answered(fake, fake.slash("imagine", {"prompt": "a snail"}, user_id=42))
    assert slow.response_message_id is not None
    assert job_state(redis_conn, job_of_waiting(redis_conn, settings, slow.response_message_id)).spec.lane == "relax"  # type: ignore[union-attr]

    # Malformed payloads are logged and dropped; the bot answers the next interaction.
    fake.dispatch_raw("INTERACTION_CREATE", {"id": "1", "type": 2})
    broken = fake.slash_payload("imagine", {"prompt": "x"})
    del broken["attachment_size_limit"]
    fake.dispatch_many([broken])
    unknown = fake._interaction(3, {"custom_id": "imagine:u:nojob:9", "component_type": 2}, 42)
    fake.dispatch_many([unknown])
    after = answered(fake, fake.slash("info", {}, user_id=42))
    assert wide_job in after.content
    assert bot.poll() is None
    assert "ignoring malformed INTERACTION_CREATE" in log_of(bot)


def test_reactions_cancel_delete_and_send_to_direct_messages(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bot = start_bot()
    fake.wait_connected()

    def logged(text: str) -> None:
        fake.wait_for(lambda: text in log_of(bot) or None, 30, f"the bot to log {text!r}")

    # A cross on a waiting line: ignored from another member, a cancel from the owner.
    queued = answered(fake, fake.slash("imagine", {"prompt": "a green star --seed 11"}, user_id=MEMBER))
    assert queued.response_message_id is not None
    queued_job = job_of_waiting(redis_conn, settings, queued.response_message_id)
    fake.react(queued.response_message_id, "\N{CROSS MARK}", user_id=OTHER)
    logged(f"cross on job {queued_job} by {OTHER} ignored")
    assert job_state(redis_conn, queued_job).status is JobStatus.QUEUED  # type: ignore[union-attr]
    fake.react(queued.response_message_id, "\N{CROSS MARK}", user_id=MEMBER)
    fake.wait_for(
        lambda: "Cancelled." in fake.messages[queued.response_message_id]["content"],  # type: ignore[index]
        30,
        "the waiting line to say Cancelled.",
    )
    assert job_state(redis_conn, queued_job).status is JobStatus.CANCELED  # type: ignore[union-attr]

    # A finished result: an envelope from anyone sends it to their direct messages; a cross deletes it, owner only.
    record = answered(fake, fake.slash("imagine", {"prompt": "a red circle --seed 5"}, user_id=MEMBER))
    assert record.response_message_id is not None
    job_id = job_of_waiting(redis_conn, settings, record.response_message_id)
    start_worker("--burst", env=fake.env(), name="reactions")
    result = final_message(fake, job_id)
    wait_finished(redis_conn, job_id)
    result_id = int(result["id"])

    fake.react(result_id, "\N{ENVELOPE}\N{VARIATION SELECTOR-16}", user_id=OTHER)
    dm = fake.wait_for(
        lambda: fake.dm_channels.get(OTHER) and fake.channel_messages(fake.dm_channels[OTHER]), 30, "a direct message"
    )[0]
    assert job_id in dm["content"] and '"seeds"' in dm["content"]
    assert png_size(fake.attachment_bytes(int(dm["id"]))) == png_size(fake.attachment_bytes(result_id))
    assert MEMBER not in fake.dm_channels

    fake.react(result_id, "\N{CROSS MARK}", user_id=OTHER)
    logged(f"cross on job {job_id} by {OTHER} ignored")
    assert not fake.messages[result_id].get("deleted")
    fake.react(result_id, "\N{CROSS MARK}", user_id=MEMBER)
    fake.wait_for(lambda: fake.messages[result_id].get("deleted"), 30, "the result to be deleted")
    assert image_store.get_record(redis_conn, settings, job_id).seeds == (5, 6, 7, 8)
    assert bot.poll() is None


def scene_png() -> bytes:
    """A large red circle in the middle of a white 64x64 image, as the shipped model's data draws them."""
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((21, 21, 43, 43), fill=(219, 31, 31))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_describe_offers_four_prompts_whose_buttons_imagine_them(  # noqa: PLR0917 - pytest fixtures
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    discord_env: dict[str, str],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    shipped = str(ROOT / "models" / "imagine-shapes")  # the model with an alignment scorer and a caption bank
    discord_env["MODEL"] = shipped
    discord_env["MODERATION_BANNED"] = '["badword"]'
    start_bot()
    fake.wait_connected()

    text = answered(fake, fake.slash("describe", {"image": fake.upload("notes.txt", b"hi", "text/plain")}))
    assert text.ephemeral and "/describe needs an image" in text.content and "'notes.txt' is text/plain" in text.content
    record = answered(fake, fake.slash("describe", {"image": fake.upload("circle.png", scene_png())}, user_id=MEMBER))
    assert record.content.startswith(f"**circle.png** - <@{MEMBER}> (Waiting to start)"), record.content
    assert record.response_message_id is not None
    job_id = job_of_waiting(redis_conn, settings, record.response_message_id)
    loopback = {"MODEL": shipped, "UNSAFE_TEST_ONLY_ALLOW_HTTP_LOOPBACK": "true"}
    start_worker(env={**fake.env(), **loopback}, name="describe")

    message = final_message(fake, job_id)
    lines = message["content"].splitlines()
    assert lines[0] == f"Prompts for the image of <@{MEMBER}> (best match first):" and len(lines) == 5
    assert "a red circle" in lines[1], lines
    assert [b["label"] for b in fake.buttons(int(message["id"]))] == ["1", "2", "3", "4"]
    assert png_size(fake.attachment_bytes(int(message["id"]))) == (64, 64)
    wait_finished(redis_conn, job_id)
    descriptions = image_store.get_record(redis_conn, settings, job_id).notes["descriptions"]
    scores = [score for _, score in descriptions]
    assert scores == sorted(scores, reverse=True) and lines[1] == f"**1** {descriptions[0][0]}"

    # Button 2 imagines prompt 2, as a grid owned by whoever clicked.
    grid_id, grid = click_and_get_result(fake, redis_conn, settings, int(message["id"]), "2", user_id=OTHER)
    assert grid["content"] == f"**{descriptions[1][0]}** - <@{OTHER}> (fast)"
    assert len(fake.buttons(int(grid["id"]))) == 9
    wait_finished(redis_conn, grid_id)

    # A picked prompt is text like any other: a member whose suffix holds a banned word is refused, nothing queued.
    suffixed = answered(fake, fake.slash("settings", {"suffix": "badword"}, user_id=THIRD))
    assert suffixed.ephemeral
    jobs_before = len(list(redis_conn.scan_iter(Keys.job("*"))))
    pick = answered(fake, fake.click(int(message["id"]), fake.button_id(int(message["id"]), "3"), user_id=THIRD))
    assert pick.ephemeral and "which this server does not allow" in pick.content, pick.content
    assert len(list(redis_conn.scan_iter(Keys.job("*")))) == jobs_before
