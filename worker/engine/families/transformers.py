"""The transformer (DiT) families on flow-matching schedulers: FLUX.1 dev/schnell, Chroma, FLUX.2 klein, SD3.5,
Qwen-Image and Z-Image.

What they share: the denoiser is ``pipe.transformer``; the scheduler is ``FlowMatchEulerDiscreteScheduler`` (no
``add_noise``: known latents are noised with ``scale_noise``, ``sigma * noise + (1 - sigma) * x0``; the clean
estimate of a step is ``sample - sigma * velocity``); no convolutions to pad for ``--tile`` in the denoiser (its patch
embedding is a linear layer or a stride-``p`` convolution over non-overlapping patches, so circular padding would
change nothing and the image cannot wrap; only the VAE has 3x3 convolutions, and padding those alone leaves a seam),
so ``--tile`` is reported as ignored.

Latent layouts (H x W pixels, VAE scale ``f``), as each pipeline's ``prepare_latents`` draws and packs them:

| family | starting noise per image | layout in the loop and callbacks |
|---|---|---|
| FLUX.1, Chroma, Qwen-Image | (C, H/f, W/f) | 2x2 patches ``(B, (H/2f)(W/2f), 4C)`` (``_pack_latents``) |
| FLUX.2 klein | (4C, H/2f, W/2f), already patchified | its grid flattened ``(B, (H/2f)(W/2f), 4C)`` |
| SD3.5 | (C, H/f, W/f) | the same |
| Z-Image | (C, H/f, W/f), float32 | the same |

The ``pack``/``unpack`` functions below mirror diffusers' static ``_pack_latents``/``_unpack_latents`` (private
helpers of each pipeline class), and ``tests/test_families_engine.py`` checks them against diffusers' own.
"""

from __future__ import annotations

import inspect
import logging
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from worker.engine.families.base import Family

log = logging.getLogger(__name__)


class TransformerFamily(Family):
    """What every transformer family shares (see the module doc)."""

    denoiser = "transformer"
    flow_matching = True
    sdpa_processor = False
    sibling_takes_size = True
    patch = 2
    """Latent pixels per token side: width and height must be multiples of ``vae scale x patch``."""

    layout = ""
    layout_kwarg = ""

    def size_multiple(self, pipe: Any) -> int:
        return self.vae_scale(pipe) * self.patch

    def token_grid(self, latent: tuple[int, int, int]) -> tuple[int, int]:
        """Image tokens per side: one per 2x2 patch of latents."""
        return latent[1] // self.patch, latent[2] // self.patch

    def convolutions(self, pipe: Any) -> list[nn.Conv2d]:
        return []  # --tile is not offered (see the module doc)

    def channels_last_modules(self) -> tuple[str, ...]:
        return ("vae",)

    def noised(self, scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Flow matching's forward process, ``scheduler.scale_noise``, as diffusers' inpaint pipelines call it after
        a step: with the pipeline's begin index set, it reads the scheduler's step index, which ``step`` has already
        advanced to the upcoming step, the one whose noise level ``timesteps`` names."""
        return scheduler.scale_noise(clean, timesteps, noise)


class PackedFamily(TransformerFamily):
    """FLUX.1, Chroma and Qwen-Image: latents of C channels packed in 2x2 patches, (B, h/2 * w/2, 4C)."""

    packed = True

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        self.check_size(pipe, width, height)
        scale = self.vae_scale(pipe)
        return int(self.denoiser_of(pipe).config.in_channels) // 4, height // scale, width // scale

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline._pack_latents (the same in Chroma and
        # Qwen-Image): (B, C, h, w) -> (B, h/2 * w/2, 4C), each token one 2x2 patch, channel-major inside it.
        batch, channels, height, width = latents.shape
        latents = latents.view(batch, channels, height // 2, 2, width // 2, 2)
        latents = latents.permute(0, 2, 4, 1, 3, 5)
        return latents.reshape(batch, (height // 2) * (width // 2), channels * 4)

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline._unpack_latents, with the latent (not pixel)
        # height and width: (B, h/2 * w/2, 4C) -> (B, C, h, w).
        batch, _, channels = latents.shape
        latents = latents.view(batch, height // 2, width // 2, channels // 4, 2, 2)
        latents = latents.permute(0, 3, 1, 4, 2, 5)
        return latents.reshape(batch, channels // 4, height, width)


class FluxFamily(PackedFamily):
    """FLUX.1 dev (distilled guidance embedding) and schnell; negative by true CFG only when ``--no`` is given."""

    image_sibling = "FluxImg2ImgPipeline"
    layout = "joint"
    layout_kwarg = "joint_attention_kwargs"


class ChromaFamily(PackedFamily):
    """Chroma: FLUX.1's layout, T5 only, real CFG. Its inpaint pipeline fails on Chroma's own transformer (it reads
    ``transformer.config.guidance_embeds``), so variations and outpaints use ``ChromaImg2ImgPipeline``."""

    image_sibling = "ChromaImg2ImgPipeline"
    layout = "joint"
    layout_kwarg = "joint_attention_kwargs"


class QwenImageFamily(PackedFamily):
    """Qwen-Image: FLUX.1's packing over a causal 3-D VAE (one frame); true CFG on every job (``--stylize`` is the
    ``true_cfg_scale``), the negative being ``--no`` or the empty text."""

    image_sibling = "QwenImageImg2ImgPipeline"

    def channels_last_modules(self) -> tuple[str, ...]:
        return ()  # a 3-D (causal video) VAE: channels_last is a 4-D memory format

    def vae_scale(self, pipe: Any) -> int:
        return int(pipe.vae_scale_factor)  # 2 ** len(vae.temperal_downsample)

    def encode_image(self, pipe: Any, pixels: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """As ``QwenImageImg2ImgPipeline._encode_vae_image`` with the distribution's mode: one frame through the 3-D
        VAE, normalised by the VAE's ``latents_mean``/``latents_std``; (1, C, h, w)."""
        vae = pipe.vae
        with torch.no_grad():
            known = vae.encode(pixels[:, :, None].to(device, vae.dtype)).latent_dist.mode().float()  # (1, C, 1, h, w)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(known)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(known)
        return ((known - mean) / std)[:, :, 0].to(device, dtype)


class Flux2KleinFamily(TransformerFamily):
    """FLUX.2 klein: patchified latents (4C, h/2, w/2) normalised by the VAE's batch norm, flattened to (B, seq, 4C).

    It has no image-to-image pipeline (its ``image=`` are reference images), so variations and outpaints run
    ``Flux2KleinInpaintPipeline``: the source as the image to denoise from (and as its reference), with a mask that
    repaints everything (variations) or everything but the kept region (outpaints).
    """

    packed = True
    image_sibling = "Flux2KleinInpaintPipeline"
    layout = "joint"
    layout_kwarg = "attention_kwargs"
    guidance_off = MappingProxyType({"guidance_scale": 1.0})  # klein base runs CFG above 1; distilled ignores it

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        self.check_size(pipe, width, height)
        cell = self.vae_scale(pipe) * 2
        return int(self.denoiser_of(pipe).config.in_channels), height // cell, width // cell

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        # Copied from diffusers.pipelines.flux2.pipeline_flux2.Flux2Pipeline._pack_latents: (B, C, h, w) -> (B, h*w, C)
        batch, channels, height, width = latents.shape
        return latents.reshape(batch, channels, height * width).permute(0, 2, 1)

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # The inverse of ``pack``; equals diffusers' _unpack_latents_with_ids on the pipeline's regular grid of ids.
        batch, _, channels = latents.shape
        return latents.permute(0, 2, 1).reshape(batch, channels, height, width)

    def token_grid(self, latent: tuple[int, int, int]) -> tuple[int, int]:
        return latent[1], latent[2]  # its latents are patchified already: one token per latent pixel

    def latents_argument(self, latents: torch.Tensor) -> torch.Tensor:
        return latents  # Flux2KleinPipeline.prepare_latents packs given latents itself (and reads their grid)

    def encode_image(self, pipe: Any, pixels: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """As ``Flux2KleinPipeline._encode_vae_image`` (argmax = the mode): VAE latents patchified 2x2 and normalised
        by the VAE's batch-norm running statistics; (1, 4C, h/2, w/2)."""
        vae = pipe.vae
        with torch.no_grad():
            known = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode().float()  # (1, C, h, w)
        batch, channels, height, width = known.shape
        # Copied from diffusers.pipelines.flux2.pipeline_flux2.Flux2Pipeline._patchify_latents
        known = known.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
        known = known.reshape(batch, channels * 4, height // 2, width // 2)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(known)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(known)
        return ((known - mean) / std).to(device, dtype)

    def image_kwargs(self, image: Any, strength: float, keep: torch.Tensor | None, rows: int) -> dict[str, Any]:
        """The inpaint sibling with a white (repaint) mask over everything, or everything but the kept region."""
        from PIL import Image

        if keep is None:
            mask = Image.new("L", image.size, 255)
        else:
            cells = (1 - keep[0, 0].float().cpu()).mul(255).round().to(torch.uint8).numpy()  # (h, w): 255 = repaint
            mask = Image.fromarray(cells, "L").resize(image.size, Image.Resampling.NEAREST)
        return {"image": image, "mask_image": mask, "strength": strength}


class SD3Family(TransformerFamily):
    """SD3.5: unpacked latents (its transformer patchifies itself, ``patch_size``), real CFG as one batch of
    [negative, positive]."""

    image_sibling = "StableDiffusion3Img2ImgPipeline"

    def image_kwargs(self, image: Any, strength: float, keep: torch.Tensor | None, rows: int) -> dict[str, Any]:
        # StableDiffusion3Img2ImgPipeline.prepare_latents encodes image[i] with generator[i] for every row: one
        # image given for several generators would leave rows 2.. empty, so the image goes once per row.
        return {"image": [image] * rows, "strength": strength}

    def size_multiple(self, pipe: Any) -> int:
        return self.vae_scale(pipe) * int(pipe.transformer.config.patch_size)


class ZImageFamily(TransformerFamily):
    """Z-Image(-Turbo): unpacked float32 latents (its transformer patchifies itself), guidance 0 (no CFG)."""

    image_sibling = "ZImageImg2ImgPipeline"
    latent_dtype = torch.float32
    guidance_off = MappingProxyType({"guidance_scale": 0.0})

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        self.check_size(pipe, width, height)
        scale = self.vae_scale(pipe)
        return int(self.denoiser_of(pipe).in_channels), height // scale, width // scale

    def text_max_length(self, pipe: Any) -> int | None:
        """The caption length the transformer's RoPE table holds: captions take positions 1.. (padded to a multiple
        of 32) and the image starts one past them on the same axis, so ``padded + 1 < axes_lens[0]`` (1024 or more
        on the released model, above the pipeline's 512; a smaller table would index past its end)."""
        first_axis = int(self.denoiser_of(pipe).config.axes_lens[0])
        limit = max(32, (first_axis - 2) // 32 * 32)
        default = inspect.signature(type(pipe).__call__).parameters["max_sequence_length"].default
        return limit if limit < int(default) else None
