"""Follow-up jobs made from a finished job's record: upscale (U<n>), variations (V<n>, Vary), re-roll, and the
outpaints under an upscaled image (Zoom Out 2x / 1.5x, Make Square, the four pans).

A record is what the worker stored with the finished job (``shared.jobs.record.JobRecord``). The new job is owned by
whoever clicked, gets a new id, and names its source image, so any worker can run it from the shared image store.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import time
from fractions import Fraction
from typing import Any

from shared import defaults, messages
from shared.errors import CannotFollowUp, PromptError
from shared.i18n import tr
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery, JobKind, JobSpec, SourceImage, derive_seeds, new_job_id
from shared.prompt.parser import parse
from shared.prompt.resolve import exp_adjusted, guidance_for, image_size, steps_for

log = logging.getLogger(__name__)


def _check_index(spec: JobSpec, index: int) -> None:
    if spec.kind in (JobKind.DESCRIBE, JobKind.SHORTEN):
        raise CannotFollowUp(
            tr(
                "job {job_id} is a /{kind} result: its buttons imagine its prompts",
                job_id=spec.job_id,
                kind=spec.kind.value,
            )
        )
    count = 1 if spec.kind is JobKind.UPSCALE else len(spec.seeds)
    if not 0 <= index < count:
        raise CannotFollowUp(
            tr(
                "image index must be 0-{number} for {value} job {job_id}, got {index}",
                number=count - 1,
                value=spec.kind.value,
                job_id=spec.job_id,
                index=index,
            )
        )


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
        # a follow-up of a remixed job is not itself remixed (its own Remix sets the flag again)
        "extra": {**_without(spec.extra, "remixed"), "parent_job_id": spec.job_id, "seed": seeds[0]},
    }


def _without(extra: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in extra.items() if key not in names}


def upscale_spec(
    record: JobRecord,
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
    spec = record.spec
    _check_index(spec, index)
    seed = spec.seeds[index] if spec.kind is not JobKind.UPSCALE else spec.seeds[0]
    return spec.replace(
        **_common(spec, owner, delivery, lane, (seed,)),
        kind=JobKind.UPSCALE,
        source=SourceImage(spec.job_id, index),
        source_box=None,
        upscale_mode=mode,
        strength=defaults.UPSCALE_CREATIVE_STRENGTH if mode == "creative" else 1.0,
        mask="",
    )


def variation_spec(
    record: JobRecord,
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
    spec = record.spec
    _check_index(spec, index)
    source = SourceImage(spec.job_id, index)
    if spec.kind is JobKind.UPSCALE and spec.source is not None:
        source = spec.source
    return spec.replace(
        **_common(spec, owner, delivery, lane, _new_seeds(rng)),
        kind=JobKind.VARIATION,
        source=source,
        source_box=None,
        strength=strength,
        upscale_mode="",
        mask="",
    )


def reroll_spec(
    record: JobRecord,
    owner: str,
    rng: random.Random | None = None,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
) -> JobSpec:
    """The recorded job again with new seeds: a new grid for a grid, new variations of the same image for variations."""
    spec = record.spec
    if spec.kind in (JobKind.UPSCALE, JobKind.DESCRIBE, JobKind.SHORTEN):
        kind = spec.kind.value
        raise CannotFollowUp(
            tr(
                "re-roll needs a grid, variation or outpaint job, job {job_id} is a {kind}",
                job_id=spec.job_id,
                kind=kind,
            )
        )
    return spec.replace(**_common(spec, owner, delivery, lane, _new_seeds(rng)))


PAN_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
"""Where a pan paints new image: the source keeps the opposite edge of the longer canvas."""


def zoom_out_spec(
    record: JobRecord,
    index: int,
    owner: str,
    factor: float,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """Four images in which image ``index`` of the recorded job, shrunk by ``factor`` (> 1), sits in the middle of a
    canvas of its own size; the border is painted new from the same prompt."""
    if not 1.0 < factor <= 4.0:
        raise ValueError(f"zoom out factor must be above 1 and at most 4, got {factor!r}")
    spec, source = _outpaint_source(record, index)
    margin = (1 - 1 / factor) / 2
    box = (margin, margin, 1 - margin, 1 - margin)
    label = messages.label_zoom_out(factor)
    return _outpaint(spec, source, (spec.width, spec.height, box, label), owner, delivery, lane, rng)


def make_square_spec(
    record: JobRecord,
    index: int,
    owner: str,
    *,
    native: int,
    multiple: int,
    delivery: Delivery | None = None,
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """Four square images that keep image ``index`` whole, its long side across the canvas, and paint the two bands
    beside its short sides (``native``/``multiple``: the model's pixel budget and size multiple)."""
    spec, source = _outpaint_source(record, index)
    w, h = spec.width, spec.height
    if w == h:
        raise CannotFollowUp(
            tr(
                "image {number} of job {job_id} is already square ({w}x{h})",
                number=index + 1,
                job_id=spec.job_id,
                w=w,
                h=h,
            )
        )
    side, _ = image_size((1, 1), native, multiple)
    if w > h:
        band = (1 - h / w) / 2
        box = (0.0, band, 1.0, 1 - band)
    else:
        band = (1 - w / h) / 2
        box = (band, 0.0, 1 - band, 1.0)
    return _outpaint(spec, source, (side, side, box, messages.LABEL_MAKE_SQUARE), owner, delivery, lane, rng)


def pan_spec(
    record: JobRecord,
    index: int,
    owner: str,
    direction: str,
    *,
    native: int,
    multiple: int,
    delivery: Delivery | None = None,
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """Four images on a canvas ``PAN_EXTENT`` times longer towards ``direction`` (one of ``PAN_DIRECTIONS``), at the
    model's pixel budget: image ``index`` keeps the opposite edge and the new strip is painted from the same prompt."""
    if direction not in PAN_DIRECTIONS:
        raise ValueError(f"pan direction must be one of {', '.join(PAN_DIRECTIONS)}, got {direction!r}")
    spec, source = _outpaint_source(record, index)
    w, h = spec.width, spec.height
    extent = Fraction(defaults.PAN_EXTENT).limit_denominator(8)
    horizontal = direction in ("left", "right")
    ratio = (
        (extent.numerator * w, extent.denominator * h) if horizontal else (extent.denominator * w, extent.numerator * h)
    )
    longest = max(ratio) / min(ratio)
    if longest > defaults.OUTPAINT_MAX_ASPECT:
        raise CannotFollowUp(
            tr(
                "panning {direction} would make the image {longest:.2f}:1; the longest allowed is {top:g}:1",
                direction=direction,
                longest=longest,
                top=defaults.OUTPAINT_MAX_ASPECT,
            )
        )
    g = math.gcd(*ratio)
    width, height = image_size((ratio[0] // g, ratio[1] // g), native, multiple)
    if horizontal:
        kept = min(1.0, (w / h) * height / width)  # the source's width as a fraction of the canvas, at full height
        box = (1 - kept, 0.0, 1.0, 1.0) if direction == "left" else (0.0, 0.0, kept, 1.0)
    else:
        kept = min(1.0, (h / w) * width / height)
        box = (0.0, 1 - kept, 1.0, 1.0) if direction == "up" else (0.0, 0.0, 1.0, kept)
    return _outpaint(spec, source, (width, height, box, messages.label_pan(direction)), owner, delivery, lane, rng)


def _outpaint_source(record: JobRecord, index: int) -> tuple[JobSpec, SourceImage]:
    """The recorded spec and the image to keep: image ``index`` of a grid, or the grid image an upscale was made from
    (an upscale's spec keeps its grid's width and height)."""
    spec = record.spec
    _check_index(spec, index)
    if spec.kind is JobKind.UPSCALE and spec.source is not None:
        return spec, spec.source
    return spec, SourceImage(spec.job_id, index)


def _outpaint(  # noqa: PLR0917 - one private builder for the three public ones
    spec: JobSpec,
    source: SourceImage,
    canvas: tuple[int, int, tuple[float, float, float, float], str],
    owner: str,
    delivery: Delivery | None,
    lane: str | None,
    rng: random.Random | None,
) -> JobSpec:
    """The outpaint job; ``canvas`` is (width, height, source box, what the result line calls it)."""
    width, height, box, label = canvas
    common = _common(spec, owner, delivery, lane, _new_seeds(rng))
    common["extra"] = {**common["extra"], "outpaint": label}
    return spec.replace(
        **common,
        kind=JobKind.OUTPAINT,
        source=source,
        source_box=tuple(round(v, 6) for v in box),
        width=width,
        height=height,
        strength=defaults.OUTPAINT_STRENGTH,
        stop=100,
        tile=False,
        upscale_mode="",
        image_urls=(),
        mask="",
    )


def inpaint_spec(
    record: JobRecord,
    index: int,
    owner: str,
    mask: str,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """Vary (Region): four images that keep image ``index`` of the recorded job outside ``mask`` and repaint inside
    it from the prompt. ``mask`` is a ``shared.jobs.mask`` PNG at ``region_size(record)``; on an upscale the source
    is the grid image it was made from (as for Vary and Zoom Out)."""
    if not mask:
        raise ValueError("an inpaint job needs a mask, got an empty one")
    spec, source = _outpaint_source(record, index)
    common = _common(spec, owner, delivery, lane, _new_seeds(rng))
    return spec.replace(
        **common,
        kind=JobKind.INPAINT,
        source=source,
        source_box=None,
        mask=mask,
        strength=defaults.INPAINT_STRENGTH,
        stop=100,
        tile=False,
        upscale_mode="",
        image_urls=(),
    )


def region_size(record: JobRecord) -> tuple[int, int]:
    """(width, height) of the image an inpaint of ``record`` repaints: the job's own size (an upscale's spec keeps its
    grid's size), which is the size of the mask it carries."""
    return record.spec.width, record.spec.height


_ZOOM = re.compile(r"(?<!\S)(?:--|[–—―])zoom(?:\s+(?P<value>\S+))?(?=\s|$)", re.IGNORECASE)
"""``--zoom <value>`` anywhere in a Custom Zoom text."""


def split_zoom(text: str, default: float = defaults.CUSTOM_ZOOM_DEFAULT) -> tuple[str, float]:
    """Custom Zoom's text without its ``--zoom``, and the factor (``default`` without one); ``PromptError`` naming
    the value if it is not a number in ``CUSTOM_ZOOM_RANGE`` or is given twice."""
    found = list(_ZOOM.finditer(text))
    low, high = defaults.CUSTOM_ZOOM_RANGE
    if len(found) > 1:
        raise PromptError("--zoom is given more than once; give it once")
    if not found:
        return text.strip(), default
    raw = found[0]["value"] or ""
    try:
        factor = float(raw)
    except ValueError:
        factor = math.nan
    if not low <= factor <= high:
        raise PromptError(
            tr(
                "--zoom must be a number from {low:g} to {high:g}, got {value!r}",
                low=low,
                high=high,
                value=raw or tr("nothing"),
            )
        )
    rest = text[: found[0].start()] + text[found[0].end() :]
    return " ".join(rest.split()), factor


def custom_zoom_spec(
    record: JobRecord,
    index: int,
    owner: str,
    factor: float,
    *,
    delivery: Delivery | None = None,
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """Custom Zoom: a zoom out by ``factor`` (the field of view grows ``factor`` times, the source in the middle);
    ``--zoom 1`` keeps the framing and re-renders it as a strong variation."""
    low, high = defaults.CUSTOM_ZOOM_RANGE
    if not low <= factor <= high:
        raise ValueError(f"custom zoom factor must be from {low:g} to {high:g}, got {factor!r}")
    if factor == 1.0:
        return variation_spec(
            record, index, owner, defaults.VARY_STRONG_STRENGTH, delivery=delivery, lane=lane, rng=rng
        )
    return zoom_out_spec(record, index, owner, factor, delivery=delivery, lane=lane, rng=rng)


def described_prompt(record: JobRecord, index: int) -> str:
    """Prompt ``index`` (0-based) offered by a /describe job's record."""
    spec = record.spec
    if spec.kind is not JobKind.DESCRIBE:
        raise CannotFollowUp(
            tr("job {job_id} is a {value} job, not a /describe result", job_id=spec.job_id, value=spec.kind.value)
        )
    descriptions = record.notes.get("descriptions", [])
    if not 0 <= index < len(descriptions):
        raise CannotFollowUp(
            tr(
                "prompt number must be 1-{descriptions} for job {job_id}, got {number}",
                descriptions=len(descriptions),
                job_id=spec.job_id,
                number=index + 1,
            )
        )
    return str(descriptions[index][0])


def shortened_prompt(record: JobRecord, index: int) -> str:
    """Shorter prompt ``index`` (0-based) offered by a /shorten job's record (its parameters included)."""
    spec = record.spec
    if spec.kind is not JobKind.SHORTEN:
        raise CannotFollowUp(f"job {spec.job_id} is a {spec.kind.value} job, not a /shorten result")
    options = record.notes.get("shortened", [])
    if not 0 <= index < len(options):
        raise CannotFollowUp(f"prompt number must be 1-{len(options)} for job {spec.job_id}, got {index + 1}")
    return str(options[index])


def enhance_spec(
    record: JobRecord,
    owner: str,
    *,
    base_steps: int,
    base_guidance: float,
    draft_lora: str = "",
    delivery: Delivery | None = None,
    lane: str | None = None,
) -> JobSpec:
    """ "Enhance" under a ``--draft`` grid: the same prompt (without ``--draft``) and the same seeds at full quality:
    steps and guidance as the prompt resolves without ``--draft`` from ``base_steps``/``base_guidance`` (the
    ``STEPS``/``GUIDANCE`` settings), and without the draft LoRA ``draft_lora``."""
    spec = record.spec
    if spec.kind is not JobKind.GRID or not spec.draft:
        raise CannotFollowUp(f"Enhance needs a --draft grid, job {spec.job_id} is not one")
    (prompt,) = parse(spec.prompt)
    text = dataclasses.replace(prompt, draft=False, repeat=1).to_text()
    steps, guidance = exp_adjusted(
        steps_for(prompt.quality, base_steps),
        guidance_for(prompt.stylize, prompt.style, base_guidance),
        prompt.experimental,
    )
    common = _common(spec, owner, delivery, lane, spec.seeds)
    common["extra"] = {**common["extra"], "enhanced_from": spec.job_id, "draft": False}
    return spec.replace(
        **common,
        prompt=text,
        draft=False,
        steps=steps,
        guidance=guidance,
        loras=tuple((name, weight) for name, weight in spec.loras if name != draft_lora),
    )
