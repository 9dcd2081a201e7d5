"""The one intake path (``shared.intake``) and what every front end gets from it: moderation and member defaults from
/imagine, the CLI, the /describe picks and follow-ups with text; member-facing errors only; jobs that say which
model they were sized for; the CLI leaving nothing behind when it gives up."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from shared import messages
from shared.discord_wire.limits import escape
from shared.errors import MemberFacingError, PromptError
from shared.intake import Intake, Requester
from shared.jobs.spec import Delivery, JobKind, JobSpec, JobStatus
from shared.keys import Keys
from shared.prompt.parser import parse
from shared.queue.client import enqueue, job_state
from shared.safety.moderation import ModerationRefused
from shared.settings import Settings
from shared.stores import audit_log, member_settings
from shared.stores.member_settings import MemberSettings
from shared.stores.redis_server import EmbeddedRedis
from tests.conftest import ROOT, SHIPPED_MODEL, child_env
from tests.queue_control import run_burst_worker
from worker.faults import FAULT_MARKER

BANNED = '["badword"]'
"""The banned list of these tests (JSON, as the environment gives it)."""


@pytest.fixture
def moderated(queue_settings: Settings) -> Settings:
    return queue_settings.model_copy(update={"moderation_banned": ("badword",)})


def test_every_stage_applies_to_text_from_any_front_end(moderated: Settings, redis_conn: redis.Redis) -> None:
    intake = Intake(redis_conn, moderated)
    member = Requester(member_id="71")
    saved = MemberSettings(suffix="in ink", aspect="16:9", lane="relax").with_option("moody", "at night --c 30")
    member_settings.save(redis_conn, moderated, "71", saved)
    (spec,) = intake.jobs_from_text("a fox --moody", member, Delivery(kind="local"))
    assert spec.prompt.startswith("a fox in ink at night") and spec.extra["chaos"] == 30
    assert spec.width > spec.height and spec.lane == "relax" and spec.owner == "71"
    assert spec.model == moderated.model  # the model the job was sized for is recorded

    with pytest.raises(ModerationRefused, match="which this server does not allow"):
        intake.jobs_from_text("a b4dword fox", member, Delivery(kind="local"))
    # The member's own suffix is moderated too: it is part of the text.
    member_settings.save(redis_conn, moderated, "72", MemberSettings(suffix="badword"))
    with pytest.raises(ModerationRefused):
        intake.jobs_from_text("a fox", Requester(member_id="72"), Delivery(kind="local"))
    refusals = audit_log.entries(redis_conn, moderated, event="prompt_refused")
    assert [entry["actor"] for entry in refusals] == ["72", "71"]


def test_a_follow_up_with_text_goes_through_the_same_stages(moderated: Settings, redis_conn: redis.Redis) -> None:
    intake = Intake(redis_conn, moderated)
    member = Requester(member_id="73")
    (grid,) = intake.jobs_from_text("a fox --seed 5", member, Delivery(kind="local"))
    variation = grid.replace(kind=JobKind.VARIATION, strength=0.7, job_id="var1")
    remixed = intake.remix(variation, "a wolf --s 250 --no snow", member)
    assert (remixed.kind, remixed.seeds, remixed.width) == (JobKind.VARIATION, grid.seeds, grid.width)
    assert remixed.parts == (("a wolf", 1.0),) and remixed.negative == ("snow",)
    assert remixed.extra["remixed"] is True and remixed.guidance > grid.guidance
    with pytest.raises(ModerationRefused):
        intake.remix(variation, "a badword wolf", member)
    with pytest.raises(PromptError, match="a remix makes one job, this text makes 2"):
        intake.remix(variation, "a {wolf, bear}", member)


def test_the_cli_refuses_a_banned_word_and_queues_nothing(
    settings_env: dict[str, str], redis_conn: redis.Redis, queue_settings: Settings
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cli", "a badword cat --seed 1"],
        cwd=ROOT,
        env=child_env({**settings_env, "MODERATION_BANNED": BANNED}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "does not allow" in run.stderr and "badword" in run.stderr
    assert not list(redis_conn.scan_iter(Keys.job("*")))
    assert [e["actor"] for e in audit_log.entries(redis_conn, queue_settings, event="prompt_refused")] == ["local"]


def test_a_library_value_error_reaches_the_member_as_the_generic_message(
    settings: Settings, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    faulty = settings.model_copy(update={"fault_injection": "value"})
    spec = JobSpec.for_prompt(f"a red circle {FAULT_MARKER}", seed=1, width=32, height=32, steps=2)
    enqueue(redis_conn, faulty, spec)
    with caplog.at_level(logging.ERROR):
        run_burst_worker(faulty)
    state = job_state(redis_conn, spec.job_id)
    assert state is not None and state.status is JobStatus.FAILED
    assert state.error == messages.job_internal_error("ValueError", spec.job_id)
    assert "secret detail" not in state.error  # the library's text stays in the log
    assert "secret detail" in caplog.text and spec.job_id in caplog.text


MARKDOWN_PROMPT = "a " + "*_~|>`" * 266 + " cat"
"""1,602 characters the parser accepts, each escaped to two: cut before escaping, a line of 3,200 characters."""


def test_lines_around_a_markdown_dense_prompt_fit_one_discord_message() -> None:
    (prompt,) = parse(MARKDOWN_PROMPT)
    text = prompt.to_text()
    assert len(text) >= 1600 and len(escape(text)) > 3000
    owner, long_reason = "123456789012345678", "a reason " * 100
    lines = [
        messages.waiting_line(text, owner, 12, 3600),
        messages.progress_line(text, owner, 0.42, "relax"),
        messages.failed_line(text, owner, long_reason + "*" * 100),
        messages.describe_text(owner, [(text, 0.9)] * 4),
        *(messages.result_line(text, owner, "fast", kind, "strong") for kind in JobKind),
    ]
    for line in lines:
        assert len(line) <= 2000, len(line)
        assert not line.split("**")[1].endswith("\\")  # the cut never leaves a lone escaping backslash
        assert "…" in line  # the prompt was cut, not the line's end
    assert messages.waiting_line(text, owner, 12, 3600).endswith("(Waiting to start) - #12 in the queue - ~1 h")


def test_a_job_sized_for_another_model_is_not_run_by_this_worker(
    settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    # Sized for the tiny SD model (MODEL of `settings`), run by a worker that serves only the shipped model.
    (spec,) = Intake(redis_conn, settings).jobs_from_text("a red circle", Requester("74"), Delivery(kind="local"))
    assert spec.model == str(settings.model) and (spec.width, spec.height) != (64, 64)
    enqueue(redis_conn, settings, spec)
    shipped = settings.model_copy(update={"model": str(SHIPPED_MODEL)})
    run_burst_worker(shipped)  # routed by model: the shipped model's worker leaves it queued for another
    state = job_state(redis_conn, spec.job_id)
    assert state is not None and state.status is JobStatus.QUEUED

    # Behind the routing, a defence: a worker that takes it anyway (a queue without the model filter) refuses it.
    from worker.runner import build_worker
    from worker.runtime import WorkerRuntime, install

    worker = build_worker(shipped, runtime=install(WorkerRuntime(shipped)))
    for queue in worker.queues:
        queue.models = None  # type: ignore[attr-defined]
    worker.batch_max_images = 0
    worker.work(burst=True, with_scheduler=False)
    state = job_state(redis_conn, spec.job_id)
    assert state is not None and state.status is JobStatus.FAILED
    assert state.error == messages.wrong_model(spec.model, ", ".join(sorted(shipped.worker_model_keys())))
    assert not (settings.output_dir / spec.job_id).exists()  # nothing was generated

    # A size far beyond the model's pixel budget is refused at submission, naming both.
    huge = spec.replace(job_id="huge1", width=4096, height=4096, model=str(SHIPPED_MODEL))
    with pytest.raises(PromptError, match=r"4096x4096 is too large for model .*imagine-shapes: at most 16384 pixels"):
        enqueue(redis_conn, settings, huge)
    assert isinstance(PromptError("x"), MemberFacingError)


def test_a_local_run_whose_worker_fails_leaves_nothing_queued(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "NoSuchPipeline"}))
    env = child_env({"DATA_DIR": str(data), "OUTPUT_DIR": str(tmp_path / "out"), "MODEL": str(broken)})
    env.pop("REDIS_URL", None)
    run = subprocess.run(
        [sys.executable, "-m", "cli", "--local", "--timeout", "120", "a red circle --ar 2:1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert "the local worker exited" in run.stderr and "cancelled job" in run.stderr
    # The embedded Redis persisted: start it again and look.
    with EmbeddedRedis(data) as server:
        connection = redis.Redis.from_url(server.url)
        settings = Settings(redis_url=SecretStr(server.url), data_dir=data)
        keys = Keys(settings.queue_prefix)
        assert all(connection.llen(keys.lane_list(lane)) == 0 for lane in settings.lanes)
        assert connection.hlen(keys.limits_owners) == 0
