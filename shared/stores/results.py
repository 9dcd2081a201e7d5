"""Result stores: where finished jobs' images (PNG) and records (JSON) live, and which store holds which job.

Three backends implement ``ResultStore``: Redis (``results_redis``, the one-machine default), a folder
(``results_filesystem``) and S3 or an S3-compatible server (``results_s3``). ``shared.stores.pointers``'s
``open_result_store`` returns the store that callers use: it writes new results to the configured backend
(``RESULT_STORE``) and keeps in Redis only a small pointer per job that names the backend and its place (bucket and
prefix, or folder). Reads follow the pointer, so after
an admin switches ``RESULT_STORE`` the new results are found, and older ones are still read from where they were
written while that backend is still configured. A job without a pointer was written before pointers existed (by
``shared.stores.images`` before, whose key layout the Redis backend keeps), so it is read from Redis.

An abstract base class rather than a ``typing.Protocol``: every backend shares the job-id check (a job id becomes part
of Redis keys, file paths and S3 keys, so it must never carry ``/`` or ``..``) and the member-facing messages of
``ResultExpired``, and a missing method is an error when the class is defined, not when a member clicks a button.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared import defaults, messages
from shared.errors import ResultExpired

log = logging.getLogger(__name__)

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
"""Job ids a store accepts: what ``shared.job.new_job_id`` makes and more, never a path separator or a dot."""


def image_expired(job_id: str, index: int, ttl_s: int) -> ResultExpired:
    """The error for image ``index`` (0-based) of ``job_id`` being gone."""
    return ResultExpired(messages.image_expired(index, job_id, ttl_s))


def record_expired(job_id: str, ttl_s: int) -> ResultExpired:
    """The error for the record of ``job_id`` being gone."""
    return ResultExpired(messages.result_expired(job_id, ttl_s))


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
