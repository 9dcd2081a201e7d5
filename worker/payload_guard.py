"""The payload guard: a worker runs only JSON payloads of ``worker.tasks.run_job`` with one JSON object argument;
anything else (a pickled job written to Redis by hand, another function) fails through RQ's own failure path
without running."""

from __future__ import annotations

import logging

from rq.exceptions import DeserializationError
from rq.job import Job

from shared.queue.meta import TASK_PATH
from worker import rq_adapter

log = logging.getLogger(__name__)

REFUSE_PATH = "worker.payload_guard.refuse_payload"
"""Dotted path that a refused job is pointed at instead of its own function, so RQ fails it the ordinary way."""


class PayloadRefused(RuntimeError):
    """A job in Redis that this worker will not run (not JSON, or not the imagine job function)."""


def payload_refusal(job: Job) -> str:
    """Why ``job`` may not run here, or ``""``: only ``worker.tasks.run_job`` with one dict argument, from JSON."""
    try:
        func_name = job.func_name
        args, kwargs = job.args, job.kwargs
    except DeserializationError:
        return "its payload is not JSON (pickled or corrupt payloads are never run)"
    if func_name != TASK_PATH:
        return f"its function is {func_name!r}; workers run only {TASK_PATH}"
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        return "its arguments must be one JSON object (the job spec)"
    return ""


def neutralise(job: Job, reason: str) -> None:
    """Point ``job`` at ``refuse_payload`` so the worker fails it through RQ's own failure path without running it."""
    job.func_name = REFUSE_PATH
    job.args = (reason,)
    job.kwargs = {}
    rq_adapter.forget_call(job)  # the deserialisation failed, so RQ never cached a callable


def refuse_payload(reason: str) -> None:
    """The stand-in function of a refused job: fails it with ``reason``."""
    raise PayloadRefused(f"job refused: {reason}")
