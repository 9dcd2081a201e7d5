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
from rq.worker import WorkerStatus

from shared import defaults
from shared.queue import limits, metrics
from shared.queue.client import TASK_PATH, all_queues, connect, get_queue
from shared.queue.fair_share import FairQueue
from shared.settings import Settings
from worker import image_moderation, reliability, tasks
from worker.batching import BatchPlan, Follower, claim_followers, spec_of
from worker.engine import Engine

log = logging.getLogger(__name__)


class ImagineWorker(SimpleWorker):
    """Runs jobs in the worker process itself (RQ's forking Worker would reload the model for every job) and
    stops gracefully on SIGTERM: the current job finishes, no new one is taken (RQ's warm shutdown)."""

    queue_class = FairQueue
    """Dequeue side (queue control): round-robin across members, running caps, /queue pause (shared/fair_share.py)."""

    # -- execution side: cross-job batches (worker/batching.py) ---------------------------------------------------

    batch_max_images: int | None = None
    """Most images one batched pass denoises (the leader's included); IMAGES_PER_GRID or less turns batching off.
    None: BATCH_MAX_IMAGES when the resident model is on a GPU, off on a CPU (where batching measured no throughput
    gain and only delays the first jobs, docs/performance.md)."""
    batch_wait_s: float = defaults.BATCH_WAIT_S
    """Seconds to wait for compatible jobs to arrive before a batch starts."""

    def may_claim_follower(self, job: Job, queue: Queue) -> bool:
        """Whether a queued job may join the current batch (the queue-control side overrides this for fair share
        and limits; it is asked before the job leaves its queue)."""
        # Queue control: not while paused, and only within the owner's running cap (counts it as running).
        settings = getattr(self, "settings", None)
        return settings is None or limits.claim(self.connection, settings, job.id)

    def follower_not_claimed(self, job: Job, queue: Queue) -> None:
        """A job ``may_claim_follower`` accepted was taken by another worker first (undo what the hook acquired)."""
        settings = getattr(self, "settings", None)
        if settings is not None:
            limits.unclaim(self.connection, settings, job.id)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job``, with compatible queued jobs batched into its denoising pass when there are any.

        Each follower is removed from its queue atomically, marked started under this worker while the batch runs,
        and ends FINISHED (or FAILED) with its own result through RQ's own success and failure handling, so
        registries, result TTLs and the queue-control side's per-job release all happen per job.
        """
        leader = spec_of(job)
        limit = self.batch_max_images
        if limit is None:
            limit = defaults.BATCH_MAX_IMAGES if tasks.resident_on_accelerator() else defaults.IMAGES_PER_GRID
        if leader is None or limit <= len(leader.seeds) or job.func_name != TASK_PATH:
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
        execution = self.prepare_execution(job)
        for follower in followers:
            follower.execution = self.prepare_execution(follower.job)
            self.prepare_job_execution(follower.job)
        plan = BatchPlan(leader_id=job.id, followers=followers)
        tasks.plan_batch(plan)
        try:
            self.perform_job(job, queue, execution)
        finally:
            tasks.drop_batch_plan(job.id)
            for follower in followers:
                self._finish_follower(follower, plan.outcomes.get(follower.job.id))
            self.set_state(WorkerStatus.IDLE)

    def _finish_follower(self, follower: Follower, outcome: dict[str, object] | BaseException | None) -> None:
        assert follower.execution is not None
        if isinstance(outcome, dict):
            self._finalize_success(follower.job, follower.queue, follower.execution, outcome)
            return
        if outcome is None:
            outcome = RuntimeError(f"the batch led by another job ended before job {follower.job.id} ran")
        try:
            raise outcome
        except BaseException:
            self._finalize_failure(follower.job, follower.queue, follower.execution, sys.exc_info())

    # -- reliability side: abandoned jobs, payload guard, outbox (worker/reliability.py, shared/outbox.py) ----------

    abandon_after_s: int = defaults.WORKER_ABANDON_AFTER_S
    """Seconds a started job's registry entry lives without a heartbeat (``JobHeartbeat`` refreshes it)."""
    settings: Settings | None = None
    """The settings this worker was built with (``build_worker``); used by maintenance to drain the outbox."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short, so a worker killed mid-job is noticed soon (RQ's SimpleWorker uses the job timeout + 60 s)."""
        return self.abandon_after_s

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """Run only JSON payloads of ``worker.tasks.run_job``; anything else fails without running."""
        refusal = reliability.payload_refusal(job)
        if refusal:
            log.error("refusing job %s from %s: %s", job.id, queue.name, refusal)
            reliability.neutralise(job, refusal)
        return super().perform_job(job, queue, execution)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        """A job that raised is not retried (its member was told); retries are for abandoned jobs only."""
        job.retries_left = 0
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance (abandoned jobs re-queued or failed), then results waiting in the outbox re-delivered."""
        super().run_maintenance_tasks()
        if self.settings is not None:
            try:
                reliability.drain_outbox(self.connection, self.settings)
            except Exception:
                log.exception("draining the outbox failed; the next maintenance pass retries")


def build_worker(settings: Settings, lanes: Sequence[str] = (), name: str | None = None) -> ImagineWorker:
    """A worker on ``lanes`` (default: every lane, in priority order) of the configured Redis."""
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
        exception_handlers=[reliability.make_abandoned_handler(settings)],
    )
    worker.abandon_after_s = settings.worker_abandon_after_s
    worker.settings = settings
    return worker


def run_worker(settings: Settings, *, burst: bool = False, lanes: Sequence[str] = (), name: str | None = None) -> int:
    """Load the model once, then serve jobs until stopped (or until the queues are empty with ``burst``)."""
    image_moderation.check_settings(settings)  # a bad hook or action is an error now, not at the first result
    worker = build_worker(settings, lanes, name)
    engine = Engine.load(
        settings.resolve_model(), settings.device, settings.dtype, settings.alignment_clip, settings.layout_strength
    )
    tasks.install_engine(engine)
    log.info("worker %s serving %s", worker.name, ", ".join(q.name for q in worker.queues))
    metrics.start_metrics_server(worker.connection, settings)
    heartbeat = reliability.JobHeartbeat(worker, settings.job_heartbeat_s, settings.worker_abandon_after_s).start()
    try:
        worker.work(burst=burst, logging_level=logging.getLevelName(log.getEffectiveLevel()), with_scheduler=False)
    finally:
        heartbeat.stop()
    return 0


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
