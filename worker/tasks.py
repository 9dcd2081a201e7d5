"""The job function RQ runs (enqueued by the dotted path ``worker.tasks.run_job``) and the resident engines."""

from __future__ import annotations

import io
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from rq import get_current_job
from rq.job import Job

from shared import defaults
from shared.jobs.spec import Delivery, JobKind, JobSpec
from shared.queue.client import META_PHASE, META_PROGRESS, META_STEP, META_TOTAL, cancel_requested
from shared.settings import Settings, get_settings
from shared.stores.images import ImageExpired, get_image, put_images, put_record
from worker import image_prompt, reliability
from worker.batching import BatchPlan
from worker.engine import Engine, Generation, JobCanceled, png_bytes
from worker.grid import compose_grid
from worker.preview import latents_to_preview
from worker.publisher import JobResult, LocalPublisher, Publisher

log = logging.getLogger(__name__)

_engines: OrderedDict[str, Engine] = OrderedDict()
_upscalers: dict[str, Any] = {}


def install_engine(engine: Engine) -> None:
    """Make ``engine`` resident (the worker loads its model once at start, before taking jobs)."""
    _engines[engine.model_ref] = engine


def resident_on_accelerator() -> bool:
    """Whether a resident engine runs on a GPU (or another non-CPU device): where cross-job batching pays off."""
    return any(engine.pipes.device.type != "cpu" for engine in _engines.values())


def get_engine(settings: Settings, model: str = "") -> Engine:
    """The resident engine for ``model`` (default: the configured one), loaded on first use and kept."""
    ref = settings.resolve_model(model) if model else settings.resolve_model()
    if ref in _engines:
        _engines.move_to_end(ref)
        return _engines[ref]
    while len(_engines) >= defaults.MAX_RESIDENT_MODELS:
        evicted, _ = _engines.popitem(last=False)
        log.info("evicting resident model %s to make room for %s", evicted, ref)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    engine = Engine.load(ref, settings.device, settings.dtype, settings.alignment_clip, settings.layout_strength)
    _engines[ref] = engine
    return engine


def get_upscaler(settings: Settings) -> Any:
    """The process's upscaler, loaded on first upscale job."""
    if settings.upscaler not in _upscalers:
        from worker.upscaler import load_upscaler

        _upscalers[settings.upscaler] = load_upscaler(settings.upscaler or None)
    return _upscalers[settings.upscaler]


def make_publisher(delivery: Delivery, settings: Settings) -> Publisher:
    """The publisher for a job's delivery kind; an unknown kind is an error naming it."""
    if delivery.kind == "local":
        return LocalPublisher(settings.output_dir)
    if delivery.kind == "discord":
        from worker.discord_publisher import DiscordPublisher

        return DiscordPublisher(settings)
    raise ValueError(f"delivery kind must be 'local' or 'discord', got {delivery.kind!r}")


class ProgressReporter:
    """Writes progress into the RQ job's meta every step and hands throttled previews to the publisher."""

    def __init__(self, job: Job | None, publisher: Publisher, spec: JobSpec, every_s: float) -> None:
        self.job = job
        self.publisher = publisher
        self.spec = spec
        self.every_s = every_s
        self._last_publish: float | None = None
        """monotonic() of the last preview; None until the first (shown at once, whatever the clock reads)."""

    def phase(self, name: str) -> None:
        if self.job is not None:
            self.job.meta[META_PHASE] = name
            self.job.save_meta()

    def __call__(self, done: int, total: int, latents: torch.Tensor | None) -> None:
        fraction = done / max(total, 1)
        if self.job is not None:
            self.job.meta.update({META_PROGRESS: fraction, META_STEP: done, META_TOTAL: total, META_PHASE: "denoising"})
            self.job.save_meta()
        now = time.monotonic()
        due = self._last_publish is None or now - self._last_publish >= self.every_s
        if done < total and due:
            self._last_publish = now
            preview = latents_to_preview(latents) if latents is not None else None
            self.publisher.progress(self.spec, fraction, preview)


_batch_plans: dict[str, BatchPlan] = {}
"""Batches the worker planned, by leader job id (set by ``ImagineWorker.execute_job`` just before the leader runs)."""


def plan_batch(plan: BatchPlan) -> None:
    """Make the next ``run_job`` of ``plan.leader_id`` run the whole batch (and record the followers' outcomes)."""
    _batch_plans[plan.leader_id] = plan


def drop_batch_plan(leader_id: str) -> None:
    """Forget a plan the leader did not consume (it failed before ``run_job``)."""
    _batch_plans.pop(leader_id, None)


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job end to end: generate, compose, store images, publish. Returns the job's record (JSON).

    When the worker planned a cross-job batch led by this job, runs the batch and returns this job's record; the
    followers' records (or exceptions) go into the plan for the worker to finish their RQ jobs with.
    """
    spec = JobSpec.from_dict(payload)
    settings = get_settings()
    job = get_current_job()
    plan = _batch_plans.pop(spec.job_id, None)
    if plan is not None and plan.followers:
        return run_batch(spec, job, plan, settings)
    return _run_one(spec, job, settings)


def _run_one(spec: JobSpec, job: Job | None, settings: Settings) -> dict[str, Any]:
    connection = job.connection if job is not None else None
    publisher = make_publisher(spec.delivery, settings)
    reporter = ProgressReporter(job, publisher, spec, defaults.PROGRESS_EVERY_S)
    started = time.perf_counter()
    try:
        reporter.phase("loading")
        engine = get_engine(settings, spec.model)
        reliability.inject_fault(settings, spec)
        source = (
            _source_image(connection, settings, spec)
            or image_prompt.init_image(spec, settings)
            or image_prompt.image_to_describe(spec, settings)
        )
        upscaler = get_upscaler(settings) if spec.kind is JobKind.UPSCALE else None
        reporter.phase("generating")
        generation = engine.generate(
            spec,
            on_progress=reporter,
            should_cancel=(lambda: cancel_requested(connection, settings, spec.job_id)) if connection else None,
            source=source,
            upscaler=upscaler,
        )
    except JobCanceled as exc:
        return _canceled(spec, job, publisher, exc)
    except Exception as exc:
        reliability.free_memory(exc)
        _failed(spec, job, publisher, exc)
        raise
    return _finish(spec, job, settings, publisher=publisher, engine=engine, generation=generation, started=started)


def run_batch(leader: JobSpec, leader_job: Job | None, plan: BatchPlan, settings: Settings) -> dict[str, Any]:
    """Run the leader and its followers in one denoising pass; publish each job separately with its own progress.

    Returns the leader's record (or raises its exception); the followers' outcomes go into ``plan.outcomes``. If the
    batched pass itself fails, every job is run again alone, so one bad job cannot fail the others.
    """
    members: list[tuple[JobSpec, Job | None]] = [(leader, leader_job)]
    members += [(f.spec, f.job) for f in plan.followers]
    outcomes: dict[str, dict[str, Any] | BaseException] = {}
    publishers = [make_publisher(spec.delivery, settings) for spec, _ in members]
    reporters = [
        ProgressReporter(job, publisher, spec, defaults.PROGRESS_EVERY_S)
        for (spec, job), publisher in zip(members, publishers, strict=True)
    ]
    started = time.perf_counter()
    for reporter in reporters:
        reporter.phase("loading")
    engine = get_engine(settings, leader.model)
    generations: list[Generation | JobCanceled] | None = None
    if engine.batch_recipe is not None:
        for reporter in reporters:
            reporter.phase("generating")
        cancels: list[Callable[[], bool] | None] = [
            _cancel_check(job.connection, settings, spec.job_id) if job is not None else None for spec, job in members
        ]
        try:
            generations = engine.generate_batch(
                [spec for spec, _ in members],
                on_progress=list(reporters),
                should_cancel=cancels,
            )
        except Exception:
            log.exception("batch led by %s failed; running its %d jobs alone", leader.job_id, len(members))
    for index, (spec, job) in enumerate(members):
        publisher = publishers[index]
        try:
            if generations is None:
                outcomes[spec.job_id] = _run_one(spec, job, settings)
                continue
            generation = generations[index]
            if isinstance(generation, JobCanceled):
                outcomes[spec.job_id] = _canceled(spec, job, publisher, generation)
                continue
            outcomes[spec.job_id] = _finish(
                spec, job, settings, publisher=publisher, engine=engine, generation=generation, started=started
            )
        except Exception as exc:
            if generations is not None:
                _failed(spec, job, publisher, exc)
            outcomes[spec.job_id] = exc
    for follower in plan.followers:
        plan.outcomes[follower.job.id] = outcomes[follower.spec.job_id]
    mine = outcomes[leader.job_id]
    if isinstance(mine, BaseException):
        raise mine
    return mine


def _cancel_check(connection: Any, settings: Settings, job_id: str) -> Callable[[], bool]:
    return lambda: cancel_requested(connection, settings, job_id)


def _canceled(spec: JobSpec, job: Job | None, publisher: Publisher, exc: JobCanceled) -> dict[str, Any]:
    log.info("%s", exc)
    if job is not None:
        job.meta.update({"canceled": True, META_PHASE: "canceled"})
        job.save_meta()
    publisher.failed(spec, "Cancelled.")
    return {"job_id": spec.job_id, "canceled": True}


def _failed(spec: JobSpec, job: Job | None, publisher: Publisher, exc: BaseException) -> None:
    message = member_message(exc)
    log.error("job %s failed: %s", spec.job_id, message, exc_info=exc)
    if job is not None:
        job.meta.update({"error": message, META_PHASE: "failed"})
        job.save_meta()
    publisher.failed(spec, message)


def _finish(
    spec: JobSpec,
    job: Job | None,
    settings: Settings,
    *,
    publisher: Publisher,
    engine: Engine,
    generation: Generation,
    started: float,
) -> dict[str, Any]:
    """Compose, store and publish one job's images; returns its record."""
    connection = job.connection if job is not None else None
    if job is not None:
        job.meta[META_PHASE] = "publishing"
        job.save_meta()
    record = build_record(spec, engine, generation)
    grid = compose_grid(generation.images) if len(generation.images) == defaults.IMAGES_PER_GRID else None
    if connection is not None:
        put_images(connection, settings, spec.job_id, [png_bytes(image) for image in generation.images])
        # Stored before delivery, so a button clicked the instant the result appears finds its source job's record.
        put_record(connection, settings, spec.job_id, record)
    files = reliability.deliver(
        connection, settings, publisher, JobResult(spec=spec, images=generation.images, grid=grid, record=record)
    )
    record["files"] = files
    record["timings"]["job_s"] = time.perf_counter() - started
    if connection is not None:
        put_record(connection, settings, spec.job_id, record)
    if job is not None:
        job.meta.update({META_PROGRESS: 1.0, META_PHASE: "done"})
        job.save_meta()
    return record


def build_record(spec: JobSpec, engine: Engine, generation: Generation) -> dict[str, Any]:
    """The reproducibility record of a finished job (written to job.json, Redis and the RQ result)."""
    return {
        "job_id": spec.job_id,
        "spec": spec.to_dict(),
        "seeds": list(generation.seeds),
        "engine": engine.describe(),
        "worker": {"pid": os.getpid(), "engine_loads": Engine.loads},
        "timings": dict(generation.timings),
        "notes": generation.notes,
        "size": [generation.images[0].width, generation.images[0].height],
    }


def member_message(exc: BaseException) -> str:
    """A short, member-friendly sentence for a failure (the details go to the worker's log)."""
    if isinstance(exc, ImageExpired):
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return "The GPU ran out of memory for this job; try a smaller --ar or --quality."
    if isinstance(exc, ValueError):
        return f"Could not run this job: {exc}"
    return f"The worker hit an internal error ({type(exc).__name__}); the admins can see the details in its log."


def _source_image(connection: Any, settings: Settings, spec: JobSpec) -> Image.Image | None:
    if spec.source is None:
        return None
    if connection is None:
        source = f"image {spec.source.index + 1} of {spec.source.job_id}"
        raise ValueError(f"job {spec.job_id} needs {source} but runs without Redis")
    data = get_image(connection, settings, spec.source.job_id, spec.source.index)
    return Image.open(io.BytesIO(data)).convert("RGB")
