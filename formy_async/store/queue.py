"""arq's queue as the service uses it: runs in priority order, claims, hand-backs, webhooks.

Higher priorities run first, first-in first-out within one. A run is queued with arq's own keys
and payload, but in one Lua step instead of arq's WATCH, EXISTS and MULTI/EXEC, and idle
workers are woken at once (they would otherwise see it at their next poll).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from ..models import Job
from . import keys
from .connections import arq_pool, job_serializer
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

#: the key and argument names `ENQUEUE_LUA` reads, for scripts that include it
ENQUEUE_KEYS = ("run_key", "run_result_key", "queue_key")
ENQUEUE_ARGS = ("run_payload", "run_expires_ms", "run_score", "run_id", "wake_channel")

#: arq's enqueue of one run, refused (as arq refuses it) while arq still holds the job or its
#: result; sets the Lua variable `queued` to 1, or 0 when refused or when there is no run
#: (`run_id` empty)
ENQUEUE_LUA = """
local queued = 0
if run_id ~= '' and redis.call('EXISTS', run_key, run_result_key) == 0 then
  redis.call('SET', run_key, run_payload, 'PX', run_expires_ms)
  redis.call('ZADD', queue_key, run_score, run_id)
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

    @property
    def keys(self) -> dict[str, str]:
        return {
            "run_key": keys.ARQ_JOB_PREFIX + self.job_id,
            "run_result_key": result_key_prefix + self.job_id,
            "queue_key": keys.ARQ_QUEUE,
        }

    @property
    def args(self) -> dict[str, Any]:
        return {
            "run_payload": self.payload,
            "run_expires_ms": self.expires_ms,
            "run_score": self.score,
            "run_id": self.job_id,
            "wake_channel": keys.WAKE_CHANNEL,
        }


#: no run to queue (for scripts that include `ENQUEUE_LUA`)
NO_RUN = QueueEntry()


def queue_entry(job: Job, *, expires: int) -> QueueEntry:
    """The job's run, scored by its priority, its arq key living `expires` seconds."""
    now_ms = int(time.time() * 1000)
    payload = serialize_job(keys.RUN_JOB, (job.id,), {}, None, now_ms, serializer=job_serializer)
    return QueueEntry(
        job_id=job.id,
        payload=payload,
        expires_ms=expires * 1000,
        score=now_ms + OFFSET_MS.get(job.priority, 0),
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


class RunQueue:
    """The runs of jobs in arq's queue, and the webhook deliveries queued after them."""

    def __init__(self, redis: Redis) -> None:
        self.arq: ArqRedis = redis if isinstance(redis, ArqRedis) else arq_pool(redis)
        self._enqueue = Script(self.arq, ENQUEUE_KEYS, ENQUEUE_ARGS, ENQUEUE_LUA + "return queued")

    async def enqueue(self, job: Job, *, expires: int) -> bool:
        """Queue the job's run under its priority; False when arq already holds that job id."""
        entry = queue_entry(job, expires=expires)
        return bool(await self._enqueue(entry.keys, entry.args))

    async def is_queued(self, job_id: str) -> bool:
        return await self.arq.zscore(keys.ARQ_QUEUE, job_id) is not None

    async def is_claimed(self, job_id: str) -> bool:
        """Whether a worker's arq claims the run (its in-progress key lives)."""
        return bool(await self.arq.exists(keys.ARQ_IN_PROGRESS_PREFIX + job_id))

    async def claimed(self, job_ids: Iterable[str]) -> list[bool]:
        """For each run, whether a worker already claims it (one round trip)."""
        async with self.arq.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(keys.ARQ_IN_PROGRESS_PREFIX + job_id)
            return [bool(found) for found in await pipe.execute()]

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


def _score(bound: float) -> str:
    return "-inf" if bound == float("-inf") else "+inf" if bound == float("inf") else repr(bound)
