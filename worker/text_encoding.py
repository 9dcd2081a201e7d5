"""Compatibility re-export of ``worker.text`` for ``worker/engine`` until its imports move to ``worker.text``."""

import logging

from worker.text import CacheInfo, Conditioning, TextEncoding, TokenMap, TokenReport

log = logging.getLogger(__name__)

__all__ = ["CacheInfo", "Conditioning", "TextEncoding", "TokenMap", "TokenReport"]
