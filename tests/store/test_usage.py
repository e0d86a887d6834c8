"""Usage in Redis: a job counts once, on the UTC day it ended, under its user and backend."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from formy_async.models import Job, JobMetrics
from formy_async.store.usage import UsageStore, seconds_to_midnight, utc_day

pytestmark = pytest.mark.redis

DAY = 86400


def ran(job_id: str, user: str, gpu: float, wait: float, backend: str, ended: float) -> Job:
    metrics = JobMetrics(
        queue_wait_seconds=wait,
        execution_seconds=gpu,
        execution_clock="comfyui",
        backend=backend,
    )
    return Job(
        id=job_id,
        user=user,
        workflow="text_to_image",
        params={},
        status="done",
        finished_at=ended,
        metrics=metrics,
    )


async def test_a_job_counts_once_however_often_it_is_recorded(redis: Redis) -> None:
    usage = UsageStore(redis, marker_ttl=60)
    job = ran("a", "alice", 2.5, 0.5, "http://gpu1:8188", time.time())
    assert await usage.record(job)
    assert not await usage.record(job)
    (today,) = await usage.report(user="alice", days=1, backends=False)
    assert (today.jobs, today.gpu_seconds, today.queue_wait_seconds) == (1, 2.5, 0.5)


async def test_a_job_counts_on_the_utc_day_it_ended(redis: Redis) -> None:
    usage = UsageStore(redis, marker_ttl=60)
    now = time.time()
    await usage.record(ran("old", "alice", 4.0, 1.0, "http://gpu1:8188", now - DAY))
    await usage.record(ran("new", "alice", 1.0, 0.0, "http://gpu1:8188", now))
    days = await usage.report(user="alice", days=3, backends=False, at=now)
    assert [(d.day, d.jobs, d.gpu_seconds) for d in days] == [
        (utc_day(now), 1, 1.0),
        (utc_day(now - DAY), 1, 4.0),
        (utc_day(now - 2 * DAY), 0, 0.0),
    ]


async def test_everyones_report_sums_users_and_backends(redis: Redis) -> None:
    usage = UsageStore(redis, marker_ttl=60)
    now = time.time()
    await usage.record(ran("1", "alice", 1.0, 0.25, "http://gpu1:8188", now))
    await usage.record(ran("2", "alice", 2.0, 0.25, "http://gpu2:8188", now))
    await usage.record(ran("3", "bob", 4.0, 0.5, "http://gpu2:8188", now))
    (today,) = await usage.report(user=None, days=1, backends=True, at=now)
    assert (today.jobs, today.gpu_seconds, today.queue_wait_seconds) == (3, 7.0, 1.0)
    assert today.users is not None and today.backends is not None
    assert {name: t.gpu_seconds for name, t in today.users.items()} == {"alice": 3.0, "bob": 4.0}
    assert {label: (t.jobs, t.gpu_seconds) for label, t in today.backends.items()} == {
        "http://gpu1:8188": (1, 1.0),
        "http://gpu2:8188": (2, 6.0),
    }
    assert await usage.gpu_seconds_today("alice", now) == 3.0


def test_the_budget_resets_at_the_next_utc_midnight() -> None:
    midnight = 20_000 * DAY
    assert seconds_to_midnight(midnight - 90) == 90
    assert seconds_to_midnight(midnight) == DAY
    assert seconds_to_midnight(midnight - 0.2) == 1
