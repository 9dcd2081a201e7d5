"""Holding a result for the moderators: the worker's side of the review queue (``shared.review``).

The result is recorded as held (Redis), posted to the staff channel behind a spoiler with Approve and Reject buttons
(at most once per job, however often the delivery is retried), and the member's waiting message says it is held.
The bot takes the decision from there (``bot/review.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from shared import messages, review
from shared.discord_wire import buttons
from shared.settings import Settings
from worker.discord_publisher import DiscordPublisher, result_png
from worker.publisher import JobResult, Publisher

log = logging.getLogger(__name__)


def can_hold(connection: redis.Redis | None, settings: Settings, publisher: Publisher) -> bool:
    """Whether results of this delivery can be held for review: Discord, Redis and a staff channel configured."""
    return connection is not None and bool(settings.review_channel_id) and isinstance(publisher, DiscordPublisher)


def hold_for_review(
    connection: redis.Redis, settings: Settings, publisher: DiscordPublisher, result: JobResult, reason: str
) -> dict[str, Any]:
    """Hold ``result`` for review and post it to the staff channel; returns what the record's ``files`` get."""
    spec = result.spec
    review.hold(
        connection,
        settings,
        job_id=spec.job_id,
        owner=spec.owner,
        channel_id=spec.delivery.channel_id,
        waiting_message_id=spec.delivery.waiting_message_id,
        reason=reason,
    )
    channel = settings.review_channel_id
    message_id = review.staff_message(connection, settings, spec.job_id)
    if not message_id:
        picture = result.grid if result.grid is not None else result.images[0]
        name = "SPOILER_" + buttons.attachment_name(spec.job_id, spec.kind)
        payload = {
            "content": messages.review_post(spec.job_id, spec.owner, spec.delivery.channel_id, reason),
            "components": review.components(spec.job_id),
            "allowed_mentions": {"parse": []},
            "attachments": [{"id": 0, "filename": name}],
        }
        posted = publisher.send(
            "POST", f"/channels/{channel}/messages", payload=payload, files=[(name, result_png(result, picture))]
        )
        message_id = str(posted["id"])
        review.set_staff_message(connection, settings, spec.job_id, message_id)
        log.info("job %s held for review as message %s in channel %s", spec.job_id, message_id, channel)
    publisher.failed(spec, messages.HELD_FOR_REVIEW)
    return {"review": {"channel_id": channel, "message_id": message_id, "reason": reason}}
