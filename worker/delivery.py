"""Getting a finished result to its member: image moderation and the channel's adult-content rule, then the
publisher, or the moderators' review queue (a flagged result with ``IMAGE_MODERATION_ACTION=review``, or a new
member's); a result that cannot be posted after the publisher's own retries is kept in the Redis outbox and
re-delivered by any worker's maintenance pass, never dropped (a held one is re-delivered to the staff channel only)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import redis
from PIL import Image

from shared import defaults, messages, provenance, rules
from shared.i18n import use_locale
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery
from shared.settings import Settings
from shared.stores.images import get_image, put_record
from shared.stores.outbox import Outbox, OutboxEntry
from worker import image_moderation, review_post
from worker.discord_publisher import DiscordPublisher
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
    with use_locale(spec.delivery.locale):
        return _deliver(connection, settings, publisher, result)


def _deliver(
    connection: redis.Redis | None, settings: Settings, publisher: Publisher, result: JobResult
) -> dict[str, Any]:
    spec = result.spec
    held = ""  # why the result is held for the moderators ("" when it is not)
    verdict = image_moderation.moderate(list(result.images), settings)
    if verdict.flagged:
        result.record.moderation = verdict.as_record()
        image_moderation.report(connection, settings, spec.job_id, spec.owner, verdict)
        if connection is not None and rules.adult_allowed(connection, settings, spec):
            # An age-restricted channel (or one whose rule allows it): adult-rated results are delivered as they are.
            result.record.moderation["adult_channel"] = True
        elif verdict.action == "review":
            held = messages.review_reason_flagged(max(verdict.scores, default=1.0))
        elif verdict.action == "withhold":
            publisher.failed(spec, messages.WITHHELD)
            return {"withheld": True}
        else:
            result.spoiler = True
    if not held and spec.delivery.review:
        held = messages.REVIEW_REASON_NEW_MEMBER
    if held and (connection is None or not review_post.can_hold(connection, settings, publisher)):
        # No staff channel to hold it in: fail closed, as "withhold" does.
        log.warning("job %s should be reviewed but no review channel is configured; withheld", spec.job_id)
        publisher.failed(spec, messages.WITHHELD)
        return {"withheld": True}
    try:
        if held:
            assert connection is not None and isinstance(publisher, DiscordPublisher)
            return review_post.hold_for_review(connection, settings, publisher, result, held)
        return dict(publisher.publish(result))
    except Exception as exc:
        if connection is None:
            raise
        error = f"{type(exc).__name__}: {exc}"
        pending = JobRecord.from_dict(result.record.to_dict())
        pending.delivery = {"pending": True, "images": len(result.images), "spoiler": bool(result.spoiler)}
        if held:
            pending.delivery["review"] = held  # re-delivered to the staff channel, never to the member directly
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
        pngs = [get_image(connection, settings, spec.job_id, index) for index in range(count)]
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in pngs]
        grid = compose_grid(images) if len(images) == defaults.IMAGES_PER_GRID else None
        record.delivery = None
        result = JobResult(spec=spec, images=images, grid=grid, record=record, pngs=pngs)
        result.picture_png = provenance.stamp(grid, record, settings) if grid is not None else pngs[0]
        result.spoiler = bool(delivery.get("spoiler", False))
        publisher = publisher_for(spec.delivery)
        with use_locale(spec.delivery.locale):
            held = str(delivery.get("review") or "")
            if held and isinstance(publisher, DiscordPublisher):
                record.files = review_post.hold_for_review(connection, settings, publisher, result, held)
            else:
                record.files = publisher.publish(result)
        put_record(connection, settings, record)

    return Outbox(connection, settings).drain(deliver_one)
