"""Prompt moderation: caps, the banned list with simple obfuscation, refusals explained and audited; a fuzz that only
ever sees ``PromptError`` (``FUZZ_EXAMPLES=100000 pytest tests/test_moderation.py -k fuzz`` for the long run)."""

from __future__ import annotations

import os

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.prompt.parser import PromptError
from shared.safety.moderation import ModerationRefused, check, check_and_audit, compile_banned, deobfuscate
from shared.settings import Settings
from shared.stores import audit_log

BANNED = ("badword", "evil thing", "re:\\bforbid+en\\b")


@pytest.fixture
def mod_settings() -> Settings:
    return Settings(moderation_banned=BANNED, max_prompt_word_repeats=5)


@pytest.mark.parametrize(
    "text",
    [
        "a BADWORD in a field", "a b a d w o r d here", "b.a.d.w.o.r.d", "b-a-d-w-o-r-d!", "a b@dw0rd cat",
        "baaaadwooord", "ｂａｄｗｏｒｄ", "an EVIL   thing --ar 3:2", "an evilthing", "3v1l th1ng", "{a, badword} cat",
        "so forbidden", "FORBIDDDEN fruit", "a b4d-w0rd cat", "bad word.",
    ],
)  # fmt: skip
def test_banned_words_are_caught_through_case_spacing_leet_and_permutations(text: str, mod_settings: Settings) -> None:
    with pytest.raises(ModerationRefused, match="this server does not allow"):
        check(text, mod_settings)


@pytest.mark.parametrize(
    "text", ["a bad day, a word", "badminton court", "an evil plan", "forbidding castle", "a cat --no badword"]
)
def test_innocent_prompts_pass(text: str, mod_settings: Settings) -> None:
    assert check(text, mod_settings)


def test_regex_entries_are_not_shown_to_the_member(mod_settings: Settings) -> None:
    with pytest.raises(ModerationRefused) as caught:
        check("forbidden fruit", mod_settings)
    assert "a blocked pattern" in str(caught.value) and "forbid" not in str(caught.value)
    assert caught.value.rule == "re:\\bforbid+en\\b"


def test_word_repeat_cap(mod_settings: Settings) -> None:
    assert check("cat " * 5 + "dog", mod_settings)
    with pytest.raises(ModerationRefused, match="'cat' appears 6 times; at most 5"):
        check("Cat " * 6 + "dog", mod_settings)


def test_length_and_permutation_caps_come_from_the_prompt_language(mod_settings: Settings) -> None:
    with pytest.raises(PromptError, match="characters long"):
        check("a" * 7000, mod_settings)
    with pytest.raises(PromptError, match="permutations"):
        check("{a,b,c,d,e,f,g} {a,b,c,d,e,f,g} cat", mod_settings)


def test_bad_config_entries_are_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="'re:\\(' is not a valid regular expression"):
        compile_banned(("re:(",))
    with pytest.raises(ValueError, match="has no letters"):
        compile_banned(("...",))


def test_refusals_are_recorded_in_the_audit_log(mod_settings: Settings, redis_conn: redis.Redis) -> None:
    with pytest.raises(ModerationRefused):
        check_and_audit("a b4dword please", mod_settings, redis_conn, owner="1234")
    assert check_and_audit("a nice cat", mod_settings, redis_conn, owner="1234")
    (entry,) = audit_log.entries(redis_conn, mod_settings, event="prompt_refused")
    assert entry["actor"] == "1234" and entry["rule"] == "badword" and entry["prompt"] == "a b4dword please"


def test_deobfuscate_shows_what_is_matched() -> None:
    assert deobfuscate("B.A.D  w0rd!!") == "bad word"


FUZZ = hsettings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PIECES = [
    "badword", "b a d", "w0rd", "evil", "thing", "{", "}", ",", "::", "--no", "--ar 2:3", "--repeat 40", "re:", "(",
    "\\", "forbidden", " ", "ｂ", "🐱", "\u200b", "cat", "1", "@", "--iw 2", "https://x.io/a.png",
]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=30).map(" ".join))
def test_fuzz_moderated_prompts_only_raise_prompt_error(text: str) -> None:
    try:
        prompts = check(text, Settings(moderation_banned=BANNED, max_prompt_word_repeats=5))
    except PromptError:
        return
    assert prompts
