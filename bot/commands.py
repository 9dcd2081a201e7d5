"""Slash commands (/imagine, /describe, /settings, /prefer, /info, /show, /cancel, /record, /stealth, /public) and the
"Job record" message command."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import random
import re
from collections.abc import Callable
from typing import Any

import discord
import redis
from discord import app_commands
from PIL import Image

from bot import styles
from bot.state import BotState, state_of
from bot.submission import delivery_for, mentions_for, requester_of, submit
from shared import defaults, messages, provenance
from shared.discord_wire import buttons, results
from shared.errors import MemberFacingError, ResultExpired, RuleRefused, SettingRefused
from shared.i18n import use_locale
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobKind, JobSpec, JobStatus
from shared.queue.client import request_cancel
from shared.settings import Settings
from shared.stores import images as image_store
from shared.stores import member_settings, profiles
from shared.stores.member_settings import MemberSettings

log = logging.getLogger(__name__)


async def imagine(
    interaction: discord.Interaction,
    prompt: str,
    attachments: dict[str, discord.Attachment | None] | None = None,
    lora: str | None = None,
) -> None:
    """/imagine: the prompt through the intake (``shared.intake``), one waiting message and job per permutation and
    repeat; a refused prompt is answered privately with the reason. ``attachments`` (``sref``/``cref``/``oref``
    options) and ``lora`` join the prompt as parameters (``bot.styles``)."""
    state = state_of(interaction)
    requester = requester_of(interaction)
    for option, attachment in (attachments or {}).items():
        refusal = styles.attachment_refusal(option, attachment, state.settings) if attachment is not None else None
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
    prompt = styles.with_options(prompt, attachments or {}, lora)
    async with state.desk.answering():  # nothing is enqueued while answers are being made
        try:
            # One Redis round trip for every /imagine of this loop turn (bot/ack.py).
            views = await state.desk.reads.read(requester.member_id)
            specs = state.intake.jobs_from_text(
                prompt, requester, delivery_for(interaction), member=views[1].member, rng=random.Random()
            )
        except redis.RedisError:
            log.exception("queue unavailable for /imagine by %s", requester.member_id)
            await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
            return
        except RuleRefused as exc:  # a server rule: its sentence names the rule and what is allowed here
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        except MemberFacingError as exc:
            await interaction.response.send_message(
                messages.prompt_error(str(exc), views[1].member.options), ephemeral=True
            )
            return
    queued = await submit(interaction, specs, state.desk, views=views)
    if queued:
        await styles.tell_notes(interaction, queued)
    log.info("/imagine by %s: %d job(s) %s", requester.member_id, len(queued), [spec.job_id for spec in queued])


def settings_command(settings: Settings) -> app_commands.Command[Any, Any, Any]:
    """/settings: show or change the member's defaults (choices come from ``settings`` and ``shared.defaults``)."""

    @app_commands.command(name="settings", description="Your defaults: stylize, lane, aspect ratio, prompt suffix")
    @app_commands.describe(
        stylize="Stylize preset added as --stylize",
        lane="Speed lane of your jobs",
        aspect="Aspect ratio added as --ar",
        suffix="Text added to every prompt (words and/or --parameters)",
        remix="Remix mode: edit the prompt before variations, re-rolls, zooms and pans",
        reset="Forget all your defaults",
        clear_profile="Forget the images you liked (your --p profile)",
    )
    @app_commands.choices(
        stylize=[app_commands.Choice(name=name, value=name) for name in defaults.STYLIZE_PRESETS],
        lane=[app_commands.Choice(name=name, value=name) for name in settings.lanes],
        aspect=[app_commands.Choice(name=ratio, value=ratio) for ratio in defaults.ASPECT_RATIOS],
    )
    async def command(  # noqa: PLR0917 - discord.py passes the options by keyword
        interaction: discord.Interaction,
        stylize: str | None = None,
        lane: str | None = None,
        aspect: str | None = None,
        suffix: str | None = None,
        remix: bool | None = None,
        reset: bool = False,
        clear_profile: bool = False,
    ) -> None:
        state = state_of(interaction)
        member = str(interaction.user.id)
        cleared = (
            await asyncio.to_thread(profiles.clear, state.connection, state.settings, member) if clear_profile else None
        )
        profile = await asyncio.to_thread(styles.profile_text, state, member)
        if cleared is not None:
            profile = f"{messages.profile_cleared(cleared)} {profile}"

        def answer(updated: MemberSettings) -> str:
            return messages.with_profile(_defaults_text(updated), profile)

        changes: dict[str, object] = {
            key: value
            for key, value in {"stylize": stylize, "lane": lane, "aspect": aspect, "suffix": suffix}.items()
            if value is not None
        }
        if remix is not None:
            changes["remix"] = remix

        def change(current: MemberSettings) -> MemberSettings:
            if reset:  # the /prefer options are kept: they are named, and only used when a prompt names them
                current = MemberSettings(options=current.options)
            return MemberSettings.from_dict({**current.to_dict(), **changes})

        await _change_settings(interaction, change, answer)

    return command


def lane_commands(settings: Settings) -> list[app_commands.Command[Any, Any, Any]]:
    """/turbo, /fast, /relax (one per served lane, as in Midjourney): make that lane the member's default."""
    made: list[app_commands.Command[Any, Any, Any]] = []
    for lane in settings.lanes:
        if not _COMMAND_NAME.fullmatch(lane) or lane in _RESERVED_NAMES:
            log.warning("lane %r gets no /%s shortcut: not a free Discord command name", lane, lane)
            continue

        made.append(_lane_command(lane))
    return made


def _lane_command(lane: str) -> app_commands.Command[Any, Any, Any]:
    async def switch(interaction: discord.Interaction) -> None:
        await _change_settings(interaction, lambda current: dataclasses.replace(current, lane=lane), _defaults_text)

    return app_commands.Command(name=lane, description=f"Your jobs go to the {lane} lane", callback=switch)


def prefer_commands() -> app_commands.Group:
    """/prefer option set|list and /prefer suffix, as in Midjourney (stored with the /settings defaults)."""
    prefer = app_commands.Group(name="prefer", description="Your named parameter bundles and prompt suffix")
    option = app_commands.Group(
        name="option", description="Named bundles: --name in a prompt stands for them", parent=prefer
    )

    @option.command(name="set", description="Save --name as a bundle of words and/or parameters (empty value: delete)")
    @app_commands.describe(option="The name, used as --name in prompts", value="e.g. --ar 16:9 --s 250; empty deletes")
    async def option_set(interaction: discord.Interaction, option: str, value: str = "") -> None:
        await _change_settings(interaction, lambda current: current.with_option(option, value))

    @option.command(name="list", description="Your saved options")
    async def option_list(interaction: discord.Interaction) -> None:
        state = state_of(interaction)
        current = await asyncio.to_thread(
            member_settings.load, state.connection, state.settings, str(interaction.user.id)
        )
        await interaction.response.send_message(_options_text(current), ephemeral=True)

    @prefer.command(name="remix", description="Remix mode on or off: edit the prompt before variations, zooms, pans")
    async def remix(interaction: discord.Interaction) -> None:
        await _change_settings(
            interaction,
            lambda current: dataclasses.replace(current, remix=not current.remix),
            lambda updated: messages.REMIX_ON if updated.remix else messages.REMIX_OFF,
        )

    @prefer.command(name="suffix", description="Text added to every prompt (empty: none)")
    @app_commands.describe(value="Words and/or --parameters; empty clears the suffix")
    async def suffix(interaction: discord.Interaction, value: str = "") -> None:
        await _change_settings(interaction, lambda current: dataclasses.replace(current, suffix=value.strip()))

    return prefer


_COMMAND_NAME = re.compile(r"[a-z0-9_-]{1,32}")
"""What Discord accepts as a slash command name (lowercase)."""
_RESERVED_NAMES = frozenset(
    {"imagine", "describe", "settings", "prefer", "info", "cancel", "show", "record", "stealth", "public"}
    | {"rules", "quota", "blend", "shorten", "loras"}
    | {"queue", "ban", "unban", "limits", "workers"}
)
"""Command names the bot already uses: a lane with one of these names gets no shortcut."""


def _defaults_text(member: MemberSettings) -> str:
    fields = {key: value for key, value in member.to_dict().items() if key != "options"}
    return messages.member_defaults(fields, len(member.options))


def _options_text(member: MemberSettings) -> str:
    return messages.member_options(member.options, member.suffix)


async def _change_settings(
    interaction: discord.Interaction,
    change: Callable[[MemberSettings], MemberSettings],
    answer: Callable[[MemberSettings], str] = _options_text,
) -> None:
    """Load the member's settings, apply ``change``, validate and save, and ``answer`` with the result privately; a bad
    value is answered with its error."""
    state = state_of(interaction)
    owner = str(interaction.user.id)
    try:
        current = await asyncio.to_thread(member_settings.load, state.connection, state.settings, owner)
        updated = change(current)
        await asyncio.to_thread(member_settings.save, state.connection, state.settings, owner, updated)
    except SettingRefused as exc:
        await interaction.response.send_message(messages.not_saved(str(exc)), ephemeral=True)
        return
    await interaction.response.send_message(answer(updated), ephemeral=True)


@app_commands.command(name="stealth", description="Keep your results out of the server's shared gallery")
async def stealth_command(interaction: discord.Interaction) -> None:
    """/stealth: the member's results stay out of the web companion's shared gallery (``shared.stores.gallery``)."""
    await _change_settings(
        interaction, lambda current: dataclasses.replace(current, stealth=True), lambda _: messages.STEALTH_ON
    )


@app_commands.command(name="public", description="Show your new results in the server's shared gallery")
async def public_command(interaction: discord.Interaction) -> None:
    """/public: the member's new results appear in the shared gallery (those stored in stealth never do)."""
    await _change_settings(
        interaction, lambda current: dataclasses.replace(current, stealth=False), lambda _: messages.PUBLIC_ON
    )


@app_commands.command(name="imagine", description="Make four images from a prompt")
@app_commands.describe(
    prompt="What to imagine, with --parameters at the end",
    sref="A style reference image (as --sref)",
    cref="A character reference image (as --cref)",
    oref="An omni reference image: put this in the image (as --oref)",
    lora="A LoRA (as --lora name or name:0.8; see /loras)",
)
@app_commands.autocomplete(lora=styles.lora_autocomplete)
async def imagine_command(  # noqa: PLR0917 - discord.py passes the options by keyword
    interaction: discord.Interaction,
    prompt: str,
    sref: discord.Attachment | None = None,
    cref: discord.Attachment | None = None,
    oref: discord.Attachment | None = None,
    lora: str | None = None,
) -> None:
    """The /imagine slash command."""
    await imagine(interaction, prompt, {"sref": sref, "cref": cref, "oref": oref}, lora)


@app_commands.command(name="describe", description="Four prompts that would make an image like yours")
@app_commands.describe(image="The image to describe (PNG, JPEG or WebP)")
async def describe_command(interaction: discord.Interaction, image: discord.Attachment) -> None:
    """/describe: the image goes through the queue to a worker, whose alignment scorer ranks candidate prompts."""
    state = state_of(interaction)
    requester = requester_of(interaction)
    content_type = (image.content_type or "").split(";")[0].strip()
    if not content_type.startswith("image/"):
        await interaction.response.send_message(messages.not_an_image(image.filename, content_type), ephemeral=True)
        return
    if image.size > state.settings.image_fetch_max_bytes:
        limit = state.settings.image_fetch_max_bytes
        await interaction.response.send_message(
            messages.image_too_large(image.filename, image.size, limit), ephemeral=True
        )
        return
    try:
        member, counts = state.desk.member_and_queues(requester.member_id)
        spec = state.intake.describe(image.url, image.filename, requester, delivery_for(interaction), member)
    except redis.RedisError:
        log.exception("queue unavailable for /describe by %s", requester.member_id)
        await interaction.response.send_message(messages.QUEUE_DOWN, ephemeral=True)
        return
    except MemberFacingError as exc:  # e.g. the member's default lane is no longer served
        await interaction.response.send_message(messages.prompt_error(str(exc)), ephemeral=True)
        return
    queued = await submit(interaction, [spec], state.desk, counts)
    log.info("/describe by %s: %s", requester.member_id, [s.job_id for s in queued])


@app_commands.command(name="info", description="Your running and queued jobs")
async def info_command(interaction: discord.Interaction) -> None:
    """/info: the member's running and queued jobs with queue positions, and totals."""
    state = state_of(interaction)
    owner = str(interaction.user.id)
    jobs = await asyncio.to_thread(state.desk.active_jobs, owner)
    totals = await asyncio.to_thread(state.desk.totals, owner)
    lines = [
        messages.info_line(
            job.job_id,
            running=job.status is JobStatus.STARTED,
            progress=job.progress.fraction,
            position=position,
            lane=job.spec.lane,
            prompt=job.spec.prompt,
        )
        for job, position in jobs[: defaults.INFO_JOBS_SHOWN]
    ]
    await interaction.response.send_message(messages.info(lines, totals), ephemeral=True)


@app_commands.command(name="cancel", description="Cancel one of your jobs (default: your newest)")
@app_commands.describe(job_id="The job to cancel; your newest running or queued job when empty")
async def cancel_command(interaction: discord.Interaction, job_id: str | None = None) -> None:
    """/cancel: a queued job leaves the queue now, a running one stops at its next step; only your own."""
    state = state_of(interaction)
    owner = str(interaction.user.id)
    target = (job_id or "").strip()
    if not target:
        found = await asyncio.to_thread(state.desk.latest_active, owner)
        target = found or ""
    if not target:
        await interaction.response.send_message(messages.NO_ACTIVE_JOBS, ephemeral=True)
        return
    job = await asyncio.to_thread(state.desk.state, target)
    if job is None:
        await interaction.response.send_message(messages.unknown_job(target), ephemeral=True)
        return
    if job.spec.owner != owner:
        await interaction.response.send_message(messages.not_yours(target), ephemeral=True)
        return
    outcome = await asyncio.to_thread(request_cancel, state.connection, state.settings, target)
    await interaction.response.send_message(messages.cancel_outcome(target, outcome), ephemeral=True)
    if outcome == "canceled":
        await mark_canceled(interaction.client, job.spec)


async def mark_canceled(client: discord.Client, spec: JobSpec, reason: str = "") -> None:
    """A job canceled while queued never reaches a worker, so the bot updates its waiting message itself (``reason``:
    member-facing; default ``messages.CANCELED`` in the member's language)."""
    delivery = spec.delivery
    with use_locale(delivery.locale):
        reason = reason or messages.CANCELED
    if delivery.kind != "discord" or not (delivery.channel_id and delivery.waiting_message_id):
        return
    try:
        channel = client.get_partial_messageable(int(delivery.channel_id))
        await channel.get_partial_message(int(delivery.waiting_message_id)).edit(
            content=messages.failed_line(spec.prompt, spec.owner, reason),
            allowed_mentions=mentions_for(spec.owner),
        )
    except (discord.HTTPException, ValueError):
        log.exception("could not mark the waiting message of canceled job %s", spec.job_id)


@app_commands.command(name="show", description="Post a finished job again, with working buttons")
@app_commands.describe(job_id="The job id (from /info, /record or the file name)")
async def show_command(interaction: discord.Interaction, job_id: str) -> None:
    """/show: re-post a finished job's result from the shared image store."""
    state = state_of(interaction)
    job_id = job_id.strip()
    try:
        record, kind, picture = await stored_result(state, job_id)
    except ResultExpired as exc:
        await interaction.response.send_message(messages.expired(str(exc)), ephemeral=True)
        return
    except (KeyError, ValueError):
        log.exception("unreadable record of job %s", job_id)
        await interaction.response.send_message(messages.unknown_job(job_id), ephemeral=True)
        return
    await interaction.response.defer(thinking=True)
    line, components = results.result_message(record.spec, record.notes, record.size, record.engine)
    await interaction.followup.send(
        line,
        file=discord.File(io.BytesIO(picture), filename=buttons.attachment_name(job_id, kind)),
        view=_buttons_view(components),
        allowed_mentions=discord.AllowedMentions.none(),
    )


async def stored_result(state: BotState, job_id: str) -> tuple[JobRecord, JobKind, bytes]:
    """A finished job's record, kind and picture (the upscale, or the 2x2 grid) from the shared image store.

    Raises ``ResultExpired`` when it is gone, ``KeyError``/``ValueError`` when the record is unreadable.
    """
    record = await asyncio.to_thread(image_store.get_record, state.connection, state.settings, job_id)
    kind = record.spec.kind
    count = 1 if kind in (JobKind.UPSCALE, JobKind.DESCRIBE, JobKind.SHORTEN) else defaults.IMAGES_PER_GRID
    pngs = [
        await asyncio.to_thread(image_store.get_image, state.connection, state.settings, job_id, index)
        for index in range(count)
    ]
    if count == 1:
        return record, kind, pngs[0]
    grid = await asyncio.to_thread(_grid_png, pngs)
    # The composed grid carries the same provenance as the worker's images (record, source type, C2PA if set).
    image = await asyncio.to_thread(lambda: Image.open(io.BytesIO(grid)).convert("RGB"))
    picture = await asyncio.to_thread(provenance.stamp, image, record, state.settings)
    return record, kind, picture


def _grid_png(pngs: list[bytes]) -> bytes:
    """The 2x2 grid of four stored images (PNG), as the worker composed it."""
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in pngs]
    width, height = images[0].size
    grid = Image.new("RGB", (2 * width, 2 * height))
    for index, image in enumerate(images):
        grid.paste(image.resize((width, height)), ((index % 2) * width, (index // 2) * height))
    out = io.BytesIO()
    grid.save(out, format="PNG")
    return out.getvalue()


def _buttons_view(components: list[dict[str, Any]]) -> discord.ui.View:
    """The component JSON the worker attaches, as a discord.py view (persistent: no timeout)."""
    view = discord.ui.View(timeout=None)
    for row_index, row in enumerate(components):
        for button in row["components"]:
            emoji = button.get("emoji", {}).get("name")
            view.add_item(
                discord.ui.Button(
                    style=discord.ButtonStyle.secondary,
                    label=button.get("label"),
                    emoji=emoji,
                    custom_id=button["custom_id"],
                    row=row_index,
                )
            )
    return view


async def send_record(interaction: discord.Interaction, job_id: str) -> None:
    """The job's reproducibility record (job id, seeds, model, resolved parameters), privately."""
    state = state_of(interaction)
    try:
        record = await asyncio.to_thread(image_store.get_record, state.connection, state.settings, job_id)
    except ResultExpired as exc:
        await interaction.response.send_message(messages.expired(str(exc)), ephemeral=True)
        return
    await interaction.response.send_message(record_text(record), ephemeral=True)


def record_text(record: JobRecord) -> str:
    """A job's record as /record and the envelope show it: the JSON, then the line that says how to verify it."""
    verify = messages.verify_line(dict(record.notes.get("provenance") or {}))
    return messages.record_verified(record.to_dict(), verify)


@app_commands.command(name="record", description="The reproducibility record of a job")
@app_commands.describe(job_id="The job id")
async def record_command(interaction: discord.Interaction, job_id: str) -> None:
    """/record: job id, seeds, model and resolved parameters."""
    await send_record(interaction, job_id.strip())


@app_commands.context_menu(name="Job record")
async def record_menu(interaction: discord.Interaction, message: discord.Message) -> None:
    """Right-click a result -> Apps -> Job record: the record of the job whose buttons the message carries."""
    components = [component.to_dict() for component in message.components]
    job_ids = buttons.job_ids_in_components(components)  # type: ignore[arg-type]
    if not job_ids:
        await interaction.response.send_message(messages.NOT_A_RESULT, ephemeral=True)
        return
    await send_record(interaction, job_ids[0])


def all_commands(
    settings: Settings,
) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group | app_commands.ContextMenu]:
    """Every application command the bot registers."""
    return [
        imagine_command,
        describe_command,
        settings_command(settings),
        prefer_commands(),
        *lane_commands(settings),
        info_command,
        cancel_command,
        show_command,
        record_command,
        record_menu,
        stealth_command,
        public_command,
        *styles.style_commands(),
    ]
