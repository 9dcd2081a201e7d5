"""Result buttons on the wire: the ``custom_id`` template that the bot's persistent ``DynamicItem`` parses, and the
component JSON that workers attach to results over REST (no discord import here).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared import defaults, messages
from shared.discord_wire.limits import check_components
from shared.families import ALL_CAPABILITIES, Capabilities
from shared.jobs.spec import JobKind

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
    CUSTOM_ZOOM = "cz"
    """"Custom Zoom" on an upscaled image: a box with the prompt and ``--zoom`` (1-2), then a zoom out."""
    VARY_REGION = "vr"
    """"Vary (Region)" on an upscaled image: a private link to the web companion's mask editor."""
    SHORTEN_PICK = "sp"
    """Button <n> under a /shorten result: imagine shorter prompt n."""
    ENHANCE = "e"
    """"Enhance" under a ``--draft`` grid: the same prompt and seeds at full quality."""


PAN_BUTTONS: dict[ButtonAction, tuple[str, str]] = {
    ButtonAction.PAN_LEFT: ("left", "\N{LEFTWARDS BLACK ARROW}"),
    ButtonAction.PAN_RIGHT: ("right", "\N{BLACK RIGHTWARDS ARROW}"),
    ButtonAction.PAN_UP: ("up", "\N{UPWARDS BLACK ARROW}"),
    ButtonAction.PAN_DOWN: ("down", "\N{DOWNWARDS BLACK ARROW}"),
}
"""Each pan button's direction (``shared.followups.PAN_DIRECTIONS``) and emoji."""

ZOOM_BUTTONS: dict[ButtonAction, tuple[float, str]] = {
    ButtonAction.ZOOM_OUT_2X: (defaults.ZOOM_OUT_FACTORS[0], messages.label_zoom_out(defaults.ZOOM_OUT_FACTORS[0])),
    ButtonAction.ZOOM_OUT_1_5X: (defaults.ZOOM_OUT_FACTORS[1], messages.label_zoom_out(defaults.ZOOM_OUT_FACTORS[1])),
}
"""Each zoom button's factor and label."""

CUSTOM_ID_TEMPLATE = (
    r"imagine:(?P<action>us|uc|vs|vx|vr|z2|z1|cz|sq|sp|pl|pr|pu|pd|u|v|r|d|e)"
    r":(?P<job_id>[0-9A-Za-z_-]{1,64}):(?P<n>[0-9])"
)
"""Regex of every result button's ``custom_id``: ``imagine:<action>:<job_id>:<n>`` (n is 1-based; 0 for re-roll)."""

_CUSTOM_ID = re.compile(CUSTOM_ID_TEMPLATE)


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


def describe_components(job_id: str, count: int) -> list[dict[str, Any]]:
    """One row of buttons 1..count under a /describe result: each imagines its prompt."""
    buttons = [_button(str(n), custom_id(ButtonAction.DESCRIBE_PICK, job_id, n)) for n in range(1, count + 1)]
    return check_components([_row(buttons)])


def shorten_components(job_id: str, count: int) -> list[dict[str, Any]]:
    """One row of buttons 1..count under a /shorten result: each imagines its shorter prompt."""
    if not count:
        return []
    buttons = [_button(str(n), custom_id(ButtonAction.SHORTEN_PICK, job_id, n)) for n in range(1, count + 1)]
    return check_components([_row(buttons)])


def with_enhance(rows: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """A draft grid's buttons: ``rows`` and a row with "Enhance" (checked against Discord's limits)."""
    return check_components(
        [*rows, _row([_button(messages.LABEL_ENHANCE, custom_id(ButtonAction.ENHANCE, job_id, 0))])]
    )


def _button(label: str, cid: str, *, emoji: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {"type": 2, "style": 2, "custom_id": cid}
    if label:
        button["label"] = label
    if emoji:
        button["emoji"] = {"name": emoji}
    return button


def _row(buttons: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": 1, "components": buttons}


def grid_components(job_id: str, capabilities: Capabilities = ALL_CAPABILITIES) -> list[dict[str, Any]]:
    """Two rows: U1-U4 and re-roll, then V1-V4 (the buttons under a grid); no V row on a model without
    variations."""
    count = defaults.IMAGES_PER_GRID
    upscales = [_button(f"U{n}", custom_id(ButtonAction.UPSCALE, job_id, n)) for n in range(1, count + 1)]
    reroll = _button("", custom_id(ButtonAction.REROLL, job_id, 0), emoji=defaults.REROLL_EMOJI)
    rows = [_row([*upscales, reroll])]
    if capabilities.variations:
        rows.append(_row([_button(f"V{n}", custom_id(ButtonAction.VARY, job_id, n)) for n in range(1, count + 1)]))
    return rows


def upscale_components(
    job_id: str, square: bool = False, capabilities: Capabilities = ALL_CAPABILITIES
) -> list[dict[str, Any]]:
    """Up to three rows under an upscaled image: Upscale (Subtle), Upscale (Creative), Vary (Subtle), Vary (Strong),
    Vary (Region); Zoom Out 2x, Zoom Out 1.5x, Custom Zoom and, unless the image is ``square`` already, Make Square;
    the four pan arrows. What the model's family cannot do (``capabilities``: variations, outpaints, inpaints) is left
    out."""
    first = [_button(messages.LABEL_UPSCALE_SUBTLE, custom_id(ButtonAction.UPSCALE_SUBTLE, job_id, 1))]
    if capabilities.variations:
        first += [
            _button(messages.LABEL_UPSCALE_CREATIVE, custom_id(ButtonAction.UPSCALE_CREATIVE, job_id, 1)),
            _button(messages.LABEL_VARY_SUBTLE, custom_id(ButtonAction.VARY_SUBTLE, job_id, 1)),
            _button(messages.LABEL_VARY_STRONG, custom_id(ButtonAction.VARY_STRONG, job_id, 1)),
        ]
    if capabilities.inpaint:
        first.append(_button(messages.LABEL_VARY_REGION, custom_id(ButtonAction.VARY_REGION, job_id, 1)))
    rows = [_row(first)]
    if capabilities.outpaint:
        zooms = [_button(label, custom_id(action, job_id, 1)) for action, (_, label) in ZOOM_BUTTONS.items()]
        zooms.append(_button(messages.LABEL_CUSTOM_ZOOM, custom_id(ButtonAction.CUSTOM_ZOOM, job_id, 1)))
        if not square:
            zooms.append(_button(messages.LABEL_MAKE_SQUARE, custom_id(ButtonAction.MAKE_SQUARE, job_id, 1)))
        pans = [_button("", custom_id(action, job_id, 1), emoji=emoji) for action, (_, emoji) in PAN_BUTTONS.items()]
        rows += [_row(zooms), _row(pans)]
    return rows


def components_for(
    kind: JobKind,
    job_id: str,
    size: tuple[int, int] | None = None,
    capabilities: Capabilities = ALL_CAPABILITIES,
) -> list[dict[str, Any]]:
    """The buttons under a finished job's message (``size``: the picture's, to leave out Make Square when square;
    ``capabilities``: the model family's, ``shared.families``, so no button asks for what the model cannot do),
    checked against Discord's component limits."""
    if kind is JobKind.UPSCALE:
        square = size is not None and size[0] == size[1]
        return check_components(upscale_components(job_id, square=square, capabilities=capabilities))
    return check_components(grid_components(job_id, capabilities))


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
    prefix = {JobKind.UPSCALE: "upscale", JobKind.DESCRIBE: "describe", JobKind.SHORTEN: "shorten"}.get(kind, "grid")
    return f"{prefix}_{job_id}.png"


MODAL_ID_TEMPLATE = (
    r"imagine:m:(?P<action>us|uc|vs|vx|vr|z2|z1|cz|sq|pl|pr|pu|pd|u|v|r|d):(?P<job_id>[0-9A-Za-z_-]{1,64}):"
    r"(?P<n>[0-9]):(?P<nonce>[0-9a-f]{8})"
)
"""Regex of the Remix and Custom Zoom boxes' ``custom_id``: ``imagine:m:<action>:<job_id>:<n>:<nonce>``. It carries
everything a submit needs (so a submit after a bot restart still works), and the random nonce makes each open box's
id its own (discord.py keeps open modals by ``custom_id``: a shared id would let one member's box replace another's)."""

_MODAL_ID = re.compile(MODAL_ID_TEMPLATE)


def modal_custom_id(ref: ButtonRef, nonce: str) -> str:
    """The ``custom_id`` of a box opened by the button ``ref`` (``nonce``: 8 hex digits, new for every box)."""
    value = f"imagine:m:{ref.action.value}:{ref.job_id}:{ref.n}:{nonce}"
    if len(value) > defaults.DISCORD_CUSTOM_ID_MAX or not _MODAL_ID.fullmatch(value):
        raise ValueError(f"cannot build a modal custom_id from {ref!r} and nonce {nonce!r}")
    return value


def parse_modal_custom_id(value: str) -> ButtonRef | None:
    """The button a box's ``custom_id`` was opened from, or None if it is not one of ours."""
    match = _MODAL_ID.fullmatch(value)
    if match is None:
        return None
    return ButtonRef(ButtonAction(match["action"]), match["job_id"], int(match["n"]))
