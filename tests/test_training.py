"""Procedural data (determinism, hold-out, caption/label agreement), the detector on renders, a training smoke run."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from shared.defaults import DEFAULT_MODEL
from training.batches import scene_batches
from training.coord_unet import CoordUNet2DConditionModel
from training.detector import detect, largest_of
from training.evaluate import held_out_prompts
from training.scenes import (
    COLOUR_WORDS,
    COLOURS,
    HELD_OUT_ONE,
    HELD_OUT_TWO,
    SHAPE_WORDS,
    SHAPES,
    captions,
    render,
    sample_scenes,
)
from training.train import TrainConfig, blend_states, encode_texts, load_bert, train
from worker.alignment import ShapesAlignmentModel, ShapesAlignmentScorer
from worker.caption_bank import VECTORS_NAME, CaptionBank
from worker.shapes_pipeline import TOKENS_PER_CHUNK, ShapesPipeline, text_encoder_folder
from worker.text import TextEncoding

log = logging.getLogger(__name__)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)


def test_scenes_and_captions_are_deterministic() -> None:
    a = sample_scenes(64, torch.Generator().manual_seed(3))
    b = sample_scenes(64, torch.Generator().manual_seed(3))
    assert torch.equal(render(a), render(b))
    assert captions(a, random.Random(1)) == captions(b, random.Random(1))
    c = sample_scenes(64, torch.Generator().manual_seed(4))
    assert not torch.equal(render(a), render(c))


def test_hold_out_is_never_rendered_in_training_and_is_what_evaluation_asks() -> None:
    s = sample_scenes(4000, torch.Generator().manual_seed(0))
    one = s.n_objects == 1
    c, sh = s.colour, s.shape
    assert not HELD_OUT_ONE[c[one, 0], sh[one, 0], s.region[one]].any()
    assert not HELD_OUT_TWO[c[~one, 0], sh[~one, 0], s.axis[~one], c[~one, 1], sh[~one, 1]].any()
    # every colour, shape, region and relation is still seen in training
    assert set(c[one, 0].tolist()) == set(range(len(COLOURS))) and set(s.region[one].tolist()) == set(range(9))
    h = sample_scenes(500, torch.Generator().manual_seed(0), held_out=True)
    hone = h.n_objects == 1
    assert HELD_OUT_ONE[h.colour[hone, 0], h.shape[hone, 0], h.region[hone]].all()
    prompts = held_out_prompts()
    assert len(prompts) == 100 and len({p.prompt for p in prompts}) == 100


def test_captions_name_the_rendered_attributes() -> None:
    s = sample_scenes(300, torch.Generator().manual_seed(1))
    for b, text in enumerate(captions(s, random.Random(2))):
        for k in range(int(s.n_objects[b])):
            assert any(w in text for w in COLOUR_WORDS[int(s.colour[b, k])]), text
            assert any(w in text for w in SHAPE_WORDS[int(s.shape[b, k])]), text


def test_detector_recognises_the_generators_renderings() -> None:
    s = sample_scenes(400, torch.Generator().manual_seed(2))
    images = to_uint8(render(s))
    right = 0
    for b in range(len(s)):
        found = detect(images[b])
        ok = len(found) == int(s.n_objects[b])
        for k in range(int(s.n_objects[b])):
            d = largest_of(found, COLOURS[int(s.colour[b, k])])
            ok = ok and d is not None and d.shape == SHAPES[int(s.shape[b, k])]
        if ok and int(s.n_objects[b]) == 2:
            a, c = largest_of(found, COLOURS[int(s.colour[b, 0])]), largest_of(found, COLOURS[int(s.colour[b, 1])])
            assert a is not None and c is not None
            ok = a.x < c.x if int(s.axis[b]) == 0 else a.y < c.y
        right += ok
    assert right >= 0.99 * len(s)


def test_worker_batches_are_seeded_streams_whose_tokens_are_their_captions() -> None:
    folder = str(text_encoder_folder())
    first = scene_batches(6, 3, folder, TOKENS_PER_CHUNK, workers=2, pin_memory=False)
    again = scene_batches(6, 3, folder, TOKENS_PER_CHUNK, workers=2, pin_memory=False)
    a = [next(first) for _ in range(4)]
    b = [next(again) for _ in range(4)]
    assert [x["texts"] for x in a] == [x["texts"] for x in b]
    assert all(torch.equal(x["scene.center"], y["scene.center"]) for x, y in zip(a, b, strict=True))
    # batches alternate between the two workers, whose streams differ
    assert a[0]["texts"] != a[1]["texts"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    batch = a[2]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (6, TOKENS_PER_CHUNK)
    decoded = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    # BERT's basic tokenizer splits punctuation: "five-pointed" comes back as "five - pointed"
    assert [d.replace(" - ", "-") for d in decoded] == [t.lower() for t in batch["texts"]]
    colours = batch["scene.colour"][:, 0].tolist()
    assert all(any(word in text for word in COLOUR_WORDS[c]) for text, c in zip(batch["texts"], colours, strict=True))


def test_blend_rows_are_the_engines_multi_prompt_of_each_objects_phrase() -> None:
    folder = str(text_encoder_folder())
    plain = scene_batches(12, 5, folder, TOKENS_PER_CHUNK, workers=0, pin_memory=False)
    blended = scene_batches(12, 5, folder, TOKENS_PER_CHUNK, workers=0, pin_memory=False, blend_rows=3)
    a, batch = next(plain), next(blended)
    # blend choices have their own generator: the scenes and captions are the stream without blends
    assert a["texts"] == batch["texts"] and torch.equal(a["input_ids"], batch["input_ids"])
    rows = batch["blend_index"].tolist()
    assert len(rows) == 3 and all(int(batch["scene.n_objects"][r]) == 2 for r in rows)
    assert all(0.35 <= w <= 0.65 for w in batch["blend_weight"].tolist())
    for r, (first, second) in zip(rows, batch["blend_texts"], strict=True):
        for k, phrase in ((0, first), (1, second)):
            assert any(word in phrase for word in COLOUR_WORDS[int(batch["scene.colour"][r, k])])
            assert any(word in phrase for word in SHAPE_WORDS[int(batch["scene.shape"][r, k])])

    encoder, _ = load_bert("", torch.device("cpu"))
    states, _ = encode_texts(encoder, batch["input_ids"], batch["attention_mask"])
    pipe = ShapesPipeline.from_pretrained(DEFAULT_MODEL)
    text = TextEncoding.from_pipeline(pipe, model_key="shapes")
    mixed = blend_states(encoder, states, batch, torch.device("cpu"), text.contextual_embeddings("").float())
    untouched = [r for r in range(12) if r not in rows]
    assert torch.equal(mixed[untouched], states[untouched])
    # what a member's `first::w second::1-w` conditions the shipped model on
    w = float(batch["blend_weight"][1])
    first, second = batch["blend_texts"][1]
    engine = text.encode([(first, w), (second, 1 - w)], []).prompt_embeds  # (1, 32, 384)
    assert engine.shape == (1, TOKENS_PER_CHUNK, 384)
    torch.testing.assert_close(mixed[rows[1]], engine[0].float(), atol=1e-4, rtol=1e-4)


def test_phrase_rows_caption_one_object_scenes_by_their_bare_phrase() -> None:
    folder = str(text_encoder_folder())
    plain = next(scene_batches(32, 6, folder, TOKENS_PER_CHUNK, workers=0, pin_memory=False))
    batch = next(scene_batches(32, 6, folder, TOKENS_PER_CHUNK, workers=0, pin_memory=False, phrase_rows=4))
    changed = [b for b in range(32) if batch["texts"][b] != plain["texts"][b]]
    assert 1 <= len(changed) <= 4 and all(int(batch["scene.n_objects"][b]) == 1 for b in changed)
    for b in changed:
        text = batch["texts"][b]
        # "a crimson disc", "a small cobalt box": article, optional size, colour, shape; nothing else
        assert text.split()[0] in ("a", "an") and len(text.split()) <= 5
        assert any(word in text for word in COLOUR_WORDS[int(batch["scene.colour"][b, 0])])
        assert any(word in text for word in SHAPE_WORDS[int(batch["scene.shape"][b, 0])])
        assert not torch.equal(batch["input_ids"][b], plain["input_ids"][b])


def test_training_smoke_run_writes_a_loadable_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny-shapes"
    info = train(
        TrainConfig(
            out=str(out), preset="tiny", steps=3, batch=4, log_every=1, seed=0, blend_share=0.5, phrase_share=0.25
        )
    )
    assert info["steps"] == 3 and np.isfinite(info["final_loss"]) and np.isfinite(info["final_align_loss"])
    assert json.loads((out / "training_info.json").read_text())["config"]["preset"] == "tiny"
    pipe = ShapesPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", generator=torch.Generator().manual_seed(0), num_inference_steps=2).images[0]
    assert image.size == (16, 16)
    align = ShapesAlignmentModel.from_folder(out / "alignment")
    assert align.encode_image(torch.zeros(2, 3, 16, 16)).shape == (2, 32)
    # the /describe caption bank was written for exactly these alignment weights (loading it recomputes nothing)
    scorer = ShapesAlignmentScorer.from_folder(out, pipe.text_encoder, pipe.tokenizer)
    stored = load_file(str(out / "alignment" / VECTORS_NAME))["vectors"]
    bank = CaptionBank.load(out / "alignment", scorer)
    assert bank is not None and torch.equal(bank.vectors, stored.float()) and stored.shape == (2080, 32)

    # --coords continues the plain model with coordinate channels; the folder then names the coordinate UNet
    more = tmp_path / "tiny-coords"
    train(TrainConfig(out=str(more), preset="tiny", steps=2, batch=4, seed=1, coords=True, init_from=str(out)))
    assert json.loads((more / "model_index.json").read_text())["unet"] == ["training", "CoordUNet2DConditionModel"]
    coord_pipe = ShapesPipeline.from_pretrained(more)
    assert isinstance(coord_pipe.unet, CoordUNet2DConditionModel)
    assert coord_pipe.unet.conv_in.coord_weight.abs().max() > 0  # learnt from zero in two steps
    plain_weight = pipe.unet.conv_in.weight
    assert coord_pipe.unet.conv_in.weight.shape == plain_weight.shape
