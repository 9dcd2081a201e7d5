"""A small version of the load test (``bench/load.py``, the same code): members submitting /imagine to two sharded
bot processes and two workers through the limit-enforcing fake Discord, with every check of the full one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import LoadConfig, checks, run_load

pytestmark = pytest.mark.slow


def test_a_small_load_is_delivered_once_within_limits_fairly_and_without_429(tiny_model: Path, tmp_path: Path) -> None:
    config = LoadConfig(
        members=12,
        jobs=60,
        seconds=6.0,
        bots=2,
        workers=2,
        channels=6,
        max_queued=3,
        max_running=2,
        timeout_s=240.0,
        model=str(tiny_model),
        folder=str(tmp_path),
    )
    figures = run_load(config)
    assert checks(figures, config) == [], figures
    assert figures["accepted"] + figures["refused_at_limit"] == 60
    assert figures["accepted"] >= 12  # every member got jobs in
    assert figures["redis_bytes_per_job"]["after_rq_result_ttl"] <= 2048
