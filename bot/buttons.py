"""Persistent result buttons: one ``DynamicItem`` whose ``custom_id`` carries the action, the job id and the image.

Registered in ``setup_hook``, it answers clicks on messages of any age and after restarts: everything it needs is in
the ``custom_id`` and in the job's record in the shared image store. A click makes a new job owned by the clicker.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
import redis

from bot.modals import PromptModal
from bot.state import BotState, state_of
from bot.submission import delivery_for, requester_of, submit
from shared import defaults, messages, rules
from shared.discord_wire import buttons as wire_buttons
from shared.discord_wire.buttons import ButtonAction, ButtonRef
from shared.errors import MemberFacingError, PromptError, ResultExpired, RuleRefused
from shared.i18n import set_locale
from shared.jobs.followups import (
    custom_zoom_spec,
    described_prompt,
    enhance_spec,
    make_square_spec,
    pan_spec,
    reroll_spec,
    shortened_prompt,
    upscale_spec,
    variation_spec,
    zoom_out_spec,
)
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobSpec
from shared.model_info import native_resolution, size_multiple
from shared.queue.client import job_state
from shared.signing import RegionGrant, region_url
from shared.stores import images as image_store

log = logging.getLogger(__name__)


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=wire_buttons.CUSTOM_ID_TEMPLATE):
    """Any result button (U<n>, V<n>, re-roll, Upscale/Vary (Subtle/Creative/Strong/Region), Zoom Out, Custom Zoom,
    Make Square, pans, the /describe and /shorten picks, Enhance); with Remix mode on, the variation, re-roll, zoom and
    pan buttons open the prompt box first."""

    def __init__(self, item: discord.ui.Button[Any], ref: ButtonRef) -> None:
        super().__init__(item)
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        if not isinstance(item, discord.ui.Button):
            raise TypeError(f"result buttons must be buttons, got {type(item).__name__}")
        return cls(item, wire_buttons.parse_custom_id(match.string))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        set_locale(str(interaction.locale))  # answers and the new job's lines in the clicker's language
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        ref = self.ref
        if ref.action is ButtonAction.VARY_REGION:
            await send_region_link(state, interaction, ref)
            return
        try:
            spec = follow_up(state, interaction, ref)
            # The server's rules for the clicker, here (this channel, their roles); the worker checks them again.
            rules.check_spec(state.connection, state.settings, spec)
            boxed = ref.action is ButtonAction.CUSTOM_ZOOM or (
                ref.action in REMIXABLE and state.intake.member(requester_of(interaction)).remix
            )
        except (redis.RedisError, MemberFacingError) as exc:
            await answer_refusal(interaction, exc, self.custom_id)
            return
        if boxed:  # Remix mode or Custom Zoom: the prompt first, the job on submit (bot.remix)
            await interaction.response.send_modal(PromptModal(ref, prefill(ref, spec)))
            log.info("click %s by %s opened a prompt box", self.custom_id, interaction.user.id)
            return
        await submit(interaction, [spec], state.desk)
        log.info("click %s by %s -> job %s", self.custom_id, interaction.user.id, spec.job_id)


REMIXABLE = frozenset(
    {
        ButtonAction.VARY,
        ButtonAction.REROLL,
        ButtonAction.VARY_SUBTLE,
        ButtonAction.VARY_STRONG,
        *wire_buttons.ZOOM_BUTTONS,
        *wire_buttons.PAN_BUTTONS,
    }
)
"""Buttons that open the Remix box first when the member has Remix mode on (Midjourney's set)."""


def prefill(ref: ButtonRef, spec: JobSpec) -> str:
    """The text a box opens with: the job's prompt, and for Custom Zoom the default ``--zoom``."""
    if ref.action is ButtonAction.CUSTOM_ZOOM:
        return f"{spec.prompt} --zoom {defaults.CUSTOM_ZOOM_DEFAULT:g}"
    return spec.prompt


async def answer_refusal(interaction: discord.Interaction, exc: BaseException, what: str) -> None:
    """The private answer to a click or box whose job cannot be made (``exc``: Redis down, or member-facing)."""
    if isinstance(exc, redis.RedisError):
        log.error("queue unavailable for %s", what, exc_info=exc)
        await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
    elif isinstance(exc, ResultExpired):
        await interaction.response.send_message(messages.expired(str(exc)), ephemeral=True)
    elif isinstance(exc, RuleRefused):  # a server rule: its own sentence names the rule and what is allowed
        await interaction.response.send_message(str(exc), ephemeral=True)
    elif isinstance(exc, PromptError):  # text refused by the intake (a /describe pick, a Remix edit)
        await interaction.response.send_message(messages.prompt_error(str(exc)), ephemeral=True)
    else:  # the record cannot give this job (e.g. Make Square of a square image)
        log.info("cannot make a job from %s: %s", what, exc)
        await interaction.response.send_message(messages.cannot_follow_up(str(exc)), ephemeral=True)


async def send_region_link(state: BotState, interaction: discord.Interaction, ref: ButtonRef) -> None:
    """Vary (Region): a private, short-lived link to the web companion's mask editor, for this member and image."""
    settings = state.settings
    if not settings.web_base_url or not settings.web_secret.get_secret_value():
        await interaction.response.send_message(messages.NO_WEB_COMPANION, ephemeral=True)
        return
    try:
        record_for(state, ref.job_id)  # the image must still be stored
    except (redis.RedisError, MemberFacingError) as exc:
        await answer_refusal(interaction, exc, f"Vary (Region) of {ref.job_id}")
        return
    grant = RegionGrant(
        member=str(interaction.user.id),
        job_id=ref.job_id,
        index=ref.index,
        channel_id=str(interaction.channel_id or ""),
        guild_id=str(interaction.guild_id or ""),
    )
    url = region_url(settings, grant)
    await interaction.response.send_message(messages.region_link(url, settings.web_link_ttl_s), ephemeral=True)
    log.info("Vary (Region) link for job %s given to %s", ref.job_id, interaction.user.id)


def follow_up(state: BotState, interaction: discord.Interaction, ref: ButtonRef) -> JobSpec:
    """The new job a click asks for, owned by the clicker and delivered to the click's channel."""
    record = record_for(state, ref.job_id)
    owner = str(interaction.user.id)
    delivery = delivery_for(interaction)
    if ref.action is ButtonAction.UPSCALE:
        return upscale_spec(record, ref.index, owner, defaults.DEFAULT_UPSCALE_MODE, delivery=delivery)
    if ref.action is ButtonAction.UPSCALE_SUBTLE:
        return upscale_spec(record, ref.index, owner, "subtle", delivery=delivery)
    if ref.action is ButtonAction.UPSCALE_CREATIVE:
        return upscale_spec(record, ref.index, owner, "creative", delivery=delivery)
    if ref.action is ButtonAction.VARY_SUBTLE:
        return variation_spec(record, ref.index, owner, defaults.VARY_SUBTLE_STRENGTH, delivery=delivery)
    if ref.action in (ButtonAction.VARY, ButtonAction.VARY_STRONG):
        return variation_spec(record, ref.index, owner, defaults.VARY_STRONG_STRENGTH, delivery=delivery)
    if ref.action in (ButtonAction.DESCRIBE_PICK, ButtonAction.SHORTEN_PICK):
        # The picked prompt is text like any other: the member's options, moderation, defaults and rules apply.
        pick = described_prompt if ref.action is ButtonAction.DESCRIBE_PICK else shortened_prompt
        (spec, *_) = state.intake.jobs_from_text(pick(record, ref.index), requester_of(interaction), delivery)
        return spec
    if ref.action is ButtonAction.CUSTOM_ZOOM:  # the box's --zoom decides; this is the default's job
        return custom_zoom_spec(record, ref.index, owner, defaults.CUSTOM_ZOOM_DEFAULT, delivery=delivery)
    if ref.action is ButtonAction.ENHANCE:
        settings = state.settings
        return enhance_spec(
            record,
            owner,
            base_steps=settings.steps,
            base_guidance=settings.guidance,
            draft_lora=settings.draft_lora,
            delivery=delivery,
        )
    if ref.action in wire_buttons.ZOOM_BUTTONS:
        factor, _ = wire_buttons.ZOOM_BUTTONS[ref.action]
        return zoom_out_spec(record, ref.index, owner, factor, delivery=delivery)
    if ref.action is ButtonAction.MAKE_SQUARE or ref.action in wire_buttons.PAN_BUTTONS:
        model = state.settings.resolve_model(record.spec.model or None)
        native, multiple = native_resolution(model), size_multiple(model)
        if ref.action is ButtonAction.MAKE_SQUARE:
            return make_square_spec(record, ref.index, owner, native=native, multiple=multiple, delivery=delivery)
        direction, _ = wire_buttons.PAN_BUTTONS[ref.action]
        return pan_spec(record, ref.index, owner, direction, native=native, multiple=multiple, delivery=delivery)
    return reroll_spec(record, owner, delivery=delivery)


def record_for(state: BotState, job_id: str) -> JobRecord:
    """The job's stored record; in the moment between a result's post and its record's store (or when only the
    record expired), a record holding the spec from the RQ job, provided its images are still stored."""
    try:
        return image_store.get_record(state.connection, state.settings, job_id)
    except ResultExpired:
        job = job_state(state.connection, job_id)
        if job is None:
            raise
        image_store.get_image(state.connection, state.settings, job_id, 0)
        return JobRecord(job_id=job_id, spec=job.spec)
