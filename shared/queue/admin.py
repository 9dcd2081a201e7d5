"""Admin actions on the queue: pause/resume, clear, cancel, purge, ban/unban, limits, status; all audited in Redis.

Every function takes the acting admin's id (``actor``) and writes one entry to the audit log (``shared.audit_log``,
event ``admin``); the bot also posts it to ``settings.audit_channel_id`` when set. Who is an admin is decided by
``is_admin`` here, in code, whatever Discord shows (a hidden command is not a security boundary).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.utils import as_text

from shared import defaults
from shared.jobs.spec import JobSpec
from shared.keys import keys_for
from shared.queue import eta, limits, meta, worker_models
from shared.queue.client import fetch_job, get_queue, request_cancel
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)


def _ids(text: str) -> set[str]:
    return {part.strip() for part in text.split(",") if part.strip()}


def is_admin(settings: Settings, user_id: str, role_ids: Sequence[str], has_admin_permission: bool) -> bool:
    """Whether a member may use admin commands: the Discord permission (``Manage Server``), or a configured user
    or role id (``ADMIN_USER_IDS`` / ``ADMIN_ROLE_IDS``)."""
    if has_admin_permission or user_id in _ids(settings.admin_user_ids):
        return True
    return bool(_ids(settings.admin_role_ids) & {str(role) for role in role_ids})


def audit(connection: redis.Redis, settings: Settings, actor: str, action: str, detail: str = "") -> str:
    """Append an admin action to the audit log (``shared.audit_log``, event ``admin``); returns its time stamp."""
    entry = audit_log.record(connection, settings, "admin", actor=actor, action=action, detail=detail)
    return f"{entry['ts']:.3f}"


def audit_entries(
    connection: redis.Redis, settings: Settings, count: int = defaults.AUDIT_SHOWN
) -> list[dict[str, Any]]:
    """The newest ``count`` admin actions, newest first (``actor``, ``action``, ``detail``, ``ts``)."""
    return audit_log.entries(connection, settings, count=count, event="admin")


def pause(connection: redis.Redis, settings: Settings, actor: str) -> None:
    """Workers stop taking new jobs (running ones finish); submissions are still accepted and wait."""
    connection.set(keys_for(settings).paused, actor)
    audit(connection, settings, actor, "queue pause")


def resume(connection: redis.Redis, settings: Settings, actor: str) -> None:
    """Workers take jobs again, in the order they would have."""
    connection.delete(keys_for(settings).paused)
    audit(connection, settings, actor, "queue resume")


def is_paused(connection: redis.Redis, settings: Settings) -> bool:
    """Whether ``/queue pause`` is in force."""
    return bool(connection.exists(keys_for(settings).paused))


def _queued_ids(connection: redis.Redis, settings: Settings, lane: str) -> list[str]:
    return [as_text(raw) for raw in connection.lrange(keys_for(settings).lane_list(lane), 0, -1)]


def _spec_of(job: Job | None) -> JobSpec | None:
    return meta.spec_of(job) if job is not None else None


@dataclass
class Removed:
    """Jobs an admin action removed or stopped, with their specs (the bot tells their owners)."""

    canceled: list[JobSpec] = field(default_factory=list)
    """Specs of queued jobs that were removed."""
    stopping: list[JobSpec] = field(default_factory=list)
    """Specs of running jobs asked to stop at their next step."""


def _cancel(connection: redis.Redis, settings: Settings, job_id: str, removed: Removed) -> str:
    spec = _spec_of(fetch_job(connection, job_id))
    outcome = request_cancel(connection, settings, job_id)
    if spec is not None and outcome == "canceled":
        removed.canceled.append(spec)
    elif spec is not None and outcome == "stopping":
        removed.stopping.append(spec)
    return outcome


def clear(connection: redis.Redis, settings: Settings, actor: str, lane: str = "") -> Removed:
    """Remove every waiting job of ``lane`` (every lane if empty); running jobs go on."""
    lanes = [lane] if lane else list(settings.lanes)
    for name in lanes:
        get_queue(connection, settings, name)  # validates the lane name
    removed = Removed()
    for name in lanes:
        for job_id in _queued_ids(connection, settings, name):
            _cancel(connection, settings, job_id, removed)
    audit(connection, settings, actor, "queue clear", f"lane={lane or 'all'} removed={len(removed.canceled)}")
    return removed


def cancel(connection: redis.Redis, settings: Settings, actor: str, job_id: str) -> tuple[str, Removed]:
    """Cancel one job: removed if waiting, stopped at its next denoising step if running."""
    removed = Removed()
    outcome = _cancel(connection, settings, job_id, removed)
    audit(connection, settings, actor, "queue cancel", f"job={job_id} outcome={outcome}")
    return outcome, removed


def _running_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    ids: list[str] = []
    for name in settings.lanes:
        registry = StartedJobRegistry(queue=get_queue(connection, settings, name))
        ids.extend(registry.get_job_ids(cleanup=False))
    return ids


def purge(connection: redis.Redis, settings: Settings, actor: str, member: str) -> Removed:
    """Remove all of ``member``'s waiting jobs and stop their running ones."""
    removed = Removed()
    waiting = [job_id for name in settings.lanes for job_id in _queued_ids(connection, settings, name)]
    for job_id in waiting + _running_ids(connection, settings):
        spec = _spec_of(fetch_job(connection, job_id))
        if spec is not None and spec.owner == member:
            _cancel(connection, settings, job_id, removed)
    audit(
        connection,
        settings,
        actor,
        "queue purge",
        f"member={member} removed={len(removed.canceled)} stopping={len(removed.stopping)}",
    )
    return removed


def ban(connection: redis.Redis, settings: Settings, actor: str, member: str, reason: str = "") -> Removed:
    """Ban ``member`` from submitting (their waiting jobs are removed, running ones stopped)."""
    if not member.isdigit():
        raise ValueError(f"member must be a numeric user id, got {member!r}")
    connection.hset(keys_for(settings).banned, member, json.dumps({"reason": reason, "by": actor, "at": time.time()}))
    audit(connection, settings, actor, "ban", f"member={member} reason={reason}")
    return purge(connection, settings, actor, member)


def unban(connection: redis.Redis, settings: Settings, actor: str, member: str) -> bool:
    """Lift ``member``'s ban; returns whether they were banned."""
    was = bool(connection.hdel(keys_for(settings).banned, member))
    audit(connection, settings, actor, "unban", f"member={member} was_banned={was}")
    return was


def is_banned(connection: redis.Redis, settings: Settings, member: str) -> bool:
    """Whether ``member`` is banned."""
    return bool(connection.hexists(keys_for(settings).banned, member))


def set_limits(
    connection: redis.Redis, settings: Settings, actor: str, scope: str, *, running: int, queued: int
) -> limits.Limits:
    """``/limits set``: store the limits of ``scope`` (``default`` or ``role:<id>``) in Redis."""
    value = limits.Limits(running=running, queued=queued)
    limits.set_limits(connection, settings, scope, value)
    audit(connection, settings, actor, "limits set", f"{scope} running={running} queued={queued}")
    return value


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as /workers shows it."""

    name: str
    state: str
    current_job: str
    last_heartbeat: float | None
    queues: tuple[str, ...]
    models: tuple[str, ...] = ()
    """Model keys it serves (its announcement, ``shared.queue.worker_models``)."""
    families: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    """Model keys loaded in it now."""


def workers(connection: redis.Redis, settings: Settings | None = None) -> list[WorkerInfo]:
    """Every registered worker with its state, current job and last heartbeat (Unix time), and with ``settings`` the
    models it announced (``shared.queue.worker_models``)."""
    announced = {entry.worker: entry for entry in worker_models.live(connection, settings)} if settings else {}
    found = []
    for worker in sorted(Worker.all(connection=connection), key=lambda w: w.name):
        beat = worker.last_heartbeat
        entry = announced.get(worker.name)
        found.append(
            WorkerInfo(
                name=worker.name,
                state=str(getattr(worker.get_state(), "value", worker.get_state())),
                current_job=worker.get_current_job_id() or "",
                last_heartbeat=beat.timestamp() if beat is not None else None,
                queues=tuple(worker.queue_names()),
                models=entry.models if entry else (),
                families=entry.families if entry else (),
                held=entry.held if entry else (),
            )
        )
    return found


@dataclass(frozen=True)
class QueueStatus:
    """What /queue status shows."""

    paused: bool
    waiting: dict[str, int]
    """Lane -> jobs waiting."""
    running: list[str]
    """Ids of running jobs."""
    workers: list[WorkerInfo]
    jobs_per_minute: float
    members: dict[str, tuple[int, int]]
    """Member -> (queued, running) counted against their limits."""


def status(connection: redis.Redis, settings: Settings) -> QueueStatus:
    """Lane lengths, running jobs, workers, throughput and per-member counts."""
    return QueueStatus(
        paused=is_paused(connection, settings),
        waiting={name: get_queue(connection, settings, name).count for name in settings.lanes},
        running=_running_ids(connection, settings),
        workers=workers(connection, settings),
        jobs_per_minute=eta.jobs_per_minute(connection, settings),
        members=limits.all_counts(connection, settings),
    )
