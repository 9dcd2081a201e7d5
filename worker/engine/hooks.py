"""What the engine wraps around a pipeline call for some parameters: ``--tile`` (circular padding), ``--stop`` (the
step to stop at and the scheduler's clean-sample estimate to decode there)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from shared.jobs.spec import JobSpec
from worker.engine.families import Family

log = logging.getLogger(__name__)


def stop_step(spec: JobSpec, has_source: bool) -> int | None:
    """The step after which ``--stop`` decodes (None = run to the end); image-to-image runs ``steps x strength``."""
    if spec.stop >= 100:
        return None
    total = spec.steps if not has_source else max(1, int(spec.steps * spec.strength))
    return max(1, round(total * spec.stop / 100))


@contextlib.contextmanager
def tiling(family: Family, pipe: Any, enabled: bool) -> Iterator[None]:
    """``--tile``: circular padding in every convolution of the denoiser and decoder, so images wrap."""
    if not enabled:
        yield
        return
    convs = family.convolutions(pipe)
    previous = [conv.padding_mode for conv in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convs, previous, strict=True):
            conv.padding_mode = mode


@contextlib.contextmanager
def x0_recorder(family: Family, pipe: Any) -> Iterator[dict[str, torch.Tensor | None]]:
    """Records the scheduler's latest estimate of the clean sample (``--stop`` decodes it), in the layout of the
    pipeline's loop: the step's own ``pred_original_sample``, DPM-Solver++'s data prediction, or for flow matching
    ``sample - sigma * velocity`` (``Family.x0_estimate``)."""
    scheduler = pipe.scheduler
    original = scheduler.step
    box: dict[str, torch.Tensor | None] = {"latest": None}

    def step(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if family.flow_matching:
            model_output = kwargs.get("model_output", args[0] if args else None)
            sample = kwargs.get("sample", args[2] if len(args) > 2 else None)
            if isinstance(model_output, torch.Tensor) and isinstance(sample, torch.Tensor):
                box["latest"] = family.x0_estimate(scheduler, model_output, sample)
        elif isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor):
            box["latest"] = out[1]
        elif getattr(out, "pred_original_sample", None) is not None:
            box["latest"] = out.pred_original_sample
        elif getattr(scheduler, "model_outputs", None) and scheduler.config.get("algorithm_type", "").endswith(
            "dpmsolver++"
        ):
            box["latest"] = scheduler.model_outputs[-1]
        return out

    scheduler.step = step  # an instance attribute shadowing the class's method for this job only
    try:
        yield box
    finally:
        del scheduler.step
