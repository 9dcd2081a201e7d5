"""Discord's rate limits as one budget shared by every process that uses the bot token, kept in Redis.

The bot and every worker send with one token, so Discord counts their requests together: a global 50 per second,
and per channel a bucket for posting messages, one for editing them and one for deleting them (separate buckets:
posts never wait for the edit window). Each process asks ``RateBudget`` before a request; a Lua script, on Redis's
clock, keeps a sliding window per bucket (Discord's window plus ``DISCORD_BUDGET_MARGIN_S``) and grants the request
only when the bucket and the global window both have room, so the processes together stay under Discord's limits
instead of each learning them from its own 429s.

Edits are also ranked, because a channel's 5 edits per 5 s are shared by the bot's queue-position edits and every
worker's progress edits: a message asking for an edit joins the channel's line with a rank (``Priority``: a final
line first, then progress, then queue position; within a class the message edited least recently first), and the
free slots of the window are kept for the messages ahead of it (and a queue-position edit leaves
``DISCORD_POSITION_RESERVE`` of them free, for progress edits asked a moment later). Nothing is queued: a message
that is not granted sends nothing, and its next ask carries its newest state (coalescing: the freshest state of each
message wins, never every step); a message that stops asking leaves the line after ``DISCORD_EDIT_WANT_TTL_S``. If
Redis cannot be reached the request goes ahead (a rate limit must never stop delivery; Discord's 429 handling
remains).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import redis

from shared import defaults
from shared.keys import keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)


class Priority(IntEnum):
    """Rank of an edit in its channel's line (lower goes first)."""

    FINAL = 0
    """A message's last words (a failure line): the member must see it."""
    PROGRESS = 1
    """A running job's percentage and preview."""
    POSITION = 2
    """A queued job's position and ETA."""


POST, EDIT, DELETE = "post", "edit", "delete"
"""The per-channel routes Discord limits separately."""

# KEYS: global window, bucket window, channel's wants, asked, granted.
# ARGV: request id, global limit, global window ms, bucket limit (0: none), bucket window ms, message id ("": not
#       ranked), priority class, want ttl ms, keys ttl ms, slots this class leaves free for higher ones.
# Returns {1, 0} (granted and counted) or {0, ms to wait before asking again}.
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local gl, gw = tonumber(ARGV[2]), tonumber(ARGV[3])
local bl, bw = tonumber(ARGV[4]), tonumber(ARGV[5])
local message = ARGV[6]
local keep = tonumber(ARGV[9])
local wait = 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - gw)
if redis.call('ZCARD', KEYS[1]) >= gl then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = tonumber(oldest[2]) + gw - now
end
if bl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - bw)
  local free = bl - redis.call('ZCARD', KEYS[2])
  if free <= 0 then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + bw - now
    if w > wait then wait = w end
  end
  if message ~= '' then
    local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[8]))
    for _, m in ipairs(stale) do redis.call('ZREM', KEYS[3], m) end
    if #stale > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[8])) end
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - keep)
    local last = tonumber(redis.call('ZSCORE', KEYS[5], message) or '0')
    local score = tonumber(ARGV[7]) * 1e13 + last
    redis.call('ZADD', KEYS[3], score, message)
    redis.call('ZADD', KEYS[4], now, message)
    local ahead = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. score)
    if wait <= 0 and free <= ahead + tonumber(ARGV[10]) then wait = 100 end
    redis.call('PEXPIRE', KEYS[3], keep)
    redis.call('PEXPIRE', KEYS[4], keep)
  end
end
if wait > 0 then return {0, math.ceil(wait)} end
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], keep)
if bl > 0 then
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('PEXPIRE', KEYS[2], keep)
end
if message ~= '' then
  redis.call('ZREM', KEYS[3], message)
  redis.call('ZREM', KEYS[4], message)
  redis.call('ZADD', KEYS[5], now, message)
  redis.call('PEXPIRE', KEYS[5], keep)
end
return {1, 0}
"""


def route_of(method: str, path: str) -> tuple[str, str, str]:
    """``(route, channel, message)`` of a REST call: ``POST``/``EDIT``/``DELETE`` on a channel's messages, or
    ``("", "", "")`` for a call only the global limit counts."""
    parts = [part for part in path.split("?", maxsplit=1)[0].split("/") if part]
    if len(parts) >= 3 and parts[0] == "channels" and parts[2] == "messages":
        channel = parts[1]
        if len(parts) == 3 and method == "POST":
            return POST, channel, ""
        if len(parts) == 4 and method == "PATCH":
            return EDIT, channel, parts[3]
        if len(parts) == 4 and method == "DELETE":
            return DELETE, channel, ""
    return "", "", ""


class RateBudget:
    """The token's shared budget (see the module doc); ``connection`` may be a callable that connects on first use."""

    def __init__(self, connection: redis.Redis | Callable[[], redis.Redis], settings: Settings) -> None:
        self._connection = connection
        self.settings = settings
        self._script: Any = None
        margin = defaults.DISCORD_BUDGET_MARGIN_S
        self.routes: dict[str, tuple[int, float]] = {
            POST: (defaults.DISCORD_CHANNEL_POSTS, defaults.DISCORD_CHANNEL_POST_WINDOW_S + margin),
            EDIT: (settings.discord_channel_edits, settings.discord_channel_edit_window_s + margin),
            DELETE: (defaults.DISCORD_CHANNEL_DELETES, defaults.DISCORD_CHANNEL_DELETE_WINDOW_S + margin),
        }
        """Route -> (requests, window seconds with the margin)."""
        self.global_window = (settings.discord_global_per_s, 1.0 + margin)

    @property
    def connection(self) -> redis.Redis:
        if not isinstance(self._connection, redis.Redis):
            self._connection = self._connection()
        return self._connection

    def try_acquire(
        self, route: str = "", channel: str = "", *, message: str = "", priority: Priority = Priority.FINAL
    ) -> float:
        """Ask for one request on ``route`` of ``channel`` (``""``: only the global limit); ``message`` ranks an edit
        in the channel's line with ``priority``. Returns 0 when granted (and counted), else the seconds to wait
        before asking again. Fails open (0) when Redis cannot be reached."""
        if route and route not in self.routes:
            raise ValueError(f"route must be one of {', '.join(self.routes)} or '', got {route!r}")
        keys = keys_for(self.settings)
        limit, window = self.routes.get(route, (0, 0.0))
        ranked = route == EDIT and bool(message)
        try:
            if self._script is None:
                self._script = self.connection.register_script(_ACQUIRE)
            granted, wait_ms = self._script(
                keys=[
                    keys.discord_global,
                    keys.discord_bucket(route or "none", channel or "none"),
                    keys.discord_edit_wants(channel or "none"),
                    keys.discord_edit_asked(channel or "none"),
                    keys.discord_edit_granted(channel or "none"),
                ],
                args=[
                    uuid.uuid4().hex,
                    self.global_window[0],
                    round(1000 * self.global_window[1]),
                    limit if channel else 0,
                    round(1000 * window),
                    message if ranked else "",
                    int(priority),
                    round(1000 * defaults.DISCORD_EDIT_WANT_TTL_S),
                    round(1000 * defaults.DISCORD_BUDGET_TTL_S),
                    min(defaults.DISCORD_POSITION_RESERVE, limit - 1) if priority is Priority.POSITION else 0,
                ],
            )
        except redis.RedisError:
            log.warning(
                "Discord rate budget unavailable (Redis); sending %s on %s anyway", route or "a request", channel
            )
            return 0.0
        return 0.0 if int(granted) else max(0.001, int(wait_ms) / 1000)

    def acquire(
        self,
        route: str = "",
        channel: str = "",
        *,
        message: str = "",
        priority: Priority = Priority.FINAL,
        max_wait_s: float = defaults.DISCORD_RETRY_MAX_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """``try_acquire`` until granted, sleeping as told; False when that would take more than ``max_wait_s``."""
        waited = 0.0
        while True:
            wait = self.try_acquire(route, channel, message=message, priority=priority)
            if wait <= 0:
                return True
            if waited + wait > max_wait_s:
                return False
            sleep(wait)
            waited += wait

    async def acquire_async(
        self,
        route: str = "",
        channel: str = "",
        *,
        message: str = "",
        priority: Priority = Priority.FINAL,
        max_wait_s: float = defaults.DISCORD_RETRY_MAX_S,
    ) -> bool:
        """``acquire`` for the bot's event loop (one short Redis call per ask; waits with ``asyncio.sleep``)."""
        waited = 0.0
        while True:
            wait = self.try_acquire(route, channel, message=message, priority=priority)
            if wait <= 0:
                return True
            if waited + wait > max_wait_s:
                return False
            await asyncio.sleep(wait)
            waited += wait

    def forget(self, channel: str, message: str) -> None:
        """Take ``message`` out of its channel's line (its job ended: nothing more to show in it)."""
        keys = keys_for(self.settings)
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.discord_edit_wants(channel), message)
                pipe.zrem(keys.discord_edit_asked(channel), message)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not take message %s out of channel %s's edit line (Redis)", message, channel)
