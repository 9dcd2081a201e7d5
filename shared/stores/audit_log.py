"""The audit log: one capped Redis stream of JSON entries that admins can look back on: admin actions (event
``admin``, from ``shared.admin``), refused prompts and images, results that could not be delivered, jobs whose worker
died.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from shared import defaults
from shared.keys import keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)


def record(
    connection: redis.Redis, settings: Settings, event: str, *, actor: str = "", **detail: Any
) -> dict[str, Any]:
    """Append one entry (``event``, ``actor``, time, JSON-ready ``detail``); returns it. Never raises on Redis errors,
    so a broken audit log cannot fail a member's request (the entry then goes to this process's log)."""
    entry = {"ts": time.time(), "event": event, "actor": actor, **detail}
    text = json.dumps(entry, sort_keys=True, default=str)
    try:
        with connection.pipeline() as pipe:
            pipe.xadd(keys_for(settings).audit_events, {"entry": text}, maxlen=defaults.AUDIT_LOG_MAX, approximate=True)
            pipe.execute()
    except redis.RedisError:
        log.exception("could not write audit entry %s", text)
    log.info("audit: %s", text)
    return entry


def entries(connection: redis.Redis, settings: Settings, count: int = 100, event: str = "") -> list[dict[str, Any]]:
    """The newest ``count`` entries, optionally only those of ``event``."""
    found = []
    rows: Any = connection.xrevrange(keys_for(settings).audit_events, count=None if event else count)
    for _id, fields in rows or []:
        item = json.loads(fields[b"entry"])
        if not event or item.get("event") == event:
            found.append(item)
    return found[:count]
