"""Tiny LoRAs and a tiny IP-Adapter built in code from configs and saved to files an admin config can point at (no
download): what the adapter tests and ``bench.lora`` load.

LoRAs are made the way trainers make them: a PEFT ``LoraConfig`` added to the denoiser (and, for a text-encoder LoRA,
to the CLIP text encoder), with ``init_lora_weights=False`` so ``B`` is not zero and the LoRA changes the output, then
written by diffusers' ``save_lora_weights`` with the adapter's config as metadata (``lora_alpha != r`` on purpose, so
the scaling must be read from the file). The IP-Adapter file has the original IP-Adapter layout (``image_proj.proj``
and ``.norm``, ``ip_adapter.<n>.to_k_ip``/``to_v_ip`` for every cross-attention, n = 1, 3, 5, ...), and its image
encoder is a tiny ``CLIPVisionModelWithProjection`` saved with its image processor.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

log = logging.getLogger(__name__)

UNET_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
"""Attention projections every test LoRA targets (what most community LoRAs train)."""

IMAGE_EMBED_DIM = 16
"""Projection size of the tiny CLIP vision encoder (the IP-Adapter's image embedding)."""


def lora_config(rank: int, alpha: int, targets: tuple[str, ...], seed: int) -> LoraConfig:
    torch.manual_seed(seed)
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False)


def _scaled_up(model: Any, adapter: str, gain: float) -> None:
    """Make the random LoRA's effect visible on a tiny model: its B weights times ``gain``."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_B.{adapter}." in name:
                param.mul_(gain)


def build_lora(
    pipe: Any,
    path: Path,
    *,
    rank: int = 4,
    alpha: int = 8,
    seed: int = 0,
    targets: tuple[str, ...] = UNET_TARGETS,
    text_encoder: bool = False,
    gain: float = 4.0,
) -> Path:
    """A random LoRA for ``pipe``'s denoiser (``unet`` or ``transformer``), and its text encoder when asked, saved as
    ``path`` (.safetensors) with its config as metadata. ``pipe`` is left without adapters."""
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    adapter = f"build{seed}"
    denoiser.add_adapter(lora_config(rank, alpha, targets, seed), adapter_name=adapter)
    _scaled_up(denoiser, adapter, gain)
    layers: dict[str, Any] = {f"{denoiser_name}_lora_layers": get_peft_model_state_dict(denoiser, adapter_name=adapter)}
    metadata: dict[str, Any] = {f"{denoiser_name}_lora_adapter_metadata": denoiser.peft_config[adapter].to_dict()}
    if text_encoder:
        # peft's own injection on a copy: transformers 5's add_adapter wants a peft release newer than PyPI has
        encoder = copy.deepcopy(pipe.text_encoder)
        config = lora_config(rank, alpha, ("q_proj", "k_proj", "v_proj", "out_proj"), seed + 1000)
        inject_adapter_in_model(config, encoder, adapter_name=adapter)
        _scaled_up(encoder, adapter, gain)
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(encoder, adapter_name=adapter)
        metadata["text_encoder_lora_adapter_metadata"] = config.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    saver = type(pipe) if callable(getattr(type(pipe), "save_lora_weights", None)) else StableDiffusionPipeline
    saver.save_lora_weights(str(path.parent), weight_name=path.name, **layers, **metadata)
    denoiser.delete_adapters(adapter)
    return path


def tiny_image_encoder(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny CLIP vision encoder with projection (embedding ``IMAGE_EMBED_DIM``) and its image processor."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=IMAGE_EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
    )
    model = CLIPVisionModelWithProjection(config).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor(size=image_size, crop_size=image_size).save_pretrained(folder)
    return folder


def ip_adapter_state_dict(unet: Any, seed: int = 0, tokens: int = 4, gain: float = 1.0) -> dict[str, torch.Tensor]:
    """The original IP-Adapter layout for ``unet`` (flattened: ``image_proj.*`` and ``ip_adapter.*``)."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    state: dict[str, torch.Tensor] = {
        "image_proj.proj.weight": torch.randn(tokens * cross, IMAGE_EMBED_DIM, generator=generator) * 0.5,
        "image_proj.proj.bias": torch.zeros(tokens * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    channels = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        for kind in ("to_k_ip", "to_v_ip"):
            weight = torch.randn(hidden, cross, generator=generator) * gain / cross**0.5
            state[f"ip_adapter.{key_id}.{kind}.weight"] = weight
        key_id += 2
    return state


def flux_ip_adapter_state_dict(transformer: Any, seed: int = 0, tokens: int = 4) -> dict[str, torch.Tensor]:
    """XLabs' FLUX.1 IP-Adapter layout for ``transformer`` (``ip_adapter_proj_model.*``, and for every double block
    ``double_blocks.<i>.processor.ip_adapter_double_stream_{k,v}_proj.{weight,bias}``)."""
    generator = torch.Generator().manual_seed(seed)
    joint = int(transformer.config.joint_attention_dim)
    inner = int(transformer.inner_dim)
    state: dict[str, torch.Tensor] = {
        "ip_adapter_proj_model.proj.weight": torch.randn(tokens * joint, IMAGE_EMBED_DIM, generator=generator) * 0.5,
        "ip_adapter_proj_model.proj.bias": torch.zeros(tokens * joint),
        "ip_adapter_proj_model.norm.weight": torch.ones(joint),
        "ip_adapter_proj_model.norm.bias": torch.zeros(joint),
    }
    for index in range(len(transformer.transformer_blocks)):
        for kind in ("k", "v"):
            name = f"double_blocks.{index}.processor.ip_adapter_double_stream_{kind}_proj"
            state[f"{name}.weight"] = torch.randn(inner, joint, generator=generator) * 3.0 / joint**0.5
            state[f"{name}.bias"] = torch.zeros(inner)
    return state


def build_ip_adapter(pipe: Any, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny IP-Adapter for ``pipe``'s denoiser (a UNet, or FLUX.1's transformer) and its image encoder, saved under
    ``folder``: (weights file, encoder folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "ip-adapter.safetensors"
    if getattr(pipe, "unet", None) is not None:
        state = ip_adapter_state_dict(pipe.unet, seed, gain=3.0)
    else:
        state = flux_ip_adapter_state_dict(pipe.transformer, seed)
    save_file(state, str(weights))
    encoder = tiny_image_encoder(folder / "image_encoder", seed)
    return weights, encoder
