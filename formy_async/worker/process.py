"""The worker process: arq's worker woken by queued jobs, and the supervisor that keeps it up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..heap import freeze_startup_heap
from ..logs import setup_logging
from ..settings import Settings
from ..store.connections import arq_pool
from ..store.queue import Claimed, RunQueue
from ..workflows import Catalogue
from .run import CLAIMED
from .settings import worker_kwargs

log = structlog.get_logger()

#: the least time between two polls, however often a worker is woken
MIN_POLL_GAP = 0.002
#: the most time after a poll that started jobs before the next: more may wait past what it read
#: (runs other workers hold sit at the queue's head), and no wake-up would say so
BUSY_POLL = 0.05

StartupHook = Callable[[dict[str, Any]], Awaitable[None]]


class FormyWorker(Worker):
    """arq's worker, woken when a job is queued, minus its costliest habit.

    arq polls its queue every `poll_delay`, so a job waits half a poll on average before any
    worker looks. Here arq polls back to back and the wait between polls is ours: until a
    wake-up (published with every queued job, see `WorkerSignals`, set when a job ends while
    the worker was full, and when a retry it deferred falls due) or `poll_delay`, whichever
    comes first; after a poll that started jobs, BUSY_POLL at most. `poll_delay` is only a
    backstop, for what no wake-up announces (another worker's deferred retry): each poll costs
    a few Redis round trips, and polling every 50 ms cost a busy worker about as much CPU as
    its jobs.

    Running jobs stay in arq's queue, and every poll arq WATCHes each of them in turn only to
    find it taken (three round trips each, for every job any worker runs), then claims a free
    one in a fourth. Here one script reads the queue, claims the free runs and skips the rest
    (`RunQueue.poll`): a poll is one round trip, where arq's and an earlier one of ours were
    at least three.

    Runs are taken in the fair line's order (see `store.queue.FAIR_OFFSET`), not arq's: within
    a priority, each user in turn, so that one user's backlog does not hold up another's job.
    """

    def __init__(self, *args: Any, poll_delay: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, poll_delay=0, **kwargs)
        self.idle_poll = poll_delay
        self.wake = asyncio.Event()
        self.ctx["wake"] = self.wake
        #: run id → what the poll that claimed it read, until its run takes it (see `run_job`)
        self.claimed: dict[str, Claimed] = {}
        self.ctx[CLAIMED] = self.claimed
        #: set while the worker waits between two polls (for a wake-up or its poll delay)
        self.idle = asyncio.Event()
        self._runs: RunQueue | None = None
        self._started_some = False  # by the last poll

    async def _poll_iteration(self) -> None:
        started = self.loop.time()
        self.wake.clear()  # a wake-up from now on may be for a job this poll does not see
        self._started_some = False
        await self._poll_once()
        busy = self.loop.time() - started
        if busy < MIN_POLL_GAP:  # a stream of wake-ups must not turn into a busy loop
            await asyncio.sleep(MIN_POLL_GAP - busy)
        self.idle.set()
        try:
            with contextlib.suppress(TimeoutError):
                wait = min(BUSY_POLL, self.idle_poll) if self._started_some else self.idle_poll
                async with asyncio.timeout(wait):
                    await self.wake.wait()
        finally:
            self.idle.clear()

    @property
    def runs(self) -> RunQueue:
        if self._runs is None:
            self._runs = RunQueue(self.pool)
        return self._runs

    async def finish_job(self, job_id: str, finish: bool, *args: Any) -> None:
        await super().finish_job(job_id, finish, *args)
        if finish:
            with contextlib.suppress(RedisError):
                await self.runs.finished(job_id)
            return
        # back in the queue: a retry deferred by its delay, or a run handed back (due now)
        with contextlib.suppress(RedisError):
            due = await self.runs.due_in(job_id)
            if due is not None and due > 0:
                self.loop.call_later(due, self.wake.set)
            elif due is not None:
                await self.runs.wake()  # any worker may take it (this one may be stopping)

    def _release_sem_dec_counter_on_complete(self) -> None:
        if self.job_counter >= self.max_jobs:
            self.wake.set()  # a slot is free: jobs may be waiting that the full worker left
        super()._release_sem_dec_counter_on_complete()

    async def _poll_once(self) -> None:
        """arq's poll iteration, its queue read and claims made in one script (`RunQueue.poll`)."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            remaining = self.max_burst_jobs - self._jobs_started()
            if remaining < 1:
                return
            count = min(remaining, count)
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            await self._start_runs(count)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # what a run raised surfaces here, as in arq's poll
        await self.heart_beat()

    async def _start_runs(self, count: int) -> None:
        wanted = self.max_jobs - self.job_counter
        claim_ms = int(self.in_progress_timeout_s * 1000)
        for claimed in await self.runs.poll(count, wanted, claim_ms=claim_ms):
            job_id = claimed.run_id
            if job_id in self.tasks:  # its claim ran out while it still runs here: renewed
                continue
            if claimed.record is not None:
                self.claimed[job_id] = claimed
            # from here on as arq's own start_jobs, whose claim the script replaces
            await self.sem.acquire()
            self.job_counter += 1
            self._started_some = True
            task = self.loop.create_task(self.run_job(job_id, claimed.score))
            task.add_done_callback(functools.partial(self._run_ended, job_id))
            self.tasks[job_id] = task

    def _run_ended(self, job_id: str, _: asyncio.Task[None]) -> None:
        self.claimed.pop(job_id, None)  # arq did not call the job's function (it expired)
        self._release_sem_dec_counter_on_complete()


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


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    redis: Redis,
    *,
    grace: float | None = None,
    catalogue: Catalogue | None = None,
) -> AsyncIterator[FormyWorker]:
    """A worker in this process's loop, beside its other work (`formy-async run`, and the web
    process with FORMY_WEB_WORKER), on a Redis client of its own (it closes it when it stops),
    sharing the web app's workflow `catalogue` if given (the app keeps it current).

    On exit it takes no more jobs, lets the running ones finish for `grace` seconds (default
    FORMY_SHUTDOWN_GRACE) and hands the rest back, as a worker process does on SIGTERM.
    """
    options = worker_kwargs(settings, configure_logging=False, catalogue=catalogue)
    del options["redis_settings"]
    worker = FormyWorker(**options, redis_pool=arq_pool(redis), handle_signals=False)
    task = asyncio.create_task(supervise(worker), name="arq-worker")
    try:
        yield worker
    finally:
        worker.allow_pick_jobs = False
        wait = settings.shutdown_grace if grace is None else grace
        running = [t for t in worker.tasks.values() if not t.done()]
        if running and wait > 0:
            log.info("worker_stopping", running=len(running), grace=wait)
            await asyncio.wait(running, timeout=wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for job_task in worker.tasks.values():
            job_task.cancel()  # arq puts a cancelled run back in the queue
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()  # close() gathers them again and would re-raise their cancellation
        await worker.close()  # runs on_shutdown and closes the worker's pool


def run_worker_process(settings: Settings) -> None:
    """`formy-async worker`: an arq worker that rides out Redis restarts; stops on SIGTERM/SIGINT
    (letting running jobs finish within FORMY_SHUTDOWN_GRACE, then handing the rest back)."""
    setup_logging(settings.log_format, settings.log_level)
    kwargs = worker_kwargs(settings, configure_logging=False)
    kwargs["on_startup"] = _then_freeze(kwargs["on_startup"])
    worker = FormyWorker(**kwargs)
    worker.main_task = worker.loop.create_task(supervise(worker))  # what arq's signals cancel
    try:
        worker.loop.run_until_complete(worker.main_task)
    except asyncio.CancelledError:
        pass
    finally:
        worker.loop.run_until_complete(worker.close())


def _then_freeze(startup: StartupHook) -> StartupHook:
    """`startup`, then, the first time, what it made left out of later collections: a worker
    process's full collections held its loop, and every job's messages, for 50–170 ms."""

    async def hook(ctx: dict[str, Any]) -> None:
        await startup(ctx)
        if not gc.get_freeze_count():
            freeze_startup_heap()

    return hook
