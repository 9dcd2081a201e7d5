"""What the web companion asks Discord: the OAuth2 code exchange and ``/users/@me`` (the member's bearer token), the
member's guild roles and the guild's role permissions (the bot token, to decide admins as the bot does), and posting
a job's "(Waiting to start)" line to its channel.

The browser is sent to ``DISCORD_OAUTH_AUTHORIZE_URL`` (Discord's page, or a test's); this server calls
``DISCORD_API_BASE`` itself. Two settings, because the browser and the server may reach Discord differently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from shared import defaults
from shared.queue import admin
from shared.settings import Settings

log = logging.getLogger(__name__)

SCOPE = "identify"
"""The only OAuth2 scope asked for: who the member is (their guild roles are read with the bot token)."""

TIMEOUT = aiohttp.ClientTimeout(total=defaults.DISCORD_HTTP_TIMEOUT_S)
"""Per request to Discord."""


class DiscordRefused(Exception):
    """Discord answered a request with an error (the login fails; the page says so, the log has the details)."""


@dataclass(frozen=True)
class Member:
    """Who logged in, as the guild knows them."""

    user_id: str
    name: str
    roles: tuple[str, ...]
    admin: bool


def redirect_uri(settings: Settings) -> str:
    """Where Discord sends the browser back with the code (register it in the application's OAuth2 settings)."""
    return f"{settings.web_base_url.rstrip('/')}/auth/callback"


def authorize_url(settings: Settings, state: str) -> str:
    """The browser-facing authorize URL for the code flow, with ``state``."""
    query = urlencode(
        {
            "client_id": settings.discord_client_id,
            "redirect_uri": redirect_uri(settings),
            "response_type": "code",
            "scope": SCOPE,
            "state": state,
            "prompt": "none",
        }
    )
    return f"{settings.discord_oauth_authorize_url}?{query}"


def _api(settings: Settings, path: str) -> str:
    return f"{settings.discord_api_base.rstrip('/')}{path}"


def _bot_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bot {settings.discord_token.get_secret_value()}"}


async def _json(response: aiohttp.ClientResponse, what: str) -> Any:
    if response.status >= 400:
        body = (await response.text())[:300]
        raise DiscordRefused(f"{what}: HTTP {response.status}: {body}")
    return await response.json(content_type=None)


async def exchange_code(http: aiohttp.ClientSession, settings: Settings, code: str) -> str:
    """The member's access token for ``code`` (form-encoded, as Discord requires)."""
    form = {
        "client_id": settings.discord_client_id,
        "client_secret": settings.discord_client_secret.get_secret_value(),
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(settings),
    }
    async with http.post(_api(settings, "/oauth2/token"), data=form, timeout=TIMEOUT) as response:
        data = await _json(response, "token exchange")
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise DiscordRefused(f"token exchange answered without an access_token: {sorted(data) if data else data}")
    return token


async def member_of(http: aiohttp.ClientSession, settings: Settings, access_token: str) -> Member:
    """Who the token belongs to, with their roles in the web guild and whether they are an admin
    (``shared.queue.admin.is_admin``: Manage Server or Administrator through a role or ownership, or a configured
    admin user or role). ``DiscordRefused`` if Discord refuses, or the member is not in the guild."""
    headers = {"Authorization": f"Bearer {access_token}"}
    async with http.get(_api(settings, "/users/@me"), headers=headers, timeout=TIMEOUT) as response:
        user = await _json(response, "/users/@me")
    user_id = str(user["id"])
    name = str(user.get("global_name") or user.get("username") or user_id)
    guild = settings.web_guild
    if not guild:
        return Member(user_id, name, (), admin.is_admin(settings, user_id, (), False))
    bot = _bot_headers(settings)
    async with http.get(_api(settings, f"/guilds/{guild}/members/{user_id}"), headers=bot, timeout=TIMEOUT) as r:
        member = await _json(r, "guild member")
    roles = tuple(str(role) for role in member.get("roles", []))
    async with http.get(_api(settings, f"/guilds/{guild}/roles"), headers=bot, timeout=TIMEOUT) as r:
        guild_roles = await _json(r, "guild roles")
    async with http.get(_api(settings, f"/guilds/{guild}"), headers=bot, timeout=TIMEOUT) as r:
        owner = str((await _json(r, "guild")).get("owner_id", ""))
    permission = user_id == owner or manages_guild(guild, roles, guild_roles)
    return Member(user_id, name, roles, admin.is_admin(settings, user_id, roles, permission))


def manages_guild(guild_id: str, roles: tuple[str, ...], guild_roles: list[dict[str, Any]]) -> bool:
    """Whether @everyone (the role whose id is the guild's) or one of ``roles`` grants Administrator or Manage
    Server (channel overwrites do not change these two)."""
    wanted = defaults.DISCORD_PERMISSION_ADMINISTRATOR | defaults.DISCORD_PERMISSION_MANAGE_GUILD
    held = {guild_id, *roles}
    bits = 0
    for role in guild_roles:
        if str(role.get("id")) in held:
            bits |= int(role.get("permissions") or 0)
    return bool(bits & wanted)


async def post_waiting(
    http: aiohttp.ClientSession, settings: Settings, channel_id: str, content: str, owner: str
) -> str | None:
    """Post a job's waiting line to ``channel_id`` with the bot token; its message id, or None when it could not be
    posted (the job is queued anyway: its result is posted when done)."""
    if not settings.discord_token.get_secret_value() or not channel_id:
        return None
    payload = {"content": content, "allowed_mentions": {"parse": [], "users": [owner] if owner.isdigit() else []}}
    try:
        async with http.post(
            _api(settings, f"/channels/{channel_id}/messages"),
            json=payload,
            headers=_bot_headers(settings),
            timeout=TIMEOUT,
        ) as response:
            message = await _json(response, "waiting message")
    except (aiohttp.ClientError, TimeoutError, DiscordRefused):
        log.warning("could not post a waiting message to channel %s", channel_id, exc_info=True)
        return None
    return str(message.get("id")) if isinstance(message, dict) else None


async def delete_message(http: aiohttp.ClientSession, settings: Settings, channel_id: str, message_id: str) -> None:
    """Remove a waiting message whose job was not queued (best effort)."""
    try:
        async with http.delete(
            _api(settings, f"/channels/{channel_id}/messages/{message_id}"),
            headers=_bot_headers(settings),
            timeout=TIMEOUT,
        ):
            pass
    except (aiohttp.ClientError, TimeoutError):
        log.warning("could not remove waiting message %s", message_id, exc_info=True)
