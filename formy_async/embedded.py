"""The whole stack in one process: fake Redis, simulator, web app and arq worker.

The fake Redis and the simulator are imported only when the run uses them: pointed at a
Redis and a ComfyUI, this is web and worker in one process, and their code is memory the
process would hold for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arq.worker
import structlog
from aiohttp import web
from redis.asyncio import Redis

from .auth import mint_token
from .heap import freeze_startup_heap
from .models import without_credentials
from .settings import Settings, origins
from .start_problems import LISTEN_ERRNOS, listen_problem
from .store.connections import fake_redis, redis_from_settings
from .web.app import create_app
from .web.context import CATALOGUE
from .web.serving import app_runner
from .worker.process import running_worker

log = structlog.get_logger()


async def _log_fake_redis_info(redis: Any, log_func: Callable[[str], Any]) -> None:
    # arq logs INFO at start-up; fakeredis has no INFO command
    log_func("redis_version=fakeredis (in-process)")


@dataclass
class Stack:
    url: str
    settings: Settings
    redis: Redis
    worker: arq.worker.Worker


@contextlib.asynccontextmanager
async def running_stack(settings: Settings) -> AsyncIterator[Stack]:
    """Start everything `settings` does not point elsewhere; stop it all on exit."""
    if settings.page_user is None:  # zero set-up: the page gets a token of its own
        settings = settings.model_copy(update={"page_user": "demo"})
    if not settings.secret_key:  # and a secret for this run only
        settings = settings.model_copy(update={"secret_key": secrets.token_urlsafe(48)})
        log.info(
            "development_secret_generated",
            page_user="demo",
            note="set SECRET_KEY to mint tokens for the API (formy-async token)",
        )
    async with contextlib.AsyncExitStack() as stack:
        if settings.uses_embedded_redis():
            from unittest import mock

            from fakeredis import FakeServer

            # one in-process server shared by every client: fakeredis's TCP server is slow
            server = FakeServer()
            redis, worker_redis = fake_redis(server), fake_redis(server)
            stack.enter_context(
                mock.patch.object(arq.worker, "log_redis_info", _log_fake_redis_info)
            )
        else:
            redis = redis_from_settings(settings, patient=False)  # the web side fails fast
            worker_redis = redis_from_settings(settings)
        stack.push_async_callback(redis.aclose)
        stack.push_async_callback(worker_redis.aclose)
        if settings.uses_embedded_comfyui():
            from .simulator import SimulatorConfig, run_simulator

            config = SimulatorConfig(
                step_delay=settings.simulator_step_delay,
                comfyui_version=settings.simulator_comfyui_version,
            )
            comfy_url = await stack.enter_async_context(run_simulator(config))
            settings = settings.model_copy(update={"comfyui_url": comfy_url})
        app = create_app(settings, redis=redis)
        runner = app_runner(app, settings, shutdown_timeout=2)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        # a development stack stops at once: its running jobs are handed back
        running = running_worker(settings, worker_redis, grace=0, catalogue=app[CATALOGUE])
        worker = await stack.enter_async_context(running)
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        yield Stack(
            url=f"http://{host}:{settings.port}", settings=settings, redis=redis, worker=worker
        )


async def serve(settings: Settings) -> None:
    """Run the stack until Ctrl+C or SIGTERM; say where each setting came from, then how to
    reach it. Not being able to listen stops it with one line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(settings_report(settings), flush=True)
    started = False
    try:
        async with running_stack(settings) as stack:
            started = True
            log.info(
                "stack_ready",
                url=stack.url,
                redis="in-process fake" if settings.uses_embedded_redis() else "configured",
                comfyui=stack.settings.comfyui_base
                + (" (simulator)" if settings.uses_embedded_comfyui() else ""),
            )
            print(ready_text(stack, secret_generated=not settings.secret_key), flush=True)
            freeze_startup_heap()
            await stop.wait()
            log.info("stack_stopping")
    except OSError as exc:
        if started or exc.errno not in LISTEN_ERRNOS:
            raise
        problem = listen_problem(exc, settings.host, settings.port)
        raise SystemExit(f"formy-async run: {problem}; set PORT or --port") from None


def settings_report(settings: Settings, dotenv: Path = Path(".env")) -> str:
    """Which Redis, ComfyUI and secret the run uses and why, and every setting that is not a
    default with where it was set (the environment or `.env`: a forgotten one switches the
    embedded Redis or simulator off)."""
    sources = origins(settings.model_fields_set, dotenv)
    redis = (
        f"{without_credentials(str(settings.redis_url))} ({sources['redis_url']})"
        if "redis_url" in sources
        else "in-process fake (REDIS_URL is not set)"
    )
    comfy = (
        f"{without_credentials(settings.comfyui_url)} ({sources['comfyui_url']}): no simulator"
        if "comfyui_url" in sources
        else "the simulator (COMFYUI_URL is not set)"
    )
    secret = sources.get("secret_key", "a new one for this run (SECRET_KEY is not set)")
    lines = [
        "formy-async run:",
        f"  Redis    {redis}",
        f"  ComfyUI  {comfy}",
        f"  secret   {secret}",
    ]
    others = [where for name, where in sources.items() if name not in _SHOWN]
    if others:
        lines.append(f"  also set: {', '.join(others)}")
    lines.append("  everything else: the defaults in formy_async/settings.py")
    return "\n".join(lines)


_SHOWN = frozenset({"redis_url", "comfyui_url", "secret_key"})


def ready_text(stack: Stack, *, secret_generated: bool) -> str:
    """The page's address, and a token and two commands for the API, ready to paste."""
    user = stack.settings.page_user or "demo"
    token = mint_token(stack.settings.secret_key, user, ttl=12 * 3600)
    cli = Path(sys.executable).parent / "formy-async"
    with contextlib.suppress(ValueError):  # shown as the README does, from the checkout
        cli = cli.relative_to(Path.cwd())
    lasts = "this run only: set SECRET_KEY to keep tokens" if secret_generated else "12 h"
    return (
        f"\n  formy-async is running: open {stack.url}  (Ctrl+C stops it)\n\n"
        f"  The API, from another terminal (a token for {user}, the page's user; {lasts}):\n"
        f"    export FORMY_URL={stack.url} FORMY_TOKEN={token}\n"
        f'    {cli} submit text_to_image -p prompt="a red fox" --wait --out outputs\n'
        '    curl -s -H "Authorization: Bearer $FORMY_TOKEN" $FORMY_URL/api/workflows\n'
    )
