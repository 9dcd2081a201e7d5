"""The load test: many members, sharded bot processes and several workers through the limit-enforcing fake Discord.

Starts a real Redis (embedded), the fake Discord (sharded gateway, Discord's rate limits enforced: per-route buckets,
50/s per token, 429 with ``retry_after`` and ``Via``), ``--bots`` bot processes (``SHARD_COUNT``, one shard each, a
guild per shard with ``--channels`` channels), ``--workers`` worker processes on the tiny SD pipeline (the real path:
engine, grid, result store, Discord REST), optionally a SeaweedFS for the s3 store. Then ``--members`` members submit
``--jobs`` /imagine in ``--seconds`` seconds (each member in one channel, their submissions spread evenly), and the
test waits until every accepted job is delivered, then checks:

- every answer came, every accepted job was queued and delivered once (0 lost, 0 duplicated), none failed;
- per-member limits: the running and queued counts never went above the limits (sampled every 0.2 s; also computed
  from RQ's timestamps and reported), and every refusal was made while the member had their queued limit waiting;
- fair share: no job started before another member's job that waited longer and was two or more rounds ahead of it
  (a round: the member's jobs waiting before it), unless that member was at their running cap;
- 0 responses 429 from the fake Discord; progress shown in the waiting message of every job that ran;
- Redis memory per job at the end (every key, ``MEMORY USAGE``), just finished and once RQ's copies expired.

    python -m bench.load [--members 200] [--jobs 2000] [--seconds 60] [--bots 2] [--workers 4] [--store filesystem]

A small version of it runs in the test suite (``tests/test_load.py``).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import as_text

from bench.discord_ack import percentile
from bench.redis_memory import memory_by_key
from shared.discord_wire import buttons
from shared.keys import Keys, keys_for
from shared.queue import meta, worker_models
from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis
from tests.fake_discord import FakeDiscord, InteractionRecord

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]

DEQUEUE_SLACK_S = 0.25
"""Seconds between a job's dequeue (its count moves from queued to running) and RQ's ``started_at`` at most."""

REFUSAL_WINDOW_S = 1.5
"""A refusal is justified when the member had their queued limit waiting within this many seconds before it reached
the fake Discord (the bot reads the count before it answers; on a busy box the answer takes a while to arrive)."""


@dataclass
class LoadConfig:
    """One load test's shape."""

    members: int = 200
    jobs: int = 2000
    seconds: float = 60.0
    bots: int = 2
    workers: int = 4
    channels: int = 10
    """Channels per guild (one guild per bot shard)."""
    store: str = "filesystem"
    steps: int = 2
    """Denoising steps of every job (the fewest with a progress edit between start and end)."""
    max_queued: int = 5
    """Per-member queued limit (low, so that members reach it)."""
    max_running: int = 2
    timeout_s: float = 1800.0
    """Most seconds to wait for the jobs after the last submission."""
    model: str = ""
    """The tiny model's folder (built in the work folder when empty)."""
    folder: str = ""


@dataclass
class Job_:
    """One accepted job as the checks see it (wall-clock seconds)."""

    job_id: str
    owner: str
    answered: float
    enqueued: float
    started: float | None
    ended: float | None
    status: str


@dataclass
class Sampler:
    """Samples the per-member counts in Redis while the load runs."""

    connection: redis.Redis
    keys: Keys
    every_s: float = 0.2
    max_queued: Counter[str] = field(default_factory=Counter)
    max_running: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(redis.RedisError):
                with self.connection.pipeline(transaction=False) as pipe:
                    pipe.hgetall(self.keys.limits_queued)
                    pipe.hgetall(self.keys.limits_running)
                    queued, running = pipe.execute()
                for counter, found in ((self.max_queued, queued), (self.max_running, running)):
                    for member, count in found.items():
                        name = as_text(member)
                        counter[name] = max(counter[name], int(count))
                self.samples += 1

    def stop(self) -> None:
        self._stop.set()


def _env(config: LoadConfig, fake: FakeDiscord, server: EmbeddedRedis, folder: Path, extra: dict[str, str]) -> dict:
    return {
        **os.environ,
        **fake.env(),
        **extra,
        "REDIS_URL": server.url,
        "MODEL": config.model,
        "DEVICE": "cpu",
        "STEPS": str(config.steps),
        "DATA_DIR": str(folder / "data"),
        "OUTPUT_DIR": str(folder / "out"),
        "RESULT_STORE": config.store,
        "MAX_QUEUED_PER_MEMBER": str(config.max_queued),
        "MAX_RUNNING_PER_MEMBER": str(config.max_running),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


def run_load(config: LoadConfig) -> dict[str, Any]:
    """Run one load test; returns its figures and checks (see the module doc)."""
    folder = Path(config.folder or tempfile.mkdtemp(prefix="iml-"))
    if not config.model:
        from tests.tiny_models import build_tiny_sd

        config.model = str(build_tiny_sd(folder / "tiny-sd"))
    weed = None
    extra: dict[str, str] = {}
    if config.store == "s3":
        from tests.seaweedfs import SeaweedFS

        weed = SeaweedFS(folder / "weed").start()
        extra = {
            "S3_ENDPOINT_URL": weed.endpoint_url,
            "S3_BUCKET": "imagine-load",
            "S3_ACCESS_KEY_ID": weed.access_key,
            "S3_SECRET_ACCESS_KEY": weed.secret_key,
            "S3_ADDRESSING_STYLE": "path",
        }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (
            EmbeddedRedis(folder / "redis") as server,
            FakeDiscord(extra_guilds=config.bots - 1, channels_per_guild=config.channels) as fake,
        ):
            env = _env(config, fake, server, folder, extra)
            connection = redis.Redis.from_url(server.url)
            settings = Settings(
                redis_url=server.url,  # type: ignore[arg-type]
                data_dir=folder / "data",
                result_store=config.store,
                **{key.lower(): value for key, value in extra.items() if key.startswith("S3_")},  # type: ignore[arg-type]
            )
            for index in range(config.bots):
                shard = {"SHARD_COUNT": str(config.bots), "SHARD_IDS": str(index)}
                procs.append(_start(["-m", "bot"], {**env, **shard}, folder / f"bot-{index}.log"))
            fake.wait_connected(identifies=config.bots, timeout=120)
            for index in range(config.workers):
                procs.append(_start(["-m", "worker", "--name", f"load-{index}"], env, folder / f"worker-{index}.log"))
            try:
                deadline = time.monotonic() + 300
                while len(worker_models.live(connection, settings)) < config.workers:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{config.workers} workers did not announce their models within 300 s")
                    time.sleep(0.5)
                return _drive(config, fake, connection, settings, folder)
            finally:  # before Redis and the fake Discord stop
                _stop(procs)
    finally:
        _stop(procs)
        if weed is not None:
            weed.stop()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT
    )


def _drive(
    config: LoadConfig, fake: FakeDiscord, connection: redis.Redis, settings: Settings, folder: Path
) -> dict[str, Any]:
    keys = keys_for(settings)
    before = memory_by_key(connection)
    channels = [channel for guild in fake.guild_channels.values() for channel in guild]
    payloads = []
    for n in range(config.jobs):
        member = n % config.members
        payloads.append(
            fake.slash_payload(
                "imagine",
                {"prompt": f"a lighthouse at dusk, load {n}"},
                user_id=100000 + member,
                channel_id=channels[member % len(channels)],
            )
        )
    sampler = Sampler(connection, keys)
    sampling = threading.Thread(target=sampler.run, name="limits-sampler", daemon=True)
    sampling.start()
    wall = time.time() - time.monotonic()
    started = time.monotonic()
    records = fake.dispatch_many(payloads, config.seconds / config.jobs)
    dispatched_s = time.monotonic() - started
    fake.wait_for(lambda: all(r.acked_at is not None for r in records), 120, "every answer")
    accepted = [r for r in records if r.response_type == 4 and not r.ephemeral and "(Waiting to start)" in r.content]
    refused = [r for r in records if r.ephemeral]
    by_waiting = {r.response_message_id: r for r in accepted}
    deadline = time.monotonic() + config.timeout_s
    delivered: Counter[str] = Counter()
    jobs: dict[str, Job_] = {}
    while time.monotonic() < deadline:
        delivered = _results(fake)
        jobs = _jobs(connection, by_waiting, wall)
        done = [job for job in jobs.values() if job.status in ("finished", "failed")]
        if len(jobs) >= len(accepted) and len(done) == len(jobs) and sum(delivered.values()) >= len(done):
            break
        time.sleep(2.0)
    finished_s = time.monotonic() - started
    time.sleep(1.0)  # the last results' stores and deletes
    sampler.stop()
    delivered = _results(fake)
    jobs = _jobs(connection, by_waiting, wall)
    after = memory_by_key(connection)
    return _figures(config, fake, records, accepted, refused, jobs, delivered, sampler, before, after, connection) | {
        "dispatch_s": round(dispatched_s, 1),
        "all_done_s": round(finished_s, 1),
        "logs": str(folder),
    }


def _results(fake: FakeDiscord) -> Counter[str]:
    """Job id -> result messages naming it (posted, not deleted)."""
    found: Counter[str] = Counter()
    with fake._lock:
        messages = list(fake.messages.values())
    for message in messages:
        if message.get("deleted"):
            continue
        for job_id in set(buttons.job_ids_in_components(message.get("components") or [])):
            found[job_id] += 1
    return found


def _jobs(connection: redis.Redis, by_waiting: dict[int | None, InteractionRecord], wall: float) -> dict[str, Job_]:
    """Every job RQ has, by id, with its owner and times."""
    found = {}
    for raw in connection.scan_iter(Keys.job("*"), count=1000):
        job_id = as_text(raw).removeprefix(Keys.job(""))
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except Exception:  # gone between the scan and the fetch
            continue
        spec = meta.spec_of(job)
        if spec is None:
            continue
        record = by_waiting.get(int(spec.delivery.waiting_message_id or 0))
        found[job_id] = Job_(
            job_id=job_id,
            owner=spec.owner,
            answered=(record.acked_at or 0.0) + wall if record is not None else 0.0,
            enqueued=job.enqueued_at.timestamp() if job.enqueued_at else 0.0,
            started=job.started_at.timestamp() if job.started_at else None,
            ended=job.ended_at.timestamp() if job.ended_at else None,
            status=str(getattr(job.get_status(), "value", job.get_status())),
        )
    return found


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one time."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def _count_at(intervals: list[tuple[float, float]], moment: float) -> int:
    return sum(1 for start, end in intervals if start <= moment < end)


def _figures(  # noqa: PLR0917 - one call site
    config: LoadConfig,
    fake: FakeDiscord,
    records: list[InteractionRecord],
    accepted: list[InteractionRecord],
    refused: list[InteractionRecord],
    jobs: dict[str, Job_],
    delivered: Counter[str],
    sampler: Sampler,
    before: dict[str, int],
    after: dict[str, int],
    connection: redis.Redis,
) -> dict[str, Any]:
    wall = time.time() - time.monotonic()
    now = time.time()
    waiting_ids = {r.response_message_id for r in accepted}
    # Delivery: once each; nothing lost, nothing extra.
    lost = [job_id for job_id, job in jobs.items() if job.status == "finished" and delivered[job_id] == 0]
    duplicated = [job_id for job_id, count in delivered.items() if count > 1]
    unknown = [job_id for job_id in delivered if job_id not in jobs]
    failed = [job_id for job_id, job in jobs.items() if job.status == "failed"]
    unqueued = len(accepted) - len(jobs)
    # Progress shown in each waiting message of a job that ran.
    shown = 0
    for message_id in waiting_ids:
        versions = fake.message_history.get(int(message_id or 0), [])
        shown += any("%)" in str(version.get("content", "")) for version in versions[1:])
    # Limits: sampled maxima, and from RQ's timestamps.
    by_owner: dict[str, list[Job_]] = defaultdict(list)
    for job in jobs.values():
        by_owner[job.owner].append(job)
    # Waiting from the answer (the bot counts a job from its answer, before its enqueue) to the dequeue, which RQ
    # does not time: its started_at comes a moment later, so the span ends DEQUEUE_SLACK_S before it.
    queued_spans = {
        owner: [(j.answered or j.enqueued, (j.started - DEQUEUE_SLACK_S) if j.started else now) for j in owned]
        for owner, owned in by_owner.items()
    }
    running_spans = {
        owner: [(j.started, j.ended or now) for j in owned if j.started is not None]
        for owner, owned in by_owner.items()
    }
    max_queued = max((_max_overlap(spans) for spans in queued_spans.values()), default=0)
    max_running = max((_max_overlap(spans) for spans in running_spans.values()), default=0)
    unjustified = 0
    for record in refused:
        owner, moment = str(record.user_id), (record.acked_at or 0.0) + wall
        spans = queued_spans.get(owner, [])
        # The REFUSAL_WINDOW_S before it: the bot read the count a moment before its answer reached the fake.
        window = [_count_at(spans, moment - 0.05 * step) for step in range(round(REFUSAL_WINDOW_S / 0.05) + 1)]
        unjustified += max(window, default=0) < config.max_queued
    # Fair share: a job started while another member's job, queued before it and two or more rounds ahead of it,
    # still waited (and that member was not at their running cap).
    rounds = {}
    for owned in by_owner.values():
        for job in owned:
            rounds[job.job_id] = sum(
                1 for other in owned if other.enqueued < job.enqueued and (other.started or now) > job.enqueued
            )
    ran = sorted((j for j in jobs.values() if j.started is not None), key=lambda j: j.started or 0.0)
    starts = [j.started or 0.0 for j in ran]
    overtakes = 0
    worst = 0
    for early in jobs.values():
        if early.started is None:
            continue
        # Jobs that started while ``early`` waited and were queued after it.
        first, last = bisect.bisect_right(starts, early.enqueued), bisect.bisect_left(starts, early.started)
        for later in ran[first:last]:
            if later.owner == early.owner or later.enqueued <= early.enqueued:
                continue
            gap = rounds[later.job_id] - rounds[early.job_id]
            if gap >= 2 and _count_at(running_spans[early.owner], later.started or 0.0) < config.max_running:
                overtakes += 1
                worst = max(worst, gap)
    waits = sorted((j.started or 0.0) - j.enqueued for j in ran)
    acks = sorted(1000 * (r.ack_latency_s or 0.0) for r in records if r.acked_at is not None)
    run_s = [(j.ended or 0.0) - (j.started or 0.0) for j in ran if j.ended]
    finished = [j for j in jobs.values() if j.status == "finished"]
    span = (max((j.ended or 0.0) for j in finished) - min(j.started or 0.0 for j in finished)) if finished else 0.0
    grown = sum(after.values()) - sum(before.values())
    rq_copies = sum(size for key, size in after.items() if key.startswith((Keys.job(""), Keys.job_results(""))))
    return {
        "config": asdict(config),
        "submitted": len(records),
        "answered": sum(1 for r in records if r.acked_at is not None),
        "accepted": len(accepted),
        "refused_at_limit": len(refused),
        "refusals_without_the_limit_reached": unjustified,
        "queued_but_not_found": unqueued,
        "delivered": sum(1 for job_id in jobs if delivered[job_id] == 1),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unknown_results": len(unknown),
        "failed": len(failed),
        "responses_429": len(fake.rate_limited),
        "progress_shown": shown,
        "max_queued_per_member": {"sampled": max(sampler.max_queued.values(), default=0), "from_rq": max_queued},
        "max_running_per_member": {"sampled": max(sampler.max_running.values(), default=0), "from_rq": max_running},
        "limit_samples": sampler.samples,
        "fair_share_overtakes_of_two_rounds_or_more": overtakes,
        "fair_share_worst_gap_rounds": worst,
        "ack_ms": {"p50": round(statistics.median(acks), 1), "p99": round(percentile(acks, 0.99), 1)} if acks else {},
        "wait_s": {"p50": round(statistics.median(waits), 1), "max": round(waits[-1], 1)} if waits else {},
        "job_run_s_p50": round(statistics.median(run_s), 3) if run_s else None,
        "jobs_per_s": round(len(finished) / span, 2) if span else None,
        "redis_bytes_per_job": {
            "at_end": round(grown / max(1, len(jobs))),
            "after_rq_result_ttl": round((grown - rq_copies) / max(1, len(jobs))),
        },
        "rest_calls": len(fake.calls),
        "rest_by_route": dict(Counter(f"{c.method} {c.path.split('/')[1]}" for c in fake.calls)),
    }


def checks(figures: dict[str, Any], config: LoadConfig) -> list[str]:
    """The load test's conditions that failed (empty: all hold)."""
    failed = []
    expect = {
        "answered": figures["submitted"],
        "lost": 0,
        "duplicated": 0,
        "unknown_results": 0,
        "failed": 0,
        "queued_but_not_found": 0,
        "responses_429": 0,
        "refusals_without_the_limit_reached": 0,
        "fair_share_overtakes_of_two_rounds_or_more": 0,
        "delivered": figures["accepted"],
        "progress_shown": figures["accepted"],
    }
    for name, value in expect.items():
        if figures[name] != value:
            failed.append(f"{name}: {figures[name]} (expected {value})")
    # Redis's own counts, sampled (the Lua scripts never let them pass a limit); the figures from RQ's timestamps are
    # reported too, but RQ times a job's start a moment after its dequeue.
    for name, limit in (("max_queued_per_member", config.max_queued), ("max_running_per_member", config.max_running)):
        if figures[name]["sampled"] > limit:
            failed.append(f"{name}: {figures[name]} (limit {limit})")
    return failed


def main(argv: list[str] | None = None) -> int:
    defaults = LoadConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        kind = type(value) if value != "" else str
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    parser.add_argument("--stores", default="", help="comma-separated stores: one run each (overrides --store)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING)
    stores = [s.strip() for s in (args.pop("stores") or args["store"]).split(",") if s.strip()]
    out = args.pop("json")
    results, status = [], 0
    for store in stores:
        config = LoadConfig(**{**args, "store": store})
        figures = run_load(config)
        figures["failed_checks"] = checks(figures, config)
        status |= bool(figures["failed_checks"])
        results.append(figures)
        print(json.dumps(figures, indent=2), flush=True)
        if out is not None:
            out.write_text(json.dumps(results, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
