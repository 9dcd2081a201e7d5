"""References through diffusers' IP-Adapter loaders: one configured IP-Adapter loaded as two slots of the same
weights, ``style`` (``--sref``, style codes, ``--p``) and ``content`` (``--cref``, ``--oref``, /blend), each with its
own scale, and the image encoder that embeds reference images.

* Loading: ``pipe.load_ip_adapter([weights, weights], ...)`` (``IPAdapterMixin`` for SD 1.x/SDXL,
  ``FluxIPAdapterMixin`` for FLUX.1) with the state dict read here and ``image_encoder_folder=None``: the encoder is
  held here and its embeddings are passed precomputed (``ip_adapter_image_embeds``), so the image-to-image sibling
  pipeline (same denoiser) takes references too.
* Scales: ``set_ip_adapter_scale([style, content])`` per job. A style reference whose blocks are ``style`` uses the
  adapter's ``style_blocks`` layout (InstantStyle: e.g. SDXL ``{"up": {"block_0": [0, 1, 0]}}``), each entry times the
  reference's scale, so it steers style rather than content; otherwise one scale for every block. A slot without
  references gets scale 0, which diffusers' IP-Adapter processors skip entirely (the output is the plain one).
* Several images in one slot are passed as one multi-image input ``(batch, images, D)``: their tokens are concatenated
  in cross-attention (diffusers' multi-image IP-Adapter); the slot's scale is the largest of its references'.
* Embeddings: ``image_embeds`` of the CLIP vision model with projection, ``(N, D)``; the unconditional side of
  classifier-free guidance is zeros, as diffusers' own ``encode_image`` does.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import safe_open
from torch import Tensor

from shared import defaults
from shared.adapter_config import IpAdapterEntry

log = logging.getLogger(__name__)

SLOTS: tuple[str, ...] = ("style", "content")
"""The two IP-Adapter slots, in the order they are loaded."""

SLOT_OF_KIND: dict[str, str] = {
    "style": "style",
    "profile": "style",
    "character": "content",
    "omni": "content",
    "blend": "content",
}
"""Which slot each reference kind (``shared.jobs.spec.REFERENCE_KINDS``) goes to."""


@dataclass
class SlotInput:
    """What one slot gets for a job: image vectors (N, D) and how strongly, where."""

    vectors: Tensor
    scale: float
    blocks: str = "all"


def _path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else defaults.PROJECT_ROOT / path


_PROJ_PREFIXES = ("image_proj.", "ip_adapter_proj_model.")
"""Key prefixes of the image projection: the original IP-Adapter's, and XLabs' FLUX.1 one."""
_ATTN_PREFIXES = ("ip_adapter.", "double_blocks.")
"""Key prefixes of the attention weights (XLabs' keys are renamed as diffusers' Flux loader does)."""


def read_ip_adapter(path: Path) -> dict[str, dict[str, Tensor]]:
    """An IP-Adapter file as diffusers' loaders take it: ``{"image_proj": {...}, "ip_adapter": {...}}``
    (.safetensors with the original or XLabs' FLUX.1 keys, mapped as diffusers maps them; a .bin is read with
    ``torch.load(weights_only=True)``)."""
    if not path.is_file():
        raise FileNotFoundError(f"IP-Adapter file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        state: dict[str, dict[str, Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                rest = key.split(".", 1)[1] if "." in key else key
                if key.startswith(_PROJ_PREFIXES):
                    state["image_proj"][rest] = handle.get_tensor(key)
                elif key.startswith(_ATTN_PREFIXES):
                    renamed = (
                        rest.replace("ip_adapter_double_stream_k_proj", "to_k_ip")
                        .replace("ip_adapter_double_stream_v_proj", "to_v_ip")
                        .replace("processor.", "")
                    )
                    state["ip_adapter"][renamed] = handle.get_tensor(key)
        return state
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict) or "image_proj" not in loaded or "ip_adapter" not in loaded:
        raise ValueError(f"IP-Adapter file {str(path)!r} must hold image_proj and ip_adapter state dicts")
    return loaded


def _scaled_layout(layout: Any, scale: float) -> Any:
    """A ``set_ip_adapter_scale`` layout with every number multiplied by ``scale``."""
    if isinstance(layout, dict):
        return {key: _scaled_layout(value, scale) for key, value in layout.items()}
    if isinstance(layout, list | tuple):
        return [_scaled_layout(value, scale) for value in layout]
    return float(layout) * scale


class IpAdapter:
    """A configured IP-Adapter loaded into one resident pipeline (module doc)."""

    def __init__(self, pipe: Any, entry: IpAdapterEntry) -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        if not callable(getattr(pipe, "load_ip_adapter", None)):
            raise ValueError(f"{type(pipe).__name__} has no IP-Adapter loader")
        self.pipe = pipe
        self.entry = entry
        folder = _path(entry.image_encoder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"IP-Adapter image_encoder {str(folder)!r} has no config.json")
        device = getattr(pipe, "device", torch.device("cpu"))
        dtype = getattr(pipe, "dtype", torch.float32)
        self.encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
        self.encoder = self.encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if (folder / "preprocessor_config.json").is_file():
            self.processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        else:
            size = int(self.encoder.config.image_size)
            self.processor = CLIPImageProcessor(size=size, crop_size=size)
        state = read_ip_adapter(_path(entry.file))
        # The encoder is held here, not registered in the pipeline: IPAdapterMixin and FluxIPAdapterMixin name the
        # argument that turns its loading off differently.
        no_encoder = (
            {"image_encoder_folder": None}
            if "image_encoder_folder" in inspect.signature(pipe.load_ip_adapter).parameters
            else {"image_encoder_pretrained_model_name_or_path": None}
        )
        pipe.load_ip_adapter(
            [state] * len(SLOTS), subfolder=[""] * len(SLOTS), weight_name=[""] * len(SLOTS), **no_encoder
        )
        self.transformer = getattr(pipe, "transformer", None) is not None
        """A transformer family (FLUX.1): embeddings per prompt, the negative ones passed apart."""
        self.fingerprint = f"clip:{folder.resolve()}"
        """Identifies the image encoder (profile vectors are kept per encoder)."""
        self.dimension = int(self.encoder.config.projection_dim)
        self.set_scales({})
        log.info("IP-Adapter %s loaded in %d slots (%s)", entry.file, len(SLOTS), ", ".join(SLOTS))

    @torch.inference_mode()
    def embed(self, images: list[Image.Image]) -> Tensor:
        """(N, D) image embeddings (float32, CPU) of ``images``."""
        pixels = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt").pixel_values
        encoder_device = next(self.encoder.parameters()).device
        out = self.encoder(pixels.to(encoder_device, self.encoder.dtype)).image_embeds
        return out.float().cpu()

    def typical_norm(self) -> float:
        """The norm of a mid-grey image's embedding: the length a style code's random vector is given."""
        grey = Image.new("RGB", (64, 64), (128, 128, 128))
        return float(self.embed([grey])[0].norm())

    def set_scales(self, inputs: dict[str, SlotInput]) -> list[Any]:
        """``set_ip_adapter_scale`` for the slots (0 for a slot without input); returns the layouts set."""
        layouts: list[Any] = []
        for slot in SLOTS:
            given = inputs.get(slot)
            if given is None or given.scale == 0:
                layouts.append(0.0)
            elif given.blocks == "style" and self.entry.style_blocks:
                layouts.append(_scaled_layout(self.entry.style_blocks, given.scale))
            else:
                layouts.append(float(given.scale))
        self.pipe.set_ip_adapter_scale(layouts)
        return layouts

    def pipeline_kwargs(self, inputs: dict[str, SlotInput], images: int, guidance: bool) -> dict[str, Any]:
        """The pipeline keyword arguments for a job of ``images`` images (``guidance``: classifier-free guidance runs
        a negative half). UNet families: ``ip_adapter_image_embeds``, one (2*images or images, N, D) tensor per slot,
        negative (zeros) first. FLUX.1: one (1, N, D) tensor per slot (the pipeline repeats it per image) and
        ``negative_ip_adapter_image_embeds`` of zeros for its true-CFG pass."""
        self.set_scales(inputs)
        device = getattr(self.pipe, "device", torch.device("cpu"))
        dtype = getattr(self.pipe, "dtype", torch.float32)
        positives = []
        for slot in SLOTS:
            given = inputs.get(slot)
            vectors = given.vectors if given is not None else torch.zeros(1, self.dimension)
            positives.append(vectors[None].to(device=device, dtype=dtype))  # (1, N, D)
        if self.transformer:
            return {
                "ip_adapter_image_embeds": positives,
                "negative_ip_adapter_image_embeds": [torch.zeros_like(positive) for positive in positives],
            }
        embeds = []
        for positive in positives:
            repeated = positive.expand(images, -1, -1)  # (images, N, D)
            embeds.append(torch.cat([torch.zeros_like(repeated), repeated]) if guidance else repeated)
        return {"ip_adapter_image_embeds": embeds}
