"""The job store: records, the ordered event log, and publishing (on fakeredis)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from fakeredis import FakeAsyncRedis, FakeServer
from redis.asyncio import Redis

from formy_async.errors import NotFound, TooManyRequests
from formy_async.models import Done, Job, Progress, Started, Submitted
from formy_async.store import keys
from formy_async.store.jobs import JobStore, Quota, split_for_seq
from formy_async.store.queue import queue_entry


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = FakeAsyncRedis(server=FakeServer())
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> JobStore:
    return JobStore(redis, ttl=60)


def _job() -> Job:
    return Job(id="j1", workflow="text_to_image", params={"prompt": "a"})


async def test_events_get_consecutive_sequence_numbers(store: JobStore) -> None:
    job = _job()
    assert await store.create(job, Submitted(job_id=job.id, workflow=job.workflow)) == 1
    job.status = "processing"
    assert await store.append(job, Started(job_id=job.id, prompt_id="p")) == 2
    assert [e.seq for e in await store.parsed_events(job.id)] == [1, 2]


async def test_event_carries_the_jobs_status_and_progress(store: JobStore) -> None:
    job = _job()
    job.status, job.progress = "processing", 42
    await store.append(job, Progress(job_id=job.id, node="3", value=1, max=2))
    (event,) = await store.parsed_events(job.id)
    assert (event.status, event.progress) == ("processing", 42)


async def test_job_record_is_replaced_with_each_event(store: JobStore) -> None:
    job = _job()
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    job.status = "processing"
    await store.append(job, Started(job_id=job.id, prompt_id="p"))
    assert (await store.get(job.id)).status == "processing"


async def test_nothing_is_appended_after_the_final_event(store: JobStore) -> None:
    job = _job()
    job.status, job.progress = "done", 100
    await store.append(job, Done(job_id=job.id, outputs=[]))
    job.status = "processing"
    assert await store.append(job, Started(job_id=job.id, prompt_id="late")) == 0
    assert (await store.get(job.id)).status == "done"
    assert len(await store.events(job.id)) == 1


async def test_events_after_n_skips_the_first_n(store: JobStore) -> None:
    job = _job()
    for _ in range(5):
        await store.append(job, Progress(job_id=job.id, node="1", value=0, max=1))
    assert [json.loads(e)["seq"] for e in await store.events(job.id, after=3)] == [4, 5]


async def test_appended_event_is_published_as_logged(store: JobStore, redis: Redis) -> None:
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.events_channel("j1"))
    job = _job()
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    message = None
    for _ in range(3):  # the first read may be the (ignored) subscribe confirmation
        message = message or await pubsub.get_message(timeout=1)
    assert message is not None
    assert message["data"].decode() == (await store.events(job.id))[0]
    await pubsub.aclose()


async def test_created_jobs_are_indexed_for_listing(store: JobStore, redis: Redis) -> None:
    job = _job()
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    assert await redis.zrange(keys.jobs_index(), 0, -1) == [b"j1"]


async def test_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        await store.get("missing")


def test_split_for_seq_rebuilds_the_event_with_any_seq() -> None:
    head, tail = split_for_seq(Submitted(job_id="x", workflow="w").model_dump_json())
    assert json.loads(head + "12" + tail)["seq"] == 12


async def test_creating_a_job_can_queue_its_run_in_the_same_step(
    store: JobStore, redis: Redis
) -> None:
    job = _job()

    await store.create(
        job, Submitted(job_id=job.id, workflow=job.workflow), None, queue_entry(job, expires=60)
    )

    assert await redis.zrange(keys.ARQ_QUEUE, 0, -1) == [job.id.encode()]


async def test_a_refused_job_is_not_queued(store: JobStore, redis: Redis) -> None:
    first, second = _job(), Job(id="j2", workflow="text_to_image", params={})
    await store.create(first, Submitted(job_id=first.id, workflow=first.workflow))

    with pytest.raises(TooManyRequests):
        await store.create(
            second,
            Submitted(job_id=second.id, workflow=second.workflow),
            Quota(jobs=1),
            queue_entry(second, expires=60),
        )

    assert await redis.zcard(keys.ARQ_QUEUE) == 0
    assert await redis.exists(keys.job(second.id)) == 0
