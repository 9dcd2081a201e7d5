"""Native resolution, size multiple and family of a diffusers model, read from its JSON configs (no torch).

For a local diffusers folder with a UNet:
- VAE scale = ``2 ** (len(vae/config.json block_out_channels) - 1)``; no ``vae`` folder means a pixel-space model
  (scale 1, like the shipped ``models/imagine-shapes``).
- native resolution = ``unet/config.json sample_size`` x VAE scale (a ``[h, w]`` sample size uses sqrt(h x w)).
- size multiple = VAE scale x ``2 ** (number of UNet down blocks - 1)``, so every UNet level divides the latent evenly.

For a local folder of a transformer (DiT) family (``model_index.json`` names a pipeline of ``shared.families``):
- VAE scale = ``2 ** (len(block_out_channels) - 1)``, or ``2 ** len(temperal_downsample)`` for Qwen-Image's VAE.
- native resolution = ``transformer/config.json sample_size`` x VAE scale for SD3 (128 x 8 = 1024), else the
  pipelines' ``default_sample_size`` 128 x VAE scale (1024 on the released models).
- size multiple = VAE scale x the transformer's patch (``patch_size`` for SD3, 2 for the packed or patchified latents
  of the others), as the pipelines require.

Anything else (a hub id, or a folder with neither): native resolution ``DEFAULT_NATIVE_RESOLUTION_XL`` if the name
contains "xl", else ``DEFAULT_NATIVE_RESOLUTION``; size multiple ``DEFAULT_SIZE_MULTIPLE``.
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared import defaults
from shared.families import FamilyInfo, UnknownFamily, family_info, family_name

log = logging.getLogger(__name__)


DIT_SAMPLE_SIZE = 128
"""``default_sample_size`` of the FLUX.1, FLUX.2, Qwen-Image and Chroma pipelines (latent pixels; Z-Image hard-codes
1024 px, the same on its x8 VAE)."""

DIT_PATCH = 2
"""Latent pixels per side of one transformer token for the packed (FLUX.1, Chroma, Qwen-Image), patchified (FLUX.2)
and self-patchifying (Z-Image) families."""


def _candidates(model_ref: str) -> list[Path]:
    path = Path(model_ref)
    return [path, defaults.PROJECT_ROOT / path]


def _folder(model_ref: str) -> Path | None:
    """The local diffusers folder of ``model_ref`` with a UNet (absolute, or relative to the cwd or the checkout)."""
    if not model_ref:
        return None
    for candidate in _candidates(model_ref):
        if (candidate / "unet" / "config.json").is_file():
            return candidate
    return None


def _dit_folder(model_ref: str) -> tuple[Path, FamilyInfo] | None:
    """The local folder of ``model_ref`` and its family when it is a transformer family's pipeline (no UNet)."""
    if not model_ref or _folder(model_ref) is not None:
        return None
    for candidate in _candidates(model_ref):
        if (candidate / "model_index.json").is_file():
            try:
                info = model_family(str(candidate))
            except UnknownFamily:
                return None  # sized by the defaults; the worker refuses the model, naming its class
            if info is not None and (candidate / "transformer" / "config.json").is_file():
                return candidate, info
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
def model_family(model_ref: str) -> FamilyInfo | None:
    """The family of a local diffusers folder, from ``model_index.json``'s ``_class_name`` (and the transformer's
    config for FLUX.1 dev/schnell, ``is_distilled`` for FLUX.2 klein); None for a hub id or a folder without
    ``model_index.json``. A class no family handles raises ``shared.families.UnknownFamily`` naming it."""
    if not model_ref:
        return None
    for candidate in _candidates(model_ref):
        index = candidate / "model_index.json"
        if not index.is_file():
            continue
        pipeline = _read(index)
        transformer_path = candidate / "transformer" / "config.json"
        transformer = _read(transformer_path) if transformer_path.is_file() else {}
        return family_info(family_name(str(pipeline.get("_class_name", "")), transformer, pipeline))
    return None


@lru_cache(maxsize=64)  # model folders do not change while a process runs; /imagine asks per prompt
def vae_scale(model_ref: str) -> int:
    """Pixels per latent pixel: ``2 ** (len(vae block_out_channels) - 1)`` (Qwen-Image's VAE: ``2 **
    len(temperal_downsample)``); 1 without a ``vae`` folder."""
    folder = _folder(model_ref)
    if folder is None:
        dit = _dit_folder(model_ref)
        folder = dit[0] if dit is not None else None
    if folder is None or not (folder / "vae" / "config.json").is_file():
        return 1
    config_path = folder / "vae" / "config.json"
    config = _read(config_path)
    if "temperal_downsample" in config:  # AutoencoderKLQwenImage: one halving per entry
        stages = config["temperal_downsample"]
        if not isinstance(stages, list) or not stages:
            raise ValueError(f"{config_path}: temperal_downsample must be a non-empty list, got {stages!r}")
        return int(2 ** len(stages))
    channels = config.get("block_out_channels")
    if not isinstance(channels, list) or not channels:
        raise ValueError(f"{config_path}: block_out_channels must be a non-empty list, got {channels!r}")
    return int(2 ** (len(channels) - 1))


def _unet(folder: Path) -> dict[str, Any]:
    return _read(folder / "unet" / "config.json")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _transformer_int(folder: Path, key: str, default: int) -> int:
    """A positive integer of ``transformer/config.json`` (``default`` when absent); anything else is an error."""
    path = folder / "transformer" / "config.json"
    value = _read(path).get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{path}: {key} must be a positive int, got {value!r}")
    return value


@lru_cache(maxsize=64)  # model folders do not change while a process runs; /imagine asks per prompt
def native_resolution(model_ref: str) -> int:
    """Side in pixels of the model's native square (see the module doc for the rule and the defaults)."""
    folder = _folder(model_ref)
    if folder is None:
        dit = _dit_folder(model_ref)
        if dit is not None:
            dit_folder, info = dit
            latent_side = _transformer_int(dit_folder, "sample_size", 0) if info.name == "sd3" else DIT_SAMPLE_SIZE
            return latent_side * vae_scale(model_ref)
        side = (
            defaults.DEFAULT_NATIVE_RESOLUTION_XL if "xl" in model_ref.lower() else defaults.DEFAULT_NATIVE_RESOLUTION
        )
        log.debug("no local unet config for %r; native resolution %d assumed", model_ref, side)
        return side
    sample = _unet(folder).get("sample_size")
    if isinstance(sample, int) and _positive_int(sample):
        latent = sample
    elif isinstance(sample, list) and len(sample) == 2 and all(_positive_int(v) for v in sample):
        latent = round(math.sqrt(sample[0] * sample[1]))
    else:
        raise ValueError(
            f"{folder / 'unet' / 'config.json'}: sample_size must be a positive int or [h, w], got {sample!r}"
        )
    return latent * vae_scale(model_ref)


@lru_cache(maxsize=64)  # model folders do not change while a process runs; /imagine asks per prompt
def size_multiple(model_ref: str) -> int:
    """Width and height must be multiples of this: VAE scale x ``2 ** (UNet down blocks - 1)``, or VAE scale x the
    transformer's patch for transformer families; default 64."""
    folder = _folder(model_ref)
    if folder is None:
        dit = _dit_folder(model_ref)
        if dit is None:
            return defaults.DEFAULT_SIZE_MULTIPLE
        dit_folder, info = dit
        patch = _transformer_int(dit_folder, "patch_size", DIT_PATCH) if info.name == "sd3" else DIT_PATCH
        return vae_scale(model_ref) * patch
    config = _unet(folder)
    blocks = config.get("down_block_types", config.get("block_out_channels"))
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(
            f"{folder / 'unet' / 'config.json'}: down_block_types must be a non-empty list, got {blocks!r}"
        )
    return vae_scale(model_ref) * int(2 ** (len(blocks) - 1))
