"""The model families the workers drive, as data the front ends can read without torch: what each family's pipeline
class is, how its guidance and negative prompt work, and which result buttons it can serve.

The worker's engine (``worker.engine.families``) implements one adapter per entry of ``FAMILIES`` and reads its
capabilities from here, so the buttons a front end shows and the jobs a worker runs cannot disagree. A family is
picked from a pipeline's class name plus, where one class has variants, the config that tells them apart
(``family_name``): FLUX.1 dev has the distilled guidance embedding (``transformer.guidance_embeds``), schnell has not;
FLUX.2 klein 4B/9B are step-distilled (``model_index.json is_distilled``), klein base is not.

``--stylize`` maps to the family's guidance (``guidance``): ``cfg`` is classifier-free guidance, ``distilled`` the
guidance value fed to a guidance-distilled transformer's embedding, ``true_cfg`` the scale of a second, negative pass,
``none`` a model that takes no guidance (``--stylize`` is ignored). The value at ``--stylize 100`` is
``default_guidance`` (None: the ``GUIDANCE`` setting, the UNet families' own). The negative prompt (``negative``):
``cfg`` runs two passes on every job (the negative is ``--no`` or the empty text), ``true_cfg`` runs the second pass
only when the member gave ``--no`` (at ``true_cfg_scale``), ``none`` cannot take one: the job runs and the result
says ``--no`` was ignored by this model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Guidance = Literal["cfg", "distilled", "true_cfg", "none"]
Negative = Literal["cfg", "true_cfg", "none"]


@dataclass(frozen=True)
class Capabilities:
    """What a family can do with a finished image and with a prompt's options (the front ends' buttons and notes)."""

    variations: bool = True
    """V1-V4, Vary (Subtle/Strong), Upscale (Creative): an image-to-image run of the same weights."""
    outpaint: bool = True
    """Zoom Out, the pans, Make Square: an image-to-image run that keeps the source's latents."""
    inpaint: bool = True
    """Vary (Region): diffusers has a working inpaint sibling pipeline for this family."""
    negative: bool = True
    """``--no`` is applied (classifier-free or true CFG); False: ignored, and the result says so."""
    tile: bool = True
    """``--tile`` makes seamless tiles (circular padding of convolutions); False: ignored, and the result says so."""
    layout: bool = True
    """Place phrases ("A to the left of B") steer attention."""

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        """Capabilities from a record's ``engine`` info; missing keys keep their default (True)."""
        known = {name: bool(data[name]) for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


ALL_CAPABILITIES = Capabilities()
"""A family that can do everything (the UNet families; also what a record without family info is assumed to be)."""


@dataclass(frozen=True)
class FamilyInfo:
    """One family: its pipeline classes, encoder, guidance, negative prompt, defaults and capabilities."""

    name: str
    """Short name in records and logs (``flux-dev``)."""
    title: str
    """What members read (``FLUX.1 dev``)."""
    pipelines: tuple[str, ...]
    """Text-to-image pipeline class names (``model_index.json _class_name``)."""
    encoder: str
    """The text encoder(s), for the docs and ``/info``."""
    guidance: Guidance
    """What ``--stylize`` drives (see the module doc)."""
    default_guidance: float | None
    """Guidance at ``--stylize 100``; None: the ``GUIDANCE`` setting."""
    negative: Negative
    """How ``--no`` is applied (see the module doc)."""
    default_steps: int
    """The steps the family's released checkpoints are meant for (the pipeline's default; docs only: STEPS rules)."""
    true_cfg_scale: float = 1.0
    """Scale of the negative pass of ``true_cfg`` families (the pipeline's ``true_cfg_scale``)."""
    max_tokens: int | None = None
    """Longest text the encoder takes in one window (None: CLIP's 77-token windows, chunked)."""
    capabilities: Capabilities = field(default_factory=Capabilities)
    weights: str = ""
    """The architecture LoRAs and IP-Adapters are trained for, where variants share one ("" = ``name``)."""

    @property
    def adapter_family(self) -> str:
        """The family a LoRA entry names (``shared.adapter_config``): FLUX.1 dev and schnell share ``flux``."""
        return self.weights or self.name


FAMILIES: tuple[FamilyInfo, ...] = (
    FamilyInfo(
        "sd",
        "Stable Diffusion 1.x/2.x",
        ("StableDiffusionPipeline",),
        "CLIP",
        guidance="cfg",
        default_guidance=None,
        negative="cfg",
        default_steps=50,
    ),
    FamilyInfo(
        "sdxl",
        "SDXL",
        ("StableDiffusionXLPipeline",),
        "CLIP-L + CLIP-G",
        guidance="cfg",
        default_guidance=None,
        negative="cfg",
        default_steps=50,
    ),
    FamilyInfo(
        "shapes",
        "imagine-shapes",
        ("ShapesPipeline",),
        "all-MiniLM-L6-v2 (BERT)",
        guidance="cfg",
        default_guidance=None,
        negative="cfg",
        default_steps=20,
    ),
    FamilyInfo(
        "flux-dev",
        "FLUX.1 dev",
        ("FluxPipeline",),
        "CLIP-L (pooled) + T5-XXL",
        guidance="distilled",
        default_guidance=3.5,
        negative="true_cfg",
        default_steps=28,
        true_cfg_scale=2.0,
        max_tokens=512,
        capabilities=Capabilities(tile=False),
        weights="flux",
    ),
    FamilyInfo(
        "flux-schnell",
        "FLUX.1 schnell",
        ("FluxPipeline",),
        "CLIP-L (pooled) + T5-XXL",
        guidance="none",
        default_guidance=None,
        negative="true_cfg",
        default_steps=4,
        true_cfg_scale=2.0,
        max_tokens=512,
        capabilities=Capabilities(tile=False),
        weights="flux",
    ),
    FamilyInfo(
        "flux2-klein",
        "FLUX.2 klein base",
        ("Flux2KleinPipeline",),
        "Qwen3 (chat template, layers 9/18/27)",
        guidance="cfg",
        default_guidance=4.0,
        negative="cfg",
        default_steps=50,
        max_tokens=512,
        capabilities=Capabilities(tile=False),
        weights="flux2-klein",
    ),
    FamilyInfo(
        "flux2-klein-distilled",
        "FLUX.2 klein",
        ("Flux2KleinPipeline",),
        "Qwen3 (chat template, layers 9/18/27)",
        guidance="none",
        default_guidance=None,
        negative="none",
        default_steps=4,
        max_tokens=512,
        capabilities=Capabilities(negative=False, tile=False),
        weights="flux2-klein",
    ),
    FamilyInfo(
        "sd3",
        "Stable Diffusion 3.5",
        ("StableDiffusion3Pipeline",),
        "CLIP-L + CLIP-G + T5-XXL (joined on the token axis)",
        guidance="cfg",
        default_guidance=7.0,
        negative="cfg",
        default_steps=28,
        max_tokens=256,
        capabilities=Capabilities(tile=False, layout=False),
    ),
    FamilyInfo(
        "qwenimage",
        "Qwen-Image",
        ("QwenImagePipeline",),
        "Qwen2.5-VL (chat template, system prompt dropped)",
        guidance="true_cfg",
        default_guidance=4.0,
        negative="cfg",
        default_steps=50,
        max_tokens=512,
        capabilities=Capabilities(tile=False, layout=False),
    ),
    FamilyInfo(
        "zimage",
        "Z-Image-Turbo",
        ("ZImagePipeline",),
        "Qwen3 (chat template, hidden_states[-2])",
        guidance="none",
        default_guidance=None,
        negative="none",
        default_steps=9,
        max_tokens=512,
        capabilities=Capabilities(negative=False, tile=False, layout=False),
    ),
    FamilyInfo(
        "chroma",
        "Chroma",
        ("ChromaPipeline",),
        "T5-XXL (with its attention mask)",
        guidance="cfg",
        default_guidance=5.0,
        negative="cfg",
        default_steps=35,
        max_tokens=512,
        capabilities=Capabilities(tile=False),
    ),
)
"""Every family the workers drive, in the order ``family_name`` tries them."""

BY_NAME: dict[str, FamilyInfo] = {family.name: family for family in FAMILIES}
"""The families by short name."""


class UnknownFamily(ValueError):
    """A pipeline class (or variant) that no family handles; the message names it and the supported families."""


def supported() -> str:
    """The supported families and their pipeline classes, for error lines."""
    names: dict[str, list[str]] = {}
    for family in FAMILIES:
        for pipeline in family.pipelines:
            names.setdefault(pipeline, []).append(family.name)
    return ", ".join(f"{pipeline} ({'/'.join(found)})" for pipeline, found in names.items())


def family_name(
    class_name: str,
    transformer_config: Mapping[str, Any] | None = None,
    pipeline_config: Mapping[str, Any] | None = None,
) -> str:
    """The family of a text-to-image pipeline class; variants of one class are told apart by their configs
    (``transformer_config``: the denoiser's config.json; ``pipeline_config``: model_index.json). Raises
    ``UnknownFamily`` naming the class and the supported families."""
    transformer = transformer_config or {}
    pipeline = pipeline_config or {}
    if class_name == "FluxPipeline":
        return "flux-dev" if transformer.get("guidance_embeds", True) else "flux-schnell"
    if class_name == "Flux2KleinPipeline":
        return "flux2-klein-distilled" if pipeline.get("is_distilled", False) else "flux2-klein"
    for family in FAMILIES:
        if class_name in family.pipelines:
            return family.name
    raise UnknownFamily(f"pipeline {class_name or '(none)'} is not supported; supported: {supported()}")


def family_info(name: str) -> FamilyInfo:
    """The family called ``name``; an unknown name is an error naming the known ones."""
    if name not in BY_NAME:
        raise UnknownFamily(f"family must be one of {', '.join(BY_NAME)}, got {name!r}")
    return BY_NAME[name]


def capabilities_of(engine: Mapping[str, Any] | None) -> Capabilities:
    """The capabilities recorded in a job record's ``engine`` info (``capabilities``, else its ``family``); a record
    without either (older workers) is assumed to be of a family that can do everything."""
    if not engine:
        return ALL_CAPABILITIES
    recorded = engine.get("capabilities")
    if isinstance(recorded, Mapping):
        return Capabilities.from_dict(recorded)
    name = engine.get("family")
    if isinstance(name, str) and name in BY_NAME:
        return BY_NAME[name].capabilities
    return ALL_CAPABILITIES
