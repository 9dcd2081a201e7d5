"""Every family at its released size with random weights, built from configs written here (no download): for the GPU
benchmark (``bench.gpu --family``) and for counting parameters on the ``meta`` device (no memory).

The configs are the released checkpoints' (``transformer/config.json``, ``text_encoder/config.json``, ...) as diffusers'
defaults and the model cards give them: FLUX.1 dev/schnell (12B transformer, T5-XXL, CLIP-L), Chroma (8.9B, T5-XXL),
FLUX.2 klein 4B (Qwen3-4B), SD3.5 Large (8.1B, CLIP-L, CLIP-G, T5-XXL), Qwen-Image (20B, Qwen2.5-VL-7B), Z-Image-Turbo
(6B, Qwen3-4B) and SDXL (2.6B UNet, CLIP-L, CLIP-G). ``tests/test_bench_gpu.py`` checks each denoiser's parameter
count against the published size. Tokenizers are the test suite's tiny ones (``tests/tiny_families.py``): their ids
are valid in every real vocabulary, and tokenization is not what the benchmark measures.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

PUBLISHED_DENOISER_PARAMS: dict[str, float] = {
    "flux-dev": 11.9e9,
    "flux-schnell": 11.9e9,
    "chroma": 8.9e9,
    "flux2-klein": 3.9e9,
    "sd3": 8.1e9,
    "qwenimage": 20.4e9,
    "zimage": 6.15e9,
    "sdxl": 2.57e9,
}
"""Denoiser parameters of the released checkpoints (model cards; klein: "4B"), to check the configs against."""


@contextlib.contextmanager
def building(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Modules made inside are created on ``device`` in ``dtype`` (``meta``: shapes only, no memory)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def t5_xxl() -> Any:
    """google/t5-v1_1-xxl's encoder (FLUX.1, Chroma, SD3.5): 4.76B parameters."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
    )
    return T5EncoderModel(config).eval()


def clip_l(projection: bool = False) -> Any:
    """openai/clip-vit-large-patch14's text tower (123M)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def clip_g() -> Any:
    """laion CLIP ViT-bigG's text tower with its projection (SDXL, SD3.5: 695M)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=32,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=1280,
    )
    return CLIPTextModelWithProjection(config).eval()


def qwen3_4b(causal: bool, vocab_size: int = 151936) -> Any:
    """Qwen3-4B (Z-Image's ``Qwen3Model``, FLUX.2 klein's ``Qwen3ForCausalLM``): 4.0B parameters."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    )
    return (Qwen3ForCausalLM if causal else Qwen3Model)(config).eval()


def qwen25_vl_7b(tokenizer: Any) -> Any:
    """Qwen2.5-VL-7B-Instruct (Qwen-Image's text encoder, vision tower included): 8.3B parameters."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|image_pad|>", "<|video_pad|>")}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def flux_vae(scaling: float = 0.3611, shift: float = 0.1159, latent_channels: int = 16) -> Any:
    """FLUX.1's VAE (also Chroma's and Z-Image's; SD3.5's with its own scaling): 84M parameters."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def denoiser(name: str) -> Any:
    """The family's denoiser at its released size."""
    from diffusers import (
        ChromaTransformer2DModel,
        Flux2Transformer2DModel,
        FluxTransformer2DModel,
        QwenImageTransformer2DModel,
        SD3Transformer2DModel,
        UNet2DConditionModel,
        ZImageTransformer2DModel,
    )

    if name in ("flux-dev", "flux-schnell"):
        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=name == "flux-dev",
            axes_dims_rope=(16, 56, 56),
        ).eval()
    if name == "chroma":
        return ChromaTransformer2DModel().eval()  # diffusers' defaults are lodestones/Chroma's
    if name == "flux2-klein":
        return Flux2Transformer2DModel(
            num_layers=5,
            num_single_layers=20,
            num_attention_heads=24,
            joint_attention_dim=3 * 2560,  # Qwen3-4B's layers 9, 18, 27 stacked
            guidance_embeds=False,
        ).eval()
    if name == "sd3":
        return SD3Transformer2DModel(
            sample_size=128,
            patch_size=2,
            in_channels=16,
            num_layers=38,
            attention_head_dim=64,
            num_attention_heads=38,
            joint_attention_dim=4096,
            caption_projection_dim=2432,
            pooled_projection_dim=2048,
            out_channels=16,
            pos_embed_max_size=192,
            qk_norm="rms_norm",
        ).eval()
    if name == "qwenimage":
        return QwenImageTransformer2DModel().eval()  # diffusers' defaults are Qwen/Qwen-Image's
    if name == "zimage":
        return ZImageTransformer2DModel().eval()  # diffusers' defaults are Tongyi-MAI/Z-Image-Turbo's
    if name == "sdxl":
        return UNet2DConditionModel(
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ).eval()
    raise ValueError(f"family must be one of {', '.join(PUBLISHED_DENOISER_PARAMS)}, got {name!r}")


def pipeline(name: str, device: torch.device | str, dtype: torch.dtype) -> Any:
    """The family's text-to-image pipeline at its released size, random weights, on ``device`` in ``dtype``."""
    import diffusers

    from tests.tiny_families import qwen_tokenizer, t5_tokenizer
    from tests.tiny_models import clip_tokenizer

    flow = diffusers.FlowMatchEulerDiscreteScheduler
    # schedulers are made outside the device context: their sigmas live on the CPU
    schedulers: dict[str, Callable[[], Any]] = {
        "flux-dev": lambda: flow(shift=3.0, use_dynamic_shifting=True),
        "flux-schnell": lambda: flow(shift=1.0),
        "chroma": lambda: flow(shift=3.0, use_dynamic_shifting=True),
        "flux2-klein": lambda: flow(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"),
        "sd3": lambda: flow(shift=3.0),
        "qwenimage": lambda: flow(shift=1.0, use_dynamic_shifting=True, shift_terminal=0.02),
        "zimage": lambda: flow(shift=3.0),
        "sdxl": lambda: diffusers.EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
    }
    if name not in schedulers:
        raise ValueError(f"family must be one of {', '.join(PUBLISHED_DENOISER_PARAMS)}, got {name!r}")
    scheduler = schedulers[name]()
    with building(device, dtype):
        if name in ("flux-dev", "flux-schnell"):
            return diffusers.FluxPipeline(
                scheduler=scheduler,
                vae=flux_vae(),
                text_encoder=clip_l(),
                tokenizer=clip_tokenizer(),
                text_encoder_2=t5_xxl(),
                tokenizer_2=t5_tokenizer(),
                transformer=denoiser(name),
            )
        if name == "chroma":
            return diffusers.ChromaPipeline(
                scheduler=scheduler,
                vae=flux_vae(),
                text_encoder=t5_xxl(),
                tokenizer=t5_tokenizer(),
                transformer=denoiser(name),
            )
        if name == "flux2-klein":
            return diffusers.Flux2KleinPipeline(
                scheduler=scheduler,
                vae=diffusers.AutoencoderKLFlux2().eval(),
                text_encoder=qwen3_4b(causal=True),
                tokenizer=qwen_tokenizer(),
                transformer=denoiser(name),
                is_distilled=True,
            )
        if name == "sd3":
            tokenizer_2 = clip_tokenizer()
            tokenizer_2.pad_token = "!"
            return diffusers.StableDiffusion3Pipeline(
                transformer=denoiser(name),
                scheduler=scheduler,
                vae=flux_vae(1.5305, 0.0609),
                text_encoder=clip_l(projection=True),
                tokenizer=clip_tokenizer(),
                text_encoder_2=clip_g(),
                tokenizer_2=tokenizer_2,
                text_encoder_3=t5_xxl(),
                tokenizer_3=t5_tokenizer(),
            )
        if name == "qwenimage":
            tokenizer = qwen_tokenizer(vision=True)
            return diffusers.QwenImagePipeline(
                scheduler=scheduler,
                vae=diffusers.AutoencoderKLQwenImage().eval(),
                text_encoder=qwen25_vl_7b(tokenizer),
                tokenizer=tokenizer,
                transformer=denoiser(name),
            )
        if name == "zimage":
            return diffusers.ZImagePipeline(
                scheduler=scheduler,
                vae=flux_vae(),
                text_encoder=qwen3_4b(causal=False),
                tokenizer=qwen_tokenizer(),
                transformer=denoiser(name),
            )
        if name == "sdxl":
            return diffusers.StableDiffusionXLPipeline(
                vae=_sdxl_vae(),
                text_encoder=clip_l(),
                text_encoder_2=clip_g(),
                tokenizer=clip_tokenizer(),
                tokenizer_2=clip_tokenizer(),
                unet=denoiser(name),
                scheduler=scheduler,
            )
    raise ValueError(f"family must be one of {', '.join(PUBLISHED_DENOISER_PARAMS)}, got {name!r}")


def _sdxl_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=1024,
        scaling_factor=0.13025,
    ).eval()


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters of each component of the family's pipeline, built on the ``meta`` device (no memory, no compute)."""
    pipe = pipeline(name, "meta", torch.bfloat16)
    return {
        component: sum(parameter.numel() for parameter in module.parameters())
        for component, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


BUILDERS: dict[str, Callable[[str, torch.device | str, torch.dtype], Any]] = {
    name: pipeline for name in PUBLISHED_DENOISER_PARAMS
}
"""The families ``bench.gpu --family`` builds at real size."""
