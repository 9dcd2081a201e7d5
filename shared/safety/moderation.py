"""Prompt moderation: the caps and the banned list a prompt must pass before it becomes jobs.

``check(text, settings)`` parses the prompt (``shared.prompt``: length, control characters, permutation and
``--repeat`` caps) and then refuses, with a ``ModerationRefused`` (a ``PromptError``, so every front end shows it as
it shows a syntax error):

- a word repeated more than ``max_prompt_word_repeats`` times in one prompt (padding that wastes encoder windows);
- a banned word or pattern from ``moderation_banned`` (settings / config). Entries are whole words or phrases,
  matched case-insensitively after undoing simple obfuscation: Unicode look-alikes (NFKC), l33t digits and symbols
  (``0->o 1->i 3->e 4->a 5->s 7->t @->a $->s``), letters split by spaces or punctuation (``b a d``, ``b.a.d``,
  ``b-a-d``) and stretched letters (``baaad``). Entries written ``re:<regex>`` are regular expressions, searched
  case-insensitively in the prompt text and in its de-obfuscated form.

Only the positive prompt text of every permutation is checked (``--no`` lists what to keep out, so a banned word
there is not a request for it). ``check_and_audit`` also records each refusal in the audit log.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shared.i18n import tr
from shared.prompt.parser import Prompt, PromptError, parse
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)

REGEX_PREFIX = "re:"
_LEET_DIGITS = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"})
_LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "£": "l"}
# A symbol stands for a letter only when a letter or digit follows it ("b@d", "$hit"), not at a word's end ("bad!").
_LEET_SYMBOL = re.compile(r"[@$!|+€£](?=[^\W_])")
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_STRETCH = re.compile(r"(.)\1+")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)


class ModerationRefused(PromptError):
    """A prompt refused by moderation; ``str()`` is the member-facing explanation, ``rule`` what matched."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class BannedList:
    """The compiled banned list: de-obfuscated word sequences and regular expressions."""

    phrases: tuple[tuple[str, tuple[str, ...]], ...]
    """(entry as configured, its de-obfuscated words)."""
    patterns: tuple[tuple[str, re.Pattern[str]], ...]


@lru_cache(maxsize=8)
def compile_banned(entries: tuple[str, ...]) -> BannedList:
    """Compile ``moderation_banned``; a bad regex is an error naming it."""
    phrases = []
    patterns = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith(REGEX_PREFIX):
            try:
                patterns.append((entry, re.compile(entry[len(REGEX_PREFIX) :], re.IGNORECASE)))
            except re.error as exc:
                raise ValueError(
                    f"MODERATION_BANNED entry {entry!r} is not a valid regular expression: {exc}"
                ) from None
            continue
        words = tuple(_squash(word) for word in _words(entry))
        if not words:
            raise ValueError(f"MODERATION_BANNED entry {entry!r} has no letters; write a word or re:<regex>")
        phrases.append((entry, words))
    return BannedList(tuple(phrases), tuple(patterns))


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _squash(word: str) -> str:
    """Stretched letters collapsed (``baaad`` -> ``bad``), so the banned word and the prompt compare alike."""
    return _STRETCH.sub(r"\1", word)


def _words(text: str) -> list[str]:
    """De-obfuscated words of ``text``: folded, l33t undone, runs of single characters joined (``b a d`` -> bad)."""
    return [word for word, _ in _marked_words(text)]


def _marked_words(text: str) -> list[tuple[str, bool]]:
    """``_words`` with a flag telling which words were joined from single characters (spelled out letter by letter)."""
    folded = _LEET_SYMBOL.sub(lambda m: _LEET_SYMBOLS[m.group()], _fold(text)).translate(_LEET_DIGITS)
    tokens = _TOKEN.findall(folded)
    words: list[tuple[str, bool]] = []
    singles: list[str] = []
    for token in tokens:
        if len(token) == 1:
            singles.append(token)
            continue
        if singles:
            words.append(("".join(singles), len(singles) > 1))
            singles = []
        words.append((token, False))
    if singles:
        words.append(("".join(singles), len(singles) > 1))
    return words


def deobfuscate(text: str) -> str:
    """The form banned words are matched in: de-obfuscated words joined by single spaces."""
    return " ".join(_squash(word) for word in _words(text))


def banned_match(text: str, banned: BannedList) -> str:
    """The banned entry ``text`` matches, or ``""``."""
    if not banned.phrases and not banned.patterns:  # nothing banned (the default): no de-obfuscation to do
        return ""
    marked = [(_squash(word), spelled) for word, spelled in _marked_words(text)]
    words = [word for word, _ in marked]
    spelled_out = [word for word, spelled in marked if spelled]
    for entry, phrase in banned.phrases:
        size = len(phrase)
        for start in range(len(words) - size + 1):
            if tuple(words[start : start + size]) == phrase:
                return entry
        joined = "".join(phrase)
        # A phrase written without spaces ("badword" for "bad word"), or spelled out among other single letters
        # ("a b a d w o r d" joins into "abadword").
        if (size > 1 and joined in words) or any(joined in word for word in spelled_out):
            return entry
        # A word split by spaces or punctuation into pieces ("bad-word", "bad word" for "badword").
        for start in range(len(words)):
            for end in range(start + 2, min(start + 4, len(words)) + 1):
                if "".join(words[start:end]) == joined:
                    return entry
    if banned.patterns:
        folded = _fold(text)
        plain = " ".join(words)
        for entry, pattern in banned.patterns:
            if pattern.search(folded) or pattern.search(plain):
                return entry
    return ""


def repeated_word(text: str, cap: int) -> tuple[str, int]:
    """The most repeated word of ``text`` and its count, if that count is over ``cap``; else ("", 0)."""
    counts = Counter(word.casefold() for word in _WORD.findall(unicodedata.normalize("NFKC", text)))
    if not counts:
        return "", 0
    word, count = counts.most_common(1)[0]
    return (word, count) if count > cap else ("", 0)


def check_prompts(prompts: list[Prompt], settings: Settings) -> None:
    """Refuse parsed ``prompts`` that break the repeat cap or match the banned list (``ModerationRefused``)."""
    banned = compile_banned(tuple(settings.moderation_banned))
    for prompt in prompts:
        word, count = repeated_word(prompt.text, settings.max_prompt_word_repeats)
        if word:
            raise ModerationRefused(
                tr(
                    "the word {word!r} appears {count} times; at most {cap} repeats of a word are allowed",
                    word=word,
                    count=count,
                    cap=settings.max_prompt_word_repeats,
                ),
                rule="repeat",
            )
        entry = banned_match(prompt.text, banned)
        if entry:
            shown = tr("a blocked pattern") if entry.startswith(REGEX_PREFIX) else repr(entry)
            raise ModerationRefused(
                tr("the prompt contains {shown}, which this server does not allow; please rephrase it", shown=shown),
                rule=entry,
            )


def check(text: str, settings: Settings) -> list[Prompt]:
    """Parse ``text`` and moderate it; raises ``PromptError`` (``ModerationRefused`` for moderation refusals)."""
    prompts = parse(text)
    check_prompts(prompts, settings)
    return prompts


def check_and_audit(text: str, settings: Settings, connection: Any, *, owner: str) -> list[Prompt]:
    """``check``, recording a moderation refusal in the audit log (prompt cut to 300 characters) before raising."""
    try:
        return check(text, settings)
    except ModerationRefused as exc:
        if connection is not None:
            audit_log.record(
                connection, settings, "prompt_refused", actor=owner, rule=exc.rule, reason=str(exc), prompt=text[:300]
            )
        raise


__all__ = ["ModerationRefused", "banned_match", "check", "check_and_audit", "check_prompts", "deobfuscate"]
