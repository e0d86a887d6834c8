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
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys
from .connections import task_cancelling, text

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
#: seconds a new subscriber waits for Redis to confirm its job's channel (see `EventHub.live`)
LIVE_WITHIN = 5.0


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
    """Relays every followed job's events from Redis to the sinks subscribed to that job.

    A web process holds one hub, so one pub/sub connection however many WebSockets it serves.
    It subscribes to a job's channel while something in the process follows that job, so a
    process receives the events its clients follow and no others (none while it only takes
    submissions). Sinks are plain callables; a slow sink is the sink's problem (it must queue
    and bound). Every sink takes `RESYNC` as a seq; the hub keeps no other per-subscriber state.
    """

    def __init__(self, redis: Redis, *, live_within: float = LIVE_WITHIN) -> None:
        self.redis = redis
        self.sinks: defaultdict[str, set[Sink]] = defaultdict(set)
        self.reads = ReadGate()  # what subscribers read to catch up goes through it
        self.live_within = live_within
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._changed: set[str] = set()  # jobs whose channel is to be subscribed or dropped
        self._change = asyncio.Event()
        self._sent: defaultdict[str, int] = defaultdict(int)  # SUBSCRIBEs not yet confirmed
        self._live: set[str] = set()  # jobs whose channel Redis confirmed on this connection
        self._stale: set[str] = set()  # jobs whose sinks may have missed events: resync them
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, job_id: str, sink: Sink) -> None:
        """Route the job's events to `sink`; `live` says when they flow (read the log after)."""
        sinks = self.sinks[job_id]
        if not sinks:
            self._want(job_id)
        sinks.add(sink)

    def unsubscribe(self, job_id: str, sink: Sink) -> None:
        sinks = self.sinks.get(job_id)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self.sinks[job_id]
                self._live.discard(job_id)
                self._stale.discard(job_id)
                self._release(job_id)  # no one is left to wait for it
                self._want(job_id)

    async def live(self, job_id: str) -> None:
        """Returns once the job's events reach its sinks, or after `live_within` seconds.

        A sink reads the job's log after this, so nothing published before it is missed. If
        Redis takes longer (the connection is being restored), the sink goes on and is resynced
        when the channel is confirmed.
        """
        if self._task is None or job_id in self._live or job_id not in self.sinks:
            return  # a hub that is not running relays nothing: there is nothing to wait for
        waiter = self._waiting.get(job_id)
        if waiter is None:
            waiter = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.live_within):
                await asyncio.shield(waiter)
        except TimeoutError:
            if job_id in self.sinks:
                self._stale.add(job_id)

    def deliver(self, channel: str, raw: str) -> None:
        job_id = keys.job_id_from_channel(channel)
        sinks = self.sinks.get(job_id)
        if not sinks:
            return
        seq = seq_of(raw)
        for sink in list(sinks):
            sink(job_id, seq, raw)

    def _release(self, job_id: str) -> None:
        """Ends the wait of those waiting in `live` for the job's channel."""
        waiter = self._waiting.pop(job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _want(self, job_id: str) -> None:
        self._changed.add(job_id)
        self._change.set()

    def _confirmed(self, job_id: str) -> None:
        """Redis confirmed a SUBSCRIBE of the job's channel: its events flow from here on."""
        self._sent[job_id] -= 1
        if self._sent[job_id] > 0:
            return  # an earlier SUBSCRIBE, sent before an UNSUBSCRIBE that followed it
        del self._sent[job_id]
        sinks = self.sinks.get(job_id)
        if not sinks:
            return
        resubscribed = job_id in self._live  # redis-py reconnected and subscribed again
        self._live.add(job_id)
        self._release(job_id)
        if resubscribed or job_id in self._stale:
            self._stale.discard(job_id)
            for sink in list(sinks):
                sink(job_id, RESYNC, "")

    async def _run(self) -> None:
        delay = 0.1
        while not task_cancelling():
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
        # Every followed job's sinks are resynced once their channel is confirmed on this
        # connection: events published while it was down are only in the logs.
        pubsub = self.redis.pubsub()
        self._stale.update(self.sinks)
        self._live.clear()
        self._sent.clear()
        self._changed.update(self.sinks)
        self._change.set()
        tasks: set[asyncio.Task[None]] = set()
        try:
            # The hub's own channel keeps the connection in subscriber mode while it follows
            # no job: redis-py health-checks a connection that is not with a read of its own,
            # which would race the reader. Its confirmation says the hub is connected.
            await pubsub.subscribe(keys.HUB_CHANNEL)
            tasks = {
                asyncio.create_task(self._read(pubsub), name="event-hub-reader"),
                asyncio.create_task(self._follow_changes(pubsub), name="event-hub-subscriptions"),
            }
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the error that ended it
        finally:
            for task in tasks:
                task.cancel()
            self._change.set()  # wakes a task whose cancel was lost (see `task_cancelling`)
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _follow_changes(self, pubsub: PubSub) -> None:
        """Subscribes the channels of newly followed jobs, and drops those no longer followed."""
        while not task_cancelling():
            await self._change.wait()
            self._change.clear()
            changed, self._changed = self._changed, set()
            wanted = [job_id for job_id in changed if job_id in self.sinks]
            dropped = [job_id for job_id in changed if job_id not in self.sinks]
            if dropped:
                await pubsub.unsubscribe(*map(keys.events_channel, dropped))
            if wanted:
                for job_id in wanted:
                    self._sent[job_id] += 1
                await pubsub.subscribe(*map(keys.events_channel, wanted))

    async def _read(self, pubsub: PubSub) -> None:
        # Subscription confirmations are kept: redis-py reconnects and subscribes again inside
        # get_message by itself, and its confirmation is the only sign that events published
        # meanwhile were missed (they are in the logs: sinks catch up from there).
        while not task_cancelling():
            message: Any = await pubsub.get_message(timeout=30)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                self.deliver(text(message["channel"]), text(message["data"]))
            elif kind == "subscribe":
                channel = text(message["channel"])
                if channel == keys.HUB_CHANNEL:
                    self._ready.set()
                else:
                    self._confirmed(keys.job_id_from_channel(channel))
