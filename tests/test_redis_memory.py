"""Redis memory per finished job (``bench/redis_memory.py`` on a few jobs): RQ keeps a slim result and the spec once,
what stays after RQ's own copy expires fits the goal of 2 KB per job with the filesystem store, and a finished job
RQ no longer keeps is still found, finished, through its stored record."""

from __future__ import annotations

from pathlib import Path

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from bench.redis_memory import run_store, synthetic_png
from shared.jobs.spec import JobStatus
from shared.queue import meta
from shared.queue.client import enqueue, job_state
from shared.settings import Settings
from tests.queue_control import run_burst_worker, spec_for


def test_a_finished_job_leaves_at_most_2_kb_in_redis_with_the_filesystem_store(
    tiny_model: Path, tmp_path: Path
) -> None:
    png = synthetic_png(0)
    assert 1_300_000 < len(png) < 1_800_000  # a 1024 px image of a real model's size
    figures = run_store(
        "filesystem", 10, tmp_path, tiny_model, [png] * 4
    )  # enough jobs that per-process keys (the worker, the rate budget) count as they do at scale
    assert figures["statuses"] == ["finished"]
    kinds = figures["just_finished"]["by_kind_per_job"]
    assert kinds["rq:job:<job>"] < 3300  # the spec once (payload), not twice (meta): about 3.9 KB before
    assert "imagine:message:<message>:job" not in kinds  # the waiting message's key goes with the message
    assert figures["after_result_ttl"]["bytes_per_job"] <= 2048, figures["after_result_ttl"]


def test_rq_keeps_a_slim_result_and_front_ends_read_the_record_from_the_store(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    spec = spec_for(settings, "31")
    enqueue(redis_conn, settings, spec)
    job = Job.fetch(spec.job_id, connection=redis_conn, serializer=JSONSerializer)
    assert meta.SPEC not in job.meta and meta.spec_of(job) == spec  # read from the payload
    run_burst_worker(settings)
    job = Job.fetch(spec.job_id, connection=redis_conn, serializer=JSONSerializer)
    slim = job.return_value()
    assert set(slim) == {"job_id", "files"} and slim["files"]["grid"].endswith("grid.png")
    state = job_state(redis_conn, spec.job_id, settings)
    assert state is not None and state.result is not None and state.result.seeds == spec.seeds
    assert state.files == slim["files"]
    job.delete()  # as when RESULT_TTL_S has passed
    assert job_state(redis_conn, spec.job_id) is None
    gone = job_state(redis_conn, spec.job_id, settings)
    assert gone is not None and gone.status is JobStatus.FINISHED and gone.spec == spec
