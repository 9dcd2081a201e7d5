"""Finished jobs' images and records as the rest of the system reads and writes them: PNG bytes in grid order and the
typed ``JobRecord``, through the configured result store (``shared.stores.results``: Redis, a folder or S3, with a
small pointer per job in Redis).

Follow-up jobs read their source image from here, so any worker on any machine sharing the Redis (and the store)
can run them, after any restart, until the result expires (``IMAGE_TTL_S``). A store is opened once per connection
and configuration (an S3 client is not made per call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from shared import defaults
from shared.jobs.record import JobRecord
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores import gallery
from shared.stores.pointers import open_result_store
from shared.stores.results import ResultStore

log = logging.getLogger(__name__)

_opened: dict[tuple[object, ...], ResultStore] = {}
"""Stores opened by this process, by connection and the settings that shape a store."""


def result_store(connection: redis.Redis, settings: Settings) -> ResultStore:
    """The configured result store (writes to ``RESULT_STORE``, reads through the per-job pointers)."""
    shape = (
        id(connection),
        settings.queue_prefix,
        settings.result_store,
        str(settings.result_dir),
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_prefix,
        settings.image_ttl_s,
        settings.redis_result_max_bytes,
    )
    if shape not in _opened:
        _opened[shape] = open_result_store(connection, settings)
    return _opened[shape]


def put_images(connection: redis.Redis, settings: Settings, job_id: str, pngs: Sequence[bytes]) -> None:
    """Store a job's images (PNG bytes, in grid order) for ``IMAGE_TTL_S``."""
    result_store(connection, settings).put_images(job_id, pngs)


def get_image(connection: redis.Redis, settings: Settings, job_id: str, index: int) -> bytes:
    """PNG bytes of image ``index`` of ``job_id``; ``ResultExpired`` (member-facing) if it is gone."""
    return result_store(connection, settings).get_image(job_id, index)


def image_url(connection: redis.Redis, settings: Settings, job_id: str, index: int) -> str | None:
    """A URL a browser may fetch image ``index`` from (S3's presigned URL), or None where the store has none."""
    return result_store(connection, settings).image_url(job_id, index)


def put_record(connection: redis.Redis, settings: Settings, record: JobRecord) -> None:
    """Store a finished job's record (spec, seeds, model, timings) beside its images, and index it for the web
    companion's gallery (``shared.stores.gallery``; an index that cannot be written is logged, never fatal)."""
    result_store(connection, settings).put_record(record.job_id, record.to_dict())
    try:
        gallery.index_job(connection, settings, record)
    except redis.RedisError:
        log.warning("could not index job %s for the gallery", record.job_id, exc_info=True)


def get_record(connection: redis.Redis, settings: Settings, job_id: str) -> JobRecord:
    """The record of ``job_id``; ``ResultExpired`` (member-facing) if it is no longer stored."""
    return JobRecord.from_dict(result_store(connection, settings).get_record(job_id))


def maybe_sweep(connection: redis.Redis, settings: Settings) -> int:
    """Retention, at most once per ``RESULT_SWEEP_S`` across all workers (a Redis lock elects one); returns the jobs
    removed (0 when another worker swept recently, or the store expires results itself)."""
    if not connection.set(keys_for(settings).results_swept, "1", nx=True, ex=defaults.RESULT_SWEEP_S):
        return 0
    removed = result_store(connection, settings).sweep(time.time())
    if removed:
        log.info("result retention removed %d expired job(s)", removed)
    return removed
