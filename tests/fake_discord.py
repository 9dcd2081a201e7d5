"""A fake Discord on loopback (aiohttp): a gateway and the REST routes that the bot and the workers use.

It runs in a background thread with its own event loop, so synchronous tests (and the benchmark) drive the real bot
process and real workers through it: ``slash()`` and ``click()`` dispatch INTERACTION_CREATE over the gateway, every
REST call is recorded in ``calls``, messages live in ``messages`` (deleted ones are kept, flagged), and ``wait_for``
blocks until a condition on that state holds.

Facts that discord.py 2.7 needs (found by building this): JSON responses carry exactly ``Content-Type:
application/json``; READY carries ``resume_gateway_url``; interaction payloads carry ``attachment_size_limit``; the
callback endpoint answers ``{"interaction": ..., "resource": ...}`` (``?with_response=1``), not 204; component clicks
carry the message (with its components) that this fake returned when it was posted.

Rate limits as Discord enforces them (``enforce_limits``, on by default): per route and top-level resource, fixed
windows that start with a bucket's first request (posting 5 per 5 s per channel, editing 5 per 5 s per channel in a
bucket of its own, deleting 5 per s, interaction followups 5 per 2 s per token), and 50 requests per second per bot
token (interaction callbacks and followups exempt). Answers carry ``X-RateLimit-*`` headers; a request over a limit
gets 429 with ``retry_after`` (seconds, float), ``global``, ``Retry-After``, ``X-RateLimit-Scope`` and the ``Via``
header by which discord.py tells Discord's 429 from Cloudflare's. ``rate_limited`` records every such 429.

Sharding as Discord does it: a guild belongs to shard ``(guild_id >> 22) % shard_count``; IDENTIFY names its shard
(``[id, count]``), READY lists that shard's guilds only, and each event of a guild goes to the socket of the shard that
owns it (direct messages to shard 0). ``GET /gateway/bot`` recommends ``recommended_shards``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import BodyPartReader, WSMsgType, web

log = logging.getLogger(__name__)

T = TypeVar("T")

EPHEMERAL = 64
"""Message flag of ephemeral messages."""

DISCORD_EPOCH_MS = 1_420_070_400_000
"""Discord's snowflake epoch (2015-01-01) in Unix milliseconds."""

INTERACTION_TOKEN_INVALID = 50027
"""Discord's error code for an expired or unknown interaction (webhook) token."""

ALREADY_ACKNOWLEDGED = 40060
"""Discord's error code for a second callback to one interaction."""

INVALID_FORM_BODY = 50035
"""Discord's error code for a body over its limits (content, components)."""

CONTENT_MAX = 2000
"""Longest message content Discord accepts from a bot."""

MODAL_TITLE_MAX = 45
"""Longest modal title and text input label."""

TEXT_INPUT_MAX = 4000
"""Largest max_length (and so prefilled value) of a modal's text input."""
ROUTE_LIMITS: dict[str, tuple[int, float]] = {
    "post": (5, 5.0),
    "edit": (5, 5.0),
    "delete": (5, 1.0),
    "followup": (5, 2.0),
}
"""Route -> (requests, window seconds), per top-level resource (channel, or interaction token for followups)."""

GLOBAL_PER_S = 50
"""Requests per second per bot token."""

VIA = "1.1 google"
"""The ``Via`` header of Discord's answers (discord.py treats a 429 without it as a Cloudflare ban)."""


@dataclass
class Window:
    """A fixed rate-limit window: when it started and the requests counted in it."""

    started: float
    count: int = 0


@dataclass
class Call:
    """One REST request as the fake saw it."""

    method: str
    path: str
    """Path below the API base, e.g. ``/channels/1/messages``."""
    query: dict[str, str]
    json: Any
    """The JSON body, or ``payload_json`` of a multipart body; None without a body."""
    files: dict[str, tuple[str, bytes]]
    """Multipart files: form field name -> (file name, bytes)."""
    auth: str
    """The Authorization header ("Bot <token>" for the bot token; empty for interaction-token routes)."""
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class InteractionRecord:
    """An interaction the fake dispatched, and how the bot answered it."""

    id: int
    token: str
    kind: int
    """2: application command, 3: component."""
    user_id: int
    dispatched_at: float = 0.0
    acked_at: float | None = None
    response_type: int | None = None
    response: Any = None
    response_message_id: int | None = None
    expired: bool = False
    guild_id: int = 0
    channel_id: int = 0
    """The channel the interaction came from (0: the fake's default channel)."""
    shard: int | None = None
    """The shard whose socket the interaction was sent to (None before it is dispatched)."""

    @property
    def ack_latency_s(self) -> float | None:
        """Seconds from dispatch to the callback's arrival (None if not acknowledged)."""
        return None if self.acked_at is None else self.acked_at - self.dispatched_at

    @property
    def ephemeral(self) -> bool:
        """Whether the response was ephemeral."""
        data = (self.response or {}).get("data") or {}
        return bool(int(data.get("flags") or 0) & EPHEMERAL)

    @property
    def content(self) -> str:
        """Text of the response message ("" if none)."""
        data = (self.response or {}).get("data") or {}
        return str(data.get("content") or "")


class FakeDiscord:
    """Gateway + REST on 127.0.0.1, recording everything; start with ``start()`` or use as a context manager."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        application_id: int = 700000000000000001,
        guild_id: int = 700000000000000002,
        channel_id: int = 700000000000000003,
        bot_user_id: int = 700000000000000001,
        extra_guilds: int = 0,
        channels_per_guild: int = 1,
        recommended_shards: int = 1,
        enforce_limits: bool = True,
    ) -> None:
        self.token = token
        self.application_id = application_id
        if extra_guilds:  # guild i (0 included) on shard i of extra_guilds + 1
            guild_id = guild_with_shard(guild_id, 0, extra_guilds + 1)
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.bot_user_id = bot_user_id
        self.recommended_shards = recommended_shards
        """The ``shards`` that ``GET /gateway/bot`` recommends."""
        self.enforce_limits = enforce_limits
        self.rate_limited: list[Call] = []
        """Requests answered 429 because they were over a limit (injected faults are not counted)."""
        self._windows: dict[str, Window] = {}
        self.guild_channels: dict[int, list[int]] = {guild_id: [channel_id]}
        """Guild id -> its text channels (the first guild and channel are ``guild_id`` and ``channel_id``)."""
        ids = itertools.count(1)
        for index in range(extra_guilds + 1):
            guild = guild_id if index == 0 else guild_with_shard(guild_id + 1000 * index, index, extra_guilds + 1)
            channels = self.guild_channels.setdefault(guild, [])
            while len(channels) < channels_per_guild:
                channels.append(channel_id + 100_000 * index + next(ids))
        self.channel_guild: dict[int, int] = {c: g for g, cs in self.guild_channels.items() for c in cs}
        """Channel id -> its guild."""
        self.port = 0
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        """Every message ever created, by id; deleted ones carry ``"deleted": True``."""
        self.message_history: dict[int, list[dict[str, Any]]] = {}
        """Each message's versions, oldest first (creation, then every edit)."""
        self.refused_bodies: list[dict[str, Any]] = []
        """Bodies answered 400 / 50035 (over Discord's limits)."""
        self.files: dict[int, bytes] = {}
        """Attachment id -> bytes."""
        self.dm_channels: dict[int, int] = {}
        """User id -> the id of the bot's direct-message channel with that user (made by POST /users/@me/channels)."""
        self.interactions: dict[int, InteractionRecord] = {}
        self.commands: dict[str, dict[str, Any]] = {}
        """Synced application commands by name (guild or global)."""
        self.identifies = 0
        self.roles: dict[int, str] = {}
        """Extra guild roles (id -> name) in GUILD_CREATE, so members' roles resolve; set them before connecting."""
        self.identified_shards: list[tuple[int, int]] = []
        """``(shard id, shard count)`` of every IDENTIFY, in order (``(0, 1)`` when the client sent no shard)."""
        self.gateway_errors: list[str] = []
        self.fail_next: list[tuple[str, int, float]] = []
        """Queued faults for channel-message routes: (method or "*", status, retry_after for 429)."""
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sockets: set[web.WebSocketResponse] = set()
        self._socket_shards: dict[web.WebSocketResponse, tuple[int, int]] = {}
        """Identified socket -> its ``(shard id, shard count)``."""
        self._sequence = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        # OAuth2 (the web companion's login) and guild lookups
        self.client_id = str(application_id)
        self.client_secret = "fake-client-secret"
        self.oauth_user: int | None = None
        """The member logged in to "Discord" in the browser: who the authorize page grants (None: refuses)."""
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        """Authorization code -> {user_id, redirect_uri, used}."""
        self.oauth_tokens: dict[str, int] = {}
        """Access token -> user id."""
        self.member_roles: dict[int, list[str]] = {}
        """User id -> role ids in the guild (interactions and the guild member endpoint)."""
        self.roles: dict[str, int] = {}
        """Role id -> permission bits, besides @everyone."""
        self.everyone_permissions = "2251799813685247"
        """Permission bits of @everyone on the roles endpoint (the web companion's admin check reads them)."""

    # --- life cycle -------------------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """The REST base URL (``DISCORD_API_BASE``)."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The gateway URL (``DISCORD_GATEWAY_URL``)."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    def env(self) -> dict[str, str]:
        """Environment variables that point a bot or worker process at this fake."""
        return {
            "DISCORD_TOKEN": self.token,
            "DISCORD_API_BASE": self.api_base,
            "DISCORD_GATEWAY_URL": self.gateway_url,
            "DISCORD_GUILD_IDS": ",".join(str(guild) for guild in self.guild_channels),
            "DISCORD_GUILD_READY_TIMEOUT_S": "0.1",
            "DISCORD_IDENTIFY_WAIT_S": "0",  # one fake session start limit: no 5 s between shards
        }

    def start(self) -> FakeDiscord:
        """Serve on a free loopback port in a background thread; returns self once it accepts connections."""
        self._thread = threading.Thread(target=self._serve, name="fake-discord", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake Discord did not start within 10 s")
        return self

    def stop(self) -> None:
        """Close sockets, stop the server and its thread."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeDiscord:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/oauth2/authorize", self._authorize_page)
        app.router.add_post("/oauth2/authorize", self._authorize)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=4000)
        if self._runner is not None:
            await self._runner.cleanup()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None, "fake Discord is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # --- state helpers ------------------------------------------------------------------------------------------

    def snowflake(self) -> int:
        """A new, increasing snowflake id."""
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(self._ids)

    def wait_for(self, condition: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
        """Block until ``condition()`` is truthy (re-checked on every change and every 0.2 s); return its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = condition()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake Discord: timed out after {timeout} s waiting for {what or condition}")
                self._changed.wait(min(left, 0.2))

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def channel_messages(self, channel_id: int | None = None, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Messages of a channel in creation order (ephemeral ones included; deleted ones only if asked)."""
        channel = str(channel_id or self.channel_id)
        with self._lock:
            return [
                m
                for m in self.messages.values()
                if m["channel_id"] == channel and (include_deleted or not m.get("deleted"))
            ]

    def calls_to(self, method: str, path_part: str = "") -> list[Call]:
        """Recorded calls with ``method`` (or "*") whose path contains ``path_part``."""
        with self._lock:
            return [c for c in self.calls if method in ("*", c.method) and path_part in c.path]

    def user(self, user_id: int, name: str = "") -> dict[str, Any]:
        """A user object."""
        return {
            "id": str(user_id),
            "username": name or f"user{user_id % 10000}",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": user_id == self.bot_user_id,
            "public_flags": 0,
            "flags": 0,
        }

    def _member(self, user_id: int) -> dict[str, Any]:
        return {
            "user": self.user(user_id),
            "roles": list(self.member_roles.get(user_id, [])),
            "joined_at": _iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "permissions": "2251799813685247",
        }

    def _channel(self, channel_id: int | None = None) -> dict[str, Any]:
        channel = channel_id or self.channel_id
        return {
            "id": str(channel),
            "type": 0,
            "guild_id": str(self.channel_guild.get(channel, self.guild_id)),
            "name": "imagine",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _guild(self, guild_id: int | None = None) -> dict[str, Any]:
        guild = guild_id or self.guild_id
        return {
            "id": str(guild),
            "name": f"Fake guild {guild % 10000}",
            "icon": None,
            "owner_id": "1",
            "roles": [
                *(
                    {
                        "id": str(role_id),
                        "name": name,
                        "permissions": "0",
                        "position": 1,
                        "color": 0,
                        "hoist": False,
                        "managed": False,
                        "mentionable": False,
                        "flags": 0,
                    }
                    for role_id, name in self.roles.items()
                ),
                {
                    "id": str(guild),
                    "name": "@everyone",
                    "permissions": "2251799813685247",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                },
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 2,
            "members": [self._member(self.bot_user_id)],
            "channels": [self._channel(channel) for channel in self.guild_channels.get(guild, [])],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "unavailable": False,
            "large": False,
            "joined_at": _iso(),
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "mfa_level": 0,
            "verification_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "system_channel_flags": 0,
        }

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "imagine",
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.user(1, "owner"),
            "verify_key": "00",
            "flags": 0,
            "team": None,
            "summary": "",
        }

    # --- gateway ------------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    if payload["d"].get("token") != self.token:
                        self.gateway_errors.append("identify with a wrong token")
                        await ws.close(code=4004)
                        break
                    shard = payload["d"].get("shard") or [0, 1]
                    shard_id, shard_count = int(shard[0]), int(shard[1])
                    if not 0 <= shard_id < shard_count:
                        self.gateway_errors.append(f"identify with an invalid shard {shard!r}")
                        await ws.close(code=4010)  # Discord's "Invalid shard"
                        break
                    await self._ready(ws, shard_id, shard_count)
                elif op == 6:
                    # No session resumption here: the client re-identifies.
                    await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
        finally:
            self._sockets.discard(ws)
            self._socket_shards.pop(ws, None)
        return ws

    async def _ready(self, ws: web.WebSocketResponse, shard_id: int = 0, shard_count: int = 1) -> None:
        guilds = [guild for guild in self.guild_channels if shard_of(guild, shard_count) == shard_id]
        ready = {
            "v": 10,
            "user": self.user(self.bot_user_id, "imagine"),
            "guilds": [{"id": str(guild), "unavailable": True} for guild in guilds],
            "session_id": f"session-{self.snowflake()}",
            "resume_gateway_url": self.gateway_url,
            "shard": [shard_id, shard_count],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        self._socket_shards[ws] = (shard_id, shard_count)
        await self._send_dispatch(ws, "READY", ready)
        for guild in guilds:
            await self._send_dispatch(ws, "GUILD_CREATE", self._guild(guild))
        with self._lock:
            self.identifies += 1
            self.identified_shards.append((shard_id, shard_count))
        self._notify()

    async def _send_dispatch(self, ws: web.WebSocketResponse, event: str, data: Any) -> None:
        self._sequence += 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._sequence, "d": data}))

    def _sockets_for(self, data: Any) -> list[tuple[web.WebSocketResponse, int]]:
        """The identified sockets an event about ``data`` goes to, with their shard: the shard of its guild (shard 0
        for direct messages), as Discord routes events."""
        guild = data.get("guild_id") if isinstance(data, dict) else None
        guild_id = int(guild) if isinstance(guild, str | int) and str(guild).isdigit() else 0
        found = []
        for ws, (shard_id, shard_count) in list(self._socket_shards.items()):
            owner = shard_of(guild_id, shard_count)
            if owner == shard_id:
                found.append((ws, shard_id))
        return found

    async def _dispatch_all(self, event: str, data: Any) -> int | None:
        """Send ``event`` to the shard that owns its guild; returns that shard."""
        targets = self._sockets_for(data)
        if not targets:
            raise RuntimeError(f"no bot shard that owns this event's guild is connected to receive {event}")
        for ws, _ in targets:
            await self._send_dispatch(ws, event, data)
        return targets[0][1]

    def wait_connected(self, identifies: int = 1, timeout: float = 60.0) -> None:
        """Block until the bot has identified ``identifies`` times in all (i.e. is connected and set up)."""
        self.wait_for(lambda: self.identifies >= identifies and self._sockets, timeout, f"{identifies} IDENTIFY")

    def connected_shards(self) -> set[int]:
        """Shard ids with an identified socket now."""
        with self._lock:
            return {shard for shard, _ in self._socket_shards.values()}

    def guild_of_shard(self, shard_id: int, shard_count: int) -> int:
        """A guild of this fake that belongs to shard ``shard_id`` of ``shard_count``."""
        for guild in self.guild_channels:
            if shard_of(guild, shard_count) == shard_id:
                return guild
        raise KeyError(f"no guild of this fake is on shard {shard_id} of {shard_count}: {list(self.guild_channels)}")

    # --- interactions -------------------------------------------------------------------------------------------

    def channel_payload(self, channel_id: int, *, nsfw: bool = False) -> dict[str, Any]:
        """A text channel of the guild as interactions carry it (``nsfw``: age-restricted)."""
        return {**self._channel(channel_id), "name": f"channel-{channel_id % 10000}", "nsfw": nsfw}

    def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: int,
        *,
        locale: str = "en-US",
        roles: tuple[int, ...] = (),
        channel_id: int | None = None,
        nsfw: bool = False,
        permissions: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        interaction_id = self.snowflake()
        token = f"itoken-{interaction_id}"
        channel = channel_id or self.channel_id
        guild = self.channel_guild.get(channel, self.guild_id)
        with self._lock:
            self.interactions[interaction_id] = InteractionRecord(
                interaction_id, token, kind, user_id, guild_id=guild, channel_id=channel
            )
        member = self._member(user_id)
        member["roles"] = [str(role) for role in roles]
        if permissions is not None:
            member["permissions"] = permissions
        known = channel in self.channel_guild and not nsfw
        channel_data = self._channel(channel) if known else self.channel_payload(channel, nsfw=nsfw)
        return {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(guild),
            "channel_id": str(channel),
            "channel": channel_data,
            "member": member,
            "token": token,
            "version": 1,
            "app_permissions": "2251799813685247",
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
            **extra,
        }

    def _send_interaction(self, payload: dict[str, Any]) -> InteractionRecord:
        record = self.interactions[int(payload["id"])]

        async def send() -> None:
            with self._lock:
                record.dispatched_at = time.monotonic()
            record.shard = await self._dispatch_all("INTERACTION_CREATE", payload)

        self._run(send())
        return record

    def slash(
        self, name: str, options: dict[str, Any] | None = None, *, user_id: int = 42, **where: Any
    ) -> InteractionRecord:
        """Dispatch a slash command as member ``user_id``; returns the interaction's record (filled in as answered).
        ``where``: ``locale``, ``roles`` (role ids), ``channel_id`` and ``nsfw`` of the interaction."""
        return self._send_interaction(self.slash_payload(name, options, user_id=user_id, **where))

    def slash_payload(
        self, name: str, options: dict[str, Any] | None = None, *, user_id: int = 42, **where: Any
    ) -> dict[str, Any]:
        """The INTERACTION_CREATE payload of a slash command (for ``dispatch_many`` and malformed-payload tests).

        ``name`` may name a subcommand: ``"prefer option set"`` is command ``prefer``, group ``option``, subcommand
        ``set``.
        """
        head, *subs = name.split()
        command = self.commands.get(head, {})
        nested = [_option(key, value) for key, value in (options or {}).items()]
        uploads = {v["id"]: v for v in (options or {}).values() if isinstance(v, dict) and "filename" in v}
        for depth in range(len(subs) - 1, -1, -1):
            kind = 1 if depth == len(subs) - 1 else 2  # SUB_COMMAND inside SUB_COMMAND_GROUPs
            nested = [{"type": kind, "name": subs[depth], "options": nested}]
        data = {
            "id": command.get("id", str(self.snowflake())),
            "name": head,
            "type": 1,
            "guild_id": str(self.channel_guild.get(where.get("channel_id") or self.channel_id, self.guild_id)),
            "options": nested,
        }
        if uploads:
            data["resolved"] = {"attachments": uploads}
        return self._interaction(2, data, user_id, **where)

    def dispatch_many(self, payloads: list[dict[str, Any]], interval_s: float = 0.0) -> list[InteractionRecord]:
        """Dispatch many interactions back to back (``interval_s`` apart; 0: as fast as the socket takes them)."""

        async def send_all() -> None:
            start = time.monotonic()
            for index, payload in enumerate(payloads):
                if interval_s > 0:
                    await asyncio.sleep(max(0.0, start + index * interval_s - time.monotonic()))
                record = self.interactions[int(payload["id"])]
                with self._lock:
                    record.dispatched_at = time.monotonic()
                record.shard = await self._dispatch_all("INTERACTION_CREATE", payload)

        assert self._loop is not None, "fake Discord is not started"
        asyncio.run_coroutine_threadsafe(send_all(), self._loop).result(30 + interval_s * len(payloads))
        return [self.interactions[int(p["id"])] for p in payloads]

    def click(self, message_id: int, custom_id: str, *, user_id: int = 42, **where: Any) -> InteractionRecord:
        """Click the button ``custom_id`` on message ``message_id`` (the message as this fake stores it), in the
        message's channel; ``where``: ``locale``, ``roles``, ``nsfw`` of the interaction."""
        with self._lock:
            message = dict(self.messages[message_id])
        message.pop("deleted", None)
        data = {"custom_id": custom_id, "component_type": 2}
        where.setdefault("channel_id", int(message["channel_id"]))
        return self._send_interaction(self._interaction(3, data, user_id, message=message, **where))

    def message_command(self, name: str, message_id: int, *, user_id: int = 42) -> InteractionRecord:
        """Use the message (context menu) command ``name`` on message ``message_id``."""
        with self._lock:
            message = dict(self.messages[message_id])
        command = self.commands.get(name, {})
        data = {
            "id": command.get("id", str(self.snowflake())),
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "guild_id": str(self.channel_guild.get(int(message["channel_id"]), self.guild_id)),
            "resolved": {"messages": {str(message_id): message}},
        }
        return self._send_interaction(self._interaction(2, data, user_id, channel_id=int(message["channel_id"])))

    def upload(self, filename: str, data: bytes, content_type: str = "image/png") -> dict[str, Any]:
        """An attachment a member picked for a slash command's attachment option (pass it as the option's value); its
        url serves ``data``."""
        attachment_id = self.snowflake()
        with self._lock:
            self.files[attachment_id] = data
        url = f"{self.api_base}/attachments/{attachment_id}/{filename}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def react(self, message_id: int, emoji: str, *, user_id: int = 42) -> None:
        """``user_id`` adds the unicode reaction ``emoji`` to a message (gateway MESSAGE_REACTION_ADD)."""
        with self._lock:
            message = self.messages[message_id]
        data = {
            "user_id": str(user_id),
            "channel_id": message["channel_id"],
            "message_id": str(message_id),
            "guild_id": str(self.channel_guild.get(int(message["channel_id"]), self.guild_id)),
            "message_author_id": message["author"]["id"],
            "member": self._member(user_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        self._run(self._dispatch_all("MESSAGE_REACTION_ADD", data))

    def dispatch_raw(self, event: str, data: Any) -> None:
        """Send any gateway dispatch as is (for malformed-payload tests)."""
        self._run(self._dispatch_all(event, data))

    def expire_interaction_tokens(self) -> None:
        """Make every interaction token issued so far invalid, as Discord does after 15 minutes."""
        with self._lock:
            for record in self.interactions.values():
                record.expired = True

    def disconnect_bot(self) -> None:
        """Close the bot's gateway sockets (it reconnects and identifies again)."""

        async def close() -> None:
            for ws in list(self._sockets):
                await ws.close(code=4000)

        self._run(close())

    # --- REST ---------------------------------------------------------------------------------------------------

    def _bucket_of(self, call: Call) -> tuple[str, str] | None:
        """``(route, bucket key)`` of a call that a per-route limit counts, or None."""
        parts = [p for p in call.path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "channels" and parts[2] == "messages":
            if len(parts) == 3 and call.method == "POST":
                return "post", f"post:{parts[1]}"
            if len(parts) == 4 and call.method == "PATCH":
                return "edit", f"edit:{parts[1]}"
            if len(parts) == 4 and call.method == "DELETE":
                return "delete", f"delete:{parts[1]}"
        if len(parts) >= 3 and parts[0] == "webhooks" and call.method in ("POST", "PATCH"):
            return "followup", f"followup:{parts[2]}"
        return None

    def _take(self, key: str, limit: int, period: float, now: float) -> tuple[bool, Window]:
        """Count a request in the fixed window ``key`` (a new window starts with the first request after the last
        one ended); False when the window is full."""
        window = self._windows.get(key)
        if window is None or now >= window.started + period:
            window = self._windows[key] = Window(started=now)
        if window.count >= limit:
            return False, window
        window.count += 1
        return True, window

    def _enforce(self, call: Call) -> tuple[web.Response | None, dict[str, str]]:
        """Discord's limits for ``call``: a 429 answer when it is over one, else the headers its answer carries."""
        if not self.enforce_limits:
            return None, {}
        now = call.at
        with self._lock:
            if call.auth == f"Bot {self.token}":  # the global limit counts bot-token requests only
                allowed, window = self._take("global", GLOBAL_PER_S, 1.0, now)
                if not allowed:
                    return self._too_many(call, window.started + 1.0 - now, "global"), {}
            found = self._bucket_of(call)
            if found is None:
                return None, {"Via": VIA}
            route, key = found
            limit, period = ROUTE_LIMITS[route]
            allowed, window = self._take(key, limit, period, now)
            reset_after = max(0.0, window.started + period - now)
            if not allowed:
                if call.auth == f"Bot {self.token}":  # the refused request does not count globally
                    self._windows["global"].count -= 1
                return self._too_many(call, reset_after, "user"), {}
        headers = {
            "Via": VIA,
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - window.count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{route}-bucket",
        }
        return None, headers

    def _too_many(self, call: Call, retry_after: float, scope: str) -> web.Response:
        with self._lock:
            self.rate_limited.append(call)
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(retry_after, 3),
            "global": scope == "global",
        }
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": scope,
            "Via": VIA,
        }
        if scope == "global":
            headers["X-RateLimit-Global"] = "true"
        return _json({**body, "code": 0}, 429, headers=headers)

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        path = "/" + request.match_info["tail"]
        body, files = await _read_body(request)
        call = Call(
            request.method, path, dict(request.query), body, files, request.headers.get("Authorization", ""), at=arrived
        )
        try:
            response, limit_headers = self._enforce(call)
            if response is None:
                response = self._route(call)
                response.headers.update(limit_headers)
        except Exception:
            log.exception("fake Discord failed on %s %s", request.method, path)
            response = _json({"message": "fake Discord error", "code": 0}, 500)
        call.status = response.status
        with self._lock:
            self.calls.append(call)
        self._notify()
        return response

    def _route(self, call: Call) -> web.Response:
        parts = [p for p in call.path.split("/") if p]
        method = call.method
        if parts[:1] == ["interactions"] and len(parts) == 4 and parts[3] == "callback" and method == "POST":
            return self._callback(int(parts[1]), parts[2], call)
        if parts[:1] == ["webhooks"] and len(parts) >= 3:
            return self._webhook(parts, call)
        if parts[:1] == ["attachments"] and len(parts) == 3 and method == "GET":  # the CDN: no token needed
            with self._lock:
                data = self.files.get(int(parts[1]))
            if data is None:
                return _json({"message": "404: Not Found", "code": 0}, 404)
            return web.Response(body=data, content_type="image/png" if parts[2].endswith(".png") else "image/jpeg")
        if parts == ["oauth2", "token"] and method == "POST":
            return self._token(call)
        if parts == ["users", "@me"] and method == "GET" and call.auth.startswith("Bearer "):
            user_id = self.oauth_tokens.get(call.auth.removeprefix("Bearer "))
            if user_id is None:
                return _json({"message": "401: Unauthorized", "code": 0}, 401)
            return _json(self.user(user_id))
        if call.auth != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        if parts[:2] == ["guilds", str(self.guild_id)] and method == "GET":
            return self._guild_route(parts[2:])
        if parts in (["gateway", "bot"], ["gateway"]) and method == "GET":
            limits = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            return _json({"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": limits})
        if parts == ["users", "@me"] and method == "GET":
            return _json(self.user(self.bot_user_id, "imagine"))
        if parts == ["users", "@me", "channels"] and method == "POST":
            return self._direct_message_channel(int((call.json or {})["recipient_id"]))
        if parts == ["oauth2", "applications", "@me"] and method == "GET":
            return _json(self._application())
        if parts[:1] == ["applications"] and parts[-1] == "commands" and method == "PUT":
            return self._sync_commands(call)
        if parts[:1] == ["channels"] and len(parts) >= 3 and parts[2] == "messages":
            return self._channel_message(parts, call)
        return _json({"message": "404: Not Found", "code": 0}, 404)

    def _direct_message_channel(self, user_id: int) -> web.Response:
        with self._lock:
            channel_id = self.dm_channels.setdefault(user_id, self.snowflake())
        return _json({"id": str(channel_id), "type": 1, "last_message_id": None, "recipients": [self.user(user_id)]})

    def _sync_commands(self, call: Call) -> web.Response:
        synced = []
        for command in call.json or []:
            item = {
                "id": str(self.snowflake()),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                "description": "",
                "options": [],
                "type": 1,
                **command,
            }
            synced.append(item)
            with self._lock:
                self.commands[item["name"]] = item
        return _json(synced)

    def _fault(self, method: str) -> web.Response | None:
        with self._lock:
            index = next((i for i, fault in enumerate(self.fail_next) if fault[0] in ("*", method)), None)
            if index is None:
                return None
            _, status, retry_after = self.fail_next.pop(index)
        if status == 429:
            return _json(
                {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                429,
                headers={"Retry-After": str(max(1, round(retry_after))), "X-RateLimit-Scope": "user", "Via": VIA},
            )
        return _json({"message": "upstream error", "code": 0}, status)

    def _channel_message(self, parts: list[str], call: Call) -> web.Response:
        channel_id = int(parts[1])
        fault = self._fault(call.method)
        if fault is not None:
            return fault
        if call.method in ("POST", "PATCH"):
            refused = self._form_refusal(call.json or {})
            if refused is not None:
                return refused
        if len(parts) == 3 and call.method == "POST":
            return _json(self._new_message(channel_id, call, author=self.user(self.bot_user_id, "imagine")))
        if len(parts) != 4:
            return _json({"message": "404: Not Found", "code": 0}, 404)
        message_id = int(parts[3])
        with self._lock:
            message = self.messages.get(message_id)
        if message is None or message.get("deleted") or message["channel_id"] != str(channel_id):
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if call.method == "GET":
            return _json(message)
        if call.method == "PATCH":
            return _json(self._edit_message(message, call))
        if call.method == "DELETE":
            with self._lock:
                message["deleted"] = True
            return web.Response(status=204)
        return _json({"message": "405: Method Not Allowed", "code": 0}, 405)

    def _form_refusal(self, data: dict[str, Any]) -> web.Response | None:
        """Discord's 400 / 50035 "Invalid Form Body" for a message body over Discord's limits (content counted as
        sent, buttons and rows, custom_id and label lengths), as the real API answers; None if the body fits."""
        errors: dict[str, Any] = {}
        content = data.get("content")
        if content is not None and len(str(content)) > CONTENT_MAX:
            errors["content"] = {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer."}]}
        rows = data.get("components") or []
        if len(rows) > 5:
            errors["components"] = {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 5 or fewer."}]}
        for r, row in enumerate(rows):
            items = row.get("components") or []
            if len(items) > 5:
                errors[f"components.{r}"] = {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}
            for i, item in enumerate(items):
                if len(str(item.get("custom_id", ""))) > 100 or len(str(item.get("label", ""))) > 80:
                    errors[f"components.{r}.components.{i}"] = {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}
        if not errors:
            return None
        with self._lock:
            self.refused_bodies.append(data)
        return _json({"message": "Invalid Form Body", "code": INVALID_FORM_BODY, "errors": errors}, 400)

    def _callback(self, interaction_id: int, token: str, call: Call) -> web.Response:
        with self._lock:
            record = self.interactions.get(interaction_id)
        if record is None or record.token != token:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        if record.acked_at is not None:
            return _json({"message": "Interaction has already been acknowledged.", "code": ALREADY_ACKNOWLEDGED}, 400)
        now = call.at
        payload = call.json or {}
        response_type = int(payload.get("type", 0))
        data = payload.get("data") or {}
        refused = self._form_refusal(data) if response_type in (4, 7) else None
        if response_type == 9:
            refused = self._modal_refusal(data)
        if refused is not None:
            return refused
        resource: dict[str, Any] = {"type": response_type}
        message_id: int | None = None
        if response_type in (4, 5):
            content = data if response_type == 4 else {"content": "", "flags": data.get("flags", 0)}
            fake_call = Call("POST", call.path, {}, content, call.files if response_type == 4 else {}, "")
            message = self._new_message(
                record.channel_id or self.channel_id,
                fake_call,
                author=self.user(self.bot_user_id, "imagine"),
                webhook=True,
            )
            message["interaction_token"] = token
            message_id = int(message["id"])
            resource["message"] = message
        elif response_type == 7 and "message" in payload:
            resource["message"] = payload["message"]
        with self._lock:
            record.acked_at = now
            record.response_type = response_type
            record.response = payload
            record.response_message_id = message_id
        body = {
            "interaction": {
                "id": str(interaction_id),
                "type": record.kind,
                "response_message_id": str(message_id) if message_id else None,
                "response_message_loading": response_type == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL),
            },
            "resource": resource,
        }
        return _json(body)

    def _webhook(self, parts: list[str], call: Call) -> web.Response:
        token = parts[2]
        with self._lock:
            record = next((r for r in self.interactions.values() if r.token == token), None)
        if record is None or record.expired:
            return _json({"message": "Invalid Webhook Token", "code": INTERACTION_TOKEN_INVALID}, 401)
        if call.method in ("POST", "PATCH"):
            refused = self._form_refusal(call.json or {})
            if refused is not None:
                return refused
        if len(parts) == 3 and call.method == "POST":
            created = self._new_message(
                record.channel_id or self.channel_id, call, author=self.user(self.bot_user_id), webhook=True
            )
            created["interaction_token"] = token
            return _json(created)
        if len(parts) == 5 and parts[3] == "messages":
            target = record.response_message_id if parts[4] == "@original" else int(parts[4])
            with self._lock:
                message = self.messages.get(target or -1)
            if message is None or message.get("deleted"):
                return _json({"message": "Unknown Message", "code": 10008}, 404)
            if call.method == "GET":
                return _json(message)
            if call.method == "PATCH":
                return _json(self._edit_message(message, call))
            if call.method == "DELETE":
                with self._lock:
                    message["deleted"] = True
                return web.Response(status=204)
        return _json({"message": "404: Not Found", "code": 0}, 404)

    def _attachments(self, call: Call) -> list[dict[str, Any]]:
        made = []
        for field_name, (filename, data) in sorted(call.files.items()):
            attachment_id = self.snowflake()
            self.files[attachment_id] = data
            made.append(
                {
                    "id": str(attachment_id),
                    "filename": filename,
                    "size": len(data),
                    "url": f"{self.api_base}/attachments/{attachment_id}/{filename}",
                    "proxy_url": f"{self.api_base}/attachments/{attachment_id}/{filename}",
                    "content_type": "image/png" if filename.endswith(".png") else "application/octet-stream",
                    "field": field_name,
                }
            )
        return made

    def _new_message(
        self, channel_id: int, call: Call, *, author: dict[str, Any], webhook: bool = False
    ) -> dict[str, Any]:
        data = call.json or {}
        message_id = self.snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "type": 0,
            "content": str(data.get("content") or ""),
            "author": author,
            "attachments": self._attachments(call),
            "embeds": data.get("embeds") or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "flags": int(data.get("flags") or 0),
            "components": data.get("components") or [],
            "allowed_mentions": data.get("allowed_mentions"),
        }
        if channel_id not in self.dm_channels.values():
            message["guild_id"] = str(self.channel_guild.get(channel_id, self.guild_id))
        if webhook:
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
        with self._lock:
            self.messages[message_id] = message
            self.message_history[message_id] = [dict(message)]
        return message

    def _edit_message(self, message: dict[str, Any], call: Call) -> dict[str, Any]:
        data = call.json or {}
        new_files = self._attachments(call)
        with self._lock:
            if "content" in data:
                message["content"] = str(data["content"] or "")
            if "components" in data:
                message["components"] = data["components"] or []
            if "embeds" in data:
                message["embeds"] = data["embeds"] or []
            if "attachments" in data:
                keep = {str(a.get("id")) for a in data["attachments"] or []}
                message["attachments"] = [a for a in message["attachments"] if a["id"] in keep] + new_files
            else:
                message["attachments"] = message["attachments"] + new_files
            message["edited_timestamp"] = _iso()
            self.message_history[int(message["id"])].append(dict(message))
        return message

    def _modal_refusal(self, data: dict[str, Any]) -> web.Response | None:
        """Discord's 400 / 50035 for a modal over its limits: title and labels at most 45 characters, a custom_id at
        most 100, a prefilled value at most the input's max_length (itself at most 4,000)."""
        errors: dict[str, Any] = {}
        if not 1 <= len(str(data.get("title", ""))) <= MODAL_TITLE_MAX:
            errors["title"] = {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}
        if not 1 <= len(str(data.get("custom_id", ""))) <= 100:
            errors["custom_id"] = {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}
        for r, item in enumerate(_modal_inputs(data)):
            limit = int(item.get("max_length") or TEXT_INPUT_MAX)
            if limit > TEXT_INPUT_MAX or len(str(item.get("value") or "")) > limit:
                errors[f"components.{r}.value"] = {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}
            if len(str(item.get("label") or "")) > MODAL_TITLE_MAX:
                errors[f"components.{r}.label"] = {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}
        if not errors:
            return None
        with self._lock:
            self.refused_bodies.append(data)
        return _json({"message": "Invalid Form Body", "code": INVALID_FORM_BODY, "errors": errors}, 400)

    def submit_modal(self, opened: InteractionRecord, values: dict[str, str], *, user_id: int) -> InteractionRecord:
        """Submit the modal that the answer to ``opened`` showed, with ``values`` by input custom_id (inputs not
        given keep their prefilled value, as Discord's client sends them)."""
        modal = opened.response["data"]
        rows = [
            {
                "type": 1,
                "components": [
                    {
                        "type": 4,
                        "custom_id": item["custom_id"],
                        "value": values.get(item["custom_id"], item.get("value") or ""),
                    }
                ],
            }
            for item in _modal_inputs(modal)
        ]
        data = {"custom_id": modal["custom_id"], "components": rows}
        return self._send_interaction(self._interaction(5, data, user_id))

    # --- OAuth2 and the guild, for the web companion ------------------------------------------------------------

    async def _authorize_page(self, request: web.Request) -> web.Response:
        """Discord's authorize page: the application asks for ``identify``; "Authorize" posts back here."""
        query = request.query
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return web.Response(status=400, text="invalid client_id or response_type")
        fields = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(query.get(name, ""))}">'
            for name in ("redirect_uri", "state", "client_id", "scope")
        )
        body = (
            "<!doctype html><html><head><title>Discord - Authorize</title></head><body style='font-family:sans-serif;"
            "background:#313338;color:#fff;padding:3em'><h1>imagine wants to access your account</h1>"
            f"<p>Scopes: {html.escape(query.get('scope', ''))}</p>"
            f"<form method='post' action='/oauth2/authorize'>{fields}<button id='authorize'>Authorize</button></form>"
            "</body></html>"
        )
        return web.Response(text=body, content_type="text/html")

    async def _authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        redirect_uri = str(form.get("redirect_uri", ""))
        if self.oauth_user is None or not redirect_uri:
            return web.Response(status=400, text="nobody is logged in to the fake Discord")
        code = f"code-{self.snowflake()}"
        with self._lock:
            self.oauth_codes[code] = {"user_id": self.oauth_user, "redirect_uri": redirect_uri, "used": False}
        query = urllib.parse.urlencode({"code": code, "state": str(form.get("state", ""))})
        raise web.HTTPFound(f"{redirect_uri}?{query}")

    def _token(self, call: Call) -> web.Response:
        """The code exchange (form-encoded): a code works once, for the redirect_uri it was issued to."""
        form = {k: v[0] for k, v in urllib.parse.parse_qs(str(call.json or "")).items()}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return _json({"error": "invalid_client"}, 401)
        with self._lock:
            grant = self.oauth_codes.get(form.get("code", ""))
            if (
                form.get("grant_type") != "authorization_code"
                or grant is None
                or grant["used"]
                or grant["redirect_uri"] != form.get("redirect_uri")
            ):
                return _json({"error": "invalid_grant", "error_description": 'Invalid "code" in request.'}, 400)
            grant["used"] = True
            token = f"access-{self.snowflake()}"
            self.oauth_tokens[token] = int(grant["user_id"])
        return _json(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 604800,
                "refresh_token": "r",
                "scope": "identify",
            }
        )

    def _guild_route(self, rest: list[str]) -> web.Response:
        if not rest:
            return _json(self._guild())
        if rest == ["roles"]:
            everyone = {**self._guild()["roles"][0], "permissions": self.everyone_permissions}
            others = [
                {**everyone, "id": role_id, "name": f"role{role_id}", "permissions": str(bits), "position": 1}
                for role_id, bits in self.roles.items()
            ]
            return _json([everyone, *others])
        if len(rest) == 2 and rest[0] == "members" and rest[1].isdigit():
            return _json(self._member(int(rest[1])))
        return _json({"message": "404: Not Found", "code": 0}, 404)

    # --- queries for tests --------------------------------------------------------------------------------------

    def buttons(self, message_id: int) -> list[dict[str, Any]]:
        """The buttons of a message, row by row flattened."""
        with self._lock:
            rows = self.messages[message_id].get("components") or []
        return [item for row in rows for item in row.get("components", [])]

    def button_id(self, message_id: int, label: str) -> str:
        """The ``custom_id`` of the button labelled ``label``; an emoji-only button is found by its emoji, the re-roll
        button also by "re-roll"."""
        for button in self.buttons(message_id):
            emoji = (button.get("emoji") or {}).get("name", "")
            if label in (button.get("label"), emoji) or (label == "re-roll" and "imagine:r:" in button["custom_id"]):
                return str(button["custom_id"])
        raise KeyError(f"message {message_id} has no button {label!r}: {self.buttons(message_id)}")

    def attachment_bytes(self, message_id: int, index: int = 0) -> bytes:
        """Bytes of attachment ``index`` of a message."""
        with self._lock:
            attachment = self.messages[message_id]["attachments"][index]
            return self.files[int(attachment["id"])]


def _modal_inputs(modal: dict[str, Any]) -> list[dict[str, Any]]:
    """The text inputs of a modal's payload (in action rows, or in labels)."""
    found = []
    for row in modal.get("components") or []:
        children = row.get("components") or ([row["component"]] if isinstance(row.get("component"), dict) else [])
        found += [child for child in children if child.get("type") == 4]
    return found


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that owns ``guild_id`` among ``shard_count`` (Discord's formula)."""
    return (guild_id >> 22) % shard_count


def guild_with_shard(base: int, shard_id: int, shard_count: int) -> int:
    """A snowflake near ``base`` that lands on shard ``shard_id`` of ``shard_count``."""
    guild = base
    while shard_of(guild, shard_count) != shard_id:
        guild += 1 << 22
    return guild


def _option(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and "filename" in value:  # an attachment from FakeDiscord.upload
        return {"name": name, "type": 11, "value": value["id"]}
    kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 10 if isinstance(value, float) else 3
    return {"name": name, "type": kind, "value": value}


def _iso() -> str:
    return datetime.now(UTC).isoformat()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py only parses JSON when the header is exactly "application/json" (no charset).
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


async def _read_body(request: web.Request) -> tuple[Any, dict[str, tuple[str, bytes]]]:
    if not request.body_exists:
        return None, {}
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        files: dict[str, tuple[str, bytes]] = {}
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            data = await part.read()
            name = part.name or ""
            if name == "payload_json":
                payload = json.loads(bytes(data))
            else:
                files[name] = (part.filename or name, bytes(data))
        return payload, files
    raw = await request.read()
    if not raw:
        return None, {}
    with contextlib.suppress(ValueError):
        return json.loads(raw), {}
    return raw.decode(errors="replace"), {}


@contextlib.contextmanager
def running() -> Iterator[FakeDiscord]:
    """A started fake Discord, stopped on exit."""
    fake = FakeDiscord().start()
    try:
        yield fake
    finally:
        fake.stop()
