"""The layout bias on joint attention (``worker.layout_joint``), measured on the tiny FLUX.1 dev, Chroma and FLUX.2
klein pipelines: how far an all-zero bias is from no bias (must be 0), how much a bias of strength 2 moves the
denoised latents, and what the bias costs in time (the same job with and without it, medians, one thread).

``python -m bench.layout_joint [--families flux-dev,chroma,flux2-klein] [--steps 4] [--rounds 5]``

Random tiny weights say nothing about placement quality: that is measured on the shipped model only
(docs/model-card.md). What this shows is that the mechanism is inert at zero and acts when set, on every block.
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

from bench.overhead import build_family
from shared.jobs.spec import JobSpec
from worker.engine import Engine
from worker.layout_attention import LayoutBias, RowLayout
from worker.layout_joint import JointLayout

log = logging.getLogger(__name__)

PROMPT = "a red cat to the left of a blue dog"


def run(engine: Engine, spec: JobSpec, row: RowLayout | None, strength: float) -> tuple[torch.Tensor, float]:
    """The final latents of ``spec`` with a joint layout of ``row`` (None: none) and the seconds it took."""
    cond = engine.encode_prompt(spec)
    kwargs, _ = engine.condition_images(spec, cond, len(spec.seeds))
    extra: dict[str, Any] = {}
    if row is not None:
        height, width = engine.family.token_grid(engine.latent_shape(spec.width, spec.height))
        bias = LayoutBias((row,) * len(spec.seeds), height, width, strength)
        extra[engine.family.layout_kwarg] = {"layout": JointLayout(bias, kwargs["prompt_embeds"])}
    latents = engine.family.latents_argument(engine.prepare_latents(spec, engine.generators(spec.seeds)))
    started = time.perf_counter()
    out = engine.pipes.text2img(
        **kwargs,
        **extra,
        latents=latents,
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.steps,
        generator=engine.generators(spec.seeds),
        output_type="latent",
    )
    return out.images, time.perf_counter() - started


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="flux-dev,chroma,flux2-klein")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    print(f"{'family':<12} {'zero_vs_none_max':>16} {'bias_vs_none_mean':>17} {'plain_s':>8} {'biased_s':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-layout-") as scratch:
        for name in [item.strip() for item in args.families.split(",") if item.strip()]:
            engine = Engine.load(str(build_family(name, Path(scratch))), device="cpu", dtype="float32")
            spec = JobSpec.for_prompt(PROMPT, seed=5, width=args.size, height=args.size, steps=args.steps)
            row, _ = engine.prepare_layout(spec)
            zero_row: RowLayout = tuple((box, ()) for box, _ in row)
            plain, _ = run(engine, spec, None, 0.0)
            zero, _ = run(engine, spec, zero_row, 2.0)
            biased, _ = run(engine, spec, row, 2.0)
            times: dict[str, list[float]] = {"plain": [], "biased": []}
            for index in range(args.rounds):
                for side in ("plain", "biased") if index % 2 == 0 else ("biased", "plain"):
                    times[side].append(run(engine, spec, row if side == "biased" else None, 2.0)[1])
            result = {
                "family": name,
                "zero_vs_none_max": float((zero - plain).abs().max()),
                "bias_vs_none_mean": float((biased - plain).abs().mean()),
                "plain_s": statistics.median(times["plain"]),
                "biased_s": statistics.median(times["biased"]),
            }
            results.append(result)
            print(
                f"{name:<12} {result['zero_vs_none_max']:>16.2e} {result['bias_vs_none_mean']:>17.4f} "
                f"{result['plain_s']:>8.3f} {result['biased_s']:>9.3f}",
                flush=True,
            )
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
