"""The only place that touches RQ's private API; everything else uses RQ's public classes and methods.

Cross-job batching finishes several RQ jobs from one worker pass, and the payload guard re-points a job RQ could not
deserialise. RQ has no public call for either, so they go through the three private members below, which exist as
used here in rq 3.0 (``SUPPORTED_RQ``, the range pinned in pyproject.toml). ``check_rq`` verifies them by name and
signature; the worker calls it at start and ``tests/test_rq_adapter.py`` runs it, so an RQ upgrade that changes them
fails loudly instead of finishing jobs wrongly.
"""

from __future__ import annotations

import inspect
import logging
from types import TracebackType
from typing import Any

import redis
import rq
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import BaseWorker

log = logging.getLogger(__name__)

SUPPORTED_RQ = (">=3.0", "<3.1")
"""The RQ releases whose private members below were read and tested (pyproject.toml pins the same range)."""

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

_EXPECTED: dict[tuple[type, str], tuple[str, ...]] = {
    (BaseWorker, "_finalize_success"): ("self", "job", "queue", "execution", "return_value"),
    (BaseWorker, "_finalize_failure"): ("self", "job", "queue", "execution", "exc_info"),
}
"""Private methods used here and the parameters they must take."""

_JOB_CALL_CACHE = "_instance"
"""The attribute where ``Job`` caches its deserialised callable (None makes it resolve ``func_name`` again)."""


class UnsupportedRQ(RuntimeError):
    """The installed RQ lacks a private member this adapter relies on; names it and the supported range."""


def check_rq() -> None:
    """Raise ``UnsupportedRQ`` unless every private member used here exists with the expected signature."""
    problems = []
    for (owner, name), params in _EXPECTED.items():
        member = getattr(owner, name, None)
        if member is None:
            problems.append(f"{owner.__name__}.{name} is missing")
            continue
        found = tuple(inspect.signature(member).parameters)
        if found != params:
            problems.append(f"{owner.__name__}.{name}{found} != {params}")
    probe = Job(id="rq-adapter-probe", connection=redis.Redis())  # a client connects lazily: no Redis is reached
    if not hasattr(probe, _JOB_CALL_CACHE):
        problems.append(f"Job.{_JOB_CALL_CACHE} is missing")
    if problems:
        raise UnsupportedRQ(
            f"rq {rq.__version__} is not supported (supported: rq{','.join(SUPPORTED_RQ)}): {'; '.join(problems)}"
        )


def finalize_success(worker: BaseWorker, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
    """Finish ``job`` as RQ finishes a job that returned ``return_value``: callbacks, registries, result TTL."""
    worker._finalize_success(job, queue, execution, return_value)


def finalize_failure(worker: BaseWorker, job: Job, queue: Queue, execution: Execution, exc_info: ExcInfo) -> None:
    """Finish ``job`` as RQ finishes a job that raised: failure callback, exception handlers, failed registry."""
    worker._finalize_failure(job, queue, execution, exc_info)


def forget_call(job: Job) -> None:
    """Make ``job`` resolve its callable from ``func_name`` again (after the payload guard re-pointed it)."""
    setattr(job, _JOB_CALL_CACHE, None)
