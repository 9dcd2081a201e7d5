"""Daily allowances per role: jobs per day and/or GPU-seconds per day, counted atomically in Redis, reset at a
configured time of day; jobs in exempt lanes (relax, as in Midjourney) do not count.

Configuration (``[allowances]`` in ``config/imagine.toml``, or ``ALLOWANCES`` as JSON)::

    [allowances.default]          # everyone
    jobs = 25
    gpu_seconds = 900
    [allowances."role:123456"]    # members with this role: fields named here replace the default's
    jobs = 200

A member gets, field by field, the most generous of ``default`` and their roles' tables; a field no table names is
not capped, and without any table nothing is counted.

Counting: ``acquire`` (called by ``shared.queue.client.enqueue`` for every job) takes one job from the member's
allowance in a Lua script, so any number of concurrent submissions (bot shards, the CLI, the web companion) cannot
take more than the allowance; at zero it raises ``AllowanceSpent`` naming the next reset. The worker adds a job's
measured generation time (``charge_gpu``) to the period the job was counted in; the GPU cap is checked before a job
is taken (a job's cost is known only when it has run, so jobs already queued may take a member past it). Counters
are per period (keys named by the period's start), so the reset is a new key, not a sweep; they persist with Redis's
append-only file.
"""

from __future__ import annotations

import datetime
import logging
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from shared import defaults, messages
from shared.errors import AllowanceSpent
from shared.jobs.spec import JobSpec
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)

FIELDS = ("jobs", "gpu_seconds")
"""What an allowance table may cap."""

# KEYS: jobs hash, gpu hash, the job's charged marker.  ARGV: member, jobs cap (-1: none), gpu cap (-1: none),
# seconds to keep the counters, the period.
# Returns {1, jobs used after} | {-1, jobs used} (no job left) | {-2, jobs used} (no GPU time left) | {0, used} (the
# job was counted already: idempotent for a retried enqueue).
_ACQUIRE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {0, tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')} end
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local gpu = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[3]) >= 0 and gpu >= tonumber(ARGV[3]) then return {-2, used} end
if tonumber(ARGV[2]) >= 0 and used >= tonumber(ARGV[2]) then return {-1, used} end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
return {1, used + 1}
"""

# KEYS: jobs hash (of the period the job was counted in), the job's charged marker.  ARGV: member.
# Returns 1 if a job was given back, 0 if the job was not counted.
_REFUND = """
if redis.call('DEL', KEYS[2]) == 0 then return 0 end
if tonumber(redis.call('HINCRBY', KEYS[1], ARGV[1], -1)) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Allowance:
    """What one member may use per day (None: not capped)."""

    jobs: int | None = None
    gpu_seconds: float | None = None

    @property
    def capped(self) -> bool:
        return self.jobs is not None or self.gpu_seconds is not None


@dataclass(frozen=True)
class Usage:
    """A member's allowance and what they used in the current period."""

    allowance: Allowance
    jobs: int
    gpu_seconds: float
    reset_at: float
    """Unix time of the next reset."""

    @property
    def jobs_left(self) -> int | None:
        return None if self.allowance.jobs is None else max(0, self.allowance.jobs - self.jobs)


def _table(settings: Settings, scope: str) -> dict[str, float]:
    table = settings.allowances.get(scope) or {}
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise ValueError(f"allowance {scope}: unknown keys {unknown}; allowed: {list(FIELDS)}")
    return table


def allowance_for(settings: Settings, roles: Sequence[str] = ()) -> Allowance:
    """The member's allowance: per field, the most generous of ``default`` and their roles' tables."""
    if not settings.allowances:
        return Allowance()
    tables = [_table(settings, "default")] + [_table(settings, f"role:{role}") for role in roles]
    values: dict[str, float | None] = {}
    for name in FIELDS:
        named = [float(table[name]) for table in tables if name in table]
        values[name] = max(named) if named else None
    jobs = values["jobs"]
    return Allowance(jobs=None if jobs is None else int(jobs), gpu_seconds=values["gpu_seconds"])


def period_bounds(settings: Settings, now: float) -> tuple[float, float]:
    """Start and end (Unix seconds) of the allowance period holding ``now``: from the last reset time of day in the
    configured time zone to the next one (a day apart on the clock, so 23 or 25 hours across a DST change)."""
    zone = zoneinfo.ZoneInfo(settings.allowance_timezone)
    hours, minutes = (int(part) for part in settings.allowance_reset_time.split(":"))
    local = datetime.datetime.fromtimestamp(now, zone)
    start = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if start > local:
        start = _on_day(start - datetime.timedelta(days=1), hours, minutes, zone)
    end = _on_day(start + datetime.timedelta(days=1), hours, minutes, zone)
    return start.timestamp(), end.timestamp()


def _on_day(moment: datetime.datetime, hours: int, minutes: int, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """``hours:minutes`` on ``moment``'s calendar day in ``zone`` (wall-clock arithmetic across DST)."""
    return datetime.datetime(moment.year, moment.month, moment.day, hours, minutes, tzinfo=zone)


def _period(start: float) -> str:
    return str(int(start))


def exempt(settings: Settings, lane: str) -> bool:
    """Whether jobs on ``lane`` are free of the allowance."""
    return lane in settings.allowance_exempt_lanes


def relax_lane(settings: Settings) -> str:
    """The exempt lane a member can be offered at zero ("" when none is served)."""
    return next((lane for lane in settings.allowance_exempt_lanes if lane in settings.lanes), "")


def usage(
    connection: redis.Redis, settings: Settings, owner: str, roles: Sequence[str] = (), now: float | None = None
) -> Usage:
    """The member's allowance, what they used this period, and the next reset."""
    now = now if now is not None else _now()
    start, end = period_bounds(settings, now)
    keys = keys_for(settings)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hget(keys.allowance_jobs(_period(start)), owner)
        pipe.hget(keys.allowance_gpu(_period(start)), owner)
        jobs, gpu = pipe.execute()
    return Usage(allowance_for(settings, roles), int(jobs or 0), float(gpu or 0.0), end)


def _spent(settings: Settings, allowance: Allowance, jobs: int, gpu: float, reset_at: float) -> str:
    if allowance.gpu_seconds is not None and gpu >= allowance.gpu_seconds:
        used = messages.allowance_gpu(gpu, allowance.gpu_seconds)
    else:
        used = messages.allowance_jobs(jobs, allowance.jobs or 0)
    return messages.allowance_spent(used, reset_at, relax_lane(settings))


def refusal(
    connection: redis.Redis,
    settings: Settings,
    owner: str,
    specs: Sequence[JobSpec],
    roles: Sequence[str] = (),
    *,
    now: float | None = None,
) -> str:
    """The member-facing reason ``owner`` may not submit ``specs`` now because their allowance is at zero ("" if
    they may). A quick check before the bot answers; ``acquire`` (at enqueue) is the atomic one."""
    counted = [spec for spec in specs if not exempt(settings, spec.lane)]
    allowance = allowance_for(settings, roles)
    if not counted or not allowance.capped:
        return ""
    found = usage(connection, settings, owner, roles, now)
    gpu_out = allowance.gpu_seconds is not None and found.gpu_seconds >= allowance.gpu_seconds
    if found.jobs_left == 0 or gpu_out:
        return _spent(settings, allowance, found.jobs, found.gpu_seconds, found.reset_at)
    return ""


def acquire(
    connection: redis.Redis, settings: Settings, spec: JobSpec, roles: Sequence[str] = (), now: float | None = None
) -> bool:
    """Count ``spec`` against its owner's allowance, atomically; returns whether it was counted (exempt lanes and
    members without a cap are not). Raises ``AllowanceSpent`` (member-facing, with the next reset) at zero."""
    if exempt(settings, spec.lane):
        return False
    allowance = allowance_for(settings, roles)
    if not allowance.capped:
        return False
    start, end = period_bounds(settings, now if now is not None else _now())
    keys = keys_for(settings)
    period = _period(start)
    keep = int(end - start) + defaults.ALLOWANCE_KEEP_S
    state, used = connection.eval(
        _ACQUIRE,
        3,
        keys.allowance_jobs(period),
        keys.allowance_gpu(period),
        keys.allowance_charged(spec.job_id),
        spec.owner,
        -1 if allowance.jobs is None else allowance.jobs,
        -1 if allowance.gpu_seconds is None else allowance.gpu_seconds,
        keep,
        period,
    )
    if int(state) < 0:
        gpu = float(connection.hget(keys.allowance_gpu(period), spec.owner) or 0.0)
        raise AllowanceSpent(_spent(settings, allowance, int(used), gpu, end))
    return int(state) == 1


def take_all(connection: redis.Redis, settings: Settings, specs: Sequence[JobSpec], roles: Sequence[str] = ()) -> str:
    """Count every job of one request now, all or none (a front end does this before it answers, so a member at
    zero is refused at once, however many requests arrive together); returns the member-facing refusal ("" when all
    were counted). ``acquire`` at enqueue then finds them counted already."""
    taken: list[JobSpec] = []
    try:
        for spec in specs:
            acquire(connection, settings, spec, roles)
            taken.append(spec)
    except AllowanceSpent as exc:
        for spec in taken:
            refund(connection, settings, spec)
        return str(exc)
    return ""


def refund(connection: redis.Redis, settings: Settings, spec: JobSpec) -> bool:
    """Give back the job ``spec`` took (its enqueue failed after ``acquire``); whether one was given back."""
    keys = keys_for(settings)
    period = connection.get(keys.allowance_charged(spec.job_id))
    if period is None:
        return False
    text = period.decode() if isinstance(period, bytes) else str(period)
    return bool(connection.eval(_REFUND, 2, keys.allowance_jobs(text), keys.allowance_charged(spec.job_id), spec.owner))


def charge_gpu(connection: redis.Redis, settings: Settings, spec: JobSpec, seconds: float) -> None:
    """Add a finished job's measured generation seconds to its owner's GPU time, in the period the job was counted
    in (the current one for a job that was not counted); exempt lanes are not charged."""
    if seconds <= 0 or exempt(settings, spec.lane) or not allowance_for(settings, spec.delivery.roles).capped:
        return
    keys = keys_for(settings)
    raw = connection.get(keys.allowance_charged(spec.job_id))
    if raw is not None:
        period = raw.decode() if isinstance(raw, bytes) else str(raw)
        start = float(period)
    else:
        start, _ = period_bounds(settings, _now())
        period = _period(start)
    key = keys.allowance_gpu(period)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hincrbyfloat(key, spec.owner, round(seconds, 3))
        pipe.expire(key, max(1, int(start + 86400 + defaults.ALLOWANCE_KEEP_S - _now())))
        pipe.execute()


def reset(connection: redis.Redis, settings: Settings, actor: str, owner: str, now: float | None = None) -> None:
    """Start the member's counts of the current period again from zero (an admin's ``/quota reset``), audited."""
    start, _ = period_bounds(settings, now if now is not None else _now())
    keys = keys_for(settings)
    with connection.pipeline() as pipe:
        pipe.hdel(keys.allowance_jobs(_period(start)), owner)
        pipe.hdel(keys.allowance_gpu(_period(start)), owner)
        pipe.execute()
    audit_log.record(connection, settings, "allowance_reset", actor=actor, member=owner)


def _now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()
