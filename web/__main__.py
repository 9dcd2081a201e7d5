"""``python -m web`` / ``imagine-web``: run the web companion."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web as aiohttp_web

from shared.settings import get_settings
from shared.signing import check_secret
from shared.stores.connection import connect
from web.app import create_app

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Serve until stopped (SIGTERM or Ctrl-C); returns the exit code (2 for a configuration it cannot run with)."""
    parser = argparse.ArgumentParser(prog="imagine-web", description="The imagine web companion.")
    parser.add_argument(
        "--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="logging level (default: LOG_LEVEL or INFO)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        check_secret(settings.web_secret.get_secret_value())
        if not settings.web_base_url or not settings.discord_client_id:
            raise ValueError("WEB_BASE_URL and DISCORD_CLIENT_ID must be set for the web companion's login")
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    app = create_app(settings, connect(settings))
    log.info(
        "web companion on http://%s:%d (public URL %s)", settings.web_host, settings.web_port, settings.web_base_url
    )
    aiohttp_web.run_app(app, host=settings.web_host, port=settings.web_port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
