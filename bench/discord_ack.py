"""Acknowledgement latency of /imagine under a burst: N concurrent interactions through the fake Discord.

Starts a real Redis (embedded, tmp dir), the fake Discord and the real bot process (``python -m bot``), waits for the
bot to connect, then dispatches N ``/imagine`` INTERACTION_CREATE events back to back over the gateway and measures,
in the fake, the time from each dispatch to the arrival of its interaction callback (Discord's 3 s window). Checks that
every interaction was acknowledged with a waiting message and that N jobs are queued (none lost). No worker runs.

    python bench/discord_ack.py [--count 200] [--json out.json]

Goal on the development machine: p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from shared.keys import Keys
from shared.settings import Settings
from shared.stores.connection import connect
from shared.stores.redis_server import EmbeddedRedis
from tests.fake_discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process (the fake Discord's thread does nearly all its work during a run)."""
    times = os.times()
    return times.user + times.system


def run(count: int, timeout_s: float, interval_ms: float = 0.0, profile: Path | None = None) -> dict[str, object]:
    """Run the benchmark; returns the figures (latencies in milliseconds)."""
    folder = Path(tempfile.mkdtemp(prefix="imb-"))
    with EmbeddedRedis(folder / "redis") as server, FakeDiscord() as fake:
        env = {
            **os.environ,
            **fake.env(),
            "REDIS_URL": server.url,
            "DATA_DIR": str(folder / "data"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        log_path = folder / "bot.log"
        bot = subprocess.Popen(
            [
                sys.executable,
                *(["-m", "cProfile", "-o", str(profile)] if profile else []),
                "-m",
                "bot",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            fake.wait_connected(timeout=60)
            # One warm-up interaction so first-call imports and connections are not counted.
            warm = fake.slash("imagine", {"prompt": "warm up"}, user_id=1)
            fake.wait_for(lambda: warm.acked_at is not None, 30, "the warm-up answer")
            payloads = [
                fake.slash_payload("imagine", {"prompt": f"a lighthouse at dusk, study {n}"}, user_id=1000 + n)
                for n in range(count)
            ]
            bot_cpu0, own_cpu0 = cpu_seconds(bot.pid), own_cpu()
            started = time.monotonic()
            records = fake.dispatch_many(payloads, interval_ms / 1000)
            with contextlib.suppress(TimeoutError):
                fake.wait_for(
                    lambda: all(r.acked_at is not None for r in records), timeout_s, f"{count} acknowledgements"
                )
            burst_s = time.monotonic() - started
            bot_cpu, fake_cpu = cpu_seconds(bot.pid) - bot_cpu0, own_cpu() - own_cpu0
            acked = [r for r in records if r.acked_at is not None]
            latencies = [1000 * (r.ack_latency_s or 0.0) for r in acked]
            waiting = [r for r in acked if r.response_type == 4 and "(Waiting to start)" in r.content]
            settings = Settings(redis_url=SecretStr(server.url), data_dir=folder / "data")
            connection = connect(settings)
            deadline = time.monotonic() + timeout_s
            queued = 0
            while time.monotonic() < deadline:
                queued = sum(1 for _ in connection.scan_iter(Keys.job("*"))) - 1  # minus the warm-up job
                if queued >= count:
                    break
                time.sleep(0.1)
        finally:
            bot.terminate()
            bot.wait(timeout=20)
    return {
        "count": count,
        "interval_ms": interval_ms,
        "acknowledged": len(acked),
        "waiting_messages": len(waiting),
        "jobs_queued": queued,
        "lost": count - min(len(waiting), queued),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "burst_s": round(burst_s, 3),
        "bot_cpu_ms_per_interaction": round(1000 * bot_cpu / count, 3),
        "fake_cpu_ms_per_interaction": round(1000 * fake_cpu / count, 3),
        "bot_log": str(log_path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="concurrent /imagine interactions (default 200)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for answers and jobs")
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="spacing of the dispatches (default 0: one burst)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="run the bot under cProfile, stats to this file")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures = run(args.count, args.timeout, args.interval_ms, args.profile)
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["lost"] == 0 and figures["acknowledged"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
