"""What the bot's commands, buttons and reactions share: settings, Redis, the job desk and the intake, reached from
any interaction with ``state_of`` (so no command module needs the client class)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord
import redis

from bot.jobs import JobDesk
from shared.intake import Intake
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BotState:
    """The bot process's shared parts."""

    settings: Settings
    connection: redis.Redis
    desk: JobDesk
    intake: Intake


def state_of(interaction: discord.Interaction) -> BotState:
    """The bot's shared parts, from any interaction it receives."""
    state = getattr(interaction.client, "state", None)
    if not isinstance(state, BotState):
        raise TypeError(f"interaction.client must carry a BotState, got {type(interaction.client).__name__}")
    return state
