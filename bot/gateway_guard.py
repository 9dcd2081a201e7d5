"""The only place that touches discord.py's private API: a malformed gateway payload is logged and dropped instead of
ending the gateway loop (and the bot).

discord.py dispatches each gateway event to a parser in ``ConnectionState.parsers`` (``client._connection``); it has
no public hook for a parser that raises. ``guard`` wraps the parsers of the named events. discord.py 2.7
(``SUPPORTED_DISCORD``, pinned in pyproject.toml) has them as used here; ``tests/test_gateway_guard.py`` checks it,
so an upgrade that moves them fails that test instead of leaving the bot unguarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import discord

log = logging.getLogger(__name__)

SUPPORTED_DISCORD = (">=2.7", "<2.8")
"""The discord.py releases whose parser table was read and tested."""

GUARDED_EVENTS = ("INTERACTION_CREATE", "MESSAGE_REACTION_ADD")
"""Events whose payloads members shape (their text, their reactions)."""


def parsers_of(client: discord.Client) -> dict[str, Callable[[Any], None]]:
    """discord.py's parser table of ``client`` (event name -> parser); a ``RuntimeError`` naming the supported
    releases when this discord.py has none."""
    state = getattr(client, "_connection", None)
    parsers = getattr(state, "parsers", None)
    if not isinstance(parsers, dict):
        raise RuntimeError(
            f"discord.py {discord.__version__} has no ConnectionState.parsers; supported: "
            f"discord.py{','.join(SUPPORTED_DISCORD)}"
        )
    return parsers


def guard(client: discord.Client, events: tuple[str, ...] = GUARDED_EVENTS) -> None:
    """Wrap the parsers of ``events`` so that one that raises is logged with the payload and the event dropped."""
    parsers = parsers_of(client)
    for event in events:
        original = parsers[event]

        def guarded(data: Any, original: Callable[[Any], None] = original, event: str = event) -> None:
            try:
                original(data)
            except Exception:
                log.exception("ignoring malformed %s payload: %.500r", event, data)

        parsers[event] = guarded
