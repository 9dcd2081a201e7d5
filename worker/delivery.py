"""Getting a finished result to its member: image moderation, then the publisher; a result that cannot be posted
after the publisher's own retries is kept in the Redis outbox and re-delivered by any worker's maintenance pass, never
dropped."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import redis
from PIL import Image

from shared import defaults, messages
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery
from shared.settings import Settings
from shared.stores.images import get_image, put_record
from shared.stores.outbox import Outbox, OutboxEntry
from worker import image_moderation
from worker.grid import compose_grid
from worker.publisher import JobResult, Publisher

log = logging.getLogger(__name__)


def deliver(
    connection: redis.Redis | None, settings: Settings, publisher: Publisher, result: JobResult
) -> dict[str, Any]:
    """Moderate, then publish ``result``; returns what the record's ``files`` get.

    A withheld result is not posted (the member is told); a publish that fails after the publisher's own retries is
    kept in the outbox for the maintenance pass to re-deliver, so the job still finishes and nothing is dropped.
    """
    spec = result.spec
    verdict = image_moderation.moderate(list(result.images), settings)
    if verdict.flagged:
        result.record.moderation = verdict.as_record()
        image_moderation.report(connection, settings, spec.job_id, spec.owner, verdict)
        if verdict.action == "withhold":
            publisher.failed(spec, messages.WITHHELD)
            return {"withheld": True}
        result.spoiler = True
    try:
        return dict(publisher.publish(result))
    except Exception as exc:
        if connection is None:
            raise
        error = f"{type(exc).__name__}: {exc}"
        pending = JobRecord.from_dict(result.record.to_dict())
        pending.delivery = {"pending": True, "images": len(result.images), "spoiler": bool(result.spoiler)}
        Outbox(connection, settings).put(spec.job_id, pending, error)
        log.exception("job %s made its images but could not deliver them; kept in the outbox", spec.job_id)
        return {"pending": True, "error": error}


def drain_outbox(
    connection: redis.Redis, settings: Settings, publisher_for: Callable[[Delivery], Publisher]
) -> tuple[int, int]:
    """Re-deliver the outbox's due results from the image store; returns (delivered, failed) counts."""

    def deliver_one(entry: OutboxEntry) -> None:
        record = entry.record
        spec = record.spec
        delivery = record.delivery or {}
        count = int(delivery.get("images", len(spec.seeds)))
        images = [
            Image.open(io.BytesIO(get_image(connection, settings, spec.job_id, index))).convert("RGB")
            for index in range(count)
        ]
        grid = compose_grid(images) if len(images) == defaults.IMAGES_PER_GRID else None
        record.delivery = None
        result = JobResult(spec=spec, images=images, grid=grid, record=record)
        result.spoiler = bool(delivery.get("spoiler", False))
        record.files = publisher_for(spec.delivery).publish(result)
        put_record(connection, settings, record)

    return Outbox(connection, settings).drain(deliver_one)
