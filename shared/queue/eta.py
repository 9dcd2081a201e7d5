"""Queue position and ETA of a job from measured throughput (moving average of job durations per model and lane).

Workers record each finished job's duration (RQ success callback, ``record_job``); ``position_and_eta`` turns the
jobs ahead into seconds: (work ahead + remaining work of running jobs) / workers + the job's own expected duration.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from rq import Worker

from shared import defaults
from shared.queue.limits import text
from shared.settings import Settings

log = logging.getLogger(__name__)

ANY = "*"
"""Model or lane wildcard of the averages (``*|fast`` is any model on fast, ``*|*`` anything)."""


def durations_key(settings: Settings) -> str:
    """Hash ``model|lane`` -> moving average of job seconds."""
    return f"{settings.queue_prefix}:eta:seconds"


def done_key(settings: Settings) -> str:
    """Sorted set job id -> finish time of recently finished jobs (jobs per minute)."""
    return f"{settings.queue_prefix}:eta:done"


def _model_of(spec: dict[str, Any]) -> str:
    return str(spec.get("model", "")) or "default"


def record_job(connection: redis.Redis, settings: Settings, job: Any, status: str, result: Any) -> None:
    """Fold a finished job's duration into the averages of its model and lane (other outcomes are not timed)."""
    if status != "finished" or job.started_at is None:
        return
    spec = job.meta.get("spec", {})
    lane, model = str(spec.get("lane", ANY)), _model_of(spec)
    now = time.time()
    seconds = max(0.0, now - job.started_at.timestamp())
    fields = [f"{model}|{lane}", f"{ANY}|{lane}", f"{ANY}|{ANY}"]
    old = connection.hmget(durations_key(settings), fields)
    alpha = defaults.ETA_SMOOTHING
    new = {
        f: seconds if raw is None else (1 - alpha) * float(raw) + alpha * seconds
        for f, raw in zip(fields, old, strict=True)
    }
    with connection.pipeline(transaction=False) as pipe:
        for name, value in new.items():
            pipe.hset(durations_key(settings), name, value)
        pipe.zadd(done_key(settings), {job.id: now})
        pipe.zremrangebyscore(done_key(settings), "-inf", now - defaults.THROUGHPUT_WINDOW_S)
        pipe.execute()


def average_seconds(connection: redis.Redis, settings: Settings, lane: str, model: str = ANY) -> float | None:
    """Measured seconds per job for ``model`` on ``lane``, falling back to any model, then any lane; None if never."""
    fields = [f"{model}|{lane}", f"{ANY}|{lane}", f"{ANY}|{ANY}"]
    for raw in connection.hmget(durations_key(settings), fields):
        if raw is not None:
            return float(raw)
    return None


def jobs_per_minute(connection: redis.Redis, settings: Settings) -> float:
    """Jobs finished per minute over the last ``THROUGHPUT_WINDOW_S`` seconds."""
    now = time.time()
    done = connection.zcount(done_key(settings), now - defaults.THROUGHPUT_WINDOW_S, "+inf")
    return done * 60.0 / defaults.THROUGHPUT_WINDOW_S


def position_and_eta(connection: redis.Redis, settings: Settings, job_id: str) -> tuple[int | None, float | None]:
    """``(position, eta_s)`` of ``job_id``: position 1 = next to start, 0 = running, None = neither (or unknown).

    ``eta_s`` is the expected seconds until the job is done, None until some job's duration has been measured.
    """
    raw = connection.hget(f"rq:job:{job_id}", "status")
    status = text(raw) if raw else ""
    from shared.queue.client import fetch_job  # shared.queue imports shared.limits, which imports this module lazily

    job = fetch_job(connection, job_id) if status in {"queued", "started"} else None
    if job is None:
        return None, None
    spec = job.get_meta(refresh=False).get("spec", {})
    lane, model = str(spec.get("lane", "")), _model_of(spec)
    own = average_seconds(connection, settings, lane, model)
    if status == "started":
        progress = float(job.meta.get("progress", 0.0))
        return 0, None if own is None else own * max(0.0, 1.0 - progress)
    prefix = settings.queue_prefix
    ahead_by_lane: dict[str, int] = {}
    for name in settings.lanes:
        key = f"rq:queue:{prefix}:{name}"
        if name == lane:
            index = connection.lpos(key, job_id)
            if index is None:
                return None, None
            ahead_by_lane[name] = int(index)  # type: ignore[arg-type]  # LPOS without COUNT answers one index
            return sum(ahead_by_lane.values()) + 1, eta_for(connection, settings, lane, model, ahead_by_lane)
        ahead_by_lane[name] = int(connection.llen(key))
    return None, None


def eta_for(
    connection: redis.Redis, settings: Settings, lane: str, model: str, ahead_by_lane: dict[str, int]
) -> float | None:
    """Expected seconds until a queued job of ``model`` on ``lane`` is done, with ``ahead_by_lane`` jobs ahead of it
    in each lane served before it (and its own); None until some job's duration has been measured."""
    own = average_seconds(connection, settings, lane, model or "default")
    if own is None:
        return None
    work_ahead = sum(
        count * (average_seconds(connection, settings, name) or 0.0) for name, count in ahead_by_lane.items()
    )
    now = time.time()
    prefix = settings.queue_prefix
    running = sum(int(connection.zcount(f"rq:wip:{prefix}:{name}", now, "+inf")) for name in settings.lanes)
    workers = max(1, Worker.count(connection=connection))
    # A running job is on average half done.
    remaining = running * own / 2
    return (work_ahead + remaining) / workers + own
