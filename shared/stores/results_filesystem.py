"""The filesystem result store: one folder per job, ``<RESULT_DIR>/<job_id[:2]>/<job_id>/image_<n>.png`` (n 0-based,
as the API's index) and ``record.json``, written atomically, removed by a retention sweep.

Atomic: each file is written to a temporary name in the same folder, flushed and fsynced, then renamed over the final
name (``os.replace``, atomic on POSIX), and the folder is fsynced so the rename survives a crash; a reader sees the old
file or the new one, never a part. The two-character shard folder keeps folders small (256 shards for hex ids).

Retention: a job's age is its folder's modification time, which every rename into it updates, so a job is swept
``IMAGE_TTL_S`` after its last write. Several machines may share the folder (NFS and the like) if they agree on
``RESULT_DIR``; the sweep is safe to run from any of them at once (a folder already removed is not an error). Shard
folders are never removed (at most 256 for hex ids), so a put never races a sweep that removes its shard.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared import defaults
from shared.stores.results import (
    Location,
    ResultStore,
    check_index,
    check_job_id,
    image_expired,
    record_expired,
)

log = logging.getLogger(__name__)

RECORD_NAME = "record.json"
"""File name of a job's record in its folder."""

FILE_MODE = 0o644
"""Mode of stored files (``mkstemp`` makes 0600; a web server or another user may need to read results)."""

TEMP_SUFFIX = ".tmp"
"""Suffix of files being written (``.<name>.<random>.tmp``); never read, removed with their job folder."""


def image_name(index: int) -> str:
    """File name of image ``index`` (0-based)."""
    return f"image_{index}.png"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp name in the same folder, fsync, rename, fsync the folder."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (renames, removals) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemResultStore(ResultStore):
    """Results as files under ``root`` (see the module doc)."""

    backend = "filesystem"

    def __init__(self, root: Path, ttl_s: int) -> None:
        super().__init__(ttl_s)
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ValueError(f"RESULT_DIR must be an absolute folder here, got {str(root)!r}")

    @property
    def location(self) -> Location:
        return Location("filesystem", folder=str(self.root))

    def job_folder(self, job_id: str) -> Path:
        """``<root>/<job_id[:2]>/<job_id>``."""
        check_job_id(job_id)
        return self.root / job_id[:2] / job_id

    def put_images(self, job_id: str, pngs: Sequence[bytes]) -> None:
        folder = self.job_folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for index, png in enumerate(pngs):
            atomic_write(folder / image_name(index), png)
        stale = [path for path in folder.glob("image_*.png") if _index_of(path) >= len(pngs)]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            fsync_folder(folder)

    def get_image(self, job_id: str, index: int) -> bytes:
        path = self.job_folder(job_id) / image_name(check_index(index))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise image_expired(job_id, index, self.ttl_s) from None

    def put_record(self, job_id: str, record: dict[str, Any]) -> None:
        folder = self.job_folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / RECORD_NAME, self.encode_record(record))

    def get_record(self, job_id: str) -> dict[str, Any]:
        try:
            data = (self.job_folder(job_id) / RECORD_NAME).read_bytes()
        except FileNotFoundError:
            raise record_expired(job_id, self.ttl_s) from None
        return self.decode_record(job_id, data)

    def image_url(self, job_id: str, index: int, expires_s: int = defaults.RESULT_URL_EXPIRES_S) -> str | None:
        """None (never a ``file://`` URL: the path means nothing to a member); ``ResultExpired`` if it is gone."""
        if not (self.job_folder(job_id) / image_name(check_index(index))).is_file():
            raise image_expired(job_id, index, self.ttl_s)
        return None

    def delete(self, job_id: str) -> None:
        folder = self.job_folder(job_id)
        shutil.rmtree(folder, ignore_errors=True)

    def sweep(self, now: float) -> int:
        """Remove job folders last written more than the TTL before ``now``; returns how many."""
        if not self.root.is_dir():
            return 0
        cutoff = now - self.ttl_s
        removed = 0
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for folder in sorted(shard.iterdir()):
                try:
                    old = folder.is_dir() and folder.stat().st_mtime < cutoff
                except FileNotFoundError:  # another sweeper got there first
                    continue
                if old:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        if removed:
            log.info("result sweep removed %d jobs older than %d s from %s", removed, self.ttl_s, self.root)
        return removed


def _index_of(path: Path) -> int:
    """The index in ``image_<n>.png``; -1 for a name that is not one."""
    number = path.stem.removeprefix("image_")
    return int(number) if number.isdigit() else -1
