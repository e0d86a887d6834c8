"""Putting a job on arq's queue, in priority order: higher first, first-in first-out within one."""

from __future__ import annotations

import time
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

# arq's own enqueue, in one round trip instead of its WATCH, EXISTS and MULTI/EXEC: the same
# keys and payload, refused (0) while arq still holds the job or its result. Then idle workers
# are woken, so they take the job now instead of at their next poll.
#   KEYS: arq's job key, arq's result key, arq's queue
#   ARGV: payload, lifetime (ms), score, job id, wake channel
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"""


async def enqueue_run(redis: Redis, job: Job, *, expires: int) -> bool:
    """Queue the job's run under its priority; False when arq already holds that job id."""
    now_ms = int(time.time() * 1000)
    payload = serialize_job(keys.RUN_JOB, (job.id,), {}, None, now_ms, serializer=job_serializer)
    score = now_ms + OFFSET_MS.get(job.priority, 0)
    queued = await redis.register_script(_ENQUEUE)(
        keys=[keys.ARQ_JOB_PREFIX + job.id, result_key_prefix + job.id, keys.ARQ_QUEUE],
        args=[payload, expires * 1000, score, job.id, keys.WAKE_CHANNEL],
    )
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
