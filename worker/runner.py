"""The RQ worker: a SimpleWorker (jobs run in this process, so the model stays loaded) with the engine preloaded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

from shared import defaults
from shared.keys import Keys
from shared.queue import limits, meta, metrics
from shared.queue.client import all_queues, get_queue
from shared.queue.fair_share import FairQueue
from shared.settings import Settings
from shared.stores import images
from shared.stores.connection import connect
from worker import image_moderation, payload_guard, rq_adapter
from worker.abandoned import make_abandoned_handler
from worker.adapters import adapters_of
from worker.announce import ModelAnnouncer
from worker.batching import Follower, claim_followers
from worker.delivery import drain_outbox
from worker.heartbeat import JobHeartbeat
from worker.runtime import WorkerRuntime, current, install
from worker.tasks import Outcome, run_batch

log = logging.getLogger(__name__)


class ImagineWorker(SimpleWorker):
    """Runs jobs in the worker process itself (RQ's forking Worker would reload the model for every job) and
    stops gracefully on SIGTERM: the current job finishes, no new one is taken (RQ's warm shutdown)."""

    queue_class = FairQueue
    """Dequeue side (queue control): round-robin across members, running caps, /queue pause."""

    runtime: WorkerRuntime | None = None
    """The process's settings and resident engines (``build_worker`` sets it)."""

    # -- execution side: cross-job batches (worker/batching.py) ---------------------------------------------------

    batch_max_images: int | None = None
    """Most images one batched pass denoises (the leader's included); IMAGES_PER_GRID or less turns batching off.
    None: BATCH_MAX_IMAGES when the resident model is on a GPU, off on a CPU (where batching measured no throughput
    gain and only delays the first jobs, docs/performance.md)."""
    batch_wait_s: float = defaults.BATCH_WAIT_S
    """Seconds to wait for compatible jobs to arrive before a batch starts."""

    @property
    def keys(self) -> Keys:
        return Keys.of_queue(self.queues[0].name)

    def may_claim_follower(self, job: Job, queue: Queue) -> bool:
        """Whether a queued job may join the current batch: not while paused, and counted as riding in the leader's
        pass (asked before the job leaves its queue)."""
        return limits.claim(self.connection, self.keys, job.id)

    def follower_not_claimed(self, job: Job, queue: Queue) -> None:
        """A job ``may_claim_follower`` accepted was taken by another worker first (undo what the hook acquired)."""
        limits.unclaim(self.connection, self.keys, job.id)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job``, with compatible queued jobs batched into its denoising pass when there are any."""
        leader = meta.spec_of(job)
        limit = self.batch_max_images
        if limit is None:
            on_gpu = self.runtime is not None and self.runtime.on_accelerator()
            limit = defaults.BATCH_MAX_IMAGES if on_gpu else defaults.IMAGES_PER_GRID
        if leader is None or limit <= len(leader.seeds) or job.func_name != meta.TASK_PATH:
            super().execute_job(job, queue)
            return
        followers = claim_followers(
            self.connection,
            self.queues,
            leader,
            max_images=limit,
            wait_s=self.batch_wait_s,
            may_claim=self.may_claim_follower,
            release=self.follower_not_claimed,
            job_class=self.job_class,
            serializer=self.serializer,
        )
        if not followers:
            super().execute_job(job, queue)
            return
        batch = [Follower(job=job, queue=queue, spec=leader), *followers]
        try:
            self.perform_batch(batch)
        finally:
            self.set_state(WorkerStatus.IDLE)

    def perform_batch(self, batch: list[Follower]) -> None:
        """Run a leader and its followers in one pass and finish each RQ job with its own outcome, through RQ's own
        success and failure handling (registries, result TTLs, callbacks: the per-job release of limits).

        Each job is marked started under this worker while the batch runs; the pass runs under the leader's job
        timeout. A pass that dies without outcomes fails every job with the reason."""
        for member in batch:
            member.execution = self.prepare_execution(member.job)
            self.prepare_job_execution(member.job)
            member.job.started_at = now()
        runtime = self.runtime or current()
        leader = batch[0].job
        outcomes: list[Outcome] = []
        try:
            with self.death_penalty_class(leader.timeout or self.queue_class.DEFAULT_TIMEOUT, JobTimeoutException):
                outcomes = run_batch(runtime, [(member.spec, member.job) for member in batch])
        except Exception as exc:
            log.exception("batch led by %s ended without outcomes", leader.id)
            outcomes = [exc] * len(batch)
        for member, outcome in zip(batch, outcomes, strict=True):
            assert member.execution is not None
            if isinstance(outcome, dict):
                rq_adapter.finalize_success(self, member.job, member.queue, member.execution, outcome)
                continue
            try:
                raise outcome
            except BaseException:
                rq_adapter.finalize_failure(self, member.job, member.queue, member.execution, sys.exc_info())

    # -- reliability side: abandoned jobs, payload guard, outbox (worker/abandoned.py, worker/delivery.py) ---------

    abandon_after_s: int = defaults.WORKER_ABANDON_AFTER_S
    """Seconds a started job's registry entry lives without a heartbeat (``JobHeartbeat`` refreshes it)."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short, so a worker killed mid-job is noticed soon (RQ's SimpleWorker uses the job timeout + 60 s)."""
        return self.abandon_after_s

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """Run only JSON payloads of ``worker.tasks.run_job``; anything else fails without running."""
        refusal = payload_guard.payload_refusal(job)
        if refusal:
            log.error("refusing job %s from %s: %s", job.id, queue.name, refusal)
            payload_guard.neutralise(job, refusal)
        return super().perform_job(job, queue, execution)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        """A job that raised is not retried (its member was told); retries are for abandoned jobs only."""
        job.retries_left = 0
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance (abandoned jobs re-queued or failed), then results waiting in the outbox re-delivered and
        the result store's retention (at most hourly across all workers)."""
        super().run_maintenance_tasks()
        if self.runtime is not None:
            try:
                drain_outbox(self.connection, self.runtime.settings, self.runtime.publisher_for)
            except Exception:
                log.exception("draining the outbox failed; the next maintenance pass retries")
            try:
                images.maybe_sweep(self.connection, self.runtime.settings)
            except Exception:
                log.exception("the result store's retention sweep failed; a later maintenance pass retries")


def build_worker(
    settings: Settings, lanes: Sequence[str] = (), name: str | None = None, runtime: WorkerRuntime | None = None
) -> ImagineWorker:
    """A worker on ``lanes`` (default: every lane, in priority order) of the configured Redis, with ``runtime`` (a
    new one for ``settings`` when not given; its engines are loaded by ``run_worker``)."""
    runtime = runtime or WorkerRuntime(settings)
    connection = connect(settings)
    queues = [get_queue(connection, settings, lane) for lane in lanes] if lanes else all_queues(connection, settings)
    worker = ImagineWorker(
        queues,
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        maintenance_interval=settings.worker_maintenance_s,
        # RQ's idle dequeue waits worker_ttl - 15 s before maintenance gets a turn.
        worker_ttl=settings.worker_maintenance_s + 15,
        exception_handlers=[make_abandoned_handler(settings, runtime.publisher_for)],
    )
    worker.abandon_after_s = settings.worker_abandon_after_s
    worker.runtime = runtime
    served = settings.worker_model_keys()
    for queue in worker.queues:  # the fair-share dequeue gives this worker only jobs of the models it serves
        if isinstance(queue, FairQueue):
            queue.models = served
    return worker


def run_worker(settings: Settings, *, burst: bool = False, lanes: Sequence[str] = (), name: str | None = None) -> int:
    """Load the model once, then serve jobs until stopped (or until the queues are empty with ``burst``)."""
    rq_adapter.check_rq()  # an RQ this worker was not written for fails here, not in the middle of a batch
    image_moderation.check_settings(settings)  # a bad hook or action is an error now, not at the first result
    runtime = install(WorkerRuntime(settings))
    worker = build_worker(settings, lanes, name, runtime)
    # the model's adapters (a configured IP-Adapter is loaded now, not in the first job: worker.adapters)
    adapters_of(runtime.engine_for(preloaded_model(settings)), settings)
    log.info("worker %s serving %s", worker.name, ", ".join(q.name for q in worker.queues))
    metrics.start_metrics_server(worker.connection, settings)
    announcer = ModelAnnouncer(worker.connection, settings, worker.name, runtime).start()
    heartbeat = JobHeartbeat(worker, settings.job_heartbeat_s, settings.worker_abandon_after_s).start()
    try:
        worker.work(burst=burst, logging_level=logging.getLevelName(log.getEffectiveLevel()), with_scheduler=False)
    finally:
        heartbeat.stop()
        announcer.stop()
    return 0


def preloaded_model(settings: Settings) -> str:
    """The model a worker loads before taking jobs: ``MODEL`` when it serves it, else the first of
    ``WORKER_MODELS``."""
    listed = [item.strip() for item in settings.worker_models.split(",") if item.strip()]
    if not listed or settings.model_key() in settings.worker_model_keys():
        return settings.model
    return listed[0]


def visible_gpus() -> list[str]:
    """Indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES if set, else all torch sees)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [item.strip() for item in listed.split(",") if item.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def run_per_gpu(argv: Sequence[str], gpus: Sequence[str]) -> int:
    """One worker process per GPU (each sees only its GPU); SIGTERM/SIGINT are passed on for a graceful drain."""
    if not gpus:
        raise ValueError("--gpus all found no GPU (CUDA_VISIBLE_DEVICES is empty and torch sees none)")
    children = []
    for index, gpu in enumerate(gpus):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
        if int(os.environ.get("METRICS_PORT", "0") or 0):  # one metrics port per GPU process: base + index
            env["METRICS_PORT"] = str(int(os.environ["METRICS_PORT"]) + index)
        child_args = [sys.executable, "-m", "worker", *argv, "--name-suffix", f"gpu{gpu}"]
        children.append(subprocess.Popen(child_args, env=env))
        log.info("started worker %d on GPU %s (pid %d)", index, gpu, children[-1].pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for child in children:
        while child.poll() is None:
            time.sleep(0.5)
        codes.append(child.returncode)
    return max(codes, default=0)
