"""``python -m bot`` / ``imagine-bot``: run the Discord bot."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bot import discord_config
from bot.client import ImagineClient
from shared.settings import get_settings
from shared.stores.connection import connect

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the bot until it is stopped (SIGTERM or Ctrl-C); returns the exit code."""
    parser = argparse.ArgumentParser(prog="imagine-bot", description="The imagine Discord bot.")
    parser.add_argument(
        "--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="logging level (default: LOG_LEVEL or INFO)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    token = settings.discord_token.get_secret_value()
    if not token:
        log.error("DISCORD_TOKEN is empty: set it to the bot token (Discord developer portal -> Bot -> Token)")
        return 2
    try:
        discord_config.apply(settings)
        settings.guild_ids  # noqa: B018 - a malformed DISCORD_GUILD_IDS fails here, before connecting
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    client = ImagineClient(settings, connect(settings), guild_ready_timeout=settings.discord_guild_ready_timeout_s)
    client.run(token, log_handler=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
