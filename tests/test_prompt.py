"""The prompt language: every parameter, alias, range edge and error class of ``shared.prompt.parse``."""

from __future__ import annotations

import logging
import re

import pytest

from shared import defaults
from shared.errors import MemberFacingError
from shared.prompt.parser import Prompt, PromptError, parse

log = logging.getLogger(__name__)


def one(text: str) -> Prompt:
    prompts = parse(text)
    assert len(prompts) == 1, prompts
    assert parse(prompts[0].to_text()) == prompts
    return prompts[0]


def test_plain_prompt_has_midjourney_defaults() -> None:
    p = one("  a red   fox\tin snow  ")
    assert p == Prompt(text="a red fox in snow")
    assert p.parts == (("a red fox in snow", 1.0),)
    assert (p.aspect_ratio, p.chaos, p.quality, p.seed, p.stop, p.stylize) == ((1, 1), 0, 1.0, None, 100, 100)
    assert (p.style, p.tile, p.weird, p.image_weight, p.version, p.speed, p.repeat) == (
        None,
        False,
        0,
        1.0,
        None,
        None,
        1,
    )
    assert p.negative == () and p.image_urls == ()
    assert p.to_text() == "a red fox in snow"


# --- every parameter and alias, with both range edges --------------------------------------------------------------

VALID = [
    ("--ar 16:9", "aspect_ratio", (16, 9)),
    ("--aspect 2:3", "aspect_ratio", (2, 3)),
    ("--ar 8:1", "aspect_ratio", (8, 1)),
    ("--ar 1:8", "aspect_ratio", (1, 8)),
    ("--ar 16 : 9", "aspect_ratio", (16, 9)),
    ("--ar 16: 9", "aspect_ratio", (16, 9)),
    ("--ar 32:18", "aspect_ratio", (32, 18)),
    ("--chaos 0", "chaos", 0),
    ("--chaos 100", "chaos", 100),
    ("--c 50", "chaos", 50),
    ("--quality .25", "quality", 0.25),
    ("--q .5", "quality", 0.5),
    ("--q 0.5", "quality", 0.5),
    ("--q 1", "quality", 1.0),
    ("--q 2", "quality", 2.0),
    ("--q 2.0", "quality", 2.0),
    ("--seed 0", "seed", 0),
    ("--seed 4294967295", "seed", 4294967295),
    ("--stop 10", "stop", 10),
    ("--stop 100", "stop", 100),
    ("--stylize 0", "stylize", 0),
    ("--stylize 1000", "stylize", 1000),
    ("--s 250", "stylize", 250),
    ("--style raw", "style", "raw"),
    ("--style RAW", "style", "raw"),
    ("--tile", "tile", True),
    ("--weird 0", "weird", 0),
    ("--weird 3000", "weird", 3000),
    ("--w 250", "weird", 250),
    ("--v 6", "version", "6"),
    ("--version 5.2", "version", "5.2"),
    ("--niji", "version", "niji"),
    ("--niji 6", "version", "niji 6"),
    ("--fast", "speed", "fast"),
    ("--relax", "speed", "relax"),
    ("--turbo", "speed", "turbo"),
    ("--repeat 1", "repeat", 1),
    ("--repeat 40", "repeat", 40),
    ("--r 3", "repeat", 3),
    ("--no cars", "negative", ("cars",)),
    ("--no cars, red  trees ,", "negative", ("cars", "red trees")),
]


@pytest.mark.parametrize(("params", "field", "expected"), VALID)
def test_parameter_sets_its_field(params: str, field: str, expected: object) -> None:
    p = one(f"a lighthouse at dusk {params}")
    assert getattr(p, field) == expected
    assert p.text == "a lighthouse at dusk"
    others = {f: getattr(Prompt(text="x"), f) for f in ("chaos", "stop", "stylize", "weird", "repeat") if f != field}
    assert {f: getattr(p, f) for f in others} == others


def test_image_weight_range_edges_with_an_image() -> None:
    assert one("https://example.com/a.png a cat --iw 0").image_weight == 0.0
    assert one("https://example.com/a.png a cat --iw 3").image_weight == 3.0
    assert one("https://example.com/a.png a cat --iw .5").image_weight == 0.5


def test_all_parameters_together_round_trip_in_canonical_order() -> None:
    p = one(
        "https://a.example/x.png http://b.example/y.jpg castle::2 moat::-.5 --no fog, birds --ar 3:2 --c 10 --q 2"
        " --seed 7 --stop 90 --s 300 --style raw --tile --w 5 --iw 1.5 --v 6 --turbo --r 2"
    )
    assert p.to_text() == (
        "https://a.example/x.png http://b.example/y.jpg castle::2 moat::-0.5 --ar 3:2 --chaos 10 --quality 2"
        " --seed 7 --stop 90 --stylize 300 --style raw --tile --weird 5 --iw 1.5 --v 6 --turbo --repeat 2"
        " --no fog, birds"
    )
    assert p.image_urls == ("https://a.example/x.png", "http://b.example/y.jpg")


def test_defaults_given_explicitly_are_omitted_from_canonical_text() -> None:
    p = one("a cat --ar 1:1 --chaos 0 --q 1 --stop 100 --s 100 --w 0 --r 1")
    assert p == Prompt(text="a cat")
    assert p.to_text() == "a cat"


# --- errors: each class, and the message names parameter, value and what is allowed ---------------------------------

ERRORS = [
    ("a --chaos 101", "--chaos must be an integer from 0 to 100, got 101"),
    ("a --c -1", "--c must be an integer from 0 to 100, got -1"),
    ("a --chaos 5.5", "--chaos must be an integer from 0 to 100, got 5.5"),
    ("a --chaos", "--chaos needs a value"),
    ("a --quality high", "--quality must be one of .25, .5, 1, 2, 4, got high"),
    ("a --seed 4294967296", "--seed must be an integer from 0 to 4294967295, got 4294967296"),
    ("a --seed -1", "--seed must be an integer from 0 to 4294967295, got -1"),
    ("a --seed 99999999999999999999999", "--seed must be an integer from 0 to 4294967295"),
    ("a --stop 9", "--stop must be an integer from 10 to 100, got 9"),
    ("a --stop 101", "--stop must be an integer from 10 to 100, got 101"),
    ("a --stylize 1001", "--stylize must be an integer from 0 to 1000, got 1001"),
    ("a --s -5", "--s must be an integer from 0 to 1000, got -5"),
    ("a --weird 3001", "--weird must be an integer from 0 to 3000, got 3001"),
    ("a --repeat 0", "--repeat must be an integer from 1 to 40, got 0"),
    ("a --r 41", "--r must be an integer from 1 to 40, got 41"),
    ("a --style anime", "--style must be one of raw, cute, expressive, original, scenic, got anime"),
    ("https://x.io/a.png a --iw 3.5", "--iw must be a number from 0 to 3, got 3.5"),
    ("https://x.io/a.png a --iw -1", "--iw must be a number from 0 to 3, got -1"),
    ("a --iw 2", "--iw 2 needs an image URL at the start of the prompt"),
    ("a --ar 1.5:1", "--ar takes whole numbers only (e.g. 3:2 rather than 1.5:1), got 1.5:1"),
    ("a --ar 16x9", "--ar must be W:H in whole numbers (e.g. 16:9), got '16x9'"),
    ("a --ar 0:1", "--ar must be two whole numbers from 1 to 10000"),
    ("a --ar 9:1", "--ar can be at most 8:1 or 1:8, got 9:1"),
    ("a --ar 1:9", "--ar can be at most 8:1 or 1:8, got 1:9"),
    ("a --ar", "--ar needs a value"),
    ("a --tile please", "--tile takes no value, got 'please'; parameters go at the end of the prompt"),
    ("a --ar 2:1 on a mat", "--ar must be W:H in whole numbers"),
    ("a --s 100 on a mat", "--s takes one value"),
    ("a --v 6 --niji", "--v and --niji are both given"),
    ("a --fast --relax", "--fast and --relax are both given"),
    ("a --ar 1:1 --ar 2:1", "--ar is given twice"),
    ("a --s 50 --stylize 60", "--s and --stylize are both given"),
    ("a --tile --tile", "--tile is given twice"),
    ("a --no", "--no needs what to leave out"),
    ("a --no , ,", "--no needs what to leave out"),
    ("a --v 6!", "--v must be a model version such as 6 or 5.2, got '6!'"),
    ("a --niji 6 7", "--niji takes at most one value"),
    ("a --chaoss 5", "unknown parameter --chaoss; did you mean --chaos?"),
    ("a --stylise 5", "unknown parameter --stylise; did you mean --stylize?"),
    ("a --ar16:9", "unknown parameter --ar16:9; write --ar 16:9 with a space"),
    ("a --v6", "unknown parameter --v6; write --v 6 with a space"),
    ("a --zzzzzz", "unknown parameter --zzzzzz; known parameters: --ar"),
    ("", "the prompt is empty"),
    ("   \u00a0 ", "the prompt is empty"),
    ("--ar 2:1 --chaos 5", "the prompt has no text"),
    ("https://x.io/a.png", "the prompt has no text"),
    ("https://x.io/a.png --iw 2", "the prompt has no text"),
    ("a cat https://x.io/a.png", "image URL 'https://x.io/a.png' must come first in the prompt"),
    ("https:// a cat", "image URL 'https://' has no host"),
    ("http://[::1 a cat", "image URL 'http://[::1' has no host"),
    ("a::2 b::-3", "multi-prompt weights must add up to more than 0, got -1 (a::2 b::-3)"),
    ("a::0", "multi-prompt weights must add up to more than 0, got 0"),
    ("a::1 ::2 b", "multi-prompt part 2 is empty"),
    ("::2 a", "multi-prompt part 1 is empty"),
    ("a:::2 b", "':::' in the prompt is ambiguous"),
    ("a::5000 b", "multi-prompt weight ::5000 must be from -1000 to 1000"),
    ("a {b, c", "unclosed '{' at character 3"),
    ("a b, c}", "unmatched '}' at character 7"),
    ("a" + "{x," * 9 + "y" + "}" * 9, "permutations nest at most 8 deep"),
    ("a {1,2,3,4,5,6,7} {1,2,3,4,5,6,7}", "the prompt expands to 49 permutations; at most 40 are allowed"),
    ("a \x07 bell", "the prompt contains the control character U+0007 at character 3"),
    ("x" * (defaults.MAX_PROMPT_INPUT_CHARS + 1), f"at most {defaults.MAX_PROMPT_INPUT_CHARS} are accepted"),
    ("x" * (defaults.MAX_PROMPT_CHARS + 1), f"at most {defaults.MAX_PROMPT_CHARS} are allowed"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_bad_prompt_raises_prompt_error_that_explains(text: str, message: str) -> None:
    with pytest.raises(PromptError) as caught:
        parse(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, MemberFacingError)  # shown to the member as it is


def test_canonical_length_cap_counts_long_names() -> None:
    """A raw prompt under the cap whose canonical form (long names) is over it is refused, so round trips hold."""
    body = "x" * (defaults.MAX_PROMPT_CHARS - len(" --c 5"))
    assert len(body + " --c 5") == defaults.MAX_PROMPT_CHARS
    with pytest.raises(PromptError, match="in canonical form"):
        parse(body + " --c 5")
    assert one("x" * defaults.MAX_PROMPT_CHARS).text == "x" * defaults.MAX_PROMPT_CHARS


def test_non_string_prompt_is_a_prompt_error() -> None:
    with pytest.raises(PromptError, match="a prompt must be a string, got int"):
        parse(5)  # type: ignore[arg-type]


def test_expansion_cap_is_a_keyword() -> None:
    assert len(parse("a {1,2,3} {1,2,3}", max_expansions=9)) == 9
    with pytest.raises(PromptError, match="expands to 9 permutations; at most 8 are allowed"):
        parse("a {1,2,3} {1,2,3}", max_expansions=8)
    with pytest.raises(PromptError, match=r"about 10\^"):
        parse("a " + "{1,2,3,4,5,6,7,8,9,0}" * 20)


# --- phone input ----------------------------------------------------------------------------------------------------

PHONE = [
    "a cat —ar 16:9 —chaos 5",  # iOS turns -- into an em dash
    "a cat –ar 16:9 –chaos 5",  # en dash
    "a cat ——ar 16:9 --—chaos 5",  # runs of dashes
    "a cat --AR 16:9 --Chaos 5",  # upper case
    "a cat\u00a0--ar\u00a016:9\u202f--chaos 5  ",  # non-breaking spaces, trailing spaces
    "a cat －－ａｒ　１６：９ －－ｃｈａｏｓ　５",  # full-width forms and the ideographic space
    "a cat --ar 16∶9 --chaos\u200b 5",  # ratio sign, zero-width space
    "a cat --ar 16 : 9 --c 5",
    "\ufeffa cat\n--ar 16:9\r\n--chaos 5",
]


@pytest.mark.parametrize("text", PHONE)
def test_phone_and_ime_input_reads_like_ascii(text: str) -> None:
    p = one(text)
    assert (p.text, p.aspect_ratio, p.chaos) == ("a cat", (16, 9), 5)


def test_single_hyphen_is_text_and_dashes_in_words_are_kept() -> None:
    p = one("a T-rex -ar style — bold")
    assert p.text == "a T-rex -ar style — bold"
    assert p.aspect_ratio == (1, 1)


def test_smart_quotes_and_minus_sign_are_mapped() -> None:
    p = one("the \u201cold\u201d man\u2019s boat::2 sea::\u2212.5")
    assert p.parts == (('the "old" man\'s boat', 2.0), ("sea", -0.5))


def test_parameter_may_start_right_after_separator_or_comma() -> None:
    """Found by the 100k fuzz: a parameter glued to "::" or "," must not hide inside text and surface on re-parse."""
    p = one("castle ::—ar 2:1")
    assert (p.parts, p.aspect_ratio) == ((("castle", 1.0),), (2, 1))
    p = one("a street --no text,--c 5")
    assert (p.negative, p.chaos) == (("text",), 5)
    with pytest.raises(PromptError, match="unknown parameter --roll"):
        parse("rock,--roll")
    with pytest.raises(PromptError, match="must come first in the prompt"):
        parse("castle::https://x.io/a.png")
    assert one("a::2-b").parts == (("a", 1.0), ("2-b", 1.0))


# --- multi-prompts --------------------------------------------------------------------------------------------------


def test_multi_prompt_weights_decimal_and_negative() -> None:
    p = one("space ship::3 planet::.5 rust::-0.25")
    assert p.parts == (("space ship", 3.0), ("planet", 0.5), ("rust", -0.25))
    assert p.text == "space ship planet rust"
    assert p.to_text() == "space ship::3 planet::0.5 rust::-0.25"


def test_multi_prompt_without_weights_and_with_spaces() -> None:
    assert one("hot :: dog").parts == (("hot", 1.0), ("dog", 1.0))
    assert one("hot ::2 dog").parts == (("hot", 2.0), ("dog", 1.0))
    assert one("hot::dog::").parts == (("hot", 1.0), ("dog", 1.0))


def test_number_after_space_is_text_not_weight() -> None:
    assert one("cat:: 2 dogs").parts == (("cat", 1.0), ("2 dogs", 1.0))
    assert one("cat::2d render").parts == (("cat", 1.0), ("2d render", 1.0))


def test_single_part_with_weight_and_trailing_separator() -> None:
    assert one("a cat::").parts == (("a cat", 1.0),)
    assert one("a cat::") == one("a cat")
    p = one("a cat::2")
    assert p.parts == (("a cat", 2.0),) and p.to_text() == "a cat::2"


def test_single_colons_are_text_and_part_ending_in_colon_round_trips() -> None:
    p = one("time 10:30 note: ::2 b")
    assert p.parts == (("time 10:30 note:", 2.0), ("b", 1.0))
    assert p.to_text() == "time 10:30 note: ::2 b::1"


def test_multi_prompt_weight_parsed_before_parameters() -> None:
    p = one("a::2 b --ar 2:1")
    assert p.parts == (("a", 2.0), ("b", 1.0)) and p.aspect_ratio == (2, 1)


# --- permutations ---------------------------------------------------------------------------------------------------


def test_permutations_expand_in_order_and_multiply() -> None:
    texts = [p.text for p in parse("a {red, blue} {car, bike}")]
    assert texts == ["a red car", "a red bike", "a blue car", "a blue bike"]


def test_permutations_inside_parameter_values() -> None:
    prompts = parse("a cat --ar {1:1, 16:9} --s {50,750}")
    assert [(p.aspect_ratio, p.stylize) for p in prompts] == [
        ((1, 1), 50),
        ((1, 1), 750),
        ((16, 9), 50),
        ((16, 9), 750),
    ]


def test_nested_permutations_and_escaped_comma() -> None:
    assert [p.text for p in parse("a {cat, {big, small} dog}")] == ["a cat", "a big dog", "a small dog"]
    assert [p.text for p in parse("{red\\, white, blue} flag")] == ["red, white flag", "blue flag"]
    assert one("outside a\\, b").text == "outside a\\, b"


def test_permutation_with_empty_option_and_whole_parameters() -> None:
    assert [p.text for p in parse("a {red, } car")] == ["a red car", "a car"]
    prompts = parse("a cat {--tile, --no dogs\\, mice}")
    assert [(p.tile, p.negative) for p in prompts] == [(True, ()), (False, ("dogs", "mice"))]


def test_full_width_braces_expand() -> None:
    assert [p.text for p in parse("a ｛red，blue｝ car")] == ["a red car", "a blue car"]


def test_permutation_error_inside_one_option_fails_the_whole_prompt() -> None:
    with pytest.raises(PromptError, match="--chaos must be an integer from 0 to 100, got 200"):
        parse("a cat --chaos {5, 200}")


# --- --no, image URLs, versions ------------------------------------------------------------------------------------


def test_no_lists_merge_and_keep_case() -> None:
    p = one("a street --no Cars --NO people, red  signs")
    assert p.negative == ("Cars", "people", "red signs")
    assert p.to_text() == "a street --no Cars, people, red signs"


def test_image_urls_keep_their_text_and_order() -> None:
    p = one("HTTPS://Example.com/A.png?x=1,2 https://b.io/c.webp a portrait --iw 0.75")
    assert p.image_urls == ("HTTPS://Example.com/A.png?x=1,2", "https://b.io/c.webp")
    assert p.image_weight == 0.75
    assert p.text == "a portrait"


def test_niji_and_version_render_canonically() -> None:
    assert one("a --version 6").to_text() == "a --v 6"
    assert one("a --v niji").to_text() == "a --niji"
    assert one("a --NIJI 6").to_text() == "a --niji 6"


# --- Prompt constructed directly -----------------------------------------------------------------------------------


def test_prompt_validates_when_constructed_directly() -> None:
    assert Prompt(text="a b", parts=(("a", 1.0), ("b", 2.0))).to_text() == "a::1 b::2"
    with pytest.raises(PromptError, match="--chaos must be an integer from 0 to 100, got 101"):
        Prompt(text="a", chaos=101)
    with pytest.raises(PromptError, match=re.escape("--quality must be one of .25, .5, 1, 2, 4, got 3")):
        Prompt(text="a", quality=3.0)
    with pytest.raises(PromptError, match="must be the parts' texts joined"):
        Prompt(text="a", parts=(("b", 1.0),))
    with pytest.raises(PromptError, match="the prompt has no text"):
        Prompt(text="  ")
    with pytest.raises(PromptError, match="speed must be one of fast, relax, turbo, got slow"):
        Prompt(text="a", speed="slow")
