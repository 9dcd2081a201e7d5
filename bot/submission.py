"""Answer an interaction with a job's public "(Waiting to start)" message, then enqueue the job pointing at it.

The waiting message is the interaction's response (acknowledged at once, inside Discord's 3 s window); its channel
message id goes into the job's ``Delivery``, so the worker edits and removes it over REST with the bot token, never
with the 15-minute interaction token. Every front end's jobs come from ``shared.intake``; this module is the Discord
side of its ``submit``: each job is enqueued on its own, and a job that is not queued says why on its own message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

import discord
import redis

from bot.ack import MemberView, QueueView, parse_ban_reason
from bot.jobs import JobDesk
from bot.state import BotState
from shared import allowances, messages
from shared.discord_wire.rate_budget import EDIT, Priority
from shared.errors import MemberFacingError
from shared.intake import Requester
from shared.jobs.spec import Delivery, JobSpec
from shared.queue import limits

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
    interaction: discord.Interaction,
    specs: list[JobSpec],
    desk: JobDesk,
    counts: dict[str, int] | None = None,
    views: tuple[QueueView, MemberView] | None = None,
) -> list[JobSpec]:
    """Post one waiting message per job (the first as the interaction response) and enqueue the jobs.

    Returns the enqueued specs (with their waiting message ids). ``views``: the queue and the member as
    ``desk.reads`` read them for this answer (read now, batched with the loop turn's other answers, without them);
    ``counts`` is kept for callers of the older signature and not needed. Only the answer happens before the
    interaction response; the jobs are enqueued after it (``JobDesk.enqueue_soon``). Redis being down before the
    answer gives an ephemeral error; after it, the waiting message of each job that was not queued says why.
    """
    if not specs:
        raise ValueError("submit needs at least one job spec, got none")
    requester = requester_of(interaction)
    first = specs[0]
    async with desk.answering():
        try:
            queue, member = views if views is not None else await desk.reads.read(first.owner)
        except redis.RedisError:
            log.exception("queue unavailable while answering interaction %s", interaction.id)
            await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
            return []
        # Queue control: banned or over the queued limit -> a private answer, nothing posted or queued.
        refusal = _refusal(desk, queue, member, owner=first.owner, jobs=len(specs), roles=requester.roles)
        counted = allowances.allowance_for(desk.settings, requester.roles).capped  # no Redis when nothing is capped
        if not refusal and counted:
            # The daily allowance: every job is counted now, all or none (atomic in Redis), so a member at zero is
            # refused before any waiting message, with the next reset (and the relax lane, when its jobs are free).
            try:
                refusal = await asyncio.to_thread(
                    allowances.take_all, desk.connection, desk.settings, specs, requester.roles
                )
            except redis.RedisError:
                log.exception("queue unavailable while answering interaction %s", interaction.id)
                await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
                return []
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return []
        ahead_by_lane = queue.ahead_by_lane(first.lane, dict(desk.pending_by_lane))
        ahead = sum(ahead_by_lane.values())
        lines = [_waiting_line(desk, queue, first, ahead + 1, ahead_by_lane)]
        for spec in specs:
            desk.hold(spec)  # the next answers count it, though it is enqueued after them
        try:
            callback = await interaction.response.send_message(lines[0], allowed_mentions=mentions_for(first.owner))
            message_id = callback.message_id if callback is not None else None
            if message_id is None:
                message_id = (await interaction.original_response()).id
            message_ids = [message_id]
            for offset, spec in enumerate(specs[1:], start=1):
                mine = {**ahead_by_lane, spec.lane: ahead_by_lane.get(spec.lane, 0) + offset}
                lines.append(_waiting_line(desk, queue, spec, ahead + 1 + offset, mine))
                sent = await interaction.followup.send(lines[-1], allowed_mentions=mentions_for(spec.owner), wait=True)
                message_ids.append(sent.id)
        except BaseException:
            for spec in specs:
                desk.release_hold(spec)
            if counted:  # none of these jobs is enqueued: the allowance taken above goes back
                _refund_all(desk, specs)
            raise
    queued: list[JobSpec] = []
    for bare, waiting_id, line in zip(specs, message_ids, lines, strict=True):
        spec = bare.replace(delivery=dataclasses.replace(bare.delivery, waiting_message_id=str(waiting_id)))
        desk.shown[spec.job_id] = line  # so that the queue updates edit it only once the line would change
        try:
            await desk.enqueue_soon(spec, requester.roles, held=True)
        except redis.RedisError:
            log.exception("could not enqueue job %s", spec.job_id)
            await _say_failed(interaction, waiting_id, spec, messages.NOT_QUEUED, desk)
            continue
        except MemberFacingError as exc:  # e.g. lost a race with the member's other submissions for the limit
            await _say_failed(interaction, waiting_id, spec, str(exc), desk)
            continue
        queued.append(spec)
    if queue.paused and queued:
        await interaction.followup.send(messages.PAUSED_NOTE, ephemeral=True)
    return queued


def _refund_all(desk: JobDesk, specs: Sequence[JobSpec]) -> None:
    """Give back the allowance of jobs that were counted but will not be enqueued (their answer failed)."""
    try:
        for spec in specs:
            allowances.refund(desk.connection, desk.settings, spec)
    except redis.RedisError:
        log.warning("could not give back the allowance of %d job(s)", len(specs), exc_info=True)


def _waiting_line(desk: JobDesk, queue: QueueView, spec: JobSpec, position: int, ahead: dict[str, int]) -> str:
    """The waiting line of ``spec`` at ``position``: with its ETA, or saying that no live worker holds its model."""
    key = desk.settings.model_key(spec.model)
    if queue.unserved(key):
        return messages.waiting_unserved_line(spec.prompt, spec.owner, display_model(key), position)
    return messages.waiting_line(spec.prompt, spec.owner, position, queue.eta_s(spec.lane, spec.model, ahead, key))


def display_model(model_key: str) -> str:
    """A model key as members read it: its last path part (``models/sdxl-base`` -> ``sdxl-base``)."""
    return model_key.rstrip("/").rsplit("/", 1)[-1] or model_key


def _refusal(
    desk: JobDesk, queue: QueueView, member: MemberView, *, owner: str, jobs: int, roles: Sequence[str]
) -> str:
    """Why ``owner`` may not submit ``jobs`` more jobs now ("" if they may): banned, or over their queued limit
    counting the jobs this process answered but has not enqueued yet. The enqueue's ``limits.acquire`` stays the
    atomic check."""
    if member.ban is not None:
        return messages.banned(parse_ban_reason(member.ban))
    allowed = limits.best_limits(queue.limits, roles).queued
    have = member.queued + desk.pending_by_member.get(owner, 0)
    if have + jobs > allowed:
        return messages.queued_limit(have, allowed, jobs)
    return ""


async def _say_failed(
    interaction: discord.Interaction, message_id: int, spec: JobSpec, reason: str, desk: JobDesk
) -> None:
    channel_id = spec.delivery.channel_id
    await desk.budget.acquire_async(EDIT, channel_id, message=str(message_id), priority=Priority.FINAL)
    try:
        channel = interaction.client.get_partial_messageable(int(spec.delivery.channel_id))
        await channel.get_partial_message(message_id).edit(
            content=messages.failed_line(spec.prompt, spec.owner, reason),
            allowed_mentions=mentions_for(spec.owner),
        )
    except discord.HTTPException:
        log.exception("could not tell the member that job %s failed", spec.job_id)
