"""The job heartbeat: a thread that keeps a running job's started-registry entry alive, so that a worker killed
mid-job is noticed within seconds instead of the job timeout.

Why a thread: RQ's ``SimpleWorker`` runs the job in its own thread, so it cannot refresh the job's entry in the
started registry while the model denoises. RQ then sets that entry's expiry to the job timeout + 60 s, and a worker
killed mid-job is only noticed after that (15 minutes by default). Here the entry expires ``worker_abandon_after_s``
after the last heartbeat, and this thread refreshes every entry of this worker each ``job_heartbeat_s``; a dead
worker stops refreshing, and the next maintenance pass of any worker (every ``worker_maintenance_s``) finds the job
abandoned (``worker.abandoned``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq.registry import StartedJobRegistry
from rq.utils import as_text, current_timestamp

from shared.keys import Keys

log = logging.getLogger(__name__)


class JobHeartbeat:
    """A daemon thread that pushes the started-registry expiry of every job this worker runs ``ttl_s`` ahead."""

    def __init__(self, worker: Any, every_s: float, ttl_s: int) -> None:
        if every_s <= 0 or ttl_s <= every_s:
            raise ValueError(f"job heartbeat needs 0 < every_s < ttl_s, got every_s={every_s}, ttl_s={ttl_s}")
        self.worker = worker
        self.every_s = every_s
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def start(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 1)

    def beat(self) -> int:
        """Refresh this worker's active executions once; returns how many registry entries were refreshed.

        The executions come from the worker's memory (``worker.executions``) and its Redis index; the index expires
        with the worker's own heartbeat, which RQ sets to the short job TTL when a job starts, so it is refreshed
        here too while jobs run.
        """
        connection = self.worker.connection
        composites = {execution.composite_key for execution in list(self.worker.executions.values())}
        composites |= {as_text(raw) for raw in connection.smembers(self.worker.executions_key)}
        if not composites:
            return 0
        expiry = current_timestamp() + self.ttl_s
        with connection.pipeline() as pipe:
            self.worker.heartbeat(self.ttl_s + 60, pipeline=pipe)
            for composite in sorted(composites):
                for queue in self.worker.queues:
                    key = StartedJobRegistry(queue.name, connection=connection).key
                    pipe.zadd(key, {composite: expiry}, xx=True, ch=True)
                pipe.expire(Keys.execution(composite), self.ttl_s)
            results = pipe.execute()
        return sum(value for value in results if type(value) is int and value > 0)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except Exception:  # a Redis blip must not kill the thread; the next beat retries
                log.warning("job heartbeat failed; retrying in %.1f s", self.every_s, exc_info=True)
