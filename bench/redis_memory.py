"""Redis memory per finished job, for each result store: everything a finished job leaves in Redis.

For each store (``redis``, ``filesystem``, ``s3`` on a real SeaweedFS) on a fresh embedded Redis: N /imagine jobs are
made as the bot makes them (``shared.intake``, ``bot.jobs.JobDesk.enqueue``: the member's job list, the waiting
message's key), run by a real worker in this process (the tiny SD pipeline) and delivered to the fake Discord; then
each job's images are stored again as four synthetic 1024 px PNGs of a real model's size (about 1.5 MB each) through
the same store, so the ``redis`` store holds what it would hold for a 1024 px model. Then ``MEMORY USAGE`` (exact,
``SAMPLES 0``) of every key is summed: the keys that name a job, and the growth of every shared key (RQ's registries,
the ETA window, member lists, the store's index) over the empty system, per job. Measured right after the jobs
finished, and again as it stands once RQ's own copy of a finished job has expired (``RESULT_TTL_S``).

    python -m bench.redis_memory [--jobs 20] [--stores redis,filesystem,s3] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import random
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import redis
from PIL import Image
from pydantic import SecretStr
from rq.job import Job
from rq.serializers import JSONSerializer

from bot.jobs import JobDesk
from shared.intake import Intake, Requester
from shared.jobs.spec import Delivery
from shared.settings import Settings
from shared.stores import images as image_store
from shared.stores.redis_server import EmbeddedRedis
from tests.fake_discord import Call, FakeDiscord

log = logging.getLogger(__name__)

SIDE = 1024
"""Side of the synthetic images (a 1024 px model's grid images)."""


def synthetic_png(seed: int) -> bytes:
    """A 1024 px RGB PNG of about 1.5 MB (a gradient with fine noise: compresses like a detailed render)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([(x / 4) % 256, (y / 4) % 256, ((x + y) / 8) % 256], -1)
    pixels = np.clip(base + rng.integers(-4, 5, size=base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def memory_by_key(connection: redis.Redis) -> dict[str, int]:
    """Key -> bytes (``MEMORY USAGE key SAMPLES 0``: every element counted)."""
    found = {}
    for raw in connection.scan_iter(count=1000):
        key = raw.decode()
        size = connection.memory_usage(key, samples=0)
        if size is not None:
            found[key] = int(size)
    return found


def kind_of(key: str, job_ids: set[str], waiting_ids: set[str]) -> str:
    """A key's kind for the breakdown: what it keeps of one job, or the shared structure it is."""
    parts = key.split(":")
    named = next((job for job in job_ids if job in key), "")
    if named:
        return ":".join(part if named not in part else "<job>" for part in parts)
    if any(message in key for message in waiting_ids):
        return ":".join(part if part not in waiting_ids else "<message>" for part in parts)
    return key


def run_store(store: str, jobs: int, folder: Path, model: Path, pngs: list[bytes]) -> dict[str, Any]:
    """Measure one store; returns the figures."""
    from tests.seaweedfs import SeaweedFS
    from worker.runner import build_worker
    from worker.runtime import WorkerRuntime, install

    weed = SeaweedFS(folder / "weed").start() if store == "s3" else None
    try:
        with EmbeddedRedis(folder / "redis") as server, FakeDiscord(enforce_limits=False) as fake:
            extra: dict[str, Any] = {}
            if weed is not None:
                extra = {
                    "s3_endpoint_url": weed.endpoint_url,
                    "s3_bucket": "imagine-results",
                    "s3_access_key_id": weed.access_key,
                    "s3_secret_access_key": SecretStr(weed.secret_key),
                    "s3_addressing_style": "path",
                }
            settings = Settings(
                redis_url=SecretStr(server.url),
                data_dir=folder / "data",
                output_dir=folder / "out",
                model=str(model),
                device="cpu",
                steps=2,
                result_store=store,
                discord_api_base=fake.api_base,
                discord_token=SecretStr(fake.token),
                **extra,
            )
            connection = redis.Redis.from_url(server.url)
            image_store.result_store(connection, settings)  # the store made (bucket created) before the baseline
            before = memory_by_key(connection)
            desk, intake = JobDesk(connection, settings), Intake(connection, settings)
            job_ids: list[str] = []
            waiting_ids: set[str] = set()
            for n in range(jobs):
                member = str(900000 + n % 7)
                waiting = fake._new_message(
                    fake.channel_id, Call("POST", "", {}, {"content": "(Waiting to start)"}, {}, ""), author={}
                )
                delivery = Delivery(
                    kind="discord",
                    channel_id=str(fake.channel_id),
                    guild_id=str(fake.guild_id),
                    waiting_message_id=str(waiting["id"]),
                )
                requester = Requester(member_id=member, roles=(), channel_id=str(fake.channel_id), locale="en-US")
                (spec,) = intake.jobs_from_text(
                    f"a lighthouse at dusk over a stormy sea, oil painting, study {n}",
                    requester,
                    delivery,
                    rng=random.Random(n),
                )
                desk.enqueue(spec)
                job_ids.append(spec.job_id)
                waiting_ids.add(str(waiting["id"]))
            worker = build_worker(settings, runtime=install(WorkerRuntime(settings)))
            worker.batch_max_images = 0
            worker.work(burst=True, with_scheduler=False)
            statuses = {Job.fetch(j, connection=connection, serializer=JSONSerializer).get_status() for j in job_ids}
            for index, job_id in enumerate(job_ids):  # the images a 1024 px model would have stored
                image_store.put_images(connection, settings, job_id, pngs[index % 2 :] + pngs[: index % 2])
            after = memory_by_key(connection)
            finished = _figures(before, after, set(job_ids), waiting_ids, jobs)
            # Once RQ's own copy of each job has expired (RESULT_TTL_S): its hash, result stream and registry
            # entries go; what is left is ours.
            for job_id in job_ids:
                Job.fetch(job_id, connection=connection, serializer=JSONSerializer).delete(remove_from_queue=True)
            expired = _figures(before, memory_by_key(connection), set(job_ids), waiting_ids, jobs)
            if store != "redis":  # the images are outside Redis: check they were written there
                image_store.get_image(connection, settings, job_ids[0], 0)
            return {
                "store": store,
                "jobs": jobs,
                "statuses": sorted(str(getattr(s, "value", s)) for s in statuses),
                "png_bytes": len(pngs[0]),
                "just_finished": finished,
                "after_result_ttl": expired,
            }
    finally:
        if weed is not None:
            weed.stop()


def _figures(
    before: dict[str, int], after: dict[str, int], job_ids: set[str], waiting_ids: set[str], jobs: int
) -> dict[str, Any]:
    grown: dict[str, int] = defaultdict(int)
    for key, size in after.items():
        delta = size - before.get(key, 0)
        if delta:
            grown[kind_of(key, job_ids, waiting_ids)] += delta
    for key, size in before.items():
        if key not in after:
            grown[kind_of(key, job_ids, waiting_ids)] -= size
    total = sum(grown.values())
    images = sum(size for kind, size in grown.items() if ":image:" in kind)
    return {
        "bytes_per_job": round(total / jobs),
        "bytes_per_job_without_images": round((total - images) / jobs),
        "by_kind_per_job": {kind: round(size / jobs) for kind, size in sorted(grown.items(), key=lambda kv: -kv[1])},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs per store (default 20)")
    parser.add_argument("--stores", default="redis,filesystem,s3", help="comma-separated stores to measure")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from tests.tiny_models import build_tiny_sd

    folder = Path(tempfile.mkdtemp(prefix="imm-"))
    model = build_tiny_sd(folder / "tiny-sd")
    pngs = [synthetic_png(seed) for seed in range(2)] * 2
    results = []
    for store in [s.strip() for s in args.stores.split(",") if s.strip()]:
        results.append(run_store(store, args.jobs, folder / store, model, pngs))
        print(json.dumps(results[-1], indent=2), flush=True)
    summary = {
        r["store"]: (r["just_finished"]["bytes_per_job"], r["after_result_ttl"]["bytes_per_job"]) for r in results
    }
    print("bytes per job in Redis (just finished, after RESULT_TTL_S):", json.dumps(summary))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
