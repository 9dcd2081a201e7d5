"""The gallery index: which finished jobs each member has, which may be shown to others, and a short entry per job,
small enough that a gallery page is a few Redis reads however many results the store holds.

Written when a job's result is stored (``shared.stores.images.put_record``, from any worker or the outbox), read by
the web companion. Per job one entry (JSON, ``GALLERY_PROMPT_KEPT`` characters of prompt at most); per member a
sorted set of job ids by creation time and a hash of prompt words (search); one server-wide sorted set of the jobs
stored while their member was public. Everything expires with the results (``IMAGE_TTL_S``): entries carry that TTL,
and every write trims the sets of ids older than it.

Visibility: a job is public when its member was public (not ``/stealth``) every time its result was stored; a re-store
never makes a private job public. The shared gallery also leaves out every job of a member who is in stealth now, so
``/stealth`` hides a member's earlier results at once, and ``/public`` never shows what was made in stealth.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared import defaults
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobKind
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores import member_settings

log = logging.getLogger(__name__)

INDEXED_KINDS = frozenset({JobKind.GRID, JobKind.UPSCALE, JobKind.VARIATION, JobKind.OUTPAINT, JobKind.INPAINT})
"""Kinds whose results are indexed (a /describe result is the member's own upload, never shown)."""

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
"""A word of a prompt for search: letters and digits."""


@dataclass(frozen=True)
class GalleryEntry:
    """What a gallery page shows of one job (the job page reads the full record)."""

    job_id: str
    owner: str
    prompt: str
    kind: str
    created_at: float
    images: int
    """How many images the job made (4 for a grid, 1 for an upscale)."""
    width: int
    height: int
    public: bool
    lane: str = ""
    model: str = ""

    def to_json(self) -> str:
        """The stored JSON (short keys: one entry per job)."""
        return json.dumps(
            {
                "j": self.job_id,
                "o": self.owner,
                "p": self.prompt,
                "k": self.kind,
                "t": round(self.created_at, 3),
                "n": self.images,
                "w": self.width,
                "h": self.height,
                "v": self.public,
                "l": self.lane,
                "m": self.model,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> GalleryEntry:
        """The inverse of ``to_json``; ``ValueError`` if the stored value is not an entry."""
        data = json.loads(raw)
        if not isinstance(data, dict) or "j" not in data or "o" not in data:
            raise ValueError(f"a gallery entry must be a JSON object with 'j' and 'o', got {str(raw)[:80]!r}")
        return cls(
            job_id=str(data["j"]),
            owner=str(data["o"]),
            prompt=str(data.get("p", "")),
            kind=str(data.get("k", JobKind.GRID.value)),
            created_at=float(data.get("t", 0.0)),
            images=int(data.get("n", 1)),
            width=int(data.get("w", 0)),
            height=int(data.get("h", 0)),
            public=bool(data.get("v", False)),
            lane=str(data.get("l", "")),
            model=str(data.get("m", "")),
        )


@dataclass(frozen=True)
class Page:
    """One page of a member's jobs, newest first."""

    entries: list[GalleryEntry]
    page: int
    """1-based."""
    total: int
    """Jobs matching (all of the member's, or those the search found)."""
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def words(text: str) -> list[str]:
    """The lower-case words of ``text``, as search matches them."""
    return _WORD.findall(text.casefold())


def index_job(connection: redis.Redis, settings: Settings, record: JobRecord) -> GalleryEntry | None:
    """Add (or refresh) a finished job in the index; returns its entry (None for kinds that are not indexed).

    Public only if the member is not in stealth now and the job was not indexed as private before."""
    spec = record.spec
    if spec.kind not in INDEXED_KINDS:
        return None
    keys = keys_for(settings)
    owner = spec.owner
    with connection.pipeline(transaction=False) as pipe:
        pipe.get(keys.gallery_entry(record.job_id))
        pipe.get(keys.member_settings(owner))
        earlier_raw, settings_raw = pipe.execute()
    stealth = member_settings.from_stored(settings_raw, owner).stealth
    public = not stealth
    if earlier_raw is not None:
        try:
            public = public and GalleryEntry.from_json(earlier_raw).public
        except ValueError:
            public = False
    width, height = record.size if record.size != (0, 0) else (spec.width, spec.height)
    entry = GalleryEntry(
        job_id=record.job_id,
        owner=owner,
        prompt=spec.prompt[: defaults.GALLERY_PROMPT_KEPT],
        kind=spec.kind.value,
        created_at=round(spec.created_at, 3),
        images=max(1, len(record.seeds) if record.seeds else len(spec.seeds)),
        width=width,
        height=height,
        public=public,
        lane=spec.lane,
        model=str(record.engine.get("model", spec.model)).rstrip("/").rsplit("/", 1)[-1],
    )
    ttl = settings.image_ttl_s
    cutoff = time.time() - ttl
    with connection.pipeline(transaction=True) as pipe:
        pipe.set(keys.gallery_entry(record.job_id), entry.to_json(), ex=ttl)
        pipe.zadd(keys.gallery_member(owner), {record.job_id: entry.created_at})
        pipe.hset(keys.gallery_text(owner), record.job_id, " ".join(words(spec.prompt)))
        if public:
            pipe.zadd(keys.gallery_public, {record.job_id: entry.created_at})
        else:
            pipe.zrem(keys.gallery_public, record.job_id)
        pipe.expire(keys.gallery_member(owner), ttl)
        pipe.expire(keys.gallery_text(owner), ttl)
        pipe.execute()
    _trim(connection, settings, owner, cutoff)
    return entry


def _trim(connection: redis.Redis, settings: Settings, owner: str, cutoff: float) -> None:
    """Drop ids older than the results' lifetime (and beyond ``GALLERY_MEMBER_MAX`` per member) from the sets."""
    keys = keys_for(settings)
    member_key = keys.gallery_member(owner)
    old = [_text(v) for v in connection.zrangebyscore(member_key, "-inf", f"({cutoff}")]
    excess = int(connection.zcard(member_key)) - len(old) - defaults.GALLERY_MEMBER_MAX
    if excess > 0:
        old += [_text(v) for v in connection.zrange(member_key, len(old), len(old) + excess - 1)]
    with connection.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(keys.gallery_public, "-inf", f"({cutoff}")
        if old:
            pipe.zrem(member_key, *old)
            pipe.hdel(keys.gallery_text(owner), *old)
            pipe.zrem(keys.gallery_public, *old)
        pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entries(connection: redis.Redis, settings: Settings, job_ids: list[str]) -> list[GalleryEntry]:
    """The entries of ``job_ids`` in order, leaving out those that expired or cannot be read (one MGET)."""
    if not job_ids:
        return []
    keys = keys_for(settings)
    found = []
    for job_id, raw in zip(job_ids, connection.mget([keys.gallery_entry(j) for j in job_ids]), strict=True):
        if raw is None:
            continue
        try:
            found.append(GalleryEntry.from_json(raw))
        except ValueError:
            log.warning("unreadable gallery entry of job %s; left out", job_id)
    return found


def entry(connection: redis.Redis, settings: Settings, job_id: str) -> GalleryEntry | None:
    """One job's entry, or None when it is not indexed (expired, a /describe, or never finished)."""
    found = entries(connection, settings, [job_id])
    return found[0] if found else None


def member_page(
    connection: redis.Redis,
    settings: Settings,
    member: str,
    page: int = 1,
    *,
    query: str = "",
    page_size: int = defaults.GALLERY_PAGE_SIZE,
) -> Page:
    """Page ``page`` (1-based) of ``member``'s jobs, newest first; with ``query``, only jobs whose prompt has every
    word of it (case-insensitive, whole words), among the member's ``GALLERY_SEARCH_MAX`` newest."""
    if page < 1:
        raise ValueError(f"page must be 1 or more, got {page}")
    keys = keys_for(settings)
    member_key = keys.gallery_member(member)
    wanted = words(query)
    start = (page - 1) * page_size
    if not wanted:
        with connection.pipeline(transaction=False) as pipe:
            pipe.zcard(member_key)
            pipe.zrevrange(member_key, start, start + page_size - 1)
            total, ids = pipe.execute()
        return Page(entries(connection, settings, [_text(i) for i in ids]), page, int(total), page_size)
    with connection.pipeline(transaction=False) as pipe:
        pipe.zrevrange(member_key, 0, defaults.GALLERY_SEARCH_MAX - 1)
        pipe.hgetall(keys.gallery_text(member))
        ids, texts = pipe.execute()
    text_of = {_text(k): set(_text(v).split()) for k, v in texts.items()}
    needed = set(wanted)
    matching = [job_id for job_id in map(_text, ids) if needed <= text_of.get(job_id, set())]
    shown = matching[start : start + page_size]
    return Page(entries(connection, settings, shown), page, len(matching), page_size)


def stealth_members(connection: redis.Redis, settings: Settings, members: set[str]) -> set[str]:
    """Which of ``members`` are in stealth now (one MGET of their settings)."""
    ordered = sorted(members)
    if not ordered:
        return set()
    keys = keys_for(settings)
    raws = connection.mget([keys.member_settings(m) for m in ordered])
    return {m for m, raw in zip(ordered, raws, strict=True) if member_settings.from_stored(raw, m).stealth}


def public_page(
    connection: redis.Redis,
    settings: Settings,
    before: float | None = None,
    page_size: int = defaults.GALLERY_PAGE_SIZE,
) -> tuple[list[GalleryEntry], float | None]:
    """The shared gallery: up to ``page_size`` public jobs made before ``before`` (None: the newest), newest first,
    leaving out members in stealth now; returns them and the ``before`` of the next page (None at the end)."""
    keys = keys_for(settings)
    shown: list[GalleryEntry] = []
    upper = f"({before}" if before is not None else "+inf"
    while True:
        chunk: list[tuple[bytes, float]] = list(
            connection.zrevrangebyscore(keys.gallery_public, upper, "-inf", start=0, num=2 * page_size, withscores=True)  # type: ignore[arg-type]
        )
        if not chunk:
            return shown, None
        batch = entries(connection, settings, [_text(job_id) for job_id, _ in chunk])
        hidden = stealth_members(connection, settings, {e.owner for e in batch})
        for item in batch:
            if not item.public or item.owner in hidden:
                continue
            shown.append(item)
            if len(shown) == page_size:
                older = connection.zrevrangebyscore(keys.gallery_public, f"({item.created_at}", "-inf", start=0, num=1)
                return shown, (item.created_at if older else None)
        upper = f"({chunk[-1][1]}"


def visible_to(connection: redis.Redis, settings: Settings, item: GalleryEntry, viewer: str) -> bool:
    """Whether ``viewer`` may see the job of ``item``: its owner always; anyone else only if the job is public and
    its owner is not in stealth now."""
    if item.owner == viewer:
        return True
    return item.public and not stealth_members(connection, settings, {item.owner})
