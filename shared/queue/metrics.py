"""Prometheus metrics of bot and workers: jobs by lane and status, queue depth, wait and generation times, images/s.

Counters and histograms are per process (the bot counts submissions and refusals, a worker counts what it ran);
the queue gauges are read from Redis at scrape time, so every process reports the same values (use ``max`` over
instances in queries). ``start_metrics_server`` serves them on ``settings.metrics_port`` (0: no server).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from shared import defaults
from shared.keys import RQ_WORKERS, keys_for
from shared.queue import meta
from shared.settings import Settings

log = logging.getLogger(__name__)

JOBS = Counter(
    "imagine_jobs", "Jobs by lane and status (submitted, refused, finished, failed, canceled).", ["lane", "status"]
)
WAIT = Histogram(
    "imagine_wait_seconds",
    "Seconds jobs waited in the queue before a worker took them.",
    ["lane"],
    buckets=defaults.WAIT_BUCKETS_S,
)
GENERATION = Histogram(
    "imagine_generation_seconds",
    "Seconds a worker spent on one job.",
    ["lane", "model"],
    buckets=defaults.GENERATION_BUCKETS_S,
)
IMAGES = Counter("imagine_images", "Images made (rate() of it is the images per second).", ["lane", "model"])
IMAGES_PER_SECOND = Gauge("imagine_images_per_second", "Images per second of this worker's latest job.", ["model"])

_lock = threading.Lock()
_collectors: dict[str, Collector] = {}


class QueueCollector(Collector):
    """Queue depth and running jobs per lane, workers and the pause flag, read from Redis at each scrape."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("imagine_queue_depth", "Jobs waiting per lane.", labels=["lane"])
        running = GaugeMetricFamily("imagine_running_jobs", "Jobs running per lane.", labels=["lane"])
        keys = keys_for(self.settings)
        try:
            now = time.time()
            with self.connection.pipeline(transaction=False) as pipe:
                for lane in self.settings.lanes:
                    pipe.llen(keys.lane_list(lane))
                    pipe.zcount(keys.started_registry(lane), now, "+inf")
                pipe.scard(RQ_WORKERS)
                pipe.exists(keys.paused)
                values = pipe.execute()
        except redis.RedisError:
            log.warning("metrics: Redis unavailable, queue gauges skipped")
            return
        for index, lane in enumerate(self.settings.lanes):
            depth.add_metric([lane], values[2 * index])
            running.add_metric([lane], values[2 * index + 1])
        yield depth
        yield running
        yield GaugeMetricFamily("imagine_workers", "RQ workers registered on this Redis.", value=values[-2])
        yield GaugeMetricFamily("imagine_queue_paused", "1 while /queue pause is in force.", value=values[-1])


def register_queue_collector(connection: redis.Redis, settings: Settings) -> None:
    """Add the Redis-backed queue gauges to the process registry (once per queue prefix)."""
    with _lock:
        if settings.queue_prefix not in _collectors:
            collector = QueueCollector(connection, settings)
            REGISTRY.register(collector)
            _collectors[settings.queue_prefix] = collector


def start_metrics_server(connection: redis.Redis, settings: Settings, port: int | None = None) -> int:
    """Serve /metrics on ``port`` (default ``settings.metrics_port``); returns the port, 0 when none is configured."""
    chosen = settings.metrics_port if port is None else port
    if chosen < 0 or chosen > 65535:
        raise ValueError(f"metrics port must be 0-65535, got {chosen}")
    if chosen == 0:
        return 0
    register_queue_collector(connection, settings)
    start_http_server(chosen)
    log.info("serving Prometheus metrics on port %d", chosen)
    return chosen


def observe_job(job: Any, status: str) -> None:
    """Count a job that ended on this worker and observe its wait and generation times (RQ callback side)."""
    spec = meta.spec_of(job)
    lane = spec.lane if spec is not None else ""
    model = (spec.model if spec is not None else "") or "default"
    JOBS.labels(lane=lane, status=status).inc()
    started = job.started_at
    if started is None:
        return
    if job.enqueued_at is not None:
        WAIT.labels(lane=lane).observe(max(0.0, (started - job.enqueued_at).total_seconds()))
    elapsed = max(1e-6, time.time() - started.timestamp())
    GENERATION.labels(lane=lane, model=model).observe(elapsed)
    if status == "finished":
        images = len(spec.seeds) if spec is not None else 1
        IMAGES.labels(lane=lane, model=model).inc(images)
        IMAGES_PER_SECOND.labels(model=model).set(images / elapsed)
