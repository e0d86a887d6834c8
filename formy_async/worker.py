"""The arq worker: its configuration, start-up and shut-down hooks, and its supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import aiohttp
import structlog
from arq.cron import cron
from arq.worker import Worker, func
from redis.exceptions import RedisError

from . import keys
from .connections import arq_redis_settings, job_deserializer, job_serializer
from .jobs import WorkerContext, run_job
from .jobstore import JobStore
from .logs import setup_logging
from .pool import BackendPool
from .recovery import Recovery
from .retention import clean_up
from .settings import Settings
from .signals import WorkerSignals
from .storage import storage_from_settings
from .webhooks import deliver_webhook
from .workflows import Catalogue

log = structlog.get_logger()


def worker_options(settings: Settings, *, configure_logging: bool = True) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker` (and the attributes of `WorkerSettings`)."""
    settings.check_secret()  # it signs the URLs in events
    catalogue = Catalogue.load(settings.workflows_dir)  # a broken workflow stops start-up here

    async def startup(ctx: dict[str, Any]) -> None:
        if "formy" in ctx:  # the supervisor restarted arq's loop after a Redis outage
            return
        if configure_logging:
            setup_logging(settings.log_format, settings.log_level)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        ctx["http"] = session
        signals = WorkerSignals(ctx["redis"], ctx.get("wake"))
        await signals.start()
        store = JobStore(ctx["redis"], ttl=settings.job_ttl)
        pool = BackendPool(
            ctx["redis"],
            settings.backends,
            session,
            lease=settings.lease_ttl,
            probe_interval=settings.pool_probe_interval,
        )
        await pool.start()
        recovery = Recovery(
            ctx["redis"],
            store,
            worker_id=uuid.uuid4().hex,
            lease_ttl=settings.lease_ttl,
            interval=settings.recovery_interval,
            max_attempts=settings.job_max_attempts,
            describe={
                "max_jobs": settings.max_jobs,
                "comfyui": ", ".join(spec.url for spec in settings.backends),
            },
        )
        await recovery.start()
        ctx["formy"] = WorkerContext(
            settings=settings,
            store=store,
            pool=pool,
            catalogue=catalogue,
            storage=storage_from_settings(settings),
            signals=signals,
            recovery=recovery,
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "formy" in ctx:
            await ctx["formy"].pool.aclose()
            await ctx["formy"].recovery.aclose()
            await ctx["formy"].signals.aclose()
            await ctx["formy"].storage.aclose()
        if "http" in ctx:
            await ctx["http"].close()

    return {
        # attempts are counted by the job itself (transient faults only), so arq never gives up
        # on a job silently; its own timeout is a backstop above every job's time limit
        "functions": [
            func(run_job, name=keys.RUN_JOB, timeout=settings.job_timeout + 60, max_tries=1000),
            # one more try than attempts: a try lost with its worker still ends in webhook_failed
            func(
                deliver_webhook,
                name=keys.DELIVER_WEBHOOK,
                max_tries=settings.webhook_max_attempts + 1,
                timeout=30,
            ),
        ],
        # every 10 minutes on one worker (a cron job's id is unique per run time)
        "cron_jobs": [
            cron(
                clean_up,
                name="clean_up",
                minute=set(range(0, 60, 10)),
                run_at_startup=True,
                timeout=600,
            )
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
        "job_completion_wait": settings.shutdown_grace,
    }


#: the least time between two polls, however often a worker is woken
MIN_POLL_GAP = 0.002


class FormyWorker(Worker):
    """arq's worker, woken when a job is queued, minus its costliest habit.

    arq polls its queue every `poll_delay`, so a job waits half a poll on average before any
    worker looks. Here arq polls back to back and the wait between polls is ours: until a
    wake-up (published with every queued job, see `WorkerSignals`, and set when a job ends
    while the worker was full) or `poll_delay`, whichever comes first.

    Running jobs stay in arq's queue, and every poll arq WATCHes each of them in turn only to
    find it taken (three round trips each, for every job any worker runs). One pipelined
    EXISTS over the candidates' claims skips them first.
    """

    def __init__(self, *args: Any, poll_delay: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, poll_delay=0, **kwargs)
        self.idle_poll = poll_delay
        self.wake = asyncio.Event()
        self.ctx["wake"] = self.wake

    async def _poll_iteration(self) -> None:
        started = self.loop.time()
        self.wake.clear()  # a wake-up from now on may be for a job this poll does not see
        await super()._poll_iteration()
        busy = self.loop.time() - started
        if busy < MIN_POLL_GAP:  # a stream of wake-ups must not turn into a busy loop
            await asyncio.sleep(MIN_POLL_GAP - busy)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.idle_poll):
                await self.wake.wait()

    def _release_sem_dec_counter_on_complete(self) -> None:
        if self.job_counter >= self.max_jobs:
            self.wake.set()  # a slot is free: jobs may be waiting that the full worker left
        super()._release_sem_dec_counter_on_complete()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        ids = [j for j in job_ids if j.decode() not in self.tasks]
        if not ids:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(keys.ARQ_IN_PROGRESS_PREFIX + job_id.decode())
            claimed = await pipe.execute()
        free = [job_id for job_id, taken in zip(ids, claimed, strict=True) if not taken]
        if free:
            await super().start_jobs(free)


async def supervise(worker: Worker) -> None:
    """Run arq's loop, and run it again when Redis goes away instead of exiting.

    arq's poll loop lets connection errors escape (a WATCH or a pipeline is not retried by
    redis-py), which would end the process; running jobs keep going meanwhile, and their own
    Redis calls retry. Returns when the loop ends by itself (burst mode).
    """
    delay = 0.5
    while True:
        try:
            await worker.main()
            return
        except (RedisError, OSError) as exc:
            log.warning("worker_redis_lost", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def run_worker_process(settings: Settings) -> None:
    """`formy-async worker`: an arq worker that rides out Redis restarts; stops on SIGTERM/SIGINT
    (letting running jobs finish within FORMY_SHUTDOWN_GRACE, then handing the rest back)."""
    setup_logging(settings.log_format, settings.log_level)
    worker = FormyWorker(**worker_options(settings, configure_logging=False))
    worker.main_task = worker.loop.create_task(supervise(worker))  # what arq's signals cancel
    try:
        worker.loop.run_until_complete(worker.main_task)
    except asyncio.CancelledError:
        pass
    finally:
        worker.loop.run_until_complete(worker.close())
