"""Workers run only JSON payloads of ``worker.tasks.run_job``: a pickled job written to Redis by hand, or a JSON job
naming another function, fails without running, and the worker goes on to serve real jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

from shared.jobs.spec import JobStatus
from shared.queue.client import enqueue, job_state, queue_name
from shared.settings import Settings
from tests.conftest import ROOT, child_env
from worker.payload_guard import payload_refusal

pytestmark = pytest.mark.slow


def touch_marker(path: str) -> None:
    """What an attacker's job would do if a worker ran it."""
    Path(path).write_text("executed")


def test_pickled_and_foreign_function_jobs_fail_without_running(
    settings: Settings, settings_env: dict[str, str], redis_conn: redis.Redis, tmp_path: Path
) -> None:
    lane = queue_name(settings, settings.default_lane)
    pickled_marker = tmp_path / "pickled-ran"
    foreign_marker = tmp_path / "foreign-ran"
    # Written by hand with RQ's pickle serializer onto our lane, as someone with Redis access could.
    pickled = Queue(lane, connection=redis_conn, serializer=DefaultSerializer).enqueue(
        touch_marker, str(pickled_marker), job_id="pickled-job"
    )
    raw = redis_conn.hget(f"rq:job:{pickled.id}", "data")
    assert isinstance(raw, bytes) and raw.startswith(b"x\x9c")  # zlib around a pickle
    foreign = Queue(lane, connection=redis_conn, serializer=JSONSerializer).enqueue(
        "tests.test_payloads.touch_marker", str(foreign_marker), job_id="foreign-job"
    )
    from tests.test_chain import make_spec

    real = make_spec(settings)
    enqueue(redis_conn, settings, real)

    worker = subprocess.run(
        [sys.executable, "-m", "worker", "--burst"],
        cwd=ROOT,
        env=child_env(settings_env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert not pickled_marker.exists()
    assert not foreign_marker.exists()
    for job_id, reason in (("pickled-job", "not JSON"), ("foreign-job", "workers run only worker.tasks.run_job")):
        job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
        assert job.get_status() == "failed", job_id
        assert reason in (job.results()[0].exc_string or ""), job_id
        assert f"refusing job {job_id}" in worker.stderr
    state = job_state(redis_conn, real.job_id)
    assert state is not None and state.status is JobStatus.FINISHED
    assert foreign.id == "foreign-job"


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "reason"),
    [
        ("worker.tasks.run_job", ({"job_id": "x"},), {}, ""),
        ("os.system", ("touch /tmp/x",), {}, "workers run only"),
        ("worker.tasks.run_job", ("not a dict",), {}, "one JSON object"),
        ("worker.tasks.run_job", ({}, {}), {}, "one JSON object"),
        ("worker.tasks.run_job", ({},), {"extra": 1}, "one JSON object"),
    ],
)
def test_payload_refusal_names_the_reason(
    redis_conn: redis.Redis, func: str, args: tuple[object, ...], kwargs: dict[str, object], reason: str
) -> None:
    job = Job.create(func, args=args, kwargs=kwargs, connection=redis_conn, serializer=JSONSerializer)
    refusal = payload_refusal(job)
    assert (reason in refusal) if reason else refusal == ""
