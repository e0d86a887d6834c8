"""The worker's poll loop: woken when a job is queued, when a slot frees up, and when a run
it put back in the queue falls due."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.worker import func
from redis.asyncio import Redis

from formy_async.store import keys
from formy_async.store.connections import arq_pool
from formy_async.worker.process import FormyWorker

from ..conftest import FIXTURE_WORKFLOWS, StackFactory
from ..helpers import api_session, follow, submit

pytestmark = pytest.mark.redis

#: long enough that a job left to the poll would miss every test timeout here
LONG_POLL = 600.0


async def test_a_queued_job_wakes_an_idle_worker(make_stack: StackFactory) -> None:
    async with make_stack(worker_poll_delay=LONG_POLL) as stack, api_session() as session:
        await asyncio.wait_for(stack.worker.idle.wait(), 10)  # it polled, and waits now
        job = await submit(session, stack.url, prompt="a fox", steps=1)
        events = await follow(session, stack.url, job["id"], timeout=15)
    assert events[-1]["type"] == "done"


async def test_a_full_worker_takes_the_next_job_when_one_ends(make_stack: StackFactory) -> None:
    async with (
        make_stack(
            workflows_dir=FIXTURE_WORKFLOWS, worker_poll_delay=LONG_POLL, max_jobs=1
        ) as stack,
        api_session() as session,
    ):
        await asyncio.wait_for(stack.worker.idle.wait(), 10)
        first = await submit(session, stack.url, "slow", steps=3)
        second = await submit(
            session, stack.url, "slow", steps=1
        )  # queued while the worker is full
        assert (await follow(session, stack.url, first["id"], timeout=15))[-1]["type"] == "done"
        assert (await follow(session, stack.url, second["id"], timeout=15))[-1]["type"] == "done"


async def test_a_retry_deferred_by_the_worker_wakes_it_when_it_falls_due(redis: Redis) -> None:
    worker = _worker(redis)
    await redis.zadd(keys.ARQ_QUEUE, {"job1": (time.time() + 0.3) * 1000})
    await worker.finish_job("job1", False, None, None, False, None, None)  # arq's retry
    assert not worker.wake.is_set()
    await asyncio.wait_for(worker.wake.wait(), 2)


async def test_a_run_handed_back_due_now_wakes_every_worker(redis: Redis) -> None:
    worker = _worker(redis)
    await redis.zadd(keys.ARQ_QUEUE, {"job1": time.time() * 1000 - 1000})
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.WAKE_CHANNEL)
        await worker.finish_job("job1", False, None, None, False, None, None)
        messages = [await pubsub.get_message(timeout=1) for _ in range(2)]
    assert [m["type"] for m in messages if m] == ["subscribe", "message"]


def _worker(redis: Redis) -> FormyWorker:
    """A worker that is never started: its poll loop's hooks only."""
    return FormyWorker(
        functions=[func(_nothing, name="nothing")],
        redis_pool=arq_pool(redis),
        handle_signals=False,
        poll_delay=LONG_POLL,
    )


async def _nothing(ctx: dict[str, object]) -> None:
    pass
