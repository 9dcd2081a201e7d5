"""The queue's client side: how a job crosses Redis (RQ, JSON payload, dotted task path, meta), its state as front ends
show it, and cancelling it.

``enqueue`` puts one job on its lane; ``enqueue_all`` puts a request's jobs and says, per job, which were queued and
why any was not, so every front end tells the member the same way.
"""

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

from shared import allowances, defaults, messages
from shared.errors import MemberFacingError, ResultExpired
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobSpec, JobStatus
from shared.keys import keys_for
from shared.prompt.resolve import check_size
from shared.queue import limits, meta, metrics
from shared.queue.fair_share import FairQueue
from shared.settings import Settings
from shared.stores import images
from shared.stores.connection import wait_for_replica

log = logging.getLogger(__name__)

CALLBACKS = "shared.queue.callbacks"
"""Module of the RQ callbacks (by dotted path, so they are JSON-safe and run in the worker process)."""


def queue_name(settings: Settings, lane: str) -> str:
    """The RQ queue name of ``lane``; an unknown lane is an error naming it and the lanes there are."""
    if lane not in settings.lanes:
        raise ValueError(f"lane must be one of {', '.join(settings.lanes)}, got {lane!r}")
    return keys_for(settings).queue_name(lane)


def get_queue(connection: redis.Redis, settings: Settings, lane: str) -> Queue:
    """The RQ queue of ``lane``, JSON-serialised, with fair-share enqueue and dequeue (``shared.queue.fair_share``)."""
    queue = FairQueue(queue_name(settings, lane), connection=connection, serializer=JSONSerializer)
    queue.settings = settings
    return queue


def all_queues(connection: redis.Redis, settings: Settings) -> list[Queue]:
    """Every lane's queue, in service priority order."""
    return [get_queue(connection, settings, lane) for lane in settings.lanes]


def enqueue(connection: redis.Redis, settings: Settings, spec: JobSpec, roles: Sequence[str] = ()) -> Job:
    """Enqueue ``spec`` on its lane by dotted path with a JSON payload; the RQ job id is the spec's job id.

    A size far beyond the model's native pixel budget is refused (``PromptError``). The owner's ban and queued limit
    are checked and the job counted atomically first (``roles``: the member's role
    ids, for per-role limits); raises ``MemberBanned`` or ``LimitExceeded`` (member-facing). The job is inserted by
    fair share (``shared.queue.fair_share``) and its count is released by RQ callbacks (``shared.queue.callbacks``)
    when it finishes, fails or is stopped.
    """
    queue = get_queue(connection, settings, spec.lane)
    check_size(spec, settings)
    payload = spec.to_dict()
    if isinstance(queue, FairQueue):  # routed to workers that serve the job's model (shared.queue.worker_models)
        queue.route_model = settings.model_key(spec.model)
    try:
        limits.acquire(connection, settings, spec.owner, spec.job_id, roles)
    except MemberFacingError:
        metrics.JOBS.labels(lane=spec.lane, status="refused").inc()
        raise
    try:
        # The member's daily allowance (shared.allowances): taken atomically after the queue limit, given back below
        # if the job does not reach its lane.
        allowances.acquire(connection, settings, spec, roles)
    except MemberFacingError:
        limits.release(connection, settings, spec.job_id)
        metrics.JOBS.labels(lane=spec.lane, status="refused").inc()
        raise
    except BaseException:
        limits.release(connection, settings, spec.job_id)
        raise
    try:
        job = queue.enqueue(
            meta.TASK_PATH,
            payload,
            job_id=spec.job_id,
            job_timeout=settings.job_timeout_s,
            result_ttl=settings.result_ttl_s,
            failure_ttl=settings.failure_ttl_s,
            description=spec.prompt[: defaults.JOB_DESCRIPTION_CHARS],
            meta=meta.initial(spec),
            on_success=Callback(f"{CALLBACKS}.on_job_success"),
            on_failure=Callback(f"{CALLBACKS}.on_job_failure"),
            on_stopped=Callback(f"{CALLBACKS}.on_job_stopped"),
            # Retries are for abandoned jobs only (worker died mid-job); ImagineWorker never retries a job that raised.
            retry=Retry(max=settings.abandoned_job_retries) if settings.abandoned_job_retries > 0 else None,
        )
    except BaseException:
        limits.release(connection, settings, spec.job_id)
        allowances.refund(connection, settings, spec)
        raise
    # With Sentinel: a replica holds the job before the member is told it is queued (no-op otherwise).
    wait_for_replica(connection, settings)
    metrics.JOBS.labels(lane=spec.lane, status="submitted").inc()
    log.info("enqueued job %s (%s) on %s", spec.job_id, spec.kind, queue.name)
    return job


@dataclass(frozen=True)
class Submitted:
    """What became of one job of a request: queued, or not with the member-facing reason."""

    spec: JobSpec
    error: str = ""

    @property
    def queued(self) -> bool:
        return not self.error


def enqueue_all(
    connection: redis.Redis, settings: Settings, specs: Sequence[JobSpec], roles: Sequence[str] = ()
) -> list[Submitted]:
    """Enqueue every spec, each on its own: a job that Redis or the limits refuse does not stop the others, and its
    ``Submitted.error`` says why in member-facing words (Redis errors are logged and become ``messages.NOT_QUEUED``)."""
    outcomes = []
    for spec in specs:
        try:
            enqueue(connection, settings, spec, roles)
        except MemberFacingError as exc:
            outcomes.append(Submitted(spec, str(exc)))
        except redis.RedisError:
            log.exception("could not enqueue job %s", spec.job_id)
            outcomes.append(Submitted(spec, messages.NOT_QUEUED))
        else:
            outcomes.append(Submitted(spec))
    return outcomes


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    """The RQ job ``job_id``, or None if Redis has no record of it (never enqueued, or expired)."""
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


@dataclass(frozen=True)
class JobState:
    """What a front end shows about one of our jobs."""

    job_id: str
    status: JobStatus
    spec: JobSpec
    progress: meta.Progress = field(default_factory=meta.Progress)
    error: str = ""
    """The member-facing sentence of a failed job."""
    result: JobRecord | None = None
    """A finished job's record, read from the result store when ``job_state`` is given the settings (RQ keeps only
    ``files``); None until it finishes, for a cancelled job, or once its record expired."""
    files: dict[str, Any] = field(default_factory=dict)
    """Where a finished job was delivered (``JobRecord.files``: paths, or the Discord message), from RQ's result."""
    canceled: bool = False
    """The member's cancel stopped it (the RQ job may still have finished normally)."""


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


def job_status(job: Job) -> JobStatus:
    """Our status of an RQ job (read from Redis now)."""
    raw = job.get_status(refresh=True)
    return _STATUS.get(str(getattr(raw, "value", raw)), JobStatus.QUEUED)


def job_state(connection: redis.Redis, job_id: str, settings: Settings | None = None) -> JobState | None:
    """Status, progress, record or error of ``job_id``; None if Redis has no record of it or it is not ours.

    With ``settings``, a finished job's record is read from the result store (RQ's result holds only where the job
    was delivered, ``files``), and a job RQ no longer keeps (``RESULT_TTL_S``) is still found there, finished.
    """
    job = fetch_job(connection, job_id)
    if job is None:
        return _stored_state(connection, settings, job_id) if settings is not None else None
    status = job_status(job)
    data = job.get_meta(refresh=True)
    spec = meta.spec_of(job)
    if spec is None:
        return None
    error = ""
    result: JobRecord | None = None
    files: dict[str, Any] = {}
    if status is JobStatus.FINISHED:
        value = job.return_value(refresh=True)
        if isinstance(value, dict) and "spec" in value:  # a full record, as jobs finished before slim results
            result = JobRecord.from_dict(value)
            files = result.files
        elif isinstance(value, dict):
            files = dict(value.get("files") or {})
            if settings is not None and not value.get("canceled"):
                result = _stored_record(connection, settings, job_id)
    elif status is JobStatus.FAILED:
        error = meta.error_of(data) or _last_line(job)
    return JobState(
        job_id=job_id,
        status=status,
        spec=spec,
        progress=meta.progress_of(data),
        error=error,
        result=result,
        files=files,
        canceled=bool(data.get(meta.CANCELED)),
    )


def _stored_record(connection: redis.Redis, settings: Settings, job_id: str) -> JobRecord | None:
    try:
        return images.get_record(connection, settings, job_id)
    except ResultExpired:
        return None


def _stored_state(connection: redis.Redis, settings: Settings, job_id: str) -> JobState | None:
    """A finished job that RQ no longer keeps, from its stored record (None if that is gone too)."""
    record = _stored_record(connection, settings, job_id)
    if record is None:
        return None
    return JobState(
        job_id=job_id,
        status=JobStatus.FINISHED,
        spec=record.spec,
        progress=meta.Progress(fraction=1.0, phase="done"),
        result=record,
        files=record.files,
    )


def _last_line(job: Job) -> str:
    """The exception line of a failed job's traceback (a job refused before our code ran, e.g. a foreign payload)."""
    results = job.results()
    text = results[0].exc_string if results and results[0].exc_string else (job.exc_info or "")
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "the job failed without an error message"


def request_cancel(connection: redis.Redis, settings: Settings, job_id: str) -> str:
    """Cancel ``job_id``: a queued job is removed from its queue now; a running one stops at its next step.

    Returns what happened: ``"canceled"`` (was queued), ``"stopping"`` (running), or ``"not-active"``.
    """
    job = fetch_job(connection, job_id)
    if job is None:
        return "not-active"
    status = job_status(job)
    if status is JobStatus.QUEUED:
        job.cancel()
        limits.release(connection, settings, job_id)
        spec = meta.spec_of(job)
        metrics.JOBS.labels(lane=spec.lane if spec else "", status="canceled").inc()
        return "canceled"
    if status is JobStatus.STARTED:
        connection.set(keys_for(settings).cancel(job_id), "1", ex=settings.job_timeout_s)
        return "stopping"
    return "not-active"


def cancel_requested(connection: redis.Redis, settings: Settings, job_id: str) -> bool:
    """Whether someone asked to cancel the running job ``job_id``."""
    return bool(connection.exists(keys_for(settings).cancel(job_id)))


def job_payload(job: Job) -> dict[str, Any] | None:
    """The spec dict an RQ job carries (for tools that show raw payloads), or None."""
    return meta.spec_data(job)
