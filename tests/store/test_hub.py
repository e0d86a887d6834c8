"""The event hub: one pub/sub connection, events routed to their job's sinks only."""

from __future__ import annotations

import asyncio

import pytest
from fakeredis import FakeAsyncRedis, FakeServer

from formy_async.models import Submitted
from formy_async.store import hub, keys
from formy_async.store.hub import RESYNC, EventHub, ReadGate, seq_of


def test_seq_of_reads_the_sequence_number() -> None:
    raw = Submitted(job_id="abc", seq=17, workflow="w").model_dump_json()
    assert seq_of(raw) == 17


async def test_hub_routes_events_to_their_jobs_sinks_only() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    hub = EventHub(redis)
    await hub.start()
    got: dict[str, list[int]] = {"a": [], "b": []}
    hub.subscribe("a", lambda job, seq, raw: got["a"].append(seq))
    hub.subscribe("b", lambda job, seq, raw: got["b"].append(seq))
    await hub.live("a")
    await hub.live("b")
    await redis.publish(
        keys.events_channel("a"), Submitted(job_id="a", seq=1, workflow="w").model_dump_json()
    )
    await redis.publish(
        keys.events_channel("c"), Submitted(job_id="c", seq=1, workflow="w").model_dump_json()
    )
    for _ in range(50):
        if got["a"]:
            break
        await asyncio.sleep(0.01)
    assert got == {"a": [1], "b": []}
    await hub.aclose()
    await redis.aclose()


async def test_unsubscribed_sink_gets_nothing() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    hub = EventHub(redis)
    got: list[int] = []

    def sink(job: str, seq: int, raw: str) -> None:
        got.append(seq)

    hub.subscribe("a", sink)
    hub.unsubscribe("a", sink)
    hub.deliver(
        keys.events_channel("a"), Submitted(job_id="a", seq=1, workflow="w").model_dump_json()
    )
    assert got == []
    assert "a" not in hub.sinks
    await redis.aclose()


async def test_sinks_catch_up_from_the_log_whenever_the_hub_connects() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    hub = EventHub(redis)
    got: list[tuple[str, int]] = []
    hub.subscribe("a", lambda job, seq, raw: got.append((job, seq)))
    await hub.start()  # as after a lost pub/sub connection: events may have been missed
    await hub.live("a")
    assert got == [("a", RESYNC)]
    await hub.aclose()
    await redis.aclose()


async def test_read_gate_lets_a_few_readers_in_at_a_time() -> None:
    gate = ReadGate(limit=3)
    inside, most = 0, 0

    async def reader() -> None:
        nonlocal inside, most
        async with gate:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(reader() for _ in range(20)))
    assert (most, inside) == (3, 0)


async def test_read_gate_collects_the_young_generations_once_a_burst_is_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected: list[int] = []
    monkeypatch.setattr(hub, "BURST", 10)
    monkeypatch.setattr(hub.gc, "collect", lambda generation=2: collected.append(generation))
    gate = ReadGate(limit=2)

    async def reader() -> None:
        async with gate:
            await asyncio.sleep(0)

    await asyncio.gather(*(reader() for _ in range(5)))
    assert collected == []  # a few queued: no burst
    await asyncio.gather(*(reader() for _ in range(20)))
    assert collected == [1]


async def test_hub_holds_the_channels_of_followed_jobs_only() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    hub = EventHub(redis)
    await hub.start()

    def sink(job: str, seq: int, raw: str) -> None:
        pass

    async def subscribers() -> dict[str, int]:
        counts = await redis.pubsub_numsub(keys.events_channel("a"), keys.events_channel("b"))
        return {keys.job_id_from_channel(c.decode()): n for c, n in counts}

    assert await subscribers() == {"a": 0, "b": 0}  # only taking submissions: no traffic
    hub.subscribe("a", sink)
    await hub.live("a")
    assert await subscribers() == {"a": 1, "b": 0}
    hub.unsubscribe("a", sink)
    for _ in range(50):
        if await subscribers() == {"a": 0, "b": 0}:
            break
        await asyncio.sleep(0.01)
    assert await subscribers() == {"a": 0, "b": 0}
    await hub.aclose()
    await redis.aclose()


async def test_a_job_followed_again_while_its_channel_is_dropped_gets_its_events() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    hub = EventHub(redis)
    await hub.start()
    got: list[int] = []
    first, second = (lambda job, seq, raw: None), (lambda job, seq, raw: got.append(seq))
    hub.subscribe("a", first)
    await hub.live("a")
    hub.unsubscribe("a", first)
    for _ in range(3):  # its UNSUBSCRIBE goes out…
        await asyncio.sleep(0)
    hub.subscribe("a", second)  # …and a SUBSCRIBE after it
    await hub.live("a")
    await redis.publish(
        keys.events_channel("a"), Submitted(job_id="a", seq=1, workflow="w").model_dump_json()
    )
    for _ in range(50):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [1]
    await hub.aclose()
    await redis.aclose()
