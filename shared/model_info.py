"""Native resolution and size multiple of a diffusers model, read from its JSON configs (no torch).

For a local diffusers folder:
- VAE scale = ``2 ** (len(vae/config.json block_out_channels) - 1)``; no ``vae`` folder means a pixel-space model
  (scale 1, like the shipped ``models/imagine-shapes``).
- native resolution = ``unet/config.json sample_size`` x VAE scale (a ``[h, w]`` sample size uses sqrt(h x w)).
- size multiple = VAE scale x ``2 ** (number of UNet down blocks - 1)``, so every UNet level divides the latent evenly.

Anything else (a hub id, or a folder without ``unet/config.json`` such as a transformer-based model): native resolution
``DEFAULT_NATIVE_RESOLUTION_XL`` if the name contains "xl", else ``DEFAULT_NATIVE_RESOLUTION``; size multiple
``DEFAULT_SIZE_MULTIPLE``.
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared import defaults

log = logging.getLogger(__name__)


def _folder(model_ref: str) -> Path | None:
    """The local diffusers folder of ``model_ref`` (absolute, or relative to the cwd or the checkout), else None."""
    if not model_ref:
        return None
    path = Path(model_ref)
    for candidate in (path, defaults.PROJECT_ROOT / path):
        if (candidate / "unet" / "config.json").is_file():
            return candidate
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"model config {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"model config {path} must be a JSON object, got {type(data).__name__}")
    return data


@lru_cache(maxsize=64)  # model folders do not change while a process runs; /imagine asks per prompt
def vae_scale(model_ref: str) -> int:
    """Pixels per latent pixel: ``2 ** (len(vae block_out_channels) - 1)``; 1 without a ``vae`` folder."""
    folder = _folder(model_ref)
    if folder is None or not (folder / "vae" / "config.json").is_file():
        return 1
    config_path = folder / "vae" / "config.json"
    channels = _read(config_path).get("block_out_channels")
    if not isinstance(channels, list) or not channels:
        raise ValueError(f"{config_path}: block_out_channels must be a non-empty list, got {channels!r}")
    return int(2 ** (len(channels) - 1))


def _unet(folder: Path) -> dict[str, Any]:
    return _read(folder / "unet" / "config.json")


@lru_cache(maxsize=64)  # model folders do not change while a process runs; /imagine asks per prompt
def native_resolution(model_ref: str) -> int:
    """Side in pixels of the model's native square (see the module doc for the rule and the defaults)."""
    folder = _folder(model_ref)
    if folder is None:
        side = (
            defaults.DEFAULT_NATIVE_RESOLUTION_XL if "xl" in model_ref.lower() else defaults.DEFAULT_NATIVE_RESOLUTION
        )
        log.debug("no local unet config for %r; native resolution %d assumed", model_ref, side)
        return side
    sample = _unet(folder).get("sample_size")
    if isinstance(sample, int) and not isinstance(sample, bool) and sample > 0:
        latent = sample
    elif (
        isinstance(sample, list)
        and len(sample) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sample)
    ):
        latent = round(math.sqrt(sample[0] * sample[1]))
    else:
        raise ValueError(
            f"{folder / 'unet' / 'config.json'}: sample_size must be a positive int or [h, w], got {sample!r}"
        )
    return latent * vae_scale(model_ref)


@lru_cache(maxsize=64)  # model folders do not change while a process runs; /imagine asks per prompt
def size_multiple(model_ref: str) -> int:
    """Width and height must be multiples of this: VAE scale x ``2 ** (UNet down blocks - 1)``; default 64."""
    folder = _folder(model_ref)
    if folder is None:
        return defaults.DEFAULT_SIZE_MULTIPLE
    config = _unet(folder)
    blocks = config.get("down_block_types", config.get("block_out_channels"))
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(
            f"{folder / 'unet' / 'config.json'}: down_block_types must be a non-empty list, got {blocks!r}"
        )
    return vae_scale(model_ref) * int(2 ** (len(blocks) - 1))
