"""What every page handler shares: the application's parts (settings, Redis, intake, HTTP client, templates), the
logged-in session, rendering a template, and the one-sentence pages of refusals."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jinja2
import redis
from aiohttp import web

from shared.intake import Intake
from shared.settings import Settings
from web import sessions

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
"""The Jinja2 templates."""
STATIC = HERE / "static"
"""CSS and the mask editor's JavaScript."""

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
CONNECTION: web.AppKey[redis.Redis] = web.AppKey("connection", redis.Redis)
INTAKE: web.AppKey[Intake] = web.AppKey("intake", Intake)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)
TEMPLATE_ENV: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)

SESSION: web.RequestKey[sessions.Session | None] = web.RequestKey("session", object)  # type: ignore[arg-type]
"""The request's logged-in member (set by the middleware)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler."""


def settings_of(request: web.Request) -> Settings:
    return request.app[SETTINGS]


def connection_of(request: web.Request) -> redis.Redis:
    return request.app[CONNECTION]


def session_of(request: web.Request) -> sessions.Session | None:
    """The logged-in member of the request (set by the middleware), or None."""
    found = request.get(SESSION)
    return found if isinstance(found, sessions.Session) else None


def render(request: web.Request, name: str, *, http_status: int = 200, **context: Any) -> web.Response:
    """Page ``name`` with ``context`` (the session and CSRF token are always there)."""
    template = request.app[TEMPLATE_ENV].get_template(name)
    session = session_of(request)
    body = template.render(
        session=session, csrf=session.csrf if session else "", csrf_field=sessions.CSRF_FIELD, **context
    )
    return web.Response(text=body, status=http_status, content_type="text/html")


def message_page(request: web.Request, text: str, status: int, title: str = "") -> web.Response:
    """A page that says one thing (a refusal or a notice) and nothing else."""
    return render(request, "message.html", http_status=status, text=text, title=title or "imagine")


def login_redirect(request: web.Request) -> web.HTTPFound:
    """Off to the login, coming back here afterwards."""
    return web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))


def require_login(request: web.Request) -> sessions.Session:
    """The session, or a redirect to the login (raised)."""
    session = session_of(request)
    if session is None:
        raise login_redirect(request)
    return session
