"""Queue helpers: the one place that knows how jobs cross Redis (RQ, JSON payloads, dotted task path, job meta)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Callback, Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from shared import connection as connections
from shared import limits, metrics
from shared.fair_share import FairQueue
from shared.job import JobSpec, JobStatus
from shared.settings import Settings

log = logging.getLogger(__name__)

TASK_PATH = "worker.tasks.run_job"
"""Dotted path of the worker's job function; jobs are enqueued by this string, never by a pickled callable."""

META_PROGRESS = "progress"
"""Job meta key: fraction of the job done, 0.0-1.0."""
META_STEP = "step"
"""Job meta key: denoising steps done."""
META_TOTAL = "total_steps"
"""Job meta key: denoising steps the job runs."""
META_PHASE = "phase"
"""Job meta key: what the worker is doing now (loading, encoding, denoising, decoding, publishing)."""
META_SPEC = "spec"
"""Job meta key: the job spec as a dict, readable without deserialising the call arguments."""


def redis_url(settings: Settings) -> str:
    """The Redis URL in force (``shared.connection.redis_url``: ``REDIS_URL``, else the embedded server's)."""
    return connections.redis_url(settings)


def connect(settings: Settings) -> redis.Redis:
    """A Redis connection for ``settings`` (``shared.connection.connect``: URL, TLS, embedded or Sentinel)."""
    return connections.connect(settings)


def queue_name(settings: Settings, lane: str) -> str:
    """The RQ queue name of ``lane``; an unknown lane is an error naming it and the lanes there are."""
    if lane not in settings.lanes:
        raise ValueError(f"lane must be one of {', '.join(settings.lanes)}, got {lane!r}")
    return f"{settings.queue_prefix}:{lane}"


def get_queue(connection: redis.Redis, settings: Settings, lane: str) -> Queue:
    """The RQ queue of ``lane``, JSON-serialised, with fair-share enqueue and dequeue (``shared.fair_share``)."""
    queue = FairQueue(queue_name(settings, lane), connection=connection, serializer=JSONSerializer)
    queue.settings = settings
    return queue


def all_queues(connection: redis.Redis, settings: Settings) -> list[Queue]:
    """Every lane's queue, in service priority order."""
    return [get_queue(connection, settings, lane) for lane in settings.lanes]


def enqueue(connection: redis.Redis, settings: Settings, spec: JobSpec, roles: Sequence[str] = ()) -> Job:
    """Enqueue ``spec`` on its lane by dotted path with a JSON payload; the RQ job id is the spec's job id.

    The owner's ban and queued limit are checked and the job counted atomically first (``roles``: the member's role
    ids, for per-role limits); raises ``shared.limits.MemberBanned`` or ``shared.limits.LimitExceeded``, both
    ``ValueError`` whose message is the member-facing sentence. The job is inserted by fair share
    (``shared.fair_share``) and its count is released by RQ callbacks when it finishes, fails or is stopped.
    """
    queue = get_queue(connection, settings, spec.lane)
    payload = spec.to_dict()
    try:
        limits.acquire(connection, settings, spec.owner, spec.job_id, roles)
    except (limits.LimitExceeded, limits.MemberBanned):
        metrics.JOBS.labels(lane=spec.lane, status="refused").inc()
        raise
    try:
        job = queue.enqueue(
            TASK_PATH,
            payload,
            job_id=spec.job_id,
            job_timeout=settings.job_timeout_s,
            result_ttl=settings.result_ttl_s,
            failure_ttl=settings.failure_ttl_s,
            description=spec.prompt[:200],
            meta={META_SPEC: payload, META_PROGRESS: 0.0, META_PHASE: "queued"},
            on_success=Callback("shared.limits.on_job_success"),
            on_failure=Callback("shared.limits.on_job_failure"),
            on_stopped=Callback("shared.limits.on_job_stopped"),
            # Retries are for abandoned jobs only (worker died mid-job); ImagineWorker never retries a job that raised.
            retry=Retry(max=settings.abandoned_job_retries) if settings.abandoned_job_retries > 0 else None,
        )
    except BaseException:
        limits.release(connection, settings, spec.job_id)
        raise
    metrics.JOBS.labels(lane=spec.lane, status="submitted").inc()
    log.info("enqueued job %s (%s) on %s", spec.job_id, spec.kind, queue.name)
    return job


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    """The RQ job ``job_id``, or None if Redis has no record of it (never enqueued, or expired)."""
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


@dataclass(frozen=True)
class JobState:
    """What a front end shows about a job."""

    job_id: str
    status: JobStatus
    progress: float = 0.0
    phase: str = ""
    step: int = 0
    total_steps: int = 0
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)


_STATUS = {
    "queued": JobStatus.QUEUED,
    "deferred": JobStatus.QUEUED,
    "scheduled": JobStatus.QUEUED,
    "started": JobStatus.STARTED,
    "finished": JobStatus.FINISHED,
    "failed": JobStatus.FAILED,
    "stopped": JobStatus.CANCELED,
    "canceled": JobStatus.CANCELED,
}


def job_state(connection: redis.Redis, job_id: str) -> JobState | None:
    """Status, progress, result or error of ``job_id``; None if Redis has no record of it."""
    job = fetch_job(connection, job_id)
    if job is None:
        return None
    raw_status = job.get_status(refresh=True)
    status = _STATUS.get(str(getattr(raw_status, "value", raw_status)), JobStatus.QUEUED)
    meta = job.get_meta(refresh=True)
    error = ""
    result: dict[str, Any] = {}
    if status is JobStatus.FINISHED:
        value = job.return_value(refresh=True)
        result = value if isinstance(value, dict) else {}
    elif status is JobStatus.FAILED:
        error = str(meta.get("error") or _last_line(job))
    return JobState(
        job_id=job_id,
        status=status,
        progress=float(meta.get(META_PROGRESS, 0.0)),
        phase=str(meta.get(META_PHASE, "")),
        step=int(meta.get(META_STEP, 0)),
        total_steps=int(meta.get(META_TOTAL, 0)),
        error=error,
        result=result,
        spec=dict(meta.get(META_SPEC, {})),
    )


def _last_line(job: Job) -> str:
    """The exception line of a failed job's traceback (the member-facing part)."""
    results = job.results()
    text = results[0].exc_string if results and results[0].exc_string else (job.exc_info or "")
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "the job failed without an error message"


def cancel_key(settings: Settings, job_id: str) -> str:
    """Redis key whose presence asks the worker running ``job_id`` to stop at its next denoising step."""
    return f"{settings.queue_prefix}:cancel:{job_id}"


def request_cancel(connection: redis.Redis, settings: Settings, job_id: str) -> str:
    """Cancel ``job_id``: a queued job is removed from its queue now; a running one stops at its next step.

    Returns what happened: ``"canceled"`` (was queued), ``"stopping"`` (running), or ``"not-active"``.
    """
    job = fetch_job(connection, job_id)
    if job is None:
        return "not-active"
    status = str(getattr(job.get_status(refresh=True), "value", job.get_status()))
    if status in {"queued", "deferred", "scheduled"}:
        job.cancel()
        limits.release(connection, settings, job_id)
        metrics.JOBS.labels(lane=str(job.meta.get(META_SPEC, {}).get("lane", "")), status="canceled").inc()
        return "canceled"
    if status == "started":
        connection.set(cancel_key(settings, job_id), "1", ex=settings.job_timeout_s)
        return "stopping"
    return "not-active"


def cancel_requested(connection: redis.Redis, settings: Settings, job_id: str) -> bool:
    """Whether someone asked to cancel the running job ``job_id``."""
    return bool(connection.exists(cancel_key(settings, job_id)))
