"""A finished job's Discord message: its line (``shared.messages``) and its buttons (``shared.discord_wire.buttons``),
the same from a worker's REST post and from the bot's /show."""

from __future__ import annotations

import logging
from typing import Any

from shared import messages
from shared.discord_wire import buttons
from shared.families import BY_NAME, capabilities_of
from shared.jobs.spec import JobKind, JobSpec

log = logging.getLogger(__name__)


def result_detail(spec: JobSpec) -> str:
    """What the result line says a follow-up job was: the upscale mode, the variation strength, the outpaint."""
    if spec.kind is JobKind.UPSCALE:
        return spec.upscale_mode
    if spec.kind is JobKind.VARIATION:
        return messages.variation_detail(spec.strength)
    if spec.kind is JobKind.OUTPAINT:
        return str(spec.extra.get("outpaint", ""))
    return ""


def result_footnotes(notes: dict[str, Any], engine: dict[str, Any] | None) -> tuple[str, ...]:
    """What the member is told under a result about how the model took the prompt: options it ignored (``--no`` on
    a model without a negative pass, ``--tile`` on a transformer) and a prompt cut at the encoder's limit."""
    footnotes = []
    ignored = [str(flag) for flag in notes.get("ignored", [])]
    if ignored:
        family = BY_NAME.get(str((engine or {}).get("family", "")))
        footnotes.append(messages.ignored_footnote(ignored, family.title if family is not None else "this model"))
    if notes.get("truncated"):
        kept = [
            int(report.get("window", 0)) * int(report.get("chunks", 1))
            for report in notes.get("tokens", [])
            if isinstance(report, dict) and report.get("truncated")
        ]
        footnotes.append(messages.truncated_footnote(min(kept) if kept and min(kept) > 0 else None))
    return tuple(footnotes)


def result_message(
    spec: JobSpec, notes: dict[str, Any], size: tuple[int, int] | None, engine: dict[str, Any] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Text and buttons of a finished job's message (``notes``: its record's notes; ``size``: its picture's;
    ``engine``: its record's engine info, whose family says which buttons the model can serve)."""
    if spec.kind is JobKind.DESCRIBE:
        descriptions = [(str(text), float(score)) for text, score in notes.get("descriptions", [])]
        return messages.describe_text(spec.owner, descriptions), buttons.describe_components(
            spec.job_id, len(descriptions)
        )
    if spec.kind is JobKind.SHORTEN:
        marked = [(str(word), str(kind)) for word, kind in notes.get("marked", [])]
        options = [str(text) for text in notes.get("shortened", [])]
        return messages.shorten_text(spec.owner, marked, options), buttons.shorten_components(spec.job_id, len(options))
    footnotes = result_footnotes(notes, engine)
    remixed = bool(spec.extra.get("remixed", False))
    line = messages.result_line(
        spec.prompt, spec.owner, spec.lane, spec.kind, result_detail(spec), footnotes=footnotes, remixed=remixed
    )
    components = buttons.components_for(spec.kind, spec.job_id, size, capabilities_of(engine))
    if spec.draft and spec.kind is JobKind.GRID:
        components = buttons.with_enhance(components, spec.job_id)
    return line, components
