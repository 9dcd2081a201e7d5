"""Parse time of a typical prompt and of a worst case (permutations up to the cap): ``python bench/parse.py``."""

from __future__ import annotations

import logging
import statistics
import time

from shared import defaults
from shared.prompt.parser import parse

log = logging.getLogger(__name__)

TYPICAL = "a cozy cabin in a snowy forest at dusk, warm light::2 fog::-.5 --ar 16:9 --s 250 --c 10 --no people, cars"
# 5 x 2 x 2 x 2 = 40 permutations (the cap): nested groups, escaped commas, braces in values, every parameter.
WORST = (
    "https://example.com/ref.png {a red, a blue, a gold, {tiny\\, shiny, huge}} dragon over a castle"
    " at {dawn, dusk} — {oil, ink}::2 watercolor::-.25 --ar {1:1, 16 : 9} --c 40 --q .5"
    " --seed 42 --stop 90 --s 750 --style raw --tile --w 100 --iw 1.5 --v 6 --relax --r 1 --no text, logos"
    + " x"
    * 760  # padding: the longest canonical prompt stays just under MAX_PROMPT_CHARS
)


def median_us(text: str, repeats: int) -> tuple[float, int]:
    """Median wall time of ``parse(text)`` in microseconds over ``repeats`` runs, and the prompt count."""
    count = len(parse(text))
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        parse(text)
        times.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(times), count


def main() -> None:
    assert len(parse(WORST)) == defaults.MAX_PERMUTATIONS
    for label, text, repeats in (("typical", TYPICAL, 5000), ("worst case", WORST, 300)):
        us, count = median_us(text, repeats)
        print(f"{label:>10}: {us:9.1f} us median over {repeats} runs ({len(text)} chars -> {count} prompt(s))")


if __name__ == "__main__":
    main()
