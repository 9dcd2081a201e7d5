"""The pluggable image-moderation hook: every finished result's images are scored before they are published.

``image_moderation`` (settings) chooses the hook:

- ``off`` (the default): nothing is checked.
- ``module:function``: any function ``(PIL.Image.Image) -> float`` (0 = fine, 1 = certainly objectionable).
- ``classifier:<folder>``: a local ``transformers`` image-classification model (an NSFW classifier); the score is the
  summed probability of its labels that name unsafe content (``nsfw``, ``porn``, ``hentai``, ``sexy``, ``unsafe``).

A result with any image scoring at least ``image_moderation_threshold`` is flagged (adult-rated). Where the server's
rules let the channel receive adult-rated results (``shared.rules``: the channel's rule, else Discord's age-restricted
flag) it is delivered as it is; elsewhere ``image_moderation_action`` decides: ``spoiler`` posts it behind a spoiler,
``withhold`` does not post it and tells the member why, ``review`` holds it for the moderators (``shared.review``).
The audit log records every flag.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from PIL import Image

from shared import defaults
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)

Hook = Callable[[Image.Image], float]
"""Scores one image: 0 = fine, 1 = certainly objectionable."""

ACTIONS = defaults.ADULT_ACTIONS
UNSAFE_LABELS = ("nsfw", "porn", "hentai", "sexy", "unsafe", "explicit")


@dataclass(frozen=True)
class Verdict:
    """The moderation outcome of one result."""

    flagged: bool
    action: str = ""
    """``spoiler`` or ``withhold`` when flagged."""
    scores: tuple[float, ...] = field(default_factory=tuple)

    def as_record(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "action": self.action, "scores": [round(s, 4) for s in self.scores]}


def check_settings(settings: Settings) -> None:
    """Errors naming the bad setting, at worker start rather than at the first job."""
    if settings.image_moderation_action not in ACTIONS:
        raise ValueError(
            f"IMAGE_MODERATION_ACTION must be one of {', '.join(ACTIONS)}, got {settings.image_moderation_action!r}"
        )
    if not 0.0 <= settings.image_moderation_threshold <= 1.0:
        raise ValueError(f"IMAGE_MODERATION_THRESHOLD must be from 0 to 1, got {settings.image_moderation_threshold}")
    load_hook(settings.image_moderation)


@lru_cache(maxsize=4)
def load_hook(spec: str) -> Hook | None:
    """The hook named by ``spec`` (see the module doc); None for ``off``."""
    spec = spec.strip()
    if spec in ("", "off"):
        return None
    if spec.startswith("classifier:"):
        return _classifier_hook(spec.removeprefix("classifier:"))
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"IMAGE_MODERATION must be 'off', 'module:function' or 'classifier:<folder>', got {spec!r}")
    hook = getattr(importlib.import_module(module_name), name, None)
    if not callable(hook):
        raise ValueError(f"IMAGE_MODERATION names {spec!r}, which is not a function")
    return hook


def _classifier_hook(folder: str) -> Hook:
    from transformers import pipeline

    classify = pipeline("image-classification", model=folder, device=-1)

    def score(image: Image.Image) -> float:
        results = classify(image, top_k=None)
        return float(sum(r["score"] for r in results if any(k in str(r["label"]).lower() for k in UNSAFE_LABELS)))

    return score


def moderate(images: list[Image.Image], settings: Settings) -> Verdict:
    """Score ``images`` with the configured hook; a hook that raises flags the result (fail closed)."""
    hook = load_hook(settings.image_moderation)
    if hook is None:
        return Verdict(flagged=False)
    scores: list[float] = []
    for image in images:
        try:
            scores.append(float(hook(image)))
        except Exception:
            log.exception("image moderation hook %s failed; treating the image as flagged", settings.image_moderation)
            scores.append(1.0)
    flagged = any(s >= settings.image_moderation_threshold for s in scores)
    return Verdict(flagged=flagged, action=settings.image_moderation_action if flagged else "", scores=tuple(scores))


def report(connection: Any, settings: Settings, job_id: str, owner: str, verdict: Verdict) -> None:
    """Record a flagged result in the audit log (no-op when not flagged or without Redis)."""
    if verdict.flagged and connection is not None:
        audit_log.record(
            connection, settings, "image_flagged", actor="worker", job_id=job_id, owner=owner, **verdict.as_record()
        )
