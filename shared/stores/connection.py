"""The Redis connection of every process: ``REDIS_URL``, else the embedded server (started on first use)."""

from __future__ import annotations

import atexit
import logging

import redis

from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis

log = logging.getLogger(__name__)

_embedded: dict[str, EmbeddedRedis] = {}
"""Embedded servers this process started, by data folder (stopped at exit)."""


def redis_url(settings: Settings) -> str:
    """The Redis URL in force: ``REDIS_URL``, else the embedded server's (started if needed)."""
    url = settings.redis_url.get_secret_value()
    if url:
        return url
    key = str(settings.data_dir)
    if key not in _embedded:
        server = EmbeddedRedis(settings.data_dir)
        server.start()
        _embedded[key] = server
        atexit.register(server.stop)
    return _embedded[key].url


def connect(settings: Settings) -> redis.Redis:
    """A Redis connection for ``settings`` (bytes responses, as RQ needs)."""
    return redis.Redis.from_url(redis_url(settings), health_check_interval=30)
