"""Appends taken at once and written in order, those queued together in one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeredis import FakeAsyncRedis, FakeServer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from formy_async.models import Job, Progress, Started, Submitted
from formy_async.store.appends import JobAppends
from formy_async.store.jobs import JobStore


@pytest.fixture
async def store() -> AsyncIterator[JobStore]:
    client = FakeAsyncRedis(server=FakeServer())
    yield JobStore(client, ttl=60)
    await client.aclose()


async def _started(store: JobStore) -> Job:
    job = Job(id="j1", workflow="text_to_image", params={"prompt": "a"})
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    job.status = "processing"
    return job


def _progress(job: Job, value: int) -> Progress:
    return Progress(job_id=job.id, node="3", value=value, max=10)


def _batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every round trip the store's appends make."""
    sizes: list[int] = []
    send = JobAppends._evalsha

    async def counted(self: JobAppends, batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        return await send(self, batch)

    monkeypatch.setattr(JobAppends, "_evalsha", counted)
    return sizes


async def test_an_append_is_taken_as_the_job_was_when_it_was_made(store: JobStore) -> None:
    job = await _started(store)
    job.progress = 10
    written = store.append_soon(job, _progress(job, 1))
    job.progress = 20  # after the call: not in that event
    await written
    (event,) = await store.parsed_events(job.id, after=1)
    assert event.progress == 10


async def test_appends_made_without_waiting_are_logged_in_the_order_they_were_made(
    store: JobStore,
) -> None:
    job = await _started(store)
    writes = [store.append_soon(job, _progress(job, value)) for value in range(1, 6)]
    assert await asyncio.gather(*writes) == [2, 3, 4, 5, 6]
    events = await store.parsed_events(job.id, after=1)
    assert [e.value for e in events if isinstance(e, Progress)] == [1, 2, 3, 4, 5]


async def test_appends_queued_while_one_is_on_its_way_go_in_one_round_trip(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _batches(monkeypatch)
    job = await _started(store)
    first = store.append_soon(job, Started(job_id=job.id, prompt_id="p"))
    await asyncio.sleep(0)  # the first is on its way
    rest = [store.append_soon(job, _progress(job, value)) for value in range(1, 4)]
    await asyncio.gather(first, *rest)
    assert sizes == [1, 3]


async def test_a_failed_write_fails_those_queued_behind_it(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await _started(store)
    sent: list[int] = []

    async def lost(self: JobAppends, batch: list[Any]) -> list[Any]:
        sent.append(len(batch))
        await asyncio.sleep(0.01)
        raise RedisConnectionError("Redis went away")

    with monkeypatch.context() as patched:
        patched.setattr(JobAppends, "_evalsha", lost)
        writes = [store.append_soon(job, _progress(job, 1))]
        await asyncio.sleep(0)  # on its way
        writes += [store.append_soon(job, _progress(job, value)) for value in (2, 3)]
        failures = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(f, RedisConnectionError) for f in failures)
    assert sent == [1]  # the two behind it were never sent
    assert await store.append(job, _progress(job, 4)) == 2  # the next one is written
    assert len(await store.events(job.id)) == 2


async def test_appends_go_on_after_redis_forgot_the_script(store: JobStore) -> None:
    job = await _started(store)
    redis: Redis = store.redis
    await redis.script_flush()
    writes = [store.append_soon(job, _progress(job, value)) for value in range(1, 3)]
    assert await asyncio.gather(*writes) == [2, 3]


async def test_a_refused_append_answers_zero(store: JobStore) -> None:
    job = await _started(store)
    job.status = "cancelled"
    await store.append(job, _progress(job, 1))
    job.status = "processing"  # a late writer
    assert await store.append_soon(job, _progress(job, 2)) == 0
