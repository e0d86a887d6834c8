"""Crash recovery: running jobs hold short leases; a sweep hands lost jobs back to the queue.

arq claims a job with a key that lives for the longest job timeout (minutes) and is never
refreshed, so a worker killed mid-job would leave its job stuck that long. Here each running
job has a lease of a few seconds that its worker keeps fresh; a job that is not final, has no
lease and no live claim is put back in the queue by whichever worker sweeps first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from . import keys
from .jobstore import JobStore
from .models import Job, JobError, Retrying
from .queue import enqueue_run

log = structlog.get_logger()


class Recovery:
    """Keeps this worker's leases fresh and sweeps for jobs whose worker is gone."""

    def __init__(
        self,
        arq: ArqRedis,
        store: JobStore,
        *,
        worker_id: str,
        lease_ttl: float,
        interval: float,
        max_attempts: int,
        describe: dict[str, Any] | None = None,
    ) -> None:
        self.arq = arq
        self.store = store
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        self.interval = interval
        self.max_attempts = max_attempts
        self.describe = {
            "worker_id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.time(),
            **(describe or {}),
        }
        self.running: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="recovery")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError):
            await self.arq.delete(keys.worker_heartbeat(self.worker_id))

    @contextlib.asynccontextmanager
    async def lease(self, job_id: str) -> AsyncIterator[None]:
        """Hold the job's lease while it runs here (and list it in the heartbeat at once)."""
        self.running.add(job_id)
        async with self.arq.pipeline(transaction=False) as pipe:
            self._lease(pipe, job_id)
            self._beat(pipe)
            await pipe.execute()
        try:
            yield
        finally:
            self.running.discard(job_id)
            with contextlib.suppress(RedisError):
                async with self.arq.pipeline(transaction=False) as pipe:
                    pipe.delete(keys.job_lease(job_id))
                    self._beat(pipe)
                    await pipe.execute()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.interval, self.lease_ttl / 3))
            try:
                await self.refresh()
                lock_ms = int(self.interval * 800)
                if await self.arq.set(keys.RECOVERY_LOCK, self.worker_id, nx=True, px=lock_ms):
                    await self.sweep()
            except RedisError as exc:
                log.warning("recovery_skipped", error=str(exc))

    async def refresh(self) -> None:
        """Renew this worker's leases, and its heartbeat (what `/api/stats` lists)."""
        async with self.arq.pipeline(transaction=False) as pipe:
            self._beat(pipe)
            for job_id in self.running:
                self._lease(pipe, job_id)
            await pipe.execute()

    def _lease(self, pipe: Pipeline, job_id: str) -> None:
        pipe.set(keys.job_lease(job_id), self.worker_id, px=int(self.lease_ttl * 1000))

    def _beat(self, pipe: Pipeline) -> None:
        beat = {**self.describe, "running": sorted(self.running), "seen_at": time.time()}
        pipe.set(
            keys.worker_heartbeat(self.worker_id), json.dumps(beat), px=int(self.lease_ttl * 3000)
        )

    async def sweep(self, limit: int = 1000) -> list[str]:
        """Put every lost job back in the queue; return their ids."""
        recovered = []
        for member in await self.arq.zrange(keys.active_jobs(), 0, limit - 1):
            job_id = member.decode() if isinstance(member, bytes) else str(member)
            raw = await self.arq.get(keys.job(job_id))
            job = Job.model_validate_json(raw) if raw is not None else None
            if job is None or job.is_final:
                await self.arq.zrem(keys.active_jobs(), job_id)
            elif await self._is_lost(job):
                await self._requeue(job)
                recovered.append(job_id)
        return recovered

    async def _is_lost(self, job: Job) -> bool:
        if await self.arq.exists(keys.job_lease(job.id)):
            return False
        if job.status == "processing":
            return True  # its worker stopped renewing the lease: killed, or cut off
        in_queue = await self.arq.zscore(keys.ARQ_QUEUE, job.id) is not None
        claimed = await self.arq.exists(keys.ARQ_IN_PROGRESS_PREFIX + job.id)
        # a pending job that is neither queued nor claimed lost its enqueue (a web process
        # that died between writing the job and queueing it); give it a moment first
        return not in_queue and not claimed and time.time() - job.created_at > self.interval

    async def _requeue(self, job: Job) -> None:
        if await self.arq.zscore(keys.ARQ_QUEUE, job.id) is not None:
            # still queued: only the dead worker's claim keeps others from taking it
            await self.arq.delete(keys.ARQ_IN_PROGRESS_PREFIX + job.id)
        else:
            await self.arq.delete(
                keys.ARQ_IN_PROGRESS_PREFIX + job.id,
                keys.ARQ_JOB_PREFIX + job.id,
                keys.ARQ_RETRY_PREFIX + job.id,
            )
            await enqueue_run(self.arq, job, expires=self.store.ttl)
        if job.status == "processing":
            # a lost worker is not the job's fault, unless it keeps happening (see losses)
            job.status, job.attempt, job.losses = "pending", job.attempt - 1, job.losses + 1
            await self.store.append(
                job,
                Retrying(
                    job_id=job.id,
                    attempt=job.attempt,
                    max_attempts=self.max_attempts,
                    retry_in=0,
                    error=JobError(
                        code="worker_lost",
                        message="the worker running this job stopped; it runs again",
                    ),
                ),
            )
        log.warning("job_recovered", job_id=job.id, status=job.status)
