"""Conditioning from a pipeline's own ``encode_prompt``, in the interface the engine takes from the text-encoding
module (``Conditioning.as_pipeline_kwargs(with_negative)``, ``negative_given``, ``truncated``, token reports).

A stand-in: the engine uses it for a family that ``worker.text_encoding`` does not cover yet (the transformer
families until the family-generic text package lands), and it wraps that module's UNet ``Conditioning`` in the same
interface. It encodes a plain prompt exactly as the pipeline would; ``::`` weights are refused (the text package lays
each part side by side), and long prompts are cut by the pipeline's tokenizer at its ``max_sequence_length``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from shared import defaults
from shared.errors import Unsupported
from worker.text_encoding import CacheInfo, TextEncoding, TokenReport

log = logging.getLogger(__name__)

MAX_TOKENS: dict[str, int] = {"sd3": 256, "qwenimage": 1024}
"""``max_sequence_length`` per family where it is not 512 (SD3's T5 default; Qwen-Image's limit)."""


@dataclass
class PipelineConditioning:
    """One prompt's conditioning as pipeline kwargs (batch 1): the positive ones, and the negative ones used only when
    the call runs a negative pass."""

    positive: dict[str, Any]
    negative: dict[str, Any]
    negative_given: bool
    token_reports: list[Any] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return any(getattr(report, "truncated", False) for report in self.token_reports)

    def as_pipeline_kwargs(self, with_negative: bool) -> dict[str, Any]:
        return {**self.positive, **(self.negative if with_negative else {})}


class LegacyTextEncoding:
    """``worker.text_encoding.TextEncoding`` (CLIP, CLIP+CLIP, BERT) in the engine's conditioning interface."""

    def __init__(self, text: TextEncoding) -> None:
        self.inner = text

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, parts: Sequence[tuple[str, float]], negative: Sequence[str]) -> PipelineConditioning:
        cond = self.inner.encode(parts, negative)
        both = cond.as_pipeline_kwargs()
        positive = {name: value for name, value in both.items() if not name.startswith("negative_")}
        negatives = {name: value for name, value in both.items() if name.startswith("negative_")}
        return PipelineConditioning(positive, negatives, bool(negative), list(cond.token_reports))


class PipelineTextEncoding:
    """The pipeline's own ``encode_prompt`` per text, cached like ``TextEncoding`` (keyed by model, family, text)."""

    def __init__(self, pipe: Any, family: str, *, model_key: str, cache_size: int = defaults.TEXT_CACHE_SIZE) -> None:
        self.pipe = pipe
        self.family = family
        self.model_key = model_key
        self.max_tokens = MAX_TOKENS.get(family, 512)
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._cache_size)

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0

    def phrase_positions(self, text: str, start: int, end: int) -> tuple[int, ...]:
        return ()  # no token map: layouts need the text package

    def encode(self, parts: Sequence[tuple[str, float]], negative: Sequence[str]) -> PipelineConditioning:
        parts = list(parts)
        if len(parts) != 1:
            raise Unsupported(f"prompt weights (::) are not supported on {self.family} yet")
        text = parts[0][0]
        negative_text = ", ".join(negative)
        positive = self._encoded(text)
        negative_kwargs = {f"negative_{name}": value for name, value in self._encoded(negative_text).items()}
        reports = [self._report(text), self._report(negative_text)]
        return PipelineConditioning(positive, negative_kwargs, bool(negative), reports)

    def _report(self, text: str) -> TokenReport:
        tokenizer = self._tokenizer()
        ids = list(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False).input_ids)
        dropped = max(0, len(ids) - self.max_tokens)
        return TokenReport(text, [], ids[: self.max_tokens], self.max_tokens, 1, dropped > 0, dropped)

    def _tokenizer(self) -> Any:
        for name in ("tokenizer_3", "tokenizer_2", "tokenizer"):
            if getattr(self.pipe, name, None) is not None:
                return getattr(self.pipe, name)
        raise ValueError(f"{type(self.pipe).__name__} has no tokenizer")

    def _encoded(self, text: str) -> dict[str, Any]:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                self._hits += 1
                return hit
            self._misses += 1
        with torch.inference_mode():
            encoded = self._encode_text(text)
        if self._cache_size:
            with self._lock:
                self._cache[text] = encoded
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return encoded

    def _encode_text(self, text: str) -> dict[str, Any]:
        """The positive kwargs of ``text`` as the family's pipeline would compute them (batch 1)."""
        pipe, device, limit = self.pipe, self.pipe._execution_device, self.max_tokens
        if self.family in ("flux-dev", "flux-schnell"):
            embeds, pooled, _ = pipe.encode_prompt(text, text, device=device, max_sequence_length=limit)
            return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if self.family == "chroma":
            embeds, _, mask, *_ = pipe.encode_prompt(
                text, device=device, do_classifier_free_guidance=False, max_sequence_length=limit
            )
            return {"prompt_embeds": embeds, "prompt_attention_mask": mask}
        if self.family.startswith("flux2-klein"):
            embeds, _ = pipe.encode_prompt(text, device=device, max_sequence_length=limit)
            return {"prompt_embeds": embeds}
        if self.family == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(
                text, text, text, device=device, do_classifier_free_guidance=False, max_sequence_length=limit
            )
            return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if self.family == "qwenimage":
            embeds, mask = pipe.encode_prompt(text, device=device, max_sequence_length=limit)
            return {"prompt_embeds": embeds, "prompt_embeds_mask": mask}
        if self.family == "zimage":
            embeds, _ = pipe.encode_prompt(
                text, device=device, do_classifier_free_guidance=False, max_sequence_length=limit
            )
            return {"prompt_embeds": embeds}
        raise ValueError(f"no pipeline encoding for family {self.family!r}")


def text_encoding_for(pipe: Any, family: str, *, model_key: str) -> LegacyTextEncoding | PipelineTextEncoding:
    """The text encoding of a loaded pipeline: ``worker.text_encoding`` where it covers the encoders, else the
    pipeline's own ``encode_prompt``."""
    try:
        return LegacyTextEncoding(TextEncoding.from_pipeline(pipe, model_key=model_key))
    except ValueError as exc:
        log.info("text encoding of %s by the pipeline's encode_prompt (%s)", type(pipe).__name__, exc)
        return PipelineTextEncoding(pipe, family, model_key=model_key)
