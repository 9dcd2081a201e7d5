"""Per-member job limits (running and queued), enforced atomically in Redis, released by RQ callbacks, reconciled.

Counts live in two Redis hashes (member -> queued jobs, member -> running jobs) next to a hash job id -> member that
says which jobs are counted. ``acquire`` (at enqueue) and the fair-share dequeue (``shared.queue.fair_share``) change
them in Lua scripts, so 200 concurrent submissions cannot overshoot the limit. ``release`` is idempotent: RQ's success,
failure and stopped callbacks call it (RQ also runs the failure callback for jobs abandoned by a dead worker when it
cleans the started registry), queue cancellations call it, and ``reconcile`` recomputes the counts from the lane
lists and the started registries for anything that slipped through.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq.utils import as_text

from shared import defaults, messages
from shared.errors import LimitExceeded, MemberBanned
from shared.keys import RQ_JOB_PREFIX, RQ_QUEUE_PREFIX, Keys, keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Most jobs one member may have running and waiting at once."""

    running: int
    queued: int

    def __post_init__(self) -> None:
        for name in ("running", "queued"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} limit must be an integer >= 0, got {value!r}")


# KEYS: banned, queued, owners, since, caps.  ARGV: member, job id, max queued, max running, now.
# Returns {1, queued after} | {-1, queued now} (over the limit) | {-2, 0} (banned) | {-3, 0} (job id counted already).
_ACQUIRE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {-2, 0} end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return {-3, 0} end
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if n >= tonumber(ARGV[3]) then return {-1, n} end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
return {1, n + 1}
"""

# KEYS: owners, running, queued, active, since, round hash, riders, then the lane lists.  ARGV: job id.
# Returns 3 (rode in a batch), 2 (was running), 1 (was queued: also removed from its lane), 0 (not counted).
_RELEASE = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return 0 end
local state = 1
local counter = KEYS[3]
if redis.call('SREM', KEYS[4], ARGV[1]) == 1 then
  state = 2
  counter = KEYS[2]
elseif redis.call('SREM', KEYS[7], ARGV[1]) == 1 then
  state = 3
  counter = nil
else
  for k = 8, #KEYS do redis.call('LREM', KEYS[k], 0, ARGV[1]) end
end
if counter and tonumber(redis.call('HINCRBY', counter, owner, -1)) == 0 then redis.call('HDEL', counter, owner) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return state
"""

# KEYS: owners, running, queued, active, since, round hash, riders, then N lane lists, then N started registries.
# ARGV: now, grace seconds, N, RQ's job key prefix, RQ's queue key prefix.
# Returns the number of entries fixed (dropped, or taken-but-never-started re-queued).
_RECONCILE = """
local owners, running, queued, active, since, rounds = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local riders = KEYS[7]
local now, grace, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local waiting, alive = {}, {}
for k = 8, 7 + n do
  for _, id in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do waiting[id] = true end
end
for k = 8 + n, 7 + 2 * n do
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], now, '+inf')) do
    local id = string.match(entry, '^([^:]+)') or entry
    alive[id] = true
  end
end
local q, r, dropped = {}, {}, 0
local all = redis.call('HGETALL', owners)
for i = 1, #all, 2 do
  local id, owner = all[i], all[i + 1]
  local at = tonumber(redis.call('HGET', since, id) or '0')
  local recent = now - at < grace
  local keep = false
  local is_active = redis.call('SISMEMBER', active, id) == 1
  if is_active or redis.call('SISMEMBER', riders, id) == 1 then
    if alive[id] or recent then
      if is_active then r[owner] = (r[owner] or 0) + 1 end
      keep = true
    else
      -- Taken but never started (the worker died in between): back to the front of its lane, counted as queued.
      local job = ARGV[4] .. id
      local origin = redis.call('HGET', job, 'origin')
      if origin and redis.call('HGET', job, 'status') == 'queued' then
        redis.call('SREM', active, id)
        redis.call('SREM', riders, id)
        if not waiting[id] then redis.call('LPUSH', ARGV[5] .. origin, id) end
        q[owner] = (q[owner] or 0) + 1
        keep = true
        dropped = dropped + 1
      end
    end
  else
    if waiting[id] or recent then q[owner] = (q[owner] or 0) + 1 keep = true end
  end
  if not keep then
    redis.call('HDEL', owners, id)
    redis.call('HDEL', since, id)
    redis.call('HDEL', rounds, id)
    redis.call('SREM', active, id)
    redis.call('SREM', riders, id)
    dropped = dropped + 1
  end
end
for _, set in ipairs({active, riders}) do
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('HEXISTS', owners, id) == 0 then
      redis.call('SREM', set, id)
      dropped = dropped + 1
    end
  end
end
redis.call('DEL', running, queued)
for owner, c in pairs(r) do redis.call('HSET', running, owner, c) end
for owner, c in pairs(q) do redis.call('HSET', queued, owner, c) end
return dropped
"""


def lane_lists(settings: Settings) -> list[str]:
    """The Redis lists of every lane, in service order."""
    keys = keys_for(settings)
    return [keys.lane_list(lane) for lane in settings.lanes]


def started_registries(settings: Settings) -> list[str]:
    """The started registries of every lane, in service order."""
    keys = keys_for(settings)
    return [keys.started_registry(lane) for lane in settings.lanes]


def configured_limits(connection: Redis, settings: Settings) -> dict[str, Limits]:
    """Scope -> limits: ``default`` and ``role:<id>`` from settings, overridden by ``/limits set`` (Redis)."""
    return limits_table(settings, connection.hgetall(keys_for(settings).limits_config))


def limits_table(settings: Settings, stored: dict[Any, Any]) -> dict[str, Limits]:
    """``configured_limits`` from the ``limits_config`` hash as already read (``HGETALL``)."""
    found: dict[str, Limits] = {
        "default": Limits(running=settings.max_running_per_member, queued=settings.max_queued_per_member)
    }
    for role, value in settings.role_limits.items():
        found[f"role:{role}"] = Limits(running=int(value["running"]), queued=int(value["queued"]))
    for raw_scope, raw in stored.items():
        value = json.loads(raw)
        found[as_text(raw_scope)] = Limits(running=int(value["running"]), queued=int(value["queued"]))
    return found


def set_limits(connection: Redis, settings: Settings, scope: str, value: Limits) -> None:
    """Store ``value`` for ``scope`` (``default`` or ``role:<id>``) in Redis, over the configured one."""
    if scope != "default" and not (scope.startswith("role:") and scope[5:].isdigit()):
        raise ValueError(f"limits scope must be 'default' or 'role:<numeric id>', got {scope!r}")
    payload = json.dumps({"running": value.running, "queued": value.queued})
    connection.hset(keys_for(settings).limits_config, scope, payload)


def limits_for(connection: Redis, settings: Settings, roles: Sequence[str] = ()) -> Limits:
    """The member's limits: the default, raised by any of their roles' overrides (the most generous applies)."""
    return best_limits(configured_limits(connection, settings), roles)


def best_limits(table: dict[str, Limits], roles: Sequence[str] = ()) -> Limits:
    """``limits_for`` from a table already read (``limits_table``)."""
    best = table["default"]
    for role in roles:
        override = table.get(f"role:{role}")
        if override is not None:
            best = Limits(running=max(best.running, override.running), queued=max(best.queued, override.queued))
    return best


def refusal(connection: Redis, settings: Settings, owner: str, jobs: int = 1, roles: Sequence[str] = ()) -> str:
    """The member-facing reason ``owner`` may not submit ``jobs`` more jobs now ("" if they may).

    A quick check before the bot answers; ``acquire`` (at enqueue) stays the atomic one.
    """
    k = keys_for(settings)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hget(k.banned, owner)
        pipe.hget(k.limits_queued, owner)
        banned, queued = pipe.execute()
    if banned is not None:
        return messages.banned(ban_reason(connection, settings, owner))
    allowed = limits_for(connection, settings, roles).queued
    have = int(queued or 0)
    if have + jobs > allowed:
        return messages.queued_limit(have, allowed, jobs)
    return ""


def acquire(connection: Redis, settings: Settings, owner: str, job_id: str, roles: Sequence[str] = ()) -> int:
    """Count ``job_id`` as one of ``owner``'s queued jobs, atomically; returns their queued count after it.

    Raises ``MemberBanned`` or ``LimitExceeded`` (member-facing).
    """
    allowed = limits_for(connection, settings, roles)
    k = keys_for(settings)
    script = connection.register_script(_ACQUIRE)
    code, count = (
        int(x)
        for x in script(
            keys=[k.banned, k.limits_queued, k.limits_owners, k.limits_since, k.limits_caps],
            args=[owner, job_id, allowed.queued, allowed.running, time.time()],
        )
    )
    if code == -2:
        raise MemberBanned(messages.banned(ban_reason(connection, settings, owner)))
    if code == -1:
        raise LimitExceeded(messages.queued_limit(count, allowed.queued))
    if code == -3:
        raise ValueError(f"job_id must be new, got {job_id!r} which is queued or running already")
    return count


def release(connection: Redis, settings: Settings, job_id: str) -> int:
    """Stop counting ``job_id`` (idempotent): 3 if it rode in a batch, 2 if it was running, 1 if queued (and removed
    from its lane), 0 if it was not counted."""
    return release_counted(connection, keys_for(settings), job_id, lane_lists(settings))


def release_counted(connection: Redis, keys: Keys, job_id: str, lanes: Sequence[str]) -> int:
    """``release`` for callers without settings (RQ callbacks): ``lanes`` are the lane lists a queued ``job_id`` may
    still be waiting in (its own origin's is enough)."""
    script = connection.register_script(_RELEASE)
    return int(
        script(
            keys=[
                keys.limits_owners,
                keys.limits_running,
                keys.limits_queued,
                keys.limits_active,
                keys.limits_since,
                keys.fair_round,
                keys.limits_riders,
                *lanes,
            ],
            args=[job_id],
        )
    )


# KEYS: paused flag, owners, queued, riders, since, round hash.  ARGV: job id, now.
# Returns 1 (claimed, or unowned) or 0 (paused).  A batch follower leaves "queued" but does not count as running:
# it rides in another job's pass, so the running limit counts worker passes, not jobs.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if not owner then return 1 end
if tonumber(redis.call('HINCRBY', KEYS[3], owner, -1)) == 0 then redis.call('HDEL', KEYS[3], owner) end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
"""

# KEYS: owners, queued, riders.  ARGV: job id.  Undo a claim (another worker took the job and counted it itself).
_UNCLAIM = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return 0 end
if tonumber(redis.call('HINCRBY', KEYS[2], owner, 1)) == 0 then redis.call('HDEL', KEYS[2], owner) end
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


def claim(connection: Redis, keys: Keys, job_id: str) -> bool:
    """Move a waiting job out of ``queued`` before a worker takes it out of its lane as a batch follower (it rides
    in the leader's pass, so it does not count as running); False while the queue is paused."""
    script = connection.register_script(_CLAIM)
    return bool(
        script(
            keys=[
                keys.paused,
                keys.limits_owners,
                keys.limits_queued,
                keys.limits_riders,
                keys.limits_since,
                keys.fair_round,
            ],
            args=[job_id, time.time()],
        )
    )


def unclaim(connection: Redis, keys: Keys, job_id: str) -> None:
    """Undo ``claim`` for a job another worker took first."""
    script = connection.register_script(_UNCLAIM)
    script(keys=[keys.limits_owners, keys.limits_queued, keys.limits_riders], args=[job_id])


def reconcile(connection: Redis, settings: Settings, grace_s: float = defaults.LIMITS_GRACE_S) -> int:
    """Recompute every member's counts from the lanes and the started registries; returns the entries fixed.

    A job taken from its lane but never started (its worker died in between) goes back to the front of its lane;
    a counted job that is neither waiting nor running any more stops being counted.

    Entries touched in the last ``grace_s`` seconds are kept (a job between its count and its push, or between
    its dequeue and the started registry, is in neither place for a moment).
    """
    k = keys_for(settings)
    script = connection.register_script(_RECONCILE)
    lanes = lane_lists(settings)
    dropped = int(
        script(
            keys=[
                k.limits_owners,
                k.limits_running,
                k.limits_queued,
                k.limits_active,
                k.limits_since,
                k.fair_round,
                k.limits_riders,
                *lanes,
                *started_registries(settings),
            ],
            args=[time.time(), grace_s, len(lanes), RQ_JOB_PREFIX, RQ_QUEUE_PREFIX],
        )
    )
    if dropped:
        log.warning("limits reconcile fixed %d job count(s)", dropped)
    return dropped


def maybe_reconcile(connection: Redis, settings: Settings) -> None:
    """Reconcile at most once per ``LIMITS_RECONCILE_S`` across all workers (a Redis lock elects one)."""
    if connection.set(keys_for(settings).limits_reconciled, "1", nx=True, ex=defaults.LIMITS_RECONCILE_S):
        reconcile(connection, settings)


def counts(connection: Redis, settings: Settings, owner: str) -> tuple[int, int]:
    """``(queued, running)`` jobs counted for ``owner``."""
    k = keys_for(settings)
    queued, running = connection.hget(k.limits_queued, owner), connection.hget(k.limits_running, owner)
    return int(queued or 0), int(running or 0)


def all_counts(connection: Redis, settings: Settings) -> dict[str, tuple[int, int]]:
    """Member -> ``(queued, running)`` for every member with a counted job."""
    k = keys_for(settings)
    queued = {as_text(key): int(v) for key, v in connection.hgetall(k.limits_queued).items()}
    running = {as_text(key): int(v) for key, v in connection.hgetall(k.limits_running).items()}
    return {m: (queued.get(m, 0), running.get(m, 0)) for m in sorted(set(queued) | set(running))}


def ban_reason(connection: Redis, settings: Settings, owner: str) -> str:
    """Why ``owner`` is banned ("" if not banned or no reason given)."""
    raw = connection.hget(keys_for(settings).banned, owner)
    return json.loads(raw).get("reason", "") if raw else ""
