"""Bot shards: one process running every shard Discord recommends, and two processes (shards 0 and 1 of 2) against
one Redis, each answering the interactions of its own guilds, through the fake Discord's sharded gateway."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
import redis

from bot.sharding import owns_guild, shard_of
from shared.settings import Settings
from tests.discord_harness import answered, job_of_waiting, log_of
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.slow


@pytest.fixture
def fake_discord() -> Iterator[FakeDiscord]:
    """A fake Discord with two guilds, one on each shard of two, recommending two shards."""
    with FakeDiscord(extra_guilds=1, recommended_shards=2) as fake:
        yield fake


def test_shard_of_follows_discords_formula() -> None:
    assert shard_of(0, 4) == 0  # direct messages
    assert shard_of(5 << 22, 4) == 1
    assert owns_guild("", 2, [0]) and not owns_guild("", 2, [1])
    assert owns_guild(str(3 << 22), 2, [1]) and not owns_guild(str(3 << 22), 2, [0])
    assert owns_guild(str(3 << 22), None, None)  # one process: every guild is its own


def test_settings_check_shard_ids() -> None:
    assert Settings(shard_count=4, shard_ids="1, 3").shard_id_list == [1, 3]
    assert Settings(shard_count=4).shard_id_list is None
    with pytest.raises(ValueError, match="SHARD_IDS needs SHARD_COUNT"):
        Settings(shard_ids="0")
    with pytest.raises(ValueError, match=r"from 0 to SHARD_COUNT - 1 \(2\), got '2'"):
        Settings(shard_count=2, shard_ids="0,2")


def _imagine_in(fake: FakeDiscord, guild: int, member: int) -> tuple[int, int | None]:
    """/imagine by ``member`` in ``guild``'s channel; returns the shard it went to and its waiting message id."""
    record = answered(fake, fake.slash("imagine", {"prompt": f"a lighthouse {member}"}, user_id=member,
                                       channel_id=fake.guild_channels[guild][0]))  # fmt: skip
    assert not record.ephemeral and "(Waiting to start)" in record.content, record.content
    assert record.shard is not None
    return record.shard, record.response_message_id


def test_two_processes_each_answer_their_own_shards_guilds(
    fake_discord: FakeDiscord,
    start_bot: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
) -> None:
    fake = fake_discord
    bots = [start_bot(env={"SHARD_COUNT": "2", "SHARD_IDS": str(shard)}) for shard in (0, 1)]
    fake.wait_connected(identifies=2)
    assert sorted(fake.identified_shards) == [(0, 2), (1, 2)]
    guilds = [fake.guild_of_shard(shard, 2) for shard in (0, 1)]

    members = {0: 111, 1: 222}
    for shard, guild in enumerate(guilds):
        went_to, waiting_id = _imagine_in(fake, guild, members[shard])
        assert went_to == shard
        assert waiting_id is not None
        job_of_waiting(redis_conn, settings, waiting_id)  # both processes enqueue into the one Redis
    for shard, bot in enumerate(bots):
        text = log_of(bot)
        assert f"/imagine by {members[shard]}:" in text, text[-3000:]
        assert f"/imagine by {members[1 - shard]}:" not in text  # the other guild's interaction never reached it
        ready = f"shards [{shard}] of 2"
        fake.wait_for(lambda: ready in log_of(bot), 30, "the shard to be ready")  # noqa: B023 - called here

    # A process that is gone leaves its guilds unanswered; the other one goes on answering its own.
    bots[1].terminate()
    bots[1].wait(timeout=30)
    fake.wait_for(lambda: fake.connected_shards() == {0}, 30, "shard 1 to leave")
    with pytest.raises(RuntimeError, match="no bot shard"):
        fake.slash("imagine", {"prompt": "unanswered"}, user_id=333, channel_id=fake.guild_channels[guilds[1]][0])
    assert _imagine_in(fake, guilds[0], 444)[0] == 0


def test_one_process_runs_every_recommended_shard(
    fake_discord: FakeDiscord, start_bot: Callable[..., subprocess.Popen[bytes]]
) -> None:
    fake = fake_discord
    bot = start_bot()  # no SHARD_COUNT: Discord's recommendation (2), both in this process
    fake.wait_connected(identifies=2)
    assert sorted(fake.identified_shards) == [(0, 2), (1, 2)]
    shards = [_imagine_in(fake, guild, 500 + index)[0] for index, guild in enumerate(fake.guild_channels)]
    assert sorted(shards) == [0, 1]
    fake.wait_for(lambda: "shards [0, 1] of 2" in log_of(bot), 30, "the bot to be ready on both shards")
