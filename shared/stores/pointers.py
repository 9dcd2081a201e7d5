"""Which store holds which job: ``PointerResultStore`` writes to the configured backend and keeps one small pointer per
job in Redis, reads follow the pointer (see ``shared.stores.results``), and ``open_result_store`` builds it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from shared import defaults
from shared.errors import ResultExpired
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores.results import Location, ResultStore, check_index, check_job_id, record_expired
from shared.stores.results_filesystem import FilesystemResultStore
from shared.stores.results_redis import RedisResultStore
from shared.stores.results_s3 import S3ResultStore

log = logging.getLogger(__name__)


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
        raw = self.connection.get(keys_for(self.settings).result_pointer(check_job_id(job_id)))
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
        self.connection.set(
            keys_for(self.settings).result_pointer(job_id), self.target.location.to_json(), ex=self.ttl_s
        )

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
            self.connection.set(keys_for(self.settings).result_pointer(job_id), location.to_json(), ex=self.ttl_s)
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
        self.connection.delete(keys_for(self.settings).result_pointer(job_id))

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
        return RedisResultStore(connection, settings)
    if name == "filesystem":
        return FilesystemResultStore(settings.result_dir, settings.image_ttl_s)
    if name == "s3":
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
        return FilesystemResultStore(folder, settings.image_ttl_s)
    if location.backend == "s3":
        if not settings.s3_bucket or location.endpoint != settings.s3_endpoint_url.rstrip("/"):
            return None
        return S3ResultStore(settings, bucket=location.bucket, prefix=location.prefix)
    return None


def open_result_store(connection: redis.Redis, settings: Settings) -> ResultStore:
    """The result store to use: writes to ``RESULT_STORE``, reads through the per-job pointers in Redis."""
    return PointerResultStore(connection, settings, open_backend(connection, settings))
