"""Submits of the Remix and Custom Zoom boxes, handled from the box's ``custom_id`` and values alone (restart-proof):
the follow-up the button asked for, with the member's edited text through the intake (``Intake.remix``: the same
parse, moderation, member defaults and rules as /imagine), then the normal submission. A bad edit gets the parser's
error privately and nothing is queued.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
import redis

from bot.buttons import answer_refusal, follow_up, record_for
from bot.modals import PROMPT_FIELD, submitted_values
from bot.state import state_of
from bot.submission import delivery_for, requester_of, submit
from shared.discord_wire import buttons as wire_buttons
from shared.discord_wire.buttons import ButtonAction
from shared.errors import MemberFacingError
from shared.jobs.followups import custom_zoom_spec, split_zoom
from shared.jobs.spec import JobSpec

log = logging.getLogger(__name__)


def is_ours(interaction: discord.Interaction) -> bool:
    """Whether ``interaction`` is the submit of one of our boxes."""
    if interaction.type is not discord.InteractionType.modal_submit or not isinstance(interaction.data, dict):
        return False
    return wire_buttons.parse_modal_custom_id(str(interaction.data.get("custom_id", ""))) is not None


async def on_modal_submit(interaction: discord.Interaction) -> None:
    """Answer a Remix or Custom Zoom submit: the edited job queued, or the reason it is not, privately."""
    data: dict[str, Any] = dict(interaction.data) if isinstance(interaction.data, dict) else {}
    custom_id = str(data.get("custom_id", ""))
    ref = wire_buttons.parse_modal_custom_id(custom_id)
    if ref is None:
        return
    state = state_of(interaction)
    text = submitted_values(data).get(PROMPT_FIELD, "")
    try:
        spec = remixed_spec(interaction, ref, text)
    except (redis.RedisError, MemberFacingError) as exc:
        await answer_refusal(interaction, exc, f"box {custom_id}")
        return
    await submit(interaction, [spec], state.desk)
    log.info("box %s by %s -> job %s", custom_id, interaction.user.id, spec.job_id)


def remixed_spec(interaction: discord.Interaction, ref: wire_buttons.ButtonRef, text: str) -> JobSpec:
    """The job a box's submit asks for: the button's follow-up (Custom Zoom: at the text's ``--zoom``) with the
    text as its prompt, through the intake."""
    state = state_of(interaction)
    requester = requester_of(interaction)
    if ref.action is ButtonAction.CUSTOM_ZOOM:
        text, factor = split_zoom(text)
        record = record_for(state, ref.job_id)
        base = custom_zoom_spec(record, ref.index, requester.member_id, factor, delivery=delivery_for(interaction))
    else:
        base = follow_up(state, interaction, ref)
    return state.intake.remix(base, text, requester)
