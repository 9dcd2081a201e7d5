"""Admin commands through the fake Discord: the real bot process, a real worker, a real Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import redis

from shared.jobs.spec import JobStatus
from shared.messages import NOT_ADMIN, PAUSED_NOTE
from shared.queue import admin, limits
from shared.queue.client import all_queues, job_state
from shared.settings import Settings
from tests.discord_harness import answered, job_of_waiting
from tests.fake_discord import FakeDiscord, InteractionRecord
from tests.queue_control import wait_until

ADMIN = 1001
MEMBER = 4242

pytestmark = pytest.mark.slow


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """Long jobs by default (200 steps), so a cancel always meets a running job; --q .25 makes short ones."""
    return {**settings_env, "STEPS": "200"}


def admin_call(
    fake: FakeDiscord,
    group: str,
    sub: str | None = None,
    options: list[dict[str, Any]] | None = None,
    *,
    user_id: int = ADMIN,
    permissions: str | None = None,
    resolved: dict[str, Any] | None = None,
) -> InteractionRecord:
    """Dispatch ``/group [sub] options`` as ``user_id`` (with the member's ``permissions`` bits if given)."""
    payload = fake.slash_payload(group, user_id=user_id)
    opts = options or []
    payload["data"]["options"] = [{"type": 1, "name": sub, "options": opts}] if sub else opts
    if resolved:
        payload["data"]["resolved"] = resolved
    if permissions is not None:
        payload["member"]["permissions"] = permissions
    return answered(fake, fake.dispatch_many([payload])[0])


def user_option(fake: FakeDiscord, user_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A USER option naming ``user_id`` and the resolved data Discord sends with it."""
    return [{"name": "member", "type": 6, "value": str(user_id)}], {"users": {str(user_id): fake.user(user_id)}}


def test_admin_commands_are_checked_in_code_pause_resume_cancel_and_ban(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    start_bot()
    fake.wait_connected()
    assert {"queue", "ban", "unban", "limits", "workers"} <= set(fake.commands)
    assert int(fake.commands["queue"]["default_member_permissions"]) == 32  # Manage Server: shown to admins only
    start_worker(env=fake.env(), name="admin")

    # A member without rights reaches /queue pause anyway: refused, nothing changes.
    refused = admin_call(fake, "queue", "pause", user_id=MEMBER, permissions="0")
    assert refused.ephemeral and refused.content == NOT_ADMIN
    assert not admin.is_paused(redis_conn, settings)

    paused = admin_call(fake, "queue", "pause")
    assert paused.ephemeral and "paused" in paused.content
    assert admin.is_paused(redis_conn, settings)

    # Submitted while paused: accepted (public waiting message), told the queue is paused, and it waits.
    record = answered(fake, fake.slash("imagine", {"prompt": "a red circle --seed 3 --q .25"}, user_id=MEMBER))
    assert not record.ephemeral and "(Waiting to start)" in record.content
    assert record.response_message_id is not None
    first = job_of_waiting(redis_conn, settings, record.response_message_id)
    fake.wait_for(
        lambda: any(PAUSED_NOTE in str(call.json) for call in fake.calls_to("POST", "/webhooks/")), 30, "pause note"
    )
    state = job_state(redis_conn, first)
    assert state is not None and state.status is JobStatus.QUEUED

    resumed = admin_call(fake, "queue", "resume")
    assert resumed.ephemeral and "resumed" in resumed.content

    def finished(job_id: str) -> bool:
        found = job_state(redis_conn, job_id)
        return found is not None and found.status is JobStatus.FINISHED

    wait_until(lambda: finished(first), timeout=240)

    # /queue cancel stops a running job at its next step, and its member is told on the waiting message.
    record = answered(fake, fake.slash("imagine", {"prompt": "a blue square --seed 4"}, user_id=MEMBER))
    assert record.response_message_id is not None
    waiting_id = record.response_message_id
    long_job = job_of_waiting(redis_conn, settings, waiting_id)

    def running() -> bool:
        found = job_state(redis_conn, long_job)
        return found is not None and found.status is JobStatus.STARTED and found.progress.step >= 1

    wait_until(running, timeout=120)
    canceled = admin_call(fake, "queue", "cancel", [{"name": "job_id", "type": 3, "value": long_job}])
    assert canceled.ephemeral and "stops at its next step" in canceled.content
    wait_until(lambda: finished(long_job), timeout=120)
    result = job_state(redis_conn, long_job)
    assert result is not None and result.canceled
    assert result.progress.step < result.progress.total
    fake.wait_for(lambda: "Cancelled" in fake.messages[waiting_id]["content"], 30, "the member told")
    assert limits.counts(redis_conn, settings, str(MEMBER)) == (0, 0)

    # /ban: the member gets a clear private answer and nothing is queued; /unban lets them in again.
    options, resolved = user_option(fake, MEMBER)
    banned = admin_call(
        fake, "ban", options=[*options, {"name": "reason", "type": 3, "value": "spam"}], resolved=resolved
    )
    assert banned.ephemeral and "Banned" in banned.content
    attempt = answered(fake, fake.slash("imagine", {"prompt": "a cat"}, user_id=MEMBER))
    assert attempt.ephemeral and attempt.content == "You are banned from making images here: spam"
    assert sum(queue.count for queue in all_queues(redis_conn, settings)) == 0
    unbanned = admin_call(fake, "unban", options=options, resolved=resolved)
    assert unbanned.ephemeral and "Unbanned" in unbanned.content
    assert not admin.is_banned(redis_conn, settings, str(MEMBER))

    actions = [entry["action"] for entry in admin.audit_entries(redis_conn, settings, count=20)]
    assert actions[::-1] == ["refused", "queue pause", "queue resume", "queue cancel", "ban", "queue purge", "unban"]
