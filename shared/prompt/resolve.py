"""Prompt -> JobSpec: the documented mapping of Midjourney parameters to generation settings (docs/parameters.md).

The worker makes no choices of its own: everything it needs is resolved here, and the resolved parameters are kept in
``JobSpec.extra`` for the reproducibility record.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence

from shared import defaults, messages
from shared.jobs.spec import Delivery, JobKind, JobSpec, derive_seeds, new_job_id
from shared.model_info import model_family, native_resolution, size_multiple
from shared.prompt.parser import Prompt, PromptError
from shared.settings import Settings

log = logging.getLogger(__name__)


def image_size(aspect_ratio: tuple[int, int], native: int, multiple: int) -> tuple[int, int]:
    """Width and height for ``--ar W:H`` at the pixel budget ``native**2``, both multiples of ``multiple``.

    The rule: reduce W:H by their gcd to w:h. The exact-ratio sizes are ``(a*w*m, a*h*m)`` for whole ``a >= 1``; take
    the ``a`` (floor or ceil of ``native / (m * sqrt(w*h))``, at least 1) whose area is nearest ``native**2`` (ties to
    the smaller). If that area is within ``ASPECT_EXACT_AREA_TOLERANCE`` of ``native**2`` it is the size (so 2:1 gives
    exactly 2:1: native 64, multiple 4 -> 88x44). Otherwise (a ratio too fine for the multiple, e.g. 16:9 at 64 px)
    each side is ``native * sqrt(w/h)`` (resp. ``sqrt(h/w)``) rounded to the nearest multiple, at least one multiple.
    """
    if native < 1 or multiple < 1:
        raise ValueError(f"native resolution and size multiple must be positive, got {native} and {multiple}")
    width_ratio, height_ratio = aspect_ratio
    g = math.gcd(width_ratio, height_ratio)
    w, h = width_ratio // g, height_ratio // g
    budget = native * native
    ideal = native / (multiple * math.sqrt(w * h))
    best: tuple[int, int] | None = None
    for a in sorted({max(1, math.floor(ideal)), max(1, math.ceil(ideal))}):
        size = (a * w * multiple, a * h * multiple)
        if best is None or abs(size[0] * size[1] - budget) < abs(best[0] * best[1] - budget):
            best = size
    assert best is not None
    if abs(best[0] * best[1] / budget - 1) <= defaults.ASPECT_EXACT_AREA_TOLERANCE:
        return best
    ratio = math.sqrt(w / h)

    def snap(side: float) -> int:
        return max(multiple, int(side / multiple + 0.5) * multiple)

    return snap(native * ratio), snap(native / ratio)


def guidance_for(stylize: int, style: str | None, base: float) -> float:
    """Guidance scale for ``--stylize`` (and ``--style raw``), piecewise linear and monotone in stylize.

    0 -> ``base * STYLIZE_0_GUIDANCE_FACTOR``, 100 -> ``base`` (settings.guidance), 1000 ->
    ``base * STYLIZE_MAX_GUIDANCE_FACTOR``, linear in between; ``--style raw`` multiplies by
    ``RAW_STYLE_GUIDANCE_FACTOR``; never below ``MIN_GUIDANCE``; rounded to 4 decimals.
    """
    low = base * defaults.STYLIZE_0_GUIDANCE_FACTOR
    high = base * defaults.STYLIZE_MAX_GUIDANCE_FACTOR
    if stylize <= 100:
        guidance = low + (base - low) * stylize / 100
    else:
        guidance = base + (high - base) * (stylize - 100) / (defaults.STYLIZE_MAX - 100)
    if style == "raw":
        guidance *= defaults.RAW_STYLE_GUIDANCE_FACTOR
    return round(max(defaults.MIN_GUIDANCE, guidance), 4)


def guidance_base(model_ref: str, settings: Settings) -> float:
    """The guidance at ``--stylize 100`` for a model: its family's (``shared.families``: FLUX.1 dev's distilled 3.5,
    Qwen-Image's true-CFG 4, SD3.5's 7, ...), or the ``GUIDANCE`` setting for the UNet families and models whose
    family cannot be read without loading them (hub ids)."""
    try:
        family = model_family(model_ref)
    except ValueError:
        family = None  # a class no family handles: the worker refuses the model, naming it
    if family is not None and family.default_guidance is not None:
        return family.default_guidance
    return settings.guidance


def steps_for(quality: float, base_steps: int) -> int:
    """Denoising steps: ``settings.steps * quality`` rounded half up, at least 1."""
    return max(1, math.floor(base_steps * quality + 0.5))


def strength_for(image_weight: float, has_images: bool) -> float:
    """Image-prompt strength: ``1 - iw * IMAGE_WEIGHT_STRENGTH_STEP`` with image URLs (iw 0 -> 1.0, image ignored)."""
    if not has_images:
        return 1.0
    return round(max(0.0, 1.0 - image_weight * defaults.IMAGE_WEIGHT_STRENGTH_STEP), 6)


def _model_for(prompt: Prompt, settings: Settings) -> str:
    """The model reference a prompt asks for, as configured (``MODEL``, or the ``--v``/``--niji`` alias's target):
    recorded in the job, so every worker resolves the same reference and refuses a job for a model it does not serve.
    """
    if prompt.version is None:
        return settings.model
    if prompt.version not in settings.model_aliases:
        flag = "--niji" if prompt.version.startswith("niji") else "--v"
        known = ", ".join(sorted(settings.model_aliases)) or "none are configured"
        raise PromptError(f"{flag}: unknown model version {prompt.version!r}; known versions: {known}")
    return settings.model_aliases[prompt.version]


def check_size(spec: JobSpec, settings: Settings) -> None:
    """Refuse (``PromptError``) a job that asks for more than ``MAX_PIXEL_BUDGET_FACTOR`` times its model's native
    pixel budget: such a size comes from another model (a stale job) and would run for minutes."""
    ref = settings.resolve_model(spec.model or None)
    budget = int(defaults.MAX_PIXEL_BUDGET_FACTOR * native_resolution(ref) ** 2)
    if spec.width * spec.height > budget:
        raise PromptError(messages.size_too_large(spec.width, spec.height, spec.model or settings.model, budget))


def _lane_for(prompt: Prompt, settings: Settings, lane: str | None) -> str:
    served = ", ".join(settings.lanes)
    if prompt.speed is not None:
        if prompt.speed not in settings.lanes:
            raise PromptError(f"--{prompt.speed} is not available here; lanes served: {served}")
        return prompt.speed
    return _served_lane(settings, lane)


def _served_lane(settings: Settings, lane: str | None) -> str:
    """``lane`` (a member's default) or the system default, if the workers serve it; else a ``PromptError``."""
    chosen = lane or settings.default_lane
    if chosen not in settings.lanes:
        served = ", ".join(settings.lanes)
        raise PromptError(f"lane {chosen!r} (your default) is not served here; lanes served: {served}")
    return chosen


def build_jobs(
    prompts: Sequence[Prompt],
    *,
    settings: Settings,
    owner: str,
    delivery: Delivery = Delivery(),  # noqa: B008 - Delivery is a frozen dataclass, safe as a default
    lane: str | None = None,
    rng: random.Random | None = None,
) -> list[JobSpec]:
    """One grid ``JobSpec`` per prompt and per ``--repeat``, each with a fresh job id (mapping in docs/parameters.md).

    Seeds: the prompt's ``--seed`` or, when absent, one drawn from ``rng`` per prompt; repeat k uses
    ``seed + IMAGES_PER_GRID * k`` (wrapped into 0..MAX_SEED), so no two images of a command share a seed.
    Raises ``PromptError`` for an unknown ``--v``/``--niji``, a lane not served, or more than ``MAX_JOBS_PER_PROMPT``.
    """
    total = sum(p.repeat for p in prompts)
    if total > defaults.MAX_JOBS_PER_PROMPT:
        raise PromptError(
            f"this prompt makes {total} jobs ({len(prompts)} permutation(s) with --repeat); "
            f"at most {defaults.MAX_JOBS_PER_PROMPT} are allowed"
        )
    rng = rng if rng is not None else random.Random()
    jobs: list[JobSpec] = []
    for prompt in prompts:
        model = _model_for(prompt, settings)
        ref = settings.resolve_model(model)
        width, height = image_size(prompt.aspect_ratio, native_resolution(ref), size_multiple(ref))
        chosen_lane = _lane_for(prompt, settings, lane)
        guidance = guidance_for(prompt.stylize, prompt.style, guidance_base(ref, settings))
        steps = steps_for(prompt.quality, settings.steps)
        base_seed = prompt.seed if prompt.seed is not None else rng.randint(0, defaults.MAX_SEED)
        canonical = prompt.to_text()
        for k in range(prompt.repeat):
            seed = (base_seed + defaults.IMAGES_PER_GRID * k) % (defaults.MAX_SEED + 1)
            extra = {
                "stylize": prompt.stylize,
                "quality": prompt.quality,
                "chaos": prompt.chaos,
                "weird": prompt.weird,
                "iw": prompt.image_weight,
                "style": prompt.style,
                "version": prompt.version,
                # A list, not a tuple, so the spec equals itself after a JSON round trip.
                "aspect_ratio": list(prompt.aspect_ratio),
                "seed": seed,
                "seed_given": prompt.seed is not None,
                "repeat_index": k,
            }
            jobs.append(
                JobSpec(
                    job_id=new_job_id(),
                    owner=owner,
                    prompt=canonical,
                    parts=prompt.parts,
                    negative=prompt.negative,
                    width=width,
                    height=height,
                    steps=steps,
                    guidance=guidance,
                    seeds=derive_seeds(seed),
                    lane=chosen_lane,
                    model=model,
                    kind=JobKind.GRID,
                    stop=prompt.stop,
                    tile=prompt.tile,
                    chaos=prompt.chaos / 100,
                    weird=prompt.weird / defaults.WEIRD_MAX,
                    strength=strength_for(prompt.image_weight, bool(prompt.image_urls)),
                    image_urls=prompt.image_urls,
                    delivery=delivery,
                    extra=extra,
                )
            )
    log.debug("built %d job(s) for %s", len(jobs), owner)
    return jobs


def describe_job(
    image_url: str,
    name: str,
    *,
    settings: Settings,
    owner: str,
    delivery: Delivery = Delivery(),  # noqa: B008 - Delivery is a frozen dataclass, safe as a default
    lane: str | None = None,
) -> JobSpec:
    """A /describe job for the image at ``image_url`` (``name``: what its lines call it, e.g. the file name): four
    candidate prompts from the resident model's alignment scorer, on ``lane`` (default: the default lane)."""
    if not image_url.strip():
        raise ValueError("describe needs an image URL, got an empty one")
    chosen = _served_lane(settings, lane)
    side = native_resolution(settings.resolve_model(None))
    return JobSpec(
        job_id=new_job_id(),
        owner=owner,
        prompt=name.strip() or "image",
        parts=(),
        negative=(),
        width=side,
        height=side,
        steps=1,
        guidance=settings.guidance,
        seeds=derive_seeds(0),  # one per prompt offered; nothing is drawn
        lane=chosen,
        model=settings.model,
        kind=JobKind.DESCRIBE,
        image_urls=(image_url.strip(),),
        delivery=delivery,
    )
