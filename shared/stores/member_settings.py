"""Per-member defaults (/settings, /prefer): stylize preset, lane, aspect ratio, a prompt suffix and named parameter
bundles (``--name`` in a prompt stands for a saved value, like Midjourney's /prefer option), Remix mode (/prefer
remix) and visibility (/stealth, /public), as JSON in Redis."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import redis

from shared import defaults
from shared.errors import SettingRefused
from shared.keys import keys_for
from shared.prompt.parser import PARAMETER_NAMES, Prompt, PromptError, parse
from shared.settings import Settings

log = logging.getLogger(__name__)

_FIRST_PARAM = re.compile(r"(?:^|\s)(?:--|[–—―])[A-Za-z]")
_DEFAULT_PROMPT = Prompt(text="x")
_OPTION_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class MemberSettings:
    """A member's defaults; empty fields add nothing to their prompts."""

    stylize: str = ""
    """A key of ``defaults.STYLIZE_PRESETS`` or empty."""
    lane: str = ""
    """A lane name or empty (the system default)."""
    aspect: str = ""
    """One of ``defaults.ASPECT_RATIOS`` or empty."""
    suffix: str = ""
    """Text (words and/or parameters) added to every prompt."""
    options: tuple[tuple[str, str], ...] = ()
    """Named bundles, sorted by name: ``--name`` in a prompt stands for the value (words and/or parameters)."""
    remix: bool = False
    """Remix mode: variation, re-roll, zoom and pan buttons first open a box with the prompt to edit."""
    stealth: bool = False
    """Stealth mode: results stored while it is on never appear in the shared gallery, and while it is on none of the
    member's results do (``shared.stores.gallery``)."""

    def validate(self, settings: Settings) -> MemberSettings:
        """``self`` if every field is allowed; else a ``SettingRefused`` naming the field, its value and what is
        allowed."""
        if self.stylize and self.stylize not in defaults.STYLIZE_PRESETS:
            allowed = ", ".join(defaults.STYLIZE_PRESETS)
            raise SettingRefused(f"stylize must be one of {allowed}, got {self.stylize!r}")
        if self.lane and self.lane not in settings.lanes:
            raise SettingRefused(f"lane must be one of {', '.join(settings.lanes)}, got {self.lane!r}")
        if self.aspect and self.aspect not in defaults.ASPECT_RATIOS:
            raise SettingRefused(f"aspect must be one of {', '.join(defaults.ASPECT_RATIOS)}, got {self.aspect!r}")
        if len(self.suffix) > defaults.MEMBER_SUFFIX_MAX:
            limit = defaults.MEMBER_SUFFIX_MAX
            raise SettingRefused(f"suffix must be at most {limit} characters, got {len(self.suffix)}")
        if len(self.options) > defaults.MEMBER_OPTIONS_MAX:
            raise SettingRefused(f"at most {defaults.MEMBER_OPTIONS_MAX} options can be saved, got {len(self.options)}")
        for name, value in self.options:
            _check_option(name, value)
        return self

    def with_option(self, name: str, value: str) -> MemberSettings:
        """These settings with option ``name`` set to ``value`` (an empty value removes it), validated."""
        name, value = name.strip().lower().lstrip("-–—―"), value.strip()
        options = dict(self.options)
        if value:
            _check_option(name, value)
            options[name] = value
        elif options.pop(name, None) is None:
            raise SettingRefused(f"option {name!r} is not saved; your options: {', '.join(options) or 'none'}")
        return dataclasses.replace(self, options=tuple(sorted(options.items())))

    def expand_options(self, text: str) -> str:
        """``text`` with each ``--name`` of a saved option replaced by its value (words join the prompt's words,
        parameters go at the end, as with the suffix); other ``--parameters`` are left to the parser."""
        if not self.options:
            return text
        values = dict(self.options)
        token = re.compile(
            r"(?<!\S)(?:--|[–—―])(" + "|".join(re.escape(n) for n in values) + r")(?=\s|$)", re.IGNORECASE
        )
        used = [values[m.group(1).lower()] for m in token.finditer(text)]
        text = token.sub(" ", text)
        text = " ".join(text.split())
        for value in used:
            text = _add_suffix(text, value)
        return text

    def apply_text(self, text: str) -> str:
        """``text`` with the member's suffix: its words go before the prompt's first ``--`` parameter (parameters come
        last), its parameters at the end (naming a parameter the prompt names too is the parser's duplicate error)."""
        return _add_suffix(text, self.suffix)

    def apply_prompt(self, prompt: Prompt) -> Prompt:
        """``prompt`` with the member's stylize and aspect ratio where the prompt has the system defaults."""
        changes: dict[str, Any] = {}
        if self.stylize and prompt.stylize == _DEFAULT_PROMPT.stylize:
            changes["stylize"] = defaults.STYLIZE_PRESETS[self.stylize]
        if self.aspect and prompt.aspect_ratio == _DEFAULT_PROMPT.aspect_ratio:
            w, h = self.aspect.split(":")
            changes["aspect_ratio"] = (int(w), int(h))
        return dataclasses.replace(prompt, **changes) if changes else prompt

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``options`` as an object)."""
        data = dataclasses.asdict(self)
        data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberSettings:
        """The inverse of ``to_dict``; unknown keys (from a newer version) are dropped with a log line."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            log.warning("ignoring unknown member settings keys %s", unknown)
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError(f"options must be a JSON object, got {type(options).__name__}")
        flags = {f.name for f in dataclasses.fields(cls) if f.type in ("bool", bool)}
        fields: dict[str, Any] = {
            k: (_flag(k, v) if k in flags else str(v)) for k, v in data.items() if k in names and k != "options"
        }
        return cls(**fields, options=tuple(sorted((str(k), str(v)) for k, v in options.items())))


def _flag(name: str, value: Any) -> bool:
    """A stored on/off setting (JSON true/false; "true"/"false" from older hand edits)."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "on", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "off", "no", ""):
        return False
    raise ValueError(f"member setting {name} must be true or false, got {value!r}")


def _add_suffix(text: str, suffix: str) -> str:
    """``text`` with ``suffix``'s words before its first parameter and ``suffix``'s parameters at the end."""
    text, suffix = text.strip(), suffix.strip()
    if not suffix:
        return text
    cut = _FIRST_PARAM.search(suffix)
    words, params = (suffix[: cut.start()], suffix[cut.start() :]) if cut else (suffix, "")
    words = words.strip()
    if words:
        at = _FIRST_PARAM.search(text)
        text = f"{text[: at.start()]} {words}{text[at.start() :]}" if at else f"{text} {words}"
    return f"{text} {params.strip()}" if params.strip() else text


def _check_option(name: str, value: str) -> None:
    """A ``SettingRefused`` naming the option when its name or value cannot be used."""
    if not _OPTION_NAME.fullmatch(name):
        raise SettingRefused(
            f"option name must be 1-32 lowercase letters, digits or _ (starting with a letter or digit), got {name!r}"
        )
    if name in PARAMETER_NAMES:
        raise SettingRefused(f"option name {name!r} is the built-in parameter --{name}; choose another name")
    if len(value) > defaults.MEMBER_SUFFIX_MAX:
        limit = defaults.MEMBER_SUFFIX_MAX
        raise SettingRefused(f"option --{name} must be at most {limit} characters, got {len(value)}")
    try:
        parse(_add_suffix("x", value))
    except PromptError as exc:
        raise SettingRefused(f"option --{name} = {value!r} is not a valid prompt part: {exc}") from exc


def load(connection: redis.Redis, settings: Settings, member_id: str) -> MemberSettings:
    """The member's saved settings, or the empty defaults (also when the stored JSON is unreadable, logged)."""
    return from_stored(connection.get(keys_for(settings).member_settings(member_id)), member_id)


def from_stored(raw: bytes | str | None, member_id: str) -> MemberSettings:
    """Settings from the stored JSON (as ``load`` reads it); None or unreadable JSON gives the defaults (logged)."""
    if raw is None:
        return MemberSettings()
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return MemberSettings.from_dict(data)
    except ValueError:
        log.exception("unreadable settings of member %s; using defaults", member_id)
        return MemberSettings()


def save(connection: redis.Redis, settings: Settings, member_id: str, member: MemberSettings) -> None:
    """Validate and store the member's settings (kept until changed)."""
    member.validate(settings)
    connection.set(keys_for(settings).member_settings(member_id), json.dumps(member.to_dict(), sort_keys=True))
