"""Caption banks for /describe: candidate prompts and their unit text vectors in an alignment scorer's space.

A model folder may ship ``alignment/captions.json`` (the candidates, a JSON list of strings) and
``alignment/caption_vectors.safetensors`` (their text vectors (N, D) from that folder's scorer, fp16, and the
fingerprint of the scorer weights they came from). /describe ranks the candidates by cosine similarity with the image's
vector. Encoding the shipped model's 2,080 candidates with BERT takes 10-30 s on two CPU cores, so the vectors ship with
the weights; vectors whose fingerprint does not match the weights (the scorer was retrained) or a missing vectors file
are recomputed at load, with a warning, and the answers stay right.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

CAPTIONS_NAME = "captions.json"
"""Candidate prompts of a model folder's caption bank (under ``alignment/``)."""
VECTORS_NAME = "caption_vectors.safetensors"
"""Their text vectors (tensor ``vectors``) and, in the metadata, the scorer weights' ``fingerprint``."""
ENCODE_BATCH = 256
"""Candidates encoded per text-encoder call when (re)computing vectors."""


def fingerprint(weights: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a weights file."""
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class CaptionBank:
    """Candidates and their unit text vectors (N, D), row i for caption i."""

    captions: tuple[str, ...]
    vectors: torch.Tensor

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.captions):
            raise ValueError(f"vectors must be ({len(self.captions)}, D), got {tuple(self.vectors.shape)}")

    def best(self, image_vector: torch.Tensor, count: int) -> list[tuple[str, float]]:
        """The ``count`` captions most similar to one unit image vector (D,), best first, with their cosines."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        similarities = self.vectors.float() @ image_vector.float()  # (N,)
        top = torch.topk(similarities, min(count, len(self.captions)))
        return [(self.captions[int(i)], round(float(s), 4)) for s, i in zip(top.values, top.indices, strict=True)]

    @classmethod
    def build(cls, captions: list[str], scorer: Any) -> CaptionBank:
        """Encode ``captions`` with ``scorer.text_vectors`` (batched)."""
        if not captions:
            raise ValueError("a caption bank needs at least one caption, got none")
        chunks = [scorer.text_vectors(captions[i : i + ENCODE_BATCH]) for i in range(0, len(captions), ENCODE_BATCH)]
        return cls(tuple(captions), torch.cat(chunks).float())

    def save(self, alignment_folder: Path, weights_fingerprint: str) -> None:
        """Write ``captions.json`` and ``caption_vectors.safetensors`` into ``alignment_folder``."""
        (alignment_folder / CAPTIONS_NAME).write_text(json.dumps(list(self.captions), indent=0) + "\n")
        save_file(
            {"vectors": self.vectors.half().contiguous()},
            str(alignment_folder / VECTORS_NAME),
            metadata={"fingerprint": weights_fingerprint},
        )

    @classmethod
    def load(cls, alignment_folder: Path, scorer: Any) -> CaptionBank | None:
        """The folder's bank for ``scorer`` (None without ``captions.json``); vectors made by other weights than the
        scorer's (``scorer.fingerprint``), or missing, are recomputed."""
        captions_path = alignment_folder / CAPTIONS_NAME
        if not captions_path.is_file():
            return None
        captions = json.loads(captions_path.read_text())
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"{captions_path} must be a JSON list of strings")
        vectors_path = alignment_folder / VECTORS_NAME
        expected = str(scorer.fingerprint)
        if vectors_path.is_file():
            from safetensors import safe_open

            with safe_open(str(vectors_path), framework="pt") as handle:
                stored = (handle.metadata() or {}).get("fingerprint", "")
            vectors = load_file(str(vectors_path))["vectors"].float()
            if stored == expected and expected and vectors.shape[0] == len(captions):
                return cls(tuple(captions), vectors)
            log.warning(
                "caption vectors in %s are stale (fingerprint %r, weights %r): recomputing",
                vectors_path,
                stored,
                expected,
            )
        else:
            log.warning("no %s in %s: computing the caption vectors now", VECTORS_NAME, alignment_folder)
        return cls.build(captions, scorer)
