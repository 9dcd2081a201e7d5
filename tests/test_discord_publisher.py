"""The worker's Discord publisher against the fake Discord: progress edits, final post, rate limits, retries."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from pydantic import SecretStr

from shared import defaults
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery, JobKind, JobSpec, SourceImage
from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis
from tests.fake_discord import Call, FakeDiscord
from worker.discord_publisher import DiscordError, DiscordPublisher, DiscordRest
from worker.publisher import JobResult


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


@pytest.fixture
def discord_settings(redis_server: EmbeddedRedis, fake: FakeDiscord, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=SecretStr(redis_server.url),
        data_dir=tmp_path / "data",
        discord_api_base=fake.api_base,
        discord_token=SecretStr(fake.token),
    )


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps(list[float]):
    """Records the waits the REST client asked for, without waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def publisher(settings: Settings, clock: Clock | None = None) -> tuple[DiscordPublisher, Sleeps]:
    sleeps = Sleeps()
    rest = DiscordRest(settings.discord_api_base, settings.discord_token.get_secret_value(), sleep=sleeps)
    return DiscordPublisher(settings, rest=rest, clock=clock or Clock()), sleeps


def waiting_message(fake: FakeDiscord) -> int:
    """A "(Waiting to start)" message as the bot would have posted it."""
    message = fake._new_message(
        fake.channel_id, Call("POST", "", {}, {"content": "**fox** - <@42> (Waiting to start)"}, {}, ""), author={}
    )
    return int(message["id"])


def spec_for(fake: FakeDiscord, waiting_id: int, kind: JobKind = JobKind.GRID) -> JobSpec:
    upscale = kind is JobKind.UPSCALE
    return JobSpec.for_prompt(
        "a red fox",
        seed=2 if upscale else 1,
        images=1 if upscale else 4,
        width=32,
        height=32,
        steps=4,
        guidance=7.5,
        job_id="job0001",
        owner="42",
        lane="fast",
        kind=kind,
        source=SourceImage("job0000", 1) if upscale else None,
        upscale_mode="subtle" if upscale else "",
        delivery=Delivery(kind="discord", channel_id=str(fake.channel_id), waiting_message_id=str(waiting_id)),
    )


def result_of(spec: JobSpec) -> JobResult:
    images = [Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(len(spec.seeds))]
    grid = Image.new("RGB", (64, 64)) if len(images) == 4 else None
    return JobResult(spec=spec, images=images, grid=grid, record=JobRecord(job_id=spec.job_id, spec=spec))


def test_progress_edits_are_throttled_and_carry_a_small_preview(fake: FakeDiscord, discord_settings: Settings) -> None:
    clock = Clock()
    pub, _ = publisher(discord_settings, clock)
    waiting = waiting_message(fake)
    spec = spec_for(fake, waiting)
    pub.progress(spec, 0.25, Image.new("RGB", (512, 512), "red"))
    pub.progress(spec, 0.30, None)
    clock.now += defaults.PROGRESS_EVERY_S
    pub.progress(spec, 0.75, None)
    patches = fake.calls_to("PATCH", f"/messages/{waiting}")
    assert [call.json["content"] for call in patches] == [
        "**a red fox** - <@42> (25%) (fast)",
        "**a red fox** - <@42> (75%) (fast)",
    ]
    assert all(call.auth == f"Bot {fake.token}" for call in patches)
    ((name, data),) = patches[0].files.values()
    assert name == "preview.png"
    assert max(Image.open(io.BytesIO(data)).size) == defaults.DISCORD_PREVIEW_MAX_SIDE


def test_publish_posts_grid_and_buttons_once_and_removes_the_waiting_message(
    fake: FakeDiscord, discord_settings: Settings
) -> None:
    pub, _ = publisher(discord_settings)
    waiting = waiting_message(fake)
    spec = spec_for(fake, waiting)
    out = pub.publish(result_of(spec))
    message_id = int(out["discord"]["message_id"])
    message = fake.messages[message_id]
    assert message["content"] == "**a red fox** - <@42> (fast)"
    assert message["allowed_mentions"] == {"parse": [], "users": ["42"]}
    assert len(fake.buttons(message_id)) == 9
    assert Image.open(io.BytesIO(fake.attachment_bytes(message_id))).size == (64, 64)
    assert message["attachments"][0]["filename"] == "grid_job0001.png"
    assert fake.messages[waiting]["deleted"]
    again = pub.publish(result_of(spec))
    assert again["discord"]["message_id"] == str(message_id)
    assert len(fake.calls_to("POST", "/messages")) == 1


def test_an_upscale_gets_its_buttons_and_make_square_only_when_not_square(
    fake: FakeDiscord, discord_settings: Settings
) -> None:
    pub, _ = publisher(discord_settings)
    spec = spec_for(fake, waiting_message(fake), JobKind.UPSCALE)
    message_id = int(pub.publish(result_of(spec))["discord"]["message_id"])
    rows = fake.messages[message_id]["components"]
    labels = [[b.get("label") or b["emoji"]["name"] for b in row["components"]] for row in rows]
    assert labels == [
        ["Upscale (Subtle)", "Upscale (Creative)", "Vary (Subtle)", "Vary (Strong)", "Vary (Region)"],
        ["Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"],
        ["\u2b05", "\u27a1", "\u2b06", "\u2b07"],
    ]
    assert "Upscaled (Subtle) by <@42>" in fake.messages[message_id]["content"]
    wide = spec_for(fake, waiting_message(fake), JobKind.UPSCALE).replace(job_id="job0002")
    result = result_of(wide)
    result.images[0] = Image.new("RGB", (48, 32))
    wide_id = int(pub.publish(result)["discord"]["message_id"])
    assert [b.get("label") for b in fake.messages[wide_id]["components"][1]["components"]][-1] == "Make Square"


def test_final_posts_honour_retry_after_and_retry_server_errors(fake: FakeDiscord, discord_settings: Settings) -> None:
    pub, sleeps = publisher(discord_settings)
    fake.fail_next = [("POST", 429, 0.25), ("POST", 502, 0.0), ("POST", 503, 0.0)]
    out = pub.publish(result_of(spec_for(fake, waiting_message(fake))))
    assert sleeps == [0.25, defaults.DISCORD_RETRY_BASE_S, 2 * defaults.DISCORD_RETRY_BASE_S]
    assert [c.status for c in fake.calls_to("POST", "/messages")] == [429, 502, 503, 200]
    assert int(out["discord"]["message_id"]) in fake.messages


def test_a_rate_limited_progress_edit_is_skipped_not_waited_for(fake: FakeDiscord, discord_settings: Settings) -> None:
    clock = Clock()
    pub, sleeps = publisher(discord_settings, clock)
    spec = spec_for(fake, waiting_message(fake))
    fake.fail_next = [("PATCH", 429, 5.0)]
    pub.progress(spec, 0.5, None)
    assert sleeps == []
    clock.now += defaults.PROGRESS_EVERY_S
    pub.progress(spec, 0.9, None)
    assert [c.status for c in fake.calls_to("PATCH", "/messages")] == [429, 200]


def test_failures_are_told_in_the_waiting_message_or_a_new_one(fake: FakeDiscord, discord_settings: Settings) -> None:
    pub, _ = publisher(discord_settings)
    waiting = waiting_message(fake)
    spec = spec_for(fake, waiting)
    pub.failed(spec, "The GPU ran out of memory for this job.")
    assert fake.messages[waiting]["content"] == "**a red fox** - <@42> (The GPU ran out of memory for this job.)"
    fake.messages[waiting]["deleted"] = True
    pub.failed(spec, "Cancelled.")
    posted = fake.calls_to("POST", "/messages")
    assert len(posted) == 1 and posted[0].json["content"].endswith("(Cancelled.)")


def test_a_refused_post_is_an_error_naming_the_call(fake: FakeDiscord, discord_settings: Settings) -> None:
    pub, sleeps = publisher(discord_settings)
    fake.fail_next = [("POST", 403, 0.0)]
    with pytest.raises(DiscordError, match=r"POST /channels/\d+/messages failed with HTTP 403"):
        pub.publish(result_of(spec_for(fake, waiting_message(fake))))
    assert sleeps == []


def test_an_empty_token_is_refused_up_front(discord_settings: Settings) -> None:
    with pytest.raises(ValueError, match="DISCORD_TOKEN is empty"):
        DiscordPublisher(discord_settings.model_copy(update={"discord_token": SecretStr("")}))
