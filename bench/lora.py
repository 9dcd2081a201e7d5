"""LoRAs and ``--draft``, side by side in one run: ``python -m bench.lora [--rounds N] [--steps S] [--model M]``.

On the shipped model (default) or any local diffusers folder, with LoRAs built in code (rank 8 on every attention
projection, like most community LoRAs; ``tests.tiny_adapters``), one grid job at a time through the worker's adapters
and engine (``worker.adapters``, ``Engine.generate``), in rounds that interleave the cases so load drift on a shared
machine hits them alike; each figure is the fastest of the rounds (least disturbed by other processes) and the median:

1. a grid with no LoRA on an engine that never loaded one, the same on an engine whose slots hold LoRAs (disabled: a
   job without LoRA after others used them), and a grid with one LoRA (unfused): goal <= 1.10x; and, less disturbed by
   the rest of a job, one denoiser forward pass (a grid's batch with guidance) with one LoRA vs none, interleaved;
2. consecutive jobs that switch LoRA (every job hot-swaps: the jobs cycle through one LoRA more than there are slots)
   vs jobs that keep the same LoRA: goal <= 1.2x;
3. ``--draft`` (``shared.prompt.resolve.draft_steps``) vs the default steps: goal <= 0.55x.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shared.adapter_config import LoraEntry
from shared.jobs.spec import JobSpec
from shared.model_info import native_resolution
from shared.prompt.resolve import draft_steps
from shared.settings import Settings
from worker.adapters import EngineAdapters
from worker.engine import Engine

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "imagine-shapes"
"""The default model of the bench (the one this repository ships)."""
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""Attention projections the bench's LoRAs train."""


def build_loras(model: str, folder: Path, count: int, family: str) -> dict[str, LoraEntry]:
    """``count`` rank-8 LoRAs for ``model``'s denoiser, saved under ``folder``."""
    from diffusers import DiffusionPipeline

    from tests.tiny_adapters import build_lora
    from worker.model_loader import pipeline_class_name

    if pipeline_class_name(model) == "ShapesPipeline":
        from worker.shapes_pipeline import ShapesPipeline

        pipe = ShapesPipeline.from_pretrained(model)
    else:
        pipe = DiffusionPipeline.from_pretrained(model)
    return {
        f"lora{index}": LoraEntry(
            file=str(
                build_lora(pipe, folder / f"lora{index}.safetensors", rank=8, alpha=8, seed=index, targets=TARGETS)
            ),
            families=(family,),
        )
        for index in range(count)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHIPPED), help="diffusers folder (default: the shipped model)")
    parser.add_argument("--steps", type=int, default=20, help="steps of a default grid (a draft runs fewer)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--forward-iterations", type=int, default=30, help="interleaved denoiser calls")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from shared.adapters import adapter_family

    family = adapter_family(args.model)
    slots = 3
    folder = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    entries = build_loras(args.model, folder, slots + 1, family)
    settings = Settings(loras=entries, lora_max_per_job=slots, device="cpu")
    side = native_resolution(args.model)
    guidance = 1.5 if family == "shapes" else 7.5

    def job(seed: int, steps: int, loras: tuple[tuple[str, float], ...] = ()) -> JobSpec:
        spec = JobSpec.for_prompt("a red circle above a blue square", seed=seed, width=side, height=side, steps=steps)
        return spec.replace(guidance=guidance, loras=loras)

    plain = Engine.load(args.model, "cpu", "float32")
    adapted = Engine.load(args.model, "cpu", "float32")
    adapters = EngineAdapters(adapted, settings)
    plain_adapters = EngineAdapters(plain, settings.model_copy(update={"loras": {}}))

    def run(engine: Engine, owner: EngineAdapters, spec: JobSpec) -> float:
        """Seconds of one job through the adapters and the engine (as ``worker.tasks.run_one`` runs it)."""
        started = time.perf_counter()
        with owner.prepare(spec) as prepared:
            engine.generate(prepared.spec, call_kwargs=prepared.call_kwargs)
        return time.perf_counter() - started

    names = sorted(entries)
    run(plain, plain_adapters, job(0, args.steps))  # warm-up: allocator, kernels, the slots
    run(adapted, adapters, job(0, args.steps, ((names[0], 0.8),)))
    times: dict[str, list[float]] = {
        key: [] for key in ("none", "none_slots", "one", "same", "switch", "default", "draft")
    }
    cycle = 0
    for round_index in range(args.rounds):
        seed = 100 + round_index
        times["none"].append(run(plain, plain_adapters, job(seed, args.steps)))
        times["none_slots"].append(run(adapted, adapters, job(seed, args.steps)))
        times["one"].append(run(adapted, adapters, job(seed, args.steps, ((names[0], 0.8),))))
        times["same"].append(run(adapted, adapters, job(seed, args.steps, ((names[0], 0.8),))))
        # The others in turn while names[0] stays in its slot: with one LoRA more than slots, each is hot-swapped in.
        cycle = cycle % (len(names) - 1) + 1
        switch = ((names[cycle], 0.8),)
        times["switch"].append(run(adapted, adapters, job(seed, args.steps, switch)))
        times["default"].append(run(plain, plain_adapters, job(seed, args.steps)))
        times["draft"].append(run(plain, plain_adapters, job(seed, draft_steps(args.steps))))
    median = {key: statistics.median(values) for key, values in times.items()}
    best = {key: min(values) for key, values in times.items()}
    assert adapters.loras is not None
    print(f"model {args.model} ({family}), {side} px, {args.steps} steps, {args.rounds} rounds, {slots} slots")
    print(
        f"threads {torch.get_num_threads()}, LoRA files read {adapters.loras.files.reads}, "
        f"hot-swaps {adapters.loras.swaps} (switch jobs: {args.rounds})"
    )
    print("| case | fastest s | ratio | median s | ratio | goal |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [
        ("grid, no LoRA (engine never loaded one)", "none", "none", ""),
        ("grid, no LoRA (slots loaded, disabled)", "none_slots", "none", ""),
        ("grid, one LoRA (unfused)", "one", "none", "<= 1.10x"),
        ("same LoRA as the job before", "same", "same", ""),
        ("another LoRA than the job before (hot-swap)", "switch", "same", "<= 1.2x"),
        ("default steps", "default", "default", ""),
        (f"--draft ({draft_steps(args.steps)} steps)", "draft", "default", "<= 0.55x"),
    ]
    for label, key, against, goal in rows:
        print(
            f"| {label} | {best[key]:.3f} | {best[key] / best[against]:.3f}x | {median[key]:.3f} "
            f"| {median[key] / median[against]:.3f}x | {goal} |"
        )
    forward = forward_pass(plain, adapted, adapters, names[0], side=side, iterations=args.forward_iterations)
    fastest, middle = min(forward["no LoRA"]), statistics.median(forward["no LoRA"])
    for label, values in forward.items():
        goal = "<= 1.10x" if label != "no LoRA" else ""
        print(
            f"| denoiser forward, {label} | {min(values):.4f} | {min(values) / fastest:.3f}x "
            f"| {statistics.median(values):.4f} | {statistics.median(values) / middle:.3f}x | {goal} |"
        )


def forward_pass(
    plain: Engine, adapted: Engine, adapters: EngineAdapters, lora: str, *, side: int, iterations: int
) -> dict[str, list[float]]:
    """Seconds of one denoiser call on a grid's batch with guidance (8 rows), without and with one LoRA (unfused),
    interleaved ``iterations`` times."""
    assert adapters.loras is not None
    adapters.loras.apply([(lora, 0.8)])
    pipe = plain.pipes.text2img
    denoiser = pipe.unet
    channels, height, width = plain.latent_shape(side, side)
    cond = plain.encode_prompt(JobSpec.for_prompt("a red circle", seed=0, width=side, height=side, steps=1))
    states = cond.prompt_embeds.expand(8, -1, -1)
    sample = torch.randn(8, channels, height, width)
    timestep = torch.tensor(500)
    times: dict[str, list[float]] = {"no LoRA": [], "one LoRA": []}
    with torch.inference_mode():
        for _ in range(iterations):
            for label, module in (("no LoRA", denoiser), ("one LoRA", adapted.pipes.text2img.unet)):
                started = time.perf_counter()
                module(sample, timestep, encoder_hidden_states=states)
                times[label].append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
