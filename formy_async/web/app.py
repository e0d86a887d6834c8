"""The web app factory: routes, and every resource opened and closed in its own context."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from ..auth import TokenVerifier
from ..connections import arq_pool, redis_from_settings
from ..events import EventHub
from ..jobstore import JobStore
from ..settings import Settings
from ..storage import storage_from_settings
from ..workflows import Catalogue
from .catalog import MODELS, ModelsCache
from .catalog import routes as catalog_routes
from .context import (
    ARQ,
    CATALOGUE,
    HTTP,
    HUB,
    REDIS,
    SETTINGS,
    SOCKETS,
    STORAGE,
    STORE,
    TOKENS,
)
from .errors import error_middleware
from .metrics import setup_metrics
from .security import auth_middleware, cors_middleware
from .stats import routes as stats_routes
from .submit import routes as submit_routes
from .uploads import routes as upload_routes
from .views import routes
from .ws import websocket

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings, *, redis: Redis | None = None) -> web.Application:
    """The aiohttp app. Pass `redis` to share a client (the embedded fake); else it is made here.

    The workflow catalogue is loaded now, so a broken workflow stops start-up, and so does a
    SECRET_KEY too short to be one.
    """
    settings.check_secret()
    # 1 MiB bounds every JSON body; uploads stream their multipart part under their own limit
    app = web.Application(
        middlewares=[error_middleware, cors_middleware, auth_middleware],
        client_max_size=1024 * 1024,
    )
    app[SETTINGS] = settings
    app[CATALOGUE] = Catalogue.load(settings.workflows_dir)
    app[TOKENS] = TokenVerifier(settings.secret_key)
    app[SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_redis_ctx(redis))
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.on_shutdown.append(_close_websockets)
    app.add_routes(routes)
    app.add_routes(submit_routes)
    app.add_routes(catalog_routes)
    app.add_routes(upload_routes)
    app.add_routes(stats_routes)
    setup_metrics(app)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/static", STATIC_DIR)
    return app


def _redis_ctx(injected: Redis | None):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = injected if injected is not None else redis_from_settings(app[SETTINGS])
        app[REDIS] = redis
        app[ARQ] = arq_pool(redis)
        app[STORE] = JobStore(redis, ttl=app[SETTINGS].job_ttl)
        yield
        if injected is None:
            await redis.aclose()

    return ctx


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = EventHub(app[REDIS])
    await hub.start()
    app[HUB] = hub
    yield
    await hub.aclose()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORAGE] = storage_from_settings(app[SETTINGS])
    yield
    await app[STORAGE].aclose()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        app[MODELS] = ModelsCache(app[SETTINGS], session)
        yield


async def _close_websockets(app: web.Application) -> None:
    """Tell browsers we are going away so they reconnect (to another process if there is one)."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
