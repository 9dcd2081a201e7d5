"""The moderators' review queue: results held back from a member's channel until a moderator approves or rejects
them, with the state in Redis so that decisions work after restarts and are taken exactly once.

A worker holds a result (``hold``) when image moderation flags it for a channel that may not receive it and the
configured action is ``review``, or when the member is new (``REVIEW_NEW_MEMBERS_DAYS``); it posts the result to the
staff channel (``REVIEW_CHANNEL_ID``) with Approve and Reject buttons whose ``custom_id`` names the job.

States of one held result (``Keys.review``)::

    pending --Approve--> delivering --posted--> approved
        \\                    (a bot that dies here is taken over after REVIEW_DELIVERING_LEASE_S)
         `--Reject--> rejected

Every transition is one Lua script, so two moderators clicking at once, or two bot shards, cannot both deliver:
exactly one Approve wins ``pending -> delivering``; the bot that won posts the stored result (from the result store,
``shared.stores.images``) and marks it ``approved`` with the message id. Decisions are written to the audit log.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared import defaults, messages
from shared.keys import keys_for
from shared.queue import admin
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)

CUSTOM_ID_TEMPLATE = r"imagine-review:(?P<action>approve|reject):(?P<job_id>[0-9A-Za-z_-]{1,64})"
"""Regex of the Approve and Reject buttons' ``custom_id`` (a persistent ``DynamicItem`` in the bot)."""

_CUSTOM_ID = re.compile(CUSTOM_ID_TEMPLATE)

STATES = ("pending", "delivering", "approved", "rejected")
"""The states of a held result."""

# KEYS: the review hash, the pending set.  ARGV: job id, moderator, now, lease seconds.
# Returns "ok" (this call moves it to delivering) or the state it is in ("missing" when not held).
_BEGIN_APPROVE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'delivering' then
  local since = tonumber(redis.call('HGET', KEYS[1], 'delivering_since') or '0')
  if tonumber(ARGV[3]) - since < tonumber(ARGV[4]) then return state end
elseif state ~= 'pending' then
  return state
end
redis.call('HSET', KEYS[1], 'state', 'delivering', 'delivering_since', ARGV[3], 'decided_by', ARGV[2])
return 'ok'
"""

# KEYS: the review hash, the pending set.  ARGV: job id, moderator, now.
_REJECT = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'pending' then return state end
redis.call('HSET', KEYS[1], 'state', 'rejected', 'decided_by', ARGV[2], 'decided_at', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 'ok'
"""


@dataclass(frozen=True)
class Held:
    """One held result as Redis has it."""

    job_id: str
    state: str
    owner: str
    channel_id: str
    waiting_message_id: str
    reason: str
    staff_message_id: str = ""
    decided_by: str = ""
    delivered_message_id: str = ""


def custom_id(action: str, job_id: str) -> str:
    """The ``custom_id`` of the Approve (``approve``) or Reject (``reject``) button of ``job_id``."""
    value = f"imagine-review:{action}:{job_id}"
    if len(value) > defaults.DISCORD_CUSTOM_ID_MAX or not _CUSTOM_ID.fullmatch(value):
        raise ValueError(f"cannot build a review custom_id from action={action!r}, job_id={job_id!r}")
    return value


def components(job_id: str) -> list[dict[str, Any]]:
    """The action row under a held result in the staff channel: Approve (green) and Reject (red)."""
    return [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 3, "label": messages.LABEL_APPROVE, "custom_id": custom_id("approve", job_id)},
                {"type": 2, "style": 4, "label": messages.LABEL_REJECT, "custom_id": custom_id("reject", job_id)},
            ],
        }
    ]


def hold(
    connection: redis.Redis,
    settings: Settings,
    *,
    job_id: str,
    owner: str,
    channel_id: str,
    waiting_message_id: str,
    reason: str,
) -> bool:
    """Hold ``job_id`` for review (kept as long as results are); False when it is held already (a retried delivery
    must not reopen a decided review)."""
    keys = keys_for(settings)
    key = keys.review(job_id)
    if not connection.hsetnx(key, "state", "pending"):
        return False
    with connection.pipeline() as pipe:
        pipe.hset(
            key,
            mapping={
                "state": "pending",
                "owner": owner,
                "channel_id": channel_id,
                "waiting_message_id": waiting_message_id,
                "reason": reason,
                "held_at": str(time.time()),
            },
        )
        pipe.expire(key, settings.image_ttl_s)
        pipe.zadd(keys.reviews_pending, {job_id: time.time()})
        pipe.execute()
    audit_log.record(connection, settings, "review_held", actor="worker", job_id=job_id, owner=owner, reason=reason)
    return True


def set_staff_message(connection: redis.Redis, settings: Settings, job_id: str, message_id: str) -> None:
    """Remember the staff channel's message of ``job_id`` (the bot edits it once decided)."""
    connection.hset(keys_for(settings).review(job_id), "staff_message_id", message_id)


def staff_message(connection: redis.Redis, settings: Settings, job_id: str) -> str:
    """The staff channel's message id of ``job_id`` ("" when it was not posted yet)."""
    raw = connection.hget(keys_for(settings).review(job_id), "staff_message_id")
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


def get(connection: redis.Redis, settings: Settings, job_id: str) -> Held | None:
    """The held result ``job_id``, or None if it was never held (or has expired)."""
    raw: Any = connection.hgetall(keys_for(settings).review(job_id))
    if not raw:
        return None
    data = {
        k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in raw.items()
    }
    return Held(
        job_id=job_id,
        state=data.get("state", ""),
        owner=data.get("owner", ""),
        channel_id=data.get("channel_id", ""),
        waiting_message_id=data.get("waiting_message_id", ""),
        reason=data.get("reason", ""),
        staff_message_id=data.get("staff_message_id", ""),
        decided_by=data.get("decided_by", ""),
        delivered_message_id=data.get("delivered_message_id", ""),
    )


def pending(connection: redis.Redis, settings: Settings) -> list[str]:
    """Job ids waiting for a moderator, oldest first."""
    return [
        raw.decode() if isinstance(raw, bytes) else str(raw)
        for raw in connection.zrange(keys_for(settings).reviews_pending, 0, -1)
    ]


def begin_approve(connection: redis.Redis, settings: Settings, job_id: str, moderator: str) -> str:
    """Take the delivery of an approved result: ``ok`` for exactly one caller (until it finishes, or its lease of
    ``REVIEW_DELIVERING_LEASE_S`` runs out), else the state the result is in."""
    keys = keys_for(settings)
    outcome = connection.eval(
        _BEGIN_APPROVE,
        2,
        keys.review(job_id),
        keys.reviews_pending,
        job_id,
        moderator,
        time.time(),
        defaults.REVIEW_DELIVERING_LEASE_S,
    )
    return outcome.decode() if isinstance(outcome, bytes) else str(outcome)


def finish_approve(connection: redis.Redis, settings: Settings, job_id: str, moderator: str, message_id: str) -> None:
    """The approved result was posted as ``message_id``: ``approved``, off the pending list, audited."""
    keys = keys_for(settings)
    with connection.pipeline() as pipe:
        pipe.hset(
            keys.review(job_id),
            mapping={"state": "approved", "decided_at": str(time.time()), "delivered_message_id": message_id},
        )
        pipe.zrem(keys.reviews_pending, job_id)
        pipe.execute()
    audit_log.record(connection, settings, "review_approved", actor=moderator, job_id=job_id, message_id=message_id)


def reject(connection: redis.Redis, settings: Settings, job_id: str, moderator: str) -> str:
    """Reject a pending result: ``ok`` (audited) or the state it is in."""
    keys = keys_for(settings)
    outcome = connection.eval(_REJECT, 2, keys.review(job_id), keys.reviews_pending, job_id, moderator, time.time())
    state = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if state == "ok":
        held = get(connection, settings, job_id)
        audit_log.record(
            connection,
            settings,
            "review_rejected",
            actor=moderator,
            job_id=job_id,
            owner=held.owner if held else "",
            reason=held.reason if held else "",
        )
    return state


def is_moderator(settings: Settings, member_id: str, roles: list[str], manages_guild: bool) -> bool:
    """Whether a member may approve or reject: an admin of the bot, or one of ``MODERATOR_ROLE_IDS``."""
    return admin.is_admin(settings, member_id, roles, manages_guild) or bool(settings.moderator_roles & set(roles))
