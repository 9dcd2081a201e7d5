"""Prompt -> JobSpec: the documented mapping of Midjourney parameters to generation settings (docs/parameters.md).

The worker makes no choices of its own: everything it needs is resolved here, and the resolved parameters are kept in
``JobSpec.extra`` for the reproducibility record.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from shared import defaults, messages
from shared.adapters import adapter_family, check_references, lora_triggers, reference_scale, resolve_loras
from shared.i18n import tr
from shared.jobs.spec import Delivery, JobKind, JobSpec, Reference, derive_seeds, new_job_id
from shared.model_info import model_family, native_resolution, size_multiple
from shared.prompt.parser import RANDOM_STYLE, Prompt, PromptError
from shared.settings import Settings

ProfileOwners = Callable[[tuple[str, ...]], tuple[str, ...]]
"""``--p``'s codes (``()``: the requester's own profile) -> the member ids whose profiles they are; raises
``PromptError`` for an unknown code or an empty profile (``shared.intake`` reads them from Redis)."""

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
        raise PromptError(
            tr(
                "{flag}: unknown model version {version!r}; known versions: {known}",
                flag=flag,
                version=prompt.version,
                known=known,
            )
        )
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
            raise PromptError(
                tr("--{speed} is not available here; lanes served: {served}", speed=prompt.speed, served=served)
            )
        return prompt.speed
    return _served_lane(settings, lane)


def _served_lane(settings: Settings, lane: str | None) -> str:
    """``lane`` (a member's default) or the system default, if the workers serve it; else a ``PromptError``."""
    chosen = lane or settings.default_lane
    if chosen not in settings.lanes:
        served = ", ".join(settings.lanes)
        raise PromptError(
            tr(
                "lane {chosen!r} (your default) is not served here; lanes served: {served}",
                chosen=chosen,
                served=served,
            )
        )
    return chosen


def exp_adjusted(steps: int, guidance: float, experimental: int) -> tuple[int, float]:
    """``--exp``: steps plus ``EXP_STEP_GAIN * exp/100`` of them (rounded half up), guidance times
    ``1 + EXP_GUIDANCE_GAIN * exp/100`` (rounded to 4 decimals); ``--exp 0`` changes nothing."""
    if not experimental:
        return steps, guidance
    share = experimental / defaults.EXP_MAX
    return (
        steps + math.floor(steps * defaults.EXP_STEP_GAIN * share + 0.5),
        round(guidance * (1 + defaults.EXP_GUIDANCE_GAIN * share), 4),
    )


def draft_steps(steps: int) -> int:
    """``--draft``: ``DRAFT_STEPS_FACTOR`` of the steps, rounded half up, at least 1."""
    return max(1, math.floor(steps * defaults.DRAFT_STEPS_FACTOR + 0.5))


def references_for(
    prompt: Prompt, settings: Settings, model: str, profile_owners: ProfileOwners | None
) -> tuple[Reference, ...]:
    """The references of a prompt (``--sref``, ``--cref``, ``--oref``, ``--p``), each refused with a
    ``PromptError`` when the model has no image adapter; scales from ``shared.adapters.reference_scale``.
    ``--sv`` 1-3 steers every attention block, 4-6 (and none) the style blocks; ``--sref random`` must have been
    replaced by a code already (``build_jobs`` draws it)."""
    refs: list[Reference] = []
    if prompt.style_refs:
        check_references(settings, model, "--sref")
        blocks = "all" if prompt.style_version is not None and prompt.style_version <= 3 else "style"
        scale = reference_scale("style", prompt.style_weight)
        urls = tuple(ref for ref in prompt.style_refs if not ref.isdigit())
        if urls:
            refs.append(Reference("style", urls, scale, "", blocks))
        refs.extend(Reference("style", (), scale, ref, blocks) for ref in prompt.style_refs if ref.isdigit())
    if prompt.character_refs:
        check_references(settings, model, "--cref")
        refs.append(
            Reference("character", prompt.character_refs, reference_scale("character", prompt.character_weight))
        )
    if prompt.omni_refs:
        check_references(settings, model, "--oref")
        refs.append(Reference("omni", prompt.omni_refs, reference_scale("omni", prompt.omni_weight)))
    if prompt.personalize is not None:
        check_references(settings, model, "--p")
        if profile_owners is None:
            raise PromptError(messages.no_profile(bool(prompt.personalize)))
        scale = reference_scale("profile", 100)
        refs.extend(Reference("profile", (), scale, owner, "style") for owner in profile_owners(prompt.personalize))
    return tuple(refs)


def _conditioning_parts(
    prompt: Prompt, loras: tuple[tuple[str, float], ...], settings: Settings
) -> tuple[tuple[tuple[str, float], ...], dict[str, Any]]:
    """The parts the model is conditioned on: the prompt's, with its LoRAs' trigger words added to the last part and a
    niji ``--style``'s words as one more part (``NIJI_STYLE_PART_WEIGHT``); and what was added, for the record."""
    parts = list(prompt.parts)
    added: dict[str, Any] = {}
    triggers = [word for word in lora_triggers(loras, settings) if word.lower() not in prompt.text.lower()]
    if triggers:
        text, weight = parts[-1]
        parts[-1] = (f"{text}, {', '.join(triggers)}", weight)
        added["lora_triggers"] = triggers
    if prompt.style in defaults.NIJI_STYLES:
        if prompt.version is None or not prompt.version.startswith("niji"):
            raise PromptError(messages.niji_style_needs_niji(prompt.style))
        words = defaults.NIJI_STYLES[prompt.style]
        if words:
            parts.append((words, defaults.NIJI_STYLE_PART_WEIGHT))
            added["niji_style_words"] = words
    return tuple(parts), added


def build_jobs(
    prompts: Sequence[Prompt],
    *,
    settings: Settings,
    owner: str,
    delivery: Delivery = Delivery(),  # noqa: B008 - Delivery is a frozen dataclass, safe as a default
    lane: str | None = None,
    rng: random.Random | None = None,
    profile_owners: ProfileOwners | None = None,
) -> list[JobSpec]:
    """One grid ``JobSpec`` per prompt and per ``--repeat``, each with a fresh job id (mapping in docs/parameters.md).

    Seeds: the prompt's ``--seed`` or, when absent, one drawn from ``rng`` per prompt; repeat k uses
    ``seed + IMAGES_PER_GRID * k`` (wrapped into 0..MAX_SEED), so no two images of a command share a seed.
    Raises ``PromptError`` for an unknown ``--v``/``--niji``, a lane not served, or more than ``MAX_JOBS_PER_PROMPT``.
    """
    total = sum(p.repeat for p in prompts)
    if total > defaults.MAX_JOBS_PER_PROMPT:
        raise PromptError(
            tr(
                "this prompt makes {total} jobs ({prompts} permutation(s) with --repeat); at most {top} are allowed",
                total=total,
                prompts=len(prompts),
                top=defaults.MAX_JOBS_PER_PROMPT,
            )
        )
    rng = rng if rng is not None else random.Random()
    jobs: list[JobSpec] = []
    for given in prompts:
        prompt = given
        if prompt.style_refs == (RANDOM_STYLE,):
            # --sref random: a code drawn now and written into the prompt, so re-rolls and /show keep the same style
            prompt = dataclasses.replace(prompt, style_refs=(str(rng.randint(1, defaults.STYLE_CODE_MAX)),))
        model = _model_for(prompt, settings)
        ref = settings.resolve_model(model)
        width, height = image_size(prompt.aspect_ratio, native_resolution(ref), size_multiple(ref))
        chosen_lane = _lane_for(prompt, settings, lane)
        guidance = guidance_for(prompt.stylize, prompt.style, guidance_base(ref, settings))
        steps, guidance = exp_adjusted(steps_for(prompt.quality, settings.steps), guidance, prompt.experimental)
        loras = resolve_loras(prompt.loras, settings, model)
        if prompt.draft:
            steps = draft_steps(steps)
            draft_lora = settings.loras.get(settings.draft_lora) if settings.draft_lora else None
            if draft_lora is not None and adapter_family(ref) in draft_lora.families:
                loras = (*loras, (settings.draft_lora, draft_lora.weight))
                steps = settings.draft_lora_steps or steps
                guidance = settings.draft_lora_guidance or guidance
        references = references_for(prompt, settings, model, profile_owners)
        parts, added = _conditioning_parts(prompt, loras, settings)
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
                **_reference_extra(prompt),
                **added,
            }
            jobs.append(
                JobSpec(
                    job_id=new_job_id(),
                    owner=owner,
                    prompt=canonical,
                    parts=parts,
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
                    loras=loras,
                    references=references,
                    draft=prompt.draft,
                )
            )
    log.debug("built %d job(s) for %s", len(jobs), owner)
    return jobs


def _reference_extra(prompt: Prompt) -> dict[str, Any]:
    """The record's view of the parameters of issue 17 that a job spec keeps only resolved (non-default ones)."""
    extra: dict[str, Any] = {}
    if prompt.draft:
        extra["draft"] = True
    if prompt.experimental:
        extra["exp"] = prompt.experimental
    if prompt.style_refs:
        extra["sw"] = prompt.style_weight
        extra["sv"] = prompt.style_version
    if prompt.character_refs:
        extra["cw"] = prompt.character_weight
    if prompt.omni_refs:
        extra["ow"] = prompt.omni_weight
    if prompt.personalize is not None:
        extra["p"] = list(prompt.personalize)
    if prompt.notes:
        extra["parser_notes"] = list(prompt.notes)
    return extra


def blend_job(
    image_urls: Sequence[str],
    names: Sequence[str],
    dimensions: str,
    *,
    settings: Settings,
    owner: str,
    delivery: Delivery = Delivery(),  # noqa: B008 - Delivery is a frozen dataclass, safe as a default
    lane: str | None = None,
    rng: random.Random | None = None,
) -> JobSpec:
    """A /blend grid: 2-5 images blended through the image-embedding path (one ``blend`` reference: a multi-image
    IP-Adapter, or the shipped model's caption retrieval), no text, at ``dimensions`` (``BLEND_DIMENSIONS``)."""
    if not 2 <= len(image_urls) <= defaults.MAX_REFERENCE_IMAGES:
        raise PromptError(messages.blend_needs_images(len(image_urls)))
    if dimensions not in defaults.BLEND_DIMENSIONS:
        allowed = ", ".join(defaults.BLEND_DIMENSIONS)
        raise PromptError(f"/blend dimensions must be one of {allowed}, got {dimensions!r}")
    check_references(settings, "", "/blend")
    ref = settings.resolve_model(None)
    width, height = image_size(defaults.BLEND_DIMENSIONS[dimensions], native_resolution(ref), size_multiple(ref))
    seed = (rng if rng is not None else random.Random()).randint(0, defaults.MAX_SEED)
    return JobSpec(
        job_id=new_job_id(),
        owner=owner,
        prompt=messages.blend_prompt(list(names), dimensions),
        parts=(("", 1.0),),
        negative=(),
        width=width,
        height=height,
        steps=settings.steps,
        guidance=settings.guidance,
        seeds=derive_seeds(seed),
        lane=_served_lane(settings, lane),
        model=settings.model,
        kind=JobKind.GRID,
        delivery=delivery,
        extra={"blend": list(names), "dimensions": dimensions, "seed": seed, "stylize": 100, "quality": 1.0},
        references=(Reference("blend", tuple(image_urls), reference_scale("blend", 100)),),
    )


def shorten_job(
    prompt: Prompt,
    *,
    settings: Settings,
    owner: str,
    delivery: Delivery = Delivery(),  # noqa: B008 - Delivery is a frozen dataclass, safe as a default
    lane: str | None = None,
) -> JobSpec:
    """A /shorten job: the worker weighs the words of ``prompt``'s text with its model's encoder (``--v``/``--niji``
    pick the model) and offers shorter prompts that keep its parameters. A ``::`` multi-prompt is refused."""
    if prompt.weighted:
        raise PromptError(messages.shorten_weighted())
    model = _model_for(prompt, settings)
    side = native_resolution(settings.resolve_model(model))
    return JobSpec(
        job_id=new_job_id(),
        owner=owner,
        prompt=prompt.to_text(),
        parts=prompt.parts,
        negative=(),
        width=side,
        height=side,
        steps=1,
        guidance=settings.guidance,
        seeds=derive_seeds(0, 1),
        lane=_lane_for(prompt, settings, lane),
        model=model,
        kind=JobKind.SHORTEN,
        delivery=delivery,
    )


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
