"""The whole chain on real processes: CLI -> real Redis/RQ -> resident worker -> grid and job.json."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.jobs.spec import JobSpec, JobStatus
from shared.queue.client import enqueue, job_state
from shared.settings import Settings
from shared.stores.images import get_record
from tests.conftest import ROOT, child_env

pytestmark = pytest.mark.slow


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        check=False,
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def grid_job_folder(stdout: str) -> Path:
    grid = Path(stdout.strip().splitlines()[-1])
    assert grid.name == "grid.png", stdout
    return grid.parent


def wait_until(predicate: object, timeout: float = 120.0, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def make_spec(settings: Settings, seed: int = 1, width: int = 32, height: int = 32, steps: int = 3) -> JobSpec:
    return JobSpec.for_prompt(
        "a red circle",
        seed=seed,
        width=width,
        height=height,
        steps=steps,
        guidance=5.0,
        owner="test",
        lane=settings.default_lane,
    )


def test_local_run_makes_a_grid_of_four_distinct_images_and_is_reproducible(settings_env: dict[str, str]) -> None:
    first = run_cli(["--local", "a red circle --seed 7"], settings_env)
    assert first.returncode == 0, first.stderr
    folder = grid_job_folder(first.stdout)
    record = json.loads((folder / "job.json").read_text())
    assert record["seeds"] == [7, 8, 9, 10]
    grid = Image.open(folder / "grid.png")
    width, height = record["size"]
    assert grid.size == (2 * width, 2 * height)
    images = [np.asarray(Image.open(folder / f"image_{n}.png")) for n in range(1, 5)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(images[a], images[b]), f"images {a + 1} and {b + 1} are identical"

    second = run_cli(["--local", "a red circle --seed 7"], settings_env)
    assert second.returncode == 0, second.stderr
    again = grid_job_folder(second.stdout)
    assert again != folder
    for n in range(1, 5):
        assert np.array_equal(images[n - 1], np.asarray(Image.open(again / f"image_{n}.png")))


def test_bad_prompt_exits_2_with_the_prompt_error(settings_env: dict[str, str]) -> None:
    result = run_cli(["--local", "a red circle --chaos 101"], settings_env)
    assert result.returncode == 2
    assert "--chaos" in result.stderr and "101" in result.stderr


def test_two_workers_share_eight_jobs_each_run_once(
    settings: Settings, redis_conn: redis.Redis, start_worker: object
) -> None:
    workers = [start_worker(name="a"), start_worker(name="b")]  # type: ignore[operator]
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 2)
    specs = [make_spec(settings, seed=i) for i in range(8)]
    for spec in specs:
        enqueue(redis_conn, settings, spec)

    def all_done() -> bool:
        states = [job_state(redis_conn, s.job_id) for s in specs]
        return all(st is not None and st.status is JobStatus.FINISHED for st in states)

    wait_until(all_done, timeout=240)
    pids = set()
    for spec in specs:
        job = Job.fetch(spec.job_id, connection=redis_conn, serializer=JSONSerializer)
        assert len(job.results()) == 1, f"job {spec.job_id} ran {len(job.results())} times"
        record = get_record(redis_conn, settings, spec.job_id)
        assert record.worker["engine_loads"] == 1
        pids.add(record.worker["pid"])
    assert pids == {w.pid for w in workers}

    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert worker.log_path.read_text().count("engine loaded") == 1


def test_payloads_in_redis_are_json_never_pickle(settings: Settings, redis_conn: redis.Redis) -> None:
    spec = make_spec(settings)
    enqueue(redis_conn, settings, spec)
    raw = redis_conn.hget(f"rq:job:{spec.job_id}", "data")
    assert raw is not None
    text = zlib.decompress(raw).decode()
    function, _instance, args, _kwargs = json.loads(text)
    assert function == "worker.tasks.run_job"
    assert JobSpec.from_dict(args[0]) == spec
    assert not raw.startswith(b"\x80")  # pickle protocol header


def test_failing_job_ends_failed_with_its_message_and_the_worker_keeps_serving(
    settings: Settings, settings_env: dict[str, str], redis_conn: redis.Redis, start_worker: object
) -> None:
    worker = start_worker(env={"MODEL_ALIASES": json.dumps({"broken": "/nonexistent/model"})})  # type: ignore[operator]
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    env = {**settings_env, "MODEL_ALIASES": json.dumps({"broken": "/nonexistent/model"})}
    failed = run_cli(["a red circle --v broken"], env)
    assert failed.returncode == 1
    assert "/nonexistent/model" in failed.stderr

    ok = run_cli(["a red circle --seed 3"], settings_env)
    assert ok.returncode == 0, ok.stderr
    assert (grid_job_folder(ok.stdout) / "grid.png").exists()
    assert worker.poll() is None


def test_sigterm_finishes_the_current_job_and_takes_no_new_one(
    settings: Settings, redis_conn: redis.Redis, start_worker: object
) -> None:
    worker = start_worker()  # type: ignore[operator]
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    long_job = make_spec(settings, steps=200)
    waiting = make_spec(settings, seed=2)
    enqueue(redis_conn, settings, long_job)
    enqueue(redis_conn, settings, waiting)

    def started() -> bool:
        state = job_state(redis_conn, long_job.job_id)
        return state is not None and state.progress.step >= 1

    wait_until(started)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=240) == 0
    finished = job_state(redis_conn, long_job.job_id)
    assert finished is not None and finished.status is JobStatus.FINISHED
    queued = job_state(redis_conn, waiting.job_id)
    assert queued is not None and queued.status is JobStatus.QUEUED
