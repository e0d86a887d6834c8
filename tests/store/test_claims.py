"""What a job's creation claims with it (on fakeredis): an Idempotency-Key, a place in reuse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakeredis import FakeAsyncRedis, FakeServer
from redis.asyncio import Redis

from formy_async.errors import IdempotencyKeyReuse, TooManyJobs
from formy_async.models import Job, Submitted
from formy_async.store import keys
from formy_async.store.claims import Claims, DuplicateSubmission, LeaderChanged
from formy_async.store.jobs import JobStore, Quota


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = FakeAsyncRedis(server=FakeServer())
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> JobStore:
    return JobStore(redis, ttl=60)


def job(job_id: str) -> Job:
    return Job(id=job_id, user="alice", workflow="text_to_image", params={})


async def create(store: JobStore, job_id: str, claims: Claims, quota: Quota | None = None) -> int:
    new = job(job_id)
    return await store.create(
        new, Submitted(job_id=new.id, workflow=new.workflow), quota, claiming=claims
    )


KEYED = Claims(user="alice", idempotency_key="k1", body_digest="b1")


async def test_a_key_taken_answers_the_job_it_created(store: JobStore) -> None:
    await create(store, "j1", KEYED)
    with pytest.raises(DuplicateSubmission) as raised:
        await create(store, "j2", KEYED)
    assert raised.value.job_id == "j1"
    assert await store.owner("j2") is None


async def test_a_key_with_another_body_is_refused(store: JobStore) -> None:
    await create(store, "j1", KEYED)
    with pytest.raises(IdempotencyKeyReuse):
        await create(store, "j2", Claims(user="alice", idempotency_key="k1", body_digest="b2"))


async def test_a_create_refused_over_the_quota_takes_no_key(store: JobStore) -> None:
    await create(store, "j0", Claims(user="alice"))
    with pytest.raises(TooManyJobs):
        await create(store, "j1", KEYED, Quota(jobs=1))
    assert await create(store, "j2", KEYED) == 1


async def test_a_leader_claim_fails_when_the_leader_changed(store: JobStore, redis: Redis) -> None:
    lead = Claims(user="alice", reuse_key="fp", reuse_mode="lead", expected="")
    await create(store, "j1", lead)
    with pytest.raises(LeaderChanged):
        await create(store, "j2", lead)  # j1 leads now, not nobody
    assert await redis.get("fp") == b"j1"


async def test_a_follower_joins_its_leaders_followers(store: JobStore, redis: Redis) -> None:
    await create(store, "j1", Claims(user="alice", reuse_key="fp", reuse_mode="lead"))
    await create(
        store, "j2", Claims(user="alice", reuse_key="fp", reuse_mode="follow", expected="j1")
    )
    assert await redis.smembers(keys.reuse_followers("j1")) == {b"j2"}
    assert await redis.zscore(keys.REUSE_FOLLOWING, "j1") is not None
