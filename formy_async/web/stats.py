"""`GET /api/stats`: what the service is doing — job counts, live workers, busy backends."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from .. import keys
from ..models import FINAL_STATUSES, Job
from .context import REDIS
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
    workers = await _workers(request)
    backends: dict[str, dict[str, Any]] = defaultdict(lambda: {"workers": 0, "running": []})
    for worker in workers:
        backend = backends[worker.get("comfyui", "?")]
        backend["workers"] += 1
        backend["running"].extend(worker.get("running", []))
    return web.json_response(
        {
            "jobs": {**counts, "finished": finished},
            "workers": workers,
            "backends": dict(backends),
        }
    )


async def _workers(request: web.Request) -> list[dict[str, Any]]:
    redis = request.app[REDIS]
    found = []
    async for key in redis.scan_iter(match=keys.WORKER_HEARTBEAT_PATTERN, count=100):
        raw = await redis.get(key)
        if raw is not None:
            found.append(json.loads(raw))
    return sorted(found, key=lambda w: str(w.get("worker_id")))
