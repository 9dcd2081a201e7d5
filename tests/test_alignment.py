"""Alignment scorers: the shipped contrastive model, a tiny CLIP built from configs, and ``load_scorer``."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from tests.tiny_models import clip_tokenizer
from training.candidates import describe_candidates
from training.scenes import COLOURS, captions, one_object_prompt, render, sample_scenes, two_object_prompt
from worker.alignment import (
    ClipAlignmentScorer,
    ShapesAlignmentModel,
    ShapesAlignmentScorer,
    load_scorer,
    mean_pool,
)
from worker.caption_bank import CaptionBank
from worker.shapes_pipeline import load_text_encoder

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "imagine-shapes"


@pytest.fixture(scope="module")
def bert() -> tuple[object, object]:
    return load_text_encoder()


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    arrays = ((pixels.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def test_mean_pool_ignores_padding() -> None:
    states = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(states, mask), torch.tensor([[2.0, 2.0]]))


def test_infonce_loss_prefers_matched_pairs() -> None:
    torch.manual_seed(0)
    model = ShapesAlignmentModel(image_size=16, channels=[8, 16], embed_dim=8)
    pixels, pooled = torch.randn(6, 3, 16, 16), torch.randn(6, 384)
    loss = model.loss(pixels, pooled)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.logit_scale.grad is not None


def test_shipped_scorer_matches_renders_to_their_captions(bert: tuple[object, object]) -> None:
    encoder, tokenizer = bert
    scorer = ShapesAlignmentScorer.from_folder(SHIPPED, encoder, tokenizer)
    scenes = sample_scenes(8, torch.Generator().manual_seed(11), held_out=True)
    texts = captions(scenes, random.Random(0))
    images = to_pil(render(scenes))
    matrix = scorer.similarity_matrix(images, texts)
    assert matrix.shape == (8, 8) and float(matrix.abs().max()) <= 1.0 + 1e-5
    assert int((matrix.argmax(1) == torch.arange(8)).sum()) >= 7
    scores = scorer.score(images, texts)
    assert np.allclose(scores, matrix.diagonal().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="as many texts as images"):
        scorer.score(images, texts[:3])


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 514,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 512,
            "eos_token_id": 513,
            "pad_token_id": 513,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return folder


def test_clip_scorer_from_local_folder(tiny_clip: Path) -> None:
    scorer = ClipAlignmentScorer.from_pretrained(tiny_clip)
    images = to_pil(render(sample_scenes(2, torch.Generator().manual_seed(0))))
    texts = ["a red circle", "a blue square", "two stars"]
    matrix = scorer.similarity_matrix(images, texts)
    assert matrix.shape == (2, 3) and float(matrix.abs().max()) <= 1.0 + 1e-5
    scores = scorer.score(images, texts[:2])
    assert np.allclose(scores, matrix.diagonal().numpy(), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="local_clip_folder"):
        ClipAlignmentScorer.from_pretrained(tiny_clip / "missing")


def test_load_scorer_picks_clip_then_shipped_then_none(
    tiny_clip: Path, bert: tuple[object, object], tmp_path: Path
) -> None:
    encoder, tokenizer = bert
    pipe = SimpleNamespace(text_encoder=encoder, tokenizer=tokenizer)  # what load_scorer reads from a pipeline
    assert isinstance(load_scorer(SHIPPED, pipe, str(tiny_clip)), ClipAlignmentScorer)
    assert isinstance(load_scorer(SHIPPED, pipe, None), ShapesAlignmentScorer)
    assert load_scorer(tmp_path, pipe, None) is None


def test_shipped_caption_bank_describes_rendered_scenes(bert: tuple[object, object]) -> None:
    encoder, tokenizer = bert
    scorer = ShapesAlignmentScorer.from_folder(SHIPPED, encoder, tokenizer)
    bank = CaptionBank.load(SHIPPED / "alignment", scorer)
    assert bank is not None and len(bank.captions) == len(describe_candidates()) == 2080
    scenes = sample_scenes(20, torch.Generator().manual_seed(3), held_out=True)
    images = to_pil(render(scenes))
    found, colours = 0, 0
    for b, vector in enumerate(scorer.image_vectors(images)):
        best = bank.best(vector, 4)
        assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)
        n = int(scenes.n_objects[b])
        if n == 1:
            truth = one_object_prompt(int(scenes.colour[b, 0]), int(scenes.shape[b, 0]), int(scenes.region[b]))
        else:
            c0, s0, c1, s1 = (
                int(v) for v in (scenes.colour[b, 0], scenes.shape[b, 0], scenes.colour[b, 1], scenes.shape[b, 1])
            )
            truth = two_object_prompt(c0, s0, int(scenes.axis[b]), c1, s1)
        found += truth in [text for text, _ in best]
        colours += all(COLOURS[int(scenes.colour[b, k])] in best[0][0] for k in range(n))
    # held-out scenes, 2,080 candidates: the right caption is among the four offered, the colours in the first
    assert found >= 16 and colours >= 18, (found, colours)


def test_caption_vectors_of_other_weights_are_recomputed(bert: tuple[object, object], tmp_path: Path) -> None:
    encoder, tokenizer = bert
    scorer = ShapesAlignmentScorer.from_folder(SHIPPED, encoder, tokenizer)
    captions_ = ["a red circle in the center", "a blue square at the top", "a green star on the left"]
    fresh = CaptionBank.build(captions_, scorer)
    fresh.save(tmp_path, "another-model")  # as if written by a scorer with other weights
    loaded = CaptionBank.load(tmp_path, scorer)
    assert loaded is not None and loaded.captions == tuple(captions_)
    assert torch.allclose(loaded.vectors, fresh.vectors, atol=1e-5)  # recomputed in fp32, not the stored fp16
    fresh.save(tmp_path, scorer.fingerprint)
    assert torch.equal(CaptionBank.load(tmp_path, scorer).vectors, fresh.vectors.half().float())  # type: ignore[union-attr]
    assert CaptionBank.load(tmp_path / "none", scorer) is None
    with pytest.raises(ValueError, match=r"vectors must be \(3, D\), got \(2, 4\)"):
        CaptionBank(tuple(captions_), torch.zeros(2, 4))
