"""The web entry point: `python server.py` (the Procfile's `web`), serving on $HOST:$PORT."""

from __future__ import annotations

from aiohttp import web

from formy_async.logs import setup_logging
from formy_async.settings import Settings
from formy_async.web.app import create_app


def main() -> None:
    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    web.run_app(
        create_app(settings), host=settings.host, port=settings.port, shutdown_timeout=8, print=None
    )


if __name__ == "__main__":
    main()
