"""``::`` weights: how the parts of a multi-prompt, each encoded alone, are combined into one conditioning.

The weights are normalised, ``v_i = w_i / sum(w)`` (negative weights are allowed, the sum must be > 0). On each
stretch of the token axis (``SegmentLayout``), each part's kept positions (``Segment.keep``) are scaled by
``n * v_i`` (1 for equal weights) and laid one after another, *side by side*:

* a chat template's shared head (``Segment.prefix``, equal in every part) comes first, taken from the first part;
  its tail (``Segment.suffix``: end of turn, assistant header) comes after the parts, the weighted mean of the
  parts' tails;
* a fixed-length stretch (T5 in FLUX.1/SD3/Chroma, SD3's CLIP, klein's 512 tokens) is then filled up with the
  empty text's states at the same positions, and cut at its length if the parts do not fit (the cut is reported);
* a windowed stretch (CLIP/BERT) is filled up to whole windows with the empty text's window;
* a variable-length stretch (Qwen-Image, Z-Image) ends with the tail, cut at its limit if needed.

Pooled vectors are the weighted mean ``sum(v_i * pooled_i)``. Scaling is done in float32 at least and rounded once
to the encoder's dtype. Why side by side and not a position-wise mean: docs/text-encoding.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from worker.text.encoders import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentLayout:
    """How one stretch of a family's token axis is laid out; exactly one of ``window``/``length``/``limit`` is set."""

    name: str
    window: int | None = None
    """CLIP/BERT: the stretch is a whole number of windows of this many tokens."""
    length: int | None = None
    """A fixed number of positions (the pipeline pads to it)."""
    limit: int | None = None
    """Variable length, at most this many positions."""

    def __post_init__(self) -> None:
        given = [value for value in (self.window, self.length, self.limit) if value is not None]
        if len(given) != 1 or given[0] < 1:
            raise ValueError(
                f"SegmentLayout {self.name!r} needs exactly one of window/length/limit >= 1, got "
                f"window={self.window}, length={self.length}, limit={self.limit}"
            )


@dataclass(frozen=True)
class Joined:
    """Parts side by side on one stretch: ``states`` (1, T, D), ``used`` positions holding the parts (prefix, kept
    positions, tail; the rest is fill), where each part's first kept position landed (``starts``) and how many of its
    kept positions survived a cut (``kept``), and the kept positions cut in all (``dropped``)."""

    states: Tensor
    used: int
    starts: tuple[int, ...]
    kept: tuple[int, ...]
    dropped: int


def normalised(weights: Sequence[float]) -> tuple[list[float], float]:
    """The weights as floats and their sum; refuses non-finite weights and sums <= 0."""
    values = [float(weight) for weight in weights]
    if not values:
        raise ValueError("parts must hold at least one (text, weight) pair, got []")
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"prompt weights must be finite numbers, got {values}")
    total = sum(values)
    if total <= 0:
        raise ValueError(f"prompt weights must sum to more than 0, got {values} (sum {total:g})")
    return values, total


def weighted_mean(tensors: Sequence[Tensor], weights: Sequence[float], total: float) -> Tensor:
    """``sum(w_i * t_i) / total``, accumulated in float32 at least and returned in the inputs' dtype."""
    dtype = tensors[0].dtype
    work = torch.promote_types(dtype, torch.float32)
    combined = weights[0] * tensors[0].to(work)
    for weight, tensor in zip(weights[1:], tensors[1:], strict=True):
        combined = combined + weight * tensor.to(work)
    return (combined / total).to(dtype)


def tiled(window: Tensor, chunks: int) -> Tensor:
    """``window`` (1, W, D) repeated ``chunks`` times on the token axis: (1, W * chunks, D)."""
    return window.expand(chunks, -1, -1).reshape(1, chunks * window.shape[1], window.shape[-1])


def padded(states: Tensor, chunks: int, empty_window: Tensor) -> Tensor:
    """``states`` (1, W*k, D) followed by copies of the empty text's window (1, W, D) up to ``chunks`` windows."""
    missing = chunks - states.shape[1] // empty_window.shape[1]
    if missing <= 0:
        return states
    return torch.cat([states, tiled(empty_window, missing)], dim=1)


def join(
    layout: SegmentLayout,
    parts: Sequence[Segment],
    weights: Sequence[float],
    total: float,
    empty: Segment,
    *,
    min_chunks: int = 1,
) -> Joined:
    """The parts side by side on one stretch (see the module doc); ``empty`` is the empty text's segment (its window,
    or its padded states for a fixed length); ``min_chunks`` the windows the negative needs (windowed stretches)."""
    count = len(parts)
    scales = [count * weight / total for weight in weights]
    dtype = parts[0].states.dtype
    work = torch.promote_types(dtype, torch.float32)
    head = parts[0].states[0, : parts[0].prefix].to(work)  # (prefix, D)
    pieces = [part.states[0][part.keep].to(work) * scale for part, scale in zip(parts, scales, strict=True)]
    tail_length = parts[0].suffix
    tails: list[Tensor] = []
    if tail_length:
        for part in parts:
            end = int(part.keep.nonzero()[-1]) + 1 if bool(part.keep.any()) else part.prefix
            tails.append(part.states[0, end : end + tail_length])
    room = layout.length if layout.length is not None else layout.limit
    kept = [piece.shape[0] for piece in pieces]
    dropped = 0
    if room is not None:
        over = head.shape[0] + sum(kept) + tail_length - room
        dropped = max(over, 0)
        for index in reversed(range(count)):  # the last parts lose their last tokens first
            if over <= 0:
                break
            cut = min(over, kept[index])
            kept[index] -= cut
            over -= cut
        if over > 0:
            raise ValueError(f"the template alone exceeds the {room}-token {layout.name} stretch")
    starts = []
    position = head.shape[0]
    for length in kept:
        starts.append(position)
        position += length
    rows = [head, *(piece[:length] for piece, length in zip(pieces, kept, strict=True))]
    if tails:
        rows.append(weighted_mean(tails, weights, total).to(work))
    joined = torch.cat(rows)[None].to(dtype)  # (1, used, D)
    used = joined.shape[1]
    if layout.window is not None:
        chunks = max(-(-used // layout.window), min_chunks)
        background = tiled(empty.states[:, : layout.window], chunks)
    elif layout.length is not None:
        background = empty.states[:, : layout.length]
    else:
        background = joined
    states = background.clone()
    states[:, :used] = joined
    if dropped:
        log.warning("the %d :: parts exceed the %d-token %s stretch: %d tokens cut", count, room, layout.name, dropped)
    return Joined(states, used, tuple(starts), tuple(kept), dropped)
