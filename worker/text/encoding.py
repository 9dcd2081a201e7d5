"""``TextEncoding``: one model's text stages (tokens, word embeddings, contextual embeddings, a pooled text vector)
and the weighted / negative / long-prompt conditioning its pipeline takes, through the family's adapter
(``worker.text.families``), with the encoding cache in front of the encoder.

Cached encodings stay on the text encoder's execution device, in its dtype. Tensors come from
``torch.inference_mode()``: code that back-propagates through them (training) must ``.clone()`` them first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from shared import defaults
from worker.text.cache import CacheInfo, EncodingCache
from worker.text.conditioning import Conditioning, TokenMap, TokenReport, TokenSpan
from worker.text.families import POOLINGS, Adapter, Encoded, Pooling, adapter_for
from worker.text.weights import join, normalised, padded, weighted_mean

log = logging.getLogger(__name__)


class TextEncoding:
    """Tokens, word embeddings, contextual embeddings, text vectors and pipeline conditioning for one model.

    Each text's encoding is cached in an LRU of ``cache_size`` entries keyed by (model_key, the adapter's signature,
    text), so a re-roll or variation of the same prompt skips the text encoder.
    """

    def __init__(self, adapter: Adapter, *, model_key: str, cache_size: int = defaults.TEXT_CACHE_SIZE) -> None:
        self.adapter = adapter
        self.model_key = model_key
        self._cache: EncodingCache[Encoded] = EncodingCache(cache_size)

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        *,
        model_key: str,
        cache_size: int = defaults.TEXT_CACHE_SIZE,
        max_chunks: int = defaults.TEXT_MAX_CHUNKS,
        max_length: int | None = None,
    ) -> TextEncoding:
        """The adapter for ``pipe`` (``worker.text.families.adapter_for``; unknown encoders raise ValueError naming the
        class and the supported kinds). ``max_chunks`` caps CLIP/BERT windows; ``max_length`` overrides the T5/LLM
        token limit (default: the pipeline's ``max_sequence_length`` default)."""
        return cls(
            adapter_for(pipe, max_chunks=max_chunks, max_length=max_length), model_key=model_key, cache_size=cache_size
        )

    @property
    def family(self) -> str:
        """``sd``, ``sdxl``, ``bert``, ``flux``, ``sd3``, ``chroma``, ``flux2-klein``, ``qwenimage``, ``zimage``."""
        return self.adapter.family

    @property
    def kind(self) -> str:
        """The encoder kind: ``clip``, ``clip+clip``, ``bert``, ``clip+t5``, ``clip+clip+t5``, ``t5``, ``chat-llm``."""
        return self.adapter.kind

    @property
    def window(self) -> int:
        """Tokens per window (CLIP 77, the shipped BERT 32); T5/LLM families: their one window's limit."""
        return self.adapter.window

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.dtype

    # --- stage 2: word embeddings --------------------------------------------------------------------------------

    def tokenize(self, text: str) -> TokenReport:
        """Tokens and ids of ``text`` (the sequence encoder's tokenizer: CLIP/BERT, T5, or the LLM's with the chat
        template), the window, the chunks it needs, any truncation."""
        return self.adapter.tokenize(text)

    def word_embeddings(self, text: str) -> Tensor:
        """The input embedding lookup (1, tokens, D) of ``tokenize(text).ids`` (SDXL: both tables concatenated)."""
        with torch.inference_mode():
            return self.adapter.word_embeddings(text)

    def token_map(self, text: str) -> TokenMap:
        """Character spans of ``text`` -> positions in ``contextual_embeddings(text)`` (part 0), from the tokenizers'
        offsets alone (the encoder does not run)."""
        spans: list[TokenSpan] = []
        start = 0
        for layout, segment_spans in zip(self.adapter.layouts, self.adapter.spans(text), strict=True):
            spans += [
                TokenSpan(0, first, last, start + position, layout.name) for first, last, position in segment_spans
            ]
            # only the last stretch may have a length that depends on the text (windows, variable length)
            start += layout.length or 0
        return TokenMap(tuple(spans))

    def phrase_positions(self, text: str, start: int, end: int) -> tuple[int, ...]:
        """Positions in ``contextual_embeddings(text)`` (and in the conditioning of ``text`` as one part) of the
        tokens overlapping ``text[start:end]``, from the tokenizer's offsets; tokens that were cut have none."""
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"span must satisfy 0 <= start <= end <= {len(text)}, got start={start}, end={end}")
        return self.token_map(text).positions(start, end)

    # --- stage 3: contextual embeddings --------------------------------------------------------------------------

    def contextual_embeddings(self, text: str) -> Tensor:
        """The encoder's states (1, T, D) for ``text`` alone, as the family's pipeline conditions on them."""
        return self._encoded(text).states

    # --- stage 4: text vector ------------------------------------------------------------------------------------

    def text_vector(self, texts: Sequence[str], pooling: Pooling | None = None) -> Tensor:
        """One pooled vector per text (N, D), pooled over the contextual embeddings' real positions.

        ``cls``: the first token; ``eos``: the last real token (CLIP/BERT: of the first chunk; CLIP's EOS equals its
        ``pooler_output`` for SD; BERT's [SEP]); ``mean`` / ``max``: over every real position (padding left out).
        Default: ``eos`` for CLIP, ``mean`` for BERT (its sentence-transformers pooling), T5 and LLMs.
        """
        mode = pooling or self.adapter.default_pooling
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} or None, got {pooling!r}")
        if isinstance(texts, str):
            raise ValueError(f"texts must be a sequence of strings, got the string {texts!r}")
        vectors = []
        with torch.inference_mode():
            for text in texts:
                encoded = self._encoded(text)
                hidden, mask = encoded.states[0], encoded.real.to(encoded.states.device)  # (T, D), (T,)
                if mode == "cls":
                    vector = hidden[0]
                elif mode == "eos":
                    scope = mask[: self.window] if self.adapter.windowed else mask
                    vector = hidden[int(scope.nonzero()[-1])]
                elif mode == "mean":
                    weights = mask.to(torch.float32).unsqueeze(-1)
                    vector = ((hidden.float() * weights).sum(0) / weights.sum()).to(hidden.dtype)
                else:
                    vector = hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(0)
                vectors.append(vector)
            if not vectors:
                return torch.empty((0, self._encoded("").states.shape[-1]), dtype=self.dtype, device=self.device)
            return torch.stack(vectors)

    # --- stage 5: text-image alignment conditioning --------------------------------------------------------------

    def encode(self, parts: Sequence[tuple[str, float]], negative: Sequence[str]) -> Conditioning:
        """The pipeline conditioning for weighted ``parts`` (``a::2 b::-.5``) and ``--no`` items ``negative``.

        Each part is encoded on its own, so one part's words do not colour another's (``hot::dog`` is a hot thing and
        a dog, not a hot dog), and the parts are laid side by side (``worker.text.weights``); one part alone is its
        own encoding, unchanged. The negative prompt is ``", ".join(negative)`` (``""`` when empty); CLIP/BERT pad it
        and the prompt with the empty text's windows to the same length T; T5 and LLM families give each its own
        length (fixed by the pipeline for FLUX.1, SD3, Chroma and klein; the text's own for Qwen-Image and Z-Image).
        """
        parts = list(parts)
        weights, total = normalised([weight for _, weight in parts])
        if isinstance(negative, str):
            raise ValueError(f"negative must be a sequence of strings (the --no items), got the string {negative!r}")
        negative_text = ", ".join(negative)
        adapter = self.adapter
        with torch.inference_mode():
            encoded = [self._encoded(text) for text, _ in parts]
            negative_encoded = self._encoded(negative_text)
            empty = self._encoded("")
            pieces: list[Tensor] = []
            negative_pieces: list[Tensor] = []
            offsets: list[list[int]] = [[] for _ in parts]
            kept_counts: list[list[int]] = [[] for _ in parts]
            used = 0
            joined_dropped = 0
            segment_starts: list[int] = []
            position = 0
            for index, layout in enumerate(adapter.layouts):
                own = [item.segments[index] for item in encoded]
                negative_segment = negative_encoded.segments[index]
                segment_starts.append(position)
                if len(own) == 1:
                    states = own[0].states
                    used = own[0].real_count
                    offsets[0].append(0)
                    kept_counts[0].append(-1)  # every position of its own
                else:
                    joined = join(
                        layout, own, weights, total, empty.segments[index], min_chunks=negative_encoded.chunks
                    )
                    states, used = joined.states, joined.used
                    joined_dropped += joined.dropped
                    for part, (start, kept) in enumerate(zip(joined.starts, joined.kept, strict=True)):
                        offsets[part].append(start)
                        kept_counts[part].append(kept)
                negative_states = negative_segment.states
                if layout.window is not None:  # CLIP/BERT: prompt and negative on the same whole number of windows
                    chunks = max(states.shape[1] // layout.window, negative_states.shape[1] // layout.window)
                    empty_window = empty.segments[index].states[:, : layout.window]
                    states = padded(states, chunks, empty_window)
                    negative_states = padded(negative_states, chunks, empty_window)
                pieces.append(states)
                negative_pieces.append(negative_states)
                position += states.shape[1]
            prompt_embeds = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
            negative_embeds = negative_pieces[0] if len(negative_pieces) == 1 else torch.cat(negative_pieces, dim=1)
            pooled: Tensor | None = None
            negative_pooled: Tensor | None = None
            if encoded[0].pooled is not None:
                pooled = weighted_mean([_pooled(item) for item in encoded], weights, total)
                negative_pooled = negative_encoded.pooled
            if adapter.zero_empty_negative and not negative_text:
                negative_embeds = torch.zeros_like(negative_embeds)
                negative_pooled = None if negative_pooled is None else torch.zeros_like(negative_pooled)
            # masks are for one-stretch families (Chroma, Qwen-Image): the used positions of that stretch
            prompt_mask = adapter.mask(used, prompt_embeds.shape[1])
            negative_mask = adapter.mask(negative_encoded.segments[-1].real_count, negative_embeds.shape[1])
        reports = [item.report for item in encoded] + [negative_encoded.report]
        for report in reports:
            if report.truncated:
                log.warning(
                    "prompt cut at %d windows of %d tokens: %d tokens dropped from %r",
                    report.chunks,
                    report.window,
                    report.dropped,
                    report.text[:80],
                )
        token_map = _token_map(encoded, (segment_starts, offsets, kept_counts))
        return Conditioning(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            pooled_prompt_embeds=pooled,
            negative_pooled_prompt_embeds=negative_pooled,
            prompt_mask=prompt_mask,
            negative_prompt_mask=negative_mask,
            token_reports=reports,
            token_map=token_map,
            negative_given=bool(negative_text),
            family=adapter.family,
            names=adapter.names,
            joined_dropped=joined_dropped,
        )

    # --- cache ---------------------------------------------------------------------------------------------------

    def cache_info(self) -> CacheInfo:
        return self._cache.info()

    def cache_clear(self) -> None:
        """Drop every cached encoding and reset the counters."""
        self._cache.clear()

    def _encoded(self, text: str) -> Encoded:
        key = (self.model_key, self.adapter.signature(), text)

        def compute() -> Encoded:
            with torch.inference_mode():
                return self.adapter.encode(text)

        return self._cache.get(key, compute)


def _pooled(encoded: Encoded) -> Tensor:
    if encoded.pooled is None:
        raise ValueError("this family's conditioning needs a pooled vector for every part, got none")
    return encoded.pooled


def _token_map(encoded: Sequence[Encoded], placement: tuple[list[int], list[list[int]], list[list[int]]]) -> TokenMap:
    """The parts' token spans on the joined conditioning's token axis. ``placement``: each segment's start, and per
    part and segment where its first kept position landed and how many of its kept positions survived a cut (-1: the
    part is alone and keeps its own positions)."""
    starts, offsets, kept_counts = placement
    spans: list[TokenSpan] = []
    for part, item in enumerate(encoded):
        for index, segment in enumerate(item.segments):
            base, offset, kept = starts[index], offsets[part][index], kept_counts[part][index]
            if kept < 0:
                spans += [TokenSpan(part, s, e, base + p, segment.name) for s, e, p in segment.spans]
                continue
            # rank of each kept position among the part's kept positions -> its place in the joined stretch
            ranks = torch.cumsum(segment.keep.long(), 0) - 1
            for s, e, p in segment.spans:
                rank = int(ranks[p])
                if bool(segment.keep[p]) and rank < kept:
                    spans.append(TokenSpan(part, s, e, base + offset + rank, segment.name))
    return TokenMap(tuple(spans))
