"""The shipped model's /describe candidates, and the command that writes its caption bank into a model folder.

    python -m training.candidates --model models/imagine-shapes

Candidates are the evaluation's plain phrasings of every scene the vocabulary can describe: one object, "a <colour>
<shape> <region phrase>" (8 x 4 x 9 = 288), and two objects, "a <c0> <s0> to the left of / above a <c1> <s1>" with two
different colours (8 x 4 x 2 x 7 x 4 = 1,792): 2,080 in all. ``worker.caption_bank`` documents the files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from training.scenes import AXES, COLOURS, REGIONS, SHAPES, one_object_prompt, two_object_prompt

log = logging.getLogger(__name__)


def describe_candidates() -> list[str]:
    """Every one-object then every two-object plain caption, in vocabulary order."""
    n_c, n_s = len(COLOURS), len(SHAPES)
    ones = [one_object_prompt(c, s, r) for c in range(n_c) for s in range(n_s) for r in range(len(REGIONS))]
    twos = [
        two_object_prompt(c0, s0, axis, c1, s1)
        for c0 in range(n_c)
        for s0 in range(n_s)
        for axis in range(len(AXES))
        for c1 in range(n_c)
        for s1 in range(n_s)
        if c0 != c1
    ]
    return ones + twos


def write_caption_bank(model_folder: Path, text_encoder: Any = None, tokenizer: Any = None) -> int:
    """Encode the candidates with the folder's own scorer (over ``text_encoder``, default the package's BERT) and
    write its caption bank; returns the candidate count."""
    from worker.alignment import ALIGNMENT_SUBFOLDER, ShapesAlignmentScorer
    from worker.caption_bank import CaptionBank
    from worker.shapes_pipeline import load_text_encoder

    if text_encoder is None or tokenizer is None:
        text_encoder, tokenizer = load_text_encoder()
    scorer = ShapesAlignmentScorer.from_folder(model_folder, text_encoder, tokenizer)
    bank = CaptionBank.build(describe_candidates(), scorer)
    bank.save(model_folder / ALIGNMENT_SUBFOLDER, scorer.fingerprint)
    return len(bank.captions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/imagine-shapes", help="model folder with an alignment/ scorer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    count = write_caption_bank(Path(args.model))
    print(f"wrote {count} candidates to {args.model}/alignment", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
