"""Pub/sub connections cut under the process (CLIENT KILL) on the real Redis: nothing is missed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from formy_async.models import Job, Progress, Submitted
from formy_async.settings import Settings
from formy_async.store.connections import redis_from_settings
from formy_async.store.hub import RESYNC, EventHub
from formy_async.store.jobs import JobStore
from formy_async.store.signals import WorkerSignals, request_cancel

pytestmark = pytest.mark.redis


@pytest.fixture(params=["web", "worker"])
async def named(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Redis, str]]:
    """A client as a web process (or a worker) makes it, its connections named, so that a test
    can cut only them. Both retry: redis-py then reconnects and resubscribes by itself."""
    name = f"formy-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=f"{redis_url}?client_name={name}")  # type: ignore[arg-type]
    client = redis_from_settings(settings, patient=request.param == "worker")
    yield client, name
    await client.aclose()


async def kill_pubsub(redis: Redis, name: str) -> int:
    """`CLIENT KILL` the pub/sub connections of clients named `name`; how many."""
    clients = await redis.client_list(_type="pubsub")
    ids = [c["id"] for c in clients if c.get("name") == name]
    for client_id in ids:
        await redis.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


async def wait_for(condition: asyncio.Event) -> None:
    await asyncio.wait_for(condition.wait(), 10)


async def test_the_hub_brings_its_sinks_up_to_date_after_a_cut(
    named: tuple[Redis, str], redis: Redis
) -> None:
    client, name = named
    hub = EventHub(client)
    resynced = asyncio.Event()
    calls: list[int] = []

    def sink(job_id: str, seq: int, raw: str) -> None:
        calls.append(seq)
        if seq == RESYNC and len([c for c in calls if c == RESYNC]) >= 2:
            resynced.set()

    hub.subscribe("j1", sink)
    await hub.start()
    try:
        assert await kill_pubsub(redis, name) == 1
        await wait_for(resynced)  # once at the start, once after the cut
    finally:
        await hub.aclose()


async def test_events_published_while_the_hub_is_cut_reach_a_subscriber(
    named: tuple[Redis, str], redis: Redis
) -> None:
    client, name = named
    store = JobStore(redis, ttl=60)
    job = Job(id=uuid.uuid4().hex, workflow="w", params={})
    await store.create(job, Submitted(job_id=job.id, workflow="w"))
    hub = EventHub(client)
    seen: set[int] = set()
    caught_up = asyncio.Event()

    def sink(job_id: str, seq: int, raw: str) -> None:
        if seq == RESYNC:  # what a socket does: read the log
            asyncio.get_running_loop().create_task(read_log())
        else:
            seen.add(seq)

    async def read_log() -> None:
        seen.update(e.seq for e in await store.parsed_events(job.id))
        if seen >= set(range(1, 12)):
            caught_up.set()

    hub.subscribe(job.id, sink)
    await hub.start()
    try:
        await kill_pubsub(redis, name)
        job.status = "processing"
        for step in range(10):  # published at once, while the hub reconnects
            await store.append(job, Progress(job_id=job.id, node="1", value=step, max=10))
        await wait_for(caught_up)
    finally:
        await hub.aclose()


async def test_a_cancel_sent_while_the_workers_signals_are_cut_still_arrives(
    redis_url: str, redis: Redis
) -> None:
    name = f"formy-test-{uuid.uuid4().hex[:8]}"
    client = redis_from_settings(Settings(redis_url=f"{redis_url}?client_name={name}"))  # type: ignore[arg-type]
    signals = WorkerSignals(client)
    await signals.start()
    try:
        async with signals.watch("j1") as cancelled:
            await asyncio.wait_for(signals.wait_subscribed(), 10)
            await kill_pubsub(redis, name)
            await request_cancel(redis, "j1", ttl=60)  # the message is lost; the key is not
            await wait_for(cancelled)
    finally:
        await signals.aclose()
        await client.aclose()
