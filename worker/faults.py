"""Fault injection for the fault tests only: with ``FAULT_INJECTION`` set (empty in production), a job whose prompt
contains ``FAULT_MARKER`` raises a real out-of-memory error or an internal error inside the worker."""

from __future__ import annotations

import logging
from typing import Any

import torch

from shared.jobs.spec import JobSpec
from shared.settings import Settings

log = logging.getLogger(__name__)

FAULT_MARKER = "[fault]"
"""Prompt text that triggers ``settings.fault_injection``."""

_ballast: list[Any] = []
"""Memory an injected out-of-memory fault really allocated (``drop_ballast`` frees it)."""


def inject_fault(settings: Settings, spec: JobSpec) -> None:
    """Raise the configured test fault for jobs whose prompt contains ``FAULT_MARKER``: ``oom`` raises torch's
    out-of-memory error after really allocating, ``error`` a plain internal error, ``value`` a ``ValueError`` like a
    library's. No-op when the setting is empty."""
    if not settings.fault_injection or FAULT_MARKER not in spec.prompt:
        return
    if settings.fault_injection == "oom":
        # A real allocation first, so the recovery path has something to free (64 MiB).
        ballast = torch.empty(16 * 1024 * 1024, dtype=torch.float32)
        _ballast.append(ballast)
        raise torch.cuda.OutOfMemoryError(f"injected out-of-memory fault ({ballast.numel() * 4} bytes held)")
    if settings.fault_injection == "error":
        raise RuntimeError("injected internal fault")
    if settings.fault_injection == "value":  # as a library's argument check would raise, with its own text
        raise ValueError("injected library error with a secret detail")
    raise ValueError(f"FAULT_INJECTION must be '', 'oom', 'error' or 'value', got {settings.fault_injection!r}")


def drop_ballast() -> None:
    """Free what an injected out-of-memory fault allocated."""
    _ballast.clear()
