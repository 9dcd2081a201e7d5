"""The shared image store: every job's images as PNG bytes in Redis, with a lifetime.

Upscale and variation jobs read their source image from here, so any worker on any machine sharing the Redis can run
them, after any restart, until the image expires (``IMAGE_TTL_S``, setting ``image_ttl_s``).
"""

from __future__ import annotations

import json
import logging

import redis

from shared import messages
from shared.errors import ResultExpired
from shared.jobs.record import JobRecord
from shared.keys import keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)


def put_images(connection: redis.Redis, settings: Settings, job_id: str, pngs: list[bytes]) -> None:
    """Store a job's images (PNG bytes, in grid order) with the configured lifetime."""
    keys = keys_for(settings)
    with connection.pipeline(transaction=True) as pipe:
        for index, data in enumerate(pngs):
            pipe.set(keys.image(job_id, index), data, ex=settings.image_ttl_s)
        pipe.execute()


def get_image(connection: redis.Redis, settings: Settings, job_id: str, index: int) -> bytes:
    """PNG bytes of image ``index`` of ``job_id``; ``ResultExpired`` names the job and image if it is gone."""
    data = connection.get(keys_for(settings).image(job_id, index))
    if data is None:
        raise ResultExpired(messages.image_expired(index, job_id, settings.image_ttl_s))
    return data if isinstance(data, bytes) else str(data).encode()


def put_record(connection: redis.Redis, settings: Settings, record: JobRecord) -> None:
    """Store a finished job's record (spec, seeds, model, timings) for as long as its images."""
    data = json.dumps(record.to_dict(), sort_keys=True)
    connection.set(keys_for(settings).record(record.job_id), data, ex=settings.image_ttl_s)


def get_record(connection: redis.Redis, settings: Settings, job_id: str) -> JobRecord:
    """The record of ``job_id``; ``ResultExpired`` if it is no longer stored."""
    data = connection.get(keys_for(settings).record(job_id))
    if data is None:
        raise ResultExpired(messages.result_expired(job_id, settings.image_ttl_s))
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"record of job {job_id} is not a JSON object")
    return JobRecord.from_dict(value)
