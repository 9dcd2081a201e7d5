"""/shorten: which words of a prompt carry weight for the resident model, and shorter prompts that keep them.

A word's weight is how far the prompt's text vector moves when that one word is left out: ``1 - cos(v(prompt),
v(prompt without the word))``, clipped at 0. The vector is the model's alignment scorer's text vector when it has one
(the shipped model: mean-pooled BERT states through its contrastive projection; a configured CLIP), else the pooled
conditioning of its text encoder (``TextEncoding.text_vector``). All ``n + 1`` texts are encoded in one batch.

Shown to the member (``shared.messages.shorten_text``): a word is **bold** at ``SHORTEN_BOLD_FRACTION`` of the
largest weight or more, ~~struck out~~ below ``SHORTEN_STRIKE_FRACTION``; then up to ``SHORTEN_OPTIONS`` shorter
prompts, each the most important ``SHORTEN_KEEP_FRACTIONS`` of the words in their original order, with the prompt's
parameters kept. The result's picture is a bar chart of the weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from shared import defaults, messages
from shared.errors import Unsupported
from shared.jobs.spec import JobSpec
from shared.prompt.parser import parse
from worker.engine import Generation

log = logging.getLogger(__name__)

CHART_WIDTH = 512
"""Width in pixels of the weights chart."""
CHART_ROW = 16
"""Height in pixels of one word's bar."""
CHART_WORDS = 40
"""Most words the chart shows."""
_PUNCTUATION = ",.;:!?"


@torch.inference_mode()
def text_vectors(engine: Any, texts: list[str]) -> torch.Tensor:
    """(N, D) unit text vectors: the alignment scorer's, else the text encoder's pooled conditioning."""
    scorer = getattr(engine, "scorer", None)
    if scorer is not None:
        return F.normalize(scorer.text_vectors(texts).float(), dim=-1)
    text = getattr(engine, "text", None)
    if text is None:
        raise Unsupported(messages.cannot_shorten(str(getattr(engine, "model_ref", "this model"))))
    return F.normalize(text.text_vector(texts).float(), dim=-1)


def word_weights(engine: Any, words: list[str]) -> list[float]:
    """Each word's weight (module doc); words past ``SHORTEN_MAX_WORDS`` get the largest weight (kept, not weighed)."""
    weighed = words[: defaults.SHORTEN_MAX_WORDS]
    texts = [" ".join(words)] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(weighed))]
    vectors = text_vectors(engine, texts)
    weights = [max(0.0, 1.0 - float(vectors[0] @ vectors[i + 1])) for i in range(len(weighed))]
    top = max(weights, default=0.0)
    return weights + [top] * (len(words) - len(weighed))


def marks(weights: list[float]) -> list[str]:
    """``bold``, ``strike`` or ``plain`` for each word (module doc)."""
    top = max(weights, default=0.0)
    if top <= 0:
        return ["plain"] * len(weights)
    return [
        "bold"
        if weight >= defaults.SHORTEN_BOLD_FRACTION * top
        else "strike"
        if weight < defaults.SHORTEN_STRIKE_FRACTION * top
        else "plain"
        for weight in weights
    ]


def _tidy(words: list[str]) -> str:
    """Kept words joined, without a dangling comma or period at the end."""
    return " ".join(words).strip().rstrip(_PUNCTUATION).strip()


def shorter_prompts(words: list[str], weights: list[float]) -> list[str]:
    """Up to ``SHORTEN_OPTIONS`` shorter texts: the most important words at each ``SHORTEN_KEEP_FRACTIONS``, in their
    order; none equal to the prompt or to each other."""
    order = sorted(range(len(words)), key=lambda i: (-weights[i], i))
    full = _tidy(words)
    options: list[str] = []
    for fraction in defaults.SHORTEN_KEEP_FRACTIONS:
        keep = max(1, math.floor(len(words) * fraction + 0.5))
        kept = sorted(order[:keep])
        text = _tidy([words[i] for i in kept])
        if text and text != full and text not in options:
            options.append(text)
        if len(options) == defaults.SHORTEN_OPTIONS:
            break
    return options


def chart(words: list[str], weights: list[float], kinds: list[str]) -> Image.Image:
    """A bar per word (bold words dark, struck words light), the longest bar the largest weight."""
    shown = list(zip(words, weights, kinds, strict=True))[:CHART_WORDS]
    image = Image.new("RGB", (CHART_WIDTH, max(1, len(shown)) * CHART_ROW + 8), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    top = max(weights, default=0.0) or 1.0
    label_width = 150
    colours = {"bold": (40, 70, 160), "plain": (120, 140, 190), "strike": (210, 210, 215)}
    for row, (word, weight, kind) in enumerate(shown):
        y = 4 + row * CHART_ROW
        draw.text((4, y + 2), word[:22], fill=(30, 30, 30))
        length = int((CHART_WIDTH - label_width - 8) * weight / top)
        draw.rectangle((label_width, y + 3, label_width + max(length, 1), y + CHART_ROW - 3), fill=colours[kind])
    return image


def run(engine: Any, spec: JobSpec) -> Generation:
    """A /shorten job on ``engine``: weights, marks, shorter prompts (each with the prompt's parameters), the chart."""
    started = time.perf_counter()
    (prompt,) = parse(spec.prompt)
    words = prompt.text.split()
    weights = word_weights(engine, words)
    kinds = marks(weights)
    options = []
    for text in shorter_prompts(words, weights):
        options.append(dataclasses.replace(prompt, text=text, parts=((text, 1.0),), notes=()).to_text())
    notes: dict[str, Any] = {
        "word_weights": [[word, round(weight, 5)] for word, weight in zip(words, weights, strict=True)],
        "marked": [[word, kind] for word, kind in zip(words, kinds, strict=True)],
        "shortened": options,
        "weighed_by": "alignment scorer" if getattr(engine, "scorer", None) is not None else "text encoder",
    }
    elapsed = time.perf_counter() - started
    log.info("job %s: /shorten weighed %d words in %.2f s", spec.job_id, len(words), elapsed)
    return Generation(
        images=[chart(words, weights, kinds)],
        seeds=spec.seeds[:1],
        timings={"shorten_s": elapsed, "generate_s": elapsed},
        notes=notes,
    )
