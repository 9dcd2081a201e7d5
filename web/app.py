"""The web companion's aiohttp application: routes, the login with Discord OAuth2 (authorization code flow with
``state``), security headers, CSRF on every POST, and the pages for refusals.

Why aiohttp: it is already a dependency of the bot (discord.py runs on it) and serves the fake Discord in the tests,
so the companion adds no web server, and it calls Discord's OAuth2 and REST endpoints with its own client; Jinja2
renders the pages (autoescaped). Handlers call Redis synchronously: each page is a few small reads
(``shared.stores.gallery``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

import aiohttp
import jinja2
import redis
from aiohttp import web

from shared import defaults, i18n, messages
from shared.intake import Intake
from shared.settings import Settings
from web import discord_api, pages, region, sessions
from web.context import (
    CONNECTION,
    HTTP,
    INTAKE,
    SESSION,
    SETTINGS,
    STATIC,
    TEMPLATE_ENV,
    TEMPLATES,
    Handler,
    connection_of,
    message_page,
    render,
    session_of,
    settings_of,
)

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; img-src 'self' data: https:; script-src 'self'; style-src 'self'; "
    "form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'"
)
"""Content-Security-Policy of every page: our own scripts and styles only, no framing."""


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session, CSRF on every POST, Redis-down and unexpected-error pages, security headers."""
    settings = settings_of(request)
    request[SESSION] = sessions.current(request, settings)
    # the pages in the browser's language (Accept-Language) where a catalogue has it; aiohttp runs the handler in
    # this task, so the context variable reaches it and the templates
    with i18n.use_locale(i18n.negotiate(request.headers.get("Accept-Language", ""))):
        response = await _answer(request, handler)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # region links carry their token in the path
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Vary", "Accept-Language")
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the page for a missing CSRF token, an HTTP error or Redis down."""
    try:
        if request.method == "POST":
            form = await request.post()
            if not sessions.csrf_ok(session_of(request), str(form.get(sessions.CSRF_FIELD, ""))):
                log.info("POST %s refused: CSRF token missing or wrong", request.path)
                response: web.StreamResponse = message_page(request, messages.CSRF_FAILED, 403)
            else:
                response = await handler(request)
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status != 413:
            response = message_page(request, exc.text or exc.reason, exc.status)
        else:
            raise
    except redis.RedisError:
        log.exception("Redis unavailable for %s %s", request.method, request.path)
        response = message_page(request, messages.QUEUE_DOWN, 503)
    return response


# -- login --------------------------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    if session_of(request) is not None:
        raise web.HTTPFound("/me")
    return render(request, "login.html")


async def login(request: web.Request) -> web.StreamResponse:
    """Off to Discord's authorize page with a fresh ``state`` kept in a signed cookie."""
    settings = settings_of(request)
    state = secrets.token_urlsafe(24)
    response = web.HTTPFound(discord_api.authorize_url(settings, state))
    sessions.remember_state(response, settings, state, sessions.safe_next(request.query.get("next", "/me")))
    raise response


async def callback(request: web.Request) -> web.StreamResponse:
    """Discord sends the browser back here with ``code`` and ``state``: check the state, exchange the code, read
    the member and their guild roles, log them in."""
    settings = settings_of(request)
    next_path = sessions.recall_state(request, settings, request.query.get("state", ""))
    code = request.query.get("code", "")
    if next_path is None or not code:
        log.warning("login refused: state %s, code %s", "mismatched" if next_path is None else "ok", bool(code))
        return message_page(request, messages.LOGIN_FAILED, 400)
    http = request.app[HTTP]
    try:
        token = await discord_api.exchange_code(http, settings, code)
        member = await discord_api.member_of(http, settings, token)
    except (discord_api.DiscordRefused, aiohttp.ClientError, TimeoutError, KeyError, ValueError):
        log.warning("login failed", exc_info=True)
        return message_page(request, messages.LOGIN_FAILED, 502)
    response = web.HTTPFound(next_path)
    sessions.start(response, settings, sessions.Session(member.user_id, member.name, member.roles, member.admin))
    response.del_cookie(sessions.STATE_COOKIE, path="/")
    log.info("member %s logged in (admin: %s)", member.user_id, member.admin)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPFound("/")
    sessions.end(response)
    raise response


async def healthz(request: web.Request) -> web.StreamResponse:
    connection_of(request).ping()
    return web.Response(text="ok")


def create_app(settings: Settings, connection: redis.Redis) -> web.Application:
    """The web companion for ``settings`` and ``connection``."""
    app = web.Application(middlewares=[middleware], client_max_size=defaults.WEB_MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[CONNECTION] = connection
    app[INTAKE] = Intake(connection, settings)
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    # the pages' words go through the same catalogues as the bot's (bot/catalogue.py extracts tr/ntr from templates)
    templates.globals.update(tr=i18n.tr, ntr=i18n.ntr, lang=lambda: (i18n.current_locale() or "en").replace("_", "-"))
    app[TEMPLATE_ENV] = templates

    async def open_http(app: web.Application) -> AsyncIterator[None]:
        app[HTTP] = aiohttp.ClientSession()
        yield
        await app[HTTP].close()

    app.cleanup_ctx.append(open_http)
    app.router.add_get("/", index)
    app.router.add_get("/login", login)
    app.router.add_get("/auth/callback", callback)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    pages.add_routes(app)
    region.add_routes(app)
    app.router.add_static("/static", STATIC)
    return app
