"""Personal style profiles (``--p``): the result images a member liked with a star reaction, kept in Redis beside
their settings, a shareable code per profile, and the liked images' embeddings per image encoder.

The bot (no torch) only records likes; a worker that runs a ``--p`` job embeds the liked images it has no vector for
yet (from the result store, with its model's image encoder) and keeps each vector here under the encoder's
fingerprint, so every image is embedded once per encoder. The profile is the mean of those vectors.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Iterable

import numpy as np
import redis

from shared import defaults
from shared.keys import keys_for
from shared.settings import Settings

log = logging.getLogger(__name__)

_CODE_ALPHABET = string.ascii_lowercase + string.digits


def image_ref(job_id: str, index: int) -> str:
    """How one liked image is named in a profile: ``<job id>:<index>``."""
    return f"{job_id}:{index}"


def parse_image_ref(ref: str) -> tuple[str, int]:
    """The inverse of ``image_ref``; a malformed name is a ``ValueError`` naming it."""
    job_id, sep, index = ref.rpartition(":")
    if not sep or not job_id or not index.isdigit():
        raise ValueError(f"a profile image is '<job id>:<index>', got {ref!r}")
    return job_id, int(index)


def like(connection: redis.Redis, settings: Settings, member: str, job_id: str, indexes: Iterable[int]) -> int:
    """Add images of ``job_id`` to ``member``'s profile (liking again only refreshes the time); the oldest beyond
    ``PROFILE_MAX_IMAGES`` are dropped. Returns how many images the profile holds now."""
    keys = keys_for(settings)
    now = time.time()
    pipe = connection.pipeline()
    pipe.zadd(keys.profile_likes(member), {image_ref(job_id, index): now for index in indexes})
    pipe.zremrangebyrank(keys.profile_likes(member), 0, -defaults.PROFILE_MAX_IMAGES - 1)
    pipe.zcard(keys.profile_likes(member))
    count = int(pipe.execute()[-1])
    log.info("member %s liked job %s; profile holds %d image(s)", member, job_id, count)
    return count


def count(connection: redis.Redis, settings: Settings, member: str) -> int:
    """How many liked images make ``member``'s profile."""
    return int(connection.zcard(keys_for(settings).profile_likes(member)))


def liked(connection: redis.Redis, settings: Settings, member: str) -> list[str]:
    """``member``'s liked images (``image_ref`` names), oldest first."""
    return [
        raw.decode() if isinstance(raw, bytes) else str(raw)
        for raw in connection.zrange(keys_for(settings).profile_likes(member), 0, -1)
    ]


def code_of(connection: redis.Redis, settings: Settings, member: str) -> str:
    """``member``'s shareable profile code, made on first use (random, ``PROFILE_CODE_LENGTH`` characters)."""
    keys = keys_for(settings)
    raw = connection.get(keys.profile_code(member))
    if raw is not None:
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    while True:
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(defaults.PROFILE_CODE_LENGTH))
        if connection.set(keys.profile_owner(code), member, nx=True):
            break
    if not connection.set(keys.profile_code(member), code, nx=True):  # another process made one first: use theirs
        connection.delete(keys.profile_owner(code))
        return code_of(connection, settings, member)
    return code


def owner_of(connection: redis.Redis, settings: Settings, code: str) -> str | None:
    """The member whose profile code is ``code``, or None."""
    raw = connection.get(keys_for(settings).profile_owner(code))
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def clear(connection: redis.Redis, settings: Settings, member: str) -> int:
    """Forget ``member``'s liked images and their vectors (the code stays, so shared codes keep naming them);
    returns how many images were forgotten."""
    keys = keys_for(settings)
    forgotten = count(connection, settings, member)
    vector_keys = list(connection.scan_iter(keys.profile_vectors(member, "*")))
    connection.delete(keys.profile_likes(member), *vector_keys)
    log.info("member %s cleared their profile (%d image(s))", member, forgotten)
    return forgotten


def vectors(connection: redis.Redis, settings: Settings, member: str, encoder: str) -> dict[str, np.ndarray]:
    """The stored embeddings of ``member``'s liked images under ``encoder`` (image name -> float32 vector)."""
    raw = connection.hgetall(keys_for(settings).profile_vectors(member, encoder))
    return {
        (name.decode() if isinstance(name, bytes) else str(name)): np.frombuffer(bytes(value), dtype=np.float32).copy()
        for name, value in raw.items()
        if isinstance(value, bytes)
    }


def store_vectors(
    connection: redis.Redis, settings: Settings, member: str, encoder: str, found: dict[str, np.ndarray]
) -> None:
    """Keep embeddings a worker computed (image name -> vector) for the next ``--p`` job."""
    if not found:
        return
    mapping = {name: np.asarray(vector, dtype=np.float32).tobytes() for name, vector in found.items()}
    connection.hset(keys_for(settings).profile_vectors(member, encoder), mapping=mapping)  # type: ignore[arg-type]
