"""Acknowledgement latency of /imagine under a burst: N concurrent interactions through the fake Discord.

Starts a real Redis (embedded, tmp dir), the fake Discord and the real bot process (``python -m bot``), waits for the
bot to connect, then dispatches N ``/imagine`` INTERACTION_CREATE events back to back over the gateway and measures,
in the fake, the time from each dispatch to the arrival of its interaction callback (Discord's 3 s window). Checks that
every interaction was acknowledged with a waiting message and that N jobs are queued (none lost). No worker runs.

    python -m bench.discord_ack [--count 200] [--bots 2] [--profile stats.prof] [--json out.json]

Goal on the development machine: p99 < 100 ms. ``--bots 2`` runs two bot processes (``SHARD_COUNT=2``, one shard
each) and spreads the interactions over a guild of each shard. ``--profile`` runs each bot under cProfile with a CPU
clock switched on from the burst's first dispatch to its last answer (SIGUSR1 on, SIGUSR2 off and dump; the
enqueues that follow the answers are left out), and prints where the bot's CPU went until every answer was out.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import signal
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

WARM_UP = 32
"""Interactions answered per bot before the measured burst (as many as the bot keeps HTTP connections)."""

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


def profiled_bot(stats_path: Path) -> int:
    """Run the bot (``python -m bot``) with a CPU-time profiler that SIGUSR1 switches on and SIGUSR2 switches off,
    writing its stats to ``stats_path``: only the burst is profiled, not start-up."""
    from bot.__main__ import main as bot_main

    profiler = cProfile.Profile(time.process_time)

    def on(_signum: int, _frame: object) -> None:
        profiler.enable()

    def off(_signum: int, _frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(str(stats_path))

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    return bot_main(["--log-level", "WARNING"])


def profile_summary(stats_path: Path, calls: int, top: int = 25) -> str:
    """The functions with the most CPU time of a profile, own time and with callees, per interaction (``calls``)."""
    stats = pstats.Stats(str(stats_path))
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
        rows.append((tottime, cumtime, ncalls, f"{where}:{line}({name})"))
    total = sum(row[0] for row in rows)
    lines = [f"profiled CPU {1000 * total / calls:.3f} ms per interaction; top by own time (ms per interaction):"]
    for tottime, cumtime, ncalls, label in sorted(rows, reverse=True)[:top]:
        lines.append(f"  own {1000 * tottime / calls:7.3f}  with callees {1000 * cumtime / calls:7.3f}  "
                     f"calls {ncalls / calls:6.1f}  {label}")  # fmt: skip
    ours = [row for row in rows if row[3].startswith(("bot/", "shared/"))]
    lines.append("our functions by time with callees (ms per interaction):")
    for tottime, cumtime, ncalls, label in sorted(ours, key=lambda row: -row[1])[:top]:
        lines.append(f"  with callees {1000 * cumtime / calls:7.3f}  own {1000 * tottime / calls:7.3f}  "
                     f"calls {ncalls / calls:6.1f}  {label}")  # fmt: skip
    return "\n".join(lines)


def run(
    count: int, timeout_s: float, interval_ms: float = 0.0, profile: Path | None = None, bots: int = 1
) -> dict[str, object]:
    """Run the benchmark with ``bots`` bot processes (one shard each); returns the figures (latencies in ms)."""
    folder = Path(tempfile.mkdtemp(prefix="imb-"))
    procs: list[subprocess.Popen[bytes]] = []
    with EmbeddedRedis(folder / "redis") as server, FakeDiscord(extra_guilds=bots - 1) as fake:
        env = {
            **os.environ,
            **fake.env(),
            "REDIS_URL": server.url,
            "DATA_DIR": str(folder / "data"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        stats_paths = [folder / f"bot-{index}.prof" for index in range(bots)]
        for index in range(bots):
            shard_env = {"SHARD_COUNT": str(bots), "SHARD_IDS": str(index)} if bots > 1 else {}
            command = (
                [sys.executable, "-m", "bench.discord_ack", "--serve-profiled-bot", str(stats_paths[index])]
                if profile
                else [sys.executable, "-m", "bot", "--log-level", "WARNING"]
            )
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env={**env, **shard_env},
                    stdout=(folder / f"bot-{index}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            fake.wait_connected(identifies=bots, timeout=60)
            channels = [fake.guild_channels[fake.guild_of_shard(index, bots)][0] for index in range(bots)]
            # Warm-up: a burst of WARM_UP interactions per shard first, so that first-call imports are done and the
            # bot's HTTP connections are open, as in a bot that has been answering for a while (a cold pool opens
            # one TCP connection per concurrent answer, which a running bot does not).
            warm = fake.dispatch_many(
                [
                    fake.slash_payload("imagine", {"prompt": "warm up"}, user_id=1 + n, channel_id=channel)
                    for channel in channels
                    for n in range(WARM_UP)
                ]
            )
            fake.wait_for(lambda: all(r.acked_at is not None for r in warm), 60, "the warm-up answers")
            payloads = [
                fake.slash_payload(
                    "imagine",
                    {"prompt": f"a lighthouse at dusk, study {n}"},
                    user_id=1000 + n,
                    channel_id=channels[n % bots],
                )
                for n in range(count)
            ]
            time.sleep(1.0)  # the warm-up jobs' enqueues are done
            if profile:
                for proc in procs:
                    proc.send_signal(signal.SIGUSR1)
                time.sleep(0.2)
            bot_cpu0, own_cpu0 = sum(cpu_seconds(proc.pid) for proc in procs), own_cpu()
            started = time.monotonic()
            records = fake.dispatch_many(payloads, interval_ms / 1000)
            # Polled, not woken on every REST call: a thread woken 200 times would take the GIL from the fake's
            # loop each time and delay the very answers it waits for.
            deadline = started + timeout_s
            while time.monotonic() < deadline and any(r.acked_at is None for r in records):
                time.sleep(0.05)
            burst_s = time.monotonic() - started
            if profile:  # the answers only: the enqueues come after the last answer
                for proc in procs:
                    proc.send_signal(signal.SIGUSR2)
            acked = [r for r in records if r.acked_at is not None]
            latencies = [1000 * (r.ack_latency_s or 0.0) for r in acked]
            waiting = [r for r in acked if r.response_type == 4 and "(Waiting to start)" in r.content]
            settings = Settings(redis_url=SecretStr(server.url), data_dir=folder / "data")
            connection = connect(settings)
            deadline = time.monotonic() + timeout_s
            queued = 0
            while time.monotonic() < deadline:
                queued = sum(1 for _ in connection.scan_iter(Keys.job("*"))) - len(warm)  # minus the warm-up jobs
                if queued >= count:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            bot_cpu, fake_cpu = sum(cpu_seconds(proc.pid) for proc in procs) - bot_cpu0, own_cpu() - own_cpu0
            if profile:
                for path in stats_paths:
                    fake.wait_for(lambda path=path: path.exists() and path.stat().st_size > 0, 30, "the profile")  # type: ignore[misc]
                time.sleep(0.5)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=20)
    figures: dict[str, object] = {
        "count": count,
        "bots": bots,
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
        "bot_logs": [str(folder / f"bot-{index}.log") for index in range(bots)],
    }
    if profile:
        merged = pstats.Stats(*(str(path) for path in stats_paths))
        merged.dump_stats(str(profile))
        figures["profile"] = str(profile)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="concurrent /imagine interactions (default 200)")
    parser.add_argument("--bots", type=int, default=1, help="bot processes, one shard each (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for answers and jobs")
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="spacing of the dispatches (default 0: one burst)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="profile the bots' CPU in the burst, stats here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--serve-profiled-bot", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_profiled_bot is not None:
        return profiled_bot(args.serve_profiled_bot)
    logging.basicConfig(level=logging.WARNING)
    figures = run(args.count, args.timeout, args.interval_ms, args.profile, args.bots)
    print(json.dumps(figures, indent=2))
    if args.profile is not None:
        print(profile_summary(args.profile, args.count))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["lost"] == 0 and figures["acknowledged"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
