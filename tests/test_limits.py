"""Per-member limits on a real Redis: atomic under concurrency, released on finish/fail/cancel, reconciled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from rq.utils import as_text

from shared.errors import MemberFacingError
from shared.jobs.spec import JobStatus
from shared.keys import keys_for
from shared.queue import limits
from shared.queue.client import enqueue, get_queue, job_state, request_cancel
from shared.queue.fair_share import FairQueue
from shared.settings import Settings
from tests.queue_control import run_burst_worker, spec_for


@pytest.fixture
def limited(settings: Settings) -> Settings:
    """Settings with a small queued limit (4) and running limit (2)."""
    return settings.model_copy(update={"max_queued_per_member": 4, "max_running_per_member": 2})


def test_200_concurrent_submissions_accept_exactly_the_limit_and_counts_return_to_zero(
    limited: Settings, redis_conn: redis.Redis
) -> None:
    specs = [spec_for(limited, "111", seed=i) for i in range(200)]

    def submit(spec: object) -> str:
        try:
            enqueue(redis_conn, limited, spec)  # type: ignore[arg-type]
        except limits.LimitExceeded as exc:
            return str(exc)
        return "accepted"

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(submit, specs))
    assert outcomes.count("accepted") == 4
    assert set(outcomes) - {"accepted"} == {"You have 4 jobs queued, the limit is 4."}
    assert limits.counts(redis_conn, limited, "111") == (4, 0)
    assert get_queue(redis_conn, limited, limited.default_lane).count == 4
    assert isinstance(limits.LimitExceeded("x"), MemberFacingError)  # shown to the member as it is

    run_burst_worker(limited)
    accepted = [s for s, o in zip(specs, outcomes, strict=True) if o == "accepted"]
    for spec in accepted:
        state = job_state(redis_conn, spec.job_id)
        assert state is not None and state.status is JobStatus.FINISHED
    assert limits.counts(redis_conn, limited, "111") == (0, 0)
    assert limits.all_counts(redis_conn, limited) == {}
    assert redis_conn.hlen(keys_for(limited).limits_owners) == 0


def test_role_overrides_raise_the_limit_and_redis_config_overrides_settings(
    limited: Settings, redis_conn: redis.Redis
) -> None:
    limits.set_limits(redis_conn, limited, "role:42", limits.Limits(running=5, queued=6))
    assert limits.limits_for(redis_conn, limited, ["7"]) == limits.Limits(running=2, queued=4)
    assert limits.limits_for(redis_conn, limited, ["7", "42"]) == limits.Limits(running=5, queued=6)
    for i in range(6):
        enqueue(redis_conn, limited, spec_for(limited, "222", seed=i), roles=["42"])
    with pytest.raises(limits.LimitExceeded, match="You have 6 jobs queued, the limit is 6"):
        enqueue(redis_conn, limited, spec_for(limited, "222"), roles=["42"])
    for i in range(4):
        enqueue(redis_conn, limited, spec_for(limited, "333", seed=i), roles=["7"])
    with pytest.raises(limits.LimitExceeded, match="You have 4 jobs queued, the limit is 4"):
        enqueue(redis_conn, limited, spec_for(limited, "333", seed=9), roles=["7"])
    with pytest.raises(ValueError, match="scope must be 'default' or 'role:<numeric id>', got 'admins'"):
        limits.set_limits(redis_conn, limited, "admins", limits.Limits(running=1, queued=1))
    with pytest.raises(ValueError, match="queued limit must be an integer >= 0, got -1"):
        limits.Limits(running=1, queued=-1)


def test_cancel_of_a_queued_job_and_a_failed_job_release_their_counts(
    limited: Settings, redis_conn: redis.Redis
) -> None:
    waiting = spec_for(limited, "444", seed=1)
    enqueue(redis_conn, limited, waiting)
    assert limits.counts(redis_conn, limited, "444") == (1, 0)
    assert request_cancel(redis_conn, limited, waiting.job_id) == "canceled"
    assert limits.counts(redis_conn, limited, "444") == (0, 0)
    assert get_queue(redis_conn, limited, limited.default_lane).count == 0

    # A configured model that cannot be loaded (a model no worker serves would wait instead: routing by model).
    configured = limited.model_copy(update={"model_aliases": {"broken": "/nonexistent/model"}})
    broken = spec_for(configured, "444", seed=2).replace(model="/nonexistent/model")
    enqueue(redis_conn, configured, broken)
    run_burst_worker(configured)
    state = job_state(redis_conn, broken.job_id)
    assert state is not None and state.status is JobStatus.FAILED
    assert limits.counts(redis_conn, limited, "444") == (0, 0)


def test_running_cap_skips_a_member_and_reconcile_restores_the_jobs_of_a_dead_worker(
    limited: Settings, redis_conn: redis.Redis
) -> None:
    lane_key = get_queue(redis_conn, limited, limited.default_lane).key
    a = [spec_for(limited, "555", seed=i) for i in range(3)]
    b = spec_for(limited, "666")
    for spec in [*a, b]:
        enqueue(redis_conn, limited, spec)
    # Taken without running (as if the worker died right after dequeueing): "555" may run 2 at once.
    taken = [FairQueue.take(redis_conn, keys_for(limited), [lane_key]) for _ in range(4)]
    assert [t[1] if t else None for t in taken] == [a[0].job_id, b.job_id, a[1].job_id, None]
    assert limits.counts(redis_conn, limited, "555") == (1, 2)
    assert limits.reconcile(redis_conn, limited) == 0  # within the grace period nothing is touched
    # Past it, the taken-but-never-started jobs go back to the front of the lane; nothing is lost.
    assert limits.reconcile(redis_conn, limited, grace_s=0) == 3
    assert limits.counts(redis_conn, limited, "555") == (3, 0)
    assert limits.counts(redis_conn, limited, "666") == (1, 0)
    assert sorted(as_text(raw) for raw in redis_conn.lrange(lane_key, 0, 2)) == sorted(t[1] for t in taken if t)
    assert redis_conn.lindex(lane_key, 3) == a[2].job_id.encode()

    # A counted job that is neither waiting nor running (deleted by hand) stops being counted.
    redis_conn.delete(lane_key)
    assert limits.reconcile(redis_conn, limited, grace_s=0) == 4
    assert limits.all_counts(redis_conn, limited) == {}


def test_batch_followers_leave_queued_without_counting_as_running_and_not_while_paused(
    limited: Settings, redis_conn: redis.Redis
) -> None:
    from shared.queue import admin

    lane_key = get_queue(redis_conn, limited, limited.default_lane).key
    specs = [spec_for(limited, "777", seed=i) for i in range(3)]
    for spec in specs:
        enqueue(redis_conn, limited, spec)
    assert FairQueue.take(redis_conn, keys_for(limited), [lane_key]) == (lane_key, specs[0].job_id)
    assert limits.claim(redis_conn, keys_for(limited), specs[1].job_id)  # rides in the leader's pass
    assert limits.counts(redis_conn, limited, "777") == (1, 1)
    limits.unclaim(redis_conn, keys_for(limited), specs[1].job_id)  # another worker got it first
    assert limits.counts(redis_conn, limited, "777") == (2, 1)
    assert limits.claim(redis_conn, keys_for(limited), specs[1].job_id)
    assert limits.release(redis_conn, limited, specs[1].job_id) == 3
    assert limits.release(redis_conn, limited, specs[1].job_id) == 0  # idempotent
    assert limits.release(redis_conn, limited, specs[0].job_id) == 2
    assert limits.counts(redis_conn, limited, "777") == (1, 0)
    admin.pause(redis_conn, limited, actor="1")
    assert not limits.claim(redis_conn, keys_for(limited), specs[2].job_id)
    assert FairQueue.take(redis_conn, keys_for(limited), [lane_key]) is None
    assert limits.counts(redis_conn, limited, "777") == (1, 0)
