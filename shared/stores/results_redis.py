"""The Redis result store: images and records as Redis strings with the result lifetime, under a size cap.

The keys are ``Keys.image`` and ``Keys.record`` (those of the image store before result stores existed), so older
results are read as they are.

At the cap (``REDIS_RESULT_MAX_BYTES``, PNG bytes; records, about 1-2 KB each, are not counted) the oldest jobs'
results are evicted to make room; new images are never refused for want of room. Why evict rather than refuse: the
newest results are the ones members click U/V buttons on, an evicted job answers those clicks with the same
``ResultExpired`` sentence as an expired one, and a store that refused at the cap would fail every new job until
results aged out (30 days by default), after the GPU work was done. Only one job's images larger than the whole cap
are refused (``ValueError`` naming the setting). The bookkeeping (a sorted set of jobs by time put, a hash of their
sizes, a byte total) and the eviction run in one Lua script, so workers sharing the Redis agree on it; entries of jobs
that expired by TTL are dropped from it as time passes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from shared import defaults
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores.results import (
    Location,
    ResultStore,
    check_index,
    check_job_id,
    image_expired,
    record_expired,
)

log = logging.getLogger(__name__)

PRUNE_PER_PUT = 1000
"""Most expired jobs dropped from the bookkeeping by one put (bounds the script's run time)."""

# KEYS: index (sorted set job -> time put), sizes (hash job -> "bytes count"), total (bytes held).
# ARGV: image key prefix, record key prefix, job id, ttl_s, cap (0 = none), prune limit, mode ("put" or "delete"),
#       then the PNGs in order.  Evicted jobs' keys are built from the two prefixes (``Keys.image_prefix``,
#       ``Keys.record_prefix``): this store runs on one Redis node (plain, or Sentinel-managed; never a cluster).
# Returns the ids of the jobs evicted to make room.
_SCRIPT = """
local index, sizes, total = KEYS[1], KEYS[2], KEYS[3]
local image_prefix, record_prefix, job = ARGV[1], ARGV[2], ARGV[3]
local ttl, cap, prune_limit, mode = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function drop(j, with_record)
  local value = redis.call('HGET', sizes, j)
  if value then
    local bytes, count = string.match(value, '^(%d+) (%d+)$')
    redis.call('DECRBY', total, bytes)
    for i = 0, tonumber(count) - 1 do
      redis.call('DEL', image_prefix .. j .. ':' .. i)
    end
    redis.call('HDEL', sizes, j)
  end
  redis.call('ZREM', index, j)
  if with_record then
    redis.call('DEL', record_prefix .. j)
  end
end

-- Jobs put more than ttl ago have expired by their keys' TTL: only their bookkeeping is left to drop.
local expired = redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, prune_limit)
for _, j in ipairs(expired) do
  drop(j, false)
end

if mode == 'delete' then
  drop(job, true)
  return {}
end

-- A put replaces the job's image set whole (an earlier put's extra images go too); its record stays.
drop(job, false)
local new = 0
for i = 8, #ARGV do
  new = new + string.len(ARGV[i])
end
local evicted = {}
if cap > 0 then
  while tonumber(redis.call('GET', total) or '0') + new > cap do
    local oldest = redis.call('ZRANGE', index, 0, 0)
    if #oldest == 0 then
      break
    end
    drop(oldest[1], true)
    table.insert(evicted, oldest[1])
  end
end
for i = 8, #ARGV do
  redis.call('SET', image_prefix .. job .. ':' .. (i - 8), ARGV[i], 'EX', ttl)
end
redis.call('ZADD', index, now, job)
redis.call('HSET', sizes, job, new .. ' ' .. (#ARGV - 7))
redis.call('INCRBY', total, new)
return evicted
"""


class RedisResultStore(ResultStore):
    """Results in the same Redis as the queue (see the module doc for the cap)."""

    backend = "redis"

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        super().__init__(settings.image_ttl_s)
        self.connection = connection
        self.keys = keys_for(settings)
        self.max_bytes = settings.redis_result_max_bytes
        self._script = connection.register_script(_SCRIPT)

    @property
    def location(self) -> Location:
        return Location("redis")

    def image_key(self, job_id: str, index: int) -> str:
        """Redis key of image ``index`` (0-based) of ``job_id``."""
        return self.keys.image(job_id, index)

    def record_key(self, job_id: str) -> str:
        """Redis key of ``job_id``'s record."""
        return self.keys.record(job_id)

    @property
    def bytes_key(self) -> str:
        """Redis key of the PNG bytes the store holds now (the number the cap is checked against)."""
        return self.keys.results_bytes

    @property
    def _bookkeeping(self) -> list[str]:
        return [self.keys.results_index, self.keys.results_sizes, self.keys.results_bytes]

    def _args(self, job_id: str, mode: str) -> list[Any]:
        prefixes = [self.keys.image_prefix, self.keys.record_prefix]
        return [*prefixes, job_id, self.ttl_s, self.max_bytes, PRUNE_PER_PUT, mode]

    def stored_bytes(self) -> int:
        """PNG bytes held now, as the cap counts them."""
        return int(self.connection.get(self.bytes_key) or 0)

    def put_images(self, job_id: str, pngs: Sequence[bytes]) -> None:
        check_job_id(job_id)
        size = sum(len(png) for png in pngs)
        if self.max_bytes and size > self.max_bytes:
            raise ValueError(
                f"job {job_id}'s images are {size} bytes, more than REDIS_RESULT_MAX_BYTES={self.max_bytes} "
                "(the redis result store's cap); raise it, or use RESULT_STORE=filesystem or s3"
            )
        evicted = self._script(keys=self._bookkeeping, args=[*self._args(job_id, "put"), *pngs])
        if evicted:
            names = [item.decode() if isinstance(item, bytes) else str(item) for item in evicted]
            log.info(
                "redis result store at its cap (REDIS_RESULT_MAX_BYTES=%d): evicted the results of %d oldest jobs "
                "(%s) to store job %s",
                self.max_bytes,
                len(names),
                ", ".join(names),
                job_id,
            )

    def get_image(self, job_id: str, index: int) -> bytes:
        data = self.connection.get(self.image_key(check_job_id(job_id), check_index(index)))
        if data is None:
            raise image_expired(job_id, index, self.ttl_s)
        return data if isinstance(data, bytes) else str(data).encode()

    def put_record(self, job_id: str, record: dict[str, Any]) -> None:
        self.connection.set(self.record_key(check_job_id(job_id)), self.encode_record(record), ex=self.ttl_s)

    def get_record(self, job_id: str) -> dict[str, Any]:
        data = self.connection.get(self.record_key(check_job_id(job_id)))
        if data is None:
            raise record_expired(job_id, self.ttl_s)
        return self.decode_record(job_id, data)

    def image_url(self, job_id: str, index: int, expires_s: int = defaults.RESULT_URL_EXPIRES_S) -> str | None:
        """None: Redis has no URL to give; the image is checked to exist (``ResultExpired`` if not)."""
        if not self.connection.exists(self.image_key(check_job_id(job_id), check_index(index))):
            raise image_expired(job_id, index, self.ttl_s)
        return None

    def delete(self, job_id: str) -> None:
        check_job_id(job_id)
        self._script(keys=self._bookkeeping, args=self._args(job_id, "delete"))
        # Results stored before the bookkeeping existed have no entry: their keys go directly.
        self.connection.delete(
            self.record_key(job_id), *[self.image_key(job_id, i) for i in range(defaults.IMAGES_PER_GRID)]
        )

    def sweep(self, now: float) -> int:
        """0: Redis expires results by their keys' TTL (the bookkeeping of expired jobs is dropped by puts)."""
        return 0
