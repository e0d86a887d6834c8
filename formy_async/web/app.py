"""The web app factory: routes, and every resource opened and closed in its own context."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from ..auth import TokenVerifier
from ..catalogue_watch import CatalogueWatch
from ..comfy.client import ComfyClient
from ..comfy.model_lists import ModelsCache
from ..settings import Settings
from ..storage import storage_from_settings
from ..store.assets import AssetStore
from ..store.connections import redis_from_settings
from ..store.hub import EventHub
from ..store.jobs import JobStore
from ..store.lifecycle import Lifecycle
from ..store.queue import RunQueue
from ..store.reuse import ReuseStore
from ..store.status import ServiceStatus
from ..store.uploads import UploadStore
from ..store.usage import UsageStore
from ..workflows import Catalogue
from . import catalog, events, health, jobs, openapi, outputs, page, stats, uploads, usage, ws
from .context import (
    ASSETS,
    CATALOGUE,
    CLOSING,
    COMFY,
    FOLLOWERS,
    HTTP,
    HUB,
    LIFECYCLE,
    MODELS,
    QUEUE,
    REDIS,
    REUSE,
    SETTINGS,
    SOCKETS,
    STATUS,
    STORAGE,
    STORE,
    TOKENS,
    UPLOADS,
    USAGE,
)
from .errors import error_middleware
from .followers import FollowerWatch
from .metrics import setup_metrics
from .reuse import settle_followers
from .security import auth_middleware, cors_middleware
from .v2 import assets as v2_assets
from .v2 import jobs as v2_jobs

Context = Callable[[web.Application], AsyncIterator[None]]


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
    app[CLOSING] = asyncio.Event()
    app.cleanup_ctx.append(_redis_ctx(redis))
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_followers_ctx)
    app.cleanup_ctx.append(_catalogue_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_comfy_ctx)
    app.on_shutdown.append(_close_websockets)
    app.on_shutdown.append(_end_streams)
    for module in (jobs, events, outputs, uploads, usage, catalog, stats, health, page, openapi):
        app.add_routes(module.routes)
    app.add_routes(v2_jobs.routes)
    app.add_routes(v2_assets.routes)
    setup_metrics(app)
    app.router.add_get("/ws", ws.websocket)
    return app


def _redis_ctx(injected: Redis | None) -> Context:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        redis = injected if injected is not None else redis_from_settings(settings, patient=False)
        app[REDIS] = redis
        app[STORE] = JobStore(redis, ttl=settings.job_ttl)
        app[LIFECYCLE] = Lifecycle(app[STORE])
        app[QUEUE] = RunQueue(redis)
        app[UPLOADS] = UploadStore(redis, ttl=settings.inputs_ttl)
        app[ASSETS] = AssetStore(redis, ttl=settings.inputs_ttl)
        app[STATUS] = ServiceStatus(redis, settings.backends)
        app[REUSE] = ReuseStore(redis)
        app[USAGE] = UsageStore(redis, marker_ttl=settings.job_ttl)
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


async def _followers_ctx(app: web.Application) -> AsyncIterator[None]:
    watch = FollowerWatch(app[HUB], app[REUSE], functools.partial(settle_followers, app))
    watch.start()
    app[FOLLOWERS] = watch
    yield
    await watch.aclose()


async def _end_streams(app: web.Application) -> None:
    app[CLOSING].set()


async def _catalogue_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    watch = CatalogueWatch(app[CATALOGUE], settings.workflows_dir, settings.catalogue_reload)
    watch.start()
    yield
    await watch.aclose()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORAGE] = storage_from_settings(app[SETTINGS])
    yield
    await app[STORAGE].aclose()


async def _comfy_ctx(app: web.Application) -> AsyncIterator[None]:
    """One ComfyUI client per backend (what the catalogue, readiness and stats ask)."""
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        clients = {
            spec.url: ComfyClient(spec.url, session, request_timeout=5)
            for spec in settings.backends
        }
        app[COMFY] = clients
        app[MODELS] = ModelsCache(list(clients.values()), ttl=settings.models_cache_ttl)
        yield


async def _close_websockets(app: web.Application) -> None:
    """Tell browsers we are going away so they reconnect (to another process if there is one)."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for sock in list(sockets):
        await sock.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
