"""The one path from a member's text to queued jobs, used by every front end: slash commands, buttons that carry text
(the /describe picks), follow-ups with edited text (Remix), the CLI, and the web companion.

Stages, in order (``Intake.jobs_from_text``):

1. ``expand``: the member's ``--name`` options and prompt suffix (``shared.stores.member_settings``);
2. ``parse`` and ``moderate``: the prompt language and the banned list (``shared.safety.moderation``, audited);
3. ``member defaults``: stylize preset and aspect ratio where the prompt has the system's;
4. ``rules``: the server's rules for this requester (each a callable that raises ``PromptError``);
5. ``build jobs``: one ``JobSpec`` per permutation and repeat (``shared.prompt.resolve``).

``Intake.submit`` then enqueues each job on its own (``shared.queue.client.enqueue_all``): a refused job does not
stop the others, and the member is told which failed. Every refusal on the way is a ``MemberFacingError``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from shared import messages
from shared.errors import PromptError
from shared.i18n import tr
from shared.jobs.spec import Delivery, JobKind, JobSpec
from shared.prompt.parser import Prompt
from shared.prompt.resolve import blend_job, build_jobs, describe_job, guidance_for, shorten_job, steps_for
from shared.queue.client import Submitted, enqueue_all
from shared.safety import moderation
from shared.settings import Settings
from shared.stores import member_settings, profiles
from shared.stores.member_settings import MemberSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asks, as every front end knows them."""

    member_id: str
    """A Discord user id, or ``local`` for the CLI."""
    roles: tuple[str, ...] = ()
    """The member's role ids in the guild (per-role limits and rules)."""
    channel_id: str = ""
    """Where the request was made ("" outside Discord)."""
    locale: str = ""
    """The member's Discord locale (``en-US``, ``zh-CN``, ...); "" when unknown."""
    channel_nsfw: bool = False
    """Whether the channel is age-restricted (Discord's ``nsfw`` flag): adult-rated results may go there."""
    lane: str = ""
    """The member's saved default lane ("" = the system's): filled in by the intake before the rules run."""
    joined_at: float = 0.0
    """When the member joined the guild (Unix seconds; 0 when unknown): new members' results can be reviewed."""


Rule = Callable[[Prompt, Requester], None]
"""A server rule: raises ``PromptError`` naming the rule and what is allowed when ``Prompt`` breaks it."""


class Intake:
    """Turns a requester's text into jobs and queues them, for one Redis and one set of settings."""

    def __init__(self, connection: redis.Redis, settings: Settings, rules: Sequence[Rule] = ()) -> None:
        self.connection = connection
        self.settings = settings
        self.rules = tuple(rules)

    def member(self, requester: Requester) -> MemberSettings:
        """The requester's saved defaults (one Redis read)."""
        return member_settings.load(self.connection, self.settings, requester.member_id)

    def prompts_from_text(self, text: str, requester: Requester, member: MemberSettings | None = None) -> list[Prompt]:
        """Stages 1-4: the prompts ``text`` asks for, with the member's options, suffix and defaults, moderated and
        checked against the rules (``member``: the requester's settings when already read, else read now)."""
        member = member if member is not None else self.member(requester)
        expanded = member.expand_options(member.apply_text(text))
        checked = moderation.check_and_audit(expanded, self.settings, self.connection, owner=requester.member_id)
        prompts = [member.apply_prompt(prompt) for prompt in checked]
        if self.rules and member.lane and not requester.lane:
            requester = dataclasses.replace(requester, lane=member.lane)  # the lane rules see the member's default
        for prompt in prompts:
            for rule in self.rules:
                rule(prompt, requester)
        return prompts

    def jobs_from_text(
        self,
        text: str,
        requester: Requester,
        delivery: Delivery,
        *,
        member: MemberSettings | None = None,
        rng: random.Random | None = None,
    ) -> list[JobSpec]:
        """Every stage up to the jobs ``text`` makes for ``requester``, delivered to ``delivery``."""
        member = member if member is not None else self.member(requester)
        prompts = self.prompts_from_text(text, requester, member)
        specs = build_jobs(
            prompts,
            settings=self.settings,
            owner=requester.member_id,
            delivery=delivery,
            lane=member.lane or None,
            rng=rng,
            profile_owners=lambda codes: self.profile_owners(codes, requester),
        )
        log.debug("intake: %d job(s) for %s", len(specs), requester.member_id)
        return specs

    def remix(self, base: JobSpec, text: str, requester: Requester, member: MemberSettings | None = None) -> JobSpec:
        """A follow-up ``base`` (a variation, re-roll, outpaint, ...) with its prompt replaced by the member's edited
        ``text``, through the same stages; the size, source image and seeds of ``base`` stay (its buttons decided
        them). The text must make exactly one job."""
        prompts = self.prompts_from_text(text, requester, member)
        if len(prompts) != 1 or prompts[0].repeat != 1:
            count = sum(prompt.repeat for prompt in prompts)
            raise PromptError(
                tr("a remix makes one job, this text makes {count} (permutations or --repeat)", count=count)
            )
        prompt = prompts[0]
        extra = {
            **base.extra,
            "stylize": prompt.stylize,
            "quality": prompt.quality,
            "chaos": prompt.chaos,
            "weird": prompt.weird,
            "style": prompt.style,
            "remixed": True,
        }
        changes: dict[str, object] = {
            "prompt": prompt.to_text(),
            "parts": prompt.parts,
            "negative": prompt.negative,
            "guidance": guidance_for(prompt.stylize, prompt.style, self.settings.guidance),
            "steps": steps_for(prompt.quality, self.settings.steps),
            "chaos": prompt.chaos / 100,
            "extra": extra,
        }
        if base.kind is JobKind.GRID:
            changes["tile"] = prompt.tile
            changes["stop"] = prompt.stop
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def describe(
        self,
        image_url: str,
        name: str,
        requester: Requester,
        delivery: Delivery,
        member: MemberSettings | None = None,
    ) -> JobSpec:
        """A /describe job for the image at ``image_url`` (``name``: what its lines call it), on the member's lane."""
        member = member if member is not None else self.member(requester)
        return describe_job(
            image_url, name, settings=self.settings, owner=requester.member_id, delivery=delivery, lane=member.lane
        )

    def profile_owners(self, codes: tuple[str, ...], requester: Requester) -> tuple[str, ...]:
        """``--p``'s profiles: the requester's own for ``()``, else each code's owner; an unknown code or an empty
        profile is a ``PromptError`` (``shared.stores.profiles``)."""
        if not codes:
            if not profiles.count(self.connection, self.settings, requester.member_id):
                raise PromptError(messages.no_profile(False))
            return (requester.member_id,)
        owners = []
        for code in codes:
            owner = profiles.owner_of(self.connection, self.settings, code)
            if owner is None:
                raise PromptError(messages.no_profile(True))
            if not profiles.count(self.connection, self.settings, owner):
                raise PromptError(messages.empty_profile(code))
            owners.append(owner)
        return tuple(dict.fromkeys(owners))

    def blend(
        self,
        image_urls: Sequence[str],
        names: Sequence[str],
        dimensions: str,
        requester: Requester,
        delivery: Delivery,
        *,
        member: MemberSettings | None = None,
        rng: random.Random | None = None,
    ) -> JobSpec:
        """A /blend job of 2-5 images (``names``: what its line calls them) at ``dimensions``, on the member's lane."""
        member = member if member is not None else self.member(requester)
        return blend_job(
            image_urls,
            names,
            dimensions,
            settings=self.settings,
            owner=requester.member_id,
            delivery=delivery,
            lane=member.lane or None,
            rng=rng,
        )

    def shorten(
        self, text: str, requester: Requester, delivery: Delivery, member: MemberSettings | None = None
    ) -> JobSpec:
        """A /shorten job for ``text`` as the member wrote it (no suffix or options added), moderated; a text that
        makes more than one prompt is refused."""
        member = member if member is not None else self.member(requester)
        prompts = moderation.check_and_audit(text, self.settings, self.connection, owner=requester.member_id)
        if len(prompts) != 1:
            raise PromptError(
                tr("/shorten takes one prompt, this text makes {count} (permutations)", count=len(prompts))
            )
        return shorten_job(
            prompts[0], settings=self.settings, owner=requester.member_id, delivery=delivery, lane=member.lane or None
        )

    def submit(self, specs: Sequence[JobSpec], requester: Requester) -> list[Submitted]:
        """Enqueue every job on its own; each outcome says whether it was queued and, if not, why (member-facing)."""
        return enqueue_all(self.connection, self.settings, specs, requester.roles)
