"""Putting a job on arq's queue, in priority order: higher first, first-in first-out within one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from arq.constants import result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from . import keys
from .connections import job_serializer
from .models import Job

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

DAY_MS = 24 * 3600 * 1000
#: arq runs the job with the lowest score first, so a priority is an offset into the past: a
#: high job queued now is ahead of every normal job queued in the last day, and so on
OFFSET_MS: dict[str, int] = {"high": -2 * DAY_MS, "normal": -DAY_MS, "low": 0}


@dataclass(frozen=True)
class QueueEntry:
    """One run of a job as arq stores it: the keys and arguments `enqueue_lua` takes."""

    keys: tuple[str, str, str]
    args: tuple[bytes, int, int, str, str]


def queue_entry(job: Job, *, expires: int) -> QueueEntry:
    """The job's run, scored by its priority, its arq key living `expires` seconds."""
    now_ms = int(time.time() * 1000)
    payload = serialize_job(keys.RUN_JOB, (job.id,), {}, None, now_ms, serializer=job_serializer)
    score = now_ms + OFFSET_MS.get(job.priority, 0)
    return QueueEntry(
        keys=(keys.ARQ_JOB_PREFIX + job.id, result_key_prefix + job.id, keys.ARQ_QUEUE),
        args=(payload, expires * 1000, score, job.id, keys.WAKE_CHANNEL),
    )


def enqueue_lua(k: int, a: int) -> str:
    """Lua doing arq's enqueue for the entry whose keys start at KEYS[k] and arguments at
    ARGV[a], then waking idle workers (so they take the job now, not at their next poll).

    The same keys and payload as arq's own enqueue, in one step instead of its WATCH, EXISTS
    and MULTI/EXEC, and refused the same way while arq still holds the job or its result. It
    sets the Lua variable `queued` to 1, or 0 when refused.
    """
    return f"""
local queued = 0
if redis.call('EXISTS', KEYS[{k}], KEYS[{k + 1}]) == 0 then
  redis.call('SET', KEYS[{k}], ARGV[{a}], 'PX', ARGV[{a + 1}])
  redis.call('ZADD', KEYS[{k + 2}], ARGV[{a + 2}], ARGV[{a + 3}])
  redis.call('PUBLISH', ARGV[{a + 4}], ARGV[{a + 3}])
  queued = 1
end
"""


_ENQUEUE = enqueue_lua(1, 1) + "return queued"


async def enqueue_run(redis: Redis, job: Job, *, expires: int) -> bool:
    """Queue the job's run under its priority; False when arq already holds that job id."""
    entry = queue_entry(job, expires=expires)
    queued = await redis.register_script(_ENQUEUE)(keys=list(entry.keys), args=list(entry.args))
    return bool(queued)


def priority_ranges(now_ms: float | None = None) -> dict[str, tuple[float, float]]:
    """The score range each priority's waiting jobs fall in (for jobs waiting under 12 hours)."""
    now = now_ms if now_ms is not None else time.time() * 1000
    half = DAY_MS / 2
    return {
        "high": (float("-inf"), now - DAY_MS - half),
        "normal": (now - DAY_MS - half, now - half),
        "low": (now - half, float("inf")),
    }
