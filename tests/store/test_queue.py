"""Queueing a job's run: arq's own layout, once per job id, in priority order, waking workers."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from formy_async.models import Job
from formy_async.store import keys
from formy_async.store.connections import arq_pool
from formy_async.store.queue import Claimed, RunQueue

pytestmark = pytest.mark.redis


def a_job(job_id: str, priority: str = "normal") -> Job:
    return Job(id=job_id, workflow="upscale", params={}, priority=priority)  # type: ignore[arg-type]


async def test_arq_reads_the_queued_run_as_its_own(redis: Redis) -> None:
    assert await RunQueue(redis).enqueue(a_job("j1"), expires=60)

    [queued] = await arq_pool(redis).queued_jobs()

    assert (queued.function, list(queued.args), queued.job_id) == (keys.RUN_JOB, ["j1"], "j1")
    assert 0 < await redis.pttl(keys.ARQ_JOB_PREFIX + "j1") <= 60_000


async def test_a_job_is_queued_once(redis: Redis) -> None:
    assert await RunQueue(redis).enqueue(a_job("j1"), expires=60)

    assert not await RunQueue(redis).enqueue(a_job("j1"), expires=60)
    assert await redis.zcard(keys.ARQ_QUEUE) == 1


async def test_a_job_whose_result_arq_still_holds_is_not_queued_again(redis: Redis) -> None:
    await redis.set("arq:result:j1", b"{}")

    assert not await RunQueue(redis).enqueue(a_job("j1"), expires=60)


async def test_higher_priorities_come_first_then_the_oldest(redis: Redis) -> None:
    for job_id, priority in [("l1", "low"), ("n1", "normal"), ("h1", "high"), ("n2", "normal")]:
        assert await RunQueue(redis).enqueue(a_job(job_id, priority), expires=60)
        await asyncio.sleep(0.002)  # distinct enqueue times

    assert await redis.zrange(keys.ARQ_QUEUE, 0, -1) == [b"h1", b"n1", b"n2", b"l1"]


async def test_queueing_wakes_the_workers(redis: Redis) -> None:
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.WAKE_CHANNEL)
        assert (await pubsub.get_message(timeout=5) or {}).get("type") == "subscribe"

        await RunQueue(redis).enqueue(a_job("j1"), expires=60)

        message = await pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"j1"


def users_job(job_id: str, user: str) -> Job:
    return Job(id=job_id, user=user, workflow="upscale", params={})


async def test_a_long_job_sends_its_users_later_jobs_behind_a_user_of_short_ones(
    redis: Redis,
) -> None:
    runs = RunQueue(redis)
    await runs.charge("nobody", 2.0)  # the typical job: 2 GPU-seconds
    for job_id, user in [("a1", "ann"), ("b1", "ben"), ("a2", "ann"), ("b2", "ben")]:
        await runs.enqueue(users_job(job_id, user), expires=60)
    assert await runs.fair_head(4) == ["a1", "b1", "a2", "b2"]  # in turn, while costs are equal

    assert await runs.charge("ann", 8.0) == pytest.approx(3.0)  # a1 ran four typical jobs' worth
    assert await runs.charge("ben", 1.0) < 0  # b1 ran short
    for job_id, user in [("a3", "ann"), ("b3", "ben"), ("b4", "ben")]:
        await runs.enqueue(users_job(job_id, user), expires=60)

    assert await runs.fair_head(7) == ["a1", "b1", "a2", "b2", "b3", "b4", "a3"]


async def test_the_typical_job_follows_the_jobs_that_ran(redis: Redis) -> None:
    runs = RunQueue(redis)
    await runs.charge("ann", 10.0)
    for _ in range(40):
        await runs.charge("ann", 1.0)
    assert float(await redis.get(keys.FAIR_TYPICAL)) == pytest.approx(1.0, abs=0.2)


async def score(redis: Redis, run_id: str) -> int:
    return int(await redis.zscore(keys.ARQ_QUEUE, run_id) or 0)


def ids(claimed: list[Claimed]) -> list[tuple[str, int]]:
    return [(run.run_id, run.score) for run in claimed]


async def test_a_poll_takes_due_runs_in_fair_order_up_to_what_the_worker_can_hold(
    redis: Redis,
) -> None:
    runs = RunQueue(redis)
    for job_id in ("j1", "j2", "j3"):
        assert await runs.enqueue(a_job(job_id), expires=60)

    taken = await runs.poll(10, 2, claim_ms=30_000)

    assert ids(taken) == [("j1", await score(redis, "j1")), ("j2", await score(redis, "j2"))]
    assert 0 < await redis.pttl(keys.ARQ_IN_PROGRESS_PREFIX + "j1") <= 30_000
    assert not await redis.exists(keys.ARQ_IN_PROGRESS_PREFIX + "j3")


async def test_a_poll_takes_what_arq_queues_outside_the_fair_line_after_it(redis: Redis) -> None:
    runs = RunQueue(redis)
    await redis.zadd(keys.ARQ_QUEUE, {"delivery": 1})  # a webhook delivery: arq's alone
    assert await runs.enqueue(a_job("j1"), expires=60)

    assert ids(await runs.poll(10, 5, claim_ms=30_000)) == [
        ("j1", await score(redis, "j1")),
        ("delivery", 1),
    ]


async def test_a_run_another_worker_claims_or_not_yet_due_is_not_taken(redis: Redis) -> None:
    runs = RunQueue(redis)
    for job_id in ("j1", "j2", "j3"):
        assert await runs.enqueue(a_job(job_id), expires=60)
    await redis.set(keys.ARQ_IN_PROGRESS_PREFIX + "j1", b"1")
    await redis.zadd(keys.ARQ_QUEUE, {"j2": 2**50})  # deferred (a retry's delay)

    assert ids(await runs.poll(10, 3, claim_ms=30_000)) == [("j3", await score(redis, "j3"))]


async def test_a_poll_hands_over_each_claimed_jobs_record_and_fair_place(redis: Redis) -> None:
    runs = RunQueue(redis)
    job = a_job("j1")
    await redis.set(keys.job("j1"), job.model_dump_json())
    assert await runs.enqueue(job, expires=60)
    await redis.zadd(keys.ARQ_QUEUE, {"delivery": 1})  # a webhook delivery: no record, no place

    first, delivery = await runs.poll(10, 5, claim_ms=30_000)

    assert first.record == job.model_dump_json().encode()
    assert first.fair == await redis.zscore(keys.FAIR_LINE, "j1")
    assert (delivery.run_id, delivery.record, delivery.fair) == ("delivery", None, None)


async def test_a_poll_looks_at_the_first_runs_only(redis: Redis) -> None:
    runs = RunQueue(redis)
    for job_id in ("j1", "j2", "j3"):
        assert await runs.enqueue(a_job(job_id), expires=60)
    await redis.set(keys.ARQ_IN_PROGRESS_PREFIX + "j1", b"1")
    await redis.set(keys.ARQ_IN_PROGRESS_PREFIX + "j2", b"1")

    assert await runs.poll(2, 3, claim_ms=30_000) == []


async def test_a_run_arq_no_longer_queues_leaves_the_fair_line_when_a_worker_looks(
    redis: Redis,
) -> None:
    runs = RunQueue(redis)
    assert await runs.enqueue(a_job("j1"), expires=60)
    await redis.zrem(keys.ARQ_QUEUE, "j1")  # finished and removed by arq

    assert await runs.poll(10, 0, claim_ms=30_000) == []
    assert await redis.zscore(keys.FAIR_LINE, "j1") is None
