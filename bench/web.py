"""Latency of the web companion's pages with many results in the store: the shared gallery, "My images" (first and a
middle page) and a prompt search, each requested over loopback HTTP from a logged-in client, with ``--jobs`` finished
jobs (default 2,000) written through the result store as workers write them (images, record, gallery index), one
member owning them all (the worst case for "My images" and search) and a tenth of them stored in stealth (so the
gallery skips some)::

    python -m bench.web
    python -m bench.web --jobs 2000 --requests 300

Prints p50/p95/max per page in milliseconds; the goal is a gallery p95 under 50 ms on the development machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import redis
from aiohttp.test_utils import TestServer
from PIL import Image
from pydantic import SecretStr

from shared.jobs.record import JobRecord
from shared.jobs.spec import JobSpec
from shared.settings import Settings
from shared.signing import sign
from shared.stores import images as image_store
from shared.stores import member_settings
from shared.stores.member_settings import MemberSettings
from shared.stores.redis_server import EmbeddedRedis
from web.app import create_app
from web.sessions import SESSION_COOKIE, SESSION_PURPOSE

log = logging.getLogger(__name__)

SECRET = "bench-secret-of-enough-length"
"""The bench's WEB_SECRET."""

WORDS = ("red", "blue", "green", "yellow", "circle", "square", "triangle", "star", "above", "below", "left", "right")
"""Prompt words the seeded jobs are made of."""


def seed(connection: redis.Redis, settings: Settings, jobs: int, member: str) -> None:
    """``jobs`` finished jobs of ``member`` (every tenth stored in stealth), as a worker stores them."""
    pngs = []
    for shade in range(4):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (60 * shade, 90, 160)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    now = time.time()
    for index in range(jobs):
        stealth = index % 10 == 0
        member_settings.save(connection, settings, member, MemberSettings(stealth=stealth))
        words = " ".join(WORDS[(index * 7 + k) % len(WORDS)] for k in range(4))
        spec = JobSpec.for_prompt(
            f"{words} number{index}",
            seed=index,
            width=64,
            height=64,
            steps=20,
            owner=member,
            created_at=now - jobs + index,
        )
        image_store.put_images(connection, settings, spec.job_id, pngs)
        image_store.put_record(
            connection, settings, JobRecord(job_id=spec.job_id, spec=spec, seeds=spec.seeds, size=(64, 64))
        )
    member_settings.save(connection, settings, member, MemberSettings())


async def measure(url: str, cookie: str, paths: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Milliseconds of ``requests`` GETs of each path (after 10 warm-up requests each)."""
    timings: dict[str, list[float]] = {name: [] for name in paths}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, cookies={SESSION_COOKIE: cookie}) as client:
        for name, path in paths.items():
            for attempt in range(requests + 10):
                started = time.perf_counter()
                async with client.get(url + path) as response:
                    body = await response.read()
                    if response.status != 200 or b'class="card"' not in body:
                        raise RuntimeError(f"{path} answered {response.status}: {body[:200]!r}")
                if attempt >= 10:
                    timings[name].append(1000 * (time.perf_counter() - started))
    return timings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run(jobs: int, requests: int, store: str) -> dict[str, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="imb-"))
    server = EmbeddedRedis(folder / "redis")
    server.start()
    try:
        port = free_port()
        settings = Settings(
            redis_url=SecretStr(server.url),
            data_dir=folder / "data",
            result_store=store,
            web_base_url=f"http://127.0.0.1:{port}",
            web_secret=SecretStr(SECRET),
        )
        connection = redis.Redis.from_url(server.url)
        started = time.perf_counter()
        seed(connection, settings, jobs, "4242")
        log.info("seeded %d jobs in %.1f s (%s store)", jobs, time.perf_counter() - started, store)
        cookie = sign(SECRET, SESSION_PURPOSE, {"m": "4242", "n": "bench", "r": [], "a": False, "c": "x"}, 3600)
        site = TestServer(create_app(settings, connection), host="127.0.0.1", port=port, access_log=None)
        await site.start_server()
        try:
            paths = {
                "gallery": "/gallery",
                "my images": "/me",
                "my images, page 40": "/me?page=40",
                "search 2 words": "/me?q=circle+square",
            }
            return await measure(f"http://127.0.0.1:{port}", cookie, paths, requests)
        finally:
            await site.close()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="finished jobs in the store (default 2000)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (default 200)")
    parser.add_argument("--store", default="redis", help="result store: redis or filesystem (default redis)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    timings = asyncio.run(run(args.jobs, args.requests, args.store))
    print(f"{args.jobs} jobs, {args.requests} requests per page, {args.store} store")
    for name, values in timings.items():
        values.sort()
        p95 = values[int(0.95 * (len(values) - 1))]
        print(f"{name:>20}: p50 {statistics.median(values):6.1f} ms  p95 {p95:6.1f} ms  max {values[-1]:6.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
