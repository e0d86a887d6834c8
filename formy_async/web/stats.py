"""What the service is doing (admins): `/api/stats` (jobs, workers) and `/api/backends`."""

from __future__ import annotations

from aiohttp import web

from ..errors import ComfyUnavailable
from .context import COMFY, SETTINGS, STATUS
from .security import require_admin

routes = web.RouteTableDef()

#: the most a listing waits for each ComfyUI backend to say what it holds
QUEUE_TIMEOUT = 2.0


@routes.get("/api/stats")
async def stats(request: web.Request) -> web.Response:
    require_admin(request)  # counts and workers of everyone
    return web.json_response(await request.app[STATUS].stats())


@routes.get("/api/backends")
async def backends(request: web.Request) -> web.Response:
    """Each ComfyUI backend: healthy, capacity, labels, running jobs, its queue, last error,
    the models it has loaded and what a switch and a run take there."""
    require_admin(request)
    status, clients = request.app[STATUS], request.app[COMFY]
    found = []
    specs = request.app[SETTINGS].backends
    warmth = await status.warmth.of([spec.url for spec in specs])  # one round trip for all
    for spec, warm in zip(specs, warmth, strict=True):
        state = await status.backend(spec)
        try:
            queue: int | None = await clients[spec.url].queue_remaining(within=QUEUE_TIMEOUT)
        except ComfyUnavailable:
            queue = None  # it does not answer
        found.append(
            {
                "url": spec.label,
                "healthy": state.healthy,
                "capacity": spec.capacity,
                "lookahead": spec.lookahead,
                "labels": sorted(spec.labels),
                "running": state.running,
                "queue": queue,
                "last_error": state.last_error,
                "models": sorted(warm.models),
                "switch_seconds": warm.switch,
                "run_seconds": warm.run,
            }
        )
    return web.json_response({"backends": found})
