"""Persistent result buttons: one ``DynamicItem`` whose ``custom_id`` carries the action, the job id and the image.

Registered in ``setup_hook``, it answers clicks on messages of any age and after restarts: everything it needs is in
the ``custom_id`` and in the job's record in the shared image store. A click makes a new job owned by the clicker.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
import redis

from bot import messages
from bot.submission import delivery_for, submit
from shared import defaults
from shared.discord_wire import format as discord_format
from shared.discord_wire.format import ButtonAction, ButtonRef
from shared.jobs.followups import (
    described_prompt,
    make_square_spec,
    pan_spec,
    reroll_spec,
    upscale_spec,
    variation_spec,
    zoom_out_spec,
)
from shared.jobs.spec import JobSpec
from shared.model_info import native_resolution, size_multiple
from shared.prompt.parser import parse
from shared.prompt.resolve import build_jobs
from shared.queue.client import job_state
from shared.stores import images as image_store

if TYPE_CHECKING:
    from bot.client import ImagineClient

log = logging.getLogger(__name__)


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=discord_format.CUSTOM_ID_TEMPLATE):
    """Any result button (U<n>, V<n>, re-roll, Upscale/Vary (Subtle/Creative/Strong), Zoom Out, Make Square, pans)."""

    def __init__(self, item: discord.ui.Button[Any], ref: ButtonRef) -> None:
        super().__init__(item)
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        if not isinstance(item, discord.ui.Button):
            raise TypeError(f"result buttons must be buttons, got {type(item).__name__}")
        return cls(item, discord_format.parse_custom_id(match.string))

    async def callback(self, interaction: discord.Interaction) -> None:
        client: ImagineClient = interaction.client  # type: ignore[assignment]
        try:
            spec = follow_up(client, interaction, self.ref)
        except image_store.ImageExpired as exc:
            await interaction.response.send_message(messages.expired(str(exc)), ephemeral=True)
            return
        except redis.RedisError:
            log.exception("queue unavailable for click %s", self.custom_id)
            await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
            return
        except ValueError as exc:  # the record cannot give this job (e.g. Make Square of a square image): say why
            log.info("cannot make a job from click %s: %s", self.custom_id, exc)
            await interaction.response.send_message(messages.cannot_follow_up(str(exc)), ephemeral=True)
            return
        await submit(interaction, [spec], client.desk)
        log.info("click %s by %s -> job %s", self.custom_id, interaction.user.id, spec.job_id)


def follow_up(client: ImagineClient, interaction: discord.Interaction, ref: ButtonRef) -> JobSpec:
    """The new job a click asks for, owned by the clicker and delivered to the click's channel."""
    record = record_for(client, ref.job_id)
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
    if ref.action is ButtonAction.DESCRIBE_PICK:
        text = described_prompt(record, ref.index)
        (spec, *_) = build_jobs(parse(text), settings=client.settings, owner=owner, delivery=delivery)
        return spec
    if ref.action in discord_format.ZOOM_BUTTONS:
        factor, _ = discord_format.ZOOM_BUTTONS[ref.action]
        return zoom_out_spec(record, ref.index, owner, factor, delivery=delivery)
    if ref.action is ButtonAction.MAKE_SQUARE or ref.action in discord_format.PAN_BUTTONS:
        model = client.settings.resolve_model(str(record.get("spec", {}).get("model", "")) or None)
        native, multiple = native_resolution(model), size_multiple(model)
        if ref.action is ButtonAction.MAKE_SQUARE:
            return make_square_spec(record, ref.index, owner, native=native, multiple=multiple, delivery=delivery)
        direction, _ = discord_format.PAN_BUTTONS[ref.action]
        return pan_spec(record, ref.index, owner, direction, native=native, multiple=multiple, delivery=delivery)
    return reroll_spec(record, owner, delivery=delivery)


def record_for(client: ImagineClient, job_id: str) -> dict[str, Any]:
    """The job's stored record; in the moment between a result's post and its record's store (or when only the
    record expired), the spec from the RQ job, provided its images are still stored."""
    try:
        return image_store.get_record(client.connection, client.settings, job_id)
    except image_store.ImageExpired:
        state = job_state(client.connection, job_id)
        if state is None or not state.spec:
            raise
        image_store.get_image(client.connection, client.settings, job_id, 0)
        return {"job_id": job_id, "spec": state.spec}
