"""Running it for a community, through the fake Discord with the real bot, a real worker and a real Redis: a role
without a model is refused by name, adult-rated results go to the review queue in a normal channel and straight to an
age-restricted one, Approve delivers exactly once (also after a bot restart), Reject tells the member; every posted
PNG carries its record, the AI source type and a C2PA manifest that c2pa's reader validates with the test CA."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from shared import defaults, messages, provenance, review
from shared.queue.client import all_queues
from shared.settings import Settings
from shared.stores import audit_log
from tests.c2pa_certs import C2paTestCertificates, make_certificates
from tests.discord_harness import MEMBER, answered, job_of_waiting, stop, wait_finished
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.slow

ARTIST = 880000000000000001
"""A role whose rule allows ``--v 6``."""
STAFF_CHANNEL = 700000000000000099
"""Where results held for review go."""
ADULT_CHANNEL = 700000000000000077
"""An age-restricted channel (Discord's nsfw flag)."""
ADMIN = 1001


def always_flagged(image: Image.Image) -> float:
    """An image-moderation hook that rates every image adult (score 1)."""
    return 1.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> C2paTestCertificates:
    return make_certificates(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture
def settings_env(settings_env: dict[str, str], tiny_model: Path, certificates: C2paTestCertificates) -> dict[str, str]:
    rules = {
        "default": {"name": "everyone", "models": ["default"]},
        f"role:{ARTIST}": {"name": "artists", "models": ["default", "6"]},
    }
    return {
        **settings_env,
        "MODEL_ALIASES": json.dumps({"6": str(tiny_model)}),
        "RULES": json.dumps(rules),
        "IMAGE_MODERATION": "tests.test_community_discord:always_flagged",
        "IMAGE_MODERATION_ACTION": "review",
        "REVIEW_CHANNEL_ID": str(STAFF_CHANNEL),
        "C2PA_SIGNING_KEY": str(certificates.key),
        "C2PA_CERT": str(certificates.chain),
    }


def check_png(data: bytes, job_id: str, certificates: C2paTestCertificates) -> None:
    """The PNG carries job ``job_id``'s record, the AI source type, and a C2PA manifest valid under the test CA."""
    found = provenance.read(data)
    assert found["record"] is not None and found["record"]["job_id"] == job_id
    assert found["record"]["spec"]["seeds"] and found["record"]["spec"]["prompt"]
    assert found["digital_source_type"] == defaults.DIGITAL_SOURCE_TYPE
    manifest = certificates.read_manifest(data)
    assert manifest["validation_state"] == "Trusted", manifest
    actions = manifest["active"]["assertions"][0]["data"]["actions"]
    assert actions[0]["digitalSourceType"] == defaults.DIGITAL_SOURCE_TYPE


def messages_in(fake: FakeDiscord, channel: int, job_id: str) -> list[dict[str, Any]]:
    """The result messages of ``job_id`` in ``channel`` (their buttons name it)."""
    return [m for m in fake.channel_messages(channel) if job_id in json.dumps(m.get("components") or [])]


def test_rules_review_queue_adult_channels_and_provenance(  # noqa: PLR0917 - one story; pytest fixtures
    fake_discord: FakeDiscord,
    start_bot: Callable[[], subprocess.Popen[bytes]],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    settings: Settings,
    redis_conn: redis.Redis,
    certificates: C2paTestCertificates,
) -> None:
    fake = fake_discord
    fake.roles[ARTIST] = "artists"
    bot = start_bot()
    fake.wait_connected()
    assert {"rules", "quota"} <= set(fake.commands)

    # A member without the artists role asks for --v 6: refused privately, naming the rule; nothing is queued.
    refused = answered(fake, fake.slash("imagine", {"prompt": "a cat --v 6"}, user_id=MEMBER))
    assert refused.ephemeral
    assert refused.content == 'Not allowed by the rule "everyone": model `6`. Allowed: models `default`.'
    assert sum(queue.count for queue in all_queues(redis_conn, settings)) == 0

    start_worker(env=fake.env(), name="community")

    # The same prompt by an artist in an age-restricted channel: flagged adult, delivered there as it is.
    adult = answered(
        fake,
        fake.slash(
            "imagine",
            {"prompt": "a cat --v 6 --seed 1"},
            user_id=MEMBER,
            roles=(ARTIST,),
            channel_id=ADULT_CHANNEL,
            nsfw=True,
        ),
    )
    assert not adult.ephemeral and "(Waiting to start)" in adult.content
    assert adult.response_message_id is not None
    adult_job = job_of_waiting(redis_conn, settings, adult.response_message_id)
    wait_finished(redis_conn, adult_job, timeout=240)
    delivered = messages_in(fake, ADULT_CHANNEL, adult_job)
    assert len(delivered) == 1 and "SPOILER_" not in delivered[0]["attachments"][0]["filename"]
    posted_png = fake.attachment_bytes(int(delivered[0]["id"]))
    check_png(posted_png, adult_job, certificates)
    # /record ends with the verify line: the signer, and the hash of exactly the bytes the member can download.
    record = answered(fake, fake.slash("record", {"job_id": adult_job}, user_id=MEMBER))
    assert record.ephemeral and "a C2PA manifest signed by imagine test, imagine signer" in record.content
    assert f"sha256 of the posted image: `{provenance.digest(posted_png)}`" in record.content

    # In a normal channel the same kind of result goes to the staff channel; the member's message says it is held.
    held = answered(fake, fake.slash("imagine", {"prompt": "a red circle --seed 2"}, user_id=MEMBER))
    assert held.response_message_id is not None
    held_job = job_of_waiting(redis_conn, settings, held.response_message_id)
    staff = fake.wait_for(lambda: messages_in(fake, STAFF_CHANNEL, held_job), 240, "the staff channel's message")[0]
    assert [b["label"] for b in fake.buttons(int(staff["id"]))] == ["Approve", "Reject"]
    assert staff["attachments"][0]["filename"].startswith("SPOILER_")
    check_png(fake.attachment_bytes(int(staff["id"])), held_job, certificates)
    fake.wait_for(
        lambda: "held for review" in fake.messages[held.response_message_id]["content"], 60, "the member told"
    )
    assert messages_in(fake, fake.channel_id, held_job) == []
    wait_finished(redis_conn, held_job)

    # The bot restarts between the flag and the decision; Approve still works, and delivers exactly once.
    stop(bot)
    bot = start_bot()
    fake.wait_connected(identifies=2)
    approve_id = fake.button_id(int(staff["id"]), "Approve")
    first = answered(fake, fake.click(int(staff["id"]), approve_id, user_id=ADMIN))
    assert first.response_type == 6  # the click is acknowledged; the result goes to the member's channel
    posted = fake.wait_for(lambda: messages_in(fake, fake.channel_id, held_job), 60, "the approved result")
    assert f"<@{MEMBER}>" in posted[0]["content"]
    check_png(fake.attachment_bytes(int(posted[0]["id"])), held_job, certificates)
    fake.wait_for(lambda: fake.messages[held.response_message_id].get("deleted"), 30, "the waiting message removed")
    again = answered(fake, fake.click(int(staff["id"]), approve_id, user_id=ADMIN))
    assert again.ephemeral and "approved and delivered already" in again.content
    assert len(messages_in(fake, fake.channel_id, held_job)) == 1
    found = review.get(redis_conn, settings, held_job)
    assert found is not None and found.state == "approved" and found.delivered_message_id == posted[0]["id"]

    # Reject: the member is told on their message, the decision is in the audit log; a member cannot decide.
    rejected = answered(fake, fake.slash("imagine", {"prompt": "a blue square --seed 3"}, user_id=MEMBER))
    assert rejected.response_message_id is not None
    rejected_job = job_of_waiting(redis_conn, settings, rejected.response_message_id)
    staff2 = fake.wait_for(lambda: messages_in(fake, STAFF_CHANNEL, rejected_job), 240, "the second staff message")[0]
    reject_id = fake.button_id(int(staff2["id"]), "Reject")
    not_allowed = answered(fake, fake.click(int(staff2["id"]), reject_id, user_id=MEMBER, permissions="0"))
    assert not_allowed.ephemeral and not_allowed.content == messages.NOT_MODERATOR
    assert answered(fake, fake.click(int(staff2["id"]), reject_id, user_id=ADMIN)).response_type == 6
    fake.wait_for(
        lambda: "rejected by the server's moderators" in fake.messages[rejected.response_message_id]["content"],
        60,
        "the member told of the rejection",
    )
    assert messages_in(fake, fake.channel_id, rejected_job) == []
    decisions = audit_log.entries(redis_conn, settings, event="review_rejected")
    assert decisions and decisions[0]["job_id"] == rejected_job
    held_again = review.get(redis_conn, settings, rejected_job)
    assert held_again is not None and held_again.state == "rejected"


def test_png_helpers_read_what_they_wrote(certificates: C2paTestCertificates) -> None:
    """``provenance.read`` on a plain PNG finds nothing (so the checks above mean something)."""
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="PNG")
    found = provenance.read(out.getvalue())
    assert found["record"] is None and found["digital_source_type"] == ""
