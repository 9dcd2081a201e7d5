"""Discord errors against a real HTTP server on 127.0.0.1 (aiohttp) and a real Redis: 429s are honoured, 5xx and
connection resets retried, a result that still cannot be posted is kept in the outbox and re-delivered exactly once,
and one given up on is kept and reported in the audit log."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery
from shared.settings import Settings
from shared.stores import audit_log
from shared.stores.images import get_record, put_images
from shared.stores.outbox import Outbox
from tests.test_chain import make_spec
from worker.delivery import deliver, drain_outbox
from worker.discord_publisher import DiscordPublisher, DiscordRest
from worker.engine import png_bytes
from worker.grid import compose_grid
from worker.publisher import JobResult


@dataclass
class FakeDiscordApi:
    """Answers POST /channels/<id>/messages from a script: 'ok', '429', '500' or 'reset'; 'ok' once it runs out."""

    script: list[str] = field(default_factory=list)
    default: str = "ok"
    calls: list[str] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    port: int = 0

    async def post_message(self, request: web.Request) -> web.StreamResponse:
        action = self.script.pop(0) if self.script else self.default
        self.calls.append(action)
        await request.read()
        if action == "429":
            return web.json_response({"message": "rate limited", "retry_after": 0.25, "global": False}, status=429)
        if action == "500":
            return web.json_response({"message": "internal"}, status=500)
        if action == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        message_id = str(1000 + len(self.posted))
        self.posted.append(request.match_info["channel"])
        return web.json_response({"id": message_id, "channel_id": request.match_info["channel"]})


@pytest.fixture
def api() -> Iterator[FakeDiscordApi]:
    state = FakeDiscordApi()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/channels/{channel}/messages", state.post_message)
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield state
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def discord_settings(settings: Settings, api: FakeDiscordApi) -> Settings:
    return settings.model_copy(
        update={
            "discord_token": SecretStr("test-token"),
            "discord_api_base": f"http://127.0.0.1:{api.port}",
            "outbox_retry_base_s": 0.0,
            "outbox_attempts": 2,
        }
    )


def make_result(connection: redis.Redis, settings: Settings) -> JobResult:
    spec = make_spec(settings).replace(delivery=Delivery(kind="discord", channel_id="42"))
    images = [Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(4)]
    put_images(connection, settings, spec.job_id, [png_bytes(image) for image in images])
    record = JobRecord(job_id=spec.job_id, spec=spec, seeds=spec.seeds)
    return JobResult(spec=spec, images=images, grid=compose_grid(images), record=record)


def publisher_with(settings: Settings, connection: redis.Redis, waits: list[float]) -> DiscordPublisher:
    rest = DiscordRest(settings.discord_api_base, "test-token", sleep=waits.append, timeout_s=5.0)
    return DiscordPublisher(settings, rest=rest, connection=connection)


def test_429_is_honoured_and_5xx_and_resets_are_retried_within_one_post(
    discord_settings: Settings, redis_conn: redis.Redis, api: FakeDiscordApi
) -> None:
    api.script = ["429", "500", "reset", "ok"]
    waits: list[float] = []
    result = make_result(redis_conn, discord_settings)
    files = deliver(redis_conn, discord_settings, publisher_with(discord_settings, redis_conn, waits), result)
    assert files["discord"]["message_id"] == "1000"
    assert api.calls == ["429", "500", "reset", "ok"]
    assert waits[0] == 0.25  # the 429's retry_after
    assert len(waits) == 3 and waits[2] > waits[1] > 0  # back-off grows
    assert Outbox(redis_conn, discord_settings).pending() == []


def test_result_that_cannot_be_posted_is_kept_and_redelivered_exactly_once(
    discord_settings: Settings, redis_conn: redis.Redis, api: FakeDiscordApi
) -> None:
    api.default = "500"
    waits: list[float] = []
    result = make_result(redis_conn, discord_settings)
    job_id = result.spec.job_id
    files = deliver(redis_conn, discord_settings, publisher_with(discord_settings, redis_conn, waits), result)
    assert files["pending"] is True and "500" in files["error"]
    assert api.posted == []
    outbox = Outbox(redis_conn, discord_settings)
    assert outbox.pending() == [job_id]

    api.default = "ok"
    calls_before = len(api.calls)

    def publisher_for(_delivery: Any) -> DiscordPublisher:
        return publisher_with(discord_settings, redis_conn, waits)

    assert drain_outbox(redis_conn, discord_settings, publisher_for) == (1, 0)
    assert api.posted == ["42"]
    assert len(api.calls) == calls_before + 1
    assert outbox.pending() == []
    assert get_record(redis_conn, discord_settings, job_id).files["discord"]["message_id"] == "1000"
    # Nothing left to deliver, and a stray re-delivery of the same job is refused by the posted-once mark.
    assert drain_outbox(redis_conn, discord_settings, publisher_for) == (0, 0)
    again = publisher_with(discord_settings, redis_conn, waits).publish(result)
    assert again["discord"]["reposted"] is False
    assert api.posted == ["42"]


def test_result_given_up_on_is_kept_and_reported_in_the_audit_log(
    discord_settings: Settings, redis_conn: redis.Redis, api: FakeDiscordApi
) -> None:
    api.default = "500"
    waits: list[float] = []
    result = make_result(redis_conn, discord_settings)
    job_id = result.spec.job_id
    deliver(redis_conn, discord_settings, publisher_with(discord_settings, redis_conn, waits), result)

    def publisher_for(_delivery: Any) -> DiscordPublisher:
        return publisher_with(discord_settings, redis_conn, waits)

    outbox = Outbox(redis_conn, discord_settings)
    assert drain_outbox(redis_conn, discord_settings, publisher_for) == (0, 1)
    assert outbox.pending() == [job_id]
    assert drain_outbox(redis_conn, discord_settings, publisher_for) == (0, 1)
    assert outbox.pending() == [] and outbox.dead() == [job_id]
    entry = outbox.get(job_id)
    assert entry is not None and entry.record.spec.job_id == job_id  # kept, not dropped
    reports = audit_log.entries(redis_conn, discord_settings, event="delivery_failed")
    assert [r["job_id"] for r in reports] == [job_id]
    assert "500" in reports[0]["error"]
    assert api.posted == []
