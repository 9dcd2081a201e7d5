"""The job function RQ runs (enqueued by the dotted path ``worker.tasks.run_job``) and the stages of a job around
the engine: ``load`` (the resident engine of the job's model) -> ``source`` (the image it starts from, if any) ->
``generate`` (the engine) -> ``finish`` (compose the grid, store images and record, deliver).

``run_batch`` runs several compatible jobs through one engine pass; the worker (``worker.runner``) calls it with the
jobs it claimed and finishes each job's RQ side with the outcome it returns.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import torch
from PIL import Image
from rq import get_current_job
from rq.job import Job

from shared import allowances, defaults, messages, provenance, rules
from shared.errors import MemberFacingError
from shared.i18n import use_locale
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobKind, JobSpec
from shared.queue import meta
from shared.queue.client import cancel_requested
from shared.settings import Settings
from shared.stores.images import get_image, put_images, put_record
from worker import faults, image_prompt, memory, shorten
from worker.adapters import adapters_of
from worker.delivery import deliver
from worker.engine import Engine, Generation, JobCanceled
from worker.grid import compose_grid
from worker.progress import ProgressReporter
from worker.publisher import JobResult, Publisher
from worker.runtime import WorkerRuntime, current

log = logging.getLogger(__name__)

Outcome = dict[str, Any] | BaseException
"""What became of one job of a batch: its RQ result (``rq_result``), or the exception it failed with."""


def rq_result(record: JobRecord) -> dict[str, Any]:
    """What RQ keeps as a finished job's result: its id and where it was delivered (``files``). The whole record is
    in the result store (``shared.stores.images``); a copy in RQ's result stream cost about 4.7 KB of Redis per job
    for ``RESULT_TTL_S`` (docs/performance.md)."""
    return {"job_id": record.job_id, "files": record.files}


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ's entry point: run one job end to end with the process's runtime; returns ``rq_result`` (JSON)."""
    return run_one(current(), JobSpec.from_dict(payload), get_current_job())


def run_one(runtime: WorkerRuntime, spec: JobSpec, job: Job | None) -> dict[str, Any]:
    """Generate, compose, store and publish one job; returns ``rq_result`` of its record (``{"canceled": True}``
    when the member cancelled it). A failure tells the member (``member_message``, in the member's language) and is
    raised for RQ to record."""
    with use_locale(spec.delivery.locale):
        return _run_one(runtime, spec, job)


def _run_one(runtime: WorkerRuntime, spec: JobSpec, job: Job | None) -> dict[str, Any]:
    settings = runtime.settings
    connection = job.connection if job is not None else None
    publisher = runtime.publisher_for(spec.delivery)
    reporter = ProgressReporter(job, publisher, spec, defaults.PROGRESS_EVERY_S)
    started = time.perf_counter()
    try:
        reporter.phase("loading")
        if connection is not None:
            # The server's rules again, for the job's channel and requester (a follow-up clicked in another channel,
            # or rules changed while it waited): a refused job tells the member which rule, like the bot does.
            rules.check_spec(connection, settings, spec)
        engine = runtime.engine_for(spec.model)
        faults.inject_fault(settings, spec)
        source = (
            _source_image(connection, settings, spec)
            or image_prompt.init_image(spec, settings)
            or image_prompt.image_to_describe(spec, settings)
        )
        upscaler = runtime.upscaler() if spec.kind is JobKind.UPSCALE else None
        reporter.phase("generating")
        if spec.kind is JobKind.SHORTEN:
            generation = shorten.run(engine, spec)
        else:
            # LoRAs and references (worker.adapters): applied for this job, their notes go to its record
            with adapters_of(engine, settings).prepare(spec, connection) as prepared:
                generation = engine.generate(
                    prepared.spec,
                    on_progress=reporter,
                    should_cancel=_cancel_check(connection, settings, spec.job_id),
                    source=source,
                    upscaler=upscaler,
                    call_kwargs=prepared.call_kwargs,
                )
            generation.notes.update(prepared.notes)
    except JobCanceled as exc:
        return _canceled(spec, job, publisher, exc)
    except Exception as exc:
        memory.free_memory(exc)
        _failed(spec, job, publisher, exc)
        raise
    record = _finish(spec, job, settings, publisher=publisher, engine=engine, generation=generation, started=started)
    return rq_result(record)


def run_batch(runtime: WorkerRuntime, members: Sequence[tuple[JobSpec, Job | None]]) -> list[Outcome]:
    """Run compatible jobs (``worker.batching.batch_key`` equal) in one denoising pass and publish each on its own,
    with its own progress; returns one outcome per member, in order. If the batched pass itself fails, every job is
    run again alone, so one bad job cannot fail the others."""
    settings = runtime.settings
    publishers = [runtime.publisher_for(spec.delivery) for spec, _ in members]
    reporters = [
        ProgressReporter(job, publisher, spec, defaults.PROGRESS_EVERY_S)
        for (spec, job), publisher in zip(members, publishers, strict=True)
    ]
    started = time.perf_counter()
    for reporter in reporters:
        reporter.phase("loading")
    generations: list[Generation | JobCanceled] | None = None
    try:
        engine = runtime.engine_for(members[0][0].model)
        adapters = adapters_of(engine, settings)
        specs = [spec for spec, _ in members]
        if engine.batch_recipe is not None and _all_allowed(members, settings) and adapters.batchable(specs):
            for reporter in reporters:
                reporter.phase("generating")
            with adapters.batch(specs) as batch_notes:  # the batch's one LoRA set (worker.batching.batch_key)
                generations = engine.generate_batch(
                    specs,
                    on_progress=list(reporters),
                    should_cancel=[
                        _cancel_check(job.connection if job else None, settings, s.job_id) for s, job in members
                    ],
                )
            for generation in generations:
                if isinstance(generation, Generation):
                    generation.notes.update(batch_notes)
    except Exception:
        log.exception("batch led by %s failed; running its %d jobs alone", members[0][0].job_id, len(members))
        generations = None
    outcomes: list[Outcome] = []
    for index, (spec, job) in enumerate(members):
        publisher = publishers[index]
        try:
            if generations is None:
                outcomes.append(run_one(runtime, spec, job))
                continue
            with use_locale(spec.delivery.locale):
                outcomes.append(
                    _finish_member(
                        spec,
                        job,
                        settings,
                        publisher=publisher,
                        engine=engine,
                        generation=generations[index],
                        started=started,
                    )
                )
        except Exception as exc:
            if generations is not None:
                with use_locale(spec.delivery.locale):
                    _failed(spec, job, publisher, exc)
            outcomes.append(exc)
    return outcomes


def _all_allowed(members: Sequence[tuple[JobSpec, Job | None]], settings: Settings) -> bool:
    """Whether the server's rules allow every job of a batch (one that they refuse makes every job run alone, where
    the refused one is told why)."""
    for spec, job in members:
        if job is None:
            continue
        try:
            rules.check_spec(job.connection, settings, spec)
        except MemberFacingError:
            return False
    return True


def _finish_member(
    spec: JobSpec,
    job: Job | None,
    settings: Settings,
    *,
    publisher: Publisher,
    engine: Engine,
    generation: Generation | JobCanceled,
    started: float,
) -> Outcome:
    """One job of a batched pass: its cancellation, or its images composed, stored and published."""
    if isinstance(generation, JobCanceled):
        return _canceled(spec, job, publisher, generation)
    record = _finish(spec, job, settings, publisher=publisher, engine=engine, generation=generation, started=started)
    return rq_result(record)


def _cancel_check(connection: redis.Redis | None, settings: Settings, job_id: str) -> Callable[[], bool] | None:
    if connection is None:
        return None
    return lambda: cancel_requested(connection, settings, job_id)


def _canceled(spec: JobSpec, job: Job | None, publisher: Publisher, exc: JobCanceled) -> dict[str, Any]:
    log.info("%s", exc)
    if job is not None:
        meta.set_canceled(job)
    publisher.failed(spec, messages.CANCELED)
    return {"job_id": spec.job_id, "canceled": True}


def _failed(spec: JobSpec, job: Job | None, publisher: Publisher, exc: BaseException) -> None:
    message = member_message(exc, spec.job_id)
    log.error("job %s failed: %s", spec.job_id, message, exc_info=exc)
    if job is not None:
        meta.set_failed(job, message)
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
) -> JobRecord:
    """Compose, store and publish one job's images; returns its record."""
    connection = job.connection if job is not None else None
    if job is not None:
        meta.set_phase(job, "publishing")
    record = build_record(spec, engine, generation)
    grid = compose_grid(generation.images) if len(generation.images) == defaults.IMAGES_PER_GRID else None
    # Every PNG stored and posted carries the record and the AI source type (and a C2PA manifest when configured).
    pngs = [provenance.stamp(image, record, settings) for image in generation.images]
    picture_png = provenance.stamp(grid, record, settings) if grid is not None else pngs[0]
    record.notes["provenance"] = provenance.note(record, picture_png, settings)
    if connection is not None:
        put_images(connection, settings, spec.job_id, pngs)
        # Stored before delivery, so a button clicked the instant the result appears finds its source job's record.
        put_record(connection, settings, record)
        _charge_gpu(connection, settings, spec, generation)
    result = JobResult(
        spec=spec, images=generation.images, grid=grid, record=record, pngs=pngs, picture_png=picture_png
    )
    record.files = deliver(connection, settings, publisher, result)
    record.timings["job_s"] = time.perf_counter() - started
    if connection is not None:
        put_record(connection, settings, record)
    if job is not None:
        meta.set_done(job)
    return record


def _charge_gpu(connection: redis.Redis, settings: Settings, spec: JobSpec, generation: Generation) -> None:
    """Add the job's measured generation time to its owner's daily GPU allowance (a batched pass's time is shared
    equally by its jobs); never fails the job."""
    seconds = float(generation.timings.get("generate_s", 0.0))
    batch = generation.notes.get("batch")
    if isinstance(batch, dict) and int(batch.get("jobs", 1)) > 1:
        seconds /= int(batch["jobs"])
    try:
        allowances.charge_gpu(connection, settings, spec, seconds)
    except redis.RedisError:
        log.exception("could not charge %.2f GPU-seconds of job %s", seconds, spec.job_id)


def build_record(spec: JobSpec, engine: Engine, generation: Generation) -> JobRecord:
    """The reproducibility record of a finished job (written to job.json, Redis and the RQ result)."""
    return JobRecord(
        job_id=spec.job_id,
        spec=spec,
        seeds=tuple(generation.seeds),
        size=(generation.images[0].width, generation.images[0].height),
        engine=engine.describe(),
        worker={"pid": os.getpid(), "engine_loads": Engine.loads},
        timings=dict(generation.timings),
        notes=generation.notes,
    )


def member_message(exc: BaseException, job_id: str) -> str:
    """What the member is told about a failure: a ``MemberFacingError``'s own sentence; out-of-memory advice; for
    anything else a generic line naming the job id (the exception and its text go to the worker's log only)."""
    if isinstance(exc, MemberFacingError):
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return messages.OUT_OF_MEMORY
    return messages.job_internal_error(type(exc).__name__, job_id)


def _source_image(connection: redis.Redis | None, settings: Settings, spec: JobSpec) -> Image.Image | None:
    if spec.source is None:
        return None
    if connection is None:
        source = f"image {spec.source.index + 1} of {spec.source.job_id}"
        raise ValueError(f"job {spec.job_id} needs {source} but runs without Redis")
    data = get_image(connection, settings, spec.source.job_id, spec.source.index)
    return Image.open(io.BytesIO(data)).convert("RGB")
