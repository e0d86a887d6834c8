"""Typed keys for the state a web app holds (one per resource, opened and closed in app.py)."""

from __future__ import annotations

import weakref

import aiohttp
from aiohttp import web
from arq.connections import ArqRedis
from redis.asyncio import Redis

from ..auth import TokenVerifier
from ..events import EventHub
from ..jobstore import JobStore
from ..settings import Settings
from ..storage import Storage
from ..workflows import Catalogue

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
ARQ = web.AppKey("arq", ArqRedis)
STORE = web.AppKey("store", JobStore)
HUB = web.AppKey("hub", EventHub)
CATALOGUE = web.AppKey("catalogue", Catalogue)
STORAGE = web.AppKey("storage", Storage)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TOKENS = web.AppKey("tokens", TokenVerifier)
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
