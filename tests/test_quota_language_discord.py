"""Allowances and members' language through the fake Discord, with the real bot and a real Redis: 200 submissions
at once against an allowance of 10 jobs a day take exactly 10, /quota shows none left and the reset; a zh-CN member
gets the parser's error, the limit message and the waiting line in Chinese, and the synced commands carry Chinese
descriptions."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest
import redis

from shared import allowances
from shared.queue.client import all_queues
from shared.settings import Settings
from tests.discord_harness import answered
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.slow

MEMBER = 4242
CHINESE = 8686
OTHER = 5151
ADMIN = 1001


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {**settings_env, "ALLOWANCES": json.dumps({"default": {"jobs": 10}}), "MAX_QUEUED_PER_MEMBER": "12"}


def test_allowance_quota_and_a_chinese_speaking_member(
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    start_bot()
    fake.wait_connected()
    imagine = fake.commands["imagine"]
    assert imagine["description_localizations"]["zh-CN"] == "根据提示词生成四张图片"
    assert imagine["options"][0]["description_localizations"]["zh-CN"] == "想生成什么，--参数 放在末尾"
    assert imagine["name"] == "imagine" and not imagine.get("name_localizations")  # names stay as members type them
    assert fake.commands["quota"]["description_localizations"]["zh-CN"] == "你的每日额度还剩多少，以及何时重置"

    # 200 submissions at once: exactly the allowance is queued, everyone else is told when it resets.
    payloads = [
        fake.slash_payload("imagine", {"prompt": f"a red circle --seed {n}"}, user_id=MEMBER) for n in range(200)
    ]
    records = fake.dispatch_many(payloads)
    for record in records:
        answered(fake, record, timeout=120)
    accepted = [r for r in records if not r.ephemeral]
    refused = [r for r in records if r.ephemeral]
    _, reset_at = allowances.period_bounds(
        settings.model_copy(update={"allowances": {"default": {"jobs": 10}}}), time.time()
    )
    assert len(accepted) == 10 and all("(Waiting to start)" in r.content for r in accepted)
    assert len(refused) == 190
    assert all(f"<t:{int(reset_at)}:t>" in r.content and "10 of 10 jobs" in r.content for r in refused)
    assert all("add --relax" in r.content for r in refused)  # the relax lane is offered
    # The accepted ones are enqueued right after their answers; the eleventh never is.
    fake.wait_for(lambda: sum(q.count for q in all_queues(redis_conn, settings)) == 10, 60, "10 jobs queued")
    time.sleep(0.5)
    assert sum(queue.count for queue in all_queues(redis_conn, settings)) == 10

    quota = answered(fake, fake.slash("quota", user_id=MEMBER))
    assert quota.ephemeral
    assert "Jobs: 0 left (10 of 10 used)" in quota.content and f"<t:{int(reset_at)}:t>" in quota.content

    # A member whose Discord is in Simplified Chinese: the parser's error, the limit message, the waiting line.
    bad = answered(fake, fake.slash("imagine", {"prompt": "a cat --ar 9:1"}, user_id=CHINESE, locale="zh-CN"))
    assert bad.ephemeral and bad.content == "抱歉，我无法理解这个提示词：--ar 最多为 8:1 或 1:8，收到的是 9:1"
    over = answered(fake, fake.slash("imagine", {"prompt": "a cat --repeat 13"}, user_id=CHINESE, locale="zh-CN"))
    assert over.ephemeral and over.content == "你有 0 个任务在排队，上限是 12（这条提示词会生成 13 个）。"
    waiting = answered(fake, fake.slash("imagine", {"prompt": "一只猫 --seed 5"}, user_id=CHINESE, locale="zh-CN"))
    assert not waiting.ephemeral
    assert waiting.content.startswith(f"**一只猫 --seed 5** - <@{CHINESE}>（等待开始）"), waiting.content
    chinese_quota = answered(fake, fake.slash("quota", user_id=CHINESE, locale="zh-CN"))
    assert "任务：剩余 9 个（已用 1 / 10）" in chinese_quota.content

    # An admin sets the rule of everyone with /rules set; /rules show lists it, and it refuses by its name.
    set_rule = answered(fake, fake.slash("rules set", {"name": "members", "models": "default"}, user_id=ADMIN))
    assert set_rule.ephemeral and "everyone - name: `members`, models: `default`" in set_rule.content
    shown = answered(fake, fake.slash("rules show", user_id=ADMIN))
    assert "everyone - name: `members`" in shown.content
    refused = answered(fake, fake.slash("imagine", {"prompt": "a cat --v 6"}, user_id=OTHER))
    assert refused.ephemeral and refused.content.startswith('Not allowed by the rule "members": model `6`.')
    cleared = answered(fake, fake.slash("rules clear", user_id=ADMIN))
    assert cleared.content == "Rule of everyone removed."
