"""Health: `/healthz` (the process answers) and `/readyz` (Redis and a ComfyUI backend answer)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .context import COMFY, REDIS

routes = web.RouteTableDef()

#: the most a readiness check waits for Redis, and for each ComfyUI backend
REDIS_TIMEOUT = 2.0
COMFY_TIMEOUT = 3.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is alive (it answers); says nothing about its dependencies."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Redis and at least one ComfyUI backend answer: 200, else 503 naming what does not."""
    clients = list(request.app[COMFY].values())
    redis, backends = await asyncio.gather(
        _check_redis(request),
        asyncio.gather(*(c.answers(within=COMFY_TIMEOUT) for c in clients)),
    )
    answering = sum(backends)
    checks = {
        "redis": redis,
        "comfyui": "ok" if answering else "error: no ComfyUI backend answers /system_stats",
    }
    if len(clients) > 1:
        checks["comfyui_backends"] = f"{answering} of {len(clients)} answer"
    ready = redis == "ok" and answering > 0
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


async def _check_redis(request: web.Request) -> str:
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=REDIS_TIMEOUT)
    except Exception as exc:
        return f"error: {exc!r}"
    return "ok"
