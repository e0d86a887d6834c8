"""What every job of a worker process shares: kept in arq's ctx under `formy`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from ..settings import Settings
from ..storage import Storage
from ..store.assets import AssetStore
from ..store.jobs import JobStore
from ..store.lifecycle import Lifecycle
from ..store.queue import RunQueue
from ..store.signals import WorkerSignals
from ..store.usage import UsageStore
from ..workflows import Catalogue
from .pool import BackendPool
from .recovery import Recovery


@dataclass
class WorkerContext:
    """The worker process's resources, opened at start-up and closed at shut-down."""

    settings: Settings
    store: JobStore
    lifecycle: Lifecycle
    queue: RunQueue
    pool: BackendPool
    catalogue: Catalogue
    storage: Storage
    signals: WorkerSignals
    recovery: Recovery
    http: aiohttp.ClientSession
    usage: UsageStore
    assets: AssetStore

    @staticmethod
    def of(ctx: dict[str, Any]) -> WorkerContext:
        """The context arq hands every job function."""
        wc: WorkerContext = ctx["formy"]
        return wc
