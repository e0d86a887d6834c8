"""Cancel requests reach the job they name, whether made before its worker watched or after."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from formy_async.store.signals import WorkerSignals, request_cancel

pytestmark = pytest.mark.redis


async def test_a_cancel_asked_before_the_watch_began_is_found(redis: Redis) -> None:
    await request_cancel(redis, "j1", ttl=60)
    signals = WorkerSignals(redis)

    async with signals.watch("j1") as cancelled:
        await asyncio.wait_for(cancelled.wait(), 5)


async def test_a_cancel_asked_while_watched_arrives(redis: Redis) -> None:
    signals = WorkerSignals(redis)
    await signals.start()
    try:
        await asyncio.wait_for(signals.wait_subscribed(), 5)
        async with signals.watch("j1") as cancelled:
            await request_cancel(redis, "j1", ttl=60)
            await asyncio.wait_for(cancelled.wait(), 5)
    finally:
        await signals.aclose()


async def test_another_jobs_cancel_leaves_a_watched_job_running(redis: Redis) -> None:
    await request_cancel(redis, "j2", ttl=60)
    signals = WorkerSignals(redis)

    async with signals.watch("j1") as cancelled:
        await asyncio.sleep(0.05)  # the key's check takes a round trip
        assert not cancelled.is_set()
