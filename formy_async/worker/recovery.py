"""Crash recovery: running jobs hold short leases; a sweep hands lost jobs back to the queue.

arq claims a job with a key that lives for the longest job timeout (minutes) and is never
refreshed, so a worker killed mid-job would leave its job stuck that long. Here each running
job has a lease of a few seconds that its worker keeps fresh; a job that is not final, has no
lease and no live claim is put back in the queue by whichever worker sweeps first.

The prompt of a lost job lives on in ComfyUI, which runs it to its end whoever listens: the
job's next attempt takes it over (see `resumable`) rather than run the graph a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import structlog
from redis.exceptions import RedisError

from ..comfy.client import ComfyClient
from ..comfy.messages import HistoryEntry
from ..errors import ComfyError, WorkerLost
from ..models import Job
from ..store.jobs import JobStore
from ..store.leases import Heartbeat, Leases
from ..store.lifecycle import Lifecycle
from ..store.queue import RunQueue

log = structlog.get_logger()

#: how long the next attempt waits for the backend to say whether it still has the prompt of
#: an attempt whose worker was lost (no answer: it runs anew)
RESUME_LOOKUP_TIMEOUT = 5.0


class Recovery:
    """Keeps this worker's leases fresh and sweeps for jobs whose worker is gone."""

    def __init__(
        self,
        leases: Leases,
        store: JobStore,
        queue: RunQueue,
        *,
        lease_ttl: float,
        interval: float,
        max_attempts: int,
    ) -> None:
        self.leases = leases
        self.store = store
        self.queue = queue
        self.lifecycle = Lifecycle(store)
        self.lease_ttl = lease_ttl
        self.interval = interval
        self.max_attempts = max_attempts
        self.running: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def worker_id(self) -> str:
        return self.leases.beat.worker_id

    @property
    def heartbeat(self) -> Heartbeat:
        return self.leases.beat

    async def start(self) -> None:
        await self.leases.renew(self.running)
        self._task = asyncio.create_task(self._loop(), name="recovery")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError):
            await self.leases.stop()

    @contextlib.asynccontextmanager
    async def lease(self, job_id: str) -> AsyncIterator[asyncio.Future[None]]:
        """Hold the job's lease while it runs here (and list it in the heartbeat at once).

        The lease is taken while the block goes on (a job waits for its slot meanwhile): the
        future it yields is done once Redis holds it, and the job must await it before it is
        recorded as running, since a running job without a lease is one the sweep hands back.
        """
        self.running.add(job_id)
        holding = asyncio.ensure_future(self.leases.hold(job_id, self.running))
        try:
            yield holding
        finally:
            self.running.discard(job_id)
            await asyncio.gather(holding, return_exceptions=True)  # awaited, or of no use now
            with contextlib.suppress(RedisError):
                await self.leases.release(job_id, self.running)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.interval, self.lease_ttl / 3))
            try:
                await self.refresh()
                if await self.leases.lock_sweep(self.interval * 0.8):
                    await self.sweep()
            except RedisError as exc:
                log.warning("recovery_skipped", error=str(exc))

    async def refresh(self) -> None:
        """Renew this worker's leases, and its heartbeat (what `/api/stats` lists)."""
        await self.leases.renew(self.running)

    async def sweep(self, limit: int = 1000) -> list[str]:
        """Put every lost job back in the queue; return their ids."""
        recovered = []
        async for job in self.store.unfinished(limit):
            if await self._is_lost(job):
                await self._requeue(job)
                recovered.append(job.id)
        return recovered

    async def _is_lost(self, job: Job) -> bool:
        if await self.leases.is_held(job.id):
            return False
        if job.status == "processing":
            return True  # its worker stopped renewing the lease: killed, or cut off
        in_queue = await self.queue.is_queued(job.id)
        claimed = await self.queue.is_claimed(job.id)
        # a pending job that is neither queued nor claimed lost its enqueue (a web process
        # that died between writing the job and queueing it); give it a moment first
        return not in_queue and not claimed and time.time() - job.created_at > self.interval

    async def _requeue(self, job: Job) -> None:
        await self.queue.hand_back(job, expires=self.store.ttl)
        if job.status == "processing":
            await self.lifecycle.hand_back(
                job,
                WorkerLost("the worker running this job stopped; it runs again"),
                max_attempts=self.max_attempts,
                lost=True,
            )
        log.warning("job_recovered", job_id=job.id, status=job.status)


async def resumable(clients: Mapping[str, ComfyClient], job: Job) -> str | None:
    """The backend (of `clients`, by url) still holding the prompt of the job's last attempt,
    queued, running or finished, when that attempt did not stop it itself (its worker was lost,
    say): the next attempt takes it over. None: the job runs anew (the backend restarted, is
    down, or is no longer one of ours)."""
    url, prompt_id = job.backend, job.prompt_id
    if url is None or url not in clients or not prompt_id or not job.client_id:
        return None
    try:
        async with asyncio.timeout(RESUME_LOOKUP_TIMEOUT):
            known = await clients[url].knows(prompt_id)
    except (ComfyError, TimeoutError) as exc:
        log.info("job_prompt_lookup_failed", job_id=job.id, prompt_id=prompt_id, error=str(exc))
        return None
    return url if known else None


def succeeded(entry: HistoryEntry | None) -> bool:
    """Whether a finished prompt's history says it succeeded (what `ComfyClient.result` takes)."""
    if entry is None:
        return False
    last = entry.status.last("execution_success", "execution_error", "execution_interrupted")
    return last is None or last[0] == "execution_success"
