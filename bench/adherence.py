"""Evaluate the shipped model and print the model card's table: ``python bench/adherence.py [--model PATH]``.

Held-out prompt adherence judged by the deterministic detector (``training.detector``), the multi-prompt blend and
`--no` checks, the contrastive scorer's top-1 retrieval among 10 captions, and sampling seconds for 4 images. Takes
about 5-10 minutes on 2 CPU cores (400 images); ``--json`` also writes the raw numbers. Held-out prompts get
layouts as the worker applies them (``--layout-strength``, default the configured one; 0 measures the model alone).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from shared.defaults import DEFAULT_MODEL, DEFAULT_STEPS, PROJECT_ROOT
from shared.settings import get_settings
from training.evaluate import run_all

log = logging.getLogger(__name__)


def table(r: dict[str, Any]) -> str:
    """The markdown table of the model card."""
    one, two, blend, neg = r["one_object"], r["two_object"], r["blend"], r["negative"]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    rows = [
        ("one-object: colour right", pct(one["colour"]), ">= 90%"),
        ("one-object: shape right", pct(one["shape"]), ">= 90%"),
        ("one-object: colour and shape right", pct(one["colour_and_shape"]), ""),
        ("one-object: region right (3x3)", pct(one["region"]), ""),
        ("one-object: exactly one object", pct(one["one_object"]), ""),
        ("two-object: both colours present", pct(two["both_colours"]), ">= 70%"),
        ("two-object: spatial relation right", pct(two["relation"]), ">= 60%"),
        ("two-object: both shapes right", pct(two["both_shapes"]), ""),
    ]
    for name, value in r["retrieval"].items():
        rows.append((f"alignment top-1 of 10 captions: {name}", pct(value), ">= 80%"))
    for name in ("a red circle", "a blue square", "a red circle::1 a blue square::1"):
        rows.append((f"red circle + blue square both found: `{name}`", pct(blend[name]), "blend > singles"))
    if "bare" in r:
        rows.append(("bare `a <colour> <shape>` (32 x 2 images): exactly one object", pct(r["bare"]["one_object"]), ""))
        rows.append(("bare `a <colour> <shape>`: colour and shape right", pct(r["bare"]["colour_and_shape"]), ""))
    rows.append(("red pixels: `a red circle`", pct(neg["a red circle"]), ""))
    rows.append(("red pixels: `a red circle --no red`", pct(neg["a red circle --no red"]), "< plain"))
    t = r["timing"]
    rows.append(
        (
            f"4 images x {r['steps']} steps, guidance {r['guidance']:g}, CPU ({t['threads']} threads)",
            f"{t['seconds']:.2f} s (min {t['min_seconds']:.2f} s, load avg {r['load_average']:.1f})",
            "<= ~3 s",
        )
    )
    head = (
        f"Held-out prompts: 50 one-object + 50 two-object, {r['images_per_prompt']} images each, "
        f"{r['steps']} DDIM steps, guidance {r['guidance']:g}, layout strength {r['layout_strength']:g}.\n\n"
        "| measure | value | goal |\n| --- | --- | --- |\n"
    )
    return head + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(PROJECT_ROOT / DEFAULT_MODEL))
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument(
        "--guidance", type=float, default=get_settings().guidance, help="default: the configured settings.guidance"
    )
    parser.add_argument(
        "--layout-strength",
        type=float,
        default=get_settings().layout_strength,
        help="attention bias of place phrases (worker.layout_attention); 0: the model alone",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default="", help="also write the raw numbers to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_all(args.model, args.images_per_prompt, args.steps, args.guidance, args.device, args.layout_strength)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
