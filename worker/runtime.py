"""What one worker process holds while it serves jobs: its settings, its resident engines (models loaded once) and
its upscaler.

``python -m worker`` builds the runtime, loads the configured model and installs the runtime before RQ takes the first
job; RQ then calls ``worker.tasks.run_job`` with the payload only, and the task reads the installed runtime
(``current``). Everything below the task takes the runtime or its settings as an argument.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from shared import defaults, messages
from shared.errors import JobRefused, ModelNotSupported, ModelUnavailable
from shared.jobs.spec import Delivery
from shared.settings import Settings
from worker.discord_publisher import DiscordPublisher
from worker.engine import Engine
from worker.engine.families import UnsupportedPipeline
from worker.publisher import LocalPublisher, Publisher

log = logging.getLogger(__name__)


class WorkerRuntime:
    """The settings, resident engines and upscaler of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._upscaler: Any = None

    def install_engine(self, engine: Engine) -> None:
        """Make ``engine`` resident (the worker loads its model once at start, before taking jobs)."""
        self._engines[engine.model_ref] = engine

    def engines(self) -> dict[str, Engine]:
        """The resident engines by model reference (a copy)."""
        return dict(self._engines)

    def on_accelerator(self) -> bool:
        """Whether a resident engine runs on a GPU (or another non-CPU device): where cross-job batching pays off."""
        return any(engine.pipes.device.type != "cpu" for engine in self._engines.values())

    def engine_for(self, model: str = "") -> Engine:
        """The resident engine for ``model`` (a job's recorded model; "" = the configured one), loaded on first use
        and kept (least recently used evicted past ``MAX_RESIDENT_MODELS``). A model this worker's configuration
        does not serve is refused (``JobRefused``): a job sized for another model never runs here as if it were ours.
        """
        settings = self.settings
        # A defence only: the dequeue routes jobs by model (shared.queue.worker_models), so a job of a model this
        # worker does not serve (WORKER_MODELS, else MODEL and the aliases' targets) reaches it only if routed wrongly.
        if not settings.serves(model) or settings.model_key(model) not in settings.worker_model_keys():
            served = ", ".join(sorted(settings.worker_model_keys()))
            raise JobRefused(messages.wrong_model(model, served))
        ref = settings.resolve_model(model or None)
        if ref in self._engines:
            self._engines.move_to_end(ref)
            return self._engines[ref]
        while len(self._engines) >= defaults.MAX_RESIDENT_MODELS:
            evicted, _ = self._engines.popitem(last=False)
            log.info("evicting resident model %s to make room for %s", evicted, ref)
            _empty_device_cache()
        try:
            engine = Engine.load(
                ref, settings.device, settings.dtype, settings.alignment_clip, settings.layout_strength
            )
        except UnsupportedPipeline as exc:  # expected: one line for the caller, no traceback
            raise ModelNotSupported(messages.model_not_supported(model or settings.model, str(exc))) from None
        except (OSError, ValueError) as exc:
            log.exception("could not load model %s", ref)
            raise ModelUnavailable(messages.model_unavailable(model or settings.model)) from exc
        self._engines[ref] = engine
        return engine

    def upscaler(self) -> Any:
        """The process's upscaler, loaded on the first upscale job."""
        if self._upscaler is None:
            from worker.upscaler import load_upscaler

            self._upscaler = load_upscaler(self.settings.upscaler or None)
        return self._upscaler

    def publisher_for(self, delivery: Delivery) -> Publisher:
        """The publisher of a job's delivery kind."""
        return make_publisher(delivery, self.settings)


def make_publisher(delivery: Delivery, settings: Settings) -> Publisher:
    """The publisher for a job's delivery kind; an unknown kind is an error naming it."""
    if delivery.kind == "local":
        return LocalPublisher(settings.output_dir)
    if delivery.kind == "discord":
        return DiscordPublisher(settings)
    raise ValueError(f"delivery kind must be 'local' or 'discord', got {delivery.kind!r}")


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


_installed: dict[str, WorkerRuntime] = {}
"""The process's runtime under ``"current"`` (one per process; RQ's job function has no other way to reach it)."""


def install(runtime: WorkerRuntime) -> WorkerRuntime:
    """Make ``runtime`` the one RQ's job function uses in this process; returns it."""
    _installed["current"] = runtime
    return runtime


def current() -> WorkerRuntime:
    """The installed runtime; a ``RuntimeError`` when none is (jobs run through ``python -m worker``)."""
    if "current" not in _installed:
        raise RuntimeError("no worker runtime is installed: jobs run through `python -m worker` (worker.runner)")
    return _installed["current"]
