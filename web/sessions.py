"""Logins as signed cookies (``shared.signing``), the OAuth2 ``state`` cookie, and CSRF tokens for every form.

The session cookie holds the member's id, name, guild roles, admin right and a random CSRF token, signed with
``WEB_SECRET`` and valid ``WEB_SESSION_TTL_S``; nothing is stored server-side. Cookies are ``HttpOnly`` and
``SameSite=Lax``: Discord's redirect back to ``/auth/callback`` is a cross-site top-level navigation, on which a
``Strict`` cookie (the ``state`` one set before leaving) would not be sent and every login would fail; ``Lax`` cookies
are sent on it but not on cross-site POSTs, and every POST carries the session's CSRF token besides. ``Secure`` is set
when ``WEB_BASE_URL`` is https.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from shared import defaults
from shared.settings import Settings
from shared.signing import TokenRefused, sign, verify

log = logging.getLogger(__name__)

SESSION_COOKIE = "imagine_session"
"""Name of the login cookie."""

STATE_COOKIE = "imagine_oauth_state"
"""Name of the cookie holding the OAuth2 ``state`` between leaving for Discord and coming back."""

SESSION_PURPOSE = "session"
"""Signing purpose of session cookies."""

STATE_PURPOSE = "oauth-state"
"""Signing purpose of the state cookie."""

CSRF_FIELD = "csrf"
"""Name of the hidden CSRF field of every form."""


@dataclass(frozen=True)
class Session:
    """A logged-in member."""

    member_id: str
    name: str
    roles: tuple[str, ...] = ()
    admin: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))


def _secret(settings: Settings) -> str:
    return settings.web_secret.get_secret_value()


def _secure(settings: Settings) -> bool:
    return settings.web_base_url.lower().startswith("https://")


def set_cookie(response: web.StreamResponse, settings: Settings, name: str, value: str, max_age: int) -> None:
    """Set one of our cookies with the attributes described in the module doc."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Lax", secure=_secure(settings))


def start(response: web.StreamResponse, settings: Settings, session: Session) -> None:
    """Log ``session`` in on ``response``."""
    data = {"m": session.member_id, "n": session.name, "r": list(session.roles), "a": session.admin, "c": session.csrf}
    token = sign(_secret(settings), SESSION_PURPOSE, data, settings.web_session_ttl_s)
    set_cookie(response, settings, SESSION_COOKIE, token, settings.web_session_ttl_s)


def end(response: web.StreamResponse) -> None:
    """Log out: the session cookie is removed."""
    response.del_cookie(SESSION_COOKIE, path="/")


def current(request: web.Request, settings: Settings) -> Session | None:
    """The request's session, or None (no cookie, a forged one, or expired)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        data = verify(_secret(settings), SESSION_PURPOSE, token)
    except TokenRefused as exc:
        log.info("session cookie refused: %s", exc)
        return None
    return Session(
        member_id=str(data.get("m", "")),
        name=str(data.get("n", "")),
        roles=tuple(str(r) for r in data.get("r", [])),
        admin=bool(data.get("a", False)),
        csrf=str(data.get("c", "")),
    )


def remember_state(response: web.StreamResponse, settings: Settings, state: str, next_path: str) -> None:
    """Keep the OAuth2 ``state`` (and where to go after login) for the callback."""
    token = sign(_secret(settings), STATE_PURPOSE, {"s": state, "next": next_path}, defaults.WEB_STATE_TTL_S)
    set_cookie(response, settings, STATE_COOKIE, token, defaults.WEB_STATE_TTL_S)


def recall_state(request: web.Request, settings: Settings, state: str) -> str | None:
    """Where to go after login if ``state`` is the one this browser left with; None if it is not (a forged or
    replayed callback, or a login started elsewhere)."""
    token = request.cookies.get(STATE_COOKIE, "")
    try:
        data = verify(_secret(settings), STATE_PURPOSE, token)
    except TokenRefused:
        return None
    if not state or not hmac.compare_digest(str(data.get("s", "")), state):
        return None
    return safe_next(str(data.get("next", "/")))


def safe_next(path: str) -> str:
    """``path`` if it is a path on this site, else ``/`` (no open redirect through ``next``)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def csrf_ok(session: Session | None, submitted: str) -> bool:
    """Whether a form's CSRF field is the session's token."""
    return session is not None and bool(submitted) and hmac.compare_digest(session.csrf, submitted)
