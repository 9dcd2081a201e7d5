"""The server's rules: per channel and per role, which models (``--v`` aliases), LoRAs (``--lora`` names) and lanes,
and how much quality, repeat and size a job may ask for, and whether a channel may receive adult-rated results.

Scopes and how they combine:

- ``default``: everyone, everywhere. Without one, everything is allowed to everyone (roles can then only widen).
- ``role:<id>``: what members with that role may ask for. A member gets the most generous of ``default`` and their
  roles' rules, field by field (any model that one of them allows, the highest maximum), as with ``/limits``.
- ``channel:<id>``: what may be made in that channel, whoever asks; it narrows the member's allowance there. Its
  ``adult`` field says whether adult-rated results may be delivered there; unset, Discord's own age-restricted
  (``nsfw``) flag of the channel decides.

A field left empty (``models = []``) or unset (``max_quality``) allows anything; ``loras = ["none"]`` allows no LoRA
(no configured LoRA is called ``none``). The draft LoRA (``DRAFT_LORA``) is the server's, not the member's: ``--draft``
is never refused for it. A job that breaks a rule is refused
with ``RuleRefused``, whose sentence names the rule and what is allowed; nothing is enqueued.

The rules live in Redis (``shared.keys.Keys.rules``), filled once from the ``[rules]`` section of the configuration
(the starting point), changed by ``/rules set|clear`` and audited. Every process keeps what it read for
``RULES_CACHE_S`` seconds, so a check costs no Redis round trip on the acknowledgement path.

Checks run on an ``Ask`` (what one job asks for), made from a parsed ``Prompt`` at intake (``intake_rule``) or from a
``JobSpec`` for follow-up buttons, at the bot and again at the worker (``check_spec``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import defaults, messages
from shared.errors import RuleRefused
from shared.intake import Requester
from shared.jobs.spec import JobKind, JobSpec
from shared.keys import keys_for
from shared.model_info import native_resolution, size_multiple
from shared.prompt.parser import Prompt
from shared.prompt.resolve import image_size
from shared.settings import Settings
from shared.stores import audit_log

log = logging.getLogger(__name__)

SCOPE_KINDS = ("default", "role", "channel")
"""The kinds of scope a rule can have."""


def scope_of(kind: str, target: str = "") -> str:
    """The scope key of a rule: ``default``, ``role:<id>`` or ``channel:<id>``; anything else is an error naming it."""
    if kind == "default" and not target:
        return "default"
    if kind in ("role", "channel") and target.isdigit():
        return f"{kind}:{target}"
    raise ValueError(
        f"rule scope must be 'default', 'role:<numeric id>' or 'channel:<numeric id>', got {kind}:{target}"
    )


def check_scope(scope: str) -> str:
    """``scope`` if it is a valid scope key; else a ``ValueError`` naming it."""
    kind, _, target = scope.partition(":")
    return scope_of(kind, target)


@dataclass(frozen=True)
class Rule:
    """One scope's rule. Empty tuples and ``None`` allow anything."""

    scope: str
    name: str = ""
    """What members are told the rule is called (default: the scope)."""
    models: tuple[str, ...] = ()
    """``--v``/``--niji`` aliases allowed (``default`` names the configured ``MODEL``)."""
    loras: tuple[str, ...] = ()
    """``--lora`` names allowed (as configured in ``[loras]``)."""
    lanes: tuple[str, ...] = ()
    """Lanes allowed."""
    max_quality: float | None = None
    """Highest ``--quality``."""
    max_repeat: int | None = None
    """Highest ``--repeat``."""
    max_pixels: int | None = None
    """Most pixels (width x height) of one image."""
    adult: bool | None = None
    """Channel rules only: whether adult-rated results may be delivered here (None: Discord's age-restricted flag)."""

    def __post_init__(self) -> None:
        check_scope(self.scope)
        if self.max_quality is not None and self.max_quality not in defaults.QUALITY_VALUES:
            allowed = ", ".join(f"{q:g}" for q in defaults.QUALITY_VALUES)
            raise ValueError(f"rule {self.scope}: max_quality must be one of {allowed}, got {self.max_quality!r}")
        if self.max_repeat is not None and not 1 <= self.max_repeat <= defaults.REPEAT_MAX:
            raise ValueError(f"rule {self.scope}: max_repeat must be 1 to {defaults.REPEAT_MAX}, got {self.max_repeat}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(
                f"rule {self.scope}: max_pixels must be a positive number of pixels, got {self.max_pixels}"
            )
        if self.adult is not None and not self.scope.startswith("channel:"):
            raise ValueError(f"rule {self.scope}: 'adult' is a channel's setting, got it on scope {self.scope!r}")

    @property
    def title(self) -> str:
        """The name members see: the given name, else the scope."""
        return self.name or self.scope

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, unset fields left out."""
        data: dict[str, Any] = {
            "name": self.name,
            "models": list(self.models),
            "loras": list(self.loras),
            "lanes": list(self.lanes),
        }
        for key in ("max_quality", "max_repeat", "max_pixels", "adult"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return {key: value for key, value in data.items() if value not in ("", [])}

    @classmethod
    def from_dict(cls, scope: str, data: Mapping[str, Any]) -> Rule:
        """The rule of ``scope`` from its JSON or TOML table; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)} - {"scope"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"rule {scope}: unknown keys {unknown}; allowed: {sorted(names)}")

        def words(key: str) -> tuple[str, ...]:
            raw = data.get(key) or ()
            items = raw.split(",") if isinstance(raw, str) else raw
            return tuple(str(item).strip().lower() for item in items if str(item).strip())

        def number(key: str, kind: type) -> Any:
            raw = data.get(key)
            return None if raw is None or raw == "" else kind(raw)

        adult = data.get("adult")
        return cls(
            scope=check_scope(scope),
            name=str(data.get("name") or ""),
            models=words("models"),
            loras=words("loras"),
            lanes=words("lanes"),
            max_quality=number("max_quality", float),
            max_repeat=number("max_repeat", int),
            max_pixels=number("max_pixels", int),
            adult=None if adult is None else bool(adult),
        )


@dataclass(frozen=True)
class Ask:
    """What one job asks for, as the rules see it."""

    model: str
    """The ``--v``/``--niji`` alias, or ``default``."""
    lane: str
    loras: tuple[str, ...] = ()
    """The ``--lora`` names the job asks for (not the server's draft LoRA)."""
    quality: float = 1.0
    repeat: int = 1
    pixels: Callable[[], tuple[int, int]] | None = field(default=None, compare=False)
    """Width and height of one image, computed only when a rule caps the size (it reads the model's config)."""


@dataclass(frozen=True)
class Asker:
    """Who asks, where (the parts of ``shared.intake.Requester`` the rules read)."""

    roles: tuple[str, ...] = ()
    channel_id: str = ""
    channel_nsfw: bool = False


@dataclass(frozen=True)
class RuleBook:
    """Every rule in force, by scope."""

    rules: Mapping[str, Rule] = field(default_factory=dict)

    def member_rules(self, roles: Iterable[str]) -> list[Rule]:
        """The rules that make up a member's allowance: ``default`` and their roles' (those that exist)."""
        found = [self.rules["default"]] if "default" in self.rules else []
        found += [self.rules[f"role:{role}"] for role in roles if f"role:{role}" in self.rules]
        return found

    def channel_rule(self, channel_id: str) -> Rule | None:
        """The rule of the channel, if it has one."""
        return self.rules.get(f"channel:{channel_id}") if channel_id else None

    def adult_allowed(self, channel_id: str, channel_nsfw: bool) -> bool:
        """Whether adult-rated results may be delivered in the channel: its rule's ``adult``, else Discord's flag."""
        rule = self.channel_rule(channel_id)
        if rule is not None and rule.adult is not None:
            return rule.adult
        return channel_nsfw

    def check(self, ask: Ask, asker: Asker) -> None:
        """Raise ``RuleRefused`` naming the rule and what is allowed, if ``ask`` breaks the member's allowance or
        the channel's rule."""
        grants = self.member_rules(asker.roles)
        if grants:
            _check_against(ask, _merge(grants), " + ".join(rule.title for rule in grants))
        channel = self.channel_rule(asker.channel_id)
        if channel is not None:
            _check_against(ask, channel, channel.title)


def _merge(rules: Sequence[Rule]) -> Rule:
    """The most generous of ``rules``, field by field (an empty list or ``None`` anywhere allows anything)."""

    def union(values: list[tuple[str, ...]]) -> tuple[str, ...]:
        if any(not value for value in values):
            return ()
        return tuple(dict.fromkeys(item for value in values for item in value))

    def highest(values: list[Any]) -> Any:
        return None if any(value is None for value in values) else max(values)

    return Rule(
        scope=rules[0].scope,
        models=union([rule.models for rule in rules]),
        loras=union([rule.loras for rule in rules]),
        lanes=union([rule.lanes for rule in rules]),
        max_quality=highest([rule.max_quality for rule in rules]),
        max_repeat=highest([rule.max_repeat for rule in rules]),
        max_pixels=highest([rule.max_pixels for rule in rules]),
    )


def _check_against(ask: Ask, rule: Rule, title: str) -> None:
    if rule.models and ask.model not in rule.models:
        raise RuleRefused(
            messages.rule_refused(title, messages.rule_model(ask.model), messages.rule_models(rule.models))
        )
    refused = [name for name in ask.loras if name not in rule.loras] if rule.loras else []
    if refused:
        allowed = tuple(name for name in rule.loras if name != "none")
        raise RuleRefused(
            messages.rule_refused(title, messages.rule_loras_asked(tuple(refused)), messages.rule_loras(allowed))
        )
    if rule.lanes and ask.lane not in rule.lanes:
        raise RuleRefused(messages.rule_refused(title, messages.rule_lane(ask.lane), messages.rule_lanes(rule.lanes)))
    if rule.max_quality is not None and ask.quality > rule.max_quality:
        raise RuleRefused(
            messages.rule_refused(
                title, messages.rule_quality(ask.quality), messages.rule_max_quality(rule.max_quality)
            )
        )
    if rule.max_repeat is not None and ask.repeat > rule.max_repeat:
        raise RuleRefused(
            messages.rule_refused(title, messages.rule_repeat(ask.repeat), messages.rule_max_repeat(rule.max_repeat))
        )
    if rule.max_pixels is not None and ask.pixels is not None:
        width, height = ask.pixels()
        if width * height > rule.max_pixels:
            raise RuleRefused(
                messages.rule_refused(
                    title, messages.rule_size(width, height), messages.rule_max_pixels(rule.max_pixels)
                )
            )


# -- asks from prompts and specs -----------------------------------------------------------------------------------


def ask_of_prompt(prompt: Prompt, settings: Settings, lane: str = "") -> Ask:
    """What ``prompt`` asks for (``lane``: the member's default lane, used when the prompt names none)."""
    model = prompt.version or defaults.DEFAULT_MODEL_NAME

    def pixels() -> tuple[int, int]:
        ref = settings.resolve_model(settings.model_aliases.get(prompt.version or "", None))
        return image_size(prompt.aspect_ratio, native_resolution(ref), size_multiple(ref))

    return Ask(
        model=model,
        lane=prompt.speed or lane or settings.default_lane,
        loras=tuple(dict.fromkeys(name for name, _ in prompt.loras)),
        quality=prompt.quality,
        repeat=prompt.repeat,
        pixels=pixels,
    )


def ask_of_spec(spec: JobSpec, settings: Settings) -> Ask:
    """What a job asks for (a follow-up made from a record: its model, lane, quality and output size)."""
    extra = spec.extra
    version = extra.get("version")
    model = str(version) if version else defaults.DEFAULT_MODEL_NAME
    quality = float(extra.get("quality") or 1.0)
    # An upscale keeps its source's size in the spec (the upscaler multiplies it): the rule caps what is generated.
    loras = tuple(dict.fromkeys(name for name, _ in spec.loras if name != settings.draft_lora))
    return Ask(
        model=model, lane=spec.lane, loras=loras, quality=quality, repeat=1, pixels=lambda: (spec.width, spec.height)
    )


# -- storage --------------------------------------------------------------------------------------------------------

_cache: dict[tuple[int, str], tuple[float, RuleBook]] = {}
_cache_lock = threading.Lock()


def _seed(connection: redis.Redis, settings: Settings) -> None:
    """Fill Redis from ``[rules]`` once (the configuration is the starting point; Redis holds the rules after)."""
    keys = keys_for(settings)
    if not settings.rules or not connection.set(keys.rules_seeded, "1", nx=True):
        return
    seeded = {scope: Rule.from_dict(scope, table) for scope, table in settings.rules.items()}
    with connection.pipeline() as pipe:
        for scope, rule in seeded.items():
            pipe.hsetnx(keys.rules, scope, json.dumps(rule.to_dict(), sort_keys=True))
        pipe.execute()
    audit_log.record(connection, settings, "rules", actor="config", action="seed", scopes=sorted(seeded))


def load(connection: redis.Redis, settings: Settings, *, fresh: bool = False) -> RuleBook:
    """The rules in force: Redis's (filled from the configuration the first time), cached ``RULES_CACHE_S``."""
    cache_key = (id(connection), settings.queue_prefix)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(cache_key)
    if cached is not None and not fresh and now - cached[0] < defaults.RULES_CACHE_S:
        return cached[1]
    _seed(connection, settings)
    raw: Any = connection.hgetall(keys_for(settings).rules)
    rules: dict[str, Rule] = {}
    for raw_scope, raw_rule in (raw or {}).items():
        scope = raw_scope.decode() if isinstance(raw_scope, bytes) else str(raw_scope)
        try:
            rules[scope] = Rule.from_dict(scope, json.loads(raw_rule))
        except (ValueError, TypeError):
            log.exception("stored rule %s cannot be read; ignored", scope)
    book = RuleBook(rules)
    with _cache_lock:
        _cache[cache_key] = (now, book)
    return book


def forget_cache() -> None:
    """Drop every cached rule book (after a change made here, and in tests)."""
    with _cache_lock:
        _cache.clear()


def set_rule(connection: redis.Redis, settings: Settings, actor: str, rule: Rule) -> None:
    """Store ``rule`` for its scope (replacing the scope's rule), audited."""
    _seed(connection, settings)
    connection.hset(keys_for(settings).rules, rule.scope, json.dumps(rule.to_dict(), sort_keys=True))
    forget_cache()
    audit_log.record(connection, settings, "rules", actor=actor, action="set", scope=rule.scope, rule=rule.to_dict())


def clear_rule(connection: redis.Redis, settings: Settings, actor: str, scope: str) -> bool:
    """Remove the rule of ``scope`` (audited); whether there was one."""
    _seed(connection, settings)
    removed = bool(connection.hdel(keys_for(settings).rules, check_scope(scope)))
    forget_cache()
    audit_log.record(connection, settings, "rules", actor=actor, action="clear", scope=scope, removed=removed)
    return removed


# -- the checks the front ends and the workers call -------------------------------------------------------------------


class IntakeRules:
    """The server's rules as ``shared.intake`` takes them: a callable ``(Prompt, Requester) -> None``."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def __call__(self, prompt: Prompt, requester: Requester) -> None:
        book = load(self.connection, self.settings)
        if not book.rules:
            return
        book.check(ask_of_prompt(prompt, self.settings, requester.lane), asker_of(requester))


def asker_of(requester: Requester) -> Asker:
    """The rules' view of a ``shared.intake.Requester`` (or anything with its fields)."""
    return Asker(
        roles=tuple(requester.roles),
        channel_id=str(requester.channel_id),
        channel_nsfw=requester.channel_nsfw,
    )


def check_spec(connection: redis.Redis, settings: Settings, spec: JobSpec, asker: Asker | None = None) -> None:
    """Refuse (``RuleRefused``) a job that the rules of its delivery channel and its requester's roles do not allow
    (follow-ups: at the bot when clicked, at the worker before it runs). Jobs outside Discord are not checked."""
    if spec.delivery.kind != "discord" or spec.kind is JobKind.DESCRIBE:
        return
    book = load(connection, settings)
    if not book.rules:
        return
    who = asker or Asker(
        roles=spec.delivery.roles, channel_id=spec.delivery.channel_id, channel_nsfw=spec.delivery.nsfw
    )
    book.check(ask_of_spec(spec, settings), who)


def adult_allowed(connection: redis.Redis, settings: Settings, spec: JobSpec) -> bool:
    """Whether an adult-rated result of ``spec`` may be delivered where it is going."""
    if spec.delivery.kind != "discord":
        return False
    return load(connection, settings).adult_allowed(spec.delivery.channel_id, spec.delivery.nsfw)
