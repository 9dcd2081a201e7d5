"""What our engine costs on top of diffusers, per family, side by side in one run: a grid made by ``Engine.generate``
versus the plain pipeline call with the same components, prompt, steps, guidance and seeds.

``python -m bench.overhead [--families flux-dev,sd3] [--size 64] [--steps 4] [--rounds 5] [--threads 1]``

For every family the tiny pipeline of ``tests/tiny_families.py`` is saved and loaded by ``Engine.load`` (its text at
the pipeline's own length); both sides then take the same loaded modules. Each round runs both sides in alternating
order (A-B, then B-A), each on a new prompt, so both sides run the text encoder on it; the engine's cache keeps the
empty text (the negative of CFG families and of every job without ``--no``), as it does after a worker's first job,
while the pipeline encodes its negative on every call. The table gives the median wall and CPU seconds of each side,
their ratio (goal: at most 1.03), and the largest pixel difference between the two grids (0 when our conditioning
equals the pipeline's own; Chroma differs by design: the text module passes its mask as bool, which masks padding as
Chroma was trained, where the pipeline's float mask is added to the logits and masks nothing; SDPA also takes the
bool mask about 13% slower on the tiny model, the bulk of Chroma's ratio).
One torch thread by default: on a shared 2-core machine two threads mostly wait for each other on the tiny models'
microsecond ops, and the timings scatter several-fold.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.jobs.spec import JobSpec
from worker.engine import Engine

log = logging.getLogger(__name__)

FAMILY_NAMES = ("sd", "sdxl", "flux-dev", "flux-schnell", "flux2-klein", "sd3", "qwenimage", "zimage", "chroma")
"""The families measured by default (``shared.families`` names)."""


@dataclass
class Row:
    """One family's figures."""

    family: str
    plain_s: float
    engine_s: float
    plain_cpu_s: float
    engine_cpu_s: float
    max_pixel_diff: int

    @property
    def ratio(self) -> float:
        return self.engine_s / self.plain_s

    @property
    def cpu_ratio(self) -> float:
        return self.engine_cpu_s / self.plain_cpu_s


def build_family(name: str, root: Path) -> Path:
    """The tiny pipeline of family ``name`` saved under ``root``."""
    from tests.tiny_families import FAMILIES, build_tiny_flux2_klein
    from tests.tiny_models import build_tiny_sd, build_tiny_sdxl

    builders: dict[str, Callable[[Path], Path]] = {
        "sd": build_tiny_sd,
        "sdxl": build_tiny_sdxl,
        "flux2-klein-distilled": lambda folder: build_tiny_flux2_klein(folder, distilled=True),
        **{key: family.build for key, family in FAMILIES.items()},
    }
    if name not in builders:
        raise ValueError(f"--families must name known families ({', '.join(builders)}), got {name!r}")
    return builders[name](root / name)


def plain_call(engine: Engine, spec: JobSpec) -> list[Any]:
    """The pipeline's own call for ``spec``: prompt text, its own encoding and noise, the family's guidance
    arguments (``Family.guidance_kwargs``), the same seeds and steps."""
    family = engine.family
    kwargs: dict[str, Any] = dict(family.guidance_kwargs(spec, negative=family.info.negative == "cfg"))
    if family.info.name == "qwenimage":
        kwargs["negative_prompt"] = ""  # Qwen-Image's true CFG runs only with a negative; ours is "" too
    out = engine.pipes.text2img(
        prompt=spec.parts[0][0],
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.steps,
        num_images_per_prompt=len(spec.seeds),
        generator=engine.generators(spec.seeds),
        output_type="pil",
        **kwargs,
    )
    return list(out.images)


def measure(engine: Engine, name: str, *, size: int, steps: int, rounds: int) -> Row:
    times: dict[str, list[float]] = {"plain": [], "engine": []}
    cpu: dict[str, list[float]] = {"plain": [], "engine": []}
    difference = 0

    def run(side: str, spec: JobSpec) -> list[Any]:
        engine.text.cache_clear()
        engine.text.encode([("", 1.0)], [])  # the empty text, cached in a serving worker
        started, started_cpu = time.perf_counter(), time.process_time()
        images = plain_call(engine, spec) if side == "plain" else engine.generate(spec).images
        times[side].append(time.perf_counter() - started)
        cpu[side].append(time.process_time() - started_cpu)
        return images

    spec0 = JobSpec.for_prompt("a warm-up", seed=1, width=size, height=size, steps=steps)
    run("plain", spec0)
    run("engine", spec0)
    for series in (*times.values(), *cpu.values()):
        series.clear()
    for index in range(rounds):
        spec = JobSpec.for_prompt(
            f"a red cat on a blue mat, take {index}",
            seed=100 + index,
            width=size,
            height=size,
            steps=steps,
            guidance=engine.family.info.default_guidance or 7.5,
        )
        order = ("plain", "engine") if index % 2 == 0 else ("engine", "plain")
        grids = {side: run(side, spec) for side in order}
        for ours, theirs in zip(grids["engine"], grids["plain"], strict=True):
            diff = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16)).max()
            difference = max(difference, int(diff))
    return Row(
        family=name,
        plain_s=statistics.median(times["plain"]),
        engine_s=statistics.median(times["engine"]),
        plain_cpu_s=statistics.median(cpu["plain"]),
        engine_cpu_s=statistics.median(cpu["engine"]),
        max_pixel_diff=difference,
    )


def format_table(rows: list[Row], header: dict[str, Any]) -> str:
    lines = [" ".join(f"{key}={value}" for key, value in header.items())]
    lines.append(
        f"{'family':<22} {'plain_s':>8} {'engine_s':>9} {'ratio':>6} {'plain_cpu':>9} {'engine_cpu':>10} "
        f"{'cpu_ratio':>9} {'max_px_diff':>11}"
    )
    for row in rows:
        lines.append(
            f"{row.family:<22} {row.plain_s:>8.3f} {row.engine_s:>9.3f} {row.ratio:>6.3f} {row.plain_cpu_s:>9.3f} "
            f"{row.engine_cpu_s:>10.3f} {row.cpu_ratio:>9.3f} {row.max_pixel_diff:>11d}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILY_NAMES), help="comma-separated shared.families names")
    parser.add_argument("--size", type=int, default=64, help="square side in pixels (a multiple of 4)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per family (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.families.split(",") if name.strip()]
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch:
        for name in names:
            folder = build_family(name, Path(scratch))
            engine = Engine.load(str(folder), device="cpu", dtype="float32")
            rows.append(measure(engine, name, size=args.size, steps=args.steps, rounds=args.rounds))
            print(format_table(rows[-1:], {}).splitlines()[-1], flush=True)
    header = {
        "size": args.size,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "dtype": "float32",
    }
    print(format_table(rows, header), flush=True)
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
