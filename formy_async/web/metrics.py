"""`GET /metrics` in Prometheus format, the HTTP metrics middleware, and their set-up."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from ..errors import Unauthorized
from ..store.status import ServiceStatus, Snapshot
from .context import COMFY, METRICS, SETTINGS, STATUS
from .instruments import WebMetrics

log = structlog.get_logger()

#: the most a scrape waits for Redis, and for each ComfyUI backend to answer
SCRAPE_TIMEOUT = 5.0
PROBE_TIMEOUT = 2.0


def setup_metrics(app: web.Application) -> WebMetrics:
    """Give `app` its own metrics, the `/metrics` route and the HTTP middleware (outermost)."""
    metrics = WebMetrics()
    app[METRICS] = metrics
    # first in the list: it sees every response, including the error middleware's
    app.middlewares.insert(0, metrics_middleware)
    app.router.add_get("/metrics", metrics_view)
    return metrics


async def metrics_view(request: web.Request) -> web.Response:
    """GET /metrics: this process's metrics and the shared ones, read from Redis now."""
    token = request.app[SETTINGS].metrics_token
    if token and not _bearer_matches(request, token):
        raise Unauthorized("send the metrics token as `Authorization: Bearer <token>`")
    metrics = request.app[METRICS]
    specs = request.app[SETTINGS].backends
    clients = request.app[COMFY]
    shared = await _snapshot(request.app[STATUS])
    up = await asyncio.gather(*(clients[s.url].answers(within=PROBE_TIMEOUT) for s in specs))
    if shared is not None:
        labels = [spec.label for spec in specs]
        shared = dataclasses.replace(shared, backends_up=dict(zip(labels, up, strict=True)))
    metrics.shared.update(shared)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _bearer_matches(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


async def _snapshot(status: ServiceStatus) -> Snapshot | None:
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            return await status.snapshot()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics_snapshot_failed", error=str(exc))
        return None


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time each request under its route template (`/api/jobs/{id}`), not its path."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # what the error middleware lets through (redirects)
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first
        raise
    finally:
        seconds = time.perf_counter() - started
        request.app[METRICS].request_done(request.method, route, status, seconds)
