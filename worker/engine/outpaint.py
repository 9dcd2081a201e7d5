"""Outpaints (Zoom Out, the pans, Make Square): the canvas a job starts from and the latents it keeps.

The canvas is the source in its box and, around it, the source's edges stretched outwards and blurred: started from at
``spec.strength`` (below 1), the new part inherits the source's colours and light instead of guessing them from pure
noise (tried on the shipped model: at strength 1 the new background often clashed, at 0.9 it matched). The keep mask
is 1 on latent pixels wholly inside the box, eroded by one latent pixel so that the seam is painted rather than cut.
During denoising those latents are replaced after every step by the source's latents noised to the next step's level
(the blended-latents way of diffusers' inpaint pipeline), and by the clean ones after the last step, so the source
survives and the new part grows to match it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.nn import functional

from shared.jobs.spec import JobSpec
from worker.engine.families import Family

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptRegion:
    """What an outpaint keeps: ``known`` latents of the source on the canvas (1, C, h, w), the ``keep`` mask
    (1, 1, h, w) and each image's own starting ``noise`` (batch, C, h, w)."""

    known: torch.Tensor
    keep: torch.Tensor
    noise: torch.Tensor


def prepare_canvas(
    family: Family,
    pipe: Any,
    spec: JobSpec,
    source: Image.Image,
    *,
    latent_size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
    """(canvas image, latents of the source placed at ``spec.source_box`` on the canvas (1, C, h, w), keep mask
    (1, 1, h, w)); ``latent_size`` is (h, w) of the job's latents."""
    if spec.source_box is None:
        raise ValueError(f"outpaint job {spec.job_id} needs source_box, got None")
    latent_h, latent_w = latent_size
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
    known = family.encode_image(pipe, pixels, device, dtype)
    if known.shape[-2:] != (latent_h, latent_w):
        raise ValueError(f"outpaint latents are {tuple(known.shape)}, expected (1, C, {latent_h}, {latent_w})")
    return canvas, known, keep.to(device, dtype)


def keep_source(family: Family, pipeline: Any, index: int, latents: torch.Tensor, kept: KeptRegion) -> torch.Tensor:
    """Latents after step ``index``, in the layout of the pipeline's loop (packed for FLUX.1, Chroma, Qwen-Image and
    FLUX.2: ``Family.unpack`` first, ``Family.pack`` after), with the kept region set to the source's latents at the
    noise level of the next step, or clean after the last step."""
    timesteps = pipeline.scheduler.timesteps
    # image-to-image pipelines run the last num_timesteps of the schedule; `index` counts from the first of those
    upcoming_index = len(timesteps) - int(pipeline.num_timesteps) + index + 1
    height, width = kept.known.shape[-2:]
    current = family.unpack(latents, height, width)  # (batch, C, h, w)
    target = kept.known.to(current.dtype).expand_as(current)
    if upcoming_index < len(timesteps):
        upcoming = timesteps[upcoming_index : upcoming_index + 1].repeat(current.shape[0])
        target = family.noised(pipeline.scheduler, target, kept.noise.to(current.dtype), upcoming)
    keep = kept.keep.to(current.dtype)
    return family.pack(keep * target + (1 - keep) * current).to(latents.dtype)
