"""The bot killed (SIGKILL) with one job running and one queued: both are delivered by the worker while the bot is
down, each exactly once, and a restarted bot changes nothing about them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
import redis

from shared.discord_wire import buttons
from shared.jobs.spec import JobStatus
from shared.queue.client import job_state
from shared.settings import Settings
from shared.stores import audit_log
from tests.discord_harness import MEMBER, answered, final_message, job_of_waiting, wait_finished
from tests.fake_discord import FakeDiscord
from tests.test_faults_worker import FAST_CLOCK

pytestmark = pytest.mark.slow


@pytest.fixture
def discord_env(settings_env: dict[str, str], fake_discord: FakeDiscord) -> dict[str, str]:
    """The e2e environment plus a banned word, so the bot's moderation is exercised too."""
    return {**settings_env, **fake_discord.env(), "MODERATION_BANNED": '["badword"]'}


def posts_of(fake: FakeDiscord, job_id: str) -> int:
    return sum(
        job_id in buttons.job_ids_in_components(message.get("components") or [])
        for message in fake.channel_messages(include_deleted=True)
    )


def test_jobs_continue_and_are_delivered_once_while_the_bot_is_down(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bot = start_bot()
    fake.wait_connected()
    refused = answered(fake, fake.slash("imagine", {"prompt": "a b4d-w0rd cat"}, user_id=MEMBER))
    assert refused.ephemeral and "which this server does not allow" in refused.content, refused.content
    (entry,) = audit_log.entries(redis_conn, settings, event="prompt_refused")
    assert entry["actor"] == str(MEMBER) and entry["rule"] == "badword"
    job_ids = []
    for prompt in ("a red circle --seed 1 --q 2", "a blue square --seed 2"):
        record = answered(fake, fake.slash("imagine", {"prompt": prompt}, user_id=MEMBER))
        assert record.response_message_id is not None, record.content
        job_ids.append(job_of_waiting(redis_conn, settings, record.response_message_id))

    start_worker(env={**fake.env(), **FAST_CLOCK}, name="discord")

    def running() -> bool:
        state = job_state(redis_conn, job_ids[0])
        return state is not None and state.status is JobStatus.STARTED

    fake.wait_for(running, 120, "the first job to start")
    bot.kill()
    bot.wait()

    for job_id in job_ids:
        final_message(fake, job_id)
        wait_finished(redis_conn, job_id)
    start_bot()
    fake.wait_connected(identifies=2)
    for job_id in job_ids:
        assert posts_of(fake, job_id) == 1
