"""Tiny, randomly initialised diffusers pipelines built from configs, saved to disk for ``from_pretrained``.

Nothing downloads: the CLIP tokenizer is written from a byte-level vocabulary made here (every byte is a token, so any
text tokenizes, one token per character).

"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

log = logging.getLogger(__name__)

TEXT_DIM = 32
"""Hidden size of the tiny CLIP text encoder (the UNet's cross-attention dim)."""


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, the alphabet of byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for _, code in sorted(zip(printable, codes, strict=True))]


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer over single bytes (no merges)."""
    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def clip_text_config(hidden_size: int = TEXT_DIM, projection_dim: int = TEXT_DIM) -> CLIPTextConfig:
    """A 2-layer CLIP text config over the byte vocabulary of ``clip_tokenizer`` (514 ids; BOS 512, EOS/pad 513)."""
    return CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )


def clip_text_model(seed: int = 0, hidden_size: int = TEXT_DIM, projection_dim: int = TEXT_DIM) -> CLIPTextModel:
    """A 2-layer CLIP text encoder over the byte vocabulary of ``clip_tokenizer``."""
    torch.manual_seed(seed)
    return CLIPTextModel(clip_text_config(hidden_size, projection_dim)).eval()


def tiny_vae() -> AutoencoderKL:
    """A 2-level VAE (scale factor 2, 4 latent channels) for 32 px images."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """A tiny Stable Diffusion 1.x-style pipeline (native 32 px: UNet sample 16, VAE scale 2) saved to ``folder``."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = tiny_vae()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    tokenizer = clip_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=clip_text_model(seed),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def clip_text_model_with_projection(seed: int = 1, hidden_size: int = TEXT_DIM) -> CLIPTextModelWithProjection:
    """A 2-layer CLIP text encoder with a text projection (SDXL's second encoder), byte vocabulary."""
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(clip_text_config(hidden_size, TEXT_DIM)).eval()


def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """A tiny SDXL-style pipeline (two CLIP encoders of width 32, cross-attention 64, pooled 32) saved to ``folder``.

    The second tokenizer pads with "!" like SDXL's ``tokenizer_2``.
    """
    torch.manual_seed(seed)
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_DIM,
    )
    vae = tiny_vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    tokenizer_2 = clip_tokenizer()
    tokenizer_2.pad_token = "!"
    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=clip_text_model(seed),
        text_encoder_2=clip_text_model_with_projection(seed + 1),
        tokenizer=clip_tokenizer(),
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder)
    return folder
