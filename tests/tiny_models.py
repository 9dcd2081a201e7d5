"""Tiny, randomly initialised diffusers pipelines built from configs, saved to disk for ``from_pretrained``.

Nothing downloads: the CLIP tokenizer is written from a byte-level vocabulary made here (every byte is a token, so any
text tokenizes, one token per character).

"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

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


def clip_text_model(seed: int = 0, hidden_size: int = TEXT_DIM, projection_dim: int = TEXT_DIM) -> CLIPTextModel:
    """A 2-layer CLIP text encoder over the byte vocabulary of ``clip_tokenizer``."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
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
    return CLIPTextModel(config).eval()


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
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
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
