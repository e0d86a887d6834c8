"""The whole stack in one process: fake Redis, simulator, web app and arq worker."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import arq.worker
import structlog
from aiohttp import web
from redis.asyncio import Redis

from .settings import Settings
from .simulator import SimulatorConfig, run_simulator
from .store.connections import arq_pool, fake_redis, redis_from_settings
from .web.app import create_app
from .worker.process import FormyWorker, supervise
from .worker.settings import worker_kwargs

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
            from fakeredis import FakeServer

            # one in-process server shared by every client: fakeredis's TCP server is slow
            server = FakeServer()
            redis, worker_redis = fake_redis(server), fake_redis(server)
            stack.enter_context(
                mock.patch.object(arq.worker, "log_redis_info", _log_fake_redis_info)
            )
        else:
            redis, worker_redis = redis_from_settings(settings), redis_from_settings(settings)
        stack.push_async_callback(redis.aclose)
        stack.push_async_callback(worker_redis.aclose)
        if settings.uses_embedded_comfyui():
            config = SimulatorConfig(step_delay=settings.simulator_step_delay)
            comfy_url = await stack.enter_async_context(run_simulator(config))
            settings = settings.model_copy(update={"comfyui_url": comfy_url})
        runner = web.AppRunner(create_app(settings, redis=redis), shutdown_timeout=2)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        options = worker_kwargs(settings, configure_logging=False)
        del options["redis_settings"]
        # the worker closes its pool when it stops, so it gets a client of its own
        worker = FormyWorker(**options, redis_pool=arq_pool(worker_redis), handle_signals=False)
        worker_task = asyncio.create_task(supervise(worker), name="arq-worker")
        stack.push_async_callback(_stop_worker, worker, worker_task)
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        yield Stack(
            url=f"http://{host}:{settings.port}", settings=settings, redis=redis, worker=worker
        )


async def _stop_worker(worker: arq.worker.Worker, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for job_task in worker.tasks.values():
        job_task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    worker.tasks.clear()  # close() gathers them again and would re-raise their cancellation
    await worker.close()  # runs on_shutdown and closes the worker's pool


async def serve(settings: Settings) -> None:
    """Run the stack until Ctrl+C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_stack(settings) as stack:
        log.info(
            "stack_ready",
            url=stack.url,
            redis="in-process fake" if settings.uses_embedded_redis() else "configured",
            comfyui=stack.settings.comfyui_base
            + (" (simulator)" if settings.uses_embedded_comfyui() else ""),
        )
        print(f"\n  formy-async is running: open {stack.url}  (Ctrl+C stops it)\n", flush=True)
        await stop.wait()
        log.info("stack_stopping")
