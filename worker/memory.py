"""Freeing memory after a failed job, so that the worker keeps serving with its model loaded."""

from __future__ import annotations

import gc
import logging

import torch

from worker import faults

log = logging.getLogger(__name__)


def free_memory(exc: BaseException) -> None:
    """Drop what a failed job held (Python garbage, CUDA's cache, an injected fault's ballast)."""
    faults.drop_ballast()
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        log.warning("job ran out of memory; freeing caches before the next job")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
