"""Answer an interaction with a job's public "(Waiting to start)" message, then enqueue the job pointing at it.

The waiting message is the interaction's response (acknowledged at once, inside Discord's 3 s window); its channel
message id goes into the job's ``Delivery``, so the worker edits and removes it over REST with the bot token, never
with the 15-minute interaction token.
"""

from __future__ import annotations

import dataclasses
import logging

import discord
import redis

from bot import messages
from bot.jobs import JobDesk
from shared import admin, discord_format, limits
from shared.admin import PAUSED_NOTE
from shared.job import Delivery, JobSpec

log = logging.getLogger(__name__)


def delivery_for(interaction: discord.Interaction) -> Delivery:
    """Where a job made from ``interaction`` is delivered: the interaction's channel (and guild)."""
    return Delivery(
        kind="discord",
        channel_id=str(interaction.channel_id or ""),
        guild_id=str(interaction.guild_id or ""),
    )


def mentions_for(owner: str) -> discord.AllowedMentions:
    """Only the job's owner may be pinged by our lines (a prompt saying @everyone pings nobody)."""
    users = [discord.Object(int(owner))] if owner.isdigit() else []
    return discord.AllowedMentions(everyone=False, roles=False, users=users)


async def submit(
    interaction: discord.Interaction, specs: list[JobSpec], desk: JobDesk, counts: dict[str, int] | None = None
) -> list[JobSpec]:
    """Post one waiting message per job (the first as the interaction response) and enqueue the jobs.

    Returns the enqueued specs (with their waiting message ids). ``counts`` are queue lengths from
    ``JobDesk.intake`` (read now without them). Redis being down before the answer gives an ephemeral error; after
    it, the waiting message says so.
    """
    if not specs:
        raise ValueError("submit needs at least one job spec, got none")
    try:
        ahead = desk.ahead_of(specs[0].lane, counts)
        # Queue control: banned or over the queued limit -> a private answer, nothing posted or queued.
        roles = [str(role.id) for role in getattr(interaction.user, "roles", [])]
        refusal = limits.refusal(desk.connection, desk.settings, specs[0].owner, len(specs), roles)
        paused = admin.is_paused(desk.connection, desk.settings)
    except redis.RedisError:
        log.exception("queue unavailable while answering interaction %s", interaction.id)
        await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
        return []
    if refusal:
        await interaction.response.send_message(refusal, ephemeral=True)
        return []
    first = specs[0]
    callback = await interaction.response.send_message(
        discord_format.waiting_line(first.prompt, first.owner, ahead + 1),
        allowed_mentions=mentions_for(first.owner),
    )
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    message_ids = [message_id]
    for offset, spec in enumerate(specs[1:], start=1):
        sent = await interaction.followup.send(
            discord_format.waiting_line(spec.prompt, spec.owner, ahead + 1 + offset),
            allowed_mentions=mentions_for(spec.owner),
            wait=True,
        )
        message_ids.append(sent.id)
    queued: list[JobSpec] = []
    for bare, waiting_id in zip(specs, message_ids, strict=True):
        spec = bare.replace(delivery=dataclasses.replace(bare.delivery, waiting_message_id=str(waiting_id)))
        try:
            await desk.enqueue_soon(spec, roles)
        except redis.RedisError:
            log.exception("could not enqueue job %s", spec.job_id)
            await _say_failed(interaction, waiting_id, spec, "could not be queued, please try again")
            continue
        except (limits.LimitExceeded, limits.MemberBanned) as exc:  # lost a race with the member's other submissions
            await _say_failed(interaction, waiting_id, spec, str(exc))
            continue
        queued.append(spec)
    if paused and queued:
        await interaction.followup.send(PAUSED_NOTE, ephemeral=True)
    return queued


async def _say_failed(interaction: discord.Interaction, message_id: int, spec: JobSpec, reason: str) -> None:
    try:
        channel = interaction.client.get_partial_messageable(int(spec.delivery.channel_id))
        await channel.get_partial_message(message_id).edit(
            content=discord_format.failed_line(spec.prompt, spec.owner, reason),
            allowed_mentions=mentions_for(spec.owner),
        )
    except discord.HTTPException:
        log.exception("could not tell the member that job %s failed", spec.job_id)
