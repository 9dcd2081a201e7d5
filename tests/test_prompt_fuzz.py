"""Property tests of ``shared.prompt``: arbitrary text only ever raises PromptError, and ``to_text`` round-trips.

Example counts stay modest (CI has 2 cores); ``python -m tests.fuzz_prompt N`` runs the long one-off fuzz.
"""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import defaults
from shared.prompt.parser import Prompt, PromptError, parse

log = logging.getLogger(__name__)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of syntax, glued at random, so the fuzz reaches the parser's corners and not only plain text.
SYNTAX = [
    "--", "—", "–", "-", "--ar", "—ar", "–AR", "--aspect", "16:9", "16 : 9", "1.5:1", "9:1", "0:1", "--c", "--chaos",
    "101", "50", "--q", ".5", "2", "3", "--seed", "4294967296", "--stop", "--s", "--stylize", "--style", "raw",
    "--tile", "--w", "--weird", "--iw", "--v", "--version", "6", "--niji", "--fast", "--relax", "--turbo", "--r",
    "--repeat", "--no", "--chaoss", "{", "}", ",", "\\,", "\\", "::", ":::", ":", "::-.5", "::2", "::0", "::-1",
    "https://x.io/a.png", "http://", "https://", "http://[::1", " ", "  ", "\u00a0", "\u3000", "\n", "｛", "｝", "，",
    "：", "－－", "\u200b", "\ufeff", "\u2212", "a", "cat", "Ä", "猫", "🐱", "0", "-0", "1e5", ".", "..", "9" * 30,
]  # fmt: skip


def check_round_trip(text: str) -> None:
    try:
        prompts = parse(text)
    except PromptError:
        return
    assert prompts
    for p in prompts:
        canonical = p.to_text()
        assert len(canonical) <= defaults.MAX_PROMPT_CHARS
        assert parse(canonical) == [p], canonical


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_prompt_error_and_round_trips(text: str) -> None:
    check_round_trip(text)


@FUZZ
@given(st.lists(st.sampled_from(SYNTAX) | st.text(max_size=4), max_size=40).map("".join))
def test_syntax_soup_only_raises_prompt_error_and_round_trips(text: str) -> None:
    check_round_trip(text)


@FUZZ
@given(st.lists(st.sampled_from(SYNTAX) | st.text(max_size=3), max_size=25).map(" ".join))
def test_spaced_syntax_soup_only_raises_prompt_error_and_round_trips(text: str) -> None:
    check_round_trip(text)


SAMPLES = [
    "a red fox in snow --ar 3:2 --s 250",
    "https://x.io/a.png portrait::2 rain::-.5 --iw 1.5 --no text, logos --v 6",
    "a {red, blue, {big\\, shiny, tiny}} car --ar {1:1, 16:9} --c 20 --q .5 --seed 9 --r 2 --relax",
    "castle —ar 2:1 —stylize 750 —style raw —tile --weird 40 --stop 80 --niji 6",
]


@FUZZ
@given(st.lists(st.sampled_from(SAMPLES + SYNTAX), min_size=1, max_size=6), st.sampled_from(["", " ", ","]))
def test_valid_prompts_glued_with_syntax_round_trip(pieces: list[str], glue: str) -> None:
    check_round_trip(glue.join(pieces))


# --- a strategy of valid prompts, written the untidy ways members write them ----------------------------------------

_LETTERS = st.characters(
    categories=["L", "N"], exclude_characters="".join(chr(c) for c in range(0xFF01, 0xFF5F)), max_codepoint=0x2FFFF
)
_WORD = st.builds(
    lambda head, tail: head + tail,
    st.text(_LETTERS, min_size=1, max_size=8),
    st.text(st.sampled_from("abc'!?.&()-,"), max_size=2),
)
_TEXT = st.lists(_WORD, min_size=1, max_size=6).map(" ".join)
_WEIGHT = st.sampled_from([1.0, 2.0, 0.5, -0.5, 3.0, 0.25, -0.25, 1.5, 10.0])
_URL = st.builds(
    lambda host, path: f"https://{host}.example/{path}.png",
    st.text("abcxyz0123", min_size=1, max_size=6),
    st.text("abc-_/09", max_size=8),
)
_SPACE = st.sampled_from([" ", "  ", "\u00a0", " \u202f", "\t"])
_DASH = st.sampled_from(["--", "—", "–", "——", "－－"])


@st.composite
def valid_prompts(draw: st.DrawFn) -> tuple[Prompt, str]:
    """An expected ``Prompt`` and an untidy text (aliases, dashes, case, spacing, order) that must parse to it."""
    parts = tuple((draw(_TEXT), draw(_WEIGHT)) for _ in range(draw(st.integers(1, 3))))
    if sum(w for _, w in parts) <= 0:
        parts = ((parts[0][0], 1.0),)
    urls = tuple(draw(st.lists(_URL, max_size=2)))
    fields: dict[str, Any] = {}
    words: list[tuple[str, str]] = []  # (field, rendered parameter)

    def name(*aliases: str) -> str:
        spelled = draw(st.sampled_from(aliases))
        return draw(_DASH) + draw(st.sampled_from([spelled, spelled.upper(), spelled.capitalize()]))

    def emit(field: str, text: str) -> None:
        words.append((field, text))

    if draw(st.booleans()):
        w = draw(st.integers(1, 40))
        h = draw(st.integers(max(1, -(-w // 8)), min(40, w * 8)))
        fields["aspect_ratio"] = (w, h)
        colon = draw(st.sampled_from([":", " : ", ": ", "：", "∶"]))
        emit("ar", f"{name('ar', 'aspect')} {w}{colon}{h}")
    for field, aliases, lo, hi in (
        ("chaos", ("c", "chaos"), 0, 100),
        ("seed", ("seed",), 0, defaults.MAX_SEED),
        ("stop", ("stop",), 10, 100),
        ("stylize", ("s", "stylize"), 0, 1000),
        ("weird", ("w", "weird"), 0, 3000),
        ("repeat", ("r", "repeat"), 1, 40),
    ):
        if draw(st.booleans()):
            value = draw(st.integers(lo, hi))
            fields[field] = value
            emit(field, f"{name(*aliases)} {value}")
    if draw(st.booleans()):
        quality, spelled = draw(st.sampled_from([(0.25, ".25"), (0.5, "0.5"), (1.0, "1"), (2.0, "2.0")]))
        fields["quality"] = quality
        emit("quality", f"{name('q', 'quality')} {spelled}")
    if draw(st.booleans()):
        fields["style"] = "raw"
        emit("style", f"{name('style')} {draw(st.sampled_from(['raw', 'RAW']))}")
    if draw(st.booleans()):
        fields["tile"] = True
        emit("tile", name("tile"))
    if draw(st.booleans()) and urls:
        iw, spelled = draw(st.sampled_from([(0.0, "0"), (0.5, ".5"), (1.5, "1.5"), (3.0, "3"), (2.0, "2")]))
        fields["image_weight"] = iw
        emit("iw", f"{name('iw')} {spelled}")
    if draw(st.booleans()):
        version, spelled = draw(
            st.sampled_from([("6", "v 6"), ("5.2", "version 5.2"), ("niji", "niji"), ("niji 6", "niji 6")])
        )
        fields["version"] = version
        emit("version", draw(_DASH) + spelled)
    if draw(st.booleans()):
        speed = draw(st.sampled_from(["fast", "relax", "turbo"]))
        fields["speed"] = speed
        emit("speed", name(speed))
    negative = tuple(draw(st.lists(_TEXT.filter(lambda t: "," not in t), max_size=3)))
    if negative:
        emit("no", f"{name('no')} " + draw(st.sampled_from([", ", ",", " , "])).join(negative))

    expected = Prompt(text=" ".join(t for t, _ in parts), parts=parts, negative=negative, image_urls=urls, **fields)
    order = draw(st.permutations(words))
    if len(parts) == 1 and parts[0][1] == 1.0 and draw(st.booleans()):
        body = parts[0][0]
    else:
        pieces = []
        for text, weight in parts:
            if weight == 1.0 and draw(st.booleans()):
                pieces.append(f"{text}{draw(st.sampled_from(['::', ' ::', ' :: ']))} ")
            else:
                pieces.append(f"{text}{draw(st.sampled_from(['::', ' ::']))}{weight}{draw(_SPACE)}")
        body = "".join(pieces)
    space = draw(_SPACE)
    text = space.join([*urls, body, *(w for _, w in order)]) + draw(st.sampled_from(["", " ", "  \u00a0"]))
    return expected, text


@VALID
@given(valid_prompts())
def test_untidy_valid_prompts_parse_to_the_expected_prompt(case: tuple[Prompt, str]) -> None:
    expected, text = case
    if len(expected.to_text()) > defaults.MAX_PROMPT_CHARS:
        return
    assert parse(text) == [expected], text
    assert parse(expected.to_text()) == [expected]


@VALID
@given(valid_prompts(), st.integers(2, 4))
def test_permutation_of_valid_prompts_gives_each(case: tuple[Prompt, str], copies: int) -> None:
    expected, text = case
    # Escape commas inside the option so they stay literal; the group repeats the same prompt.
    option = text.replace(",", "\\,")
    assert parse("{" + ", ".join([option] * copies) + "}") == [expected] * copies
