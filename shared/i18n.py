"""Members' own language: which locale is in force (a context variable, set per interaction by the bot and per job by
the workers) and the message catalogues that translate every member-facing template into it.

Catalogues are gettext ``.po`` files under ``shared/locale/<locale>/LC_MESSAGES/messages.po``, read directly with
``babel`` (no compiled ``.mo`` files that could go stale); ``shared/locale/messages.pot`` is the template a translator
starts from (``python -m bot.catalogue`` extracts it from the code; ``tests/test_i18n.py`` fails when it is stale).
English is the source language and the fallback: a locale without a catalogue, a missing or fuzzy entry, or a
translation whose placeholders do not match the English template gives the English text.

A template is translated, then formatted with named placeholders: ``tr("{count} jobs queued", count=3)``. Plain
``str.format`` rules apply (``{{`` for a literal brace). Prompts and other member text are passed as values, never
translated.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import string
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCALE_DIR: Path = Path(__file__).resolve().parent / "locale"
"""Where the catalogues live: ``<locale>/LC_MESSAGES/messages.po`` and the template ``messages.pot``."""

DOMAIN = "messages"
"""The gettext domain (file name) of the catalogues."""

SOURCE_LOCALE = "en"
"""The language the templates are written in (and the fallback)."""

_ACCEPT_LANGUAGE_MAX = 16
"""Languages read from one ``Accept-Language`` header (it is the client's to fill; the rest is ignored)."""

_LOCALE: contextvars.ContextVar[str] = contextvars.ContextVar("imagine_locale", default="")
"""The locale of the member being answered ("" = English); set per interaction (bot) and per job (worker)."""


def normalize(locale: str) -> str:
    """A Discord locale (``zh-CN``, ``en-US``, ``fr``) as a catalogue folder name (``zh_CN``, ``en_US``, ``fr``)."""
    return locale.strip().replace("-", "_")


def current_locale() -> str:
    """The locale in force in this context ("" when none was set: English)."""
    return _LOCALE.get()


def set_locale(locale: str) -> contextvars.Token[str]:
    """Make ``locale`` the one in force in this context (an asyncio task, a thread's context); returns the token that
    ``reset_locale`` takes."""
    return _LOCALE.set(locale or "")


def reset_locale(token: contextvars.Token[str]) -> None:
    """Undo a ``set_locale``."""
    _LOCALE.reset(token)


@contextlib.contextmanager
def use_locale(locale: str) -> Iterator[None]:
    """``locale`` in force inside the ``with`` block (a worker around one job's messages)."""
    token = set_locale(locale)
    try:
        yield
    finally:
        reset_locale(token)


def available_locales() -> tuple[str, ...]:
    """The locales that have a catalogue (folder names, e.g. ``zh_CN``)."""
    if not LOCALE_DIR.is_dir():
        return ()
    return tuple(sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")))


def negotiate(accept_language: str) -> str:
    """The locale a browser asks for (an HTTP ``Accept-Language`` header, e.g. ``zh-CN,zh;q=0.9,en;q=0.8``) that a
    catalogue can serve, by the header's preference order; "" (English) when none can, or English comes first."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")[:_ACCEPT_LANGUAGE_MAX]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and weight > 0:
            ranked.append((-weight, position, normalize(tag)))
    have = available_locales()
    for _, _, wanted in sorted(ranked):
        language = wanted.split("_")[0].lower()
        if language == SOURCE_LOCALE:
            return ""
        for locale in have:  # as ``catalogue`` falls back: the exact folder or the language's; a bare language
            # ("zh") takes any of its regions (a browser that names no region has no preference among them)
            if locale.lower() in (wanted.lower(), language) or (
                wanted.lower() == language and locale.split("_")[0].lower() == language
            ):
                return locale
    return ""


@lru_cache(maxsize=32)
def catalogue(locale: str) -> dict[str, str | tuple[str, ...]]:
    """msgid -> translation of ``locale``'s catalogue (its exact folder, else its language's, e.g. ``fr`` for
    ``fr_CA``); empty for English and for a locale without one. Fuzzy and empty entries are left out (English is
    shown instead). Plural entries map the singular msgid to a tuple of forms."""
    name = normalize(locale)
    if not name or name.split("_")[0] == SOURCE_LOCALE:
        return {}
    for candidate in (name, name.split("_")[0]):
        path = LOCALE_DIR / candidate / "LC_MESSAGES" / f"{DOMAIN}.po"
        if path.is_file():
            return _read(path)
    return {}


def _read(path: Path) -> dict[str, str | tuple[str, ...]]:
    from babel.messages.pofile import read_po

    with path.open("rb") as handle:
        parsed = read_po(handle)
    found: dict[str, str | tuple[str, ...]] = {}
    for message in parsed:
        if not message.id or message.fuzzy:
            continue
        if isinstance(message.id, tuple | list):
            forms = tuple(str(s) for s in (message.string or ()))
            if forms and all(forms):
                found[str(message.id[0])] = forms
        elif message.string:
            found[str(message.id)] = str(message.string)
    log.debug("catalogue %s: %d entries", path, len(found))
    return found


def _fields(template: str) -> frozenset[str]:
    """The placeholder names a template uses (``{count}`` -> ``count``)."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.add(name.split(".")[0].split("[")[0])
    return frozenset(names)


def translate(template: str, locale: str | None = None) -> str:
    """The translation of ``template`` in ``locale`` (default: the one in force), or ``template`` itself; a
    translation whose placeholders differ from the template's is not used (a translator's slip must not break a
    message), and is logged."""
    table = catalogue(current_locale() if locale is None else locale)
    if not table:
        return template
    found = table.get(template)
    if not isinstance(found, str):
        return template
    if _fields(found) != _fields(template):
        log.warning("translation of %r has placeholders %s, expected %s", template, _fields(found), _fields(template))
        return template
    return found


def tr(template: str, /, **params: Any) -> str:
    """``template`` translated into the locale in force, then formatted with ``params``."""
    text = translate(template)
    try:
        return text.format(**params) if params or "{" in text else text
    except (KeyError, IndexError, ValueError):
        log.exception("translation of %r cannot be formatted; using English", template)
        return template.format(**params)


def ntr(singular: str, plural: str, count: int, /, **params: Any) -> str:
    """The form of ``singular``/``plural`` for ``count`` in the locale in force (languages without plurals, such as
    Chinese, have one form), formatted with ``params``."""
    english = singular if count == 1 else plural
    locale = current_locale()
    forms = catalogue(locale).get(singular)
    if isinstance(forms, tuple) and forms:
        index = _plural_index(locale, count)
        candidate = forms[min(index, len(forms) - 1)]
        text = candidate if _fields(candidate) <= _fields(singular) | _fields(plural) else english
    else:
        # Both forms marked on their own (N_): each is an entry, and a language without plurals translates both alike.
        text = translate(english)
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        log.exception("plural translation of %r cannot be formatted; using English", singular)
        return english.format(**params)


@lru_cache(maxsize=32)
def _plural_rule(locale: str) -> Any:
    from babel import Locale
    from babel.core import UnknownLocaleError

    try:
        return Locale.parse(normalize(locale)).plural_form
    except (UnknownLocaleError, ValueError):
        return None


def _plural_index(locale: str, count: int) -> int:
    """The index of the plural form of ``count`` in ``locale``'s catalogue (gettext order: CLDR categories in the
    order ``zero one two few many other`` that the language uses)."""
    rule = _plural_rule(locale)
    if rule is None:
        return 0 if count == 1 else 1
    order = [tag for tag in ("zero", "one", "two", "few", "many", "other") if tag in rule.tags or tag == "other"]
    category = rule(count)
    return order.index(category) if category in order else len(order) - 1


def N_(template: str) -> str:
    """Marks ``template`` for extraction without translating it (constants translated where they are read)."""
    return template
