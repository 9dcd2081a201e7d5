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
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import as_text

from shared import defaults
from shared.jobs.spec import JobSpec
from shared.keys import Keys, keys_for
from shared.queue import meta
from shared.settings import Settings

log = logging.getLogger(__name__)

ANY = "*"
"""Model or lane wildcard of the averages (``*|fast`` is any model on fast, ``*|*`` anything)."""


def _model_of(spec: JobSpec | None) -> str:
    return (spec.model if spec is not None else "") or "default"


def record_job(connection: redis.Redis, keys: Keys, job: Any, status: str) -> None:
    """Fold a finished job's duration into the averages of its model and lane (other outcomes are not timed)."""
    if status != "finished" or job.started_at is None:
        return
    spec = meta.spec_of(job)
    lane, model = (spec.lane if spec is not None else ANY), _model_of(spec)
    now = time.time()
    seconds = max(0.0, now - job.started_at.timestamp())
    fields = [f"{model}|{lane}", f"{ANY}|{lane}", f"{ANY}|{ANY}"]
    old = connection.hmget(keys.eta_seconds, fields)
    alpha = defaults.ETA_SMOOTHING
    new = {
        f: seconds if raw is None else (1 - alpha) * float(raw) + alpha * seconds
        for f, raw in zip(fields, old, strict=True)
    }
    with connection.pipeline(transaction=False) as pipe:
        for name, value in new.items():
            pipe.hset(keys.eta_seconds, name, value)
        pipe.zadd(keys.eta_done, {job.id: now})
        pipe.zremrangebyscore(keys.eta_done, "-inf", now - defaults.THROUGHPUT_WINDOW_S)
        pipe.execute()


def average_seconds(connection: redis.Redis, settings: Settings, lane: str, model: str = ANY) -> float | None:
    """Measured seconds per job for ``model`` on ``lane``, falling back to any model, then any lane; None if never."""
    fields = [f"{model}|{lane}", f"{ANY}|{lane}", f"{ANY}|{ANY}"]
    for raw in connection.hmget(keys_for(settings).eta_seconds, fields):
        if raw is not None:
            return float(raw)
    return None


def jobs_per_minute(connection: redis.Redis, settings: Settings) -> float:
    """Jobs finished per minute over the last ``THROUGHPUT_WINDOW_S`` seconds."""
    now = time.time()
    done = connection.zcount(keys_for(settings).eta_done, now - defaults.THROUGHPUT_WINDOW_S, "+inf")
    return done * 60.0 / defaults.THROUGHPUT_WINDOW_S


def position_and_eta(connection: redis.Redis, settings: Settings, job_id: str) -> tuple[int | None, float | None]:
    """``(position, eta_s)`` of ``job_id``: position 1 = next to start, 0 = running, None = neither (or unknown).

    ``eta_s`` is the expected seconds until the job is done, None until some job's duration has been measured.
    """
    keys = keys_for(settings)
    raw = connection.hget(keys.job(job_id), "status")
    status = as_text(raw) if raw else ""
    if status not in {"queued", "started"}:
        return None, None
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:  # expired between the two reads
        return None, None
    spec = meta.spec_of(job)
    lane, model = (spec.lane if spec is not None else ""), _model_of(spec)
    own = average_seconds(connection, settings, lane, model)
    if status == "started":
        progress = meta.progress_of(job.meta).fraction
        return 0, None if own is None else own * max(0.0, 1.0 - progress)
    ahead_by_lane: dict[str, int] = {}
    for name in settings.lanes:
        key = keys.lane_list(name)
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
    keys = keys_for(settings)
    raw = connection.hgetall(keys.eta_seconds)
    now = time.time()
    running = sum(int(connection.zcount(keys.started_registry(name), now, "+inf")) for name in settings.lanes)
    return eta_from(
        parse_averages(raw), lane, model, ahead_by_lane, running=running, workers=Worker.count(connection=connection)
    )


def parse_averages(raw: dict[Any, Any]) -> dict[str, float]:
    """The ``eta_seconds`` hash as read from Redis (``HGETALL``): ``model|lane`` -> seconds."""
    return {as_text(key): float(value) for key, value in raw.items()}


def average_from(averages: dict[str, float], lane: str, model: str = ANY) -> float | None:
    """``average_seconds`` from the averages already read (``parse_averages``)."""
    for name in (f"{model}|{lane}", f"{ANY}|{lane}", f"{ANY}|{ANY}"):
        if name in averages:
            return averages[name]
    return None


def eta_from(
    averages: dict[str, float], lane: str, model: str, ahead_by_lane: dict[str, int], *, running: int, workers: int
) -> float | None:
    """``eta_for`` from figures already read: the averages, the jobs running now and the workers (one Redis round
    trip for a whole burst of answers, ``bot/ack.py``)."""
    own = average_from(averages, lane, model or "default")
    if own is None:
        return None
    work_ahead = sum(count * (average_from(averages, name) or 0.0) for name, count in ahead_by_lane.items())
    # A running job is on average half done.
    remaining = running * own / 2
    return (work_ahead + remaining) / max(1, workers) + own
