"""Discord message text and button JSON shared by the bot and the workers (no discord import here).

The bot answers interactions with these lines; a worker posts results over REST with the same lines and builds the
buttons' component JSON from the same ``custom_id`` templates that the bot's persistent ``DynamicItem`` parses.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared import defaults
from shared.jobs.spec import JobKind, JobSpec

log = logging.getLogger(__name__)


class ButtonAction(StrEnum):
    """What a result button asks for; the value is the action's tag inside the ``custom_id``."""

    UPSCALE = "u"
    """U<n> on a grid: image n alone, upscaled with the default mode."""
    VARY = "v"
    """V<n> on a grid: four variations of image n (strong)."""
    REROLL = "r"
    """Re-roll: the same prompt with new seeds."""
    UPSCALE_SUBTLE = "us"
    """"Upscale (Subtle)" on an upscaled image."""
    UPSCALE_CREATIVE = "uc"
    """"Upscale (Creative)" on an upscaled image."""
    VARY_SUBTLE = "vs"
    """"Vary (Subtle)" on an upscaled image."""
    VARY_STRONG = "vx"
    """"Vary (Strong)" on an upscaled image."""
    ZOOM_OUT_2X = "z2"
    """"Zoom Out 2x" on an upscaled image: the image at half size in the middle, the border painted new."""
    ZOOM_OUT_1_5X = "z1"
    """"Zoom Out 1.5x" on an upscaled image."""
    MAKE_SQUARE = "sq"
    """"Make Square" on a non-square upscaled image: the bands beside its short sides painted new."""
    PAN_LEFT = "pl"
    """The left arrow under an upscaled image: the canvas grows to the left, the new strip painted."""
    PAN_RIGHT = "pr"
    """The right arrow."""
    PAN_UP = "pu"
    """The up arrow."""
    PAN_DOWN = "pd"
    """The down arrow."""
    DESCRIBE_PICK = "d"
    """Button <n> under a /describe result: imagine candidate prompt n."""


PAN_BUTTONS: dict[ButtonAction, tuple[str, str]] = {
    ButtonAction.PAN_LEFT: ("left", "\N{LEFTWARDS BLACK ARROW}"),
    ButtonAction.PAN_RIGHT: ("right", "\N{BLACK RIGHTWARDS ARROW}"),
    ButtonAction.PAN_UP: ("up", "\N{UPWARDS BLACK ARROW}"),
    ButtonAction.PAN_DOWN: ("down", "\N{DOWNWARDS BLACK ARROW}"),
}
"""Each pan button's direction (``shared.followups.PAN_DIRECTIONS``) and emoji."""

ZOOM_BUTTONS: dict[ButtonAction, tuple[float, str]] = {
    ButtonAction.ZOOM_OUT_2X: (defaults.ZOOM_OUT_FACTORS[0], "Zoom Out 2x"),
    ButtonAction.ZOOM_OUT_1_5X: (defaults.ZOOM_OUT_FACTORS[1], "Zoom Out 1.5x"),
}
"""Each zoom button's factor and label."""

CUSTOM_ID_TEMPLATE = (
    r"imagine:(?P<action>us|uc|vs|vx|z2|z1|sq|pl|pr|pu|pd|u|v|r|d):(?P<job_id>[0-9A-Za-z_-]{1,64}):(?P<n>[0-9])"
)
"""Regex of every result button's ``custom_id``: ``imagine:<action>:<job_id>:<n>`` (n is 1-based; 0 for re-roll)."""

_CUSTOM_ID = re.compile(CUSTOM_ID_TEMPLATE)

_MARKDOWN = re.compile(r"([\\*_~`|>])")


@dataclass(frozen=True)
class ButtonRef:
    """A parsed button ``custom_id``."""

    action: ButtonAction
    job_id: str
    n: int
    """1-based image number as shown on the button (0 for re-roll)."""

    @property
    def index(self) -> int:
        """0-based image index inside the source job (re-roll: 0)."""
        return max(self.n - 1, 0)


def custom_id(action: ButtonAction, job_id: str, n: int) -> str:
    """The ``custom_id`` of a button; an impossible combination is an error naming it."""
    value = f"imagine:{action.value}:{job_id}:{n}"
    if len(value) > defaults.DISCORD_CUSTOM_ID_MAX or not _CUSTOM_ID.fullmatch(value):
        raise ValueError(f"cannot build a button custom_id from action={action!r}, job_id={job_id!r}, n={n!r}")
    return value


def parse_custom_id(value: str) -> ButtonRef:
    """The action, job id and image number of a button's ``custom_id``; anything else is a ``ValueError`` naming it."""
    match = _CUSTOM_ID.fullmatch(value)
    if match is None:
        raise ValueError(f"custom_id must look like imagine:<action>:<job_id>:<n>, got {value!r}")
    return ButtonRef(ButtonAction(match["action"]), match["job_id"], int(match["n"]))


def escape(text: str) -> str:
    """``text`` with Discord markdown characters escaped, so a prompt cannot break the bold line around it."""
    return _MARKDOWN.sub(r"\\\1", text)


def _prompt(prompt: str) -> str:
    limit = defaults.DISCORD_PROMPT_SHOWN_MAX
    shown = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return f"**{escape(shown)}**"


def mention(owner: str) -> str:
    """A user mention for a Discord user id (a non-numeric owner, e.g. ``local``, is shown as is)."""
    return f"<@{owner}>" if owner.isdigit() else escape(owner)


def eta_text(seconds: float) -> str:
    """A rough ETA for members: "~40 s" (10 s steps under a minute), "~3 min", "~1 h 15 min" (5 min steps)."""
    if seconds < 0:
        raise ValueError(f"eta seconds must be >= 0, got {seconds!r}")
    if seconds < 60:
        return f"~{max(10, round(seconds / 10) * 10)} s" if seconds < 55 else "~1 min"
    if seconds < 600:
        return f"~{round(seconds / 60)} min"
    minutes = round(seconds / 300) * 5
    return f"~{minutes} min" if minutes < 60 else f"~{minutes // 60} h {minutes % 60} min".replace(" 0 min", "")


def waiting_line(prompt: str, owner: str, position: int | None = None, eta_s: float | None = None) -> str:
    """ "**prompt** - <@user> (Waiting to start)", with the queue position and a rough ETA (``eta_text``) when known."""
    line = f"{_prompt(prompt)} - {mention(owner)} (Waiting to start)"
    if position is not None and position > 0:
        line += f" - #{position} in the queue"
    if eta_s is not None:
        line += f" - {eta_text(eta_s)}"
    return line


def progress_line(prompt: str, owner: str, fraction: float, lane: str) -> str:
    """ "**prompt** - <@user> (42%) (fast)": the waiting message while the job runs."""
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return f"{_prompt(prompt)} - {mention(owner)} ({percent}%) ({lane})"


def result_line(prompt: str, owner: str, lane: str, kind: JobKind = JobKind.GRID, detail: str = "") -> str:
    """The final message's line: "**prompt** - <@user> (fast)"; upscales, variations and outpaints say what they are."""
    if kind is JobKind.UPSCALE:
        return f"{_prompt(prompt)} - Upscaled ({detail.title() or 'Subtle'}) by {mention(owner)} ({lane})"
    if kind is JobKind.VARIATION:
        return f"{_prompt(prompt)} - Variations ({detail.title() or 'Strong'}) by {mention(owner)} ({lane})"
    if kind is JobKind.OUTPAINT:
        return f"{_prompt(prompt)} - {detail or 'Outpainted'} by {mention(owner)} ({lane})"
    return f"{_prompt(prompt)} - {mention(owner)} ({lane})"


def describe_text(owner: str, descriptions: list[tuple[str, float]]) -> str:
    """A /describe result: the candidate prompts, numbered as their buttons, best first."""
    lines = [f"Prompts for the image of {mention(owner)} (best match first):"]
    lines += [f"**{n}** {escape(text)}" for n, (text, _) in enumerate(descriptions, start=1)]
    return "\n".join(lines)


def describe_components(job_id: str, count: int) -> list[dict[str, Any]]:
    """One row of buttons 1..count under a /describe result: each imagines its prompt."""
    return [_row([_button(str(n), custom_id(ButtonAction.DESCRIBE_PICK, job_id, n)) for n in range(1, count + 1)])]


def result_detail(spec: JobSpec) -> str:
    """What the result line says a follow-up job was: the upscale mode, the variation strength, the outpaint."""
    if spec.kind is JobKind.UPSCALE:
        return spec.upscale_mode
    if spec.kind is JobKind.VARIATION:
        return variation_detail(spec.strength)
    if spec.kind is JobKind.OUTPAINT:
        return str(spec.extra.get("outpaint", ""))
    return ""


def failed_line(prompt: str, owner: str, reason: str) -> str:
    """The waiting message's last words when a job fails or is canceled (``reason`` is member-facing)."""
    return f"{_prompt(prompt)} - {mention(owner)} ({escape(reason)[: defaults.DISCORD_REASON_SHOWN_MAX]})"


def variation_detail(strength: float) -> str:
    """ "subtle" or "strong": the name of a variation strength, for the result line."""
    return "subtle" if strength <= defaults.VARY_SUBTLE_STRENGTH else "strong"


def _button(label: str, cid: str, *, emoji: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {"type": 2, "style": 2, "custom_id": cid}
    if label:
        button["label"] = label
    if emoji:
        button["emoji"] = {"name": emoji}
    return button


def _row(buttons: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": 1, "components": buttons}


def grid_components(job_id: str) -> list[dict[str, Any]]:
    """Two rows: U1-U4 and re-roll, then V1-V4 (the buttons under a grid)."""
    count = defaults.IMAGES_PER_GRID
    upscales = [_button(f"U{n}", custom_id(ButtonAction.UPSCALE, job_id, n)) for n in range(1, count + 1)]
    reroll = _button("", custom_id(ButtonAction.REROLL, job_id, 0), emoji=defaults.REROLL_EMOJI)
    variations = [_button(f"V{n}", custom_id(ButtonAction.VARY, job_id, n)) for n in range(1, count + 1)]
    return [_row([*upscales, reroll]), _row(variations)]


def upscale_components(job_id: str, square: bool = False) -> list[dict[str, Any]]:
    """Three rows under an upscaled image: Upscale (Subtle), Upscale (Creative), Vary (Subtle), Vary (Strong); Zoom Out
    2x, Zoom Out 1.5x and, unless the image is ``square`` already, Make Square; the four pan arrows."""
    zooms = [_button(label, custom_id(action, job_id, 1)) for action, (_, label) in ZOOM_BUTTONS.items()]
    if not square:
        zooms.append(_button("Make Square", custom_id(ButtonAction.MAKE_SQUARE, job_id, 1)))
    pans = [_button("", custom_id(action, job_id, 1), emoji=emoji) for action, (_, emoji) in PAN_BUTTONS.items()]
    return [
        _row(
            [
                _button("Upscale (Subtle)", custom_id(ButtonAction.UPSCALE_SUBTLE, job_id, 1)),
                _button("Upscale (Creative)", custom_id(ButtonAction.UPSCALE_CREATIVE, job_id, 1)),
                _button("Vary (Subtle)", custom_id(ButtonAction.VARY_SUBTLE, job_id, 1)),
                _button("Vary (Strong)", custom_id(ButtonAction.VARY_STRONG, job_id, 1)),
            ]
        ),
        _row(zooms),
        _row(pans),
    ]


def components_for(kind: JobKind, job_id: str, size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """The buttons under a finished job's message (``size``: the picture's, to leave out Make Square when square)."""
    if kind is JobKind.UPSCALE:
        return upscale_components(job_id, square=size is not None and size[0] == size[1])
    return grid_components(job_id)


def result_message(
    spec: JobSpec, notes: dict[str, Any], size: tuple[int, int] | None
) -> tuple[str, list[dict[str, Any]]]:
    """Text and buttons of a finished job's message (``notes``: its record's notes; ``size``: its picture's)."""
    if spec.kind is JobKind.DESCRIBE:
        descriptions = [(str(text), float(score)) for text, score in notes.get("descriptions", [])]
        return describe_text(spec.owner, descriptions), describe_components(spec.job_id, len(descriptions))
    line = result_line(spec.prompt, spec.owner, spec.lane, spec.kind, result_detail(spec))
    return line, components_for(spec.kind, spec.job_id, size)


def job_ids_in_components(components: list[dict[str, Any]]) -> list[str]:
    """The job ids named by result buttons in a message's component JSON (in order, without repeats)."""
    found: list[str] = []
    for row in components:
        for item in row.get("components", []):
            try:
                ref = parse_custom_id(str(item.get("custom_id", "")))
            except ValueError:
                continue
            if ref.job_id not in found:
                found.append(ref.job_id)
    return found


def attachment_name(job_id: str, kind: JobKind) -> str:
    """File name of a result's attachment (names the job, so a saved file can be traced to its record)."""
    prefix = {JobKind.UPSCALE: "upscale", JobKind.DESCRIBE: "describe"}.get(kind, "grid")
    return f"{prefix}_{job_id}.png"
