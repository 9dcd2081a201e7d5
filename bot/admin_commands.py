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
from typing import TYPE_CHECKING, Any, TypeVar, cast

import discord
from discord import app_commands

from shared.discord_wire import format as discord_format
from shared.jobs.spec import Delivery
from shared.queue import admin, limits, metrics
from shared.settings import Settings

if TYPE_CHECKING:
    from bot.client import ImagineClient

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])

NOT_ADMIN = "Only the server's admins (Manage Server, or a configured admin role) can use this command."
"""Reply to a member without rights who reached an admin command anyway."""

CANCELED_BY_ADMIN = "cancelled by an admin"
"""Reason shown on the waiting message of a job an admin removed from the queue."""


def _client(interaction: discord.Interaction) -> ImagineClient:
    return interaction.client  # type: ignore[return-value]


def _roles(interaction: discord.Interaction) -> list[str]:
    return [str(role.id) for role in getattr(interaction.user, "roles", [])] or [
        str(role) for role in getattr(interaction.user, "_roles", [])
    ]


def caller_is_admin(interaction: discord.Interaction) -> bool:
    """The in-code check: the caller's resolved permissions in this channel, or a configured admin user/role."""
    permissions = interaction.permissions
    return admin.is_admin(
        _client(interaction).settings,
        str(interaction.user.id),
        _roles(interaction),
        permissions.manage_guild or permissions.administrator,
    )


def admin_only(func: F) -> F:
    """Refuse (ephemeral, audited) a caller who is not an admin; otherwise run the command."""

    @wraps(func)
    async def checked(interaction: discord.Interaction, *args: Any, **kwargs: Any) -> None:
        if not caller_is_admin(interaction):
            client = _client(interaction)
            name = interaction.command.qualified_name if interaction.command else "?"
            await asyncio.to_thread(
                admin.audit, client.connection, client.settings, str(interaction.user.id), "refused", f"/{name}"
            )
            await interaction.response.send_message(NOT_ADMIN, ephemeral=True)
            return
        await func(interaction, *args, **kwargs)

    return cast(F, checked)


async def _report(interaction: discord.Interaction, text: str) -> None:
    """Answer the admin privately and copy the line to the audit channel, if one is configured."""
    await interaction.response.send_message(text, ephemeral=True)
    channel_id = _client(interaction).settings.audit_channel_id
    if channel_id:
        try:
            channel = interaction.client.get_partial_messageable(int(channel_id))
            await channel.send(f"<@{interaction.user.id}>: {text}", allowed_mentions=discord.AllowedMentions.none())
        except (discord.HTTPException, ValueError):
            log.exception("could not post to the audit channel %s", channel_id)


async def _tell_removed(interaction: discord.Interaction, removed: admin.Removed) -> None:
    """Edit the waiting message of every queued job an admin removed (running ones are told by their worker)."""
    for spec in removed.canceled:
        delivery = Delivery(**spec.get("delivery", {}))
        if delivery.kind != "discord" or not delivery.waiting_message_id or not delivery.channel_id:
            continue
        try:
            channel = interaction.client.get_partial_messageable(int(delivery.channel_id))
            await channel.get_partial_message(int(delivery.waiting_message_id)).edit(
                content=discord_format.failed_line(
                    str(spec.get("prompt", "")), str(spec.get("owner", "")), CANCELED_BY_ADMIN
                ),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException:
            log.exception("could not tell the owner of job %s", spec.get("job_id"))


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
    lines += [format_worker(worker) for worker in status.workers] or ["No workers."]
    return "\n".join(lines)


def format_worker(worker: admin.WorkerInfo) -> str:
    """One worker line: name, state, current job, last heartbeat."""
    job = f"job `{worker.current_job}`" if worker.current_job else "no job"
    return f"`{worker.name}` {worker.state}, {job}, heartbeat {_when(worker.last_heartbeat)}"


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
        client = _client(interaction)
        found = await asyncio.to_thread(admin.status, client.connection, client.settings)
        await interaction.response.send_message(format_status(found), ephemeral=True)

    @group.command(name="pause", description="Workers stop taking new jobs (nothing is lost)")
    @admin_only
    async def pause(interaction: discord.Interaction) -> None:
        client = _client(interaction)
        await asyncio.to_thread(admin.pause, client.connection, client.settings, str(interaction.user.id))
        await _report(interaction, "Queue paused: running jobs finish, new jobs wait.")

    @group.command(name="resume", description="Workers take jobs again")
    @admin_only
    async def resume(interaction: discord.Interaction) -> None:
        client = _client(interaction)
        await asyncio.to_thread(admin.resume, client.connection, client.settings, str(interaction.user.id))
        await _report(interaction, "Queue resumed.")

    @group.command(name="clear", description="Remove every waiting job (of one lane, or all)")
    @app_commands.describe(lane="Only this lane")
    @app_commands.choices(lane=[app_commands.Choice(name=name, value=name) for name in settings.lanes])
    @admin_only
    async def clear(interaction: discord.Interaction, lane: str | None = None) -> None:
        client = _client(interaction)
        removed = await asyncio.to_thread(
            admin.clear, client.connection, client.settings, str(interaction.user.id), lane or ""
        )
        await _report(interaction, f"Removed {len(removed.canceled)} waiting job(s) from {lane or 'all lanes'}.")
        await _tell_removed(interaction, removed)

    @group.command(name="cancel", description="Cancel a job: removed if waiting, stopped at its next step if running")
    @app_commands.describe(job_id="The job id")
    @admin_only
    async def cancel(interaction: discord.Interaction, job_id: str) -> None:
        client = _client(interaction)
        outcome, removed = await asyncio.to_thread(
            admin.cancel, client.connection, client.settings, str(interaction.user.id), job_id.strip()
        )
        text = {
            "canceled": f"Job `{job_id}` was removed from the queue.",
            "stopping": f"Job `{job_id}` stops at its next step.",
        }.get(outcome, f"Job `{job_id}` is not queued or running.")
        await _report(interaction, text)
        await _tell_removed(interaction, removed)

    @group.command(name="purge", description="Remove a member's waiting jobs and stop their running ones")
    @app_commands.describe(member="The member")
    @admin_only
    async def purge(interaction: discord.Interaction, member: discord.User) -> None:
        client = _client(interaction)
        removed = await asyncio.to_thread(
            admin.purge, client.connection, client.settings, str(interaction.user.id), str(member.id)
        )
        await _report(
            interaction,
            f"Purged <@{member.id}>: {len(removed.canceled)} removed, {len(removed.stopping)} stopping.",
        )
        await _tell_removed(interaction, removed)

    return group


@app_commands.command(name="ban", description="Admin: stop a member from making images")
@app_commands.describe(member="The member", reason="Shown to them when they try")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@admin_only
async def ban_command(interaction: discord.Interaction, member: discord.User, reason: str = "") -> None:
    """/ban member [reason]: the member's waiting jobs are removed and running ones stopped."""
    client = _client(interaction)
    removed = await asyncio.to_thread(
        admin.ban, client.connection, client.settings, str(interaction.user.id), str(member.id), reason
    )
    await _report(interaction, f"Banned <@{member.id}>" + (f": {reason}" if reason else "."))
    await _tell_removed(interaction, removed)


@app_commands.command(name="unban", description="Admin: let a banned member make images again")
@app_commands.describe(member="The member")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@admin_only
async def unban_command(interaction: discord.Interaction, member: discord.User) -> None:
    """/unban member."""
    client = _client(interaction)
    was = await asyncio.to_thread(
        admin.unban, client.connection, client.settings, str(interaction.user.id), str(member.id)
    )
    await _report(interaction, f"Unbanned <@{member.id}>." if was else f"<@{member.id}> was not banned.")


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
        client = _client(interaction)
        table = await asyncio.to_thread(limits.configured_limits, client.connection, client.settings)
        lines = [
            f"{_scope_name(scope)}: {value.running} running, {value.queued} queued" for scope, value in table.items()
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @group.command(name="set", description="Set the limits of everyone, or of one role")
    @app_commands.describe(running="Jobs running at once", queued="Jobs waiting at once", role="Only this role")
    @admin_only
    async def set_(
        interaction: discord.Interaction,
        running: app_commands.Range[int, 0, 100],
        queued: app_commands.Range[int, 0, 1000],
        role: discord.Role | None = None,
    ) -> None:
        client = _client(interaction)
        scope = f"role:{role.id}" if role is not None else "default"
        await asyncio.to_thread(
            admin.set_limits,
            client.connection,
            client.settings,
            str(interaction.user.id),
            scope,
            running=running,
            queued=queued,
        )
        await _report(
            interaction, f"Limits of {role.mention if role else 'everyone'}: {running} running, {queued} queued."
        )

    return group


@app_commands.command(name="workers", description="Admin: workers, their current job and last heartbeat")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@admin_only
async def workers_command(interaction: discord.Interaction) -> None:
    """/workers."""
    client = _client(interaction)
    found = await asyncio.to_thread(admin.workers, client.connection)
    await interaction.response.send_message("\n".join(format_worker(w) for w in found) or "No workers.", ephemeral=True)


def admin_commands(settings: Settings) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """Every admin command, for the bot's command tree."""
    return [queue_group(settings), ban_command, unban_command, limits_group(), workers_command]


def install(client: ImagineClient) -> None:
    """Add the admin commands to ``client``'s tree and serve the bot's Prometheus metrics if a port is set."""
    for command in admin_commands(client.settings):
        client.tree.add_command(command)
    metrics.start_metrics_server(client.connection, client.settings)
