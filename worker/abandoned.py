"""Jobs abandoned by their worker (it died mid-job; ``worker.heartbeat`` stops and RQ's maintenance finds them): RQ
re-queues one while it has retries left (jobs are enqueued with ``Retry(max=abandoned_job_retries)``); on its last
try it fails, the member is told and the audit log records it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from rq.exceptions import AbandonedJobError
from rq.job import Job

from shared import messages
from shared.i18n import use_locale
from shared.jobs.spec import Delivery
from shared.queue import meta
from shared.settings import Settings
from shared.stores import audit_log
from worker.publisher import Publisher

log = logging.getLogger(__name__)

ExceptionHandler = Callable[[Job, type[BaseException], BaseException, TracebackType | None], bool]
"""RQ's exception handler signature (True: let the next handler run)."""


def make_abandoned_handler(settings: Settings, publisher_for: Callable[[Delivery], Publisher]) -> ExceptionHandler:
    """An RQ exception handler: a job found abandoned with no retry left is failed with ``messages.ABANDONED``, its
    member told through ``publisher_for(delivery)``, and an ``job_abandoned`` entry written to the audit log."""

    def on_abandoned(
        job: Job, exc_type: type[BaseException], exc_value: BaseException, tb: TracebackType | None
    ) -> bool:
        if not issubclass(exc_type, AbandonedJobError):
            return True
        retries_left = job.retries_left or 0
        spec = meta.spec_of(job)
        final = retries_left <= 0
        _audit(job, settings, final, spec.owner if spec else "")
        if not final:
            log.warning("job %s was abandoned by its worker; re-queued (%d retry left)", job.id, retries_left)
            return True
        log.error("job %s was abandoned by its worker on its last try; failing it", job.id)
        try:
            meta.set_failed(job, messages.ABANDONED)
        except Exception:
            log.warning("could not record the failure of job %s", job.id, exc_info=True)
        if spec is not None:
            try:
                with use_locale(spec.delivery.locale):
                    publisher_for(spec.delivery).failed(spec, messages.ABANDONED)
            except Exception:
                log.exception("could not tell the member that job %s failed", job.id)
        return True

    return on_abandoned


def _audit(job: Job, settings: Settings, final: bool, owner: str) -> None:
    audit_log.record(
        job.connection,
        settings,
        "job_abandoned",
        actor="worker",
        job_id=job.id,
        owner=owner,
        outcome="failed" if final else "requeued",
        worker=job.worker_name or "",
    )
