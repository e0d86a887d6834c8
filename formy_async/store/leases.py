"""Running jobs' leases and workers' heartbeats: who is alive, and which jobs it holds."""

from __future__ import annotations

import time
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys


class Heartbeat(BaseModel):
    """What a live worker says of itself (refreshed every few seconds, with a short TTL)."""

    worker_id: str
    host: str = ""
    pid: int = 0
    started_at: float = 0.0
    max_jobs: int = 0
    comfyui: str = "unknown"
    running: list[str] = []
    seen_at: float = 0.0


class Leases:
    """One worker's leases on the jobs it runs, and its heartbeat.

    A lease lives `ttl` seconds unless renewed; the heartbeat three times as long. A worker
    that dies stops renewing both, which is how recovery finds its jobs.
    """

    def __init__(self, redis: Redis, beat: Heartbeat, *, ttl: float) -> None:
        self.redis = redis
        self.beat = beat
        self.ttl_ms = int(ttl * 1000)

    async def hold(self, job_id: str, running: Iterable[str]) -> None:
        """Take the job's lease (and list it in the heartbeat at once)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            self._lease(pipe, job_id)
            self._heartbeat(pipe, running)
            await pipe.execute()

    async def release(self, job_id: str, running: Iterable[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.job_lease(job_id))
            self._heartbeat(pipe, running)
            await pipe.execute()

    async def renew(self, running: Iterable[str]) -> None:
        """Renew the leases of the jobs running here, and the heartbeat."""
        running = sorted(running)
        async with self.redis.pipeline(transaction=False) as pipe:
            self._heartbeat(pipe, running)
            for job_id in running:
                self._lease(pipe, job_id)
            await pipe.execute()

    async def stop(self) -> None:
        """This worker is going away: its heartbeat goes with it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.worker_heartbeat(self.beat.worker_id))
            pipe.zrem(keys.WORKERS, self.beat.worker_id)
            await pipe.execute()

    async def lock_sweep(self, seconds: float) -> bool:
        """True for the one worker that may sweep for lost jobs for the next `seconds`."""
        ms = int(seconds * 1000)
        return bool(await self.redis.set(keys.RECOVERY_LOCK, self.beat.worker_id, nx=True, px=ms))

    async def is_held(self, job_id: str) -> bool:
        """Whether some worker holds the job's lease."""
        return bool(await self.redis.exists(keys.job_lease(job_id)))

    def _lease(self, pipe: Pipeline, job_id: str) -> None:
        pipe.set(keys.job_lease(job_id), self.beat.worker_id, px=self.ttl_ms)

    def _heartbeat(self, pipe: Pipeline, running: Iterable[str]) -> None:
        now = time.time()
        beat = self.beat.model_copy(update={"running": sorted(running), "seen_at": now})
        pipe.set(keys.worker_heartbeat(beat.worker_id), beat.model_dump_json(), px=self.ttl_ms * 3)
        pipe.zadd(keys.WORKERS, {beat.worker_id: now})


async def heartbeats(redis: Redis) -> list[Heartbeat]:
    """The live workers' heartbeats, by worker id; forgets the workers whose beat ran out."""
    members = await redis.zrange(keys.WORKERS, 0, -1)
    ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    found, gone = [], []
    beats = await redis.mget([keys.worker_heartbeat(i) for i in ids]) if ids else []
    for worker_id, raw in zip(ids, beats, strict=True):
        if raw is None:
            gone.append(worker_id)
            continue
        try:
            found.append(Heartbeat.model_validate_json(raw))
        except ValidationError:
            gone.append(worker_id)
    if gone:
        await redis.zrem(keys.WORKERS, *gone)
    return sorted(found, key=lambda beat: beat.worker_id)
