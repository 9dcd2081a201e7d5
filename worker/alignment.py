"""Contrastive text-image alignment scorers: the shipped shapes model's own, and CLIP when one is configured.

``score`` gives the cosine similarity of image i with text i; ``similarity_matrix`` every image against every text.
The shipped scorer (``models/imagine-shapes/alignment/``: config.json + model.safetensors) is a small CNN image encoder
and a projection head over the mean-pooled frozen BERT token states (the pipeline's own text encoder), trained with the
InfoNCE loss and a learnable temperature (``training/train.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn

log = logging.getLogger(__name__)

ALIGNMENT_SUBFOLDER = "alignment"
"""Sub-folder of the shipped model that holds the contrastive scorer."""
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class AlignmentScorer(Protocol):
    """Anything that scores how well images match texts."""

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        """Cosine similarity of images[i] with texts[i]."""
        ...

    def similarity_matrix(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """(N_img, N_txt) cosine similarities."""
        ...

    def image_vectors(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) unit image vectors."""
        ...

    def text_vectors(self, texts: list[str]) -> torch.Tensor:
        """(N, D) unit text vectors."""
        ...

    @property
    def fingerprint(self) -> str:
        """Identifies the scorer's weights (caption vectors made by other weights are recomputed)."""
        ...


class ShapesImageEncoder(nn.Module):
    """Strided conv stack -> global average pool -> linear: (B, 3, S, S) in [-1, 1] -> (B, embed_dim)."""

    def __init__(self, channels: list[int], embed_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for ch in channels:
            layers += [
                nn.Conv2d(in_ch, ch, 3, stride=2, padding=1),
                nn.GroupNorm(8, ch),
                nn.SiLU(),
                nn.Conv2d(ch, ch, 3, padding=1),
                nn.GroupNorm(8, ch),
                nn.SiLU(),
            ]
            in_ch = ch
        self.features = nn.Sequential(*layers)
        # coordinates survive pooling through a learned spatial weighting: (B, C, h, w) -> (B, C * 5)
        self.proj = nn.Linear(in_ch * 5, embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feat = self.features(pixels)  # (B, C, h, w)
        h, w = feat.shape[-2:]
        ys = torch.linspace(-1, 1, h, device=feat.device, dtype=feat.dtype)[:, None].expand(h, w)
        xs = torch.linspace(-1, 1, w, device=feat.device, dtype=feat.dtype)[None, :].expand(h, w)
        pooled = [feat.mean((2, 3))] + [(feat * g).mean((2, 3)) for g in (xs, ys, xs * xs, ys * ys)]
        return self.proj(torch.cat(pooled, dim=1))


class ShapesAlignmentModel(nn.Module):
    """Image encoder + text projection head (over mean-pooled BERT, 384-d) + learnable logit scale."""

    def __init__(
        self, image_size: int = 64, channels: list[int] | None = None, text_dim: int = 384, embed_dim: int = 256
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "image_size": image_size,
            "channels": list(channels or [32, 64, 128, 256]),
            "text_dim": text_dim,
            "embed_dim": embed_dim,
        }
        self.image_encoder = ShapesImageEncoder(self.config["channels"], embed_dim)
        self.text_projection = nn.Sequential(nn.Linear(text_dim, 512), nn.GELU(), nn.Linear(512, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D) unit vectors (resized to the trained size)."""
        size = int(self.config["image_size"])
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return F.normalize(self.image_encoder(pixels), dim=-1)

    def encode_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, 384) mean-pooled BERT states -> (B, D) unit vectors."""
        return F.normalize(self.text_projection(pooled), dim=-1)

    def loss(self, pixels: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the batch (pairs on the diagonal)."""
        img, txt = self.encode_image(pixels), self.encode_text(pooled)
        logits = self.logit_scale.clamp(max=np.log(100)).exp() * img @ txt.T
        target = torch.arange(len(img), device=img.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    @classmethod
    def from_folder(cls, folder: str | Path) -> ShapesAlignmentModel:
        folder = Path(folder)
        config = json.loads((folder / CONFIG_NAME).read_text())
        model = cls(**{k: config[k] for k in ("image_size", "channels", "text_dim", "embed_dim")})
        model.load_state_dict({k: v.float() for k, v in load_file(str(folder / WEIGHTS_NAME)).items()})
        return model.eval()


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states (B, T, D) over the attention mask (B, T) -> (B, D)."""
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def images_to_tensor(images: list[Image.Image], size: int | None = None) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) floats in [-1, 1] (resized to ``size`` if given)."""
    arrays = []
    for image in images:
        rgb = image.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


class ShapesAlignmentScorer:
    """The shipped contrastive scorer: mean-pooled BERT states of the pipeline's text encoder + our projection head."""

    def __init__(
        self,
        model: ShapesAlignmentModel,
        text_encoder: Any,
        tokenizer: Any,
        max_length: int = 32,
        fingerprint: str = "",
    ) -> None:
        self.model = model.eval()
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.fingerprint = fingerprint
        """The weights file's fingerprint (``worker.caption_bank.fingerprint``); empty when built in memory."""

    @classmethod
    def from_folder(cls, model_folder: str | Path, text_encoder: Any, tokenizer: Any) -> ShapesAlignmentScorer:
        """Load ``<model_folder>/alignment``; ``text_encoder``/``tokenizer``: the frozen BERT it was trained on."""
        sub = Path(model_folder) / ALIGNMENT_SUBFOLDER
        if not (sub / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"model_folder {str(model_folder)!r} has no {ALIGNMENT_SUBFOLDER}/{CONFIG_NAME}")
        from worker.caption_bank import fingerprint

        weights = fingerprint(sub / WEIGHTS_NAME)
        return cls(ShapesAlignmentModel.from_folder(sub), text_encoder, tokenizer, fingerprint=weights)

    @torch.inference_mode()
    def text_vectors(self, texts: list[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        # Padded to the longest text of the batch, not to max_length: BERT masks the padding and the pool reads only
        # real positions, so the vectors are the same (max abs difference 2.5e-7 over the 2,080 captions of the shipped
        # model's bank) for 2.6x less encoder time. tokens: (N, T <= max_length).
        tokens = self.tokenizer(
            texts, padding="longest", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).to(device)
        states = self.text_encoder(**tokens).last_hidden_state.float()
        return self.model.encode_text(mean_pool(states, tokens["attention_mask"]).cpu())

    @torch.inference_mode()
    def image_vectors(self, images: list[Image.Image]) -> torch.Tensor:
        return self.model.encode_image(images_to_tensor(images))

    def similarity_matrix(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        return self.image_vectors(images) @ self.text_vectors(texts).T

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        if len(images) != len(texts):
            raise ValueError(f"score needs as many texts as images, got {len(texts)} texts for {len(images)} images")
        return (self.image_vectors(images) * self.text_vectors(texts)).sum(-1).tolist()


class ClipAlignmentScorer:
    """A local CLIP model (transformers ``CLIPModel`` + ``CLIPProcessor``), loaded from files only."""

    def __init__(self, model: Any, processor: Any, fingerprint: str = "") -> None:
        self.model = model.eval()
        self.processor = processor
        self.fingerprint = fingerprint
        """The local CLIP's name and folder: caption vectors from another CLIP are recomputed."""

    @classmethod
    def from_pretrained(cls, local_clip_folder: str | Path) -> ClipAlignmentScorer:
        from transformers import CLIPModel, CLIPProcessor

        folder = Path(local_clip_folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"local_clip_folder {str(folder)!r} is not a folder")
        return cls(
            CLIPModel.from_pretrained(str(folder), local_files_only=True),
            CLIPProcessor.from_pretrained(str(folder), local_files_only=True),
            fingerprint=f"clip:{folder.resolve()}",
        )

    @torch.inference_mode()
    def image_vectors(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        img = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        return F.normalize(getattr(img, "pooler_output", img).float(), dim=-1)

    @torch.inference_mode()
    def text_vectors(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor(text=texts, return_tensors="pt", padding=True)
        txt = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return F.normalize(getattr(txt, "pooler_output", txt).float(), dim=-1)

    @torch.inference_mode()
    def _vectors(self, images: list[Image.Image], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_vectors(images), self.text_vectors(texts)

    def similarity_matrix(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        img, txt = self._vectors(images, texts)
        return img @ txt.T

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        if len(images) != len(texts):
            raise ValueError(f"score needs as many texts as images, got {len(texts)} texts for {len(images)} images")
        img, txt = self._vectors(images, texts)
        return (img * txt).sum(-1).tolist()


def load_scorer(model_folder: str | Path, pipe: Any, clip_path: str | None) -> AlignmentScorer | None:
    """CLIP when ``clip_path`` is given, else the model folder's own scorer (via the pipeline's BERT), else None."""
    if clip_path:
        return ClipAlignmentScorer.from_pretrained(clip_path)
    if not (Path(model_folder) / ALIGNMENT_SUBFOLDER / CONFIG_NAME).is_file():
        log.info("model %s has no alignment scorer and no CLIP path is set: scoring is off", model_folder)
        return None
    text_encoder = getattr(pipe, "text_encoder", None)
    tokenizer = getattr(pipe, "tokenizer", None)
    if text_encoder is None or tokenizer is None:
        raise ValueError(f"pipe {type(pipe).__name__} has no text_encoder/tokenizer for the alignment scorer")
    return ShapesAlignmentScorer.from_folder(model_folder, text_encoder, tokenizer)
