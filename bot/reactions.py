"""Reactions on the bot's messages, as members know them from Midjourney.

- a cross on a waiting message cancels the job (removed from the queue, or stopped at its next step); on a finished
  result it deletes the message. Only the job's owner can do either: a reaction by anyone else changes nothing.
- an envelope on a finished result sends the member who reacted a direct message with the picture, the job id, the
  seeds and the resolved parameters (the same record as /record).
- a star on a finished result adds its images to the reacting member's ``--p`` profile (``bot.styles.like``).

The job behind a message is found without any state in the bot process, so reactions work after a restart: a waiting
message through the mapping that ``JobDesk.enqueue`` writes, a result through the job id that its buttons carry.
"""

from __future__ import annotations

import asyncio
import io
import logging

import discord
import redis

from bot import styles
from bot.commands import mark_canceled, record_text, stored_result
from bot.state import BotState
from shared import defaults, messages
from shared.discord_wire import buttons
from shared.errors import ResultExpired
from shared.jobs.spec import JobStatus
from shared.queue.client import request_cancel
from shared.stores import images as image_store

log = logging.getLogger(__name__)

WATCHED = defaults.CANCEL_REACTIONS | defaults.ENVELOPE_REACTIONS | defaults.STAR_REACTIONS
"""Every reaction that does something; all others are ignored before any lookup."""


async def on_reaction(client: discord.Client, state: BotState, event: discord.RawReactionActionEvent) -> None:
    """Act on one added reaction (gateway MESSAGE_REACTION_ADD)."""
    name = event.emoji.name or ""
    me = client.user.id if client.user else None
    if name not in WATCHED or event.user_id == me:
        return
    if event.message_author_id is not None and event.message_author_id != me:
        return  # Discord says whose message it is: not ours
    try:
        found = await _job_of_message(client, state, event.channel_id, event.message_id)
    except redis.RedisError:
        log.exception("reaction on message %s: queue unavailable", event.message_id)
        return
    if found is None:
        return
    job_id, is_result = found
    if name in defaults.STAR_REACTIONS:
        if is_result:
            try:
                liked = await styles.like(state, str(event.user_id), job_id)
            except redis.RedisError:
                log.exception("star on job %s by %s: queue unavailable", job_id, event.user_id)
                return
            log.info("star on job %s by %s: profile holds %s image(s)", job_id, event.user_id, liked)
    elif name in defaults.ENVELOPE_REACTIONS:
        if is_result:  # a job still waiting or running has nothing to send yet
            await _send_to_direct_messages(client, state, event.user_id, job_id)
    else:
        await _cancel_or_delete(client, state, event, job_id, is_result)


async def _job_of_message(
    client: discord.Client, state: BotState, channel_id: int, message_id: int
) -> tuple[str, bool] | None:
    """(job id, whether the message is a finished result) of one of our messages; None for other messages."""
    waiting = await asyncio.to_thread(state.desk.job_of_waiting_message, str(message_id))
    if waiting:
        return waiting, False
    try:
        message = await client.get_partial_messageable(channel_id).fetch_message(message_id)
    except discord.HTTPException:
        log.info("reaction on message %s that cannot be read", message_id)
        return None
    if client.user is None or message.author.id != client.user.id:
        return None
    job_ids = buttons.job_ids_in_components([c.to_dict() for c in message.components])  # type: ignore[misc]
    return (job_ids[0], True) if job_ids else None


async def _owner_of(client: discord.Client, state: BotState, job_id: str) -> tuple[str, JobStatus | None]:
    """The job's owner and, while RQ still has it, its status (a finished job's owner comes from its record)."""
    job = await asyncio.to_thread(state.desk.state, job_id)
    if job is not None:
        return job.spec.owner, job.status
    try:
        record = await asyncio.to_thread(image_store.get_record, state.connection, state.settings, job_id)
    except ResultExpired:
        return "", None
    return record.spec.owner, None


async def _cancel_or_delete(
    client: discord.Client, state: BotState, event: discord.RawReactionActionEvent, job_id: str, is_result: bool
) -> None:
    owner, status = await _owner_of(client, state, job_id)
    if owner != str(event.user_id):
        log.info("cross on job %s by %s ignored: the job is %s's", job_id, event.user_id, owner or "nobody")
        return
    if is_result:
        try:
            await client.get_partial_messageable(event.channel_id).get_partial_message(event.message_id).delete()
        except discord.HTTPException:
            log.exception("could not delete result message %s of job %s", event.message_id, job_id)
            return
        log.info("result message %s of job %s deleted by its owner", event.message_id, job_id)
        return
    if status not in (JobStatus.QUEUED, JobStatus.STARTED):
        return
    outcome = await asyncio.to_thread(request_cancel, state.connection, state.settings, job_id)
    log.info("cross on job %s by its owner: %s", job_id, outcome)
    if outcome == "canceled":
        job = await asyncio.to_thread(state.desk.state, job_id)
        if job is not None:
            await mark_canceled(client, job.spec)


async def _send_to_direct_messages(client: discord.Client, state: BotState, user_id: int, job_id: str) -> None:
    try:
        record, kind, picture = await stored_result(state, job_id)
    except ResultExpired as exc:
        content, file = messages.expired(str(exc)), None
    except (KeyError, ValueError):
        log.exception("unreadable record of job %s", job_id)
        return
    else:
        content = record_text(record)
        file = discord.File(io.BytesIO(picture), filename=buttons.attachment_name(job_id, kind))
    try:
        channel = await client.create_dm(discord.Object(user_id))
        if file is None:
            await channel.send(content)
        else:
            await channel.send(content, file=file)
    except discord.HTTPException:
        log.info("could not send job %s to the direct messages of %s (closed to the bot?)", job_id, user_id)
        return
    log.info("job %s sent to the direct messages of %s", job_id, user_id)
