"""Inpaints (Vary (Region)): the member's mask, the latents kept outside it, and the source's pixels restored there.

The outpaint's keep-region mechanism, generalised (``worker.engine.outpaint``: ``KeptRegion``, ``keep_source``): an
inpaint keeps the source's latents outside the mask at every step (noised to the next step's level, clean after the
last), so the masked region is painted from the prompt in the context of what surrounds it. In latent space a latent
pixel is kept only when no masked pixel falls in its block; VAE families also repaint one latent pixel around the
mask, so the seam is painted rather than cut. Pixel-space models (the shipped one) keep the unmasked pixels as they
are.

Why not diffusers' inpaint siblings (``StableDiffusionInpaintPipeline``, ``...XLInpaintPipeline``): with an ordinary
(4-channel) UNet they blend latents the same way, and none of them returns the unmasked pixels exactly (the VAE's
round trip changes them unless the caller composites); they also need a second pipeline object per family. So every
family uses the latent keep-mask here, and ``restore_unmasked`` composites the source's own pixels back outside the
mask, which makes "outside the mask the result equals the source" exact on every family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from shared.jobs import mask as masks
from shared.jobs.spec import JobSpec
from worker.engine.families import Family

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    """The start of an inpaint: the source at the job's size, its latents (1, C, h, w), the keep mask in latent space
    (1, 1, h, w; 1 = keep) and the member's mask in pixels (mode ``L``, 255 = repaint)."""

    image: Image.Image
    known: torch.Tensor
    keep: torch.Tensor
    mask: Image.Image

    @property
    def coverage(self) -> float:
        """The fraction of pixels repainted."""
        return masks.coverage(self.mask)


def prepare_region(
    family: Family,
    pipe: Any,
    spec: JobSpec,
    source: Image.Image,
    *,
    latent_size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> Region:
    """The ``Region`` of inpaint job ``spec`` on ``source``; ``latent_size`` is (h, w) of the job's latents."""
    size = (spec.width, spec.height)
    mask = masks.decode(spec.mask, size)
    image = source.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1  # (1,3,H,W)
    repaint = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]  # (1, 1, H, W)
    latent_h, latent_w = latent_size
    scale = spec.width // latent_w
    if scale > 1:
        # a latent pixel is repainted when any pixel of its block is, plus one latent pixel of seam around the mask
        repaint = functional.max_pool2d(repaint, scale)
        repaint = functional.max_pool2d(repaint, 3, stride=1, padding=1)
    keep = 1 - repaint  # (1, 1, h, w)
    known = family.encode_image(pipe, pixels, device, dtype)
    if known.shape[-2:] != (latent_h, latent_w) or keep.shape[-2:] != (latent_h, latent_w):
        raise ValueError(
            f"inpaint latents are {tuple(known.shape)} with keep mask {tuple(keep.shape)}, "
            f"expected (1, C, {latent_h}, {latent_w})"
        )
    return Region(image=image, known=known, keep=keep.to(device, dtype), mask=mask)


def restore_unmasked(images: list[Image.Image], region: Region) -> list[Image.Image]:
    """Each image with the source's own pixels outside the mask (inside it, the image as painted)."""
    return [Image.composite(image.convert("RGB"), region.image, region.mask) for image in images]
