"""Answer an interaction with a job's public "(Waiting to start)" message, then enqueue the job pointing at it.

The waiting message is the interaction's response (acknowledged at once, inside Discord's 3 s window); its channel
message id goes into the job's ``Delivery``, so the worker edits and removes it over REST with the bot token, never
with the 15-minute interaction token. Every front end's jobs come from ``shared.intake``; this module is the Discord
side of its ``submit``: each job is enqueued on its own, and a job that is not queued says why on its own message.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import discord
import redis

from bot.jobs import JobDesk
from bot.state import BotState
from shared import allowances, messages
from shared.errors import MemberFacingError
from shared.intake import Requester
from shared.jobs.spec import Delivery, JobSpec
from shared.queue import admin, eta, limits

log = logging.getLogger(__name__)


def delivery_for(interaction: discord.Interaction) -> Delivery:
    """Where a job made from ``interaction`` is delivered: the interaction's channel (and guild), with what the worker
    needs to deliver it as the server's rules say (the channel's age restriction, the member's roles and locale, and
    whether a new member's results are reviewed)."""
    requester = requester_of(interaction)
    state = getattr(interaction.client, "state", None)
    review_days = state.settings.review_new_members_days if isinstance(state, BotState) else 0.0
    review = bool(review_days and requester.joined_at and time.time() - requester.joined_at < review_days * 86400)
    return Delivery(
        kind="discord",
        channel_id=str(interaction.channel_id or ""),
        guild_id=str(interaction.guild_id or ""),
        locale=requester.locale,
        nsfw=requester.channel_nsfw,
        roles=requester.roles,
        review=review,
    )


def channel_is_nsfw(interaction: discord.Interaction) -> bool:
    """Whether the interaction's channel is age-restricted (Discord's ``nsfw`` flag; a thread takes its parent's)."""
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def requester_of(interaction: discord.Interaction) -> Requester:
    """Who asks, as ``shared.intake`` knows them: the member, their roles, the channel (and whether it is
    age-restricted), their locale and when they joined."""
    roles = tuple(str(role.id) for role in getattr(interaction.user, "roles", []))
    joined = getattr(interaction.user, "joined_at", None)
    return Requester(
        member_id=str(interaction.user.id),
        roles=roles,
        channel_id=str(interaction.channel_id or ""),
        locale=str(interaction.locale),
        channel_nsfw=channel_is_nsfw(interaction),
        joined_at=joined.timestamp() if joined is not None else 0.0,
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
    it, the waiting message of each job that was not queued says why.
    """
    if not specs:
        raise ValueError("submit needs at least one job spec, got none")
    requester = requester_of(interaction)
    try:
        ahead_by_lane = desk.ahead_by_lane(specs[0].lane, counts)
        ahead = sum(ahead_by_lane.values())
        first_eta = eta.eta_for(desk.connection, desk.settings, specs[0].lane, specs[0].model, ahead_by_lane)
        # Queue control: banned or over the queued limit -> a private answer, nothing posted or queued.
        refusal = limits.refusal(desk.connection, desk.settings, specs[0].owner, len(specs), requester.roles)
        # The daily allowance: every job is counted now, all or none (atomic in Redis), so a member at zero is
        # refused before any waiting message, with the next reset (and the relax lane, when its jobs are free).
        refusal = refusal or allowances.take_all(desk.connection, desk.settings, specs, requester.roles)
        paused = admin.is_paused(desk.connection, desk.settings)
    except redis.RedisError:
        log.exception("queue unavailable while answering interaction %s", interaction.id)
        await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
        return []
    if refusal:
        await interaction.response.send_message(refusal, ephemeral=True)
        return []
    first = specs[0]
    lines = [messages.waiting_line(first.prompt, first.owner, ahead + 1, first_eta)]
    try:
        callback = await interaction.response.send_message(lines[0], allowed_mentions=mentions_for(first.owner))
    except discord.HTTPException:
        for spec in specs:  # no waiting message, no jobs: the allowance taken above goes back
            allowances.refund(desk.connection, desk.settings, spec)
        raise
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    message_ids = [message_id]
    for offset, spec in enumerate(specs[1:], start=1):
        lines.append(
            messages.waiting_line(spec.prompt, spec.owner, ahead + 1 + offset, _eta(desk, spec, ahead_by_lane, offset))
        )
        sent = await interaction.followup.send(lines[-1], allowed_mentions=mentions_for(spec.owner), wait=True)
        message_ids.append(sent.id)
    queued: list[JobSpec] = []
    for bare, waiting_id, line in zip(specs, message_ids, lines, strict=True):
        spec = bare.replace(delivery=dataclasses.replace(bare.delivery, waiting_message_id=str(waiting_id)))
        desk.shown[spec.job_id] = line  # so that the queue updates edit it only once the line would change
        try:
            await desk.enqueue_soon(spec, requester.roles)
        except redis.RedisError:
            log.exception("could not enqueue job %s", spec.job_id)
            await _say_failed(interaction, waiting_id, spec, messages.NOT_QUEUED)
            continue
        except MemberFacingError as exc:  # e.g. lost a race with the member's other submissions for the limit
            await _say_failed(interaction, waiting_id, spec, str(exc))
            continue
        queued.append(spec)
    if paused and queued:
        await interaction.followup.send(messages.PAUSED_NOTE, ephemeral=True)
    return queued


def _eta(desk: JobDesk, spec: JobSpec, ahead_by_lane: dict[str, int], offset: int) -> float | None:
    """ETA of the ``offset``-th extra job of one command (the command's jobs before it are ahead of it too)."""
    ahead = {**ahead_by_lane, spec.lane: ahead_by_lane.get(spec.lane, 0) + offset}
    try:
        return eta.eta_for(desk.connection, desk.settings, spec.lane, spec.model, ahead)
    except redis.RedisError:
        log.warning("no ETA for job %s: Redis unavailable", spec.job_id)
        return None


async def _say_failed(interaction: discord.Interaction, message_id: int, spec: JobSpec, reason: str) -> None:
    try:
        channel = interaction.client.get_partial_messageable(int(spec.delivery.channel_id))
        await channel.get_partial_message(message_id).edit(
            content=messages.failed_line(spec.prompt, spec.owner, reason),
            allowed_mentions=mentions_for(spec.owner),
        )
    except discord.HTTPException:
        log.exception("could not tell the member that job %s failed", spec.job_id)
