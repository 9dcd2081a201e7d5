"""Fair share on a real Redis and a real worker: round-robin across members, lane priority, position and ETA."""

from __future__ import annotations

import redis
from rq import Queue
from rq.utils import as_text as text

from shared.jobs.spec import JobStatus
from shared.queue import admin, eta
from shared.queue.client import enqueue, get_queue, job_state
from shared.settings import Settings
from tests.queue_control import run_burst_worker, spec_for, started_order


def lane_ids(connection: redis.Redis, settings: Settings, lane: str) -> list[str]:
    return [text(raw) for raw in connection.lrange(get_queue(connection, settings, lane).key, 0, -1)]


def test_waiting_jobs_interleave_members_round_robin(settings: Settings, redis_conn: redis.Redis) -> None:
    a = [spec_for(settings, "1", seed=i) for i in range(4)]
    b = [spec_for(settings, "2", seed=i) for i in range(2)]
    c = spec_for(settings, "3")
    for spec in [*a, *b, c]:
        enqueue(redis_conn, settings, spec)
    order = lane_ids(redis_conn, settings, settings.default_lane)
    expected = [a[0], b[0], c, a[1], b[1], a[2], a[3]]
    assert order == [s.job_id for s in expected]
    # A job pushed by plain RQ (no owner record) goes to the back, as RQ would put it.
    plain = Queue(get_queue(redis_conn, settings, settings.default_lane).name, connection=redis_conn)
    plain.enqueue("worker.tasks.run_job", {}, job_id="plainjob")
    assert lane_ids(redis_conn, settings, settings.default_lane)[-1] == "plainjob"


def test_one_job_of_b_starts_before_the_third_of_a_who_queued_ten_first(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    a = [spec_for(settings, "10", seed=i) for i in range(10)]
    for spec in a:
        enqueue(redis_conn, settings, spec)
    b = spec_for(settings, "20")
    enqueue(redis_conn, settings, b)
    upscale_like = spec_for(settings, "30", lane=settings.lanes[0])  # the priority lane is served first
    enqueue(redis_conn, settings, upscale_like)

    run_burst_worker(settings)
    order = started_order(redis_conn, [s.job_id for s in [*a, b, upscale_like]])
    assert order[0] == upscale_like.job_id
    assert order.index(b.job_id) < order.index(a[2].job_id)
    assert [job_id for job_id in order if job_id not in (b.job_id, upscale_like.job_id)] == [s.job_id for s in a]


def test_position_and_eta_follow_the_queue_from_measured_throughput(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    first = spec_for(settings, "40")
    enqueue(redis_conn, settings, first)
    assert eta.position_and_eta(redis_conn, settings, first.job_id) == (1, None)  # nothing measured yet
    run_burst_worker(settings)
    assert eta.average_seconds(redis_conn, settings, settings.default_lane) is not None
    assert eta.jobs_per_minute(redis_conn, settings) > 0

    admin.pause(redis_conn, settings, actor="1")
    waiting = [spec_for(settings, owner) for owner in ("41", "42", "43")]
    for spec in waiting:
        enqueue(redis_conn, settings, spec)
    found = [eta.position_and_eta(redis_conn, settings, spec.job_id) for spec in waiting]
    assert [position for position, _ in found] == [1, 2, 3]
    etas = [seconds for _, seconds in found]
    assert all(seconds is not None and seconds > 0 for seconds in etas)
    assert etas[0] < etas[1] < etas[2]  # type: ignore[operator]

    admin.cancel(redis_conn, settings, actor="1", job_id=waiting[0].job_id)
    assert eta.position_and_eta(redis_conn, settings, waiting[1].job_id)[0] == 1  # the queue moved
    assert eta.position_and_eta(redis_conn, settings, waiting[0].job_id) == (None, None)
    assert eta.position_and_eta(redis_conn, settings, first.job_id) == (None, None)  # finished
    admin.resume(redis_conn, settings, actor="1")
    run_burst_worker(settings)
    state = job_state(redis_conn, waiting[2].job_id)
    assert state is not None and state.status is JobStatus.FINISHED
