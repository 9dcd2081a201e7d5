"""Follow-up jobs made from a finished job's record: upscale (U<n>), variations (V<n>, Vary) and re-roll.

A record is what the worker stored with ``shared.image_store.put_record``; its ``"spec"`` is the finished job's
``JobSpec.to_dict()``. The new job is owned by whoever clicked, gets a new id, and names its source image, so any
worker can run it from the shared image store.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from shared import defaults
from shared.job import Delivery, JobKind, JobSpec, SourceImage, derive_seeds, new_job_id

log = logging.getLogger(__name__)


def spec_of(record: dict[str, Any]) -> JobSpec:
    """The finished job's spec inside ``record``; a record without one is an error naming its keys."""
    raw = record.get("spec")
    if not isinstance(raw, dict):
        raise ValueError(f"job record has no 'spec' object (keys: {sorted(record)})")
    return JobSpec.from_dict(raw)


def _check_index(spec: JobSpec, index: int) -> None:
    count = 1 if spec.kind is JobKind.UPSCALE else len(spec.seeds)
    if not 0 <= index < count:
        raise ValueError(f"image index must be 0-{count - 1} for {spec.kind.value} job {spec.job_id}, got {index}")


def _new_seeds(rng: random.Random | None) -> tuple[int, ...]:
    source = rng if rng is not None else random.SystemRandom()
    return derive_seeds(source.randrange(defaults.MAX_SEED + 1))


def _common(
    spec: JobSpec, owner: str, delivery: Delivery | None, lane: str | None, seeds: tuple[int, ...]
) -> dict[str, Any]:
    return {
        "seeds": seeds,
        "job_id": new_job_id(),
        "owner": owner,
        "delivery": delivery if delivery is not None else Delivery(kind=spec.delivery.kind),
        "lane": lane or spec.lane,
        "created_at": time.time(),
        "extra": {**spec.extra, "parent_job_id": spec.job_id, "seed": seeds[0]},
    }


def upscale_spec(
    record: dict[str, Any],
    index: int,
    owner: str,
    mode: str = defaults.DEFAULT_UPSCALE_MODE,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
) -> JobSpec:
    """Image ``index`` (0-based) of the recorded job, upscaled with ``mode`` (one of ``defaults.UPSCALE_MODES``).

    Upscaling an upscale upscales that image again (its index is 0); width and height stay the source grid's, the
    engine applies the upscale factor.
    """
    if mode not in defaults.UPSCALE_MODES:
        raise ValueError(f"upscale mode must be one of {', '.join(defaults.UPSCALE_MODES)}, got {mode!r}")
    spec = spec_of(record)
    _check_index(spec, index)
    seed = spec.seeds[index] if spec.kind is not JobKind.UPSCALE else spec.seeds[0]
    return spec.replace(
        **_common(spec, owner, delivery, lane, (seed,)),
        kind=JobKind.UPSCALE,
        source=SourceImage(spec.job_id, index),
        upscale_mode=mode,
        strength=defaults.UPSCALE_CREATIVE_STRENGTH if mode == "creative" else 1.0,
    )


def variation_spec(
    record: dict[str, Any],
    index: int,
    owner: str,
    strength: float = defaults.VARY_STRONG_STRENGTH,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """Four image-to-image variations of image ``index`` (0-based) of the recorded job, at ``strength`` (0-1].

    Varying an upscaled image varies the grid image it was made from, so the variations keep the grid's size.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"variation strength must be in (0, 1], got {strength!r}")
    spec = spec_of(record)
    _check_index(spec, index)
    source = SourceImage(spec.job_id, index)
    if spec.kind is JobKind.UPSCALE and spec.source is not None:
        source = spec.source
    return spec.replace(
        **_common(spec, owner, delivery, lane, _new_seeds(rng)),
        kind=JobKind.VARIATION,
        source=source,
        strength=strength,
        upscale_mode="",
    )


def reroll_spec(
    record: dict[str, Any],
    owner: str,
    rng: random.Random | None = None,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
) -> JobSpec:
    """The recorded job again with new seeds: a new grid for a grid, new variations of the same image for variations."""
    spec = spec_of(record)
    if spec.kind is JobKind.UPSCALE:
        raise ValueError(f"re-roll needs a grid or variation job, job {spec.job_id} is an upscale")
    return spec.replace(**_common(spec, owner, delivery, lane, _new_seeds(rng)))
