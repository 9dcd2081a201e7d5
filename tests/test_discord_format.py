"""Message lines and button ids (shared.discord_format), follow-up jobs (shared.followups), member settings."""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from shared import defaults, messages
from shared.discord_wire import buttons
from shared.discord_wire.buttons import ButtonAction
from shared.errors import CannotFollowUp, SettingRefused
from shared.jobs.followups import reroll_spec, upscale_spec, variation_spec
from shared.jobs.record import JobRecord
from shared.jobs.spec import Delivery, JobKind, JobSpec, SourceImage, derive_seeds
from shared.keys import keys_for
from shared.prompt.parser import PromptError, parse
from shared.settings import Settings
from shared.stores import member_settings
from shared.stores.member_settings import MemberSettings


def grid_spec(**changes: object) -> JobSpec:
    spec = JobSpec(
        job_id="abc123",
        owner="42",
        prompt="a red fox --ar 3:2",
        parts=(("a red fox", 1.0),),
        negative=(),
        width=96,
        height=64,
        steps=4,
        guidance=7.5,
        seeds=derive_seeds(7),
        lane="relax",
        delivery=Delivery(kind="discord", channel_id="9", waiting_message_id="11"),
        extra={"seed": 7},
    )
    return spec.replace(**changes) if changes else spec


def record(spec: JobSpec) -> JobRecord:
    return JobRecord.from_dict({"job_id": spec.job_id, "spec": spec.to_dict(), "seeds": list(spec.seeds)})


@given(
    action=st.sampled_from(list(ButtonAction)),
    job_id=st.text(alphabet="0123456789abcdefABCDEF_-", min_size=1, max_size=64),
    n=st.integers(0, 9),
)
def test_custom_ids_round_trip_and_fit_discord(action: ButtonAction, job_id: str, n: int) -> None:
    value = buttons.custom_id(action, job_id, n)
    assert len(value) <= defaults.DISCORD_CUSTOM_ID_MAX
    ref = buttons.parse_custom_id(value)
    assert (ref.action, ref.job_id, ref.n) == (action, job_id, n)


@pytest.mark.parametrize("bad", ["imagine:x:abc:1", "imagine:u:abc", "other:u:abc:1", "imagine:u:a b:1", ""])
def test_foreign_custom_ids_are_rejected_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="custom_id"):
        buttons.parse_custom_id(bad)


def test_grid_buttons_are_u1_to_u4_reroll_then_v1_to_v4() -> None:
    rows = buttons.grid_components("abc123")
    labels = [[b.get("label") or b["emoji"]["name"] for b in row["components"]] for row in rows]
    assert labels == [["U1", "U2", "U3", "U4", defaults.REROLL_EMOJI], ["V1", "V2", "V3", "V4"]]
    refs = [buttons.parse_custom_id(b["custom_id"]) for row in rows for b in row["components"]]
    assert [(r.action.value, r.index) for r in refs][:5] == [("u", 0), ("u", 1), ("u", 2), ("u", 3), ("r", 0)]
    assert buttons.job_ids_in_components(rows) == ["abc123"]


def test_lines_escape_markdown_and_name_the_member() -> None:
    assert messages.result_line("a **bold** fox", "42", "fast") == r"**a \*\*bold\*\* fox** - <@42> (fast)"
    assert messages.waiting_line("fox", "42", 3) == "**fox** - <@42> (Waiting to start) - #3 in the queue"
    assert messages.progress_line("fox", "42", 0.424, "relax") == "**fox** - <@42> (42%) (relax)"
    assert "Upscaled (Creative) by <@7>" in messages.result_line("fox", "7", "fast", JobKind.UPSCALE, "creative")
    long = messages.result_line("x" * 5000, "42", "fast")
    assert len(long) < 2000


def test_upscale_of_image_two_is_owned_by_the_clicker() -> None:
    source = grid_spec()
    delivery = Delivery(kind="discord", channel_id="5")
    up = upscale_spec(record(source), 1, "77", "creative", delivery=delivery)
    assert up.kind is JobKind.UPSCALE and up.owner == "77" and up.job_id != source.job_id
    assert up.source == SourceImage("abc123", 1) and up.seeds == (source.seeds[1],)
    assert up.upscale_mode == "creative" and up.strength == defaults.UPSCALE_CREATIVE_STRENGTH
    assert up.delivery == delivery and up.lane == "relax" and up.prompt == source.prompt
    assert JobSpec.from_dict(up.to_dict()) == up


def test_variations_of_an_upscale_vary_the_grid_image_it_came_from() -> None:
    up = upscale_spec(record(grid_spec()), 2, "77")
    varied = variation_spec(record(up), 0, "78", defaults.VARY_SUBTLE_STRENGTH, rng=random.Random(1))
    assert varied.kind is JobKind.VARIATION and varied.source == SourceImage("abc123", 2)
    assert varied.strength == defaults.VARY_SUBTLE_STRENGTH and len(varied.seeds) == defaults.IMAGES_PER_GRID
    assert varied.upscale_mode == ""


def test_reroll_keeps_everything_but_the_seeds() -> None:
    source = grid_spec()
    again = reroll_spec(record(source), "42", random.Random(3))
    assert again.seeds != source.seeds and again.extra["seed"] == again.seeds[0]
    assert (again.prompt, again.width, again.height, again.kind) == (source.prompt, 96, 64, JobKind.GRID)
    with pytest.raises(CannotFollowUp, match="upscale"):
        reroll_spec(record(upscale_spec(record(source), 0, "42")), "42")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: upscale_spec(r, 4, "1"), "image index must be 0-3"),
        (lambda r: upscale_spec(r, 0, "1", "huge"), "upscale mode must be one of subtle, creative"),
        (lambda r: variation_spec(r, 0, "1", 0.0), "variation strength"),
        (lambda r: JobRecord.from_dict({"seeds": []}), "no 'spec'"),
    ],
)
def test_bad_follow_ups_are_errors_naming_the_value(call: object, message: str) -> None:
    # CannotFollowUp (member-facing) for what a click can ask; ValueError for what only a programming error gives.
    with pytest.raises((CannotFollowUp, ValueError), match=message):
        call(record(grid_spec()))  # type: ignore[operator]


def test_member_defaults_fill_what_the_prompt_leaves_out() -> None:
    member = MemberSettings(stylize="high", aspect="16:9", suffix="in watercolor --chaos 10")
    text = member.apply_text("a fox --q .5")
    assert text == "a fox in watercolor --q .5 --chaos 10"
    [prompt] = [member.apply_prompt(p) for p in parse(text)]
    assert (prompt.stylize, prompt.aspect_ratio, prompt.chaos) == (250, (16, 9), 10)
    [own] = [member.apply_prompt(p) for p in parse(member.apply_text("a fox --ar 2:3 --s 40"))]
    assert (own.stylize, own.aspect_ratio) == (40, (2, 3))
    with pytest.raises(PromptError):
        parse(member.apply_text("a fox --chaos 5"))


def test_member_options_expand_in_place_and_refuse_what_cannot_work(
    redis_conn: redis.Redis, queue_settings: Settings
) -> None:
    settings = queue_settings
    member = MemberSettings(suffix="moody").with_option("Mine", "in ink --ar 16:9").with_option("t", "--tile")
    assert member.options == (("mine", "in ink --ar 16:9"), ("t", "--tile"))
    # words join the prompt's words, parameters go last; Discord's em-dash spelling counts; longer names are not hit
    assert member.expand_options("a fox —mine --seed 3 --t") == "a fox in ink --seed 3 --ar 16:9 --tile"
    assert member.expand_options("a fox --mines") == "a fox --mines"
    [prompt] = parse(member.expand_options(member.apply_text("a fox --MINE")))
    assert (prompt.text, prompt.aspect_ratio) == ("a fox moody in ink", (16, 9))
    member_settings.save(redis_conn, settings, "44", member)
    assert member_settings.load(redis_conn, settings, "44") == member
    assert member.with_option("t", "").options == (("mine", "in ink --ar 16:9"),)
    for name, value, message in [
        ("s", "--tile", "built-in parameter --s"),
        ("two words", "--tile", "got 'two words'"),
        ("bad", "--ar 0:1", r"option --bad = '--ar 0:1' is not a valid prompt part: --ar must be"),
        ("loop", "--mine", "unknown parameter --mine"),
        ("gone", "", "option 'gone' is not saved; your options: mine, t"),
    ]:
        with pytest.raises(SettingRefused, match=message):
            member.with_option(name, value)
    full = MemberSettings(options=tuple((f"o{k}", "--tile") for k in range(defaults.MEMBER_OPTIONS_MAX + 1)))
    with pytest.raises(SettingRefused, match=f"at most {defaults.MEMBER_OPTIONS_MAX} options"):
        member_settings.save(redis_conn, settings, "45", full)


def test_member_settings_round_trip_through_redis(redis_conn: redis.Redis, queue_settings: Settings) -> None:
    settings = queue_settings
    assert member_settings.load(redis_conn, settings, "42") == MemberSettings()
    saved = MemberSettings(stylize="low", lane="relax", aspect="2:3", suffix="moody")
    member_settings.save(redis_conn, settings, "42", saved)
    assert member_settings.load(redis_conn, settings, "42") == saved
    with pytest.raises(SettingRefused, match="lane must be one of turbo, fast, relax, got 'warp'"):
        member_settings.save(redis_conn, settings, "42", MemberSettings(lane="warp"))
    redis_conn.set(keys_for(settings).member_settings("43"), b"[1, 2]")
    assert member_settings.load(redis_conn, settings, "43") == MemberSettings()
