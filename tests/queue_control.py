"""Helpers of the queue-control tests: job specs per member, an in-process burst worker, start order."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.jobs.spec import JobSpec, derive_seeds, new_job_id
from shared.settings import Settings


def spec_for(settings: Settings, owner: str, *, seed: int = 1, steps: int = 2, lane: str = "") -> JobSpec:
    """A tiny job (32x32, few steps) of ``owner``."""
    return JobSpec(
        job_id=new_job_id(),
        owner=owner,
        prompt=f"a red circle by {owner}",
        parts=(("a red circle", 1.0),),
        negative=(),
        width=32,
        height=32,
        steps=steps,
        guidance=5.0,
        seeds=derive_seeds(seed),
        lane=lane or settings.default_lane,
    )


def run_burst_worker(settings: Settings, *, batch: bool = False) -> None:
    """Serve the queues in this process until they are empty (a real ``ImagineWorker``; batching off unless asked)."""
    from worker.runner import build_worker
    from worker.runtime import WorkerRuntime, install

    worker = build_worker(settings, runtime=install(WorkerRuntime(settings)))
    if not batch:
        worker.batch_max_images = 0
    worker.work(burst=True, with_scheduler=False)


def started_order(connection: redis.Redis, job_ids: list[str]) -> list[str]:
    """``job_ids`` sorted by the time a worker started them."""
    jobs = [Job.fetch(job_id, connection=connection, serializer=JSONSerializer) for job_id in job_ids]
    assert all(job.started_at is not None for job in jobs), [job.get_status() for job in jobs]
    return [job.id for job in sorted(jobs, key=lambda job: job.started_at)]  # type: ignore[arg-type, return-value]


def wait_until(predicate: Callable[[], bool], timeout: float = 120.0, every: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")
