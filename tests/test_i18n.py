"""Members' own language: the catalogues are complete and current, templates are translated before formatting with
English as the fallback, and prompts are never translated."""

from __future__ import annotations

import pytest

from bot import catalogue
from shared import i18n, messages
from shared.errors import PromptError
from shared.i18n import tr, use_locale
from shared.prompt.parser import parse


def test_the_catalogues_are_current_and_complete() -> None:
    assert catalogue.problems() == []  # python -m bot.catalogue extract / update, then translate what is new
    assert "zh_CN" in i18n.available_locales()
    assert len(i18n.catalogue("zh-CN")) > 250


def test_templates_are_translated_before_formatting_with_english_as_the_fallback() -> None:
    assert tr("You have {have} jobs queued, the limit is {allowed}.", have=3, allowed=2) == (
        "You have 3 jobs queued, the limit is 2."
    )
    with use_locale("zh-CN"):
        assert messages.queued_limit(3, 2) == "你有 3 个任务在排队，上限是 2。"
        assert messages.QUEUE_DOWN == "图片队列暂时不可用，请一分钟后重试。"  # constants too, when read
        assert messages.kept_for(30 * 86400) == "30 天" and messages.kept_for(1) == "1 秒"
        # The member's prompt is a value, never translated.
        assert messages.waiting_line("a red fox", "42", 2) == "**a red fox** - <@42>（等待开始） - 队列第 2 位"
        with pytest.raises(PromptError, match="--ar 最多为 8:1 或 1:8，收到的是 9:1"):
            parse("a cat --ar 9:1")
    for locale in ("", "en-US", "zh-TW", "fr", "xx-YY"):  # no catalogue: English
        with use_locale(locale):
            assert messages.QUEUE_DOWN == "The image queue is unavailable right now; please try again in a minute."
    assert messages.QUEUE_DOWN.startswith("The image queue")  # the context variable was restored


def test_a_translation_with_other_placeholders_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {**i18n.catalogue("zh-CN"), "Not saved: {reason}": "未保存：{why}"}
    monkeypatch.setattr(i18n, "catalogue", lambda locale: broken)
    with use_locale("zh-CN"):
        assert messages.not_saved("x") == "Not saved: x"


def test_accept_language_is_negotiated_by_preference() -> None:
    from shared.i18n import negotiate

    assert negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh_CN"
    assert negotiate("zh-TW") == "" and negotiate("zh") == "zh_CN"  # as catalogue(): no Simplified for zh-TW
    assert negotiate("fr;q=0.9, zh;q=0.5") == "zh_CN"  # the first language a catalogue serves
    assert negotiate("en-GB,zh-CN;q=0.9") == ""  # English asked first
    assert negotiate("en;q=0.1, zh-CN;q=0.8") == "zh_CN"  # by weight, not position
    assert negotiate("zh-CN;q=0") == "" and negotiate("zh-CN;q=abc") == "" and negotiate("") == ""
