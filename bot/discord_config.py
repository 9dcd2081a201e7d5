"""Where discord.py connects: the REST base URL and the gateway, from settings, set before the client connects.

``DISCORD_API_BASE`` lets a rate-limit proxy (or the tests' fake Discord) sit in front of Discord;
``DISCORD_GATEWAY_URL`` overrides the gateway that discord.py otherwise takes as ``wss://gateway.discord.gg/``.
"""

from __future__ import annotations

import logging

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from shared.settings import Settings

log = logging.getLogger(__name__)


def apply(settings: Settings) -> None:
    """Point discord.py's REST routes and gateway at the configured URLs (process-wide, class attributes)."""
    base = settings.discord_api_base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"DISCORD_API_BASE must be an http(s) URL, got {settings.discord_api_base!r}")
    Route.BASE = base
    gateway = settings.discord_gateway_url.strip()
    if gateway:
        if not gateway.startswith(("ws://", "wss://")):
            raise ValueError(f"DISCORD_GATEWAY_URL must be a ws(s) URL, got {settings.discord_gateway_url!r}")
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    log.info("discord.py %s: REST %s, gateway %s", discord.__version__, Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
