"""What the service is doing, read from Redis for `/api/stats`, `/api/backends` and `/metrics`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from ..settings import BackendSpec
from . import keys
from .connections import text
from .jobs import JobStore
from .leases import Heartbeat, heartbeats
from .queue import RunQueue, priority_ranges
from .slots import BackendState, Slots
from .warmth import Warmth


@dataclass(frozen=True)
class Snapshot:
    """Everything the shared metrics show, read from Redis in one go."""

    fields: dict[str, float]
    queue_depth: dict[str, int]
    jobs: dict[str, int]
    workers: int
    busy_slots: dict[str, int]
    capacity: dict[str, int]
    backends_up: dict[str, bool] = field(default_factory=dict)


class ServiceStatus:
    """Reads the jobs, workers and backends of the whole service (every process's share)."""

    def __init__(self, redis: Redis, backends: Sequence[BackendSpec]) -> None:
        self.redis = redis
        self.backends = list(backends)
        self.jobs = JobStore(redis, ttl=1)  # read only: the ttl is never used
        self.slots = Slots(redis, lease=1)
        self.warmth = Warmth(redis)
        self.queue = RunQueue(redis)

    async def counters(self) -> dict[str, float]:
        """The shared job counters and histogram buckets (see counters)."""
        raw: dict[bytes | str, bytes | str] = await self.redis.hgetall(keys.METRICS)  # type: ignore[misc]
        return {text(k): float(v) for k, v in raw.items()}

    async def workers(self) -> list[Heartbeat]:
        return await heartbeats(self.redis)

    async def backend(self, spec: BackendSpec) -> BackendState:
        return await self.slots.state(spec.url)

    async def snapshot(
        self, priorities: Mapping[str, tuple[float, float]] | None = None
    ) -> Snapshot:
        """The shared counters and the live values (O(unfinished jobs + workers))."""
        busy, capacity = {}, {}
        for spec in self.backends:
            busy[spec.label] = len(await self.slots.running(spec.url))
            capacity[spec.label] = spec.capacity
        return Snapshot(
            fields=await self.counters(),
            queue_depth=await self.queue.depth(dict(priorities or priority_ranges())),
            jobs=await self.jobs.unfinished_counts(),
            workers=len(await self.workers()),
            busy_slots=busy,
            capacity=capacity,
        )

    async def stats(self) -> dict[str, Any]:
        """Jobs by status (and finished in the last hour and day), workers, running per backend."""
        now = time.time()
        finished = {
            window: await self.jobs.finished_since(now - seconds)
            for window, seconds in (("last_hour", 3600), ("last_day", 86400))
        }
        return {
            "jobs": {**await self.jobs.unfinished_counts(), "finished": finished},
            "workers": [beat.model_dump() for beat in await self.workers()],
            "backends": {s.label: await self.slots.running(s.url) for s in self.backends},
        }
