"""Typed keys for the state a web app holds (each resource opened and closed in app.py)."""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from ..auth import Identity, TokenVerifier
from ..comfy.client import ComfyClient
from ..comfy.model_lists import ModelsCache
from ..settings import Settings
from ..storage import Storage
from ..store.assets import AssetStore
from ..store.hub import EventHub
from ..store.jobs import JobStore
from ..store.lifecycle import Lifecycle
from ..store.queue import RunQueue
from ..store.reuse import ReuseStore
from ..store.status import ServiceStatus
from ..store.uploads import UploadStore
from ..store.usage import UsageStore
from ..workflows import Catalogue
from .followers import FollowerWatch
from .instruments import WebMetrics

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", JobStore)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
QUEUE = web.AppKey("queue", RunQueue)
UPLOADS = web.AppKey("uploads", UploadStore)
ASSETS = web.AppKey("assets", AssetStore)
STATUS = web.AppKey("status", ServiceStatus)
HUB = web.AppKey("hub", EventHub)
CATALOGUE = web.AppKey("catalogue", Catalogue)
STORAGE = web.AppKey("storage", Storage)
HTTP = web.AppKey("http", aiohttp.ClientSession)
#: one ComfyUI client per backend of the pool, by URL, in the configured order
COMFY = web.AppKey("comfy", dict[str, ComfyClient])
MODELS = web.AppKey("models", ModelsCache)
METRICS = web.AppKey("metrics", WebMetrics)
TOKENS = web.AppKey("tokens", TokenVerifier)
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
REUSE = web.AppKey("reuse", ReuseStore)
FOLLOWERS = web.AppKey("followers", FollowerWatch)
USAGE = web.AppKey("usage", UsageStore)
#: set when the app shuts down: Server-Sent Events streams end (their clients reconnect)
CLOSING = web.AppKey("closing", asyncio.Event)

IDENTITY = web.RequestKey("identity", Identity)
#: set when the request's signed URL stood in for a token
SIGNED = web.RequestKey("signed", bool)
