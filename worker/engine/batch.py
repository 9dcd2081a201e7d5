"""Cross-job batches: several compatible grid jobs in one denoising pass (the engine's own loop, step for step the
pipeline's ``__call__`` where a family has a ``BatchRecipe``).

Every job keeps its own prompt encoding, per-image generators (so each image is what it would be alone), guidance
scale (applied per row), progress callback and cancel check. Which queued jobs may share a pass is decided in
``worker.batching``; the engine's stages come in through ``BatchStages`` (the ``Engine`` satisfies it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from shared.jobs.spec import JobKind, JobSpec
from worker.engine.families import BatchRecipe, Conditioning, Family
from worker.engine.generation import Generation, JobCanceled, ProgressCallback
from worker.layout_attention import RowLayout
from worker.model_loader import LoadedPipelines
from worker.text import TextEncoding

log = logging.getLogger(__name__)


class BatchStages(Protocol):
    """The engine stages a batch runs per job, and the loaded model."""

    pipes: LoadedPipelines
    text: TextEncoding
    family: Family

    def encode_prompt(self, spec: JobSpec) -> Conditioning: ...

    def synchronize(self) -> None: ...

    def generators(self, seeds: tuple[int, ...]) -> list[torch.Generator]: ...

    def prepare_latents(self, spec: JobSpec, generators: list[torch.Generator]) -> torch.Tensor: ...

    def condition_images(
        self, spec: JobSpec, cond: Conditioning, count: int
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def prepare_layout(self, spec: JobSpec) -> tuple[RowLayout, list[dict[str, object]]]: ...

    def layout_kwargs(
        self, spec: JobSpec, rows: list[RowLayout], positive: torch.Tensor | None = None
    ) -> dict[str, Any]: ...

    def score(self, generation: Generation, spec: JobSpec) -> None: ...


@dataclass
class _BatchJob:
    """One job's prepared inputs in a cross-job batch: latents (n, C, h, w), embeds (n, T, D), negative (n, T', D)."""

    spec: JobSpec
    generators: list[torch.Generator]
    latents: torch.Tensor
    embeds: torch.Tensor
    negative: torch.Tensor
    encode_s: float
    started: float
    notes: dict[str, Any]
    layout: RowLayout = ()

    @property
    def shape_key(self) -> tuple[int, ...]:
        return (*self.embeds.shape[1:], *self.negative.shape[1:])


def generate_batch(
    stages: BatchStages,
    specs: list[JobSpec],
    *,
    on_progress: list[ProgressCallback | None] | None = None,
    should_cancel: list[Callable[[], bool] | None] | None = None,
) -> list[Generation | JobCanceled]:
    """Run several compatible grid jobs (``worker.batching.batch_key`` equal) in one denoising pass.

    Every job keeps its own prompt encoding, per-image generators (so each image is what it would be alone),
    guidance scale (applied per row), progress callback and cancel check. A cancelled job's rows finish with the
    others but its outcome is a ``JobCanceled``; the pass stops early only when every job is cancelled.
    Jobs whose conditioning has other token lengths run as their own sub-batch (cross-attention rows must align).
    """
    recipe = stages.family.batch_recipe
    if recipe is None or recipe.loop != "engine":
        raise ValueError(f"pipeline {type(stages.pipes.text2img).__name__} has no engine-loop batch recipe")
    progress = on_progress or [None] * len(specs)
    cancels = should_cancel or [None] * len(specs)
    if len(progress) != len(specs) or len(cancels) != len(specs):
        raise ValueError(f"on_progress and should_cancel need one entry per spec ({len(specs)})")
    prepared = [_prepare(stages, spec) for spec in specs]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, job in enumerate(prepared):
        groups.setdefault(job.shape_key, []).append(index)
    outcomes: list[Generation | JobCanceled | None] = [None] * len(specs)
    for indices in groups.values():
        results = _run_group(
            stages,
            recipe,
            [prepared[i] for i in indices],
            [progress[i] for i in indices],
            [cancels[i] for i in indices],
        )
        for index, result in zip(indices, results, strict=True):
            outcomes[index] = result
    return [outcome for outcome in outcomes if outcome is not None]


def _prepare(stages: BatchStages, spec: JobSpec) -> _BatchJob:
    """The per-job stages of a batched grid: encode_prompt -> prepare_latents -> condition_images."""
    if spec.kind is not JobKind.GRID or spec.source is not None or spec.tile or spec.stop < 100:
        raise ValueError(f"job {spec.job_id} cannot join a batch (kind {spec.kind}, tile, --stop or a source)")
    started = time.perf_counter()
    hits_before = stages.text.cache_info().hits
    cond = stages.encode_prompt(spec)
    stages.synchronize()
    encode_s = time.perf_counter() - started
    generators = stages.generators(spec.seeds)
    latents = stages.prepare_latents(spec, generators)
    kwargs, family_notes = stages.condition_images(spec, cond, len(spec.seeds))
    notes: dict[str, Any] = {
        "text_cache_hit": stages.text.cache_info().hits > hits_before,
        "tokens": [report.__dict__ for report in cond.token_reports],
        **family_notes,
    }
    layout, placed = stages.prepare_layout(spec)
    if placed:
        notes["layout"] = placed
    return _BatchJob(
        spec=spec,
        generators=generators,
        latents=latents,
        embeds=kwargs["prompt_embeds"].to(stages.pipes.dtype),
        negative=kwargs["negative_prompt_embeds"].to(stages.pipes.dtype),
        encode_s=encode_s,
        started=started,
        notes=notes,
        layout=layout,
    )


def _run_group(
    stages: BatchStages,
    recipe: BatchRecipe,
    jobs: list[_BatchJob],
    progress: list[ProgressCallback | None],
    cancels: list[Callable[[], bool] | None],
) -> list[Generation | JobCanceled]:
    """The ``denoise`` and ``decode`` stages of one batch: the pipeline's components, diffusers' CFG loop with a
    guidance scale per row (batch, 1, 1, 1)."""
    pipe = stages.pipes.text2img
    unet, scheduler = stages.family.denoiser_of(pipe), pipe.scheduler
    device = stages.pipes.device
    spec0 = jobs[0].spec
    rows = [len(job.spec.seeds) for job in jobs]
    bounds = [sum(rows[:i]) for i in range(len(rows) + 1)]
    generators = [g for job in jobs for g in job.generators]
    latents = torch.cat([job.latents for job in jobs])  # (images, C, h, w)
    embeds = torch.cat([job.embeds for job in jobs])  # (images, T, D)
    negative = torch.cat([job.negative for job in jobs])  # (images, T', D)
    guidance = (
        torch.cat([torch.full((n,), float(job.spec.guidance)) for job, n in zip(jobs, rows, strict=True)])
        .to(device, torch.float32)
        .view(-1, 1, 1, 1)
    )
    layouts = [job.layout for job, n in zip(jobs, rows, strict=True) for _ in range(n)]
    attention = stages.layout_kwargs(spec0, layouts).get("cross_attention_kwargs")
    canceled: dict[int, JobCanceled] = {}
    step_kwargs = pipe.prepare_extra_step_kwargs(generators, 0.0) if recipe.extra_step_kwargs else {}
    stages.synchronize()
    denoise_started = time.perf_counter()
    steps_run = 0
    with torch.inference_mode():
        scheduler.set_timesteps(spec0.steps, device=device)
        timesteps = scheduler.timesteps
        if recipe.scale_initial_noise:
            latents = latents * scheduler.init_noise_sigma
        total = len(timesteps)
        for index, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            if embeds.shape == negative.shape:
                both = unet(
                    model_input,
                    t,
                    encoder_hidden_states=torch.cat([negative, embeds]),
                    cross_attention_kwargs=attention,
                    return_dict=False,
                )[0]
                uncond, cond = both.chunk(2)
            else:  # prompt and negative of different token lengths: two passes, as ShapesPipeline does
                half = model_input.shape[0] // 2
                uncond = unet(model_input[:half], t, encoder_hidden_states=negative, return_dict=False)[0]
                cond = unet(
                    model_input[half:],
                    t,
                    encoder_hidden_states=embeds,
                    cross_attention_kwargs=attention,
                    return_dict=False,
                )[0]
            prediction = uncond + guidance.to(uncond.dtype) * (cond - uncond)
            latents = scheduler.step(prediction, t, latents, **step_kwargs, return_dict=False)[0]
            steps_run = index + 1
            for j, job in enumerate(jobs):
                if j in canceled:
                    continue
                check = cancels[j]
                if check is not None and check():
                    canceled[j] = JobCanceled(f"job {job.spec.job_id} was cancelled at step {steps_run} of {total}")
                    continue
                callback = progress[j]
                if callback is not None:
                    callback(steps_run, total, latents[bounds[j] : bounds[j + 1]])
            if len(canceled) == len(jobs):
                break
        stages.synchronize()
        denoised = time.perf_counter()
        images = _decode(stages, recipe, latents, generators) if len(canceled) < len(jobs) else []
    finished = time.perf_counter()
    outcomes: list[Generation | JobCanceled] = []
    for j, job in enumerate(jobs):
        if j in canceled:
            outcomes.append(canceled[j])
            continue
        timings = {
            "encode_s": job.encode_s,
            "denoise_s": denoised - denoise_started,
            "decode_s": finished - denoised,
            "generate_s": finished - job.started,
        }
        notes = dict(job.notes, steps_run=steps_run)
        notes["batch"] = {"jobs": len(jobs), "images": bounds[-1], "position": j}
        generation = Generation(
            images=images[bounds[j] : bounds[j + 1]], seeds=job.spec.seeds, timings=timings, notes=notes
        )
        stages.score(generation, job.spec)
        outcomes.append(generation)
    return outcomes


def _decode(
    stages: BatchStages, recipe: BatchRecipe, latents: torch.Tensor, generators: list[torch.Generator]
) -> list[Image.Image]:
    """The pipeline's own decode: ShapesPipeline's pixels, or the VAE and image processor of SD pipelines."""
    pipe = stages.pipes.text2img
    if recipe.decoder == "pipeline":
        images = pipe.decode(latents, "pil")
    else:
        vae = pipe.vae
        decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False, generator=generators)[0]
        images = pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=[True] * decoded.shape[0])
    return [image.convert("RGB") for image in images]
