"""Discord's size limits, applied to everything the bot and the workers send: markdown escaping that a cut cannot
break, content fitted to ``DISCORD_CONTENT_MAX`` after escaping, and a check of component JSON.

Discord counts a message's content as sent, so escaping (which can double a prompt dense in ``* _ ~ | >``) happens
before any cut; a cut never leaves a lone escaping backslash at its end (it would escape what follows).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from shared import defaults

log = logging.getLogger(__name__)

ELLIPSIS = "…"
"""Marks text that was cut to fit."""

_MARKDOWN = re.compile(r"([\\*_~`|>])")


def escape(text: str) -> str:
    """``text`` with Discord markdown characters escaped, so a prompt cannot break the formatting around it."""
    return _MARKDOWN.sub(r"\\\1", text)


def cut(text: str, limit: int) -> str:
    """``text`` (already escaped) at most ``limit`` characters, ending in ``ELLIPSIS`` when cut; never ends inside an
    escape (a cut after an odd number of backslashes drops the last one)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if len(text) <= limit:
        return text
    head = text[: limit - len(ELLIPSIS)]
    trailing = len(head) - len(head.rstrip("\\"))
    if trailing % 2:
        head = head[:-1]
    return head + ELLIPSIS


def escape_fitted(text: str, limit: int) -> str:
    """``escape(text)`` cut to ``limit`` characters."""
    return cut(escape(text), limit)


def fit_content(text: str, limit: int = defaults.DISCORD_CONTENT_MAX) -> str:
    """Message content at most ``limit`` characters: longer text is cut at the end (already escaped text stays
    valid). Callers that build a line around a member's text use ``escape_fitted`` with the room left instead, so the
    member's text is what gets cut."""
    if len(text) > limit:
        log.warning("message content of %d characters cut to %d", len(text), limit)
    return cut(text, limit)


def check_components(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` if they fit Discord's component limits; else a ``ValueError`` naming the row, item and limit."""
    if len(rows) > defaults.DISCORD_ROWS_MAX:
        raise ValueError(f"a message takes at most {defaults.DISCORD_ROWS_MAX} action rows, got {len(rows)}")
    for r, row in enumerate(rows):
        items = row.get("components", [])
        if len(items) > defaults.DISCORD_ROW_ITEMS_MAX:
            raise ValueError(f"action row {r} takes at most {defaults.DISCORD_ROW_ITEMS_MAX} buttons, got {len(items)}")
        for item in items:
            custom_id = str(item.get("custom_id", ""))
            if len(custom_id) > defaults.DISCORD_CUSTOM_ID_MAX:
                raise ValueError(f"custom_id {custom_id!r} is longer than {defaults.DISCORD_CUSTOM_ID_MAX} characters")
            label = str(item.get("label", ""))
            if len(label) > defaults.DISCORD_BUTTON_LABEL_MAX:
                raise ValueError(f"button label {label!r} is longer than {defaults.DISCORD_BUTTON_LABEL_MAX}")
    return rows
