"""arq's queue as the service uses it: runs in priority order, claims, hand-backs, webhooks.

Higher priorities run first, first-in first-out within one. A run is queued with arq's own keys
and payload, but in one Lua step instead of arq's WATCH, EXISTS and MULTI/EXEC, and idle
workers are woken at once (they would otherwise see it at their next poll).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from ..models import Job
from . import keys
from .connections import arq_pool, job_serializer, text
from .scripts import Script

#: the arq functions a worker registers: the run of a job, and the delivery of its webhook
RUN_JOB = keys.RUN_JOB
DELIVER_WEBHOOK = keys.DELIVER_WEBHOOK

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

DAY_MS = 24 * 3600 * 1000
#: arq runs the job with the lowest score first, so a priority is an offset into the past: a
#: high job queued now is ahead of every normal job queued in the last day, and so on
OFFSET_MS: dict[str, int] = {"high": -2 * DAY_MS, "normal": -DAY_MS, "low": 0}

#: fair share within a priority: a run's place in the fair line is its priority's offset plus
#: its user's start tag, in units of one job of weight 1 (a priority always comes first)
FAIR_OFFSET: dict[str, float] = {"high": -2e12, "normal": -1e12, "low": 0.0}

#: the key and argument names `ENQUEUE_LUA` reads, for scripts that include it
ENQUEUE_KEYS = (
    "run_key",
    "run_result_key",
    "queue_key",
    "fair_line_key",
    "fair_finish_key",
    "fair_clock_key",
)
ENQUEUE_ARGS = (
    "run_payload",
    "run_expires_ms",
    "run_score",
    "run_id",
    "wake_channel",
    "fair_user",
    "fair_cost",
    "fair_offset",
)

#: arq's enqueue of one run, refused (as arq refuses it) while arq still holds the job or its
#: result; sets the Lua variable `queued` to 1, or 0 when refused or when there is no run
#: (`run_id` empty). A run new to the fair line gets its user's next start tag there (one that
#: is queued again keeps its place).
ENQUEUE_LUA = """
local queued = 0
if run_id ~= '' and redis.call('EXISTS', run_key, run_result_key) == 0 then
  redis.call('SET', run_key, run_payload, 'PX', run_expires_ms)
  redis.call('ZADD', queue_key, run_score, run_id)
  if redis.call('ZSCORE', fair_line_key, run_id) == false then
    local clock = tonumber(redis.call('GET', fair_clock_key) or '0')
    local finish = tonumber(redis.call('HGET', fair_finish_key, fair_user) or '0')
    local start = math.max(clock, finish)
    redis.call('HSET', fair_finish_key, fair_user, tostring(start + tonumber(fair_cost)))
    redis.call('ZADD', fair_line_key, tonumber(fair_offset) + start, run_id)
  end
  redis.call('PUBLISH', wake_channel, run_id)
  queued = 1
end
"""


@dataclass(frozen=True)
class QueueEntry:
    """One run of a job as arq stores it: what `ENQUEUE_LUA` takes, by name."""

    job_id: str = ""
    payload: bytes = b""
    expires_ms: int = 0
    score: int = 0
    user: str = ""
    cost: float = 1.0  # 1 / the user's weight
    priority: str = "normal"

    @property
    def keys(self) -> dict[str, str]:
        return {
            "run_key": keys.ARQ_JOB_PREFIX + self.job_id,
            "run_result_key": result_key_prefix + self.job_id,
            "queue_key": keys.ARQ_QUEUE,
            "fair_line_key": keys.FAIR_LINE,
            "fair_finish_key": keys.FAIR_FINISH,
            "fair_clock_key": keys.FAIR_CLOCK,
        }

    @property
    def args(self) -> dict[str, Any]:
        return {
            "run_payload": self.payload,
            "run_expires_ms": self.expires_ms,
            "run_score": self.score,
            "run_id": self.job_id,
            "wake_channel": keys.WAKE_CHANNEL,
            "fair_user": self.user,
            "fair_cost": repr(self.cost),
            "fair_offset": repr(FAIR_OFFSET.get(self.priority, 0.0)),
        }


#: no run to queue (for scripts that include `ENQUEUE_LUA`)
NO_RUN = QueueEntry()


def queue_entry(job: Job, *, expires: int, weight: float = 1.0) -> QueueEntry:
    """The job's run, scored by its priority, its arq key living `expires` seconds; in the fair
    line, a job of a user of `weight` 2 counts half."""
    now_ms = int(time.time() * 1000)
    payload = serialize_job(keys.RUN_JOB, (job.id,), {}, None, now_ms, serializer=job_serializer)
    return QueueEntry(
        job_id=job.id,
        payload=payload,
        expires_ms=expires * 1000,
        score=now_ms + OFFSET_MS.get(job.priority, 0),
        user=job.user,
        cost=1.0 / weight,
        priority=job.priority,
    )


def priority_ranges(now_ms: float | None = None) -> dict[str, tuple[float, float]]:
    """The score range each priority's waiting jobs fall in (for jobs waiting under 12 hours)."""
    now = now_ms if now_ms is not None else time.time() * 1000
    half = DAY_MS / 2
    return {
        "high": (float("-inf"), now - DAY_MS - half),
        "normal": (now - DAY_MS - half, now - half),
        "low": (now - half, float("inf")),
    }


#: how much the typical job's GPU-seconds move towards each finished job's
TYPICAL_WEIGHT = 0.1

#: charge a user for a finished job's real GPU-seconds: it was queued as one typical job, so
#: the user's finish tag moves by (its seconds / a typical job's − 1) / the user's weight; a
#: long job pushes the user's next jobs back, a short one brings them forward (never before
#: the line's clock: a new tag starts at the later of the two). Then the typical job moves.
_CHARGE = """
local typical = tonumber(redis.call('GET', typical_key) or seconds)
local extra = (tonumber(seconds) / math.max(typical, 0.001) - 1) / tonumber(weight)
if redis.call('HEXISTS', finish_key, user) == 1 then
  redis.call('HINCRBYFLOAT', finish_key, user, tostring(extra))
end
local moved = typical + tonumber(moves) * (tonumber(seconds) - typical)
redis.call('SET', typical_key, tostring(moved))
return tostring(extra)
"""


#: a worker's poll in one round trip: the runs it may take are read (the fair line's head, then
#: what else arq's queue holds that is due: webhook deliveries) and claimed in that order, as
#: arq claims one (its in-progress key, `PSETEX`), skipping those another worker claims or that
#: are not due, until it holds `want`; runs arq no longer queues leave the fair line on the way.
#: Returns four items per claimed run: its id, its score, and what the worker reads next, its
#: job record and its place in the fair line (each nil when there is none: a webhook delivery).
#: arq's own poll reads its queue in one round trip and claims each run in four more (WATCH,
#: EXISTS, ZSCORE, MULTI/EXEC), and every run a worker already holds costs those too.
_POLL = """
local out, seen = {}, {}
local wanted = tonumber(want)
local function consider(run_id)
  if seen[run_id] then return end
  seen[run_id] = true
  local score = redis.call('ZSCORE', queue_key, run_id)
  if not score then
    redis.call('ZREM', line_key, run_id)
  elseif #out < 4 * wanted and tonumber(score) <= tonumber(now_ms) then
    local claim = claim_prefix .. run_id
    if redis.call('EXISTS', claim) == 0 then
      redis.call('PSETEX', claim, claim_ms, '1')
      out[#out + 1] = run_id
      out[#out + 1] = score
      out[#out + 1] = redis.call('GET', job_prefix .. run_id)
      out[#out + 1] = redis.call('ZSCORE', line_key, run_id)
    end
  end
end
for _, run_id in ipairs(redis.call('ZRANGE', line_key, 0, tonumber(count) - 1)) do
  consider(run_id)
end
if #out < 4 * wanted then
  local due = redis.call('ZRANGEBYSCORE', queue_key, '-inf', now_ms, 'LIMIT', 0, count)
  for _, run_id in ipairs(due) do consider(run_id) end
end
return out
"""


@dataclass(frozen=True)
class Claimed:
    """A run a poll claimed, with what its worker needs first: its job record as stored at the
    claim and its place in the fair line (None when there is none: a webhook delivery)."""

    run_id: str
    score: int
    record: bytes | None
    fair: float | None


class RunQueue:
    """The runs of jobs in arq's queue, and the webhook deliveries queued after them."""

    def __init__(self, redis: Redis) -> None:
        self.arq: ArqRedis = redis if isinstance(redis, ArqRedis) else arq_pool(redis)
        self._enqueue = Script(self.arq, ENQUEUE_KEYS, ENQUEUE_ARGS, ENQUEUE_LUA + "return queued")
        self._charge = Script(
            self.arq, ("finish_key", "typical_key"), ("user", "seconds", "weight", "moves"), _CHARGE
        )
        poll_args = ("count", "want", "now_ms", "claim_prefix", "claim_ms", "job_prefix")
        self._poll = Script(self.arq, ("queue_key", "line_key"), poll_args, _POLL)

    async def charge(self, user: str, gpu_seconds: float, *, weight: float = 1.0) -> float:
        """Fair share by GPU-seconds: move the user's place for a job that ran `gpu_seconds`
        (it was queued as one typical job); the move, in typical jobs."""
        moved = await self._charge(
            {"finish_key": keys.FAIR_FINISH, "typical_key": keys.FAIR_TYPICAL},
            {
                "user": user,
                "seconds": repr(max(gpu_seconds, 0.0)),
                "weight": repr(weight),
                "moves": repr(TYPICAL_WEIGHT),
            },
        )
        return float(text(moved))

    async def enqueue(self, job: Job, *, expires: int) -> bool:
        """Queue the job's run under its priority; False when arq already holds that job id."""
        entry = queue_entry(job, expires=expires)
        return bool(await self._enqueue(entry.keys, entry.args))

    async def fair_place(self, job_id: str) -> float | None:
        """The run's score in the fair line (None for a run queued before it existed)."""
        score = await self.arq.zscore(keys.FAIR_LINE, job_id)
        return None if score is None else float(score)

    async def poll(self, count: int, wanted: int, *, claim_ms: int) -> list[Claimed]:
        """Claim up to `wanted` runs for `claim_ms` (arq's in-progress timeout), looking at the
        first `count` of the fair line, then of arq's due ones (see `_POLL`); the claimed ones,
        in that order."""
        reply = await self._poll(
            {"queue_key": keys.ARQ_QUEUE, "line_key": keys.FAIR_LINE},
            {
                "count": max(count, 1),
                "want": max(wanted, 0),
                "now_ms": int(time.time() * 1000),
                "claim_prefix": keys.ARQ_IN_PROGRESS_PREFIX,
                "claim_ms": claim_ms,
                "job_prefix": keys.job(""),
            },
        )
        return [
            Claimed(
                run_id=text(reply[i]),
                score=int(float(reply[i + 1])),
                record=None if reply[i + 2] is None else _as_bytes(reply[i + 2]),
                fair=None if reply[i + 3] is None else float(reply[i + 3]),
            )
            for i in range(0, len(reply), 4)
        ]

    async def fair_head(self, count: int) -> list[str]:
        """The first `count` runs of the fair line (started ones among them)."""
        return [text(i) for i in await self.arq.zrange(keys.FAIR_LINE, 0, count - 1)]

    async def lock_positions(self, ms: int) -> bool:
        """True for the one worker that tells pending jobs their place for the next `ms`."""
        return bool(await self.arq.set(keys.POSITIONS_LOCK, "1", nx=True, px=ms))

    async def finished(self, job_id: str) -> None:
        """The run is over: out of the fair line."""
        await self.arq.zrem(keys.FAIR_LINE, job_id)

    async def is_queued(self, job_id: str) -> bool:
        return await self.arq.zscore(keys.ARQ_QUEUE, job_id) is not None

    async def is_claimed(self, job_id: str) -> bool:
        """Whether a worker's arq claims the run (its in-progress key lives)."""
        return bool(await self.arq.exists(keys.ARQ_IN_PROGRESS_PREFIX + job_id))

    async def hand_back(self, job: Job, *, expires: int) -> None:
        """Queue a run whose worker is gone again, for whichever worker takes it first."""
        if await self.is_queued(job.id):
            # still queued: only the dead worker's claim keeps others from taking it
            await self.arq.delete(keys.ARQ_IN_PROGRESS_PREFIX + job.id)
            await self.wake()
            return
        await self.arq.delete(
            keys.ARQ_IN_PROGRESS_PREFIX + job.id,
            keys.ARQ_JOB_PREFIX + job.id,
            keys.ARQ_RETRY_PREFIX + job.id,
        )
        await self.enqueue(job, expires=expires)

    async def wake(self) -> None:
        """Wake idle workers: a run is due that no enqueue script announced."""
        await self.arq.publish(keys.WAKE_CHANNEL, "")

    async def due_in(self, job_id: str) -> float | None:
        """Seconds until the job's queued run falls due (0 or less: due); None when not queued."""
        score = await self.arq.zscore(keys.ARQ_QUEUE, job_id)
        return None if score is None else score / 1000 - time.time()

    async def depth(self, priorities: dict[str, tuple[float, float]]) -> dict[str, int]:
        """Runs waiting in the queue, by priority."""
        return {
            name: int(await self.arq.zcount(keys.ARQ_QUEUE, _score(low), _score(high)))
            for name, (low, high) in priorities.items()
        }

    async def enqueue_webhook(self, job: Job) -> bool:
        """Queue the delivery of a final job's webhook; True when queued (at most once per job)."""
        if not job.webhook_url or not job.is_final:
            return False
        queued = await self.arq.enqueue_job(
            keys.DELIVER_WEBHOOK, job.id, _job_id=f"{keys.DELIVER_WEBHOOK}:{job.id}"
        )
        if queued is None:
            return False
        await self.wake()  # arq's enqueue announces nothing: idle workers would wait a poll
        return True


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _score(bound: float) -> str:
    return "-inf" if bound == float("-inf") else "+inf" if bound == float("inf") else repr(bound)
