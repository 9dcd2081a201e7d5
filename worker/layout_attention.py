"""Cross-attention that steers each object's words to its box (``worker.layout``), with no training.

For a query pixel q and a prompt token k of an object phrase, the attention logit gets ``+strength`` when q lies in
the phrase's box and ``-strength`` when it lies outside (DenseDiffusion's modulation, Kim et al. 2023, at a fixed
strength). Pixels inside the box listen more to "red circle" and pixels elsewhere less, so the object forms where
the prompt puts it; tokens outside every phrase (the relation words, padding) are left as they are. Only the
conditional half of a classifier-free-guidance batch is biased: the unconditional prediction stays the model's own.

Measured on the shipped model (docs/model-card.md): on 50 held-out two-object prompts the relation was right in 42%
of images without the bias and 88% with strength 2, and both colours appeared more often (73% -> 91%).

The processor is installed on every attention layer of a ``UNet2DConditionModel`` (self-attention runs diffusers'
own ``AttnProcessor2_0``), and a call passes ``cross_attention_kwargs={"layout": LayoutBias(...)}``, which diffusers
pipelines forward to the UNet. Without it each layer computes exactly what ``AttnProcessor2_0`` computes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from worker.layout import Box, Layout, parse_layout

log = logging.getLogger(__name__)

RowLayout = tuple[tuple[Box, tuple[int, ...]], ...]
"""One conditioning row's layout: (box, token positions of the phrase) per placed phrase; () for none."""


class TokenMap(Protocol):
    """The text-encoding module's token map: where the tokens of ``text[start:end]`` sit in its conditioning."""

    def phrase_positions(self, text: str, start: int, end: int) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class LayoutBias:
    """The layout of each conditioning row of a denoiser call.

    ``rows`` has one entry per image; when the UNet's batch is twice as long (classifier-free guidance: unconditional
    rows first, as diffusers orders them) only the second half is biased. ``height`` and ``width`` are the latents'
    (each attention level's grid is found from its length).
    """

    rows: tuple[RowLayout, ...]
    height: int
    width: int
    strength: float
    _made: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, compare=False, repr=False)
    """Biases already built, per (batch, queries, tokens, device, dtype): every step asks for the same few."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.strength) or self.strength < 0:
            raise ValueError(f"layout strength must be a finite number >= 0, got {self.strength}")

    @property
    def active(self) -> bool:
        return self.strength > 0 and any(self.rows)

    def grid(self, queries: int) -> tuple[int, int]:
        """(h, w) of an attention level with ``queries`` pixels: the latents halved (rounding up) until they fit."""
        height, width = self.height, self.width
        while height * width > queries and (height > 1 or width > 1):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        if height * width != queries:
            raise ValueError(f"no level of {self.height}x{self.width} latents has {queries} query pixels")
        return height, width

    def bias(self, batch: int, queries: int, tokens: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The additive logit bias (batch, 1, queries, tokens)."""
        key = (batch, queries, tokens, device, dtype)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = self._build(batch, queries, tokens).to(device=device, dtype=dtype)
        return made

    def _build(self, batch: int, queries: int, tokens: int) -> torch.Tensor:
        rows = len(self.rows)
        if batch not in {rows, 2 * rows}:
            raise ValueError(f"layout has {rows} rows, the attention batch has {batch} (expected {rows} or {2 * rows})")
        height, width = self.grid(queries)
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        out = torch.zeros(batch, 1, queries, tokens)
        first = batch - rows
        for index, row in enumerate(self.rows):
            for (x0, y0, x1, y1), positions in row:
                inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]  # (h, w)
                sign = inside.flatten().to(torch.float32) * 2 - 1  # (queries,): +1 in the box, -1 outside
                usable = [p for p in positions if p < tokens]
                out[first + index, 0][:, usable] += self.strength * sign[:, None]
        return out


class LayoutAttnProcessor:
    """``AttnProcessor2_0`` with an optional ``layout`` bias on cross-attention logits."""

    def __init__(self) -> None:
        self.plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        temb: torch.Tensor | None = None,
        layout: LayoutBias | None = None,
    ) -> torch.Tensor:
        if (
            layout is None
            or encoder_hidden_states is None
            or not layout.active
            or not _plain_cross(attn, hidden_states)
        ):
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch, queries, _ = hidden_states.shape  # (B, h*w, C): Transformer2DModel flattens the grid row by row
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        bias = layout.bias(batch, queries, key.shape[2], query.device, query.dtype)  # (B, 1, h*w, T)
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            bias = bias + mask.view(batch, attn.heads, -1, mask.shape[-1])
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)  # (B, heads, h*w, head_dim)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _plain_cross(attn: Attention, hidden_states: torch.Tensor) -> bool:
    """Whether this layer is a cross-attention of the usual kind (3-d input, no spatial or group norm, no q/k norm),
    the only kind the bias is written for; others run unbiased."""
    return (
        hidden_states.ndim == 3
        and attn.spatial_norm is None
        and attn.group_norm is None
        and attn.norm_q is None
        and attn.norm_k is None
    )


def install(unet: Any) -> bool:
    """Put ``LayoutAttnProcessor`` on every attention layer of ``unet`` if all of them run diffusers' default
    processor (a LoRA, IP-Adapter or other custom processor is left alone). Returns whether it was installed."""
    processors = getattr(unet, "attn_processors", None)
    if not processors:
        return False
    if not all(type(p) is AttnProcessor2_0 or isinstance(p, LayoutAttnProcessor) for p in processors.values()):
        kinds = sorted({type(p).__name__ for p in processors.values()})
        log.info("layout attention not installed: the UNet runs other attention processors (%s)", ", ".join(kinds))
        return False
    shared = LayoutAttnProcessor()
    unet.set_attn_processor(dict.fromkeys(processors, shared))
    return True


def prompt_layout(encoding: TokenMap, text: str) -> tuple[RowLayout, Layout | None]:
    """The row layout of prompt ``text`` (``()`` when it places nothing) and the parsed ``Layout`` (or None)."""
    layout = parse_layout(text)
    return (row_layout(encoding, layout), layout) if layout is not None else ((), None)


def row_layout(encoding: TokenMap, layout: Layout) -> RowLayout:
    """The boxes of ``layout`` with the positions of each phrase's tokens in ``encoding``'s conditioning."""
    return tuple(
        (placed.box, encoding.phrase_positions(layout.text, placed.start, placed.end)) for placed in layout.phrases
    )
