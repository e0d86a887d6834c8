"""The arq worker's configuration and its start-up and shut-down hooks."""

from __future__ import annotations

from typing import Any

import aiohttp
from arq.worker import func

from . import keys
from .comfy import ComfyClient
from .connections import arq_redis_settings, job_deserializer, job_serializer
from .jobs import WorkerContext, run_job
from .jobstore import JobStore
from .logs import setup_logging
from .settings import Settings
from .signals import CancelWatcher
from .storage import storage_from_settings
from .workflows import Catalogue


def worker_options(settings: Settings, *, configure_logging: bool = True) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker` (and the attributes of `WorkerSettings`)."""
    catalogue = Catalogue.load(settings.workflows_dir)  # a broken workflow stops start-up here

    async def startup(ctx: dict[str, Any]) -> None:
        if configure_logging:
            setup_logging(settings.log_format, settings.log_level)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        ctx["http"] = session
        cancels = CancelWatcher(ctx["redis"])
        await cancels.start()
        ctx["formy"] = WorkerContext(
            settings=settings,
            store=JobStore(ctx["redis"], ttl=settings.job_ttl),
            comfy=ComfyClient(settings.comfyui_base, session),
            catalogue=catalogue,
            storage=storage_from_settings(settings),
            cancels=cancels,
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "formy" in ctx:
            await ctx["formy"].cancels.aclose()
            await ctx["formy"].storage.aclose()
        if "http" in ctx:
            await ctx["http"].close()

    return {
        # attempts are counted by the job itself (transient faults only), so arq never gives up
        # on a job silently; its own timeout is a backstop above every job's time limit
        "functions": [
            func(run_job, name=keys.RUN_JOB, timeout=settings.job_timeout + 60, max_tries=1000)
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": arq_redis_settings(settings),
        "max_jobs": settings.max_jobs,
        "poll_delay": settings.worker_poll_delay,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "keep_result": 3600,
        "health_check_interval": 30,
        "allow_abort_jobs": True,
        "job_completion_wait": 20,
    }
