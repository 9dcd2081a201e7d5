"""The Midjourney prompt language: ``parse(text) -> list[Prompt]``, one ``Prompt`` per ``{a, b}`` permutation.

Grammar and decisions (the member-facing table is docs/parameters.md):

1. The raw text is at most ``MAX_PROMPT_INPUT_CHARS``; control characters are an error. Phone and IME input is
   mapped character by character: full-width ASCII (``：｛｝，－``) to ASCII, smart quotes to straight quotes, the
   minus sign and Unicode hyphens to ``-``, the ratio sign ``∶`` to ``:``; zero-width spaces and BOMs are dropped.
   Every Unicode space (non-breaking, ideographic, ...) separates words like a space.
2. ``{a, b}`` expands to one prompt per option, anywhere, also inside parameter values; several groups multiply (the
   first group varies slowest), groups nest, options are stripped, ``\\,`` inside a group is a literal comma (outside a
   group a backslash is literal); ``\\{`` and ``\\}`` are literal braces anywhere (inside a group and out), and the
   canonical form writes every literal brace that way. Unbalanced braces, nesting deeper than
   ``MAX_PERMUTATION_DEPTH`` and more than ``max_expansions`` prompts are errors.
3. Each expanded prompt is split on whitespace. Leading ``http(s)://`` words are image URLs; a URL anywhere else is an
   error. A word that starts with ``--``, a single en dash, an em dash (what iOS makes of ``--``) or any run of two or
   more dashes, followed by a letter, is a parameter; names are case-insensitive. A single ASCII hyphen (``-ar``) is
   text. A parameter or URL may also start right after ``::`` or ``,`` (``castle::--ar 2:1``, ``--no fog,--v 6``).
   Everything before the first parameter is the prompt body; each parameter takes the words up to the next. The
   reference parameters (``--sref``, ``--cref``, ``--oref``) take image URLs as values.
4. Duplicate parameters are an error (also via an alias: ``--s 50 --stylize 60``), except ``--no`` and ``--lora``,
   whose lists are joined. ``--v`` with ``--niji``, and two speed flags, are errors too. A weight without its
   reference (``--sw`` without ``--sref``, ``--cw``/``--cref``, ``--ow``/``--oref``, ``--sv``/``--sref``) is an error.
5. ``--ar`` accepts spaces around the colon (``16 : 9``); whole numbers only.
6. The body splits into multi-prompt parts at ``::``; a number right after ``::`` (``::2``, ``::-.5``), followed by a
   space or the end, is the weight of the text before it; without one the weight is 1. Runs of three or more colons
   are an error. The weights must sum to more than 0.
7. The canonical form (``Prompt.to_text()``) uses long names, omits defaults, and ``parse(p.to_text()) == [p]``.
8. An off-list ``--quality`` is rounded to the nearest allowed value (a tie goes up) and the prompt carries a note
   saying so (``Prompt.notes``, not part of equality), as Midjourney's docs describe.
9. Values: ``--sref`` takes image URLs, numeric style codes or ``random``; ``--p`` takes nothing (your own profile) or
   profile codes; ``--lora`` takes ``name`` or ``name:weight`` items separated by spaces or commas. What they mean is
   resolved in ``shared.prompt.resolve`` against the configuration (docs/parameters.md).
"""

from __future__ import annotations

import difflib
import itertools
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeAlias
from urllib.parse import urlsplit

from shared import defaults
from shared.errors import PromptError
from shared.i18n import N_, tr

log = logging.getLogger(__name__)

SPEEDS: tuple[str, ...] = ("fast", "relax", "turbo")

_CHAR_MAP: dict[int, str | None] = {c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}
_CHAR_MAP.update(
    {
        0x3000: " ",  # ideographic space
        0x2018: "'",
        0x2019: "'",
        0x201A: "'",
        0x201B: "'",
        0x201C: '"',
        0x201D: '"',
        0x201E: '"',
        0x201F: '"',
        0x2010: "-",  # hyphen
        0x2011: "-",  # non-breaking hyphen
        0x2212: "-",  # minus sign
        0x2236: ":",  # ratio
        0x200B: None,  # zero-width space
        0x2060: None,  # word joiner
        0xFEFF: None,  # BOM / zero-width no-break space
    }
)

# Control and surrogate code points that str.isspace() does not count as whitespace.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff]")
_PARAM_WORD = re.compile(r"([-–—―]+)([A-Za-z].*)", re.DOTALL)
_URL_WORD = re.compile(r"https?://", re.IGNORECASE)
_BOUNDARY = re.compile(r"(?:(?<=::)(?<!:::)|(?<=,))(?=(?:[-–—―]*[–—―][-–—―]*|-{2,})[A-Za-z]|https?://)", re.IGNORECASE)
_SPECIAL_FIRST = frozenset("-–—―hH")
_INT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_WEIGHT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?=\s|$)")
_COLONS = re.compile(r":+")
_VERSION = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_ASPECT = re.compile(r"([0-9]+):([0-9]+)")
_INT_DIGITS_MAX = 12
_PROFILE_CODE = re.compile(r"[a-z0-9]{4,32}")
_STYLE_CODE = re.compile(r"[0-9]{1,10}")
_LORA_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_LORA_ITEM = re.compile(r"([^:]+)(?::(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)))?")
_LORA_PARSE_MAX = 10
"""Most ``--lora`` items the parser reads (the configured count, usually lower, is checked when jobs are built)."""
RANDOM_STYLE = "random"
"""``--sref random``: a new random style code, drawn when the jobs are built (and shown in their prompt)."""

# Every spelling -> the canonical parameter; the speed flags map to "speed" and carry their value in the name.
_ALIASES: dict[str, str] = {
    "ar": "ar",
    "aspect": "ar",
    "c": "chaos",
    "chaos": "chaos",
    "q": "quality",
    "quality": "quality",
    "seed": "seed",
    "stop": "stop",
    "s": "stylize",
    "stylize": "stylize",
    "style": "style",
    "tile": "tile",
    "w": "weird",
    "weird": "weird",
    "iw": "iw",
    "v": "version",
    "version": "version",
    "niji": "niji",
    "fast": "speed",
    "relax": "speed",
    "turbo": "speed",
    "r": "repeat",
    "repeat": "repeat",
    "no": "no",
    "draft": "draft",
    "exp": "exp",
    "p": "p",
    "personalize": "p",
    "sref": "sref",
    "sw": "sw",
    "sv": "sv",
    "cref": "cref",
    "cw": "cw",
    "oref": "oref",
    "ow": "ow",
    "lora": "lora",
}
PARAMETER_NAMES: frozenset[str] = frozenset(_ALIASES)
"""Every spelling of a built-in parameter (without its dashes), e.g. ``ar``, ``aspect``, ``no``."""
_FLAGS = frozenset({"tile", "speed", "draft"})
_URL_PARAMS = frozenset({"sref", "cref", "oref"})
"""Parameters whose values may be image URLs."""
_JOINED = frozenset({"no", "lora"})
"""Parameters that may be given more than once (their lists are joined)."""
# Parameters that claim the same Prompt field: giving two of them is a conflict, not a duplicate.
_FIELD_OF = {"niji": "version"}


def _show(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def _fmt_num(x: float) -> str:
    """Shortest exact decimal (no exponent) that reads back as ``x``: 2.0 -> "2", 0.25 -> "0.25", 1e-05 -> "0.00001"."""
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return format(Decimal(repr(x)), "f")


@dataclass(frozen=True)
class Prompt:
    """One runnable prompt. Build with ``parse``; constructing one directly validates the ranges the same way."""

    text: str
    """Prompt words without parameters and image URLs, whitespace-normalised; for multi-prompts the parts' texts joined
    by spaces (the weights live in ``parts``)."""
    parts: tuple[tuple[str, float], ...] = ()
    """``::`` parts with weights as given; empty on construction means ``((text, 1.0),)``."""
    negative: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    aspect_ratio: tuple[int, int] = (1, 1)
    chaos: int = 0
    quality: float = 1.0
    seed: int | None = None
    stop: int = 100
    stylize: int = 100
    style: str | None = None
    tile: bool = False
    weird: int = 0
    image_weight: float = 1.0
    version: str | None = None
    """``--v`` value, or ``niji`` / ``niji <n>`` from ``--niji [n]``: a key of ``settings.model_aliases``."""
    speed: str | None = None
    repeat: int = 1
    draft: bool = False
    """``--draft``: fewer steps (and the configured distillation LoRA), with an Enhance button on the result."""
    experimental: int = 0
    """``--exp`` 0-100: more guidance and steps (detail, contrast)."""
    personalize: tuple[str, ...] | None = None
    """``--p``: None without it; ``()`` for the member's own profile; else the profile codes given."""
    style_refs: tuple[str, ...] = ()
    """``--sref``: image URLs, numeric style codes, or ``random`` alone."""
    style_weight: int = 100
    """``--sw`` 0-1000."""
    style_version: int | None = None
    """``--sv`` (one of ``STYLE_VERSIONS``), or None."""
    character_refs: tuple[str, ...] = ()
    """``--cref`` image URLs."""
    character_weight: int = 100
    """``--cw`` 0-100."""
    omni_refs: tuple[str, ...] = ()
    """``--oref``: one image URL."""
    omni_weight: int = 100
    """``--ow`` 1-1000."""
    loras: tuple[tuple[str, float | None], ...] = ()
    """``--lora name[:weight]`` items, names lower-cased; None: the LoRA's configured default weight."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What the parser changed and the member should be told (an off-list ``--quality`` rounded); not part of
    equality, so the canonical form round-trips."""

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", ((self.text, 1.0),))
        if not self.text.strip():
            raise PromptError(tr("the prompt has no text (only parameters or image URLs); describe the image"))
        joined = " ".join(t for t, _ in self.parts)
        if joined != self.text:
            raise PromptError(
                tr(
                    "Prompt.text {text!r} must be the parts' texts joined by spaces, {joined!r}",
                    text=self.text,
                    joined=joined,
                )
            )
        weights = [w for _, w in self.parts]
        if not sum(weights) > 0:
            shown = " ".join(f"{t}::{_fmt_num(w)}" for t, w in self.parts)
            raise PromptError(
                tr(
                    "multi-prompt weights must add up to more than 0, got {sum} ({shown})",
                    sum=_fmt_num(sum(weights)),
                    shown=shown,
                )
            )
        w, h = self.aspect_ratio
        ar = f"{w}:{h}"
        if not (1 <= w <= defaults.MAX_ASPECT_TERM and 1 <= h <= defaults.MAX_ASPECT_TERM):
            raise PromptError(
                tr(
                    "--ar must be two whole numbers from 1 to {max_aspect_term} as W:H (e.g. 16:9), got {ar}",
                    max_aspect_term=defaults.MAX_ASPECT_TERM,
                    ar=ar,
                )
            )
        if max(w, h) > defaults.MAX_ASPECT_RATIO * min(w, h):
            m = defaults.MAX_ASPECT_RATIO
            raise PromptError(tr("--ar can be at most {m}:1 or 1:{m}, got {ar}", m=m, ar=ar))
        _check_range("--chaos", self.chaos, 0, defaults.CHAOS_MAX)
        if self.quality not in defaults.QUALITY_VALUES:
            raise PromptError(
                tr(
                    "--quality must be one of {quality_list}, got {quality}",
                    quality_list=_quality_list(),
                    quality=_fmt_num(self.quality),
                )
            )
        if self.seed is not None:
            _check_range("--seed", self.seed, 0, defaults.MAX_SEED)
        _check_range("--stop", self.stop, defaults.STOP_MIN, 100)
        _check_range("--stylize", self.stylize, 0, defaults.STYLIZE_MAX)
        if self.style is not None and self.style not in defaults.STYLES:
            raise PromptError(
                tr("--style must be one of {styles}, got {style}", styles=", ".join(defaults.STYLES), style=self.style)
            )
        _check_range("--weird", self.weird, 0, defaults.WEIRD_MAX)
        if not 0 <= self.image_weight <= defaults.IMAGE_WEIGHT_MAX:
            raise PromptError(
                tr(
                    "--iw must be a number from 0 to {image_weight_max}, got {image_weight}",
                    image_weight_max=_fmt_num(defaults.IMAGE_WEIGHT_MAX),
                    image_weight=_fmt_num(self.image_weight),
                )
            )
        if self.image_weight != 1.0 and not self.image_urls:
            raise PromptError(
                tr(
                    "--iw {image_weight} needs an image URL at the start of the prompt",
                    image_weight=_fmt_num(self.image_weight),
                )
            )
        if self.speed is not None and self.speed not in SPEEDS:
            raise PromptError(
                tr("speed must be one of {speeds}, got {speed}", speeds=", ".join(SPEEDS), speed=self.speed)
            )
        _check_range("--repeat", self.repeat, 1, defaults.REPEAT_MAX)
        self._check_references()

    def _check_references(self) -> None:
        """The ranges and pairings of the reference, personalization and LoRA parameters (module doc, rule 9)."""
        _check_range("--exp", self.experimental, 0, defaults.EXP_MAX)
        if self.personalize is not None:
            _check_count("--p", self.personalize, defaults.MAX_PROFILE_CODES)
            for code in self.personalize:
                if not _PROFILE_CODE.fullmatch(code):
                    raise PromptError(
                        tr("--p codes are 4-32 lowercase letters or digits, got {code!r}", code=_show(code))
                    )
        _check_count("--sref", self.style_refs, defaults.MAX_REFERENCE_IMAGES)
        for ref in self.style_refs:
            if ref == RANDOM_STYLE:
                if len(self.style_refs) > 1:
                    raise PromptError(tr("--sref random stands alone; give it without other --sref values"))
            elif _STYLE_CODE.fullmatch(ref):
                if str(int(ref)) != ref or int(ref) > defaults.STYLE_CODE_MAX:
                    raise PromptError(
                        tr(
                            "--sref style codes are whole numbers from 0 to {most}, got {code}",
                            most=defaults.STYLE_CODE_MAX,
                            code=_show(ref),
                        )
                    )
            else:
                _check_url("--sref", ref, N_("an image URL, a style code or random"))
        _check_count("--cref", self.character_refs, defaults.MAX_REFERENCE_IMAGES)
        for ref in self.character_refs:
            _check_url("--cref", ref, N_("an image URL"))
        _check_count("--oref", self.omni_refs, 1)
        for ref in self.omni_refs:
            _check_url("--oref", ref, N_("an image URL"))
        _check_range("--sw", self.style_weight, 0, defaults.STYLE_WEIGHT_MAX)
        _check_range("--cw", self.character_weight, 0, defaults.CHARACTER_WEIGHT_MAX)
        _check_range("--ow", self.omni_weight, 1, defaults.OMNI_WEIGHT_MAX)
        if self.style_version is not None and self.style_version not in defaults.STYLE_VERSIONS:
            allowed = ", ".join(str(v) for v in defaults.STYLE_VERSIONS)
            raise PromptError(
                tr("--sv must be one of {allowed}, got {value}", allowed=allowed, value=self.style_version)
            )
        for flag, given, needs, has in (
            ("--sw", self.style_weight != 100, "--sref", self.style_refs),
            ("--sv", self.style_version is not None, "--sref", self.style_refs),
            ("--cw", self.character_weight != 100, "--cref", self.character_refs),
            ("--ow", self.omni_weight != 100, "--oref", self.omni_refs),
        ):
            if given and not has:
                raise PromptError(
                    tr("{flag} weighs a reference: give {needs} <image URL> with it", flag=flag, needs=needs)
                )
        _check_count("--lora", self.loras, _LORA_PARSE_MAX)
        names = [name for name, _ in self.loras]
        for name, weight in self.loras:
            if not _LORA_NAME.fullmatch(name):
                raise PromptError(
                    tr(
                        "--lora names are 1-64 lowercase letters, digits, '_', '.' or '-', got {name!r}",
                        name=_show(name),
                    )
                )
            if names.count(name) > 1:
                raise PromptError(tr("--lora {name} is given twice; give each LoRA once", name=name))
            if weight is not None and not abs(weight) <= defaults.MAX_MULTIPROMPT_WEIGHT:
                raise PromptError(
                    tr("--lora {name}: the weight must be a number, got {weight}", name=name, weight=_fmt_num(weight))
                )

    @property
    def weighted(self) -> bool:
        """Whether the prompt has ``::`` weights other than a single part of weight 1."""
        return self.parts != ((self.text, 1.0),)

    def to_text(self) -> str:
        """The canonical prompt string: image URLs, body, then non-default parameters in a fixed order."""
        words: list[str] = list(self.image_urls)
        if self.weighted:
            # A part ending in ":" would run into "::" and read as ":::".
            words.extend(f"{t}{' ' if t.endswith(':') else ''}::{_fmt_num(w)}" for t, w in self.parts)
        else:
            words.append(self.text)
        if self.aspect_ratio != (1, 1):
            words.append(f"--ar {self.aspect_ratio[0]}:{self.aspect_ratio[1]}")
        if self.chaos:
            words.append(f"--chaos {self.chaos}")
        if self.quality != 1.0:
            words.append(f"--quality {_fmt_num(self.quality)}")
        if self.seed is not None:
            words.append(f"--seed {self.seed}")
        if self.stop != 100:
            words.append(f"--stop {self.stop}")
        if self.stylize != 100:
            words.append(f"--stylize {self.stylize}")
        if self.style is not None:
            words.append(f"--style {self.style}")
        if self.tile:
            words.append("--tile")
        if self.weird:
            words.append(f"--weird {self.weird}")
        if self.image_weight != 1.0:
            words.append(f"--iw {_fmt_num(self.image_weight)}")
        if self.version is not None:
            if self.version == "niji" or self.version.startswith("niji "):
                words.append("--" + self.version)
            else:
                words.append(f"--v {self.version}")
        if self.speed is not None:
            words.append(f"--{self.speed}")
        if self.repeat != 1:
            words.append(f"--repeat {self.repeat}")
        words.extend(self._reference_words())
        if self.negative:
            words.append("--no " + ", ".join(self.negative))
        # Literal braces are escaped, so the canonical form never opens a permutation (rule 2).
        return " ".join(words).replace("{", "\\{").replace("}", "\\}")

    def _reference_words(self) -> list[str]:
        """The canonical words of ``--draft``, ``--exp``, ``--p``, the references and ``--lora``."""
        words: list[str] = []
        if self.draft:
            words.append("--draft")
        if self.experimental:
            words.append(f"--exp {self.experimental}")
        if self.personalize is not None:
            words.append(" ".join(["--p", *self.personalize]))
        for flag, refs, weight_flag, weight in (
            ("--sref", self.style_refs, "--sw", self.style_weight),
            ("--cref", self.character_refs, "--cw", self.character_weight),
            ("--oref", self.omni_refs, "--ow", self.omni_weight),
        ):
            if refs:
                words.append(" ".join([flag, *refs]))
            if weight != 100:
                words.append(f"{weight_flag} {weight}")
            if flag == "--sref" and self.style_version is not None:
                words.append(f"--sv {self.style_version}")
        if self.loras:
            items = [name if weight is None else f"{name}:{_fmt_num(weight)}" for name, weight in self.loras]
            words.append(" ".join(["--lora", *items]))
        return words


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PromptError(
            tr("{name} must be an integer from {lo} to {hi}, got {value}", name=name, lo=lo, hi=hi, value=value)
        )


def _check_count(name: str, values: tuple[object, ...], most: int) -> None:
    if len(values) > most:
        raise PromptError(
            tr("{name} takes at most {most} value(s), got {count}", name=name, most=most, count=len(values))
        )


def _check_url(name: str, value: str, allowed: str) -> None:
    """A ``PromptError`` unless ``value`` is an http(s) URL with a host (and no ``::`` weight, not offered here)."""
    if _URL_WORD.match(value) and "::" in value:
        raise PromptError(
            tr(
                "{name}: per-image weights (url::2) are not offered here; weigh references with --sw/--cw/--ow",
                name=name,
            )
        )
    if _URL_WORD.match(value):
        try:
            host = urlsplit(value).hostname
        except ValueError:
            host = None
        if host:
            return
    raise PromptError(tr("{name} takes {allowed}, got {value!r}", name=name, allowed=tr(allowed), value=_show(value)))


def _quality_list() -> str:
    return ", ".join(_fmt_num(q).removeprefix("0") for q in defaults.QUALITY_VALUES)


def nearest_quality(value: float) -> float:
    """The allowed ``--quality`` nearest ``value`` (a tie goes to the larger), as Midjourney rounds off-list values."""
    return min(defaults.QUALITY_VALUES, key=lambda q: (abs(q - value), -q))


# --- permutations ---------------------------------------------------------------------------------------------------

# A sequence is a list of literal strings and groups; a group is a list of options, each a sequence.
_Seq: TypeAlias = "list[str | _Group]"
_Group: TypeAlias = "list[_Seq]"


def _parse_braces(text: str) -> _Seq:
    root: _Seq = []
    seq = root
    stack: list[tuple[_Seq, _Group, int]] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and (text[i + 1] in "{}" or (stack and text[i + 1] == ",")):
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "{":
            if len(stack) >= defaults.MAX_PERMUTATION_DEPTH:
                raise PromptError(
                    tr(
                        "permutations nest at most {max_permutation_depth} deep, got deeper at character {number}",
                        max_permutation_depth=defaults.MAX_PERMUTATION_DEPTH,
                        number=i + 1,
                    )
                )
            seq.append("".join(buf))
            buf = []
            option: _Seq = []
            stack.append((seq, [option], i))
            seq = option
        elif ch == "," and stack:
            seq.append("".join(buf))
            buf = []
            option = []
            stack[-1][1].append(option)
            seq = option
        elif ch == "}":
            if not stack:
                raise PromptError(
                    tr("unmatched '}}' at character {number}; permutations look like {{a, b}}", number=i + 1)
                )
            seq.append("".join(buf))
            buf = []
            outer, group, _ = stack.pop()
            outer.append(group)
            seq = outer
        else:
            buf.append(ch)
        i += 1
    if stack:
        raise PromptError(
            tr("unclosed '{{' at character {number}; permutations look like {{a, b}}", number=stack[-1][2] + 1)
        )
    seq.append("".join(buf))
    return root


def _count_seq(seq: _Seq) -> int:
    total = 1
    for item in seq:
        if not isinstance(item, str):
            total *= sum(_count_seq(option) for option in item)
    return total


def _expand_seq(seq: _Seq) -> list[str]:
    choices: list[list[str]] = []
    for item in seq:
        if isinstance(item, str):
            choices.append([item])
        else:
            choices.append([text.strip() for option in item for text in _expand_seq(option)])
    return ["".join(combo) for combo in itertools.product(*choices)]


def _describe_count(count: int) -> str:
    return f"{count:,}" if count < 10**15 else tr("about 10^{power}", power=len(str(count)) - 1)


# --- one expanded prompt --------------------------------------------------------------------------------------------


def _param_name(word: str) -> str | None:
    """The lower-cased parameter name if ``word`` is a parameter (``--ar``, ``—ar``, ``–ar``), else None."""
    match = _PARAM_WORD.fullmatch(word)
    if match is None:
        return None
    dashes = match.group(1)
    if dashes == "-":
        return None
    return match.group(2).lower()


def _unknown(name: str) -> PromptError:
    for known in sorted(_ALIASES, key=len, reverse=True):
        rest = name[len(known) :]
        if name.startswith(known) and rest and rest[0] in "0123456789.:":
            return PromptError(
                tr(
                    "unknown parameter --{name}; write --{known} {rest} with a space",
                    name=_show(name),
                    known=known,
                    rest=_show(rest),
                )
            )
    close = difflib.get_close_matches(name, list(_ALIASES), n=1, cutoff=0.6)
    if close:
        return PromptError(tr("unknown parameter --{name}; did you mean --{close}?", name=_show(name), close=close[0]))
    known_list = ", ".join("--" + k for k in _ALIASES)
    return PromptError(
        tr("unknown parameter --{name}; known parameters: {known_list}", name=_show(name), known_list=known_list)
    )


def _int_value(name: str, value: str, lo: int, hi: int) -> int:
    if not _INT.fullmatch(value) or len(value) > _INT_DIGITS_MAX or not lo <= int(value) <= hi:
        raise PromptError(
            tr(
                "--{name} must be an integer from {lo} to {hi}, got {value}",
                name=name,
                lo=lo,
                hi=hi,
                value=_show(value),
            )
        )
    return int(value)


def _single(name: str, values: list[str], allowed: str) -> str:
    if not values:
        raise PromptError(tr("--{name} needs a value: {allowed}", name=name, allowed=allowed))
    if len(values) > 1:
        raise PromptError(
            tr(
                "--{name} takes one value ({allowed}), got {values!r}; parameters go at the end of the prompt",
                name=name,
                allowed=allowed,
                values=_show(" ".join(values)),
            )
        )
    return values[0]


def _parse_body(body: str) -> tuple[tuple[str, float], ...]:
    """Split the body into ``::`` parts; ``((body, 1.0),)`` when it has no ``::``."""
    parts: list[tuple[str, float]] = []
    start = 0
    pos = 0
    for run in _COLONS.finditer(body):
        if run.start() < pos:  # inside a weight already consumed
            continue
        length = run.end() - run.start()
        if length == 1:
            continue
        if length > 2:
            raise PromptError(
                tr(
                    "'{group}' in the prompt is ambiguous; multi-prompts separate parts with '::' (e.g. cat::2 dog)",
                    group=run.group(),
                )
            )
        text = " ".join(body[start : run.start()].split())
        weight = 1.0
        pos = run.end()
        match = _WEIGHT.match(body, pos)
        if match is not None:
            weight = float(match.group()) + 0.0  # + 0.0 turns -0.0 into 0.0
            pos = match.end()
            if not abs(weight) <= defaults.MAX_MULTIPROMPT_WEIGHT:
                raise PromptError(
                    tr(
                        "multi-prompt weight ::{weight} must be from -{top} to {top}",
                        weight=_show(match.group()),
                        top=_fmt_num(defaults.MAX_MULTIPROMPT_WEIGHT),
                    )
                )
        if not text:
            raise PromptError(
                tr(
                    "multi-prompt part {number} is empty; write text before each '::' (e.g. cat::2 dog::1)",
                    number=len(parts) + 1,
                )
            )
        parts.append((text, weight))
        start = pos
    if not parts:
        return ((" ".join(body.split()), 1.0),)
    tail = " ".join(body[start:].split())
    if tail:
        parts.append((tail, 1.0))
    return tuple(parts)


def _parse_one(text: str) -> Prompt:
    words = text.split()
    if not words:
        raise PromptError(tr("the prompt is empty; describe the image, e.g. 'a red fox in snow --ar 3:2'"))
    urls: list[str] = []
    i = 0
    while i < len(words) and _URL_WORD.match(words[i]):
        url = words[i]
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not host:
            raise PromptError(
                tr("image URL {url!r} has no host; image URLs look like https://example.com/a.png", url=_show(url))
            )
        urls.append(url)
        i += 1
    rest: list[str] = []
    for word in words[i:]:
        # "castle::--ar 2:1" and "--no fog,--v 6": a parameter or URL may start right after "::" or ",".
        if (":" in word or "," in word) and _BOUNDARY.search(word):
            rest.extend(piece for piece in _BOUNDARY.split(word) if piece)
        else:
            rest.append(word)
    body: list[str] = []
    params: list[tuple[str, list[str]]] = []
    for word in rest:
        # Only words starting with a dash or h/H can be parameters or URLs; the regexes run for those alone.
        special = word[0] in _SPECIAL_FIRST
        if special and _URL_WORD.match(word):
            if params and _ALIASES[params[-1][0]] in _URL_PARAMS:
                params[-1][1].append(word)  # --sref/--cref/--oref take image URLs
                continue
            raise PromptError(tr("image URL {word!r} must come first in the prompt, before any text", word=_show(word)))
        name = _param_name(word) if special else None
        if name is not None:
            if name not in _ALIASES:
                raise _unknown(name)
            params.append((name, []))
        elif params:
            params[-1][1].append(word)
        else:
            body.append(word)

    fields: dict[str, object] = {}
    given: dict[str, str] = {}  # Prompt field -> the name the member typed
    negative: list[str] = []
    loras: list[tuple[str, float | None]] = []
    notes: list[str] = []
    for name, values in params:
        canon = _ALIASES[name]
        if canon == "no":
            items = [" ".join(item.split()) for item in " ".join(values).split(",")]
            items = [item for item in items if item]
            if not items:
                raise PromptError(tr("--no needs what to leave out, e.g. --no text, people"))
            negative.extend(items)
            continue
        if canon == "lora":
            loras.extend(_lora_items(name, values))
            continue
        key = _FIELD_OF.get(canon, canon)
        if key in given:
            first = given[key]
            if first == name:
                raise PromptError(tr("--{name} is given twice; give it once", name=name))
            raise PromptError(
                tr("--{first} and --{name} are both given; give one of them once", first=first, name=name)
            )
        given[key] = name
        if canon in _FLAGS and values:
            raise PromptError(
                tr(
                    "--{name} takes no value, got {values!r}; parameters go at the end of the prompt",
                    name=name,
                    values=_show(" ".join(values)),
                )
            )
        if canon == "ar":
            value = "".join(values)
            if not values:
                raise PromptError(tr("--ar needs a value: W:H in whole numbers, e.g. 16:9"))
            match = _ASPECT.fullmatch(value)
            if match is None or max(len(match.group(1)), len(match.group(2))) > _INT_DIGITS_MAX:
                if re.fullmatch(r"[0-9.]+:[0-9.]+", value):
                    raise PromptError(
                        tr(
                            "--ar takes whole numbers only (e.g. 3:2 rather than 1.5:1), got {value}",
                            value=_show(value),
                        )
                    )
                raise PromptError(
                    tr("--ar must be W:H in whole numbers (e.g. 16:9), got {values!r}", values=_show(" ".join(values)))
                )
            fields["aspect_ratio"] = (int(match.group(1)), int(match.group(2)))
        elif canon == "chaos":
            allowed = tr("an integer from {lo} to {hi}", lo=0, hi=defaults.CHAOS_MAX)
            fields["chaos"] = _int_value(name, _single(name, values, allowed), 0, defaults.CHAOS_MAX)
        elif canon == "quality":
            value = _single(name, values, tr("one of {values}", values=_quality_list()))
            if not _DECIMAL.fullmatch(value) or len(value) > 20:
                raise PromptError(
                    tr(
                        "--{name} must be one of {quality_list}, got {value}",
                        name=name,
                        quality_list=_quality_list(),
                        value=_show(value),
                    )
                )
            quality = nearest_quality(float(value))
            if quality != float(value):
                notes.append(
                    f"--{name} {value} is not offered; rounded to the nearest allowed value, "
                    f"{_fmt_num(quality)} (allowed: {_quality_list()})"
                )
            fields["quality"] = quality
        elif canon == "seed":
            allowed = tr("an integer from {lo} to {hi}", lo=0, hi=defaults.MAX_SEED)
            fields["seed"] = _int_value(name, _single(name, values, allowed), 0, defaults.MAX_SEED)
        elif canon == "stop":
            fields["stop"] = _int_value(
                name,
                _single(name, values, tr("an integer from {lo} to {hi}", lo=defaults.STOP_MIN, hi=100)),
                defaults.STOP_MIN,
                100,
            )
        elif canon == "stylize":
            allowed = tr("an integer from {lo} to {hi}", lo=0, hi=defaults.STYLIZE_MAX)
            fields["stylize"] = _int_value(name, _single(name, values, allowed), 0, defaults.STYLIZE_MAX)
        elif canon == "style":
            value = _single(name, values, tr("one of {values}", values=", ".join(defaults.STYLES))).lower()
            if value not in defaults.STYLES:
                raise PromptError(
                    tr(
                        "--{name} must be one of {styles}, got {value}",
                        name=name,
                        styles=", ".join(defaults.STYLES),
                        value=_show(value),
                    )
                )
            fields["style"] = value
        elif canon == "tile":
            fields["tile"] = True
        elif canon == "weird":
            allowed = tr("an integer from {lo} to {hi}", lo=0, hi=defaults.WEIRD_MAX)
            fields["weird"] = _int_value(name, _single(name, values, allowed), 0, defaults.WEIRD_MAX)
        elif canon == "iw":
            top = _fmt_num(defaults.IMAGE_WEIGHT_MAX)
            value = _single(name, values, tr("a number from 0 to {top}", top=top))
            if not _DECIMAL.fullmatch(value) or len(value) > 20 or not 0 <= float(value) <= defaults.IMAGE_WEIGHT_MAX:
                raise PromptError(
                    tr("--{name} must be a number from 0 to {top}, got {value}", name=name, top=top, value=_show(value))
                )
            if not urls:
                raise PromptError(
                    tr("--{name} {value} needs an image URL at the start of the prompt", name=name, value=value)
                )
            fields["image_weight"] = float(value)
        elif canon == "version":
            value = _single(name, values, tr("a model version such as 6")).lower()
            if not _VERSION.fullmatch(value):
                raise PromptError(
                    tr(
                        "--{name} must be a model version such as 6 or 5.2, got {value!r}",
                        name=name,
                        value=_show(value),
                    )
                )
            fields["version"] = value
        elif canon == "niji":
            if len(values) > 1:
                raise PromptError(
                    tr(
                        "--niji takes at most one value (a version such as 6), got {values!r}; "
                        "parameters go at the end of the prompt",
                        values=_show(" ".join(values)),
                    )
                )
            value = values[0].lower() if values else ""
            if value and not _VERSION.fullmatch(value):
                raise PromptError(
                    tr("--niji must be followed by nothing or a version such as 6, got {value!r}", value=_show(value))
                )
            fields["version"] = f"niji {value}" if value else "niji"
        elif canon == "speed":
            fields["speed"] = name
        elif canon == "repeat":
            allowed = tr("an integer from {lo} to {hi}", lo=1, hi=defaults.REPEAT_MAX)
            fields["repeat"] = _int_value(name, _single(name, values, allowed), 1, defaults.REPEAT_MAX)
        else:
            fields.update(_reference_field(name, canon, values))

    parts = _parse_body(" ".join(body))
    text_joined = " ".join(t for t, _ in parts)
    if not text_joined:
        raise PromptError(tr("the prompt has no text (only parameters or image URLs); describe the image"))
    prompt = Prompt(
        text=text_joined,
        parts=parts,
        negative=tuple(negative),
        image_urls=tuple(urls),
        loras=tuple(loras),
        notes=tuple(notes),
        **fields,  # type: ignore[arg-type]
    )
    length = len(prompt.to_text())
    if length > defaults.MAX_PROMPT_CHARS:
        raise PromptError(
            tr(
                "the prompt is {length} characters long in canonical form; at most {max_prompt_chars} are allowed",
                length=length,
                max_prompt_chars=defaults.MAX_PROMPT_CHARS,
            )
        )
    return prompt


def _items(values: list[str]) -> list[str]:
    """A parameter's values split at blanks and commas, empty pieces dropped."""
    return [item for value in values for item in value.split(",") if item]


def _reference_field(name: str, canon: str, values: list[str]) -> dict[str, object]:
    """The Prompt field(s) of one ``--draft``/``--exp``/``--p``/reference parameter (module doc, rule 9)."""
    if canon == "draft":
        return {"draft": True}
    if canon == "exp":
        allowed = f"an integer from 0 to {defaults.EXP_MAX}"
        return {"experimental": _int_value(name, _single(name, values, allowed), 0, defaults.EXP_MAX)}
    if canon == "p":
        return {"personalize": tuple(item.lower() for item in _items(values))}
    if canon in _URL_PARAMS:
        items = _items(values)
        if not items:
            what = "an image URL, a style code or random" if canon == "sref" else "an image URL"
            raise PromptError(f"--{name} needs {what}")
        if canon == "sref":
            items = [item.lower() if item.lower() == RANDOM_STYLE else item for item in items]
            items = [str(int(item)) if _STYLE_CODE.fullmatch(item) else item for item in items]
        field_name = {"sref": "style_refs", "cref": "character_refs", "oref": "omni_refs"}[canon]
        return {field_name: tuple(items)}
    ranges = {
        "sw": ("style_weight", 0, defaults.STYLE_WEIGHT_MAX),
        "cw": ("character_weight", 0, defaults.CHARACTER_WEIGHT_MAX),
        "ow": ("omni_weight", 1, defaults.OMNI_WEIGHT_MAX),
        "sv": ("style_version", min(defaults.STYLE_VERSIONS), max(defaults.STYLE_VERSIONS)),
    }
    field_name, lo, hi = ranges[canon]
    return {field_name: _int_value(name, _single(name, values, f"an integer from {lo} to {hi}"), lo, hi)}


def _lora_items(name: str, values: list[str]) -> list[tuple[str, float | None]]:
    """``--lora a b:0.8, c`` -> [("a", None), ("b", 0.8), ("c", None)] (names lower-cased, checked by ``Prompt``)."""
    items = _items(values)
    if not items:
        raise PromptError(f"--{name} needs a LoRA name, e.g. --{name} watercolor:0.8 (see /loras)")
    parsed: list[tuple[str, float | None]] = []
    for item in items:
        match = _LORA_ITEM.fullmatch(item)
        if match is None or len(item) > defaults.LORA_NAME_MAX + 24:
            raise PromptError(f"--{name} takes name or name:weight (e.g. watercolor:0.8), got {_show(item)!r}")
        weight = match.group(2)
        parsed.append((match.group(1).lower(), float(weight) + 0.0 if weight is not None else None))
    return parsed


def normalise(text: str) -> str:
    """Phone/IME punctuation mapped to ASCII (see the module doc); raises PromptError on control characters."""
    text = text.translate(_CHAR_MAP)
    bad = _CONTROL.search(text)
    if bad is not None:
        raise PromptError(
            tr(
                "the prompt contains the control character U+{group:04X} at character {number}",
                group=ord(bad.group()),
                number=bad.start() + 1,
            )
        )
    return text


def expand(text: str, *, max_expansions: int = defaults.MAX_PERMUTATIONS) -> list[str]:
    """The ``{a, b}`` permutations of normalised ``text``, first group slowest; PromptError past ``max_expansions``."""
    tree = _parse_braces(text)
    count = _count_seq(tree)
    if count > max_expansions:
        raise PromptError(
            tr(
                "the prompt expands to {count} permutations; at most {max_expansions} are allowed",
                count=_describe_count(count),
                max_expansions=max_expansions,
            )
        )
    return _expand_seq(tree)


def parse(text: str, *, max_expansions: int = defaults.MAX_PERMUTATIONS) -> list[Prompt]:
    """One ``Prompt`` per permutation of ``text``; raises ``PromptError`` naming the problem on bad input."""
    if not isinstance(text, str):
        raise PromptError(tr("a prompt must be a string, got {kind}", kind=type(text).__name__))
    if max_expansions < 1:
        raise ValueError(f"max_expansions must be at least 1, got {max_expansions}")
    if len(text) > defaults.MAX_PROMPT_INPUT_CHARS:
        raise PromptError(
            tr(
                "the prompt is {length} characters long; at most {max_prompt_input_chars} are accepted",
                length=len(text),
                max_prompt_input_chars=defaults.MAX_PROMPT_INPUT_CHARS,
            )
        )
    if not text.strip():
        raise PromptError(tr("the prompt is empty; describe the image, e.g. 'a red fox in snow --ar 3:2'"))
    prompts = [_parse_one(variant) for variant in expand(normalise(text), max_expansions=max_expansions)]
    log.debug("parsed %d prompt(s) from %d characters", len(prompts), len(text))
    return prompts


__all__ = ["SPEEDS", "Prompt", "PromptError", "expand", "normalise", "parse"]
