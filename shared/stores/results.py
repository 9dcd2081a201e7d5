"""Result stores: where finished jobs' images (PNG) and records (JSON) live, and which store holds which job.

Three backends implement ``ResultStore``: Redis (``results_redis``, the one-machine default), a folder
(``results_filesystem``) and S3 or an S3-compatible server (``results_s3``). ``open_result_store`` returns the store
that callers use: it writes new results to the configured backend (``RESULT_STORE``) and keeps in Redis only a small
pointer per job that names the backend and its place (bucket and prefix, or folder). Reads follow the pointer, so after
an admin switches ``RESULT_STORE`` the new results are found, and older ones are still read from where they were
written while that backend is still configured. A job without a pointer was written before pointers existed (by
``shared.image_store``, whose key layout the Redis backend keeps), so it is read from Redis.

An abstract base class rather than a ``typing.Protocol``: every backend shares the job-id check (a job id becomes part
of Redis keys, file paths and S3 keys, so it must never carry ``/`` or ``..``) and the member-facing messages of
``ResultExpired``, and a missing method is an error when the class is defined, not when a member clicks a button.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from shared import defaults
from shared.settings import Settings

log = logging.getLogger(__name__)

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
"""Job ids a store accepts: what ``shared.job.new_job_id`` makes and more, never a path separator or a dot."""


class ResultExpired(LookupError):
    """A job's image or record is no longer stored; the message is member-facing and names the job and image."""


def kept_for(ttl_s: int) -> str:
    """``ttl_s`` in words for messages: "30 days", "12 hours", "90 seconds"."""
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if (ttl_s >= seconds and ttl_s % seconds == 0) or ttl_s >= 2 * seconds:
            count = ttl_s // seconds
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{ttl_s} second{'s' if ttl_s != 1 else ''}"


def image_expired(job_id: str, index: int, ttl_s: int) -> ResultExpired:
    """The error for image ``index`` (0-based) of ``job_id`` being gone."""
    return ResultExpired(f"image {index + 1} of job {job_id} is no longer stored (results are kept {kept_for(ttl_s)})")


def record_expired(job_id: str, ttl_s: int) -> ResultExpired:
    """The error for the record of ``job_id`` being gone."""
    return ResultExpired(f"job {job_id} is no longer stored (results are kept {kept_for(ttl_s)})")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is safe in keys and paths; else ``ValueError`` naming it and what is allowed."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise ValueError(
            f"job_id must be 1-100 letters, digits, '_' or '-' (not starting with '_' or '-'), got {job_id!r}"
        )
    return job_id


def check_index(index: int) -> int:
    """``index`` if it is a 0-based image index; else ``ValueError`` naming it."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"image index must be an integer >= 0, got {index!r}")
    return index


@dataclass(frozen=True)
class Location:
    """Where a job's result lives: the backend, and its place there (S3 endpoint, bucket and prefix, or folder)."""

    backend: str
    endpoint: str = ""
    bucket: str = ""
    prefix: str = ""
    folder: str = ""

    _SHORT = (("backend", "b"), ("endpoint", "e"), ("bucket", "k"), ("prefix", "p"), ("folder", "f"))
    """Field -> key in the pointer's JSON: short keys, as there is one pointer per job in Redis."""

    def to_json(self) -> str:
        """Compact JSON of the set fields (the pointer's value)."""
        values = {short: getattr(self, name) for name, short in self._SHORT if getattr(self, name)}
        return json.dumps(values, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Location:
        """The location a pointer names; ``ValueError`` if the pointer is not one."""
        value = json.loads(text)
        if not isinstance(value, dict) or value.get("b") not in defaults.RESULT_STORES:
            raise ValueError(f"a result pointer must be a JSON object with a known backend 'b', got {text!r}")
        return cls(**{name: str(value.get(short, "")) for name, short in cls._SHORT})


class ResultStore(ABC):
    """One backend's images and records of finished jobs. Images are PNG bytes in grid order, index 0-based."""

    backend: str = ""
    """The backend's name (one of ``defaults.RESULT_STORES``)."""

    def __init__(self, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError(f"IMAGE_TTL_S must be > 0 seconds, got {ttl_s}")
        self.ttl_s = ttl_s

    @property
    @abstractmethod
    def location(self) -> Location:
        """Where this store keeps results (what a pointer to one of its jobs says)."""

    @abstractmethod
    def put_images(self, job_id: str, pngs: Sequence[bytes]) -> None:
        """Store ``job_id``'s images, replacing its earlier image set whole (extra earlier images are removed)."""

    @abstractmethod
    def get_image(self, job_id: str, index: int) -> bytes:
        """PNG bytes of image ``index`` of ``job_id``; ``ResultExpired`` if it is gone."""

    @abstractmethod
    def put_record(self, job_id: str, record: dict[str, Any]) -> None:
        """Store (or replace) ``job_id``'s record; its images are left as they are."""

    @abstractmethod
    def get_record(self, job_id: str) -> dict[str, Any]:
        """The record of ``job_id``; ``ResultExpired`` if it is gone."""

    @abstractmethod
    def image_url(self, job_id: str, index: int, expires_s: int = defaults.RESULT_URL_EXPIRES_S) -> str | None:
        """A URL anyone can GET image ``index`` from for ``expires_s`` (S3: presigned), or None if the backend has
        none (Redis, filesystem: never a ``file://`` URL). ``ResultExpired`` if the image is gone."""

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove ``job_id``'s images and record (no error if there are none)."""

    @abstractmethod
    def sweep(self, now: float) -> int:
        """Apply retention at ``now`` (Unix time): remove what is older than the TTL where the backend does not expire
        things itself; returns how many jobs were removed."""

    @staticmethod
    def decode_record(job_id: str, data: bytes | str) -> dict[str, Any]:
        """A stored record's JSON parsed; ``ValueError`` naming the job if it is not a JSON object."""
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError(f"record of job {job_id} is not a JSON object")
        return value

    @staticmethod
    def encode_record(record: dict[str, Any]) -> bytes:
        """A record as stored: sorted-key JSON (the same bytes for the same record, whatever the backend)."""
        return json.dumps(record, sort_keys=True).encode()


def pointer_key(settings: Settings, job_id: str) -> str:
    """Redis key of the pointer that names where ``job_id``'s result lives."""
    return f"{settings.queue_prefix}:result:{job_id}"


class PointerResultStore(ResultStore):
    """Writes to one backend store and reads through the per-job pointers in Redis (see the module doc).

    Writing order: the data first, then the pointer, so a reader never follows a pointer to data not yet written; a
    crash between the two leaves data no pointer names, which retention removes.
    """

    def __init__(self, connection: redis.Redis, settings: Settings, target: ResultStore) -> None:
        super().__init__(settings.image_ttl_s)
        self.connection = connection
        self.settings = settings
        self.target = target
        self._stores: dict[Location, ResultStore] = {target.location: target}

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.target.backend

    @property
    def location(self) -> Location:
        return self.target.location

    def pointer(self, job_id: str) -> Location | None:
        """Where ``job_id``'s result was written, or None (no pointer: written before pointers, or expired)."""
        raw = self.connection.get(pointer_key(self.settings, check_job_id(job_id)))
        if raw is None:
            return None
        try:
            return Location.from_json(raw)
        except ValueError:
            log.warning("result pointer of job %s is unreadable (%r); treating the job as unpointed", job_id, raw)
            return None

    def store_for(self, location: Location) -> ResultStore | None:
        """The store at ``location`` if its backend is still configured here, else None."""
        if location not in self._stores:
            store = open_backend_at(self.connection, self.settings, location)
            if store is None:
                return None
            self._stores[location] = store
        return self._stores[location]

    def _reader(self, job_id: str) -> ResultStore:
        location = self.pointer(job_id)
        if location is None:
            # No pointer: a result from before pointers existed lives in Redis under the same keys.
            return self.store_for(Location("redis")) or self.target
        store = self.store_for(location)
        if store is None:
            log.warning(
                "job %s's result is in %s (%s), which is no longer configured; it cannot be read",
                job_id,
                location.backend,
                location.to_json(),
            )
            raise record_expired(job_id, self.ttl_s)
        return store

    def _set_pointer(self, job_id: str) -> None:
        self.connection.set(pointer_key(self.settings, job_id), self.target.location.to_json(), ex=self.ttl_s)

    def put_images(self, job_id: str, pngs: Sequence[bytes]) -> None:
        earlier = self.pointer(job_id)
        self.target.put_images(job_id, pngs)
        if earlier is not None and earlier != self.target.location:
            self._move_record(job_id, earlier)
        self._set_pointer(job_id)

    def _move_record(self, job_id: str, earlier: Location) -> None:
        """Images re-put after a backend switch: the record follows them, and the earlier copy is removed."""
        old = self.store_for(earlier)
        if old is None:
            return
        with contextlib.suppress(ResultExpired):  # no record yet: nothing to move
            self.target.put_record(job_id, old.get_record(job_id))
        try:
            old.delete(job_id)
        except Exception:  # best effort: retention removes it anyway
            log.warning("could not remove job %s's earlier result from %s", job_id, earlier.backend, exc_info=True)

    def put_record(self, job_id: str, record: dict[str, Any]) -> None:
        location = self.pointer(job_id)
        store = self.store_for(location) if location is not None else None
        if store is not None and location is not None:
            # The record joins the job's images wherever they are (an outbox re-delivery after a switch, say).
            store.put_record(job_id, record)
            self.connection.set(pointer_key(self.settings, job_id), location.to_json(), ex=self.ttl_s)
            return
        self.target.put_record(job_id, record)
        self._set_pointer(job_id)

    def get_image(self, job_id: str, index: int) -> bytes:
        check_index(index)
        return self._reader(job_id).get_image(job_id, index)

    def get_record(self, job_id: str) -> dict[str, Any]:
        return self._reader(job_id).get_record(job_id)

    def image_url(self, job_id: str, index: int, expires_s: int = defaults.RESULT_URL_EXPIRES_S) -> str | None:
        check_index(index)
        return self._reader(job_id).image_url(job_id, index, expires_s)

    def delete(self, job_id: str) -> None:
        location = self.pointer(job_id)
        store = self.store_for(location if location is not None else Location("redis"))
        if store is not None:
            store.delete(job_id)
        self.connection.delete(pointer_key(self.settings, job_id))

    def sweep(self, now: float) -> int:
        """The target's retention, and the filesystem folder's too when it is not the target but holds results
        written before a switch (Redis and S3 expire things themselves)."""
        removed = self.target.sweep(now)
        folder = Location("filesystem", folder=str(self.settings.result_dir))
        if self.target.location != folder and self.settings.result_dir.is_dir():
            store = self.store_for(folder)
            if store is not None:
                removed += store.sweep(now)
        return removed


def open_backend(connection: redis.Redis, settings: Settings, backend: str | None = None) -> ResultStore:
    """The store of ``backend`` (default: ``RESULT_STORE``) as configured, without pointers."""
    name = backend or settings.result_store
    if name == "redis":
        from shared.stores.results_redis import RedisResultStore

        return RedisResultStore(connection, settings)
    if name == "filesystem":
        from shared.stores.results_filesystem import FilesystemResultStore

        return FilesystemResultStore(settings.result_dir, settings.image_ttl_s)
    if name == "s3":
        from shared.stores.results_s3 import S3ResultStore

        return S3ResultStore(settings)
    raise ValueError(f"RESULT_STORE must be one of {', '.join(defaults.RESULT_STORES)}, got {name!r}")


def open_backend_at(connection: redis.Redis, settings: Settings, location: Location) -> ResultStore | None:
    """The store at ``location`` if its backend is configured here, else None: Redis always; a folder while it
    exists; S3 while ``S3_BUCKET`` is set and ``S3_ENDPOINT_URL`` is still the endpoint the pointer names (the
    pointer's bucket and prefix are used with the configured credentials)."""
    if location.backend == "redis":
        return open_backend(connection, settings, "redis")
    if location.backend == "filesystem":
        folder = Path(location.folder)
        if not folder.is_absolute() or not folder.is_dir():
            return None
        from shared.stores.results_filesystem import FilesystemResultStore

        return FilesystemResultStore(folder, settings.image_ttl_s)
    if location.backend == "s3":
        if not settings.s3_bucket or location.endpoint != settings.s3_endpoint_url.rstrip("/"):
            return None
        from shared.stores.results_s3 import S3ResultStore

        return S3ResultStore(settings, bucket=location.bucket, prefix=location.prefix)
    return None


def open_result_store(connection: redis.Redis, settings: Settings) -> ResultStore:
    """The result store to use: writes to ``RESULT_STORE``, reads through the per-job pointers in Redis."""
    return PointerResultStore(connection, settings, open_backend(connection, settings))
