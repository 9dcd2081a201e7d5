"""What a prompt becomes for the denoiser: ``Conditioning`` (the pipeline kwargs of one family), ``TokenReport`` (how
one text was tokenized and whether it was cut) and ``TokenMap`` (character spans of the member's text -> positions on
the conditioning's token axis).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenReport:
    """How one text was tokenized: every token with the special tokens (or the chat template) added once, no padding,
    nothing cut, so the report shows what the member wrote even where the encoder could not take all of it.

    ``window`` is the encoder's token window (CLIP/BERT: specials included, per chunk; T5 and LLMs: the one window the
    pipeline takes, its ``max_sequence_length`` default), ``chunks`` the windows encoded (always 1 for T5/LLMs),
    ``truncated`` whether content tokens were dropped and ``dropped`` how many. ``encoder`` names the tokenizer the
    report is about (``clip``, ``bert``, ``t5``, ``llm``): the one that carries the text's sequence.
    """

    text: str
    tokens: list[str]
    ids: list[int]
    window: int
    chunks: int
    truncated: bool
    dropped: int = 0
    encoder: str = ""


@dataclass(frozen=True)
class TokenSpan:
    """One token of one text on the conditioning's token axis."""

    part: int
    """Index of the ``::`` part whose text the characters belong to (the parts in ``encode``'s order)."""
    start: int
    """First character of the token in that text (a byte-level BPE token's leading space is not counted)."""
    end: int
    """One past the token's last character."""
    position: int
    """Position on the conditioning's token axis (``prompt_embeds[:, position]``)."""
    segment: str
    """The stretch of the token axis the position lies in (``clip``, ``t5``, ``bert``, ``llm``); SD3 has two."""


@dataclass(frozen=True)
class TokenMap:
    """Character spans of the member's text(s) -> positions in the conditioning, built from the tokenizers' offsets.

    A word made of several tokens maps to all of them; SD3 maps a word to its CLIP positions and its T5 positions.
    Tokens that were cut (beyond the window, or beyond the family's length when ``::`` parts were joined) have no span.
    """

    spans: tuple[TokenSpan, ...] = ()

    def positions(self, start: int, end: int, *, part: int = 0, segment: str | None = None) -> tuple[int, ...]:
        """Sorted positions of the tokens overlapping characters ``[start, end)`` of part ``part``'s text (only
        ``segment``'s when given); () for an empty span."""
        if start > end:
            raise ValueError(f"span must satisfy start <= end, got start={start}, end={end}")
        found = {
            span.position
            for span in self.spans
            if span.part == part and span.start < end and span.end > start and segment in (None, span.segment)
        }
        return tuple(sorted(found))

    def segments(self) -> tuple[str, ...]:
        """The segment names present, in order of first position."""
        return tuple(dict.fromkeys(span.segment for span in sorted(self.spans, key=lambda span: span.position)))


@dataclass(frozen=True)
class KwargNames:
    """The ``__call__`` keyword names of one family's pipelines (text-to-image and its img2img/inpaint siblings)."""

    embeds: str = "prompt_embeds"
    negative: str = "negative_prompt_embeds"
    pooled: str | None = None
    """Pooled vector kwarg (SDXL, SD3, FLUX.1), None where the family has none."""
    negative_pooled: str | None = None
    mask: str | None = None
    """Attention-mask kwarg (Chroma ``prompt_attention_mask``, Qwen-Image ``prompt_embeds_mask``), else None."""
    negative_mask: str | None = None
    lists: bool = False
    """Z-Image takes lists of unpadded ``(T, D)`` tensors, one per image, instead of ``(B, T, D)``."""
    bool_mask: bool = False
    """Pass the mask as bool by default (Chroma: its own 0/1 float mask does not mask, diffusers issue 13619)."""


@dataclass
class Conditioning:
    """What a pipeline is conditioned on for one prompt (batch 1; ``as_pipeline_kwargs(images=n)`` repeats it).

    Tensors are on the text encoder's execution device in its dtype. ``prompt_embeds`` is ``(1, T, D)`` for every
    family (Z-Image's list form is made by ``as_pipeline_kwargs``); ``negative_prompt_embeds`` is the encoding of
    the ``--no`` items joined by ", " (``negative_given``) or of ``""`` (zeros for SDXL base without ``--no``, its
    ``force_zeros_for_empty_prompt``). The engine decides whether the negative is used:

    ============  ====================================================  ==============================================
    family        kwargs, ``with_negative=False``                       added with ``with_negative=True``
    ============  ====================================================  ==============================================
    sd, bert      prompt_embeds (1,77k,D) / (1,32k,384)                 negative_prompt_embeds, same T (CFG batch)
    sdxl          prompt_embeds (1,77k,D1+D2), pooled_prompt_embeds     negative_prompt_embeds, negative_pooled_...
                  (1,P)
    flux          prompt_embeds (1,512,D) T5, pooled_prompt_embeds      negative_prompt_embeds (1,512,D),
                  (1,P) CLIP pooler                                     negative_pooled_prompt_embeds; true CFG only
                                                                        with ``true_cfg_scale > 1`` (2 passes)
    sd3           prompt_embeds (1,77+256,D_t5), pooled (1,P_l+P_g)     negative_prompt_embeds, negative_pooled_...
    chroma        prompt_embeds (1,512,D), prompt_attention_mask        negative_prompt_embeds,
                  (1,512) bool                                          negative_prompt_attention_mask
    flux2-klein   prompt_embeds (1,512,3D)                              negative_prompt_embeds (1,512,3D) (base CFG;
                                                                        distilled klein ignores it)
    qwenimage     prompt_embeds (1,T,D), prompt_embeds_mask (1,T)       negative_prompt_embeds (1,T',D),
                  int64 ones (T varies with the text)                   negative_prompt_embeds_mask; true CFG only with
                                                                        ``true_cfg_scale > 1``
    zimage        prompt_embeds [ (T,D) ] * images                      negative_prompt_embeds [ (T',D) ] * images
    ============  ====================================================  ==============================================

    CFG families (sd, sdxl, bert, sd3, chroma, klein base, Z-Image at guidance > 0) always need the negative: their
    pipelines would otherwise encode ``""`` themselves (Z-Image raises). True-CFG families (flux, qwenimage) need it
    only when ``--no`` was given; then negative and positive have the same shape on flux (both 512 tokens). Qwen-Image
    is usually run with ``negative_prompt=" "`` and ``true_cfg_scale=4``; its negative here is ``""`` unless ``--no``.

    ``token_reports`` holds one report per ``::`` part, in order, then the negative prompt's report last.
    ``token_map`` maps the parts' characters to positions in ``prompt_embeds``. ``joined_dropped`` counts tokens of
    ``::`` parts cut because the parts side by side exceeded the family's token length.
    """

    prompt_embeds: Tensor
    negative_prompt_embeds: Tensor
    pooled_prompt_embeds: Tensor | None = None
    negative_pooled_prompt_embeds: Tensor | None = None
    prompt_mask: Tensor | None = None
    """(1, T) attention mask as the pipeline's own ``encode_prompt`` returns it (Chroma: 0/1 float keeping one pad
    token; Qwen-Image: int64 ones), None where the family has no mask."""
    negative_prompt_mask: Tensor | None = None
    token_reports: list[TokenReport] = field(default_factory=list)
    token_map: TokenMap = field(default_factory=TokenMap)
    negative_given: bool = False
    family: str = ""
    names: KwargNames = field(default_factory=KwargNames)
    joined_dropped: int = 0

    @property
    def truncated(self) -> bool:
        """Whether any part or the negative prompt was cut, or the joined ``::`` parts were."""
        return self.joined_dropped > 0 or any(report.truncated for report in self.token_reports)

    @property
    def dropped(self) -> int:
        """Content tokens cut in all: each text's own cut plus the joined parts' cut."""
        return self.joined_dropped + sum(report.dropped for report in self.token_reports)

    def as_pipeline_kwargs(
        self, with_negative: bool = True, *, images: int = 1, pipeline_masks: bool = False
    ) -> dict[str, Any]:
        """The keyword arguments this family's pipelines take for this conditioning (see the class table).

        ``images`` repeats every row (tensors ``(images, ...)`` as expanded views: clone before writing into them;
        Z-Image's lists ``images`` long). ``pipeline_masks``
        passes masks exactly as the pipeline's ``encode_prompt`` makes them; by default Chroma's mask is passed as
        bool, which masks the padding as Chroma was trained (its float mask is added to the logits instead).
        """
        if images < 1:
            raise ValueError(f"images must be >= 1, got {images}")
        names = self.names
        kwargs: dict[str, Any] = {names.embeds: self.prompt_embeds}
        if names.pooled is not None and self.pooled_prompt_embeds is not None:
            kwargs[names.pooled] = self.pooled_prompt_embeds
        if names.mask is not None and self.prompt_mask is not None:
            kwargs[names.mask] = self._mask(self.prompt_mask, pipeline_masks)
        if with_negative:
            kwargs[names.negative] = self.negative_prompt_embeds
            if names.negative_pooled is not None and self.negative_pooled_prompt_embeds is not None:
                kwargs[names.negative_pooled] = self.negative_pooled_prompt_embeds
            if names.negative_mask is not None and self.negative_prompt_mask is not None:
                kwargs[names.negative_mask] = self._mask(self.negative_prompt_mask, pipeline_masks)
        for name, value in kwargs.items():
            if names.lists and name in (names.embeds, names.negative):
                kwargs[name] = [value[0]] * images
            elif images > 1:
                kwargs[name] = value.expand(images, *value.shape[1:])
        return kwargs

    def _mask(self, mask: Tensor, pipeline_masks: bool) -> Tensor:
        return mask.bool() if self.names.bool_mask and not pipeline_masks else mask
