"""References on the shipped model, which has no IP-Adapter: its contrastive scorer's image encoder puts a reference
image (or a profile's mean, or a style code's seeded vector) in the joint text-image space, and the captions of its
caption bank nearest that vector join the prompt as ``::`` parts.

Exactly: the scorer's image vector ``v`` (unit, 256-d; ``worker.alignment.ShapesImageEncoder``) of each reference
(several images of one reference: their mean, renormalised) is compared by cosine similarity with the bank's caption
vectors (``worker.caption_bank``: the same scorer's text vectors of every caption the model was trained on); the
``REFERENCE_CAPTIONS`` nearest captions become extra parts, each weighted ``scale / REFERENCE_CAPTIONS``, after the
prompt's own parts (weight 1 each). The text-encoding module then encodes the parts side by side as for any
multi-prompt, so the reference steers the BERT conditioning the UNet cross-attends to. A prompt without text (/blend)
is replaced by the captions. Scale 0 adds no part at all, so ``--sw 0`` is the plain prompt.

The shipped model has no style/content split: every reference kind conditions on what its image shows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from shared import defaults, messages
from shared.errors import Unsupported

log = logging.getLogger(__name__)


class CaptionReferences:
    """The caption-retrieval reference method of one resident shipped model."""

    def __init__(self, model_ref: str, scorer: Any) -> None:
        from worker.alignment import ALIGNMENT_SUBFOLDER
        from worker.caption_bank import CaptionBank

        if scorer is None:
            raise Unsupported(messages.reference_unavailable("image", Path(model_ref).name))
        bank = CaptionBank.load(Path(model_ref) / ALIGNMENT_SUBFOLDER, scorer)
        if bank is None:
            raise Unsupported(messages.reference_unavailable("image", Path(model_ref).name))
        self.scorer = scorer
        self.bank = bank
        self.fingerprint = f"shapes:{getattr(scorer, 'fingerprint', '') or model_ref}"
        """Identifies the image encoder (profile vectors are kept per encoder)."""
        self.dimension = int(bank.vectors.shape[1])

    @torch.inference_mode()
    def embed(self, images: list[Image.Image]) -> Tensor:
        """(N, D) unit image vectors of the scorer (float32, CPU)."""
        return self.scorer.image_vectors([image.convert("RGB") for image in images]).float().cpu()

    def typical_norm(self) -> float:
        """Image vectors are unit vectors."""
        return 1.0

    def captions_for(self, vectors: Tensor, scale: float) -> list[tuple[str, float]]:
        """The ``::`` parts one reference adds (module doc); none at scale 0."""
        if scale == 0 or vectors.numel() == 0:
            return []
        mean = F.normalize(vectors.float().mean(0), dim=-1)
        count = defaults.REFERENCE_CAPTIONS
        return [(caption, scale / count) for caption, _ in self.bank.best(mean, count)]

    def parts(
        self, prompt_parts: tuple[tuple[str, float], ...], references: list[tuple[Tensor, float]]
    ) -> tuple[tuple[tuple[str, float], ...], list[list[Any]]]:
        """The job's parts with the references' captions added (a prompt without text is replaced by them), and the
        captions chosen (for the record)."""
        added: list[tuple[str, float]] = []
        for vectors, scale in references:
            added.extend(self.captions_for(vectors, scale))
        if not added:
            return prompt_parts, []
        kept = tuple(part for part in prompt_parts if part[0].strip())
        chosen = [[caption, round(weight, 4)] for caption, weight in added]
        return (*kept, *added), chosen
