"""The companion's reading pages: "My images" (newest first, paged, searchable by prompt words), the shared gallery
(public results of members not in stealth), each job's page (its images and record, copy prompt, open in Discord),
the images themselves (checked like their job), and the admin queue page.

Visibility is decided in one place, ``shared.stores.gallery.visible_to``: a member sees their own jobs, and others'
only when public; a private job's page answers exactly as a job that does not exist.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from typing import Any

from aiohttp import web

from shared import messages
from shared.errors import ResultExpired
from shared.i18n import tr
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobStatus
from shared.queue import admin
from shared.queue.client import job_state
from shared.stores import gallery
from shared.stores import images as image_store
from shared.stores.gallery import GalleryEntry
from shared.stores.results import JOB_ID_PATTERN
from web.context import connection_of, message_page, render, require_login, settings_of

log = logging.getLogger(__name__)

SEARCH_MAX_CHARS = 200
"""Longest search text read."""


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def card(item: GalleryEntry) -> dict[str, Any]:
    """What a gallery card shows of a job."""
    return {
        "job_id": item.job_id,
        "prompt": item.prompt,
        "kind": item.kind,
        "images": [f"/img/{item.job_id}/{index}" for index in range(item.images)],
        "when": _when(item.created_at),
        "owner": item.owner,
        "size": f"{item.width}x{item.height}",
    }


async def my_images(request: web.Request) -> web.StreamResponse:
    """The member's own jobs, newest first; ``page`` (1-based) and ``q`` (prompt words) from the query."""
    session = require_login(request)
    query = request.query.get("q", "").strip()[:SEARCH_MAX_CHARS]
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    found = gallery.member_page(connection_of(request), settings_of(request), session.member_id, page, query=query)
    empty = messages.NO_MATCHES if query else messages.NO_IMAGES
    return render(
        request,
        "me.html",
        cards=[card(item) for item in found.entries],
        page=found.page,
        pages=found.pages,
        total=found.total,
        query=query,
        empty=empty,
    )


async def shared_gallery(request: web.Request) -> web.StreamResponse:
    """The server's public results, newest first, ``before`` a time (the cursor of the previous page)."""
    require_login(request)
    try:
        before = float(request.query["before"]) if "before" in request.query else None
    except ValueError:
        before = None
    if before is not None and not math.isfinite(before):
        before = None
    shown, next_before = gallery.public_page(connection_of(request), settings_of(request), before)
    return render(request, "gallery.html", cards=[card(item) for item in shown], next_before=next_before)


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise web.HTTPNotFound(text=messages.JOB_NOT_VISIBLE)
    return job_id


def visible_entry(request: web.Request, job_id: str) -> GalleryEntry:
    """The job's gallery entry if the viewer may see it; else the same 404 as for a job that does not exist."""
    session = require_login(request)
    connection, settings = connection_of(request), settings_of(request)
    item = gallery.entry(connection, settings, job_id)
    if item is None or not gallery.visible_to(connection, settings, item, session.member_id):
        raise web.HTTPNotFound(text=messages.JOB_NOT_VISIBLE)
    return item


def discord_link(request: web.Request, record: JobRecord) -> str:
    """The result's message in Discord, or "" when it was not posted there."""
    posted = record.files.get("discord") if isinstance(record.files.get("discord"), dict) else None
    guild = record.spec.delivery.guild_id
    if not posted or not guild or not posted.get("message_id"):
        return ""
    base = settings_of(request).discord_web_url.rstrip("/")
    return f"{base}/channels/{guild}/{posted.get('channel_id')}/{posted.get('message_id')}"


def parameters(record: JobRecord) -> list[tuple[str, str]]:
    """The job's settings as label/value rows (the whole record is shown below them)."""
    spec = record.spec
    rows = [
        (tr("Job"), record.job_id),
        (tr("Kind"), spec.kind.value),
        (tr("Model"), str(record.engine.get("model", spec.model or "default"))),
        (tr("Seeds"), ", ".join(str(seed) for seed in record.seeds or spec.seeds)),
        (tr("Size"), f"{record.size[0]}x{record.size[1]}"),
        (tr("Steps"), str(spec.steps)),
        (tr("Guidance"), f"{spec.guidance:g}"),
        (tr("Lane"), spec.lane),
        (tr("Made"), _when(spec.created_at)),
    ]
    for name in ("stylize", "quality", "chaos", "weird", "style", "version"):
        if spec.extra.get(name) not in (None, ""):
            rows.append((f"--{name}", str(spec.extra[name])))  # the parameter itself: the same in every language
    if spec.negative:
        rows.append(("--no", ", ".join(spec.negative)))
    if spec.source is not None:
        rows.append(
            (tr("Source"), tr("image {number} of {job_id}", number=spec.source.index + 1, job_id=spec.source.job_id))
        )
    if spec.extra.get("remixed"):
        rows.append((tr("Remixed"), tr("yes")))
    return rows


async def job_page(request: web.Request) -> web.StreamResponse:
    """A job's images and record; a job of the viewer's still queued or running shows its progress."""
    session = require_login(request)
    job_id = _job_id(request)
    connection, settings = connection_of(request), settings_of(request)
    if gallery.entry(connection, settings, job_id) is None:
        state = job_state(connection, job_id)
        if state is not None and state.spec.owner == session.member_id and state.status is not JobStatus.FINISHED:
            return render(
                request,
                "pending.html",
                job_id=job_id,
                status=messages.job_status(state.status.value),
                percent=round(100 * state.progress.fraction),
                prompt=state.spec.prompt,
            )
    item = visible_entry(request, job_id)
    try:
        record = image_store.get_record(connection, settings, job_id)
    except ResultExpired as exc:
        return message_page(request, messages.expired(str(exc)), 410)
    return render(
        request,
        "job.html",
        job=card(item),
        prompt=record.spec.prompt,
        rows=parameters(record),
        record_json=json.dumps(record.to_dict(), indent=1, sort_keys=True, default=str),
        discord_url=discord_link(request, record),
        mine=item.owner == session.member_id,
    )


async def image(request: web.Request) -> web.StreamResponse:
    """Image ``index`` of a job the viewer may see: from the store, or a redirect to its presigned URL (S3)."""
    job_id = _job_id(request)
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise web.HTTPNotFound(text=messages.JOB_NOT_VISIBLE) from None
    item = visible_entry(request, job_id)
    if not 0 <= index < item.images:
        raise web.HTTPNotFound(text=messages.JOB_NOT_VISIBLE)
    connection, settings = connection_of(request), settings_of(request)
    try:
        url = image_store.image_url(connection, settings, job_id, index)
        if url:
            raise web.HTTPFound(url)
        data = image_store.get_image(connection, settings, job_id, index)
    except ResultExpired as exc:
        raise web.HTTPGone(text=str(exc)) from None
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


async def admin_queue(request: web.Request) -> web.StreamResponse:
    """What ``/queue status`` shows, for admins (decided at login as the bot decides: ``shared.queue.admin``)."""
    session = require_login(request)
    if not session.admin:
        return message_page(request, messages.WEB_NOT_ADMIN, 403)
    status = admin.status(connection_of(request), settings_of(request))
    workers = [
        {
            "name": worker.name,
            "state": worker.state,
            "job": worker.current_job or "",
            "heartbeat": _when(worker.last_heartbeat) if worker.last_heartbeat else "never",
        }
        for worker in status.workers
    ]
    return render(request, "admin.html", status=status, workers=workers)


def add_routes(app: web.Application) -> None:
    """The reading pages' routes."""
    app.router.add_get("/me", my_images)
    app.router.add_get("/gallery", shared_gallery)
    app.router.add_get("/jobs/{job_id}", job_page)
    app.router.add_get("/img/{job_id}/{index}", image)
    app.router.add_get("/admin/queue", admin_queue)
