"""``imagine``: the local front end (no Discord). Enqueues prompts, shows the worker's progress, prints the grid path.

``imagine --local "a red circle --seed 7"`` starts the embedded Redis and a worker for the duration of the command, so
nothing else needs to run.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import redis
from rq import Worker

from shared.jobs.spec import Delivery, JobSpec, JobStatus
from shared.prompt.parser import PromptError, parse
from shared.prompt.resolve import build_jobs
from shared.queue.client import connect, enqueue, job_state, redis_url, request_cancel
from shared.queue.limits import LimitExceeded, MemberBanned
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_PROMPT = 2
POLL_S = 0.2
BAR_WIDTH = 30


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="imagine", description="Generate a 2x2 grid for a Midjourney-style prompt through the job queue."
    )
    parser.add_argument("prompt", help='the prompt, parameters included, e.g. "a red circle --ar 2:1 --seed 7"')
    parser.add_argument("--local", action="store_true", help="start the embedded Redis and a worker for this command")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the results (default 600)")
    parser.add_argument("--no-wait", action="store_true", help="enqueue and print the job ids, do not wait")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def progress_line(spec: JobSpec, fraction: float, phase: str, step: int, total: int) -> str:
    """``[#########.....]  45% 9/20 denoising  <job id>``"""
    filled = round(BAR_WIDTH * fraction)
    steps = f" {step}/{total}" if total else ""
    return f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * fraction:3.0f}%{steps} {phase:<10} {spec.job_id}"


def wait_for(
    connection: redis.Redis,
    spec: JobSpec,
    timeout: float,
    out: TextIO,
    worker: subprocess.Popen[bytes] | None = None,
) -> tuple[bool, str]:
    """Show progress until ``spec`` finishes; returns (finished, grid path or error message). With ``worker`` (the
    local worker), its exit before the job ends is reported instead of waiting for the timeout."""
    deadline = time.monotonic() + timeout
    warned = worker is not None  # the local worker registers once its model is loaded; no hint needed meanwhile
    shown = ""
    while time.monotonic() < deadline:
        state = job_state(connection, spec.job_id)
        if state is None:
            return False, f"job {spec.job_id} disappeared from Redis"
        if state.status is JobStatus.FINISHED:
            out.write(progress_line(spec, 1.0, "done", state.total_steps, state.total_steps) + "\n")
            if state.result.get("canceled"):
                return False, f"job {spec.job_id} was cancelled"
            files = state.result.get("files", {})
            return True, str(files.get("grid") or (files.get("images") or [""])[0])
        if state.status in (JobStatus.FAILED, JobStatus.CANCELED):
            out.write("\n")
            return False, state.error or f"job {spec.job_id} ended {state.status.value}"
        if worker is not None and worker.poll() is not None and worker.returncode != 0:
            out.write("\n")
            return False, f"the local worker exited with code {worker.returncode} before job {spec.job_id} finished"
        if not warned and state.status is JobStatus.QUEUED and not Worker.all(connection=connection):
            out.write(f"\nno worker is running yet; start one with `python -m worker` (job {spec.job_id} waits)\n")
            warned = True
        line = progress_line(spec, state.progress, state.phase or state.status.value, state.step, state.total_steps)
        if line != shown:  # redraw only on change, so logs of non-terminal runs stay short
            out.write(line)
            out.flush()
            shown = line
        time.sleep(POLL_S)
    return False, f"timed out after {timeout:.0f} s waiting for job {spec.job_id}"


def start_local_worker(settings: Settings, url: str) -> subprocess.Popen[bytes]:
    """A burst worker (exits when the queues are empty) on the embedded Redis; its log goes to the data folder."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = (settings.data_dir / "worker.log").open("ab")
    env = dict(os.environ, REDIS_URL=url, TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--burst"], env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=root
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stream = out or sys.stdout
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        prompts = parse(args.prompt)
    except PromptError as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return EXIT_BAD_PROMPT
    settings = get_settings()
    try:
        specs = build_jobs(prompts, settings=settings, owner="local", delivery=Delivery(kind="local"))
    except (PromptError, ValueError) as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return EXIT_BAD_PROMPT
    connection = connect(settings)
    enqueued: list[JobSpec] = []
    try:
        for spec in specs:
            enqueue(connection, settings, spec)
            enqueued.append(spec)
    except (LimitExceeded, MemberBanned) as exc:
        # All or nothing: a prompt's permutations and repeats are one request.
        for spec in enqueued:
            request_cancel(connection, settings, spec.job_id)
        suffix = f" (none of this prompt's {len(specs)} jobs was queued)" if len(specs) > 1 else ""
        print(f"imagine: {exc}{suffix}", file=sys.stderr)
        return EXIT_BAD_PROMPT
    if args.no_wait:
        for spec in specs:
            print(spec.job_id, file=stream)
        return EXIT_OK
    worker = None
    if args.local:
        worker = start_local_worker(settings, redis_url(settings))
    failures = 0
    try:
        for spec in specs:
            ok, detail = wait_for(connection, spec, args.timeout, stream, worker)
            if ok:
                print(detail, file=stream)
            else:
                failures += 1
                print(f"imagine: {detail}", file=sys.stderr)
                if worker is not None:
                    print(f"imagine: the worker's log is {settings.data_dir / 'worker.log'}", file=sys.stderr)
    finally:
        if worker is not None:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.terminate()
                worker.wait()
    return EXIT_JOB_FAILED if failures else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
