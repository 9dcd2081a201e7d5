"""Prometheus endpoints of a real worker process and of the bot side, scraped over HTTP."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from collections.abc import Callable

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Worker

from shared.jobs.spec import JobStatus
from shared.queue import admin, limits, metrics
from shared.queue.client import enqueue, job_state
from shared.settings import Settings
from tests.queue_control import spec_for, wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``http://127.0.0.1:<port>/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_worker_endpoint_reports_jobs_queue_times_and_images(
    settings: Settings, redis_conn: redis.Redis, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    start_worker(env={"METRICS_PORT": str(port)})
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1)
    spec = spec_for(settings, "7")
    enqueue(redis_conn, settings, spec)

    def finished() -> bool:
        state = job_state(redis_conn, spec.job_id)
        return state is not None and state.status is JobStatus.FINISHED

    wait_until(finished, timeout=240)
    lane = settings.default_lane
    wait_until(lambda: scrape(port).get(("imagine_jobs_total", (("lane", lane), ("status", "finished")))) == 1.0)
    samples = scrape(port)
    assert samples[("imagine_queue_depth", (("lane", lane),))] == 0.0
    assert samples[("imagine_running_jobs", (("lane", lane),))] == 0.0
    assert samples[("imagine_workers", ())] == 1.0
    assert samples[("imagine_queue_paused", ())] == 0.0
    assert samples[("imagine_wait_seconds_count", (("lane", lane),))] == 1.0
    assert samples[("imagine_generation_seconds_count", (("lane", lane), ("model", "default")))] == 1.0
    assert samples[("imagine_generation_seconds_sum", (("lane", lane), ("model", "default")))] > 0
    assert samples[("imagine_images_total", (("lane", lane), ("model", "default")))] == 4.0
    assert samples[("imagine_images_per_second", (("model", "default"),))] > 0
    assert any(name == "imagine_wait_seconds_bucket" for name, _ in samples)


def test_bot_side_endpoint_counts_submissions_refusals_and_queue_depth(
    queue_settings: Settings, redis_conn: redis.Redis
) -> None:
    limited = queue_settings.model_copy(update={"max_queued_per_member": 2})
    port = metrics.start_metrics_server(redis_conn, limited, free_port())
    lane = limited.default_lane
    submitted = ("imagine_jobs_total", (("lane", lane), ("status", "submitted")))
    refused = ("imagine_jobs_total", (("lane", lane), ("status", "refused")))
    before = scrape(port)
    admin.pause(redis_conn, limited, actor="1")
    outcomes = []
    for seed in range(3):
        try:
            enqueue(redis_conn, limited, spec_for(limited, "8", seed=seed))
            outcomes.append("accepted")
        except limits.LimitExceeded as exc:
            outcomes.append(str(exc))
    assert outcomes == ["accepted", "accepted", "You have 2 jobs queued, the limit is 2."]
    after = scrape(port)
    assert after[submitted] - before.get(submitted, 0.0) == 2.0
    assert after[refused] - before.get(refused, 0.0) == 1.0
    assert after[("imagine_queue_depth", (("lane", lane),))] == 2.0
    assert after[("imagine_queue_paused", ())] == 1.0
    assert metrics.start_metrics_server(redis_conn, limited, 0) == 0  # 0: no server
