"""Pending jobs told their place in the waiting line and when they should start.

Once a second, one worker (whichever holds the lock) reads the first jobs of the fair line and
gives each pending one whose place changed (and that has waited a couple of seconds: a job that
starts at once needs no place) a `queued` event: its position (1: next) and an
estimate of when it starts, from how long prompts take on the backends (their measured run
times) and how many the pool runs at once. A job that has started or ended meanwhile is left
alone: the event is written only if no other event came after the record it was computed from.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..settings import BackendSpec
from ..store.jobs import JobStore
from ..store.lifecycle import Lifecycle
from ..store.queue import RunQueue
from ..store.warmth import Warmth

log = structlog.get_logger()

#: how many jobs from the front of the line are told their place (the rest: when they get there)
TOLD = 200
INTERVAL = 1.0
#: a job that starts within this many seconds of its submission is never told a place
PATIENCE = 2.0


class Positions:
    """The loop that keeps pending jobs' places in line up to date."""

    def __init__(
        self,
        redis: Redis,
        store: JobStore,
        queue: RunQueue,
        lifecycle: Lifecycle,
        backends: list[BackendSpec],
    ) -> None:
        self.queue = queue
        self.store = store
        self.lifecycle = lifecycle
        self.backends = backends
        self.warmth = Warmth(redis)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="queue-positions")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                if await self.queue.lock_positions(900):
                    await self.tell()
            except RedisError as exc:
                log.warning("queue_positions_skipped", error=str(exc))

    async def tell(self) -> int:
        """Give each pending job at the front whose place changed its `queued` event; how many."""
        ids = await self.queue.fair_head(TOLD)
        if not ids:
            return 0
        per_prompt = await self._seconds_per_prompt()
        told, position, recent = 0, 0, time.time() - PATIENCE
        for found in await self.store.get_with_seq(ids):
            if found is None:
                continue
            job, seq = found
            if job.status != "pending":
                continue  # running (or queued on ComfyUI), or over
            position += 1
            if job.queue_position == position or job.created_at > recent:
                continue
            eta = None if per_prompt is None else round(position * per_prompt, 1)
            told += await self.lifecycle.queued(job, seq, position, eta)
        return told

    async def _seconds_per_prompt(self) -> float | None:
        """How often the pool starts a prompt: the typical run over how many run at once."""
        runs = [w.run for w in await self.warmth.of([b.url for b in self.backends])]
        measured = [run for run in runs if run is not None]
        if not measured:
            return None
        capacity = sum(b.capacity for b in self.backends)
        return math.fsum(measured) / len(measured) / max(capacity, 1)
