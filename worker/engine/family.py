"""What differs between model families for the engine: the denoiser module, the shape of one image's starting
latents, how a known image becomes latents and is noised (outpaints), and the recipe of the engine's own batched loop.

One ``Family`` per pipeline class; ``family_for(pipe)`` picks it when a model loads and refuses, naming the class and
the supported families, a pipeline the engine cannot drive. The UNet families are here (SD 1.x/2.x, SDXL, the shipped
pixel-space model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRecipe:
    """What differs between pipelines in the engine's own denoising loop for cross-job batches."""

    scale_initial_noise: bool
    """Multiply starting noise by ``scheduler.init_noise_sigma`` (diffusers' SD pipelines do; ShapesPipeline not)."""
    extra_step_kwargs: bool
    """Pass the pipeline's ``prepare_extra_step_kwargs(generators, eta=0)`` to ``scheduler.step``."""
    decoder: str
    """``vae`` (latents / scaling_factor -> VAE -> image processor) or ``pipeline`` (the pipeline's ``decode``)."""


@dataclass(frozen=True)
class Family:
    """How the engine drives one kind of pipeline."""

    name: str
    """Short name for records and errors (``sd``, ``sdxl``, ``shapes``)."""
    pipelines: tuple[str, ...]
    """Text-to-image pipeline class names of this family."""
    denoiser: str = "unet"
    """The pipeline attribute holding the denoiser."""
    batch_recipe: BatchRecipe | None = None
    """How the engine's batched loop reproduces this pipeline's ``__call__``; None runs every job alone."""

    def denoiser_of(self, pipe: Any) -> Any:
        """The pipeline's denoiser module (a diffusers model: its ``config`` is read at run time)."""
        return getattr(pipe, self.denoiser)

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        """(channels, h, w) of one image's starting latents: VAE latents, or pixels for pixel-space models; sizes that
        the VAE does not divide are an error naming them."""
        scale = int(getattr(pipe, "vae_scale_factor", 1) or 1)
        if width % scale or height % scale:
            raise ValueError(f"width and height must be multiples of {scale} for this model, got {width}x{height}")
        return int(self.denoiser_of(pipe).config.in_channels), height // scale, width // scale

    def encode_image(self, pipe: Any, pixels: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Latents (1, C, h, w) of ``pixels`` (1, 3, H, W) in [-1, 1], as the denoiser sees them: the VAE's mode,
        shifted and scaled by its config; the pixels themselves for pixel-space models."""
        vae = getattr(pipe, "vae", None)
        if vae is None:
            return pixels.to(device, dtype)
        with torch.no_grad():
            known = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((known.float() - shift) * float(vae.config.scaling_factor)).to(device, dtype)

    def noised(self, scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``clean`` latents noised to ``timesteps`` (one per row) with ``noise``, as the scheduler's forward process
        does (DDPM-style schedulers' ``add_noise``)."""
        if not callable(getattr(scheduler, "add_noise", None)):
            raise ValueError(f"this needs a scheduler with add_noise, {type(scheduler).__name__} has none")
        return scheduler.add_noise(clean, noise, timesteps)

    def convolutions(self, pipe: Any) -> list[nn.Conv2d]:
        """The convolutions of denoiser and decoder (``--tile`` pads them circularly)."""
        return [
            module
            for name in (self.denoiser, "vae")
            if getattr(pipe, name, None) is not None
            for module in getattr(pipe, name).modules()
            if isinstance(module, nn.Conv2d)
        ]


FAMILIES: tuple[Family, ...] = (
    Family(
        "sd",
        ("StableDiffusionPipeline",),
        batch_recipe=BatchRecipe(scale_initial_noise=True, extra_step_kwargs=True, decoder="vae"),
    ),
    Family("sdxl", ("StableDiffusionXLPipeline",)),
    Family(
        "shapes",
        ("ShapesPipeline",),
        batch_recipe=BatchRecipe(scale_initial_noise=False, extra_step_kwargs=False, decoder="pipeline"),
    ),
)
"""Every family the engine drives."""


class UnsupportedPipeline(ValueError):
    """A model whose pipeline class no family handles; names the class and the supported ones."""


def family_for(pipe: Any) -> Family:
    """The family of a loaded text-to-image pipeline (by its class name)."""
    name = type(pipe).__name__
    for family in FAMILIES:
        if name in family.pipelines:
            return family
    supported = ", ".join(f"{family.name} ({', '.join(family.pipelines)})" for family in FAMILIES)
    raise UnsupportedPipeline(f"pipeline {name} is not supported; supported families: {supported}")
