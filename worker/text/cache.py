"""The encoding cache: a thread-safe LRU of each text's encoding, keyed by (model key, adapter signature, text), so a
re-roll or variation of the same prompt skips the text encoder. The adapter signature (kind, template hash, layers,
token limit) keeps encodings of one text apart when the same model key is read two ways."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

log = logging.getLogger(__name__)

Value = TypeVar("Value")


class CacheInfo(NamedTuple):
    """Counters of the encoding cache (like ``functools.lru_cache``'s)."""

    hits: int
    misses: int
    size: int
    maxsize: int


class EncodingCache(Generic[Value]):
    """An LRU of ``maxsize`` entries (0 disables it: every lookup computes)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {maxsize}")
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._maxsize = maxsize
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Value]) -> Value:
        """The cached value of ``key``, or ``compute()`` stored under it (computed outside the lock)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return hit
            self._misses += 1
        value = compute()
        if self._maxsize:
            with self._lock:
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self._maxsize:
                    self._entries.popitem(last=False)
        return value

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries), self._maxsize)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0
