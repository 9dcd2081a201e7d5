"""Image prompts into generation (``--iw`` -> image-to-image init), and the image-moderation hook on results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from shared.jobs.record import JobRecord
from shared.jobs.spec import JobStatus
from shared.queue.client import enqueue, job_state
from shared.safety.safe_fetch import FetchRefused
from shared.settings import Settings
from shared.stores import audit_log
from tests.conftest import ROOT, child_env
from tests.test_chain import make_spec
from tests.test_safe_fetch import LocalServer, png_bytes, send, server  # noqa: F401 - the fixture
from worker import image_moderation
from worker.delivery import deliver
from worker.image_prompt import init_image
from worker.publisher import JobResult, LocalPublisher
from worker.tasks import member_message


def test_init_image_is_fetched_blended_and_sized(server: LocalServer, settings: Settings) -> None:  # noqa: F811
    server.routes["/red.png"] = lambda h: send(h, png_bytes((10, 10), (255, 0, 0)))
    server.routes["/blue.png"] = lambda h: send(h, png_bytes((20, 5), (0, 0, 255)))
    test_settings = settings.model_copy(update={"unsafe_test_only_allow_http_loopback": True})
    spec = make_spec(settings, width=32, height=48).replace(
        image_urls=(server.url("/red.png"), server.url("/blue.png")), strength=0.5
    )
    image = init_image(spec, test_settings)
    assert image is not None and image.size == (32, 48)
    assert np.allclose(np.asarray(image)[10, 10], (128, 0, 128), atol=2)
    assert server.requests == ["/red.png", "/blue.png"]
    # --iw 0 (strength 1.0): the image does not shape the result, so it is not fetched at all.
    assert init_image(spec.replace(strength=1.0), test_settings) is None
    assert len(server.requests) == 2


def test_refused_image_prompt_reaches_the_member_as_a_clear_sentence(settings: Settings) -> None:
    spec = make_spec(settings).replace(image_urls=("https://evil.example/a.png",), strength=0.75)
    with pytest.raises(FetchRefused) as caught:
        init_image(spec, settings)
    message = member_message(caught.value, spec.job_id)
    assert message.startswith("image 'https://evil.example/a.png' was not used")
    assert "cdn.discordapp.com" in message


@pytest.mark.slow
def test_worker_runs_an_image_prompt_job_and_refuses_a_foreign_url(
    server: LocalServer,  # noqa: F811
    settings: Settings,
    settings_env: dict[str, str],
    redis_conn: redis.Redis,
) -> None:
    server.routes["/init.png"] = lambda h: send(h, png_bytes((64, 64), (250, 250, 0)))
    good = make_spec(settings).replace(
        prompt="a circle", image_urls=(server.url("/init.png"),), strength=0.5, extra={"iw": 2.0}
    )
    foreign = make_spec(settings, seed=9).replace(image_urls=("https://evil.example/x.png",), strength=0.5)
    enqueue(redis_conn, settings, good)
    enqueue(redis_conn, settings, foreign)
    env = child_env({**settings_env, "UNSAFE_TEST_ONLY_ALLOW_HTTP_LOOPBACK": "true"})
    worker = subprocess.run(
        [sys.executable, "-m", "worker", "--burst"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    done = job_state(redis_conn, good.job_id)
    assert done is not None and done.status is JobStatus.FINISHED, worker.stderr[-3000:]
    assert server.requests == ["/init.png"]
    refused = job_state(redis_conn, foreign.job_id)
    assert refused is not None and refused.status is JobStatus.FAILED
    assert "'evil.example' is not on the list" in refused.error


def redness(image: Image.Image) -> float:
    """A stand-in classifier for the hook: the share of strongly red pixels."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    return float(red.mean())


def result_of(settings: Settings, color: tuple[int, int, int]) -> JobResult:
    spec = make_spec(settings)
    images = [Image.new("RGB", (16, 16), color) for _ in range(4)]
    return JobResult(spec=spec, images=images, grid=None, record=JobRecord(job_id=spec.job_id, spec=spec))


@pytest.mark.parametrize("action", ["spoiler", "withhold"])
def test_flagged_results_are_spoilered_or_withheld_and_audited(
    settings: Settings, redis_conn: redis.Redis, tmp_path: Path, action: str
) -> None:
    hooked = settings.model_copy(
        update={"image_moderation": "tests.test_image_prompt:redness", "image_moderation_action": action}
    )
    image_moderation.check_settings(hooked)
    publisher = LocalPublisher(tmp_path)
    calm = result_of(hooked, (0, 0, 200))
    assert "folder" in deliver(redis_conn, hooked, publisher, calm)
    assert calm.spoiler is False and calm.record.moderation is None

    flagged = result_of(hooked, (255, 0, 0))
    files = deliver(redis_conn, hooked, publisher, flagged)
    assert flagged.record.moderation == {"flagged": True, "action": action, "scores": [1.0] * 4}
    if action == "spoiler":
        assert flagged.spoiler is True and Path(files["folder"], "image_1.png").exists()
    else:
        assert files == {"withheld": True}
        assert not (tmp_path / flagged.spec.job_id).exists()
    (entry,) = audit_log.entries(redis_conn, hooked, event="image_flagged")
    assert entry["job_id"] == flagged.spec.job_id and entry["action"] == action


def test_moderation_is_off_by_default_and_bad_settings_are_named(settings: Settings) -> None:
    assert image_moderation.moderate([Image.new("RGB", (4, 4), (255, 0, 0))], settings).flagged is False
    with pytest.raises(
        ValueError, match="IMAGE_MODERATION_ACTION must be one of spoiler, withhold, review, got 'hide'"
    ):
        image_moderation.check_settings(settings.model_copy(update={"image_moderation_action": "hide"}))
    with pytest.raises(ValueError, match="IMAGE_MODERATION must be 'off'"):
        image_moderation.check_settings(settings.model_copy(update={"image_moderation": "nonsense"}))


def test_a_hook_that_crashes_fails_closed(settings: Settings) -> None:
    hooked = settings.model_copy(update={"image_moderation": "tests.test_image_prompt:broken_hook"})
    verdict = image_moderation.moderate([Image.new("RGB", (4, 4))], hooked)
    assert verdict.flagged and verdict.scores == (1.0,)


def broken_hook(image: Image.Image) -> float:
    raise RuntimeError("classifier crashed")
