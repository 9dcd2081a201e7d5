"""The outbox: results a worker made but could not deliver (Discord down, rate limited past the retries, network
errors) are kept in Redis and re-delivered by any worker's maintenance pass, never dropped.

One sorted set ``<prefix>:outbox`` maps job id -> when the next try is due; a hash per job keeps the job's record (its
spec inside), the tries made and the last error. A try claims an entry by pushing its due time one lease ahead in one
atomic step, so two workers never deliver the same entry at once, and an entry whose drainer died comes due again.
After ``outbox_attempts`` tries the entry moves to ``<prefix>:outbox:dead`` (kept, listed for admins) and the audit
log says so. The images stay in the image store (``shared.image_store``) under their own TTL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from shared.jobs.record import JobRecord
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)

LEASE_S = 300
"""Seconds a claimed entry stays invisible to other drainers (longer than one delivery with all its retries)."""

_CLAIM = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class OutboxEntry:
    """One undelivered result."""

    job_id: str
    record: JobRecord
    attempts: int
    """Re-delivery tries made so far (the worker's own first try not counted)."""
    last_error: str


class Outbox:
    """The durable outbox of undelivered results in Redis."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self.keys = keys_for(settings)
        self.key = self.keys.outbox
        self.dead_key = self.keys.outbox_dead

    def _entry_key(self, job_id: str) -> str:
        return self.keys.outbox_entry(job_id)

    def put(self, job_id: str, record: JobRecord, error: str) -> None:
        """Keep ``record`` for re-delivery; due after the first back-off. Putting a kept job again keeps its tries."""
        with self.connection.pipeline() as pipe:
            record_json = json.dumps(record.to_dict(), default=str)
            pipe.hset(self._entry_key(job_id), mapping={"record": record_json, "last_error": error})
            pipe.hsetnx(self._entry_key(job_id), "attempts", 0)
            pipe.zadd(self.key, {job_id: time.time() + self.settings.outbox_retry_base_s}, nx=True)
            pipe.execute()
        log.warning("result of job %s kept in the outbox for re-delivery: %s", job_id, error)

    def pending(self) -> list[str]:
        """Job ids waiting for delivery, soonest first."""
        return [_text(item) for item in self.connection.zrange(self.key, 0, -1)]

    def dead(self) -> list[str]:
        """Job ids given up on (kept for admins)."""
        return [_text(item) for item in self.connection.zrange(self.dead_key, 0, -1)]

    def get(self, job_id: str) -> OutboxEntry | None:
        raw = self.connection.hgetall(self._entry_key(job_id))
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        record = JobRecord.from_dict(json.loads(data["record"]))
        return OutboxEntry(job_id, record, int(data.get("attempts", 0)), data.get("last_error", ""))

    def claim_due(self, now: float | None = None, limit: int = 20) -> list[OutboxEntry]:
        """Claim up to ``limit`` entries due at ``now`` (each for ``LEASE_S``); claimed entries are this caller's."""
        now = time.time() if now is None else now
        claimed = []
        for raw in self.connection.zrangebyscore(self.key, "-inf", now, start=0, num=limit):
            job_id = _text(raw)
            if self.connection.eval(_CLAIM, 1, self.key, job_id, now, now + LEASE_S):
                entry = self.get(job_id)
                if entry is not None:
                    claimed.append(entry)
                else:
                    self.connection.zrem(self.key, job_id)
        return claimed

    def delivered(self, job_id: str) -> None:
        """Forget a delivered entry."""
        with self.connection.pipeline() as pipe:
            pipe.zrem(self.key, job_id)
            pipe.delete(self._entry_key(job_id))
            pipe.execute()

    def failed_again(self, entry: OutboxEntry, error: str) -> bool:
        """Record another failed try: reschedule with doubled back-off, or give up after ``outbox_attempts`` tries
        (moved to the dead set and reported in the audit log). Returns True if it will be tried again."""
        attempts = entry.attempts + 1
        self.connection.hset(self._entry_key(entry.job_id), mapping={"attempts": attempts, "last_error": error})
        if attempts >= self.settings.outbox_attempts:
            with self.connection.pipeline() as pipe:
                pipe.zrem(self.key, entry.job_id)
                pipe.zadd(self.dead_key, {entry.job_id: time.time()})
                pipe.execute()
            log.error("giving up re-delivering job %s after %d tries: %s", entry.job_id, attempts, error)
            audit_log.record(
                self.connection,
                self.settings,
                "delivery_failed",
                actor="worker",
                job_id=entry.job_id,
                attempts=attempts,
                error=error,
                owner=entry.record.spec.owner,
            )
            return False
        wait = self.settings.outbox_retry_base_s * 2 ** (attempts - 1)
        self.connection.zadd(self.key, {entry.job_id: time.time() + wait})
        return True

    def drain(self, deliver: Callable[[OutboxEntry], None], now: float | None = None) -> tuple[int, int]:
        """Try every due entry with ``deliver`` (raises on failure); returns (delivered, failed) counts."""
        done = failed = 0
        for entry in self.claim_due(now):
            try:
                deliver(entry)
            except Exception as exc:
                failed += 1
                log.warning("re-delivery of job %s failed (try %d): %s", entry.job_id, entry.attempts + 1, exc)
                self.failed_again(entry, f"{type(exc).__name__}: {exc}")
            else:
                done += 1
                self.delivered(entry.job_id)
                log.info("job %s delivered from the outbox (after %d tries)", entry.job_id, entry.attempts + 1)
        return done, failed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
