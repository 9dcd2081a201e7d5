"""Text conditioning, stage by stage: tokens, word embeddings, contextual embeddings, pooled text vector, and the
weighted / negative / chunked conditioning a diffusers pipeline takes as ``prompt_embeds=``.

Flavours (detected from a pipeline's components by ``TextEncoding.from_pipeline``):

* ``sd``: one CLIP text encoder (SD 1.x/2.x); contextual embeddings are its ``last_hidden_state`` (what
  ``StableDiffusionPipeline.encode_prompt`` computes), ``(1, 77*k, D)``.
* ``sdxl``: both CLIP encoders; the penultimate hidden states of each, concatenated on the feature axis
  ``(1, 77*k, D1 + D2)``; the pooled vector is ``text_encoder_2``'s projected EOS embedding ``(1, P)`` of the first
  chunk.
* ``bert``: the shipped model's frozen all-MiniLM-L6-v2; ``last_hidden_state`` ``(1, 32*k, 384)`` with the attention
  mask, exactly the conditioning contract of docs/ARCHITECTURE.md.

A prompt longer than the encoder's window is split into chunks of ``window - specials`` content tokens, each chunk
wrapped in the tokenizer's own special tokens ([BOS]..[EOS] / [CLS]..[SEP]), padded to the window and encoded on its
own; the chunks' hidden states are concatenated on the token axis. Only beyond ``defaults.TEXT_MAX_CHUNKS`` chunks is a
prompt cut, and then ``TokenReport.truncated`` says so and a warning is logged.

Cached contextual embeddings stay on the text encoder's execution device, in its dtype. Tensors come from
``torch.inference_mode()``: code that back-propagates through them (training) must ``.clone()`` them first.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor
from transformers import BertModel, CLIPTextModel, CLIPTextModelWithProjection, PreTrainedModel

from shared import defaults

log = logging.getLogger(__name__)

Pooling = Literal["cls", "mean", "max", "eos"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
"""Pooling modes of ``TextEncoding.text_vector``."""

Flavour = Literal["sd", "sdxl", "bert"]
DEFAULT_POOLING: dict[str, Pooling] = {"sd": "eos", "sdxl": "eos", "bert": "mean"}
"""Pooling per flavour when none is asked for: CLIP's own (EOS token), sentence-transformers' own (masked mean)."""


@dataclass(frozen=True)
class TokenReport:
    """How one text was tokenized: every token with the special tokens added once (no padding, nothing cut).

    ``window`` is the encoder's token window (specials included), ``chunks`` the windows encoded, ``truncated`` whether
    content tokens beyond ``defaults.TEXT_MAX_CHUNKS`` windows were dropped (``dropped`` of them).
    """

    text: str
    tokens: list[str]
    ids: list[int]
    window: int
    chunks: int
    truncated: bool
    dropped: int = 0


@dataclass
class Conditioning:
    """What a pipeline is conditioned on for one prompt (batch 1; diffusers repeats it per image).

    ``prompt_embeds`` and ``negative_prompt_embeds`` are ``(1, T, D)`` with the same ``T`` (padded to the same number
    of chunks) so the classifier-free-guidance batch lines up; the pooled vectors ``(1, P)`` exist for SDXL only.
    ``token_reports`` holds one report per weighted part, in order, then the negative prompt's report last.
    """

    prompt_embeds: Tensor
    negative_prompt_embeds: Tensor
    pooled_prompt_embeds: Tensor | None = None
    negative_pooled_prompt_embeds: Tensor | None = None
    token_reports: list[TokenReport] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """Whether any part (or the negative prompt) was cut at ``defaults.TEXT_MAX_CHUNKS`` windows."""
        return any(report.truncated for report in self.token_reports)

    def as_pipeline_kwargs(self) -> dict[str, Tensor]:
        """The keyword arguments a diffusers text-to-image / image-to-image pipeline takes for this conditioning."""
        kwargs = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.pooled_prompt_embeds is not None and self.negative_pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return kwargs


class CacheInfo(NamedTuple):
    """Counters of the encoding cache (like ``functools.lru_cache``'s)."""

    hits: int
    misses: int
    size: int
    maxsize: int


@dataclass(frozen=True)
class _Encoded:
    """A text's contextual embeddings ``hidden`` (1, window*chunks, D), its attention ``mask`` (1, window*chunks)
    (True on real tokens and specials, False on padding), the first chunk's ``pooled`` vector (1, P) or None."""

    hidden: Tensor
    mask: Tensor
    pooled: Tensor | None
    report: TokenReport

    @property
    def chunks(self) -> int:
        return self.report.chunks


class TextEncoder:
    """One tokenizer + text model pair and how its hidden states are read.

    ``layer`` is ``"last"`` (the final hidden state, post final layer norm for CLIP) or ``"penultimate"`` (SDXL).
    ``prefix``/``suffix`` are the special token ids the tokenizer puts around a single sequence.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: PreTrainedModel,
        *,
        window: int,
        layer: Literal["last", "penultimate"],
        use_attention_mask: bool,
    ) -> None:
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        if window <= specials:
            raise ValueError(f"window must exceed the tokenizer's {specials} special tokens, got {window}")
        self.tokenizer = tokenizer
        self.model = model
        self.window = window
        self.layer = layer
        self.use_attention_mask = use_attention_mask
        self.prefix, self.suffix = _special_frame(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.suffix[-1])
        self.per_chunk = window - len(self.prefix) - len(self.suffix)

    @property
    def device(self) -> torch.device:
        """Where the model's inputs must go (the accelerator under diffusers' CPU offloading)."""
        from diffusers.utils.torch_utils import get_module_execution_device

        return get_module_execution_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def content_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens and without truncation."""
        # verbose=False: the "sequence longer than model_max_length" warning does not apply, long texts are chunked.
        return list(self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids)

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
        )
        return report, kept

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
        """Hidden states (chunks, window, D) of the chosen layer and the projected pooled output (chunks, P) if the
        model has one (CLIPTextModelWithProjection's ``text_embeds``), else None."""
        device = self.device
        kwargs: dict[str, Any] = {"input_ids": ids.to(device)}
        if self.use_attention_mask:
            kwargs["attention_mask"] = mask.to(device=device, dtype=torch.long)
        out = self.model(**kwargs, output_hidden_states=self.layer == "penultimate")
        hidden = out.hidden_states[-2] if self.layer == "penultimate" else out[0]
        # As diffusers' SDXL encode_prompt: a 2-D first output is the projected pooled embedding.
        pooled = out[0] if out[0].ndim == 2 else None
        return hidden, pooled

    def input_embeddings(self, ids: list[int]) -> Tensor:
        """The input embedding lookup (1, len(ids), D): token vectors before positions and any layer."""
        table = self.model.get_input_embeddings()
        return table(torch.tensor([ids], dtype=torch.long, device=self.device))


def _special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after a single sequence (e.g. [BOS], [EOS] or [CLS], [SEP])."""
    probe = "a"
    content = list(tokenizer(probe, add_special_tokens=False).input_ids)
    full = list(tokenizer(probe).input_ids)
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return full[:start], full[start + len(content) :]
    raise ValueError(f"cannot find where {type(tokenizer).__name__} puts its special tokens: {full} vs {content}")


class TextEncoding:
    """Tokens, word embeddings, contextual embeddings, text vectors and pipeline conditioning for one model.

    Contextual embeddings are cached in an LRU of ``cache_size`` entries keyed by (model_key, flavour, text), so a
    re-roll or variation of the same prompt skips the text encoder.
    """

    def __init__(
        self,
        flavour: Flavour,
        encoders: Sequence[TextEncoder],
        *,
        model_key: str,
        cache_size: int = defaults.TEXT_CACHE_SIZE,
        max_chunks: int = defaults.TEXT_MAX_CHUNKS,
        zero_empty_negative: bool = False,
    ) -> None:
        if flavour not in get_args(Flavour):
            raise ValueError(f"flavour must be one of {get_args(Flavour)}, got {flavour!r}")
        if not encoders:
            raise ValueError("encoders must hold at least one TextEncoder, got none")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {cache_size}")
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        windows = {encoder.window for encoder in encoders}
        if len(windows) != 1:
            raise ValueError(f"all encoders must share one token window, got {sorted(windows)}")
        self.flavour: Flavour = flavour
        self.encoders = list(encoders)
        self.model_key = model_key
        self.max_chunks = max_chunks
        # SDXL base sets force_zeros_for_empty_prompt: with no negative prompt its pipeline feeds zeros, not E("").
        self.zero_empty_negative = zero_empty_negative
        self._cache: OrderedDict[tuple[str, str, str], _Encoded] = OrderedDict()
        self._cache_size = cache_size
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    @property
    def window(self) -> int:
        """Tokens per encoder window, special tokens included (77 for CLIP, 32 for the shipped BERT)."""
        return self.encoders[0].window

    @property
    def device(self) -> torch.device:
        return self.encoders[-1].device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoders[-1].dtype

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        *,
        model_key: str,
        cache_size: int = defaults.TEXT_CACHE_SIZE,
        max_chunks: int = defaults.TEXT_MAX_CHUNKS,
    ) -> TextEncoding:
        """Detect the flavour from ``pipe``'s components (see the module doc); unknown encoders raise ValueError."""
        name = type(pipe).__name__
        tokenizer, text_encoder = getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)
        tokenizer_2, text_encoder_2 = getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)
        if getattr(pipe, "text_encoder_3", None) is not None:
            raise ValueError(f"{name} has a third text encoder (SD3-style T5); supported: SD 1.x/2.x, SDXL, BERT")
        if text_encoder_2 is not None:
            if not isinstance(text_encoder_2, CLIPTextModelWithProjection) or tokenizer_2 is None:
                raise ValueError(
                    f"{name} has text_encoder_2 {type(text_encoder_2).__name__}; supported: SDXL's "
                    "CLIPTextModelWithProjection (T5-conditioned pipelines are not supported)"
                )
            encoders = []
            if text_encoder is not None:
                if not isinstance(text_encoder, CLIPTextModel) or tokenizer is None:
                    raise ValueError(f"{name} has text_encoder {type(text_encoder).__name__}; SDXL needs CLIPTextModel")
                encoders.append(_clip(tokenizer, text_encoder, "penultimate"))
            encoders.append(_clip(tokenizer_2, text_encoder_2, "penultimate"))
            zeros = bool(getattr(getattr(pipe, "config", None), "force_zeros_for_empty_prompt", False))
            return cls(
                "sdxl",
                encoders,
                model_key=model_key,
                cache_size=cache_size,
                max_chunks=max_chunks,
                zero_empty_negative=zeros,
            )
        if tokenizer is None or text_encoder is None:
            raise ValueError(f"{name} has no tokenizer/text_encoder; supported: SD 1.x/2.x, SDXL, BERT")
        if isinstance(text_encoder, BertModel):
            bert = TextEncoder(
                tokenizer, text_encoder, window=defaults.BERT_TEXT_WINDOW, layer="last", use_attention_mask=True
            )
            return cls("bert", [bert], model_key=model_key, cache_size=cache_size, max_chunks=max_chunks)
        if isinstance(text_encoder, CLIPTextModel | CLIPTextModelWithProjection):
            return cls(
                "sd",
                [_clip(tokenizer, text_encoder, "last")],
                model_key=model_key,
                cache_size=cache_size,
                max_chunks=max_chunks,
            )
        raise ValueError(
            f"{name} has text encoder {type(text_encoder).__name__}; supported: CLIPTextModel (SD 1.x/2.x), "
            "two CLIP encoders (SDXL), BertModel (the shipped model)"
        )

    # --- stage 2: word embeddings --------------------------------------------------------------------------------

    def tokenize(self, text: str) -> TokenReport:
        """Tokens and ids of ``text`` (first encoder's tokenizer), the window, the chunks it needs, any truncation."""
        return self.encoders[0].report(text, self.max_chunks)[0]

    def word_embeddings(self, text: str) -> Tensor:
        """The input embedding lookup (1, tokens, D) of ``tokenize(text).ids`` (SDXL: both tables concatenated)."""
        with torch.inference_mode():
            tables = []
            for encoder in self.encoders:
                report, _ = encoder.report(text, self.max_chunks)
                tables.append(encoder.input_embeddings(report.ids).to(self.device))
            lengths = {table.shape[1] for table in tables}
            if len(lengths) != 1:
                raise ValueError(f"the tokenizers split {text!r} into different numbers of tokens: {sorted(lengths)}")
            return torch.cat(tables, dim=-1)

    def phrase_positions(self, text: str, start: int, end: int) -> tuple[int, ...]:
        """Positions in ``contextual_embeddings(text)`` of the tokens of ``text[start:end]`` (a whole-word span).

        Tokens are counted by tokenizing the text up to each end of the span (word-level tokenizers split at blanks
        the same way alone as in the whole text); a position past the encoded windows is dropped.
        """
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"span must satisfy 0 <= start <= end <= {len(text)}, got start={start}, end={end}")
        encoder = self.encoders[0]
        first = len(encoder.content_ids(text[:start]))
        last = len(encoder.content_ids(text[:end]))
        limit = encoder.per_chunk * self.max_chunks
        return tuple(
            (index // encoder.per_chunk) * encoder.window + len(encoder.prefix) + index % encoder.per_chunk
            for index in range(first, min(last, limit))
        )

    # --- stage 3: contextual embeddings --------------------------------------------------------------------------

    def contextual_embeddings(self, text: str) -> Tensor:
        """The encoder's hidden states (1, window*chunks, D) for ``text``, chunked and cached."""
        return self._encoded(text).hidden

    # --- stage 4: text vector ------------------------------------------------------------------------------------

    def text_vector(self, texts: Sequence[str], pooling: Pooling | None = None) -> Tensor:
        """One pooled vector per text (N, D), pooled over the contextual embeddings.

        ``cls``: the first token; ``eos``: the first chunk's last real token (CLIP's EOS: equals CLIP's
        ``pooler_output`` for SD; BERT's [SEP]); ``mean`` / ``max``: over every chunk's non-padding tokens.
        Default: ``eos`` for CLIP, ``mean`` for BERT (its sentence-transformers pooling). With CLIP's causal mask
        ``cls`` is the same vector for every text.
        """
        mode = pooling or DEFAULT_POOLING[self.flavour]
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} or None, got {pooling!r}")
        if isinstance(texts, str):
            raise ValueError(f"texts must be a sequence of strings, got the string {texts!r}")
        vectors = []
        with torch.inference_mode():
            for text in texts:
                encoded = self._encoded(text)
                hidden, mask = encoded.hidden[0], encoded.mask[0].to(encoded.hidden.device)  # (T, D), (T,)
                if mode == "cls":
                    vector = hidden[0]
                elif mode == "eos":
                    vector = hidden[int(mask[: self.window].sum()) - 1]
                elif mode == "mean":
                    weights = mask.to(torch.float32).unsqueeze(-1)
                    vector = ((hidden.float() * weights).sum(0) / weights.sum()).to(hidden.dtype)
                else:
                    vector = hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(0)
                vectors.append(vector)
            if not vectors:
                return torch.empty((0, self._encoded("").hidden.shape[-1]), dtype=self.dtype, device=self.device)
            return torch.stack(vectors)

    # --- stage 5: text-image alignment conditioning --------------------------------------------------------------

    def encode(self, parts: Sequence[tuple[str, float]], negative: Sequence[str]) -> Conditioning:
        """The pipeline conditioning for weighted ``parts`` (``a::2 b::-.5``) and ``--no`` items ``negative``.

        Each part is encoded on its own, so one part's words do not colour another's (``hot::dog`` is a hot thing and
        a dog, not a hot dog). The weights are normalised, ``v_i = w_i / sum(w)`` (negative weights are allowed, the
        sum must be > 0), and the parts are combined in embedding space *side by side*: each part's token states (its
        real tokens and specials, no padding) scaled by ``n * v_i`` (1 for equal weights) and laid one after another,
        then the empty text's states fill the rest of the window(s). A position-wise mean would put "red" and "blue"
        in the same token slot and give neither (measured: the shipped model drew a red circle and a blue square in
        0/16 images of the mean, 4/32 side by side). One part alone is its own encoding, unchanged. The negative
        prompt (``", ".join(negative)``, or ``""``) is padded with the empty text's chunks to the same length T.
        SDXL's pooled vectors are the weighted mean ``sum(v_i * pooled_i)``.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("parts must hold at least one (text, weight) pair, got []")
        weights = [float(weight) for _, weight in parts]
        if not all(math.isfinite(weight) for weight in weights):
            raise ValueError(f"prompt weights must be finite numbers, got {weights}")
        total = sum(weights)
        if total <= 0:
            raise ValueError(f"prompt weights must sum to more than 0, got {weights} (sum {total:g})")
        if isinstance(negative, str):
            raise ValueError(f"negative must be a sequence of strings (the --no items), got the string {negative!r}")
        negative_text = ", ".join(negative)
        with torch.inference_mode():
            encoded = [self._encoded(text) for text, _ in parts]
            negative_encoded = self._encoded(negative_text)
            empty = self._encoded("")
            if len(encoded) == 1:
                chunks = max(encoded[0].chunks, negative_encoded.chunks)
                prompt_embeds = _padded(encoded[0].hidden, chunks, empty.hidden)
            else:
                scales = [len(parts) * weight / total for weight in weights]
                joined = _side_by_side(encoded, scales)  # (1, sum of the parts' real tokens, D)
                window = empty.hidden.shape[1]
                chunks = max(-(-joined.shape[1] // window), negative_encoded.chunks)
                prompt_embeds = _filled(joined, chunks, empty.hidden)
            negative_embeds = _padded(negative_encoded.hidden, chunks, empty.hidden)
            pooled: Tensor | None = None
            negative_pooled: Tensor | None = None
            if self.flavour == "sdxl":
                pooled = _weighted([_require(item.pooled) for item in encoded], weights, total)
                negative_pooled = _require(negative_encoded.pooled)
            if self.zero_empty_negative and not negative_text:
                negative_embeds = torch.zeros_like(negative_embeds)
                negative_pooled = None if negative_pooled is None else torch.zeros_like(negative_pooled)
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
        return Conditioning(prompt_embeds, negative_embeds, pooled, negative_pooled, reports)

    # --- cache ---------------------------------------------------------------------------------------------------

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._cache_size)

    def cache_clear(self) -> None:
        """Drop every cached encoding and reset the counters."""
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0

    def _encoded(self, text: str) -> _Encoded:
        key = (self.model_key, self.flavour, text)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return hit
            self._misses += 1
        encoded = self._encode_text(text)
        if self._cache_size:
            with self._lock:
                self._cache[key] = encoded
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return encoded

    def _encode_text(self, text: str) -> _Encoded:
        """Run every encoder over ``text``'s chunks; SDXL's hidden states are concatenated on the feature axis."""
        plans = [encoder.report(text, self.max_chunks) for encoder in self.encoders]
        # SDXL's two tokenizers normally agree; if not, the shorter is padded with empty-text chunks.
        chunks = max(report.chunks for report, _ in plans)
        hiddens: list[Tensor] = []
        pooled: Tensor | None = None
        mask: Tensor | None = None
        with torch.inference_mode():
            for encoder, (_, content) in zip(self.encoders, plans, strict=True):
                ids, chunk_mask = encoder.chunk_rows(content, chunks)
                hidden, projected = encoder.forward(ids, chunk_mask)  # (chunks, window, D), (chunks, P) | None
                hiddens.append(hidden.reshape(1, chunks * encoder.window, hidden.shape[-1]))
                if projected is not None:
                    pooled = projected[:1]
                if mask is None:
                    mask = chunk_mask.reshape(1, chunks * encoder.window)
            device, dtype = self.device, self.dtype
            joined = torch.cat([hidden.to(device=device, dtype=dtype) for hidden in hiddens], dim=-1)
            if pooled is not None:
                pooled = pooled.to(device=device, dtype=dtype)
        assert mask is not None
        report = plans[0][0]
        if report.chunks != chunks:
            report = TokenReport(
                report.text, report.tokens, report.ids, report.window, chunks, report.truncated, report.dropped
            )
        return _Encoded(joined, mask.to(device), pooled, report)


def _clip(tokenizer: Any, model: PreTrainedModel, layer: Literal["last", "penultimate"]) -> TextEncoder:
    """A CLIP encoder as diffusers drives it: window = tokenizer.model_max_length, attention mask only if the config
    asks for it (``use_attention_mask``; CLIP relies on its causal mask and the EOS position)."""
    use_mask = bool(getattr(model.config, "use_attention_mask", False))
    return TextEncoder(
        tokenizer, model, window=int(tokenizer.model_max_length), layer=layer, use_attention_mask=use_mask
    )


def _padded(hidden: Tensor, chunks: int, empty: Tensor) -> Tensor:
    """``hidden`` (1, window*k, D) followed by copies of the empty text's chunk ``empty`` (1, window, D) up to
    ``chunks`` windows."""
    missing = chunks - hidden.shape[1] // empty.shape[1]
    if missing <= 0:
        return hidden
    return torch.cat([hidden, empty.expand(missing, -1, -1).reshape(1, -1, empty.shape[-1])], dim=1)


def _side_by_side(encoded: Sequence[_Encoded], scales: Sequence[float]) -> Tensor:
    """Each text's real token states (mask True: tokens and specials), times its scale, one text after another:
    (1, L, D), accumulated in float32 at least and returned in the inputs' dtype."""
    dtype = encoded[0].hidden.dtype
    work = torch.promote_types(dtype, torch.float32)
    pieces = [
        item.hidden[0][item.mask[0].to(item.hidden.device)].to(work) * scale
        for item, scale in zip(encoded, scales, strict=True)
    ]
    return torch.cat(pieces)[None].to(dtype)


def _filled(joined: Tensor, chunks: int, empty: Tensor) -> Tensor:
    """``joined`` (1, L, D) followed by the empty text's states at the same positions of its window ``empty``
    (1, window, D), up to ``chunks`` windows."""
    window = empty.shape[1]
    filled = empty.expand(chunks, -1, -1).reshape(1, chunks * window, empty.shape[-1]).clone()
    filled[:, : joined.shape[1]] = joined
    return filled


def _weighted(tensors: Sequence[Tensor], weights: Sequence[float], total: float) -> Tensor:
    """``sum(w_i * t_i) / total``, accumulated in float32 at least and returned in the inputs' dtype."""
    dtype = tensors[0].dtype
    work = torch.promote_types(dtype, torch.float32)
    combined = weights[0] * tensors[0].to(work)
    for weight, tensor in zip(weights[1:], tensors[1:], strict=True):
        combined = combined + weight * tensor.to(work)
    return (combined / total).to(dtype)


def _require(pooled: Tensor | None) -> Tensor:
    if pooled is None:
        raise ValueError("SDXL conditioning needs text_encoder_2's projected pooled output, got none")
    return pooled
