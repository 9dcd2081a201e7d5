"""Cross-job batching: which queued jobs may share one denoising pass, and claiming them from RQ queues.

A worker that takes a job (the *leader*) looks at the jobs waiting on its queues for *followers* with the same
``batch_key`` (model, size, steps, LoRA set; prompts, seeds, guidance and members may differ), up to a number of
images and for a short wait. A follower is claimed with one ``LREM`` on its queue (atomic: when two workers race,
exactly one removes it), then marked started under the claiming worker (``worker.runner.ImagineWorker``). The engine
runs the batch (``Engine.generate_batch``) and ``worker.tasks`` publishes every job's result on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue

from shared import defaults
from shared.jobs.spec import JobKind, JobSpec
from shared.queue import meta

log = logging.getLogger(__name__)

BatchKey = tuple[str, int, int, int, tuple[tuple[str, float], ...]]
"""(model, width, height, steps, LoRA set): jobs with equal keys can share one denoising pass (one LoRA set is applied
to the whole pass, so jobs with different sets never share one)."""


def batch_key(spec: JobSpec) -> BatchKey | None:
    """The key a job batches under, or None for jobs that always run alone (upscales, variations, image prompts,
    references, ``--tile`` and ``--stop``, whose loops differ from the plain text-to-image one)."""
    if spec.kind is not JobKind.GRID or spec.source is not None or spec.image_urls or spec.references:
        return None
    if spec.tile or spec.stop < 100 or spec.strength < 1.0:
        return None
    return (spec.model, spec.width, spec.height, spec.steps, spec.loras)


@dataclass
class Follower:
    """A job of a batch: the leader the worker dequeued, or a queued job claimed into its pass."""

    job: Job
    queue: Queue
    spec: JobSpec
    execution: Execution | None = None


ClaimHook = Callable[[Job, Queue], bool]
"""Asked before a queued job is removed to join a batch; False leaves it queued (fair share and limits)."""
ReleaseHook = Callable[[Job, Queue], None]
"""Called when a job the claim hook accepted could not be removed (another worker took it first)."""


def claim_followers(
    connection: redis.Redis,
    queues: Sequence[Queue],
    leader: JobSpec,
    *,
    max_images: int,
    wait_s: float,
    scan_depth: int = defaults.BATCH_SCAN_DEPTH,
    may_claim: ClaimHook | None = None,
    release: ReleaseHook | None = None,
    job_class: type[Job] = Job,
    serializer: Any = None,
) -> list[Follower]:
    """Claim queued jobs compatible with ``leader`` until the batch holds ``max_images`` images or ``wait_s`` passed.

    Looks at the first ``scan_depth`` jobs of each queue, in the worker's queue order. A job is ours only when LREM
    removed it (an atomic test-and-take); jobs taken by another worker meanwhile are skipped.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    if wait_s < 0:
        raise ValueError(f"wait_s must be >= 0, got {wait_s}")
    key = batch_key(leader)
    budget = max_images - len(leader.seeds)
    if key is None or budget <= 0:
        return []
    claimed: list[Follower] = []
    seen: set[str] = set()
    deadline = time.monotonic() + wait_s
    while True:
        for queue in queues:
            if budget <= 0:
                break
            for raw in connection.lrange(queue.key, 0, scan_depth - 1):
                job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
                if job_id in seen:
                    continue
                seen.add(job_id)
                follower = _try_claim(
                    connection,
                    queue,
                    job_id,
                    key=key,
                    budget=budget,
                    may_claim=may_claim,
                    release=release,
                    job_class=job_class,
                    serializer=serializer,
                )
                if follower is not None:
                    claimed.append(follower)
                    budget -= len(follower.spec.seeds)
                    if budget <= 0:
                        break
        if budget <= 0 or time.monotonic() >= deadline:
            break
        time.sleep(min(defaults.BATCH_POLL_S, max(0.0, deadline - time.monotonic())))
        seen.clear()  # a job skipped for the budget stays skipped; new arrivals get looked at
    if claimed:
        log.info("job %s leads a batch with %s", leader.job_id, ", ".join(f.job.id for f in claimed))
    return claimed


def _try_claim(
    connection: redis.Redis,
    queue: Queue,
    job_id: str,
    *,
    key: BatchKey,
    budget: int,
    may_claim: ClaimHook | None,
    release: ReleaseHook | None,
    job_class: type[Job],
    serializer: Any,
) -> Follower | None:
    try:
        job = job_class.fetch(job_id, connection=connection, serializer=serializer)
    except Exception:  # an expired or foreign job: not a follower
        return None
    spec = meta.spec_of(job)
    if spec is None or batch_key(spec) != key or len(spec.seeds) > budget:
        return None
    if job.func_name != meta.TASK_PATH or job.get_status(refresh=False) != "queued":
        return None
    if may_claim is not None and not may_claim(job, queue):
        return None
    if int(connection.lrem(queue.key, 1, job_id)) != 1:
        if release is not None:
            release(job, queue)
        return None
    return Follower(job=job, queue=queue, spec=spec)
