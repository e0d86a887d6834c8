"""What the service is doing (admins): `/api/stats` (jobs, workers) and `/api/backends`."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from .. import keys
from ..models import FINAL_STATUSES, Job
from ..settings import BackendSpec
from .context import HTTP, REDIS, SETTINGS
from .security import require_admin

routes = web.RouteTableDef()


@routes.get("/api/stats")
async def stats(request: web.Request) -> web.Response:
    require_admin(request)  # counts and workers of everyone
    redis = request.app[REDIS]
    now = time.time()
    counts = {"pending": 0, "processing": 0}
    for member in await redis.zrange(keys.active_jobs(), 0, -1):
        raw = await redis.get(keys.job(member.decode()))
        if raw is not None:
            status = Job.model_validate_json(raw).status
            if status in counts:
                counts[status] += 1
    finished = {
        window: {
            status: await redis.zcount(keys.finished(status), now - seconds, "+inf")
            for status in sorted(FINAL_STATUSES)
        }
        for window, seconds in (("last_hour", 3600), ("last_day", 86400))
    }
    return web.json_response(
        {
            "jobs": {**counts, "finished": finished},
            "workers": await _workers(request),
            "backends": {spec.url: await _running(redis, spec.url) for spec in _specs(request)},
        }
    )


@routes.get("/api/backends")
async def backends(request: web.Request) -> web.Response:
    """Each ComfyUI backend: healthy, capacity, labels, running jobs, its queue, last error."""
    require_admin(request)
    redis = request.app[REDIS]
    found = []
    for spec in _specs(request):
        error = await redis.get(keys.backend_error(spec.url))
        found.append(
            {
                "url": spec.url,
                "healthy": not await redis.exists(keys.backend_down(spec.url)),
                "capacity": spec.capacity,
                "labels": sorted(spec.labels),
                "running": await _running(redis, spec.url),
                "queue": await _queue_remaining(request, spec.url),
                "last_error": error.decode() if isinstance(error, bytes) else error,
            }
        )
    return web.json_response({"backends": found})


def _specs(request: web.Request) -> list[BackendSpec]:
    return request.app[SETTINGS].backends


async def _running(redis: Any, url: str) -> list[str]:
    """Jobs holding a slot on the backend now (leases not yet run out)."""
    members = await redis.zrangebyscore(keys.backend_slots(url), time.time() * 1000, "+inf")
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


async def _queue_remaining(request: web.Request, url: str) -> int | None:
    """What ComfyUI says it holds (running + pending), None when it does not answer."""
    try:
        async with request.app[HTTP].get(
            f"{url}/prompt", timeout=aiohttp.ClientTimeout(total=2)
        ) as resp:
            data = await resp.json()
        return int(data["exec_info"]["queue_remaining"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return None


async def _workers(request: web.Request) -> list[dict[str, Any]]:
    redis = request.app[REDIS]
    found = []
    async for key in redis.scan_iter(match=keys.WORKER_HEARTBEAT_PATTERN, count=100):
        raw = await redis.get(key)
        if raw is not None:
            found.append(json.loads(raw))
    return sorted(found, key=lambda w: str(w.get("worker_id")))
