"""The worker's announcement of the models it serves (``shared.queue.worker_models``): made once its model is loaded,
renewed by a thread every third of ``WORKER_MODELS_TTL_S`` (also while a job runs), withdrawn when it stops.

The families come from the resident engines, and for a served model not loaded yet from its ``model_index.json``
(``shared.model_info.model_family``); a model whose family cannot be read is announced without.
"""

from __future__ import annotations

import logging
import threading

import redis

from shared import defaults
from shared.model_info import model_family
from shared.queue import worker_models
from shared.settings import Settings
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def family_of_folder(model_ref: str) -> str:
    """The engine family of a local diffusers folder, from its ``model_index.json`` (``shared.model_info``); "" when
    it cannot be read or no family handles its pipeline."""
    try:
        family = model_family(model_ref)
    except (OSError, ValueError) as exc:  # UnknownFamily is a ValueError; the announcement goes out without it
        log.warning("model %s: family not announced (%s)", model_ref, exc)
        return ""
    return family.name if family is not None else ""


def announcement_of(runtime: WorkerRuntime) -> tuple[list[str], list[str], list[str]]:
    """``(models, families, held)`` of a worker: the model keys it serves, their families, the ones loaded."""
    settings = runtime.settings
    models = sorted(settings.worker_model_keys())
    held: list[str] = []
    families: set[str] = set()
    for ref, engine in runtime.engines().items():
        held.append(settings.model_key(ref))
        families.add(str(engine.describe().get("family", "")))
    for model in models:
        if model not in held:
            families.add(family_of_folder(settings.resolve_model(model)))
    return models, sorted(family for family in families if family), sorted(held)


class ModelAnnouncer:
    """A daemon thread that keeps this worker's announcement valid; ``stop`` withdraws it."""

    def __init__(self, connection: redis.Redis, settings: Settings, worker_name: str, runtime: WorkerRuntime) -> None:
        self.connection = connection
        self.settings = settings
        self.worker_name = worker_name
        self.runtime = runtime
        self.every_s = defaults.WORKER_MODELS_TTL_S / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-announcer", daemon=True)

    def announce(self) -> worker_models.Announcement:
        """Announce now (also the first time, before the worker takes a job)."""
        models, families, held = announcement_of(self.runtime)
        return worker_models.announce(
            self.connection, self.settings, self.worker_name, models=models, families=families, held=held
        )

    def start(self) -> ModelAnnouncer:
        entry = self.announce()
        log.info("worker %s serves %s (families %s)", self.worker_name, ", ".join(entry.models), entry.families)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            worker_models.withdraw(self.connection, self.settings, self.worker_name)
        except redis.RedisError:
            log.warning("could not withdraw the model announcement of %s (it expires by itself)", self.worker_name)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.announce()
            except Exception:  # a Redis blip must not kill the thread; the next round retries
                log.warning("renewing the model announcement failed; retrying in %.0f s", self.every_s, exc_info=True)
