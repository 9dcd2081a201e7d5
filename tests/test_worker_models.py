"""Workers announce the models they serve and get only jobs of those models: routing inside the fair-share dequeue,
the announcement (and its expiry), /workers, and a job of a model no live worker holds waiting, said so in its
waiting message, until a worker that holds it comes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.jobs.spec import JobStatus
from shared.keys import JOB_MODEL_FIELD, keys_for
from shared.queue import worker_models
from shared.queue.client import enqueue, get_queue, job_state
from shared.queue.fair_share import FairQueue
from shared.settings import Settings
from shared.stores import images as image_store
from tests.discord_harness import answered, final_message, job_of_waiting, log_of, wait_finished
from tests.fake_discord import FakeDiscord
from tests.queue_control import spec_for, wait_until


def test_model_keys_agree_across_spellings_and_worker_models_narrow_what_is_served(tmp_path: Path) -> None:
    settings = Settings(model="models/imagine-shapes", model_aliases={"7": "/models/sdxl/"})
    assert settings.model_key() == "models/imagine-shapes"
    assert settings.model_key(str(Path(__file__).resolve().parents[1] / "models" / "imagine-shapes")) == (
        "models/imagine-shapes"
    )  # an absolute path under the checkout is written relative to it
    assert settings.model_key("7") == "/models/sdxl"
    assert settings.worker_model_keys() == {"models/imagine-shapes", "/models/sdxl"}
    only = settings.model_copy(update={"worker_models": "7"})
    assert only.worker_model_keys() == {"/models/sdxl"}


def test_the_dequeue_gives_a_worker_only_jobs_of_the_models_it_serves(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    other = settings.model_copy(update={"model_aliases": {"other": "elsewhere/other-model"}})
    first = spec_for(other, "1", seed=1)
    mine = spec_for(other, "2", seed=2)
    foreign = first.replace(model="elsewhere/other-model")
    for spec in (foreign, mine):
        enqueue(redis_conn, other, spec)
    job_key = keys_for(other).lane_list(other.default_lane)
    assert redis_conn.hget(f"rq:job:{foreign.job_id}", JOB_MODEL_FIELD) == b"elsewhere/other-model"
    keys = keys_for(other)
    # The foreign job is first in line, but a worker of the tiny model skips it, and it keeps its place.
    taken = FairQueue.take(redis_conn, keys, [job_key], models={other.model_key()})
    assert taken == (job_key, mine.job_id)
    assert FairQueue.take(redis_conn, keys, [job_key], models={other.model_key()}) is None
    assert get_queue(redis_conn, other, other.default_lane).job_ids == [foreign.job_id]
    assert FairQueue.take(redis_conn, keys, [job_key], models={"elsewhere/other-model"}) == (job_key, foreign.job_id)


def test_announcements_expire_and_say_which_models_nobody_serves(settings: Settings, redis_conn: redis.Redis) -> None:
    assert worker_models.live(redis_conn, settings) == []
    assert not worker_models.unserved([], "any")  # no worker at all: nothing to say about the model
    worker_models.announce(redis_conn, settings, "w1", models=["a", "b"], families=["sd"], held=["a"])
    stale = worker_models.Announcement("w2", ("c",), (), (), at=0.0)
    redis_conn.hset(keys_for(settings).worker_models, "w2", stale.to_json())
    found = worker_models.live(redis_conn, settings)
    assert [entry.worker for entry in found] == ["w1"] and found[0].held == ("a",)
    assert redis_conn.hkeys(keys_for(settings).worker_models) == [b"w1"]  # the stale one was removed
    assert worker_models.unserved(found, "c") and not worker_models.unserved(found, "b")
    assert worker_models.served_counts(found) == {"a": 1, "b": 1}
    worker_models.withdraw(redis_conn, settings, "w1")
    assert worker_models.live(redis_conn, settings) == []


@pytest.mark.slow
def test_a_job_for_a_model_no_worker_holds_waits_for_one_that_does(  # noqa: PLR0917 - pytest fixtures
    fake_discord: FakeDiscord,
    start_bot: Callable[..., subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    discord_env: dict[str, str],
    settings: Settings,
    redis_conn: redis.Redis,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    fake = fake_discord
    second = tmp_path / "second-model"  # the same weights under another name: another model as far as routing goes
    second.symlink_to(tiny_model, target_is_directory=True)
    aliases = {"MODEL_ALIASES": json.dumps({"second": str(second)})}
    start_bot(env=aliases)
    fake.wait_connected()
    first_worker = start_worker(env={**fake.env(), **aliases, "WORKER_MODELS": str(tiny_model)}, name="first")
    wait_until(lambda: len(worker_models.live(redis_conn, settings)) == 1, timeout=120)

    waiting = answered(fake, fake.slash("imagine", {"prompt": "a blue square --v second"}, user_id=77))
    assert "no worker holds the model second-model now" in waiting.content, waiting.content
    assert waiting.response_message_id is not None
    waiting_job = job_of_waiting(redis_conn, settings, waiting.response_message_id)
    served = answered(fake, fake.slash("imagine", {"prompt": "a red circle"}, user_id=78))
    assert "no worker holds" not in served.content
    assert served.response_message_id is not None
    served_job = job_of_waiting(redis_conn, settings, served.response_message_id)
    final_message(fake, served_job, timeout=120)  # the other model's job, queued first, did not stop this one
    state = job_state(redis_conn, waiting_job)
    assert state is not None and state.status is JobStatus.QUEUED
    assert waiting_job not in log_of(first_worker)  # never taken by the wrong worker

    workers = answered(fake, fake.slash("workers", user_id=79))
    assert f"serves {tiny_model}" in workers.content and "(sd)" in workers.content, workers.content

    second_env = {**fake.env(), **aliases, "MODEL": str(second), "WORKER_MODELS": str(second)}
    second_worker = start_worker(env=second_env, name="second")
    final_message(fake, waiting_job, timeout=180)
    record = image_store.get_record(redis_conn, settings, waiting_job)
    assert record.worker["pid"] == second_worker.pid
    wait_finished(redis_conn, waiting_job)
    assert len(Job.fetch(waiting_job, connection=redis_conn, serializer=JSONSerializer).results()) == 1
