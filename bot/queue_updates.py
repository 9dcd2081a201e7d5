"""Keep queued jobs' "(Waiting to start)" messages showing their live queue position and ETA.

A background task of the bot: every ``QUEUE_EDIT_EVERY_S`` it reads the first ``QUEUE_EDIT_FIRST_N`` queued jobs of
each lane from Redis, computes position and ETA (``shared.eta.position_and_eta``), and edits a job's waiting message
over the bot's REST client only when the shown line (position, ETA bucket) changed. Each edit asks the channel's edit
budget, shared through Redis with every worker's progress edits (``shared.discord_wire.rate_budget``), at the lowest
rank: progress edits go first, and a channel whose budget has no room for a position edit now is left for the next
round (its line is then computed afresh: nothing is queued). At most ``QUEUE_EDITS_PER_CHANNEL`` edits per channel and
one per message a round. A job is never edited once a worker has started it: the worker owns the message from then on
(its status is read again right before each edit; an edit already in flight when the worker starts is overwritten by
the worker's next progress edit). With several bot processes, each keeps the jobs of the guilds its shards own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import discord
import redis
from rq.utils import as_text

from bot.jobs import JobDesk
from bot.submission import display_model, mentions_for
from shared import defaults, messages
from shared.discord_wire.rate_budget import EDIT, Priority
from shared.i18n import use_locale
from shared.jobs.spec import JobStatus
from shared.keys import Keys
from shared.queue import worker_models
from shared.queue.client import get_queue, job_state
from shared.queue.eta import position_and_eta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """A queued job's waiting message and the line it should show now."""

    job_id: str
    channel_id: int
    message_id: int
    owner: str
    position: int
    line: str


class QueueUpdater:
    """Edits waiting messages as the queue moves; ``start`` it once the client is logged in (``setup_hook``)."""

    def __init__(self, client: discord.Client, desk: JobDesk, owns: Callable[[str], bool] = lambda guild: True) -> None:
        self.client = client
        self.desk = desk
        self.owns = owns
        """Whether this bot process's shards own a guild (its jobs' waiting messages are this process's to edit)."""
        self.edited_at: dict[str, float] = {}
        """Job id -> monotonic time of our last edit of its waiting message."""
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    def start(self) -> None:
        """Start the background loop (once)."""
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._stopping), name="queue-updates")

    async def stop(self) -> None:
        """Stop the background loop and wait for it (at most one round's time)."""
        if self._task is None or self._stopping is None:
            return
        # The event, not only the cancel: Python 3.11's asyncio.wait_for loses a cancel that lands just as the edit it
        # waits for completes (the round's edit returns, the loop goes on as if never cancelled), which kept a bot
        # on SIGTERM until it was killed. The event ends the loop at its next turn whatever the cancel did.
        self._stopping.set()
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=defaults.QUEUE_EDIT_EVERY_S * 2)
        if not self._task.done():
            log.warning("queue position updates did not stop within %.0f s", defaults.QUEUE_EDIT_EVERY_S * 2)
        self._task = self._stopping = None

    async def _run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=defaults.QUEUE_EDIT_EVERY_S)
            if stopping.is_set():
                return
            try:
                await self.round()
            except redis.RedisError:
                log.warning("queue position round skipped: Redis unavailable", exc_info=True)
            except Exception:
                log.exception("queue position round failed")

    def snapshot(self) -> list[Waiting]:
        """The first queued Discord jobs of every lane with the line their waiting message should show (blocking)."""
        connection, settings = self.desk.connection, self.desk.settings
        announced = worker_models.live(connection, settings)
        found: list[Waiting] = []
        for lane in settings.lanes:
            queue = get_queue(connection, settings, lane)
            for job_id in queue.get_job_ids(0, defaults.QUEUE_EDIT_FIRST_N):
                state = job_state(connection, job_id)
                if state is None or state.status is not JobStatus.QUEUED:
                    continue
                delivery = state.spec.delivery
                channel, message = delivery.channel_id, delivery.waiting_message_id
                if delivery.kind != "discord" or not channel.isdigit() or not message.isdigit():
                    continue
                if not self.owns(delivery.guild_id):
                    continue  # another bot process's shard answered it and keeps it up to date
                position, eta_s = position_and_eta(connection, settings, job_id)
                if position is None or position < 1:
                    continue
                owner = state.spec.owner
                key = settings.model_key(state.spec.model)
                with use_locale(state.spec.delivery.locale):  # the line stays in the member's language
                    if worker_models.unserved(announced, key):
                        line = messages.waiting_unserved_line(state.spec.prompt, owner, display_model(key), position)
                    else:
                        line = messages.waiting_line(state.spec.prompt, owner, position, eta_s)
                found.append(Waiting(job_id, int(channel), int(message), owner, position, line))
        return found

    async def round(self) -> int:
        """One round of edits; returns how many messages were edited."""
        waiting = await asyncio.to_thread(self.snapshot)
        seen = {item.job_id for item in waiting}
        shown = self.desk.shown
        for job_id in [job_id for job_id in shown if job_id not in seen]:
            del shown[job_id]
        for job_id in [job_id for job_id in self.edited_at if job_id not in seen]:
            del self.edited_at[job_id]
        now = time.monotonic()
        per_channel: Counter[int] = Counter()
        full: set[int] = set()
        """Channels whose edit budget had no room for a position edit this round."""
        edits = 0
        for item in sorted(waiting, key=lambda w: w.position):
            if shown.get(item.job_id) == item.line:
                continue
            if now - self.edited_at.get(item.job_id, float("-inf")) < defaults.QUEUE_EDIT_EVERY_S:
                continue
            if per_channel[item.channel_id] >= defaults.QUEUE_EDITS_PER_CHANNEL or item.channel_id in full:
                continue
            raw = self.desk.connection.hget(Keys.job(item.job_id), "status")
            if raw is None or as_text(raw) != JobStatus.QUEUED.value:
                continue  # started (the worker's message now), canceled or gone since the snapshot
            channel = str(item.channel_id)
            if self.desk.budget.try_acquire(EDIT, channel, message=str(item.message_id), priority=Priority.POSITION):
                full.add(item.channel_id)  # progress edits (or earlier positions) have the room now
                continue
            per_channel[item.channel_id] += 1
            message = self.client.get_partial_messageable(item.channel_id).get_partial_message(item.message_id)
            try:
                await asyncio.wait_for(
                    message.edit(content=item.line, allowed_mentions=mentions_for(item.owner)),
                    timeout=defaults.QUEUE_EDIT_EVERY_S,
                )
            except (discord.RateLimited, TimeoutError):
                log.info("queue position edits rate limited; skipping the rest of this round")
                break
            except discord.NotFound:
                shown[item.job_id] = item.line  # the member deleted it: nothing to update
                continue
            except discord.HTTPException as exc:
                if exc.status == 429:
                    log.info("queue position edits rate limited; skipping the rest of this round")
                    break
                log.warning("could not show the queue position of job %s: %s", item.job_id, exc)
                continue
            shown[item.job_id] = item.line
            self.edited_at[item.job_id] = time.monotonic()
            edits += 1
        return edits
