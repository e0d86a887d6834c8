"""Putting a job on arq's queue, in priority order: higher first, first-in first-out within one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from arq.connections import ArqRedis

from . import keys
from .models import Job

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

DAY_MS = 24 * 3600 * 1000
#: arq runs the job with the lowest score first, so a priority is an offset into the past: a
#: high job queued now is ahead of every normal job queued in the last day, and so on
OFFSET_MS: dict[str, int] = {"high": -2 * DAY_MS, "normal": -DAY_MS, "low": 0}


async def enqueue_run(arq: ArqRedis, job: Job, *, expires: int) -> bool:
    """Queue the job's run under its priority; False when arq already holds that job id."""
    now_ms = int(time.time() * 1000)
    score_ms = now_ms + OFFSET_MS.get(job.priority, 0)
    queued = await arq.enqueue_job(
        keys.RUN_JOB,
        job.id,
        _job_id=job.id,
        _defer_until=datetime.fromtimestamp(score_ms / 1000, tz=UTC),
        # arq would derive the key's lifetime from the (past) score: give it one
        _expires=expires,
    )
    return queued is not None


def priority_ranges(now_ms: float | None = None) -> dict[str, tuple[float, float]]:
    """The score range each priority's waiting jobs fall in (for jobs waiting under 12 hours)."""
    now = now_ms if now_ms is not None else time.time() * 1000
    half = DAY_MS / 2
    return {
        "high": (float("-inf"), now - DAY_MS - half),
        "normal": (now - DAY_MS - half, now - half),
        "low": (now - half, float("inf")),
    }
