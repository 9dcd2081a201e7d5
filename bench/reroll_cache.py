"""The encoding cache on every family: a re-roll (the same prompt and ``--no``, new seeds) skips the text encoder.

``python -m bench.reroll_cache [--families flux-dev,zimage] [--rounds 3]``

For each family's tiny pipeline (``tests/tiny_families.py``, loaded by ``Engine.load`` at the pipeline's own text
length) and each round: a grid of a new prompt with ``--no``, then its re-roll. Forward hooks on every text encoder
of the pipeline count the encoder calls of each; the table gives the median encode-stage seconds of the first grid and
of the re-roll, the encoder calls of each (the re-roll's must be 0) and whether the re-roll was a cache hit.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.overhead import FAMILY_NAMES, build_family
from shared.jobs.spec import JobSpec
from worker.engine import Engine

log = logging.getLogger(__name__)

ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
"""The pipeline attributes that hold text encoders."""


@dataclass
class Row:
    family: str
    first_encode_s: float
    reroll_encode_s: float
    first_calls: int
    reroll_calls: int
    reroll_hit: bool


def measure(engine: Engine, name: str, rounds: int) -> Row:
    calls: list[int] = [0]
    hooks = [
        module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        for attr in ENCODERS
        if isinstance(module := getattr(engine.pipes.text2img, attr, None), torch.nn.Module)
    ]
    first: list[tuple[float, int]] = []
    again: list[tuple[float, int, bool]] = []
    try:
        for index in range(rounds):
            spec = JobSpec.for_prompt(
                f"a lighthouse in a storm, take {index}", seed=10 + index, width=32, height=32, steps=2, images=1
            ).replace(negative=(f"fog {index}",))
            calls[0] = 0
            grid = engine.generate(spec)
            first.append((grid.timings["encode_s"], calls[0]))
            calls[0] = 0
            reroll = engine.generate(spec.replace(seeds=(spec.seeds[0] + 1,)))
            again.append((reroll.timings["encode_s"], calls[0], bool(reroll.notes["text_cache_hit"])))
    finally:
        for hook in hooks:
            hook.remove()
    return Row(
        family=name,
        first_encode_s=statistics.median(item[0] for item in first),
        reroll_encode_s=statistics.median(item[0] for item in again),
        first_calls=max(item[1] for item in first),
        reroll_calls=max(item[1] for item in again),
        reroll_hit=all(item[2] for item in again),
    )


def format_table(rows: list[Row], header: dict[str, Any]) -> str:
    lines = [" ".join(f"{key}={value}" for key, value in header.items())]
    lines.append(
        f"{'family':<22} {'first_encode_s':>14} {'reroll_encode_s':>15} {'first_calls':>11} {'reroll_calls':>12} "
        f"{'reroll_hit':>10}"
    )
    for row in rows:
        lines.append(
            f"{row.family:<22} {row.first_encode_s:>14.4f} {row.reroll_encode_s:>15.4f} {row.first_calls:>11d} "
            f"{row.reroll_calls:>12d} {row.reroll_hit!s:>10}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILY_NAMES), help="comma-separated shared.families names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.families.split(",") if name.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-reroll-") as scratch:
        for name in names:
            engine = Engine.load(str(build_family(name, Path(scratch))), device="cpu", dtype="float32")
            rows.append(measure(engine, name, args.rounds))
    print(format_table(rows, {"rounds": args.rounds, "threads": torch.get_num_threads()}), flush=True)
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
