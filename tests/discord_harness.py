"""The Discord end-to-end harness, one for every test that needs it: a fake Discord on loopback, the environment of
bot and workers pointing at it, real ``python -m bot`` processes, and the helpers that wait for what members see.

Registered as a pytest plugin in ``tests/conftest.py``, so its fixtures are there for every test module.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from shared.discord_wire import buttons
from shared.jobs.spec import JobStatus
from shared.keys import Keys
from shared.queue.client import job_state
from shared.settings import Settings
from tests.conftest import ROOT, child_env
from tests.fake_discord import FakeDiscord, InteractionRecord

MEMBER = 4242
OTHER = 5151


@pytest.fixture
def fake_discord() -> Iterator[FakeDiscord]:
    """A started fake Discord on loopback."""
    with FakeDiscord() as fake:
        yield fake


@pytest.fixture
def discord_env(settings_env: dict[str, str], fake_discord: FakeDiscord) -> dict[str, str]:
    """Environment of bot and workers: the test Redis and model, and the fake Discord."""
    return {**settings_env, **fake_discord.env()}


@pytest.fixture
def start_bot(discord_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python -m bot`` against the fake Discord (``env``: extra variables, e.g. ``SHARD_IDS``); every bot
    started is stopped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"bot-{len(processes)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot"],
            cwd=ROOT,
            env=child_env({**discord_env, **(env or {})}),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log_path  # type: ignore[attr-defined]
        processes.append(proc)
        return proc

    yield start
    for proc in processes:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def answered(fake: FakeDiscord, record: InteractionRecord, timeout: float = 30) -> InteractionRecord:
    fake.wait_for(lambda: record.acked_at is not None, timeout, f"an answer to interaction {record.id}")
    return record


def final_message(fake: FakeDiscord, job_id: str, timeout: float = 240) -> dict[str, Any]:
    """The result message whose buttons name ``job_id``."""

    def find() -> dict[str, Any] | None:
        for message in fake.channel_messages():
            if job_id in buttons.job_ids_in_components(message.get("components") or []):
                return message
        return None

    return fake.wait_for(find, timeout, f"the result of job {job_id}")


def job_of_waiting(conn: redis.Redis, settings: Settings, waiting_id: int, timeout: float = 30) -> str:
    """The job id whose delivery points at the waiting message ``waiting_id`` (queued, started or finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in conn.scan_iter(Keys.job("*")):
            job_id = key.decode().removeprefix(Keys.job(""))
            state = job_state(conn, job_id)
            if state and state.spec.delivery.waiting_message_id == str(waiting_id):
                return job_id
        time.sleep(0.1)
    raise AssertionError(f"no job points at waiting message {waiting_id}")


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def click_and_get_result(
    fake: FakeDiscord, conn: redis.Redis, settings: Settings, message_id: int, label: str, *, user_id: int = MEMBER
) -> tuple[str, dict[str, Any]]:
    """Click a button; returns the new job id and its result message."""
    record = answered(fake, fake.click(message_id, fake.button_id(message_id, label), user_id=user_id))
    assert record.response_type == 4 and not record.ephemeral, record.response
    assert "(Waiting to start)" in record.content
    assert record.response_message_id is not None
    job_id = job_of_waiting(conn, settings, record.response_message_id)
    return job_id, final_message(fake, job_id)


def wait_finished(conn: redis.Redis, job_id: str, timeout: float = 60) -> None:
    """Until RQ has the job as finished (the record is stored right after the post)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(conn, job_id)
        if state is not None and state.status is JobStatus.FINISHED:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")
