"""The web entry point: `python server.py` (the Procfile's `web`), serving on $HOST:$PORT."""

from __future__ import annotations

import sys

from aiohttp import web

from formy_async.logs import setup_logging
from formy_async.settings import Settings
from formy_async.web.app import create_app


def main() -> None:
    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    try:
        app = create_app(settings)
    except ValueError as exc:  # no real SECRET_KEY, a broken workflow file
        sys.exit(f"formy-async: {exc}")
    web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=8, print=None)


if __name__ == "__main__":
    main()
