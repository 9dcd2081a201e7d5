"""Server rules on a real Redis: filled once from the configuration, changed and audited, members get the most
generous of their rules, channels narrow them, adult content follows the channel's rule or Discord's flag, and the
intake, follow-ups and workers refuse by the rule's name."""

from __future__ import annotations

import re

import pytest
import redis

from shared import rules
from shared.errors import PromptError, RuleRefused
from shared.intake import Intake, Requester
from shared.jobs.spec import Delivery
from shared.prompt.parser import parse
from shared.settings import Settings
from shared.stores import audit_log
from tests.queue_control import spec_for

ARTISTS = "555"
SFW = "777"


@pytest.fixture
def ruled(queue_settings: Settings) -> Settings:
    rules.forget_cache()
    return queue_settings.model_copy(
        update={
            "model_aliases": {"6": queue_settings.model, "niji": queue_settings.model},
            "rules": {
                "default": {"name": "everyone", "models": ["default", "6"], "max_quality": 1},
                f"role:{ARTISTS}": {"name": "artists", "models": ["niji"], "max_quality": 2},
                f"channel:{SFW}": {"name": "sfw", "lanes": ["relax"], "adult": False, "max_pixels": 1000},
            },
        }
    )


def test_members_get_their_best_rule_and_channels_narrow_it(ruled: Settings, redis_conn: redis.Redis) -> None:
    intake = Intake(redis_conn, ruled, rules=[rules.IntakeRules(redis_conn, ruled)])
    member = Requester(member_id="1", channel_id="42")
    artist = Requester(member_id="2", roles=(ARTISTS,), channel_id="42")
    delivery = Delivery(kind="discord", channel_id="42")

    with pytest.raises(RuleRefused) as refused:
        intake.jobs_from_text("a cat --niji", member, delivery)
    assert str(refused.value) == 'Not allowed by the rule "everyone": model `niji`. Allowed: models `default`, `6`.'
    assert isinstance(refused.value, PromptError)  # every front end shows it, as any prompt error
    assert len(intake.jobs_from_text("a cat --niji --q 2", artist, delivery)) == 1  # the role widens model and quality
    with pytest.raises(RuleRefused, match=re.escape('rule "everyone": --quality 2. Allowed: --quality up to 1.')):
        intake.jobs_from_text("a cat --q 2", member, delivery)

    # In the sfw channel: only relax, small images, whatever the roles allow elsewhere.
    in_sfw = Requester(member_id="2", roles=(ARTISTS,), channel_id=SFW)
    with pytest.raises(RuleRefused, match=re.escape('rule "sfw": the fast lane. Allowed: lanes relax')):
        intake.jobs_from_text("a cat", in_sfw, delivery)
    with pytest.raises(RuleRefused, match=re.escape("64x64 images. Allowed: images of at most 1000 pixels")):
        intake.jobs_from_text("a cat --relax", in_sfw, delivery)

    # Adult content: the channel's rule first, else Discord's age restriction.
    book = rules.load(redis_conn, ruled)
    assert not book.adult_allowed(SFW, channel_nsfw=True)
    assert book.adult_allowed("42", channel_nsfw=True) and not book.adult_allowed("42", channel_nsfw=False)


def test_loras_are_locked_to_the_roles_a_rule_names_and_the_draft_lora_is_the_servers(
    ruled: Settings, redis_conn: redis.Redis
) -> None:
    locked = ruled.model_copy(
        update={
            "draft_lora": "lcm",
            "rules": {
                "default": {"name": "everyone", "loras": ["none"]},
                f"role:{ARTISTS}": {"name": "artists", "loras": ["ink", "paper"]},
            },
        }
    )
    rules.forget_cache()
    intake = Intake(redis_conn, locked, rules=[rules.IntakeRules(redis_conn, locked)])
    member = Requester(member_id="1", channel_id="42")
    with pytest.raises(RuleRefused) as refused:
        intake.jobs_from_text("a cat --lora ink:0.8", member, Delivery(kind="discord", channel_id="42"))
    assert str(refused.value) == 'Not allowed by the rule "everyone": LoRA `ink`. Allowed: no LoRA.'
    book = rules.load(redis_conn, locked)
    artist = rules.Asker(roles=(ARTISTS,), channel_id="42")
    book.check(rules.ask_of_prompt(parse("a cat --lora ink, paper:0.5")[0], locked), artist)  # the role widens it
    with pytest.raises(
        RuleRefused, match=re.escape('"everyone + artists": LoRA `comic`. Allowed: LoRAs `ink`, `paper`.')
    ):
        book.check(rules.ask_of_prompt(parse("a cat --lora ink comic")[0], locked), rules.Asker(roles=(ARTISTS, "9")))
    book.check(rules.ask_of_prompt(parse("a cat")[0], locked), rules.Asker())  # no LoRA: allowed to everyone
    # A --draft job carries the server's draft LoRA: not the member's ask, so a no-LoRA rule lets it through.
    draft = spec_for(locked, "1").replace(loras=(("lcm", 1.0),), delivery=Delivery(kind="discord", channel_id="42"))
    rules.check_spec(redis_conn, locked, draft)
    with pytest.raises(RuleRefused, match="LoRA `ink`"):
        rules.check_spec(redis_conn, locked, draft.replace(loras=(("lcm", 1.0), ("ink", 1.0))))
    assert rules.Rule.from_dict("default", {"loras": "Ink, paper"}).to_dict() == {"loras": ["ink", "paper"]}


def test_follow_ups_are_checked_for_the_channel_and_roles_they_are_made_in(
    ruled: Settings, redis_conn: redis.Redis
) -> None:
    spec = spec_for(ruled, "1").replace(
        delivery=Delivery(kind="discord", channel_id=SFW, roles=()), extra={"version": "niji", "quality": 1.0}
    )
    with pytest.raises(RuleRefused, match="everyone"):
        rules.check_spec(redis_conn, ruled, spec)
    artist_elsewhere = spec.replace(delivery=Delivery(kind="discord", channel_id="42", roles=(ARTISTS,)))
    rules.check_spec(redis_conn, ruled, artist_elsewhere)
    rules.check_spec(redis_conn, ruled, spec.replace(delivery=Delivery()))  # outside Discord: not checked


def test_rules_start_from_the_configuration_once_then_change_in_redis_audited(
    ruled: Settings, redis_conn: redis.Redis
) -> None:
    assert sorted(rules.load(redis_conn, ruled).rules) == ["channel:777", "default", "role:555"]
    rules.set_rule(redis_conn, ruled, "1001", rules.Rule("default", name="members", models=("default",)))
    assert rules.clear_rule(redis_conn, ruled, "1001", f"role:{ARTISTS}")
    assert not rules.clear_rule(redis_conn, ruled, "1001", f"role:{ARTISTS}")
    rules.forget_cache()
    book = rules.load(redis_conn, ruled)  # the configuration is not applied again over what admins changed
    assert book.rules["default"].title == "members" and f"role:{ARTISTS}" not in book.rules
    actions = [(e["action"], e.get("scope", "")) for e in reversed(audit_log.entries(redis_conn, ruled, event="rules"))]
    assert actions == [("seed", ""), ("set", "default"), ("clear", "role:555"), ("clear", "role:555")]
    with pytest.raises(ValueError, match="'adult' is a channel's setting"):
        rules.Rule("default", adult=True)
    with pytest.raises(ValueError, match="unknown keys \\['lora'\\]"):
        rules.Rule.from_dict("default", {"lora": ["x"]})
