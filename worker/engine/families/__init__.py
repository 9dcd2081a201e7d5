"""What differs between model families for the engine: one ``Family`` per entry of ``shared.families`` (which also
holds what the front ends need to know, without torch). ``family_for(pipe)`` picks the family of a loaded pipeline and
refuses, naming the class and the supported families, a pipeline the engine cannot drive.

``base``: the ``Family`` interface with the UNet behaviour (SD 1.x/2.x, SDXL, the shipped pixel-space model);
``transformers``: FLUX.1 dev/schnell, Chroma, FLUX.2 klein, SD3.5, Qwen-Image, Z-Image.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.families import UnknownFamily, family_info, family_name
from worker.engine.families.base import BatchRecipe, Conditioning, Family, ShapesFamily, UNetFamily
from worker.engine.families.transformers import (
    ChromaFamily,
    Flux2KleinFamily,
    FluxFamily,
    QwenImageFamily,
    SD3Family,
    ZImageFamily,
)

log = logging.getLogger(__name__)

PIPELINE_LOOP = BatchRecipe(loop="pipeline")
"""Cross-job batches of the transformer families: one call of the pipeline over every job's rows."""

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        UNetFamily(
            family_info("sd"),
            BatchRecipe(loop="engine", scale_initial_noise=True, extra_step_kwargs=True, decoder="vae"),
        ),
        UNetFamily(family_info("sdxl")),
        ShapesFamily(
            family_info("shapes"),
            BatchRecipe(loop="engine", scale_initial_noise=False, extra_step_kwargs=False, decoder="pipeline"),
        ),
        FluxFamily(family_info("flux-dev"), PIPELINE_LOOP),
        FluxFamily(family_info("flux-schnell"), PIPELINE_LOOP),
        ChromaFamily(family_info("chroma"), PIPELINE_LOOP),
        Flux2KleinFamily(family_info("flux2-klein"), PIPELINE_LOOP),
        Flux2KleinFamily(family_info("flux2-klein-distilled"), PIPELINE_LOOP),
        SD3Family(family_info("sd3"), PIPELINE_LOOP),
        QwenImageFamily(family_info("qwenimage"), PIPELINE_LOOP),
        ZImageFamily(family_info("zimage"), PIPELINE_LOOP),
    )
}
"""Every family the engine drives, by name."""


class UnsupportedPipeline(ValueError):
    """A model whose pipeline class no family handles; the message is one line naming the class and the supported
    families (an expected failure: shown without a traceback)."""


def family_for(pipe: Any) -> Family:
    """The family of a loaded text-to-image pipeline: its class name, told apart by its configs where one class has
    variants (``shared.families.family_name``)."""
    denoiser = getattr(pipe, "transformer", None)
    transformer_config = dict(getattr(denoiser, "config", None) or {})
    pipeline_config = dict(getattr(pipe, "config", None) or {})
    try:
        name = family_name(type(pipe).__name__, transformer_config, pipeline_config)
    except UnknownFamily as exc:
        raise UnsupportedPipeline(str(exc)) from None
    return FAMILIES[name]


__all__ = ["FAMILIES", "BatchRecipe", "Conditioning", "Family", "UnsupportedPipeline", "family_for"]
