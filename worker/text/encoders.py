"""Tokenizer + text model pairs and how their hidden states are read, one text at a time (batch 1):

* ``WindowEncoder``: CLIP or BERT in windows of ``window`` tokens, each chunk of content framed by the tokenizer's
  own specials ([BOS]..[EOS] / [CLS]..[SEP]) and padded (SD 1.x/2.x, SDXL, the shipped model; one window in FLUX.1
  and SD3, which cut CLIP at 77 tokens as their pipelines do).
* ``SequenceEncoder``: T5 over one window padded to the pipeline's ``max_sequence_length``, with or without the
  attention mask (FLUX.1 and SD3 without, Chroma with).
* ``ChatEncoder``: a decoder-only LLM reading the prompt inside its chat template (Qwen-Image's Qwen2.5-VL, Z-Image's
  and FLUX.2 klein's Qwen3), its chosen hidden layers concatenated on the feature axis.

Each returns a ``Segment``: the text's states on one stretch of the conditioning's token axis, which positions are the
text's own, which a ``::`` part lays side by side, and each content token's character span (from the tokenizer's
``return_offsets_mapping``; byte-level BPE tokens such as "Ġred" carry their leading space, which is not counted).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import PreTrainedModel

from worker.text.conditioning import TokenReport

log = logging.getLogger(__name__)

Span = tuple[int, int, int]
"""(first character, one past the last character, position in the segment's states) of one content token."""

TEMPLATE_MARK = "\ue000"
"""A private-use character put where the text goes, to find the template's head and tail around it."""


@dataclass(frozen=True)
class Segment:
    """One text's states on one stretch of the conditioning's token axis.

    ``states`` (1, T, D) on the encoder's execution device in its dtype; ``real`` (T,) bool on the same device: the
    text's own tokens (specials, template) and False on padding; ``keep`` (T,) bool: the positions a ``::`` part lays
    side by side (CLIP/BERT/T5: its real tokens, specials included; chat LLMs: the user-content span); ``prefix``:
    leading positions every text shares (a chat template's head, equal in every part since a causal model's states
    at a position depend only on what precedes it); ``suffix``: template positions right after the kept span (the end
    of the user turn and the assistant header), averaged over the parts in a join; ``spans``: the content tokens.
    """

    name: str
    states: Tensor
    real: Tensor
    keep: Tensor
    spans: tuple[Span, ...]
    prefix: int = 0
    suffix: int = 0

    @property
    def length(self) -> int:
        return int(self.states.shape[1])

    @property
    def real_count(self) -> int:
        return int(self.real.sum())


def execution_device(model: PreTrainedModel) -> torch.device:
    """Where the model's inputs must go (the accelerator under diffusers' CPU offloading)."""
    from diffusers.utils.torch_utils import get_module_execution_device

    return get_module_execution_device(model)


def model_dtype(model: PreTrainedModel) -> torch.dtype:
    return next(model.parameters()).dtype


def char_spans(offsets: Sequence[tuple[int, int]], text: str, start: int = 0) -> list[tuple[int, int] | None]:
    """Each token's characters in ``text`` as (first, one past last), whitespace at either end left out (a
    byte-level BPE "Ġred" starts at the space before "red"); None for tokens with no characters of ``text`` (specials,
    a lone "Ġ", template tokens). ``offsets`` index a string in which ``text`` starts at ``start``."""
    spans: list[tuple[int, int] | None] = []
    for token_start, token_end in offsets:
        first, last = max(token_start - start, 0), min(token_end - start, len(text))
        while first < last and text[first].isspace():
            first += 1
        while last > first and text[last - 1].isspace():
            last -= 1
        spans.append((first, last) if first < last else None)
    return spans


def _special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after a single sequence (e.g. [BOS], [EOS] or [CLS], [SEP])."""
    probe = "a"
    content = list(tokenizer(probe, add_special_tokens=False).input_ids)
    full = list(tokenizer(probe).input_ids)
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return full[:start], full[start + len(content) :]
    raise ValueError(f"cannot find where {type(tokenizer).__name__} puts its special tokens: {full} vs {content}")


class WindowEncoder:
    """CLIP or BERT read in windows: a text longer than ``window`` tokens is split into chunks of ``window - specials``
    content tokens, each framed by the tokenizer's specials, padded to the window and encoded on its own.

    ``layer`` is ``"last"`` (the final hidden state, post final layer norm for CLIP) or ``"penultimate"`` (SDXL, SD3).
    ``pooled`` is ``"projection"`` (CLIPTextModelWithProjection's ``text_embeds``: SDXL, SD3), ``"pooler"``
    (CLIPTextModel's ``pooler_output``: FLUX.1) or None; the first chunk's.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: PreTrainedModel,
        *,
        window: int,
        layer: Literal["last", "penultimate"],
        use_attention_mask: bool,
        pooled: Literal["projection", "pooler"] | None = None,
        name: str = "clip",
    ) -> None:
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        if window <= specials:
            raise ValueError(f"window must exceed the tokenizer's {specials} special tokens, got {window}")
        self.tokenizer = tokenizer
        self.model = model
        self.window = window
        self.layer = layer
        self.use_attention_mask = use_attention_mask
        self.pooled = pooled
        self.name = name
        self.prefix, self.suffix = _special_frame(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.suffix[-1])
        self.per_chunk = window - len(self.prefix) - len(self.suffix)

    @property
    def device(self) -> torch.device:
        return execution_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return model_dtype(self.model)

    def content(self, text: str) -> tuple[list[int], list[tuple[int, int] | None]]:
        """Token ids of ``text`` without special tokens and without truncation, and each token's characters."""
        # verbose=False: the "sequence longer than model_max_length" warning does not apply, long texts are chunked.
        out = self.tokenizer(
            text, add_special_tokens=False, truncation=False, verbose=False, return_offsets_mapping=True
        )
        return list(out.input_ids), char_spans(out.offset_mapping, text)

    def content_ids(self, text: str) -> list[int]:
        return self.content(text)[0]

    def report(self, text: str, max_chunks: int) -> tuple[TokenReport, list[int]]:
        """The text's ``TokenReport`` and the content ids that will be encoded (at most ``max_chunks`` windows)."""
        content = self.content_ids(text)
        chunks = max(1, math.ceil(len(content) / self.per_chunk))
        kept = content
        if chunks > max_chunks:
            kept = content[: max_chunks * self.per_chunk]
            chunks = max_chunks
        ids = [*self.prefix, *content, *self.suffix]
        report = TokenReport(
            text=text,
            tokens=list(self.tokenizer.convert_ids_to_tokens(ids)),
            ids=ids,
            window=self.window,
            chunks=chunks,
            truncated=len(kept) < len(content),
            dropped=len(content) - len(kept),
            encoder=self.name,
        )
        return report, kept

    def position(self, index: int) -> int:
        """Position of content token ``index`` in the chunked states (each window starts with the prefix specials)."""
        return (index // self.per_chunk) * self.window + len(self.prefix) + index % self.per_chunk

    def spans(self, text: str, kept: int) -> tuple[Span, ...]:
        """The first ``kept`` content tokens' characters and positions."""
        _, chars = self.content(text)
        return tuple((*span, self.position(index)) for index, span in enumerate(chars[:kept]) if span is not None)

    def chunk_rows(self, content: list[int], chunks: int) -> tuple[Tensor, Tensor]:
        """Input ids and attention mask, both (chunks, window): each chunk framed by the specials and padded.

        Rows past the content (when ``chunks`` exceeds what the content needs) hold the empty text's chunk.
        """
        ids = torch.full((chunks, self.window), self.pad_id, dtype=torch.long)
        mask = torch.zeros((chunks, self.window), dtype=torch.bool)
        for row in range(chunks):
            piece = content[row * self.per_chunk : (row + 1) * self.per_chunk]
            framed = [*self.prefix, *piece, *self.suffix]
            ids[row, : len(framed)] = torch.tensor(framed, dtype=torch.long)
            mask[row, : len(framed)] = True
        return ids, mask

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """Hidden states (chunks, window, D) of the chosen layer and the pooled output (chunks, P) if asked for."""
        device = self.device
        kwargs: dict[str, Any] = {"input_ids": ids.to(device)}
        if self.use_attention_mask:
            kwargs["attention_mask"] = mask.to(device=device, dtype=torch.long)
        out = self.model(**kwargs, output_hidden_states=self.layer == "penultimate")
        hidden = out.hidden_states[-2] if self.layer == "penultimate" else out[0]
        pooled: Tensor | None = None
        if self.pooled == "projection":
            pooled = out[0]  # CLIPTextModelWithProjection: text_embeds (chunks, P), as diffusers reads it
        elif self.pooled == "pooler":
            pooled = out.pooler_output
        return hidden, pooled

    def input_embeddings(self, ids: list[int]) -> Tensor:
        """The input embedding lookup (1, len(ids), D): token vectors before positions and any layer."""
        table = self.model.get_input_embeddings()
        return table(torch.tensor([ids], dtype=torch.long, device=self.device))


class SequenceEncoder:
    """T5 over one window: the text's tokens and ``</s>``, cut at ``length`` tokens and padded to ``length`` (what
    FLUX.1, SD3 and Chroma do with ``padding="max_length", truncation=True``). ``masked`` passes the attention mask to
    the encoder (Chroma), otherwise the padding is encoded as tokens (FLUX.1, SD3)."""

    def __init__(self, tokenizer: Any, model: PreTrainedModel, *, length: int, masked: bool, name: str = "t5") -> None:
        if length < 2:
            raise ValueError(f"length must be >= 2 (a token and </s>), got {length}")
        self.tokenizer = tokenizer
        self.model = model
        self.length = length
        self.masked = masked
        self.name = name

    @property
    def device(self) -> torch.device:
        return execution_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return model_dtype(self.model)

    def report(self, text: str) -> TokenReport:
        ids = list(self.tokenizer(text, truncation=False, verbose=False).input_ids)
        dropped = max(0, len(ids) - self.length)
        return TokenReport(
            text=text,
            tokens=list(self.tokenizer.convert_ids_to_tokens(ids)),
            ids=ids,
            window=self.length,
            chunks=1,
            truncated=dropped > 0,
            dropped=dropped,
            encoder=self.name,
        )

    def segment(self, text: str) -> Segment:
        """The states (1, length, D) of ``text`` as its pipeline computes them."""
        inputs = self.tokenizer(
            text,
            padding="max_length",
            max_length=self.length,
            truncation=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        device = self.device
        kwargs: dict[str, Any] = {}
        if self.masked:
            kwargs["attention_mask"] = inputs.attention_mask.to(device)
        states = self.model(inputs.input_ids.to(device), output_hidden_states=False, **kwargs)[0].to(self.dtype)
        real = inputs.attention_mask[0].to(device=device, dtype=torch.bool)
        return Segment(self.name, states, real, real.clone(), self.spans(text))

    def spans(self, text: str) -> tuple[Span, ...]:
        """The kept content tokens' characters and positions (tokenization only, no encoder run)."""
        out = self.tokenizer(text, max_length=self.length, truncation=True, return_offsets_mapping=True)
        chars = char_spans(out.offset_mapping, text)
        return tuple((*span, index) for index, span in enumerate(chars) if span is not None)

    def input_embeddings(self, ids: list[int]) -> Tensor:
        table = self.model.get_input_embeddings()
        return table(torch.tensor([ids], dtype=torch.long, device=self.device))


@dataclass(frozen=True)
class ChatRecipe:
    """How a pipeline wraps a prompt for its decoder LLM and reads the states (checked against each pipeline's own
    ``encode_prompt`` by the tests)."""

    layers: tuple[int, ...]
    """``hidden_states`` indices, concatenated on the feature axis (klein 9/18/27, Z-Image -2, Qwen-Image -1)."""
    length: int
    """Token limit: the pipeline's ``max_sequence_length`` default; the template and the text must fit (after
    ``drop``)."""
    format: str | None = None
    """A ``str.format`` template with one ``{}`` for the text (Qwen-Image's ``prompt_template_encode``); None: the
    tokenizer's chat template with one user message and the generation prompt."""
    thinking: bool | None = None
    """``enable_thinking`` passed to the chat template (klein False: an empty think block; Z-Image True: none)."""
    drop: int = 0
    """Leading states dropped (Qwen-Image's ``prompt_template_encode_start_idx`` 34: the system prompt)."""
    pad: bool = False
    """Encode padded to ``length`` with the attention mask, as klein and Z-Image do (the same states as unpadded on a
    causal model, up to rounding, so the tests can ask for 1e-5)."""
    keep_padding: bool = False
    """Keep the padded positions' states in the conditioning (klein: the transformer sees all 512)."""
    bool_mask: bool = False
    """Pass the encoder a bool attention mask (Z-Image) rather than int64 (klein, Qwen-Image)."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers must name at least one hidden state, got ()")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if self.format is not None and self.format.count("{}") != 1:
            raise ValueError(f"format must hold exactly one '{{}}' for the text, got {self.format!r}")


class ChatEncoder:
    """A decoder-only LLM reading each text as the user message of its chat template (``ChatRecipe``)."""

    def __init__(self, tokenizer: Any, model: PreTrainedModel, recipe: ChatRecipe, *, name: str = "llm") -> None:
        if recipe.format is None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{type(tokenizer).__name__} has no chat_template; a chat-LLM encoder needs one")
        self.tokenizer = tokenizer
        self.model = model
        self.recipe = recipe
        self.name = name
        self.head, self.tail = self._frame()

    @property
    def device(self) -> torch.device:
        return execution_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return model_dtype(self.model)

    @property
    def template_hash(self) -> str:
        """Short hash of the template text and how it is rendered (part of the encoding cache key)."""
        source = self.recipe.format if self.recipe.format is not None else str(self.tokenizer.chat_template)
        return hashlib.sha256(f"{source}|{self.recipe.thinking}|{self.recipe.drop}".encode()).hexdigest()[:16]

    def render(self, text: str) -> str:
        """``text`` inside the template, as the pipeline renders it."""
        if self.recipe.format is not None:
            return self.recipe.format.format(text)
        kwargs: dict[str, Any] = {}
        if self.recipe.thinking is not None:
            kwargs["enable_thinking"] = self.recipe.thinking
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, **kwargs
        )
        return str(rendered)

    def _frame(self) -> tuple[str, str]:
        head, mark, tail = self.render(TEMPLATE_MARK).partition(TEMPLATE_MARK)
        if not mark:
            raise ValueError(f"the chat template of {type(self.tokenizer).__name__} drops the user message")
        return head, tail

    def _tokens(self, text: str) -> tuple[list[int], list[tuple[int, int]], int, int]:
        """Ids and character offsets of the rendered ``text``, and the first and one-past-last token positions of the
        user content (before ``drop``)."""
        rendered = self.render(text)
        if rendered != self.head + text + self.tail:
            raise ValueError(f"the chat template changes the user text {text[:40]!r}; cannot locate it")
        out = self.tokenizer(rendered, return_offsets_mapping=True)
        ids, offsets = list(out.input_ids), [tuple(pair) for pair in out.offset_mapping]
        first, last = len(self.head), len(self.head) + len(text)
        inside = [index for index, (s, e) in enumerate(offsets) if s < last and e > first and e > s]
        if inside:
            begin, end = inside[0], inside[-1] + 1
        else:  # empty text: an empty content span, at the tail's first token
            begin = end = next((i for i, (s, e) in enumerate(offsets) if s >= first and e > s), len(offsets))
        return ids, offsets, begin, end

    def budget(self) -> int:
        """Most tokens of the rendered text (``drop`` included) the pipeline takes."""
        return self.recipe.length + self.recipe.drop

    def fitted(self, text: str) -> tuple[str, int, int]:
        """``text`` cut at a token boundary so the rendered template fits the budget (the template's tail, the end of
        the turn and the assistant header, stays); returns (kept text, content tokens of ``text``, of the kept)."""
        ids, offsets, begin, end = self._tokens(text)
        total = end - begin
        budget = self.budget()
        if len(ids) <= budget:
            return text, total, total
        keep = total - (len(ids) - budget)
        while keep > 0:
            cut = min(offsets[begin + keep - 1][1] - len(self.head), len(text))
            kept_text = text[:cut]
            kept_ids, _, kept_begin, kept_end = self._tokens(kept_text)
            if len(kept_ids) <= budget:
                return kept_text, total, kept_end - kept_begin
            keep -= len(kept_ids) - budget
        if len(self._tokens("")[0]) > budget:
            raise ValueError(f"the chat template alone exceeds the {budget}-token limit")
        return "", total, 0

    def report(self, text: str) -> TokenReport:
        ids = self._tokens(text)[0]
        _, total, kept = self.fitted(text)
        return TokenReport(
            text=text,
            tokens=list(self.tokenizer.convert_ids_to_tokens(ids)),
            ids=ids,
            window=self.recipe.length,
            chunks=1,
            truncated=kept < total,
            dropped=total - kept,
            encoder=self.name,
        )

    def plan(self, text: str) -> tuple[str, int, int, tuple[Span, ...]]:
        """Tokenization only: the kept text (see ``fitted``), the first and one-past-last positions of its user
        content in the states (after ``drop``), and each content token's characters and position."""
        drop = self.recipe.drop
        kept_text = self.fitted(text)[0]
        _, offsets, begin, end = self._tokens(kept_text)
        chars = char_spans(offsets, kept_text, len(self.head))
        spans = tuple(
            (*span, index - drop) for index in range(max(begin, drop), end) if (span := chars[index]) is not None
        )
        return kept_text, max(begin - drop, 0), max(end - drop, 0), spans

    def spans(self, text: str) -> tuple[Span, ...]:
        return self.plan(text)[3]

    def segment(self, text: str) -> Segment:
        """The states of ``text`` (cut to fit, see ``fitted``) as its pipeline computes them: (1, T, D * layers)."""
        recipe = self.recipe
        kept_text, first, last, spans = self.plan(text)
        rendered = self.render(kept_text)
        if recipe.pad:  # as klein and Z-Image: padding="max_length", the mask inside the encoder
            inputs = self.tokenizer(
                rendered, padding="max_length", max_length=self.budget(), truncation=True, return_tensors="pt"
            )
        else:
            inputs = self.tokenizer(rendered, return_tensors="pt")
        attention = inputs.attention_mask.bool()  # (1, W)
        count = int(attention.sum())
        lead = int(attention[0].long().argmax())  # pads before the text (left-padding tokenizers)
        if recipe.keep_padding and lead:
            raise ValueError(f"{type(self.tokenizer).__name__} pads on the left; this family needs right padding")
        device = self.device
        out = self.model(
            input_ids=inputs.input_ids.to(device),
            attention_mask=attention.to(device) if recipe.bool_mask else inputs.attention_mask.to(device),
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = torch.cat([out.hidden_states[layer] for layer in recipe.layers], dim=-1).to(self.dtype)
        if not recipe.keep_padding:
            hidden = hidden[:, lead : lead + count]  # the real tokens, as the pipelines' hidden[mask]
        states = hidden[:, recipe.drop :]  # (1, T, D * layers)
        real = torch.zeros(states.shape[1], dtype=torch.bool, device=states.device)
        real[: count - recipe.drop] = True
        keep = torch.zeros_like(real)
        keep[first:last] = True
        return Segment(self.name, states, real, keep, spans, prefix=first, suffix=count - recipe.drop - last)

    def input_embeddings(self, ids: list[int]) -> Tensor:
        table = self.model.get_input_embeddings()
        return table(torch.tensor([ids], dtype=torch.long, device=self.device))
