"""Daily allowances on a real Redis: exactly the allowance under 200 concurrent submissions, the reset time of day,
exempt lanes, GPU-seconds, admin reset, and counters that survive a Redis crash (append-only file)."""

from __future__ import annotations

import datetime
import threading
import time
import zoneinfo

import pytest
import redis

from shared import allowances
from shared.errors import AllowanceSpent, MemberFacingError
from shared.queue import limits
from shared.queue.client import enqueue, get_queue
from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis
from tests.queue_control import spec_for

MEMBER = "111"


@pytest.fixture
def allowed(queue_settings: Settings) -> Settings:
    """10 jobs a day for everyone, 30 for role 77; 60 GPU-seconds; the queued limit out of the way."""
    return queue_settings.model_copy(
        update={
            "allowances": {"default": {"jobs": 10, "gpu_seconds": 60}, "role:77": {"jobs": 30}},
            "max_queued_per_member": 1000,
            "allowance_reset_time": "04:30",
            "allowance_timezone": "Europe/Paris",
        }
    )


def test_200_concurrent_submissions_take_exactly_the_allowance(allowed: Settings, redis_conn: redis.Redis) -> None:
    specs = [spec_for(allowed, MEMBER, seed=i) for i in range(200)]
    start = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit(chunk: list[object]) -> None:
        start.wait()  # 50 threads released together, each with four submissions back to back
        for spec in chunk:
            try:
                enqueue(redis_conn, allowed, spec)  # type: ignore[arg-type]
                outcome = "accepted"
            except AllowanceSpent as exc:
                outcome = str(exc)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=submit, args=(specs[i::50],)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 200
    assert outcomes.count("accepted") == 10
    refusals = set(outcomes) - {"accepted"}
    assert len(refusals) == 1
    refusal = refusals.pop()
    _, reset_at = allowances.period_bounds(allowed, time.time())
    assert "10 of 10 jobs" in refusal and f"<t:{int(reset_at)}:t>" in refusal
    assert "add --relax" in refusal  # the relax lane is offered
    assert get_queue(redis_conn, allowed, allowed.default_lane).count == 10
    # Refused jobs gave back their queue-limit count: only the 10 accepted are counted as queued.
    assert limits.counts(redis_conn, allowed, MEMBER) == (10, 0)  # (queued, running)
    usage = allowances.usage(redis_conn, allowed, MEMBER)
    assert (usage.jobs, usage.jobs_left, usage.reset_at) == (10, 0, reset_at)
    assert isinstance(AllowanceSpent("x"), MemberFacingError)

    # The quick check before an answer agrees; the relax lane is exempt; a role with more still has some left.
    assert allowances.refusal(redis_conn, allowed, MEMBER, [specs[0]]) == refusal
    relax = spec_for(allowed, MEMBER, seed=500).replace(lane="relax")
    assert allowances.refusal(redis_conn, allowed, MEMBER, [relax]) == ""
    enqueue(redis_conn, allowed, relax)
    assert allowances.usage(redis_conn, allowed, MEMBER).jobs == 10
    assert allowances.refusal(redis_conn, allowed, MEMBER, [specs[0]], ["77"]) == ""
    assert allowances.usage(redis_conn, allowed, MEMBER, ["77"]).jobs_left == 20

    # An admin's reset starts the member again from zero (audited).
    allowances.reset(redis_conn, allowed, "1001", MEMBER)
    assert allowances.usage(redis_conn, allowed, MEMBER).jobs_left == 10


def test_reset_time_of_day_in_the_configured_time_zone_across_dst(allowed: Settings) -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    before = datetime.datetime(2026, 3, 29, 3, 0, tzinfo=paris).timestamp()  # DST starts at 02:00 that night
    start, end = allowances.period_bounds(allowed, before)
    assert datetime.datetime.fromtimestamp(start, paris) == datetime.datetime(2026, 3, 28, 4, 30, tzinfo=paris)
    assert datetime.datetime.fromtimestamp(end, paris) == datetime.datetime(2026, 3, 29, 4, 30, tzinfo=paris)
    assert end - start == 23 * 3600  # the night the clocks go forward
    after = datetime.datetime(2026, 3, 29, 4, 30, tzinfo=paris).timestamp()
    assert allowances.period_bounds(allowed, after)[0] == end


def test_gpu_seconds_close_the_allowance_and_counts_move_to_the_next_period(
    allowed: Settings, redis_conn: redis.Redis
) -> None:
    now = time.time()
    first = spec_for(allowed, MEMBER, seed=1)
    assert allowances.acquire(redis_conn, allowed, first, now=now)
    assert not allowances.acquire(redis_conn, allowed, first, now=now)  # the same job is counted once
    allowances.charge_gpu(redis_conn, allowed, first, 61.5)
    with pytest.raises(AllowanceSpent, match="62 of 60 GPU-seconds"):
        allowances.acquire(redis_conn, allowed, spec_for(allowed, MEMBER, seed=2), now=now)
    _, end = allowances.period_bounds(allowed, now)
    assert allowances.acquire(redis_conn, allowed, spec_for(allowed, MEMBER, seed=3), now=end + 1)
    assert allowances.usage(redis_conn, allowed, MEMBER, now=end + 1).jobs == 1
    # A refund gives back exactly the job that was counted, in its own period.
    assert allowances.refund(redis_conn, allowed, first)
    assert not allowances.refund(redis_conn, allowed, first)
    assert allowances.usage(redis_conn, allowed, MEMBER, now=now).jobs == 0


@pytest.mark.slow
def test_the_counter_survives_a_redis_crash_with_the_append_only_file(
    allowed: Settings, redis_server: EmbeddedRedis, redis_conn: redis.Redis
) -> None:
    for seed in range(10):
        enqueue(redis_conn, allowed, spec_for(allowed, MEMBER, seed=seed))
    time.sleep(1.5)  # appendfsync everysec: what is older than a second is on disk when the process dies
    redis_server.kill()
    redis_server.start()
    connection = redis.Redis.from_url(redis_server.url)
    assert allowances.usage(connection, allowed, MEMBER).jobs_left == 0
    with pytest.raises(AllowanceSpent):
        enqueue(connection, allowed, spec_for(allowed, MEMBER, seed=99))
