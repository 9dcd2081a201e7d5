"""The moderators' Approve and Reject buttons under results held for review (``shared.review``), as a persistent
``DynamicItem``: everything a click needs is in its ``custom_id`` and in Redis, so they work after restarts.

Approve: exactly one click wins the result (a Lua transition in ``shared.review``); the bot that won posts the stored
result (``shared.stores.images``, its provenance stamped like the worker's) to the member's channel with its buttons,
marks it posted under the same once-only key the worker's Discord publisher uses, removes the member's waiting
message and records the decision. The bot posts it rather than a worker because the decision and the post then
happen in one process and one place that owns "exactly once": no queue hop, no worker needed to be running, and a
bot that dies between the two leaves the result ``delivering`` for a lease, after which another Approve takes over
and the posted-once key stops a second post.

Reject: the member's waiting message says the moderators rejected it; the decision goes to the audit log.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import Any

import discord
from PIL import Image

from bot.commands import _buttons_view, stored_result
from bot.state import BotState, state_of
from bot.submission import mentions_for
from shared import messages, provenance, review
from shared.discord_wire import buttons, results
from shared.errors import ResultExpired
from shared.i18n import set_locale, use_locale
from shared.jobs.spec import JobKind
from shared.keys import keys_for
from shared.stores import images as image_store

log = logging.getLogger(__name__)


class ReviewButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=review.CUSTOM_ID_TEMPLATE):
    """Approve or Reject under a held result in the staff channel."""

    def __init__(self, item: discord.ui.Button[Any], action: str, job_id: str) -> None:
        super().__init__(item)
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReviewButton:
        if not isinstance(item, discord.ui.Button):
            raise TypeError(f"review buttons must be buttons, got {type(item).__name__}")
        return cls(item, match["action"], match["job_id"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        set_locale(str(interaction.locale))  # the moderator's own language for the answers below
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        permissions = interaction.permissions
        roles = [str(role.id) for role in getattr(interaction.user, "roles", [])]
        moderator = str(interaction.user.id)
        if not review.is_moderator(
            state.settings, moderator, roles, permissions.manage_guild or permissions.administrator
        ):
            await interaction.response.send_message(messages.NOT_MODERATOR, ephemeral=True)
            return
        if self.action == "approve":
            outcome = await asyncio.to_thread(
                review.begin_approve, state.connection, state.settings, self.job_id, moderator
            )
        else:
            outcome = await asyncio.to_thread(review.reject, state.connection, state.settings, self.job_id, moderator)
        if outcome != "ok":
            await interaction.response.send_message(messages.review_already(self.job_id, outcome), ephemeral=True)
            return
        await interaction.response.defer()
        if self.action == "approve":
            await deliver_approved(interaction.client, state, self.job_id, moderator)
        else:
            await tell_rejected(interaction.client, state, self.job_id)
        await _mark_staff_message(interaction, self.job_id, moderator, self.action == "approve")
        log.info("review of job %s: %s by %s", self.job_id, self.action, moderator)


async def deliver_approved(client: discord.Client, state: BotState, job_id: str, moderator: str) -> None:
    """Post the approved result to the member's channel once, remove their waiting message, finish the review."""
    held = await asyncio.to_thread(review.get, state.connection, state.settings, job_id)
    if held is None:
        return
    mark = keys_for(state.settings).discord_posted(job_id)
    posted = await asyncio.to_thread(state.connection.get, mark)
    if posted is None:
        try:
            record, kind, picture = await stored_result(state, job_id)
        except ResultExpired:
            log.warning("approved job %s is no longer stored; the member is told", job_id)
            await _edit_waiting(client, state, held, messages.REJECTED)
            return
        spec = record.spec
        if kind not in (JobKind.UPSCALE, JobKind.DESCRIBE):
            # The grid composed here carries the same provenance as the worker's (record, source type, C2PA).
            image = await asyncio.to_thread(_open, picture)
            picture = await asyncio.to_thread(provenance.stamp, image, record, state.settings)
        with use_locale(spec.delivery.locale):
            line, components = results.result_message(spec, record.notes, record.size)
        channel = client.get_partial_messageable(int(held.channel_id))
        message = await channel.send(
            line,
            file=discord.File(io.BytesIO(picture), filename=buttons.attachment_name(job_id, kind)),
            view=_buttons_view(components),
            allowed_mentions=mentions_for(spec.owner),
        )
        posted_id = str(message.id)
        await asyncio.to_thread(state.connection.set, mark, posted_id, ex=state.settings.image_ttl_s)
    else:
        posted_id = posted.decode() if isinstance(posted, bytes) else str(posted)
        log.info("approved job %s was posted already as message %s", job_id, posted_id)
    await _delete_waiting(client, held)
    await asyncio.to_thread(review.finish_approve, state.connection, state.settings, job_id, moderator, posted_id)


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


async def tell_rejected(client: discord.Client, state: BotState, job_id: str) -> None:
    """The member's waiting message says the moderators rejected the result."""
    held = await asyncio.to_thread(review.get, state.connection, state.settings, job_id)
    if held is not None:
        await _edit_waiting(client, state, held, messages.REJECTED)


async def _edit_waiting(client: discord.Client, state: BotState, held: review.Held, reason_name: str) -> None:
    """Turn the member's waiting message into the failed line with ``reason_name`` (posted anew if it is gone)."""
    try:
        record = await asyncio.to_thread(image_store.get_record, state.connection, state.settings, held.job_id)
    except ResultExpired:
        return
    spec = record.spec
    with use_locale(spec.delivery.locale):
        content = messages.failed_line(spec.prompt, spec.owner, reason_name)
    channel = client.get_partial_messageable(int(held.channel_id))
    try:
        if held.waiting_message_id:
            await channel.get_partial_message(int(held.waiting_message_id)).edit(
                content=content, allowed_mentions=mentions_for(spec.owner), attachments=[]
            )
            return
    except discord.NotFound:
        log.info("waiting message of job %s is gone; posting the line", held.job_id)
    await channel.send(content, allowed_mentions=mentions_for(spec.owner))


async def _delete_waiting(client: discord.Client, held: review.Held) -> None:
    if not held.waiting_message_id:
        return
    try:
        channel = client.get_partial_messageable(int(held.channel_id))
        await channel.get_partial_message(int(held.waiting_message_id)).delete()
    except discord.NotFound:
        pass
    except discord.HTTPException:
        log.warning("could not remove the waiting message of approved job %s", held.job_id, exc_info=True)


async def _mark_staff_message(interaction: discord.Interaction, job_id: str, moderator: str, approved: bool) -> None:
    """The staff message says who decided, without its buttons."""
    message = interaction.message
    if message is None:
        return
    try:
        await message.edit(
            content=messages.review_decided(job_id, moderator, approved),
            view=None,
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except discord.HTTPException:
        log.warning("could not mark the staff message of job %s", job_id, exc_info=True)
