"""The whole chain on a warm worker: queue + publish overhead vs generation time, and job N vs job 1.

Real parts: an embedded Redis, the real ``enqueue`` (JSON payload by dotted path), a real worker process
(``python -m worker``, an RQ SimpleWorker with the model loaded once) and the local publisher. Jobs are sent one
after another (each when the previous one finished), with different prompts and seeds::

    python bench/chain.py --model models/imagine-shapes --jobs 6 --steps 20

Per job, from RQ's ``enqueued_at``/``started_at``/``ended_at`` and the job record's timings:
``wait`` = started - enqueued (dequeue latency), ``rq_s`` = ended - started, ``generate_s`` (engine) and
``publish_s`` (publisher); generation counts the engine's work (``generate_s`` + the alignment ``score_s``);
``overhead`` = (ended - enqueued) - generate_s, i.e. everything that is not generation:
queueing, RQ bookkeeping, meta writes, grid composition, image store, publishing. Also the client's view: enqueue
call to the client seeing FINISHED (polled every 10 ms).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from shared import defaults
from shared.jobs.spec import JobSpec
from shared.stores.redis_server import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

PROMPTS = (
    "a red circle on blue",
    "a blue square on red",
    "a green star on gray",
    "a white ring on black",
    "a pink heart on teal",
    "a gold moon on navy",
)
"""Prompts of similar length (cycled), each new to the worker's text cache the first time."""


@dataclass
class JobTimes:
    """One job's timings in seconds."""

    index: int
    wait: float
    rq_s: float
    generate_s: float
    publish_s: float
    end_to_end: float
    client_s: float

    @property
    def overhead(self) -> float:
        return self.end_to_end - self.generate_s


def main(argv: list[str] | None = None) -> list[JobTimes]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / defaults.DEFAULT_MODEL), help="model folder")
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="square side (default: the model's native)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one job")
    args = parser.parse_args(argv)
    if args.jobs < 2:
        parser.error(f"--jobs must be >= 2 (job N is compared with job 1), got {args.jobs}")

    folder = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    server = EmbeddedRedis(folder / "redis")
    server.start()
    env = {
        "REDIS_URL": server.url,
        "MODEL": args.model,
        "DATA_DIR": str(folder / "data"),
        "OUTPUT_DIR": str(folder / "outputs"),
        "DEVICE": args.device,
    }
    os.environ.update(env)
    worker_log = folder / "worker.log"
    child_env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--log-level", "WARNING"],
        cwd=ROOT,
        env=child_env,
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        from shared.model_info import native_resolution
        from shared.queue.client import enqueue
        from shared.settings import get_settings
        from shared.stores.connection import connect

        get_settings.cache_clear()
        settings = get_settings()
        connection = connect(settings)
        size = args.size or native_resolution(args.model)
        deadline = time.monotonic() + args.timeout
        while not Worker.all(connection=connection):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {worker_log}:\n{worker_log.read_text()[-2000:]}")
            time.sleep(0.1)
        warm = _spec(0, "a warm-up prompt", size, args.steps, settings.default_lane)
        _run(connection, settings, warm, enqueue=enqueue, timeout=args.timeout)  # model loaded, first-call costs paid
        times = []
        for index in range(1, args.jobs + 1):
            spec = _spec(index, PROMPTS[(index - 1) % len(PROMPTS)], size, args.steps, settings.default_lane)
            times.append(_run(connection, settings, spec, enqueue=enqueue, timeout=args.timeout, index=index))
        print(format_table(times, args, size), flush=True)
        return times
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()


def _spec(index: int, prompt: str, size: int, steps: int, lane: str) -> JobSpec:
    return JobSpec.for_prompt(
        prompt, seed=100 + 10 * index, width=size, height=size, steps=steps, guidance=7.5, owner="bench", lane=lane
    )


def _run(
    connection: object, settings: object, spec: JobSpec, *, enqueue: object, timeout: float, index: int = 0
) -> JobTimes:
    sent = time.perf_counter()
    enqueue(connection, settings, spec)  # type: ignore[operator]
    deadline = time.monotonic() + timeout
    while True:
        job = Job.fetch(spec.job_id, connection=connection, serializer=JSONSerializer)  # type: ignore[arg-type]
        status = str(getattr(job.get_status(), "value", job.get_status()))
        if status == "finished":
            break
        if status in ("failed", "stopped", "canceled") or time.monotonic() > deadline:
            raise RuntimeError(f"job {spec.job_id} ended {status}: {job.meta.get('error', '')}")
        time.sleep(0.01)
    client_s = time.perf_counter() - sent
    record = job.return_value(refresh=True)
    for _ in range(200):  # the status can read FINISHED a moment before the result and ended_at are readable
        if isinstance(record, dict) and job.ended_at is not None:
            break
        time.sleep(0.01)
        job.refresh()
        record = job.return_value(refresh=True)
    missing = [n for n in ("enqueued_at", "started_at", "ended_at") if getattr(job, n) is None]
    if missing or not isinstance(record, dict):
        raise RuntimeError(f"job {spec.job_id} has no {missing} or no record ({type(record).__name__})")
    assert job.enqueued_at and job.started_at and job.ended_at
    timings = record["timings"]
    return JobTimes(
        index=index,
        wait=(job.started_at - job.enqueued_at).total_seconds(),
        rq_s=(job.ended_at - job.started_at).total_seconds(),
        generate_s=float(timings["generate_s"]) + float(timings.get("score_s", 0.0)),
        publish_s=float(timings.get("publish_s", 0.0)),
        end_to_end=(job.ended_at - job.enqueued_at).total_seconds(),
        client_s=client_s,
    )


def format_table(times: list[JobTimes], args: argparse.Namespace, size: int) -> str:
    lines = [
        f"model={args.model} jobs={args.jobs} steps={args.steps} size={size} (warm worker, jobs one after another)"
    ]
    lines.append(
        f"{'job':>3} {'wait_s':>7} {'rq_s':>7} {'generate_s':>10} {'publish_s':>9} {'enq->end':>8} {'overhead':>8} "
        f"{'ovh%':>6} {'client_s':>8}"
    )
    for t in times:
        lines.append(
            f"{t.index:>3} {t.wait:>7.3f} {t.rq_s:>7.3f} {t.generate_s:>10.3f} {t.publish_s:>9.3f} "
            f"{t.end_to_end:>8.3f} {t.overhead:>8.3f} {100 * t.overhead / t.generate_s:>5.2f}% {t.client_s:>8.3f}"
        )
    overhead = sum(t.overhead for t in times) / sum(t.generate_s for t in times)
    client = sum(t.client_s - t.generate_s for t in times) / sum(t.generate_s for t in times)
    lines.append(f"queue+publish overhead / generation: {100 * overhead:.2f}% (client view: {100 * client:.2f}%)")
    lines.append(
        f"job {times[-1].index} / job 1 (enqueue->end): {times[-1].end_to_end / times[0].end_to_end:.3f}; "
        f"median of jobs 2..N / job 1: {statistics.median(t.end_to_end for t in times[1:]) / times[0].end_to_end:.3f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
