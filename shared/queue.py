"""Queue helpers: the one place that knows how jobs cross Redis (RQ, JSON payloads, dotted task path, job meta)."""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.job import JobSpec, JobStatus
from shared.redis_server import EmbeddedRedis
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

_embedded: dict[str, EmbeddedRedis] = {}


def redis_url(settings: Settings) -> str:
    """The Redis URL in force: ``REDIS_URL``, else the embedded server's (started if needed)."""
    url = settings.redis_url.get_secret_value()
    if url:
        return url
    key = str(settings.data_dir)
    if key not in _embedded:
        server = EmbeddedRedis(settings.data_dir)
        server.start()
        _embedded[key] = server
        atexit.register(server.stop)
    return _embedded[key].url


def connect(settings: Settings) -> redis.Redis:
    """A Redis connection for ``settings`` (bytes responses, as RQ needs)."""
    return redis.Redis.from_url(redis_url(settings), health_check_interval=30)


def queue_name(settings: Settings, lane: str) -> str:
    """The RQ queue name of ``lane``; an unknown lane is an error naming it and the lanes there are."""
    if lane not in settings.lanes:
        raise ValueError(f"lane must be one of {', '.join(settings.lanes)}, got {lane!r}")
    return f"{settings.queue_prefix}:{lane}"


def get_queue(connection: redis.Redis, settings: Settings, lane: str) -> Queue:
    """The RQ queue of ``lane``, JSON-serialised."""
    return Queue(queue_name(settings, lane), connection=connection, serializer=JSONSerializer)


def all_queues(connection: redis.Redis, settings: Settings) -> list[Queue]:
    """Every lane's queue, in service priority order."""
    return [get_queue(connection, settings, lane) for lane in settings.lanes]


def enqueue(connection: redis.Redis, settings: Settings, spec: JobSpec) -> Job:
    """Enqueue ``spec`` on its lane by dotted path with a JSON payload; the RQ job id is the spec's job id."""
    queue = get_queue(connection, settings, spec.lane)
    payload = spec.to_dict()
    job = queue.enqueue(
        TASK_PATH,
        payload,
        job_id=spec.job_id,
        job_timeout=settings.job_timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        description=spec.prompt[:200],
        meta={META_SPEC: payload, META_PROGRESS: 0.0, META_PHASE: "queued"},
    )
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
        return "canceled"
    if status == "started":
        connection.set(cancel_key(settings, job_id), "1", ex=settings.job_timeout_s)
        return "stopping"
    return "not-active"


def cancel_requested(connection: redis.Redis, settings: Settings, job_id: str) -> bool:
    """Whether someone asked to cancel the running job ``job_id``."""
    return bool(connection.exists(cancel_key(settings, job_id)))
