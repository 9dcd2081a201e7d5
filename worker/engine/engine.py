"""``Engine``: a model held resident in one worker process, and the named stages of a job.

Stages of a grid job: ``encode_prompt`` (text-encoding module) -> ``prepare_latents`` (one generator per image, so
each image is reproducible alone; ``--weird`` noise) -> ``condition_images`` (``--chaos`` per-image conditioning) ->
``prepare_layout`` (place phrases) -> denoising (the diffusers pipeline with a step callback for progress, cancel and
``--stop``) -> the pipeline's decode. Variations and upscales reuse the same weights through the image-to-image
sibling; outpaints add ``prepare_outpaint`` and keep the source's latents in place at every step
(``worker.engine.outpaint``). Several grid jobs can share one pass (``generate_batch``, ``worker.engine.batch``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch import nn

from shared import defaults, messages
from shared.errors import Unsupported
from shared.jobs.spec import JobKind, JobSpec
from worker.engine.batch import generate_batch
from worker.engine.device import prepare_for_device
from worker.engine.family import BatchRecipe, family_for
from worker.engine.generation import Generation, JobCanceled, ProgressCallback
from worker.engine.hooks import stop_step, tiling, x0_recorder
from worker.engine.inpaint import Region, prepare_region, restore_unmasked
from worker.engine.outpaint import KeptRegion, keep_source, prepare_canvas
from worker.layout_attention import LayoutBias, RowLayout, install, prompt_layout
from worker.model_loader import LoadedPipelines, choose_device, choose_dtype, describe, load_pipelines
from worker.text_encoding import Conditioning, TextEncoding

log = logging.getLogger(__name__)


class Engine:
    """A model held resident in one worker process; ``generate`` runs one job."""

    loads: int = 0
    """How many engines this process has loaded (a worker must load exactly one)."""

    def __init__(self, pipes: LoadedPipelines, text: TextEncoding) -> None:
        self.pipes = pipes
        self.text = text
        self.family = family_for(pipes.text2img)
        """How this model's pipeline is driven (``worker.engine.family``)."""
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
        family_for(pipes.text2img)  # an unsupported pipeline fails here, naming its class and the supported ones
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
            "family": self.family.name,
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
        return self.family.latent_shape(self.pipes.text2img, width, height)

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
            **(call_kwargs or {}),
        }
        outpaint: KeptRegion | None = None
        region: Region | None = None
        if source is None:
            pipe = self.pipes.text2img
            call.update(height=spec.height, width=spec.width, latents=self.prepare_latents(spec, generators))
        else:
            pipe = self.pipes.img2img
            image = source.convert("RGB").resize((spec.width, spec.height), Image.Resampling.LANCZOS)
            if spec.kind is JobKind.OUTPAINT:
                image, known, keep = self.prepare_outpaint(spec, source)
                # the kept region's noise: each image's own, from fresh generators of its seed
                outpaint = KeptRegion(known, keep, self.prepare_latents(spec, self.generators(spec.seeds)))
            elif spec.kind is JobKind.INPAINT:  # worker.engine.inpaint: the same kept latents, outside the mask
                region = self.prepare_inpaint(spec, source)
                image = region.image
                outpaint = KeptRegion(
                    region.known, region.keep, self.prepare_latents(spec, self.generators(spec.seeds))
                )
            call.update(image=image, strength=spec.strength)
            if pipe is self.pipes.text2img:  # our pixel-space pipeline takes height/width for img2img too
                call.update(height=spec.height, width=spec.width)
        notes: dict[str, Any] = {
            "text_cache_hit": self.text.cache_info().hits > hits_before,
            "tokens": [report.__dict__ for report in cond.token_reports],
        }
        if placed:
            notes["layout"] = placed
        with tiling(self.family, pipe, spec.tile), x0_recorder(pipe) as x0:
            denoise_started = time.perf_counter()
            step_times: list[float] = []
            stop_at = stop_step(spec, source is not None)

            def on_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                step_times.append(time.perf_counter())
                done = index + 1
                total = int(getattr(pipeline, "num_timesteps", 0) or spec.steps)
                if should_cancel is not None and should_cancel():
                    raise JobCanceled(f"job {spec.job_id} was cancelled at step {done} of {total}")
                if outpaint is not None:
                    tensors = {"latents": keep_source(self.family, pipeline, index, tensors["latents"], outpaint)}
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
        if region is not None:
            images = restore_unmasked(images, region)
            notes["inpaint"] = {"mask_coverage": round(region.coverage, 4)}
        generation = Generation(images=images, seeds=spec.seeds, timings=timings, notes=notes)
        self.score(generation, spec)
        return generation

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
        """How this model's own denoising loop is run for a cross-job batch; None when the family has no recipe
        (those models run every job alone)."""
        return self.family.batch_recipe

    def generate_batch(
        self,
        specs: list[JobSpec],
        *,
        on_progress: list[ProgressCallback | None] | None = None,
        should_cancel: list[Callable[[], bool] | None] | None = None,
    ) -> list[Generation | JobCanceled]:
        """Several compatible grid jobs in one denoising pass (``worker.engine.batch``)."""
        return generate_batch(self, specs, on_progress=on_progress, should_cancel=should_cancel)

    # -- helpers ------------------------------------------------------------------------------------------------

    def score(self, generation: Generation, spec: JobSpec) -> None:
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
