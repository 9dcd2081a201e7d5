"""Slash commands in the member's language: discord.py's ``app_commands.Translator`` over the message catalogues of
``shared.i18n``, so the synced command payload carries ``description_localizations`` (and choice names) for every
locale that has a catalogue.

Command, group and option *names* stay English on purpose: members (and the docs, and Midjourney habits) type
``/imagine`` in every language, and a name must stay unique and lower-case; descriptions and choice labels are what
members read.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation, TranslationContextTypes, locale_str

from shared import i18n

log = logging.getLogger(__name__)

TRANSLATED = frozenset(
    {
        TranslationContextLocation.command_description,
        TranslationContextLocation.group_description,
        TranslationContextLocation.parameter_description,
        TranslationContextLocation.choice_name,
    }
)
"""Where translations are offered to Discord (names are not translated, see the module doc)."""

DESCRIPTION_MAX = 100
"""Discord's longest command or option description (a longer translation is not sent)."""


class CatalogueTranslator(app_commands.Translator):
    """Command descriptions and choice names from the ``.po`` catalogues; None (English) where there is none."""

    async def translate(
        self, string: locale_str, locale: discord.Locale, context: TranslationContextTypes
    ) -> str | None:
        if context.location not in TRANSLATED:
            return None
        english = string.message
        translated = i18n.translate(english, str(locale))
        if translated == english:
            return None
        limit = DESCRIPTION_MAX if context.location is not TranslationContextLocation.choice_name else 100
        if len(translated) > limit:
            log.warning("translation of %r into %s is longer than %d characters; not sent", english, locale, limit)
            return None
        return translated


__all__ = ["CatalogueTranslator"]
