"""Discord's rate limits: the budget every process shares through Redis (separate post, edit and delete buckets per
channel, the token's global limit, edits ranked by priority and staleness), the fake Discord's enforcement of the same
limits with Discord's headers, and the worker's REST client tracking buckets by ``X-RateLimit-Bucket``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared import defaults
from shared.discord_wire.rate_budget import DELETE, EDIT, POST, Priority, RateBudget, route_of
from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis
from tests.fake_discord import VIA, Call, FakeDiscord
from worker.discord_publisher import DiscordRest, RateLimited, route_template


@pytest.fixture
def budget_settings(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    """Small windows, so that a test sees one pass."""
    return Settings(
        redis_url=SecretStr(redis_server.url),
        data_dir=tmp_path / "data",
        discord_channel_edits=2,
        discord_channel_edit_window_s=0.3,
        discord_global_per_s=6,
    )


def test_routes_are_told_apart() -> None:
    assert route_of("POST", "/channels/1/messages") == (POST, "1", "")
    assert route_of("PATCH", "/channels/1/messages/9") == (EDIT, "1", "9")
    assert route_of("DELETE", "/channels/1/messages/9") == (DELETE, "1", "")
    assert route_of("GET", "/users/@me") == ("", "", "")
    assert route_template("PATCH", "/channels/1/messages/9") == ("PATCH /channels/{major}/messages/{id}", "1")


def test_posts_edits_and_deletes_are_separate_buckets(budget_settings: Settings, redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, budget_settings)
    granted = [budget.try_acquire(POST, "7") == 0 for _ in range(defaults.DISCORD_CHANNEL_POSTS + 1)]
    assert granted == [True] * defaults.DISCORD_CHANNEL_POSTS + [False]
    wait = budget.try_acquire(POST, "7")
    assert 0 < wait <= defaults.DISCORD_CHANNEL_POST_WINDOW_S + defaults.DISCORD_BUDGET_MARGIN_S
    assert budget.try_acquire(POST, "8") == 0  # another channel's post bucket: the sixth request of the second
    assert 0 < budget.try_acquire(POST, "9") <= 1.0 + defaults.DISCORD_BUDGET_MARGIN_S  # the token's 6 per s
    time.sleep(1.0 + defaults.DISCORD_BUDGET_MARGIN_S)
    assert budget.try_acquire(EDIT, "7", message="1", priority=Priority.PROGRESS) == 0  # posts do not block edits
    assert budget.try_acquire(DELETE, "7") == 0
    assert budget.try_acquire(POST, "9") == 0


def test_progress_outranks_queue_position_and_the_least_recently_shown_goes_first(
    budget_settings: Settings, redis_conn: redis.Redis
) -> None:
    budget = RateBudget(redis_conn, budget_settings)
    window = budget_settings.discord_channel_edit_window_s + defaults.DISCORD_BUDGET_MARGIN_S
    assert budget.try_acquire(EDIT, "5", message="100", priority=Priority.PROGRESS) == 0
    assert budget.try_acquire(EDIT, "5", message="101", priority=Priority.PROGRESS) == 0
    # The window (2 edits) is full: these ask, and wait in line.
    assert budget.try_acquire(EDIT, "5", message="200", priority=Priority.POSITION) > 0
    assert budget.try_acquire(EDIT, "5", message="102", priority=Priority.PROGRESS) > 0
    assert budget.try_acquire(EDIT, "5", message="103", priority=Priority.PROGRESS) > 0
    time.sleep(window + 0.05)
    # Room for 2 again: the queue position asks first, but both slots are kept for the progress edits ahead of it,
    # and a message shown a moment ago ranks after the ones never shown.
    assert budget.try_acquire(EDIT, "5", message="200", priority=Priority.POSITION) > 0
    assert budget.try_acquire(EDIT, "5", message="100", priority=Priority.PROGRESS) > 0
    assert budget.try_acquire(EDIT, "5", message="103", priority=Priority.PROGRESS) == 0
    assert budget.try_acquire(EDIT, "5", message="102", priority=Priority.PROGRESS) == 0
    time.sleep(window + 0.05)
    # A queue position also leaves a slot free (DISCORD_POSITION_RESERVE, at most the window less one) for progress.
    assert budget.try_acquire(EDIT, "5", message="200", priority=Priority.POSITION) > 0
    assert budget.try_acquire(EDIT, "5", message="100", priority=Priority.PROGRESS) == 0
    time.sleep(window + 0.05)
    assert budget.try_acquire(EDIT, "5", message="200", priority=Priority.POSITION) == 0
    assert budget.try_acquire(EDIT, "5", message="200", priority=Priority.POSITION) > 0  # one edit: the slot left


def test_a_message_that_stops_asking_leaves_the_line(
    budget_settings: Settings, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "DISCORD_EDIT_WANT_TTL_S", 0.2)
    budget = RateBudget(redis_conn, budget_settings)
    assert budget.try_acquire(EDIT, "5", message="1", priority=Priority.PROGRESS) == 0
    assert budget.try_acquire(EDIT, "5", message="2", priority=Priority.PROGRESS) == 0
    assert budget.try_acquire(EDIT, "5", message="3", priority=Priority.PROGRESS) > 0  # in line, then gone
    time.sleep(budget_settings.discord_channel_edit_window_s + defaults.DISCORD_BUDGET_MARGIN_S + 0.05)
    assert budget.try_acquire(EDIT, "5", message="9", priority=Priority.POSITION) == 0
    budget.forget("5", "9")
    assert redis_conn.zcard(f"imagine:discord:wants:5") == 0  # noqa: F541 - the tests may spell keys


def test_without_redis_the_budget_lets_requests_through(budget_settings: Settings) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    assert RateBudget(dead, budget_settings).try_acquire(POST, "1") == 0


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


def _post(fake: FakeDiscord, path: str, body: dict[str, object], token: str = "") -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(
        fake.api_base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bot {token or fake.token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_the_fake_enforces_discords_limits_with_discords_headers(fake: FakeDiscord) -> None:
    path = f"/channels/{fake.channel_id}/messages"
    answers = [_post(fake, path, {"content": f"post {n}"}) for n in range(6)]
    assert [status for status, _, _ in answers] == [200] * 5 + [429]
    _, headers, _ = answers[0]
    assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Remaining"] == "4"
    assert headers["X-RateLimit-Bucket"] and float(headers["X-RateLimit-Reset-After"]) <= 5.0
    _, headers, body = answers[5]
    assert body["global"] is False and 0 < body["retry_after"] <= 5.0
    assert headers["Via"] == VIA and headers["X-RateLimit-Scope"] == "user" and int(headers["Retry-After"]) >= 1
    assert len(fake.rate_limited) == 1
    # Edits are a bucket of their own: a full post window does not stop them.
    message = fake._new_message(fake.channel_id, Call("POST", "", {}, {"content": "x"}, {}, ""), author={})
    request = urllib.request.Request(
        fake.api_base + f"{path}/{message['id']}", data=b'{"content": "y"}', method="PATCH",
        headers={"Authorization": f"Bot {fake.token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_the_fake_limits_the_token_globally(fake: FakeDiscord) -> None:
    statuses = [_post(fake, f"/channels/{channel}/messages", {"content": "hi"})[0] for channel in range(1, 60)]
    assert statuses.count(429) >= 1 and statuses[:50] == [200] * 50
    limited = fake.rate_limited[0]
    assert limited.status == 0 or limited.path.startswith("/channels/")


def test_the_rest_client_learns_buckets_from_headers(fake: FakeDiscord) -> None:
    rest = DiscordRest(fake.api_base, fake.token, sleep=lambda s: None)
    path = f"/channels/{fake.channel_id}/messages"
    for n in range(5):
        rest.request("POST", path, payload={"content": f"post {n}"})
    with pytest.raises(RateLimited):  # known to be used up: not even sent
        rest.request("POST", path, payload={"content": "one more"}, wait=False)
    assert len(fake.calls_to("POST", path)) == 5 and rest.responses_429 == 0
