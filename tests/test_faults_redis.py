"""Redis killed (SIGKILL) and restarted on the same data folder: with the shipped append-only configuration, queued
jobs and job records survive, and a worker then runs the queued jobs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from shared.jobs.record import JobRecord
from shared.jobs.spec import JobStatus
from shared.queue.client import enqueue, get_queue, job_state
from shared.settings import Settings
from shared.stores.images import get_record, put_record
from shared.stores.redis_server import EmbeddedRedis
from tests.conftest import ROOT, child_env
from tests.test_chain import make_spec

pytestmark = pytest.mark.slow


def test_queued_jobs_and_records_survive_a_redis_crash_and_then_run(
    settings: Settings, settings_env: dict[str, str], redis_server: EmbeddedRedis, redis_conn: redis.Redis
) -> None:
    finished_record = JobRecord(job_id="earlier", spec=make_spec(settings), seeds=(1, 2, 3, 4))
    put_record(redis_conn, settings, finished_record)
    queued = [make_spec(settings, seed=s) for s in (2, 3)]
    for spec in queued:
        enqueue(redis_conn, settings, spec)
    # appendfsync everysec: anything older than a second is on disk when the process dies.
    time.sleep(1.5)
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        redis_conn.ping()

    redis_server.start()
    assert redis_server.started_here
    connection = redis.Redis.from_url(redis_server.url)
    assert get_queue(connection, settings, settings.default_lane).job_ids == [s.job_id for s in queued]
    assert get_record(connection, settings, "earlier") == finished_record
    for spec in queued:
        state = job_state(connection, spec.job_id)
        assert state is not None and state.status is JobStatus.QUEUED and state.spec == spec

    worker = subprocess.run(
        [sys.executable, "-m", "worker", "--burst"],
        cwd=ROOT,
        env=child_env(settings_env),
        timeout=300,
        capture_output=True,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    for spec in queued:
        state = job_state(connection, spec.job_id, settings)
        assert state is not None and state.status is JobStatus.FINISHED, spec.job_id
        assert state.result is not None and state.result.seeds == spec.seeds
