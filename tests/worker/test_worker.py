"""The worker's poll loop: woken when a job is queued, when a slot frees up, and when a run
it put back in the queue falls due."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.worker import func
from redis.asyncio import Redis

from formy_async.models import Job
from formy_async.store import keys
from formy_async.store.connections import arq_pool, job_deserializer, job_serializer
from formy_async.store.queue import Claimed, RunQueue
from formy_async.worker.process import FormyWorker
from formy_async.worker.run import CLAIMED

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


async def test_a_run_gets_the_job_record_its_poll_read(redis: Redis) -> None:
    handed: list[Claimed | None] = []

    async def run(ctx: dict[str, object], job_id: str) -> None:
        claimed = ctx[CLAIMED]
        assert isinstance(claimed, dict)
        handed.append(claimed.get(job_id))

    worker = _worker(redis, func(run, name=keys.RUN_JOB))
    job = Job(id="j1", user="ann", workflow="upscale", params={})
    await redis.set(keys.job("j1"), job.model_dump_json())
    assert await RunQueue(redis).enqueue(job, expires=60)
    place = await redis.zscore(keys.FAIR_LINE, "j1")

    await worker._poll_once()
    await asyncio.gather(*worker.tasks.values())

    [claimed] = handed
    assert claimed is not None and claimed.record == job.model_dump_json().encode()
    assert claimed.fair == place
    assert worker.claimed == {}  # the run took it, or its end did


async def test_a_claimed_run_that_arq_does_not_start_leaves_nothing_behind(redis: Redis) -> None:
    worker = _worker(redis, func(_nothing, name=keys.RUN_JOB))
    job = Job(id="j1", user="ann", workflow="upscale", params={})
    await redis.set(keys.job("j1"), job.model_dump_json())
    assert await RunQueue(redis).enqueue(job, expires=60)
    await redis.delete(keys.ARQ_JOB_PREFIX + "j1")  # its arq record expired

    await worker._poll_once()
    assert "j1" in worker.claimed
    await asyncio.gather(*worker.tasks.values())

    assert worker.claimed == {}


def _worker(redis: Redis, *functions: object) -> FormyWorker:
    """A worker that is never started: its poll loop's hooks only."""
    return FormyWorker(
        functions=list(functions) or [func(_nothing, name="nothing")],
        redis_pool=arq_pool(redis),
        handle_signals=False,
        poll_delay=LONG_POLL,
        job_serializer=job_serializer,  # as the service's workers read its queue
        job_deserializer=job_deserializer,
    )


async def _nothing(ctx: dict[str, object]) -> None:
    pass
