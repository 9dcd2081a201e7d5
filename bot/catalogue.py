"""The message catalogue's template: every member-facing template in the code and every slash command description,
extracted with ``babel`` into ``shared/locale/messages.pot``; each language's ``.po`` is updated from it.

    python -m bot.catalogue extract     # write shared/locale/messages.pot
    python -m bot.catalogue update      # merge the template into every shared/locale/<locale>/LC_MESSAGES/messages.po
    python -m bot.catalogue check       # exit 1 if the template is stale or a catalogue misses or breaks an entry

Sources: calls of ``tr``, ``ntr`` and ``N_`` (``shared.i18n``) in ``shared/``, ``bot/``, ``worker/``, ``cli/`` and
``web/`` with its page templates (read as text, nothing imported from the workers or the web companion), and the
descriptions of the commands the bot registers (read from its command tree). ``tests/test_i18n.py`` runs the check,
so a new sentence without its entries fails the tests.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po
from discord import app_commands

from bot.admin_commands import admin_commands
from bot.commands import all_commands
from bot.rules_commands import community_commands
from shared import defaults, i18n
from shared.settings import Settings

log = logging.getLogger(__name__)

KEYWORDS = {"tr": None, "N_": None, "ntr": (1, 2)}
"""The functions whose first argument (``ntr``: first two) is a template."""

SOURCE_DIRS = ("shared", "bot", "worker", "cli", "web")
"""Folders of the checkout whose Python files (and, under ``web/templates``, Jinja2 pages) hold member-facing
templates."""

METHOD_MAP = [("**.py", "python"), ("templates/**.html", "jinja2")]
"""How babel reads each kind of file (``jinja2``: Jinja2's own extractor, finding the pages' ``tr``/``ntr`` calls)."""

TEMPLATE = i18n.LOCALE_DIR / f"{i18n.DOMAIN}.pot"
"""The catalogue template in the checkout."""


def command_descriptions(settings: Settings) -> Iterator[tuple[str, str]]:
    """(description, where) of every command, group and option the bot registers."""
    commands: list[Any] = [*all_commands(settings), *admin_commands(settings), *community_commands(settings)]
    while commands:
        command = commands.pop(0)
        name = getattr(command, "qualified_name", getattr(command, "name", "?"))
        description = getattr(command, "description", "")
        if isinstance(description, str) and description and description != "…":
            yield description, f"/{name}"
        if isinstance(command, app_commands.Group):
            commands.extend(command.commands)
        for parameter in getattr(command, "parameters", []):
            if parameter.description and parameter.description != "…":
                yield str(parameter.description), f"/{name} {parameter.name}"


def template(settings: Settings | None = None) -> Catalog:
    """The catalogue template as the code and the command tree make it now."""
    catalog = Catalog(project="imagine-bot", version="0.1", charset="utf-8", fuzzy=False)
    for folder in SOURCE_DIRS:
        path = defaults.PROJECT_ROOT / folder
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            # babel warns about f-strings passed as *values* of a template (tr("{x}", x=f"..")): not templates.
            warnings.simplefilter("ignore")
            found = list(extract_from_dir(str(path), keywords=KEYWORDS, comment_tags=("i18n:",), method_map=METHOD_MAP))
        for filename, lineno, message, comments, context in found:
            catalog.add(message, None, [(f"{folder}/{filename}", lineno)], auto_comments=comments, context=context)
    for description, where in command_descriptions(settings or Settings()):
        catalog.add(description, None, [(where, 0)])
    return catalog


def _ids(catalog: Catalog) -> set[str]:
    return {str(m.id[0] if isinstance(m.id, tuple | list) else m.id) for m in catalog if m.id}


def read(path: Path) -> Catalog:
    """A ``.po`` or ``.pot`` file."""
    with path.open("rb") as handle:
        return read_po(handle)


def write(catalog: Catalog, path: Path) -> None:
    """Write ``catalog`` to ``path`` (sorted, without line numbers that would churn on every edit)."""
    out = io.BytesIO()
    write_po(out, catalog, width=120, sort_output=True, omit_header=False, include_lineno=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())


def problems(settings: Settings | None = None) -> list[str]:
    """What is wrong with the catalogues: a stale template, and per language a missing, fuzzy or broken entry."""
    found: list[str] = []
    wanted = _ids(template(settings))
    have = _ids(read(TEMPLATE)) if TEMPLATE.is_file() else set()
    found += [f"messages.pot lacks {msgid!r} (run python -m bot.catalogue extract)" for msgid in sorted(wanted - have)]
    found += [f"messages.pot has the unused {msgid!r}" for msgid in sorted(have - wanted)]
    for locale in i18n.available_locales():
        catalog = read(i18n.LOCALE_DIR / locale / "LC_MESSAGES" / f"{i18n.DOMAIN}.po")
        entries = {str(m.id[0] if isinstance(m.id, tuple | list) else m.id): m for m in catalog if m.id}
        for msgid in sorted(wanted):
            entry = entries.get(msgid)
            strings = () if entry is None else (entry.string if isinstance(entry.string, tuple) else (entry.string,))
            if entry is None or entry.fuzzy or not all(strings):
                found.append(f"{locale} does not translate {msgid!r}")
                continue
            english = " ".join(entry.id) if isinstance(entry.id, tuple | list) else msgid
            for text in strings:
                if i18n._fields(str(text)) - i18n._fields(english):
                    found.append(f"{locale}: the translation of {msgid!r} has other placeholders: {text!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc)."""
    args = sys.argv[1:] if argv is None else argv
    action = args[0] if args else "check"
    if action == "extract":
        write(template(), TEMPLATE)
        print(f"wrote {TEMPLATE}")
        return 0
    if action == "update":
        fresh = template()
        for locale in i18n.available_locales():
            path = i18n.LOCALE_DIR / locale / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
            catalog = read(path)
            catalog.update(fresh, no_fuzzy_matching=True)
            write(catalog, path)
            print(f"updated {path}")
        return 0
    if action == "check":
        found = problems()
        for line in found:
            print(line)
        return 1 if found else 0
    print(f"usage: python -m bot.catalogue extract|update|check, got {action!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
