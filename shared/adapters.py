"""LoRAs and references on the front-end side (no torch): which family a model is, which configured LoRAs and
image adapters it can take, the ``--lora`` set a prompt resolves to, and how ``--sw``/``--cw``/``--ow`` map to an
adapter scale. Every refusal is a ``PromptError`` whose sentence lives in ``shared.messages``, raised before anything
is enqueued.

How a model takes references (``reference_method``):

* ``ip_adapter``: an IP-Adapter is configured for the model (``IP_ADAPTERS``) and its family's diffusers loader is
  wired here (SD 1.x, SDXL: ``IPAdapterMixin``; FLUX.1: ``FluxIPAdapterMixin``). SD3.5's ``SD3IPAdapterMixin`` (a
  SigLIP encoder and another embedding path) is not wired yet, so SD3.5 is refused like a family without one.
* ``captions``: the shipped model (``ShapesPipeline`` with an ``alignment/`` scorer and caption bank): a reference
  image's vector in the contrastive scorer's space picks the nearest captions of its caption bank, which join the
  prompt as ``::`` parts weighted by the reference's scale (``worker.adapters.captions``).
* ``""``: none; a prompt with references is refused, naming the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from shared import defaults, messages
from shared.adapter_config import IpAdapterEntry, LoraEntry
from shared.errors import PromptError
from shared.families import UnknownFamily
from shared.model_info import model_family
from shared.settings import Settings

log = logging.getLogger(__name__)

IP_ADAPTER_FAMILIES: frozenset[str] = frozenset({"sd", "sdxl", "flux"})
"""Families whose diffusers IP-Adapter loader (``loaders/ip_adapter.py``) ``worker.adapters.ip_adapter`` drives."""

CAPTION_REFERENCE_FAMILIES: frozenset[str] = frozenset({"shapes"})
"""Families that take references through their scorer's caption bank when no IP-Adapter is configured."""


def adapter_family(model_ref: str) -> str:
    """The adapter family (``FamilyInfo.adapter_family``) of a local diffusers folder, or "" when it cannot be told
    (a hub id, a folder without ``model_index.json``, a pipeline no family handles)."""
    try:
        info = model_family(model_ref)
    except UnknownFamily:
        return ""
    return info.adapter_family if info is not None else ""


def has_caption_bank(model_ref: str) -> bool:
    """Whether a local model folder has the scorer and caption bank that caption references need."""
    for folder in (Path(model_ref), defaults.PROJECT_ROOT / model_ref):
        if (folder / "alignment" / "config.json").is_file() and (folder / "alignment" / "captions.json").is_file():
            return True
    return False


def ip_adapter_for(settings: Settings, model: str) -> IpAdapterEntry | None:
    """The IP-Adapter configured for ``model`` (a job's model: "" is the default; keys may be aliases or refs)."""
    target = settings.resolve_model(model or None)
    for key, entry in settings.ip_adapters.items():
        if settings.resolve_model(key) == target:
            return entry
    return None


def reference_method(settings: Settings, model: str) -> str:
    """How ``model`` takes references: ``ip_adapter``, ``captions`` or "" (see the module doc)."""
    ref = settings.resolve_model(model or None)
    family = adapter_family(ref)
    if ip_adapter_for(settings, model) is not None and family in IP_ADAPTER_FAMILIES:
        return "ip_adapter"
    if family in CAPTION_REFERENCE_FAMILIES and has_caption_bank(ref):
        return "captions"
    return ""


def check_references(settings: Settings, model: str, what: str) -> None:
    """A ``PromptError`` when ``model`` cannot take references (``what``: the parameter or command asking)."""
    if not reference_method(settings, model):
        shown = model or settings.model
        family = adapter_family(settings.resolve_model(model or None))
        raise PromptError(messages.no_reference_adapter(what, shown, family in IP_ADAPTER_FAMILIES))


def lora_path(entry: LoraEntry) -> Path:
    """The LoRA's file (a relative path is relative to the checkout)."""
    path = Path(entry.file)
    return path if path.is_absolute() else defaults.PROJECT_ROOT / path


def resolve_loras(
    asked: Sequence[tuple[str, float | None]], settings: Settings, model: str
) -> tuple[tuple[str, float], ...]:
    """The LoRA set of a job: each ``--lora`` name checked against the configuration (known, fits the model's family),
    its weight (the configured default when none is given) within ``LORA_WEIGHT_MIN..LORA_WEIGHT_MAX``, and at most
    ``lora_max_per_job`` of them. Raises ``PromptError`` naming the LoRA and what is allowed."""
    if len(asked) > settings.lora_max_per_job:
        raise PromptError(messages.too_many_loras(len(asked), settings.lora_max_per_job))
    family = adapter_family(settings.resolve_model(model or None)) if asked else ""
    resolved: list[tuple[str, float]] = []
    for name, weight in asked:
        entry = settings.loras.get(name)
        if entry is None:
            raise PromptError(messages.unknown_lora(name, sorted(settings.loras)))
        if family not in entry.families:
            raise PromptError(messages.lora_wrong_family(name, entry.families, model or settings.model, family))
        value = entry.weight if weight is None else weight
        if not defaults.LORA_WEIGHT_MIN <= value <= defaults.LORA_WEIGHT_MAX:
            raise PromptError(messages.lora_weight_out_of_range(name, value))
        resolved.append((name, float(value)))
    return tuple(resolved)


def lora_triggers(loras: Sequence[tuple[str, float]], settings: Settings) -> list[str]:
    """The trigger words of the LoRAs with a weight other than 0, in order, without repeats."""
    words: list[str] = []
    for name, weight in loras:
        entry = settings.loras.get(name)
        if entry is None or weight == 0:
            continue
        words.extend(word for word in entry.triggers if word not in words)
    return words


def loras_for_model(settings: Settings, model: str) -> list[tuple[str, LoraEntry]]:
    """The configured LoRAs that fit ``model``'s family (all of them when the family cannot be told), by name."""
    family = adapter_family(settings.resolve_model(model or None))
    return [(name, entry) for name, entry in sorted(settings.loras.items()) if not family or family in entry.families]


def reference_scale(kind: str, weight: int) -> float:
    """The adapter scale of a reference kind at a member weight (``--sw`` 0-1000, ``--cw`` 0-100, ``--ow`` 1-1000;
    /blend and ``--p`` use 100): ``base * sqrt(weight / 100)`` for ``--sw``/``--ow`` (their wide range compressed),
    ``base * weight / 100`` for ``--cw``; ``base`` is ``REFERENCE_BASE_SCALES[kind]``; at most
    ``REFERENCE_SCALE_MAX``; rounded to 4 decimals. Weight 0 gives 0: no influence at all."""
    if kind not in defaults.REFERENCE_BASE_SCALES:
        raise ValueError(f"reference kind must be one of {', '.join(defaults.REFERENCE_BASE_SCALES)}, got {kind!r}")
    if weight < 0:
        raise ValueError(f"reference weight must be >= 0, got {weight}")
    base = defaults.REFERENCE_BASE_SCALES[kind]
    factor = weight / 100 if kind == "character" else math.sqrt(weight / 100)
    return round(min(defaults.REFERENCE_SCALE_MAX, base * factor), 4)
