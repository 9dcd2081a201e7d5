"""What keeps jobs from being lost or let in wrongly on a worker: the job heartbeat, the payload guard, and the
handling of abandoned jobs (their worker died mid-job).

Why a heartbeat thread: RQ's ``SimpleWorker`` runs the job in its own thread, so it cannot refresh the job's entry
in the started registry while the model denoises. RQ then sets that entry's expiry to the job timeout + 60 s, and a
worker killed mid-job is only noticed after that (15 minutes by default). Here the entry expires
``worker_abandon_after_s`` after the last heartbeat, and a thread refreshes every entry of this worker each
``job_heartbeat_s``; a dead worker stops refreshing, and the next maintenance pass of any worker (every
``worker_maintenance_s``) finds the job abandoned: RQ re-queues it while it has retries left (jobs are enqueued with
``Retry(max=abandoned_job_retries)``), else fails it, and ``on_abandoned`` tells the member.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from PIL import Image
from rq.defaults import RQ_KEY_PREFIX
from rq.exceptions import AbandonedJobError, DeserializationError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.utils import current_timestamp

from shared import defaults
from shared.jobs.spec import JobSpec
from shared.queue.client import META_PHASE, META_SPEC, TASK_PATH
from shared.settings import Settings
from shared.stores.outbox import Outbox, OutboxEntry

log = logging.getLogger(__name__)

REFUSE_PATH = "worker.reliability.refuse_payload"
"""Dotted path that a refused job is pointed at instead of its own function, so RQ fails it the ordinary way."""

ABANDONED_MESSAGE = "The worker running this job stopped unexpectedly (it was retried); please try again."
"""What the member is told when a job's worker died on its last try."""


class PayloadRefused(RuntimeError):
    """A job in Redis that this worker will not run (not JSON, or not the imagine job function)."""


def payload_refusal(job: Job) -> str:
    """Why ``job`` may not run here, or ``""``: only ``worker.tasks.run_job`` with one dict argument, from JSON."""
    try:
        func_name = job.func_name
        args, kwargs = job.args, job.kwargs
    except DeserializationError:
        return "its payload is not JSON (pickled or corrupt payloads are never run)"
    if func_name != TASK_PATH:
        return f"its function is {func_name!r}; workers run only {TASK_PATH}"
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        return "its arguments must be one JSON object (the job spec)"
    return ""


def neutralise(job: Job, reason: str) -> None:
    """Point ``job`` at ``refuse_payload`` so the worker fails it through RQ's own failure path without running it."""
    job.func_name = REFUSE_PATH
    job.args = (reason,)
    job.kwargs = {}
    job._instance = None  # the deserialisation failed, so RQ never set it


def refuse_payload(reason: str) -> None:
    """The stand-in function of a refused job: fails it with ``reason``."""
    raise PayloadRefused(f"job refused: {reason}")


class JobHeartbeat:
    """A daemon thread that pushes the started-registry expiry of every job this worker runs ``ttl_s`` ahead."""

    def __init__(self, worker: Any, every_s: float, ttl_s: int) -> None:
        if every_s <= 0 or ttl_s <= every_s:
            raise ValueError(f"job heartbeat needs 0 < every_s < ttl_s, got every_s={every_s}, ttl_s={ttl_s}")
        self.worker = worker
        self.every_s = every_s
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def start(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 1)

    def beat(self) -> int:
        """Refresh this worker's active executions once; returns how many registry entries were refreshed.

        The executions come from the worker's memory (``worker.executions``) and its Redis index; the index expires
        with the worker's own heartbeat, which RQ sets to the short job TTL when a job starts, so it is refreshed
        here too while jobs run.
        """
        connection = self.worker.connection
        composites = {execution.composite_key for execution in list(self.worker.executions.values())}
        composites |= {_text(raw) for raw in connection.smembers(self.worker.executions_key)}
        if not composites:
            return 0
        expiry = current_timestamp() + self.ttl_s
        with connection.pipeline() as pipe:
            self.worker.heartbeat(self.ttl_s + 60, pipeline=pipe)
            for composite in sorted(composites):
                for queue in self.worker.queues:
                    key = StartedJobRegistry(queue.name, connection=connection).key
                    pipe.zadd(key, {composite: expiry}, xx=True, ch=True)
                pipe.expire(f"{RQ_KEY_PREFIX}:execution:{composite}", self.ttl_s)
            results = pipe.execute()
        return sum(value for value in results if type(value) is int and value > 0)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except Exception:  # a Redis blip must not kill the thread; the next beat retries
                log.warning("job heartbeat failed; retrying in %.1f s", self.every_s, exc_info=True)


def spec_of(job: Job) -> JobSpec | None:
    """The job's spec from its meta (readable without running anything), or None."""
    try:
        data = job.get_meta(refresh=False).get(META_SPEC)
        return JobSpec.from_dict(data) if isinstance(data, dict) else None
    except Exception:
        return None


def make_abandoned_handler(settings: Settings) -> Any:
    """An RQ exception handler: when a job is found abandoned and has no retry left, record and tell the member."""

    def on_abandoned(
        job: Job, exc_type: type[BaseException], exc_value: BaseException, tb: TracebackType | None
    ) -> bool:
        if not issubclass(exc_type, AbandonedJobError):
            return True
        retries_left = job.retries_left or 0
        if retries_left > 0:
            log.warning("job %s was abandoned by its worker; re-queued (%d retry left)", job.id, retries_left)
            return True
        log.error("job %s was abandoned by its worker on its last try; failing it", job.id)
        spec = spec_of(job)
        try:
            job.meta.update({"error": ABANDONED_MESSAGE, META_PHASE: "failed"})
            job.save_meta()
        except Exception:
            log.warning("could not record the failure of job %s", job.id, exc_info=True)
        if spec is not None:
            from worker.tasks import make_publisher

            try:
                make_publisher(spec.delivery, settings).failed(spec, ABANDONED_MESSAGE)
            except Exception:
                log.exception("could not tell the member that job %s failed", job.id)
        return True

    return on_abandoned


def deliver(connection: Any, settings: Settings, publisher: Any, result: Any) -> dict[str, Any]:
    """Moderate, then publish ``result`` (a ``worker.publisher.JobResult``); returns what the record's ``files`` get.

    A withheld result is not posted (the member is told); a publish that fails after the publisher's own retries is
    kept in the outbox for the maintenance pass to re-deliver, so the job still finishes and nothing is dropped.
    """
    from worker import image_moderation

    spec = result.spec
    verdict = image_moderation.moderate(list(result.images), settings)
    if verdict.flagged:
        result.record["moderation"] = verdict.as_record()
        image_moderation.report(connection, settings, spec.job_id, spec.owner, verdict)
        if verdict.action == "withhold":
            publisher.failed(spec, image_moderation.WITHHELD_MESSAGE)
            return {"withheld": True}
        result.spoiler = True
    try:
        return dict(publisher.publish(result))
    except Exception as exc:
        if connection is None:
            raise
        error = f"{type(exc).__name__}: {exc}"
        record = dict(result.record)
        record["delivery"] = {"pending": True, "images": len(result.images), "spoiler": bool(result.spoiler)}
        Outbox(connection, settings).put(spec.job_id, record, error)
        log.exception("job %s made its images but could not deliver them; kept in the outbox", spec.job_id)
        return {"pending": True, "error": error}


def drain_outbox(
    connection: Any, settings: Settings, publisher_for: Callable[[Any, Settings], Any] | None = None
) -> tuple[int, int]:
    """Re-deliver the outbox's due results from the image store; returns (delivered, failed) counts."""
    from shared.stores.images import get_image, put_record
    from worker.grid import compose_grid
    from worker.publisher import JobResult
    from worker.tasks import make_publisher

    make = publisher_for or make_publisher

    def deliver_one(entry: OutboxEntry) -> None:
        spec = JobSpec.from_dict(entry.record["spec"])
        delivery = entry.record.get("delivery", {})
        count = int(delivery.get("images", len(spec.seeds)))
        images = [
            Image.open(io.BytesIO(get_image(connection, settings, spec.job_id, index))).convert("RGB")
            for index in range(count)
        ]
        grid = compose_grid(images) if len(images) == defaults.IMAGES_PER_GRID else None
        record = {key: value for key, value in entry.record.items() if key != "delivery"}
        result = JobResult(spec=spec, images=images, grid=grid, record=record)
        result.spoiler = bool(delivery.get("spoiler", False))
        record["files"] = make(spec.delivery, settings).publish(result)
        put_record(connection, settings, spec.job_id, record)

    return Outbox(connection, settings).drain(deliver_one)


FAULT_MARKER = "[fault]"
"""Prompt text that triggers ``settings.fault_injection`` (tests only; the setting is empty in production)."""


def inject_fault(settings: Settings, spec: JobSpec) -> None:
    """Raise the configured test fault for jobs whose prompt contains ``FAULT_MARKER``: ``oom`` raises torch's
    out-of-memory error after really allocating, ``error`` a plain internal error. No-op when the setting is empty."""
    if not settings.fault_injection or FAULT_MARKER not in spec.prompt:
        return
    import torch

    if settings.fault_injection == "oom":
        # A real allocation first, so the recovery path has something to free (64 MiB).
        ballast = torch.empty(16 * 1024 * 1024, dtype=torch.float32)
        _ballast.append(ballast)
        raise torch.cuda.OutOfMemoryError(f"injected out-of-memory fault ({ballast.numel() * 4} bytes held)")
    if settings.fault_injection == "error":
        raise RuntimeError("injected internal fault")
    raise ValueError(f"FAULT_INJECTION must be '', 'oom' or 'error', got {settings.fault_injection!r}")


_ballast: list[Any] = []


def free_memory(exc: BaseException) -> None:
    """After a failed job: drop what it held (caches, injected ballast) so the worker keeps serving."""
    import gc

    import torch

    _ballast.clear()
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        log.warning("job ran out of memory; freeing caches before the next job")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
