"""Worker faults on real processes and a real Redis: SIGKILL mid-job, out of memory, internal errors.

Maintenance and heartbeat run on a short clock here (settings), so an abandoned job is found within seconds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.jobs.spec import JobSpec, JobStatus
from shared.messages import ABANDONED as ABANDONED_MESSAGE
from shared.queue.client import enqueue, job_state, request_cancel
from shared.settings import Settings
from shared.stores.images import get_record
from tests.test_chain import make_spec, wait_until
from worker.faults import FAULT_MARKER

pytestmark = pytest.mark.slow

FAST_CLOCK = {"WORKER_ABANDON_AFTER_S": "3", "JOB_HEARTBEAT_S": "0.5", "WORKER_MAINTENANCE_S": "1"}
StartWorker = Callable[..., subprocess.Popen[bytes]]


def kill_mid_job(worker: subprocess.Popen[bytes], connection: redis.Redis, spec: JobSpec) -> None:
    """SIGKILL ``worker`` once it is denoising ``spec`` (as an OOM killer or a power cut would)."""

    def denoising() -> bool:
        state = job_state(connection, spec.job_id)
        return state is not None and state.status is JobStatus.STARTED and state.progress.step >= 1

    wait_until(denoising)
    worker.kill()
    worker.wait()


def test_worker_killed_mid_job_is_requeued_once_and_delivered_once(
    settings: Settings, redis_conn: redis.Redis, start_worker: StartWorker
) -> None:
    first = start_worker(name="killed", env=FAST_CLOCK)
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    spec = make_spec(settings, steps=30)
    enqueue(redis_conn, settings, spec)
    kill_mid_job(first, redis_conn, spec)

    second = start_worker(name="survivor", env=FAST_CLOCK)

    def finished() -> bool:
        state = job_state(redis_conn, spec.job_id)
        return state is not None and state.status is JobStatus.FINISHED

    wait_until(finished, timeout=240)
    job = Job.fetch(spec.job_id, connection=redis_conn, serializer=JSONSerializer)
    successes = [r for r in job.results() if r.type.name == "SUCCESSFUL"]
    assert len(successes) == 1, [r.type for r in job.results()]
    assert job.retries_left == 0
    record = get_record(redis_conn, settings, spec.job_id)
    assert record.worker["pid"] == second.pid
    folder = Path(settings.output_dir) / spec.job_id
    assert sorted(p.name for p in folder.iterdir()) == ["grid.png", "image_1.png", "image_2.png", "image_3.png",
                                                         "image_4.png", "job.json"]  # fmt: skip
    log_text = second.log_path.read_text()  # type: ignore[attr-defined]
    assert f"job {spec.job_id} was abandoned by its worker; re-queued" in log_text


def test_job_abandoned_on_its_last_try_fails_and_the_member_is_told(
    settings: Settings, redis_conn: redis.Redis, start_worker: StartWorker
) -> None:
    no_retry = settings.model_copy(update={"abandoned_job_retries": 0})
    first = start_worker(name="killed", env=FAST_CLOCK)
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    spec = make_spec(settings, steps=30)
    enqueue(redis_conn, no_retry, spec)
    kill_mid_job(first, redis_conn, spec)

    second = start_worker(name="survivor", env=FAST_CLOCK)

    def failed() -> bool:
        state = job_state(redis_conn, spec.job_id)
        return state is not None and state.status is JobStatus.FAILED

    wait_until(failed, timeout=120)
    state = job_state(redis_conn, spec.job_id)
    assert state is not None and state.error == ABANDONED_MESSAGE
    # The local publisher "tells the member" through the worker's log; Discord jobs get the failure line.
    wait_until(lambda: ABANDONED_MESSAGE in second.log_path.read_text())  # type: ignore[attr-defined]
    assert not (Path(settings.output_dir) / spec.job_id / "job.json").exists()


def test_out_of_memory_and_internal_errors_fail_with_member_messages_and_the_worker_keeps_serving(
    settings: Settings, redis_conn: redis.Redis, start_worker: StartWorker
) -> None:
    worker = start_worker(env={"FAULT_INJECTION": "oom"})
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    # --tile keeps it out of cross-job batches, so it runs (and fails) alone before the next job.
    oom = make_spec(settings).replace(prompt=f"{FAULT_MARKER} a red circle", tile=True)
    after = make_spec(settings, seed=5)
    enqueue(redis_conn, settings, oom)
    enqueue(redis_conn, settings, after)

    def done(spec: JobSpec) -> Callable[[], bool]:
        def check() -> bool:
            state = job_state(redis_conn, spec.job_id)
            return state is not None and state.status in (JobStatus.FINISHED, JobStatus.FAILED)

        return check

    wait_until(done(oom), timeout=120)
    wait_until(done(after), timeout=120)
    failed = job_state(redis_conn, oom.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error == "The GPU ran out of memory for this job; try a smaller --ar or --quality."
    ok = job_state(redis_conn, after.job_id, settings)
    assert ok is not None and ok.status is JobStatus.FINISHED, ok
    assert ok.result is not None and ok.result.worker["pid"] == worker.pid
    assert ok.result.worker["engine_loads"] == 1
    failed_job = Job.fetch(oom.job_id, connection=redis_conn, serializer=JSONSerializer)
    assert len(failed_job.results()) == 1  # failed once, not retried
    assert worker.poll() is None


def test_a_long_job_is_kept_alive_by_its_heartbeat_and_never_taken_as_abandoned(
    settings: Settings, redis_conn: redis.Redis, start_worker: StartWorker
) -> None:
    busy = start_worker(name="busy", env=FAST_CLOCK)
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    spec = make_spec(settings, steps=400, width=64, height=64)
    enqueue(redis_conn, settings, spec)

    def denoising() -> bool:
        state = job_state(redis_conn, spec.job_id)
        return state is not None and state.progress.step >= 1

    wait_until(denoising)
    idle = start_worker(name="idle", env=FAST_CLOCK)
    passes = "cleaning registries for queue"

    def idle_log() -> str:
        return idle.log_path.read_text()  # type: ignore[attr-defined]

    # Past the abandon window (3 s) several times over: maintenance runs every second on the idle worker.
    wait_until(lambda: idle_log().count(passes) >= 8, timeout=120)
    state = job_state(redis_conn, spec.job_id)
    assert state is not None and state.status is JobStatus.STARTED, "the job ended too soon to prove anything"
    request_cancel(redis_conn, settings, spec.job_id)

    def ended() -> bool:
        now = job_state(redis_conn, spec.job_id)
        return now is not None and now.status is not JobStatus.STARTED

    wait_until(ended, timeout=120)
    job = Job.fetch(spec.job_id, connection=redis_conn, serializer=JSONSerializer)
    assert job.retries_left == 1 and len(job.results()) == 1
    assert "abandoned" not in idle_log() and "abandoned" not in busy.log_path.read_text()  # type: ignore[attr-defined]
