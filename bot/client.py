"""The discord.py client: command tree, persistent buttons registered in ``setup_hook``, command sync, resilience.

An ``AutoShardedClient``: one process runs ``SHARD_IDS`` of ``SHARD_COUNT`` (``bot/sharding.py``), every shard in it
when ``SHARD_IDS`` is empty, and several processes share one Redis.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

import aiohttp
import discord
import redis
from discord import app_commands

from bot import admin_commands, gateway_guard, reactions, remix, sharding
from bot.buttons import JobButton
from bot.commands import all_commands
from bot.jobs import JobDesk
from bot.queue_updates import QueueUpdater
from bot.review import ReviewButton
from bot.rules_commands import community_commands
from bot.state import BotState
from bot.translator import CatalogueTranslator
from shared import defaults, messages
from shared.i18n import set_locale
from shared.intake import Intake
from shared.rules import IntakeRules
from shared.settings import Settings

log = logging.getLogger(__name__)


class ImagineTree(app_commands.CommandTree["ImagineClient"]):
    """The command tree; an unexpected error gets a short ephemeral answer, the details go to the log."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        # Every answer to this command (and the job's lines, through its Delivery) in the member's own language.
        set_locale(str(interaction.locale))
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("command %r failed", interaction.command and interaction.command.name, exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(messages.INTERNAL_ERROR, ephemeral=True)
            else:
                await interaction.response.send_message(messages.INTERNAL_ERROR, ephemeral=True)
        except discord.HTTPException:
            log.exception("could not tell the member about the error")


class ImagineClient(discord.AutoShardedClient):
    """The bot: slash commands and result buttons, backed by the job queue in Redis."""

    def __init__(self, settings: Settings, connection: redis.Redis, **options: Any) -> None:
        # reactions: a cross cancels, an envelope sends the job to the member's DMs (not a privileged intent)
        options.setdefault("intents", discord.Intents(guilds=True, guild_reactions=True))
        options.setdefault("shard_count", settings.shard_count)
        options.setdefault("shard_ids", settings.shard_id_list)
        super().__init__(**options)
        # The server's rules run in the intake (shared.rules), after moderation and the member's defaults.
        intake = Intake(connection, settings, rules=[IntakeRules(connection, settings)])
        self.state = BotState(settings, connection, JobDesk(connection, settings), intake)
        self.queue_updates = QueueUpdater(self, self.state.desk, self.owns_guild)
        self.tree = ImagineTree(self)
        for command in all_commands(settings):
            self.tree.add_command(command)
        admin_commands.install(
            self.tree, self.state
        )  # queue control: admin commands (checked in code) and the bot's /metrics
        for extra in community_commands(settings):  # /rules and /quota
            self.tree.add_command(extra)
        gateway_guard.guard(self)

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def connection(self) -> redis.Redis:
        return self.state.connection

    @property
    def desk(self) -> JobDesk:
        return self.state.desk

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton, ReviewButton)
        await self.tree.set_translator(CatalogueTranslator())  # command descriptions in the members' languages
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(self.close()))
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / Windows
            log.debug("no SIGTERM handler: not on the main thread")
        await self.sync_commands()
        self.queue_updates.start()  # live queue position and ETA in the waiting messages
        # Everything loaded so far lives as long as the process: out of the garbage collector's sight, so that a
        # full collection during a burst of interactions walks the burst's objects only (docs/performance.md).
        gc.collect()
        gc.freeze()

    async def close(self) -> None:
        await self.queue_updates.stop()
        await super().close()

    async def login(self, token: str) -> None:
        """Log in with a bounded HTTP connection pool: a burst of answers reuses a few kept-alive connections to
        Discord instead of opening one per concurrent request (discord.py's default pool is unbounded)."""
        self.http.connector = aiohttp.TCPConnector(limit=defaults.DISCORD_HTTP_CONNECTIONS)
        await super().login(token)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """One IDENTIFY per ``DISCORD_IDENTIFY_WAIT_S`` for the token across every bot process (Redis)."""
        await sharding.identify_turn(self.connection, self.settings, shard_id)

    def owns_guild(self, guild: str | int) -> bool:
        """Whether one of this process's shards owns ``guild`` ("" for direct messages: shard 0)."""
        return sharding.owns_guild(guild, self.shard_count, self.shard_ids)

    async def sync_commands(self) -> None:
        """Sync to ``DISCORD_GUILD_IDS`` (instant) or globally; a failed sync is logged and the bot runs on. With
        several bot processes, each syncs the guilds its shards own, and the one with shard 0 the global commands."""
        try:
            guild_ids = self.settings.guild_ids
            if guild_ids:
                for guild_id in guild_ids:
                    if not self.owns_guild(guild_id):
                        continue
                    guild = discord.Object(guild_id)
                    self.tree.copy_global_to(guild=guild)
                    synced = await self.tree.sync(guild=guild)
                    log.info("synced %d commands to guild %s", len(synced), guild_id)
            elif self.owns_guild(0):
                synced = await self.tree.sync()
                log.info("synced %d commands globally", len(synced))
        except discord.HTTPException:
            log.exception("command sync failed; the commands Discord has stay in force")

    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        await reactions.on_reaction(self, self.state, event)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Submits of the Remix and Custom Zoom boxes, from their ``custom_id`` (``bot.remix``): open boxes are
        forgotten by discord.py on restart, so they are not answered through the box objects."""
        if remix.is_ours(interaction):
            await remix.on_modal_submit(interaction)

    async def on_ready(self) -> None:
        shards = sorted(self.shards)
        log.info("ready as %s in %d guild(s), shards %s of %s", self.user, len(self.guilds), shards, self.shard_count)
