"""What the server's rules (and the daily allowance) add to the acknowledgement path of /imagine, side by side with
rules off: the intake (options, parse, moderation, member defaults, rules, jobs) timed in-process against a real
Redis, with a realistic rule book (everyone, 20 roles, 50 channels) and a member with five roles.

    python -m bench.rules [--count 2000] [--json out.json]

Goal: the rules add < 1 ms per /imagine (median and p99 of the difference). The rule book is read from Redis once
per ``RULES_CACHE_S`` and checked in memory, so the difference is CPU time only; the allowance is one Lua call.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from shared import allowances, rules
from shared.intake import Intake, Requester
from shared.jobs.spec import Delivery
from shared.settings import Settings
from shared.stores.connection import connect
from shared.stores.redis_server import EmbeddedRedis

log = logging.getLogger(__name__)

PROMPT = "a red fox in the snow, golden hour {soft, dramatic} light --ar 3:2 --s 250 --q 1"
"""A prompt with two permutations and parameters: two jobs, each checked against the rules."""


def rule_book() -> dict[str, dict[str, object]]:
    """Everyone, 20 roles and 50 channels, each with a few limits."""
    book: dict[str, dict[str, object]] = {
        "default": {"name": "everyone", "models": ["default", "6"], "max_quality": 1, "max_repeat": 4}
    }
    for n in range(20):
        book[f"role:{1000 + n}"] = {"name": f"role {n}", "models": ["default", "6", "niji"], "max_quality": 2}
    for n in range(50):
        book[f"channel:{2000 + n}"] = {"name": f"channel {n}", "lanes": ["fast", "relax"], "max_pixels": 4_000_000}
    return book


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_intake(intake: Intake, requester: Requester, count: int) -> list[float]:
    """Milliseconds per ``jobs_from_text`` of ``PROMPT`` (the work before /imagine's answer)."""
    delivery = Delivery(kind="discord", channel_id=requester.channel_id)
    rng = random.Random(1)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        intake.jobs_from_text(PROMPT, requester, delivery, rng=rng)
        times.append(1000 * (time.perf_counter() - started))
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="imb-"))
    with EmbeddedRedis(folder / "redis") as server:
        base = Settings(redis_url=SecretStr(server.url), data_dir=folder / "data", output_dir=folder / "out")
        settings = base.model_copy(update={"rules": rule_book(), "allowances": {"default": {"jobs": 10**9}}})
        connection = connect(settings)
        requester = Requester(member_id="42", roles=("1003", "1007", "1011", "9999", "8888"), channel_id="2017")
        off = Intake(connection, base)
        on = Intake(connection, settings, rules=[rules.IntakeRules(connection, settings)])
        time_intake(off, requester, 50)  # warm caches (model configs, the compiled banned list, the rule book)
        time_intake(on, requester, 50)
        rounds = [(time_intake(off, requester, args.count // 10), time_intake(on, requester, args.count // 10))]
        for _ in range(9):  # interleaved, so drift of the machine hits both alike
            rounds.append((time_intake(off, requester, args.count // 10), time_intake(on, requester, args.count // 10)))
        rules_off = [t for pair in rounds for t in pair[0]]
        rules_on = [t for pair in rounds for t in pair[1]]
        specs = off.jobs_from_text(PROMPT, requester, Delivery(kind="discord", channel_id="2017"))
        take = []
        for _ in range(args.count // 4):
            started = time.perf_counter()
            allowances.take_all(connection, settings, [s.replace(job_id=f"{s.job_id}{len(take)}") for s in specs])
            take.append(1000 * (time.perf_counter() - started))
    result = {
        "count": len(rules_on),
        "rules_off_median_ms": statistics.median(rules_off),
        "rules_on_median_ms": statistics.median(rules_on),
        "rules_off_p99_ms": percentile(rules_off, 0.99),
        "rules_on_p99_ms": percentile(rules_on, 0.99),
        "added_median_ms": statistics.median(rules_on) - statistics.median(rules_off),
        "added_p99_ms": percentile(rules_on, 0.99) - percentile(rules_off, 0.99),
        "allowance_take_median_ms": statistics.median(take),
        "allowance_take_p99_ms": percentile(take, 0.99),
    }
    for key, value in result.items():
        print(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    verdict = "PASS" if result["added_median_ms"] < 1.0 and result["added_p99_ms"] < 1.0 else "FAIL"
    print(f"rules add < 1 ms to the acknowledgement path: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
