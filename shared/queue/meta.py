"""What our jobs keep in RQ's job meta, written and read in this one place: the job's spec (readable without
deserialising the call), its phase and progress while a worker runs it, and the member-facing error or cancel mark.

The worker writes progress every denoising step; the bot, the CLI and the queue tools read it back as a ``Progress``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rq.job import Job

from shared.jobs.spec import JobSpec

log = logging.getLogger(__name__)

TASK_PATH = "worker.tasks.run_job"
"""Dotted path of the worker's job function; jobs are enqueued by this string, never by a pickled callable."""

SPEC = "spec"
"""Meta key of jobs queued before the spec was read from the payload: the job spec as a dict (``JobSpec.to_dict``).
New jobs keep the spec once, in RQ's payload (``job.args[0]``)."""
PROGRESS = "progress"
"""Meta key: fraction of the job done, 0.0-1.0."""
STEP = "step"
"""Meta key: denoising steps done."""
TOTAL = "total_steps"
"""Meta key: denoising steps the job runs."""
PHASE = "phase"
"""Meta key: what the worker is doing now (queued, loading, generating, denoising, publishing, done, failed, ...)."""
ERROR = "error"
"""Meta key: the member-facing sentence of a failed job."""
CANCELED = "canceled"
"""Meta key: True once the member's cancel stopped the job."""


@dataclass(frozen=True)
class Progress:
    """Where a worker is with a job, as its meta says."""

    fraction: float = 0.0
    step: int = 0
    total: int = 0
    phase: str = ""


def initial(spec: JobSpec) -> dict[str, Any]:
    """The meta a job is enqueued with: no progress, phase ``queued`` (the spec is RQ's payload, kept once)."""
    return {PROGRESS: 0.0, PHASE: "queued"}


def spec_data(job: Job) -> dict[str, Any] | None:
    """The spec dict of one of our jobs as loaded: its meta's (jobs queued before the payload was the one copy) or
    the payload of ``worker.tasks.run_job`` (no Redis round trip); None for any other job."""
    data = job.meta.get(SPEC) if isinstance(job.meta, dict) else None
    if isinstance(data, dict):
        return data
    try:
        if job.func_name != TASK_PATH or not job.args:
            return None
        payload = job.args[0]
    except Exception:  # an unreadable payload (not JSON, not ours): not one of our jobs
        log.warning("job %s has an unreadable payload", job.id, exc_info=True)
        return None
    return payload if isinstance(payload, dict) else None


def spec_of(job: Job) -> JobSpec | None:
    """The job's spec as loaded (no Redis round trip), or None for jobs that are not ours or unreadable (logged)."""
    data = spec_data(job)
    if not isinstance(data, dict):
        return None
    try:
        return JobSpec.from_dict(data)
    except (ValueError, TypeError, KeyError):
        log.warning("job %s has an unreadable spec in its meta", job.id, exc_info=True)
        return None


def progress_of(meta: dict[str, Any]) -> Progress:
    """The progress recorded in ``meta``."""
    return Progress(
        fraction=float(meta.get(PROGRESS, 0.0)),
        step=int(meta.get(STEP, 0)),
        total=int(meta.get(TOTAL, 0)),
        phase=str(meta.get(PHASE, "")),
    )


def set_phase(job: Job, phase: str) -> None:
    """Record what the worker does now (one small Redis write)."""
    job.meta[PHASE] = phase
    job.save_meta()


def set_progress(job: Job, done: int, total: int) -> None:
    """Record ``done`` of ``total`` denoising steps."""
    job.meta.update({PROGRESS: done / max(total, 1), STEP: done, TOTAL: total, PHASE: "denoising"})
    job.save_meta()


def set_done(job: Job) -> None:
    """Record that the job's result is published."""
    job.meta.update({PROGRESS: 1.0, PHASE: "done"})
    job.save_meta()


def set_failed(job: Job, message: str) -> None:
    """Record the member-facing sentence of a failure."""
    job.meta.update({ERROR: message, PHASE: "failed"})
    job.save_meta()


def set_canceled(job: Job) -> None:
    """Record that the member's cancel stopped the job."""
    job.meta.update({CANCELED: True, PHASE: "canceled"})
    job.save_meta()


def error_of(meta: dict[str, Any]) -> str:
    """The member-facing sentence recorded for a failed job ("" if none)."""
    return str(meta.get(ERROR) or "")
