"""The ComfyUI backends' shared state: their slots, the line of jobs waiting for one, their health.

A slot is a member of the backend's sorted set, scored by when its lease ends, so a worker that
dies frees its slots by itself. A job that finds every slot taken waits its turn in one line
(scored by priority, then age) shared by every worker process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from ..settings import BackendSpec
from . import keys
from .scripts import Script
from .warmth import RAN_LUA, models_field
from .warmth import TTL as WARM_TTL

# Grants a slot to the job if it is among the first `free` waiting jobs, on the first backend
# (in the caller's order of preference) that is healthy and has room; answers its position in
# that order (1-based), or 0. Waiting jobs whose worker stopped asking (their `wait` key
# expired) are dropped from the line. A job granted a slot moves the fair line's virtual time
# on to its start tag (`fair_start`, if it has one), and, if it names `models`, the backend
# is recorded as holding them from now on (see store.warmth): the next job for those models
# must find them there.
#   extra keys: per backend its slots, then per backend its `down` marker, then its warm record
#   extra args: per backend its capacity
_ACQUIRE = (
    RAN_LUA
    + """
local n = tonumber(backend_count)
redis.call('ZADD', line_key, 'NX', line_score, job_id)
redis.call('SET', wait_prefix .. job_id, '1', 'PX', wait_ttl_ms)
local free = 0
for i = 1, n do
  local slots, down = KEYS[first_extra_key + i - 1], KEYS[first_extra_key + n + i - 1]
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now_ms)
  if redis.call('EXISTS', down) == 0 then
    local room = tonumber(ARGV[first_extra_arg + i - 1]) - redis.call('ZCARD', slots)
    if room > 0 then free = free + room end
  end
end
if free == 0 then return 0 end
for _, other in ipairs(redis.call('ZRANGE', line_key, 0, free - 1)) do
  if redis.call('EXISTS', wait_prefix .. other) == 0 then redis.call('ZREM', line_key, other) end
end
local rank = redis.call('ZRANK', line_key, job_id)
if rank == false or rank >= free then return 0 end
for i = 1, n do
  local slots, down = KEYS[first_extra_key + i - 1], KEYS[first_extra_key + n + i - 1]
  if redis.call('EXISTS', down) == 0
     and redis.call('ZCARD', slots) < tonumber(ARGV[first_extra_arg + i - 1]) then
    redis.call('ZADD', slots, lease_end_ms, job_id)
    redis.call('ZREM', line_key, job_id)
    redis.call('DEL', wait_prefix .. job_id)
    if models ~= '' then
      ran(KEYS[first_extra_key + 2 * n + i - 1], models, '', now, warm_ttl)
    end
    local clock = tonumber(redis.call('GET', fair_clock_key) or '0')
    if fair_start ~= '' and clock < tonumber(fair_start) then
      redis.call('SET', fair_clock_key, fair_start)
    end
    return i
  end
end
return 0
"""
)


@dataclass(frozen=True)
class BackendState:
    """What the pool shares about one backend."""

    healthy: bool
    running: list[str]
    last_error: str | None


class Slots:
    """The backends' slots and health, as every worker process sees them."""

    def __init__(self, redis: Redis, *, lease: float) -> None:
        self.redis = redis
        self.lease_ms = int(lease * 1000)
        self._acquire = Script(
            redis,
            ("line_key", "fair_clock_key"),
            (
                "job_id",
                "line_score",
                "now_ms",
                "lease_end_ms",
                "wait_prefix",
                "wait_ttl_ms",
                "backend_count",
                "fair_start",
                "models",
                "now",
                "warm_ttl",
            ),
            _ACQUIRE,
        )

    async def load(self, specs: Sequence[BackendSpec]) -> list[tuple[int, bool]]:
        """Slots taken on each backend (leases that ran out included: cheap, for ordering), and
        whether it is out of the rotation."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for spec in specs:
                pipe.zcard(keys.backend_slots(spec.url))
                pipe.exists(keys.backend_down(spec.url))
            answers = await pipe.execute()
        return [(int(answers[i]), bool(answers[i + 1])) for i in range(0, len(answers), 2)]

    async def acquire(
        self,
        job_id: str,
        order: float,
        specs: Sequence[BackendSpec],
        fair_start: float | None = None,
        models: frozenset[str] = frozenset(),
    ) -> int | None:
        """Join the line (at `order`) and take a slot on the first of `specs` that has one for
        this job now; its index in `specs`, or None (the job stays in line). The backend granted
        holds the job's `models` from then on, as `Warmth.ran` records."""
        now = time.time()
        now_ms = int(now * 1000)
        granted = int(
            await self._acquire(
                {"line_key": keys.POOL_WAITING, "fair_clock_key": keys.FAIR_CLOCK},
                {
                    "job_id": job_id,
                    "line_score": order,
                    "now_ms": now_ms,
                    "lease_end_ms": now_ms + self.lease_ms,
                    "wait_prefix": keys.POOL_WAIT_PREFIX,
                    "wait_ttl_ms": self.lease_ms,
                    "backend_count": len(specs),
                    "fair_start": "" if fair_start is None else repr(fair_start),
                    "models": models_field(models) if models else "",
                    "now": repr(now),
                    "warm_ttl": WARM_TTL,
                },
                extra_keys=[
                    *(keys.backend_slots(s.url) for s in specs),
                    *(keys.backend_down(s.url) for s in specs),
                    *(keys.backend_warm(s.url) for s in specs),
                ],
                extra_args=[s.slots for s in specs],
            )
        )
        return granted - 1 if granted else None

    async def release(self, url: str, job_id: str) -> None:
        """Free the job's slot, and tell the waiting jobs of every process."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.backend_slots(url), job_id)
            pipe.publish(keys.SLOTS_CHANNEL, url)
            await pipe.execute()

    async def leave_line(self, job_id: str) -> None:
        await self.redis.zrem(keys.POOL_WAITING, job_id)

    async def step_aside(self, job_id: str) -> None:
        """Leave the line for a while (it comes back at the same place: its score is its
        priority and age); the jobs behind it are told when it held up any."""
        if await self.redis.zrem(keys.POOL_WAITING, job_id):
            await self.redis.publish(keys.SLOTS_CHANNEL, "")

    async def renew(self, held: Mapping[str, str]) -> None:
        """Extend the leases of the slots held (job id → backend url)."""
        if not held:
            return
        until = int(time.time() * 1000) + self.lease_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, url in held.items():
                pipe.zadd(keys.backend_slots(url), {job_id: until}, xx=True)
            await pipe.execute()

    async def mark_down(self, url: str, error: str) -> int:
        """Take a backend out of the rotation; the milliseconds until it may be probed again."""
        failures = await self.redis.incr(keys.backend_failures(url))
        backoff_ms = int(min(60.0, 2.0 ** min(failures, 6)) * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.backend_down(url), "1", px=backoff_ms)
            pipe.set(keys.backend_error(url), error[:500], ex=86400)
            await pipe.execute()
        return backoff_ms

    async def mark_up(self, url: str) -> bool:
        """The backend answers: back in the rotation. True when it had been marked down."""
        if not await self.redis.exists(keys.backend_failures(url)):
            return False
        await self.redis.delete(keys.backend_down(url), keys.backend_failures(url))
        await self.redis.publish(keys.SLOTS_CHANNEL, url)
        return True

    async def is_down(self, url: str) -> bool:
        return bool(await self.redis.exists(keys.backend_down(url)))

    async def running(self, url: str) -> list[str]:
        """Jobs holding a slot on the backend now (leases not yet run out)."""
        members = await self.redis.zrangebyscore(
            keys.backend_slots(url), time.time() * 1000, "+inf"
        )
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def state(self, url: str) -> BackendState:
        error = await self.redis.get(keys.backend_error(url))
        return BackendState(
            healthy=not await self.is_down(url),
            running=await self.running(url),
            last_error=error.decode() if isinstance(error, bytes) else error,
        )
