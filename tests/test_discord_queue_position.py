"""Live queue position and ETA in waiting messages: the real bot and Redis through the fake Discord, then a worker."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import pytest
import redis

from shared import messages
from shared.jobs.spec import JobStatus
from shared.queue.client import job_state, request_cancel
from shared.settings import Settings
from tests.discord_harness import MEMBER, answered, final_message, job_of_waiting, log_of, wait_finished
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.slow


def test_waiting_message_follows_the_queue_and_stops_once_started(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    start_bot()
    fake.wait_connected()

    # Three jobs, no worker: the third's waiting line says #3 (and no ETA: nothing was measured yet).
    waiting: list[int] = []
    jobs: list[str] = []
    for n in range(3):
        record = answered(fake, fake.slash("imagine", {"prompt": f"a dot {n} --seed {n}"}, user_id=MEMBER))
        assert record.response_message_id is not None
        waiting.append(record.response_message_id)
        jobs.append(job_of_waiting(redis_conn, settings, record.response_message_id))
    third = waiting[2]
    assert record.content == f"**a dot 2 --seed 2** - <@{MEMBER}> (Waiting to start) - #3 in the queue"

    # The two ahead leave the queue: the bot edits the third's line to #1 on its own.
    for job_id in jobs[:2]:
        canceled = answered(fake, fake.slash("cancel", {"job_id": job_id}, user_id=MEMBER))
        assert "removed from the queue" in canceled.content
    fake.wait_for(lambda: "#1 in the queue" in fake.messages[third]["content"], 60, "the third job's line to say #1")

    # The canceled jobs' lines keep their last words (queue updates touch only queued jobs).
    def says_cancelled() -> bool:
        return all("Cancelled." in fake.messages[message_id]["content"] for message_id in waiting[:2])

    fake.wait_for(says_cancelled, 30, "the canceled jobs' lines to say Cancelled.")

    # A worker takes the job: from then on only the worker edits the message, then removes it.
    start_worker("--burst", env=fake.env(), name="queue-position")
    final_message(fake, jobs[2])
    wait_finished(redis_conn, jobs[2])
    history = [version["content"] for version in fake.message_history[third]]
    started = next(i for i, content in enumerate(history) if "%)" in content)
    assert all("Waiting to start" in content for content in history[:started]), history
    assert not any("Waiting to start" in content for content in history[started:]), history
    # An edit only when the line changes: one version says #1, however many rounds passed.
    assert sum("#1 in the queue" in content for content in history) == 1, history
    assert fake.messages[third].get("deleted")
    for message_id in waiting[:2]:
        assert "Cancelled." in fake.messages[message_id]["content"]
        assert job_state(redis_conn, jobs[waiting.index(message_id)]).status is JobStatus.CANCELED  # type: ignore[union-attr]

    # The finished job was timed: new waiting lines carry an ETA from the measured duration.
    later = answered(fake, fake.slash("imagine", {"prompt": "a dot again"}, user_id=MEMBER))
    assert later.content.startswith(f"**a dot again** - <@{MEMBER}> (Waiting to start) - #1 in the queue - ~")
    assert later.content.endswith((" s", " min", " h"))


def test_eta_text_buckets_and_waiting_line() -> None:
    shown = [messages.eta_text(s) for s in (0, 14, 44, 56, 89, 90, 599, 4500, 7300)]
    assert shown == ["~10 s", "~10 s", "~40 s", "~1 min", "~1 min", "~2 min", "~10 min", "~1 h 15 min", "~2 h"]
    # Estimates inside one step show the same text, so they make no edit.
    assert messages.eta_text(41) == messages.eta_text(44)
    assert messages.waiting_line("fox", "42", 3, 41.0) == "**fox** - <@42> (Waiting to start) - #3 in the queue - ~40 s"
    with pytest.raises(ValueError, match="eta seconds must be >= 0, got -1"):
        messages.eta_text(-1)


def test_a_rate_limited_round_is_skipped_and_the_next_one_edits(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bot = start_bot()
    fake.wait_connected()
    waiting: list[int] = []
    jobs: list[str] = []
    for n in range(2):
        record = answered(fake, fake.slash("imagine", {"prompt": f"a ring {n}"}, user_id=MEMBER))
        assert record.response_message_id is not None
        waiting.append(record.response_message_id)
        jobs.append(job_of_waiting(redis_conn, settings, record.response_message_id))
    assert "#2 in the queue" in fake.messages[waiting[1]]["content"]

    # The next edit meets a 429 far longer than a round: that round gives up, the next one edits.
    fake.fail_next.append(("PATCH", 429, 60.0))
    assert request_cancel(redis_conn, settings, jobs[0]) == "canceled"  # no Discord edit of its own
    fake.wait_for(lambda: "#1 in the queue" in fake.messages[waiting[1]]["content"], 60, "the line to say #1")
    limited = [call for call in fake.calls_to("PATCH", f"/messages/{waiting[1]}") if call.status == 429]
    assert len(limited) == 1
    assert "skipping the rest of this round" in log_of(bot)
    assert sum("#1 in the queue" in v["content"] for v in fake.message_history[waiting[1]]) == 1
    # SIGTERM right after a round's edit still stops the bot (the round loop ends on its stop event, not only on a
    # cancel that Python 3.11's wait_for can lose as the edit completes).
    bot.send_signal(signal.SIGTERM)
    assert bot.wait(timeout=10) == 0, log_of(bot)[-2000:]
