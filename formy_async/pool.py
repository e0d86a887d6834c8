"""The pool of ComfyUI backends: capacity shared through Redis, health probed, jobs routed fairly.

Each backend has a capacity (prompts it may hold at once). A slot is a member of the backend's
sorted set, scored by when its lease ends, so a worker that dies frees its slots by itself. A
job that finds every slot taken waits its turn — in priority order, first-in first-out within a
priority, across every worker process — without queueing anything on a GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import keys
from .comfy import ComfyClient
from .errors import ComfyError
from .models import Job
from .queue import OFFSET_MS
from .settings import BackendSpec

log = structlog.get_logger()

# Grants a slot to the job if it is among the first `free` waiting jobs, on the first backend
# (in the caller's order of preference) that is healthy and has room. Waiting jobs whose
# worker stopped asking (their `wait` key expired) are dropped from the line.
#   KEYS: waiting line, then per backend its slots, then per backend its `down` marker
#   ARGV: job id, line score, now (ms), lease end (ms), wait-key prefix, wait-key ttl (ms),
#         backend count, then per backend its capacity
_ACQUIRE = """
local job, n = ARGV[1], tonumber(ARGV[7])
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], job)
redis.call('SET', ARGV[5] .. job, '1', 'PX', ARGV[6])
local free = 0
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[1 + i], '-inf', ARGV[3])
  if redis.call('EXISTS', KEYS[1 + n + i]) == 0 then
    local room = tonumber(ARGV[7 + i]) - redis.call('ZCARD', KEYS[1 + i])
    if room > 0 then free = free + room end
  end
end
if free == 0 then return 0 end
for _, other in ipairs(redis.call('ZRANGE', KEYS[1], 0, free - 1)) do
  if redis.call('EXISTS', ARGV[5] .. other) == 0 then redis.call('ZREM', KEYS[1], other) end
end
local rank = redis.call('ZRANK', KEYS[1], job)
if rank == false or rank >= free then return 0 end
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + n + i]) == 0
     and redis.call('ZCARD', KEYS[1 + i]) < tonumber(ARGV[7 + i]) then
    redis.call('ZADD', KEYS[1 + i], ARGV[4], job)
    redis.call('ZREM', KEYS[1], job)
    redis.call('DEL', ARGV[5] .. job)
    return i
  end
end
return 0
"""


class BackendPool:
    """The backends one worker process uses, their shared slots and their health."""

    def __init__(
        self,
        redis: Redis,
        specs: list[BackendSpec],
        session: aiohttp.ClientSession,
        *,
        lease: float = 15,
        probe_interval: float = 5,
    ) -> None:
        self.redis = redis
        self.specs = specs
        self.clients = {spec.url: ComfyClient(spec.url, session) for spec in specs}
        self.session = session
        self.lease = lease
        self.probe_interval = probe_interval
        self.held: dict[str, str] = {}  # job id → backend url
        # set (and replaced) whenever this process frees a slot, so its waiters try at once;
        # releases by other processes are found by polling
        self._released = asyncio.Event()
        self._acquire = redis.register_script(_ACQUIRE)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Probe every backend once, say plainly if none answers, then keep them checked."""
        with contextlib.suppress(RedisError):
            await asyncio.gather(*(self._probe(spec) for spec in self.specs))
            down = [s.url for s in self.specs if await self.redis.exists(keys.backend_down(s.url))]
            if len(down) == len(self.specs):
                log.error(
                    "no_comfyui_backend_answers",
                    backends=down,
                    note="jobs wait in the queue; retrying with backoff until one answers",
                )
        self._task = asyncio.create_task(self._loop(), name="backend-pool")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- slots --------------------------------------------------------------------------------

    async def preference(self, job: Job) -> list[BackendSpec]:
        """Backends labelled with the job's model first, then the rest; least busy first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for spec in self.specs:
                pipe.zcard(keys.backend_slots(spec.url))
            used = await pipe.execute()
        load = {s.url: u / s.capacity for s, u in zip(self.specs, used, strict=True)}
        model = str(job.params.get("model") or "")
        return sorted(self.specs, key=lambda s: (model not in s.labels, load[s.url]))

    async def try_acquire(self, job: Job) -> BackendSpec | None:
        specs = await self.preference(job)
        now_ms = int(time.time() * 1000)
        order = int(job.created_at * 1000) + OFFSET_MS.get(job.priority, 0)
        granted = int(
            await self._acquire(
                keys=[
                    keys.POOL_WAITING,
                    *(keys.backend_slots(s.url) for s in specs),
                    *(keys.backend_down(s.url) for s in specs),
                ],
                args=[
                    job.id,
                    order,
                    now_ms,
                    now_ms + int(self.lease * 1000),
                    keys.POOL_WAIT_PREFIX,
                    int(self.lease * 1000),
                    len(specs),
                    *(s.capacity for s in specs),
                ],
            )
        )
        if not granted:
            return None
        spec = specs[granted - 1]
        self.held[job.id] = spec.url
        return spec

    @contextlib.asynccontextmanager
    async def slot(self, job: Job, give_up: asyncio.Event) -> AsyncIterator[BackendSpec | None]:
        """Wait for a slot (None if `give_up` is set first); hold it while the block runs."""
        spec = None
        delay = 0.02
        while spec is None and not give_up.is_set():
            spec = await self.try_acquire(job)
            if spec is None:
                await self._wait_for_release(give_up, delay)
                delay = min(delay * 1.5, 0.2)
        try:
            yield spec
        finally:
            if spec is not None:
                self.held.pop(job.id, None)
                with contextlib.suppress(RedisError):
                    await self.redis.zrem(keys.backend_slots(spec.url), job.id)
                self._released.set()
                self._released = asyncio.Event()
            else:
                with contextlib.suppress(RedisError):
                    await self.redis.zrem(keys.POOL_WAITING, job.id)

    async def _wait_for_release(self, give_up: asyncio.Event, at_most: float) -> None:
        waits = {
            asyncio.ensure_future(give_up.wait()),
            asyncio.ensure_future(self._released.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    # --- health -------------------------------------------------------------------------------

    async def mark_down(self, url: str, error: str) -> None:
        """Take a backend out of the rotation until a probe finds it answering again."""
        failures = await self.redis.incr(keys.backend_failures(url))
        backoff_ms = int(min(60.0, 2.0 ** min(failures, 6)) * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.backend_down(url), "1", px=backoff_ms)
            pipe.set(keys.backend_error(url), error[:500], ex=86400)
            await pipe.execute()
        log.warning("backend_down", backend=url, error=error, retry_in_ms=backoff_ms)

    async def _probe(self, spec: BackendSpec) -> None:
        try:
            await asyncio.wait_for(self.clients[spec.url].system_stats(), 3)
        except (ComfyError, TimeoutError) as exc:
            await self.mark_down(spec.url, str(exc) or "no answer to /system_stats")
            return
        if await self.redis.exists(keys.backend_failures(spec.url)):
            await self.redis.delete(keys.backend_down(spec.url), keys.backend_failures(spec.url))
            log.info("backend_up", backend=spec.url)

    async def _loop(self) -> None:
        next_probe = 0.0
        while True:
            await asyncio.sleep(min(self.lease / 3, self.probe_interval))
            try:
                await self._renew()
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.probe_interval
                    await asyncio.gather(*(self._probe(spec) for spec in self.specs))
            except RedisError as exc:
                log.warning("backend_pool_skipped", error=str(exc))

    async def _renew(self) -> None:
        if not self.held:
            return
        until = int((time.time() + self.lease) * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, url in self.held.items():
                pipe.zadd(keys.backend_slots(url), {job_id: until}, xx=True)
            await pipe.execute()
