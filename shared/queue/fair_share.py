"""Fair-share dispatch on plain RQ queues: round-robin across members inside a lane, per-member running caps, pause.

Design (docs/operations.md explains it to operators):

- Each lane stays ONE ordinary RQ queue (``Keys.lane_list``), so ``Queue.count``, positions, ``Job.cancel``,
  rq-dashboard and RQ maintenance work unchanged.
- ``FairQueue.push_job_id`` (the enqueue side) does not append: a Lua script gives the job a *round* and inserts it
  after the last job of a round <= its own. A member's first waiting job gets the round of the lane's head, their
  second the next round, and so on, so the list reads "one job of every member, then the second job of every member,
  ...": start-time fair queuing by insertion, O(queue length) per enqueue, atomic in Redis.
- ``FairQueue.dequeue_any`` (the worker side) runs a second Lua script: unless the queue is paused, take the first job,
  in lane priority order, whose owner runs fewer jobs than their running cap, and move it from "queued" to "running"
  in the per-member counts (``shared.limits``). When nothing is eligible the worker blocks on a wake-up list
  that every enqueue pushes to, for at most ``FAIR_POLL_S``.
- Jobs without an owner record (pushed by plain RQ, e.g. a requeue) are served in list order and never counted.
- Routing by model (``shared.queue.worker_models``): the enqueue writes the job's model key into its RQ hash
  (``JOB_MODEL_FIELD``); a worker's dequeue passes the model keys it serves, and the take script skips a job of any
  other model, which keeps its place for a worker that serves it. A queue without ``models`` takes any job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer, Serializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import as_text

from shared import defaults
from shared.keys import JOB_MODEL_FIELD, RQ_JOB_PREFIX, Keys
from shared.queue import limits
from shared.settings import Settings

log = logging.getLogger(__name__)

# KEYS: lane list, round hash, member-last-round hash (this lane), owner hash.  ARGV: job id.
# Returns the round given to the job, or -1 for an unowned job (appended like plain RQ).
_PUSH = """
local list, rounds, last, owners = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job = ARGV[1]
local owner = redis.call('HGET', owners, job)
if not owner then
  redis.call('RPUSH', list, job)
  return -1
end
local items = redis.call('LRANGE', list, 0, -1)
local head = nil
for _, id in ipairs(items) do
  local r = redis.call('HGET', rounds, id)
  if r then head = tonumber(r) break end
end
if not head then
  redis.call('DEL', last)
  head = 0
end
local round = head
local previous = redis.call('HGET', last, owner)
if previous and tonumber(previous) + 1 > round then round = tonumber(previous) + 1 end
redis.call('HSET', rounds, job, round)
redis.call('HSET', last, owner, round)
for i = #items, 1, -1 do
  local r = redis.call('HGET', rounds, items[i])
  if (not r) or tonumber(r) <= round then
    if i == #items then
      redis.call('RPUSH', list, job)
    else
      redis.call('LINSERT', list, 'AFTER', items[i], job)
    end
    return round
  end
end
redis.call('LPUSH', list, job)
return round
"""

# KEYS: paused flag, owner hash, running hash, queued hash, cap hash, running-jobs set, since hash, round hash,
#       then the lane lists in priority order.
# ARGV: now, most jobs scanned per lane, RQ's job key prefix, our model field, then the model keys this worker serves
#       (none: any model).
# Returns {lane key, job id} or nil.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local owners, running, queued, caps = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local active, since, rounds = KEYS[6], KEYS[7], KEYS[8]
local full = {}
local serves = nil
if #ARGV > 4 then
  serves = {}
  for i = 5, #ARGV do serves[ARGV[i]] = true end
end
for k = 9, #KEYS do
  local items = redis.call('LRANGE', KEYS[k], 0, tonumber(ARGV[2]) - 1)
  for _, id in ipairs(items) do
    local mine = true
    if serves then
      local model = redis.call('HGET', ARGV[3] .. id, ARGV[4])
      if model and not serves[model] then mine = false end
    end
    local owner = mine and redis.call('HGET', owners, id)
    if mine and not owner then
      redis.call('LREM', KEYS[k], 1, id)
      return {KEYS[k], id}
    end
    if mine and not full[owner] then
      local cap = tonumber(redis.call('HGET', caps, owner) or '1000000')
      local run = tonumber(redis.call('HGET', running, owner) or '0')
      if run < cap then
        redis.call('LREM', KEYS[k], 1, id)
        if tonumber(redis.call('HINCRBY', queued, owner, -1)) == 0 then redis.call('HDEL', queued, owner) end
        redis.call('HINCRBY', running, owner, 1)
        redis.call('SADD', active, id)
        redis.call('HSET', since, id, ARGV[1])
        redis.call('HDEL', rounds, id)
        return {KEYS[k], id}
      end
      full[owner] = true
    end
  end
end
return nil
"""


class FairQueue(Queue):
    """An RQ queue whose enqueue inserts by fair-share round and whose dequeue honours running caps and pause."""

    settings: Settings | None = None
    """The settings the queue was made for (``shared.queue.client.get_queue`` sets it; RQ builds instances without
    it, which is why the keys come from the queue's own name)."""

    models: frozenset[str] | None = None
    """Model keys the worker dequeuing from this queue serves (None: any); the worker sets it."""

    route_model: str = ""
    """Model key of the job being enqueued through this instance, written into its RQ hash at the push."""

    @property
    def keys(self) -> Keys:
        """The keys of the system this queue belongs to (its name is ``<prefix>:<lane>``)."""
        return Keys.of_queue(self.name)

    def push_job_id(self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False) -> None:
        keys = self.keys
        client = pipeline if pipeline is not None else self.connection
        if self.route_model:  # before the push: a worker never sees the job without its model
            client.hset(RQ_JOB_PREFIX + job_id, JOB_MODEL_FIELD, self.route_model)
        if at_front:
            super().push_job_id(job_id, pipeline=pipeline, at_front=True)
        else:
            script = self.connection.register_script(_PUSH)
            script(
                keys=[self.key, keys.fair_round, keys.fair_last_round(self.key), keys.limits_owners],
                args=[job_id],
                client=client,
            )
        # Wake one idle worker; the list is capped, as tokens pile up while every worker is busy.
        client.lpush(keys.fair_wake, 1)
        client.ltrim(keys.fair_wake, 0, defaults.FAIR_WAKE_TOKENS - 1)

    @classmethod
    def take(
        cls, connection: Redis, keys: Keys, queue_keys: Sequence[str], models: Iterable[str] | None = None
    ) -> tuple[str, str] | None:
        """Atomically pop the next eligible job of ``queue_keys`` (priority order) whose model is one of ``models``
        (None: any): ``(queue key, job id)`` or None."""
        script = connection.register_script(_TAKE)
        result: Any = script(
            keys=[
                keys.paused,
                keys.limits_owners,
                keys.limits_running,
                keys.limits_queued,
                keys.limits_caps,
                keys.limits_active,
                keys.limits_since,
                keys.fair_round,
                *queue_keys,
            ],
            args=[time.time(), defaults.FAIR_SCAN_MAX, RQ_JOB_PREFIX, JOB_MODEL_FIELD, *sorted(models or ())],
        )
        if not result:
            return None
        return as_text(result[0]), as_text(result[1])

    @classmethod
    def dequeue_any(  # noqa: PLR0917 (RQ's signature)
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Serializer | str | None = None,
        death_penalty_class: type[BaseDeathPenalty] | None = None,
    ) -> tuple[Job, Queue] | None:
        """Like RQ's, but picks by fair share; with a timeout it waits for an enqueue's wake-up
        token or ``FAIR_POLL_S``, whichever comes first (a plain BLPOP on the lanes could not skip capped members)."""
        queues = list(queues)
        if not queues:
            raise ValueError("dequeue_any needs at least one queue, got none")
        by_key = {queue.key: queue for queue in queues}
        keys = Keys.of_queue(queues[0].name)
        settings = getattr(queues[0], "settings", None)
        models = getattr(queues[0], "models", None)
        deadline = None if timeout is None else time.monotonic() + timeout
        if settings is not None:
            limits.maybe_reconcile(connection, settings)
        while True:
            picked = cls.take(connection, keys, list(by_key), models)
            if picked is None:
                if deadline is None:
                    return None
                if time.monotonic() >= deadline:
                    raise DequeueTimeout(timeout, list(by_key))
                # Blocks until an enqueue wakes us, or FAIR_POLL_S passes (a member's running job may have ended,
                # making one of their waiting jobs eligible: nothing pushes a token for that).
                connection.blpop([keys.fair_wake], timeout=defaults.FAIR_POLL_S)
                continue
            queue_key, job_id = picked
            # RQ's public fetch; the queue is our own instance (it carries the settings), not one rebuilt from its key.
            job_cls = job_class or Job
            try:
                job = job_cls.fetch(job_id, connection=connection, serializer=serializer or JSONSerializer)
            except NoSuchJobError:  # expired or deleted while it waited: not counted any more either
                limits.release_counted(connection, keys, job_id, [queue_key])
                continue
            return job, by_key[queue_key]
