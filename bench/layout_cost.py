"""What a layout costs: seconds for a 2x2 grid of a relation prompt, side by side in one run, with diffusers' own
attention processor, with ``LayoutAttnProcessor`` installed but no layout, and with the layout applied.

``python bench/layout_cost.py [--model PATH] [--rounds 2] [--repeats 5]``; about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from shared.defaults import DEFAULT_MODEL, LAYOUT_STRENGTH, PROJECT_ROOT
from training.evaluate import Steering, generate
from worker.shapes_pipeline import ShapesPipeline

PROMPT = "a red circle above a blue square"


def seconds(pipe: ShapesPipeline, steering: Steering | None, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate(pipe, PROMPT, 4, 20, 1.5, steering=steering)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(PROJECT_ROOT / DEFAULT_MODEL))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    pipe = ShapesPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    generate(pipe, PROMPT, 4, 2, 1.5)  # warm-up
    print(f"4 images x 20 steps of {PROMPT!r}, guidance 1.5, {torch.get_num_threads()} threads (medians)")
    print("| round | diffusers processor | layout processor, no layout | with layout | layout / diffusers |")
    print("| --- | --- | --- | --- | --- |")
    for round_ in range(1, args.rounds + 1):
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        plain = seconds(pipe, None, args.repeats)
        steering = Steering.of(pipe, LAYOUT_STRENGTH)
        installed = seconds(pipe, None, args.repeats)
        steered = seconds(pipe, steering, args.repeats)
        print(f"| {round_} | {plain:.2f} s | {installed:.2f} s | {steered:.2f} s | {steered / plain:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
