"""The shared image store: every job's images as PNG bytes in Redis, with a lifetime.

Upscale and variation jobs read their source image from here, so any worker on any machine sharing the Redis can run
them, after any restart, until the image expires (``IMAGE_TTL_S``, setting ``image_ttl_s``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from shared.settings import Settings

log = logging.getLogger(__name__)


class ImageExpired(LookupError):
    """The source image of an upscale or variation is no longer stored."""


def image_key(settings: Settings, job_id: str, index: int) -> str:
    """Redis key of image ``index`` (0-based) of job ``job_id``."""
    return f"{settings.queue_prefix}:image:{job_id}:{index}"


def put_images(connection: redis.Redis, settings: Settings, job_id: str, pngs: list[bytes]) -> None:
    """Store a job's images (PNG bytes, in grid order) with the configured lifetime."""
    with connection.pipeline(transaction=True) as pipe:
        for index, data in enumerate(pngs):
            pipe.set(image_key(settings, job_id, index), data, ex=settings.image_ttl_s)
        pipe.execute()


def get_image(connection: redis.Redis, settings: Settings, job_id: str, index: int) -> bytes:
    """PNG bytes of image ``index`` of ``job_id``; ``ImageExpired`` names the job and image if it is gone."""
    data = connection.get(image_key(settings, job_id, index))
    if data is None:
        days = settings.image_ttl_s // 86400
        raise ImageExpired(f"image {index + 1} of job {job_id} is no longer stored (images are kept {days} days)")
    return data if isinstance(data, bytes) else str(data).encode()


def record_key(settings: Settings, job_id: str) -> str:
    """Redis key of a finished job's reproducibility record (JSON)."""
    return f"{settings.queue_prefix}:record:{job_id}"


def put_record(connection: redis.Redis, settings: Settings, job_id: str, record: dict[str, Any]) -> None:
    """Store a finished job's record (spec, seeds, model, timings) for as long as its images."""
    connection.set(record_key(settings, job_id), json.dumps(record, sort_keys=True), ex=settings.image_ttl_s)


def get_record(connection: redis.Redis, settings: Settings, job_id: str) -> dict[str, Any]:
    """The record of ``job_id``; ``ImageExpired`` if it is no longer stored."""
    data = connection.get(record_key(settings, job_id))
    if data is None:
        raise ImageExpired(f"job {job_id} is no longer stored (results are kept {settings.image_ttl_s // 86400} days)")
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"record of job {job_id} is not a JSON object")
    return value
