"""Deliver jobs to Discord over REST with the bot token (channel message endpoints; never the interaction token).

The member's "(Waiting to start)" message is edited with the percentage and a low-resolution preview while the job
runs (at most every ``PROGRESS_EVERY_S``; an edit the channel's budget does not grant now is skipped, not waited for,
and the next step asks again with fresher progress), then the result is posted as a new message with its buttons and
the waiting message is removed. Final posts honour 429 ``retry_after`` and retry 5xx and network errors with
exponential back-off. Small and synchronous on purpose: a worker does one job at a time.

Rate limits, as Discord counts them: every request first asks the token's budget shared through Redis
(``shared.discord_wire.rate_budget``: global 50/s, and per channel separate post, edit and delete buckets, progress
edits ranked against the bot's queue-position edits), so the bot and all workers together stay under the limits.
``DiscordRest`` also tracks each route's bucket from Discord's own headers, as discord.py does
(``X-RateLimit-Bucket``, ``-Remaining``, ``-Reset-After`` per route and top-level resource), and counts the 429s it
meets.
"""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import redis
from PIL import Image

from shared import defaults, messages, provenance
from shared.discord_wire import buttons, results
from shared.discord_wire.rate_budget import EDIT, Priority, RateBudget, route_of
from shared.i18n import use_locale
from shared.jobs.spec import JobSpec
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores.connection import connect
from worker.publisher import JobResult

log = logging.getLogger(__name__)

USER_AGENT = "DiscordBot (https://github.com/imagine-bot/imagine-bot, 0.1) imagine-worker"
"""Discord asks every REST client to name itself this way."""

UNKNOWN_MESSAGE = 10008
"""Discord's error code for a message that does not exist (deleted by the member, say)."""


class DiscordError(RuntimeError):
    """A Discord REST call failed for good; names the call, the HTTP status and Discord's message."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.code = int(body.get("code", 0)) if isinstance(body, dict) else 0
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"Discord {method} {path} failed with HTTP {status}: {str(message)[:300]}")


class RateLimited(DiscordError):
    """A 429 that the caller chose not to wait for (progress edits), or one longer than ``DISCORD_RETRY_MAX_S``."""

    def __init__(self, method: str, path: str, retry_after: float) -> None:
        super().__init__(method, path, 429, {"message": f"rate limited, retry after {retry_after:.2f} s"})
        self.retry_after = retry_after


class DiscordRest:
    """A tiny synchronous Discord REST client: JSON and multipart bodies, 429 and 5xx handling, and Discord's rate
    limit buckets per route and top-level resource, learnt from the response headers."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = defaults.DISCORD_HTTP_TIMEOUT_S,
    ) -> None:
        if not token:
            raise ValueError("DISCORD_TOKEN is empty: workers need the bot token to deliver to Discord")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"DISCORD_API_BASE must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.sleep = sleep
        """How the client waits (a test passes one that records instead)."""
        self._timeout_s = timeout_s
        self._bucket_of_route: dict[str, str] = {}
        """Route (method and path template) -> Discord's ``X-RateLimit-Bucket`` for it."""
        self._blocked_until: dict[str, float] = {}
        """Bucket and top-level resource -> monotonic time when its exhausted rate limit resets."""
        self._global_until = 0.0
        """Monotonic time when a global rate limit met ends."""
        self.responses_429 = 0
        """429 answers met (the load test checks it is 0)."""

    def request(
        self,
        method: str,
        path: str,
        *,
        payload: dict[str, Any] | None = None,
        files: list[tuple[str, bytes]] | None = None,
        wait: bool = True,
    ) -> Any:
        """Call ``method path``; returns the decoded JSON body (None for 204).

        ``wait=False`` is for best-effort calls: a rate limit (known in advance or met) raises ``RateLimited`` at once
        and errors are not retried.
        """
        attempts = defaults.DISCORD_HTTP_ATTEMPTS if wait else 1
        delay = defaults.DISCORD_RETRY_BASE_S
        route, major = route_template(method, path)
        for attempt in range(1, attempts + 1):
            bucket = f"{self._bucket_of_route.get(route, route)}:{major}"
            self._respect_bucket(method, path, bucket, wait)
            body, content_type = _encode(payload, files)
            req = urllib.request.Request(self.base_url + path, data=body, method=method)
            req.add_header("Authorization", f"Bot {self._token}")
            req.add_header("User-Agent", USER_AGENT)
            if content_type:
                req.add_header("Content-Type", content_type)
            try:
                with urllib.request.urlopen(req, timeout=self._timeout_s) as response:
                    self._note_bucket(route, major, response.headers)
                    raw = response.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                data = _decode(exc.read())
                self._note_bucket(route, major, exc.headers)
                if exc.code == 429:
                    self.responses_429 += 1
                    retry_after = _retry_after(data, exc.headers)
                    if not wait or retry_after > defaults.DISCORD_RETRY_MAX_S:
                        # Remembered, so that the next best-effort call does not try before it ends.
                        until = time.monotonic() + retry_after
                        if _is_global(data, exc.headers):
                            self._global_until = until
                        else:
                            self._blocked_until[bucket] = until
                        raise RateLimited(method, path, retry_after) from exc
                    log.warning("Discord rate limit on %s %s: retrying in %.2f s", method, path, retry_after)
                    self.sleep(retry_after)
                    continue
                if exc.code >= 500 and attempt < attempts:
                    log.warning("Discord %s %s: HTTP %d, retry %d in %.1f s", method, path, exc.code, attempt, delay)
                    self.sleep(delay)
                    delay = min(2 * delay, defaults.DISCORD_RETRY_MAX_S)
                    continue
                raise DiscordError(method, path, exc.code, data) from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt >= attempts:
                    raise DiscordError(method, path, 0, {"message": f"network error: {exc}"}) from exc
                log.warning("Discord %s %s: %s, retry %d in %.1f s", method, path, exc, attempt, delay)
                self.sleep(delay)
                delay = min(2 * delay, defaults.DISCORD_RETRY_MAX_S)
        raise DiscordError(method, path, 429, {"message": f"still rate limited after {attempts} tries"})

    def _respect_bucket(self, method: str, path: str, bucket: str, wait: bool) -> None:
        """Wait (or, best effort, give up) while the route's bucket or the global limit is known to be exhausted."""
        now = time.monotonic()
        left = max(self._blocked_until.get(bucket, 0.0), self._global_until) - now
        if left <= 0:
            return
        if not wait:
            raise RateLimited(method, path, left)
        self.sleep(min(left, defaults.DISCORD_RETRY_MAX_S))

    def _note_bucket(self, route: str, major: str, headers: Any) -> None:
        """Learn the route's bucket and, when it is used up, when it resets (Discord's headers)."""
        if headers is None:
            return
        name = headers.get("X-RateLimit-Bucket")
        if name:
            self._bucket_of_route[route] = name
        bucket = f"{self._bucket_of_route.get(route, route)}:{major}"
        if headers.get("X-RateLimit-Remaining") == "0":
            try:
                reset_after = float(headers.get("X-RateLimit-Reset-After") or 0)
            except ValueError:
                reset_after = 0.0
            self._blocked_until[bucket] = time.monotonic() + reset_after


class DiscordPublisher:
    """The ``worker.publisher.Publisher`` for ``Delivery(kind="discord")`` jobs."""

    def __init__(
        self,
        settings: Settings,
        *,
        rest: DiscordRest | None = None,
        connection: redis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: RateBudget | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.rest = rest or DiscordRest(settings.discord_api_base, settings.discord_token.get_secret_value())
        self._connection = connection
        self.budget = budget or RateBudget(lambda: self.connection, settings)
        """The token's rate budget shared with the bot and every worker (Redis)."""
        self._last_progress: dict[str, float] = {}
        self._gone: set[str] = set()
        """Jobs whose waiting message no longer exists (no more progress edits for them)."""

    @property
    def connection(self) -> redis.Redis:
        """Redis, for the posted-once marks (connected on first use)."""
        if self._connection is None:
            self._connection = connect(self.settings)
        return self._connection

    def send(
        self,
        method: str,
        path: str,
        *,
        payload: dict[str, Any] | None = None,
        files: list[tuple[str, bytes]] | None = None,
        wait: bool = True,
        priority: Priority = Priority.FINAL,
    ) -> Any:
        """One REST call within the shared budget: waited for (``wait``), or skipped at once with ``RateLimited``
        when the budget does not grant it now (best-effort progress edits)."""
        route, channel, message = route_of(method, path)
        if wait:
            granted = self.budget.acquire(
                route,
                channel,
                message=message,
                priority=priority,
                sleep=self.rest.sleep,
                max_wait_s=defaults.DISCORD_FINAL_EDIT_WAIT_S,
            )
            if not granted:
                limit = defaults.DISCORD_FINAL_EDIT_WAIT_S
                log.warning("%s %s waited %.0f s for the rate budget; sending it now", method, path, limit)
        else:
            delay = self.budget.try_acquire(route, channel, message=message, priority=priority)
            if delay > 0:
                raise RateLimited(method, path, delay)
        return self.rest.request(method, path, payload=payload, files=files, wait=wait)

    def progress(self, spec: JobSpec, fraction: float, preview: Image.Image | None) -> bool:
        """Edit the waiting message: "**prompt** - <@user> (42%) (fast)" and the preview; best effort, throttled.
        Returns False when the channel's edit budget did not grant it now (the caller asks again at its next step,
        with fresher progress); True otherwise (shown, not due yet, or nothing to edit)."""
        with use_locale(spec.delivery.locale):
            return self._progress(spec, fraction, preview)

    def _progress(self, spec: JobSpec, fraction: float, preview: Image.Image | None) -> bool:
        delivery = spec.delivery
        if not (delivery.channel_id and delivery.waiting_message_id) or spec.job_id in self._gone:
            return True
        now = self._clock()
        # The caller throttles too; the 5% slack keeps its evenly spaced calls from being dropped here.
        if now - self._last_progress.get(spec.job_id, -1e9) < 0.95 * defaults.PROGRESS_EVERY_S:
            return True
        payload: dict[str, Any] = {
            "content": messages.progress_line(spec.prompt, spec.owner, fraction, spec.lane),
            "allowed_mentions": _mentions(spec.owner),
        }
        files: list[tuple[str, bytes]] = []
        if preview is not None:
            payload["attachments"] = [{"id": 0, "filename": "preview.png"}]
            files.append(("preview.png", provenance.stamp_preview(_small(preview), spec.job_id)))
        path = f"/channels/{delivery.channel_id}/messages/{delivery.waiting_message_id}"
        try:
            if spec.job_id not in self._last_progress:  # the first: worth a short wait, or a short job shows none
                if not self.budget.acquire(
                    EDIT,
                    delivery.channel_id,
                    message=delivery.waiting_message_id,
                    priority=Priority.PROGRESS,
                    max_wait_s=defaults.DISCORD_FIRST_PROGRESS_WAIT_S,
                    sleep=self.rest.sleep,
                ):
                    raise RateLimited("PATCH", path, defaults.DISCORD_FIRST_PROGRESS_WAIT_S)
                self.rest.request("PATCH", path, payload=payload, files=files, wait=False)  # counted just now
            else:
                self.send("PATCH", path, payload=payload, files=files, wait=False, priority=Priority.PROGRESS)
        except RateLimited as exc:
            log.debug("progress edit of job %s not now: %s", spec.job_id, exc)
            return False
        except DiscordError as exc:
            if exc.code == UNKNOWN_MESSAGE:
                self._gone.add(spec.job_id)
            log.warning("progress edit of job %s failed: %s", spec.job_id, exc)
        self._last_progress[spec.job_id] = now
        return True

    def publish(self, result: JobResult) -> dict[str, Any]:
        """Post the result with its buttons, then remove the waiting message; a job is posted at most once."""
        with use_locale(result.spec.delivery.locale):
            return self._publish(result)

    def _publish(self, result: JobResult) -> dict[str, Any]:
        spec = result.spec
        channel = spec.delivery.channel_id
        if not channel:
            raise ValueError(f"job {spec.job_id} has delivery kind 'discord' but no channel_id")
        mark = self._posted_key(spec.job_id)
        raw = self.connection.get(mark)
        posted = raw if isinstance(raw, bytes) else None
        if posted is not None:
            log.info("job %s was already posted as message %s; not posting again", spec.job_id, posted.decode())
            self._remove_waiting(spec)
            return {"discord": {"channel_id": channel, "message_id": posted.decode(), "reposted": False}}
        kind = spec.kind
        picture = result.grid if result.grid is not None else result.images[0]
        name = buttons.attachment_name(spec.job_id, kind)
        if result.spoiler:  # image moderation flagged it (worker/image_moderation.py); Discord blurs SPOILER_ files
            name = f"SPOILER_{name}"
        content, components = results.result_message(spec, result.record.notes, picture.size, result.record.engine)
        payload = {
            "content": content,
            "components": components,
            "allowed_mentions": _mentions(spec.owner),
            "attachments": [{"id": 0, "filename": name}],
        }
        started = time.perf_counter()
        message = self.send(
            "POST", f"/channels/{channel}/messages", payload=payload, files=[(name, result_png(result, picture))]
        )
        message_id = str(message["id"])
        self.connection.set(mark, message_id, ex=max(self.settings.result_ttl_s, defaults.DISCORD_POSTED_TTL_S))
        self._remove_waiting(spec)
        log.info("job %s posted as message %s in channel %s", spec.job_id, message_id, channel)
        return {
            "discord": {
                "channel_id": channel,
                "message_id": message_id,
                "attachment": name,
                "post_s": time.perf_counter() - started,
            }
        }

    def failed(self, spec: JobSpec, message: str) -> None:
        """Turn the waiting message into the failure line (or post it when that message is gone)."""
        with use_locale(spec.delivery.locale):
            self._failed(spec, message)

    def _failed(self, spec: JobSpec, message: str) -> None:
        channel = spec.delivery.channel_id
        if not channel:
            log.warning("job %s failed without a Discord channel to tell: %s", spec.job_id, message)
            return
        payload = {
            "content": messages.failed_line(spec.prompt, spec.owner, message),
            "allowed_mentions": _mentions(spec.owner),
            "attachments": [],
            "components": [],
        }
        try:
            if spec.delivery.waiting_message_id:
                try:
                    waiting = spec.delivery.waiting_message_id
                    self.send("PATCH", f"/channels/{channel}/messages/{waiting}", payload=payload)
                    return
                except DiscordError as exc:
                    if exc.code != UNKNOWN_MESSAGE:
                        raise
                finally:
                    self.budget.forget(channel, spec.delivery.waiting_message_id)
            self.send("POST", f"/channels/{channel}/messages", payload=payload)
        except DiscordError:
            log.exception("could not tell the member that job %s failed (%s)", spec.job_id, message)

    def _remove_waiting(self, spec: JobSpec) -> None:
        waiting = spec.delivery.waiting_message_id
        if not waiting:
            return
        channel = spec.delivery.channel_id
        self.budget.forget(channel, waiting)
        try:  # the message is going: reactions on it have nothing left to find (7 days of a key per job saved)
            self.connection.delete(keys_for(self.settings).waiting_message(waiting))
        except redis.RedisError:
            log.warning(
                "could not forget the waiting message %s of job %s (it expires by itself)", waiting, spec.job_id
            )
        try:
            self.send("DELETE", f"/channels/{channel}/messages/{waiting}")
        except DiscordError as exc:
            if exc.code != UNKNOWN_MESSAGE:
                log.warning("could not remove the waiting message of job %s: %s", spec.job_id, exc)

    def _posted_key(self, job_id: str) -> str:
        return keys_for(self.settings).discord_posted(job_id)


def route_template(method: str, path: str) -> tuple[str, str]:
    """``(route, major)`` of a call as Discord buckets it (and discord.py keys it): the method and path with ids
    replaced, and the top-level resource (channel, guild or webhook id) whose limits are its own."""
    parts = [part for part in path.split("?", maxsplit=1)[0].split("/") if part]
    major = ""
    template = []
    for index, part in enumerate(parts):
        if index == 1 and parts[0] in ("channels", "guilds", "webhooks"):
            major = part
            template.append("{major}")
        elif part.isdigit() or (index == 2 and parts[0] == "webhooks"):
            template.append("{id}")
        else:
            template.append(part)
    return f"{method} /{'/'.join(template)}", major


def _mentions(owner: str) -> dict[str, Any]:
    """Only the owner may be pinged (a prompt saying @everyone pings nobody)."""
    return {"parse": [], "users": [owner] if owner.isdigit() else []}


def _small(image: Image.Image, max_side: int = defaults.DISCORD_PREVIEW_MAX_SIDE) -> Image.Image:
    """``image`` with its long side at most ``max_side`` (progress previews)."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def result_png(result: JobResult, picture: Image.Image) -> bytes:
    """The PNG bytes of the result's posted ``picture``: the stamped ones the worker made (``shared.provenance``),
    or, for a result built without them, the picture encoded plainly."""
    main = result.grid if result.grid is not None else result.images[0]
    if result.picture_png is not None and picture is main:
        return result.picture_png
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def _encode(payload: dict[str, Any] | None, files: list[tuple[str, bytes]] | None) -> tuple[bytes | None, str]:
    """The request body and its content type: JSON, or multipart with ``payload_json`` and ``files[n]``."""
    if not files:
        if payload is None:
            return None, ""
        return json.dumps(payload).encode(), "application/json"
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []

    def part(headers: str, data: bytes) -> None:
        chunks.append(f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n")

    part(
        'Content-Disposition: form-data; name="payload_json"\r\nContent-Type: application/json',
        json.dumps(payload or {}).encode(),
    )
    for index, (filename, data) in enumerate(files):
        safe = filename.replace('"', "")
        part(
            f'Content-Disposition: form-data; name="files[{index}]"; filename="{safe}"\r\nContent-Type: image/png',
            data,
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw.decode(errors="replace")[:300]}


def _is_global(body: Any, headers: Any) -> bool:
    """Whether a 429 is the token's global limit (not one route's)."""
    return (isinstance(body, dict) and bool(body.get("global"))) or headers.get("X-RateLimit-Scope") == "global"


def _retry_after(body: Any, headers: Any) -> float:
    """Seconds to wait after a 429: the body's ``retry_after`` (float), else the ``Retry-After`` header."""
    if isinstance(body, dict) and body.get("retry_after") is not None:
        return max(0.0, float(body["retry_after"]))
    try:
        return max(0.0, float(headers.get("Retry-After") or 1.0))
    except (TypeError, ValueError):
        return 1.0
