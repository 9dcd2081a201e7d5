"""Vary (Region): the mask editor behind the private link the bot gives (``shared.signing.RegionGrant``), and its
submit: the painted mask checked and scaled to the job (``shared.jobs.mask``), the prompt through the intake when the
member has Remix on, a waiting line in the Discord channel the button was clicked in, and the inpaint job queued
through the normal queue (limits, fair share, lanes).

A link works for the member it was made for, for ``WEB_LINK_TTL_S``, once. A forged, tampered or expired link, a mask
of the wrong size, an empty mask or a refused prompt each give a page that says so, and nothing is queued.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from aiohttp import web

from shared import i18n, messages
from shared.errors import MemberFacingError, ResultExpired
from shared.intake import Requester
from shared.jobs import mask as masks
from shared.jobs.followups import inpaint_spec, region_size
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery, JobSpec
from shared.keys import keys_for
from shared.signing import RegionGrant, TokenRefused, read_region
from shared.stores import images as image_store
from shared.stores import member_settings
from web import discord_api
from web.context import HTTP, INTAKE, connection_of, message_page, render, require_login, settings_of
from web.sessions import Session

log = logging.getLogger(__name__)

PROMPT_FIELD = "prompt"
"""The editor's prompt field."""

MASK_FIELD = "mask"
"""The editor's mask field: the canvas as a PNG data URL."""


def _grant(request: web.Request) -> tuple[Session, RegionGrant]:
    """The logged-in member and the link's grant; the refusal page (raised) for a bad link or another member."""
    try:
        grant = read_region(settings_of(request), request.match_info["token"])
    except TokenRefused as exc:
        raise web.HTTPGone(text=str(exc)) if exc.expired else web.HTTPForbidden(text=str(exc)) from None
    session = require_login(request)
    if session.member_id != grant.member:
        raise web.HTTPForbidden(text=messages.LINK_NOT_YOURS)
    return session, grant


def _record(request: web.Request, grant: RegionGrant) -> JobRecord:
    try:
        return image_store.get_record(connection_of(request), settings_of(request), grant.job_id)
    except ResultExpired as exc:
        raise web.HTTPGone(text=messages.expired(str(exc))) from None


def shown_size(record: JobRecord) -> tuple[int, int]:
    """(width, height) of the image the editor shows and the mask must have: the job's picture (an upscale's)."""
    return record.size if record.size != (0, 0) else region_size(record)


async def editor(request: web.Request) -> web.StreamResponse:
    """The mask editor: the image, rectangle, lasso and brush, undo, and the prompt (editable with Remix on)."""
    session, grant = _grant(request)
    record = _record(request, grant)
    member = member_settings.load(connection_of(request), settings_of(request), session.member_id)
    width, height = shown_size(record)
    return render(
        request,
        "region.html",
        image_url=f"{request.path}/image",
        width=width,
        height=height,
        prompt=record.spec.prompt,
        remix=member.remix,
        job_id=grant.job_id,
        action=request.path,
    )


async def source_image(request: web.Request) -> web.StreamResponse:
    """The image the link is for, to the member it was made for (whoever made the job, and whatever their
    visibility: the link itself is the grant)."""
    _, grant = _grant(request)
    try:
        data = image_store.get_image(connection_of(request), settings_of(request), grant.job_id, grant.index)
    except ResultExpired as exc:
        raise web.HTTPGone(text=messages.expired(str(exc))) from None
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=900"})


async def submit(request: web.Request) -> web.StreamResponse:
    """Queue the inpaint the editor describes; each refusal is a page, and nothing is queued."""
    session, grant = _grant(request)
    settings, connection = settings_of(request), connection_of(request)
    record = _record(request, grant)
    form = await request.post()
    try:
        painted = masks.read_painted(masks.decode_data_url(str(form.get(MASK_FIELD, ""))), shown_size(record))
        mask = masks.encode(masks.job_mask(painted, region_size(record)))
        spec = inpaint_spec(
            record,
            grant.index,
            session.member_id,
            mask,
            delivery=Delivery(kind="discord", channel_id=grant.channel_id, guild_id=grant.guild_id),
        )
        requester = Requester(
            member_id=session.member_id,
            roles=session.roles,
            channel_id=grant.channel_id,
            locale=i18n.current_locale(),  # the job's lines in the language of the page the member submitted
        )
        intake = request.app[INTAKE]
        member = intake.member(requester)
        text = " ".join(str(form.get(PROMPT_FIELD, "")).split())
        if member.remix and text and text != " ".join(spec.prompt.split()):
            spec = intake.remix(spec, text, requester, member)
    except MemberFacingError as exc:
        return message_page(request, str(exc), 400, title=messages.LABEL_VARY_REGION)
    token_digest = hashlib.sha256(request.match_info["token"].encode()).hexdigest()
    used_key = keys_for(settings).region_link_used(token_digest)
    if not connection.set(used_key, session.member_id, nx=True, ex=settings.web_link_ttl_s):
        return message_page(request, messages.LINK_USED, 409, title=messages.LABEL_VARY_REGION)
    queued = await _queue(request, spec, requester)
    if not queued.ok:
        connection.delete(used_key)  # not queued: the link may be used again
        return message_page(request, queued.error, 429, title=messages.LABEL_VARY_REGION)
    log.info("Vary (Region) of %s image %d by %s -> job %s", grant.job_id, grant.index, session.member_id, spec.job_id)
    raise web.HTTPFound(f"/jobs/{spec.job_id}")


@dataclasses.dataclass(frozen=True)
class Queued:
    """What became of a region submit."""

    ok: bool
    error: str = ""


async def _queue(request: web.Request, spec: JobSpec, requester: Requester) -> Queued:
    """The waiting line in Discord, then the job through the intake's submit (limits, fair share, lanes)."""
    settings, http = settings_of(request), request.app[HTTP]
    channel = spec.delivery.channel_id
    line = messages.waiting_line(spec.prompt, spec.owner)
    waiting = await discord_api.post_waiting(http, settings, channel, line, spec.owner)
    if waiting is not None:
        spec = spec.replace(delivery=dataclasses.replace(spec.delivery, waiting_message_id=waiting))
    (outcome,) = request.app[INTAKE].submit([spec], requester)
    if outcome.queued:
        return Queued(True)
    if waiting is not None:
        await discord_api.delete_message(http, settings, channel, waiting)
    return Queued(False, outcome.error)


def add_routes(app: web.Application) -> None:
    """The editor's routes."""
    app.router.add_get("/region/{token}", editor)
    app.router.add_get("/region/{token}/image", source_image)
    app.router.add_post("/region/{token}", submit)
