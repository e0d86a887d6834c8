"""The per-process event hub: one Redis pub/sub connection fanned out to in-process subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys
from .connections import text

log = structlog.get_logger()

#: called with (job_id, seq, raw event JSON); must not block: it runs inside the relay loop
Sink = Callable[[str, int, str], None]
#: the seq a sink is called with (and an empty event) after the pub/sub connection came back:
#: events published meanwhile are only in the job's log, so the sink catches up from there
RESYNC = -1
#: how many subscribers read Redis (a job's record, its log) at once
SUBSCRIBER_READS = 32
#: subscribers queued at once that make a burst (see `ReadGate.__aexit__`)
BURST = 1000


def event_ts(raw: str) -> float:
    """The `ts` of a raw event, read without parsing the whole JSON (it comes third)."""
    start = raw.index('"ts":') + 5
    return float(raw[start : raw.index(",", start)])


def seq_of(raw: str) -> int:
    """The `seq` of a raw event, read without parsing the whole JSON (it comes second)."""
    start = raw.index('"seq":') + 6
    return int(raw[start : raw.index(",", start)])


class ReadGate:
    """Lets subscribers read Redis (a job's record, its log) a few at a time; the rest queue.

    When browsers reconnect together (a restart, a deploy) thousands subscribe at once. One
    queued here holds a coroutine and a future; one queued in redis-py's pool, kilobytes of
    frames and buffers, and that peak would stay in the process's RSS long after.
    """

    def __init__(self, limit: int = SUBSCRIBER_READS) -> None:
        self._free = asyncio.Semaphore(limit)
        self._queued = 0  # since the queue was last empty

    async def __aenter__(self) -> None:
        if self._free.locked():
            self._queued += 1
        await self._free.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._free.release()
        if self._queued >= BURST and not self._free.locked():
            self._queued = 0
            # CPython counts the frees of what the burst queued against the objects of the
            # sockets it leaves idle, so those pile up in the young generation uncounted
            # (80,000 at 10,000 sockets) and its first collection stalls the loop for ~25 ms,
            # in the middle of the next events. The burst is over: pay for it now.
            gc.collect(1)


class EventHub:
    """Relays every job's events from Redis to the sinks subscribed to that job.

    A web process holds one hub, so one pub/sub connection however many WebSockets it serves.
    Sinks are plain callables; a slow sink is the sink's problem (it must queue and bound).
    Every sink takes `RESYNC` as a seq; the hub keeps no other per-subscriber state.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.sinks: defaultdict[str, set[Sink]] = defaultdict(set)
        self.reads = ReadGate()  # what subscribers read to catch up goes through it
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, job_id: str, sink: Sink) -> None:
        self.sinks[job_id].add(sink)

    def unsubscribe(self, job_id: str, sink: Sink) -> None:
        sinks = self.sinks.get(job_id)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self.sinks[job_id]

    def deliver(self, channel: str, raw: str) -> None:
        job_id = keys.job_id_from_channel(channel)
        sinks = self.sinks.get(job_id)
        if not sinks:
            return
        seq = seq_of(raw)
        for sink in list(sinks):
            sink(job_id, seq, raw)

    def _resync(self) -> None:
        for job_id, sinks in list(self.sinks.items()):
            for sink in list(sinks):
                sink(job_id, RESYNC, "")

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._ready.clear()
                log.warning("event_hub_disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            else:
                delay = 0.1

    async def _listen(self) -> None:
        # Subscription confirmations are kept: redis-py reconnects and subscribes again inside
        # get_message by itself, and its confirmation is the only sign that events published
        # meanwhile were missed (they are in the logs: sinks catch up from there).
        pubsub = self.redis.pubsub()
        try:
            await pubsub.psubscribe(keys.EVENTS_PATTERN)
            while True:
                message: Any = await pubsub.get_message(timeout=30)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._ready.set()
                    self._resync()
                elif message["type"] == "pmessage":
                    channel, data = message["channel"], message["data"]
                    self.deliver(text(channel), text(data))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
