"""Which Discord shards a bot process runs, which guilds they own, and IDENTIFY turns shared by every bot process.

Discord sends a guild's events to shard ``(guild_id >> 22) % shard_count`` (direct messages to shard 0). One process
runs ``SHARD_IDS`` of ``SHARD_COUNT`` (all of them when ``SHARD_IDS`` is empty; Discord's recommended count when
``SHARD_COUNT`` is empty), so the bot's background work (queue-position edits) is done, for each job, by the process
whose shard owns the job's guild: the one that answered its interaction. Discord allows one IDENTIFY per 5 s per
token (``max_concurrency`` 1); the turn is taken through a Redis key, so processes started together do not trip it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import redis

from shared.keys import keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that owns ``guild_id`` (0 for direct messages, ``guild_id`` 0) among ``shard_count``."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be >= 1, got {shard_count}")
    return (guild_id >> 22) % shard_count


def owns_guild(guild: str | int, shard_count: int | None, shard_ids: Sequence[int] | None) -> bool:
    """Whether a process running ``shard_ids`` (None: all) of ``shard_count`` (None: not known yet, i.e. one
    process) owns ``guild`` (a guild id, or "" / 0 for direct messages)."""
    if not shard_count or shard_ids is None:
        return True
    text = str(guild or "0")
    guild_id = int(text) if text.isdigit() else 0
    return shard_of(guild_id, shard_count) in shard_ids


async def identify_turn(connection: redis.Redis, settings: Settings, shard_id: int | None) -> None:
    """Wait for this token's next IDENTIFY turn: at most one IDENTIFY per ``DISCORD_IDENTIFY_WAIT_S`` across every
    bot process (a Redis key held for that long); no wait when the setting is 0."""
    wait_s = settings.discord_identify_wait_s
    if wait_s <= 0:
        return
    key = keys_for(settings).identify_turn
    started = time.monotonic()
    while True:
        try:
            taken = await asyncio.to_thread(connection.set, key, str(shard_id), nx=True, px=int(wait_s * 1000))
        except redis.RedisError:
            log.warning("Redis unavailable for the IDENTIFY turn of shard %s; waiting %.1f s", shard_id, wait_s)
            await asyncio.sleep(wait_s)
            return
        if taken:
            if time.monotonic() - started > 0.1:
                log.info("shard %s identifies after waiting %.1f s for its turn", shard_id, time.monotonic() - started)
            return
        await asyncio.sleep(min(0.5, wait_s / 10))
