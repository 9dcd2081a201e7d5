"""The admin's configuration of LoRAs and image adapters (``config/imagine.toml``), as typed entries that
``shared.settings`` holds: which LoRA files members may name, which families each fits, and which IP-Adapter (with its
image encoder) a model uses for references."""

from __future__ import annotations

import logging
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.families import FAMILIES

log = logging.getLogger(__name__)

ADAPTER_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(info.adapter_family for info in FAMILIES))
"""The families a LoRA can name: LoRAs fit the denoiser's architecture, so FLUX.1 dev and schnell share ``flux``."""


class LoraEntry(BaseModel):
    """One LoRA members may use with ``--lora name[:weight]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="The LoRA's .safetensors file (relative paths: to the checkout).")
    families: tuple[str, ...] = Field(description="Families it fits (ADAPTER_FAMILIES), e.g. ['sdxl'].")
    weight: float = Field(default=1.0, description="Weight when the prompt gives none.")
    triggers: tuple[str, ...] = Field(default=(), description="Words added to the conditioning when it is used.")
    description: str = Field(default="", description="One line for /loras.")

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in ADAPTER_FAMILIES]
        if unknown or not value:
            raise ValueError(f"families must be a non-empty list of {', '.join(ADAPTER_FAMILIES)}, got {list(value)}")
        return value

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"weight must be a finite number, got {value}")
        return value


class IpAdapterEntry(BaseModel):
    """The IP-Adapter one model uses for ``--sref``, ``--cref``, ``--oref``, /blend and ``--p``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="IP-Adapter weights: .safetensors with image_proj.* and ip_adapter.* keys, or .bin.")
    image_encoder: str = Field(description="Folder of its CLIPVisionModelWithProjection (config.json + weights).")
    style_blocks: dict[str, Any] | None = Field(
        default=None,
        description="Per-block scales of a style reference (diffusers' set_ip_adapter_scale layout, 1.0 where the "
        "style goes, e.g. SDXL's {'up': {'block_0': [0.0, 1.0, 0.0]}}); none: style references steer every block.",
    )
