"""``imagine``: the local front end (no Discord). Takes a prompt through the same intake as the bot
(``shared.intake``), enqueues its jobs, shows the worker's progress and prints the grid path.

``imagine --local "a red circle --seed 7"`` starts the embedded Redis and a worker for the duration of the command, so
nothing else needs to run. Whenever the command gives up on a job (the local worker exited, Ctrl-C, ``--timeout``) it
cancels its own jobs that are still queued or running and says so: the embedded Redis persists, and a job left behind
would otherwise be the first thing the next run's worker does.
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

from shared import messages
from shared.errors import MemberFacingError
from shared.intake import Intake, Requester
from shared.jobs.spec import Delivery, JobSpec, JobStatus
from shared.queue import worker_models
from shared.queue.client import job_state, request_cancel
from shared.settings import Settings, get_settings
from shared.stores.connection import connect, redis_url

log = logging.getLogger(__name__)

EXIT_OK = 0
"""Every job finished."""
EXIT_JOB_FAILED = 1
"""A job failed, was cancelled or timed out."""
EXIT_BAD_PROMPT = 2
"""The prompt was refused (nothing was queued)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (the jobs were cancelled)."""
POLL_S = 0.2
"""Seconds between two looks at a job's progress."""
BAR_WIDTH = 30
"""Characters of the progress bar."""
LOCAL_OWNER = "local"
"""The member id of the CLI's jobs."""


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
    *,
    settings: Settings | None = None,
) -> tuple[bool, str]:
    """Show progress until ``spec`` finishes; returns (finished, grid path or error message). With ``worker`` (the
    local worker), its exit before the job ends is reported instead of waiting for the timeout."""
    deadline = time.monotonic() + timeout
    warned = worker is not None  # the local worker registers once its model is loaded; no hint needed meanwhile
    unserved_told = False
    shown = ""
    while time.monotonic() < deadline:
        state = job_state(connection, spec.job_id)
        if state is None:
            return False, f"job {spec.job_id} disappeared from Redis"
        progress = state.progress
        if state.status is JobStatus.FINISHED:
            out.write(progress_line(spec, 1.0, "done", progress.total, progress.total) + "\n")
            if state.canceled or not state.files:
                return False, f"job {spec.job_id} was cancelled"
            files = state.files
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
        if not unserved_told and settings is not None and state.status is JobStatus.QUEUED:
            key = settings.model_key(spec.model)
            if worker_models.unserved(worker_models.live(connection, settings), key):
                out.write("\n" + messages.cli_unserved(key, spec.job_id) + "\n")
                unserved_told = True
        phase = progress.phase or state.status.value
        line = progress_line(spec, progress.fraction, phase, progress.step, progress.total)
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


def worker_said(log_path: Path) -> str:
    """The line an exited worker printed about why it could not start (``imagine-worker: ...``, the last line of its
    log), or "" when its log ends otherwise."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines and lines[-1].startswith("imagine-worker: ") else ""


def cancel_unfinished(connection: redis.Redis, settings: Settings, specs: Sequence[JobSpec], err: TextIO) -> int:
    """Cancel every job of ``specs`` that is still queued or running; says which, returns how many."""
    canceled = 0
    for spec in specs:
        state = job_state(connection, spec.job_id)
        if state is None or state.status not in (JobStatus.QUEUED, JobStatus.STARTED):
            continue
        outcome = request_cancel(connection, settings, spec.job_id)
        if outcome in ("canceled", "stopping"):
            canceled += 1
            print(f"imagine: cancelled job {spec.job_id} ({outcome})", file=err)
    return canceled


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stream, errors = out or sys.stdout, err or sys.stderr
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    settings = get_settings()
    connection = connect(settings)
    intake = Intake(connection, settings)
    requester = Requester(member_id=LOCAL_OWNER)
    try:
        specs = intake.jobs_from_text(args.prompt, requester, Delivery(kind="local"))
    except MemberFacingError as exc:
        print(f"imagine: {exc}", file=errors)
        return EXIT_BAD_PROMPT
    outcomes = intake.submit(specs, requester)
    refused = [outcome for outcome in outcomes if not outcome.queued]
    if refused:
        # All or nothing: a prompt's permutations and repeats are one request.
        cancel_unfinished(connection, settings, [o.spec for o in outcomes if o.queued], errors)
        for outcome in refused:
            print(f"imagine: job {outcome.spec.job_id} was not queued: {outcome.error}", file=errors)
        if len(specs) > 1:
            print(f"imagine: none of this prompt's {len(specs)} jobs was kept", file=errors)
        return EXIT_BAD_PROMPT
    if args.no_wait:
        for spec in specs:
            print(spec.job_id, file=stream)
        return EXIT_OK
    worker = start_local_worker(settings, redis_url(settings)) if args.local else None
    failures = 0
    try:
        for spec in specs:
            ok, detail = wait_for(connection, spec, args.timeout, stream, worker, settings=settings)
            if ok:
                print(detail, file=stream)
                continue
            failures += 1
            print(f"imagine: {detail}", file=errors)
            if worker is not None:
                said = worker_said(settings.data_dir / "worker.log") if worker.poll() is not None else ""
                if said:
                    print(f"imagine: {said}", file=errors)
                print(f"imagine: the worker's log is {settings.data_dir / 'worker.log'}", file=errors)
            if cancel_unfinished(connection, settings, specs, errors):
                break  # the rest were cancelled: nothing more to wait for
    except KeyboardInterrupt:
        print("\nimagine: interrupted", file=errors)
        cancel_unfinished(connection, settings, specs, errors)
        return EXIT_INTERRUPTED
    finally:
        if worker is not None:
            _stop(worker)
    return EXIT_JOB_FAILED if failures else EXIT_OK


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """Let the burst worker finish (it exits once the queues are empty), else stop it."""
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.terminate()
        worker.wait()


if __name__ == "__main__":
    raise SystemExit(main())
