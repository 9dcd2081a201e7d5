"""The bot token and the Redis password never appear in logs, errors or ``repr`` of settings."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job

from shared.jobs.spec import JobStatus
from shared.queue.client import enqueue, job_state
from shared.settings import Settings
from shared.stores.redis_server import redis_server_binary
from tests.conftest import ROOT, child_env
from tests.test_chain import make_spec
from tests.test_faults_discord import FakeDiscordApi, api  # noqa: F401 - the fixture
from worker.discord_publisher import DiscordError, DiscordRest
from worker.faults import FAULT_MARKER

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.SECRET-BOT-TOKEN.xyz"
PASSWORD = "S3cret-Redis-Passw0rd"
WRONG_PASSWORD = "Wr0ng-Redis-Passw0rd"


def test_settings_repr_str_and_dump_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("REDIS_URL", f"redis://:{PASSWORD}@redis:6379/0")
    settings = Settings()
    assert settings.discord_token.get_secret_value() == TOKEN
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert TOKEN not in text and PASSWORD not in text
    assert "**********" in repr(settings)


@pytest.fixture
def password_redis() -> Iterator[str]:
    """A real redis-server that requires ``PASSWORD``; yields its unix socket path."""
    folder = Path(tempfile.mkdtemp(prefix="imrs-"))
    socket_path = folder / "redis.sock"
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield str(socket_path)
    process.kill()
    process.wait()


def run_worker(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "--burst", "--log-level", "DEBUG"],
        cwd=ROOT, env=child_env(env), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.mark.slow
def test_worker_logs_and_job_errors_never_show_the_password_or_token(
    password_redis: str, settings_env: dict[str, str], settings: Settings
) -> None:
    url = f"unix://:{PASSWORD}@{password_redis}"
    env = {**settings_env, "REDIS_URL": url, "DISCORD_TOKEN": TOKEN, "FAULT_INJECTION": "error"}
    connection = redis.Redis.from_url(url)
    failing = make_spec(settings).replace(prompt=f"{FAULT_MARKER} a circle", tile=True)
    ok = make_spec(settings, seed=4)
    enqueue(connection, settings, failing)
    enqueue(connection, settings, ok)
    output = run_worker(env)
    state = job_state(connection, ok.job_id)
    assert state is not None and state.status is JobStatus.FINISHED, output[-3000:]
    failed = job_state(connection, failing.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    stored = Job.fetch(failing.job_id, connection=connection)
    texts = [output, failed.error, str(stored.results()[0].exc_string), str(connection.info())]
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text

    wrong = run_worker({**env, "REDIS_URL": f"unix://:{WRONG_PASSWORD}@{password_redis}"})
    assert "AuthenticationError" in wrong or "invalid username-password" in wrong, wrong[-2000:]
    assert WRONG_PASSWORD not in wrong and TOKEN not in wrong


def test_discord_errors_and_logs_never_show_the_token(
    api: FakeDiscordApi,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.default = "500"
    waits: list[float] = []
    rest = DiscordRest(f"http://127.0.0.1:{api.port}", TOKEN, sleep=waits.append, timeout_s=5.0)
    with caplog.at_level(logging.DEBUG), pytest.raises(DiscordError) as caught:
        rest.request("POST", "/channels/1/messages", payload={"content": "hi"})
    assert len(waits) >= 1
    for text in (str(caught.value), repr(caught.value), caplog.text, repr(rest), str(vars(caught.value))):
        assert TOKEN not in text
