"""RQ's success, failure and stopped callbacks of our jobs: release the member's count, record the duration for ETAs,
count metrics.

RQ calls them by dotted path in the worker process with the job and a connection only; the keys come from the job's
queue name (``Keys.of_queue``), so no settings are needed here. RQ also runs the failure callback for a job abandoned
by a dead worker when any worker cleans the started registry.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis

from shared.keys import Keys
from shared.queue import eta, limits, metrics

log = logging.getLogger(__name__)


def on_job_success(job: Any, connection: Redis, result: Any) -> None:
    """Release the count, record throughput and metrics (a cancelled job returns normally, marked cancelled)."""
    canceled = isinstance(result, dict) and bool(result.get("canceled"))
    _finish(job, connection, "canceled" if canceled else "finished")


def on_job_failure(job: Any, connection: Redis, *exc_info: Any) -> None:
    """Release the count, record metrics (also for jobs abandoned by a dead worker)."""
    _finish(job, connection, "failed")


def on_job_stopped(job: Any, connection: Redis) -> None:
    """RQ's stop-job command stopped the job: release the count."""
    _finish(job, connection, "canceled")


def _finish(job: Any, connection: Redis, status: str) -> None:
    keys = Keys.of_queue(job.origin)
    # A job that ends is not waiting, except one RQ re-queued (abandoned, retried): its own lane is the one to clean.
    limits.release_counted(connection, keys, job.id, [keys.lane_list(job.origin.rpartition(":")[2])])
    try:
        eta.record_job(connection, keys, job, status)
        metrics.observe_job(job, status)
    except Exception:  # a statistics failure must never fail the job
        log.exception("could not record statistics of job %s", job.id)
