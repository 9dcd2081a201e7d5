"""The job contract: what the bot enqueues and the worker runs, as plain JSON-ready dataclasses."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared import defaults

log = logging.getLogger(__name__)


class JobKind(StrEnum):
    """What a job makes."""

    GRID = "grid"
    """Four images from a prompt, composed into a 2x2 grid."""
    UPSCALE = "upscale"
    """One image of an earlier job, upscaled."""
    VARIATION = "variation"
    """Four image-to-image variations of one image of an earlier job."""
    OUTPAINT = "outpaint"
    """Four images that keep one image of an earlier job and paint beyond its edges (Zoom Out, pans, Make Square)."""
    DESCRIBE = "describe"
    """Four candidate prompts for a member's image (``image_urls[0]``) from the model's alignment scorer (/describe)."""
    INPAINT = "inpaint"
    """Four images that keep one image of an earlier job outside ``mask`` and repaint inside it (Vary (Region))."""
    SHORTEN = "shorten"
    """Which words of a prompt carry weight for the model, and shorter prompts (/shorten); ``prompt`` is the text."""


class JobStatus(StrEnum):
    """Where a job is in its life (mirrors RQ's statuses that a member can see)."""

    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class SourceImage:
    """One image of an earlier job: the input of upscales and variations."""

    job_id: str
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < defaults.IMAGES_PER_GRID:
            raise ValueError(f"source image index must be 0-{defaults.IMAGES_PER_GRID - 1}, got {self.index}")


REFERENCE_KINDS: tuple[str, ...] = ("style", "character", "omni", "blend", "profile")
"""What a reference image steers: ``--sref`` (style), ``--cref`` (character), ``--oref`` (omni), /blend's images,
and ``--p`` (a member's profile: the mean embedding of the images they liked)."""


@dataclass(frozen=True)
class Reference:
    """One reference of a job: images (or a style code, or a profile) that condition it through the image-embedding
    path (IP-Adapter, or the shipped model's caption retrieval; docs/parameters.md)."""

    kind: str
    """One of ``REFERENCE_KINDS``."""
    urls: tuple[str, ...] = ()
    """Image URLs (fetched safely on the worker)."""
    scale: float = 1.0
    """The adapter scale resolved from ``--sw``/``--cw``/``--ow`` (0 = no influence)."""
    code: str = ""
    """A numeric style code (``--sref 123``), or for ``profile`` the member id whose liked images make it."""
    blocks: str = "all"
    """Which attention blocks it steers: ``all``, or ``style`` (the style blocks the adapter config names)."""

    def __post_init__(self) -> None:
        if self.kind not in REFERENCE_KINDS:
            raise ValueError(f"reference kind must be one of {', '.join(REFERENCE_KINDS)}, got {self.kind!r}")
        if self.blocks not in ("all", "style"):
            raise ValueError(f"reference blocks must be 'all' or 'style', got {self.blocks!r}")
        if not self.urls and not self.code:
            raise ValueError(f"a {self.kind} reference needs image URLs or a code, got neither")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        """The inverse of ``dataclasses.asdict``."""
        return cls(
            kind=str(data["kind"]),
            urls=tuple(str(url) for url in data.get("urls", ())),
            scale=float(data.get("scale", 1.0)),
            code=str(data.get("code", "")),
            blocks=str(data.get("blocks", "all")),
        )


@dataclass(frozen=True)
class Delivery:
    """Where the result goes: the local publisher (``kind='local'``) or a Discord channel."""

    kind: str = "local"
    channel_id: str = ""
    guild_id: str = ""
    waiting_message_id: str = ""
    """The "(Waiting to start)" message that progress edits go to and that is removed when the result is posted."""
    locale: str = ""
    """The member's Discord locale (``zh-CN``, ...): the worker's lines about this job are in that language."""
    nsfw: bool = False
    """Whether the channel is age-restricted (Discord's ``nsfw`` flag as the interaction carried it): with the
    server's rules (``shared.rules``) it decides whether an adult-rated result may be delivered there."""
    roles: tuple[str, ...] = ()
    """The requester's role ids in the guild: the worker checks the server's rules for this job again."""
    review: bool = False
    """The result goes to the moderators' review queue whatever image moderation says (a new member's job)."""


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job; resolved from the prompt, so the worker makes no choices of its own."""

    job_id: str
    owner: str
    """Who asked: a Discord user id, or ``local`` for the CLI."""
    prompt: str
    """The canonical prompt text, parameters included (``Prompt.to_text()``), as shown to members."""
    parts: tuple[tuple[str, float], ...]
    """Positive prompt parts with their ``::`` weights (one part of weight 1.0 without ``::``)."""
    negative: tuple[str, ...]
    """Negative prompt items from ``--no`` (encoded as the classifier-free guidance's unconditional side)."""
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]
    """One seed per image, so any image can be made again alone."""
    lane: str = defaults.DEFAULT_LANE
    model: str = ""
    """Model folder or id; empty means the worker's resident model."""
    kind: JobKind = JobKind.GRID
    stop: int = 100
    """Percentage of the denoising schedule to run before decoding the current estimate (``--stop``)."""
    tile: bool = False
    chaos: float = 0.0
    """0-1: how far apart the four images of a grid are pushed (``--chaos`` / 100)."""
    weird: float = 0.0
    """0-1: how much off-distribution noise is mixed into the starting latents (``--weird`` / 3000)."""
    strength: float = 1.0
    """Image-to-image strength for variations, upscales' creative pass and image prompts (1.0 = pure text-to-image)."""
    source: SourceImage | None = None
    source_box: tuple[float, float, float, float] | None = None
    """Outpaint jobs: where the source image lands in the new canvas, (x0, y0, x1, y1) as fractions of its width and
    height; everything outside it is painted new."""
    image_urls: tuple[str, ...] = ()
    upscale_mode: str = ""
    """``subtle`` or ``creative`` for upscale jobs."""
    mask: str = ""
    """Inpaint jobs: the region to repaint as a base64 PNG at ``width`` x ``height``, white inside
    (``shared.jobs.mask``); empty for every other kind."""
    delivery: Delivery = field(default_factory=Delivery)
    created_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)
    """Resolved prompt parameters for the reproducibility record (stylize, quality, version, ...)."""
    loras: tuple[tuple[str, float], ...] = ()
    """The LoRA set: (configured name, weight) from ``--lora`` (and the draft LoRA); jobs batch only with the same
    set, and follow-ups keep it."""
    references: tuple[Reference, ...] = ()
    """Reference images, style codes and profiles (``--sref``, ``--cref``, ``--oref``, /blend, ``--p``)."""
    draft: bool = False
    """A ``--draft`` job: fewer steps; its result has an Enhance button (the same seeds at full quality)."""

    @classmethod
    def for_prompt(
        cls,
        prompt: str,
        *,
        seed: int,
        width: int,
        height: int,
        steps: int,
        guidance: float = defaults.DEFAULT_GUIDANCE,
        images: int = defaults.IMAGES_PER_GRID,
        job_id: str = "",
        owner: str = "local",
        **fields: Any,
    ) -> JobSpec:
        """A job for one plain prompt text (one part of weight 1, seeds ``derive_seeds(seed, images)``), for benches,
        tests and tools that need a spec without parsing Midjourney parameters; other fields go in ``fields``."""
        return cls(
            job_id=job_id or new_job_id(),
            owner=owner,
            prompt=prompt,
            parts=((prompt, 1.0),),
            negative=tuple(fields.pop("negative", ())),
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            seeds=derive_seeds(seed, images),
            **fields,
        )

    @property
    def negative_prompt(self) -> str:
        """The ``--no`` items as one comma-separated negative prompt."""
        return ", ".join(self.negative)

    @property
    def positive_prompt(self) -> str:
        """The positive parts' texts joined (weights dropped), for display and for models without weighting."""
        return " ".join(text for text, _ in self.parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, enums their values)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """The inverse of ``to_dict``; unknown keys are an error naming them, so a bad payload never half-runs."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"job payload has unknown keys {unknown}")
        values = dict(data)
        values["parts"] = tuple((str(t), float(w)) for t, w in values["parts"])
        values["negative"] = tuple(values.get("negative", ()))
        values["seeds"] = tuple(int(s) for s in values["seeds"])
        values["image_urls"] = tuple(values.get("image_urls", ()))
        values["kind"] = JobKind(values.get("kind", JobKind.GRID))
        if values.get("source") is not None:
            values["source"] = SourceImage(**values["source"])
        if values.get("source_box") is not None:
            x0, y0, x1, y1 = (float(v) for v in values["source_box"])
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ValueError(f"source_box must be x0 < x1 and y0 < y1 within [0, 1], got {values['source_box']}")
            values["source_box"] = (x0, y0, x1, y1)
        delivery = dict(values.get("delivery", {}))
        if "roles" in delivery:
            delivery["roles"] = tuple(str(role) for role in delivery["roles"])
        values["delivery"] = Delivery(**delivery)
        values["loras"] = tuple((str(name), float(weight)) for name, weight in values.get("loras", ()))
        values["references"] = tuple(Reference.from_dict(item) for item in values.get("references", ()))
        values["draft"] = bool(values.get("draft", False))
        return cls(**values)

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with ``changes`` (the spec is frozen)."""
        return dataclasses.replace(self, **changes)


def new_job_id() -> str:
    """A short, URL- and custom_id-safe unique id (Discord custom_ids are limited to 100 characters)."""
    return uuid.uuid4().hex[:16]


def derive_seeds(seed: int, count: int = defaults.IMAGES_PER_GRID) -> tuple[int, ...]:
    """``seed, seed+1, ...`` wrapped into Midjourney's seed range, so image n can be re-made alone from ``seed + n``."""
    if not 0 <= seed <= defaults.MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to {defaults.MAX_SEED}, got {seed}")
    return tuple((seed + i) % (defaults.MAX_SEED + 1) for i in range(count))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value
