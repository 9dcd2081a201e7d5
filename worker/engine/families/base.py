"""The engine's view of a model family: one ``Family`` object per entry of ``shared.families``, with the UNet
behaviour as the default that the transformer families override.

What a family says (every method takes the loaded pipeline, so one object serves every model of its family):

- its denoiser attribute (``unet`` or ``transformer``) and which of the pipeline's modules are convolution-heavy;
- the shape of one image's starting noise (``latent_shape``: what the pipeline's own ``prepare_latents`` draws per
  image, so a seed gives the same noise alone and in a batch), and how latents of that shape become the layout the
  pipeline's loop and callbacks use (``pack``/``unpack``: identity for UNets, SD3 and Z-Image; 2x2 patches for FLUX.1,
  Chroma and Qwen-Image; a flattened grid for FLUX.2);
- how a known image becomes latents in that space (``encode_image``) and how they are noised to a timestep
  (``noised``: ``add_noise`` for DDPM-style schedulers, ``scale_noise`` for flow matching);
- the guidance and negative prompt it takes (``call_kwargs``, from ``shared.families``), and its image sibling for
  variations and outpaints (``load_image_sibling``);
- its cross-job batch recipe: the engine's own loop (``BatchRecipe(loop="engine")``), the pipeline's own loop over
  the rows of several jobs (``loop="pipeline"``), or none (every job alone).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from shared.families import Capabilities, FamilyInfo
from shared.jobs.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRecipe:
    """How several jobs share one denoising pass on this family."""

    loop: Literal["engine", "pipeline"] = "engine"
    """``engine``: the engine's own loop with a guidance scale per row (``worker.engine.batch``); ``pipeline``: one
    call of the pipeline over every job's rows (jobs with equal guidance settings and conditioning shapes)."""
    scale_initial_noise: bool = False
    """Engine loop: multiply starting noise by ``scheduler.init_noise_sigma`` (diffusers' SD pipelines do)."""
    extra_step_kwargs: bool = False
    """Engine loop: pass the pipeline's ``prepare_extra_step_kwargs(generators, eta=0)`` to ``scheduler.step``."""
    decoder: str = "vae"
    """Engine loop: ``vae`` (latents / scaling_factor -> VAE -> image processor) or ``pipeline`` (its ``decode``)."""


class Conditioning(Protocol):
    """What the text-encoding module gives the engine for one prompt (batch 1), in the family's kwarg names."""

    token_reports: list[Any]

    @property
    def truncated(self) -> bool: ...

    @property
    def negative_given(self) -> bool: ...

    def as_pipeline_kwargs(self, with_negative: bool) -> dict[str, Any]: ...


class Family:
    """How the engine drives one family; the defaults are the UNet families' (SD 1.x/2.x, SDXL)."""

    denoiser: str = "unet"
    """The pipeline attribute holding the denoiser."""
    packed: bool = False
    """Whether the pipeline's loop works on latents in another layout than (batch, C, h, w) (``pack``)."""
    flow_matching: bool = False
    """Whether the scheduler is a flow-matching one (``scale_noise``, x0 = sample - sigma * velocity)."""
    latent_dtype: torch.dtype | None = None
    """The dtype the pipeline keeps its latents in (None: the model's dtype; Z-Image: float32)."""
    sdpa_processor: bool = True
    """Whether diffusers' ``AttnProcessor2_0`` is the denoiser's processor (UNets; transformers have their own)."""
    image_sibling: str = ""
    """Class name of the diffusers pipeline that runs variations and outpaints (``""``: ``AutoPipelineForImage2Image``;
    a name ending in ``InpaintPipeline`` is run with a mask that repaints everything outside the kept region)."""
    sibling_takes_size: bool = False
    """Whether the image sibling takes ``height``/``width`` (diffusers' SD image-to-image pipelines do not)."""
    layout: str = "cross"
    """How place phrases steer attention: ``cross`` (UNet cross-attention processors, ``worker.layout_attention``),
    ``joint`` (joint-attention mask, ``worker.layout_joint``) or ``""`` (not on this family)."""
    layout_kwarg: str = "cross_attention_kwargs"
    """The pipeline ``__call__`` argument that carries the layout to the denoiser's attention."""
    guidance_off: Mapping[str, Any] = MappingProxyType({})
    """Call kwargs that turn guidance off for families whose guidance is ``none`` (e.g. Z-Image's 0)."""

    def __init__(self, info: FamilyInfo, batch_recipe: BatchRecipe | None = None) -> None:
        self.info = info
        self.batch_recipe = batch_recipe

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r})"

    @property
    def name(self) -> str:
        """Short name for records and errors (``sd``, ``flux-dev``)."""
        return self.info.name

    @property
    def pipelines(self) -> tuple[str, ...]:
        return self.info.pipelines

    @property
    def capabilities(self) -> Capabilities:
        return self.info.capabilities

    # -- modules -----------------------------------------------------------------------------------------------------

    def denoiser_of(self, pipe: Any) -> Any:
        """The pipeline's denoiser module (a diffusers model: its ``config`` is read at run time)."""
        return getattr(pipe, self.denoiser)

    def convolutions(self, pipe: Any) -> list[nn.Conv2d]:
        """The convolutions of denoiser and decoder (``--tile`` pads them circularly)."""
        return [
            module
            for name in (self.denoiser, "vae")
            if getattr(pipe, name, None) is not None
            for module in getattr(pipe, name).modules()
            if isinstance(module, nn.Conv2d)
        ]

    def channels_last_modules(self) -> tuple[str, ...]:
        """Components whose convolutions run faster channels-last on CUDA (the UNet and its 2-D VAE)."""
        return (self.denoiser, "vae")

    def text_max_length(self, pipe: Any) -> int | None:
        """The longest text sequence the denoiser can take, where it is below the text encoder's own limit (None:
        the pipeline's ``max_sequence_length`` default rules)."""
        return None

    def load_image_sibling(self, pipe: Any) -> Any:
        """The image-to-image (or inpaint) pipeline sharing ``pipe``'s weights (``from_pipe``: no copy)."""
        if not self.image_sibling:
            from diffusers import AutoPipelineForImage2Image

            return AutoPipelineForImage2Image.from_pipe(pipe)
        import diffusers

        return getattr(diffusers, self.image_sibling).from_pipe(pipe)

    # -- latents -----------------------------------------------------------------------------------------------------

    def vae_scale(self, pipe: Any) -> int:
        return int(getattr(pipe, "vae_scale_factor", 1) or 1)

    def size_multiple(self, pipe: Any) -> int:
        """Width and height must be multiples of this (checked before a job runs, not floored by the pipeline)."""
        return self.vae_scale(pipe)

    def check_size(self, pipe: Any, width: int, height: int) -> None:
        multiple = self.size_multiple(pipe)
        if width % multiple or height % multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for this model, got {width}x{height}")

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        """(channels, h, w) of one image's starting latents: VAE latents, or pixels for pixel-space models; sizes that
        the model cannot take are an error naming them."""
        self.check_size(pipe, width, height)
        scale = self.vae_scale(pipe)
        return int(self.denoiser_of(pipe).config.in_channels), height // scale, width // scale

    def token_grid(self, latent: tuple[int, int, int]) -> tuple[int, int]:
        """(h, w) of the grid the denoiser's attention sees at its finest level, for ``latent_shape``'s (C, h, w):
        the latents themselves (a UNet's first level)."""
        return latent[1], latent[2]

    def initial_noise(self, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
        """One image's starting noise (1, C, h, w) float32 from its own generator, drawn as the pipeline draws it."""
        return randn_tensor((1, *shape), generator=generator, dtype=torch.float32)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(batch, C, h, w) latents in the layout of the pipeline's loop (identity here)."""
        return latents

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's latents back to (batch, C, h, w); ``height``/``width`` are the unpacked latent sizes."""
        return latents

    def latents_argument(self, latents: torch.Tensor) -> torch.Tensor:
        """Starting noise (batch, C, h, w) as the text-to-image pipeline's ``latents=`` takes it (packed, where the
        pipeline uses given latents as they are)."""
        return self.pack(latents)

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

    # -- guidance and conditioning -----------------------------------------------------------------------------------

    def negative_applied(self, cond: Conditioning) -> bool:
        """Whether this job's call runs the negative pass (CFG families always; true-CFG ones when ``--no`` given)."""
        if self.info.negative == "cfg":
            return True
        if self.info.negative == "true_cfg":
            return cond.negative_given
        return False

    def guidance_kwargs(self, spec: JobSpec, negative: bool) -> dict[str, Any]:
        """The guidance arguments of a call (``shared.families``: what ``--stylize`` maps to on this family)."""
        kwargs: dict[str, Any] = dict(self.guidance_off)
        if self.info.guidance in ("cfg", "distilled"):
            kwargs["guidance_scale"] = float(spec.guidance)
        elif self.info.guidance == "true_cfg":
            kwargs["true_cfg_scale"] = float(spec.guidance)
        if self.info.negative == "true_cfg" and negative:
            kwargs["true_cfg_scale"] = float(self.info.true_cfg_scale)
        return kwargs

    def call_kwargs(self, spec: JobSpec, cond: Conditioning) -> tuple[dict[str, Any], dict[str, Any]]:
        """(pipeline kwargs of guidance and conditioning (batch-1 tensors), notes for the record): how the negative
        prompt was applied, and what of the prompt's options this model ignored."""
        negative = self.negative_applied(cond)
        kwargs = {**self.guidance_kwargs(spec, negative), **cond.as_pipeline_kwargs(with_negative=negative)}
        notes: dict[str, Any] = {"guidance": self.info.guidance, "negative": self.info.negative if negative else "off"}
        ignored = []
        if cond.negative_given and not negative:
            ignored.append("--no")
        if spec.tile and not self.capabilities.tile:
            ignored.append("--tile")
        if ignored:
            notes["ignored"] = ignored
        return kwargs, notes

    def image_kwargs(self, image: Any, strength: float, keep: torch.Tensor | None, rows: int) -> dict[str, Any]:
        """Arguments of the image sibling for a variation (``keep`` None) or an outpaint (``keep``: the latent mask
        of the kept region, (1, 1, h, w)) of ``rows`` images."""
        return {"image": image, "strength": strength}

    # -- progress ----------------------------------------------------------------------------------------------------

    def x0_estimate(self, scheduler: Any, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor | None:
        """The clean-sample estimate of a flow-matching step: ``sample - sigma * velocity`` at the step just taken
        (read after ``scheduler.step`` advanced its index); None for other schedulers (their step returns one)."""
        if not self.flow_matching:
            return None
        index = int(scheduler.step_index) - 1
        sigma = scheduler.sigmas[index].to(sample.device, torch.float32)
        return (sample.float() - sigma * model_output.float()).to(sample.dtype)


class UNetFamily(Family):
    """SD 1.x/2.x and SDXL (diffusers' UNet pipelines): the defaults."""


class ShapesFamily(Family):
    """The shipped pixel-space model: ``ShapesPipeline`` takes ``image=``/``strength=`` itself."""

    sibling_takes_size = True

    def load_image_sibling(self, pipe: Any) -> Any:
        return pipe
