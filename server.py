"""The web entry point: `python server.py` (the Procfile's `web`), serving on $HOST:$PORT."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from aiohttp import web

from formy_async.logs import setup_logging
from formy_async.settings import Settings
from formy_async.start_problems import LISTEN_ERRNOS, listen_problem, startup_problem
from formy_async.store.connections import redis_from_settings
from formy_async.web.app import create_app
from formy_async.web.context import CATALOGUE
from formy_async.web.serving import serve_app


def main() -> None:
    try:
        settings = Settings()
        setup_logging(settings.log_format, settings.log_level)
        app = create_app(settings)
        if settings.web_worker:
            _add_worker(app, settings)
    except ValueError as exc:  # a bad setting, no real SECRET_KEY, a broken workflow file
        sys.exit(f"formy-async web: {startup_problem(exc)}")
    if settings.page_user:
        print(
            f"formy-async web: WARNING: FORMY_PAGE_USER={settings.page_user} hands every visitor "
            "of the page a token for that user: for development only",
            file=sys.stderr,
            flush=True,
        )
    everywhere = settings.host in ("0.0.0.0", "")
    url = f"http://{'127.0.0.1' if everywhere else settings.host}:{settings.port}"
    also = " (and every other address of this machine)" if everywhere else ""
    also += ", with a worker (FORMY_WEB_WORKER)" if settings.web_worker else ""
    print(f"formy-async web: serving on {url}{also}; Ctrl+C stops it", flush=True)
    try:
        asyncio.run(serve_app(app, settings, shutdown_timeout=8))
    except OSError as exc:
        if exc.errno not in LISTEN_ERRNOS:
            raise
        sys.exit(f"formy-async web: {listen_problem(exc, settings.host, settings.port)}; set PORT")


def _add_worker(app: web.Application, settings: Settings) -> None:
    """FORMY_WEB_WORKER: a worker in this process. It starts after the app, and begins to stop
    when the app does: its running jobs' grace runs while the web side closes its connections."""
    from formy_async.worker.process import running_worker  # only a web that runs one needs it

    worker = contextlib.AsyncExitStack()
    stopping: list[asyncio.Task[None]] = []

    async def start(app: web.Application) -> None:
        redis = redis_from_settings(settings)
        running = running_worker(settings, redis, catalogue=app[CATALOGUE])
        await worker.enter_async_context(running)

    async def stop(app: web.Application) -> None:
        stopping.append(asyncio.create_task(worker.aclose()))

    async def stopped(app: web.Application) -> None:
        await asyncio.gather(*stopping)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.on_cleanup.append(stopped)


if __name__ == "__main__":
    main()
