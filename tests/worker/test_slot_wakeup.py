"""A freed ComfyUI slot is taken at once by the next job in line, whichever process waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis

from formy_async.models import Job
from formy_async.settings import parse_backends
from formy_async.store.signals import WorkerSignals
from formy_async.worker.pool import RETRY_EVERY, BackendPool

from ..helpers import wait_until

pytestmark = pytest.mark.redis


class Process:
    """What one worker process holds for this: its pool, and its subscription."""

    def __init__(self, redis: Redis, session: aiohttp.ClientSession, url: str) -> None:
        self.pool = BackendPool(redis, parse_backends(f"{url}#capacity=1&lookahead=0"), session)
        self.signals = WorkerSignals(redis)
        self.signals.on_slot_freed = self.pool.slot_freed

    async def __aenter__(self) -> Process:
        await self.signals.start()
        await asyncio.wait_for(self.signals.wait_subscribed(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.signals.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def a_job(job_id: str, created_at: float) -> Job:
    return Job(id=job_id, workflow="w", params={}, created_at=created_at)


async def test_a_job_waiting_in_another_process_takes_a_freed_slot_at_once(
    redis: Redis, session: aiohttp.ClientSession, simulator_url: str
) -> None:
    async with (
        Process(redis, session, simulator_url) as first,
        Process(redis, session, simulator_url) as second,
    ):
        release = asyncio.Event()
        took: list[float] = []

        async def hold() -> None:
            async with first.pool.slot(a_job("a", 1.0), asyncio.Event()) as spec:
                assert spec is not None
                await release.wait()

        async def wait_then_take() -> None:
            async with second.pool.slot(a_job("b", 2.0), asyncio.Event()) as spec:
                took.append(time.monotonic())
                assert spec is not None

        async def holding() -> bool:
            return bool(first.pool.held)

        async def waiting() -> bool:
            return "b" in second.pool._waiting

        holder = asyncio.create_task(hold())
        await wait_until(holding, every=0.002)  # "a" has the one slot
        waiter = asyncio.create_task(wait_then_take())
        await wait_until(waiting, every=0.002)
        freed = time.monotonic()
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, waiter), 10)
    assert took[0] - freed < RETRY_EVERY / 10  # woken, not found by its next retry
