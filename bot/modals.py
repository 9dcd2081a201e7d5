"""The Remix and Custom Zoom boxes (discord.py ``Modal``): built with the job's prompt prefilled, each with an id of
its own that carries the action, the source job and the image (``shared.discord_wire.buttons.modal_custom_id``).

discord.py keeps an open modal in memory by its ``custom_id`` and forgets it on restart, so the submit is not handled
here: ``bot.remix.on_modal_submit`` handles every submit from its ``custom_id`` and values alone (from the client's
``on_interaction``), like the persistent buttons; ``on_submit`` of the box does nothing, and the box is dropped from
memory after ``DISCORD_MODAL_TIMEOUT_S``. Discord refuses a prefilled value longer than the input's ``max_length``
(at most 4,000): a longer prompt is cut, and the label says so.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord

from shared import defaults, messages
from shared.discord_wire import buttons as wire_buttons
from shared.discord_wire.buttons import ButtonAction, ButtonRef

log = logging.getLogger(__name__)

PROMPT_FIELD = "prompt"
"""``custom_id`` of the prompt input inside a box."""


class PromptModal(discord.ui.Modal):
    """A box with the prompt to edit (Remix) or the prompt and ``--zoom`` (Custom Zoom)."""

    def __init__(self, ref: ButtonRef, text: str) -> None:
        title = (
            messages.MODAL_TITLE_CUSTOM_ZOOM if ref.action is ButtonAction.CUSTOM_ZOOM else messages.MODAL_TITLE_REMIX
        )
        custom_id = wire_buttons.modal_custom_id(ref, secrets.token_hex(4))
        super().__init__(
            title=title[: defaults.DISCORD_MODAL_TITLE_MAX],
            custom_id=custom_id,
            timeout=defaults.DISCORD_MODAL_TIMEOUT_S,
        )
        limit = defaults.DISCORD_TEXT_INPUT_MAX
        cut = len(text) > limit
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label=messages.MODAL_LABEL_PROMPT_CUT if cut else messages.MODAL_LABEL_PROMPT,
            custom_id=PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            default=text[:limit],
            max_length=limit,
            required=True,
        )
        if cut:
            log.info("prefill of %s cut from %d to %d characters", custom_id, len(text), limit)
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        """Nothing: ``bot.remix.on_modal_submit`` answers every submit from its ``custom_id`` (restart-proof)."""


def submitted_values(data: Any) -> dict[str, str]:
    """The text inputs of a modal submit's raw ``data`` by ``custom_id`` (action rows of inputs, or labels holding
    one input each, as Discord sends either)."""
    values: dict[str, str] = {}
    rows = data.get("components", []) if isinstance(data, dict) else []
    for row in rows:
        children = row.get("components") or ([row["component"]] if isinstance(row.get("component"), dict) else [])
        for child in children:
            if isinstance(child, dict) and "custom_id" in child and isinstance(child.get("value"), str):
                values[str(child["custom_id"])] = child["value"]
    return values
