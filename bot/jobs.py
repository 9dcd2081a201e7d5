"""The bot's side of the queue: enqueue members' jobs, remember whose they are, and tell queue positions."""

from __future__ import annotations

import logging
import redis
from rq.registry import StartedJobRegistry

from shared import defaults
from shared.job import JobSpec, JobStatus
from shared.queue import JobState, all_queues, enqueue, get_queue, job_state
from shared.settings import Settings

log = logging.getLogger(__name__)


class JobDesk:
    """Enqueues jobs and answers "where is my job" for one Redis and one set of settings."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def _member_key(self, owner: str) -> str:
        return f"{self.settings.queue_prefix}:member:{owner}:jobs"

    def _made_key(self, owner: str) -> str:
        return f"{self.settings.queue_prefix}:member:{owner}:made"

    def ahead_of(self, lane: str) -> int:
        """Jobs waiting that a worker takes before a job enqueued now on ``lane`` (lanes are served in order)."""
        total = 0
        for name in self.settings.lanes:
            total += get_queue(self.connection, self.settings, name).count
            if name == lane:
                break
        return total

    def enqueue(self, spec: JobSpec) -> None:
        """Enqueue ``spec`` and remember it as its owner's."""
        enqueue(self.connection, self.settings, spec)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zadd(self._member_key(spec.owner), {spec.job_id: spec.created_at})
            pipe.expire(self._member_key(spec.owner), defaults.MEMBER_JOBS_TTL_S)
            pipe.incr(self._made_key(spec.owner))
            pipe.execute()

    def position(self, state: JobState) -> int | None:
        """1-based position of a queued job across the lanes in service order; None if it is not queued."""
        if state.status is not JobStatus.QUEUED:
            return None
        lane = str(state.spec.get("lane", ""))
        ahead = 0
        for name in self.settings.lanes:
            queue = get_queue(self.connection, self.settings, name)
            if name == lane:
                index = queue.get_job_position(state.job_id)
                return None if index is None else ahead + index + 1
            ahead += queue.count
        return None

    def active_jobs(self, owner: str) -> list[tuple[JobState, int | None]]:
        """The member's running and queued jobs, newest first, with queue positions; finished ones are forgotten."""
        key = self._member_key(owner)
        ids = [raw.decode() for raw in self.connection.zrevrange(key, 0, -1)]
        found: list[tuple[JobState, int | None]] = []
        done: list[str] = []
        for job_id in ids:
            state = job_state(self.connection, job_id)
            if state is None or state.status not in (JobStatus.QUEUED, JobStatus.STARTED):
                done.append(job_id)
                continue
            found.append((state, self.position(state)))
        if done:
            self.connection.zrem(key, *done)
        return found

    def totals(self, owner: str) -> dict[str, int]:
        """Jobs queued in all lanes, jobs running, and how many jobs the member has made."""
        queues = all_queues(self.connection, self.settings)
        running = sum(
            StartedJobRegistry(queue=queue, serializer=queue.serializer).count
            for queue in queues
        )
        made = self.connection.get(self._made_key(owner))
        return {"queued": sum(q.count for q in queues), "running": running, "made": int(made or 0)}

    def state(self, job_id: str) -> JobState | None:
        """Status, progress and spec of ``job_id``; None if Redis has no record of it."""
        return job_state(self.connection, job_id)

    def latest_active(self, owner: str) -> str | None:
        """The member's newest running or queued job, for /cancel without an id."""
        jobs = self.active_jobs(owner)
        return jobs[0][0].job_id if jobs else None
