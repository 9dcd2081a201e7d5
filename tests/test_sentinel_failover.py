"""Redis Sentinel: a real primary, replica and three sentinels (``tests.redis_sentinel``); the primary is SIGKILLed
while jobs wait and one runs on a real worker process, and every job still finishes exactly once."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.jobs.spec import JobStatus
from shared.queue.client import enqueue, get_queue, job_state
from shared.settings import Settings
from shared.stores.connection import FailoverRetry, SentinelConnection, connect, redis_url, wait_for_replica
from tests.redis_sentinel import MASTER_NAME, SentinelCluster
from tests.test_chain import make_spec

JOBS = 6
"""Jobs enqueued before the failover."""

ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""Colour codes RQ may put in its log lines."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    server = SentinelCluster(tmp_path / "redis").start()
    print(f"\nsentinel cluster start time: {server.start_s:.2f} s")
    yield server
    server.stop()


def sentinel_env(cluster: SentinelCluster) -> dict[str, str]:
    """What a bot or worker process needs to use the cluster (no REDIS_URL: the sentinels name the server)."""
    return {"REDIS_URL": "", "REDIS_SENTINELS": cluster.sentinels_setting, "REDIS_SENTINEL_MASTER": MASTER_NAME}


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, log_path: Path | None = None, every_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
    raise AssertionError(f"gave up after {timeout_s} s waiting for {what}\n{tail}")


def test_sentinel_connection_follows_the_primary_and_wait_reaches_the_replica(cluster: SentinelCluster) -> None:
    settings = Settings(**{key.lower(): value for key, value in sentinel_env(cluster).items()})  # type: ignore[arg-type]
    assert redis_url(settings) == ""  # no embedded server is started when sentinels are configured
    connection = connect(settings)
    pool = connection.connection_pool
    assert isinstance(pool.connection_kwargs["retry"], FailoverRetry)
    assert pool.connection_kwargs.get("decode_responses") is False
    connection.set("k", b"\x00bytes")
    assert connection.get("k") == b"\x00bytes"  # bytes in, bytes out (RQ needs them)
    assert wait_for_replica(connection, settings) == 1
    assert cluster.replica.client().get("k") == b"\x00bytes"
    assert wait_for_replica(connection, settings.model_copy(update={"redis_replica_wait_ms": 0})) is None

    # A read interrupted by an exception closes its connection, so the late reply is never read by the next command
    # (redis-py's own Sentinel connection keeps it open: see shared.stores.connection.SentinelConnection).
    pooled = pool.get_connection()
    assert isinstance(pooled, SentinelConnection)
    pooled.send_command("BLPOP", "never-pushed", 2)
    with pytest.raises(redis.TimeoutError):
        pooled.read_response(timeout=0.1)
    assert pooled._sock is None
    pool.release(pooled)
    assert connection.get("k") == b"\x00bytes"


@pytest.mark.slow
def test_jobs_queued_and_running_survive_a_primary_crash_and_finish_exactly_once(
    cluster: SentinelCluster, start_worker: Callable[..., subprocess.Popen[bytes]], settings_env: dict[str, str]
) -> None:
    env = sentinel_env(cluster)
    settings = Settings(**{key.lower(): value for key, value in {**settings_env, **env}.items()})  # type: ignore[arg-type]
    connection = connect(settings)
    # 64 px, 10 steps: long enough on a CPU that the crash finds one job running and the rest waiting.
    specs = [make_spec(settings, seed=seed, width=64, height=64, steps=10) for seed in range(JOBS)]
    for spec in specs:
        enqueue(connection, settings, spec)
        # The enqueue is on the replica too before the test goes on (see shared.stores.connection.wait_for_replica).
        assert wait_for_replica(connection, settings) == 1

    worker = start_worker(env=env, name="sentinel")
    log_path: Path = worker.log_path  # type: ignore[attr-defined]

    def running() -> list[str]:
        states = [job_state(connection, spec.job_id) for spec in specs]
        return [s.job_id for s in states if s is not None and s.status is JobStatus.STARTED]

    wait_for(lambda: bool(running()), 180, "the worker to start a job", log_path)
    queue = get_queue(connection, settings, settings.default_lane)
    waiting_before = queue.count
    died = cluster.kill_primary()
    failover_s = cluster.wait_failover(died)
    print(f"\nfailover: the sentinels promoted the replica {failover_s:.2f} s after the primary died")
    assert waiting_before >= 1  # jobs were waiting when the primary died

    def all_done() -> bool:
        states = [job_state(connection, spec.job_id) for spec in specs]
        return all(s is not None and s.status in {JobStatus.FINISHED, JobStatus.FAILED} for s in states)

    wait_for(all_done, 300, "every job to end after the failover", log_path, every_s=0.5)
    finished_s = time.monotonic() - died
    print(f"all {JOBS} jobs ended {finished_s:.1f} s after the primary died ({waiting_before} were waiting)")
    log_text = ANSI.sub("", log_path.read_text(errors="replace"))
    output_dir = Path(settings_env["OUTPUT_DIR"])
    for spec in specs:
        state = job_state(connection, spec.job_id, settings)
        assert state is not None and state.status is JobStatus.FINISHED, (spec.job_id, state)
        assert state.result is not None and state.result.seeds == spec.seeds
        job = Job.fetch(spec.job_id, connection=connection, serializer=JSONSerializer)
        assert len(job.results()) == 1, spec.job_id  # one result: it finished once
        runs = [line for line in log_text.splitlines() if line.endswith(f"({spec.job_id})") and "Job OK" not in line]
        oks = [line for line in log_text.splitlines() if "Job OK" in line and line.endswith(f"({spec.job_id})")]
        assert len(runs) == 1 and len(oks) == 1, (spec.job_id, runs, oks)  # dequeued once, completed once
        assert (output_dir / spec.job_id / "job.json").is_file()  # published
    assert queue.count == 0
    assert worker.poll() is None, "the worker must survive the failover and keep serving"
    assert cluster.master_port() == cluster.replica.port
    # A warm shutdown while idle (SIGTERM during the dequeue's BLPOP) ends cleanly on the new primary.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, log_path.read_text(errors="replace")[-3000:]
    assert "Traceback" not in log_path.read_text(errors="replace")
