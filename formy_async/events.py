"""The per-process event hub: one Redis pub/sub connection fanned out to in-process subscribers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys

log = structlog.get_logger()

#: called with (job_id, seq, raw event JSON); must not block: it runs inside the relay loop
Sink = Callable[[str, int, str], None]
#: called after the pub/sub connection came back, so subscribers can catch up from the log
ResyncHook = Callable[[], None]


def seq_of(raw: str) -> int:
    """The `seq` of a raw event, read without parsing the whole JSON (it comes second)."""
    start = raw.index('"seq":') + 6
    return int(raw[start : raw.index(",", start)])


class EventHub:
    """Relays every job's events from Redis to the sinks subscribed to that job.

    A web process holds one hub, so one pub/sub connection however many WebSockets it serves.
    Sinks are plain callables; a slow sink is the sink's problem (it must queue and bound).
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.sinks: defaultdict[str, set[Sink]] = defaultdict(set)
        self.resync_hooks: set[ResyncHook] = set()
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
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(keys.EVENTS_PATTERN)
            if not self._ready.is_set():
                self._ready.set()
                # events published while we were away are in the logs: let sinks catch up
                for hook in list(self.resync_hooks):
                    hook()
            while True:
                message: Any = await pubsub.get_message(timeout=30)
                if message is None or message["type"] != "pmessage":
                    continue
                channel, data = message["channel"], message["data"]
                self.deliver(
                    channel.decode() if isinstance(channel, bytes) else channel,
                    data.decode() if isinstance(data, bytes) else data,
                )
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
