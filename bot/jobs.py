"""The bot's side of the queue: enqueue members' jobs, remember whose they are, and tell queue positions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import redis
from rq.registry import StartedJobRegistry

from bot.ack import AckReader
from shared import defaults
from shared.discord_wire.rate_budget import RateBudget
from shared.jobs.spec import JobSpec, JobStatus
from shared.keys import Keys, keys_for
from shared.queue.client import JobState, all_queues, enqueue, get_queue, job_state
from shared.settings import Settings
from shared.stores import member_settings
from shared.stores.member_settings import MemberSettings

log = logging.getLogger(__name__)


class JobDesk:
    """Enqueues jobs and answers "where is my job" for one Redis and one set of settings."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._enqueue_turn = asyncio.Lock()
        self.shown: dict[str, str] = {}
        """Job id -> the waiting line its message shows now (kept by ``submission`` and ``queue_updates``)."""
        self.reads = AckReader(connection, settings)
        """The acknowledgement path's batched reads (``bot/ack.py``)."""
        self.budget = RateBudget(connection, settings)
        """The bot token's rate budget, shared with the workers (queue-position and failure edits ask it)."""
        self.pending_by_lane: Counter[str] = Counter()
        """Lane -> jobs this process answered with a waiting message but has not enqueued yet."""
        self.pending_by_member: Counter[str] = Counter()
        """Member -> their jobs answered but not enqueued yet (counted against their queued limit)."""
        self._answering = 0
        self._answered = asyncio.Event()
        self._answered.set()

    @contextlib.asynccontextmanager
    async def answering(self) -> AsyncIterator[None]:
        """Around the work before an interaction's answer: enqueues wait while any answer is being made."""
        self._answering += 1
        self._answered.clear()
        try:
            yield
        finally:
            self._answering -= 1
            if self._answering == 0:
                self._answered.set()

    def hold(self, spec: JobSpec) -> None:
        """Count ``spec`` as answered and waiting for its enqueue (positions and limits of the next answers)."""
        self.pending_by_lane[spec.lane] += 1
        self.pending_by_member[spec.owner] += 1

    def release_hold(self, spec: JobSpec) -> None:
        """Undo ``hold(spec)`` (its answer failed, or it was enqueued)."""
        for counter, key in ((self.pending_by_lane, spec.lane), (self.pending_by_member, spec.owner)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    async def enqueue_soon(self, spec: JobSpec, roles: Sequence[str] = (), *, held: bool = False) -> None:
        """``enqueue`` from the event loop once no answer is being made (an answer is Discord's 3 s deadline, the
        enqueue is not), one job per loop turn, so that a burst of interactions is answered first. No thread: it
        would compete with the loop for the GIL while answers wait. ``held``: ``hold(spec)`` counted it."""
        try:
            async with self._enqueue_turn:
                await asyncio.sleep(0)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + defaults.ENQUEUE_MAX_DEFER_S
                # Woken by the last answer, re-checked (a new one may have begun since); never deferred longer
                # than ENQUEUE_MAX_DEFER_S, so that a steady stream of answers cannot starve the enqueues.
                while self._answering and loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._answered.wait(), deadline - loop.time())
                self.enqueue(spec, roles)
        finally:
            if held:
                self.release_hold(spec)

    @property
    def keys(self) -> Keys:
        return keys_for(self.settings)

    def member_and_queues(self, owner: str) -> tuple[MemberSettings, dict[str, int]]:
        """The member's settings and every lane's queue length, in one Redis round trip (before an answer)."""
        queues = all_queues(self.connection, self.settings)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.member_settings(owner))
            for queue in queues:
                pipe.llen(queue.key)
            raw, *lengths = pipe.execute()
        counts = {lane: int(length) for lane, length in zip(self.settings.lanes, lengths, strict=True)}
        return member_settings.from_stored(raw, owner), counts

    def ahead_by_lane(self, lane: str, counts: dict[str, int] | None = None) -> dict[str, int]:
        """Jobs waiting that a worker takes before a job enqueued now on ``lane``, per lane: the lanes served up to
        ``lane`` (included) and their queue lengths (``counts`` from ``member_and_queues``, else read now)."""
        ahead: dict[str, int] = {}
        for name in self.settings.lanes:
            ahead[name] = counts[name] if counts is not None else get_queue(self.connection, self.settings, name).count
            if name == lane:
                break
        return ahead

    def enqueue(self, spec: JobSpec, roles: Sequence[str] = ()) -> None:
        """Enqueue ``spec`` and remember it as its owner's (``roles``: the member's role ids, for per-role limits)."""
        enqueue(self.connection, self.settings, spec, roles)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.member_jobs(spec.owner), {spec.job_id: spec.created_at})
            pipe.expire(self.keys.member_jobs(spec.owner), defaults.MEMBER_JOBS_TTL_S)
            pipe.incr(self.keys.member_made(spec.owner))
            waiting = spec.delivery.waiting_message_id
            if waiting:  # a reaction on the waiting message finds its job
                pipe.set(self.keys.waiting_message(waiting), spec.job_id, ex=defaults.MEMBER_JOBS_TTL_S)
            pipe.execute()

    def position(self, state: JobState) -> int | None:
        """1-based position of a queued job across the lanes in service order; None if it is not queued."""
        if state.status is not JobStatus.QUEUED:
            return None
        lane = state.spec.lane
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
        key = self.keys.member_jobs(owner)
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in self.connection.zrevrange(key, 0, -1)]
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
        running = sum(StartedJobRegistry(queue=queue, serializer=queue.serializer).count for queue in queues)
        made = self.connection.get(self.keys.member_made(owner))
        return {"queued": sum(q.count for q in queues), "running": running, "made": int(made or 0)}

    def state(self, job_id: str) -> JobState | None:
        """Status, progress and spec of ``job_id``; None if Redis has no record of it."""
        return job_state(self.connection, job_id)

    def latest_active(self, owner: str) -> str | None:
        """The member's newest running or queued job, for /cancel without an id."""
        jobs = self.active_jobs(owner)
        return jobs[0][0].job_id if jobs else None

    def job_of_waiting_message(self, message_id: str) -> str | None:
        """The job whose waiting message is ``message_id`` (None for any other message)."""
        raw = self.connection.get(self.keys.waiting_message(message_id))
        return raw.decode() if isinstance(raw, bytes) else raw
