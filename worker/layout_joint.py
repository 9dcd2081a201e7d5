"""The layout bias (``worker.layout_attention``) on transformers' joint attention: FLUX.1, Chroma and FLUX.2 klein.

These models have no cross-attention: text and image tokens attend to each other in one sequence, ``[text, image]``
in this order in every block (double-stream blocks concatenate ``[encoder, hidden]``; single-stream blocks get the
concatenation). The bias is the image-query x text-key block of an additive ``(batch, 1, L, L)`` attention mask,
``L = T + I``: ``+strength`` where an image token lies in the phrase's box, ``-strength`` elsewhere, on the columns of
the phrase's text tokens (their positions in the conditioning, from the text module's token map); every other entry
is 0, so text tokens and image-image attention are untouched. One box grid serves every block: these models work at a
single resolution (``I`` tokens = the latent grid of 2x2 patches, row-major as ``_pack_latents`` orders them).

Their processors (``FluxAttnProcessor``, ``Flux2AttnProcessor``, ``Flux2ParallelSelfAttnProcessor``) already pass
``attention_mask`` to SDPA, so ``JointLayoutProcessor`` only builds the mask and calls the model's own processor
(Chroma's own padding mask is kept: a bool mask becomes ``-inf`` where it masks, a float one is added as it is).

Only the conditional pass is biased. These pipelines run classifier-free guidance as separate transformer calls with
the same ``joint_attention_kwargs`` (FLUX.1's true CFG, Chroma's and klein base's CFG), so a forward pre-hook on the
transformer drops the layout from any call whose text states are not the conditional prompt's (``JointLayout``
compares them with the rows the engine passed as ``prompt_embeds``). Only the native SDPA backend takes such masks.

SD3.5, Qwen-Image and Z-Image are not biased: SD3's ``JointAttnProcessor2_0`` calls SDPA without a mask and runs CFG
as one batch of [negative, positive]; Qwen-Image's processor raises on an external mask (its mask argument is the
text padding); Z-Image's single stream is [image, caption] with the captions padded per sample and its own boolean
padding mask. Each would need a copy of the model's processor to maintain against diffusers; see docs/model-families.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from worker.layout_attention import LayoutBias

log = logging.getLogger(__name__)

DEFAULT_PROCESSORS = frozenset({"FluxAttnProcessor", "Flux2AttnProcessor", "Flux2ParallelSelfAttnProcessor"})
"""The joint-attention processors that pass ``attention_mask`` to SDPA (the only ones the bias is installed on)."""

SINGLE_STREAM = frozenset({"Flux2ParallelSelfAttnProcessor"})
"""Processors called as ``(attn, hidden_states, attention_mask, image_rotary_emb)`` (no ``encoder_hidden_states``)."""


@dataclass
class JointLayout:
    """One denoiser call's layout on joint attention: the box bias of each image, the conditional text states (to tell
    the conditional pass from the negative one) and, per transformer call, the text length ``T``."""

    bias: LayoutBias
    """The boxes per image on the token grid (``bias.height`` x ``bias.width`` image tokens)."""
    positive: torch.Tensor
    """The ``prompt_embeds`` rows the pipeline was given (images, T, D)."""
    text_tokens: int = 0
    biased_calls: int = 0
    """Transformer calls that ran with the bias (the conditional ones); for tests and records."""
    skipped_calls: int = 0
    """Transformer calls it was dropped from (negative passes)."""
    _masks: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def active(self) -> bool:
        return self.bias.active

    def is_conditional(self, text_states: torch.Tensor) -> bool:
        """Whether a transformer call's text states are the conditional prompt's (same shape and values)."""
        positive = self.positive
        if text_states.shape != positive.shape:
            return False
        return bool(torch.equal(text_states, positive.to(text_states.device, text_states.dtype)))

    def mask(
        self, batch: int, length: int, base: torch.Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """The additive mask (batch, 1, L, L) with the bias in the image-query x text-key block, added to ``base`` (the
        model's own mask, bool or additive) when there is one. The generated image's tokens follow the text; tokens
        after them (FLUX.2's reference-image tokens in its inpaint pipeline) are left unbiased."""
        text = self.text_tokens
        image = self.bias.height * self.bias.width
        if length < text + image:
            raise ValueError(f"joint attention over {length} tokens cannot hold {text} text and {image} image tokens")
        key = (batch, length, text, device, dtype)
        made = self._masks.get(key)
        if made is None:
            made = torch.zeros(batch, 1, length, length, device=device, dtype=dtype)
            made[:, :, text : text + image, :text] = self.bias.bias(batch, image, text, device, dtype)
            self._masks[key] = made
        if base is None:
            return made
        if base.dtype == torch.bool:
            base = torch.zeros(base.shape, device=device, dtype=dtype).masked_fill(~base, float("-inf"))
        return base.to(dtype) + made


class JointLayoutProcessor:
    """The model's own joint-attention processor with an optional ``layout`` bias (a ``JointLayout``) added to its
    attention mask; without one it is exactly the model's processor."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(  # noqa: PLR0917 - diffusers calls processors with these five positionally
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        layout: JointLayout | None = None,
    ) -> Any:
        if layout is not None and layout.active:
            batch, length = hidden_states.shape[:2]
            if encoder_hidden_states is not None:
                length += encoder_hidden_states.shape[1]
            attention_mask = layout.mask(batch, length, attention_mask, hidden_states.device, hidden_states.dtype)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


class SingleStreamLayoutProcessor(JointLayoutProcessor):
    """The same for FLUX.2's single-stream processor, called without ``encoder_hidden_states`` (its input is already
    ``[text, image]``)."""

    def __call__(  # type: ignore[override]
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        layout: JointLayout | None = None,
    ) -> Any:
        if layout is not None and layout.active:
            batch, length = hidden_states.shape[:2]
            attention_mask = layout.mask(batch, length, attention_mask, hidden_states.device, hidden_states.dtype)
        return self.inner(attn, hidden_states, attention_mask, image_rotary_emb)


def _pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Before each transformer call: the layout learns the text length, and is dropped from negative passes."""
    extra = kwargs.get("joint_attention_kwargs") or {}
    layout = extra.get("layout")
    text_states = kwargs.get("encoder_hidden_states")
    if isinstance(layout, JointLayout) and isinstance(text_states, torch.Tensor):
        layout.text_tokens = int(text_states.shape[1])
        if layout.is_conditional(text_states):
            layout.biased_calls += 1
        else:
            layout.skipped_calls += 1
            kwargs["joint_attention_kwargs"] = {name: value for name, value in extra.items() if name != "layout"}
    return args, kwargs


def install_joint(transformer: Any) -> bool:
    """Wrap every attention processor of a FLUX.1 / Chroma / FLUX.2 transformer in the layout processor and hook the
    transformer's calls, if all of them are the model's default processors (IP-Adapter and other custom processors
    are left alone; LoRA keeps the processors, so it is fine). Returns whether the bias is installed."""
    processors = getattr(transformer, "attn_processors", None)
    if not processors:
        return False
    if all(isinstance(p, JointLayoutProcessor) for p in processors.values()):
        return True
    kinds = {type(p).__name__ for p in processors.values()}
    if not kinds <= DEFAULT_PROCESSORS:
        log.info("joint layout not installed: the transformer runs other processors (%s)", ", ".join(sorted(kinds)))
        return False
    wrapped = {
        name: SingleStreamLayoutProcessor(p) if type(p).__name__ in SINGLE_STREAM else JointLayoutProcessor(p)
        for name, p in processors.items()
    }
    transformer.set_attn_processor(wrapped)
    transformer.register_forward_pre_hook(_pre_hook, with_kwargs=True)
    return True
