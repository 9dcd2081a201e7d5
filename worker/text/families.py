"""One adapter per text-encoder kind, and which one a pipeline gets (``adapter_for``).

=============  =============  ============================================================================
family         kind           what the pipeline is conditioned on
=============  =============  ============================================================================
sd             clip           CLIP ``last_hidden_state`` in 77-token windows (1, 77k, D)
sdxl           clip+clip      CLIP-L and CLIP-G penultimate states side by side on features (1, 77k,
                              D1+D2); pooled: CLIP-G's projection of the first window
bert           bert           BERT ``last_hidden_state`` with the mask in 32-token windows (the shipped
                              model)
flux           clip+t5        T5 over 512 tokens, no mask (1, 512, D); pooled: CLIP-L ``pooler_output``
                              of the first 77 tokens
sd3            clip+clip+t5   [CLIP-L | CLIP-G penultimate (77 tokens), zero-padded to T5's width] then
                              T5 (256 tokens) on the token axis (1, 333, D_t5); pooled: both projections
chroma         t5             T5 over 512 tokens with its mask (1, 512, D); mask keeps one pad token
flux2-klein    chat-llm       Qwen3 in its chat template (thinking off), hidden states 9/18/27 on
                              features, padded to 512 (1, 512, 3D)
qwenimage      chat-llm       Qwen2.5-VL in Qwen-Image's system template, last hidden state, first 34
                              tokens dropped, variable length (1, T, D) + mask
zimage         chat-llm       Qwen3 in its chat template (``enable_thinking=True``: no think block),
                              hidden_states[-2], unpadded, variable length (1, T, D) (passed as lists)
=============  =============  ============================================================================

Token limits are each pipeline's ``__call__`` default ``max_sequence_length`` (read from its signature).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import (
    BertModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedModel,
    T5EncoderModel,
)

from shared import defaults
from worker.text.conditioning import KwargNames, TokenReport
from worker.text.encoders import ChatEncoder, ChatRecipe, Segment, SequenceEncoder, Span, WindowEncoder
from worker.text.weights import SegmentLayout

log = logging.getLogger(__name__)

Pooling = Literal["cls", "mean", "max", "eos"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
"""Pooling modes of ``TextEncoding.text_vector``."""

MaskRule = Literal["none", "chroma", "ones"]

FAMILY_PIPELINES: dict[str, tuple[str, ...]] = {
    "flux": ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    "sd3": ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
    "chroma": ("ChromaPipeline", "ChromaImg2ImgPipeline", "ChromaInpaintPipeline"),
    "flux2-klein": ("Flux2KleinPipeline", "Flux2KleinInpaintPipeline"),
    "qwenimage": ("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
    "zimage": ("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
}
"""Pipeline classes of the transformer families, by family (text-to-image and the img2img/inpaint siblings, which
encode prompts the same way)."""

SUPPORTED = (
    "SD 1.x/2.x (CLIP), SDXL (CLIP+CLIP), the shipped model (BERT), FLUX.1 (CLIP+T5), SD3/3.5 (CLIP+CLIP+T5), "
    "Chroma (T5), FLUX.2 klein, Qwen-Image and Z-Image (chat-template LLMs)"
)
"""The supported encoders, for error messages."""

QWEN_IMAGE_DROP = 34
"""Qwen-Image's ``prompt_template_encode_start_idx`` when a pipeline instance lacks the attribute."""


@dataclass(frozen=True)
class Encoded:
    """One text as an adapter encodes it alone: its ``segments`` on the token axis, its pooled vector (1, P) or None,
    and its ``TokenReport``."""

    segments: tuple[Segment, ...]
    pooled: Tensor | None
    report: TokenReport

    @property
    def states(self) -> Tensor:
        """(1, T, D): the segments on the token axis."""
        if len(self.segments) == 1:
            return self.segments[0].states
        return torch.cat([segment.states for segment in self.segments], dim=1)

    @property
    def real(self) -> Tensor:
        """(T,) bool: the text's own positions (False on padding)."""
        if len(self.segments) == 1:
            return self.segments[0].real
        return torch.cat([segment.real for segment in self.segments])

    @property
    def chunks(self) -> int:
        return self.report.chunks


class Adapter:
    """How one kind of text encoder turns a text into a pipeline's conditioning (see the module table)."""

    family: str = ""
    kind: str = ""
    names: KwargNames = KwargNames()
    layouts: tuple[SegmentLayout, ...] = ()
    default_pooling: Pooling = "mean"
    mask_rule: MaskRule = "none"
    zero_empty_negative: bool = False
    """SDXL base's ``force_zeros_for_empty_prompt``: no ``--no`` gives zero negative embeddings, not E("")."""
    windowed: bool = False

    def signature(self) -> tuple[Hashable, ...]:
        """What, besides the model, decides an encoding: part of the cache key."""
        raise NotImplementedError

    def encode(self, text: str) -> Encoded:
        """``text`` alone, as the family's pipeline encodes it (under ``torch.inference_mode``)."""
        raise NotImplementedError

    def tokenize(self, text: str) -> TokenReport:
        raise NotImplementedError

    def word_embeddings(self, text: str) -> Tensor:
        """The input embedding lookup of ``tokenize(text).ids`` (1, tokens, D)."""
        raise NotImplementedError

    def spans(self, text: str) -> tuple[tuple[Span, ...], ...]:
        """Each segment's content-token spans of ``text`` alone, from tokenization only (no encoder run)."""
        raise NotImplementedError

    @property
    def window(self) -> int:
        """Tokens per window: CLIP 77, the shipped BERT 32; T5/LLM families: the one window's limit."""
        raise NotImplementedError

    @property
    def models(self) -> list[PreTrainedModel]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        from worker.text.encoders import execution_device

        return execution_device(self.models[-1])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.models[-1].parameters()).dtype

    def mask(self, used: int, length: int) -> Tensor | None:
        """The (1, length) mask a sequence whose first ``used`` positions are real gets, as the pipeline makes it."""
        if self.mask_rule == "chroma":  # real tokens and one pad token, 0/1 in the encoder's dtype
            return (torch.arange(length, device=self.device) <= used).to(self.dtype)[None]
        if self.mask_rule == "ones":  # Qwen-Image: every position of the variable-length sequence
            mask = torch.zeros((1, length), dtype=torch.long, device=self.device)
            mask[:, :used] = 1
            return mask
        return None


class WindowAdapter(Adapter):
    """CLIP (SD 1.x/2.x), CLIP+CLIP (SDXL) and BERT (the shipped model): windows of ``window`` tokens, a long text
    encoded in chunks (at most ``max_chunks``), SDXL's two encoders side by side on the feature axis."""

    windowed = True

    def __init__(
        self,
        family: Literal["sd", "sdxl", "bert"],
        encoders: Sequence[WindowEncoder],
        *,
        max_chunks: int,
        zero_empty_negative: bool = False,
    ) -> None:
        if not encoders:
            raise ValueError("encoders must hold at least one WindowEncoder, got none")
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        windows = {encoder.window for encoder in encoders}
        if len(windows) != 1:
            raise ValueError(f"all encoders must share one token window, got {sorted(windows)}")
        self.family = family
        self.kind = {"sd": "clip", "sdxl": "clip+clip", "bert": "bert"}[family]
        self.encoders = list(encoders)
        self.max_chunks = max_chunks
        self.zero_empty_negative = zero_empty_negative
        self.default_pooling = "mean" if family == "bert" else "eos"
        name = encoders[0].name
        self.layouts = (SegmentLayout(name, window=encoders[0].window),)
        pooled = family == "sdxl"
        self.names = KwargNames(
            pooled="pooled_prompt_embeds" if pooled else None,
            negative_pooled="negative_pooled_prompt_embeds" if pooled else None,
        )

    @property
    def window(self) -> int:
        return self.encoders[0].window

    @property
    def models(self) -> list[PreTrainedModel]:
        return [encoder.model for encoder in self.encoders]

    def signature(self) -> tuple[Hashable, ...]:
        layers = tuple(encoder.layer for encoder in self.encoders)
        return (self.kind, layers, self.window, self.max_chunks)

    def tokenize(self, text: str) -> TokenReport:
        return self.encoders[0].report(text, self.max_chunks)[0]

    def word_embeddings(self, text: str) -> Tensor:
        tables = []
        for encoder in self.encoders:
            report, _ = encoder.report(text, self.max_chunks)
            tables.append(encoder.input_embeddings(report.ids).to(self.device))
        lengths = {table.shape[1] for table in tables}
        if len(lengths) != 1:
            raise ValueError(f"the tokenizers split {text!r} into different numbers of tokens: {sorted(lengths)}")
        return torch.cat(tables, dim=-1)

    def spans(self, text: str) -> tuple[tuple[Span, ...], ...]:
        _, kept = self.encoders[0].report(text, self.max_chunks)
        return (self.encoders[0].spans(text, len(kept)),)

    def encode(self, text: str) -> Encoded:
        """Every encoder over ``text``'s chunks; SDXL's hidden states are concatenated on the feature axis."""
        plans = [encoder.report(text, self.max_chunks) for encoder in self.encoders]
        # SDXL's two tokenizers normally agree; if not, the shorter is padded with empty-text chunks.
        chunks = max(report.chunks for report, _ in plans)
        hiddens: list[Tensor] = []
        pooled: Tensor | None = None
        mask: Tensor | None = None
        for encoder, (_, content) in zip(self.encoders, plans, strict=True):
            ids, chunk_mask = encoder.chunk_rows(content, chunks)
            hidden, projected = encoder.forward(ids, chunk_mask)  # (chunks, window, D), (chunks, P) | None
            hiddens.append(hidden.reshape(1, chunks * encoder.window, hidden.shape[-1]))
            if projected is not None:
                pooled = projected[:1]
            if mask is None:
                mask = chunk_mask.reshape(chunks * encoder.window)
        device, dtype = self.device, self.dtype
        joined = torch.cat([hidden.to(device=device, dtype=dtype) for hidden in hiddens], dim=-1)
        if pooled is not None:
            pooled = pooled.to(device=device, dtype=dtype)
        assert mask is not None
        report, kept = plans[0]
        if report.chunks != chunks:
            report = TokenReport(
                report.text,
                report.tokens,
                report.ids,
                report.window,
                chunks,
                report.truncated,
                report.dropped,
                report.encoder,
            )
        real = mask.to(device)
        spans = self.encoders[0].spans(text, len(kept))
        segment = Segment(self.encoders[0].name, joined, real, real.clone(), spans)
        return Encoded((segment,), pooled, report)


class FluxAdapter(Adapter):
    """FLUX.1 (dev, schnell): T5 over ``length`` tokens without a mask carries the text; CLIP-L's ``pooler_output``
    of the first 77 tokens is the pooled vector."""

    family = "flux"
    kind = "clip+t5"
    names = KwargNames(pooled="pooled_prompt_embeds", negative_pooled="negative_pooled_prompt_embeds")

    def __init__(self, clip: WindowEncoder, t5: SequenceEncoder) -> None:
        self.clip = clip
        self.t5 = t5
        self.layouts = (SegmentLayout(t5.name, length=t5.length),)

    @property
    def window(self) -> int:
        return self.t5.length

    @property
    def models(self) -> list[PreTrainedModel]:
        return [self.clip.model, self.t5.model]

    def signature(self) -> tuple[Hashable, ...]:
        return (self.kind, "pooler", self.clip.window, self.t5.length)

    def tokenize(self, text: str) -> TokenReport:
        return self.t5.report(text)

    def word_embeddings(self, text: str) -> Tensor:
        return self.t5.input_embeddings(self.t5.report(text).ids)

    def spans(self, text: str) -> tuple[tuple[Span, ...], ...]:
        return (self.t5.spans(text),)

    def encode(self, text: str) -> Encoded:
        _, content = self.clip.report(text, 1)
        ids, mask = self.clip.chunk_rows(content, 1)
        _, pooled = self.clip.forward(ids, mask)
        assert pooled is not None
        segment = self.t5.segment(text)
        return Encoded((segment,), pooled.to(device=self.device, dtype=self.clip.dtype), self.t5.report(text))


class SD3Adapter(Adapter):
    """SD3/3.5: CLIP-L and CLIP-G penultimate states (77 tokens, cut there as the pipeline does) side by side on
    features, zero-padded to T5's width, then T5 over ``length`` tokens (no mask) on the token axis; pooled: both
    CLIPs' projections concatenated."""

    family = "sd3"
    kind = "clip+clip+t5"
    names = KwargNames(pooled="pooled_prompt_embeds", negative_pooled="negative_pooled_prompt_embeds")

    def __init__(self, clip_l: WindowEncoder, clip_g: WindowEncoder, t5: SequenceEncoder) -> None:
        self.clip_l = clip_l
        self.clip_g = clip_g
        self.t5 = t5
        self.layouts = (SegmentLayout(clip_l.name, length=clip_l.window), SegmentLayout(t5.name, length=t5.length))

    @property
    def window(self) -> int:
        return self.t5.length

    @property
    def models(self) -> list[PreTrainedModel]:
        return [self.clip_l.model, self.clip_g.model, self.t5.model]

    def signature(self) -> tuple[Hashable, ...]:
        return (self.kind, "penultimate", self.clip_l.window, self.t5.length)

    def tokenize(self, text: str) -> TokenReport:
        return self.t5.report(text)

    def word_embeddings(self, text: str) -> Tensor:
        return self.t5.input_embeddings(self.t5.report(text).ids)

    def spans(self, text: str) -> tuple[tuple[Span, ...], ...]:
        _, kept = self.clip_l.report(text, 1)
        return (self.clip_l.spans(text, len(kept)), self.t5.spans(text))

    def encode(self, text: str) -> Encoded:
        t5 = self.t5.segment(text)
        states: list[Tensor] = []
        pooled: list[Tensor] = []
        mask: Tensor | None = None
        kept = 0
        for encoder in (self.clip_l, self.clip_g):
            _, content = encoder.report(text, 1)
            ids, chunk_mask = encoder.chunk_rows(content, 1)
            hidden, projected = encoder.forward(ids, chunk_mask)
            assert projected is not None
            states.append(hidden.to(self.clip_l.dtype))
            pooled.append(projected)
            if mask is None:
                mask, kept = chunk_mask[0], len(content)
        assert mask is not None
        clip = torch.cat(states, dim=-1)  # (1, 77, D_l + D_g), as the pipeline: in text_encoder's dtype
        clip = F.pad(clip, (0, t5.states.shape[-1] - clip.shape[-1])).to(device=t5.states.device)
        real = mask.to(t5.states.device)
        segment = Segment(self.clip_l.name, clip, real, real.clone(), self.clip_l.spans(text, kept))
        joined_pooled = torch.cat(pooled, dim=-1).to(device=self.device)
        return Encoded((segment, t5), joined_pooled, self.t5.report(text))


class OneEncoderAdapter(Adapter):
    """A family with one sequence encoder (T5 alone, or a chat LLM): its tokens, spans, word embeddings and the one
    segment of its states all come from ``encoder``; no pooled vector."""

    encoder: SequenceEncoder | ChatEncoder

    @property
    def models(self) -> list[PreTrainedModel]:
        return [self.encoder.model]

    def tokenize(self, text: str) -> TokenReport:
        return self.encoder.report(text)

    def word_embeddings(self, text: str) -> Tensor:
        return self.encoder.input_embeddings(self.encoder.report(text).ids)

    def spans(self, text: str) -> tuple[tuple[Span, ...], ...]:
        return (self.encoder.spans(text),)

    def encode(self, text: str) -> Encoded:
        return Encoded((self.encoder.segment(text),), None, self.encoder.report(text))


class ChromaAdapter(OneEncoderAdapter):
    """Chroma: T5 alone over ``length`` tokens with its attention mask; the pipeline's mask keeps the text's tokens
    and one pad token (0/1 in the encoder's dtype); no pooled vector."""

    family = "chroma"
    kind = "t5"
    mask_rule: MaskRule = "chroma"
    names = KwargNames(mask="prompt_attention_mask", negative_mask="negative_prompt_attention_mask", bool_mask=True)
    encoder: SequenceEncoder

    def __init__(self, t5: SequenceEncoder) -> None:
        self.encoder = t5
        self.layouts = (SegmentLayout(t5.name, length=t5.length),)

    @property
    def window(self) -> int:
        return self.encoder.length

    def signature(self) -> tuple[Hashable, ...]:
        return (self.kind, "masked", self.encoder.length)


class ChatAdapter(OneEncoderAdapter):
    """A decoder-only LLM in its chat template (FLUX.2 klein, Qwen-Image, Z-Image; see ``ChatRecipe``)."""

    kind = "chat-llm"
    encoder: ChatEncoder

    def __init__(self, family: str, encoder: ChatEncoder, names: KwargNames, mask_rule: MaskRule = "none") -> None:
        self.family = family
        self.encoder = encoder
        self.names = names
        self.mask_rule = mask_rule
        recipe = encoder.recipe
        layout = SegmentLayout(encoder.name, length=recipe.length) if recipe.keep_padding else None
        self.layouts = (layout or SegmentLayout(encoder.name, limit=recipe.length),)

    @property
    def window(self) -> int:
        return self.encoder.recipe.length

    def signature(self) -> tuple[Hashable, ...]:
        recipe = self.encoder.recipe
        return (self.kind, self.encoder.template_hash, recipe.layers, recipe.length, recipe.drop, recipe.keep_padding)


# --- which adapter a pipeline gets ------------------------------------------------------------------------------------


def call_default(pipe: Any, name: str, fallback: int) -> int:
    """The default of ``name`` in the pipeline's ``__call__`` (``max_sequence_length``), or ``fallback``."""
    try:
        parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    except (TypeError, ValueError):
        return fallback
    if parameter is None or not isinstance(parameter.default, int):
        return fallback
    return int(parameter.default)


def family_of(pipe: Any) -> str | None:
    """The transformer family of ``pipe``'s class (``FAMILY_PIPELINES``), or None."""
    name = type(pipe).__name__
    for family, classes in FAMILY_PIPELINES.items():
        if name in classes:
            return family
    return None


def _require(pipe: Any, attribute: str, types: tuple[type, ...], what: str) -> Any:
    value = getattr(pipe, attribute, None)
    if value is None or not isinstance(value, types):
        found = type(value).__name__ if value is not None else "none"
        raise ValueError(f"{type(pipe).__name__} has {attribute} {found}; {what}. Supported: {SUPPORTED}")
    return value


def _clip(
    tokenizer: Any,
    model: PreTrainedModel,
    layer: Literal["last", "penultimate"],
    pooled: Literal["projection", "pooler"] | None = None,
) -> WindowEncoder:
    """A CLIP encoder as diffusers drives it: window = tokenizer.model_max_length, attention mask only if the config
    asks for it (``use_attention_mask``; CLIP relies on its causal mask and the EOS position)."""
    use_mask = bool(getattr(model.config, "use_attention_mask", False))
    return WindowEncoder(
        tokenizer,
        model,
        window=int(tokenizer.model_max_length),
        layer=layer,
        use_attention_mask=use_mask,
        pooled=pooled,
    )


def _transformer_adapter(pipe: Any, family: str, max_length: int | None) -> Adapter:
    if family == "flux":
        clip = _require(pipe, "text_encoder", (CLIPTextModel,), "FLUX.1 needs CLIPTextModel")
        t5 = _require(pipe, "text_encoder_2", (T5EncoderModel,), "FLUX.1 needs T5EncoderModel")
        length = max_length or call_default(pipe, "max_sequence_length", 512)
        return FluxAdapter(
            _clip(pipe.tokenizer, clip, "last", "pooler"),
            SequenceEncoder(pipe.tokenizer_2, t5, length=length, masked=False),
        )
    if family == "sd3":
        clip_l = _require(pipe, "text_encoder", (CLIPTextModelWithProjection,), "SD3 needs CLIPTextModelWithProjection")
        clip_g = _require(
            pipe, "text_encoder_2", (CLIPTextModelWithProjection,), "SD3 needs CLIPTextModelWithProjection"
        )
        t5 = _require(pipe, "text_encoder_3", (T5EncoderModel,), "SD3 without T5 is not supported")
        length = max_length or call_default(pipe, "max_sequence_length", 256)
        return SD3Adapter(
            _clip(pipe.tokenizer, clip_l, "penultimate", "projection"),
            _clip(pipe.tokenizer_2, clip_g, "penultimate", "projection"),
            SequenceEncoder(pipe.tokenizer_3, t5, length=length, masked=False),
        )
    if family == "chroma":
        t5 = _require(pipe, "text_encoder", (T5EncoderModel,), "Chroma needs T5EncoderModel")
        length = max_length or call_default(pipe, "max_sequence_length", 512)
        return ChromaAdapter(SequenceEncoder(pipe.tokenizer, t5, length=length, masked=True))
    model = _require(pipe, "text_encoder", (PreTrainedModel,), f"{family} needs a decoder-only LLM")
    length = max_length or call_default(pipe, "max_sequence_length", 512)
    if family == "flux2-klein":
        layers = inspect.signature(pipe.encode_prompt).parameters["text_encoder_out_layers"].default
        recipe = ChatRecipe(layers=tuple(layers), length=length, thinking=False, pad=True, keep_padding=True)
        return ChatAdapter(family, ChatEncoder(pipe.tokenizer, model, recipe), KwargNames())
    if family == "qwenimage":
        template = str(pipe.prompt_template_encode)
        drop = int(getattr(pipe, "prompt_template_encode_start_idx", QWEN_IMAGE_DROP))
        recipe = ChatRecipe(layers=(-1,), length=length, format=template, drop=drop)
        names = KwargNames(mask="prompt_embeds_mask", negative_mask="negative_prompt_embeds_mask")
        return ChatAdapter(family, ChatEncoder(pipe.tokenizer, model, recipe), names, mask_rule="ones")
    # zimage: hidden_states[-2] of the template with enable_thinking=True, padded to the limit, cut to the real tokens
    recipe = ChatRecipe(layers=(-2,), length=length, thinking=True, pad=True, bool_mask=True)
    return ChatAdapter(family, ChatEncoder(pipe.tokenizer, model, recipe), KwargNames(lists=True))


def adapter_for(
    pipe: Any,
    *,
    max_chunks: int = defaults.TEXT_MAX_CHUNKS,
    max_length: int | None = None,
) -> Adapter:
    """The adapter for ``pipe``'s text encoders, from its class (transformer families) or its components (UNet
    families, the shipped model); anything else is a ValueError naming the class, its encoder and the supported kinds.
    ``max_length`` overrides the T5/LLM families' token limit (default: the pipeline's ``max_sequence_length``)."""
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be >= 2 or None, got {max_length}")
    name = type(pipe).__name__
    family = family_of(pipe)
    if family is not None:
        return _transformer_adapter(pipe, family, max_length)
    tokenizer, text_encoder = getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)
    tokenizer_2, text_encoder_2 = getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)
    if getattr(pipe, "text_encoder_3", None) is not None:
        raise ValueError(f"{name} has a third text encoder and is not an SD3 pipeline; supported: {SUPPORTED}")
    if text_encoder_2 is not None:
        if not isinstance(text_encoder_2, CLIPTextModelWithProjection) or tokenizer_2 is None:
            raise ValueError(
                f"{name} has text_encoder_2 {type(text_encoder_2).__name__}; supported: {SUPPORTED} "
                "(this pipeline class is not one of the supported T5 pipelines)"
            )
        encoders = []
        if text_encoder is not None:
            if not isinstance(text_encoder, CLIPTextModel) or tokenizer is None:
                raise ValueError(f"{name} has text_encoder {type(text_encoder).__name__}; SDXL needs CLIPTextModel")
            encoders.append(_clip(tokenizer, text_encoder, "penultimate"))
        encoders.append(_clip(tokenizer_2, text_encoder_2, "penultimate", "projection"))
        zeros = bool(getattr(getattr(pipe, "config", None), "force_zeros_for_empty_prompt", False))
        return WindowAdapter("sdxl", encoders, max_chunks=max_chunks, zero_empty_negative=zeros)
    if tokenizer is None or text_encoder is None:
        raise ValueError(f"{name} has no tokenizer/text_encoder; supported: {SUPPORTED}")
    if isinstance(text_encoder, BertModel):
        bert = WindowEncoder(
            tokenizer,
            text_encoder,
            window=defaults.BERT_TEXT_WINDOW,
            layer="last",
            use_attention_mask=True,
            name="bert",
        )
        return WindowAdapter("bert", [bert], max_chunks=max_chunks)
    if isinstance(text_encoder, CLIPTextModel | CLIPTextModelWithProjection):
        return WindowAdapter("sd", [_clip(tokenizer, text_encoder, "last")], max_chunks=max_chunks)
    raise ValueError(f"{name} has text encoder {type(text_encoder).__name__}; supported: {SUPPORTED}")
