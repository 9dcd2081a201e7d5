"""The web companion over HTTP (no browser): the OAuth2 login through the fake Discord (state checked, a code works
once), CSRF on every form, "My images" and its search and pages, the shared gallery and job pages that never show a
stealth member's results to others, the admin page for admins only, and Vary (Region) links that are refused when
forged, expired, someone else's, with a mask of the wrong size or an empty one (nothing queued), and queue one inpaint
job otherwise. Results are put in the store directly here; the browser test makes them through Discord."""

from __future__ import annotations

import base64
import io
import re
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw
from pydantic import SecretStr

from shared import defaults, messages
from shared.i18n import use_locale
from shared.jobs.followups import upscale_spec
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery, JobKind, JobSpec
from shared.keys import Keys
from shared.settings import Settings
from shared.signing import RegionGrant, region_token
from shared.stores import gallery, member_settings
from shared.stores import images as image_store
from shared.stores.member_settings import MemberSettings
from tests.fake_discord import FakeDiscord
from web.app import create_app

MEMBER = 4242
OTHER = 5151
ADMIN = 6161
ADMIN_ROLE = "900000000000000001"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def store_job(
    conn: redis.Redis, settings: Settings, owner: int, prompt: str, *, created: float, kind: JobKind = JobKind.GRID
) -> JobRecord:
    """A finished job as a worker stores it (images, record, and so its gallery entry)."""
    spec = JobSpec.for_prompt(prompt, seed=1, width=64, height=64, steps=4, owner=str(owner), created_at=created)
    spec = spec.replace(
        delivery=Delivery(kind="discord", channel_id="700000000000000003", guild_id="700000000000000002")
    )
    size = (64, 64)
    if kind is JobKind.UPSCALE:
        spec = upscale_spec(JobRecord(job_id=spec.job_id, spec=spec), 0, str(owner)).replace(created_at=created)
        size = (256, 256)
    count = 1 if kind is JobKind.UPSCALE else 4
    pngs = [png(Image.new("RGB", size, (40 * i, 90, 160))) for i in range(count)]
    record = JobRecord(job_id=spec.job_id, spec=spec, seeds=spec.seeds, size=size, files={})
    image_store.put_images(conn, settings, spec.job_id, pngs)
    image_store.put_record(conn, settings, record)
    return record


def mask_url(size: tuple[int, int], box: tuple[int, int, int, int] | None) -> str:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    if box is not None:
        ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255, 255))
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


@dataclass
class Site:
    url: str
    settings: Settings
    fake: FakeDiscord
    conn: redis.Redis


@pytest.fixture
async def site(fake_discord: FakeDiscord, queue_settings: Settings, redis_conn: redis.Redis) -> AsyncIterator[Site]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = queue_settings.model_copy(
        update={
            "web_base_url": url,
            "web_secret": SecretStr("a-test-secret-of-enough-length"),
            "discord_client_id": fake_discord.client_id,
            "discord_client_secret": SecretStr(fake_discord.client_secret),
            "discord_oauth_authorize_url": f"http://localhost:{fake_discord.port}/oauth2/authorize",
            "discord_api_base": fake_discord.api_base,
            "discord_token": SecretStr(fake_discord.token),
            "discord_guild_ids": str(fake_discord.guild_id),
        }
    )
    fake_discord.everyone_permissions = "0"
    fake_discord.roles = {ADMIN_ROLE: defaults.DISCORD_PERMISSION_MANAGE_GUILD}
    fake_discord.member_roles = {ADMIN: [ADMIN_ROLE]}
    server = TestServer(create_app(settings, redis_conn), host="127.0.0.1", port=port)
    await server.start_server()
    yield Site(url, settings, fake_discord, redis_conn)
    await server.close()


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's jar skips IP hosts unless told) and follows nothing."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(client: aiohttp.ClientSession, site: Site, user: int, next_path: str = "/me") -> str:
    """The whole code flow; returns the callback's redirect target."""
    site.fake.oauth_user = user
    async with client.get(f"{site.url}/login", params={"next": next_path}, allow_redirects=False) as response:
        assert response.status == 302
        authorize = response.headers["Location"]
    assert authorize.startswith(f"http://localhost:{site.fake.port}/oauth2/authorize?")
    query = dict(urllib.parse.parse_qsl(authorize.split("?", 1)[1]))
    assert query["redirect_uri"] == f"{site.url}/auth/callback" and query["response_type"] == "code"
    form = {key: query[key] for key in ("redirect_uri", "state", "client_id", "scope")}
    async with client.post(authorize.split("?")[0], data=form, allow_redirects=False) as response:
        back = response.headers["Location"]
    async with client.get(back, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def page(client: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with client.get(url, allow_redirects=False, **kwargs) as response:
        return response.status, await response.text()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def queued_jobs(conn: redis.Redis) -> int:
    return len(list(conn.scan_iter(Keys.job("*"))))


async def test_login_state_and_code_are_checked(site: Site) -> None:
    async with browser() as client:
        assert await login(client, site, MEMBER, "/gallery") == "/gallery"
        status, html = await page(client, f"{site.url}/me")
        assert status == 200 and "user4242" in html and messages.NO_IMAGES in html
    async with browser() as client:  # a callback with a state this browser did not leave with
        status, html = await page(client, f"{site.url}/auth/callback", params={"code": "x", "state": "forged"})
        assert status == 400 and messages.LOGIN_FAILED in html
        assert (await page(client, f"{site.url}/me"))[0] == 302  # not logged in
    async with browser() as client:  # a code replayed: Discord refuses it, the login fails
        site.fake.oauth_user = MEMBER
        async with client.get(f"{site.url}/login", allow_redirects=False) as response:
            authorize = response.headers["Location"]
        query = dict(urllib.parse.parse_qsl(authorize.split("?", 1)[1]))
        async with client.post(
            authorize.split("?")[0], data={k: query[k] for k in ("redirect_uri", "state")}, allow_redirects=False
        ) as response:
            back = response.headers["Location"]
        assert (await page(client, back))[0] == 302
        status, html = await page(client, back)  # the same code again (the state cookie is gone too)
        assert status == 400 and messages.LOGIN_FAILED in html
        status, html = await page(client, f"{site.url}/me")
        assert status == 200  # still logged in from the first use
        async with client.post(f"{site.url}/logout", data={"csrf": "wrong"}, allow_redirects=False) as response:
            assert response.status == 403 and messages.CSRF_FAILED in await response.text()
        async with client.post(f"{site.url}/logout", data={"csrf": csrf_of(html)}, allow_redirects=False) as response:
            assert response.status == 302
        assert (await page(client, f"{site.url}/me"))[0] == 302


async def test_my_images_gallery_and_stealth(site: Site) -> None:
    conn, settings = site.conn, site.settings
    now = time.time()
    mine = [store_job(conn, settings, MEMBER, f"a red circle number{i}", created=now - 100 + i) for i in range(30)]
    store_job(conn, settings, MEMBER, "a blue square on grass", created=now)
    member_settings.save(conn, settings, str(OTHER), MemberSettings(stealth=True))
    hidden = store_job(conn, settings, OTHER, "a secret green triangle", created=now + 1)
    member_settings.save(conn, settings, str(OTHER), MemberSettings(stealth=False))
    shown = store_job(conn, settings, OTHER, "a public yellow star", created=now + 2)
    assert gallery.entry(conn, settings, hidden.job_id) == gallery.entry(conn, settings, hidden.job_id)
    async with browser() as client:
        await login(client, site, MEMBER)
        status, html = await page(client, f"{site.url}/me")
        assert status == 200 and "31 jobs" in html
        assert html.index("a blue square on grass") < html.index("number29")  # newest first
        assert html.count('class="card"') == defaults.GALLERY_PAGE_SIZE and "Page 1 of 2" in html
        status, html = await page(client, f"{site.url}/me", params={"page": "2"})
        assert html.count('class="card"') == 31 - defaults.GALLERY_PAGE_SIZE and "number0" in html
        status, html = await page(client, f"{site.url}/me", params={"q": "Circle NUMBER7"})
        assert "1 job matching" in html and mine[7].job_id in html
        status, html = await page(client, f"{site.url}/me", params={"q": "triangle"})
        assert messages.NO_MATCHES in html  # another member's prompt is never searched
        status, html = await page(client, f"{site.url}/jobs/{mine[7].job_id}")
        assert status == 200 and "a red circle number7" in html and 'id="copy-prompt"' in html
        assert "Seeds" in html and "1, 2, 3, 4" in html

        # the shared gallery: the public job, never the one stored in stealth
        status, html = await page(client, f"{site.url}/gallery")
        assert shown.job_id in html and hidden.job_id not in html and "a secret green triangle" not in html
        assert (await page(client, f"{site.url}/jobs/{hidden.job_id}"))[0] == 404
        assert (await page(client, f"{site.url}/img/{hidden.job_id}/0"))[0] == 404
        async with client.get(f"{site.url}/img/{shown.job_id}/0") as response:
            assert response.status == 200 and response.content_type == "image/png"
        # /stealth now hides the member's public results too
        member_settings.save(conn, settings, str(OTHER), MemberSettings(stealth=True))
        status, html = await page(client, f"{site.url}/gallery")
        assert shown.job_id not in html
        assert (await page(client, f"{site.url}/jobs/{shown.job_id}"))[0] == 404
        assert (await page(client, f"{site.url}/admin/queue"))[0] == 403  # not an admin
    async with browser() as client:  # the stealth member sees their own
        await login(client, site, OTHER)
        status, html = await page(client, f"{site.url}/me")
        assert hidden.job_id in html and shown.job_id in html
        assert (await page(client, f"{site.url}/jobs/{hidden.job_id}"))[0] == 200
    async with browser() as client:  # an admin by role (Manage Server) sees the queue
        await login(client, site, ADMIN)
        status, html = await page(client, f"{site.url}/admin/queue")
        assert status == 200 and 'id="queue-state">running' in html and "No workers." in html


async def test_region_links_and_masks(site: Site) -> None:
    conn, settings = site.conn, site.settings
    upscale = store_job(conn, settings, MEMBER, "a red circle", created=time.time(), kind=JobKind.UPSCALE)
    grant = RegionGrant(str(MEMBER), upscale.job_id, 0, str(site.fake.channel_id), str(site.fake.guild_id))
    token = region_token(settings, grant)
    link = f"{site.url}/region/{token}"
    before = queued_jobs(conn)
    async with browser() as client:
        assert (await page(client, link))[0] == 302  # log in first, then back here
        assert await login(client, site, MEMBER, f"/region/{token}") == f"/region/{token}"
        status, html = await page(client, link)
        assert status == 200 and 'width="256" height="256"' in html and "readonly" in html  # Remix off
        async with client.get(f"{link}/image") as response:
            assert response.status == 200 and Image.open(io.BytesIO(await response.read())).size == (256, 256)
        csrf = csrf_of(html)

        async def post(url: str, mask: str, prompt: str = "a red circle") -> tuple[int, str, str]:
            data = {"csrf": csrf, "mask": mask, "prompt": prompt}
            async with client.post(url, data=data, allow_redirects=False) as response:
                return response.status, await response.text(), response.headers.get("Location", "")

        status, html, _ = await post(link, mask_url((64, 64), (0, 0, 10, 10)))
        assert status == 400 and "The mask is 64x64 pixels; it must be the image&#39;s 256x256" in html
        status, html, _ = await post(link, mask_url((256, 256), None))
        assert status == 400 and messages.MASK_EMPTY in html
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        status, html, _ = await post(f"{site.url}/region/{forged}", mask_url((256, 256), (0, 0, 99, 99)))
        assert status == 403 and messages.LINK_FORGED in html
        expired = region_token(settings, grant, now=time.time() - 2 * settings.web_link_ttl_s)
        status, html = await page(client, f"{site.url}/region/{expired}")
        assert status == 410 and messages.LINK_EXPIRED in html
        assert queued_jobs(conn) == before  # nothing was queued by any of these

        status, _, location = await post(link, mask_url((256, 256), (64, 64, 127, 127)))
        assert status == 302 and location.startswith("/jobs/")
        job_id = location.removeprefix("/jobs/")
        status, html, _ = await post(link, mask_url((256, 256), (64, 64, 127, 127)))
        assert status == 409 and messages.LINK_USED in html
        status, html = await page(client, f"{site.url}{location}")
        assert status == 200 and "is queued" in html
    assert queued_jobs(conn) == before + 1
    from shared.queue.client import job_state

    state = job_state(conn, job_id)
    assert state is not None and state.spec.kind is JobKind.INPAINT and state.spec.owner == str(MEMBER)
    assert state.spec.source == upscale.spec.source and (state.spec.width, state.spec.height) == (64, 64)
    waiting = site.fake.messages[int(state.spec.delivery.waiting_message_id)]
    assert "(Waiting to start)" in waiting["content"] and waiting["channel_id"] == str(site.fake.channel_id)
    from shared.jobs import mask as masks

    painted = masks.decode(state.spec.mask, (64, 64))
    assert painted.getbbox() == (16, 16, 32, 32)  # the 256-pixel square at a quarter of the size
    async with browser() as client:  # another member with the link: refused, nothing queued
        await login(client, site, OTHER, "/me")
        status, html = await page(client, link)
        assert status == 403 and messages.LINK_NOT_YOURS in html
        assert (await page(client, f"{link}/image"))[0] == 403
    assert queued_jobs(conn) == before + 1


async def test_pages_speak_the_browsers_language(site: Site) -> None:
    """Accept-Language picks the catalogue (``shared.i18n.negotiate``); the page's words and refusals follow it, the
    member's prompts do not."""
    store_job(site.conn, site.settings, MEMBER, "a red circle", created=time.time())
    async with browser() as client:
        await login(client, site, MEMBER)
        chinese = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
        status, html = await page(client, f"{site.url}/me", headers=chinese)
        assert status == 200 and '<html lang="zh-CN">' in html
        assert "我的图片" in html and "1 个任务" in html and "a red circle" in html  # the prompt stays as written
        with use_locale("zh_CN"):
            refused = messages.JOB_NOT_VISIBLE
        assert refused != messages.JOB_NOT_VISIBLE  # a sentence the catalogue has
        status, html = await page(client, f"{site.url}/jobs/0000000000000000", headers=chinese)
        assert status == 404 and refused in html
        for header in ("en-US,zh;q=0.5", "fr-FR", ""):  # English first, or nothing we have: English
            status, html = await page(client, f"{site.url}/me", headers={"Accept-Language": header})
            assert '<html lang="en">' in html and "My images" in html and "1 job" in html
