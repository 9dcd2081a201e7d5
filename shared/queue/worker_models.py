"""Which models the workers hold: each worker announces the models it serves (``WORKER_MODELS``, else ``MODEL`` and
every alias target), their families and the ones resident now, and renews that announcement while it lives.

Jobs are routed by model: ``shared.queue.client.enqueue`` writes the job's model key (``Settings.model_key``) into
its RQ hash, and the fair-share dequeue (``shared.queue.fair_share``) gives a worker only jobs whose model it serves;
the others stay queued, in their place, for a worker that serves them. Front ends read the announcements to tell a
member whose job's model no live worker serves that it waits for one (while no worker announces anything at all,
e.g. GPU workers scaled to zero or still loading, nothing is said).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq.utils import as_text

from shared import defaults
from shared.keys import keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announcement:
    """What one worker said about its models."""

    worker: str
    models: tuple[str, ...]
    """Model keys it serves (takes jobs of)."""
    families: tuple[str, ...]
    """Model families of those models (e.g. ``sd``, ``sdxl``, ``flux``), where known."""
    held: tuple[str, ...]
    """Model keys loaded in it now."""
    at: float
    """Unix time of the announcement."""

    def to_json(self) -> str:
        return json.dumps(
            {"models": list(self.models), "families": list(self.families), "held": list(self.held), "at": self.at}
        )

    @classmethod
    def from_json(cls, worker: str, raw: str | bytes) -> Announcement:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"a worker's model announcement must be a JSON object, got {raw!r}")
        return cls(
            worker=worker,
            models=tuple(str(m) for m in data.get("models") or ()),
            families=tuple(str(f) for f in data.get("families") or ()),
            held=tuple(str(m) for m in data.get("held") or ()),
            at=float(data.get("at") or 0.0),
        )


def announce(
    connection: redis.Redis,
    settings: Settings,
    worker: str,
    *,
    models: Iterable[str],
    families: Iterable[str] = (),
    held: Iterable[str] = (),
) -> Announcement:
    """Say (again) which models ``worker`` serves; valid for ``WORKER_MODELS_TTL_S`` unless renewed."""
    entry = Announcement(
        worker=worker,
        models=tuple(sorted(set(models))),
        families=tuple(sorted(set(families))),
        held=tuple(sorted(set(held))),
        at=time.time(),
    )
    connection.hset(keys_for(settings).worker_models, worker, entry.to_json())
    return entry


def withdraw(connection: redis.Redis, settings: Settings, worker: str) -> None:
    """``worker`` stops (its jobs are no longer served by it)."""
    connection.hdel(keys_for(settings).worker_models, worker)


def parse_live(stored: dict[Any, Any], now: float | None = None) -> list[Announcement]:
    """The announcements in a ``HGETALL`` of the hash that are still valid (unreadable ones are skipped, logged)."""
    now = time.time() if now is None else now
    found = []
    for raw_worker, raw in stored.items():
        worker = as_text(raw_worker)
        try:
            entry = Announcement.from_json(worker, raw)
        except (ValueError, TypeError):
            log.warning("unreadable model announcement of worker %s: %.200r", worker, raw)
            continue
        if now - entry.at <= defaults.WORKER_MODELS_TTL_S:
            found.append(entry)
    return sorted(found, key=lambda entry: entry.worker)


def live(connection: redis.Redis, settings: Settings) -> list[Announcement]:
    """The valid announcements now; stale ones (a worker that died without withdrawing) are removed."""
    key = keys_for(settings).worker_models
    stored = connection.hgetall(key)
    found = parse_live(stored)
    stale = {as_text(worker) for worker in stored} - {entry.worker for entry in found}
    if stale:
        connection.hdel(key, *sorted(stale))
    return found


def served_counts(announcements: Sequence[Announcement]) -> dict[str, int]:
    """Model key -> how many live workers serve it."""
    counts: dict[str, int] = {}
    for entry in announcements:
        for model in entry.models:
            counts[model] = counts.get(model, 0) + 1
    return counts


def unserved(announcements: Sequence[Announcement], model_key: str) -> bool:
    """Whether a job of ``model_key`` has no live worker to take it, while other workers live (with none at all,
    workers may be starting or scaled to zero: that is not said to be the model's fault)."""
    return bool(announcements) and not any(model_key in entry.models for entry in announcements)
