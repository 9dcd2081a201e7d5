"""The RQ worker: a SimpleWorker (jobs run in this process, so the model stays loaded) with the engine preloaded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from shared.queue import all_queues, connect, get_queue
from shared.settings import Settings
from worker import tasks
from worker.engine import Engine

log = logging.getLogger(__name__)


class ImagineWorker(SimpleWorker):
    """Runs jobs in the worker process itself (RQ's forking Worker would reload the model for every job) and
    stops gracefully on SIGTERM: the current job finishes, no new one is taken (RQ's warm shutdown)."""


def build_worker(settings: Settings, lanes: Sequence[str] = (), name: str | None = None) -> ImagineWorker:
    """A worker on ``lanes`` (default: every lane, in priority order) of the configured Redis."""
    connection = connect(settings)
    queues = [get_queue(connection, settings, lane) for lane in lanes] if lanes else all_queues(connection, settings)
    return ImagineWorker(queues, connection=connection, serializer=JSONSerializer, name=name)


def run_worker(settings: Settings, *, burst: bool = False, lanes: Sequence[str] = (), name: str | None = None) -> int:
    """Load the model once, then serve jobs until stopped (or until the queues are empty with ``burst``)."""
    worker = build_worker(settings, lanes, name)
    engine = Engine.load(settings.resolve_model(), settings.device, settings.dtype, settings.alignment_clip)
    tasks.install_engine(engine)
    log.info("worker %s serving %s", worker.name, ", ".join(q.name for q in worker.queues))
    worker.work(burst=burst, logging_level=logging.getLevelName(log.getEffectiveLevel()), with_scheduler=False)
    return 0


def visible_gpus() -> list[str]:
    """Indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES if set, else all torch sees)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [item.strip() for item in listed.split(",") if item.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def run_per_gpu(argv: Sequence[str], gpus: Sequence[str]) -> int:
    """One worker process per GPU (each sees only its GPU); SIGTERM/SIGINT are passed on for a graceful drain."""
    if not gpus:
        raise ValueError("--gpus all found no GPU (CUDA_VISIBLE_DEVICES is empty and torch sees none)")
    children = []
    for index, gpu in enumerate(gpus):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
        child_args = [sys.executable, "-m", "worker", *argv, "--name-suffix", f"gpu{gpu}"]
        children.append(subprocess.Popen(child_args, env=env))
        log.info("started worker %d on GPU %s (pid %d)", index, gpu, children[-1].pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for child in children:
        while child.poll() is None:
            time.sleep(0.5)
        codes.append(child.returncode)
    return max(codes, default=0)
