"""Run a bench helper server until SIGTERM/SIGINT, then stop it cleanly."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


async def serve_until_signal(app: web.Application, *ports: int) -> None:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
