"""Loading a pipeline once: device and dtype choice, diffusers ``from_pretrained`` from a folder or a cached id.

Nothing downloads at run time (``local_files_only=True``): a model id must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
"""Names accepted by the DTYPE setting."""


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be a torch device string that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"DEVICE must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE is {name!r} but torch sees no CUDA device here")
    return device


def choose_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"DTYPE must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


@dataclass
class LoadedPipelines:
    """A model's text-to-image pipeline and its image sibling (same weights, from ``from_pipe``): the image-to-image
    pipeline, or the inpaint one for a family without image-to-image (``worker.engine.families``)."""

    text2img: Any
    img2img: Any
    model_ref: str
    device: torch.device
    dtype: torch.dtype
    load_s: float = 0.0


def pipeline_class_name(model_ref: str) -> str:
    """``_class_name`` of a local diffusers folder's model_index.json, or "" for ids and folders without one."""
    index = Path(model_ref) / "model_index.json"
    if not index.is_file():
        return ""
    return str(json.loads(index.read_text()).get("_class_name", ""))


def load_pipelines(
    model_ref: str, device: torch.device, dtype: torch.dtype, image_sibling: Callable[[Any], Any]
) -> LoadedPipelines:
    """Load ``model_ref`` (folder or cached id) onto ``device`` as ``dtype``, plus its image sibling made by
    ``image_sibling(text2img)`` (the family's ``from_pipe``; it may refuse a pipeline no family handles)."""
    import time

    started = time.perf_counter()
    class_name = pipeline_class_name(model_ref)
    if class_name == "ShapesPipeline":
        from worker.shapes_pipeline import ShapesPipeline

        text2img: Any = ShapesPipeline.from_pretrained(model_ref, torch_dtype=dtype)
        img2img: Any = text2img  # takes image= and strength= itself
    else:
        if not Path(model_ref).exists():
            log.info("model %s is not a folder: loading it from the local Hugging Face cache only", model_ref)
        try:
            text2img = AutoPipelineForText2Image.from_pretrained(model_ref, torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"MODEL {model_ref!r} could not be loaded as a diffusers text-to-image model from local files: {exc}"
            ) from exc
        img2img = image_sibling(text2img)
    text2img.to(device)
    if hasattr(text2img, "set_progress_bar_config"):
        text2img.set_progress_bar_config(disable=True)
        if img2img is not text2img:
            img2img.set_progress_bar_config(disable=True)
    pipes = LoadedPipelines(text2img, img2img, model_ref, device, dtype, time.perf_counter() - started)
    log.info("loaded %s (%s) on %s as %s in %.2f s", model_ref, type(text2img).__name__, device, dtype, pipes.load_s)
    return pipes


def describe(pipe: DiffusionPipeline) -> dict[str, Any]:
    """Component classes of a pipeline, for the job record."""
    return {name: type(component).__name__ for name, component in pipe.components.items() if component is not None}
