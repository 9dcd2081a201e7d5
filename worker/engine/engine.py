"""``Engine``: a model held resident in one worker process, and the named stages of a job.

Stages of a grid job: ``encode_prompt`` (text-encoding module) -> ``prepare_latents`` (one generator per image, so
each image is reproducible alone; ``--weird`` noise) -> ``condition_images`` (``--chaos`` per-image conditioning) ->
``prepare_layout`` (place phrases) -> denoising (the diffusers pipeline with a step callback for progress, cancel and
``--stop``) -> the pipeline's decode. Variations and upscales reuse the same weights through the image sibling;
outpaints add ``prepare_outpaint`` and keep the source's latents in place at every step (``worker.engine.outpaint``).
Several grid jobs can share one pass (``generate_batch``: the engine's own loop of ``worker.engine.batch``, or one
pipeline call over every job's rows).

Everything that differs between model families (denoiser, latent layout, guidance and negative prompt, image sibling)
comes from the job's ``Family`` (``worker.engine.families``); the stages below are the same for all of them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from shared import defaults, messages
from shared.errors import Unsupported
from shared.families import UnknownFamily
from shared.jobs.spec import JobKind, JobSpec
from shared.model_info import model_family
from worker.engine.batch import generate_batch
from worker.engine.device import prepare_for_device
from worker.engine.families import BatchRecipe, Conditioning, Family, UnsupportedPipeline, family_for
from worker.engine.generation import Generation, JobCanceled, ProgressCallback
from worker.engine.hooks import stop_step, tiling, x0_recorder
from worker.engine.inpaint import Region, prepare_region, restore_unmasked
from worker.engine.outpaint import KeptRegion, keep_source, prepare_canvas
from worker.layout_attention import LayoutBias, RowLayout, install, prompt_layout
from worker.layout_joint import JointLayout, install_joint
from worker.model_loader import LoadedPipelines, choose_device, choose_dtype, describe, load_pipelines
from worker.text import Conditioning as TextConditioning
from worker.text import TextEncoding

log = logging.getLogger(__name__)


@dataclass
class PreparedJob:
    """One grid job's inputs to a denoising call: its rows are its images."""

    spec: JobSpec
    generators: list[torch.Generator]
    latents: torch.Tensor
    """Starting noise (images, C, h, w), unpacked."""
    kwargs: dict[str, Any]
    """Pipeline kwargs: guidance scalars and conditioning with one row per image."""
    notes: dict[str, Any]
    layout: RowLayout = ()
    encode_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class Engine:
    """A model held resident in one worker process; ``generate`` runs one job."""

    loads: int = 0
    """How many engines this process has loaded (a worker must load exactly one)."""

    def __init__(self, pipes: LoadedPipelines, text: TextEncoding, family: Family | None = None) -> None:
        self.pipes = pipes
        self.text = text
        """The text-encoding module (``worker.text``) for this model's encoders."""
        self.family = family or family_for(pipes.text2img)
        """How this model's pipeline is driven (``worker.engine.families``)."""
        self.scorer: Any = None
        self._caption_bank: Any = None
        """The /describe candidates and their vectors, loaded on the first describe job."""
        self.layout_strength = 0.0
        """Attention bias that puts a prompt's objects where it says (``enable_layout``); 0 = off."""

    @classmethod
    def load(
        cls,
        model_ref: str,
        device: str = "auto",
        dtype: str = "auto",
        alignment_clip: str = "",
        layout_strength: float = defaults.LAYOUT_STRENGTH,
        *,
        text_max_length: int | None = None,
    ) -> Engine:
        """Load ``model_ref`` once; logged with the process id so tests and operators can count loads. A model whose
        pipeline class no family handles raises ``UnsupportedPipeline`` (one line naming the class and the supported
        families), from its ``model_index.json`` before any weight is read where the model is a local folder.
        ``text_max_length`` caps the T5/LLM families' text sequence below their pipeline's limit (shorter sequences
        make every denoiser step cheaper; longer prompts are cut and reported)."""
        try:
            model_family(model_ref)
        except UnknownFamily as exc:
            raise UnsupportedPipeline(str(exc)) from None
        torch_device = choose_device(device)
        chosen: dict[str, Family] = {}

        def image_sibling(pipe: Any) -> Any:
            chosen["family"] = family = family_for(pipe)
            return family.load_image_sibling(pipe)

        pipes = load_pipelines(model_ref, torch_device, choose_dtype(dtype, torch_device), image_sibling)
        family = chosen.get("family") or family_for(pipes.text2img)
        limits = [limit for limit in (text_max_length, family.text_max_length(pipes.text2img)) if limit]
        text = TextEncoding.from_pipeline(pipes.text2img, model_key=model_ref, max_length=min(limits, default=None))
        engine = cls(pipes, text, family)
        engine.prepare_for_device()
        engine.enable_layout(layout_strength)
        engine.scorer = _load_scorer(pipes, alignment_clip)
        Engine.loads += 1
        log.info(
            "engine loaded: model %s (%s), pid %d, load #%d in this process",
            model_ref,
            family.name,
            os.getpid(),
            Engine.loads,
        )
        return engine

    @property
    def model_ref(self) -> str:
        return self.pipes.model_ref

    def describe(self) -> dict[str, Any]:
        """Model, family and its capabilities, device, dtype and component classes for job records (the bot's /show
        reads the capabilities to show only the buttons this model can serve)."""
        return {
            "model": self.pipes.model_ref,
            "pipeline": type(self.pipes.text2img).__name__,
            "family": self.family.name,
            "capabilities": self.family.capabilities.to_dict(),
            "device": str(self.pipes.device),
            "dtype": str(self.pipes.dtype).removeprefix("torch."),
            "components": describe(self.pipes.text2img),
        }

    def enable_layout(self, strength: float) -> bool:
        """Steer prompts that say where things go (``worker.layout``) with ``strength`` (0 turns it off): on a UNet's
        cross-attention (diffusers' default processors), or on the joint attention of FLUX.1, Chroma and FLUX.2
        (their default processors; ``worker.layout_joint``). Returns whether layouts are applied."""
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"layout_strength must be a finite number >= 0, got {strength}")
        self.layout_strength = 0.0
        if strength == 0:
            return False
        pipes = (self.pipes.text2img, self.pipes.img2img)
        denoisers = {
            id(module): module for pipe in pipes if (module := getattr(pipe, self.family.denoiser, None)) is not None
        }
        if self.family.layout == "cross":
            installed = bool(denoisers) and all(install(module) for module in denoisers.values())
        elif self.family.layout == "joint":
            installed = bool(denoisers) and all(install_joint(module) for module in denoisers.values())
        else:
            installed = False
        if not installed:
            log.info("layouts off: model %s has no denoiser with its default attention processors", self.model_ref)
            return False
        self.layout_strength = float(strength)
        return True

    # -- stages -------------------------------------------------------------------------------------------------

    def prepare_layout(self, spec: JobSpec) -> tuple[RowLayout, list[dict[str, object]]]:
        """The boxes the prompt names and its phrases' token positions (``()`` when it names none, is a ``::``
        blend, or layouts are off), and their description for the job record."""
        if self.layout_strength == 0 or len(spec.parts) != 1:
            return (), []
        row, layout = prompt_layout(self.text, spec.parts[0][0])
        return row, layout.describe() if layout is not None else []

    def layout_kwargs(
        self, spec: JobSpec, rows: list[RowLayout], positive: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """The denoiser call's layout argument for images with these row layouts ({} when none): a ``LayoutBias``
        in ``cross_attention_kwargs`` (UNets), or a ``JointLayout`` on the token grid in the family's attention
        kwargs, with the conditional text states ``positive`` that tell its passes apart."""
        if self.layout_strength == 0 or not any(rows):
            return {}
        latent = self.latent_shape(spec.width, spec.height)
        height, width = self.family.token_grid(latent)
        bias = LayoutBias(tuple(rows), height, width, self.layout_strength)
        if self.family.layout == "joint":
            if positive is None:
                raise ValueError("a joint-attention layout needs the call's prompt_embeds, got None")
            return {self.family.layout_kwarg: {"layout": JointLayout(bias, positive)}}
        return {self.family.layout_kwarg: {"layout": bias}}

    def encode_prompt(self, spec: JobSpec) -> TextConditioning:
        """Weighted ``::`` parts and the ``--no`` negative prompt, encoded (cached per text)."""
        return self.text.encode(spec.parts, spec.negative)

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """(channels, h, w) of one image's starting latents, unpacked: VAE latents, or pixels for pixel-space models."""
        return self.family.latent_shape(self.pipes.text2img, width, height)

    def generators(self, seeds: tuple[int, ...]) -> list[torch.Generator]:
        """One CPU generator per image: the same seed gives the same noise on any device and in any batch."""
        return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]

    def prepare_latents(self, spec: JobSpec, generators: list[torch.Generator]) -> torch.Tensor:
        """Unit-variance starting noise (batch, C, h, w), each image's drawn from its own generator as the family's
        pipeline draws it (so batching cannot change an image); ``--weird`` mixes in low-frequency noise, off the
        model's training distribution, from the same generator."""
        channels, height, width = self.latent_shape(spec.width, spec.height)
        per_image = []
        for generator in generators:
            noise = self.family.initial_noise((channels, height, width), generator)
            if spec.weird > 0:
                coarse_h, coarse_w = max(1, height // 8), max(1, width // 8)
                coarse = self.family.initial_noise((channels, coarse_h, coarse_w), generator)
                smooth = nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
                smooth = smooth / smooth.std().clamp_min(1e-6)
                noise = math.sqrt(1 - spec.weird) * noise + math.sqrt(spec.weird) * smooth
            per_image.append(noise)
        return torch.cat(per_image).to(self.pipes.device, self.family.latent_dtype or self.pipes.dtype)

    def condition_images(self, spec: JobSpec, cond: Conditioning, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(pipeline kwargs with one conditioning row per image, notes): the family's guidance and conditioning
        (``Family.call_kwargs``); ``--chaos`` pushes each image's text embedding apart by a seeded perturbation scaled
        to the embedding's spread, so the grid varies more."""
        kwargs, notes = self.family.call_kwargs(spec, cond)
        expanded = {name: _rows(value, count) for name, value in kwargs.items() if value is not None}
        if spec.chaos > 0:
            embeds = expanded["prompt_embeds"]  # (count, T, D), or Z-Image's list of count (T_i, D)
            rows = list(embeds)
            scale = spec.chaos * torch.cat([row.float().flatten() for row in rows]).std()
            for index, seed in enumerate(spec.seeds[:count]):
                generator = torch.Generator(device="cpu").manual_seed(int(seed) ^ 0x5EED)
                noise = torch.randn(rows[index].shape, generator=generator)
                rows[index] += (scale * noise).to(rows[index].device, rows[index].dtype)
        return {name: _to(value, self.pipes.device) for name, value in expanded.items()}, notes

    def prepare_outpaint(self, spec: JobSpec, source: Image.Image) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
        """The start of an outpaint (``worker.engine.outpaint``): (canvas image, latents of the source placed at
        ``spec.source_box`` on the canvas (1, C, h, w), keep mask (1, 1, h, w))."""
        _, latent_h, latent_w = self.latent_shape(spec.width, spec.height)
        return prepare_canvas(
            self.family,
            self.pipes.text2img,
            spec,
            source,
            latent_size=(latent_h, latent_w),
            device=self.pipes.device,
            dtype=self.pipes.dtype,
        )

    def prepare_inpaint(self, spec: JobSpec, source: Image.Image) -> Region:
        """The start of an inpaint (``worker.engine.inpaint``): the source at the job's size, its latents, the keep
        mask outside the member's mask (1, 1, h, w), and that mask."""
        _, latent_h, latent_w = self.latent_shape(spec.width, spec.height)
        return prepare_region(
            self.family,
            self.pipes.text2img,
            spec,
            source,
            latent_size=(latent_h, latent_w),
            device=self.pipes.device,
            dtype=self.pipes.dtype,
        )

    def prepare_job(self, spec: JobSpec) -> PreparedJob:
        """The per-job stages before denoising: encode_prompt -> prepare_latents -> condition_images ->
        prepare_layout."""
        started = time.perf_counter()
        hits_before = self.text.cache_info().hits
        cond = self.encode_prompt(spec)
        self.synchronize()
        encode_s = time.perf_counter() - started
        count = len(spec.seeds)
        generators = self.generators(spec.seeds)
        latents = self.prepare_latents(spec, generators)
        kwargs, family_notes = self.condition_images(spec, cond, count)
        notes: dict[str, Any] = {
            "text_cache_hit": self.text.cache_info().hits > hits_before,
            "tokens": [_report_dict(report) for report in cond.token_reports],
            **family_notes,
        }
        if cond.truncated:
            notes["truncated"] = True
        row, placed = self.prepare_layout(spec)
        if placed:
            notes["layout"] = placed
        # the latents' generators are spent on the noise; the pipeline gets fresh ones of the same seeds
        return PreparedJob(spec, self.generators(spec.seeds), latents, kwargs, notes, row, encode_s, started)

    # -- jobs ---------------------------------------------------------------------------------------------------

    def generate(
        self,
        spec: JobSpec,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        source: Image.Image | None = None,
        upscaler: Any = None,
        call_kwargs: dict[str, Any] | None = None,
    ) -> Generation:
        """Run ``spec``: a grid, a variation grid of ``source``, an outpaint grid around ``source``, or an upscale.
        ``call_kwargs``: extra pipeline arguments of the job's adapters (``worker.adapters``: IP-Adapter embeddings)."""
        if spec.kind is JobKind.UPSCALE:
            if source is None or upscaler is None:
                raise ValueError("an upscale job needs its source image and an upscaler")
            return self._upscale(spec, source, upscaler, on_progress, should_cancel, call_kwargs=call_kwargs)
        if spec.kind in (JobKind.VARIATION, JobKind.OUTPAINT, JobKind.INPAINT, JobKind.DESCRIBE) and source is None:
            raise ValueError(f"a {spec.kind.value} job needs its source image")
        if spec.kind is JobKind.DESCRIBE and source is not None:
            started = time.perf_counter()
            descriptions = self.describe_image(source, len(spec.seeds))
            if on_progress is not None:
                on_progress(1, 1, None)
            return Generation(
                images=[source.convert("RGB")],
                seeds=spec.seeds,
                timings={"describe_s": time.perf_counter() - started, "generate_s": time.perf_counter() - started},
                notes={"descriptions": [[text, score] for text, score in descriptions]},
            )
        return self._grid(spec, source, on_progress, should_cancel, call_kwargs=call_kwargs)

    def describe_image(self, image: Image.Image, count: int) -> list[tuple[str, float]]:
        """/describe: the ``count`` candidates of the model's caption bank nearest ``image`` in the alignment
        scorer's space (cosine similarity), best first."""
        if self._caption_bank is None:
            from worker.alignment import ALIGNMENT_SUBFOLDER
            from worker.caption_bank import CAPTIONS_NAME, CaptionBank

            folder = Path(self.model_ref) / ALIGNMENT_SUBFOLDER
            bank = CaptionBank.load(folder, self.scorer) if self.scorer is not None else None
            if bank is None:
                log.info("no /describe for %s: needs %s/%s", self.model_ref, ALIGNMENT_SUBFOLDER, CAPTIONS_NAME)
                raise Unsupported(messages.cannot_describe(Path(self.model_ref).name))
            self._caption_bank = bank
        return self._caption_bank.best(self.scorer.image_vectors([image])[0], count)

    def _grid(
        self,
        spec: JobSpec,
        source: Image.Image | None,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
        *,
        call_kwargs: dict[str, Any] | None = None,
    ) -> Generation:
        """One job: text-to-image, or the image sibling for a variation (``source`` resized), an outpaint or an inpaint
        (Vary (Region)). ``call_kwargs``: the job's adapters' extra pipeline arguments (IP-Adapter embeddings)."""
        if source is not None:
            self._check_capability(spec)
        job = self.prepare_job(spec)
        call: dict[str, Any] = dict(call_kwargs or {})
        outpaint: KeptRegion | None = None
        region: Region | None = None
        if source is None:
            pipe = self.pipes.text2img
            call.update(height=spec.height, width=spec.width, latents=self.family.latents_argument(job.latents))
        else:
            pipe = self.pipes.img2img
            image = source.convert("RGB").resize((spec.width, spec.height), Image.Resampling.LANCZOS)
            keep = None
            if spec.kind is JobKind.OUTPAINT:
                image, known, keep = self.prepare_outpaint(spec, source)
                # the kept region's noise: each image's own, from fresh generators of its seed
                outpaint = KeptRegion(known, keep, job.latents)
            elif spec.kind is JobKind.INPAINT:  # worker.engine.inpaint: the same kept latents, outside the mask
                region = self.prepare_inpaint(spec, source)
                image, keep = region.image, region.keep
                outpaint = KeptRegion(region.known, region.keep, job.latents)
            call.update(self.family.image_kwargs(image, spec.strength, keep, len(spec.seeds)))
            if self.family.sibling_takes_size:
                call.update(height=spec.height, width=spec.width)
            if int(spec.steps * spec.strength) < 1:
                # image-to-image runs int(steps x strength) steps (SD's rule): at least one, never an undenoised image
                call["num_inference_steps"] = math.ceil(1 / spec.strength)
        outcomes = self._denoise(
            [job],
            pipe,
            call,
            progress=[on_progress],
            cancels=[should_cancel],
            outpaint=outpaint,
            stop_at=stop_step(spec, source is not None),
        )
        outcome = outcomes[0]
        if isinstance(outcome, JobCanceled):
            raise outcome
        if region is not None:  # the source's own pixels outside the mask, exactly (worker.engine.inpaint)
            outcome.images = restore_unmasked(outcome.images, region)
            outcome.notes["inpaint"] = {"mask_coverage": round(region.coverage, 4)}
        return outcome

    def _check_capability(self, spec: JobSpec) -> None:
        """A follow-up the family cannot run is refused with a sentence for the member (its button is not shown;
        this guards a stale button or a hand-made job)."""
        capabilities = self.family.capabilities
        if spec.kind is JobKind.OUTPAINT and not capabilities.outpaint:
            raise Unsupported(messages.model_cannot(self.family.info.title, "outpaints"))
        if spec.kind is JobKind.INPAINT and not capabilities.inpaint:
            raise Unsupported(messages.model_cannot(self.family.info.title, "Vary (Region)"))
        if spec.kind not in (JobKind.OUTPAINT, JobKind.INPAINT) and not capabilities.variations:
            raise Unsupported(messages.model_cannot(self.family.info.title, "variations"))

    def _denoise(
        self,
        jobs: list[PreparedJob],
        pipe: Any,
        extra: dict[str, Any],
        *,
        progress: Sequence[ProgressCallback | None],
        cancels: Sequence[Callable[[], bool] | None],
        outpaint: KeptRegion | None = None,
        stop_at: int | None = None,
    ) -> list[Generation | JobCanceled]:
        """The ``denoise`` and ``decode`` stages: one pipeline call over every job's rows (their images), with a
        step callback for each job's progress (unpacked latents) and cancel check, the outpaint's kept region and
        ``--stop``. A single job's cancel raises ``JobCanceled`` out of the call; in a batch a cancelled job's rows
        finish with the others (the call stops early only when every job is cancelled)."""
        spec0 = jobs[0].spec
        rows = [len(job.spec.seeds) for job in jobs]
        bounds = [sum(rows[:i]) for i in range(len(rows) + 1)]
        _, latent_h, latent_w = self.latent_shape(spec0.width, spec0.height)
        conditioning = _stack([job.kwargs for job in jobs])
        layouts = [job.layout for job, n in zip(jobs, rows, strict=True) for _ in range(n)]
        call: dict[str, Any] = {
            "num_inference_steps": spec0.steps,
            "generator": [g for job in jobs for g in job.generators],
            "output_type": "pil",
            **conditioning,
            **self.layout_kwargs(spec0, layouts, conditioning.get("prompt_embeds")),
            **extra,
        }
        canceled: dict[int, JobCanceled] = {}
        notes = [dict(job.notes) for job in jobs]
        step_times: list[float] = []
        tile = spec0.tile and self.family.capabilities.tile
        self.synchronize()
        with tiling(self.family, pipe, tile), x0_recorder(self.family, pipe) as x0:
            denoise_started = time.perf_counter()

            def on_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                step_times.append(time.perf_counter())
                done = index + 1
                total = int(getattr(pipeline, "num_timesteps", 0) or spec0.steps)
                for j, job in enumerate(jobs):
                    check = cancels[j]
                    if j not in canceled and check is not None and check():
                        canceled[j] = JobCanceled(f"job {job.spec.job_id} was cancelled at step {done} of {total}")
                if canceled and len(jobs) == 1:
                    raise canceled[0]
                if len(canceled) == len(jobs):
                    pipeline._interrupt = True
                    return {}
                latents = tensors["latents"]
                if outpaint is not None:
                    latents = tensors["latents"] = keep_source(self.family, pipeline, index, latents, outpaint)
                if any(callback is not None for callback in progress):
                    unpacked = self.family.unpack(latents, latent_h, latent_w)  # (images, C, h, w)
                    for j, callback in enumerate(progress):
                        if callback is not None and j not in canceled:
                            callback(done, total, unpacked[bounds[j] : bounds[j + 1]])
                if outpaint is not None:
                    return {"latents": latents}
                if stop_at is not None and done >= stop_at and not getattr(pipeline, "_interrupt", False):
                    pipeline._interrupt = True
                    notes[0]["stopped_at_step"] = done
                    if x0.get("latest") is not None:
                        notes[0]["stop_decoded"] = "x0 estimate"
                        return {"latents": x0["latest"]}
                    notes[0]["stop_decoded"] = "current latents (scheduler gives no x0 estimate)"
                return {}

            try:
                output = pipe(callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"], **call)
            finally:
                pipe._interrupt = False
            joint = (call.get(self.family.layout_kwarg) or {}).get("layout") if self.family.layout_kwarg else None
            if isinstance(joint, JointLayout):  # which transformer calls were biased: the conditional ones only
                for job_notes in notes:
                    job_notes["layout_calls"] = {"biased": joint.biased_calls, "unbiased": joint.skipped_calls}
            self.synchronize()
            finished = time.perf_counter()
        outcomes: list[Generation | JobCanceled] = []
        for j, job in enumerate(jobs):
            if j in canceled:
                outcomes.append(canceled[j])
                continue
            timings = {"encode_s": job.encode_s, "generate_s": finished - job.started}
            if step_times:
                timings["denoise_s"] = step_times[-1] - denoise_started
                timings["decode_s"] = finished - step_times[-1]
                notes[j]["steps_run"] = len(step_times)
            if len(jobs) > 1:
                notes[j]["batch"] = {"jobs": len(jobs), "images": bounds[-1], "position": j}
            images = [image.convert("RGB") for image in output.images[bounds[j] : bounds[j + 1]]]
            generation = Generation(images=images, seeds=job.spec.seeds, timings=timings, notes=notes[j])
            self.score(generation, job.spec)
            outcomes.append(generation)
        return outcomes

    def _upscale(
        self,
        spec: JobSpec,
        source: Image.Image,
        upscaler: Any,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
        *,
        call_kwargs: dict[str, Any] | None = None,
    ) -> Generation:
        started = time.perf_counter()
        image = upscaler.upscale(source.convert("RGB"))
        timings = {"upscale_s": time.perf_counter() - started}
        notes: dict[str, Any] = {"upscaler": type(upscaler).__name__, "mode": spec.upscale_mode}
        if spec.upscale_mode == "creative":
            creative = spec.replace(
                kind=JobKind.VARIATION, width=image.width, height=image.height, seeds=spec.seeds[:1]
            )
            refined = self._grid(creative, image, on_progress, should_cancel, call_kwargs=call_kwargs)
            image = refined.images[0]
            timings.update({f"creative_{k}": v for k, v in refined.timings.items()})
            notes.update({key: refined.notes[key] for key in ("ignored", "truncated") if key in refined.notes})
        elif on_progress is not None:
            on_progress(1, 1, None)
        timings["generate_s"] = time.perf_counter() - started
        return Generation(images=[image], seeds=spec.seeds[:1], timings=timings, notes=notes)

    # -- device readiness ------------------------------------------------------------------------------------------

    def prepare_for_device(self, *, compile_denoiser: bool = False) -> dict[str, Any]:
        """Device readiness, applied once after loading (``worker.engine.device``); returns what was applied."""
        return prepare_for_device(self.family, self.pipes, compile_denoiser=compile_denoiser)

    def synchronize(self) -> None:
        """Wait for queued GPU work, so stage timings measure the work and not its launch."""
        if self.pipes.device.type == "cuda":
            torch.cuda.synchronize(self.pipes.device)

    # -- cross-job batches -----------------------------------------------------------------------------------------

    @property
    def batch_recipe(self) -> BatchRecipe | None:
        """How this model's jobs share a denoising pass; None when the family has no recipe (every job alone)."""
        return self.family.batch_recipe

    def generate_batch(
        self,
        specs: list[JobSpec],
        *,
        on_progress: list[ProgressCallback | None] | None = None,
        should_cancel: list[Callable[[], bool] | None] | None = None,
    ) -> list[Generation | JobCanceled]:
        """Several compatible grid jobs in one denoising pass: the engine's own loop (``worker.engine.batch``), or
        for the transformer families one pipeline call over the rows of the jobs whose guidance arguments and
        conditioning shapes agree (jobs that differ run in their own call)."""
        recipe = self.family.batch_recipe
        if recipe is None or recipe.loop == "engine":
            return generate_batch(self, specs, on_progress=on_progress, should_cancel=should_cancel)
        progress = on_progress or [None] * len(specs)
        cancels = should_cancel or [None] * len(specs)
        if len(progress) != len(specs) or len(cancels) != len(specs):
            raise ValueError(f"on_progress and should_cancel need one entry per spec ({len(specs)})")
        prepared = []
        for spec in specs:
            if spec.kind is not JobKind.GRID or spec.source is not None or spec.tile or spec.stop < 100:
                raise ValueError(f"job {spec.job_id} cannot join a batch (kind {spec.kind}, tile, --stop or a source)")
            prepared.append(self.prepare_job(spec))
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, job in enumerate(prepared):
            groups.setdefault(_call_key(job.kwargs), []).append(index)
        outcomes: list[Generation | JobCanceled | None] = [None] * len(specs)
        spec0 = specs[0]
        for indices in groups.values():
            jobs = [prepared[i] for i in indices]
            latents = self.family.latents_argument(torch.cat([job.latents for job in jobs]))
            extra = {"height": spec0.height, "width": spec0.width, "latents": latents}
            results = self._denoise(
                jobs,
                self.pipes.text2img,
                extra,
                progress=[progress[i] for i in indices],
                cancels=[cancels[i] for i in indices],
            )
            for index, result in zip(indices, results, strict=True):
                outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    # -- helpers ------------------------------------------------------------------------------------------------

    def score(self, generation: Generation, spec: JobSpec) -> None:
        """Alignment of each image with the positive prompt, when the model has a scorer."""
        if self.scorer is None:
            return
        started = time.perf_counter()
        texts = [spec.positive_prompt] * len(generation.images)
        generation.notes["alignment"] = [round(float(s), 4) for s in self.scorer.score(generation.images, texts)]
        generation.timings["score_s"] = time.perf_counter() - started


def _rows(value: Any, count: int) -> Any:
    """A batch-1 conditioning value with ``count`` rows: tensors (1, ...) expanded and copied, one-element lists
    (Z-Image's per-prompt states) repeated as copies; scalars as they are."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == 1:
        return value.expand(count, *value.shape[1:]).clone()
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], torch.Tensor):
        return [value[0].clone() for _ in range(count)]
    return value


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to(item, device) for item in value]
    return value


def _stack(kwargs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several jobs' kwargs as one call's: tensors concatenated on the batch axis, lists joined, scalars the first's
    (``_call_key`` groups jobs whose scalars agree)."""
    if len(kwargs) == 1:
        return kwargs[0]
    stacked: dict[str, Any] = {}
    for name, value in kwargs[0].items():
        if isinstance(value, torch.Tensor):
            stacked[name] = torch.cat([item[name] for item in kwargs])
        elif isinstance(value, list):
            stacked[name] = [row for item in kwargs for row in item[name]]
        else:
            stacked[name] = value
    return stacked


def _call_key(kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree for jobs to share one pipeline call: the guidance scalars, and each conditioning tensor's
    per-row shape and dtype (lists of per-prompt tensors take any lengths)."""
    key: list[Any] = []
    for name in sorted(kwargs):
        value = kwargs[name]
        if isinstance(value, torch.Tensor):
            key.append((name, tuple(value.shape[1:]), str(value.dtype)))
        elif isinstance(value, list):
            key.append((name, "list"))
        else:
            key.append((name, value))
    return tuple(key)


def _report_dict(report: Any) -> dict[str, Any]:
    return dict(report.__dict__) if hasattr(report, "__dict__") else dict(report)


def _load_scorer(pipes: LoadedPipelines, clip_path: str) -> Any:
    """The model's contrastive scorer (shipped model) or a configured local CLIP; None when neither exists."""
    from worker.alignment import load_scorer

    return load_scorer(pipes.model_ref, pipes.text2img, clip_path or None)


__all__ = ["Engine", "PreparedJob", "UnsupportedPipeline"]
