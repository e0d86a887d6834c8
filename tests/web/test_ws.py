"""The browser WebSocket's per-connection outbox: bounded, gap-filling, never blocking the relay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from fakeredis import FakeAsyncRedis, FakeServer

from formy_async.auth import Identity
from formy_async.models import Job, Progress, Submitted
from formy_async.store.hub import EventHub
from formy_async.store.jobs import JobStore
from formy_async.web.ws import Connection

ALICE = Identity(user="alice")


class FakeSocket:
    """Stands in for a WebSocketResponse; `gate` closed means a client that reads nothing."""

    def __init__(self, open_: bool = True) -> None:
        self.sent: list[dict[str, object]] = []
        self.gate = asyncio.Event()
        if open_:
            self.gate.set()

    async def send_str(self, data: str) -> None:
        await self.gate.wait()
        self.sent.append(json.loads(data))


@pytest.fixture
async def store() -> AsyncIterator[JobStore]:
    redis = FakeAsyncRedis(server=FakeServer())
    yield JobStore(redis, ttl=60)
    await redis.aclose()


async def _job_with_events(store: JobStore, count: int, job_id: str = "j") -> list[str]:
    job = Job(id=job_id, user="alice", workflow="w", params={})
    await store.create(job, Submitted(job_id=job_id, workflow="w"))
    for _ in range(count - 1):
        await _append(store, job_id)
    return await store.events(job_id)


async def _append(store: JobStore, job_id: str = "j") -> str:
    job = Job(id=job_id, user="alice", workflow="w", params={})
    seq = await store.append(job, Progress(job_id=job_id, node="1", value=0, max=1))
    return (await store.events(job_id, seq - 1))[0]


async def _settle() -> None:
    await asyncio.sleep(0.1)


async def test_subscriber_gets_the_log_then_live_events_once_each(store: JobStore) -> None:
    raw = await _job_with_events(store, 3)
    ws = FakeSocket()
    conn = Connection(ws, EventHub(store.redis), store, size=10)  # type: ignore[arg-type]
    await conn.subscribe("j", after=1, identity=ALICE)
    for seq, event in enumerate(raw, start=1):  # live copies of events it already has
        conn.push("j", seq, event)
    await _settle()
    assert [m.get("seq") for m in ws.sent if "seq" in m] == [2, 3]
    await conn.aclose()


async def test_live_events_during_the_log_sync_come_after_it_once_each(store: JobStore) -> None:
    raw = await _job_with_events(store, 3)
    ws = FakeSocket(open_=False)  # a client that reads nothing for now
    conn = Connection(ws, EventHub(store.redis), store, size=10)  # type: ignore[arg-type]
    subscribing = asyncio.create_task(conn.subscribe("j", after=0, identity=ALICE))
    await _settle()
    conn.push("j", 3, raw[2])  # a live copy of an event the log holds
    conn.push("j", 4, await _append(store))
    ws.gate.set()
    await subscribing
    await _settle()
    assert ws.sent[0]["type"] == "subscribed"
    assert [m.get("seq") for m in ws.sent] == [None, 1, 2, 3, 4]
    await conn.aclose()


async def test_a_job_subscribed_while_events_flow_gets_its_log_in_turn(store: JobStore) -> None:
    await _job_with_events(store, 2, "j")
    await _job_with_events(store, 2, "k")
    ws = FakeSocket()
    conn = Connection(ws, EventHub(store.redis), store, size=10)  # type: ignore[arg-type]
    await conn.subscribe("j", after=2, identity=ALICE)
    ws.gate.clear()
    conn.push("j", 3, await _append(store, "j"))  # the writer is at work, waiting on the client
    subscribing = asyncio.create_task(conn.subscribe("k", after=0, identity=ALICE))
    await _settle()
    ws.gate.set()
    await subscribing
    await _settle()
    assert [(m["job_id"], m.get("seq")) for m in ws.sent] == [
        ("j", None),
        ("j", 3),
        ("k", None),
        ("k", 1),
        ("k", 2),
    ]
    await conn.aclose()


async def test_an_idle_connection_keeps_no_outbox_or_writer(store: JobStore) -> None:
    await _job_with_events(store, 1)
    conn = Connection(FakeSocket(), EventHub(store.redis), store, size=10)  # type: ignore[arg-type]
    await conn.subscribe("j", after=0, identity=ALICE)
    conn.push("j", 2, await _append(store))
    await _settle()
    assert (conn.outbox, conn.overflowed, conn.writer) == (None, None, None)
    assert conn.last_seq == {"j": 2}
    await conn.aclose()


async def test_a_gap_in_live_events_is_filled_from_the_log(store: JobStore) -> None:
    raw = await _job_with_events(store, 5)
    ws = FakeSocket()
    conn = Connection(ws, EventHub(store.redis), store, size=10)  # type: ignore[arg-type]
    await conn.subscribe("j", after=5, identity=ALICE)
    conn.last_seq["j"] = 2  # as if events 3 and 4 were never published
    conn.push("j", 5, raw[4])
    await _settle()
    assert [m["seq"] for m in ws.sent if "seq" in m] == [3, 4, 5]
    await conn.aclose()


async def test_slow_reader_overflows_without_blocking_the_relay(store: JobStore) -> None:
    raw = await _job_with_events(store, 1)
    hub = EventHub(store.redis)
    slow, fast = FakeSocket(open_=False), FakeSocket()
    slow_conn = Connection(slow, hub, store, size=10)  # type: ignore[arg-type]
    fast_conn = Connection(fast, hub, store, size=10)  # type: ignore[arg-type]
    slow_conn.last_seq["j"] = 0
    hub.subscribe("j", slow_conn)
    await fast_conn.subscribe("j", after=1, identity=ALICE)
    await _settle()
    for seq in range(2, 40):  # deliver() is synchronous: it can never wait on a socket
        hub.deliver("formy:events:j", raw[0].replace('"seq":1,', f'"seq":{seq},'))
        await asyncio.sleep(0.001)  # the relay reads the next message from Redis
    assert "j" not in slow_conn.last_seq  # dropped its subscription instead of buffering more
    await _settle()
    assert [m["seq"] for m in fast.sent if "seq" in m] == list(range(2, 40))
    slow.gate.set()
    await _settle()
    overflow = [m for m in slow.sent if m["type"] == "overflow"]
    received = [m["seq"] for m in slow.sent if "seq" in m]  # what was in flight when it filled
    assert overflow and overflow[0]["last_seq"] == {"j": received[-1]}  # none of it sent twice
    await slow_conn.aclose()
    await fast_conn.aclose()


class FakeTransport:
    """Stands in for the transport of a client that is behind (it always holds unsent bytes);
    records the abort a stalled send ends in."""

    def __init__(self) -> None:
        self.aborted = asyncio.Event()

    def get_write_buffer_size(self) -> int:
        return 1

    def get_extra_info(self, name: str) -> None:
        return None

    def abort(self) -> None:
        self.aborted.set()


class SlowSocket(FakeSocket):
    """A client that reads, but takes `delay` seconds over each message."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def send_str(self, data: str) -> None:
        await asyncio.sleep(self.delay)
        await super().send_str(data)


def _connection(ws: FakeSocket, store: JobStore, transport: FakeTransport) -> Connection:
    return Connection(
        ws,  # type: ignore[arg-type]
        EventHub(store.redis),
        store,
        size=100,
        send_timeout=0.3,
        transport=transport,  # type: ignore[arg-type]
    )


async def test_a_send_the_client_takes_nothing_of_resets_the_socket(store: JobStore) -> None:
    raw = await _job_with_events(store, 1)
    transport = FakeTransport()
    conn = _connection(FakeSocket(open_=False), store, transport)
    conn.last_seq["j"] = 0
    conn.push("j", 1, raw[0])
    async with asyncio.timeout(5):
        await transport.aborted.wait()
    await conn.aclose()


async def test_a_client_that_reads_slowly_but_steadily_is_not_reset(store: JobStore) -> None:
    raw = await _job_with_events(store, 1)
    transport, ws = FakeTransport(), SlowSocket(delay=0.1)
    conn = _connection(ws, store, transport)
    conn.last_seq["j"] = 0
    for seq in range(1, 11):  # 1 s of sending in all: three times the send timeout
        conn.push("j", seq, raw[0].replace('"seq":1,', f'"seq":{seq},'))
    writer = conn.writer
    assert writer is not None
    async with asyncio.timeout(5):
        await writer  # it sends all ten, then ends
    assert (len(ws.sent), transport.aborted.is_set()) == (10, False)
    await conn.aclose()


async def test_a_subscription_cut_off_while_its_channel_opens_leaves_no_sink(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _job_with_events(store, 1)
    hub = EventHub(store.redis)
    opening = asyncio.Event()

    async def never_live(job_id: str) -> None:
        opening.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(hub, "live", never_live)
    conn = Connection(FakeSocket(), hub, store, size=10)  # type: ignore[arg-type]
    subscribing = asyncio.create_task(conn.subscribe("j", after=0, identity=ALICE))
    await opening.wait()
    subscribing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await subscribing
    assert "j" not in hub.sinks
    await conn.aclose()
