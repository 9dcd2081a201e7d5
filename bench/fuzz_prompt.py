"""One-off fuzz of ``shared.prompt.parse`` (not in the default suite): ``python bench/fuzz_prompt.py 100000 [seed]``.

Feeds random prompts (unicode noise, glued syntax, and mutations of valid prompts) to ``parse`` and checks that only
``PromptError`` is raised and that every parsed prompt round-trips through ``to_text``. Exits 1 on any violation.
"""

from __future__ import annotations

import logging
import random
import sys
import traceback
from collections import Counter

from shared.prompt.parser import PromptError, parse

log = logging.getLogger(__name__)

SYNTAX = [
    "--", "—", "–", "-", "--ar", "—ar", "–AR", "--aspect", "16:9", "16 : 9", "1.5:1", "9:1", "2:1", "--c", "--chaos",
    "101", "50", "--q", ".5", ".25", "2", "--seed", "4294967295", "4294967296", "--stop", "10", "--s", "--stylize",
    "--style", "raw", "--tile", "--w", "--weird", "--iw", "--v", "--version", "6", "--niji", "--fast", "--relax",
    "--turbo", "--r", "--repeat", "--no", "--chaoss", "{", "}", ",", "\\,", "\\", "::", ":::", ":", "::-.5", "::2",
    "::0", "::-1", "https://x.io/a.png", "http://", "https://", "http://[::1", " ", "  ", "\u00a0", "\u3000", "\n",
    "｛", "｝", "，", "：", "－－", "\u200b", "\ufeff", "\u2212", "\u201c", "a", "cat", "Ä", "猫", "🐱", "0", "-0",
    "1e5", ".", "9" * 30, "\x00", "\x85", "\u2028", "İ", "ß", "\u0301",
]  # fmt: skip
VALID = [
    "a red fox in snow --ar 3:2 --s 250",
    "https://x.io/a.png portrait::2 rain::-.5 --iw 1.5 --no text, logos --v 6",
    "a {red, blue, {big\\, shiny, tiny}} car --ar {1:1, 16:9} --c 20 --q .5 --seed 9 --r 2 --relax",
    "castle —ar 2:1 —stylize 750 —style raw —tile --weird 40 --stop 80 --niji 6",
]


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:
        # Mostly printable ASCII, some control characters, some of all of Unicode.
        ranges = rng.choices([(0x20, 0x7E), (0, 0x7F), (0xA0, 0x2FFFF)], [8, 1, 3], k=rng.randint(0, 60))
        return "".join(chr(rng.randint(lo, hi)) for lo, hi in ranges)
    if kind < 0.6:
        sep = rng.choice(["", " ", ""])
        return sep.join(rng.choice(SYNTAX) for _ in range(rng.randint(0, 40)))
    if kind < 0.75:
        # Valid prompts glued with syntax pieces: many of these parse, so the round trip is exercised.
        return " ".join(rng.choice(VALID + SYNTAX[:60]) for _ in range(rng.randint(1, 5)))
    text = list(rng.choice(VALID))
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        at = rng.randint(0, len(text))
        if op < 0.4:
            text[at:at] = list(rng.choice(SYNTAX))
        elif op < 0.7 and text:
            del text[min(at, len(text) - 1)]
        elif text:
            text[min(at, len(text) - 1)] = chr(rng.randint(0, 0x3000))
    return "".join(text)


def main(count: int, seed: int) -> int:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    failures = 0
    for _ in range(count):
        text = random_text(rng)
        try:
            prompts = parse(text)
        except PromptError as exc:
            outcomes["PromptError"] += 1
            errors[" ".join(str(exc).split()[:3])] += 1
            continue
        except Exception:
            failures += 1
            outcomes["other exception"] += 1
            print(f"NOT A PromptError for {text!r}:\n{traceback.format_exc()}")
            continue
        outcomes["parsed"] += 1
        for p in prompts:
            try:
                again = parse(p.to_text())
            except Exception as exc:
                again = [exc]  # type: ignore[list-item]
            if again != [p]:
                failures += 1
                outcomes["round-trip failure"] += 1
                print(f"ROUND TRIP FAILED for {text!r}: {p.to_text()!r} -> {again!r}")
    print(f"{count} random prompts (seed {seed}): {dict(outcomes)}")
    print("most common errors:", ", ".join(f"{msg!r} x{n}" for msg, n in errors.most_common(8)))
    return 1 if failures else 0


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sys.exit(main(n, s))
