"""The generation engine: one resident pipeline per worker process, run in named stages for every job.

Stages of a grid job: ``encode_prompt`` (text-encoding module) -> ``prepare_latents`` (one generator per image, so
each image is reproducible alone; ``--weird`` noise) -> ``condition_images`` (``--chaos`` per-image conditioning) ->
denoising (the diffusers pipeline with a step callback for progress, cancel and ``--stop``) -> the pipeline's decode.
Variations and upscales reuse the same pipeline's weights through its image-to-image sibling. Outpaints (Zoom Out,
pans, Make Square) add ``prepare_outpaint`` and keep the source's latents in place at every step (see there).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageFilter
from torch import nn
from torch.nn import functional

from shared import defaults
from shared.jobs.spec import JobKind, JobSpec
from worker.layout_attention import LayoutAttnProcessor, LayoutBias, RowLayout, install, prompt_layout
from worker.model_loader import LoadedPipelines, choose_device, choose_dtype, describe, load_pipelines
from worker.text_encoding import Conditioning, TextEncoding

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, torch.Tensor | None], None]
"""Called after every denoising step with (steps done, steps in total, current latents (batch, C, h, w))."""


class JobCanceled(Exception):
    """Raised inside the denoising loop when the member cancelled the job."""


@dataclass
class Generation:
    """What the engine made for one job."""

    images: list[Image.Image]
    seeds: tuple[int, ...]
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts for the reproducibility record (steps run, stop handling, token reports, alignment scores)."""


@dataclass(frozen=True)
class BatchRecipe:
    """What differs between pipelines in the engine's own denoising loop for cross-job batches."""

    scale_initial_noise: bool
    """Multiply starting noise by ``scheduler.init_noise_sigma`` (diffusers' SD pipelines do; ShapesPipeline not)."""
    extra_step_kwargs: bool
    """Pass the pipeline's ``prepare_extra_step_kwargs(generators, eta=0)`` to ``scheduler.step``."""
    decoder: str
    """``vae`` (latents / scaling_factor -> VAE -> image processor) or ``pipeline`` (the pipeline's ``decode``)."""


BATCH_RECIPES: dict[str, BatchRecipe] = {
    "StableDiffusionPipeline": BatchRecipe(scale_initial_noise=True, extra_step_kwargs=True, decoder="vae"),
    "ShapesPipeline": BatchRecipe(scale_initial_noise=False, extra_step_kwargs=False, decoder="pipeline"),
}
"""Pipelines whose ``__call__`` the engine's batched loop reproduces step for step (others run jobs alone)."""


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


class Engine:
    """A model held resident in one worker process; ``generate`` runs one job."""

    loads: int = 0
    """How many engines this process has loaded (a worker must load exactly one)."""

    def __init__(self, pipes: LoadedPipelines, text: TextEncoding) -> None:
        self.pipes = pipes
        self.text = text
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
    ) -> Engine:
        """Load ``model_ref`` once; logged with the process id so tests and operators can count loads."""
        torch_device = choose_device(device)
        pipes = load_pipelines(model_ref, torch_device, choose_dtype(dtype, torch_device))
        text = TextEncoding.from_pipeline(pipes.text2img, model_key=model_ref)
        engine = cls(pipes, text)
        engine.prepare_for_device()
        engine.enable_layout(layout_strength)
        engine.scorer = _load_scorer(pipes, alignment_clip)
        Engine.loads += 1
        log.info("engine loaded: model %s, pid %d, load #%d in this process", model_ref, os.getpid(), Engine.loads)
        return engine

    @property
    def model_ref(self) -> str:
        return self.pipes.model_ref

    def describe(self) -> dict[str, Any]:
        """Model, device, dtype and component classes for job records."""
        return {
            "model": self.pipes.model_ref,
            "pipeline": type(self.pipes.text2img).__name__,
            "device": str(self.pipes.device),
            "dtype": str(self.pipes.dtype).removeprefix("torch."),
            "components": describe(self.pipes.text2img),
        }

    def enable_layout(self, strength: float) -> bool:
        """Steer prompts that say where things go (``worker.layout``) with ``strength`` (0 turns it off); needs a
        UNet with diffusers' default attention processors. Returns whether layouts are applied."""
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"layout_strength must be a finite number >= 0, got {strength}")
        self.layout_strength = 0.0
        if strength == 0:
            return False
        pipes = (self.pipes.text2img, self.pipes.img2img)
        unets = {id(pipe.unet): pipe.unet for pipe in pipes if hasattr(pipe, "unet")}
        if not unets or not all(install(unet) for unet in unets.values()):
            log.info("layouts off: model %s has no UNet with default attention processors", self.pipes.model_ref)
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

    def layout_kwargs(self, spec: JobSpec, rows: list[RowLayout]) -> dict[str, Any]:
        """``cross_attention_kwargs`` for a denoiser call over images with these row layouts ({} when none)."""
        if self.layout_strength == 0 or not any(rows):
            return {}
        _, height, width = self.latent_shape(spec.width, spec.height)
        bias = LayoutBias(tuple(rows), height, width, self.layout_strength)
        return {"cross_attention_kwargs": {"layout": bias}}

    def encode_prompt(self, spec: JobSpec) -> Conditioning:
        """Weighted ``::`` parts and the ``--no`` negative prompt, encoded (cached per text)."""
        return self.text.encode(spec.parts, spec.negative)

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """(channels, h, w) of one image's starting latents: VAE latents, or pixels for pixel-space models."""
        pipe = self.pipes.text2img
        scale = int(getattr(pipe, "vae_scale_factor", 1) or 1)
        if width % scale or height % scale:
            raise ValueError(f"width and height must be multiples of {scale} for this model, got {width}x{height}")
        return int(pipe.unet.config.in_channels), height // scale, width // scale

    def generators(self, seeds: tuple[int, ...]) -> list[torch.Generator]:
        """One CPU generator per image: the same seed gives the same noise on any device and in any batch."""
        return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]

    def prepare_latents(self, spec: JobSpec, generators: list[torch.Generator]) -> torch.Tensor:
        """Unit-variance starting noise (batch, C, h, w); ``--weird`` mixes in low-frequency noise, off the model's
        training distribution, drawn from the same per-image generator (so batching cannot change an image)."""
        channels, height, width = self.latent_shape(spec.width, spec.height)
        per_image = []
        for generator in generators:
            noise = randn_tensor((1, channels, height, width), generator=generator, dtype=torch.float32)
            if spec.weird > 0:
                coarse_h, coarse_w = max(1, height // 8), max(1, width // 8)
                coarse = randn_tensor((1, channels, coarse_h, coarse_w), generator=generator, dtype=torch.float32)
                smooth = nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
                smooth = smooth / smooth.std().clamp_min(1e-6)
                noise = math.sqrt(1 - spec.weird) * noise + math.sqrt(spec.weird) * smooth
            per_image.append(noise)
        return torch.cat(per_image).to(self.pipes.device, self.pipes.dtype)

    def condition_images(self, spec: JobSpec, cond: Conditioning, count: int) -> dict[str, torch.Tensor]:
        """Pipeline kwargs with one conditioning row per image (batch, T, D); ``--chaos`` pushes each image's text
        embedding apart by a seeded perturbation scaled to the embedding's spread, so the grid varies more."""
        kwargs = cond.as_pipeline_kwargs()
        expanded: dict[str, torch.Tensor] = {}
        for name, tensor in kwargs.items():
            expanded[name] = tensor.expand(count, *tensor.shape[1:]).clone()
        if spec.chaos > 0:
            embeds = expanded["prompt_embeds"]
            scale = spec.chaos * embeds.float().std()
            for index, seed in enumerate(spec.seeds[:count]):
                generator = torch.Generator(device="cpu").manual_seed(int(seed) ^ 0x5EED)
                noise = torch.randn(embeds.shape[1:], generator=generator)
                embeds[index] += (scale * noise).to(embeds.device, embeds.dtype)
        return {name: tensor.to(self.pipes.device) for name, tensor in expanded.items()}

    def prepare_outpaint(self, spec: JobSpec, source: Image.Image) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
        """The start of an outpaint: (canvas image, latents of the source placed at ``spec.source_box`` on the canvas
        (1, C, h, w), keep mask (1, 1, h, w)).

        The canvas is the source in its box and, around it, the source's edges stretched outwards and blurred: started
        from at ``spec.strength`` (below 1), the new part inherits the source's colours and light instead of guessing
        them from pure noise (tried on the shipped model: at strength 1 the new background often clashed, at 0.9 it
        matched). The mask is 1 on latent pixels wholly inside the box, eroded by one latent pixel so that the seam is
        painted rather than cut. During denoising those latents are replaced after every step by the source's latents
        noised to the next step's level (the blended-latents way of diffusers' inpaint pipeline), and by the clean ones
        after the last step, so the source survives and the new part grows to match it.
        """
        if spec.source_box is None:
            raise ValueError(f"outpaint job {spec.job_id} needs source_box, got None")
        pipe = self.pipes.text2img
        if not callable(getattr(pipe.scheduler, "add_noise", None)):
            raise ValueError(f"outpainting needs a scheduler with add_noise, {type(pipe.scheduler).__name__} has none")
        _, latent_h, latent_w = self.latent_shape(spec.width, spec.height)
        scale = spec.width // latent_w
        x0, y0, x1, y1 = spec.source_box
        left, top = round(x0 * spec.width), round(y0 * spec.height)
        right, bottom = max(left + 1, round(x1 * spec.width)), max(top + 1, round(y1 * spec.height))
        placed = source.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS)
        pad = ((top, spec.height - bottom), (left, spec.width - right), (0, 0))
        canvas = Image.fromarray(np.pad(np.asarray(placed), pad, mode="edge"))
        canvas = canvas.filter(ImageFilter.GaussianBlur(max(spec.width, spec.height) / 16))
        canvas.paste(placed, (left, top))
        pixels = torch.from_numpy(np.asarray(canvas, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1  # (1,3,H,W)
        inside = torch.zeros(1, 1, spec.height, spec.width)
        inside[..., top:bottom, left:right] = 1
        keep = (functional.avg_pool2d(inside, scale) > 0.999).float() if scale > 1 else inside  # (1, 1, h, w)
        keep = 1 - functional.max_pool2d(1 - keep, 3, stride=1, padding=1)
        device, dtype = self.pipes.device, self.pipes.dtype
        vae = getattr(pipe, "vae", None)
        if vae is None:  # pixel-space model: the latents are the pixels
            known = pixels
        else:
            with torch.no_grad():
                known = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode()
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            known = (known.float() - shift) * float(vae.config.scaling_factor)
        if known.shape[-2:] != (latent_h, latent_w):
            raise ValueError(f"outpaint latents are {tuple(known.shape)}, expected (1, C, {latent_h}, {latent_w})")
        return canvas, known.to(device, dtype), keep.to(device, dtype)

    # -- jobs ---------------------------------------------------------------------------------------------------

    def generate(
        self,
        spec: JobSpec,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        source: Image.Image | None = None,
        upscaler: Any = None,
    ) -> Generation:
        """Run ``spec``: a grid, a variation grid of ``source``, an outpaint grid around ``source``, or an upscale."""
        if spec.kind is JobKind.UPSCALE:
            if source is None or upscaler is None:
                raise ValueError("an upscale job needs its source image and an upscaler")
            return self._upscale(spec, source, upscaler, on_progress, should_cancel)
        if spec.kind in (JobKind.VARIATION, JobKind.OUTPAINT, JobKind.DESCRIBE) and source is None:
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
        return self._grid(spec, source, on_progress, should_cancel)

    def describe_image(self, image: Image.Image, count: int) -> list[tuple[str, float]]:
        """/describe: the ``count`` candidates of the model's caption bank nearest ``image`` in the alignment
        scorer's space (cosine similarity), best first."""
        if self._caption_bank is None:
            from worker.alignment import ALIGNMENT_SUBFOLDER
            from worker.caption_bank import CAPTIONS_NAME, CaptionBank

            folder = Path(self.model_ref) / ALIGNMENT_SUBFOLDER
            bank = CaptionBank.load(folder, self.scorer) if self.scorer is not None else None
            if bank is None:
                raise ValueError(
                    f"model {Path(self.model_ref).name} cannot describe images: it needs an alignment scorer and "
                    f"candidate prompts ({ALIGNMENT_SUBFOLDER}/{CAPTIONS_NAME})"
                )
            self._caption_bank = bank
        return self._caption_bank.best(self.scorer.image_vectors([image])[0], count)

    def _grid(
        self,
        spec: JobSpec,
        source: Image.Image | None,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> Generation:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        hits_before = self.text.cache_info().hits
        cond = self.encode_prompt(spec)
        timings["encode_s"] = time.perf_counter() - started
        count = len(spec.seeds)
        generators = self.generators(spec.seeds)
        kwargs = self.condition_images(spec, cond, count)
        row, placed = self.prepare_layout(spec)
        call: dict[str, Any] = {
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance,
            "generator": generators,
            "output_type": "pil",
            **kwargs,
            **self.layout_kwargs(spec, [row] * count),
        }
        outpaint: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if source is None:
            pipe = self.pipes.text2img
            call.update(height=spec.height, width=spec.width, latents=self.prepare_latents(spec, generators))
        else:
            pipe = self.pipes.img2img
            image = source.convert("RGB").resize((spec.width, spec.height), Image.Resampling.LANCZOS)
            if spec.kind is JobKind.OUTPAINT:
                image, known, keep = self.prepare_outpaint(spec, source)
                # the kept region's noise: each image's own, from fresh generators of its seed
                outpaint = (known, keep, self.prepare_latents(spec, self.generators(spec.seeds)))
            call.update(image=image, strength=spec.strength)
            if pipe is self.pipes.text2img:  # our pixel-space pipeline takes height/width for img2img too
                call.update(height=spec.height, width=spec.width)
        notes: dict[str, Any] = {
            "text_cache_hit": self.text.cache_info().hits > hits_before,
            "tokens": [report.__dict__ for report in cond.token_reports],
        }
        if placed:
            notes["layout"] = placed
        with self._tiling(pipe, spec.tile), self._x0_recorder(pipe) as x0:
            denoise_started = time.perf_counter()
            step_times: list[float] = []
            stop_at = self._stop_step(spec, pipe, source)

            def on_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                step_times.append(time.perf_counter())
                done = index + 1
                total = int(getattr(pipeline, "num_timesteps", 0) or spec.steps)
                if should_cancel is not None and should_cancel():
                    raise JobCanceled(f"job {spec.job_id} was cancelled at step {done} of {total}")
                if outpaint is not None:
                    tensors = {"latents": _keep_source(pipeline, index, tensors["latents"], outpaint)}
                if on_progress is not None:
                    on_progress(done, total, tensors.get("latents"))
                if outpaint is not None:
                    return tensors
                if stop_at is not None and done >= stop_at and not getattr(pipeline, "_interrupt", False):
                    pipeline._interrupt = True
                    notes["stopped_at_step"] = done
                    if x0.get("latest") is not None:
                        notes["stop_decoded"] = "x0 estimate"
                        return {"latents": x0["latest"]}
                    notes["stop_decoded"] = "current latents (scheduler gives no x0 estimate)"
                return {}

            output = pipe(callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"], **call)
            pipe._interrupt = False
            finished = time.perf_counter()
        if step_times:
            timings["denoise_s"] = step_times[-1] - denoise_started
            timings["decode_s"] = finished - step_times[-1]
            notes["steps_run"] = len(step_times)
        timings["generate_s"] = finished - started
        images = [image.convert("RGB") for image in output.images]
        generation = Generation(images=images, seeds=spec.seeds, timings=timings, notes=notes)
        self._score(generation, spec)
        return generation

    def _upscale(
        self,
        spec: JobSpec,
        source: Image.Image,
        upscaler: Any,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> Generation:
        started = time.perf_counter()
        image = upscaler.upscale(source.convert("RGB"))
        timings = {"upscale_s": time.perf_counter() - started}
        notes: dict[str, Any] = {"upscaler": type(upscaler).__name__, "mode": spec.upscale_mode}
        if spec.upscale_mode == "creative":
            creative = spec.replace(
                kind=JobKind.VARIATION, width=image.width, height=image.height, seeds=spec.seeds[:1]
            )
            refined = self._grid(creative, image, on_progress, should_cancel)
            image = refined.images[0]
            timings.update({f"creative_{k}": v for k, v in refined.timings.items()})
        elif on_progress is not None:
            on_progress(1, 1, None)
        timings["generate_s"] = time.perf_counter() - started
        return Generation(images=[image], seeds=spec.seeds[:1], timings=timings, notes=notes)

    # -- device readiness ------------------------------------------------------------------------------------------

    def prepare_for_device(self, *, compile_denoiser: bool = False) -> dict[str, Any]:
        """Device readiness, applied once after loading: PyTorch SDPA attention in the denoiser, channels_last
        convolutions (the denoiser on CPUs; denoiser and VAE on CUDA) and TF32 matmuls on CUDA, and optionally
        ``torch.compile`` of the denoiser with static shapes (sizes come from the finite set of aspect-ratio buckets
        ``shared.resolve`` snaps to, and batches from the grid size, so each (size, batch) compiles once and then
        repeats). Returns what was applied, for records."""
        pipe = self.pipes.text2img
        applied: dict[str, Any] = {}
        unet = getattr(pipe, "unet", None)
        if unet is None:
            return applied
        processors = getattr(unet, "attn_processors", {})
        if processors and all(isinstance(p, LayoutAttnProcessor) for p in processors.values()):
            applied["attention"] = "sdpa (layout processor)"  # enable_layout ran first; keep its processors
        elif hasattr(nn.functional, "scaled_dot_product_attention") and hasattr(unet, "set_attn_processor"):
            from diffusers.models.attention_processor import AttnProcessor2_0

            unet.set_attn_processor(AttnProcessor2_0())
            applied["attention"] = "sdpa"
        if self.pipes.device.type == "cuda":
            for name in ("unet", "vae"):
                module = getattr(pipe, name, None)
                if module is not None:
                    module.to(memory_format=torch.channels_last)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
            applied["channels_last"] = True
        elif self.pipes.device.type == "cpu":
            # oneDNN's channels-last convolutions: the shipped model's 4 images x 20 steps took 2.64 s instead of
            # 3.04 s on two cores (best of 3, alternating), pixels within 1/255
            unet.to(memory_format=torch.channels_last)
            applied["channels_last"] = "unet"
        if compile_denoiser:
            compiled = torch.compile(unet, dynamic=False)
            pipe.unet = compiled
            if self.pipes.img2img is not pipe and getattr(self.pipes.img2img, "unet", None) is unet:
                self.pipes.img2img.unet = compiled
            applied["compiled"] = "unet"
        applied["dtype"] = str(self.pipes.dtype).removeprefix("torch.")
        log.info("engine prepared for %s: %s", self.pipes.device, applied)
        return applied

    def synchronize(self) -> None:
        """Wait for queued GPU work, so stage timings measure the work and not its launch."""
        if self.pipes.device.type == "cuda":
            torch.cuda.synchronize(self.pipes.device)

    # -- cross-job batches -----------------------------------------------------------------------------------------

    @property
    def batch_recipe(self) -> BatchRecipe | None:
        """How this model's own denoising loop is run for a cross-job batch; None when the pipeline has no recipe
        (those models run every job alone)."""
        return BATCH_RECIPES.get(type(self.pipes.text2img).__name__)

    def generate_batch(
        self,
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
        recipe = self.batch_recipe
        if recipe is None:
            raise ValueError(f"pipeline {type(self.pipes.text2img).__name__} has no batch recipe; run its jobs alone")
        progress = on_progress or [None] * len(specs)
        cancels = should_cancel or [None] * len(specs)
        if len(progress) != len(specs) or len(cancels) != len(specs):
            raise ValueError(f"on_progress and should_cancel need one entry per spec ({len(specs)})")
        prepared = [self._prepare_batch_job(spec) for spec in specs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, job in enumerate(prepared):
            groups.setdefault(job.shape_key, []).append(index)
        outcomes: list[Generation | JobCanceled | None] = [None] * len(specs)
        for indices in groups.values():
            results = self._run_batch_group(
                recipe,
                [prepared[i] for i in indices],
                [progress[i] for i in indices],
                [cancels[i] for i in indices],
            )
            for index, result in zip(indices, results, strict=True):
                outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    def _prepare_batch_job(self, spec: JobSpec) -> _BatchJob:
        """The per-job stages of a batched grid: encode_prompt -> prepare_latents -> condition_images."""
        if spec.kind is not JobKind.GRID or spec.source is not None or spec.tile or spec.stop < 100:
            raise ValueError(f"job {spec.job_id} cannot join a batch (kind {spec.kind}, tile, --stop or a source)")
        started = time.perf_counter()
        hits_before = self.text.cache_info().hits
        cond = self.encode_prompt(spec)
        self.synchronize()
        encode_s = time.perf_counter() - started
        generators = self.generators(spec.seeds)
        latents = self.prepare_latents(spec, generators)
        kwargs = self.condition_images(spec, cond, len(spec.seeds))
        notes: dict[str, Any] = {
            "text_cache_hit": self.text.cache_info().hits > hits_before,
            "tokens": [report.__dict__ for report in cond.token_reports],
        }
        layout, placed = self.prepare_layout(spec)
        if placed:
            notes["layout"] = placed
        return _BatchJob(
            spec=spec,
            generators=generators,
            latents=latents,
            embeds=kwargs["prompt_embeds"].to(self.pipes.dtype),
            negative=kwargs["negative_prompt_embeds"].to(self.pipes.dtype),
            encode_s=encode_s,
            started=started,
            notes=notes,
            layout=layout,
        )

    def _run_batch_group(
        self,
        recipe: BatchRecipe,
        jobs: list[_BatchJob],
        progress: list[ProgressCallback | None],
        cancels: list[Callable[[], bool] | None],
    ) -> list[Generation | JobCanceled]:
        """The ``denoise`` and ``decode`` stages of one batch: the pipeline's components, diffusers' CFG loop with a
        guidance scale per row (batch, 1, 1, 1)."""
        pipe = self.pipes.text2img
        unet, scheduler = pipe.unet, pipe.scheduler
        device = self.pipes.device
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
        attention = self.layout_kwargs(spec0, layouts).get("cross_attention_kwargs")
        canceled: dict[int, JobCanceled] = {}
        step_kwargs = pipe.prepare_extra_step_kwargs(generators, 0.0) if recipe.extra_step_kwargs else {}
        self.synchronize()
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
            self.synchronize()
            denoised = time.perf_counter()
            images = self._decode_batch(recipe, latents, generators) if len(canceled) < len(jobs) else []
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
            self._score(generation, job.spec)
            outcomes.append(generation)
        return outcomes

    def _decode_batch(
        self, recipe: BatchRecipe, latents: torch.Tensor, generators: list[torch.Generator]
    ) -> list[Image.Image]:
        """The pipeline's own decode: ShapesPipeline's pixels, or the VAE and image processor of SD pipelines."""
        pipe = self.pipes.text2img
        if recipe.decoder == "pipeline":
            images = pipe.decode(latents, "pil")
        else:
            vae = pipe.vae
            decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False, generator=generators)[0]
            images = pipe.image_processor.postprocess(
                decoded, output_type="pil", do_denormalize=[True] * decoded.shape[0]
            )
        return [image.convert("RGB") for image in images]

    # -- helpers ------------------------------------------------------------------------------------------------

    def _stop_step(self, spec: JobSpec, pipe: Any, source: Image.Image | None) -> int | None:
        """The step after which ``--stop`` decodes (None = run to the end)."""
        if spec.stop >= 100:
            return None
        total = spec.steps if source is None else max(1, int(spec.steps * spec.strength))
        return max(1, round(total * spec.stop / 100))

    @contextlib.contextmanager
    def _tiling(self, pipe: Any, enabled: bool) -> Iterator[None]:
        """``--tile``: circular padding in every convolution of the denoiser and decoder, so images wrap."""
        if not enabled:
            yield
            return
        convs = [
            module
            for name in ("unet", "vae")
            if getattr(pipe, name, None) is not None
            for module in getattr(pipe, name).modules()
            if isinstance(module, nn.Conv2d)
        ]
        previous = [conv.padding_mode for conv in convs]
        for conv in convs:
            conv.padding_mode = "circular"
        try:
            yield
        finally:
            for conv, mode in zip(convs, previous, strict=True):
                conv.padding_mode = mode

    @contextlib.contextmanager
    def _x0_recorder(self, pipe: Any) -> Iterator[dict[str, torch.Tensor | None]]:
        """Records the scheduler's latest estimate of the clean sample (``--stop`` decodes it)."""
        scheduler = pipe.scheduler
        original = scheduler.step
        box: dict[str, torch.Tensor | None] = {"latest": None}

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor):
                box["latest"] = out[1]
            elif getattr(out, "pred_original_sample", None) is not None:
                box["latest"] = out.pred_original_sample
            elif getattr(scheduler, "model_outputs", None) and scheduler.config.get("algorithm_type", "").endswith(
                "dpmsolver++"
            ):
                box["latest"] = scheduler.model_outputs[-1]
            return out

        scheduler.step = step  # an instance attribute shadowing the class's method for this job only
        try:
            yield box
        finally:
            del scheduler.step

    def _score(self, generation: Generation, spec: JobSpec) -> None:
        """Alignment of each image with the positive prompt, when the model has a scorer."""
        if self.scorer is None:
            return
        started = time.perf_counter()
        texts = [spec.positive_prompt] * len(generation.images)
        generation.notes["alignment"] = [round(float(s), 4) for s in self.scorer.score(generation.images, texts)]
        generation.timings["score_s"] = time.perf_counter() - started


def _load_scorer(pipes: LoadedPipelines, clip_path: str) -> Any:
    """The model's contrastive scorer (shipped model) or a configured local CLIP; None when neither exists."""
    from worker.alignment import load_scorer

    return load_scorer(pipes.model_ref, pipes.text2img, clip_path or None)


def _keep_source(
    pipeline: Any, index: int, latents: torch.Tensor, outpaint: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Latents (batch, C, h, w) after step ``index`` with the kept region set to the source's latents at the noise
    level of the next step, or clean after the last step. ``outpaint``: (known (1, C, h, w), keep mask (1, 1, h, w),
    each image's own starting noise (batch, C, h, w))."""
    known, keep, noise = outpaint
    timesteps = pipeline.scheduler.timesteps
    # image-to-image pipelines run the last num_timesteps of the schedule; `index` counts from the first of those
    upcoming_index = len(timesteps) - int(pipeline.num_timesteps) + index + 1
    target = known.expand_as(latents)
    if upcoming_index < len(timesteps):
        upcoming = timesteps[upcoming_index : upcoming_index + 1].repeat(latents.shape[0])
        target = pipeline.scheduler.add_noise(target, noise.to(latents.dtype), upcoming)
    return keep * target + (1 - keep) * latents


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of an image (for the shared image store)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
