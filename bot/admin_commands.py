"""Admin slash commands: /queue (status, pause, resume, clear, cancel, purge), /ban, /unban, /limits, /workers.

Discord shows them only to members with Manage Server (``default_permissions``), but that is a display hint: every
command checks the caller again here (``shared.admin.is_admin``: the permission, or a configured admin user or role)
and refuses anyone else, whatever reached the bot. Every action is audited in Redis and, when
``AUDIT_CHANNEL_ID`` is set, posted to that channel.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar, cast

import discord
from discord import app_commands

from bot.commands import mark_canceled
from bot.state import BotState, state_of
from shared import messages
from shared.queue import admin, limits, metrics
from shared.settings import Settings

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])


def _roles(interaction: discord.Interaction) -> list[str]:
    return [str(role.id) for role in getattr(interaction.user, "roles", [])] or [
        str(role) for role in getattr(interaction.user, "_roles", [])
    ]


def caller_is_admin(interaction: discord.Interaction) -> bool:
    """The in-code check: the caller's resolved permissions in this channel, or a configured admin user/role."""
    permissions = interaction.permissions
    return admin.is_admin(
        state_of(interaction).settings,
        str(interaction.user.id),
        _roles(interaction),
        permissions.manage_guild or permissions.administrator,
    )


def admin_only(func: F) -> F:
    """Refuse (ephemeral, audited) a caller who is not an admin; otherwise run the command."""

    @wraps(func)
    async def checked(interaction: discord.Interaction, *args: Any, **kwargs: Any) -> None:
        if not caller_is_admin(interaction):
            state = state_of(interaction)
            name = interaction.command.qualified_name if interaction.command else "?"
            await asyncio.to_thread(
                admin.audit, state.connection, state.settings, str(interaction.user.id), "refused", f"/{name}"
            )
            await interaction.response.send_message(messages.NOT_ADMIN, ephemeral=True)
            return
        await func(interaction, *args, **kwargs)

    return cast(F, checked)


async def _report(interaction: discord.Interaction, text: str) -> None:
    """Answer the admin privately and copy the line to the audit channel, if one is configured."""
    await interaction.response.send_message(messages.admin_text([text]), ephemeral=True)
    channel_id = state_of(interaction).settings.audit_channel_id
    if channel_id:
        try:
            channel = interaction.client.get_partial_messageable(int(channel_id))
            await channel.send(
                messages.audit_copy(str(interaction.user.id), text), allowed_mentions=discord.AllowedMentions.none()
            )
        except (discord.HTTPException, ValueError):
            log.exception("could not post to the audit channel %s", channel_id)


async def _tell_removed(interaction: discord.Interaction, removed: admin.Removed) -> None:
    """Edit the waiting message of every queued job an admin removed (running ones are told by their worker)."""
    for spec in removed.canceled:
        await mark_canceled(interaction.client, spec, messages.CANCELED_BY_ADMIN)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return f"<t:{int(timestamp)}:R> ({datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%H:%M:%S} UTC)"


def format_status(status: admin.QueueStatus) -> str:
    """/queue status as a short text."""
    lines = [
        f"Queue **{'PAUSED' if status.paused else 'running'}** - {status.jobs_per_minute:.1f} jobs/min",
        "Waiting: " + ", ".join(f"{lane} {count}" for lane, count in status.waiting.items()),
        f"Running: {len(status.running)}" + (f" ({', '.join(status.running[:10])})" if status.running else ""),
    ]
    lines += [format_worker(worker) for worker in status.workers] or [messages.NO_WORKERS]
    return messages.admin_text(lines)


def format_worker(worker: admin.WorkerInfo) -> str:
    """One worker line: name, state, current job, last heartbeat, and the models it serves."""
    job = f"job `{worker.current_job}`" if worker.current_job else "no job"
    models = messages.workers_models(worker.models, worker.families, worker.held)
    return f"`{worker.name}` {worker.state}, {job}, heartbeat {_when(worker.last_heartbeat)}; {models}"


def queue_group(settings: Settings) -> app_commands.Group:
    """/queue and its subcommands."""
    group = app_commands.Group(
        name="queue",
        description="Admin: look at and control the image queue",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @group.command(name="status", description="Lanes, running jobs, workers and throughput")
    @admin_only
    async def status(interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        found = await asyncio.to_thread(admin.status, state.connection, state.settings)
        await interaction.response.send_message(format_status(found), ephemeral=True)

    @group.command(name="pause", description="Workers stop taking new jobs (nothing is lost)")
    @admin_only
    async def pause(interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        await asyncio.to_thread(admin.pause, state.connection, state.settings, str(interaction.user.id))
        await _report(interaction, messages.QUEUE_PAUSED)

    @group.command(name="resume", description="Workers take jobs again")
    @admin_only
    async def resume(interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        await asyncio.to_thread(admin.resume, state.connection, state.settings, str(interaction.user.id))
        await _report(interaction, messages.QUEUE_RESUMED)

    @group.command(name="clear", description="Remove every waiting job (of one lane, or all)")
    @app_commands.describe(lane="Only this lane")
    @app_commands.choices(lane=[app_commands.Choice(name=name, value=name) for name in settings.lanes])
    @admin_only
    async def clear(interaction: discord.Interaction, lane: str | None = None) -> None:
        state = state_of(interaction)
        removed = await asyncio.to_thread(
            admin.clear, state.connection, state.settings, str(interaction.user.id), lane or ""
        )
        await _report(interaction, messages.queue_cleared(len(removed.canceled), lane or ""))
        await _tell_removed(interaction, removed)

    @group.command(name="cancel", description="Cancel a job: removed if waiting, stopped at its next step if running")
    @app_commands.describe(job_id="The job id")
    @admin_only
    async def cancel(interaction: discord.Interaction, job_id: str) -> None:
        state = state_of(interaction)
        outcome, removed = await asyncio.to_thread(
            admin.cancel, state.connection, state.settings, str(interaction.user.id), job_id.strip()
        )
        await _report(interaction, messages.admin_cancel_outcome(job_id.strip(), outcome))
        await _tell_removed(interaction, removed)

    @group.command(name="purge", description="Remove a member's waiting jobs and stop their running ones")
    @app_commands.describe(member="The member")
    @admin_only
    async def purge(interaction: discord.Interaction, member: discord.User) -> None:
        state = state_of(interaction)
        removed = await asyncio.to_thread(
            admin.purge, state.connection, state.settings, str(interaction.user.id), str(member.id)
        )
        await _report(interaction, messages.purged(str(member.id), len(removed.canceled), len(removed.stopping)))
        await _tell_removed(interaction, removed)

    return group


@app_commands.command(name="ban", description="Admin: stop a member from making images")
@app_commands.describe(member="The member", reason="Shown to them when they try")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@admin_only
async def ban_command(interaction: discord.Interaction, member: discord.User, reason: str = "") -> None:
    """/ban member [reason]: the member's waiting jobs are removed and running ones stopped."""
    state = state_of(interaction)
    removed = await asyncio.to_thread(
        admin.ban, state.connection, state.settings, str(interaction.user.id), str(member.id), reason
    )
    await _report(interaction, messages.banned_member(str(member.id), reason))
    await _tell_removed(interaction, removed)


@app_commands.command(name="unban", description="Admin: let a banned member make images again")
@app_commands.describe(member="The member")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@admin_only
async def unban_command(interaction: discord.Interaction, member: discord.User) -> None:
    """/unban member."""
    state = state_of(interaction)
    was = await asyncio.to_thread(
        admin.unban, state.connection, state.settings, str(interaction.user.id), str(member.id)
    )
    await _report(interaction, messages.unbanned_member(str(member.id), was))


def _scope_name(scope: str) -> str:
    return "everyone" if scope == "default" else f"<@&{scope.removeprefix('role:')}>"


def limits_group() -> app_commands.Group:
    """/limits show|set."""
    group = app_commands.Group(
        name="limits",
        description="Admin: per-member job limits",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @group.command(name="show", description="The limits in force (default and per role)")
    @admin_only
    async def show(interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        table = await asyncio.to_thread(limits.configured_limits, state.connection, state.settings)
        lines = [
            messages.limits_line(_scope_name(scope), value.running, value.queued) for scope, value in table.items()
        ]
        await interaction.response.send_message(messages.admin_text(lines), ephemeral=True)

    @group.command(name="set", description="Set the limits of everyone, or of one role")
    @app_commands.describe(running="Jobs running at once", queued="Jobs waiting at once", role="Only this role")
    @admin_only
    async def set_(
        interaction: discord.Interaction,
        running: app_commands.Range[int, 0, 100],
        queued: app_commands.Range[int, 0, 1000],
        role: discord.Role | None = None,
    ) -> None:
        state = state_of(interaction)
        scope = f"role:{role.id}" if role is not None else "default"
        await asyncio.to_thread(
            admin.set_limits,
            state.connection,
            state.settings,
            str(interaction.user.id),
            scope,
            running=running,
            queued=queued,
        )
        await _report(interaction, messages.limits_line(role.mention if role else "everyone", running, queued))

    return group


@app_commands.command(name="workers", description="Admin: workers, their models, current job and last heartbeat")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@admin_only
async def workers_command(interaction: discord.Interaction) -> None:
    """/workers."""
    state = state_of(interaction)
    found = await asyncio.to_thread(admin.workers, state.connection, state.settings)
    lines = [format_worker(worker) for worker in found] or [messages.NO_WORKERS]
    await interaction.response.send_message(messages.admin_text(lines), ephemeral=True)


def admin_commands(settings: Settings) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """Every admin command, for the bot's command tree."""
    return [queue_group(settings), ban_command, unban_command, limits_group(), workers_command]


def install(tree: app_commands.CommandTree[Any], state: BotState) -> None:
    """Add the admin commands to ``tree`` and serve the bot's Prometheus metrics if a port is set."""
    for command in admin_commands(state.settings):
        tree.add_command(command)
    metrics.start_metrics_server(state.connection, state.settings)
