"""Running the bot for a community: /rules show|set|clear (admins; audited) and /quota (every member's own daily
allowance; admins see and reset anyone's).

The rules and allowances themselves live in ``shared.rules`` and ``shared.allowances``; this module is their Discord
face. Admin commands are checked in code (``bot.admin_commands.admin_only``), whatever Discord showed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord import app_commands

from bot.admin_commands import _report, admin_only, caller_is_admin
from bot.state import state_of
from shared import allowances, defaults, messages, rules
from shared.settings import Settings

log = logging.getLogger(__name__)


def scope_name(scope: str) -> str:
    """A scope as Discord shows it: "everyone", a role mention or a channel mention."""
    kind, _, target = scope.partition(":")
    if kind == "role":
        return f"<@&{target}>"
    if kind == "channel":
        return f"<#{target}>"
    return messages.EVERYONE


def rules_group(settings: Settings) -> app_commands.Group:
    """/rules show|set|clear."""
    group = app_commands.Group(
        name="rules",
        description="Admin: which models, LoRAs, lanes, quality and sizes are allowed, per role and channel",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @group.command(name="show", description="The rules in force")
    @admin_only
    async def show(interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        book = await asyncio.to_thread(rules.load, state.connection, state.settings, fresh=True)
        lines = [messages.rule_line(scope_name(scope), rule.to_dict()) for scope, rule in sorted(book.rules.items())]
        await interaction.response.send_message(messages.admin_text(lines or [messages.NO_RULES]), ephemeral=True)

    @group.command(name="set", description="Set the rule of everyone, of a role, or of a channel")
    @app_commands.describe(
        role="The role the rule is for (neither role nor channel: everyone)",
        channel="The channel the rule is for",
        name="What members are told the rule is called",
        models="Allowed --v names, comma-separated (default = the configured model); empty: any",
        loras="Allowed --lora names, comma-separated (none = no LoRA); empty: any",
        lanes="Allowed lanes, comma-separated; empty: any",
        max_quality="Highest --quality",
        max_repeat="Highest --repeat",
        max_pixels="Most pixels of one image (width x height)",
        adult="Channels only: may adult-rated results be delivered here (unset: Discord's age restriction)",
    )
    @app_commands.choices(
        max_quality=[app_commands.Choice(name=f"{q:g}", value=q) for q in defaults.QUALITY_VALUES],
    )
    @admin_only
    async def set_(  # noqa: PLR0917 - discord.py passes the options by keyword
        interaction: discord.Interaction,
        role: discord.Role | None = None,
        channel: discord.TextChannel | None = None,
        name: str = "",
        models: str = "",
        loras: str = "",
        lanes: str = "",
        max_quality: float | None = None,
        max_repeat: app_commands.Range[int, 1, 40] | None = None,
        max_pixels: app_commands.Range[int, 1, 67_108_864] | None = None,
        adult: bool | None = None,
    ) -> None:
        state = state_of(interaction)
        scope = _scope(role, channel)
        table: dict[str, Any] = {
            "name": name,
            "models": models,
            "loras": loras,
            "lanes": lanes,
            "max_quality": max_quality,
            "max_repeat": max_repeat,
            "max_pixels": max_pixels,
            "adult": adult,
        }
        try:
            rule = rules.Rule.from_dict(scope, {key: value for key, value in table.items() if value is not None})
        except ValueError as exc:
            await interaction.response.send_message(messages.not_saved(str(exc)), ephemeral=True)
            return
        await asyncio.to_thread(rules.set_rule, state.connection, state.settings, str(interaction.user.id), rule)
        await _report(interaction, messages.rule_line(scope_name(scope), rule.to_dict()))

    @group.command(name="clear", description="Remove the rule of everyone, of a role, or of a channel")
    @app_commands.describe(role="The role whose rule goes", channel="The channel whose rule goes")
    @admin_only
    async def clear(
        interaction: discord.Interaction, role: discord.Role | None = None, channel: discord.TextChannel | None = None
    ) -> None:
        state = state_of(interaction)
        scope = _scope(role, channel)
        removed = await asyncio.to_thread(
            rules.clear_rule, state.connection, state.settings, str(interaction.user.id), scope
        )
        await _report(interaction, messages.rule_cleared(scope_name(scope), removed))

    return group


def _scope(role: discord.Role | None, channel: discord.TextChannel | None) -> str:
    if channel is not None:
        return rules.scope_of("channel", str(channel.id))
    if role is not None:
        return rules.scope_of("role", str(role.id))
    return "default"


def _roles_of(member: Any) -> list[str]:
    return [str(role.id) for role in getattr(member, "roles", [])]


@app_commands.command(name="quota", description="What is left of your daily allowance, and when it resets")
@app_commands.describe(member="Admins: another member's allowance", reset="Admins: start the member's day again")
@app_commands.guild_only()
async def quota_command(
    interaction: discord.Interaction, member: discord.Member | None = None, reset: bool = False
) -> None:
    """/quota [member] [reset]: members see their own; admins see and reset anyone's."""
    state = state_of(interaction)
    target = member or interaction.user
    if (target.id != interaction.user.id or reset) and not caller_is_admin(interaction):
        await interaction.response.send_message(messages.NOT_YOUR_QUOTA, ephemeral=True)
        return
    owner = str(target.id)
    if reset:
        await asyncio.to_thread(allowances.reset, state.connection, state.settings, str(interaction.user.id), owner)
    usage = await asyncio.to_thread(allowances.usage, state.connection, state.settings, owner, _roles_of(target))
    allowance = usage.allowance
    text = messages.quota(
        owner,
        jobs=None if allowance.jobs is None else (usage.jobs, allowance.jobs),
        gpu=None if allowance.gpu_seconds is None else (usage.gpu_seconds, allowance.gpu_seconds),
        reset_at=usage.reset_at,
        exempt_lanes=tuple(lane for lane in state.settings.allowance_exempt_lanes if lane in state.settings.lanes),
    )
    if reset:
        text = messages.admin_text([messages.quota_reset(owner), text])
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())


def community_commands(settings: Settings) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """The commands of this module, for the bot's command tree."""
    return [rules_group(settings), quota_command]
