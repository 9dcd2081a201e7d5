"""What the engine produces for a job, and how a job's run is stopped or watched."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, torch.Tensor | None], None]
"""Called after every denoising step with (steps done, steps in total, current latents (batch, C, h, w))."""


class JobCanceled(Exception):
    """Raised inside the denoising loop when the member cancelled the job."""


@dataclass
class Generation:
    """What the engine made for one job."""

    images: list[Image.Image]
    seeds: tuple[int, ...]
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts for the reproducibility record (steps run, stop handling, token reports, alignment scores)."""


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of an image (for the shared image store)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
