"""The acknowledgement path's reads: everything an answer to /imagine needs from Redis (the member's settings, ban and
queued count; lane lengths, pause, limits, ETA figures), read for every interaction of one event-loop turn in ONE
round trip.

discord.py parses a burst of gateway events back to back and only then runs their handlers, so 200 simultaneous
/imagine start in the same loop turn; each asks ``AckReader.read`` and waits, and one Lua script call answers them
all on the next turn. Before this, each answer made about twelve round trips, the loop blocked on each, and the last
of 200 answers waited for 2,400 of them (docs/performance.md). What does not have to happen before the answer (the
enqueue) happens after it (``bot.jobs.JobDesk.enqueue_soon``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq.utils import as_text

from shared.keys import RQ_WORKERS, keys_for
from shared.queue import eta, limits, worker_models
from shared.queue.limits import Limits
from shared.settings import Settings
from shared.stores import member_settings
from shared.stores.member_settings import MemberSettings

log = logging.getLogger(__name__)

# KEYS: limits config, paused flag, ETA averages, RQ's workers set, banned hash, queued hash, worker models, then L
#       lane lists, L started registries, then one member settings key per member.
# ARGV: now, L, then the member ids (in the order of their settings keys).
# Returns {config (flat), paused, averages (flat), workers, {lane lengths}, {running per lane}, {per member:
#          settings or false, ban or false, queued or false}, worker models (flat)}.
_READ = """
local lanes = tonumber(ARGV[2])
local now = ARGV[1]
local lengths, running, members = {}, {}, {}
for i = 1, lanes do
  lengths[i] = redis.call('LLEN', KEYS[7 + i])
  running[i] = redis.call('ZCOUNT', KEYS[7 + lanes + i], now, '+inf')
end
local first = 8 + 2 * lanes
for i = first, #KEYS do
  local member = ARGV[3 + i - first]
  members[#members + 1] = {
    redis.call('GET', KEYS[i]),
    redis.call('HGET', KEYS[5], member),
    redis.call('HGET', KEYS[6], member),
  }
end
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('EXISTS', KEYS[2]),
  redis.call('HGETALL', KEYS[3]),
  redis.call('SCARD', KEYS[4]),
  lengths,
  running,
  members,
  redis.call('HGETALL', KEYS[7]),
}
"""


@dataclass(frozen=True)
class QueueView:
    """The queue as one loop turn's answers see it."""

    counts: dict[str, int]
    """Lane -> jobs waiting in it."""
    paused: bool
    limits: dict[str, Limits]
    """Scope (``default``, ``role:<id>``) -> limits (``shared.queue.limits.limits_table``)."""
    averages: dict[str, float]
    """``model|lane`` -> measured seconds per job (``shared.queue.eta``)."""
    running: int
    """Jobs running now, every lane."""
    workers: int
    """Workers registered with RQ."""
    announced: tuple[worker_models.Announcement, ...] = ()
    """The live workers' model announcements (``shared.queue.worker_models``)."""

    def unserved(self, model_key: str) -> bool:
        """Whether no live worker serves ``model_key`` (while some workers live): the job will wait for one."""
        return worker_models.unserved(self.announced, model_key)

    def ahead_by_lane(self, lane: str, pending: dict[str, int] | None = None) -> dict[str, int]:
        """Jobs a worker takes before one enqueued now on ``lane``, per lane served up to it (``pending``: jobs this
        process answered but has not enqueued yet, per lane)."""
        ahead: dict[str, int] = {}
        for name, count in self.counts.items():
            ahead[name] = count + (pending or {}).get(name, 0)
            if name == lane:
                break
        return ahead

    def eta_s(self, lane: str, model: str, ahead_by_lane: dict[str, int], model_key: str = "") -> float | None:
        """Seconds until a job of ``model`` on ``lane`` with ``ahead_by_lane`` ahead is done (None: not measured),
        shared among the live workers that serve ``model_key`` when they announced it."""
        workers = worker_models.served_counts(self.announced).get(model_key, 0) or self.workers
        return eta.eta_from(self.averages, lane, model, ahead_by_lane, running=self.running, workers=workers)


@dataclass(frozen=True)
class MemberView:
    """One member as an answer needs them."""

    member: MemberSettings
    ban: str | None
    """Their ban (JSON with the reason), or None."""
    queued: int
    """Their jobs waiting now."""


def parse_ban_reason(raw: str | None) -> str:
    """The reason of a ban as ``MemberView.ban`` holds it ("" without one)."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return ""
    return str(data.get("reason", "")) if isinstance(data, dict) else ""


class AckReader:
    """Reads ``QueueView`` and ``MemberView``s for all the interactions of one loop turn in one round trip."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._script = connection.register_script(_READ)
        self._waiting: list[tuple[str, asyncio.Future[tuple[QueueView, MemberView]]]] = []
        self._scheduled = False
        self.batches = 0
        """Round trips made (for the benchmark and the tests)."""

    async def read(self, member_id: str) -> tuple[QueueView, MemberView]:
        """The queue and ``member_id`` as they are now, read together with every other caller of this loop turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[QueueView, MemberView]] = loop.create_future()
        self._waiting.append((member_id, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting, self._scheduled = self._waiting, [], False
        try:
            queue, members = self.read_now([member for member, _ in waiting])
        except Exception as exc:  # every waiting answer gets the error (Redis down: each says so privately)
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), member in zip(waiting, members, strict=True):
            if not future.done():
                future.set_result((queue, member))

    def read_now(self, member_ids: Sequence[str]) -> tuple[QueueView, list[MemberView]]:
        """One round trip: the queue and each of ``member_ids`` (blocking)."""
        settings = self.settings
        keys = keys_for(settings)
        lanes = list(settings.lanes)
        raw: Any = self._script(
            keys=[
                keys.limits_config,
                keys.paused,
                keys.eta_seconds,
                RQ_WORKERS,
                keys.banned,
                keys.limits_queued,
                keys.worker_models,
                *(keys.lane_list(lane) for lane in lanes),
                *(keys.started_registry(lane) for lane in lanes),
                *(keys.member_settings(member) for member in member_ids),
            ],
            args=[time.time(), len(lanes), *member_ids],
        )
        self.batches += 1
        config, paused, averages, workers, lengths, running, members, announced = raw
        queue = QueueView(
            counts={lane: int(n) for lane, n in zip(lanes, lengths, strict=True)},
            paused=bool(paused),
            limits=limits.limits_table(settings, _pairs(config)),
            averages=eta.parse_averages(_pairs(averages)),
            running=sum(int(n) for n in running),
            workers=int(workers),
            announced=tuple(worker_models.parse_live(_pairs(announced))),
        )
        views = [
            MemberView(
                member=member_settings.from_stored(stored, member_id),
                ban=as_text(ban) if ban else None,
                queued=int(queued or 0),
            )
            for member_id, (stored, ban, queued) in zip(member_ids, members, strict=True)
        ]
        return queue, views


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    """A flat ``HGETALL`` reply from Lua (key, value, key, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
