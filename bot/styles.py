"""Community styles and references on Discord: /blend, /shorten, /loras (with autocomplete), the attachment options of
/imagine (``sref``, ``cref``, ``oref``) and its ``lora`` option, the parser's notes told privately, and star reactions
that build a member's ``--p`` profile.

Attachments arrive as CDN URLs: they are checked here (an image, within the download limit) and go into the prompt
as ``--sref <url>`` (etc.), so the worker fetches them through the same safe fetch as any image URL.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import discord
import redis
from discord import app_commands

from bot.state import BotState, state_of
from bot.submission import delivery_for, requester_of, submit
from shared import defaults, messages
from shared.adapters import loras_for_model
from shared.errors import MemberFacingError, ResultExpired
from shared.jobs.spec import JobKind, JobSpec
from shared.settings import Settings
from shared.stores import images as image_store
from shared.stores import profiles

log = logging.getLogger(__name__)

AUTOCOMPLETE_CHOICES = 25
"""Most choices Discord shows for an autocompleted option."""

LIKED_KINDS = frozenset({JobKind.GRID, JobKind.VARIATION, JobKind.OUTPAINT, JobKind.UPSCALE})
"""Results whose images a star reaction adds to a profile (not /describe or /shorten answers)."""


def attachment_refusal(option: str, attachment: discord.Attachment, settings: Settings) -> str | None:
    """Why an attachment option cannot be used (not an image, over the download limit), or None."""
    content_type = (attachment.content_type or "").split(";")[0].strip()
    if not content_type.startswith("image/"):
        return messages.attachment_not_image(option, attachment.filename, content_type)
    if attachment.size > settings.image_fetch_max_bytes:
        return messages.attachment_too_large(
            option, attachment.filename, attachment.size, settings.image_fetch_max_bytes
        )
    return None


def with_options(prompt: str, attachments: dict[str, discord.Attachment | None], lora: str | None) -> str:
    """``prompt`` with ``--sref <url>`` (etc.) for each given attachment option and ``--lora <value>``."""
    words = [prompt.strip()]
    for option, attachment in attachments.items():
        if attachment is not None:
            words.append(f"--{option} {attachment.url}")
    if lora and lora.strip():
        words.append(f"--lora {lora.strip()}")
    return " ".join(words)


async def tell_notes(interaction: discord.Interaction, specs: list[JobSpec]) -> None:
    """What the parser changed in the prompt (an off-list --quality rounded), told privately after the answer."""
    notes: list[str] = []
    for spec in specs:
        notes.extend(note for note in spec.extra.get("parser_notes", []) if note not in notes)
    if notes:
        await interaction.followup.send(messages.parser_notes(notes), ephemeral=True)


async def lora_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """LoRA names that fit the default model, matching what the member typed so far (after the last comma)."""
    state = state_of(interaction)
    head, _, typed = current.rpartition(",")
    typed = typed.strip().lower()
    prefix = f"{head.strip()}, " if head.strip() else ""
    names = [name for name, _ in loras_for_model(state.settings, "") if typed in name]
    names.sort(key=lambda name: (not name.startswith(typed), name))
    return [app_commands.Choice(name=prefix + name, value=prefix + name) for name in names[:AUTOCOMPLETE_CHOICES]]


@app_commands.command(name="loras", description="The LoRAs you can use with --lora")
@app_commands.describe(name="Show one LoRA (or all that contain this)")
@app_commands.autocomplete(name=lora_autocomplete)
async def loras_command(interaction: discord.Interaction, name: str | None = None) -> None:
    """/loras: the configured LoRAs that fit the default model (name, families, weight, trigger words), privately."""
    state = state_of(interaction)
    wanted = (name or "").strip().lower()
    entries = [
        (lora, entry.families, entry.weight, entry.triggers, entry.description)
        for lora, entry in loras_for_model(state.settings, "")
        if wanted in lora
    ]
    await interaction.response.send_message(
        messages.loras_list(entries, state.settings.lora_max_per_job), ephemeral=True
    )


@app_commands.command(name="blend", description="Blend 2 to 5 images into a new grid")
@app_commands.describe(
    image1="First image",
    image2="Second image",
    image3="Third image (optional)",
    image4="Fourth image (optional)",
    image5="Fifth image (optional)",
    dimensions="Shape of the result",
)
@app_commands.choices(
    dimensions=[app_commands.Choice(name=name, value=name) for name in defaults.BLEND_DIMENSIONS],
)
async def blend_command(  # noqa: PLR0917 - discord.py passes the options by keyword
    interaction: discord.Interaction,
    image1: discord.Attachment,
    image2: discord.Attachment,
    image3: discord.Attachment | None = None,
    image4: discord.Attachment | None = None,
    image5: discord.Attachment | None = None,
    dimensions: str = "square",
) -> None:
    """/blend: the images' embeddings blended by the model's image adapter (not a pixel average)."""
    state = state_of(interaction)
    requester = requester_of(interaction)
    given = [image for image in (image1, image2, image3, image4, image5) if image is not None]
    for index, image in enumerate(given, start=1):
        refusal = attachment_refusal(f"image{index}", image, state.settings)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
    try:
        member, counts = state.desk.member_and_queues(requester.member_id)
        spec = state.intake.blend(
            [image.url for image in given],
            [image.filename for image in given],
            dimensions,
            requester,
            delivery_for(interaction),
            member=member,
            rng=random.Random(),
        )
    except redis.RedisError:
        log.exception("queue unavailable for /blend by %s", requester.member_id)
        await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
        return
    except MemberFacingError as exc:
        await interaction.response.send_message(messages.prompt_error(str(exc)), ephemeral=True)
        return
    queued = await submit(interaction, [spec], state.desk, counts)
    log.info("/blend by %s of %d images: %s", requester.member_id, len(given), [s.job_id for s in queued])


@app_commands.command(name="shorten", description="Which words of a prompt matter, and shorter prompts")
@app_commands.describe(prompt="The prompt to weigh (parameters are kept)")
async def shorten_command(interaction: discord.Interaction, prompt: str) -> None:
    """/shorten: the worker weighs each word with the model's encoder; buttons imagine the shorter prompts."""
    state = state_of(interaction)
    requester = requester_of(interaction)
    try:
        member, counts = state.desk.member_and_queues(requester.member_id)
        spec = state.intake.shorten(prompt, requester, delivery_for(interaction), member)
    except redis.RedisError:
        log.exception("queue unavailable for /shorten by %s", requester.member_id)
        await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
        return
    except MemberFacingError as exc:
        await interaction.response.send_message(messages.prompt_error(str(exc)), ephemeral=True)
        return
    queued = await submit(interaction, [spec], state.desk, counts)
    log.info("/shorten by %s: %s", requester.member_id, [s.job_id for s in queued])


def profile_text(state: BotState, member: str) -> str:
    """/settings' line about the member's ``--p`` profile (its code is made on first sight of a profile)."""
    count = profiles.count(state.connection, state.settings, member)
    code = profiles.code_of(state.connection, state.settings, member) if count else ""
    return messages.profile_line(count, code)


async def like(state: BotState, member: str, job_id: str) -> int | None:
    """A star on a result: its images (a grid's four, an upscale's one) join ``member``'s profile; returns the
    profile's size, or None when the job is not an image result (or is gone)."""
    try:
        record = await asyncio.to_thread(image_store.get_record, state.connection, state.settings, job_id)
    except ResultExpired:
        return None
    if record.spec.kind not in LIKED_KINDS:
        return None
    count = 1 if record.spec.kind is JobKind.UPSCALE else len(record.seeds) or defaults.IMAGES_PER_GRID
    return await asyncio.to_thread(profiles.like, state.connection, state.settings, member, job_id, range(count))


def style_commands() -> list[Any]:
    """The commands of this module, for the command tree."""
    return [blend_command, shorten_command, loras_command]
