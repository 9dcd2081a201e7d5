"""Every constant and default of the system, each with one line of doc.

Settings (``shared.settings``) take their defaults from here; code that needs a fixed number imports it from here.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parents[1]
"""The checkout (or installed tree) root; relative paths in settings are resolved against it."""

CONFIG_FILE: Path = PROJECT_ROOT / "config" / "imagine.toml"
"""The TOML file that settings read under environment variables (override with IMAGINE_CONFIG)."""

DEFAULT_MODEL: str = "models/imagine-shapes"
"""The embedded default model: the small text-to-image model trained in this repo (diffusers layout)."""

DATA_DIR: str = ".imagine"
"""Folder for the embedded Redis (its append-only file and socket) and the shared image store."""

OUTPUT_DIR: str = "outputs"
"""Folder where the local publisher writes outputs/<job_id>/grid.png, the four images and job.json."""

QUEUE_PREFIX: str = "imagine"
"""Prefix of every Redis key and RQ queue name this system owns."""

LANES: tuple[str, ...] = ("turbo", "fast", "relax")
"""Speed lanes in the order workers serve them (first = highest priority)."""

DEFAULT_LANE: str = "fast"
"""Lane of a job whose prompt and member settings name none."""

JOB_TIMEOUT_S: int = 900
"""Seconds a single job may run on a worker before RQ stops it."""

RESULT_TTL_S: int = 7 * 24 * 3600
"""Seconds RQ keeps a finished job's record and result (for /show, buttons and the CLI)."""

FAILURE_TTL_S: int = 7 * 24 * 3600
"""Seconds RQ keeps a failed job's record, so the member and admins can see why it failed."""

IMAGE_TTL_S: int = 30 * 24 * 3600
"""Seconds the image store keeps a job's images (sources for U/V buttons) before they expire."""

IMAGES_PER_GRID: int = 4
"""Images in one grid job (the 2x2 grid)."""

DEFAULT_STEPS: int = 20
"""Denoising steps at --quality 1."""

DEFAULT_GUIDANCE: float = 7.5
"""Classifier-free guidance scale at --stylize 100 (the Midjourney default)."""

PROGRESS_EVERY_S: float = 2.0
"""Least seconds between two progress edits of a Discord message (Discord's rate limits)."""

MAX_SEED: int = 4_294_967_295
"""Largest seed Midjourney accepts (2**32 - 1); derived per-image seeds wrap inside this range."""

EMBEDDED_REDIS_STARTUP_S: float = 10.0
"""Seconds to wait for the embedded redis-server to answer PING after it is started."""

WORKER_HEARTBEAT_S: int = 10
"""Seconds between a worker's heartbeats; a worker silent for 3 of these is presumed dead."""

TEXT_CACHE_SIZE: int = 256
"""Entries in a worker's LRU cache of prompt encodings keyed by (model, text)."""
