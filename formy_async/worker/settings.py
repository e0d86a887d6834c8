"""The arq worker, declared: its functions, cron jobs, start-up and shut-down.

`WorkerSettings` holds what does not depend on the configuration; `worker_kwargs(settings)`
adds what does (Redis, how many jobs at once, time limits) and is what `arq.worker.Worker` takes.
The settings (and the workflow catalogue, loaded once) reach `startup` through arq's ctx.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from typing import Any, ClassVar

import aiohttp
from arq.cron import cron
from arq.worker import func

from ..catalogue_watch import CatalogueWatch
from ..logs import setup_logging
from ..settings import Settings
from ..storage import storage_from_settings
from ..store.assets import AssetStore
from ..store.connections import (
    arq_redis_settings,
    job_deserializer,
    job_serializer,
    pack_in_c,
)
from ..store.jobs import JobStore
from ..store.leases import Heartbeat, Leases
from ..store.lifecycle import Lifecycle
from ..store.queue import DELIVER_WEBHOOK, RUN_JOB, RunQueue
from ..store.signals import WorkerSignals
from ..store.usage import UsageStore
from ..workflows import Catalogue
from .context import WorkerContext
from .pool import BackendPool
from .positions import Positions
from .recovery import Recovery
from .retention import clean_up
from .run import run_job
from .webhooks import deliver_webhook

#: a try of `run_job` counts against nothing: attempts are counted by the job itself
#: (transient faults only), so arq never gives up on a job silently
RUN_JOB_TRIES = 1000


async def startup(ctx: dict[str, Any]) -> None:
    """Open the worker's resources into `ctx["formy"]` (once: the supervisor may call it again).

    Each is registered for closing as soon as it is open, so a start-up cut short (the worker
    stopped while it probed the backends) leaks nothing.
    """
    if "formy" in ctx:  # the supervisor restarted arq's loop after a Redis outage
        return
    await shutdown(ctx)  # what a start-up cut short (by that outage) had opened
    settings: Settings = ctx["settings"]
    if ctx.get("configure_logging", True):
        setup_logging(settings.log_format, settings.log_level)
    exits = ctx["formy_exits"] = contextlib.AsyncExitStack()
    http = await exits.enter_async_context(_client_session())
    # ComfyUI sockets open on a session of their own, so HTTP calls keep their connections
    sockets = await exits.enter_async_context(_client_session())
    redis = ctx["redis"]
    await pack_in_c(redis)
    storage = storage_from_settings(settings)
    exits.push_async_callback(storage.aclose)
    signals = WorkerSignals(redis, ctx.get("wake"))
    await signals.start()
    exits.push_async_callback(signals.aclose)
    store = JobStore(redis, ttl=settings.job_ttl)
    queue = RunQueue(redis)
    pool = BackendPool(
        redis,
        settings.backends,
        http,
        sockets=sockets,
        lease=settings.lease_ttl,
        probe_interval=settings.pool_probe_interval,
    )
    exits.push_async_callback(pool.aclose)
    signals.on_slot_freed = pool.slot_freed
    await pool.start()
    recovery = Recovery(
        Leases(redis, _heartbeat(settings), ttl=settings.lease_ttl),
        store,
        queue,
        lease_ttl=settings.lease_ttl,
        interval=settings.recovery_interval,
        max_attempts=settings.job_max_attempts,
    )
    exits.push_async_callback(recovery.aclose)
    await recovery.start()
    positions = Positions(redis, store, queue, Lifecycle(store), settings.backends)
    positions.start()
    exits.push_async_callback(positions.aclose)
    if not ctx.get("catalogue_watched"):  # else the web process it runs in keeps it current
        watch = CatalogueWatch(ctx["catalogue"], settings.workflows_dir, settings.catalogue_reload)
        watch.start()
        exits.push_async_callback(watch.aclose)
    ctx["formy"] = WorkerContext(
        settings=settings,
        store=store,
        lifecycle=Lifecycle(store),
        queue=queue,
        pool=pool,
        catalogue=ctx["catalogue"],
        storage=storage,
        signals=signals,
        recovery=recovery,
        http=http,
        usage=UsageStore(redis, marker_ttl=settings.job_ttl),
        assets=AssetStore(redis, ttl=settings.inputs_ttl),
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what `startup` opened, the last opened first."""
    exits: contextlib.AsyncExitStack | None = ctx.pop("formy_exits", None)
    ctx.pop("formy", None)
    if exits is not None:
        await exits.aclose()


def _heartbeat(settings: Settings) -> Heartbeat:
    return Heartbeat(
        worker_id=uuid.uuid4().hex,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=time.time(),
        max_jobs=settings.max_jobs,
        comfyui=", ".join(spec.label for spec in settings.backends),
    )


class WorkerSettings:
    """What arq runs, whatever the configuration."""

    functions: ClassVar[list[Any]] = [
        func(run_job, name=RUN_JOB, max_tries=RUN_JOB_TRIES),
        # the delivery counts its own tries, and stops at FORMY_WEBHOOK_MAX_ATTEMPTS
        func(deliver_webhook, name=DELIVER_WEBHOOK, max_tries=RUN_JOB_TRIES, timeout=30),
    ]
    # every 10 minutes on one worker (a cron job's id is unique per run time)
    cron_jobs: ClassVar[list[Any]] = [
        cron(
            clean_up,
            name="clean_up",
            minute=set(range(0, 60, 10)),
            run_at_startup=True,
            timeout=600,
        )
    ]
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = job_serializer
    job_deserializer = job_deserializer
    keep_result = 3600
    health_check_interval = 30
    # cancels go through our own channel (store.signals); arq's abort set would cost a
    # transaction every poll and a command more in each claim and finish, for nothing
    allow_abort_jobs = False


def _client_session() -> aiohttp.ClientSession:
    """A session without a connection cap or a total timeout (each call sets its own)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    )


def worker_kwargs(
    settings: Settings, *, configure_logging: bool = True, catalogue: Catalogue | None = None
) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker`: `WorkerSettings` and the configured values.

    `catalogue`: one loaded and kept current already (by the web app the worker runs beside).
    """
    settings.check_secret()  # it signs the URLs in events
    watched = catalogue is not None
    if catalogue is None:
        catalogue = Catalogue.load(settings.workflows_dir)  # a broken workflow stops start-up
    declared = {k: v for k, v in vars(WorkerSettings).items() if not k.startswith("_")}
    return {
        **declared,
        "ctx": {
            "settings": settings,
            "catalogue": catalogue,
            "catalogue_watched": watched,
            "configure_logging": configure_logging,
        },
        "redis_settings": arq_redis_settings(settings),
        "max_jobs": settings.max_jobs,
        "poll_delay": settings.worker_poll_delay,
        # a backstop above every job's own time limit
        "job_timeout": settings.job_timeout + 60,
        "job_completion_wait": settings.shutdown_grace,
    }
