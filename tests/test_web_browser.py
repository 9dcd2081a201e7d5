"""The web companion in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright with
``executable_path``; never a downloaded browser) against the real bot, a real worker on the shipped model, the web
companion process and the fake Discord (its OAuth2 authorize page on ``localhost``, the site on ``127.0.0.1``: the
login's callback is cross-site, as with the real Discord).

One browser session does the whole flow: log in through the fake Discord's OAuth2, see your images, search them, open
a job page, paint a mask on an upscale in the editor (rectangle, brush, undo), submit, and see the repainted result in
Discord and in the gallery; a stealth member's images are not shown; a tampered link is refused. Each page is
screenshotted (to ``docs/screenshots/`` by ``make screenshots``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import messages
from shared.jobs.spec import JobKind
from shared.settings import Settings
from shared.stores import gallery
from shared.stores import images as image_store
from tests.conftest import ROOT, SHIPPED_MODEL, child_env
from tests.discord_harness import MEMBER, OTHER, answered, final_message, job_of_waiting, log_of, stop, wait_finished
from tests.fake_discord import FakeDiscord
from tests.test_web import free_port, store_job

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's chromium (``.ci/run`` installs it when missing)."""

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless Chromium on a closed network: no background traffic (``--headless`` is Playwright's ``headless``)."""

SCREENSHOTS_ENV = "IMAGINE_SCREENSHOTS_DIR"
"""Where ``make screenshots`` has the test write a screenshot of each page (``docs/screenshots``, committed; the README
shows two); otherwise they go to the test's temporary folder, so a test run leaves the checkout as it was."""

SECRET = "browser-test-secret-of-enough-length"


@pytest.fixture
def web_env(discord_env: dict[str, str], fake_discord: FakeDiscord) -> dict[str, str]:
    """Bot, worker and web companion settings: the shipped model, and the companion on a free port."""
    port = free_port()
    return {
        **discord_env,
        "MODEL": str(SHIPPED_MODEL),
        "STEPS": "6",
        "WEB_BASE_URL": f"http://127.0.0.1:{port}",
        "WEB_PORT": str(port),
        "WEB_SECRET": SECRET,
        "DISCORD_CLIENT_ID": fake_discord.client_id,
        "DISCORD_CLIENT_SECRET": fake_discord.client_secret,
        "DISCORD_OAUTH_AUTHORIZE_URL": f"http://localhost:{fake_discord.port}/oauth2/authorize",
    }


@pytest.fixture
def processes(web_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str, str], subprocess.Popen[bytes]]]:
    """Start ``python -m <module>`` children with ``web_env``; all stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(module: str, name: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=child_env(web_env),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log_path  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)


IMAGES_LOADED = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
"""True once every image of the page has loaded."""


def until(page: Any, expression: str, timeout: float = 30) -> None:
    """Poll ``expression`` in the page until it is true (``wait_for_function`` evaluates strings with ``eval``, which
    the companion's Content-Security-Policy forbids, rightly)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"{expression} stayed false"
        time.sleep(0.1)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_of(proc)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {log_of(proc)}")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian's chromium package; .ci/run installs it)")
def test_the_web_companion_in_a_browser(  # noqa: PLR0917 - pytest fixtures
    fake_discord: FakeDiscord,
    web_env: dict[str, str],
    processes: Callable[[str, str], subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    fake = fake_discord
    site = web_env["WEB_BASE_URL"]
    settings = settings.model_copy(update={"model": str(SHIPPED_MODEL)})
    processes("bot", "bot")
    web = processes("web", "web")
    fake.wait_connected()
    # A stealth member's result (stored as a worker stores it, to spare the worker a grid), the member's two grids.
    assert answered(fake, fake.slash("stealth", {}, user_id=OTHER)).content == messages.STEALTH_ON
    hidden_id = store_job(redis_conn, settings, OTHER, "a green triangle", created=time.time()).job_id
    grid = answered(
        fake, fake.slash("imagine", {"prompt": "a red circle above a blue square --seed 7"}, user_id=MEMBER)
    )
    star = answered(fake, fake.slash("imagine", {"prompt": "a yellow star --seed 3"}, user_id=MEMBER))
    ids = [job_of_waiting(redis_conn, settings, int(r.response_message_id or 0)) for r in (grid, star)]
    grid_id, star_id = ids
    worker = processes("worker", "worker")
    grid_message = final_message(fake, grid_id)
    up_click = answered(
        fake, fake.click(int(grid_message["id"]), fake.button_id(int(grid_message["id"]), "U1"), user_id=MEMBER)
    )
    up_id = job_of_waiting(redis_conn, settings, int(up_click.response_message_id or 0))
    upscale = final_message(fake, up_id)
    for job_id in (*ids, up_id):
        wait_finished(redis_conn, job_id, timeout=240)
    wait_http(f"{site}/healthz", web)

    # Vary (Region) under the upscale: a private link for this member.
    region = answered(
        fake, fake.click(int(upscale["id"]), fake.button_id(int(upscale["id"]), "Vary (Region)"), user_id=MEMBER)
    )
    assert region.ephemeral, region.response
    link = re.search(r"<(http[^>]+)>", region.content)
    assert link and link.group(1).startswith(f"{site}/region/"), region.content
    region_link = link.group(1)
    screenshots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    screenshots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a new, empty profile
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 860},
        )
        page = context.new_page()
        page.set_default_timeout(30_000)

        # Log in through the fake Discord's OAuth2 (authorize page on another site, then the callback).
        page.goto(site)
        page.screenshot(path=str(screenshots / "login.png"))
        fake.oauth_user = MEMBER
        page.click("#login")
        page.wait_for_url(re.compile(r"http://localhost:\d+/oauth2/authorize.*"))
        page.click("#authorize")
        page.wait_for_url(f"{site}/me")

        # My images: newest first, the stealth member's job not among them.
        expect(page.locator("#count")).to_have_text("3 jobs")
        cards = page.locator(".card")
        assert [cards.nth(i).get_attribute("data-job") for i in range(3)] == [up_id, star_id, grid_id]
        until(page, IMAGES_LOADED)
        page.screenshot(path=str(screenshots / "my-images.png"), full_page=True)
        page.fill("#search", "star")
        page.click("#search-go")
        expect(page.locator("#count")).to_contain_text("1 job matching")
        assert page.locator(".card").count() == 1 and page.locator(".card").get_attribute("data-job") == star_id
        page.screenshot(path=str(screenshots / "search.png"))

        # A job page: images, the full prompt, seeds and parameters, copy prompt, open in Discord.
        page.goto(f"{site}/me")
        page.click(f'.card[data-job="{grid_id}"]')
        page.wait_for_url(f"{site}/jobs/{grid_id}")
        expect(page.locator("#prompt")).to_have_value("a red circle above a blue square --seed 7")
        discord_url = page.get_attribute("#open-discord", "href") or ""
        assert discord_url.endswith(f"/channels/{fake.guild_id}/{fake.channel_id}/{grid_message['id']}")
        page.click("#copy-prompt")
        expect(page.locator("#copy-prompt")).to_have_text("Copied")
        until(page, IMAGES_LOADED)
        page.screenshot(path=str(screenshots / "job.png"), full_page=True)

        # The stealth member's job: not in the gallery, its page and image refused.
        page.goto(f"{site}/gallery")
        assert page.locator(f'.card[data-job="{hidden_id}"]').count() == 0
        assert page.locator(f'.card[data-job="{grid_id}"]').count() == 1
        assert page.goto(f"{site}/jobs/{hidden_id}").status == 404  # type: ignore[union-attr]
        expect(page.locator("#message")).to_have_text(messages.JOB_NOT_VISIBLE)
        assert page.goto(f"{site}/img/{hidden_id}/0").status == 404  # type: ignore[union-attr]

        # A tampered link is refused.
        token = region_link.rsplit("/", 1)[1]
        tampered = f"{site}/region/{token[:-2]}{'AA' if not token.endswith('AA') else 'BB'}"
        assert page.goto(tampered).status == 403  # type: ignore[union-attr]
        expect(page.locator("#message")).to_have_text(messages.LINK_FORGED)
        page.screenshot(path=str(screenshots / "tampered-link.png"))

        # The editor: a rectangle, a brush stroke taken back with undo, submit.
        page.goto(region_link)
        until(page, IMAGES_LOADED)
        box = page.locator("#overlay").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 0.30 * box["width"], box["y"] + 0.30 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.70 * box["width"], box["y"] + 0.65 * box["height"], steps=5)
        page.mouse.up()
        page.click("#tool-brush")
        page.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.9 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.95 * box["height"], steps=5)
        page.mouse.up()
        assert page.evaluate("window.regionEditor.shapes.length") == 2
        page.click("#undo")
        assert page.evaluate("window.regionEditor.shapes.length") == 1
        page.screenshot(path=str(screenshots / "region-editor.png"))
        page.click("#submit-region")
        page.wait_for_url(re.compile(rf"{re.escape(site)}/jobs/[0-9a-f]+"))
        inpaint_id = page.url.rsplit("/", 1)[1]

        # The repainted result appears in Discord, then on its page and in the gallery.
        repainted = final_message(fake, inpaint_id, timeout=240)
        assert f"- Vary (Region) by <@{MEMBER}>" in repainted["content"]
        wait_finished(redis_conn, inpaint_id, timeout=60)
        page.goto(f"{site}/jobs/{inpaint_id}")
        expect(page.locator(".job-images img")).to_have_count(4)
        until(page, IMAGES_LOADED)
        page.screenshot(path=str(screenshots / "repainted.png"), full_page=True)
        page.goto(f"{site}/gallery")
        expect(page.locator(".card").first).to_have_attribute("data-job", inpaint_id)
        assert page.locator(f'.card[data-job="{hidden_id}"]').count() == 0
        until(page, IMAGES_LOADED)
        page.screenshot(path=str(screenshots / "gallery.png"), full_page=True)
        page.goto(f"{site}/admin/queue")  # the fake guild's @everyone has Manage Server: an admin
        expect(page.locator("#queue-state")).to_have_text("running")
        page.screenshot(path=str(screenshots / "admin-queue.png"))
        context.close()

    record = image_store.get_record(redis_conn, settings, inpaint_id)
    assert record.spec.kind is JobKind.INPAINT and record.spec.source is not None
    assert record.spec.source.job_id == grid_id and record.spec.mask
    entry = gallery.entry(redis_conn, settings, hidden_id)
    assert entry is not None and not entry.public
    assert worker.poll() is None, log_of(worker)
    print(f"browser flow: {time.monotonic() - started:.1f} s")
